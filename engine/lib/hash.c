/*
 * hash.c: MurmurHash64A, re-implemented from Austin Appleby's public-domain
 * description.
 *
 * The variant matters: Valkey/Redis hash HyperLogLog elements with the
 * 64-bit "A" flavour, reading the input as little-endian 8-byte blocks and
 * folding the 1..7 trailing bytes in with a fall-through switch, so that is
 * exactly what this file computes. Blocks are assembled byte by byte, which
 * makes the result independent of host byte order and alignment (compilers
 * turn the shifts into a single unaligned load on x86-64 and arm64).
 *
 * The seed is widened to 64 bits for our own tables; seeds below 2^32 give
 * the same result as the server's `unsigned int seed` parameter.
 */
#include "hash.h"

#define MM_MURMUR_M 0xc6a4a7935bd1e995ULL
#define MM_MURMUR_R 47

static inline uint64_t mm_load_u64le(const uint8_t *p)
{
	return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) |
	       ((uint64_t)p[3] << 24) | ((uint64_t)p[4] << 32) | ((uint64_t)p[5] << 40) |
	       ((uint64_t)p[6] << 48) | ((uint64_t)p[7] << 56);
}

static inline uint64_t mm_load_u32le(const uint8_t *p)
{
	return (uint64_t)p[0] | ((uint64_t)p[1] << 8) | ((uint64_t)p[2] << 16) |
	       ((uint64_t)p[3] << 24);
}

/* MurmurHash64A of key under two seeds at once, into *a and *b. The block
 * transform and the tail's assembly do not depend on the seed, so a dedup
 * id's two hashes (mm_id_hash) share them; mm_hash64 inlines this with *b
 * unused, which the compiler drops, so its code is the one-seed loop. */
static inline __attribute__((always_inline)) void
murmur64a2(const void *key, size_t len, uint64_t seed_a, uint64_t seed_b, uint64_t *a, uint64_t *b)
{
	const uint8_t *data = key;
	size_t nblocks = len / 8;
	uint64_t ha = seed_a ^ ((uint64_t)len * MM_MURMUR_M);
	uint64_t hb = seed_b ^ ((uint64_t)len * MM_MURMUR_M);
	size_t i;

	for (i = 0; i < nblocks; i++) {
		uint64_t k = mm_load_u64le(data + 8 * i);

		k *= MM_MURMUR_M;
		k ^= k >> MM_MURMUR_R;
		k *= MM_MURMUR_M;
		ha ^= k;
		ha *= MM_MURMUR_M;
		hb ^= k;
		hb *= MM_MURMUR_M;
	}

	/* The 1..7 trailing bytes, which the reference folds in one at a time,
	 * are XORed into distinct byte positions: assembling them into one word
	 * with at most two loads and XORing that word is the same operation.
	 * The loads overlap inside the tail (OR of a byte with itself), so none
	 * reads past the key. The tail is indexed from the start of the key, so
	 * an empty (NULL, 0) key never does pointer arithmetic on NULL. */
	size_t r = len & 7;

	if (r) {
		const uint8_t *t = data + 8 * nblocks;
		uint64_t tail;

		if (r >= 4)
			tail = mm_load_u32le(t) | mm_load_u32le(t + r - 4) << (8 * (r - 4));
		else
			tail = (uint64_t)t[0] | (uint64_t)t[r / 2] << (8 * (r / 2)) |
			       (uint64_t)t[r - 1] << (8 * (r - 1));
		ha ^= tail;
		ha *= MM_MURMUR_M;
		hb ^= tail;
		hb *= MM_MURMUR_M;
	}
	ha ^= ha >> MM_MURMUR_R;
	ha *= MM_MURMUR_M;
	ha ^= ha >> MM_MURMUR_R;
	hb ^= hb >> MM_MURMUR_R;
	hb *= MM_MURMUR_M;
	hb ^= hb >> MM_MURMUR_R;
	*a = ha;
	*b = hb;
}

uint64_t mm_hash64(const void *key, size_t len, uint64_t seed)
{
	uint64_t h, unused;

	murmur64a2(key, len, seed, seed, &h, &unused);
	return h;
}

#define MM_ID_SEED 0x6d61726b73657431ULL /* "markset1" */

uint64_t mm_id_hash_seed(const char *ns, size_t nslen)
{
	return mm_hash64(ns, nslen, MM_ID_SEED);
}

void mm_id_hash(uint64_t seed, const void *id, size_t len, mm_idhash_t *out)
{
	murmur64a2(id, len, seed, seed ^ MM_ID_SEED2, &out->h0, &out->h1);
	/* All zero is the empty slot: one hash in 2^96 moves by one. */
	if ((out->h0 | (out->h1 >> 32)) == 0)
		out->h0 = 1;
}
