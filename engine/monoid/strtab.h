/*
 * strtab.h: a table of distinct byte strings, each with a 64-bit payload.
 *
 * Internal to engine/monoid: Top-K keeps its counters here (payload = count)
 * and the bounded set its members (payload = 1 while live). Entries live in a
 * dense array in insertion order, their bytes in one arena, and an open
 * addressing index (linear probing, power-of-two size, at most half full)
 * maps a string to its entry. Keeping entries dense and ordered makes the
 * reductions both users need a single pass: mark entries dead by setting the
 * payload to 0 (or, for Top-K, take a threshold off every payload), then
 * mm_strtab_compact() squeezes entries and arena in place.
 *
 * Allocation happens only in mm_strtab_reserve(), all or nothing, so callers
 * can reserve room for a whole add or merge up front and then mutate without
 * any failure path, which is how the monoids keep "on error st is unchanged".
 *
 * Ownership: the table owns its arrays; a zeroed struct is an empty table and
 * mm_strtab_free() releases everything. Not thread-safe; pure C.
 */
#ifndef MM_STRTAB_H
#define MM_STRTAB_H

#include <stddef.h>
#include <stdint.h>

#include "../lib/hash.h"

typedef struct mm_strtab_entry {
	uint64_t val;  /* payload; 0 marks the entry for removal by compact */
	uint64_t hash; /* mm_strtab_hash() of the bytes, kept to rehash cheaply */
	size_t off;    /* offset of the bytes in the arena */
	uint32_t len;
} mm_strtab_entry_t;

typedef struct mm_strtab {
	mm_strtab_entry_t *e; /* e[0..n) in insertion order */
	uint32_t n, cap;
	uint32_t *slot;       /* entry index or MM_STRTAB_EMPTY; NULL before the first reserve */
	uint32_t mask;        /* number of slots - 1 */
	uint8_t *keys;        /* arena: keys[0..klen) */
	size_t klen, kcap;
} mm_strtab_t;

#define MM_STRTAB_EMPTY UINT32_MAX

/* The largest number of entries a table can hold (slot indexes are 32-bit and
 * the index needs twice as many slots as entries). */
#define MM_STRTAB_MAX_ENTRIES (UINT32_C(1) << 30)

/* Distinct from the HLL and Bloom seeds so table collisions and sketch
 * collisions are unrelated. */
#define MM_STRTAB_SEED 0x5d1e2c3b4a596877ULL

/* The hash a table uses for its keys (mm_hash64 with a seed of its own). */
static inline uint64_t mm_strtab_hash(const void *key, size_t len)
{
	return mm_hash64(key, len, MM_STRTAB_SEED);
}

/* Makes room for `entries` more entries holding `bytes` more key bytes, so
 * that the next puts of that size cannot fail. Returns 0 or MM_ENOMEM (also
 * when the table would exceed MM_STRTAB_MAX_ENTRIES); on error the table is
 * unchanged. Pointers to entries and keys are invalidated by a reserve that
 * returns 0. */
static inline int mm_strtab_reserve(mm_strtab_t *t, size_t entries, size_t bytes);

/* mm_strtab_reserve when the room is not there yet: the allocating part. */
int mm_strtab_grow(mm_strtab_t *t, size_t entries, size_t bytes);

static inline int mm_strtab_reserve(mm_strtab_t *t, size_t entries, size_t bytes)
{
	/* Inline because Top-K reserves for every new item and the room is
	 * usually there (a grow always leaves twice cap slots). The limits'
	 * checks are the grow's: cap never exceeds MM_STRTAB_MAX_ENTRIES. */
	if (t->keys != NULL && entries <= (size_t)(t->cap - t->n) && bytes <= t->kcap - t->klen)
		return 0;
	return mm_strtab_grow(t, entries, bytes);
}

/* The entry holding key[0..len), or NULL. hash must be mm_strtab_hash(key, len). */
static inline mm_strtab_entry_t *mm_strtab_find(const mm_strtab_t *t, const void *key,
						 uint32_t len, uint64_t hash);

/* mm_strtab_find that, on a miss in a reserved table, also gives the empty
 * slot its probe ended at (for mm_strtab_insert_at); *slot is left alone
 * otherwise. */
static inline mm_strtab_entry_t *mm_strtab_find_slot(const mm_strtab_t *t, const void *key,
						      uint32_t len, uint64_t hash, uint32_t *slot);

/* Returns the entry holding key[0..len), appending one with val 0 (and
 * setting *created to 1) when absent. The caller must have reserved room for
 * one entry of len bytes; key must not point into t's own arena unless the
 * key is already present. */
mm_strtab_entry_t *mm_strtab_put(mm_strtab_t *t, const void *key, uint32_t len, uint64_t hash,
				 int *created);

/* Appends key[0..len), which the caller knows is absent (a find just
 * missed, nothing changed since), with val 0: mm_strtab_put without the
 * compares. Same reservation rule as mm_strtab_put. */
mm_strtab_entry_t *mm_strtab_insert(mm_strtab_t *t, const void *key, uint32_t len, uint64_t hash);

/* mm_strtab_insert at the empty slot where mm_strtab_find_slot's miss
 * ended, which stays valid while the index is not rebuilt (a reserve that
 * changes mask rebuilds it). */
mm_strtab_entry_t *mm_strtab_insert_at(mm_strtab_t *t, uint32_t slot, const void *key, uint32_t len,
				       uint64_t hash);

/* Takes sub off every entry's val, removes the entries whose val was at
 * most sub (with sub 0: those whose val is 0), keeping the others in order,
 * and rebuilds the index. Never allocates. */
void mm_strtab_compact(mm_strtab_t *t, uint64_t sub);

/* The bytes of an entry; valid until the next reserve or compact. */
static inline const uint8_t *mm_strtab_key(const mm_strtab_t *t, const mm_strtab_entry_t *e)
{
	return t->keys + e->off;
}

/* Bytewise comparison of two strings, a proper prefix sorting first (memcmp
 * order extended to unequal lengths). Returns <0, 0 or >0. */
int mm_strtab_cmp(const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen);

/* Releases everything and zeroes the struct. */
void mm_strtab_free(mm_strtab_t *t);

static inline mm_strtab_entry_t *mm_strtab_find_slot(const mm_strtab_t *t, const void *key,
						      uint32_t len, uint64_t hash, uint32_t *slot)
{
	uint32_t s;

	if (t->slot == NULL)
		return NULL;
	for (s = (uint32_t)hash & t->mask; t->slot[s] != MM_STRTAB_EMPTY; s = (s + 1) & t->mask) {
		mm_strtab_entry_t *e = &t->e[t->slot[s]];

		if (e->hash == hash && e->len == len && mm_key_eq(t->keys + e->off, key, len))
			return e;
	}
	*slot = s;
	return NULL;
}

static inline mm_strtab_entry_t *mm_strtab_find(const mm_strtab_t *t, const void *key,
						 uint32_t len, uint64_t hash)
{
	uint32_t s;

	return mm_strtab_find_slot(t, key, len, hash, &s);
}

#endif
