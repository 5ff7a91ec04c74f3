/*
 * hash.h: non-cryptographic hashes shared by sketches and hash tables.
 *
 * mm_hash64 is MurmurHash64A (Austin Appleby's public-domain algorithm,
 * re-implemented here), the function Valkey/Redis feed HyperLogLog with
 * (seed 0xadc83b19), so our HLL registers match the server's PFADD bit for
 * bit. Tables and Bloom filters use the same function with other seeds.
 * Pure functions: any thread.
 */
#ifndef MM_HASH_H
#define MM_HASH_H

#include <stddef.h>
#include <stdint.h>

#define MM_HLL_SEED 0xadc83b19ULL

uint64_t mm_hash64(const void *key, size_t len, uint64_t seed);

#endif
