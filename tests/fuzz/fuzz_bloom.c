/*
 * fuzz_bloom.c: libFuzzer target for the Bloom filter monoid (capacity 100,
 * fpr 0.01: m = 959 bits, k = 7, 148-byte encodings).
 *
 * The checks are sketch_fuzz.h's (small streams stay in the pending form,
 * long ones switch to the bit array), and every element added must still be
 * contained in the stream's state and in both merged ones.
 */
#include "monoid/bloom.h"
#include "sketch_fuzz.h"

/* No false negatives, in either form. */
static void fz_contains_all(const mm_monoid_t *m, const uint8_t *data, size_t size,
			    const fz_state_t *stream, const fz_state_t *x, const fz_state_t *y)
{
	size_t start = 0;

	for (size_t i = 0; i <= size; i++) {
		if (i == size || data[i] == '\n') {
			const char *s = (const char *)data + start;

			if (mm_bloom_contains(m, stream->b, s, i - start) != 1 ||
			    mm_bloom_contains(m, x->b, s, i - start) != 1 ||
			    mm_bloom_contains(m, y->b, s, i - start) != 1)
				abort();
			start = i + 1;
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mm_monoid_t m = {.vt = &mm_monoid_bloom_vtable, .p = {.capacity = 100, .fpr = 0.01}};

	return fz_sketch(&m, data, size, fz_contains_all);
}
