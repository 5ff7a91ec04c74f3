/*
 * route.h: what a handler of the query server sees, and how to add a plain
 * HTTP handler for a GET path (/metrics, /healthz, /readyz, the admin page).
 *
 * The server (server.h) parses HTTP/1.1 and HTTP/2 into one mm_net_req_t and
 * writes one mm_net_res_t back in the connection's protocol, so a handler
 * never knows which protocol carried it. A plain route answers GET (and
 * HEAD, whose body the server drops) on one exact path, synchronously: it
 * fills res and returns. The query service itself is not a plain route: it
 * is asynchronous and speaks Connect and gRPC (rpc.h).
 *
 * Security: every route needs the server's bearer token when one is set
 * (a non-loopback listen address requires one), except routes registered
 * with MM_ROUTE_PUBLIC (/healthz). The server answers 401 itself.
 *
 * To add routes: call mm_server_route() after mm_server_open(), where the
 * server is built (engine/net/serve.c, mm_serve_start), with the server at
 * s->srv; mm_rpc_stats() gives the query counters for /metrics.
 *
 * Threads: everything here runs on the server's loop thread.
 */
#ifndef MM_NET_ROUTE_H
#define MM_NET_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "../lib/buf.h"

typedef struct mm_server mm_server_t;

typedef struct mm_net_header {
	const char *name;     /* lower case, NUL-terminated */
	const char *value;    /* NUL-terminated */
	size_t value_len;
} mm_net_header_t;

/* A request, valid for the duration of the handler call (for rpc.h's
 * asynchronous handlers: until the exchange finishes). */
typedef struct mm_net_req {
	const char *method;      /* "GET", "POST", ... */
	const char *path;        /* as sent, without the query string */
	const char *query;       /* after '?', still percent-encoded; "" if none */
	const mm_net_header_t *headers;
	size_t nheaders;
	const uint8_t *body;
	size_t body_len;
	int http2;               /* 1: the request came over HTTP/2 */
} mm_net_req_t;

/* The value of the first header called name (lower case), or NULL; *len
 * (if not NULL) gets its length. */
const char *mm_net_header(const mm_net_req_t *req, const char *name, size_t *len);

/* A response. The server presets status 200, no content type and empty
 * buffers; the handler fills what it needs. */
typedef struct mm_net_res {
	int status;
	char content_type[96];   /* "" sends none */
	mm_buf_t body;
	mm_buf_t headers;        /* extra headers: "name\0value\0" pairs */
	mm_buf_t trailers;       /* HTTP/2 trailers, same form (gRPC status) */
} mm_net_res_t;

/* Adds a header (name in lower case) to res. Returns 0 or MM_ENOMEM. */
int mm_net_res_header(mm_net_res_t *res, const char *name, const char *value);

/* Sets the content type (truncated to fit). */
void mm_net_res_type(mm_net_res_t *res, const char *content_type);

/* A plain handler: fills res, returns 0, or a negative MM_E* code, in which
 * case the server answers 500 with the diagnostics detail as text. */
typedef int (*mm_route_fn)(void *arg, const mm_net_req_t *req, mm_net_res_t *res);

enum {
	MM_ROUTE_PUBLIC = 1, /* no bearer token needed (health checks) */
};

/* Serves GET and HEAD on path (exact match, copied) with fn(arg, req, res);
 * other methods get 405. Returns 0, MM_EEXIST if the path is taken,
 * MM_EINVAL for a path that does not start with '/', or MM_ENOMEM. */
int mm_server_route(mm_server_t *srv, const char *path, unsigned flags, mm_route_fn fn,
		    void *arg);

#endif
