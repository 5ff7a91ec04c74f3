/*
 * explain.h: dry runs of records through a pipeline, for `murmur check`.
 *
 * An explainer is a pipeline with no engine, no store and no dead-letter
 * destination. Each record is run through the same code `murmur run` uses
 * (mm_pipeline_process_batch on the C path; lua/murmur/runtime.lua and the
 * mm_pipe_* functions on the Lua path), while the pipeline notes in an
 * mm_explain_t what that code extracted: the keys, the value the monoid is
 * given, the event time, the bucket, the dedup id, or the reason, code and
 * message of the dead letter `run` would write. So `check` cannot disagree
 * with `run`: there is no second implementation of the extraction.
 *
 * Differences from `run`, by construction: nothing is written (no dead
 * letters, no store); dedup ids are checked only against the records this
 * explainer has seen, not against a store; deltas accumulate in the
 * explainer's own aggregation table (never flushed), as they would between
 * two flushes of `run`.
 *
 * Loop thread only (like pipelines); not thread-safe.
 */
#ifndef MM_EXPLAIN_H
#define MM_EXPLAIN_H

#include <stddef.h>
#include <stdint.h>

#include "../lib/buf.h"
#include "pipeline.h"

enum mm_explain_outcome {
	MM_EXPLAIN_NONE = 0,  /* nothing happened (a record held for a claim; not in dry runs) */
	MM_EXPLAIN_ACCEPTED,  /* aggregated */
	MM_EXPLAIN_DUPLICATE, /* skipped by dedup */
	MM_EXPLAIN_REJECTED,  /* would be dead-lettered */
};

/* What one record produced. Strings are (offset, length) pairs into buf, so
 * they stay valid while buf grows; mm_explain_str() resolves them. */
typedef struct mm_explain {
	int outcome;                /* enum mm_explain_outcome */
	/* Rejected: enum mm_reject_reason, the MM_E* code, the message. */
	int reason;
	int code;
	size_t detail_off, detail_len;
	/* Accepted (and for rejections, whatever was extracted before the
	 * failure): the keys in order, the value as given to the monoid's add()
	 * (type enum mm_value_type; a string value is at value_off), the event
	 * time and its bucket (0 = all-time). */
	int nkeys;
	size_t key_off[MM_MAX_KEYS], key_len[MM_MAX_KEYS];
	mm_value_t value;
	size_t value_off;
	int have_time;              /* ts_ms and bucket are set */
	int64_t ts_ms;
	int64_t bucket;
	/* The dedup id checked for this record, if any. */
	int have_id;
	size_t id_off, id_len;
	mm_buf_t buf;
} mm_explain_t;

typedef struct mm_explainer mm_explainer_t;

/* Creates an explainer from a pipeline definition and takes ownership of
 * cfg's strings (cfg is zeroed). cfg->dlq must be NULL: a dry run writes no
 * dead letters. Returns 0 or MM_EINVAL/MM_ENOMEM (cfg is then freed). */
int mm_explainer_open(mm_pipeline_config_t *cfg, mm_explainer_t **out);

/* Frees the explainer and its pipeline. NULL is ignored. */
void mm_explainer_close(mm_explainer_t *ex);

/* The explainer's pipeline, for the Lua path's mm_pipe_* calls. */
mm_pipeline_t *mm_explainer_pipeline(mm_explainer_t *ex);

/* Starts explaining one record (copied): it becomes record 0 of the
 * pipeline's current batch, processed at now_ms (retention is evaluated
 * against it). On the Lua path the caller then runs the batch handler of
 * lua/murmur/runtime.lua on the pipeline with n = 1, and calls
 * mm_explainer_end. Returns 0 or MM_ENOMEM. */
int mm_explainer_begin(mm_explainer_t *ex, const char *rec, size_t len, int64_t now_ms);

/* Ends the record started by mm_explainer_begin and returns what it
 * produced (owned by the explainer, valid until the next begin). */
const mm_explain_t *mm_explainer_end(mm_explainer_t *ex);

/* The C path in one call: begin, mm_pipeline_process_batch, end. Returns 0
 * and sets *out, or MM_EINVAL when the pipeline is on the Lua path, or
 * MM_ENOMEM. */
int mm_explainer_record(mm_explainer_t *ex, const char *rec, size_t len, int64_t now_ms,
			const mm_explain_t **out);

/* Resolves an (offset, length) string of x. */
static inline const char *mm_explain_str(const mm_explain_t *x, size_t off)
{
	return (const char *)x->buf.p + off;
}

/* Hooks called by pipeline.c while p->explain is set (never otherwise). */
void mm_explain_note_key(mm_explain_t *x, const char *key, size_t len, int64_t bucket,
			 const mm_value_t *v);
void mm_explain_note_id(mm_explain_t *x, const char *id, size_t len);
void mm_explain_note_reject(mm_explain_t *x, int reason, int code, const char *detail);

#endif
