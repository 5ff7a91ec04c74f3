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

uint64_t mm_hash64(const void *key, size_t len, uint64_t seed)
{
	const uint8_t *data = key;
	size_t nblocks = len / 8;
	uint64_t h = seed ^ ((uint64_t)len * MM_MURMUR_M);
	size_t i;

	for (i = 0; i < nblocks; i++) {
		uint64_t k = mm_load_u64le(data + 8 * i);

		k *= MM_MURMUR_M;
		k ^= k >> MM_MURMUR_R;
		k *= MM_MURMUR_M;
		h ^= k;
		h *= MM_MURMUR_M;
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
		h ^= tail;
		h *= MM_MURMUR_M;
	}
	h ^= h >> MM_MURMUR_R;
	h *= MM_MURMUR_M;
	h ^= h >> MM_MURMUR_R;
	return h;
}

#define MM_ID_SEED 0x6d61726b73657431ULL /* "markset1" */
#define MM_ID_SEED2 0x9e3779b97f4a7c15ULL

uint64_t mm_id_hash_seed(const char *ns, size_t nslen)
{
	return mm_hash64(ns, nslen, MM_ID_SEED);
}

void mm_id_hash(uint64_t seed, const void *id, size_t len, mm_idhash_t *out)
{
	out->h0 = mm_hash64(id, len, seed);
	out->h1 = mm_hash64(id, len, seed ^ MM_ID_SEED2);
	/* All zero is the empty slot: one hash in 2^96 moves by one. */
	if ((out->h0 | (out->h1 >> 32)) == 0)
		out->h0 = 1;
}
