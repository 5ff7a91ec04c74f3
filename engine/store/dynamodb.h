/*
 * dynamodb.h: what the DynamoDB store offers beyond the store interface.
 *
 * The store itself is mm_store_dynamodb_vtable (registered in registry.c,
 * opened by name "dynamodb"); its design, table schema and delivery
 * guarantees are described at the top of dynamodb.c and in doc/dynamodb.md.
 * This header adds:
 *
 *  - The dedup primitives for a store shared by several workers. An event id
 *    is claimed (pending, with an owner and a lease) before its effect is
 *    aggregated, confirmed once the flush that carries the effect is durable
 *    (apply() does this for the flush's marks, after its deltas), and
 *    released when the effect is abandoned. The store's renew (the vtable's)
 *    extends the owner's lease item, one request for all its claims, while a
 *    flush with claims is in progress; mm_ddb_renew extends claims one by
 *    one. A pending claim is taken over only when its own lease and its
 *    owner's have run out (its owner died, or lost the store for a whole
 *    lease). So a record is never skipped as a duplicate unless its effect
 *    is durable (the Go original's loss: it marked ids seen before the
 *    merge, and a failed merge left the record marked and uncounted).
 *  - Per-request statistics.
 *  - Synchronous administration for `murmur ddb` (create the table, claim
 *    from the command line).
 *
 * Threads: loop thread, like every store function, except mm_ddb_admin
 * which runs its own loop on the calling thread.
 */
#ifndef MM_DYNAMODB_H
#define MM_DYNAMODB_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Claims use mm_claim_t and enum mm_claim_result from store.h. */

/*
 * Claims every id of ns for this store's owner, concurrently, with a lease of
 * lease_ms and a mark lifetime of ttl_ms (the dedup window). cb runs once
 * every id has its result; its status is 0, or the first failure when some
 * ids failed (their result holds the code). The array must stay valid until
 * then. Returns MM_EINVAL (not a DynamoDB store, bad arguments), MM_ENOTSUP
 * (read-only) or MM_ENOMEM without calling cb.
 */
int mm_ddb_claim(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		 int64_t lease_ms, int64_t ttl_ms, mm_store_cb cb, void *arg);

/* Confirms our pending claims (CONFIRMED or NOT_OWNER) and keeps each mark
 * for ttl_ms from now. Same conventions. */
int mm_ddb_confirm(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		   int64_t ttl_ms, mm_store_cb cb, void *arg);

/* Deletes our pending claims (RELEASED or NOT_OWNER), so the records can be
 * claimed again at once. Same conventions. */
int mm_ddb_release(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		   mm_store_cb cb, void *arg);

/* Extends the leases of our pending claims, each one, to lease_ms from now
 * (RENEWED or NOT_OWNER): `murmur ddb renew`, and how a renewal of the
 * owner's lease item that found it lapsed learns which claims were lost. */
int mm_ddb_renew(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		 int64_t lease_ms, mm_store_cb cb, void *arg);

/* This store's owner id (option `owner`, else random per open). */
const char *mm_ddb_owner(const mm_store_t *st);

enum mm_ddb_op {
	MM_DDB_OP_GET_ITEM,
	MM_DDB_OP_PUT_ITEM,
	MM_DDB_OP_UPDATE_ITEM,
	MM_DDB_OP_DELETE_ITEM,
	MM_DDB_OP_BATCH_GET_ITEM,
	MM_DDB_OP_OTHER,
	MM_DDB_NOPS
};

typedef struct mm_ddb_stats {
	uint64_t requests[MM_DDB_NOPS];  /* HTTP requests sent, retries included */
	uint64_t ns_total[MM_DDB_NOPS];  /* summed latency */
	uint64_t ns_max[MM_DDB_NOPS];
	mm_histo_t hist[MM_DDB_NOPS];    /* request latency, for /metrics */
	uint64_t retries;          /* requests re-sent after a retriable failure */
	uint64_t throttled;        /* ProvisionedThroughputExceeded, Throttling, RequestLimit */
	uint64_t server_errors;    /* HTTP 5xx */
	uint64_t transport_errors; /* no HTTP answer: refused, reset, timed out */
	uint64_t cas_conflicts;    /* conditional writes that lost a race and re-read */
	uint64_t replays_skipped;  /* deltas found already applied on a retried flush */
	uint64_t unprocessed_keys; /* BatchGetItem keys returned unprocessed */
	uint64_t mark_conflicts;   /* flush marks found claimed by another owner */
	uint64_t lease_lapses;     /* owner lease renewals that found it had run out */
	uint64_t rolled_forward;   /* unfinished flushes of other workers finished here */
	uint64_t applies;          /* completed apply() calls */
	uint64_t apply_ns_p50;     /* apply() latency percentiles (from a histogram) */
	uint64_t apply_ns_p99;
	uint64_t apply_ns_max;
} mm_ddb_stats_t;

/* Copies the statistics; MM_EINVAL if st is not a DynamoDB store. */
int mm_ddb_get_stats(const mm_store_t *st, mm_ddb_stats_t *out);

/*
 * Synchronous administration, for the `murmur ddb` command: opens a store
 * with the options in kv (nkv key/value pairs, 2 * nkv strings), runs `cmd`
 * on a private loop, closes the store, and writes to *out a one-line JSON
 * result, or the error message when it fails (malloc'ed either way; free
 * with mm_ddb_free). Commands and their extra keys (taken out of kv before
 * the store sees them):
 *   "create-table"                       create the table, wait until ACTIVE,
 *                                        enable TTL on `ttl` where supported
 *   "claim" ns= id= [lease=] [ttl=]      one claim, result "won"/"stolen"/
 *                                        "duplicate"/"busy"
 *   "confirm" ns= id= [ttl=]             "confirmed"/"not_owner"
 *   "release" ns= id=                    "released"/"not_owner"
 *   "renew" ns= id= [lease=]             "renewed"/"not_owner"
 *   "get" ns= entity= [bucket=]          the raw item, or {} when absent
 * Returns 0 or a negative MM_E* code. Exported for the Lua FFI (lua/murmur/
 * ddb.lua), so it uses plain C types only.
 */
int mm_ddb_admin(const char *cmd, const char *const *kv, size_t nkv, char **out);
void mm_ddb_free(void *p);

#endif
