/*
 * markset.h: a set of dedup marks in memory, for the embedded store's
 * claims (lmdb_dedup.c keeps one in front of the marks it stores).
 *
 * A mark is the 128-bit hash of (namespace, id) with its expiry
 * (mm_markhash_t, as stored on disk). The set keeps 96 bits of it: two
 * different ids whose 96 bits are equal would make the second a duplicate it
 * is not, which happens to a new id with probability L / 2^96 where L marks
 * are live (1.3e-20 for 10^9), so the hash stands for the id.
 *
 * The table is open addressing with linear probing over 16-byte slots (h0,
 * the high half of h1, the expiry as milliseconds after the set's base), at
 * most 3/4 full; an empty slot is all zero, which mm_markset_hash never
 * gives. An expiry more than 2^32 - 1 ms after the base is kept as that
 * much: exact as long as the set is read again (mm_markset_start with a new
 * base) before its base is 2^31 ms (24 days) old, which mm_markset_stale
 * tells. Marks are never deleted one by one: an expired mark answers as
 * absent, and a copy (mm_markset_copy) or a growth rebuilds the table with
 * only the live ones.
 *
 * In front of the slots, a Bloom filter of 4 bits per slot (one 64-bit
 * word per mark, four bits set in it) tells most absent marks without the
 * slot: a table of two million marks is 64 MiB, its filter 2 MiB, so a
 * lookup of a new id (the common case: every record of a stream without
 * replays) reads a word that stays in the cache instead of a slot that
 * misses it. The filter holds the bits of every mark in the table (expired
 * ones too, until a growth or copy rebuilds it): it never says absent for a
 * mark that is there. Memory: 16.5 bytes per slot, 22 to 44 bytes per live
 * mark.
 *
 * Not thread-safe: the owner serialises the calls that change a set; those
 * that only read it (expiry, prefetch, the source of a copy) may run at
 * once. Pure C, any thread.
 */
#ifndef MM_MARKSET_H
#define MM_MARKSET_H

#include <stddef.h>
#include <stdint.h>

typedef struct mm_markhash {
	uint64_t h0, h1;
	int64_t expire_ms;
} mm_markhash_t;

typedef struct mm_markslot {
	uint64_t h0;
	uint32_t h1;            /* the high half of the hash's h1 */
	uint32_t exp;           /* expire_ms - base_ms, at most UINT32_MAX */
} mm_markslot_t;

typedef struct mm_markset {
	mm_markslot_t *slots;
	size_t cap;             /* a power of two, or 0 */
	size_t count;           /* used slots (live or expired) */
	int64_t base_ms;
	uint64_t *filter;       /* cap / 16 words after the slots, same allocation */
	uint32_t min_exp;       /* no mark expires before it (a lower bound) */
} mm_markset_t;

/* The seed of a namespace's hashes: computed once per call that hashes
 * several ids of one namespace (mm_id_hash_seed). */
uint64_t mm_markset_ns_seed(const char *ns, size_t nslen);

/* The 128-bit hash of id in the namespace of ns_seed, mm_id_hash (its 96
 * bits kept in the set never all zero); expire_ms is left to the caller. */
void mm_markset_hash(uint64_t ns_seed, const void *id, size_t len, mm_markhash_t *out);

/* Empties the set and sets its base (at most the earliest now_ms it will
 * be asked about, e.g. the now of the read that fills it). */
void mm_markset_start(mm_markset_t *s, int64_t base_ms);

/* 1 when the set must be read again (mm_markset_start) to stay exact at
 * now_ms: its base is 2^31 ms old. */
int mm_markset_stale(const mm_markset_t *s, int64_t now_ms);

/* Adds a mark, keeping the later expiry if its hash is there already (a
 * mark that expires at or before the base is left out). Marks expired at
 * now_ms may be dropped when the table grows. Returns 0 or MM_ENOMEM (the
 * set is unchanged). */
int mm_markset_add(mm_markset_t *s, const mm_markhash_t *m, int64_t now_ms);

/* 1 when n more marks can be added without a growth. */
int mm_markset_has_room(const mm_markset_t *s, size_t n);

/* Fills t with the marks of s live at now_ms, in a new table with room for
 * n more (at most half full after the n adds, as after a growth), and
 * leaves s as it is: its readers may go on using it while the copy is
 * built, and the owner swaps the two after (lmdb_dedup.c). So a flush's
 * marks go into a table grown once, not a doubling at a time with every
 * mark moved again, and the expired marks are left behind. Returns 0 or
 * MM_ENOMEM (t is empty). */
int mm_markset_copy(mm_markset_t *t, const mm_markset_t *s, size_t n, int64_t now_ms);

/* The expiry of the mark with m's hash, or 0 if there is none. */
int64_t mm_markset_expiry(const mm_markset_t *s, const mm_markhash_t *m);

/* 0 when the set holds no mark with m's hash, told by the filter alone
 * (one word); 1 when it may (mm_markset_expiry then looks). */
int mm_markset_may_hold(const mm_markset_t *s, const mm_markhash_t *m);

/* Hints the cache about the filter's word and the slot an add or a lookup
 * of m reads (for a batch of adds or lookups). */
void mm_markset_prefetch(const mm_markset_t *s, const mm_markhash_t *m);

/* Hints the cache about the filter's word alone: what a lookup of an
 * absent mark reads (for lookups that are mostly of new ids). */
void mm_markset_prefetch_word(const mm_markset_t *s, const mm_markhash_t *m);

/* Forgets every mark and frees the table. */
void mm_markset_free(mm_markset_t *s);

#endif
