/*
 * claims.c: the claim phase of a flush (see claims.h).
 *
 * The round keeps, per pipeline with held records, the held table's claim
 * array (results land there) and a scratch array for the ids still open:
 * the first call asks every id; later calls ask only those whose request
 * failed. Renewals use a copy of the won ids, because a store call owns its
 * array until its callback. Store calls may still be in flight when the
 * engine frees the round (a renewal racing the flush's success), so the
 * memory goes only once they have all answered and both timers have closed.
 */
#include "claims.h"

#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "../lib/log.h"
#include "../lib/time.h"

#define CLAIM_RETRY_MIN_MS 100
#define CLAIM_RETRY_MAX_MS 5000
#define CLAIM_RENEW_MIN_MS 30

typedef struct round_pipe {
	mm_claim_round_t *round;
	mm_pipeline_t *p;
	mm_held_t *held;        /* records held (a shared store), or NULL */
	int logged;             /* else: the ids of the generation's log (oplog.h) */
	mm_claim_t *all;        /* the held table's or the log's claims: one per distinct id */
	size_t n;
	mm_claim_t *ask;        /* open ids of the call in flight */
	size_t *ask_idx;        /* ask[k] is all[ask_idx[k]] */
	size_t nask;
	mm_claim_t *renew;      /* won ids of the renewal in flight */
	size_t nrenew;
	int renewing;
	size_t deferred;        /* records moved to the next generation */
} round_pipe_t;

struct mm_claim_round {
	mm_engine_t *ctx;
	void (*done)(void *arg);
	void *arg;
	round_pipe_t *pipes;
	int npipes;
	int calls;              /* store calls in flight: claims and renewals */
	int asking;             /* of them, claim calls: the round settles at 0 */
	int finished;           /* done() ran */
	int freed;              /* the engine let go; free when calls == 0 */
	int timers_closed;
	int64_t retry_ms;
	uv_timer_t timer;       /* re-asks failed ids */
	uv_timer_t renew_timer; /* keeps the won claims' leases alive */
};

static void round_ask(mm_claim_round_t *r);
static void on_renew_timer(uv_timer_t *t);

/* Not answered yet, or the request failed: ask (again). */
static int is_open(int result)
{
	return result == 0 || result < 0;
}

static int is_won(int result)
{
	return result == MM_CLAIM_WON || result == MM_CLAIM_STOLEN;
}

static void round_destroy(mm_claim_round_t *r)
{
	for (int i = 0; i < r->npipes; i++) {
		free(r->pipes[i].ask);
		free(r->pipes[i].ask_idx);
		free(r->pipes[i].renew);
	}
	free(r->pipes);
	free(r);
}

static void round_maybe_free(mm_claim_round_t *r)
{
	if (r->freed && r->calls == 0 && r->timers_closed == 2)
		round_destroy(r);
}

static void on_timer_closed(uv_handle_t *h)
{
	mm_claim_round_t *r = h->data;

	r->timers_closed++;
	round_maybe_free(r);
}

static void on_timer(uv_timer_t *t)
{
	round_ask(t->data);
}

/* Processes one pipeline's held records whose claims were won, into the
 * flushing generation, in arrival order and in runs of one delivered batch
 * (same source and processing time), as they would have been at arrival. */
static void replay_pipe(mm_engine_t *ctx, round_pipe_t *rp, mm_record_t *recs)
{
	mm_pipeline_t *p = rp->p;
	mm_held_t *h = rp->held;
	int cur = p->cur;
	uint64_t pending = p->pending_records;
	size_t i = 0;

	p->cur = !cur;
	p->replaying = 1;
	while (i < h->n) {
		mm_batch_t b = {.src = h->recs[i].src, .recs = recs, .now_ms = h->recs[i].now_ms};

		for (; i < h->n && h->recs[i].src == b.src && h->recs[i].now_ms == b.now_ms; i++) {
			int result = rp->all[h->recs[i].claim].result;

			if (result == MM_CLAIM_BUSY)
				continue; /* deferred */
			if (!is_won(result)) {
				p->stats.duplicates++;
				continue;
			}
			mm_held_record(h, i, &recs[b.n++]);
		}
		if (b.n == 0)
			continue;
		if (p->uses_lua && ctx->lua_batch) {
			p->batch = &b;
			ctx->lua_batch(ctx->lua_ud, &b, &p, 1);
			p->batch = NULL;
		} else {
			mm_pipeline_process_batch(p, &b);
		}
	}
	/* Every won id becomes a confirmed mark with the flush, also when its
	 * record was rejected: a dead-lettered record has been dealt with. */
	for (size_t k = 0; k < rp->n; k++) {
		mm_idset_entry_t *e;
		int created;

		if (!is_won(rp->all[k].result))
			continue;
		e = mm_pipeline_id_upsert(p, !cur, rp->all[k].id, rp->all[k].len,
					  h->recs[0].now_ms + p->cfg.dedup_ttl_ms, &created);
		if (e == NULL)
			mm_log(MM_LOG_ERROR, p->cfg.name,
			       "out of memory keeping a dedup mark; its claim stays pending");
	}
	p->replaying = 0;
	p->cur = cur;
	p->pending_records = pending;
}

/*
 * Moves the records whose ids another live worker holds into the current
 * generation, so that the next flush claims them again, once that worker
 * has committed them (then they are duplicates) or released them. A record
 * that cannot be moved (out of memory) stays that worker's to count: it
 * holds the record too and never acknowledges its input past it before the
 * record's effect is durable.
 */
static void defer_pipe(round_pipe_t *rp)
{
	mm_pipeline_t *p = rp->p;
	mm_held_t *h = rp->held, *next = &p->held[p->cur];

	for (size_t i = 0; i < h->n; i++) {
		const mm_claim_t *c = &rp->all[h->recs[i].claim];
		mm_record_t rec;

		if (c->result != MM_CLAIM_BUSY)
			continue;
		mm_held_record(h, i, &rec);
		if (mm_held_add(next, h->recs[i].src, &rec, h->recs[i].now_ms, c->id, c->len) != 0) {
			mm_log(MM_LOG_ERROR, p->cfg.name,
			       "out of memory deferring a record whose id another worker holds; "
			       "that worker counts it");
			continue;
		}
		rp->deferred++;
		p->stats.claim_deferred++;
	}
}

static void round_finish(mm_claim_round_t *r)
{
	size_t most = 0;
	mm_record_t *recs;

	for (int i = 0; i < r->npipes; i++)
		if (r->pipes[i].held && r->pipes[i].held->n > most)
			most = r->pipes[i].held->n;
	recs = calloc(most ? most : 1, sizeof(*recs));
	if (recs == NULL)
		goto nomem;
	/* Logged generations first: settling one again is harmless. */
	for (int i = 0; i < r->npipes; i++) {
		round_pipe_t *rp = &r->pipes[i];

		if (rp->logged && mm_pipeline_settle_claims(rp->p, !rp->p->cur) != 0) {
			free(recs);
			goto nomem;
		}
	}
	for (int i = 0; i < r->npipes; i++) {
		if (r->pipes[i].logged)
			continue;
		replay_pipe(r->ctx, &r->pipes[i], recs);
		defer_pipe(&r->pipes[i]);
	}
	free(recs);
	r->finished = 1;
	r->done(r->arg);
	return;
nomem:
	/* No held record was processed yet: try again shortly. */
	mm_log(MM_LOG_ERROR, "engine", "out of memory processing claimed records; retrying");
	uv_timer_start(&r->timer, on_timer, CLAIM_RETRY_MAX_MS, 0);
}

/* Asks again, after a backoff, for the ids whose request failed; else
 * finishes. Ids busy at another worker are not waited for (deferred). */
static void round_settle(mm_claim_round_t *r)
{
	int failed = 0;

	for (int i = 0; i < r->npipes && !failed; i++)
		for (size_t k = 0; k < r->pipes[i].n && !failed; k++)
			failed = is_open(r->pipes[i].all[k].result);
	if (!failed) {
		round_finish(r);
		return;
	}
	uv_timer_start(&r->timer, on_timer, (uint64_t)r->retry_ms, 0);
	r->retry_ms = r->retry_ms * 2 > CLAIM_RETRY_MAX_MS ? CLAIM_RETRY_MAX_MS : r->retry_ms * 2;
}

static void on_claimed(void *arg, int status, const char *detail)
{
	round_pipe_t *rp = arg;
	mm_claim_round_t *r = rp->round;
	mm_pipeline_t *p = rp->p;
	size_t stolen = 0;

	r->calls--;
	r->asking--;
	if (r->freed) {
		round_maybe_free(r);
		return;
	}
	p->stats.claims += rp->nask;
	for (size_t k = 0; k < rp->nask; k++) {
		mm_claim_t *c = &rp->all[rp->ask_idx[k]];

		c->result = rp->ask[k].result;
		c->lease_until_ms = rp->ask[k].lease_until_ms;
		p->stats.claim_duplicates += c->result == MM_CLAIM_DUPLICATE;
		p->stats.claim_busy += c->result == MM_CLAIM_BUSY;
		p->stats.claim_stolen += c->result == MM_CLAIM_STOLEN;
		stolen += c->result == MM_CLAIM_STOLEN;
	}
	if (stolen)
		mm_log(MM_LOG_INFO, p->cfg.name,
		       "took %zu event ids over from workers whose leases ran out", stolen);
	if (status)
		mm_log(MM_LOG_WARN, p->cfg.name,
		       "dedup claims failed (%s: %s); the flush waits and asks again in %lld ms",
		       mm_err_name(status), detail, (long long)r->retry_ms);
	/* A renewal may still be in flight: it does not hold the round back. */
	if (r->asking == 0)
		round_settle(r);
}

/* One claim call per pipeline for its open ids. */
static void round_ask(mm_claim_round_t *r)
{
	for (int i = 0; i < r->npipes; i++) {
		round_pipe_t *rp = &r->pipes[i];
		int rc;

		rp->nask = 0;
		for (size_t k = 0; k < rp->n; k++)
			if (is_open(rp->all[k].result)) {
				rp->ask[rp->nask] = rp->all[k];
				rp->ask_idx[rp->nask++] = k;
			}
		if (rp->nask == 0)
			continue;
		rc = mm_store_claim(r->ctx->st, &rp->p->ns, rp->ask, rp->nask, rp->p->cfg.dedup_ttl_ms,
				    on_claimed, rp);
		if (rc) {
			for (size_t k = 0; k < rp->nask; k++)
				rp->all[rp->ask_idx[k]].result = rc;
			mm_log(MM_LOG_WARN, rp->p->cfg.name, "cannot ask for dedup claims: %s: %s",
			       mm_err_name(rc), mm_diag_msg());
			continue;
		}
		r->calls++;
		r->asking++;
	}
	if (r->asking == 0)
		round_settle(r);
}

/* The ids the flushing generation of p must claim: held records' on a
 * shared store, else the log's. */
static mm_claim_t *pipe_claims(mm_pipeline_t *p, size_t *n)
{
	mm_oplog_t *l = &p->log[!p->cur];

	if (!p->logs)
		return mm_held_claims(&p->held[!p->cur], n);
	/* The generation's last record is settled: nothing adds to it now. */
	mm_oplog_begin(l);
	*n = l->nclaims;
	return l->claims;
}

int mm_claim_round_needed(const mm_engine_t *ctx)
{
	for (int i = 0; i < ctx->npipes; i++) {
		const mm_pipeline_t *p = ctx->pipes[i];

		if (p->held[!p->cur].n > 0 || p->log[!p->cur].on)
			return 1;
	}
	return 0;
}

int mm_claim_round_start(mm_engine_t *ctx, void (*done)(void *arg), void *arg,
			 mm_claim_round_t **out)
{
	mm_claim_round_t *r = calloc(1, sizeof(*r));
	int64_t renew_ms;
	int n = 0;

	if (r == NULL || (r->pipes = calloc((size_t)ctx->npipes + 1, sizeof(*r->pipes))) == NULL)
		goto nomem;
	r->ctx = ctx;
	r->done = done;
	r->arg = arg;
	r->retry_ms = CLAIM_RETRY_MIN_MS;
	for (int i = 0; i < ctx->npipes; i++) {
		mm_pipeline_t *p = ctx->pipes[i];
		round_pipe_t *rp = &r->pipes[n];

		if (p->held[!p->cur].n == 0 && !p->log[!p->cur].on)
			continue;
		rp->round = r;
		rp->p = p;
		rp->logged = p->logs;
		rp->held = p->logs ? NULL : &p->held[!p->cur];
		rp->all = pipe_claims(p, &rp->n);
		/* A log may have no claim: its one new id's record was rejected. */
		rp->ask = calloc(rp->n + 1, sizeof(*rp->ask));
		rp->ask_idx = calloc(rp->n + 1, sizeof(*rp->ask_idx));
		rp->renew = calloc(rp->n + 1, sizeof(*rp->renew));
		r->npipes = ++n;
		if (!rp->ask || !rp->ask_idx || !rp->renew)
			goto nomem;
		for (size_t k = 0; k < rp->n; k++)
			rp->all[k].result = 0;
	}
	uv_timer_init(ctx->loop, &r->timer);
	uv_timer_init(ctx->loop, &r->renew_timer);
	r->timer.data = r->renew_timer.data = r;
	*out = r;
	/* The leases run from the first claims: renew from then on. */
	renew_ms = ctx->st->lease_ms / 3 > CLAIM_RENEW_MIN_MS ? ctx->st->lease_ms / 3
							     : CLAIM_RENEW_MIN_MS;
	/* A private store has no leases: nobody else could take the ids. */
	if (mm_store_caps(ctx->st) & MM_STORE_CAP_SHARED)
		uv_timer_start(&r->renew_timer, on_renew_timer, (uint64_t)renew_ms,
			       (uint64_t)renew_ms);
	round_ask(r);
	return 0;
nomem:
	if (r)
		round_destroy(r);
	return mm_diag_set(MM_ENOMEM, "cannot start a claim round");
}

static void on_renewed(void *arg, int status, const char *detail)
{
	round_pipe_t *rp = arg;
	mm_claim_round_t *r = rp->round;
	size_t lost = 0;

	r->calls--;
	rp->renewing = 0;
	if (r->freed) {
		round_maybe_free(r);
		return;
	}
	for (size_t k = 0; k < rp->nrenew; k++)
		lost += rp->renew[k].result == MM_CLAIM_NOT_OWNER;
	rp->p->stats.claim_lost += lost;
	if (status)
		mm_log(MM_LOG_WARN, rp->p->cfg.name, "renewing dedup claims failed: %s: %s",
		       mm_err_name(status), detail);
	if (lost)
		mm_log(MM_LOG_WARN, rp->p->cfg.name,
		       "%zu dedup claims were taken over before their flush was durable (this "
		       "worker could not renew them for a whole lease); those events may be "
		       "counted twice",
		       lost);
}

/* Extends the leases of the won claims, every third of a lease until the
 * round is freed (its flush is durable). A renewal still in flight is not
 * doubled. */
static void on_renew_timer(uv_timer_t *t)
{
	mm_claim_round_t *r = t->data;

	for (int i = 0; i < r->npipes; i++) {
		round_pipe_t *rp = &r->pipes[i];

		if (rp->renewing)
			continue;
		rp->nrenew = 0;
		for (size_t k = 0; k < rp->n; k++)
			if (is_won(rp->all[k].result))
				rp->renew[rp->nrenew++] = rp->all[k];
		if (rp->nrenew == 0)
			continue;
		if (mm_store_renew(r->ctx->st, &rp->p->ns, rp->renew, rp->nrenew, on_renewed, rp) == 0) {
			rp->renewing = 1;
			r->calls++;
			rp->p->stats.claim_renewals += rp->nrenew;
		} else {
			mm_log(MM_LOG_WARN, rp->p->cfg.name, "cannot renew dedup claims: %s: %s",
			       mm_err_name(mm_diag_code()), mm_diag_msg());
		}
	}
}

size_t mm_claim_round_deferred(const mm_claim_round_t *r)
{
	size_t n = 0;

	for (int i = 0; r && i < r->npipes; i++)
		n += r->pipes[i].deferred;
	return n;
}

void mm_claim_round_free(mm_claim_round_t *r)
{
	if (r == NULL)
		return;
	r->freed = 1;
	uv_timer_stop(&r->timer);
	uv_timer_stop(&r->renew_timer);
	uv_close((uv_handle_t *)&r->timer, on_timer_closed);
	uv_close((uv_handle_t *)&r->renew_timer, on_timer_closed);
}
