/*
 * fuzz_set.c: libFuzzer target for the bounded set monoid (max_size 4).
 *
 * The checks are sketch_fuzz.h's; the stream of members goes past 68
 * distinct members, where the set prunes in memory.
 */
#include "sketch_fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mm_monoid_t m = {.vt = &mm_monoid_set_vtable, .p = {.max_size = 4}};

	return fz_sketch(&m, data, size, NULL);
}
