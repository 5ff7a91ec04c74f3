/*
 * claims.h: the claim phase of a flush on a store shared by several workers.
 *
 * When the store takes dedup claims (store->claims), pipelines hold records
 * that carry an event id (held.h) instead of aggregating them. A flush then
 * starts with a claim round over the generation it takes:
 *
 *   1. every pipeline's held ids are claimed, one batched store call per
 *      pipeline (ids the store answers BUSY, held by a worker whose lease
 *      is live, are asked again when that lease ends; ids whose request
 *      failed are asked again with backoff: the flush waits, nothing is
 *      dropped);
 *   2. the held records whose claims were won (or taken over from a dead
 *      worker) are processed into the flushing generation, through the C
 *      fast path or one Lua call per batch, exactly as if they had just
 *      arrived; records whose ids were already counted are skipped as
 *      duplicates;
 *   3. every won id joins the generation's dedup marks, which apply()
 *      writes as confirmed after the deltas, so an id is confirmed only
 *      together with its effect.
 *
 * While a flush is retried (a store outage), mm_claim_round_renew extends
 * the leases so that no other worker takes the records over meanwhile.
 *
 * Ownership: the engine owns the round (one per flush job); the claim arrays
 * belong to the held tables, which the engine resets after the flush.
 * Loop thread only.
 */
#ifndef MM_CLAIMS_H
#define MM_CLAIMS_H

#include "engine.h"

typedef struct mm_claim_round mm_claim_round_t;

/* 1 if some pipeline holds records in the generation a flush would take. */
int mm_claim_round_needed(const mm_engine_t *ctx);

/* Starts the round over every pipeline's flushing generation (!cur); done
 * runs once every held record was processed or skipped. MM_ENOMEM without
 * calling done. */
int mm_claim_round_start(mm_engine_t *ctx, void (*done)(void *arg), void *arg,
			 mm_claim_round_t **out);

/* Extends the leases of the round's won claims if a third of the lease has
 * passed since they were taken (or last renewed). */
void mm_claim_round_renew(mm_claim_round_t *r);

/* Frees the round (its timer closes on the loop). No callback runs after. */
void mm_claim_round_free(mm_claim_round_t *r);

#endif
