/*
 * explain.c: dry runs of records through a pipeline (see explain.h).
 *
 * The explainer never extracts anything itself: it hands the record to the
 * pipeline code `run` uses, with p->explain pointing at an mm_explain_t that
 * pipeline.c's hooks fill (pipe_add notes each key with the bucket and
 * value, pipe_seen the dedup id, mm_pipeline_reject the dead letter). The
 * outcome comes from the pipeline's own counters: the record was accepted,
 * a duplicate or rejected exactly when run would count it so.
 */
#include "explain.h"

#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"

struct mm_explainer {
	mm_pipeline_t p;
	mm_batch_t batch;
	mm_record_t rec;
	mm_buf_t bytes;             /* the record being explained (copied) */
	mm_pipeline_stats_t before; /* counters when the record began */
	mm_explain_t x;
};

int mm_explainer_open(mm_pipeline_config_t *cfg, mm_explainer_t **out)
{
	mm_explainer_t *ex;

	if (cfg->dlq != NULL) {
		mm_pipeline_config_free(cfg);
		return mm_diag_set(MM_EINVAL, "a dry run writes no dead letters: no destination expected");
	}
	ex = calloc(1, sizeof(*ex));
	if (ex == NULL) {
		mm_pipeline_config_free(cfg);
		return MM_ENOMEM;
	}
	/* No engine: pipe_seen then asks no store (pipeline.c). */
	mm_pipeline_init(&ex->p, NULL, cfg);
	ex->p.explain = &ex->x;
	ex->batch.recs = &ex->rec;
	*out = ex;
	return 0;
}

void mm_explainer_close(mm_explainer_t *ex)
{
	if (ex == NULL)
		return;
	mm_pipeline_free(&ex->p);
	mm_buf_free(&ex->bytes);
	mm_buf_free(&ex->x.buf);
	free(ex);
}

mm_pipeline_t *mm_explainer_pipeline(mm_explainer_t *ex)
{
	return &ex->p;
}

int mm_explainer_begin(mm_explainer_t *ex, const char *rec, size_t len, int64_t now_ms)
{
	mm_buf_t keep = ex->x.buf;

	if (len > UINT32_MAX)
		return mm_diag_set(MM_ETOOBIG, "record of %zu bytes is over 4 GiB", len);
	ex->bytes.len = 0;
	if (mm_buf_append(&ex->bytes, rec, len) != 0)
		return MM_ENOMEM;
	keep.len = 0;
	memset(&ex->x, 0, sizeof(ex->x));
	ex->x.buf = keep;
	memset(&ex->rec, 0, sizeof(ex->rec));
	/* A zero-length buffer has no bytes yet; the scanner still needs a pointer. */
	ex->rec.p = ex->bytes.p ? (const char *)ex->bytes.p : "";
	ex->rec.len = (uint32_t)len;
	ex->rec.orig_len = len;
	ex->batch.n = 1;
	ex->batch.now_ms = now_ms;
	ex->before = ex->p.stats;
	ex->p.batch = &ex->batch;
	ex->p.rec = 0;
	return 0;
}

const mm_explain_t *mm_explainer_end(mm_explainer_t *ex)
{
	const mm_pipeline_stats_t *a = &ex->before, *b = &ex->p.stats;
	uint64_t rejected = 0;

	for (int r = 0; r < MM_REJ__COUNT; r++)
		rejected += b->rejected[r] - a->rejected[r];
	ex->p.batch = NULL;
	if (rejected)
		ex->x.outcome = MM_EXPLAIN_REJECTED;
	else if (b->duplicates != a->duplicates)
		ex->x.outcome = MM_EXPLAIN_DUPLICATE;
	else if (b->accepted != a->accepted)
		ex->x.outcome = MM_EXPLAIN_ACCEPTED;
	else
		ex->x.outcome = MM_EXPLAIN_NONE;
	return &ex->x;
}

int mm_explainer_record(mm_explainer_t *ex, const char *rec, size_t len, int64_t now_ms,
			const mm_explain_t **out)
{
	int rc;

	if (ex->p.uses_lua)
		return mm_diag_set(MM_EINVAL, "pipeline '%s' is on the Lua path", ex->p.cfg.name);
	rc = mm_explainer_begin(ex, rec, len, now_ms);
	if (rc)
		return rc;
	mm_pipeline_process_batch(&ex->p, &ex->batch);
	*out = mm_explainer_end(ex);
	return 0;
}

/* ---- hooks (pipeline.c) ---- */

/* Appends s to x->buf and returns its offset; on ENOMEM the string reads as
 * empty (an explanation missing a detail is better than none). */
static size_t put_str(mm_explain_t *x, const char *s, size_t len, size_t *out_len)
{
	size_t off = x->buf.len;

	*out_len = 0;
	if (len && mm_buf_append(&x->buf, s, len) == 0)
		*out_len = len;
	return off;
}

void mm_explain_note_key(mm_explain_t *x, const char *key, size_t len, int64_t bucket,
			 const mm_value_t *v)
{
	if (x->nkeys < MM_MAX_KEYS) {
		x->key_off[x->nkeys] = put_str(x, key, len, &x->key_len[x->nkeys]);
		x->nkeys++;
	}
	if (x->have_time)
		return;
	/* Every key of a record gets the same value, time and bucket. */
	x->have_time = 1;
	x->ts_ms = v->ts_ms;
	x->bucket = bucket;
	x->value = *v;
	x->value.s = NULL;
	if (v->type == MM_VAL_STRING)
		x->value_off = put_str(x, v->s, v->len, &x->value.len);
}

void mm_explain_note_id(mm_explain_t *x, const char *id, size_t len)
{
	x->have_id = 1;
	x->id_off = put_str(x, id, len, &x->id_len);
}

void mm_explain_note_reject(mm_explain_t *x, int reason, int code, const char *detail)
{
	x->reason = reason;
	x->code = code;
	x->detail_off = put_str(x, detail ? detail : "", detail ? strlen(detail) : 0, &x->detail_len);
}
