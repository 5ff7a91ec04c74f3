/*
 * held.h: records held back until their dedup ids are claimed.
 *
 * On a store shared by several workers (MM_STORE_CAP_SHARED), a record
 * that carries an event id is not aggregated when it arrives, because
 * another worker may be counting the same event at this moment. Its bytes
 * are copied here and its id joins the generation's claim list; the flush
 * that takes the generation claims every id in one batched call and then
 * processes the records whose claims it won (claims.c). One mm_held_t per
 * pipeline and flush generation, like the aggregation tables.
 *
 * Ownership: the table owns its copies; mm_held_reset forgets them and keeps
 * the memory. The claim array's id pointers point into the table's bytes and
 * are valid from mm_held_claims until the next add or reset. Loop thread.
 */
#ifndef MM_HELD_H
#define MM_HELD_H

#include <stddef.h>
#include <stdint.h>

#include "../lib/buf.h"
#include "../source/source.h"
#include "../store/store.h"
#include "agg.h"

typedef struct mm_held_rec {
	mm_source_t *src;       /* borrowed: a source closes only after the flush
	                         * that covers its records */
	size_t off;             /* record bytes, in data */
	size_t src_id_off;      /* the source's own record id (MM_REC_ID), in data */
	size_t claim;           /* index of the record's id in claims */
	uint32_t len, src_id_len, flags;
	uint64_t orig_len, offset;
	int64_t ts_ms, now_ms;
	uint64_t seq;           /* arrival stamp, kept so a replay has it */
} mm_held_rec_t;

typedef struct mm_held {
	mm_buf_t data;          /* record bytes and ids, back to back */
	mm_held_rec_t *recs;
	size_t n, cap;
	mm_claim_t *claims;     /* one per distinct id, in arrival order */
	size_t *id_off;         /* claims[i]'s id, in data */
	size_t nclaims, ccap, icap;
	mm_agg_t ids;           /* distinct ids (key set) */
} mm_held_t;

/* Copies record r (delivered at now_ms by src) with its dedup id. An id
 * already held is the caller's duplicate: check with mm_held_has first. */
int mm_held_add(mm_held_t *h, mm_source_t *src, const mm_record_t *r, int64_t now_ms,
		const char *id, size_t idlen);

/* 1 if id is held in h. Inline: the pipeline asks it of every id, and h is
 * empty but on a shared store. */
static inline int mm_held_has(const mm_held_t *h, const char *id, size_t idlen)
{
	return h->n > 0 && mm_agg_find(&h->ids, id, idlen, 0) != NULL;
}

/* The claim list, its id pointers set; *n gets its length. */
mm_claim_t *mm_held_claims(mm_held_t *h, size_t *n);

/* Rebuilds held record i as the source delivered it (borrowing h's bytes). */
void mm_held_record(const mm_held_t *h, size_t i, mm_record_t *out);

void mm_held_reset(mm_held_t *h);
void mm_held_free(mm_held_t *h);

#endif
