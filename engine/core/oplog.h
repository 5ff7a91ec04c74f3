/*
 * oplog.h: the adds of a generation whose dedup ids are not settled yet.
 *
 * On a store that only this worker writes (LMDB, memory), a record that
 * carries an event id is aggregated when it arrives, as if its id were new,
 * and every add the pipeline makes in that generation is also logged here,
 * tagged with the claim of the record that made it (or with no claim: a
 * record without a usable id). The flush that takes the generation claims
 * all its ids in one store call off the loop thread (claims.c). When every
 * claim is won, which is the normal case, the table is already right and
 * the log is just dropped. When some ids turn out to have been counted
 * before (a restart reading input again, a producer resending after the
 * previous generations), the flush rebuilds the table from the log,
 * leaving out the adds of those records: the monoids have no inverse, so
 * this replay is the only way to take an add back.
 *
 * Where the store keeps its marks in memory (MM_STORE_CAP_MARKED), the
 * pipeline asks them when a record arrives and logs nothing, except while
 * they cannot answer yet (the first generation after open, whose claims
 * read them): then the record takes this log. A record settled at once in
 * a logged generation logs its adds untagged (they stay).
 *
 * Logging starts with a generation's first new id, so a pipeline whose
 * events carry no ids pays nothing. The adds the generation holds at that
 * moment move aside as they are (the pipeline's base table, a swap of two
 * tables) and are folded back, under the log's replay, at the flush.
 *
 * The log holds copies (key and string bytes back to back in data), so the
 * records' memory may go once they are processed. Per op: the record's
 * claim, key, bucket, expiry and value, 80 bytes plus the strings.
 *
 * Ownership: one log per pipeline and generation, beside the aggregation
 * tables; mm_oplog_reset forgets the ops and keeps the memory. The claim
 * array's ids are borrowed from the pipeline's id table of the same
 * generation, which lives as long. Loop thread only.
 */
#ifndef MM_OPLOG_H
#define MM_OPLOG_H

#include <stddef.h>
#include <stdint.h>

#include "../lib/buf.h"
#include "../monoid/monoid.h"
#include "../store/store.h"

/* An op of a record with no claim: it stays whatever the claims answer. */
#define MM_OPLOG_NO_CLAIM UINT32_MAX

typedef struct mm_oplog_op {
	uint32_t claim;         /* index in claims, or MM_OPLOG_NO_CLAIM */
	uint32_t klen;
	uint64_t key_off;       /* key bytes, in data */
	int64_t bucket, expire_ms;
	int32_t vtype;          /* the mm_value_t, with its string in data */
	uint32_t slen;
	uint64_t s_off;
	int64_t i;
	double d;
	int64_t ts_ms;
	uint64_t seq;
} mm_oplog_op_t;

typedef struct mm_oplog {
	mm_buf_t data;
	mm_oplog_op_t *ops;
	size_t n, cap;
	mm_claim_t *claims;     /* one per record with a claimed id, in arrival order */
	size_t nclaims, ccap;
	size_t open;            /* ops[open..n) belong to the record in progress */
	int on;                 /* logging since the generation's first new id */
} mm_oplog_t;

/* Logs one add of the record in progress; tagged with the claim that
 * mm_oplog_claim will give it when claiming is set, else untagged. */
int mm_oplog_add(mm_oplog_t *l, int claiming, const char *key, size_t klen, int64_t bucket,
		 int64_t expire_ms, const mm_value_t *v);

/* The record in progress was accepted with id (borrowed, see above) and
 * its mm_id_hash h (carried to the store with the claim): its ops become
 * that claim's. */
int mm_oplog_claim(mm_oplog_t *l, const char *id, size_t len, const mm_idhash_t *h);

/* A new record starts. The ops of a record that was tagged but never
 * claimed (rejected after some of its adds, which stay aggregated) keep
 * applying: they lose their tag. */
static inline void mm_oplog_begin(mm_oplog_t *l)
{
	for (size_t i = l->open; i < l->n; i++)
		if (l->ops[i].claim == l->nclaims)
			l->ops[i].claim = MM_OPLOG_NO_CLAIM;
	l->open = l->n;
}

/* 1 if the add of op i must stay: it has no claim or its claim was won. */
int mm_oplog_keeps(const mm_oplog_t *l, size_t i);

/* Rebuilds op i's value (its string borrowed from l). */
void mm_oplog_value(const mm_oplog_t *l, size_t i, mm_value_t *out);

/* Forgets the ops and claims, and stops logging. */
void mm_oplog_reset(mm_oplog_t *l);
void mm_oplog_free(mm_oplog_t *l);

#endif
