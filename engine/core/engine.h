/*
 * engine.h: the runtime on one libuv loop: sources in, pipelines, flushes to
 * the store with source positions, shutdown.
 *
 * Data path: a source delivers a batch -> every pipeline attached to that
 * source processes it (C fast path, or one Lua call for all Lua-path
 * pipelines) -> deltas accumulate per (entity, bucket) -> when a pipeline's
 * size or age limit is reached, ONE flush takes every pipeline's pending
 * deltas, dedup marks, due purges and every source's position and applies
 * them to the store as one unit. Only one flush is in flight; new records go
 * to fresh tables meanwhile (double buffering). If pending deltas reach twice
 * the limit while a flush is in flight, or a flush fails, sources are paused;
 * a failed flush is retried with exponential backoff until it succeeds, so
 * accepted data is never dropped and positions never move past it. After a
 * successful flush the positions are acknowledged to the sources.
 *
 * Shutdown (SIGINT/SIGTERM, mm_engine_stop, or end of input with once):
 * stop the sources, finish the in-flight flush, flush what is pending, close
 * sources and store, run the loop until empty, uv_loop_close.
 *
 * Threads: everything here runs on the loop thread.
 */
#ifndef MM_ENGINE_H
#define MM_ENGINE_H

#include <stdint.h>
#include <uv.h>

#include "../lib/histogram.h"
#include "../source/source.h"
#include "../store/store.h"
#include "looplag.h"
#include "pipeline.h"

typedef struct mm_engine mm_engine_t;
typedef struct mm_prep mm_prep_t;

typedef struct mm_engine_stats {
	uint64_t batches;
	uint64_t records;
	uint64_t flushes;
	uint64_t flush_failures;
	uint64_t store_writes;
	uint64_t pauses;
	uint64_t flush_ns_max;
	uint64_t flush_ns_total;
	uint64_t purged;
	mm_histo_t flush_hist;  /* durations of successful flushes, for /metrics */
} mm_engine_stats_t;

/* Called once per batch with the Lua-path pipelines that must process it. */
typedef void (*mm_lua_batch_fn)(void *ud, mm_batch_t *b, mm_pipeline_t **pipes, int n);

/* Called once per flush and pipeline with an on-merge hook, after the flush
 * is durable, with that pipeline's merged deltas (the hooks' input). */
typedef void (*mm_merged_fn)(void *ud, mm_pipeline_t *p, const mm_delta_t *const *deltas, size_t n);

typedef struct mm_engine_source {
	mm_source_t *src;
	mm_pipeline_t **pipes;
	int npipes;
	mm_buf_t pos;      /* position after the last delivered batch */
	int has_pos;
	int eof;
	int started;
	int closed;          /* close requested: src must not be used any more */
	uint64_t max_record;
	/* Copied from src when it closes, so stats outlive the source. */
	char id[512];
	uint64_t records, bytes;
} mm_engine_source_t;

/* Someone waiting for the next flush to be durable (sink->flush). */
typedef struct mm_flush_waiter {
	void (*done)(void *arg, int status);
	void *arg;
	struct mm_flush_waiter *next;
} mm_flush_waiter_t;

struct mm_engine {
	uv_loop_t *loop;
	mm_store_t *st;
	mm_pipeline_t **pipes;
	int npipes;
	mm_engine_source_t *srcs;
	int nsrcs;
	int once;               /* stop when every source reached EOF */
	int running;            /* run() started the sources */
	int holds;              /* mm_engine_hold() count: sources stay paused while > 0 */
	void (*on_stop)(void *ud); /* told when the engine closes its handles */
	void *on_stop_ud;
	int stopping;
	int64_t signal_ms;      /* when the stopping signal arrived */
	int stopped;
	int paused;
	int exit_code;
	mm_lua_batch_fn lua_batch;
	mm_merged_fn merged;
	void *merged_ud;
	void *lua_ud;
	/* flushing */
	struct mm_flush_job *job; /* in flight, or NULL */
	int flush_wanted;
	int job_failed;         /* the flush in flight failed and waits for a retry */
	/* flush.c: the last flush's delta and mark arrays, kept for the next
	 * one, whose fresh arrays of the same size would otherwise be fresh
	 * pages faulted in while the loop fills them (doc/performance-journal.md) */
	struct mm_flush_spare {
		void *p;                /* from mm_huge_grow (lib/hugemap.h) */
		size_t bytes;
	} spare_deltas, spare_marks, spare_hashed;
	uint64_t arrival;       /* the last arrival stamp given to a record */
	mm_flush_waiter_t *waiters; /* for the next flush to start */
	int64_t last_flush_ms;
	uv_timer_t flush_timer;   /* age limit */
	uv_timer_t retry_timer;   /* backoff after a failed flush */
	uv_timer_t heartbeat;     /* stamps the supervisor's progress page */
	int64_t retry_delay_ms;
	int64_t defer_delay_ms; /* stopping: pause before asking again for deferred ids */
	uv_signal_t sigint, sigterm;
	mm_loop_lag_t lag;        /* how late the loop runs its callbacks */
	/* the store's start-up checks (mm_store_start): 0 under way, 1 passed,
	 * or the failure's MM_E* code with its message */
	int store_state;
	char store_detail[400];
	/* start-up reads in flight (prepare.c) */
	struct mm_prep *preps;
	int unready;              /* pipelines whose descriptor check is not done */
	uv_timer_t prep_timer;    /* asks again after a store failure */
	int64_t prep_delay_ms;
	mm_engine_stats_t stats;
};

/* Creates an engine on loop with the given store (owned from now on) and
 * starts the store's start-up checks (mm_store_start) on the loop: no
 * source starts before they pass; if they fail, run() stops with status 1
 * and their message. */
int mm_engine_new(mm_store_t *st, uv_loop_t *loop, mm_engine_t **out);

/* Before run(), for an owner that must know at once (the Lambda runtime
 * reports it as its init error): runs the loop until the store's checks
 * are done. 0, or their failure (message in the diag slot). */
int mm_engine_wait_store(mm_engine_t *ctx);

/* Adds a pipeline (takes ownership of cfg's strings even on failure). The
 * check against the state already in the store is asynchronous: the
 * pipeline reads nothing (its sources do not start, running sources are
 * held) until its stored descriptor was read and matches (same monoid,
 * parameters and window) and its own was written; a mismatch stops the
 * engine with status 3 and cfg->where in the message (prepare.c). */
int mm_engine_add_pipeline(mm_engine_t *ctx, mm_pipeline_config_t *cfg, mm_pipeline_t **out);

/* Opens a source (or finds the open one with the same id) and attaches pipe. */
int mm_engine_attach_source(mm_engine_t *ctx, const char *backend, const mm_kv_t *kv, size_t nkv,
			    mm_pipeline_t *pipe);

void mm_engine_set_lua_batch(mm_engine_t *ctx, mm_lua_batch_fn fn, void *ud);
void mm_engine_set_merged(mm_engine_t *ctx, mm_merged_fn fn, void *ud);

/* Stops gracefully and makes run() return code (a propagated hook failure). */
void mm_engine_fail(mm_engine_t *ctx, int code);

/* Starts sources from their stored positions, runs until stopped; returns the
 * process exit code (0 clean, non-zero on fatal source/store errors). */
int mm_engine_run(mm_engine_t *ctx, int once);

/* Catches SIGINT/SIGTERM from process start until mm_engine_run installs the
 * loop's handlers: a stop requested while the scripts load or the store opens
 * then stops the engine as soon as it runs, instead of killing the process
 * (Ctrl-C at start-up reaches the whole process group). Main thread, once. */
void mm_engine_catch_early_signals(void);

/* The stop signal caught since then and not yet acted on (0: none); clears
 * it. The supervisor asks before it starts a worker. */
int mm_engine_early_signal(void);

/* The same without clearing it: a blocking wait at start-up (the scripts'
 * probe child) gives up on it, and run() then acts on it. */
int mm_engine_stop_pending(void);

/* Asks for a graceful stop (safe to call from a callback). */
void mm_engine_stop(mm_engine_t *ctx);

/* Calls done(arg, 0) once everything accepted so far is durable (a flush is
 * started if needed), or done(arg, MM_ECLOSED) if the engine goes away first. */
int mm_engine_flush(mm_engine_t *ctx, void (*done)(void *arg, int status), void *arg);

/* hold(ctx, 1) pauses every source until a matching hold(ctx, 0); holds nest
 * and combine with the engine's own backpressure pauses. */
void mm_engine_hold(mm_engine_t *ctx, int on);

/*
 * Hot reload primitives, called between batches (never from inside one).
 * update: replaces p's definition with cfg (same name; cfg->compat must equal
 * the running one, else MM_EINCOMPAT) and detaches p from its sources — the
 * caller re-attaches it with mm_engine_attach_source. An unchanged source is
 * found by its id and keeps running, with no reconnect and no rewind.
 * remove: detaches and frees p. Both require p to hold no pending deltas
 * (flush first). close_idle_sources stops and closes sources that no
 * pipeline uses any more (their last position was flushed with the state).
 */
int mm_engine_update_pipeline(mm_engine_t *ctx, mm_pipeline_t *p, mm_pipeline_config_t *cfg);
int mm_engine_remove_pipeline(mm_engine_t *ctx, mm_pipeline_t *p);
void mm_engine_close_idle_sources(mm_engine_t *ctx);

/* Called when the engine stops and closes its handles, so owners of extra
 * handles on the loop (the Lua binding's timers and watchers) close theirs. */
void mm_engine_on_stop(mm_engine_t *ctx, void (*fn)(void *ud), void *ud);

/* Frees everything (after run returned, or if run was never called). */
void mm_engine_free(mm_engine_t *ctx);

#endif
