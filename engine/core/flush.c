/*
 * flush.c: the flush job (see engine.h for the data path and flush.h for
 * the split with engine.c).
 *
 * A flush takes every pipeline's filled generation (the tables swap, so
 * the loop keeps reading into fresh ones) and every source's position, runs
 * the claim round first when pipelines hold records on a shared store
 * (claims.h), builds one mm_flush_t (deltas, dedup marks, due purges,
 * positions) and hands it to the store. Only one job is in flight. On
 * success the positions are acknowledged, the on-merge hooks get the
 * durable deltas, rejected deltas go to the dead letters, the tables reset
 * and the sources resume; a retriable failure keeps the same job (and its
 * per-item done flags) and retries it with exponential backoff while the
 * sources stay paused, so positions never get ahead of durable state; any
 * other failure stops the engine without a checkpoint. Loop thread only.
 */
#include "flush.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "../lib/hugemap.h"
#include "../lib/log.h"
#include "../monoid/window.h"
#include "claims.h"
#include "progress.h"

#define MM_RETRY_MAX_MS 30000
#define MM_DEFER_MAX_MS 1000
#define MM_PURGE_EVERY_MS 3600000

/* One flush in flight: owns copies of everything the store reads. */
struct mm_flush_job {
	mm_engine_t *ctx;
	mm_flush_t f;
	mm_buf_t posdata;        /* concatenated position bytes */
	mm_buf_t poskeys;        /* keys of the parts of positions (pos_parts), NUL-separated */
	size_t *pos_src;         /* engine source index of positions[i] */
	size_t npos_cap;         /* room in f.positions and pos_src */
	uint64_t started_ns;
	uint64_t records;        /* accepted records covered by this flush */
	size_t dbytes, mbytes, hbytes; /* f.deltas', f.marks' and f.hashed's sizes (spare_take) */
	int attempts;
	int claimed;             /* the claim round is over, or none was needed */
	int built;               /* f holds the flush (after the claim round, if any) */
	mm_claim_round_t *round; /* claims of the held records, or NULL */
	mm_flush_waiter_t *waiters; /* told when this flush is durable */
};

/* Hands each hooked pipeline its durable deltas (not the rejected ones). */
static void flush_run_hooks(mm_engine_t *ctx, struct mm_flush_job *job)
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

static int pipe_due(const mm_pipeline_t *p, int hard)
{
	uint64_t mul = hard ? 2 : 1;

	/* A logged generation's early adds are in its base table (oplog.h). */
	return p->pending_records >= p->cfg.flush_events * mul ||
	       p->agg[p->cur].count + p->base[p->cur].count >= p->cfg.flush_keys * mul;
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
	mm_buf_free(&job->poskeys);
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
	/* A fenced flush (another worker owns its source now) is the one such
	 * failure a restart cures: it reads on from the store. */
	if (status != MM_EFENCED)
		mm_progress_fatal();
	mm_engine_pause_sources(ctx);
	waiters_notify(job->waiters, status);
	job->waiters = NULL;
	job_free(job);
	ctx->stopping = 1;
	mm_engine_close_all(ctx);
}

static void on_defer_timer(uv_timer_t *t)
{
	mm_engine_continue_stop(t->data);
}

/* Stopping: flushes what is left. When the last flush deferred records
 * (their ids busy at another worker, which is committing them), the next
 * waits a little, longer each time, instead of asking again at once. */
static void flush_stop_after(mm_engine_t *ctx, size_t deferred)
{
	if (deferred == 0) {
		ctx->defer_delay_ms = MM_DEFER_MIN_MS;
		mm_engine_continue_stop(ctx);
		return;
	}
	uv_timer_start(&ctx->retry_timer, on_defer_timer, (uint64_t)ctx->defer_delay_ms, 0);
	ctx->defer_delay_ms = ctx->defer_delay_ms * 2 > MM_DEFER_MAX_MS ? MM_DEFER_MAX_MS
									 : ctx->defer_delay_ms * 2;
}

static void on_flush_done(void *arg, int status, const char *detail)
{
	struct mm_flush_job *job = arg;
	mm_engine_t *ctx = job->ctx;
	uint64_t ns = uv_hrtime() - job->started_ns;
	size_t deferred;

	if (status) {
		ctx->stats.flush_failures++;
		if (!flush_retriable(status)) {
			engine_abandon_flush(ctx, job, status, detail);
			return;
		}
		ctx->job_failed = 1;
		mm_engine_pause_sources(ctx);
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
	ctx->retry_delay_ms = MM_FLUSH_RETRY_MIN_MS;
	ctx->job_failed = 0;
	ctx->stats.flushes++;
	ctx->stats.store_writes += job->f.writes;
	ctx->stats.purged += job->f.purged;
	ctx->stats.flush_ns_total += ns;
	mm_histo_observe(&ctx->stats.flush_hist, ns);
	if (ns > ctx->stats.flush_ns_max)
		ctx->stats.flush_ns_max = ns;
	flush_run_hooks(ctx, job);
	for (size_t i = 0; i < job->f.ndeltas && job->f.rejected; i++)
		if (job->f.delta_done[i] == MM_DELTA_REJECTED)
			mm_pipeline_reject_delta(
				(mm_pipeline_t *)((char *)job->f.deltas[i].ns - offsetof(mm_pipeline_t, ns)),
				&job->f.deltas[i], job->f.reject_detail);
	for (int i = 0; i < ctx->npipes; i++) {
		mm_pipeline_t *p = ctx->pipes[i];

		p->stats.deltas_flushed += p->agg[!p->cur].count;
		mm_agg_reset(&p->agg[!p->cur]);
		mm_idset_reset(&p->ids[!p->cur]);
		mm_oplog_reset(&p->log[!p->cur]);
		mm_agg_reset(&p->base[!p->cur]);
	}
	deferred = mm_claim_round_deferred(job->round);
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
	       job->f.ndeltas, job->f.nmarks + job->f.nhashed, job->f.npositions, ns / 1e6);
	ctx->job = NULL;
	waiters_notify(job->waiters, 0);
	job->waiters = NULL;
	job_free(job);
	ctx->last_flush_ms = mm_now_ms();
	if (ctx->stopping) {
		flush_stop_after(ctx, deferred);
		return;
	}
	mm_engine_resume_sources(ctx);
	if (ctx->flush_wanted || ctx->waiters) {
		ctx->flush_wanted = 0;
		mm_flush_maybe(ctx, ctx->waiters != NULL);
	}
}

/* Adds one position to the job: bytes p[0..n) of source index src under
 * key, or (key NULL) under the next key in poskeys. job_positions turns the
 * offsets kept here into pointers at its end: posdata and poskeys may move
 * while they grow. */
static int job_add_position(struct mm_flush_job *job, size_t src, const char *key,
			    const uint8_t *p, size_t n)
{
	size_t np = job->f.npositions;
	mm_position_t *pos;

	if (np == job->npos_cap) {
		size_t cap = job->npos_cap ? job->npos_cap * 2 : 8;
		mm_position_t *grown = realloc(job->f.positions, cap * sizeof(*grown));
		size_t *gsrc;

		if (grown == NULL)
			return mm_diag_set(MM_ENOMEM, "cannot build a flush");
		job->f.positions = grown;
		if ((gsrc = realloc(job->pos_src, cap * sizeof(*gsrc))) == NULL)
			return mm_diag_set(MM_ENOMEM, "cannot build a flush");
		job->pos_src = gsrc;
		job->npos_cap = cap;
	}
	pos = &job->f.positions[np];
	job->pos_src[np] = src;
	pos->source = key;
	pos->len = n;
	pos->pos = (const uint8_t *)(uintptr_t)job->posdata.len;
	if (mm_buf_append(&job->posdata, p, n))
		return mm_diag_set(MM_ENOMEM, "cannot build a flush");
	job->f.npositions = np + 1;
	return 0;
}

struct job_part_ctx {
	struct mm_flush_job *job;
	mm_source_t *src;
	size_t srcidx;
	mm_buf_t key;
};

/* One part of a source's position (vtable pos_parts): stored under its own
 * key, which poskeys keeps (NUL-terminated) until the job ends. */
static int job_add_part(void *ud, const char *part, const uint8_t *p, size_t n)
{
	struct job_part_ctx *pc = ud;

	if (mm_source_part_key(pc->src, part, &pc->key) ||
	    mm_buf_append(&pc->job->poskeys, pc->key.p, pc->key.len + 1))
		return mm_diag_set(MM_ENOMEM, "cannot build a flush");
	return job_add_position(pc->job, pc->srcidx, NULL, p, n);
}

/* The sources' positions, taken when the generation is swapped out: one
 * per source, or one per part of it that this reader owns and moved. */
static int job_positions(mm_engine_t *ctx, struct mm_flush_job *job)
{
	struct job_part_ctx pc = {job, NULL, 0, {0}};
	size_t keyoff = 0;
	int rc = 0;

	job->f.npositions = 0;
	job->poskeys.len = 0;
	for (int i = 0; i < ctx->nsrcs && rc == 0; i++) {
		mm_engine_source_t *es = &ctx->srcs[i];

		if (!es->has_pos)
			continue;
		if (es->src->vt->pos_parts) {
			pc.src = es->src;
			pc.srcidx = (size_t)i;
			rc = es->src->vt->pos_parts(es->src, es->pos.p, es->pos.len, job_add_part, &pc);
		} else {
			rc = job_add_position(job, (size_t)i, mm_source_pos_key(es->src), es->pos.p,
					      es->pos.len);
		}
	}
	mm_buf_free(&pc.key);
	if (rc)
		return rc;
	for (size_t i = 0; i < job->f.npositions; i++) {
		mm_position_t *pos = &job->f.positions[i];

		pos->pos = job->posdata.p + (uintptr_t)pos->pos;
		if (pos->source == NULL) {
			pos->source = (const char *)job->poskeys.p + keyoff;
			keyoff += strlen(pos->source) + 1;
		}
	}
	return 0;
}

/* An array of n items of size bytes, its contents undefined, and its size
 * in *bytes: the spare when it has room, else the spare grown (or a new
 * array) with room for half as many again (a generation holds one to two
 * flushes' worth of records, pipe_due). Writing a flush's 125 000 marks
 * (7 MB) into new memory took about 1 800 page faults on the loop thread,
 * every flush; and growing the spare by mremap keeps the pages it has,
 * where a new array took fresh ones for its whole size: the bench's run
 * with ids faulted in 8.7 and then 14 MB of marks, now 14 (doc/performance-journal.md).
 * A growable array on small pages, as it is written and read in order
 * (lib/hugemap.h); it starts at 2 MiB, the size it grows by. */
static void *spare_take(struct mm_flush_spare *sp, size_t n, size_t size, size_t *bytes)
{
	size_t room = n + n / 2 + 1, want;
	void *p;

	if (sp->p && sp->bytes / size >= n) {
		p = sp->p;
		*bytes = sp->bytes;
		*sp = (struct mm_flush_spare){NULL, 0};
		return p;
	}
	if (room < n || room > SIZE_MAX / size)
		return NULL;
	want = room * size;
	if (want >= MM_HUGE_MIN && want < MM_HUGE_PAGE)
		want = MM_HUGE_PAGE;
	if ((p = mm_small_grow(sp->p, sp->bytes, want)) == NULL)
		return NULL;
	*sp = (struct mm_flush_spare){NULL, 0};
	*bytes = want;
	return p;
}

/* Keeps p (of bytes) as the spare if it is the larger, else drops it. */
static void spare_put(struct mm_flush_spare *sp, void *p, size_t bytes)
{
	if (p == NULL)
		return;
	if (sp->p && sp->bytes >= bytes) {
		mm_huge_drop(p, bytes);
		return;
	}
	mm_huge_drop(sp->p, sp->bytes);
	*sp = (struct mm_flush_spare){p, bytes};
}

/* Undoes job_build after a failure, so that it can run again. */
static void job_unbuild(struct mm_flush_job *job)
{
	free(job->f.delta_done);
	free(job->f.mark_done);
	spare_put(&job->ctx->spare_deltas, job->f.deltas, job->dbytes);
	spare_put(&job->ctx->spare_marks, job->f.marks, job->mbytes);
	spare_put(&job->ctx->spare_hashed, job->f.hashed, job->hbytes);
	free(job->f.purges);
	job->f.delta_done = job->f.mark_done = NULL;
	job->f.deltas = NULL;
	job->f.marks = NULL;
	job->f.hashed = NULL;
	job->f.purges = NULL;
	job->f.ndeltas = job->f.nmarks = job->f.nhashed = job->f.npurges = 0;
	job->dbytes = job->mbytes = job->hbytes = 0;
}

/* The deltas, marks and purges of the flushing generation. A pipeline
 * that asks the store's marks (its ids' hashes are the store's marks:
 * MM_STORE_CAP_MARKED) hands its marks over as hashes (f.hashed), the
 * others as mm_mark_t. */
static int job_build(mm_engine_t *ctx, struct mm_flush_job *job)
{
	size_t nd = 0, nm = 0, nh = 0;
	int64_t now = mm_now_ms();

	for (int i = 0; i < ctx->npipes; i++) {
		mm_pipeline_t *p = ctx->pipes[i];

		nd += p->agg[!p->cur].count;
		*(p->asks_marks ? &nh : &nm) += p->ids[!p->cur].count;
	}
	job->f.deltas = spare_take(&ctx->spare_deltas, nd, sizeof(mm_delta_t), &job->dbytes);
	job->f.marks = spare_take(&ctx->spare_marks, nm, sizeof(mm_mark_t), &job->mbytes);
	job->f.hashed = spare_take(&ctx->spare_hashed, nh, sizeof(mm_markhash_t), &job->hbytes);
	job->f.purges = calloc((size_t)ctx->npipes + 1, sizeof(mm_purge_t));
	job->f.delta_done = calloc(nd ? nd : 1, 1);
	job->f.mark_done = calloc(nm ? nm : 1, 1);
	if (!job->f.deltas || !job->f.marks || !job->f.hashed || !job->f.purges ||
	    !job->f.delta_done || !job->f.mark_done)
		return mm_diag_set(MM_ENOMEM, "cannot build a flush");
	for (int i = 0; i < ctx->npipes; i++) {
		mm_pipeline_t *p = ctx->pipes[i];
		mm_agg_t *a = &p->agg[!p->cur];
		mm_idset_t *ids = &p->ids[!p->cur];

		for (size_t s = 0; s < a->count; s++) {
			mm_agg_entry_t *e = &a->entries[s];

			if (p->cfg.monoid.vt->is_identity(&p->cfg.monoid, e->state))
				continue;
			job->f.deltas[job->f.ndeltas++] = (mm_delta_t){
				.ns = &p->ns,
				.key = {mm_agg_entry_key(e), e->klen, e->bucket},
				.expire_ms = e->expire_ms,
				.state = e->state,
			};
		}
		for (size_t s = 0; s < ids->count && p->asks_marks; s++) {
			const mm_idset_entry_t *e = &ids->entries[s];

			/* An id its claim found counted before keeps its old mark. */
			if (e->tag != MM_ID_COUNTED)
				job->f.hashed[job->f.nhashed++] = (mm_markhash_t){
					e->hash.h0, e->hash.h1, mm_idset_expiry(ids, e)};
		}
		for (size_t s = 0; s < ids->count && !p->asks_marks; s++) {
			mm_idset_entry_t *e = &ids->entries[s];

			if (e->tag != MM_ID_COUNTED)
				job->f.marks[job->f.nmarks++] = (mm_mark_t){
					.ns = &p->ns,
					.id = mm_idset_id(ids, e),
					.len = e->len,
					.expire_ms = mm_idset_expiry(ids, e),
					.claimed = !!(mm_store_caps(ctx->st) & MM_STORE_CAP_SHARED),
					.hash = e->hash,
				};
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

int mm_flush_has_work(const mm_engine_t *ctx)
{
	for (int i = 0; i < ctx->npipes; i++)
		if (ctx->pipes[i]->agg[ctx->pipes[i]->cur].count ||
		    ctx->pipes[i]->base[ctx->pipes[i]->cur].count ||
		    ctx->pipes[i]->ids[ctx->pipes[i]->cur].count ||
		    ctx->pipes[i]->held[ctx->pipes[i]->cur].n)
			return 1;
	for (int i = 0; i < ctx->nsrcs; i++)
		if (ctx->srcs[i].has_pos)
			return 1;
	return 0;
}

void mm_flush_start(mm_engine_t *ctx)
{
	struct mm_flush_job *job = calloc(1, sizeof(*job));

	if (job == NULL) {
		mm_log(MM_LOG_ERROR, "engine", "out of memory starting a flush; pausing");
		mm_engine_pause_sources(ctx);
		return;
	}
	job->ctx = ctx;
	for (int i = 0; i < ctx->npipes; i++) {
		mm_pipeline_t *p = ctx->pipes[i];

		p->cur = !p->cur;
		job->records += p->pending_records;
		p->pending_records = 0;
		/* Sized for as many ids as the generation that closed; a set
		 * that cannot be grows as it fills. */
		if (mm_idset_reserve(&p->ids[p->cur], p->ids[!p->cur].count) != 0)
			mm_diag_clear();
	}
	/* The positions are taken now, with the generation: they cover the held
	 * records, whose effects join the flush after the claim round. */
	if (job_positions(ctx, job) != 0) {
		/* Nothing was handed over yet: swap back so no delta is lost. */
		for (int i = 0; i < ctx->npipes; i++)
			ctx->pipes[i]->cur = !ctx->pipes[i]->cur;
		job_free(job);
		mm_log(MM_LOG_ERROR, "engine", "cannot build a flush: %s; pausing", mm_diag_msg());
		mm_engine_pause_sources(ctx);
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

void mm_flush_maybe(mm_engine_t *ctx, int force)
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
			mm_engine_pause_sources(ctx);
		return;
	}
	/* Waiters need a flush even when nothing is pending: its completion is
	 * what tells them that everything before their call is durable. */
	if (mm_flush_has_work(ctx) || ctx->waiters)
		mm_flush_start(ctx);
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
	mm_flush_maybe(ctx, 1);
	return 0;
}

void mm_flush_discard(mm_engine_t *ctx)
{
	if (ctx->job) {
		waiters_notify(ctx->job->waiters, MM_ECLOSED);
		job_free(ctx->job);
		ctx->job = NULL;
	}
	waiters_notify(ctx->waiters, MM_ECLOSED);
	ctx->waiters = NULL;
	mm_huge_drop(ctx->spare_deltas.p, ctx->spare_deltas.bytes);
	mm_huge_drop(ctx->spare_marks.p, ctx->spare_marks.bytes);
	mm_huge_drop(ctx->spare_hashed.p, ctx->spare_hashed.bytes);
	ctx->spare_deltas = ctx->spare_marks = ctx->spare_hashed = (struct mm_flush_spare){NULL, 0};
}
