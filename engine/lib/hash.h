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

/* Equality of the n bytes at a and b, for the key compare after a hash
 * match: keys of 4 to 16 bytes (ids, mostly) without a call, by two
 * overlapping loads that stay inside both keys. */
static inline int mm_key_eq(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;

	if (n >= 8 && n <= 16) {
		uint64_t x0, y0, x1, y1;

		memcpy(&x0, x, 8);
		memcpy(&y0, y, 8);
		memcpy(&x1, x + n - 8, 8);
		memcpy(&y1, y + n - 8, 8);
		return ((x0 ^ y0) | (x1 ^ y1)) == 0;
	}
	if (n >= 4 && n < 8) {
		uint32_t x0, y0, x1, y1;

		memcpy(&x0, x, 4);
		memcpy(&y0, y, 4);
		memcpy(&x1, x + n - 4, 4);
		memcpy(&y1, y + n - 4, 4);
		return ((x0 ^ y0) | (x1 ^ y1)) == 0;
	}
	return n == 0 || memcmp(x, y, n) == 0;
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
