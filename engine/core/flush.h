/*
 * flush.h: what engine.c and flush.c share (private to engine/core). The
 * engine owns the loop, the sources and the pipelines; flush.c owns the
 * flush job (ctx->job, ctx->waiters, the retry timer's callback) and calls
 * back into the engine only to pause, resume and stop the sources.
 * Loop thread only.
 */
#ifndef MM_FLUSH_H
#define MM_FLUSH_H

#include "engine.h"

/* The first wait after a failed flush (doubling up to 30 s). */
#define MM_FLUSH_RETRY_MIN_MS 100
#define MM_DEFER_MIN_MS 20     /* stopping: first pause before re-claiming deferred ids */

/* ---- flush.c ---- */

/* Starts a flush if a pipeline reached its limits (or force, or a waiter
 * asks); with one in flight, notes that another is wanted and pauses the
 * sources past twice the limits. */
void mm_flush_maybe(mm_engine_t *ctx, int force);

/* Starts a flush of everything pending now (no job may be in flight). */
void mm_flush_start(mm_engine_t *ctx);

/* 1 if deltas, marks, held records or positions wait for a flush. */
int mm_flush_has_work(const mm_engine_t *ctx);

/* Frees the job in flight and the spare arrays, and tells every waiter
 * MM_ECLOSED (engine_free). */
void mm_flush_discard(mm_engine_t *ctx);

/* ---- engine.c ---- */

/* Pause and resume every open source (resume only when nothing holds them:
 * no hold, no failed flush, not stopping). */
void mm_engine_pause_sources(mm_engine_t *ctx);
void mm_engine_resume_sources(mm_engine_t *ctx);

/* Shutdown steps: continue once the flush in flight is over; close every
 * source and handle. */
void mm_engine_continue_stop(mm_engine_t *ctx);
void mm_engine_close_all(mm_engine_t *ctx);

#endif
