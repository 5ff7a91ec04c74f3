/*
 * hash.h: non-cryptographic hashes shared by sketches and hash tables.
 *
 * mm_hash64 is MurmurHash64A (Austin Appleby's public-domain algorithm,
 * re-implemented here), the function Valkey/Redis feed HyperLogLog with
 * (seed 0xadc83b19), so our HLL registers match the server's PFADD bit for
 * bit. Tables and Bloom filters use the same function with other seeds.
 * mm_key_eq and mm_key_cmp compare keys for hash tables and sorts.
 * Pure functions: any thread.
 */
#ifndef MM_HASH_H
#define MM_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MM_HLL_SEED 0xadc83b19ULL

uint64_t mm_hash64(const void *key, size_t len, uint64_t seed);

/* A dedup id's 128-bit hash in its namespace: h0 and h1 are mm_hash64 of
 * the id under two seeds drawn from the namespace's name (mm_id_hash_seed,
 * computed once per namespace). (h0, the high half of h1) is never all
 * zero (the one hash in 2^96 that would be has h0 = 1), so a table of them
 * may take zero for an empty slot. The embedded store keeps these hashes as
 * its marks on disk (lmdb_dedup.c, markset.h): changing the function
 * changes that store's format. The pipeline hashes an id once and hands the
 * hash to the store with the id (mm_claim_t, mm_mark_t). h1's seed is
 * h0's XOR MM_ID_SEED2; both are computed in one pass over the id. */
#define MM_ID_SEED2 0x9e3779b97f4a7c15ULL

typedef struct mm_idhash {
	uint64_t h0, h1;
} mm_idhash_t;

/* A dedup mark by hash: an id's mm_id_hash in its namespace and when the
 * mark expires (ms since the epoch). The embedded store's marks
 * (store/markset.h) and the flush's marks for a store that keeps its marks
 * as these hashes (mm_flush_t.hashed, store.h). */
typedef struct mm_markhash {
	uint64_t h0, h1;
	int64_t expire_ms;
} mm_markhash_t;

uint64_t mm_id_hash_seed(const char *ns, size_t nslen);
void mm_id_hash(uint64_t seed, const void *id, size_t len, mm_idhash_t *out);

/* memcmp(a, b, n) == 0 for the key compare after a hash match and for the
 * short names events use, without a call: two overlapping loads cover any
 * length from 4 to 16, three byte compares the shorter ones. */
static inline int mm_key_eq(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;
	uint64_t a8, b8, a8e, b8e;
	uint32_t a4, b4, a4e, b4e;

	if (n >= 8 && n <= 16) {
		memcpy(&a8, x, 8);
		memcpy(&b8, y, 8);
		memcpy(&a8e, x + n - 8, 8);
		memcpy(&b8e, y + n - 8, 8);
		return ((a8 ^ b8) | (a8e ^ b8e)) == 0;
	}
	if (n >= 4 && n < 8) {
		memcpy(&a4, x, 4);
		memcpy(&b4, y, 4);
		memcpy(&a4e, x + n - 4, 4);
		memcpy(&b4e, y + n - 4, 4);
		return ((a4 ^ b4) | (a4e ^ b4e)) == 0;
	}
	if (n < 4)
		return n == 0 || (x[0] == y[0] && x[n / 2] == y[n / 2] && x[n - 1] == y[n - 1]);
	return memcmp(x, y, n) == 0;
}

static inline uint64_t mm_load_be32(const unsigned char *p)
{
	return (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 | (uint64_t)p[2] << 8 | p[3];
}

static inline uint64_t mm_load_be64(const unsigned char *p)
{
	return mm_load_be32(p) << 32 | mm_load_be32(p + 4);
}

/* The order of memcmp(a, b, n) (its sign: -1, 0 or 1), for sorting keys:
 * keys of 4 to 16 bytes without a call, as big-endian words. The second
 * word overlaps the first, where both keys are already known equal, so it
 * compares exactly the bytes that follow. */
static inline __attribute__((always_inline)) int mm_key_cmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;
	uint64_t u, v;
	int c;

	if (n >= 4 && n <= 8) {
		u = mm_load_be32(x) << 32 | mm_load_be32(x + n - 4);
		v = mm_load_be32(y) << 32 | mm_load_be32(y + n - 4);
		return (u > v) - (u < v);
	}
	if (n > 8 && n <= 16) {
		u = mm_load_be64(x);
		v = mm_load_be64(y);
		if (u == v) {
			u = mm_load_be64(x + n - 8);
			v = mm_load_be64(y + n - 8);
		}
		return (u > v) - (u < v);
	}
	c = n ? memcmp(x, y, n) : 0;
	return (c > 0) - (c < 0);
}

#endif
