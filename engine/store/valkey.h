/*
 * valkey.h: the Valkey cache layer, beyond the store vtable.
 *
 * mm_store_valkey_vtable (backend name "valkey") is a store that wraps
 * another one, the backing store, which stays the only source of truth: the
 * wrapper writes through to it and keeps a Valkey (or Redis >= 7) server as a
 * read cache and sketch accelerator that is never trusted and can always be
 * rebuilt. Its design, key layout and consistency protocol are described
 * atop valkey.c and in doc/valkey.md. Through mm_store_* it behaves exactly
 * like its backing store, plus the capabilities MM_STORE_CAP_CACHE (the
 * cache_* counters through mm_store_op_stats) and MM_STORE_CAP_COUNT_HLL (a
 * multi-bucket cardinality answered by one PFCOUNT through
 * mm_store_count_hll, when the cache holds every bucket; a bucket the store
 * lacks is cached as an empty sketch). The functions below add what the
 * vtable cannot express: the cache's detailed counters and rebuilding
 * entries. With option dedup = valkey the store is shared
 * (MM_STORE_CAP_SHARED): dedup ids are claimed in Valkey through
 * mm_store_claim (valkey_dedup.c).
 *
 * Every function here takes a store opened with backend "valkey" (others are
 * refused with MM_EINVAL), runs on the loop thread, and follows store.h's
 * asynchronous contract: a callback always runs later on the loop, never
 * inside the call, and a call that returns an error never calls it.
 */
#ifndef MM_VALKEY_H
#define MM_VALKEY_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

extern const mm_store_vtable_t mm_store_valkey_vtable;

/* What the wrapper times and counts, one slot per kind of Valkey command.
 * mm_valkey_op_name() gives the stats name ("cache_get", ...). */
enum mm_valkey_op {
	MM_VALKEY_OP_GET,        /* cache_get: lookups of get_many */
	MM_VALKEY_OP_FILL,       /* cache_fill: entries written from the store after a miss */
	MM_VALKEY_OP_LEASE,      /* cache_lease: write leases taken before a store write */
	MM_VALKEY_OP_UPDATE,     /* cache_update: in-place updates after a store write */
	MM_VALKEY_OP_INVALIDATE, /* cache_invalidate: entries deleted instead of updated */
	MM_VALKEY_OP_COUNT,      /* cache_count: PFCOUNT over buckets */
	MM_VALKEY_OP_CLAIM,      /* cache_claim: dedup claims, renewals and releases */
	MM_VALKEY_OP_MARK,       /* cache_mark: dedup marks written with a flush */
	MM_VALKEY_OP_CHECK,      /* cache_check: handshake, generation checks, scans */
	MM_VALKEY_OP_MAX
};

typedef struct mm_valkey_stats {
	/* Per command kind: commands sent, failed (error reply, timeout or lost
	 * connection), summed and largest latency from send to reply. */
	uint64_t ops[MM_VALKEY_OP_MAX];
	uint64_t errors[MM_VALKEY_OP_MAX];
	uint64_t ns_total[MM_VALKEY_OP_MAX];
	uint64_t ns_max[MM_VALKEY_OP_MAX];
	mm_histo_t hist[MM_VALKEY_OP_MAX]; /* the same latencies, for /metrics */
	uint64_t hits;          /* get_many keys answered by the cache */
	uint64_t misses;        /* get_many keys read from the backing store */
	uint64_t bypassed;      /* get_many calls that went straight to the store */
	uint64_t fills;         /* entries written from the store */
	uint64_t fills_skipped; /* fills a guard refused (a write was in progress) */
	uint64_t updates;       /* entries updated in place after a store write */
	uint64_t invalidated;   /* entries deleted because they could not be updated */
	uint64_t lost_leases;   /* update batches whose lease had expired (deleted instead) */
	uint64_t corrupt;       /* cached values that failed to decode (replaced) */
	uint64_t dirty;         /* keys waiting to be invalidated when Valkey answers again */
	uint64_t connects;      /* connections that completed the handshake */
	uint64_t disconnects;   /* connections lost or dropped (timeouts) */
	uint64_t data_losses;   /* restarts, FLUSHALLs or failovers detected */
	uint64_t repopulated;   /* entries rebuilt by repopulate (explicit or automatic) */
	int connected;          /* 1 while the cache is in use */
} mm_valkey_stats_t;

/* "cache_get", "cache_fill", ... for an enum mm_valkey_op; NULL if out of range. */
const char *mm_valkey_op_name(int op);

/* Copies the counters into *out. Any time on the loop thread. */
int mm_valkey_stats(const mm_store_t *st, mm_valkey_stats_t *out);

/*
 * Rebuilds the cache entries of keys (in namespace ns) from the backing
 * store, replacing what the cache holds. The keys are copied; the caller's
 * arrays may go once this returns. cb gets 0 once every key was read and its
 * entry written or skipped (a write in progress on a bucket makes the guard
 * refuse its fills; the next read fills them), or the backing store's error;
 * MM_EAGAIN when the cache is unavailable. The wrapper calls this by itself
 * for the keys it used last (option hot_keys) whenever it finds that Valkey
 * restarted or lost data.
 */
int mm_valkey_repopulate(mm_store_t *st, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
			 mm_store_cb cb, void *arg);

#endif
