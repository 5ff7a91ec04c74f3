/*
 * pipeline.h: one pipeline's runtime: how a record becomes keys, a value and
 * a bucket, the pending deltas, dedup ids, counters and dead letters.
 *
 * The declarative parts of a pipeline (key/value/time/id given as field names
 * or constants) run entirely in C: mm_pipeline_process_batch scans each JSON
 * record once for all the fields it needs and updates the aggregation table,
 * with no Lua call. When any part is a Lua function the pipeline is on the
 * Lua path: the engine calls Lua once per batch and the Lua side feeds the
 * results back through the FFI functions below (mm_pipe_*), which are the
 * only functions Lua calls per record.
 *
 * Ownership: the engine owns pipelines; a pipeline owns its config strings,
 * tables and dead-letter file. Loop thread only.
 */
#ifndef MM_PIPELINE_H
#define MM_PIPELINE_H

#include <stdint.h>

#include "../deadletter/deadletter.h"
#include "../source/source.h"
#include "../store/store.h"
#include "agg.h"
#include "held.h"
#include "idset.h"
#include "oplog.h"

enum mm_part_kind {
	MM_PART_NONE = 0, /* value: none (count); time: processing time; id: no dedup */
	MM_PART_FIELD,    /* a top-level JSON member named by the script */
	MM_PART_CONST,    /* key: a literal key; value: a literal number */
	MM_PART_LUA,      /* computed by a Lua function */
	MM_PART_SOURCE,   /* time: the source's record timestamp (Kafka) */
};

#define MM_MAX_KEYS 16

/* Counters, reported by `murmur status` and the logs. Rejections by reason. */
enum mm_reject_reason {
	MM_REJ_JSON,      /* malformed JSON */
	MM_REJ_UTF8,      /* invalid UTF-8 */
	MM_REJ_NOTOBJ,    /* valid JSON, not an object */
	MM_REJ_MISSING,   /* key/value/time field missing */
	MM_REJ_TYPE,      /* field of the wrong type, or a value the monoid refuses */
	MM_REJ_TOOBIG,    /* over max_record */
	MM_REJ_RANGE,     /* event time unusable or older than retention */
	MM_REJ_LUA,       /* a user function raised an error */
	MM_REJ_POISON,    /* the record stalled or crashed the worker twice */
	MM_REJ_MERGE,     /* a flushed delta the store could not merge (overflow) */
	MM_REJ_MEMORY,    /* a user function took the Lua heap past --lua-memory */
	MM_REJ__COUNT
};

typedef struct mm_pipeline_stats {
	uint64_t records;     /* records seen */
	uint64_t accepted;    /* records whose deltas were aggregated */
	uint64_t duplicates;  /* records skipped by dedup */
	uint64_t dedup_skipped; /* records counted without dedup: id empty or over 1024 bytes */
	uint64_t held;        /* records held until their ids were claimed (shared store) */
	uint64_t claims;      /* ids claimed (claim calls' ids, re-asks included) */
	uint64_t claim_duplicates; /* claims answered "already counted" */
	uint64_t claim_busy;  /* claims answered "another live worker holds it" */
	uint64_t claim_deferred; /* records of busy ids moved to the next flush, to ask again */
	uint64_t claim_stolen; /* claims taken over from a worker that stopped renewing */
	uint64_t claim_renewals; /* leases of won claims extended while their flush ran */
	uint64_t claim_lost;  /* won claims found taken over at renewal (may count twice) */
	uint64_t rejected[MM_REJ__COUNT];
	uint64_t deltas_flushed;
	uint64_t dead_letters;
	uint64_t dead_letter_errors;
} mm_pipeline_stats_t;

typedef struct mm_pipeline_config {
	char *name;                 /* owned */
	mm_monoid_t monoid;
	int key_kind;               /* FIELD, CONST or LUA */
	char *keys[MM_MAX_KEYS];    /* field names (FIELD) or literal keys (CONST); owned */
	int nkeys;
	int value_kind;             /* NONE, FIELD, CONST or LUA */
	char *value_field;
	double value_const;
	int time_kind;              /* NONE, FIELD, LUA or SOURCE */
	char *time_field;
	char time_unit;             /* 'a' auto, 's', 'm' (ms) */
	int64_t gran_ms;            /* 0 = all-time only */
	int64_t retention_ms;       /* 0 = forever */
	int id_kind;                /* NONE, FIELD or LUA */
	char *id_field;
	int64_t dedup_ttl_ms;
	uint64_t max_record;        /* bytes */
	uint64_t flush_events;      /* flush after this many accepted records */
	uint64_t flush_keys;        /* ... or this many pending deltas */
	int64_t flush_interval_ms;  /* ... or this age */
	mm_dead_letter_t *dlq;      /* where rejected records go; owned, may be NULL */
	int on_merge;               /* the script declared an on-merge hook */
	char *compat;               /* what must match existing state (monoid + window) */
	char *meta;                 /* descriptor saved in the store for queries */
	char *where;                /* file:line of the definition, for messages; may be NULL */
} mm_pipeline_config_t;

/* Where a literal key's entry was last found: reused while the table is the
 * same generation and the bucket matches, so a constant key (e.g. "global")
 * is not hashed and probed for every event. */
typedef struct mm_key_hint {
	const mm_agg_t *a;
	uint64_t gen;
	mm_agg_entry_t *e;
} mm_key_hint_t;

/* The last event time range mapped to a bucket: [lo_ms, hi_ms) is that
 * bucket's span, valid for the processing time now_ms it was checked at
 * (retention depends on it). Processing time is one value per batch, and
 * event times cluster, so most events reuse it. */
typedef struct mm_bucket_memo {
	int valid;
	int64_t now_ms, lo_ms, hi_ms, bucket, expire_ms;
} mm_bucket_memo_t;

typedef struct mm_pipeline {
	mm_store_t *st;             /* where dedup asks (not owned); NULL for a dry run */
	mm_pipeline_config_t cfg;
	mm_ns_t ns;
	int index;                  /* position in the engine's list */
	int uses_lua;
	mm_agg_t agg[2];            /* pending deltas: [cur] fills, [!cur] is flushing */
	mm_idset_t ids[2];          /* pending dedup ids, same generations (idset.h) */
	uint64_t id_seed;           /* mm_id_hash_seed of the namespace */
	mm_held_t held[2];          /* records waiting for their claims (a shared store) */
	mm_oplog_t log[2];          /* adds waiting for their claims (a private store) */
	mm_agg_t base[2];           /* a generation's adds from before its log began */
	int logs;                   /* dedup on a private store: adds go to log too */
	int asks_marks;             /* and its marks answer a claim at once
	                             * (MM_STORE_CAP_MARKED): a log only while
	                             * they cannot */
	int claiming;               /* the record in progress has a new id to claim */
	int replaying;              /* processing held records whose claims were won */
	int rec;                    /* index of the record being processed in batch */
	int cur;
	uint64_t pending_records;   /* accepted since the last flush began */
	mm_pipeline_stats_t stats;
	int64_t next_purge_ms;
	size_t const_klen[MM_MAX_KEYS]; /* lengths of literal keys (key_kind CONST) */
	mm_key_hint_t key_hint[MM_MAX_KEYS];
	mm_bucket_memo_t bucket_memo;
	/* The last record's add, left half done by the monoid (add_start in
	 * monoid.h: an HLL's register store, whose cache miss the next record's
	 * scan and lookup then cover): finished before the next add and at the
	 * end of the batch. later_a is its table and later_e its entry's
	 * number, which stays while the table grows and moves its entries. */
	mm_add_later_t later;
	mm_agg_t *later_a;
	size_t later_e;
	/* The Lua path's add that waits for the next record's user functions
	 * (mm_pipe_stage): its record, key and value (Lua strings the handler
	 * keeps alive until then) and the key's hash. */
	struct mm_pipe_staged {
		int on, rec, vtype;
		const char *key, *s;
		size_t klen, slen;
		int64_t ts_ms;
		double num;
		uint64_t kh;
	} staged;
	/* The batch being processed (valid during process_batch / the Lua call). */
	mm_batch_t *batch;
	mm_buf_t scratch;
	/* Set only by a dry run (explain.h): records what each record produced.
	 * Such a pipeline has no store (st == NULL). */
	struct mm_explain *explain;
	/* The JSON Lines form of the last dead letters written to a destination
	 * other than a file (a Kafka topic, which this process cannot read
	 * back), for the admin page's tail: at most MM_PIPELINE_DL_RECENT bytes
	 * of whole lines, the oldest dropped first. */
	mm_buf_t dl_recent;
} mm_pipeline_t;

#define MM_PIPELINE_DL_RECENT 65536

/* Takes ownership of cfg's strings. st is the store dedup asks, or NULL. */
int mm_pipeline_init(mm_pipeline_t *p, mm_store_t *st, mm_pipeline_config_t *cfg);
void mm_pipeline_free(mm_pipeline_t *p);
void mm_pipeline_config_free(mm_pipeline_config_t *cfg);

/* The C fast path over a whole batch (pipelines with uses_lua == 0). While
 * p->replaying, the batch holds records whose claims were won: they are
 * processed without a dedup check and without being counted again. */
void mm_pipeline_process_batch(mm_pipeline_t *p, mm_batch_t *b);

/* A dedup id found counted before by its claim: no mark is written for it
 * (mm_idset_entry_t.tag in the pending ids). */
#define MM_ID_COUNTED 1

/* Finds or adds id in the pending ids of generation gen, a new entry with
 * expiry expire_ms (an old one keeps its own). Those sets are keyed by the
 * id's mm_id_hash in the pipeline's namespace, which each entry keeps
 * (mm_idset_entry_t.hash) for the flush's claim and mark: an id is hashed
 * once on its way to the store. NULL on allocation failure (diag set). */
mm_idset_entry_t *mm_pipeline_id_upsert(mm_pipeline_t *p, int gen, const char *id, size_t len,
					int64_t expire_ms, int *created);

/* After the claims of generation gen's logged ids (p->logs) have answered:
 * the ids counted before become duplicates (their marks dropped, counters
 * moved) and the table is rebuilt without their adds, with the adds from
 * before the log began folded back in (oplog.h). 0, or MM_ENOMEM with the
 * table partly rebuilt: call again, the log and base stay until the flush
 * is durable. */
int mm_pipeline_settle_claims(mm_pipeline_t *p, int gen);

/* Writes one dead-letter line for record i of the current batch and counts it. */
void mm_pipeline_reject(mm_pipeline_t *p, const mm_record_t *r, int reason, int code,
			const char *detail);

/* Dead-letters a flushed delta the store rejected (MM_DELTA_REJECTED): the
 * record is a JSON description of the key and the delta. */
void mm_pipeline_reject_delta(mm_pipeline_t *p, const mm_delta_t *d, const char *detail);

/* Makes the dead letters written so far durable (before a flush commits). */
int mm_pipeline_sync_dead_letters(mm_pipeline_t *p);

/* Names of reject reasons ("json", "utf8", ...), for counters. */
const char *mm_reject_reason_name(int reason);

/*
 * FFI, for the Lua path (called by lua/murmur/runtime.lua per record; never
 * touch lua_State). All return 0 or a negative MM_E* code; on error the diag
 * slot holds the detail and nothing was changed.
 */

/* Record i's bytes, flags and source time. Returns 0, or 1 when the record
 * was already rejected here (too big, or poison) and must be skipped. */
int mm_pipe_record(mm_pipeline_t *p, int i, const char **data, uint32_t *len, uint32_t *flags,
		   int64_t *ts_ms);

/* Dedup check for id: 1 = already seen (skip the record), 0 = new (not in
 * the pending generations nor, where the store answers at once, in its
 * marks; else the flush's claim settles it, see oplog.h), 2 =
 * held until its id is claimed (a shared store: skip it now, the flush
 * processes it again). */
int mm_pipe_seen(mm_pipeline_t *p, const char *id, size_t len);

/* Adds one (key, value) of record i. vtype is enum mm_value_type; ts_ms ==
 * INT64_MIN means processing time. Returns MM_ERANGE for a time outside the window or
 * retention, MM_ETYPE/MM_ERANGE when the monoid refuses the value. */
int mm_pipe_add(mm_pipeline_t *p, int i, const char *key, size_t klen, int64_t ts_ms, int vtype,
		double num, const char *s, size_t slen);

/* The Lua path's add of a one-key record without a dedup id, one record
 * late (runtime.lua): adds and accepts the record staged before, if any,
 * then stages record i's (key, value), whose aggregation slot the cache is
 * told about meanwhile. key and s must stay valid until the next
 * mm_pipe_stage or mm_pipe_unstage. Returns 0, or the staged record's add
 * error as mm_pipe_add's (that record is then neither added nor accepted:
 * the caller rejects it). */
int mm_pipe_stage(mm_pipeline_t *p, int i, const char *key, size_t klen, int64_t ts_ms,
		  int vtype, double num, const char *s, size_t slen);

/* Adds and accepts the staged record, if any: 0 or its add's error, as
 * mm_pipe_stage. */
int mm_pipe_unstage(mm_pipeline_t *p);

/* Record i is done: counts it accepted and remembers its dedup id (if any). */
int mm_pipe_accept(mm_pipeline_t *p, int i, const char *id, size_t len);

/* Record i is rejected: reason is enum mm_reject_reason, code an MM_E* code. */
void mm_pipe_reject(mm_pipeline_t *p, int i, int reason, int code, const char *detail);

/* Counts record i as a duplicate. */
void mm_pipe_duplicate(mm_pipeline_t *p, int i);

/* The detail of the last error on the loop thread (for Lua messages). */
const char *mm_pipe_last_error(void);

#endif
