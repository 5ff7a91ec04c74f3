/*
 * markset.h: a set of dedup marks in memory, each a 128-bit hash of
 * (namespace, id) with the mark's expiry, for the embedded store's claims
 * (lmdb_dedup.c keeps one in front of the marks it stores).
 *
 * Why 128 bits. Two different ids whose hashes are equal would make the
 * second a duplicate it is not. With h live marks, a new id collides with
 * one of them with probability h / 2^128 (about 3e-30 for 10^9 marks), so
 * the hash stands for the id: no id bytes are kept or compared.
 *
 * The table is open addressing with linear probing over 24-byte slots
 * (h0, h1, expire_ms), at most 3/4 full; an empty slot has h0 = h1 = 0,
 * which mm_markset_hash never returns. Marks are never deleted one by one:
 * an expired mark answers as absent, and mm_markset_prune (or a growth)
 * rebuilds the table with only the live ones. Memory: 24 bytes per slot,
 * 32 to 64 bytes per live mark.
 *
 * Not thread-safe: the owner serialises calls. Pure C, any thread.
 */
#ifndef MM_MARKSET_H
#define MM_MARKSET_H

#include <stddef.h>
#include <stdint.h>

typedef struct mm_markhash {
	uint64_t h0, h1;
	int64_t expire_ms;
} mm_markhash_t;

typedef struct mm_markset {
	mm_markhash_t *slots;
	size_t cap;             /* a power of two, or 0 */
	size_t count;           /* used slots (live or expired) */
} mm_markset_t;

/* The seed of a namespace's hashes: computed once per call that hashes
 * several ids of one namespace. */
uint64_t mm_markset_ns_seed(const char *ns, size_t nslen);

/* The 128-bit hash of id in the namespace of ns_seed (never all zero);
 * expire_ms is left to the caller. */
void mm_markset_hash(uint64_t ns_seed, const void *id, size_t len, mm_markhash_t *out);

/* Adds a mark, keeping the later expiry if its hash is there already.
 * Marks expired at now_ms may be dropped when the table grows.
 * Returns 0 or MM_ENOMEM (the set is unchanged). */
int mm_markset_add(mm_markset_t *s, const mm_markhash_t *m, int64_t now_ms);

/* The expiry of the mark with m's hash, or 0 if there is none. */
int64_t mm_markset_expiry(const mm_markset_t *s, const mm_markhash_t *m);

/* Hints the cache about the slot m will probe (for a batch of lookups). */
void mm_markset_prefetch(const mm_markset_t *s, const mm_markhash_t *m);

/* Drops every mark expired at now_ms (a rebuild into a table sized for the
 * rest). Returns 0 or MM_ENOMEM (the set is unchanged). */
int mm_markset_prune(mm_markset_t *s, int64_t now_ms);

/* Forgets every mark and frees the table. */
void mm_markset_free(mm_markset_t *s);

#endif
