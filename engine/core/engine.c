/*
 * engine.c: the loop, batch dispatch, flushes and shutdown (see engine.h).
 */
#include "engine.h"

#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "../lib/error.h"
#include "../monoid/window.h"
#include "claims.h"
#include "log.h"
#include "progress.h"

#define MM_RETRY_MIN_MS 100
#define MM_RETRY_MAX_MS 30000
#define MM_PURGE_EVERY_MS 3600000

/* One flush in flight: owns copies of everything the store reads. */
struct mm_flush_job {
	mm_engine_t *ctx;
	mm_flush_t f;
	mm_buf_t posdata;        /* concatenated position bytes */
	size_t *pos_src;         /* engine source index of positions[i] */
	uint64_t started_ns;
	uint64_t records;        /* accepted records covered by this flush */
	int attempts;
	int claimed;             /* the claim round is over, or none was needed */
	int built;               /* f holds the flush (after the claim round, if any) */
	mm_claim_round_t *round; /* claims of the held records, or NULL */
	mm_flush_waiter_t *waiters; /* told when this flush is durable */
};

static void engine_maybe_flush(mm_engine_t *ctx, int force);
static void engine_continue_stop(mm_engine_t *ctx);
static void on_sink_flush(void *arg, mm_source_t *src, void (*done)(void *, int), void *done_arg);
static void engine_close_source(mm_engine_source_t *es);
static void engine_close_all(mm_engine_t *ctx);

int64_t mm_now_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* ---- sources ---- */

static mm_engine_source_t *engine_source_of(mm_engine_t *ctx, mm_source_t *src)
{
	for (int i = 0; i < ctx->nsrcs; i++)
		if (ctx->srcs[i].src == src)
			return &ctx->srcs[i];
	return NULL;
}

static void engine_pause(mm_engine_t *ctx)
{
	if (ctx->paused)
		return;
	ctx->paused = 1;
	ctx->stats.pauses++;
	for (int i = 0; i < ctx->nsrcs; i++)
		if (!ctx->srcs[i].closed)
			ctx->srcs[i].src->vt->pause(ctx->srcs[i].src);
}

static void engine_resume(mm_engine_t *ctx)
{
	if (!ctx->paused || ctx->stopping || ctx->holds > 0 || ctx->job_failed)
		return;
	ctx->paused = 0;
	for (int i = 0; i < ctx->nsrcs; i++)
		if (!ctx->srcs[i].closed)
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

static void on_deliver(void *arg, mm_batch_t *b)
{
	mm_engine_t *ctx = arg;
	mm_engine_source_t *es = engine_source_of(ctx, b->src);
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
	engine_maybe_flush(ctx, 0);
}

static void on_source_eof(void *arg, mm_source_t *src)
{
	mm_engine_t *ctx = arg;
	mm_engine_source_t *es = engine_source_of(ctx, src);
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

/* Starts a source after its stored position (or from the beginning). */
static int engine_start_source(mm_engine_t *ctx, mm_engine_source_t *es)
{
	mm_buf_t pos = {0};
	int rc;

	es->src->max_record = es->max_record;
	rc = mm_store_get_position(ctx->st, mm_source_pos_key(es->src), &pos);
	/* Positions stored before they were keyed by consumer are keyed by the
	 * source id alone. A private store's (the data directory's) can only be
	 * this reader's own: resume from it; the next flush stores the position
	 * under the new key. A shared store's may be any reader's: never. */
	if (rc == MM_ENOTFOUND && !ctx->st->claims && strcmp(mm_source_pos_key(es->src), es->src->id)) {
		rc = mm_store_get_position(ctx->st, es->src->id, &pos);
		if (rc == 0)
			mm_log(MM_LOG_INFO, "engine", "source %s: reading its position stored before "
			       "consumers; it moves to '%s' at the next flush", es->src->id,
			       mm_source_pos_key(es->src));
	}
	if (rc == MM_ENOTFOUND || rc == MM_ENOTSUP) {
		rc = es->src->vt->start(es->src, NULL, 0);
	} else if (rc == 0) {
		mm_log(MM_LOG_INFO, "engine", "source %s resumes from its checkpoint", es->src->id);
		rc = es->src->vt->start(es->src, pos.p, pos.len);
	}
	mm_buf_free(&pos);
	if (rc == 0) {
		es->started = 1;
		if (ctx->paused)
			es->src->vt->pause(es->src);
	}
	return rc;
}

int mm_engine_attach_source(mm_engine_t *ctx, const char *backend, const mm_kv_t *kv, size_t nkv,
			    mm_pipeline_t *pipe)
{
	const mm_source_vtable_t *vt = mm_source_find(backend);
	mm_source_sink_t sink = {ctx, on_deliver, on_source_eof, on_source_error, on_sink_flush};
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
	if (ctx->running && !es->started)
		return engine_start_source(ctx, es);
	return 0;
}

/* ---- pipelines ---- */

int mm_engine_add_pipeline(mm_engine_t *ctx, mm_pipeline_config_t *cfg, mm_pipeline_t **out)
{
	mm_pipeline_t *p = NULL, **grown;
	mm_buf_t meta = {0};
	size_t clen;
	int rc;

	for (int i = 0; i < ctx->npipes; i++)
		if (strcmp(ctx->pipes[i]->cfg.name, cfg->name) == 0) {
			rc = mm_diag_set(MM_EEXIST, "pipeline '%s' is defined twice", cfg->name);
			goto fail;
		}
	clen = strlen(cfg->compat);
	rc = mm_store_get_meta(ctx->st, cfg->name, &meta);
	if (rc == 0) {
		const char *nl = memchr(meta.p, '\n', meta.len);
		size_t old = nl ? (size_t)(nl - (const char *)meta.p) : meta.len;

		if (old != clen || memcmp(meta.p, cfg->compat, clen) != 0) {
			rc = mm_diag_set(MM_EINCOMPAT,
					 "pipeline '%s' already has state as %.*s; this definition "
					 "is %s (use a new pipeline name, or remove the old state)",
					 cfg->name, (int)old, (const char *)meta.p, cfg->compat);
			goto fail;
		}
	} else if (rc != MM_ENOTFOUND) {
		goto fail;
	}
	meta.len = 0;
	if (mm_buf_printf(&meta, "%s\n%s", cfg->compat, cfg->meta ? cfg->meta : "{}") != 0) {
		rc = MM_ENOMEM;
		goto fail;
	}
	rc = mm_store_put_meta(ctx->st, cfg->name, meta.p, meta.len);
	if (rc)
		goto fail;
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
	mm_pipeline_init(p, ctx, cfg);
	p->index = ctx->npipes;
	ctx->pipes[ctx->npipes++] = p;
	*out = p;
	mm_buf_free(&meta);
	return 0;
fail:
	mm_buf_free(&meta);
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

/* Hands each hooked pipeline its durable deltas (not the rejected ones). */
static void engine_run_hooks(mm_engine_t *ctx, struct mm_flush_job *job)
{
	const mm_delta_t **list = NULL;

	for (int i = 0; i < ctx->npipes && ctx->merged; i++) {
		mm_pipeline_t *p = ctx->pipes[i];
		size_t n = 0;

		if (!p->cfg.on_merge)
			continue;
		if (list == NULL && (list = calloc(job->f.ndeltas + 1, sizeof(*list))) == NULL) {
			mm_log(MM_LOG_ERROR, p->cfg.name, "out of memory: on-merge hooks skipped");
			return;
		}
		for (size_t d = 0; d < job->f.ndeltas; d++)
			if (job->f.deltas[d].ns == &p->ns && job->f.delta_done[d] != MM_DELTA_REJECTED)
				list[n++] = &job->f.deltas[d];
		if (n)
			ctx->merged(ctx->merged_ud, p, list, n);
	}
	free(list);
}

void mm_engine_set_lua_batch(mm_engine_t *ctx, mm_lua_batch_fn fn, void *ud)
{
	ctx->lua_batch = fn;
	ctx->lua_ud = ud;
}

/* ---- flushing ---- */

static int pipe_due(const mm_pipeline_t *p, int hard)
{
	uint64_t mul = hard ? 2 : 1;

	return p->pending_records >= p->cfg.flush_events * mul ||
	       p->agg[p->cur].count >= p->cfg.flush_keys * mul;
}

static void waiters_notify(mm_flush_waiter_t *w, int status)
{
	while (w) {
		mm_flush_waiter_t *next = w->next;

		w->done(w->arg, status);
		free(w);
		w = next;
	}
}

static void job_unbuild(struct mm_flush_job *job);

static void job_free(struct mm_flush_job *job)
{
	mm_claim_round_free(job->round);
	job_unbuild(job);
	free(job->f.positions);
	free(job->pos_src);
	mm_buf_free(&job->posdata);
	free(job);
}

static void on_flush_done(void *arg, int status, const char *detail);
static int job_build(mm_engine_t *ctx, struct mm_flush_job *job);
static void on_claims_done(void *arg);

static void flush_submit(mm_engine_t *ctx)
{
	struct mm_flush_job *job = ctx->job;
	int rc = 0;

	if (!job->built) {
		if (job_build(ctx, job) != 0) {
			/* The generation stays with the job: retry building later. */
			job_unbuild(job);
			on_flush_done(job, MM_ENOMEM, mm_diag_msg());
			return;
		}
		job->built = 1;
	}
	job->attempts++;
	job->started_ns = uv_hrtime();
	job->f.now_ms = mm_now_ms();
	for (int i = 0; i < ctx->npipes && rc == 0; i++)
		rc = mm_pipeline_sync_dead_letters(ctx->pipes[i]);
	if (rc == 0)
		rc = mm_store_apply(ctx->st, &job->f, on_flush_done, job);
	if (rc) {
		/* A failure to submit is handled like a failed flush: retry later. */
		on_flush_done(job, rc, mm_diag_msg());
	}
}

static void on_retry_timer(uv_timer_t *t)
{
	mm_engine_t *ctx = t->data;

	struct mm_flush_job *job = ctx->job;

	if (job == NULL)
		return;
	if (!job->claimed) {
		/* The claim round could not start: try again before building. */
		if (mm_claim_round_start(ctx, on_claims_done, job, &job->round) != 0)
			on_flush_done(job, MM_ENOMEM, mm_diag_msg());
		return;
	}
	mm_claim_round_renew(job->round);
	flush_submit(ctx);
}

/* A flush failure no retry can fix (a corrupt stored state, an argument the
 * store refuses) would keep the sources paused forever. Out of memory is
 * worth retrying: memory is freed as flushes land. */
static int flush_retriable(int status)
{
	return mm_err_retriable(status) || status == MM_ENOMEM;
}

/* Gives up on a flush that failed for good: its positions are never
 * acknowledged, and nothing later is flushed either (a later flush's
 * positions would skip this one's records). The engine stops with status 1
 * and marks the failure fatal, so the supervisor ends the run instead of
 * restarting into the same failure; a restart after the cause is fixed reads
 * everything since the last checkpoint again. */
static void engine_abandon_flush(mm_engine_t *ctx, struct mm_flush_job *job, int status,
				 const char *detail)
{
	mm_log(MM_LOG_ERROR, "engine",
	       "flush of %zu deltas failed: %s: %s; this error is not retriable: stopping "
	       "without a checkpoint (records since the last one are read again on restart)",
	       job->f.ndeltas, mm_err_name(status), detail);
	ctx->job = NULL;
	ctx->job_failed = 1;
	ctx->exit_code = 1;
	mm_progress_fatal();
	engine_pause(ctx);
	waiters_notify(job->waiters, status);
	job->waiters = NULL;
	job_free(job);
	ctx->stopping = 1;
	engine_close_all(ctx);
}

static void on_flush_done(void *arg, int status, const char *detail)
{
	struct mm_flush_job *job = arg;
	mm_engine_t *ctx = job->ctx;
	uint64_t ns = uv_hrtime() - job->started_ns;

	if (status) {
		ctx->stats.flush_failures++;
		if (!flush_retriable(status)) {
			engine_abandon_flush(ctx, job, status, detail);
			return;
		}
		ctx->job_failed = 1;
		engine_pause(ctx);
		mm_log(MM_LOG_ERROR, "engine",
		       "flush of %zu deltas failed (attempt %d): %s: %s; sources paused, retrying in %lld ms",
		       job->f.ndeltas, job->attempts, mm_err_name(status), detail,
		       (long long)ctx->retry_delay_ms);
		uv_timer_start(&ctx->retry_timer, on_retry_timer, (uint64_t)ctx->retry_delay_ms, 0);
		ctx->retry_delay_ms *= 2;
		if (ctx->retry_delay_ms > MM_RETRY_MAX_MS)
			ctx->retry_delay_ms = MM_RETRY_MAX_MS;
		return;
	}
	if (job->attempts > 1)
		mm_log(MM_LOG_INFO, "engine", "flush succeeded after %d attempts; resuming",
		       job->attempts);
	ctx->retry_delay_ms = MM_RETRY_MIN_MS;
	ctx->job_failed = 0;
	ctx->stats.flushes++;
	ctx->stats.store_writes += job->f.writes;
	ctx->stats.purged += job->f.purged;
	ctx->stats.flush_ns_total += ns;
	mm_histo_observe(&ctx->stats.flush_hist, ns);
	if (ns > ctx->stats.flush_ns_max)
		ctx->stats.flush_ns_max = ns;
	engine_run_hooks(ctx, job);
	for (size_t i = 0; i < job->f.ndeltas && job->f.rejected; i++)
		if (job->f.delta_done[i] == MM_DELTA_REJECTED)
			mm_pipeline_reject_delta(
				(mm_pipeline_t *)((char *)job->f.deltas[i].ns - offsetof(mm_pipeline_t, ns)),
				&job->f.deltas[i], job->f.reject_detail);
	for (int i = 0; i < ctx->npipes; i++) {
		mm_pipeline_t *p = ctx->pipes[i];

		p->stats.deltas_flushed += p->agg[!p->cur].count;
		mm_agg_reset(&p->agg[!p->cur]);
		mm_agg_reset(&p->ids[!p->cur]);
	}
	mm_claim_round_free(job->round);
	job->round = NULL;
	for (int i = 0; i < ctx->npipes; i++)
		mm_held_reset(&ctx->pipes[i]->held[!ctx->pipes[i]->cur]);
	for (size_t i = 0; i < job->f.npositions; i++) {
		mm_engine_source_t *es = &ctx->srcs[job->pos_src[i]];

		if (!es->closed)
			es->src->vt->ack(es->src, job->f.positions[i].pos, job->f.positions[i].len);
	}
	mm_log(MM_LOG_DEBUG, "engine", "flushed %zu deltas, %zu marks, %zu positions in %.2f ms",
	       job->f.ndeltas, job->f.nmarks, job->f.npositions, ns / 1e6);
	ctx->job = NULL;
	waiters_notify(job->waiters, 0);
	job->waiters = NULL;
	job_free(job);
	ctx->last_flush_ms = mm_now_ms();
	if (ctx->stopping) {
		engine_continue_stop(ctx);
		return;
	}
	engine_resume(ctx);
	if (ctx->flush_wanted || ctx->waiters) {
		ctx->flush_wanted = 0;
		engine_maybe_flush(ctx, ctx->waiters != NULL);
	}
}

/* The sources' positions, taken when the generation is swapped out. */
static int job_positions(mm_engine_t *ctx, struct mm_flush_job *job)
{
	size_t np = 0;

	job->f.positions = calloc((size_t)ctx->nsrcs + 1, sizeof(mm_position_t));
	job->pos_src = calloc((size_t)ctx->nsrcs + 1, sizeof(size_t));
	if (!job->f.positions || !job->pos_src)
		return mm_diag_set(MM_ENOMEM, "cannot build a flush");
	for (int i = 0; i < ctx->nsrcs; i++) {
		mm_engine_source_t *es = &ctx->srcs[i];

		if (!es->has_pos)
			continue;
		job->pos_src[np] = (size_t)i;
		job->f.positions[np].source = mm_source_pos_key(es->src);
		job->f.positions[np].len = es->pos.len;
		/* Offsets first: posdata may move while it grows. */
		job->f.positions[np].pos = (const uint8_t *)(uintptr_t)job->posdata.len;
		if (mm_buf_append(&job->posdata, es->pos.p, es->pos.len))
			return MM_ENOMEM;
		np++;
	}
	for (size_t i = 0; i < np; i++)
		job->f.positions[i].pos = job->posdata.p + (uintptr_t)job->f.positions[i].pos;
	job->f.npositions = np;
	return 0;
}

/* Undoes job_build after a failure, so that it can run again. */
static void job_unbuild(struct mm_flush_job *job)
{
	free(job->f.delta_done);
	free(job->f.mark_done);
	free(job->f.deltas);
	free(job->f.marks);
	free(job->f.purges);
	job->f.delta_done = job->f.mark_done = NULL;
	job->f.deltas = NULL;
	job->f.marks = NULL;
	job->f.purges = NULL;
	job->f.ndeltas = job->f.nmarks = job->f.npurges = 0;
}

/* The deltas, marks and purges of the flushing generation. */
static int job_build(mm_engine_t *ctx, struct mm_flush_job *job)
{
	size_t nd = 0, nm = 0;
	int64_t now = mm_now_ms();

	for (int i = 0; i < ctx->npipes; i++) {
		mm_pipeline_t *p = ctx->pipes[i];

		nd += p->agg[!p->cur].count;
		nm += p->ids[!p->cur].count;
	}
	job->f.deltas = calloc(nd ? nd : 1, sizeof(mm_delta_t));
	job->f.marks = calloc(nm ? nm : 1, sizeof(mm_mark_t));
	job->f.purges = calloc((size_t)ctx->npipes + 1, sizeof(mm_purge_t));
	job->f.delta_done = calloc(nd ? nd : 1, 1);
	job->f.mark_done = calloc(nm ? nm : 1, 1);
	if (!job->f.deltas || !job->f.marks || !job->f.purges || !job->f.delta_done ||
	    !job->f.mark_done)
		return mm_diag_set(MM_ENOMEM, "cannot build a flush");
	for (int i = 0; i < ctx->npipes; i++) {
		mm_pipeline_t *p = ctx->pipes[i];
		mm_agg_t *a = &p->agg[!p->cur], *ids = &p->ids[!p->cur];

		for (size_t s = 0; s < a->cap; s++) {
			mm_agg_entry_t *e = &a->slots[s];

			if (e->key == NULL || p->cfg.monoid.vt->is_identity(&p->cfg.monoid, e->state))
				continue;
			job->f.deltas[job->f.ndeltas++] = (mm_delta_t){
				.ns = &p->ns,
				.key = {e->key, e->klen, e->bucket},
				.expire_ms = e->expire_ms,
				.state = e->state,
			};
		}
		for (size_t s = 0; s < ids->cap; s++) {
			mm_agg_entry_t *e = &ids->slots[s];

			if (e->key)
				job->f.marks[job->f.nmarks++] = (mm_mark_t){
					&p->ns, e->key, e->klen, e->expire_ms, ctx->st->claims};
		}
		if (p->cfg.gran_ms && p->cfg.retention_ms && now >= p->next_purge_ms) {
			job->f.purges[job->f.npurges++] = (mm_purge_t){
				&p->ns,
				mm_window_oldest_kept(p->cfg.gran_ms, p->cfg.retention_ms, now)};
			p->next_purge_ms = now + MM_PURGE_EVERY_MS;
		}
	}
	return 0;
}

/* The claim round is over: the held records' effects are in the generation. */
static void on_claims_done(void *arg)
{
	struct mm_flush_job *job = arg;

	job->claimed = 1;
	flush_submit(job->ctx);
}

static int engine_has_work(const mm_engine_t *ctx)
{
	for (int i = 0; i < ctx->npipes; i++)
		if (ctx->pipes[i]->agg[ctx->pipes[i]->cur].count ||
		    ctx->pipes[i]->ids[ctx->pipes[i]->cur].count ||
		    ctx->pipes[i]->held[ctx->pipes[i]->cur].n)
			return 1;
	for (int i = 0; i < ctx->nsrcs; i++)
		if (ctx->srcs[i].has_pos)
			return 1;
	return 0;
}

static void engine_start_flush(mm_engine_t *ctx)
{
	struct mm_flush_job *job = calloc(1, sizeof(*job));

	if (job == NULL) {
		mm_log(MM_LOG_ERROR, "engine", "out of memory starting a flush; pausing");
		engine_pause(ctx);
		return;
	}
	job->ctx = ctx;
	for (int i = 0; i < ctx->npipes; i++) {
		mm_pipeline_t *p = ctx->pipes[i];

		p->cur = !p->cur;
		job->records += p->pending_records;
		p->pending_records = 0;
	}
	/* The positions are taken now, with the generation: they cover the held
	 * records, whose effects join the flush after the claim round. */
	if (job_positions(ctx, job) != 0) {
		/* Nothing was handed over yet: swap back so no delta is lost. */
		for (int i = 0; i < ctx->npipes; i++)
			ctx->pipes[i]->cur = !ctx->pipes[i]->cur;
		job_free(job);
		mm_log(MM_LOG_ERROR, "engine", "cannot build a flush: %s; pausing", mm_diag_msg());
		engine_pause(ctx);
		return;
	}
	for (int i = 0; i < ctx->nsrcs; i++)
		ctx->srcs[i].has_pos = 0;
	job->waiters = ctx->waiters;
	ctx->waiters = NULL;
	ctx->job = job;
	job->claimed = !mm_claim_round_needed(ctx);
	if (!job->claimed) {
		if (mm_claim_round_start(ctx, on_claims_done, job, &job->round) == 0)
			return;
		mm_log(MM_LOG_ERROR, "engine", "cannot claim dedup ids: %s; retrying", mm_diag_msg());
		on_flush_done(job, MM_ENOMEM, mm_diag_msg());
		return;
	}
	flush_submit(ctx);
}

static void engine_maybe_flush(mm_engine_t *ctx, int force)
{
	int due = force, hard = 0;

	for (int i = 0; i < ctx->npipes; i++) {
		due |= pipe_due(ctx->pipes[i], 0);
		hard |= pipe_due(ctx->pipes[i], 1);
	}
	if (!due)
		return;
	if (ctx->job) {
		ctx->flush_wanted = 1;
		if (hard)
			engine_pause(ctx);
		return;
	}
	/* Waiters need a flush even when nothing is pending: its completion is
	 * what tells them that everything before their call is durable. */
	if (engine_has_work(ctx) || ctx->waiters)
		engine_start_flush(ctx);
}

int mm_engine_flush(mm_engine_t *ctx, void (*done)(void *arg, int status), void *arg)
{
	mm_flush_waiter_t *w, **tail = &ctx->waiters;

	if (ctx->stopped)
		return mm_diag_set(MM_ECLOSED, "the engine has stopped");
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return mm_diag_set(MM_ENOMEM, "out of memory queueing a flush");
	w->done = done;
	w->arg = arg;
	while (*tail)
		tail = &(*tail)->next;
	*tail = w;
	engine_maybe_flush(ctx, 1);
	return 0;
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
		engine_pause(ctx);
	} else if (ctx->holds > 0 && --ctx->holds == 0) {
		engine_resume(ctx);
	}
}

void mm_engine_on_stop(mm_engine_t *ctx, void (*fn)(void *ud), void *ud)
{
	ctx->on_stop = fn;
	ctx->on_stop_ud = ud;
}

static int pipe_idle(const mm_pipeline_t *p)
{
	return p->agg[0].count == 0 && p->agg[1].count == 0 && p->ids[0].count == 0 &&
	       p->ids[1].count == 0;
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
	if (now - ctx->last_flush_ms >= interval && ctx->job == NULL && engine_has_work(ctx))
		engine_start_flush(ctx);
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

/* Signals this close together are one stop request delivered twice. */
#define MM_SIGNAL_REPEAT_MS 250

static void on_signal(uv_signal_t *h, int signum)
{
	mm_engine_t *ctx = h->data;

	/* Ctrl-C in a terminal and systemd's stop signal the whole process
	 * group, and the supervisor forwards the same signal: the worker sees
	 * one stop request twice within milliseconds. Only a repeat that comes
	 * later is a second request to exit at once. */
	if (ctx->stopping && mm_now_ms() - ctx->signal_ms < MM_SIGNAL_REPEAT_MS)
		return;
	if (ctx->stopping) {
		mm_log(MM_LOG_WARN, "engine", "second signal %d: exiting without the final flush "
		       "(unflushed records will be read again on restart)", signum);
		exit(130);
	}
	mm_log(MM_LOG_INFO, "engine", "signal %d: stopping (flush, checkpoint, exit)", signum);
	ctx->signal_ms = mm_now_ms();
	mm_engine_stop(ctx);
}

int mm_engine_new(mm_store_t *st, uv_loop_t *loop, mm_engine_t **out)
{
	mm_engine_t *ctx = calloc(1, sizeof(*ctx));

	if (ctx == NULL)
		return mm_diag_set(MM_ENOMEM, "cannot allocate the engine");
	ctx->loop = loop;
	ctx->st = st;
	ctx->retry_delay_ms = MM_RETRY_MIN_MS;
	*out = ctx;
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

static void engine_close_all(mm_engine_t *ctx)
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
	uv_close((uv_handle_t *)&ctx->sigint, on_handle_closed);
	uv_close((uv_handle_t *)&ctx->sigterm, on_handle_closed);
	/* Closing the handles restores the default action, which would kill
	 * the process on the late copy of a stop signal (the supervisor's
	 * forward of a process-group signal) before its last words. */
	if (ctx->signal_ms) {
		signal(SIGINT, SIG_IGN);
		signal(SIGTERM, SIG_IGN);
	}
}

static void engine_continue_stop(mm_engine_t *ctx)
{
	if (ctx->job)
		return; /* on_flush_done calls back here */
	if (engine_has_work(ctx)) {
		engine_start_flush(ctx);
		return;
	}
	engine_close_all(ctx);
}

void mm_engine_stop(mm_engine_t *ctx)
{
	if (ctx->stopping)
		return;
	ctx->stopping = 1;
	for (int i = 0; i < ctx->nsrcs; i++)
		if (ctx->srcs[i].src)
			ctx->srcs[i].src->vt->stop(ctx->srcs[i].src);
	engine_continue_stop(ctx);
}

int mm_engine_run(mm_engine_t *ctx, int once)
{
	int64_t interval = INT64_MAX;
	int rc, signum;

	ctx->once = once;
	ctx->last_flush_ms = mm_now_ms();
	uv_timer_init(ctx->loop, &ctx->flush_timer);
	uv_timer_init(ctx->loop, &ctx->retry_timer);
	uv_timer_init(ctx->loop, &ctx->heartbeat);
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
	for (int i = 0; i < ctx->nsrcs; i++) {
		mm_engine_source_t *es = &ctx->srcs[i];

		if (es->closed || es->started)
			continue;
		rc = engine_start_source(ctx, es);
		if (rc) {
			mm_log(MM_LOG_ERROR, "engine", "cannot start source %s: %s", es->src->id,
			       mm_diag_msg());
			ctx->exit_code = 1;
			mm_engine_stop(ctx);
			break;
		}
	}
	if (ctx->nsrcs == 0 && once)
		mm_engine_stop(ctx);
	if ((signum = mm_engine_early_signal()) != 0) {
		mm_log(MM_LOG_INFO, "engine", "signal %d while starting: stopping (flush, checkpoint, exit)",
		       signum);
		ctx->signal_ms = mm_now_ms();
		mm_engine_stop(ctx);
	}
	uv_run(ctx->loop, UV_RUN_DEFAULT);
	return ctx->exit_code;
}

void mm_engine_free(mm_engine_t *ctx)
{
	if (ctx == NULL)
		return;
	if (ctx->job) {
		waiters_notify(ctx->job->waiters, MM_ECLOSED);
		job_free(ctx->job);
	}
	waiters_notify(ctx->waiters, MM_ECLOSED);
	if (!ctx->stopped) {
		/* run() was never called: the sources were opened but not started. */
		for (int i = 0; i < ctx->nsrcs; i++)
			if (ctx->srcs[i].src)
				ctx->srcs[i].src->vt->close(ctx->srcs[i].src, NULL, NULL);
		uv_run(ctx->loop, UV_RUN_DEFAULT);
	}
	if (ctx->st)
		mm_store_close(ctx->st);
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
