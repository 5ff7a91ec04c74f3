/*
 * http.c: libcurl's multi interface on a libuv loop (see http.h).
 *
 * Objects and lifetimes:
 *  - http_sock_t: one per socket we watch for libcurl, holding its
 *    uv_poll_t. A connection's socket is made by on_open_socket (libcurl's
 *    CURLOPT_OPENSOCKETFUNCTION) and lives until libcurl closes it through
 *    on_close_socket, across the requests of the connection: libcurl 7.88
 *    sends CURL_POLL_REMOVE for a kept-alive connection after every transfer
 *    and announces the socket again for the next one, and closing and
 *    re-creating the poll each time cost about five system calls per request
 *    (epoll_ctl, ioctl) for nothing. Between transfers the poll keeps the
 *    events it had (usually "readable", which an idle connection never is),
 *    so the next transfer's announcement needs no system call; an event on
 *    an idle connection (the server closed it) stops the poll until libcurl
 *    takes the connection again and finds it dead. An idle connection's
 *    poll is unreferenced: it keeps no loop running. Any other socket libcurl
 *    announces is watched from its announcement to its CURL_POLL_REMOVE.
 *    Freed in the poll's close callback (or at once if never polled).
 *  - http_xfer_t: one per request in flight, owning its easy handle, its
 *    header list and its response buffer. Finished transfers go back to a
 *    small pool with their easy handle, header nodes and buffers kept, so a
 *    steady stream of requests allocates nothing per request beyond
 *    libcurl's own copies.
 *  - mm_http_t: freed when the last of its libuv handles (the timer and
 *    every socket poll) has been closed after mm_http_close.
 *
 * Completion: after every curl_multi_socket_action we drain
 * curl_multi_info_read and call each finished transfer's callback. A
 * callback may start requests (curl_multi_add_handle is legal here, we are
 * not inside libcurl) or close the client, after which nothing of the multi
 * handle is touched again.
 */
#include "http.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../lib/error.h"

#define HTTP_POOL_MAX 64
#define HTTP_BODY_MAX ((size_t)64 << 20) /* DynamoDB answers at most 16 MB */

typedef struct http_sock {
	uv_poll_t poll;
	mm_http_t *h;
	curl_socket_t fd;
	int polled;    /* poll initialised (a libuv handle to close) */
	int events;    /* the UV_* events the poll watches now, 0 when stopped */
	int watched;   /* between libcurl's announcement and its CURL_POLL_REMOVE */
	int conn;      /* a connection's socket, kept until on_close_socket */
	int closing;
	struct http_sock *prev, *next;
} http_sock_t;

/* The header list of a request without a malloc per line: the lines are
 * copied into buf and the curl_slist nodes (a public struct libcurl only
 * reads) point into it. */
typedef struct http_hdrs {
	mm_buf_t buf;
	struct curl_slist *nodes;
	size_t cap;
} http_hdrs_t;

typedef struct http_xfer {
	mm_http_t *h;
	CURL *easy;
	http_hdrs_t hdrs;
	mm_buf_t req;           /* the request body: libcurl reads it in place */
	mm_buf_t resp;
	mm_http_cb cb;
	void *arg;
	uint64_t t0;
	size_t body_len;
	char errbuf[CURL_ERROR_SIZE];
	struct http_xfer *prev, *next;
} http_xfer_t;

struct mm_http {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t timer;
	long connect_timeout_ms;
	int no_proxy;          /* no proxy variable set: tell libcurl, which
	                        * otherwise reads them on every request */
	int closing;
	size_t open_handles;   /* libuv handles not yet closed */
	size_t inflight;
	http_sock_t *socks;
	http_xfer_t *xfers;    /* in flight */
	http_xfer_t *pool;     /* idle, singly linked through next */
	size_t npool;
	mm_http_stats_t stats;
};

static pthread_once_t http_once = PTHREAD_ONCE_INIT;
static CURLcode http_global_rc;

static void http_global_init(void)
{
	http_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int http_init_curl(void)
{
	pthread_once(&http_once, http_global_init);
	if (http_global_rc != CURLE_OK)
		return mm_diag_set(MM_EIO, "http: curl_global_init: %s",
				   curl_easy_strerror(http_global_rc));
	return 0;
}

/* ---- libuv handles ---- */

static void http_maybe_free(mm_http_t *h)
{
	if (h->closing && h->open_handles == 0)
		free(h);
}

static void on_sock_closed(uv_handle_t *handle)
{
	http_sock_t *sk = handle->data;
	mm_http_t *h = sk->h;

	free(sk);
	h->open_handles--;
	http_maybe_free(h);
}

static http_sock_t *sock_new(mm_http_t *h, curl_socket_t fd)
{
	http_sock_t *sk = calloc(1, sizeof(*sk));

	if (sk == NULL)
		return NULL;
	sk->h = h;
	sk->fd = fd;
	sk->poll.data = sk;
	sk->next = h->socks;
	if (h->socks)
		h->socks->prev = sk;
	h->socks = sk;
	return sk;
}

/* The kept socket of descriptor fd, or NULL. A client holds a few dozen
 * connections at most, so a list is enough. */
static http_sock_t *sock_find(mm_http_t *h, curl_socket_t fd)
{
	http_sock_t *sk;

	for (sk = h->socks; sk && sk->fd != fd; sk = sk->next)
		;
	return sk;
}

/* Stops watching the socket and frees it (from the poll's close callback
 * when it was polled); the descriptor stays open. */
static void sock_close(http_sock_t *sk)
{
	mm_http_t *h = sk->h;

	if (sk->closing)
		return;
	sk->closing = 1;
	if (sk->prev)
		sk->prev->next = sk->next;
	else
		h->socks = sk->next;
	if (sk->next)
		sk->next->prev = sk->prev;
	if (sk->polled)
		uv_close((uv_handle_t *)&sk->poll, on_sock_closed);
	else
		free(sk);
}

static void on_timer_closed(uv_handle_t *handle)
{
	mm_http_t *h = handle->data;

	h->open_handles--;
	http_maybe_free(h);
}

/* ---- completion ---- */

static void xfer_unlink(http_xfer_t *x)
{
	mm_http_t *h = x->h;

	if (x->prev)
		x->prev->next = x->next;
	else
		h->xfers = x->next;
	if (x->next)
		x->next->prev = x->prev;
	x->prev = x->next = NULL;
}

static void hdrs_free(http_hdrs_t *l)
{
	mm_buf_free(&l->buf);
	free(l->nodes);
	*l = (http_hdrs_t){0};
}

static void xfer_free(http_xfer_t *x)
{
	if (x->easy)
		curl_easy_cleanup(x->easy);
	hdrs_free(&x->hdrs);
	mm_buf_free(&x->req);
	mm_buf_free(&x->resp);
	free(x);
}

/* Returns a finished transfer to the pool (or frees it when the pool is
 * full). The easy handle keeps its options: http_setup sets every option a
 * request may change, so a reused handle needs no curl_easy_reset. */
static void xfer_recycle(mm_http_t *h, http_xfer_t *x)
{
	if (h->npool >= HTTP_POOL_MAX || h->closing) {
		xfer_free(x);
		return;
	}
	x->resp.len = 0;
	if (x->resp.cap > 1 << 20) /* keep the pool small after a huge answer */
		mm_buf_free(&x->resp);
	if (x->req.cap > 1 << 20)
		mm_buf_free(&x->req);
	x->next = h->pool;
	h->pool = x;
	h->npool++;
}

static void http_check_done(mm_http_t *h)
{
	CURLMsg *msg;
	int left;

	while (!h->closing && (msg = curl_multi_info_read(h->multi, &left)) != NULL) {
		http_xfer_t *x;
		mm_http_response_t res = {0};
		long connects = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		curl_multi_remove_handle(h->multi, x->easy);
		xfer_unlink(x);
		h->inflight--;
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &res.code);
		curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &connects);
		h->stats.requests++;
		h->stats.connects += (uint64_t)connects;
		h->stats.bytes_out += x->body_len;
		h->stats.bytes_in += x->resp.len;
		res.body = x->resp.p;
		res.len = x->resp.len;
		res.error = "";
		res.ns = uv_hrtime() - x->t0;
		res.priv = x->easy;
		if (msg->data.result != CURLE_OK) {
			h->stats.failures++;
			res.status = msg->data.result == CURLE_OPERATION_TIMEDOUT ? MM_ETIMEDOUT
										   : MM_EIO;
			res.error = x->errbuf[0] ? x->errbuf : curl_easy_strerror(msg->data.result);
		}
		x->cb(x->arg, &res);
		xfer_recycle(h, x);
	}
}

const char *mm_http_response_header(const mm_http_response_t *res, const char *name)
{
	struct curl_header *hd;

	if (res == NULL || res->priv == NULL ||
	    curl_easy_header(res->priv, name, 0, CURLH_HEADER, -1, &hd) != CURLHE_OK)
		return NULL;
	return hd->value;
}

/* ---- libcurl callbacks ---- */

static void on_poll(uv_poll_t *handle, int status, int events)
{
	http_sock_t *sk = handle->data;
	mm_http_t *h = sk->h;
	curl_socket_t fd = sk->fd;
	int flags = 0, running;

	if (!sk->watched) {
		/* An idle kept-alive connection became readable: the server
		 * closed it (or sent what nobody asked for). Stop polling, or a
		 * closed socket would wake the loop on every turn; libcurl finds
		 * the connection dead when it next takes it and closes it. */
		uv_poll_stop(&sk->poll);
		sk->events = 0;
		return;
	}
	if (status < 0) {
		/* libuv stopped the poll on the error: announcing the socket
		 * again must start it again. */
		flags = CURL_CSELECT_ERR;
		sk->events = 0;
	}
	if (events & UV_READABLE)
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	/* sk may be closed inside this call (CURL_POLL_REMOVE): use fd only. */
	curl_multi_socket_action(h->multi, fd, flags, &running);
	http_check_done(h);
}

static void on_timer(uv_timer_t *t)
{
	mm_http_t *h = t->data;
	int running;

	curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	http_check_done(h);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
	mm_http_t *h = userp;

	if (h->closing)
		return 0;
	if (timeout_ms < 0)
		uv_timer_stop(&h->timer);
	else
		uv_timer_start(&h->timer, on_timer, (uint64_t)timeout_ms, 0);
	return 0;
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	mm_http_t *h = userp;
	http_sock_t *sk = socketp;
	int events = 0;

	if (what == CURL_POLL_REMOVE) {
		if (sk) {
			curl_multi_assign(h->multi, fd, NULL);
			sk->watched = 0;
			if (!sk->conn)
				sock_close(sk);
			else if (sk->polled) /* an idle connection keeps no loop alive */
				uv_unref((uv_handle_t *)&sk->poll);
		}
		return 0;
	}
	if (h->closing)
		return 0;
	if (sk == NULL) {
		sk = sock_find(h, fd);
		if (sk == NULL && (sk = sock_new(h, fd)) == NULL)
			return -1;
		if (!sk->polled) {
			if (uv_poll_init_socket(h->loop, &sk->poll, fd) != 0) {
				sock_close(sk);
				return -1;
			}
			sk->polled = 1;
			h->open_handles++;
		}
		curl_multi_assign(h->multi, fd, sk);
		uv_ref((uv_handle_t *)&sk->poll);
	}
	sk->watched = 1;
	if (what & CURL_POLL_IN)
		events |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	if (events == sk->events)
		return 0; /* uv_poll_start would remove and re-add the descriptor */
	sk->events = events;
	return uv_poll_start(&sk->poll, events, on_poll) == 0 ? 0 : -1;
}

/* A connection's socket, made here so that we know it is one and keep its
 * poll across the connection's requests (see the top of this file). */
static curl_socket_t on_open_socket(void *userp, curlsocktype purpose, struct curl_sockaddr *a)
{
	mm_http_t *h = userp;
	http_sock_t *sk;
	curl_socket_t fd;

	if (h->closing)
		return CURL_SOCKET_BAD;
	fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
	if (fd == CURL_SOCKET_BAD)
		return CURL_SOCKET_BAD;
	if ((sk = sock_new(h, fd)) == NULL) {
		close(fd);
		return CURL_SOCKET_BAD;
	}
	sk->conn = 1;
	return fd;
}

/* libcurl closes a connection's socket: stop watching it first, so no poll
 * is left on a descriptor that a new socket may reuse. */
static int on_close_socket(void *userp, curl_socket_t fd)
{
	mm_http_t *h = userp;
	http_sock_t *sk = sock_find(h, fd);

	if (sk)
		sock_close(sk);
	return close(fd);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	mm_buf_t *b = arg;
	size_t len = size * n;

	if (b->len + len > HTTP_BODY_MAX || mm_buf_append(b, p, len) != 0)
		return 0; /* makes libcurl fail the transfer with CURLE_WRITE_ERROR */
	return len;
}

/* ---- requests ---- */

/*
 * Options that never change for an easy handle: set once when it is made.
 * SSL_CERT_FILE, when set, names the CA certificates that verify HTTPS
 * servers instead of the bundle libcurl was built to read: the Lambda zip
 * (tools/lambda_zip.sh) carries Debian's libcurl, which looks for
 * /etc/ssl/certs/ca-certificates.crt, onto Amazon Linux, which keeps its
 * bundle elsewhere. h is the client for a handle of its multi (NULL for
 * mm_http_fetch): its sockets are made and closed by us (see the top of this
 * file), and when no proxy variable was set at mm_http_open libcurl is told
 * so, instead of reading six variables again for every request (and the
 * empty no-proxy list spares it no_proxy and NO_PROXY, read for every
 * request even when the proxy is set to none).
 */
static int http_setup_handle(mm_http_t *h, CURL *easy, mm_buf_t *resp, char *errbuf,
			     long connect_timeout_ms)
{
	const char *ca = getenv("SSL_CERT_FILE");
	int bad = 0;

	if (ca != NULL && *ca != '\0')
		bad |= curl_easy_setopt(easy, CURLOPT_CAINFO, ca) != CURLE_OK;
	if (h) {
		bad |= curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, on_open_socket) !=
		       CURLE_OK;
		bad |= curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, h) != CURLE_OK;
		bad |= curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket) !=
		       CURLE_OK;
		bad |= curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, h) != CURLE_OK;
		if (h->no_proxy) {
			bad |= curl_easy_setopt(easy, CURLOPT_PROXY, "") != CURLE_OK;
			bad |= curl_easy_setopt(easy, CURLOPT_NOPROXY, "") != CURLE_OK;
		}
	}

	bad |= curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK;
	bad |= curl_easy_setopt(easy, CURLOPT_WRITEDATA, resp) != CURLE_OK;
	bad |= curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf) != CURLE_OK;
	bad |= curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
	bad |= curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK;
	bad |= curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, connect_timeout_ms) != CURLE_OK;
	if (bad)
		return mm_diag_set(MM_EIO, "http: libcurl refused a handle option");
	return 0;
}

/*
 * Sets everything one request may change (so a handle from the pool needs no
 * reset): URL, headers, method, body, time limit. The body is read from
 * `body`, which must stay unchanged until the transfer ends.
 */
/* Fills l with the request's header lines and "Expect:" (which suppresses
 * the header); returns the list's head or NULL when out of memory. */
static struct curl_slist *hdrs_build(http_hdrs_t *l, const mm_http_request_t *req)
{
	static const char expect_off[] = "Expect:";
	size_t i, n = req->nheaders + 1, off = 0;

	if (n > l->cap) {
		struct curl_slist *nodes = realloc(l->nodes, n * sizeof(*nodes));

		if (nodes == NULL)
			return NULL;
		l->nodes = nodes;
		l->cap = n;
	}
	l->buf.len = 0;
	for (i = 0; i < req->nheaders; i++)
		if (mm_buf_append(&l->buf, req->headers[i], strlen(req->headers[i]) + 1))
			return NULL;
	if (mm_buf_append(&l->buf, expect_off, sizeof(expect_off)))
		return NULL;
	/* Linked only now: the buffer may have moved while it grew. */
	for (i = 0; i < n; i++) {
		l->nodes[i].data = (char *)l->buf.p + off;
		l->nodes[i].next = i + 1 < n ? &l->nodes[i + 1] : NULL;
		off += strlen(l->nodes[i].data) + 1;
	}
	return l->nodes;
}

static int http_setup(CURL *easy, const mm_http_request_t *req, http_hdrs_t *hdrs,
		      const mm_buf_t *body, char *errbuf)
{
	struct curl_slist *l = hdrs_build(hdrs, req);
	int bad = 0, post = strcmp(req->method, "POST") == 0;

	if (l == NULL)
		return mm_diag_set(MM_ENOMEM, "http: cannot build the header list");
	errbuf[0] = '\0';
	bad |= curl_easy_setopt(easy, CURLOPT_URL, req->url) != CURLE_OK;
	bad |= curl_easy_setopt(easy, CURLOPT_HTTPHEADER, l) != CURLE_OK;
	bad |= curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, req->timeout_ms) != CURLE_OK;
	if (body->len > 0 || post) {
		bad |= curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
					(curl_off_t)body->len) != CURLE_OK;
		bad |= curl_easy_setopt(easy, CURLOPT_POSTFIELDS,
					body->len ? (const char *)body->p : "") != CURLE_OK;
		bad |= curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST,
					post ? NULL : req->method) != CURLE_OK;
	} else {
		bad |= curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L) != CURLE_OK;
		bad |= curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST,
					strcmp(req->method, "GET") == 0 ? NULL : req->method) != CURLE_OK;
	}
	if (bad)
		return mm_diag_set(MM_EINVAL, "http: libcurl refused an option for %s %s",
				   req->method, req->url);
	return 0;
}

static int http_check_request(const mm_http_request_t *req)
{
	if (req == NULL || req->method == NULL || req->url == NULL ||
	    (req->nheaders > 0 && req->headers == NULL) || (req->body_len > 0 && !req->body) ||
	    req->timeout_ms < 0)
		return mm_diag_set(MM_EINVAL, "http: incomplete request");
	return 0;
}

int mm_http_open(uv_loop_t *loop, const mm_http_options_t *opt, mm_http_t **out)
{
	long maxconn = opt && opt->max_connections > 0 ? opt->max_connections : 32;
	mm_http_t *h;
	int rc;

	*out = NULL;
	if ((rc = http_init_curl()))
		return rc;
	h = calloc(1, sizeof(*h));
	if (h == NULL)
		return mm_diag_set(MM_ENOMEM, "http: cannot allocate the client");
	h->multi = curl_multi_init();
	if (h->multi == NULL) {
		free(h);
		return mm_diag_set(MM_ENOMEM, "http: curl_multi_init failed");
	}
	h->loop = loop;
	h->no_proxy = !getenv("http_proxy") && !getenv("HTTP_PROXY") && !getenv("https_proxy") &&
		      !getenv("HTTPS_PROXY") && !getenv("all_proxy") && !getenv("ALL_PROXY");
	h->connect_timeout_ms = opt && opt->connect_timeout_ms > 0 ? opt->connect_timeout_ms : 5000;
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, maxconn);
	curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, maxconn);
	uv_timer_init(loop, &h->timer);
	h->timer.data = h;
	h->open_handles = 1;
	*out = h;
	return 0;
}

int mm_http_request(mm_http_t *h, const mm_http_request_t *req, mm_http_cb cb, void *arg)
{
	http_xfer_t *x;
	int rc;

	if (h == NULL || cb == NULL)
		return mm_diag_set(MM_EINVAL, "http: request needs a client and a callback");
	if ((rc = http_check_request(req)))
		return rc;
	if (h->closing)
		return mm_diag_set(MM_ECLOSED, "http: the client is closing");
	if (h->pool) {
		x = h->pool;
		h->pool = x->next;
		h->npool--;
		x->next = NULL;
	} else {
		x = calloc(1, sizeof(*x));
		if (x == NULL || (x->easy = curl_easy_init()) == NULL) {
			free(x);
			return mm_diag_set(MM_ENOMEM, "http: cannot allocate a transfer");
		}
		x->h = h;
		curl_easy_setopt(x->easy, CURLOPT_PRIVATE, (char *)x);
		if ((rc = http_setup_handle(h, x->easy, &x->resp, x->errbuf,
					    h->connect_timeout_ms)))
			goto fail;
	}
	x->req.len = 0;
	if ((rc = mm_buf_append(&x->req, req->body, req->body_len)) ||
	    (rc = http_setup(x->easy, req, &x->hdrs, &x->req, x->errbuf)))
		goto fail;
	x->cb = cb;
	x->arg = arg;
	x->t0 = uv_hrtime();
	x->body_len = req->body_len;
	if (curl_multi_add_handle(h->multi, x->easy) != CURLM_OK) {
		rc = mm_diag_set(MM_EIO, "http: curl_multi_add_handle failed");
		goto fail;
	}
	x->next = h->xfers;
	if (h->xfers)
		h->xfers->prev = x;
	h->xfers = x;
	h->inflight++;
	return 0;
fail:
	xfer_free(x);
	return rc;
}

size_t mm_http_inflight(const mm_http_t *h)
{
	return h ? h->inflight : 0;
}

void mm_http_get_stats(const mm_http_t *h, mm_http_stats_t *out)
{
	*out = h->stats;
}

void mm_http_close(mm_http_t *h)
{
	http_xfer_t *x;

	if (h == NULL || h->closing)
		return;
	h->closing = 1;
	/* Stop watching first, so libcurl closing its descriptors below can
	 * never leave a poll handle on a dead descriptor. */
	while (h->socks)
		sock_close(h->socks);
	while ((x = h->xfers) != NULL) {
		xfer_unlink(x);
		curl_multi_remove_handle(h->multi, x->easy);
		xfer_free(x);
	}
	h->inflight = 0;
	while ((x = h->pool) != NULL) {
		h->pool = x->next;
		xfer_free(x);
	}
	h->npool = 0;
	curl_multi_cleanup(h->multi);
	h->multi = NULL;
	uv_close((uv_handle_t *)&h->timer, on_timer_closed);
}

int mm_http_fetch(const mm_http_request_t *req, long *code, mm_buf_t *body)
{
	http_hdrs_t hdrs = {0};
	char errbuf[CURL_ERROR_SIZE];
	mm_buf_t reqbody;
	CURLcode cc;
	CURL *easy;
	int rc;

	if ((rc = http_check_request(req)) || (rc = http_init_curl()))
		return rc;
	if (code == NULL || body == NULL)
		return mm_diag_set(MM_EINVAL, "http: fetch needs a code and a body buffer");
	easy = curl_easy_init();
	if (easy == NULL)
		return mm_diag_set(MM_ENOMEM, "http: curl_easy_init failed");
	reqbody = (mm_buf_t){.p = (uint8_t *)(uintptr_t)req->body, .len = req->body_len};
	if ((rc = http_setup_handle(NULL, easy, body, errbuf, 5000)) ||
	    (rc = http_setup(easy, req, &hdrs, &reqbody, errbuf)))
		goto out;
	cc = curl_easy_perform(easy);
	if (cc != CURLE_OK) {
		rc = mm_diag_set(cc == CURLE_OPERATION_TIMEDOUT ? MM_ETIMEDOUT : MM_EIO,
				 "http: %s %s: %s", req->method, req->url,
				 errbuf[0] ? errbuf : curl_easy_strerror(cc));
		goto out;
	}
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, code);
out:
	curl_easy_cleanup(easy);
	hdrs_free(&hdrs);
	return rc;
}
