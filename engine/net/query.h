/*
 * query.h: the murmur.v1.QueryService methods (proto/murmur/v1/query.proto)
 * over one or more stores, in C, for the server's rpc layer.
 *
 * Why C and not a Lua call per request: a Get is a descriptor lookup, a
 * bucket range, one get_many and a merge, all of which exist in C already
 * (the store vtable and the monoids). Going through the Lua funnel would add
 * a C->Lua->C round trip and table building per request to a path whose
 * budget at 50 000 Get/s is 20 microseconds on one core, and Lua owns the
 * loop thread that the server shares with `murmur run`. The rules are the
 * same as `murmur query` (lua/murmur/query.lua): the pipeline's monoid and
 * window come from the descriptor the runner saved in the store, windowed
 * reads fetch every bucket of the range with one get_many per store, and
 * several stores (data directories) are merged with the monoid.
 *
 * Coalescing: the reads of every request planned during one loop iteration
 * (all the requests a poll phase parsed, e.g. one per busy connection) go
 * out after the poll phase as one get_many per pipeline and store, so
 * concurrent requests share one store read (LMDB: one read transaction and
 * one thread-pool round trip) instead of one each.
 *
 * Stores are not owned and must outlive the query service; they may be the
 * stores of a running engine (`murmur run --listen`): reads run beside its
 * flushes (LMDB: a read transaction on the thread pool).
 *
 * Threads: the loop thread.
 */
#ifndef MM_NET_QUERY_H
#define MM_NET_QUERY_H

#include <stddef.h>

#include "../store/store.h"
#include "rpc.h"

typedef struct mm_query mm_query_t;

/* A query service over stores[0..n) (n >= 1; the array is copied), on loop. */
int mm_query_open(uv_loop_t *loop, mm_store_t *const *stores, size_t n, mm_query_t **out);

/* The rpc implementation (mm_rpc_impl_fn) with arg = the mm_query_t. */
void mm_query_call(void *arg, mm_rpc_call_t *call);

/* Keeps results for ttl_ms (0: no cache, the default): a read of the same
 * pipeline, entity and bucket range within that time is answered without
 * the store, unless the request sets fresh_read. At most 100 000 results.
 * Returns 0 or MM_ENOMEM. */
int mm_query_cache(mm_query_t *q, uint64_t ttl_ms);

/* Store reads queued or in flight; close only at 0 (run the loop until then). */
size_t mm_query_inflight(const mm_query_t *q);

/* Frees q; its check handle is closed, so the loop must run once more. */
void mm_query_close(mm_query_t *q);

#endif
