/*
 * http_impl.h: the client's internal objects, shared by http.c (requests,
 * hosts, deadlines, the public API) and http_conn.c (connections).
 *
 * Lifetimes:
 *  - http_xfer_t: one request in flight, from mm_http_request to its
 *    callback (or to mm_http_close, which frees it without one). It owns its
 *    request head and body and its response; it sits on the client's list
 *    of transfers, and either on its host's queue (waiting for a
 *    connection) or on one connection (x->conn). Finished transfers go back
 *    to a small pool with their buffers, so a steady stream of requests
 *    allocates nothing.
 *  - http_conn_t: one TCP connection (with TLS for https://) to one host,
 *    carrying one request at a time and kept open between requests when
 *    the server allows it. Freed when its uv_tcp_t is closed and its name
 *    resolution (if any) has called back.
 *  - http_host_t: scheme, name and port; counts its connections, keeps its
 *    idle ones and queues the requests waiting for one. Freed by
 *    mm_http_close.
 *  - mm_http_t: freed when the last of its libuv handles (the deadline
 *    timer and every connection) has been closed after mm_http_close. It
 *    owns the copy of the last request's URL (url_memo).
 */
#ifndef MM_HTTP_IMPL_H
#define MM_HTTP_IMPL_H

#include <http_parser.h>

#include "http.h"
#include "tls.h"
#include "url.h"

typedef struct http_conn http_conn_t;
typedef struct http_host http_host_t;

enum { HDR_DONE = 3 };

typedef struct http_xfer {
	mm_http_t *h;
	http_host_t *host;
	http_conn_t *conn;      /* the connection carrying it, or NULL while queued */
	mm_http_cb cb;
	void *arg;
	mm_buf_t head;          /* request line and header lines, sent in one piece */
	mm_buf_t body;          /* the request body (a copy) */
	mm_buf_t resp;          /* the response body */
	mm_buf_t hdrs;          /* response headers, "name\0value\0" each */
	mm_buf_t raw;           /* the head the fast path took, as it came, until a
	                         * header is looked up (then split into hdrs) */
	int hdr_state;          /* 0 before the first header, 1 in a name, 2 in a value,
	                         * HDR_DONE after the head (trailers are dropped) */
	int done;               /* the whole response arrived */
	int retried;            /* sent again after a reused connection died */
	int nomem;              /* no connection could be allocated for it */
	long code;
	uint64_t t0;            /* uv_hrtime at mm_http_request */
	uint64_t deadline;      /* uv_now ms when it times out, 0 for none */
	long timeout_ms;
	struct http_xfer *prev, *next; /* the client's transfers (next: the pool too) */
	struct http_xfer *qnext;       /* the host's queue */
} http_xfer_t;

enum { CONN_RESOLVING, CONN_CONNECTING, CONN_HANDSHAKE, CONN_READY };

struct http_conn {
	uv_tcp_t tcp;
	uv_getaddrinfo_t gai;
	uv_connect_t creq;
	uv_write_t wreq;        /* the request write of a plain connection */
	http_parser parser;
	mm_http_t *h;
	http_host_t *host;
	http_xfer_t *x;         /* the request it carries, NULL when idle */
	mm_tls_t *tls;          /* NULL for http:// */
	int state;
	int handles;            /* libuv handles and requests still to call back */
	int writing;            /* writes not yet completed */
	int closing;
	int used;               /* responses completed on it */
	int got;                /* bytes of the current response arrived */
	int fast;               /* the current response is read by the fast path
	                         * (http_head.c), not libhttp-parser */
	int fast_keep;          /* ... and allows keep-alive */
	uint64_t body_left;     /* ... and this much of its body is still to come */
	uint64_t deadline;      /* uv_now ms by which it must be ready, 0 once ready */
	int err;                /* why it closed, for its request (0: no failure) */
	char errmsg[200];
	struct http_conn *prev, *next; /* the client's open connections */
	struct http_conn *inext;       /* the host's idle connections */
};

struct http_host {
	int tls;
	int port;
	char *name;             /* for resolution and TLS, NUL-terminated */
	char *hostport;         /* the Host header's value */
	long nconns;            /* open connections, busy or idle */
	http_conn_t *idle;      /* most recently used first */
	http_xfer_t *qhead, *qtail;
	struct http_host *next;
};

struct mm_http {
	uv_loop_t *loop;
	uv_timer_t timer;       /* the earliest deadline of a request or connect */
	uint64_t timer_due;     /* uv_now ms it fires at, 0 when stopped */
	long max_connections;
	long connect_timeout_ms;
	int closing;
	size_t open_handles;    /* the timer and every connection not yet freed */
	size_t inflight;
	http_host_t *hosts;
	char *url_memo;         /* the last request's URL (a copy), NULL before the first */
	mm_http_url_t url_parsed; /* ... split (pointing into url_memo) */
	http_host_t *url_host;  /* ... and its host */
	http_conn_t *conns;
	http_xfer_t *xfers;
	http_xfer_t *pool;
	size_t npool;
	char rbuf[65536];       /* every read lands here and is parsed at once */
	mm_buf_t plain;         /* decrypted bytes of one read */
	mm_buf_t tlsout;        /* encrypted bytes on their way to a socket */
	mm_http_stats_t stats;
};

/* http.c */
void mm_http__arm(mm_http_t *h, uint64_t due);
void mm_http__complete(http_xfer_t *x, int status, const char *error);
void mm_http__dispatch(http_xfer_t *x);
void mm_http__pump(http_host_t *host, mm_http_t *h);
void mm_http__maybe_free(mm_http_t *h);

/* http_conn.c */
/* Opens a connection to host for x. Failures close it (later, x failing
 * with it), so it never calls back inside the caller. */
void mm_http__conn_open(mm_http_t *h, http_host_t *host, http_xfer_t *x);
/* Sends x on the idle connection c. */
void mm_http__conn_assign(http_conn_t *c, http_xfer_t *x);
/* Closes c; its request (if any) fails with err and msg from the close
 * callback, or is retried there (see http_conn.c). */
void mm_http__conn_close(http_conn_t *c, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
