/*
 * tls.h: the client side of one TLS connection through OpenSSL memory BIOs,
 * so that the bytes travel over the caller's own libuv socket.
 *
 * The caller feeds what the socket read (mm_tls_feed), drives the handshake
 * (mm_tls_handshake), reads and writes plaintext (mm_tls_read,
 * mm_tls_write), and after each of these sends whatever mm_tls_take_out
 * gives it. The peer is verified against the CA certificates in the file
 * SSL_CERT_FILE names when it is set (read once, when the first connection
 * is made; the Lambda bootstrap points it at Amazon Linux's bundle, tests
 * at their own self-signed certificate), else against the system's store
 * (OpenSSL's default paths), and against the host name (or IP address) the
 * connection was made for; SNI carries the name.
 *
 * Ownership: mm_tls_new returns an object the caller frees with
 * mm_tls_free. One thread at a time per object; the shared context is made
 * once per process, on first use, from any thread.
 */
#ifndef MM_HTTP_TLS_H
#define MM_HTTP_TLS_H

#include <stddef.h>
#include <sys/types.h>

#include "../lib/buf.h"

typedef struct mm_tls mm_tls_t;

/* A client connection to host (host_len bytes, not NUL-terminated). Returns
 * 0, MM_ENOMEM or MM_EIO (no TLS context: the CA certificates could not be
 * read; the detail names SSL_CERT_FILE's file), with a diag detail. */
int mm_tls_new(const char *host, size_t host_len, mm_tls_t **out);

void mm_tls_free(mm_tls_t *t);

/* Hands the bytes the socket read to TLS. Returns 0 or MM_ENOMEM. */
int mm_tls_feed(mm_tls_t *t, const void *p, size_t n);

/* Advances the handshake: 1 when it is complete, 0 when it needs more
 * bytes from the peer, MM_EIO when it failed (diag: why, e.g. the
 * certificate did not verify). */
int mm_tls_handshake(mm_tls_t *t);

/* Reads decrypted bytes into p[0..cap): the count (> 0), 0 when it needs
 * more bytes from the peer, MM_ECLOSED when the peer closed the TLS session,
 * MM_EIO on a TLS error. */
ssize_t mm_tls_read(mm_tls_t *t, void *p, size_t cap);

/* Encrypts p[0..n) for sending. Returns 0 or MM_EIO. */
int mm_tls_write(mm_tls_t *t, const void *p, size_t n);

/* How many bytes wait to be sent. */
size_t mm_tls_out_pending(mm_tls_t *t);

/* Appends the bytes waiting to be sent to out and forgets them. Returns 0
 * or MM_ENOMEM. */
int mm_tls_take_out(mm_tls_t *t, mm_buf_t *out);

#endif
