/*
 * engine.c: the loop, sources, batch dispatch, pipelines, timers, signals
 * and shutdown (see engine.h); the flush job is flush.c's.
 */
#include "engine.h"

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../lib/error.h"
#include "../lib/log.h"
#include "../lib/time.h"
#include "flush.h"
#include "prepare.h"
#include "progress.h"

static void on_sink_flush(void *arg, mm_source_t *src, void (*done)(void *, int), void *done_arg);
static void engine_close_source(mm_engine_source_t *es);

/* ---- sources ---- */

mm_engine_source_t *mm_engine_source_of(mm_engine_t *ctx, mm_source_t *src)
{
	for (int i = 0; i < ctx->nsrcs; i++)
		if (ctx->srcs[i].src == src)
			return &ctx->srcs[i];
	return NULL;
}

void mm_engine_pause_sources(mm_engine_t *ctx)
{
	if (ctx->paused)
		return;
	ctx->paused = 1;
	ctx->stats.pauses++;
	for (int i = 0; i < ctx->nsrcs; i++)
		if (!ctx->srcs[i].closed && ctx->srcs[i].started)
			ctx->srcs[i].src->vt->pause(ctx->srcs[i].src);
}

void mm_engine_resume_sources(mm_engine_t *ctx)
{
	if (!ctx->paused || ctx->stopping || ctx->holds > 0 || ctx->job_failed)
		return;
	ctx->paused = 0;
	for (int i = 0; i < ctx->nsrcs; i++)
		if (!ctx->srcs[i].closed && ctx->srcs[i].started)
			ctx->srcs[i].src->vt->resume(ctx->srcs[i].src);
}

/* Stamps a batch's records in delivery order (mm_record_t.seq). A stamp is
 * the wall clock in ns at delivery, or one more than the previous stamp when
 * the clock has not moved past it, so stamps strictly increase within the
 * process; a restarted worker starts after every stamp of the one before
 * (unless the clock was stepped back by more than that process ran ahead).
 * first/last break ties of event time with them. */
static void stamp_arrivals(mm_engine_t *ctx, mm_batch_t *b)
{
	struct timespec ts;
	uint64_t now;

	clock_gettime(CLOCK_REALTIME, &ts);
	now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	if (now <= ctx->arrival)
		now = ctx->arrival + 1;
	for (size_t i = 0; i < b->n; i++)
		b->recs[i].seq = now + i;
	if (b->n)
		ctx->arrival = now + b->n - 1;
}

#ifdef MM_ERRINJ
/* Error injection (builds with MM_ERRINJ): MURMUR_ERRINJ_BLOCK_BATCH_MS=N
 * blocks the loop N ms in every batch, as synchronous I/O would, so that
 * tests can see it in the loop-lag probe. */
static void errinj_block_batch(void)
{
	const char *v = getenv("MURMUR_ERRINJ_BLOCK_BATCH_MS");
	long ms = v ? strtol(v, NULL, 10) : 0;
	struct timespec ts;

	if (ms <= 0)
		return;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}
#endif

static void on_deliver(void *arg, mm_batch_t *b)
{
	mm_engine_t *ctx = arg;
	mm_engine_source_t *es = mm_engine_source_of(ctx, b->src);
	/* Any number of Lua-path pipelines share one handler call: their list is
	 * on the stack up to 64, on the heap beyond. */
	mm_pipeline_t *small[64], **lua_pipes = small;
	int nlua = 0, nomem = 0;

	if (es == NULL)
		return;
	if (es->npipes > 64 && (lua_pipes = malloc((size_t)es->npipes * sizeof(*lua_pipes))) == NULL) {
		lua_pipes = small;
		nomem = 1;
	}
#ifdef MM_ERRINJ
	errinj_block_batch();
#endif
	ctx->stats.batches++;
	ctx->stats.records += b->n;
	stamp_arrivals(ctx, b);
	mm_progress_batch(b->src->id);
	if (mm_poison_count() > 0)
		for (size_t i = 0; i < b->n; i++)
			if (mm_poison_has(b->src->id, &b->recs[i]))
				b->recs[i].flags |= MM_REC_POISON;
	for (int i = 0; i < es->npipes; i++) {
		mm_pipeline_t *p = es->pipes[i];

		/* Held sources deliver nothing; this covers a batch already on its
		 * way when a pipeline was added next to a running source. */
		if (mm_prep_pending(ctx, p))
			continue;
		if (!p->uses_lua) {
			mm_pipeline_process_batch(p, b);
		} else if (nomem) {
			/* Never the C path for a Lua pipeline: its key is no field. */
			for (size_t r = 0; r < b->n; r++)
				mm_pipeline_reject(p, &b->recs[r], MM_REJ_LUA, MM_ENOMEM,
						   "out of memory listing the Lua-path pipelines");
		} else {
			lua_pipes[nlua++] = p;
		}
	}
	if (nlua && ctx->lua_batch) {
		for (int i = 0; i < nlua; i++)
			lua_pipes[i]->batch = b;
		ctx->lua_batch(ctx->lua_ud, b, lua_pipes, nlua);
		for (int i = 0; i < nlua; i++)
			lua_pipes[i]->batch = NULL;
	}
	if (lua_pipes != small)
		free(lua_pipes);
	mm_progress_idle();
	es->pos.len = 0;
	if (mm_buf_append(&es->pos, b->end_pos, b->end_pos_len) == 0)
		es->has_pos = 1;
	mm_flush_maybe(ctx, 0);
}

static void on_source_eof(void *arg, mm_source_t *src)
{
	mm_engine_t *ctx = arg;
	mm_engine_source_t *es = mm_engine_source_of(ctx, src);
	int all = 1;

	if (es)
		es->eof = 1;
	mm_log(MM_LOG_INFO, "engine", "source %s reached the end of its input", src->id);
	for (int i = 0; i < ctx->nsrcs; i++)
		all &= ctx->srcs[i].eof;
	if (all && ctx->once)
		mm_engine_stop(ctx);
}

static void on_source_error(void *arg, mm_source_t *src, int err, const char *detail)
{
	mm_engine_t *ctx = arg;

	mm_log(MM_LOG_ERROR, "engine", "source %s failed: %s: %s", src->id, mm_err_name(err), detail);
	/* Failing before anything was read (a missing input file) fails the same
	 * way after a restart: the supervisor must end the run, not retry. */
	if (ctx->stats.records == 0)
		mm_progress_fatal();
	ctx->exit_code = 1;
	mm_engine_stop(ctx);
}

/* Reads the position stored under key, or src's current key (a source
 * whose key changes while it runs, or whose position is in parts:
 * sink->position). A part (a Kafka partition, read when it is assigned) is
 * taken: its previous owner's flushes are fenced off. */
static int on_sink_position(void *arg, mm_source_t *src, const char *key, mm_buf_t *out,
			    void (*done)(void *, int, const char *), void *done_arg)
{
	mm_engine_t *ctx = arg;

	if (key)
		return mm_store_take_position(ctx->st, key, out, done, done_arg);
	return mm_store_get_position(ctx->st, mm_source_pos_key(src), out, done, done_arg);
}

/* Whether this worker owns the stored position of src's part, as the store
 * knows it (mm_store_position_own); -1 when the key cannot be built. */
static int on_sink_own(void *arg, mm_source_t *src, const char *part)
{
	mm_engine_t *ctx = arg;
	mm_buf_t key = {0};
	int own = -1;

	if (mm_source_part_key(src, part, &key) == 0)
		own = mm_store_position_own(ctx->st, (const char *)key.p);
	mm_buf_free(&key);
	return own;
}

/* The records of src's pipelines waiting for a later flush (deferred
 * claims), when no flush is running. */
static size_t on_sink_pending(void *arg, mm_source_t *src)
{
	mm_engine_t *ctx = arg;
	mm_engine_source_t *es = mm_engine_source_of(ctx, src);
	size_t n = 0;

	for (int i = 0; es && i < es->npipes; i++)
		n += es->pipes[i]->held[es->pipes[i]->cur].n + es->pipes[i]->held[!es->pipes[i]->cur].n;
	return n;
}

int mm_engine_attach_source(mm_engine_t *ctx, const char *backend, const mm_kv_t *kv, size_t nkv,
			    mm_pipeline_t *pipe)
{
	const mm_source_vtable_t *vt = mm_source_find(backend);
	mm_source_sink_t sink = {ctx, on_deliver, on_source_eof, on_source_error, on_sink_flush,
				 on_sink_position, on_sink_pending, on_sink_own};
	mm_engine_source_t *es = NULL, *grown;
	mm_source_t *src;
	mm_pipeline_t **pipes;
	int rc;

	if (vt == NULL)
		return mm_diag_set(MM_ENOTFOUND, "unknown source type '%s'", backend);
	rc = vt->open(ctx->loop, kv, nkv, &sink, &src);
	if (rc)
		return rc;
	for (int i = 0; i < ctx->nsrcs; i++)
		if (ctx->srcs[i].src &&
		    strcmp(mm_source_pos_key(ctx->srcs[i].src), mm_source_pos_key(src)) == 0)
			es = &ctx->srcs[i];
	if (es) {
		/* Same input named twice: share the open source, drop the new one. */
		src->vt->close(src, NULL, NULL);
	} else {
		grown = realloc(ctx->srcs, sizeof(*grown) * (size_t)(ctx->nsrcs + 1));
		if (grown == NULL) {
			src->vt->close(src, NULL, NULL);
			return mm_diag_set(MM_ENOMEM, "cannot add source");
		}
		ctx->srcs = grown;
		es = &ctx->srcs[ctx->nsrcs++];
		memset(es, 0, sizeof(*es));
		es->src = src;
	}
	pipes = realloc(es->pipes, sizeof(*pipes) * (size_t)(es->npipes + 1));
	if (pipes == NULL)
		return mm_diag_set(MM_ENOMEM, "cannot attach pipeline");
	es->pipes = pipes;
	es->pipes[es->npipes++] = pipe;
	if (pipe->cfg.max_record > es->max_record)
		es->max_record = pipe->cfg.max_record;
	mm_prep_start_sources(ctx);
	return 0;
}

/* ---- pipelines ---- */

int mm_engine_add_pipeline(mm_engine_t *ctx, mm_pipeline_config_t *cfg, mm_pipeline_t **out)
{
	mm_pipeline_t *p = NULL, **grown;
	int rc;

	for (int i = 0; i < ctx->npipes; i++)
		if (strcmp(ctx->pipes[i]->cfg.name, cfg->name) == 0) {
			rc = mm_diag_set(MM_EEXIST, "pipeline '%s' is defined twice", cfg->name);
			goto fail;
		}
	p = calloc(1, sizeof(*p));
	grown = realloc(ctx->pipes, sizeof(*grown) * (size_t)(ctx->npipes + 1));
	if (p == NULL || grown == NULL) {
		free(p);
		if (grown)
			ctx->pipes = grown;
		rc = mm_diag_set(MM_ENOMEM, "cannot add pipeline");
		goto fail;
	}
	ctx->pipes = grown;
	mm_pipeline_init(p, ctx->st, cfg);
	/* Its stored descriptor is checked asynchronously; p reads nothing
	 * until then (prepare.c). */
	if ((rc = mm_prep_pipeline(ctx, p)) != 0) {
		mm_pipeline_free(p);
		free(p);
		return rc;
	}
	p->index = ctx->npipes;
	ctx->pipes[ctx->npipes++] = p;
	*out = p;
	return 0;
fail:
	mm_pipeline_config_free(cfg);
	return rc;
}

void mm_engine_set_merged(mm_engine_t *ctx, mm_merged_fn fn, void *ud)
{
	ctx->merged = fn;
	ctx->merged_ud = ud;
}

void mm_engine_fail(mm_engine_t *ctx, int code)
{
	ctx->exit_code = code;
	mm_engine_stop(ctx);
}

void mm_engine_set_lua_batch(mm_engine_t *ctx, mm_lua_batch_fn fn, void *ud)
{
	ctx->lua_batch = fn;
	ctx->lua_ud = ud;
}

static void on_sink_flush(void *arg, mm_source_t *src, void (*done)(void *, int), void *done_arg)
{
	mm_engine_t *ctx = arg;

	if (mm_engine_flush(ctx, done, done_arg) != 0) {
		mm_log(MM_LOG_ERROR, "engine", "cannot queue a flush for %s: %s", src->id,
		       mm_diag_msg());
		done(done_arg, mm_diag_code());
	}
}

void mm_engine_hold(mm_engine_t *ctx, int on)
{
	if (on) {
		ctx->holds++;
		mm_engine_pause_sources(ctx);
	} else if (ctx->holds > 0 && --ctx->holds == 0) {
		mm_engine_resume_sources(ctx);
	}
}

void mm_engine_on_stop(mm_engine_t *ctx, void (*fn)(void *ud), void *ud)
{
	ctx->on_stop = fn;
	ctx->on_stop_ud = ud;
}

static int pipe_idle(const mm_pipeline_t *p)
{
	return p->agg[0].count == 0 && p->agg[1].count == 0 && p->base[0].count == 0 &&
	       p->base[1].count == 0 && p->ids[0].count == 0 &&
	       p->ids[1].count == 0 && p->held[0].n == 0 && p->held[1].n == 0;
}

static void engine_detach(mm_engine_t *ctx, mm_pipeline_t *p)
{
	for (int i = 0; i < ctx->nsrcs; i++) {
		mm_engine_source_t *es = &ctx->srcs[i];
		int n = 0;

		for (int j = 0; j < es->npipes; j++)
			if (es->pipes[j] != p)
				es->pipes[n++] = es->pipes[j];
		es->npipes = n;
	}
}

int mm_engine_update_pipeline(mm_engine_t *ctx, mm_pipeline_t *p, mm_pipeline_config_t *cfg)
{
	mm_pipeline_config_t old;
	int rc = 0;

	if (strcmp(p->cfg.name, cfg->name) != 0 || strcmp(p->cfg.compat, cfg->compat) != 0)
		rc = mm_diag_set(MM_EINCOMPAT, "pipeline '%s' is %s; the new definition is %s",
				 p->cfg.name, p->cfg.compat, cfg->compat);
	else if (ctx->job || !pipe_idle(p))
		rc = mm_diag_set(MM_EAGAIN, "pipeline '%s' still has deltas to flush", p->cfg.name);
	if (rc) {
		mm_pipeline_config_free(cfg);
		return rc;
	}
	/* The monoid is the same (compat matched), so the states, the namespace
	 * and the tables that point at p->cfg.monoid stay valid. */
	old = p->cfg;
	p->cfg = *cfg;
	p->cfg.monoid = old.monoid;
	memset(cfg, 0, sizeof(*cfg));
	old.monoid = p->cfg.monoid;
	mm_pipeline_config_free(&old);
	p->ns.name = p->cfg.name;
	p->uses_lua = p->cfg.key_kind == MM_PART_LUA || p->cfg.value_kind == MM_PART_LUA ||
		      p->cfg.time_kind == MM_PART_LUA || p->cfg.id_kind == MM_PART_LUA;
	engine_detach(ctx, p);
	return 0;
}

int mm_engine_remove_pipeline(mm_engine_t *ctx, mm_pipeline_t *p)
{
	int n = 0;

	if (ctx->job || !pipe_idle(p))
		return mm_diag_set(MM_EAGAIN, "pipeline '%s' still has deltas to flush", p->cfg.name);
	engine_detach(ctx, p);
	mm_prep_forget(ctx, p);
	for (int i = 0; i < ctx->npipes; i++)
		if (ctx->pipes[i] != p) {
			ctx->pipes[i]->index = n;
			ctx->pipes[n++] = ctx->pipes[i];
		}
	ctx->npipes = n;
	mm_pipeline_free(p);
	free(p);
	return 0;
}

void mm_engine_close_idle_sources(mm_engine_t *ctx)
{
	for (int i = 0; i < ctx->nsrcs; i++) {
		mm_engine_source_t *es = &ctx->srcs[i];

		if (es->src && es->npipes == 0) {
			mm_log(MM_LOG_INFO, "engine", "source %s is no longer used; closing it",
			       es->src->id);
			engine_close_source(es);
		}
	}
}

static void on_heartbeat(uv_timer_t *t)
{
	if (mm_progress)
		mm_progress->heartbeat_ms = mm_now_ms();
}

static void on_flush_timer(uv_timer_t *t)
{
	mm_engine_t *ctx = t->data;
	int64_t now = mm_now_ms(), interval = INT64_MAX;

	for (int i = 0; i < ctx->npipes; i++)
		if (ctx->pipes[i]->cfg.flush_interval_ms < interval)
			interval = ctx->pipes[i]->cfg.flush_interval_ms;
	if (now - ctx->last_flush_ms >= interval && ctx->job == NULL && mm_flush_has_work(ctx))
		mm_flush_start(ctx);
}

/* ---- lifecycle ---- */

static volatile sig_atomic_t early_signal;

static void on_early_signal(int signum)
{
	early_signal = signum;
}

void mm_engine_catch_early_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_early_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

int mm_engine_early_signal(void)
{
	int sig = early_signal;

	early_signal = 0;
	return sig;
}

int mm_engine_stop_pending(void)
{
	return early_signal;
}

/* Signals this close together are one stop request delivered twice. */
#define MM_SIGNAL_REPEAT_MS 250

static void on_signal(uv_signal_t *h, int signum)
{
	mm_engine_t *ctx = h->data;

	/* Ctrl-C in a terminal and systemd's stop signal the whole process
	 * group. The supervisor does not forward its copy once the progress page
	 * says the worker has it (mm_progress_stopping), but it may forward one
	 * before the worker got to say so: a repeat within milliseconds is that
	 * copy. Only a repeat that comes later is a second request to exit at
	 * once. */
	if (ctx->stopping && mm_now_ms() - ctx->signal_ms < MM_SIGNAL_REPEAT_MS)
		return;
	if (ctx->stopping) {
		mm_log(MM_LOG_WARN, "engine", "second signal %d: exiting without the final flush "
		       "(unflushed records will be read again on restart)", signum);
		exit(130);
	}
	mm_log(MM_LOG_INFO, "engine", "signal %d: stopping (flush, checkpoint, exit)", signum);
	ctx->signal_ms = mm_now_ms();
	mm_progress_stopping(ctx->signal_ms);
	mm_engine_stop(ctx);
}

int mm_engine_new(mm_store_t *st, uv_loop_t *loop, mm_engine_t **out)
{
	mm_engine_t *ctx = calloc(1, sizeof(*ctx));
	int rc;

	if (ctx == NULL)
		return mm_diag_set(MM_ENOMEM, "cannot allocate the engine");
	ctx->loop = loop;
	ctx->st = st;
	ctx->retry_delay_ms = MM_FLUSH_RETRY_MIN_MS;
	ctx->defer_delay_ms = MM_DEFER_MIN_MS;
	ctx->prep_delay_ms = 100;
	/* Start-up reads begin as pipelines are added, before run(); the
	 * store's own checks first. */
	uv_timer_init(loop, &ctx->prep_timer);
	ctx->prep_timer.data = ctx;
	if ((rc = mm_prep_store(ctx)) != 0) {
		uv_close((uv_handle_t *)&ctx->prep_timer, NULL);
		uv_run(loop, UV_RUN_NOWAIT);
		free(ctx);
		return rc;
	}
	*out = ctx;
	return 0;
}

int mm_engine_wait_store(mm_engine_t *ctx)
{
	while (ctx->store_state == 0)
		uv_run(ctx->loop, UV_RUN_ONCE);
	if (ctx->store_state < 0)
		return mm_diag_set(ctx->store_state, "%s", ctx->store_detail);
	return 0;
}

/* Sources free themselves; nothing is left to do when one is gone. */
static void on_source_closed(void *arg)
{
	(void)arg;
}

static void on_handle_closed(uv_handle_t *h)
{
	(void)h;
}

/* Closes one source, keeping its counters for stats. */
static void engine_close_source(mm_engine_source_t *es)
{
	if (es->src == NULL)
		return;
	snprintf(es->id, sizeof(es->id), "%s", es->src->id);
	es->records = es->src->records;
	es->bytes = es->src->bytes;
	es->closed = 1;
	es->has_pos = 0;
	es->src->vt->stop(es->src);
	es->src->vt->close(es->src, on_source_closed, es);
	es->src = NULL;
}

void mm_engine_close_all(mm_engine_t *ctx)
{
	if (ctx->stopped)
		return;
	ctx->stopped = 1;
	for (int i = 0; i < ctx->nsrcs; i++)
		engine_close_source(&ctx->srcs[i]);
	if (ctx->on_stop)
		ctx->on_stop(ctx->on_stop_ud);
	uv_close((uv_handle_t *)&ctx->flush_timer, on_handle_closed);
	uv_close((uv_handle_t *)&ctx->heartbeat, on_handle_closed);
	uv_close((uv_handle_t *)&ctx->retry_timer, on_handle_closed);
	uv_close((uv_handle_t *)&ctx->prep_timer, on_handle_closed);
	uv_close((uv_handle_t *)&ctx->sigint, on_handle_closed);
	uv_close((uv_handle_t *)&ctx->sigterm, on_handle_closed);
	mm_loop_lag_close(&ctx->lag, on_handle_closed);
	/* Closing the handles restores the default action, which would kill
	 * the process on the late copy of a stop signal (the supervisor's
	 * forward of a process-group signal) before its last words. */
	if (ctx->signal_ms) {
		signal(SIGINT, SIG_IGN);
		signal(SIGTERM, SIG_IGN);
	}
}

void mm_engine_continue_stop(mm_engine_t *ctx)
{
	if (ctx->job)
		return; /* on_flush_done calls back here */
	if (mm_flush_has_work(ctx)) {
		mm_flush_start(ctx);
		return;
	}
	mm_engine_close_all(ctx);
}

void mm_engine_stop(mm_engine_t *ctx)
{
	if (ctx->stopping)
		return;
	ctx->stopping = 1;
	for (int i = 0; i < ctx->nsrcs; i++)
		if (ctx->srcs[i].src)
			ctx->srcs[i].src->vt->stop(ctx->srcs[i].src);
	mm_engine_continue_stop(ctx);
}

int mm_engine_run(mm_engine_t *ctx, int once)
{
	int64_t interval = INT64_MAX;
	int signum;

	ctx->once = once;
	ctx->last_flush_ms = mm_now_ms();
	uv_timer_init(ctx->loop, &ctx->flush_timer);
	uv_timer_init(ctx->loop, &ctx->retry_timer);
	uv_timer_init(ctx->loop, &ctx->heartbeat);
	mm_loop_lag_start(&ctx->lag, ctx->loop);
	if (mm_progress) {
		/* The supervisor's watchdog reads this stamp: it stops when the loop
		 * thread is stuck (in a user function that never returns). */
		on_heartbeat(&ctx->heartbeat);
		uv_timer_start(&ctx->heartbeat, on_heartbeat, 100, 100);
	}
	uv_signal_init(ctx->loop, &ctx->sigint);
	uv_signal_init(ctx->loop, &ctx->sigterm);
	ctx->flush_timer.data = ctx->retry_timer.data = ctx;
	ctx->sigint.data = ctx->sigterm.data = ctx;
	uv_signal_start(&ctx->sigint, on_signal, SIGINT);
	uv_signal_start(&ctx->sigterm, on_signal, SIGTERM);
	for (int i = 0; i < ctx->npipes; i++)
		if (ctx->pipes[i]->cfg.flush_interval_ms < interval)
			interval = ctx->pipes[i]->cfg.flush_interval_ms;
	if (interval == INT64_MAX || interval <= 0)
		interval = 1000;
	/* Check four times per interval so a flush is at most 25% late. */
	uv_timer_start(&ctx->flush_timer, on_flush_timer, (uint64_t)(interval / 4 + 1),
		       (uint64_t)(interval / 4 + 1));
	ctx->running = 1;
	/* Each source starts once the store's checks passed, its pipelines'
	 * descriptors are checked and its position is read (prepare.c), all
	 * through store callbacks. */
	mm_prep_check_store(ctx);
	mm_prep_start_sources(ctx);
	if (ctx->nsrcs == 0 && once)
		mm_engine_stop(ctx);
	if ((signum = mm_engine_early_signal()) != 0) {
		mm_log(MM_LOG_INFO, "engine", "signal %d while starting: stopping (flush, checkpoint, exit)",
		       signum);
		ctx->signal_ms = mm_now_ms();
		mm_progress_stopping(ctx->signal_ms);
		mm_engine_stop(ctx);
	}
	uv_run(ctx->loop, UV_RUN_DEFAULT);
	return ctx->exit_code;
}

void mm_engine_free(mm_engine_t *ctx)
{
	if (ctx == NULL)
		return;
	mm_flush_discard(ctx);
	if (!ctx->stopped) {
		/* run() was never called: the sources were opened but not started;
		 * start-up reads still in flight are dropped when they answer. */
		ctx->stopping = 1;
		for (int i = 0; i < ctx->nsrcs; i++)
			if (ctx->srcs[i].src)
				ctx->srcs[i].src->vt->close(ctx->srcs[i].src, NULL, NULL);
		uv_close((uv_handle_t *)&ctx->prep_timer, on_handle_closed);
		uv_run(ctx->loop, UV_RUN_DEFAULT);
	}
	if (ctx->st)
		mm_store_close(ctx->st);
	mm_prep_free_all(ctx);
	for (int i = 0; i < ctx->npipes; i++) {
		mm_pipeline_free(ctx->pipes[i]);
		free(ctx->pipes[i]);
	}
	for (int i = 0; i < ctx->nsrcs; i++) {
		free(ctx->srcs[i].pipes);
		mm_buf_free(&ctx->srcs[i].pos);
	}
	free(ctx->srcs);
	free(ctx->pipes);
	free(ctx);
}
