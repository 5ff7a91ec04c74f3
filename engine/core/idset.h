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
 * In front of the slots, a filter of one 64-bit word per 8 slots (16 to
 * 32 bits an id), three bits of it set per id from the hash's h1, tells
 * almost every absent id (99.2 to 99.9%) from one word: the record loop
 * asks both generations' sets about every id, and the flushed generation's
 * slots were a second random line of memory a record, where its filter's
 * 256 KiB (at 262 144 slots) stays in the second-level cache. A word per
 * 16 slots let 2% of a generation's absent ids by to a probe of the slots,
 * each a random line (doc/performance-journal.md). The filter is an array of its
 * own on the heap, rebuilt with the slots at a doubling.
 *
 * Entries sit densely in insertion order, 24 bytes each: the full hash, the
 * id's length, the owner's tag and the expiry as a 32-bit offset from the
 * set's base (a generation's expiries lie within seconds of one another;
 * one that does not fit, after a jump of the clock by weeks, moves the set's
 * expiries to a 64-bit array of their own until the reset). The id's bytes
 * are kept only by a set made with keep: the pipeline of a store that keeps
 * its marks as these hashes (MM_STORE_CAP_MARKED, store.h) keys its
 * pending ids by the 128-bit hash and length alone, as exact as the store's
 * marks, which are the same hash, and so writes no arena and no pointer an
 * id (an entry was 40 bytes and 16 of arena: doc/performance-journal.md). A kept
 * id's bytes are copied into an arena (lib/arena.h) and its pointer stays
 * valid until the next reset (the oplog's claims borrow it, oplog.h) even
 * when the entries array moves; a set without keep copies the bytes of the
 * few ids a claim borrows with mm_idset_copy.
 *
 * Ownership: the set owns its slots, filter, entries, id pointers,
 * expiries and arena; mm_idset_reset forgets the ids but keeps the memory
 * for reuse, all but the wide expiries. Loop thread only.
 */
#ifndef MM_IDSET_H
#define MM_IDSET_H

#include <stddef.h>
#include <stdint.h>

#include "../lib/arena.h"
#include "../lib/bits.h"
#include "../lib/hash.h"

typedef struct mm_idset_entry {
	mm_idhash_t hash;
	uint32_t expire;      /* the expiry less the set's exp_base (mm_idset_expiry) */
	uint32_t len : 24;    /* at most MM_IDSET_MAX_LEN */
	uint32_t tag : 8;     /* the owner's: 0 when created (MM_ID_COUNTED, pipeline.h) */
} mm_idset_entry_t;

/* The longest id a set takes (the pipeline's are at most 1 024 bytes). */
#define MM_IDSET_MAX_LEN ((1u << 24) - 1)

typedef struct mm_idset_slot {
	uint32_t tag;         /* mm_idset_tag of the id's hash; 0: empty */
	uint32_t entry;
} mm_idset_slot_t;

/* The filter's words: one per MM_IDSET_FILTER_SLOTS slots. */
#define MM_IDSET_FILTER_SLOTS 8

/* The slot tag of a hash: h0's high half (its low bits pick the slot), never 0. */
static inline uint32_t mm_idset_tag(const mm_idhash_t *h)
{
	return (uint32_t)(h->h0 >> 32) | 1;
}

typedef struct mm_idset {
	mm_idset_slot_t *slots;
	uint64_t *filter;          /* cap / MM_IDSET_FILTER_SLOTS words (mm_idset_filter_word) */
	size_t cap;                /* slots: a power of two, or 0 before the first insert */
	mm_idset_entry_t *entries; /* count in use, room for ecap */
	const char **ids;          /* keep: the ids' bytes by entry, room for icap; else NULL */
	int64_t *wide;             /* the expiries by entry once one left the offsets' range
	                            * (malloc'd, room for ecap), until reset; else NULL */
	int64_t exp_base;          /* an entry's expiry is exp_base + expire */
	/* 32 bits, as the entry numbers in the slots are. */
	uint32_t count;
	uint32_t ecap, icap;       /* icap >= ecap where ids is in use */
	int keep;                  /* the ids' bytes are kept and compared */
	mm_arena_t arena;          /* the ids' bytes */
} mm_idset_t;

/* The filter's word of hash h in a set with slots. */
static inline uint64_t *mm_idset_filter_word(const mm_idset_t *s, const mm_idhash_t *h)
{
	return &s->filter[(h->h0 & (s->cap - 1)) / MM_IDSET_FILTER_SLOTS];
}

/* The filter's bits of hash h: three of 64, from h1 (h0 picks the word
 * and the slot). */
static inline uint64_t mm_idset_filter_mask(const mm_idhash_t *h)
{
	return mm_bit_or(mm_bit_or(mm_bit_or(0, h->h1), h->h1 >> 6), h->h1 >> 12);
}

/* An empty set; keep: it keeps each id's bytes (else ids are told apart by
 * hash and length alone). */
void mm_idset_init(mm_idset_t *s, int keep);

/* mm_idset_find in a set that holds ids. */
mm_idset_entry_t *mm_idset_find_in(const mm_idset_t *s, const char *id, size_t len,
				   const mm_idhash_t *h);

/* The entry of the id of len bytes whose mm_id_hash is h, or NULL. An
 * empty set (the flushed generation's, most of the time: every record with
 * an id asks both) is not probed, nor called, and nor is one whose filter
 * tells the id absent. */
static inline mm_idset_entry_t *mm_idset_find(const mm_idset_t *s, const char *id, size_t len,
					      const mm_idhash_t *h)
{
	uint64_t mask;

	if (s->count == 0)
		return NULL;
	mask = mm_idset_filter_mask(h);
	if ((*mm_idset_filter_word(s, h) & mask) != mask)
		return NULL;
	return mm_idset_find_in(s, id, len, h);
}

/* Finds the id's entry, adding it when absent (*created tells which; a new
 * entry has tag 0), and sets its expiry to expire_ms. Entry pointers stay
 * valid until the next upsert or reset. NULL on allocation failure or an id
 * longer than MM_IDSET_MAX_LEN (diag set). */
mm_idset_entry_t *mm_idset_upsert(mm_idset_t *s, const char *id, size_t len,
				  const mm_idhash_t *h, int64_t expire_ms, int *created);

/* mm_idset_upsert's common case, inline for the record loop: adds an id
 * of len bytes that no slot's tag on its probe names, into a set that
 * keeps no bytes, has entries already (its expiries' base is set), has
 * room for one more without a doubling, and whose expiries fit their
 * offsets. Returns the new entry (tag 0), or NULL, having changed nothing,
 * when any of that is not so: mm_idset_upsert then does what is needed.
 * The calls that it saves cost about a quarter of an insert's instructions
 * (doc/performance-journal.md, "Dedup ids: where the cost beyond the no-id run
 * goes"). */
static inline mm_idset_entry_t *mm_idset_add_new(mm_idset_t *s, size_t len,
						 const mm_idhash_t *h, int64_t expire_ms)
{
	uint64_t off = (uint64_t)expire_ms - (uint64_t)s->exp_base;
	uint32_t tag = mm_idset_tag(h);
	size_t j, mask = s->cap - 1;
	mm_idset_entry_t *e;

	if (s->keep || s->wide != NULL || s->count == 0 || s->count == s->ecap ||
	    ((size_t)s->count + 1) * 2 > s->cap || expire_ms < s->exp_base || off > UINT32_MAX ||
	    len > MM_IDSET_MAX_LEN)
		return NULL;
	for (j = h->h0 & mask; s->slots[j].tag; j = (j + 1) & mask)
		if (s->slots[j].tag == tag)
			return NULL;
	e = &s->entries[s->count];
	*e = (mm_idset_entry_t){.hash = *h, .expire = (uint32_t)off, .len = (uint32_t)len};
	s->slots[j] = (mm_idset_slot_t){tag, s->count++};
	*mm_idset_filter_word(s, h) |= mm_idset_filter_mask(h);
	return e;
}

/* Makes room for n entries without a doubling of the index on the way: a
 * generation's ids are about as many as the last one's, and each doubling
 * refilled the index from every entry so far (a random write each) into
 * memory the set had not touched. 0, or MM_ENOMEM (diag set; the set
 * still works, and grows as it fills). */
int mm_idset_reserve(mm_idset_t *s, size_t n);

/* The expiry of entry e, in ms since the epoch. */
static inline int64_t mm_idset_expiry(const mm_idset_t *s, const mm_idset_entry_t *e)
{
	return s->wide ? s->wide[e - s->entries] : s->exp_base + (int64_t)e->expire;
}

/* mm_idset_set_expiry for an expiry outside the offsets' range. */
int mm_idset_set_wide(mm_idset_t *s, mm_idset_entry_t *e, int64_t expire_ms);

/* Sets entry e's expiry. 0, or MM_ENOMEM (diag set; the expiry unchanged)
 * when it is the first outside the offsets' range and its array cannot be
 * made. */
static inline int mm_idset_set_expiry(mm_idset_t *s, mm_idset_entry_t *e, int64_t expire_ms)
{
	uint64_t off = (uint64_t)expire_ms - (uint64_t)s->exp_base;

	if (s->wide == NULL && expire_ms >= s->exp_base && off <= UINT32_MAX) {
		e->expire = (uint32_t)off;
		return 0;
	}
	return mm_idset_set_wide(s, e, expire_ms);
}

/* Entry e's id as the set keeps it (valid until reset), or NULL in a set
 * without keep. */
static inline const char *mm_idset_id(const mm_idset_t *s, const mm_idset_entry_t *e)
{
	return s->ids ? s->ids[e - s->entries] : NULL;
}

/* A copy of the len bytes of id valid until the next reset (a claim
 * borrows it, oplog.h), or NULL when out of memory (diag set). */
const char *mm_idset_copy(mm_idset_t *s, const char *id, size_t len);

/* Hints the cache about what a lookup of hash h reads first, its filter
 * word, and with write (an insert follows) the slot where the insert
 * starts, for a caller that knows the hash a while before (the record loop
 * reads records ahead). Nothing for an empty set unless write. Always
 * inlined, as mm_agg_prefetch_h (agg.h) is, so that it is not deleted. */
static inline __attribute__((always_inline)) void mm_idset_prefetch(const mm_idset_t *s,
								    const mm_idhash_t *h, int write)
{
	if (s->count == 0 && !(write && s->cap))
		return;
	__builtin_prefetch(mm_idset_filter_word(s, h), write);
	if (write)
		__builtin_prefetch(&s->slots[h->h0 & (s->cap - 1)], 1);
}

/* Forgets every id, keeping the slots, entries and arena chunks. */
void mm_idset_reset(mm_idset_t *s);

/* Releases everything. */
void mm_idset_free(mm_idset_t *s);

/* Iteration: for (i = 0; i < s->count; i++) s->entries[i] ..., in insertion order. */

#endif
