/*
 * kinesis.c: the "kinesis" source, a polling consumer of a Kinesis data
 * stream over the Kinesis JSON API (kinesis_api.c), entirely on the loop.
 *
 * Shards. ListShards (paged with NextToken) runs at start, every
 * shard_sync, and whenever a shard is read to its end (its children appear
 * then). Every shard the stream lists gets a record here with its parents
 * (ParentShardId, AdjacentParentShardId). A shard is read only after each
 * of its parents that the stream still lists has been read to its end and
 * that end is durable (resharding: a split's or a merge's child never
 * overtakes its parents, so the records of a key stay in order). A child
 * starts at TRIM_HORIZON, whatever `start` says: its first record follows
 * its parents' last.
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
 * Positions (batch->end_pos, start(), ack()), little-endian:
 *   u32 magic "MKN1", u32 count, then count times
 *   { u16 shard id length, shard id, u8 flags (1 = read to SHARD_END),
 *     u16 sequence length, the decimal sequence number of the last record
 *     read ("" when none) }
 * Every shard read so far is listed, so the position stored with the state
 * says how far this store has counted each shard; on the embedded store it
 * commits in the same transaction as the state, and a restart resumes each
 * shard AFTER_SEQUENCE_NUMBER of it: exactly-once, as for Kafka. Sequence
 * numbers are compared as decimal strings (longer is larger), never as
 * numbers (they exceed 64 bits). With a lease table the source switches to
 * a vtable with pos_parts: the position is stored per shard, each part
 * holding one shard in this same layout (kinesis_parts.c), so that workers
 * sharing one store each write only the shards they hold.
 *
 * Flow control. While paused, no GetRecords starts; an answer that arrives
 * meanwhile is decoded and held in its shard, and delivered first on
 * resume.
 *
 * Threads: the loop thread only.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../codec/json.h"
#include "../lib/error.h"
#include "../lib/log.h"
#include "../lib/text.h"
#include "kinesis_impl.h"
#include "position.h"

#define KIN_CALL_GAP_MS 200           /* 5 GetRecords per second per shard */
#define KIN_BYTES_PER_S (2u << 20)    /* 2 MiB/s of record data per shard */
#define KIN_BACKOFF_MIN_MS 200
#define KIN_BACKOFF_MAX_MS 5000
#define KIN_MAX_RECORD_DEFAULT (1ULL << 20)

extern const mm_source_vtable_t mm_source_kinesis_vtable;
static const mm_source_vtable_t kin_leased_vtable;

static void kin_step(mm_kshard_t *sh);
static void kin_list_shards(mm_kin_t *ks);
static void kin_check_eof(mm_kin_t *ks);

int64_t mm_kin_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int mm_kin_seq_cmp(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la != lb)
		return la < lb ? -1 : 1;
	return strcmp(a, b);
}

static uint64_t kin_random(mm_kin_t *ks)
{
	/* xorshift64*: jitter only. */
	ks->rng ^= ks->rng >> 12;
	ks->rng ^= ks->rng << 25;
	ks->rng ^= ks->rng >> 27;
	return ks->rng * 0x2545F4914F6CDD1DULL;
}

uint64_t mm_kin_backoff_ms(mm_kin_t *ks, int n)
{
	uint64_t d = KIN_BACKOFF_MIN_MS;

	while (--n > 0 && d < KIN_BACKOFF_MAX_MS)
		d *= 2;
	if (d > KIN_BACKOFF_MAX_MS)
		d = KIN_BACKOFF_MAX_MS;
	return d / 2 + kin_random(ks) % (d / 2 + 1);
}

mm_kshard_t *mm_kin_shard_find(mm_kin_t *ks, const char *id)
{
	for (size_t i = 0; i < ks->nshards; i++)
		if (strcmp(ks->shards[i]->id, id) == 0)
			return ks->shards[i];
	return NULL;
}

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

static mm_kshard_t *kin_shard_add(mm_kin_t *ks, const char *id)
{
	mm_kshard_t *sh, **grown;

	if (strlen(id) == 0 || strlen(id) > MM_KINESIS_SHARD_MAX) {
		mm_diag_set(MM_EINVAL, "%s: bad shard id '%s'", ks->base.id, id);
		return NULL;
	}
	if (ks->nshards == ks->cap) {
		size_t cap = ks->cap ? ks->cap * 2 : 8;

		if ((grown = realloc(ks->shards, cap * sizeof(*grown))) == NULL)
			goto nomem;
		ks->shards = grown;
		ks->cap = cap;
	}
	if ((sh = calloc(1, sizeof(*sh))) == NULL)
		goto nomem;
	snprintf(sh->id, sizeof(sh->id), "%s", id);
	sh->ks = ks;
	sh->state = MM_KSH_NEW;
	sh->owned = ks->leases == NULL;
	uv_timer_init(ks->base.loop, &sh->timer);
	sh->timer.data = sh;
	ks->shards[ks->nshards++] = sh;
	return sh;
nomem:
	mm_diag_set(MM_ENOMEM, "%s: out of memory", ks->base.id);
	return NULL;
}

/* ---- positions ---- */

int mm_kin_pos_put(mm_buf_t *b, const char *shard, int ended, const char *seq)
{
	size_t ilen = strlen(shard), qlen = strlen(seq);
	int rc = mm_buf_put_u16le(b, (uint16_t)ilen);

	rc = rc ? rc : mm_buf_append(b, shard, ilen);
	rc = rc ? rc : mm_buf_put_u8(b, ended ? 1 : 0);
	rc = rc ? rc : mm_buf_put_u16le(b, (uint16_t)qlen);
	return rc ? rc : mm_buf_append(b, seq, qlen);
}

static int kin_pos_encode(mm_kin_t *ks)
{
	uint32_t count = 0;
	int rc;

	ks->pos.len = 0;
	rc = mm_buf_put_u32le(&ks->pos, MM_KINESIS_POS_MAGIC);
	rc = rc ? rc : mm_buf_put_u32le(&ks->pos, 0);
	for (size_t i = 0; rc == 0 && i < ks->nshards; i++) {
		mm_kshard_t *sh = ks->shards[i];

		if (sh->seq[0] == '\0' && !sh->end_read)
			continue;
		rc = mm_kin_pos_put(&ks->pos, sh->id, sh->end_read, sh->seq);
		count++;
	}
	if (rc == 0)
		mm_set_u32le(ks->pos.p + 4, count);
	return rc;
}

/* A shard of the stored position: where this store's counting stands. */
static int kin_pos_stored(void *ud, const char *shard, const char *seq, int ended)
{
	mm_kin_t *ks = ud;
	mm_kshard_t *sh = mm_kin_shard_find(ks, shard);

	if (sh == NULL && (sh = kin_shard_add(ks, shard)) == NULL)
		return mm_diag_code();
	snprintf(sh->seq, sizeof(sh->seq), "%s", seq);
	snprintf(sh->durable, sizeof(sh->durable), "%s", seq);
	sh->end_read = sh->end_durable = ended;
	if (ended)
		sh->state = MM_KSH_END;
	return 0;
}

static int kin_pos_acked(void *ud, const char *shard, const char *seq, int ended)
{
	mm_kin_t *ks = ud;
	mm_kshard_t *sh = mm_kin_shard_find(ks, shard);

	if (sh == NULL)
		return 0;
	if (mm_kin_seq_cmp(seq, sh->durable) > 0)
		snprintf(sh->durable, sizeof(sh->durable), "%s", seq);
	if (ended)
		sh->end_durable = 1;
	if (ks->leases)
		mm_klease_durable(ks->leases, sh);
	return 0;
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
	if ((rc = kin_pos_encode(ks))) {
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

typedef struct kin_end {
	mm_kin_t *ks; /* NULL once the source is gone */
	char shard[MM_KINESIS_SHARD_MAX + 1];
	int handoff;  /* a hand-over's flush, not a shard's end */
	struct kin_end *next;
} kin_end_t;

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
	kin_list_shards(ks);
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
static void kin_after_answer(mm_kin_t *ks, mm_kshard_t *sh)
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
	kin_after_answer(ks, sh);
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

/* ---- ListShards ---- */

static void kin_list_page(mm_kin_t *ks, const char *token);

static void kin_on_list_timer(uv_timer_t *t)
{
	kin_list_shards(t->data);
}

static void kin_list_failed(mm_kin_t *ks, const mm_kapi_answer_t *a, const char *detail)
{
	ks->listing = 0;
	ks->list_failures++;
	if (a && !mm_kapi_retriable(a) && ks->lists == 0) {
		/* The stream is not there, or we may not read it: say so now. */
		char msg[700];

		snprintf(msg, sizeof(msg), "%s: ListShards: %s", ks->base.id, detail);
		ks->phase = MM_KIN_STOP;
		ks->base.sink.error(ks->base.sink.ctx, &ks->base, MM_EINVAL, msg);
		return;
	}
	mm_log(MM_LOG_WARN, "kinesis", "%s: ListShards: %s", ks->base.id, detail);
	uv_timer_start(&ks->list_timer, kin_on_list_timer,
		       mm_kin_backoff_ms(ks, ks->list_failures < 6 ? (int)ks->list_failures : 6), 0);
}

static void kin_on_list(void *arg, const mm_kapi_answer_t *a)
{
	mm_kin_t *ks = arg;
	const mm_jnode_t *shards, *token;
	char detail[600];

	if (ks->phase != MM_KIN_RUN)
		return;
	if (a->status != 0) {
		snprintf(detail, sizeof(detail), "%s", a->detail);
		kin_list_failed(ks, a, detail);
		return;
	}
	shards = mm_jnode_get(a->root, "Shards");
	for (const mm_jnode_t *s = shards ? shards->child : NULL; s; s = s->next) {
		const mm_jnode_t *id = mm_jnode_get(s, "ShardId"), *p = mm_jnode_get(s, "ParentShardId"),
				 *adj = mm_jnode_get(s, "AdjacentParentShardId");
		mm_kshard_t *sh;

		if (id == NULL || id->type != MM_JSON_STRING)
			continue;
		if ((sh = mm_kin_shard_find(ks, id->s)) == NULL) {
			if ((sh = kin_shard_add(ks, id->s)) == NULL) {
				kin_list_failed(ks, NULL, mm_diag_msg());
				return;
			}
		}
		sh->seen_list = ks->lists + 1;
		if (p && p->type == MM_JSON_STRING)
			snprintf(sh->parent, sizeof(sh->parent), "%s", p->s);
		if (adj && adj->type == MM_JSON_STRING)
			snprintf(sh->adjacent, sizeof(sh->adjacent), "%s", adj->s);
	}
	token = mm_jnode_get(a->root, "NextToken");
	if (token && token->type == MM_JSON_STRING && token->len > 0) {
		char *t = strndup(token->s, token->len);

		if (t == NULL) {
			kin_list_failed(ks, NULL, "out of memory");
			return;
		}
		kin_list_page(ks, t);
		free(t);
		return;
	}
	/* The listing is complete: a shard it no longer names is past the
	 * stream's retention and holds no child back. */
	ks->lists++;
	ks->listing = 0;
	ks->list_failures = 0;
	for (size_t i = 0; i < ks->nshards; i++)
		ks->shards[i]->listed = ks->shards[i]->seen_list == ks->lists;
	if (ks->leases)
		mm_klease_sync(ks->leases);
	uv_timer_start(&ks->list_timer, kin_on_list_timer, (uint64_t)ks->cfg.shard_sync_ms, 0);
	mm_kin_kick(ks);
}

static void kin_list_page(mm_kin_t *ks, const char *token)
{
	mm_buf_t *b = &ks->list_body;
	int rc;

	b->len = 0;
	if (token) {
		rc = mm_buf_printf(b, "{\"NextToken\":");
		rc = rc ? rc : mm_json_quote(token, strlen(token), b);
	} else {
		rc = mm_buf_printf(b, "{\"StreamName\":");
		rc = rc ? rc : mm_json_quote(ks->cfg.stream, strlen(ks->cfg.stream), b);
	}
	rc = rc ? rc : mm_buf_printf(b, "}");
	rc = rc ? rc : mm_kapi_call(ks->api, "ListShards", b->p, b->len, kin_on_list, ks);
	if (rc)
		kin_list_failed(ks, NULL, mm_diag_msg());
}

static void kin_list_shards(mm_kin_t *ks)
{
	if (ks->listing || ks->phase != MM_KIN_RUN)
		return;
	ks->listing = 1;
	uv_timer_stop(&ks->list_timer);
	kin_list_page(ks, NULL);
}

/* ---- the vtable ---- */

static void kin_free(mm_kin_t *ks)
{
	for (size_t i = 0; i < ks->nshards; i++) {
		mm_kshard_t *sh = ks->shards[i];

		free(sh->iter);
		free(sh->held);
		mm_buf_free(&sh->data);
		mm_buf_free(&sh->ids);
		free(sh);
	}
	free(ks->shards);
	free(ks->recs);
	mm_buf_free(&ks->pos);
	mm_buf_free(&ks->body);
	mm_buf_free(&ks->list_body);
	mm_buf_free(&ks->part_key);
	mm_buf_free(&ks->part_buf);
	free(ks->stream);
	free(ks->endpoint);
	free(ks->region);
	free(ks);
}

/* "trim_horizon", "latest" or "at_timestamp:<epoch ms>". */
static int kin_parse_start(mm_kin_t *ks, const char *s)
{
	char *end;

	if (strcmp(s, "trim_horizon") == 0) {
		ks->start_kind = MM_KIN_TRIM;
		return 0;
	}
	if (strcmp(s, "latest") == 0) {
		ks->start_kind = MM_KIN_LATEST;
		return 0;
	}
	if (strncmp(s, "at_timestamp:", 13) == 0) {
		ks->start_ms = strtoll(s + 13, &end, 10);
		if (end != s + 13 && *end == '\0' && ks->start_ms >= 0) {
			ks->start_kind = MM_KIN_AT;
			return 0;
		}
	}
	return mm_diag_set(MM_EINVAL, "kinesis: option 'start': expected trim_horizon, latest or "
			   "at_timestamp:<epoch ms>, got '%s'", s);
}

static int kin_open(uv_loop_t *loop, const mm_kv_t *kv, size_t nkv, const mm_source_sink_t *sink,
		    mm_source_t **out)
{
	mm_kin_t *ks = calloc(1, sizeof(*ks));
	mm_kapi_config_t acfg;
	int rc;

	if (ks == NULL)
		return mm_diag_set(MM_ENOMEM, "kinesis: out of memory");
	ks->base.vt = &mm_source_kinesis_vtable;
	ks->base.loop = loop;
	ks->base.sink = *sink;
	ks->base.max_record = KIN_MAX_RECORD_DEFAULT;
	if ((rc = mm_options_apply(mm_source_kinesis_vtable.options, "kinesis", kv, nkv, &ks->cfg)))
		goto fail;
	if (ks->cfg.stream == NULL || ks->cfg.stream[0] == '\0') {
		rc = mm_diag_set(MM_EINVAL, "kinesis: option 'stream' is required");
		goto fail;
	}
	if (ks->cfg.limit < 1 || ks->cfg.limit > 10000 || ks->cfg.idle_ms < 0 ||
	    ks->cfg.shard_sync_ms < 1000) {
		rc = mm_diag_set(MM_EINVAL, "kinesis: 'limit' must be 1..10000, 'idle' not negative "
				 "and 'shard_sync' at least 1s");
		goto fail;
	}
	if ((rc = kin_parse_start(ks, ks->cfg.start)))
		goto fail;
	/* The options borrow from kv: keep copies of what outlives open. */
	ks->stream = strdup(ks->cfg.stream);
	ks->endpoint = ks->cfg.endpoint ? strdup(ks->cfg.endpoint) : NULL;
	ks->region = ks->cfg.region ? strdup(ks->cfg.region) : NULL;
	if (ks->stream == NULL || (ks->cfg.endpoint && !ks->endpoint) ||
	    (ks->cfg.region && !ks->region)) {
		rc = mm_diag_set(MM_ENOMEM, "kinesis: out of memory");
		goto fail;
	}
	ks->cfg.stream = ks->stream;
	ks->cfg.endpoint = ks->endpoint;
	ks->cfg.region = ks->region;
	if ((size_t)snprintf(ks->base.id, sizeof(ks->base.id), "kinesis:%s", ks->stream) >=
	    sizeof(ks->base.id)) {
		rc = mm_diag_set(MM_EINVAL, "kinesis: the stream name is too long");
		goto fail;
	}
	if (ks->cfg.consumer && ks->cfg.consumer[0] &&
	    (size_t)snprintf(ks->base.pos_id, sizeof(ks->base.pos_id), "%s#%s", ks->base.id,
			     ks->cfg.consumer) >= sizeof(ks->base.pos_id)) {
		rc = mm_diag_set(MM_EINVAL, "kinesis: the consumer name is too long");
		goto fail;
	}
	ks->rng = (uint64_t)mm_kin_now_ms() * 0x9E3779B97F4A7C15ULL | 1;
	acfg = (mm_kapi_config_t){.who = "kinesis", .service = "kinesis",
				  .target = "Kinesis_20131202",
				  .content_type = "application/x-amz-json-1.1",
				  .endpoint = ks->endpoint, .region = ks->region};
	if ((rc = mm_kapi_open(loop, &acfg, &ks->api)))
		goto fail;
	if (ks->cfg.lease_table && ks->cfg.lease_table[0] &&
	    (rc = mm_klease_open(ks, &ks->leases))) {
		mm_kapi_close(ks->api, NULL, NULL);
		ks->api = NULL;
		goto fail;
	}
	if (ks->leases)
		ks->base.vt = &kin_leased_vtable;
	uv_timer_init(loop, &ks->list_timer);
	ks->list_timer.data = ks;
	ks->phase = MM_KIN_INIT;
	*out = &ks->base;
	return 0;
fail:
	kin_free(ks);
	return rc;
}

static int kin_start(mm_source_t *src, const uint8_t *pos, size_t len)
{
	mm_kin_t *ks = (mm_kin_t *)src;
	int rc;

	if (ks->phase != MM_KIN_INIT)
		return mm_diag_set(MM_EINVAL, "%s: already started", src->id);
	if (pos != NULL && len != 0) {
		if ((rc = mm_kinesis_pos_walk(src->id, pos, len, NULL, NULL)) ||
		    (rc = mm_kinesis_pos_walk(src->id, pos, len, kin_pos_stored, ks)))
			return rc;
	}
	if (src->max_record > UINT32_MAX)
		src->max_record = UINT32_MAX;
	ks->phase = MM_KIN_RUN;
	mm_log(MM_LOG_INFO, "kinesis", "%s: reading through %s%s%s", src->id, mm_kapi_url(ks->api),
	       ks->leases ? ", leases in " : "", ks->leases ? ks->cfg.lease_table : "");
	if (ks->leases)
		mm_klease_start(ks->leases);
	kin_list_shards(ks);
	return 0;
}

static void kin_pause(mm_source_t *src)
{
	((mm_kin_t *)src)->paused = 1;
}

static void kin_resume(mm_source_t *src)
{
	mm_kin_t *ks = (mm_kin_t *)src;

	if (!ks->paused || ks->phase != MM_KIN_RUN)
		return;
	ks->paused = 0;
	/* Answers that arrived while paused go first, then reading goes on.
	 * Delivering may pause us again: stop there. */
	for (size_t i = 0; i < ks->nshards && !ks->paused && ks->phase == MM_KIN_RUN; i++) {
		mm_kshard_t *sh = ks->shards[i];

		if (sh->has_held && sh->owned)
			kin_after_answer(ks, sh);
	}
	if (!ks->paused)
		mm_kin_kick(ks);
}

static void kin_ack(mm_source_t *src, const uint8_t *pos, size_t len)
{
	mm_kin_t *ks = (mm_kin_t *)src;

	if (mm_kinesis_pos_walk(src->id, pos, len, NULL, NULL) != 0 ||
	    mm_kinesis_pos_walk(src->id, pos, len, kin_pos_acked, ks) != 0)
		mm_log(MM_LOG_ERROR, "kinesis", "%s: ack: %s", src->id, mm_diag_msg());
}

static void kin_stop(mm_source_t *src)
{
	mm_kin_t *ks = (mm_kin_t *)src;

	if (ks->phase != MM_KIN_RUN && ks->phase != MM_KIN_INIT)
		return;
	ks->phase = MM_KIN_STOP;
	uv_timer_stop(&ks->list_timer);
	for (size_t i = 0; i < ks->nshards; i++) {
		uv_timer_stop(&ks->shards[i]->timer);
		ks->shards[i]->has_held = 0;
		ks->shards[i]->nheld = 0;
	}
}

void mm_kin_handle_gone(mm_kin_t *ks)
{
	void (*done)(void *) = ks->done;
	void *arg = ks->done_arg;

	if (--ks->open_handles > 0)
		return;
	kin_free(ks);
	if (done)
		done(arg);
}

static void kin_on_closed(uv_handle_t *h)
{
	mm_kin_handle_gone(h->data);
}

static void kin_on_api_closed(void *arg)
{
	mm_kin_handle_gone(arg);
}

static void kin_close_handles(void *arg)
{
	mm_kin_t *ks = arg;

	ks->phase = MM_KIN_CLOSED;
	ks->leases = NULL; /* freed by now */
	for (kin_end_t *e = ks->ends; e; e = e->next)
		e->ks = NULL; /* the engine calls back after we are gone */
	ks->ends = NULL;
	/* A part read in flight answers later: it holds the source too. */
	ks->open_handles = 2 + ks->nshards + (ks->part_sh != NULL);
	ks->list_timer.data = ks;
	uv_close((uv_handle_t *)&ks->list_timer, kin_on_closed);
	for (size_t i = 0; i < ks->nshards; i++) {
		ks->shards[i]->timer.data = ks;
		uv_close((uv_handle_t *)&ks->shards[i]->timer, kin_on_closed);
	}
	mm_kapi_close(ks->api, kin_on_api_closed, ks);
}

static void kin_close(mm_source_t *src, void (*done)(void *arg), void *arg)
{
	mm_kin_t *ks = (mm_kin_t *)src;

	kin_stop(src);
	ks->done = done;
	ks->done_arg = arg;
	ks->phase = MM_KIN_CLOSING;
	/* The engine closes sources after its last flush: everything delivered
	 * is durable, so the leases are checkpointed and released first. */
	if (ks->leases)
		mm_klease_close(ks->leases, kin_close_handles, ks);
	else
		kin_close_handles(ks);
}

static int kin_describe(mm_source_t *src, const mm_record_t *r, mm_buf_t *out)
{
	if (r->flags & MM_REC_ID)
		return mm_buf_printf(out, "record %.*s (shard:sequence number) of %s", (int)r->id_len,
				     r->id, src->id);
	return mm_buf_printf(out, "record %" PRIu64 " of %s", r->offset, src->id);
}

/* The vtable's lag: MillisBehindLatest of each shard this worker reads,
 * once GetRecords has answered it (the queue's age, in milliseconds). */
static int kin_lag(mm_source_t *src, mm_source_lag_fn fn, void *ud)
{
	mm_kin_t *ks = (mm_kin_t *)src;

	for (size_t i = 0; i < ks->nshards; i++) {
		const mm_kshard_t *sh = ks->shards[i];

		if (sh->owned && sh->behind_ms >= 0)
			fn(ud, sh->id, "ms", sh->behind_ms);
	}
	return 0;
}

static int kin_status(mm_source_t *src, mm_buf_t *out)
{
	mm_kin_t *ks = (mm_kin_t *)src;
	static const char *const states[] = {"waiting_for_parents", "starting", "reading",
					     "ended"};
	int rc, first = 1;

	rc = mm_buf_printf(out, "{\"stream\":");
	rc |= mm_json_quote(ks->stream, strlen(ks->stream), out);
	rc |= mm_buf_printf(out, ",\"endpoint\":");
	rc |= mm_json_quote(mm_kapi_url(ks->api), strlen(mm_kapi_url(ks->api)), out);
	rc |= mm_buf_printf(out, ",\"paused\":%s,\"list_shards\":%" PRIu64
			    ",\"list_failures\":%" PRIu64 ",\"bad_data\":%" PRIu64,
			    ks->paused ? "true" : "false", ks->lists, ks->list_failures,
			    ks->bad_data);
	if (ks->leases)
		rc |= mm_klease_status(ks->leases, out);
	rc |= mm_buf_printf(out, ",\"shards\":[");
	for (size_t i = 0; i < ks->nshards && rc == 0; i++) {
		mm_kshard_t *sh = ks->shards[i];

		if (!sh->listed && sh->records == 0)
			continue;
		rc |= mm_buf_printf(out, "%s{\"shard\":\"%s\",\"parent\":\"%s\",\"adjacent_parent\":"
				    "\"%s\",\"state\":\"%s\",\"owned\":%s,\"sequence\":\"%s\","
				    "\"durable\":\"%s\",\"ended\":%s,\"records\":%" PRIu64
				    ",\"get_records\":%" PRIu64 ",\"throttles\":%" PRIu64
				    ",\"iterator_renewals\":%" PRIu64 ",\"errors\":%" PRIu64
				    ",\"millis_behind_latest\":%" PRId64 ",\"lease_owner\":\"%s\","
				    "\"lease_takes\":%" PRIu64 ",\"lease_losses\":%" PRIu64 "}",
				    first ? "" : ",", sh->id, sh->parent, sh->adjacent,
				    states[sh->state], sh->owned ? "true" : "false", sh->seq,
				    sh->durable, sh->end_durable ? "true" : "false", sh->records,
				    sh->calls, sh->throttles, sh->renewals, sh->errors,
				    sh->behind_ms, sh->l_owner, sh->lease_takes, sh->lease_losses);
		first = 0;
	}
	rc |= mm_buf_printf(out, "]}");
	return rc ? MM_ENOMEM : 0;
}

static const mm_option_t kin_options[] = {
	{MM_OPT_STRING, "stream", NULL, offsetof(mm_kin_cfg_t, stream),
	 "Kinesis data stream name (required)."},
	{MM_OPT_STRING, "start", "trim_horizon", offsetof(mm_kin_cfg_t, start),
	 "Where a shard starts when this store has no position for "
	 "it: trim_horizon, latest or at_timestamp:<epoch ms>. A child shard of a split or merge "
	 "always starts at its beginning."},
	{MM_OPT_STRING, "endpoint", NULL, offsetof(mm_kin_cfg_t, endpoint),
	 "Kinesis endpoint URL. Default https://kinesis.<region>.amazonaws.com."},
	{MM_OPT_STRING, "region", NULL, offsetof(mm_kin_cfg_t, region),
	 "AWS region. Default $AWS_REGION, then $AWS_DEFAULT_REGION, then us-east-1."},
	{MM_OPT_STRING, "consumer", NULL, offsetof(mm_kin_cfg_t, consumer),
	 "The reader whose position is stored (the key is kinesis:<stream>#<consumer>; with a "
	 "lease table one part per shard under it, and every worker of the table must name the "
	 "same consumer, by default lease:<lease_table>)."},
	{MM_OPT_INT, "limit", "10000", offsetof(mm_kin_cfg_t, limit),
	 "Records per GetRecords call (Limit), 1..10000."},
	{MM_OPT_DURATION_MS, "idle", "1s", offsetof(mm_kin_cfg_t, idle_ms),
	 "Pause between GetRecords calls of a shard that is caught up."},
	{MM_OPT_DURATION_MS, "shard_sync", "60s", offsetof(mm_kin_cfg_t, shard_sync_ms),
	 "How often the shard list is read again (also at every shard's end)."},
	{MM_OPT_BOOL, "eof", "false", offsetof(mm_kin_cfg_t, eof),
	 "End the input once every shard is read to its end or caught up (murmur run --once)."},
	MM_KLEASE_OPTIONS,
	{0},
};

#define KIN_VTABLE_COMMON                                                                  \
	.name = "kinesis", .options = kin_options, .open = kin_open, .start = kin_start,   \
	.pause = kin_pause, .resume = kin_resume, .ack = kin_ack, .stop = kin_stop,        \
	.close = kin_close, .describe = kin_describe, .status = kin_status, .lag = kin_lag

const mm_source_vtable_t mm_source_kinesis_vtable = {KIN_VTABLE_COMMON};

/* The same source once it shares a lease table (kin_open switches to it):
 * its position is stored in parts, one per shard (kinesis_parts.c). A
 * worker alone keeps one position, which the embedded store commits with
 * the state. */
static const mm_source_vtable_t kin_leased_vtable = {KIN_VTABLE_COMMON,
						      .pos_parts = mm_kin_pos_parts};
