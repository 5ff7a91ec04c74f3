/*
 * tls.c: OpenSSL behind memory BIOs (see tls.h).
 *
 * One SSL_CTX per process, made on first use: TLS 1.2 at least, peer
 * verification on, the CA certificates of SSL_CERT_FILE when it is set,
 * else OpenSSL's default store. Each
 * connection gets an SSL with two memory BIOs: rbio holds what the socket
 * read and SSL has not consumed yet, wbio what SSL produced for the peer.
 * Nothing here touches a socket, so the caller's loop never blocks on TLS.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"

struct mm_tls {
	SSL *ssl;
	BIO *rbio, *wbio; /* owned by ssl */
};

static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static SSL_CTX *tls_ctx;
static char tls_ctx_err[512] = "http: cannot set up TLS (no OpenSSL context)";

/* SSL_CERT_FILE, when set, is read here rather than left to OpenSSL's
 * default paths, which skip a file they cannot read without a word: a
 * wrong name must fail with that name, not as an untrusted server. */
static void tls_ctx_init(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	const char *ca = getenv("SSL_CERT_FILE");

	if (ctx == NULL)
		return;
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		SSL_CTX_free(ctx);
		return;
	}
	if (ca != NULL && *ca != '\0') {
		if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
			snprintf(tls_ctx_err, sizeof(tls_ctx_err),
				 "http: cannot read the CA certificates of SSL_CERT_FILE=%s", ca);
			ERR_clear_error();
			SSL_CTX_free(ctx);
			return;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		snprintf(tls_ctx_err, sizeof(tls_ctx_err),
			 "http: cannot read OpenSSL's default CA certificates");
		ERR_clear_error();
		SSL_CTX_free(ctx);
		return;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_RELEASE_BUFFERS);
	tls_ctx = ctx;
}

/* The first queued OpenSSL error, or fallback, as text; clears the queue. */
static const char *tls_err_text(char *buf, size_t cap, const char *fallback)
{
	unsigned long e = ERR_get_error();

	ERR_clear_error();
	if (e == 0)
		return fallback;
	ERR_error_string_n(e, buf, cap);
	return buf;
}

int mm_tls_new(const char *host, size_t host_len, mm_tls_t **out)
{
	unsigned char ip[16];
	char name[256];
	mm_tls_t *t;
	int is_ip;

	*out = NULL;
	pthread_once(&tls_once, tls_ctx_init);
	if (tls_ctx == NULL)
		return mm_diag_set(MM_EIO, "%s", tls_ctx_err);
	if (host_len >= sizeof(name))
		return mm_diag_set(MM_EINVAL, "http: host name too long for TLS");
	memcpy(name, host, host_len);
	name[host_len] = '\0';
	t = calloc(1, sizeof(*t));
	if (t == NULL || (t->ssl = SSL_new(tls_ctx)) == NULL)
		goto nomem;
	t->rbio = BIO_new(BIO_s_mem());
	t->wbio = BIO_new(BIO_s_mem());
	if (t->rbio == NULL || t->wbio == NULL) {
		BIO_free(t->rbio);
		BIO_free(t->wbio);
		goto nomem;
	}
	BIO_set_mem_eof_return(t->rbio, -1); /* empty means "wait", not "EOF" */
	SSL_set_bio(t->ssl, t->rbio, t->wbio);
	SSL_set_connect_state(t->ssl);
	is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
	if (is_ip) {
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), name) != 1)
			goto nomem;
	} else if (SSL_set_tlsext_host_name(t->ssl, name) != 1 || SSL_set1_host(t->ssl, name) != 1) {
		goto nomem;
	}
	*out = t;
	return 0;
nomem:
	mm_tls_free(t);
	return mm_diag_set(MM_ENOMEM, "http: cannot set up a TLS connection to %s", name);
}

void mm_tls_free(mm_tls_t *t)
{
	if (t == NULL)
		return;
	SSL_free(t->ssl);
	free(t);
}

int mm_tls_feed(mm_tls_t *t, const void *p, size_t n)
{
	if (n > 0 && BIO_write(t->rbio, p, (int)n) != (int)n)
		return mm_diag_set(MM_ENOMEM, "http: TLS input buffer");
	return 0;
}

int mm_tls_handshake(mm_tls_t *t)
{
	char buf[256];
	int r = SSL_do_handshake(t->ssl);
	long v;

	if (r == 1)
		return 1;
	if (SSL_get_error(t->ssl, r) == SSL_ERROR_WANT_READ)
		return 0;
	v = SSL_get_verify_result(t->ssl);
	if (v != X509_V_OK)
		return mm_diag_set(MM_EIO, "http: TLS: the server's certificate: %s",
				   X509_verify_cert_error_string(v));
	return mm_diag_set(MM_EIO, "http: TLS handshake: %s",
			   tls_err_text(buf, sizeof(buf), "the connection failed"));
}

ssize_t mm_tls_read(mm_tls_t *t, void *p, size_t cap)
{
	char buf[256];
	size_t n = 0;
	int r = SSL_read_ex(t->ssl, p, cap, &n);

	if (r == 1)
		return (ssize_t)n;
	switch (SSL_get_error(t->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		return 0;
	case SSL_ERROR_ZERO_RETURN:
		return mm_diag_set(MM_ECLOSED, "http: the server closed the TLS session");
	default:
		return mm_diag_set(MM_EIO, "http: TLS: %s",
				   tls_err_text(buf, sizeof(buf), "read failed"));
	}
}

int mm_tls_write(mm_tls_t *t, const void *p, size_t n)
{
	char buf[256];
	size_t done = 0, w;

	while (done < n) {
		if (SSL_write_ex(t->ssl, (const char *)p + done, n - done, &w) != 1)
			return mm_diag_set(MM_EIO, "http: TLS: %s",
					   tls_err_text(buf, sizeof(buf), "write failed"));
		done += w;
	}
	return 0;
}

size_t mm_tls_out_pending(mm_tls_t *t)
{
	return BIO_ctrl_pending(t->wbio);
}

int mm_tls_take_out(mm_tls_t *t, mm_buf_t *out)
{
	size_t pending = BIO_ctrl_pending(t->wbio);
	int r;

	if (pending == 0)
		return 0;
	if (mm_buf_reserve(out, pending))
		return MM_ENOMEM;
	r = BIO_read(t->wbio, out->p + out->len, (int)pending);
	if (r > 0)
		out->len += (size_t)r;
	return 0;
}
