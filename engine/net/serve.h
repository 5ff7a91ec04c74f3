/*
 * serve.h: the query server put together: the HTTP server (server.h), the
 * query service (query.h) behind the Connect/gRPC layer (rpc.h), and the
 * plain routes. Used by `murmur serve` (its own loop and read-only stores)
 * and by `murmur run --listen` (the engine's loop and store).
 *
 * Plain routes (/metrics, /healthz, /readyz, /) are added in
 * mm_serve_start, after the server opens; mm_serve_t gives them the server
 * and the rpc layer's counters.
 *
 * Threads: the loop thread.
 */
#ifndef MM_NET_SERVE_H
#define MM_NET_SERVE_H

#include <uv.h>

#include "query.h"
#include "rpc.h"
#include "server.h"

typedef struct mm_serve {
	uv_loop_t *loop;
	mm_server_t *srv;
	mm_rpc_t *rpc;
	mm_query_t *query;
	void (*done)(void *);
	void *done_arg;
	uv_idle_t drain;        /* stopping: waits for the reads in flight */
} mm_serve_t;

/* Listens on opt->listen and serves the query service over stores[0..n)
 * (not owned; they must outlive the server). Returns 0 or a negative MM_E*
 * code with detail (bad address, missing token, port taken). */
int mm_serve_start(uv_loop_t *loop, const mm_server_options_t *opt, mm_store_t *const *stores,
		   size_t n, mm_serve_t **out);

/* Closes the server; done(arg) runs once every connection is closed and
 * every store read in flight has completed, after which the stores may be
 * closed. Frees s. */
void mm_serve_stop(mm_serve_t *s, void (*done)(void *), void *arg);

#endif
