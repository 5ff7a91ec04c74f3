/*
 * http.h: an asynchronous HTTP/1.1 client of murmur's own on a libuv loop
 * (http:// and https://, TLS from OpenSSL), plus a blocking helper for
 * start-up calls.
 *
 * Nothing blocks the loop: names are resolved on libuv's thread pool
 * (uv_getaddrinfo), connects, TLS and transfers are non-blocking. Many
 * requests may be in flight; finished connections stay open and are reused
 * (HTTP keep-alive), up to max_connections per host (scheme, name, port);
 * past that, requests wait for a connection in arrival order. A request
 * on a reused connection that the server closed before answering (it
 * ended an idle connection just then) is sent again once on a new one.
 * HTTPS servers are verified against the system's CA store (OpenSSL's
 * default paths), or the bundle SSL_CERT_FILE names, and the host name.
 *
 * Requests never wait for "Expect: 100-continue": the header is never
 * sent, because every server we talk to reads the body at once and the
 * extra round trip would double the latency of each store write.
 *
 * Contracts (libuv's): a request's callback runs later on the loop thread,
 * never inside mm_http_request; a call that returns an error never calls the
 * callback. The callback may start new requests and may close the client.
 *
 * Threads: everything except mm_http_fetch runs on the loop thread.
 */
#ifndef MM_HTTP_H
#define MM_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../lib/buf.h"

typedef struct mm_http mm_http_t;

typedef struct mm_http_options {
	long max_connections;    /* per host; 0 = 32 */
	long connect_timeout_ms; /* 0 = 5000 */
} mm_http_options_t;

typedef struct mm_http_request {
	const char *method;           /* "GET", "POST", "PUT", ... */
	const char *url;
	const char *const *headers;   /* "Name: value" lines, copied */
	size_t nheaders;
	const void *body;             /* copied; NULL with body_len 0 for none */
	size_t body_len;
	long timeout_ms;              /* the whole exchange; 0 = no limit */
} mm_http_request_t;

typedef struct mm_http_response {
	int status;          /* 0 when an HTTP response arrived (whatever its code);
	                      * MM_ETIMEDOUT or MM_EIO when the transport failed */
	long code;           /* HTTP status code, 0 if none was received */
	const uint8_t *body; /* the response body, valid during the callback only */
	size_t len;
	const char *error;   /* transport error text, "" when status is 0 */
	uint64_t ns;         /* from mm_http_request to completion */
	void *priv;          /* the transfer, for mm_http_response_header */
} mm_http_response_t;

/* The value of the response's header `name` (case-insensitive; the first
 * when it is repeated), valid during the callback only, or NULL when the
 * response has none (the Lambda Runtime API answers in headers). */
const char *mm_http_response_header(const mm_http_response_t *res, const char *name);

typedef void (*mm_http_cb)(void *arg, const mm_http_response_t *res);

typedef struct mm_http_stats {
	uint64_t requests;     /* completed, whatever their outcome */
	uint64_t failures;     /* transport failures (status != 0) */
	uint64_t connects;     /* new connections opened (the rest reused one) */
	uint64_t bytes_out;    /* request bodies */
	uint64_t bytes_in;     /* response bodies */
} mm_http_stats_t;

/* Creates a client on loop. opt may be NULL for the defaults. Returns 0 or
 * MM_ENOMEM. */
int mm_http_open(uv_loop_t *loop, const mm_http_options_t *opt, mm_http_t **out);

/* Starts a request; cb(arg, response) runs when it completes. The URL is
 * http[s]://host[:port][/path][?query]; a "Host:" line among the headers
 * replaces the one the client would send. Returns 0, MM_EINVAL (incomplete
 * request, bad URL or header line), MM_ENOMEM or MM_ECLOSED (client
 * closing). */
int mm_http_request(mm_http_t *h, const mm_http_request_t *req, mm_http_cb cb, void *arg);

/* Requests started and not yet completed. */
size_t mm_http_inflight(const mm_http_t *h);

void mm_http_get_stats(const mm_http_t *h, mm_http_stats_t *out);

/*
 * Closes the client: requests in flight are abandoned without their
 * callbacks, connections are closed, and the memory is freed from the close
 * callbacks of its libuv handles, so the loop must run once more before
 * uv_loop_close(). May be called from a request callback.
 */
void mm_http_close(mm_http_t *h);

/*
 * Blocking helper for a call made when nothing else runs (the Lambda
 * runtime's /init/error, just before it exits): performs
 * one request with a client on a private loop and appends the response body
 * to body.
 * Returns 0 when a response arrived (*code holds its status), else
 * MM_ETIMEDOUT / MM_EIO with a diag detail. Any thread; blocks the caller, so
 * never call it on the loop thread after start-up.
 */
int mm_http_fetch(const mm_http_request_t *req, long *code, mm_buf_t *body);

#endif
