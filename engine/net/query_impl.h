/*
 * query_impl.h: what the files of the query service share (private to
 * engine/net/query*.c; the service is reached through query.h).
 *
 * The service is one struct (struct mm_query) with its cached pipeline
 * descriptors, and a read is one job (job_t); each file owns one seam:
 *   query.c        the Get*, MightContain dispatch, jobs, the per-iteration
 *                  batches of store reads, the result cache, open/close
 *   query_meta.c   pipeline descriptors: parsing, the cache, reads shared by
 *                  the calls that wait for them, ListPipelines and Describe
 *   query_range.c  a job's bucket range from its method and times
 *   query_value.c  a merged value as a typed Result, a job's Window
 *
 * Threads: the loop thread.
 */
#ifndef MM_NET_QUERY_IMPL_H
#define MM_NET_QUERY_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "murmur/v1/query.pb-c.h"

#include "../lib/error.h"
#include "../store/keyset.h"
#include "query.h"
#include "rcache.h"

#define MAX_BUCKETS 100000
#define MAX_KEYS 200000
#define MAX_ENTITY 1024

/* A message of type T from arena a, initialised by init, or NULL. */
#define NEW(a, T, init) ({ T *x_ = mm_arena_alloc((a), sizeof(T)); if (x_) init(x_); x_; })

typedef struct pipe_meta {
	char *name;
	mm_monoid_t m;
	char describe[96];
	int64_t gran, ret;
	char *script;
	char **keys;
	size_t nkeys;
	struct pipe_meta *next;
} pipe_meta_t;

typedef struct job job_t;

/* A call waiting for a descriptor that is not cached yet. It lives in the
 * call's arena; fn gets the descriptor, or rc and its detail. */
typedef struct meta_wait {
	void (*fn)(void *arg, int rc, const char *detail, const pipe_meta_t *pm);
	void *arg;
	struct meta_wait *next;
} meta_wait_t;

struct mm_query {
	mm_store_t **stores;
	size_t nstores;
	pipe_meta_t *metas;
	struct meta_read *reading;  /* descriptor reads in flight */
	size_t inflight;            /* store reads queued or in flight */
	uv_check_t *check;          /* flushes `queue` after each poll phase */
	mm_rcache_t *rcache;        /* results kept for --result-cache, or NULL */
	job_t *queue, **queue_tail; /* jobs planned in this loop iteration */
};

enum { RANGE_ALL, RANGE_WINDOW, RANGE_FROM_TO };

/* A job's view of one store's answers: key i's state and found flag are
 * at index map[i] of states and found (index i when map is NULL). */
typedef struct slot {
	job_t *job;
	uint8_t *states;
	uint8_t *found;
	const uint32_t *map;
} slot_t;

struct job {
	mm_query_t *q;
	mm_rpc_call_t *call;
	const pipe_meta_t *pm;
	char **ents;
	size_t nent;
	int64_t lo, hi;             /* bucket range; 0..0 for all-time */
	size_t nb;
	mm_key_t *keys;
	slot_t *slots;
	size_t pending;
	int status;
	char detail[256];
	int include_raw;
	int bloom;                  /* MightContain */
	char **items;
	size_t nitems;
	job_t *next;                /* in the query's queue, then in its batch */
	int fresh;                  /* fresh_read: skip the result cache */
	int mode;                   /* RANGE_*, with the request's strings below */
	const char *window, *at, *from, *to;
	meta_wait_t wait;           /* while the descriptor is read */
	struct hit {                /* per entity, when every one was cached */
		uint8_t *p;
		size_t n;
		int found;
	} *hits;
};

/* The rpc status of an MM_E* code from a store or a descriptor. */
static inline int code_of(int rc)
{
	if (rc == MM_ENOTFOUND)
		return MM_RPC_NOT_FOUND;
	if (rc == MM_EINCOMPAT)
		return MM_RPC_FAILED_PRECONDITION;
	if (rc == MM_ENOMEM)
		return MM_RPC_RESOURCE_EXHAUSTED;
	return mm_err_retriable(rc) ? MM_RPC_UNAVAILABLE : MM_RPC_INTERNAL;
}

/* query_meta.c */

/* Frees a descriptor. */
void mm_query_meta_free(pipe_meta_t *pm);

/* The cached descriptor of pipeline `name`, or NULL. */
const pipe_meta_t *mm_query_meta_find(const mm_query_t *q, const char *name);

/* Reads the descriptor of pipeline `name` (not cached) from every store,
 * without blocking the loop: w->fn runs when all have answered (before this
 * returns only if no store could start its read). Calls asking for the same
 * pipeline meanwhile share the read. Returns 0, or MM_ENOMEM (then w->fn is
 * not called). */
int mm_query_meta_read(mm_query_t *q, const char *name, meta_wait_t *w);

/* Answers a ListPipelines call. */
void mm_query_list(mm_query_t *q, mm_rpc_call_t *call);

/* Answers a Describe call of pipeline (a non-empty name). */
void mm_query_describe(mm_query_t *q, mm_rpc_call_t *call, const char *pipeline);

/* query_range.c */

/* Fills j->lo/hi/nb; returns 0 or an MM_RPC code with j->detail. */
int mm_query_plan_range(job_t *j, int mode, const char *window, const char *at, const char *from,
			       const char *to);

/* query_value.c */

/* Fills the oneof of r from the monoid's JSON (engine/monoid to_json).
 * Returns 0 or a negative MM_E* code (with the diagnostics set). */
int mm_query_fill_value(mm_arena_t *a, const pipe_meta_t *pm, const void *acc, int include_raw,
			Murmur__V1__Result *r);

/* The Window of j's answer in arena a, or NULL for an all-time pipeline
 * (or when out of memory). */
Murmur__V1__Window *mm_query_make_window(mm_arena_t *a, const job_t *j);

#endif
