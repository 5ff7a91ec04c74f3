/*
 * pipeline.c: turning records into deltas (see pipeline.h).
 *
 * The fast path scans each record once with mm_json_scan for every field the
 * pipeline names (keys, value, event time, event id), so a declarative
 * pipeline costs one validating pass over the bytes plus one table update per
 * key. Every way a record can be refused ends in mm_pipeline_reject, which
 * counts it by reason and appends a JSON Lines dead letter.
 */
#include "pipeline.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../codec/json.h"
#include "../lib/error.h"
#include "../lib/log.h"
#include "../monoid/window.h"
#include "explain.h"
#include "progress.h"

static const char *const reject_names[MM_REJ__COUNT] = {
	"json", "utf8", "not_object", "missing_field", "wrong_type", "too_big", "out_of_range", "lua_error",
	"poison", "merge_failed", "lua_memory",
};

const char *mm_reject_reason_name(int reason)
{
	return reason >= 0 && reason < MM_REJ__COUNT ? reject_names[reason] : "unknown";
}

void mm_pipeline_config_free(mm_pipeline_config_t *cfg)
{
	free(cfg->name);
	for (int i = 0; i < cfg->nkeys; i++)
		free(cfg->keys[i]);
	free(cfg->value_field);
	free(cfg->time_field);
	free(cfg->id_field);
	if (cfg->dlq)
		cfg->dlq->vt->close(cfg->dlq);
	free(cfg->compat);
	free(cfg->meta);
	free(cfg->where);
	memset(cfg, 0, sizeof(*cfg));
}

int mm_pipeline_init(mm_pipeline_t *p, mm_store_t *st, mm_pipeline_config_t *cfg)
{
	memset(p, 0, sizeof(*p));
	p->st = st;
	p->cfg = *cfg;
	memset(cfg, 0, sizeof(*cfg));
	p->ns.name = p->cfg.name;
	p->ns.m = &p->cfg.monoid;
	p->id_seed = p->ns.name ? mm_id_hash_seed(p->ns.name, strlen(p->ns.name)) : 0;
	p->uses_lua = p->cfg.key_kind == MM_PART_LUA || p->cfg.value_kind == MM_PART_LUA ||
		      p->cfg.time_kind == MM_PART_LUA || p->cfg.id_kind == MM_PART_LUA;
	for (int g = 0; g < 2; g++) {
		mm_agg_init(&p->agg[g], &p->cfg.monoid);
		mm_agg_init(&p->base[g], &p->cfg.monoid);
		mm_agg_init(&p->held[g].ids, NULL);
	}
	/* Dedup on a store only this worker writes: aggregate at once, and ask
	 * the store's marks at once where it keeps them in memory; else, or
	 * while it cannot answer yet, log the adds in case a claim finds an id
	 * counted before (oplog.h). */
	p->logs = st && p->cfg.id_kind != MM_PART_NONE && !(mm_store_caps(st) & MM_STORE_CAP_SHARED);
	p->asks_marks = p->logs && (mm_store_caps(st) & MM_STORE_CAP_MARKED);
	/* Such a store's marks are the ids' hashes (store.h, mm_mark_t): the
	 * pending ids are told apart as its marks are, and need no bytes. */
	for (int g = 0; g < 2; g++)
		mm_idset_init(&p->ids[g], !p->asks_marks);
	if (p->cfg.key_kind == MM_PART_CONST)
		for (int k = 0; k < p->cfg.nkeys; k++)
			p->const_klen[k] = strlen(p->cfg.keys[k]);
	return 0;
}

void mm_pipeline_free(mm_pipeline_t *p)
{
	for (int g = 0; g < 2; g++) {
		mm_agg_free(&p->agg[g]);
		mm_idset_free(&p->ids[g]);
		mm_held_free(&p->held[g]);
		mm_oplog_free(&p->log[g]);
		mm_agg_free(&p->base[g]);
	}
	mm_buf_free(&p->scratch);
	mm_buf_free(&p->dl_recent);
	mm_pipeline_config_free(&p->cfg);
}

/* ---- dead letters ---- */

/* Keeps e's JSON line in p->dl_recent (see pipeline.h); when memory runs
 * out the tail just misses it: the dead letter itself is written. */
static void remember_dead_letter(mm_pipeline_t *p, const mm_dead_letter_entry_t *e)
{
	mm_buf_t *b = &p->dl_recent;
	size_t cut = 0;

	if (mm_dead_letter_json(e, b) != 0 || mm_buf_put_u8(b, '\n') != 0) {
		b->len = 0;
		return;
	}
	if (b->len <= MM_PIPELINE_DL_RECENT)
		return;
	/* Drops whole lines from the front until the rest fits. */
	while (cut < b->len && b->len - cut > MM_PIPELINE_DL_RECENT) {
		uint8_t *nl = memchr(b->p + cut, '\n', b->len - cut);

		cut = (size_t)(nl - b->p) + 1;
	}
	memmove(b->p, b->p + cut, b->len - cut);
	b->len -= cut;
}

void mm_pipeline_reject(mm_pipeline_t *p, const mm_record_t *r, int reason, int code,
			const char *detail)
{
	mm_source_t *src = p->batch ? p->batch->src : NULL;
	/* A record over this pipeline's own limit (below its source's) is kept
	 * like one the source truncated: its first MM_REC_PREFIX bytes. */
	int cut = !(r->flags & MM_REC_TOOBIG) && r->len > p->cfg.max_record && r->len > MM_REC_PREFIX;
	mm_dead_letter_entry_t e = {
		.pipeline = p->cfg.name,
		.reason = mm_reject_reason_name(reason),
		.code = mm_err_name(code),
		.error = detail,
		.source = src ? src->id : NULL,
		.offset = r->offset,
		.record = r->p,
		.len = cut ? MM_REC_PREFIX : r->len,
		.orig_len = r->orig_len,
		.truncated = (r->flags & MM_REC_TOOBIG) != 0 || cut,
		.time_ms = mm_now_ms(),
		.record_id = (r->flags & MM_REC_ID) ? r->id : NULL,
		.record_id_len = (r->flags & MM_REC_ID) ? r->id_len : 0,
	};

	if (p->explain)
		mm_explain_note_reject(p->explain, reason, code, detail);
	p->stats.rejected[reason]++;
	if (p->cfg.dlq == NULL)
		return;
	if (p->cfg.dlq->vt->write(p->cfg.dlq, &e) != 0) {
		p->stats.dead_letter_errors++;
		mm_log(MM_LOG_ERROR, p->cfg.name, "dead letter not written to %s: %s",
		       p->cfg.dlq->target, mm_diag_msg());
		return;
	}
	p->stats.dead_letters++;
	if (strcmp(p->cfg.dlq->vt->name, "file") != 0)
		remember_dead_letter(p, &e);
	mm_log(MM_LOG_DEBUG, p->cfg.name, "rejected record at offset %llu: %s",
	       (unsigned long long)r->offset, detail);
}

void mm_pipeline_reject_delta(mm_pipeline_t *p, const mm_delta_t *d, const char *detail)
{
	mm_buf_t desc = {0};
	mm_record_t r = {0};
	int rc = mm_buf_printf(&desc, "{\"entity\":");

	rc |= mm_json_quote(d->key.entity, d->key.len, &desc);
	rc |= mm_buf_printf(&desc, ",\"bucket\":%lld,\"delta\":", (long long)d->key.bucket);
	rc |= p->cfg.monoid.vt->to_json(&p->cfg.monoid, d->state, &desc);
	rc |= mm_buf_printf(&desc, "}");
	if (rc == 0) {
		r.p = (const char *)desc.p;
		r.len = (uint32_t)desc.len;
		r.orig_len = desc.len;
		mm_pipeline_reject(p, &r, MM_REJ_MERGE, MM_ERANGE, detail);
	}
	mm_log(MM_LOG_ERROR, p->cfg.name, "delta for '%.*s' (bucket %lld) could not be merged: %s",
	       (int)d->key.len, d->key.entity, (long long)d->key.bucket, detail);
	mm_buf_free(&desc);
}

int mm_pipeline_sync_dead_letters(mm_pipeline_t *p)
{
	return p->cfg.dlq ? p->cfg.dlq->vt->sync(p->cfg.dlq) : 0;
}

/* ---- shared per-record steps (fast path and FFI) ---- */

static int reason_of(int code)
{
	switch (code) {
	case MM_EUTF8:
		return MM_REJ_UTF8;
	case MM_ENOTOBJ:
		return MM_REJ_NOTOBJ;
	case MM_EMISSING:
		return MM_REJ_MISSING;
	case MM_ETYPE:
		return MM_REJ_TYPE;
	case MM_ETOOBIG:
		return MM_REJ_TOOBIG;
	case MM_ERANGE:
		return MM_REJ_RANGE;
	case MM_ELUA:
		return MM_REJ_LUA;
	case MM_ECORRUPT:
		return MM_REJ_POISON;
	default:
		return MM_REJ_JSON;
	}
}

/* pipe_bucket when the memo does not answer. */
static __attribute__((noinline)) int pipe_bucket_slow(mm_pipeline_t *p, int64_t ts_ms, int64_t now_ms,
						     int64_t *bucket, int64_t *expire_ms)
{
	const mm_pipeline_config_t *c = &p->cfg;
	mm_bucket_memo_t *memo = &p->bucket_memo;
	int64_t b;

	if (c->gran_ms == 0) {
		*bucket = 0;
		*expire_ms = 0;
		return 0;
	}
	b = mm_window_bucket(c->gran_ms, ts_ms);
	if (b <= 0)
		return mm_diag_set(MM_ERANGE, "event time %lld ms is before the first window",
				   (long long)ts_ms);
	if (c->retention_ms > 0) {
		if (b < mm_window_oldest_kept(c->gran_ms, c->retention_ms, now_ms))
			return mm_diag_set(MM_ERANGE, "event time %lld ms is older than the retention",
					   (long long)ts_ms);
		*expire_ms = mm_window_bucket_start_ms(c->gran_ms, b + 1) + c->retention_ms;
	} else {
		*expire_ms = 0;
	}
	*bucket = b;
	/* Every time in this bucket's span maps to it and passes the same
	 * checks at this now_ms (retention is decided per bucket). */
	memo->valid = 1;
	memo->now_ms = now_ms;
	memo->lo_ms = mm_window_bucket_start_ms(c->gran_ms, b);
	memo->hi_ms = mm_window_bucket_start_ms(c->gran_ms, b + 1);
	memo->bucket = b;
	memo->expire_ms = *expire_ms;
	return 0;
}

/* Maps an event time to its bucket, enforcing the window and retention. */
static inline int pipe_bucket(mm_pipeline_t *p, int64_t ts_ms, int64_t now_ms, int64_t *bucket,
			      int64_t *expire_ms)
{
	const mm_bucket_memo_t *memo = &p->bucket_memo;

	if (memo->valid && memo->now_ms == now_ms && ts_ms >= memo->lo_ms && ts_ms < memo->hi_ms) {
		*bucket = memo->bucket;
		*expire_ms = memo->expire_ms;
		return 0;
	}
	return pipe_bucket_slow(p, ts_ms, now_ms, bucket, expire_ms);
}

/* Finishes the add the last record left half done, if any (p->later). */
static inline void pipe_add_finish(mm_pipeline_t *p)
{
	if (p->later.pending) {
		p->later.pending = 0;
		p->cfg.monoid.vt->add_finish(&p->cfg.monoid, p->later_a->entries[p->later_e].state,
					     &p->later);
	}
}

/* Adds v under (key, bucket). kh, when not NULL, is mm_agg_key_hash of the
 * key (record_read's). hint, for a literal key, remembers its entry
 * (see mm_key_hint_t); NULL for keys read from the record. Inlined into
 * the record loop, the add's own checks folding into it. fast: called from
 * a specialised copy of the record loop (enum loop_mode), whose
 * configuration has no dry run; 0 outside it. loop: called from the general
 * copy of the record loop, whose batch ends with pipe_add_finish: the
 * monoid may leave its add half done until the next one (p->later). The
 * literal-key copy does not: its one key's state stays in the cache, and
 * the test would cost its every record. */
static inline __attribute__((always_inline)) int
pipe_add(mm_pipeline_t *p, const char *key, size_t klen, const uint64_t *kh, int64_t bucket,
	 int64_t expire_ms, const mm_value_t *v, mm_key_hint_t *hint, int fast, int loop)
{
	mm_agg_t *a = &p->agg[p->cur];
	mm_agg_entry_t *e;
	int created, rc;

	/* Both callers have checked klen (1..1024). */
	if (hint && hint->a == a && hint->gen == a->gen && hint->e->bucket == bucket) {
		e = hint->e;
	} else {
		e = kh ? mm_agg_upsert_h(a, key, klen, bucket, mm_agg_hash_mix(*kh, bucket), &created)
		       : mm_agg_upsert(a, key, klen, bucket, &created);
		if (e == NULL)
			return MM_ENOMEM;
		if (hint) {
			/* After the upsert: it may have grown the table. */
			hint->a = a;
			hint->gen = a->gen;
			hint->e = e;
		}
	}
	e->expire_ms = expire_ms;
	if (loop && p->cfg.monoid.vt->add_start) {
		/* After the upsert, which may have moved the pending entry. */
		pipe_add_finish(p);
		rc = p->cfg.monoid.vt->add_start(&p->cfg.monoid, e->state, v, &p->later);
		if (p->later.pending) {
			p->later_a = a;
			p->later_e = (size_t)(e - a->entries);
		}
	} else {
		rc = p->cfg.monoid.vt->add(&p->cfg.monoid, e->state, v);
	}
	if (rc == 0 && p->log[p->cur].on)
		rc = mm_oplog_add(&p->log[p->cur], p->claiming, key, klen, bucket, expire_ms, v);
	if (rc == 0 && !fast && p->explain)
		mm_explain_note_key(p->explain, key, klen, bucket, v);
	return rc;
}

/* On a store that takes claims: keeps the current record until its id is
 * claimed (returns 2), or 0 when there is no record to keep. */
static int pipe_hold(mm_pipeline_t *p, const char *id, size_t len)
{
	mm_batch_t *b = p->batch;
	int rc;

	if (b == NULL || p->rec < 0 || (size_t)p->rec >= b->n)
		return 0;
	rc = mm_held_add(&p->held[p->cur], b->src, &b->recs[p->rec], b->now_ms, id, len);
	if (rc)
		return rc;
	p->stats.held++;
	return 2;
}

/* The generation's first new id: its adds so far move aside (base), the
 * ones from here on are logged (oplog.h). A swap: entries do not move, but
 * both tables get a generation no key hint has seen. */
static void pipe_log_start(mm_pipeline_t *p)
{
	mm_agg_t *a = &p->agg[p->cur], *b = &p->base[p->cur], t;
	uint64_t gen = (a->gen > b->gen ? a->gen : b->gen) + 1;

	/* The half-done add names a->entries, which the swap moves to b. */
	pipe_add_finish(p);
	if (a->count) {
		t = *a;
		*a = *b;
		*b = t;
		a->gen = b->gen = gen;
	}
	p->log[p->cur].on = 1;
}

mm_idset_entry_t *mm_pipeline_id_upsert(mm_pipeline_t *p, int gen, const char *id, size_t len,
					int64_t expire_ms, int *created)
{
	mm_idhash_t h;
	mm_idset_entry_t *e;

	mm_id_hash(p->id_seed, id, len, &h);
	/* An id already there keeps its expiry. */
	if ((e = mm_idset_find(&p->ids[gen], id, len, &h)) != NULL) {
		*created = 0;
		return e;
	}
	return mm_idset_upsert(&p->ids[gen], id, len, &h, expire_ms, created);
}

/* The record's claim answered at once by the store's marks in memory: 1
 * counted before, 0 new, MM_EAGAIN while the store cannot answer. Counted
 * as claims, which they replace. ahead: the next record's id hash, if
 * known (the store fetches its slot meanwhile). */
static int pipe_ask_marks(mm_pipeline_t *p, const mm_idhash_t *h, const mm_idhash_t *ahead)
{
	int rc = mm_store_marked(p->st, h, ahead, p->batch ? p->batch->now_ms : mm_now_ms());

	if (rc < 0)
		return rc;
	p->stats.claims++;
	p->stats.claim_duplicates += (uint64_t)rc;
	return rc;
}

/* 1 when the id is pending in either generation or held, or marked in the
 * store, else 0 (or 2: held, pipe_hold). h is the id's mm_id_hash, which the
 * fast path computes once for this and pipe_remember; ahead is the next
 * record's, or NULL (pipe_ask_marks). */
static inline __attribute__((always_inline)) int
pipe_seen(mm_pipeline_t *p, const char *id, size_t len, const mm_idhash_t *h,
	  const mm_idhash_t *ahead)
{
	int rc;

	/* A held record's claim was won: it is new by definition. */
	if (p->replaying)
		return 0;
	if (p->explain)
		mm_explain_note_id(p->explain, id, len);
	if (mm_idset_find(&p->ids[p->cur], id, len, h) ||
	    mm_idset_find(&p->ids[!p->cur], id, len, h) ||
	    mm_held_has(&p->held[p->cur], id, len) || mm_held_has(&p->held[!p->cur], id, len))
		return 1;
	/* A dry run (explain.c) has no store to ask. */
	if (p->st == NULL)
		return 0;
	if (!p->logs)
		return pipe_hold(p, id, len);
	/* Not pending, so not in the apply in flight either: the store's marks
	 * settle it, and its record needs no log. */
	if (p->asks_marks && (rc = pipe_ask_marks(p, h, ahead)) != MM_EAGAIN)
		return rc;
	if (!p->log[p->cur].on)
		pipe_log_start(p);
	p->claiming = 1;
	return 0;
}

/* A record starts: the previous one's tagged adds are settled (oplog.h).
 * A log that is off holds nothing to settle (it takes adds only once on,
 * and goes off only when reset), so a dedup pipeline whose events carry no
 * ids pays one more test here, not the settling. */
static inline void pipe_begin(mm_pipeline_t *p)
{
	p->claiming = 0;
	if (p->logs && p->log[p->cur].on)
		mm_oplog_begin(&p->log[p->cur]);
}

/* Dedup ids are keys in every store, which takes 1..1024 bytes (store.c).
 * An event whose id is empty or longer is counted without dedup, never
 * dead-lettered for it: the id is what is unusable, not the event. */
#define MM_ID_MAX 1024

static int id_usable(mm_pipeline_t *p, size_t len)
{
	if (len >= 1 && len <= MM_ID_MAX)
		return 1;
	if (!p->replaying)
		p->stats.dedup_skipped++;
	return 0;
}

/* pipe_remember past its common case: any insert, and a claim's id. */
static __attribute__((noinline)) int pipe_remember_slow(mm_pipeline_t *p, const char *id,
							size_t len, const mm_idhash_t *h,
							int64_t now_ms)
{
	mm_idset_t *s;
	mm_idset_entry_t *e;
	const char *copy;
	int created;

	e = mm_idset_upsert(&p->ids[p->cur], id, len, h, now_ms + p->cfg.dedup_ttl_ms, &created);
	if (e == NULL)
		return MM_ENOMEM;
	if (!p->claiming)
		return 0;
	/* The set's copy of the id lives as long as the log's generation; a
	 * set that keeps no ids copies the few that claims borrow. */
	p->claiming = 0;
	s = &p->ids[p->cur];
	if ((copy = s->keep ? mm_idset_id(s, e) : mm_idset_copy(s, id, len)) == NULL)
		return MM_ENOMEM;
	return mm_oplog_claim(&p->log[p->cur], copy, len, h);
}

/* Adds a record's id to the current generation's pending ids: inline, as
 * the record loop's every new id comes here, unless it is claimed at the
 * flush (the store's marks cannot answer yet) or the set's common case
 * does not hold (mm_idset_add_new). */
static inline int pipe_remember(mm_pipeline_t *p, const char *id, size_t len,
				const mm_idhash_t *h, int64_t now_ms)
{
	if (!p->claiming &&
	    mm_idset_add_new(&p->ids[p->cur], len, h, now_ms + p->cfg.dedup_ttl_ms) != NULL)
		return 0;
	return pipe_remember_slow(p, id, len, h, now_ms);
}

/* ---- fast path ---- */

/*
 * The record loop has three copies, one source: its mode is a constant in
 * each, so the configuration checks the mode settles fold away in its copy
 * (loop_mode picks the copy once per batch). LOOP_LITERAL is one literal
 * key (recently_interacted): a string monoid's value from a field,
 * processing time, no event id or one from a field, neither a dry run nor
 * a replay. LOOP_FIELD is one key from a field (page_views,
 * unique_visitors): the value from a field or a constant, and the rest as
 * LOOP_LITERAL. Every other configuration runs LOOP_GENERAL, which checks
 * each part per record.
 */
enum loop_mode { LOOP_GENERAL, LOOP_LITERAL, LOOP_FIELD };

/* The fields one scan looks for: the key fields first, then value, time and
 * id where the pipeline names them; unused parts have index -1. Only the
 * used slots are passed to the scanner. */
typedef struct scan_plan {
	mm_json_field_t f[MM_MAX_KEYS + 3];
	int n;
	int value, time, id;
	int key_hash;        /* the single key is a field: record_read hashes it */
	mm_json_plan_t plan; /* for f[0..n) */
} scan_plan_t;

static const mm_json_field_t absent = {.type = MM_JSON_ABSENT};

static void plan_add(scan_plan_t *sp, int *slot, const char *name)
{
	*slot = sp->n;
	sp->f[sp->n].name = name;
	sp->f[sp->n].name_len = strlen(name);
	sp->n++;
}

/* Reads a JSON scalar as a key/element/id string: strings unescaped, numbers
 * in their canonical text (mm_json_number_key), which runtime.lua gives the
 * Lua path too, so "1", "1.0" and "1e0" name one entity on both.
 * field_string is the inlined common case, a string without escapes, which
 * is read in place; field_string_slow does the rest. */
static __attribute__((noinline)) int field_string_slow(mm_pipeline_t *p, const mm_json_field_t *f, mm_buf_t *tmp, const char **s,
			size_t *len, const char *what)
{
	if (f->type == MM_JSON_ABSENT)
		return mm_diag_set(MM_EMISSING, "missing %s field '%.*s'", what, (int)f->name_len,
				   f->name);
	if (f->type == MM_JSON_NUMBER) {
		size_t start = tmp->len, n;
		int rc;

		/* process_record reserved room for this: no reallocation. */
		if ((rc = mm_buf_reserve(tmp, MM_JSON_KEY_MAX)) != 0)
			return rc;
		if ((rc = mm_json_number_key(f->p, f->len, (char *)tmp->p + start, &n)) != 0)
			return rc == MM_ERANGE ? mm_diag_set(MM_ERANGE,
							     "%s field '%.*s' is a number beyond a double's range",
							     what, (int)f->name_len, f->name)
					       : rc;
		tmp->len += n;
		*s = (const char *)tmp->p + start;
		*len = n;
		return 0;
	}
	if (f->type != MM_JSON_STRING)
		return mm_diag_set(MM_ETYPE, "%s field '%.*s' must be a string or a number", what,
				   (int)f->name_len, f->name);
	if (!f->escaped) {
		*s = f->p;
		*len = f->len;
		return 0;
	}
	size_t start = tmp->len;
	int rc = mm_json_unescape(f->p, f->len, tmp);

	if (rc)
		return rc;
	*s = (const char *)tmp->p + start;
	*len = tmp->len - start;
	return 0;
}

static inline __attribute__((always_inline)) int
field_string(mm_pipeline_t *p, const mm_json_field_t *f, mm_buf_t *tmp, const char **s,
	     size_t *len, const char *what)
{
	if (__builtin_expect(f->type == MM_JSON_STRING && !f->escaped, 1)) {
		*s = f->p;
		*len = f->len;
		return 0;
	}
	return field_string_slow(p, f, tmp, s, len, what);
}

static int field_time(const mm_pipeline_t *p, const mm_json_field_t *f, int64_t *ts_ms)
{
	if (f->type == MM_JSON_ABSENT)
		return mm_diag_set(MM_EMISSING, "missing event-time field '%s'", p->cfg.time_field);
	if (f->type == MM_JSON_NUMBER) {
		int is_int;
		int64_t i;
		double d;
		int rc = mm_json_number(f->p, f->len, &is_int, &i, &d);

		if (rc)
			return rc;
		return mm_time_from_epoch(d, p->cfg.time_unit, ts_ms);
	}
	if (f->type == MM_JSON_STRING && !f->escaped)
		return mm_time_parse_rfc3339(f->p, f->len, ts_ms);
	return mm_diag_set(MM_ETYPE, "event-time field '%s' must be RFC 3339 text or epoch number",
			   p->cfg.time_field);
}

/* Reads the value field f as the monoid's value kind (kind). */
static inline __attribute__((always_inline)) int
field_value_as(mm_pipeline_t *p, const mm_json_field_t *f, mm_buf_t *tmp, mm_value_t *v, int kind)
{
	if (kind == MM_VK_NONE)
		return 0;
	if (f->type == MM_JSON_ABSENT)
		return mm_diag_set(MM_EMISSING, "missing value field '%s'", p->cfg.value_field);
	if (f->type == MM_JSON_NUMBER && kind != MM_VK_STRING) {
		int is_int, rc = mm_json_number(f->p, f->len, &is_int, &v->i, &v->d);

		if (rc)
			return rc;
		v->type = is_int ? MM_VAL_INT : MM_VAL_DOUBLE;
		return 0;
	}
	if (kind == MM_VK_NUMBER)
		return mm_diag_set(MM_ETYPE, "value field '%s' must be a number for %s",
				   p->cfg.value_field, p->cfg.monoid.vt->name);
	v->type = MM_VAL_STRING;
	return field_string(p, f, tmp, &v->s, &v->len, "value");
}

static int field_value(mm_pipeline_t *p, const mm_json_field_t *f, mm_buf_t *tmp, mm_value_t *v)
{
	return field_value_as(p, f, tmp, v, p->cfg.monoid.vt->value_kind);
}

/* Key k of the record (from its field or the literal), checked. */
static inline __attribute__((always_inline)) int
record_key(mm_pipeline_t *p, const mm_json_field_t *fields, mm_buf_t *tmp, int k, const char **key,
	   size_t *klen, int mode)
{
	if (mode == LOOP_FIELD || (mode == LOOP_GENERAL && p->cfg.key_kind == MM_PART_FIELD)) {
		int rc = field_string(p, &fields[k], tmp, key, klen, "key");

		if (rc)
			return rc;
	} else {
		*key = p->cfg.keys[k];
		*klen = p->const_klen[k];
	}
	if (*klen == 0 || *klen > 1024)
		return mm_diag_set(MM_ERANGE, "key is %zu bytes (must be 1..1024)", *klen);
	return 0;
}

/* Why process_record refuses r before reading it (the caller saw a flag
 * or the length). */
static __attribute__((noinline)) int record_refused(const mm_pipeline_t *p, const mm_record_t *r)
{
	const mm_pipeline_config_t *c = &p->cfg;

	if (r->flags & MM_REC_POISON)
		return mm_diag_set(MM_ECORRUPT, "the record stalled or crashed the worker twice");
	if (r->flags & MM_REC_UNDECODABLE)
		return mm_diag_set(MM_EJSON, MM_REC_UNDECODABLE_MSG);
	if (r->flags & MM_REC_TOOBIG)
		return mm_diag_set(MM_ETOOBIG, "record of %llu bytes exceeds max_record %llu",
				   (unsigned long long)r->orig_len, (unsigned long long)c->max_record);
	return mm_diag_set(MM_ETOOBIG, "record of %u bytes exceeds max_record %llu", r->len,
			   (unsigned long long)c->max_record);
}

/* A record read ahead of its processing (record_read): its fields, the
 * scratch buffer its unescaped strings live in, its event id and the id's
 * hash, and for a key read from a field, the key's part of its hash in the
 * aggregation table (kh, when has_kh). */
typedef struct rec_read {
	mm_json_field_t f[MM_MAX_KEYS + 3];
	mm_buf_t tmp;
	const char *id;
	size_t idlen;
	mm_idhash_t idh;
	uint64_t kh;
	int has_kh;
	int rc;
} rec_read_t;

/* The records the record loop holds read (record_loop): it reads this many
 * less one ahead of the one it processes. */
#define MM_READ_RING 4

/* The hash of s's event id, or NULL when it has no usable one (not hashed). */
static inline const mm_idhash_t *read_id_hash(const rec_read_t *s)
{
	return s->id && s->idlen >= 1 && s->idlen <= MM_ID_MAX ? &s->idh : NULL;
}

/*
 * Reads record r: scans its fields and hashes its event id, then hints the
 * cache about the id's slots in the pending-id tables. The record loop reads
 * records ahead of the one it processes (record_loop), so that those slots
 * (an index of a flush's worth of ids, which misses the cache:
 * doc/performance-journal.md) are on their way while the earlier records are
 * processed. A single key read from a field (unique_visitors' page_id) is
 * hashed here too, and its slot in the aggregation table hinted the same
 * way, for the bucket the last record mapped to (the usual one; pipe_add
 * mixes the key's hash with the record's own bucket, so another costs only
 * the hint). Nothing here changes the pipeline: an error is only returned, and process_batch
 * reads the record again when it processes it, so that the diagnostics are
 * that record's.
 */
static inline __attribute__((always_inline)) int
record_read(mm_pipeline_t *p, const mm_record_t *r, const scan_plan_t *sp, rec_read_t *s, int mode)
{
	const mm_pipeline_config_t *c = &p->cfg;
	size_t need;
	int rc;

	s->id = NULL;
	s->idlen = 0;
	s->has_kh = 0;
	if (__builtin_expect((r->flags & (MM_REC_POISON | MM_REC_UNDECODABLE | MM_REC_TOOBIG)) ||
				     r->len > c->max_record,
			     0))
		return record_refused(p, r);
	/* The scan marks every field absent before it looks. */
	rc = mm_json_scan_planned(&sp->plan, r->p, r->len, s->f);
	if (rc)
		return rc;
	/* Unescaped strings are never longer than the record, and a number's
	 * canonical text is at most MM_JSON_KEY_MAX bytes, so reserving this once
	 * keeps every pointer into tmp valid for this record. */
	s->tmp.len = 0;
	need = r->len + (size_t)sp->n * MM_JSON_KEY_MAX;
	/* Only the batch's first records (or a longer one) find it too small. */
	if (need > s->tmp.cap && (rc = mm_buf_reserve(&s->tmp, need)) != 0)
		return rc;
	if (sp->id >= 0 && s->f[sp->id].type != MM_JSON_ABSENT) {
		rc = field_string(p, &s->f[sp->id], &s->tmp, &s->id, &s->idlen, "event id");
		if (rc)
			return rc;
	} else if (mode == LOOP_GENERAL && c->id_kind == MM_PART_SOURCE && (r->flags & MM_REC_ID)) {
		s->id = r->id;
		s->idlen = r->id_len;
	}
	/* An escaped key is unescaped, and any key checked, by record_key. */
	if ((mode == LOOP_FIELD || (mode == LOOP_GENERAL && sp->key_hash)) &&
	    s->f[0].type == MM_JSON_STRING && !s->f[0].escaped) {
		s->kh = mm_agg_key_hash(s->f[0].p, s->f[0].len);
		s->has_kh = 1;
		if (p->bucket_memo.valid)
			mm_agg_prefetch_h(&p->agg[p->cur],
					  mm_agg_hash_mix(s->kh, p->bucket_memo.bucket), 1);
	}
	/* An unusable id is counted by process_record (id_usable). */
	if (read_id_hash(s)) {
		mm_id_hash(p->id_seed, s->id, s->idlen, &s->idh);
		mm_idset_prefetch(&p->ids[p->cur], &s->idh, 1);
		mm_idset_prefetch(&p->ids[!p->cur], &s->idh, 0);
	}
	return 0;
}

/* Processes record r, read by record_read into s; the next record, if
 * any, is read into ahead already. mode: the loop's copy (enum loop_mode). */
static inline __attribute__((always_inline)) int
process_record(mm_pipeline_t *p, const mm_record_t *r, int64_t now_ms, const scan_plan_t *sp,
	       rec_read_t *s, const rec_read_t *ahead, int mode)
{
	const int lit = mode == LOOP_LITERAL, fast = mode != LOOP_GENERAL;
	const mm_pipeline_config_t *c = &p->cfg;
	const mm_json_field_t *fields = s->f;
	mm_buf_t *tmp = &s->tmp;
	mm_value_t v = {0};
	const char *id = s->id, *keys[MM_MAX_KEYS];
	size_t idlen = s->idlen, klens[MM_MAX_KEYS];
	int64_t bucket, expire_ms;
	int rc;

	if (id && !id_usable(p, idlen))
		id = NULL;
	if (id) {
		rc = pipe_seen(p, id, idlen, &s->idh, ahead ? read_id_hash(ahead) : NULL);
		if (rc != 0)
			return rc;
	}
	v.ts_ms = now_ms;
	v.seq = r->seq;
	if (!fast && c->time_kind == MM_PART_FIELD) {
		rc = field_time(p, &fields[sp->time], &v.ts_ms);
		if (rc)
			return rc == MM_EINVAL ? MM_ETYPE : rc;
	} else if (r->ts_ms > 0) {
		/* No time field: the source's record time (Kafka), if it has one. */
		v.ts_ms = r->ts_ms;
	}
	rc = pipe_bucket(p, v.ts_ms, now_ms, &bucket, &expire_ms);
	if (rc)
		return rc;
	if (lit) {
		rc = field_value_as(p, &fields[sp->value], tmp, &v, MM_VK_STRING);
	} else if (c->value_kind == MM_PART_FIELD) {
		rc = field_value(p, sp->value >= 0 ? &fields[sp->value] : &absent, tmp, &v);
	} else if (c->value_kind == MM_PART_CONST) {
		v.type = MM_VAL_DOUBLE;
		v.d = c->value_const;
		if (v.d == (double)(int64_t)v.d) {
			v.type = MM_VAL_INT;
			v.i = (int64_t)v.d;
		}
	}
	if (rc)
		return rc;
	/* A single key (the usual pipeline) goes straight to its add: the
	 * loops below cost more than the add itself. */
	if (fast || c->nkeys == 1) {
		rc = record_key(p, fields, tmp, 0, &keys[0], &klens[0], mode);
		if (rc == 0)
			rc = pipe_add(p, keys[0], klens[0], s->has_kh ? &s->kh : NULL, bucket,
				      expire_ms, &v,
				      lit || (mode == LOOP_GENERAL && c->key_kind == MM_PART_CONST)
					      ? &p->key_hint[0]
					      : NULL,
				      fast, !lit);
		if (rc)
			return rc;
		goto added;
	}
	/* Every key is read and checked before any is added, so a record that
	 * is rejected for one key adds nothing under the others. */
	for (int k = 0; k < c->nkeys; k++)
		if ((rc = record_key(p, fields, tmp, k, &keys[k], &klens[k], LOOP_GENERAL)) != 0)
			return rc;
	for (int k = 0; k < c->nkeys; k++) {
		rc = pipe_add(p, keys[k], klens[k], NULL, bucket, expire_ms, &v,
			      c->key_kind == MM_PART_CONST ? &p->key_hint[k] : NULL, 0, 1);
		if (rc)
			return rc;
	}
added:
	if (id) {
		rc = pipe_remember(p, id, idlen, &s->idh, now_ms);
		if (rc)
			return rc;
	}
	return 0;
}

/* Processes record i of b, read ahead into s, and counts its outcome. */
static inline __attribute__((always_inline)) void
record_finish(mm_pipeline_t *p, mm_batch_t *b, size_t i, const scan_plan_t *sp, rec_read_t *s,
	      const rec_read_t *ahead, const char *src_id, int mode)
{
	const mm_record_t *r = &b->recs[i];
	int rc;

	/* The progress page named the next record when it was read: it names
	 * this one again while this one is processed. */
	if (i + 1 < b->n)
		mm_progress_resume(src_id, r);
	p->rec = (int)i;
	pipe_begin(p);
	rc = s->rc ? record_read(p, r, sp, s, mode) : 0;
	if (rc == 0)
		rc = process_record(p, r, b->now_ms, sp, s, ahead, mode);
	if (mode != LOOP_GENERAL || !p->replaying)
		p->stats.records++;
	if (rc == 0) {
		p->stats.accepted++;
		p->pending_records++;
	} else if (rc == 1) {
		p->stats.duplicates++;
	} else if (rc == 2) {
		p->pending_records++;
	} else {
		mm_pipeline_reject(p, r, reason_of(rc), rc, mm_diag_msg());
	}
}

/* The record loop's copy for p's configuration (enum loop_mode). */
static int loop_mode(const mm_pipeline_t *p)
{
	const mm_pipeline_config_t *c = &p->cfg;

	if (c->nkeys != 1 || c->time_kind != MM_PART_NONE ||
	    (c->id_kind != MM_PART_NONE && c->id_kind != MM_PART_FIELD) || p->explain ||
	    p->replaying)
		return LOOP_GENERAL;
	if (c->key_kind == MM_PART_CONST && c->value_kind == MM_PART_FIELD &&
	    c->monoid.vt->value_kind == MM_VK_STRING)
		return LOOP_LITERAL;
	if (c->key_kind == MM_PART_FIELD &&
	    (c->value_kind == MM_PART_FIELD || c->value_kind == MM_PART_CONST))
		return LOOP_FIELD;
	return LOOP_GENERAL;
}

/*
 * Record i is read into a slot of the ring rd, then record
 * i - (MM_READ_RING - 1) processed: record_read says why. The loop reads
 * three records ahead, not one, because a record's processing (about
 * 150 ns with an id) is shorter than the misses it should hide: the
 * pending-id slots and the marks' filter word are random accesses into
 * arrays of megabytes, and on this VM each also misses the TLB under nested
 * paging (doc/performance-journal.md, "Dedup ids: records read three ahead").
 * ahead, for the marks' filter, is the record read last. The processed
 * record's slot takes the next one read, so the ring costs a pointer step a
 * record.
 */
static inline __attribute__((always_inline)) void
record_loop(mm_pipeline_t *p, mm_batch_t *b, const scan_plan_t *sp, rec_read_t *rd,
	    const char *src_id, int mode)
{
	rec_read_t *end = rd + MM_READ_RING, *next = end - 1, *cur = rd;

	/* The first records are only read. */
	for (size_t i = 0; i < b->n && i < MM_READ_RING - 1; i++) {
		mm_progress_record(src_id, &b->recs[i]);
		rd[i].rc = record_read(p, &b->recs[i], sp, &rd[i], mode);
	}
	/* Then each record processed frees its slot for the next one read. */
	for (size_t i = MM_READ_RING - 1; i < b->n + MM_READ_RING - 1; i++) {
		if (i < b->n) {
			mm_progress_record(src_id, &b->recs[i]);
			next->rc = record_read(p, &b->recs[i], sp, next, mode);
		}
		record_finish(p, b, i - (MM_READ_RING - 1), sp, cur, i < b->n ? next : NULL,
			      src_id, mode);
		next = cur;
		cur = cur + 1 == end ? rd : cur + 1;
	}
}

/* The LOOP_FIELD copy, a function of its own: inlined beside the other two,
 * it changed how the compiler laid out theirs (recently_interacted's copy
 * took 5 instructions a record more). */
static __attribute__((noinline)) void loop_field(mm_pipeline_t *p, mm_batch_t *b,
						 const scan_plan_t *sp, rec_read_t *rd,
						 const char *src_id)
{
	record_loop(p, b, sp, rd, src_id, LOOP_FIELD);
}

void mm_pipeline_process_batch(mm_pipeline_t *p, mm_batch_t *b)
{
	const mm_pipeline_config_t *c = &p->cfg;
	const char *src_id = b->src ? b->src->id : "";
	mm_store_t *marks = p->asks_marks && !p->replaying ? p->st : NULL;
	scan_plan_t sp;
	rec_read_t rd[MM_READ_RING];

	memset(&sp, 0, sizeof(sp));
	sp.value = sp.time = sp.id = -1;
	sp.key_hash = c->key_kind == MM_PART_FIELD && c->nkeys == 1;
	if (c->key_kind == MM_PART_FIELD)
		for (int k = 0; k < c->nkeys; k++) {
			int slot;

			plan_add(&sp, &slot, c->keys[k]);
		}
	if (c->value_kind == MM_PART_FIELD)
		plan_add(&sp, &sp.value, c->value_field);
	if (c->time_kind == MM_PART_FIELD)
		plan_add(&sp, &sp.time, c->time_field);
	if (c->id_kind == MM_PART_FIELD)
		plan_add(&sp, &sp.id, c->id_field);
	mm_json_plan(&sp.plan, sp.f, sp.n);
	memset(rd, 0, sizeof(rd));
	for (int k = 0; k < MM_READ_RING; k++)
		memcpy(rd[k].f, sp.f, sizeof(sp.f));
	p->batch = b;
	/* The store's marks answer the batch's ids under one hold (store.h),
	 * not a lock per record. */
	if (marks)
		mm_store_marked_hold(marks, 1);
	switch (loop_mode(p)) {
	case LOOP_LITERAL:
		record_loop(p, b, &sp, rd, src_id, LOOP_LITERAL);
		break;
	case LOOP_FIELD:
		loop_field(p, b, &sp, rd, src_id);
		break;
	default:
		record_loop(p, b, &sp, rd, src_id, LOOP_GENERAL);
	}
	pipe_add_finish(p);
	if (marks)
		mm_store_marked_hold(marks, 0);
	p->batch = NULL;
	for (int k = 0; k < MM_READ_RING; k++)
		mm_buf_free(&rd[k].tmp);
}

/* Dead-letters a logged add that its replay could not merge again. */
static void reject_replayed(mm_pipeline_t *p, const char *key, size_t klen, int64_t bucket)
{
	mm_buf_t desc = {0};
	mm_record_t r = {0};
	char why[256];
	int rc;

	/* Copied: writing the dead letter may set the diag slot again. */
	snprintf(why, sizeof(why), "%s", mm_diag_msg());
	rc = mm_buf_printf(&desc, "{\"entity\":");

	rc |= mm_json_quote(key, klen, &desc);
	rc |= mm_buf_printf(&desc, ",\"bucket\":%lld}", (long long)bucket);
	mm_log(MM_LOG_ERROR, p->cfg.name,
	       "an add to '%.*s' could not be replayed after dedup dropped records: %s", (int)klen,
	       key, why);
	if (rc == 0) {
		r.p = (const char *)desc.p;
		r.len = (uint32_t)desc.len;
		r.orig_len = desc.len;
		mm_pipeline_reject(p, &r, MM_REJ_MERGE, MM_ERANGE, why);
	}
	mm_buf_free(&desc);
}

int mm_pipeline_settle_claims(mm_pipeline_t *p, int gen)
{
	mm_oplog_t *l = &p->log[gen];
	mm_agg_t *a = &p->agg[gen];
	size_t counted = 0, fresh = 0;
	int rc;

	for (size_t k = 0; k < l->nclaims; k++) {
		mm_idset_entry_t *e;

		if (l->claims[k].result != MM_CLAIM_DUPLICATE)
			continue;
		counted++;
		e = mm_idset_find(&p->ids[gen], l->claims[k].id, l->claims[k].len,
				  &l->claims[k].hash);
		if (e && e->tag != MM_ID_COUNTED) {
			e->tag = MM_ID_COUNTED;
			fresh++;
		}
	}
	/* A second call (after MM_ENOMEM) moves only what the first did not. */
	p->stats.duplicates += fresh;
	p->stats.accepted -= fresh < p->stats.accepted ? fresh : p->stats.accepted;
	if (counted == 0 && p->base[gen].count == 0)
		return 0;
	/* The table is rebuilt: the adds from before the log, then the logged
	 * adds that stay, in their order. */
	mm_agg_reset(a);
	for (size_t s = 0; s < p->base[gen].count; s++) {
		const mm_agg_entry_t *be = &p->base[gen].entries[s];
		mm_agg_entry_t *e;
		int created;

		e = mm_agg_upsert(a, mm_agg_entry_key(be), be->klen, be->bucket, &created);
		if (e == NULL)
			return MM_ENOMEM;
		e->expire_ms = be->expire_ms;
		/* Empty here, the table takes the base's state as it is. */
		if ((rc = p->cfg.monoid.vt->merge(&p->cfg.monoid, e->state, be->state)) == MM_ENOMEM)
			return rc;
		if (rc)
			reject_replayed(p, mm_agg_entry_key(be), be->klen, be->bucket);
	}
	for (size_t i = 0; i < l->n; i++) {
		const mm_oplog_op_t *op = &l->ops[i];
		const char *key = (const char *)l->data.p + op->key_off;
		mm_agg_entry_t *e;
		mm_value_t v;
		int created;

		if (!mm_oplog_keeps(l, i))
			continue;
		e = mm_agg_upsert(a, key, op->klen, op->bucket, &created);
		if (e == NULL)
			return MM_ENOMEM;
		e->expire_ms = op->expire_ms;
		mm_oplog_value(l, i, &v);
		/* The same adds passed in this order when the records came, but
		 * without some of them a sum may overflow midway. */
		if (p->cfg.monoid.vt->add(&p->cfg.monoid, e->state, &v) != 0)
			reject_replayed(p, key, op->klen, op->bucket);
	}
	return 0;
}

/* ---- FFI for the Lua path ---- */

int mm_pipe_record(mm_pipeline_t *p, int i, const char **data, uint32_t *len, uint32_t *flags,
		   int64_t *ts_ms)
{
	const mm_record_t *r;

	if (p->batch == NULL || i < 0 || (size_t)i >= p->batch->n)
		return mm_diag_set(MM_EINVAL, "record %d is not in the current batch", i);
	r = &p->batch->recs[i];
	*data = r->p;
	*len = r->len;
	*flags = r->flags;
	*ts_ms = r->ts_ms;
	p->rec = i;
	pipe_begin(p);
	if (!p->replaying)
		p->stats.records++;
	mm_progress_record(p->batch->src ? p->batch->src->id : "", r);
	if (r->flags & MM_REC_POISON) {
		mm_pipeline_reject(p, r, MM_REJ_POISON, MM_ECORRUPT,
				   "the record stalled or crashed the worker twice");
		return 1;
	}
	if (r->flags & MM_REC_UNDECODABLE) {
		mm_pipeline_reject(p, r, MM_REJ_JSON, MM_EJSON, MM_REC_UNDECODABLE_MSG);
		return 1;
	}
	if (r->flags & MM_REC_TOOBIG || r->len > p->cfg.max_record) {
		mm_diag_set(MM_ETOOBIG, "record of %llu bytes exceeds max_record %llu",
			    (unsigned long long)r->orig_len, (unsigned long long)p->cfg.max_record);
		mm_pipeline_reject(p, r, MM_REJ_TOOBIG, MM_ETOOBIG, mm_diag_msg());
		return 1;
	}
	/* Dedup on the source's record id needs no Lua: checked here. */
	if (p->cfg.id_kind == MM_PART_SOURCE && (r->flags & MM_REC_ID)) {
		int rc = mm_pipe_seen(p, r->id, r->id_len);

		if (rc == 1)
			p->stats.duplicates++;
		if (rc < 0)
			mm_pipeline_reject(p, r, MM_REJ_TYPE, rc, mm_diag_msg());
		if (rc != 0)
			return 1;
	}
	return 0;
}

int mm_pipe_seen(mm_pipeline_t *p, const char *id, size_t len)
{
	mm_idhash_t h;
	int rc;

	if (!id_usable(p, len))
		return 0;
	mm_id_hash(p->id_seed, id, len, &h);
	rc = pipe_seen(p, id, len, &h, NULL);

	if (rc == 2)
		p->pending_records++;
	return rc;
}

/* mm_pipe_add, with the key's mm_agg_key_hash when kh is not NULL. */
static int pipe_add_lua(mm_pipeline_t *p, int i, const char *key, size_t klen,
			const uint64_t *kh, int64_t ts_ms, int vtype, double num, const char *s,
			size_t slen)
{
	int64_t now = p->batch ? p->batch->now_ms : mm_now_ms();
	int64_t bucket, expire_ms;
	mm_value_t v = {.type = vtype, .d = num, .s = s, .len = slen};
	int rc;

	v.ts_ms = ts_ms == INT64_MIN ? now : ts_ms;
	if (p->batch && i >= 0 && (size_t)i < p->batch->n)
		v.seq = p->batch->recs[i].seq;
	if (vtype == MM_VAL_INT)
		v.i = (int64_t)num;
	rc = pipe_bucket(p, v.ts_ms, now, &bucket, &expire_ms);
	if (rc)
		return rc;
	if (klen == 0 || klen > 1024)
		return mm_diag_set(MM_ERANGE, "key is %zu bytes (must be 1..1024)", klen);
	return pipe_add(p, key, klen, kh, bucket, expire_ms, &v, NULL, 0, 0);
}

int mm_pipe_add(mm_pipeline_t *p, int i, const char *key, size_t klen, int64_t ts_ms, int vtype,
		double num, const char *s, size_t slen)
{
	return pipe_add_lua(p, i, key, klen, NULL, ts_ms, vtype, num, s, slen);
}

int mm_pipe_unstage(mm_pipeline_t *p)
{
	struct mm_pipe_staged *st = &p->staged;
	int rc;

	if (!st->on)
		return 0;
	st->on = 0;
	rc = pipe_add_lua(p, st->rec, st->key, st->klen, &st->kh, st->ts_ms, st->vtype, st->num,
			  st->s, st->slen);
	return rc ? rc : mm_pipe_accept(p, st->rec, NULL, 0);
}

int mm_pipe_stage(mm_pipeline_t *p, int i, const char *key, size_t klen, int64_t ts_ms,
		  int vtype, double num, const char *s, size_t slen)
{
	int64_t now = p->batch ? p->batch->now_ms : mm_now_ms();
	int64_t bucket, expire_ms;
	int rc = mm_pipe_unstage(p);

	p->staged = (struct mm_pipe_staged){1, i, vtype, key, s, klen, slen, ts_ms, num,
					    mm_agg_key_hash(key, klen)};
	/* A time the add will refuse has no slot to fetch. */
	if (pipe_bucket(p, ts_ms == INT64_MIN ? now : ts_ms, now, &bucket, &expire_ms) == 0)
		mm_agg_prefetch_h(&p->agg[p->cur], mm_agg_hash_mix(p->staged.kh, bucket), 1);
	return rc;
}

int mm_pipe_accept(mm_pipeline_t *p, int i, const char *id, size_t len)
{
	p->stats.accepted++;
	p->pending_records++;
	if (id == NULL && p->cfg.id_kind == MM_PART_SOURCE && p->batch && i >= 0 &&
	    (size_t)i < p->batch->n && (p->batch->recs[i].flags & MM_REC_ID)) {
		id = p->batch->recs[i].id;
		len = p->batch->recs[i].id_len;
	}
	/* An unusable id (counted by mm_pipe_seen) is not remembered either. */
	if (id && len >= 1 && len <= MM_ID_MAX) {
		mm_idhash_t h;

		mm_id_hash(p->id_seed, id, len, &h);
		return pipe_remember(p, id, len, &h, p->batch ? p->batch->now_ms : mm_now_ms());
	}
	return 0;
}

void mm_pipe_reject(mm_pipeline_t *p, int i, int reason, int code, const char *detail)
{
	if (p->batch == NULL || i < 0 || (size_t)i >= p->batch->n || reason < 0 ||
	    reason >= MM_REJ__COUNT)
		return;
	mm_pipeline_reject(p, &p->batch->recs[i], reason, code, detail);
}

void mm_pipe_duplicate(mm_pipeline_t *p, int i)
{
	p->stats.duplicates++;
}

const char *mm_pipe_last_error(void)
{
	return mm_diag_msg();
}
