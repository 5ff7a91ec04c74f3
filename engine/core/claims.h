/*
 * claims.h: the claim phase of a flush: dedup on every store.
 *
 * A record whose event id is in neither generation's id table waits for its
 * claim in one of two ways. On a store shared by several workers
 * (MM_STORE_CAP_SHARED) its pipeline holds it (held.h) instead of
 * aggregating it; on a store only this worker writes (LMDB, memory), where a
 * claim can only be won or find the id counted, the pipeline aggregates it
 * and logs its adds (oplog.h); where such a store keeps its marks in memory
 * (MM_STORE_CAP_MARKED: LMDB), the pipeline asks them when the record
 * arrives instead, and only records that came while they could not answer
 * yet (not read from the disk) are logged and claimed here. A flush then
 * starts with a claim round over the generation it takes, when it has held
 * records or logged ids:
 *
 *   1. every pipeline's new ids are claimed, one batched store call per
 *      pipeline; ids whose request failed are asked again with backoff (the
 *      flush waits, nothing is dropped);
 *   2. logged generations: when some ids were counted before, the table is
 *      rebuilt from the log without their records (mm_pipeline_settle_claims)
 *      and their marks are left out;
 *   3. held records whose claims were won (or taken over from a worker
 *      that stopped renewing its lease) are processed into the flushing
 *      generation, through the C fast path or one Lua call per batch,
 *      exactly as if they had just arrived; records whose ids were already
 *      counted are skipped as duplicates;
 *   4. held records whose ids another live worker holds (BUSY) are deferred:
 *      they move to the current generation and are claimed again by the next
 *      flush, when that worker has committed (a duplicate) or released them
 *      (ours to count). The round never waits for another worker, so two
 *      workers holding ids the other wants cannot block each other;
 *   5. every won id joins the generation's dedup marks, which apply()
 *      writes with the deltas (on a shared store as a commit record after
 *      them), so an id is confirmed only together with its effect.
 *
 * On a shared store, from its first claim until the engine frees it (the
 * flush is durable), a round renews the leases of its won claims every
 * third of a lease on a loop timer, however long the flush takes (a slow store, an outage and its
 * retries), so a live worker's claims are never taken over. A renewal that
 * finds a claim taken over is counted as lost (its event may be counted
 * twice: the worker was cut off from the store for a whole lease).
 *
 * Ownership: the engine owns the round (one per flush job); the claim arrays
 * belong to the held tables or logs, which the engine resets after the flush.
 * Loop thread only.
 */
#ifndef MM_CLAIMS_H
#define MM_CLAIMS_H

#include "engine.h"

typedef struct mm_claim_round mm_claim_round_t;

/* 1 if some pipeline holds records or logs adds in the generation a flush
 * would take. */
int mm_claim_round_needed(const mm_engine_t *ctx);

/* Starts the round over every pipeline's flushing generation (!cur); done
 * runs once every claim was settled: logs replayed where ids were
 * counted, held records processed, skipped or deferred. MM_ENOMEM without
 * calling done. */
int mm_claim_round_start(mm_engine_t *ctx, void (*done)(void *arg), void *arg,
			 mm_claim_round_t **out);

/* Records the round deferred to the next flush (ids busy at another worker). */
size_t mm_claim_round_deferred(const mm_claim_round_t *r);

/* Frees the round (its timer closes on the loop). No callback runs after. */
void mm_claim_round_free(mm_claim_round_t *r);

#endif
