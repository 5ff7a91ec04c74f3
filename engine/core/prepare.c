/*
 * prepare.c: what has to be read from the store before a pipeline or a
 * source may run, asynchronously (prepare.h).
 *
 * A pipeline added to the engine (at start-up or by a hot reload) is not
 * ready until its stored descriptor has been read and checked against its
 * definition (same monoid, parameters and window) and its own descriptor
 * written back. A source starts only once every pipeline attached to it is
 * ready, and only after its stored position has been read, so it is handed
 * its start position exactly as before (vt->start(pos)). A pipeline added
 * while the engine runs (hot reload) holds every source (mm_engine_hold)
 * until its check is done, so it misses no record of a source it shares.
 *
 * Before any of it the store runs its own start-up checks (mm_store_start:
 * DynamoDB's credentials and table), on the loop too: no source starts
 * before they pass, and a failure stops the engine with status 1 and the
 * store's message (the table does not exist: create it with ...).
 *
 * Every store call here completes through a callback on the loop thread; a
 * store that cannot answer (DynamoDB stopped) is asked again after a pause
 * (100 ms doubling to 10 s) while the loop keeps running: the other
 * pipelines keep flushing, timers and signals keep working. A definition
 * that does not match the stored state is final: the engine stops with
 * status 3 and the definition's file:line, as a script error does.
 *
 * An operation ("prep") outlives what it prepares: the pipeline may be
 * removed (a reload rolled back) or the source closed while the store call
 * is in flight, so a prep names its pipeline through p (cleared on removal)
 * and its source by pointer, looked up again when the answer comes.
 */
#include "prepare.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "../lib/log.h"
#include "progress.h"

#define MM_PREP_RETRY_MIN_MS 100
#define MM_PREP_RETRY_MAX_MS 10000

enum { PREP_META, PREP_POSITION };

struct mm_prep {
	struct mm_prep *next;
	mm_engine_t *ctx;
	int kind;               /* PREP_META or PREP_POSITION */
	int stage;              /* META: 0 read, 1 write; POSITION: 0 own key, 1 old key */
	int waiting;            /* failed retriably: asked again by the retry timer */
	int held;               /* META: holds the engine's sources (added while running) */
	mm_pipeline_t *p;       /* META: the pipeline; NULL once it was removed */
	mm_source_t *src;       /* POSITION: the source (looked up again on answer) */
	char *key;              /* the name the store call in flight reads (a copy) */
	mm_buf_t buf;           /* the answer, or the descriptor to write */
};

static void prep_issue(mm_prep_t *op);

static const char *prep_where(const mm_pipeline_t *p)
{
	return p->cfg.where ? p->cfg.where : "pipeline";
}

static void prep_free(mm_engine_t *ctx, mm_prep_t *op)
{
	mm_prep_t **pp;

	for (pp = &ctx->preps; *pp; pp = &(*pp)->next)
		if (*pp == op) {
			*pp = op->next;
			break;
		}
	mm_buf_free(&op->buf);
	free(op->key);
	free(op);
}

static mm_prep_t *prep_new(mm_engine_t *ctx, int kind)
{
	mm_prep_t *op = calloc(1, sizeof(*op));

	if (op == NULL) {
		mm_diag_set(MM_ENOMEM, "engine: cannot allocate a start-up read");
		return NULL;
	}
	op->ctx = ctx;
	op->kind = kind;
	op->next = ctx->preps;
	ctx->preps = op;
	return op;
}

int mm_prep_pending(const mm_engine_t *ctx, const mm_pipeline_t *p)
{
	const mm_prep_t *op;

	if (ctx->unready == 0)
		return 0;
	for (op = ctx->preps; op; op = op->next)
		if (op->kind == PREP_META && op->p == p)
			return 1;
	return 0;
}

static int prep_source_busy(const mm_engine_t *ctx, const mm_source_t *src)
{
	const mm_prep_t *op;

	for (op = ctx->preps; op; op = op->next)
		if (op->kind == PREP_POSITION && op->src == src)
			return 1;
	return 0;
}

/* A failure a retry cannot fix: the engine stops (status 3 for a definition
 * that does not match the stored state, as a script error; 1 otherwise). */
static void prep_fatal(mm_engine_t *ctx, int code, const char *what, const char *detail)
{
	mm_log(MM_LOG_ERROR, "engine", "%s: %s", what, detail);
	if (ctx->stats.records == 0)
		mm_progress_fatal();
	mm_engine_fail(ctx, code);
}

static void on_prep_timer(uv_timer_t *t)
{
	mm_engine_t *ctx = t->data;
	mm_prep_t *op, *next;

	for (op = ctx->preps; op; op = next) {
		next = op->next;
		if (op->waiting) {
			op->waiting = 0;
			prep_issue(op);
		}
	}
}

/* A retriable failure: ask again after a pause, the loop keeps running. */
static void prep_retry(mm_prep_t *op, const char *what, const char *detail)
{
	mm_engine_t *ctx = op->ctx;

	mm_log(MM_LOG_WARN, "engine", "%s: %s; asking again in %lld ms", what, detail,
	       (long long)ctx->prep_delay_ms);
	op->waiting = 1;
	if (!uv_is_active((uv_handle_t *)&ctx->prep_timer))
		uv_timer_start(&ctx->prep_timer, on_prep_timer, (uint64_t)ctx->prep_delay_ms, 0);
	if (ctx->prep_delay_ms < MM_PREP_RETRY_MAX_MS)
		ctx->prep_delay_ms *= 2;
	if (ctx->prep_delay_ms > MM_PREP_RETRY_MAX_MS)
		ctx->prep_delay_ms = MM_PREP_RETRY_MAX_MS;
}

/* ---- pipelines: read the descriptor, check it, write it ---- */

static void pipeline_ready(mm_prep_t *op)
{
	mm_engine_t *ctx = op->ctx;

	int held = op->held;

	prep_free(ctx, op);
	ctx->unready--;
	ctx->prep_delay_ms = MM_PREP_RETRY_MIN_MS;
	if (held)
		mm_engine_hold(ctx, 0);
	mm_prep_start_sources(ctx);
}

/* The pipeline went away (removed) or the engine is stopping: drop it. */
static int prep_abandoned(mm_prep_t *op)
{
	mm_engine_t *ctx = op->ctx;

	if (op->kind == PREP_META && op->p != NULL && !ctx->stopping)
		return 0;
	if (op->kind == PREP_POSITION && !ctx->stopping && mm_engine_source_of(ctx, op->src))
		return 0;
	if (op->kind == PREP_META) {
		int held = op->held;

		prep_free(ctx, op);
		ctx->unready--;
		if (held)
			mm_engine_hold(ctx, 0);
	} else {
		prep_free(ctx, op);
	}
	return 1;
}

/* Compares the stored descriptor's first line with the definition's compat
 * string; on a match (or none stored) builds the descriptor to write. */
static int meta_check(mm_prep_t *op)
{
	const mm_pipeline_config_t *cfg = &op->p->cfg;
	size_t clen = strlen(cfg->compat);

	if (op->buf.len > 0) {
		const char *nl = memchr(op->buf.p, '\n', op->buf.len);
		size_t old = nl ? (size_t)(nl - (const char *)op->buf.p) : op->buf.len;

		if (old != clen || memcmp(op->buf.p, cfg->compat, clen) != 0)
			return mm_diag_set(MM_EINCOMPAT,
					   "pipeline '%s' already has state as %.*s; this definition "
					   "is %s (use a new pipeline name, or remove the old state)",
					   cfg->name, (int)old, (const char *)op->buf.p, cfg->compat);
	}
	op->buf.len = 0;
	if (mm_buf_printf(&op->buf, "%s\n%s", cfg->compat, cfg->meta ? cfg->meta : "{}") != 0)
		return mm_diag_set(MM_ENOMEM, "engine: cannot build the descriptor of '%s'",
				   cfg->name);
	return 0;
}

static void on_meta(void *arg, int status, const char *detail)
{
	mm_prep_t *op = arg;
	char what[600];
	int rc;

	if (prep_abandoned(op))
		return;
	snprintf(what, sizeof(what), "%s: %s the descriptor of pipeline '%s'", prep_where(op->p),
		 op->stage == 0 ? "reading" : "writing", op->p->cfg.name);
	if (status && !(op->stage == 0 && status == MM_ENOTFOUND)) {
		if (mm_err_retriable(status))
			prep_retry(op, what, detail);
		else
			prep_fatal(op->ctx, 1, what, detail);
		return;
	}
	if (op->stage == 1) {
		pipeline_ready(op);
		return;
	}
	if (status == MM_ENOTFOUND)
		op->buf.len = 0;
	if ((rc = meta_check(op)) != 0) {
		char where[600];

		snprintf(where, sizeof(where), "%s", prep_where(op->p));
		prep_fatal(op->ctx, rc == MM_EINCOMPAT ? 3 : 1, where, mm_diag_msg());
		return;
	}
	op->stage = 1;
	prep_issue(op);
}

/* ---- sources: read the position, start ---- */

static void source_start(mm_engine_t *ctx, mm_engine_source_t *es, const uint8_t *pos,
			 size_t len)
{
	int rc = es->src->vt->start(es->src, pos, len);

	if (rc) {
		mm_log(MM_LOG_ERROR, "engine", "cannot start source %s: %s", es->src->id,
		       mm_diag_msg());
		ctx->exit_code = 1;
		mm_engine_stop(ctx);
		return;
	}
	es->started = 1;
	if (ctx->paused)
		es->src->vt->pause(es->src);
}

static void on_position(void *arg, int status, const char *detail)
{
	mm_prep_t *op = arg;
	mm_engine_t *ctx = op->ctx;
	mm_engine_source_t *es;
	char what[600];

	if (prep_abandoned(op))
		return;
	es = mm_engine_source_of(ctx, op->src);
	/* Positions stored before they were keyed by consumer are keyed by the
	 * source id alone. A private store's (the data directory's) can only be
	 * this reader's own: resume from it; the next flush stores the position
	 * under the new key. A shared store's may be any reader's: never. */
	if (status == MM_ENOTFOUND && op->stage == 0 &&
	    !(mm_store_caps(ctx->st) & MM_STORE_CAP_SHARED) &&
	    strcmp(mm_source_pos_key(es->src), es->src->id)) {
		op->stage = 1;
		prep_issue(op);
		return;
	}
	if (status && status != MM_ENOTFOUND) {
		snprintf(what, sizeof(what), "reading the position of source %s", es->src->id);
		if (mm_err_retriable(status))
			prep_retry(op, what, detail);
		else
			prep_fatal(ctx, 1, what, detail);
		return;
	}
	if (status == 0 && op->stage == 1)
		mm_log(MM_LOG_INFO, "engine", "source %s: reading its position stored before "
		       "consumers; it moves to '%s' at the next flush", es->src->id,
		       mm_source_pos_key(es->src));
	else if (status == 0)
		mm_log(MM_LOG_INFO, "engine", "source %s resumes from its checkpoint", es->src->id);
	ctx->prep_delay_ms = MM_PREP_RETRY_MIN_MS;
	if (status == 0)
		source_start(ctx, es, op->buf.p, op->buf.len);
	else
		source_start(ctx, es, NULL, 0);
	prep_free(ctx, op);
}

/* ---- issuing ---- */

/*
 * The store reads the name it is given until it answers (an LMDB read on a
 * pool thread), and the answer may come after the pipeline was removed (a
 * reload rolled back) or the source closed, which frees their names: the
 * store gets the prep's own copy, freed with the prep.
 */
static int prep_key(mm_prep_t *op, const char *name)
{
	free(op->key);
	if ((op->key = strdup(name)) == NULL)
		return mm_diag_set(MM_ENOMEM, "cannot copy the name '%s'", name);
	return 0;
}

static void prep_issue(mm_prep_t *op)
{
	mm_engine_t *ctx = op->ctx;
	int rc;

	if (prep_abandoned(op))
		return;
	if (op->kind == PREP_META && op->stage == 0) {
		op->buf.len = 0;
		if ((rc = prep_key(op, op->p->cfg.name)) == 0)
			rc = mm_store_get_meta(ctx->st, op->key, &op->buf, on_meta, op);
	} else if (op->kind == PREP_META) {
		if ((rc = prep_key(op, op->p->cfg.name)) == 0)
			rc = mm_store_put_meta(ctx->st, op->key, op->buf.p, op->buf.len, on_meta, op);
	} else {
		mm_engine_source_t *es = mm_engine_source_of(ctx, op->src);

		op->buf.len = 0;
		if ((rc = prep_key(op, op->stage ? es->src->id : mm_source_pos_key(es->src))) == 0)
			rc = mm_store_get_position(ctx->st, op->key, &op->buf, on_position, op);
	}
	if (rc) {
		/* Refused before it started (out of memory, a read-only store):
		 * the same again would be refused too. */
		char what[600];

		snprintf(what, sizeof(what), "%s",
			 op->kind == PREP_META ? prep_where(op->p) : op->src->id);
		prep_fatal(ctx, 1, what, mm_diag_msg());
	}
}

int mm_prep_pipeline(mm_engine_t *ctx, mm_pipeline_t *p)
{
	mm_prep_t *op = prep_new(ctx, PREP_META);

	if (op == NULL)
		return MM_ENOMEM;
	op->p = p;
	ctx->unready++;
	/* Before run() no source has started; while running, the sources
	 * already reading are held so that p misses none of their records. */
	if (ctx->running) {
		op->held = 1;
		mm_engine_hold(ctx, 1);
	}
	prep_issue(op);
	return 0;
}

void mm_prep_forget(mm_engine_t *ctx, const mm_pipeline_t *p)
{
	mm_prep_t *op;

	for (op = ctx->preps; op; op = op->next)
		if (op->kind == PREP_META && op->p == p) {
			op->p = NULL;
			if (op->waiting)
				prep_abandoned(op); /* no store call in flight: drop it now */
			return;
		}
}

/* ---- the store's start-up checks ---- */

static void on_store_started(void *arg, int status, const char *detail)
{
	mm_engine_t *ctx = arg;

	ctx->store_state = status ? status : 1;
	snprintf(ctx->store_detail, sizeof(ctx->store_detail), "%s", status ? detail : "");
	if (status)
		mm_prep_check_store(ctx);
	else
		mm_prep_start_sources(ctx);
}

int mm_prep_store(mm_engine_t *ctx)
{
	return mm_store_start(ctx->st, on_store_started, ctx);
}

void mm_prep_check_store(mm_engine_t *ctx)
{
	if (ctx->running && !ctx->stopping && ctx->store_state < 0)
		prep_fatal(ctx, 1, "store", ctx->store_detail);
}

void mm_prep_start_sources(mm_engine_t *ctx)
{
	if (!ctx->running || ctx->stopping || ctx->store_state != 1)
		return;
	for (int i = 0; i < ctx->nsrcs; i++) {
		mm_engine_source_t *es = &ctx->srcs[i];
		mm_prep_t *op;
		int ready = 1;

		if (es->closed || es->started || es->src == NULL || prep_source_busy(ctx, es->src))
			continue;
		for (int j = 0; j < es->npipes; j++)
			ready &= !mm_prep_pending(ctx, es->pipes[j]);
		if (!ready)
			continue;
		es->src->max_record = es->max_record;
		if ((op = prep_new(ctx, PREP_POSITION)) == NULL) {
			prep_fatal(ctx, 1, es->src->id, mm_diag_msg());
			return;
		}
		op->src = es->src;
		prep_issue(op);
	}
}

void mm_prep_free_all(mm_engine_t *ctx)
{
	while (ctx->preps)
		prep_free(ctx, ctx->preps);
}
