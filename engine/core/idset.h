/*
 * idset.h: a pipeline generation's pending dedup ids (pipeline.h, ids[2]).
 *
 * A set of event ids keyed by their mm_id_hash (hash.h), which the record
 * loop computes once per record for the lookups in both generations, the
 * insert, and the id's claim and mark in the store. The index is open
 * addressing with linear probing over a power-of-two array of 8-byte slots
 * kept at most half full; a slot holds a 32-bit tag from the hash's h0 (the
 * bits that do not pick the slot) and the number of its entry, so one cache
 * line answers a probe and an insert writes that same line: a lookup reads
 * an entry (and the id's bytes) only when the tag matches, which for a new
 * id happens once in 2^31 probed slots. The general aggregation table
 * (agg.h) took two random lines an insert (its 8-byte hashes and its entry
 * numbers are separate arrays), 12 bytes a slot, and 64-byte entries with a
 * state a key set leaves unused.
 *
 * Entries sit densely in insertion order, holding the full hash, the id's
 * length, expiry and the owner's tag; id bytes are copied into an arena
 * (lib/arena.h), so an entry's id pointer stays valid until the next reset
 * (the oplog's claims borrow it, oplog.h) even when the entries array moves.
 *
 * Ownership: the set owns its slots, entries and arena; mm_idset_reset
 * forgets the ids but keeps the memory for reuse. Loop thread only.
 */
#ifndef MM_IDSET_H
#define MM_IDSET_H

#include <stddef.h>
#include <stdint.h>

#include "../lib/arena.h"
#include "../lib/hash.h"

typedef struct mm_idset_entry {
	const char *id;       /* the set's copy, valid until reset or free */
	uint32_t len;
	uint32_t tag;         /* the owner's: 0 when created (MM_ID_COUNTED, pipeline.h) */
	int64_t expire_ms;    /* the owner's: 0 when created (the mark's expiry) */
	mm_idhash_t hash;
} mm_idset_entry_t;

typedef struct mm_idset_slot {
	uint32_t tag;         /* mm_idset_tag of the id's hash; 0: empty */
	uint32_t entry;
} mm_idset_slot_t;

/* The slot tag of a hash: h0's high half (its low bits pick the slot), never 0. */
static inline uint32_t mm_idset_tag(const mm_idhash_t *h)
{
	return (uint32_t)(h->h0 >> 32) | 1;
}

typedef struct mm_idset {
	mm_idset_slot_t *slots;
	size_t cap;                /* slots: a power of two, or 0 before the first insert */
	mm_idset_entry_t *entries; /* count in use, room for ecap */
	size_t ecap;
	size_t count;
	mm_arena_t arena;          /* the ids' bytes */
} mm_idset_t;

/* An empty set. */
void mm_idset_init(mm_idset_t *s);

/* The entry of the id of len bytes whose mm_id_hash is h, or NULL. */
mm_idset_entry_t *mm_idset_find(const mm_idset_t *s, const char *id, size_t len,
				const mm_idhash_t *h);

/* Finds the id's entry, adding it when absent (*created tells which; a new
 * entry has tag and expire_ms 0). Entry pointers stay valid until the next
 * upsert or reset. NULL on allocation failure (diag set). */
mm_idset_entry_t *mm_idset_upsert(mm_idset_t *s, const char *id, size_t len,
				  const mm_idhash_t *h, int *created);

/* Hints the cache about the slot where a lookup or insert of hash h starts,
 * for a caller that knows the hash a while before (the record loop reads a
 * record ahead). Nothing for an empty set unless write (an insert follows).
 * Always inlined, as mm_agg_prefetch_h (agg.h) is, so that it is not deleted. */
static inline __attribute__((always_inline)) void mm_idset_prefetch(const mm_idset_t *s,
								    const mm_idhash_t *h, int write)
{
	if (s->count == 0 && !(write && s->cap))
		return;
	__builtin_prefetch(&s->slots[h->h0 & (s->cap - 1)], write);
}

/* Forgets every id, keeping the slots, entries and arena chunks. */
void mm_idset_reset(mm_idset_t *s);

/* Releases everything. */
void mm_idset_free(mm_idset_t *s);

/* Iteration: for (i = 0; i < s->count; i++) s->entries[i] ..., in insertion order. */

#endif
