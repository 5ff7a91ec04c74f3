/*
 * kinesis.c: the "kinesis" source, a polling consumer of a Kinesis data
 * stream over the Kinesis JSON API (kinesis_api.c), entirely on the loop:
 * its shard list, positions and vtable. Reading a shard (its requests,
 * pacing, records and end) is kinesis_read.c.
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
#include "kinesis_impl.h"
#include "position.h"

#define KIN_BACKOFF_MIN_MS 200
#define KIN_BACKOFF_MAX_MS 5000
#define KIN_MAX_RECORD_DEFAULT (1ULL << 20)

extern const mm_source_vtable_t mm_source_kinesis_vtable;
static const mm_source_vtable_t kin_leased_vtable;

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

int mm_kin_pos_encode(mm_kin_t *ks)
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

int mm_kin_undurable(const mm_kshard_t *sh)
{
	return mm_kin_seq_cmp(sh->seq, sh->durable) > 0 || (sh->end_read && !sh->end_durable);
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
	if (sh->lost && !mm_kin_undurable(sh)) {
		sh->lost = 0;
		mm_log(MM_LOG_INFO, "kinesis", "%s: %s: the records read before its lease was lost "
		       "are durable (its stored position moved with them)", ks->base.id, sh->id);
	}
	if (ks->leases)
		mm_klease_durable(ks->leases, sh);
	return 0;
}

/* ---- ListShards ---- */

static void kin_list_page(mm_kin_t *ks, const char *token);

static void kin_on_list_timer(uv_timer_t *t)
{
	mm_kin_list_shards(t->data);
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

void mm_kin_list_shards(mm_kin_t *ks)
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
	mm_kin_list_shards(ks);
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
			mm_kin_after_answer(ks, sh);
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
		/* Its part's position in the store, with a lease table. */
		int own = ks->leases && (sh->owned || sh->lost) && ks->base.sink.own
				  ? ks->base.sink.own(ks->base.sink.ctx, &ks->base, sh->id)
				  : -1;

		if (!sh->listed && sh->records == 0)
			continue;
		rc |= mm_buf_printf(out, "%s{\"shard\":\"%s\",\"parent\":\"%s\",\"adjacent_parent\":"
				    "\"%s\",\"state\":\"%s\",\"owned\":%s,\"lost\":%s,\"sequence\":\"%s\","
				    "\"durable\":\"%s\",\"ended\":%s,\"records\":%" PRIu64
				    ",\"get_records\":%" PRIu64 ",\"throttles\":%" PRIu64
				    ",\"iterator_renewals\":%" PRIu64 ",\"errors\":%" PRIu64
				    ",\"millis_behind_latest\":%" PRId64 ",\"lease_owner\":\"%s\","
				    "\"lease_takes\":%" PRIu64 ",\"lease_losses\":%" PRIu64 ",\"own\":%s}",
				    first ? "" : ",", sh->id, sh->parent, sh->adjacent,
				    states[sh->state], sh->owned ? "true" : "false",
				    sh->lost ? "true" : "false", sh->seq,
				    sh->durable, sh->end_durable ? "true" : "false", sh->records,
				    sh->calls, sh->throttles, sh->renewals, sh->errors,
				    sh->behind_ms, sh->l_owner, sh->lease_takes, sh->lease_losses,
				    own < 0 ? "null" : own ? "true" : "false");
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

