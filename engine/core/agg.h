/*
 * agg.h: the pre-aggregation table, one per pipeline and flush generation.
 *
 * Maps (entity bytes, bucket) to a monoid state holding the delta gathered
 * since the last flush. The entries sit densely in insertion order; an index
 * of open addressing with linear probing over a power-of-two slot array kept
 * at most half full maps a key's hash to its entry. A slot is 12 bytes (the
 * hash and the entry's number), so the empty half of the index costs 12 bytes
 * per slot instead of a whole 64-byte entry: with about 100 000 keys per
 * flush, 11.5 MB per table where slots holding the entries took 23 MB. Entity
 * bytes are copied into the entry (up to MM_AGG_KEY_INLINE) or into an arena
 * owned by the table, so callers may pass borrowed record memory. A table
 * built with a NULL monoid is a plain key set (the held records' ids,
 * held.h; the pending dedup ids have a set of their own, idset.h).
 *
 * Ownership: the table owns its slots, arena and every state; mm_agg_reset
 * destroys the states and forgets the keys but keeps the memory for reuse.
 * Loop thread only, except that a detached table may be read by a store's
 * worker thread while no one writes it.
 */
#ifndef MM_AGG_H
#define MM_AGG_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../monoid/monoid.h"

/* Keys of up to this many bytes are kept in their entry, beside the
 * bucket the lookup compares first: a lookup that finds its entry then
 * compares the key in the cache line it has just loaded, where a key in the
 * arena was a second miss, dependent on the first (doc/performance-journal.md,
 * "unique_visitors: short keys in their entry"). */
#define MM_AGG_KEY_INLINE 12

/* 64 bytes, one cache line (agg.c checks it). */
typedef struct mm_agg_entry {
	uint32_t klen;
	/* The key when klen <= MM_AGG_KEY_INLINE; otherwise its last 8 bytes
	 * hold a pointer to the key in the table's arena. Read it with
	 * mm_agg_entry_key. */
	char kbytes[MM_AGG_KEY_INLINE];
	int64_t bucket;
	int64_t expire_ms;
	_Alignas(16) unsigned char state[MM_STATE_MAX];
} mm_agg_entry_t;

/* The entry's key bytes (e->klen of them, not NUL-terminated): inside the
 * entry for a short key, so the pointer is valid while the entry is (gen
 * unchanged), as the arena's are until the table is reset. */
static inline const char *mm_agg_entry_key(const mm_agg_entry_t *e)
{
	const char *p;

	if (e->klen <= MM_AGG_KEY_INLINE)
		return e->kbytes;
	memcpy(&p, e->kbytes + MM_AGG_KEY_INLINE - sizeof(p), sizeof(p));
	return p;
}

typedef struct mm_agg_chunk mm_agg_chunk_t;

typedef struct mm_agg {
	const mm_monoid_t *m;   /* NULL: key set */
	/* The index: hashes[i] is the hash of the key in slot i (0 = empty
	 * slot; real hashes have the low bit set) and index[i] its entry's
	 * number, so a probe walks 8-byte words and touches an entry only on a
	 * full hash match. Both arrays are one block (hashes first), on a
	 * huge page once it passes 256 KiB (agg.c). */
	uint64_t *hashes;
	uint32_t *index;
	size_t cap;             /* slots: a power of two, or 0 before the first insert */
	mm_agg_entry_t *entries; /* count in use, room for ecap */
	size_t ecap;
	size_t count;
	size_t key_bytes;       /* arena bytes in use */
	mm_agg_chunk_t *chunks; /* arena */
	/* Bumped whenever entries may move or die (the entries growing, reset,
	 * free): an entry pointer a caller kept stays valid while gen is
	 * unchanged, since entries are never deleted one by one. */
	uint64_t gen;
} mm_agg_t;

/* A zeroed struct with m set is a valid empty table; this says it in code. */
void mm_agg_init(mm_agg_t *a, const mm_monoid_t *m);

/* Finds the entry for (key, bucket), creating it (state = identity) when
 * absent. *created tells which. Returns NULL on allocation failure (diag set). */
mm_agg_entry_t *mm_agg_upsert(mm_agg_t *a, const char *key, size_t klen, int64_t bucket,
			      int *created);

/* Finds an entry without creating it; NULL if absent. */
mm_agg_entry_t *mm_agg_find(const mm_agg_t *a, const char *key, size_t klen, int64_t bucket);

/* The hash mm_agg_upsert and mm_agg_find use for (key, bucket):
 * mm_agg_hash_mix(mm_agg_key_hash(key, klen), bucket). */
uint64_t mm_agg_hash(const char *key, size_t klen, int64_t bucket);

/* The key's part of mm_agg_hash, for a caller that reads the key before it
 * knows the bucket (the record loop reads a record ahead). */
uint64_t mm_agg_key_hash(const char *key, size_t klen);

/* mm_agg_hash from the key's part: one bucket's slots apart from another's. */
static inline uint64_t mm_agg_hash_mix(uint64_t key_hash, int64_t bucket)
{
	return (key_hash ^ ((uint64_t)bucket * 0xff51afd7ed558ccdULL)) | 1;
}

/* The same with the hash h computed by the caller, who looks one key up in
 * several tables or has its hash already (the record loop hashes a key a
 * record ahead). h is any 64-bit hash of (key, bucket), its low bit
 * ignored, as long as every call on the table uses the same function:
 * mm_agg_hash for the calls without _h. */
mm_agg_entry_t *mm_agg_upsert_h(mm_agg_t *a, const char *key, size_t klen, int64_t bucket,
				uint64_t h, int *created);
mm_agg_entry_t *mm_agg_find_h(const mm_agg_t *a, const char *key, size_t klen, int64_t bucket,
			      uint64_t h);

/* Hints the cache about the slot where a lookup of hash h (as given to the
 * _h calls) starts, and with insert, about its entry number, which an
 * insert writes: for a caller that knows the hash a while before the lookup
 * (the record loop reads a record ahead). Nothing for an empty table.
 * Always inlined: GCC 12 finds a function whose only effect is a prefetch
 * free of side effects and deletes its calls. */
static inline __attribute__((always_inline)) void mm_agg_prefetch_h(const mm_agg_t *a, uint64_t h,
								    int insert)
{
	size_t j = (h | 1) & (a->cap - 1);

	if (a->count == 0)
		return;
	__builtin_prefetch(&a->hashes[j]);
	if (insert)
		__builtin_prefetch(&a->index[j], 1);
}

/* Destroys every state and empties the table, keeping its arrays and arena. */
void mm_agg_reset(mm_agg_t *a);

/* Releases everything. */
void mm_agg_free(mm_agg_t *a);

/* Iteration: for (i = 0; i < a->count; i++) a->entries[i] ..., in insertion order. */

#endif
