/*
 * fuzz_topk.c: libFuzzer target for the Top-K monoid (K = 4).
 *
 * The checks are sketch_fuzz.h's; decode checks sum + (K+1) * err <= n, so
 * the round trips of every result also check the error bound.
 */
#include "sketch_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mm_monoid_t m = {.vt = &mm_monoid_topk_vtable, .p = {.k = 4}};

	return fz_sketch(&m, data, size, NULL);
}
