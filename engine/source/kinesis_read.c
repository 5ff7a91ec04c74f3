/*
 * kinesis_read.c: reading the shards of the "kinesis" source (see
 * kinesis.c for the source as a whole and its positions' layout).
 *
 * Reading a shard is one chain of requests at a time: GetShardIterator
 * (AFTER_SEQUENCE_NUMBER of the last record read, else TRIM_HORIZON,
 * LATEST or AT_TIMESTAMP from `start`), then GetRecords with the iterator
 * each answer returns. The per-shard limits are kept by pacing on a timer
 * per shard, measured from the start of each GetRecords call: the next
 * call starts at least 200 ms after it (5 calls per second), and at least
 * D / 2 MiB seconds after it when the answer carried D bytes of record data
 * (2 MB/s). D is the records' decoded data, which the limit counts, not the
 * answer's JSON body (base64 inside JSON, about three times larger): pacing
 * on the body would read at a third of the allowed rate. Counting from the
 * call's start rather than its answer lets the answer's own travel time
 * count toward the gap. A shard that is caught up (no records,
 * MillisBehindLatest 0) waits `idle` after its answer.
 * ProvisionedThroughputExceededException (and other throttling, 5xx and
 * transport failures) backs off exponentially with jitter from 200 ms to
 * 5 s; ExpiredIteratorException (iterators live five minutes) gets a new
 * iterator after the last record read. A missing NextShardIterator is the
 * shard's end (SHARD_END): its records are delivered, the engine is asked
 * to make them durable (sink->flush), and only then do its children start.
 *
 * Records. Each Kinesis record becomes one record: Data base64-decoded
 * (data that is not base64, which Kinesis never sends, is delivered as it
 * came so that the pipeline rejects it into the dead letters, and counted),
 * ts_ms from ApproximateArrivalTimestamp (epoch seconds), and its identity
 * "<shard id>:<sequence number>" (MM_REC_ID): the same text as the eventID
 * of a Lambda Kinesis event, so that a record seen through both channels
 * carries one dedup id.
 *
 * Threads: the loop thread only.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../codec/json.h"
#include "../lib/error.h"
#include "../lib/log.h"
#include "../lib/text.h"
#include "kinesis_impl.h"

#define KIN_CALL_GAP_MS 200           /* 5 GetRecords per second per shard */
#define KIN_BYTES_PER_S (2u << 20)    /* 2 MiB/s of record data per shard */

static void kin_step(mm_kshard_t *sh);
static void kin_check_eof(mm_kin_t *ks);

static void kin_on_timer(uv_timer_t *t)
{
	mm_kshard_t *sh = t->data;

	sh->waiting = 0;
	kin_step(sh);
}

void mm_kin_later(mm_kshard_t *sh, uint64_t delay_ms)
{
	sh->waiting = 1;
	uv_timer_start(&sh->timer, kin_on_timer, delay_ms, 0);
}
/* ---- delivery ---- */

static int kin_put_record(mm_kin_t *ks, mm_kshard_t *sh, const mm_jnode_t *r, size_t i)
{
	const mm_jnode_t *data = mm_jnode_get(r, "Data"), *seq = mm_jnode_get(r, "SequenceNumber"),
			 *at = mm_jnode_get(r, "ApproximateArrivalTimestamp");
	mm_kheld_t *h = &sh->held[i];
	size_t start = sh->data.len;
	int rc;

	if (seq == NULL || seq->type != MM_JSON_STRING || seq->len == 0 ||
	    seq->len > MM_KINESIS_SEQ_MAX || strspn(seq->s, "0123456789") != seq->len)
		return mm_diag_set(MM_ECORRUPT, "%s: %s: a record without a valid SequenceNumber",
				   ks->base.id, sh->id);
	memset(h, 0, sizeof(*h));
	snprintf(h->seq, sizeof(h->seq), "%s", seq->s);
	if (data == NULL || data->type != MM_JSON_STRING) {
		ks->bad_data++;
	} else if (mm_base64_decode(data->s, data->len, MM_BASE64_STRICT, &sh->data) != 0) {
		/* Kinesis sends base64 only: anything else goes to the pipeline as
		 * it came, which rejects it into the dead letters with its id. */
		ks->bad_data++;
		sh->data.len = start;
		if ((rc = mm_buf_append(&sh->data, data->s, data->len)))
			return rc;
	}
	h->off = start;
	h->len = sh->data.len - start;
	if (at && (at->type == MM_JSON_NUMBER || at->type == MM_JSON_STRING))
		h->ts_ms = (int64_t)(strtod(at->s, NULL) * 1000.0);
	h->id_off = sh->ids.len;
	if ((rc = mm_buf_printf(&sh->ids, "%s:%s", sh->id, h->seq)))
		return rc;
	h->id_len = (uint32_t)(sh->ids.len - h->id_off);
	return 0;
}

/* Decodes the records of a GetRecords answer into the shard's held area. */
static int kin_hold(mm_kin_t *ks, mm_kshard_t *sh, const mm_jnode_t *recs)
{
	size_t i = 0;
	int rc;

	sh->data.len = sh->ids.len = 0;
	sh->nheld = 0;
	if (recs == NULL || recs->type != MM_JSON_ARRAY || recs->n == 0)
		return 0;
	if (recs->n > sh->held_cap) {
		mm_kheld_t *h = realloc(sh->held, recs->n * sizeof(*h));

		if (h == NULL)
			return mm_diag_set(MM_ENOMEM, "%s: out of memory", ks->base.id);
		sh->held = h;
		sh->held_cap = recs->n;
	}
	for (const mm_jnode_t *r = recs->child; r; r = r->next, i++)
		if ((rc = kin_put_record(ks, sh, r, i)))
			return rc;
	sh->nheld = i;
	return 0;
}

/* Delivers what the shard holds (possibly no record: an end to record). */
static void kin_deliver(mm_kin_t *ks, mm_kshard_t *sh)
{
	size_t n = sh->nheld;
	mm_batch_t b;
	int rc;

	if (n > ks->recs_cap) {
		mm_record_t *r = realloc(ks->recs, n * sizeof(*r));

		if (r == NULL) {
			ks->base.sink.error(ks->base.sink.ctx, &ks->base, MM_ENOMEM,
					    "kinesis: out of memory delivering records");
			return;
		}
		ks->recs = r;
		ks->recs_cap = n;
	}
	for (size_t i = 0; i < n; i++) {
		mm_kheld_t *h = &sh->held[i];
		mm_record_t *r = &ks->recs[i];

		memset(r, 0, sizeof(*r));
		r->p = (const char *)sh->data.p + h->off;
		r->len = (uint32_t)h->len;
		r->orig_len = h->len;
		if (h->len > ks->base.max_record) {
			r->flags |= MM_REC_TOOBIG;
			r->len = MM_REC_PREFIX;
		}
		r->offset = sh->records + i;
		r->ts_ms = h->ts_ms;
		r->flags |= MM_REC_ID;
		r->id = (const char *)sh->ids.p + h->id_off;
		r->id_len = h->id_len;
		ks->base.bytes += h->len;
	}
	if (n > 0)
		snprintf(sh->seq, sizeof(sh->seq), "%s", sh->held[n - 1].seq);
	if (sh->end_pending)
		sh->end_read = 1;
	if ((rc = mm_kin_pos_encode(ks))) {
		ks->base.sink.error(ks->base.sink.ctx, &ks->base, rc,
				    "kinesis: out of memory encoding the position");
		return;
	}
	sh->records += n;
	ks->base.records += n;
	sh->nheld = 0;
	b = (mm_batch_t){.src = &ks->base, .recs = ks->recs, .n = n, .end_pos = ks->pos.p,
			 .end_pos_len = ks->pos.len, .now_ms = mm_kin_now_ms()};
	ks->base.sink.deliver(ks->base.sink.ctx, &b);
}

/* ---- the end of a shard ---- */

static void kin_on_end_durable(void *arg, int status)
{
	kin_end_t *e = arg, **pp;
	mm_kin_t *ks = e->ks;
	mm_kshard_t *sh;

	if (ks == NULL) {
		free(e);
		return;
	}
	for (pp = &ks->ends; *pp != e; pp = &(*pp)->next)
		;
	*pp = e->next;
	sh = mm_kin_shard_find(ks, e->shard);
	if (e->handoff && sh != NULL) {
		free(e);
		mm_kin_part_handed(ks, sh, status);
		return;
	}
	free(e);
	if (status != 0 || sh == NULL || ks->phase != MM_KIN_RUN)
		return;
	sh->end_durable = 1;
	mm_log(MM_LOG_INFO, "kinesis", "%s: %s read to its end", ks->base.id, sh->id);
	if (ks->leases)
		mm_klease_durable(ks->leases, sh);
	/* Its children may start now; a split or merge also listed new shards. */
	mm_kin_list_shards(ks);
}

void mm_kin_flush_shard(mm_kin_t *ks, mm_kshard_t *sh, int handoff)
{
	kin_end_t *e = calloc(1, sizeof(*e));

	if (e == NULL) {
		ks->base.sink.error(ks->base.sink.ctx, &ks->base, MM_ENOMEM,
				    "kinesis: out of memory flushing a shard");
		return;
	}
	e->ks = ks;
	e->handoff = handoff;
	snprintf(e->shard, sizeof(e->shard), "%s", sh->id);
	e->next = ks->ends;
	ks->ends = e;
	ks->base.sink.flush(ks->base.sink.ctx, &ks->base, kin_on_end_durable, e);
}

/* The shard was read to SHARD_END and that is delivered: make it durable
 * before the children start. */
static void kin_end(mm_kin_t *ks, mm_kshard_t *sh)
{
	sh->state = MM_KSH_END;
	mm_kin_flush_shard(ks, sh, 0);
}

/* Delivers what the shard holds and schedules its next read at
 * sh->next_at (loop time). */
void mm_kin_after_answer(mm_kin_t *ks, mm_kshard_t *sh)
{
	int ended = sh->end_pending;
	uint64_t now;

	kin_deliver(ks, sh);
	sh->has_held = 0;
	if (ks->phase != MM_KIN_RUN)
		return;
	if (ended) {
		kin_end(ks, sh);
		return;
	}
	/* Delivering took time too: read the clock again. */
	uv_update_time(ks->base.loop);
	now = uv_now(ks->base.loop);
	mm_kin_later(sh, sh->next_at > now ? sh->next_at - now : 0);
	kin_check_eof(ks);
}

/* ---- GetRecords ---- */

static void kin_on_records(void *arg, const mm_kapi_answer_t *a)
{
	mm_kshard_t *sh = arg;
	mm_kin_t *ks = sh->ks;
	const mm_jnode_t *next, *behind, *recs;
	uint64_t gap, data = 0;
	int rc;

	sh->inflight = 0;
	if (ks->phase != MM_KIN_RUN || !sh->owned || sh->handoff)
		return;
	if (a->status != 0) {
		if (strcmp(a->error, "ExpiredIteratorException") == 0) {
			sh->renewals++;
			sh->state = MM_KSH_ITER;
			mm_kin_later(sh, 0);
			return;
		}
		if (a->status == MM_EAGAIN)
			sh->throttles++;
		else
			sh->errors++;
		sh->failures++;
		if (!mm_kapi_retriable(a) || sh->failures >= 5)
			mm_log(a->status == MM_EAGAIN ? MM_LOG_DEBUG : MM_LOG_WARN, "kinesis",
			       "%s: %s: GetRecords: %s", ks->base.id, sh->id, a->detail);
		/* A shard that keeps failing for other reasons gets a new
		 * iterator: its own may be what is wrong. */
		if (!mm_kapi_retriable(a))
			sh->state = MM_KSH_ITER;
		mm_kin_later(sh, mm_kin_backoff_ms(ks, sh->failures));
		return;
	}
	sh->failures = 0;
	recs = mm_jnode_get(a->root, "Records");
	next = mm_jnode_get(a->root, "NextShardIterator");
	behind = mm_jnode_get(a->root, "MillisBehindLatest");
	sh->behind_ms = behind && behind->type == MM_JSON_NUMBER ? strtoll(behind->s, NULL, 10) : -1;
	if ((rc = kin_hold(ks, sh, recs))) {
		sh->errors++;
		mm_log(MM_LOG_ERROR, "kinesis", "%s: %s: %s; reading again after the last record",
		       ks->base.id, sh->id, mm_diag_msg());
		sh->nheld = 0;
		sh->state = MM_KSH_ITER;
		mm_kin_later(sh, mm_kin_backoff_ms(ks, ++sh->failures));
		return;
	}
	free(sh->iter);
	sh->iter = NULL;
	if (next && next->type == MM_JSON_STRING && next->len > 0) {
		if ((sh->iter = strndup(next->s, next->len)) == NULL) {
			ks->base.sink.error(ks->base.sink.ctx, &ks->base, MM_ENOMEM,
					    "kinesis: out of memory");
			return;
		}
	} else {
		sh->end_pending = 1;
	}
	sh->caught_up = sh->nheld == 0 && sh->behind_ms == 0;
	/* Pacing from the call's start: 5 calls/s, 2 MB/s of record data,
	 * and `idle` after the answer once caught up. */
	for (size_t i = 0; i < sh->nheld; i++)
		data += sh->held[i].len;
	gap = data * 1000 / KIN_BYTES_PER_S;
	sh->next_at = sh->call_at + (gap > KIN_CALL_GAP_MS ? gap : KIN_CALL_GAP_MS);
	if (sh->caught_up && uv_now(ks->base.loop) + (uint64_t)ks->cfg.idle_ms > sh->next_at)
		sh->next_at = uv_now(ks->base.loop) + (uint64_t)ks->cfg.idle_ms;
	if (ks->paused) {
		sh->has_held = 1;
		return;
	}
	mm_kin_after_answer(ks, sh);
}

static void kin_get_records(mm_kin_t *ks, mm_kshard_t *sh)
{
	mm_buf_t *b = &ks->body;
	int rc;

	b->len = 0;
	rc = mm_buf_printf(b, "{\"ShardIterator\":");
	rc = rc ? rc : mm_json_quote(sh->iter, strlen(sh->iter), b);
	rc = rc ? rc : mm_buf_printf(b, ",\"Limit\":%" PRId64 "}", ks->cfg.limit);
	sh->call_at = uv_now(ks->base.loop);
	rc = rc ? rc : mm_kapi_call(ks->api, "GetRecords", b->p, b->len, kin_on_records, sh);
	if (rc) {
		sh->errors++;
		mm_kin_later(sh, mm_kin_backoff_ms(ks, ++sh->failures));
		return;
	}
	sh->inflight = 1;
	sh->calls++;
}

/* ---- GetShardIterator ---- */

static void kin_on_iterator(void *arg, const mm_kapi_answer_t *a)
{
	mm_kshard_t *sh = arg;
	mm_kin_t *ks = sh->ks;
	const mm_jnode_t *it;

	sh->inflight = 0;
	if (ks->phase != MM_KIN_RUN || !sh->owned || sh->handoff)
		return;
	it = a->status == 0 ? mm_jnode_get(a->root, "ShardIterator") : NULL;
	if (it == NULL || it->type != MM_JSON_STRING || it->len == 0) {
		if (a->status == MM_EAGAIN)
			sh->throttles++;
		else
			sh->errors++;
		sh->failures++;
		mm_log(a->status == MM_EAGAIN ? MM_LOG_DEBUG : MM_LOG_WARN, "kinesis",
		       "%s: %s: GetShardIterator: %s", ks->base.id, sh->id,
		       a->status ? a->detail : "no iterator in the answer");
		mm_kin_later(sh, mm_kin_backoff_ms(ks, sh->failures));
		return;
	}
	sh->failures = 0;
	free(sh->iter);
	if ((sh->iter = strndup(it->s, it->len)) == NULL) {
		ks->base.sink.error(ks->base.sink.ctx, &ks->base, MM_ENOMEM, "kinesis: out of memory");
		return;
	}
	sh->state = MM_KSH_READ;
	mm_kin_later(sh, 0);
}

static void kin_get_iterator(mm_kin_t *ks, mm_kshard_t *sh)
{
	mm_buf_t *b = &ks->body;
	int rc;

	b->len = 0;
	rc = mm_buf_printf(b, "{\"StreamName\":");
	rc = rc ? rc : mm_json_quote(ks->cfg.stream, strlen(ks->cfg.stream), b);
	rc = rc ? rc : mm_buf_printf(b, ",\"ShardId\":\"%s\",", sh->id);
	if (rc == 0 && sh->seq[0])
		rc = mm_buf_printf(b, "\"ShardIteratorType\":\"AFTER_SEQUENCE_NUMBER\","
				   "\"StartingSequenceNumber\":\"%s\"}", sh->seq);
	else if (rc == 0 && (sh->parent[0] || sh->adjacent[0] || ks->start_kind == MM_KIN_TRIM))
		/* A child starts at its beginning: it follows its parents. */
		rc = mm_buf_printf(b, "\"ShardIteratorType\":\"TRIM_HORIZON\"}");
	else if (rc == 0 && ks->start_kind == MM_KIN_LATEST)
		rc = mm_buf_printf(b, "\"ShardIteratorType\":\"LATEST\"}");
	else if (rc == 0)
		rc = mm_buf_printf(b, "\"ShardIteratorType\":\"AT_TIMESTAMP\",\"Timestamp\":%.3f}",
				   (double)ks->start_ms / 1000.0);
	rc = rc ? rc : mm_kapi_call(ks->api, "GetShardIterator", b->p, b->len, kin_on_iterator, sh);
	if (rc) {
		sh->errors++;
		mm_kin_later(sh, mm_kin_backoff_ms(ks, ++sh->failures));
		return;
	}
	sh->inflight = 1;
}

/* ---- the shard state machine ---- */

/* 1 when the parent named id (if any) no longer holds the shard back. */
static int kin_parent_done(mm_kin_t *ks, const char *id)
{
	mm_kshard_t *p;

	if (id[0] == '\0' || (p = mm_kin_shard_find(ks, id)) == NULL || !p->listed)
		return 1; /* none, or past the stream's retention */
	if (p->end_durable)
		return 1;
	/* Another worker read it: the lease table says when it ended. */
	return ks->leases != NULL && mm_klease_parent_ended(ks->leases, id);
}

static void kin_step(mm_kshard_t *sh)
{
	mm_kin_t *ks = sh->ks;

	if (ks->phase != MM_KIN_RUN || !sh->owned || sh->handoff || sh->inflight || sh->waiting ||
	    sh->has_held)
		return;
	if (sh->part_wait) {
		/* Its lease was just taken: its stored position comes first. */
		mm_kin_part_read(ks);
		return;
	}
	switch (sh->state) {
	case MM_KSH_NEW:
		if (!kin_parent_done(ks, sh->parent) || !kin_parent_done(ks, sh->adjacent))
			return;
		sh->state = MM_KSH_ITER;
		/* fall through */
	case MM_KSH_ITER:
		kin_get_iterator(ks, sh);
		return;
	case MM_KSH_READ:
		if (ks->paused)
			return;
		kin_get_records(ks, sh);
		return;
	default:
		return;
	}
}

void mm_kin_drop(mm_kin_t *ks, mm_kshard_t *sh)
{
	/* A hand-over drops a shard whose records are all durable; a lease
	 * lost otherwise may leave some in the engine's tables. */
	if (sh->owned && mm_kin_undurable(sh)) {
		sh->lost = 1;
		mm_log(MM_LOG_WARN, "kinesis", "%s: %s: records read up to %s are not durable: the "
		       "next flush names its stored position still (fenced if another worker took it)",
		       ks->base.id, sh->id, sh->seq);
	}
	sh->owned = 0;
	sh->part_wait = sh->handoff = sh->release_wanted = 0;
	sh->has_held = 0;
	sh->nheld = 0;
	sh->end_pending = 0;
	if (sh->state != MM_KSH_END)
		sh->state = MM_KSH_NEW;
	free(sh->iter);
	sh->iter = NULL;
}

void mm_kin_kick(mm_kin_t *ks)
{
	for (size_t i = 0; i < ks->nshards; i++)
		kin_step(ks->shards[i]);
	kin_check_eof(ks);
}

/* With `eof`: the input ends once every shard is read to its end or caught
 * up, and the shard list has been read since. */
static void kin_check_eof(mm_kin_t *ks)
{
	if (!ks->cfg.eof || ks->eof_sent || ks->phase != MM_KIN_RUN || ks->listing ||
	    ks->lists == 0 || ks->ends != NULL)
		return;
	for (size_t i = 0; i < ks->nshards; i++) {
		mm_kshard_t *sh = ks->shards[i];

		if (!sh->listed)
			continue;
		if (!sh->owned && ks->leases && !mm_klease_settled(ks->leases, sh))
			return;
		if (!sh->owned && ks->leases)
			continue;
		if (sh->owned && !(sh->state == MM_KSH_END && sh->end_durable) &&
		    !(sh->state == MM_KSH_READ && sh->caught_up && !sh->has_held))
			return;
	}
	ks->eof_sent = 1;
	ks->base.sink.eof(ks->base.sink.ctx, &ks->base);
}

