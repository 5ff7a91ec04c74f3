/*
 * server.h: the HTTP server of `murmur serve` and `murmur run --listen`: one
 * TCP listener on a libuv loop speaking HTTP/1.1 (http1.c, libhttp-parser)
 * and HTTP/2 cleartext (h2.c, libnghttp2) on the same port. A connection is
 * HTTP/2 when its first bytes are the HTTP/2 client preface (prior
 * knowledge, as gRPC and Connect clients send over http://), else HTTP/1.1.
 *
 * Limits, each with a clear answer: connections beyond max_connections are
 * closed at once; a header block over max_header_bytes gets 431, a body
 * over max_body_bytes 413 (HTTP/2: the stream is reset); a request that does
 * not arrive whole within request_timeout_ms (a slow client) and a
 * keep-alive connection idle for idle_timeout_ms are closed. Pipelined
 * HTTP/1.1 requests are answered in order, one at a time: the parser pauses
 * while a response is pending.
 *
 * Requests go to the plain routes (route.h) by exact path, then to the
 * handler set with mm_server_handler (the query service, rpc.h), else 404.
 *
 * Threads: every function runs on the loop thread.
 */
#ifndef MM_NET_SERVER_H
#define MM_NET_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "route.h"

typedef struct mm_server_options {
	const char *listen;          /* "HOST:PORT", "[V6]:PORT"; NULL = 127.0.0.1:8080 */
	const char *token;           /* bearer token, copied; NULL or "" = none,
	                              * refused for a non-loopback address */
	const char *const *cors_origins; /* allowed Origin values, copied ("*" = any) */
	size_t ncors;
	size_t max_connections;      /* 0 = 1024 */
	size_t max_header_bytes;     /* 0 = 16 KiB: request line and headers */
	size_t max_body_bytes;       /* 0 = 4 MiB */
	uint64_t request_timeout_ms; /* 0 = 10 s */
	uint64_t idle_timeout_ms;    /* 0 = 60 s */
} mm_server_options_t;

typedef struct mm_server_stats {
	uint64_t accepted;           /* connections */
	uint64_t refused;            /* closed at once: over max_connections */
	uint64_t open;               /* open now */
	uint64_t requests;           /* answered, every protocol */
	uint64_t bad_requests;       /* malformed or over a limit */
	uint64_t timeouts;           /* connections closed by request_timeout_ms */
	uint64_t unauthorized;       /* answered 401 */
} mm_server_stats_t;

typedef struct mm_net_ex mm_net_ex_t;

/* An asynchronous handler: takes the exchange and calls mm_net_ex_finish
 * once res is filled, now or later (the exchange stays valid until then,
 * even if the client goes away). */
typedef void (*mm_net_handler_fn)(void *arg, mm_net_ex_t *ex);

/* Binds and listens. Returns 0, MM_EINVAL (bad address, or a non-loopback
 * address without a token; detail says which) or MM_EIO (bind/listen
 * failed, e.g. the port is taken). */
int mm_server_open(uv_loop_t *loop, const mm_server_options_t *opt, mm_server_t **out);

/* The handler for every path under prefix (e.g. "/murmur.v1.QueryService/")
 * that no plain route takes; arg is not owned. One per server. */
void mm_server_handler(mm_server_t *srv, const char *prefix, mm_net_handler_fn fn, void *arg);

/* The address actually bound ("127.0.0.1:41234", "[::1]:8080"; useful with
 * port 0) into out[0..cap). Returns 0 or MM_EIO. */
int mm_server_address(const mm_server_t *srv, char *out, size_t cap);

void mm_server_get_stats(const mm_server_t *srv, mm_server_stats_t *out);

/* The request and response of an exchange handed to a handler. */
const mm_net_req_t *mm_net_ex_req(const mm_net_ex_t *ex);
mm_net_res_t *mm_net_ex_res(mm_net_ex_t *ex);

/* Sends res (or drops it if the client went away) and frees the exchange. */
void mm_net_ex_finish(mm_net_ex_t *ex);

/* Stops listening, closes every connection (exchanges in flight are
 * finished by their handlers later and dropped), and calls done(arg) from a
 * close callback once every handle is closed; frees srv. */
void mm_server_close(mm_server_t *srv, void (*done)(void *), void *arg);

#endif
