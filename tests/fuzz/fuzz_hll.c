/*
 * fuzz_hll.c: arbitrary bytes into the HLL decoder.
 *
 * Decode must either reject the input with MM_ECORRUPT (leaving the
 * identity) or accept it; an accepted sketch must encode, re-decode to the
 * same registers and estimate, and merge with itself to itself. merge_encoded
 * (the LMDB flush's path) of the input with a small delta must give the same
 * verdict, and when it accepts, the registers of decode-then-merge. Any other
 * outcome aborts, so libFuzzer reports it alongside ASan/UBSan findings.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/error.h"
#include "monoid/hll.h"

static const mm_monoid_t hll = {.vt = &mm_monoid_hll_vtable};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* merge_encoded(data, a few elements) against decode(data) and a merge; rc
 * is decode's verdict on data. */
static void check_merge_encoded(const uint8_t *data, size_t size, int rc, uint8_t *ra, uint8_t *rb)
{
	static const char *elems[] = {"a", "user-1", "u990965", "p71182"};
	uint64_t want[MM_STATE_MAX / 8], delta[MM_STATE_MAX / 8], got[MM_STATE_MAX / 8];
	mm_buf_t out = {0};
	size_t i;

	hll.vt->init(&hll, want);
	hll.vt->init(&hll, delta);
	hll.vt->init(&hll, got);
	for (i = 0; i < 4; i++) {
		mm_value_t v = {.type = MM_VAL_STRING, .s = elems[i], .len = strlen(elems[i])};

		if (hll.vt->add(&hll, delta, &v) != 0)
			abort();
	}
	if (hll.vt->merge_encoded(&hll, data, size, delta, &out) != rc)
		abort();
	if (rc == 0) {
		if (hll.vt->decode(&hll, want, data, size) != 0 || hll.vt->merge(&hll, want, delta) != 0 ||
		    hll.vt->decode(&hll, got, out.p, out.len) != 0)
			abort();
		mm_hll_registers(&hll, want, ra);
		mm_hll_registers(&hll, got, rb);
		if (memcmp(ra, rb, MM_HLL_REGISTERS) != 0)
			abort();
	}
	hll.vt->destroy(&hll, want);
	hll.vt->destroy(&hll, delta);
	hll.vt->destroy(&hll, got);
	mm_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t ra[MM_HLL_REGISTERS], rb[MM_HLL_REGISTERS];
	uint64_t a[MM_STATE_MAX / 8], b[MM_STATE_MAX / 8];
	uint64_t ca, cb;
	mm_buf_t out = {0};
	int rc;

	hll.vt->init(&hll, a);
	hll.vt->init(&hll, b);
	rc = hll.vt->decode(&hll, a, data, size);
	check_merge_encoded(data, size, rc, ra, rb);
	if (rc != 0) {
		if (rc != MM_ECORRUPT || !hll.vt->is_identity(&hll, a))
			abort();
		goto done;
	}
	if (hll.vt->encode(&hll, a, &out) != 0 || hll.vt->to_json(&hll, a, &out) != 0)
		abort();
	out.len = 0;
	if (hll.vt->encode(&hll, a, &out) != 0 || hll.vt->decode(&hll, b, out.p, out.len) != 0)
		abort();
	mm_hll_registers(&hll, a, ra);
	mm_hll_registers(&hll, b, rb);
	mm_hll_count(&hll, a, &ca);
	mm_hll_count(&hll, b, &cb);
	if (memcmp(ra, rb, sizeof(ra)) != 0 || ca != cb)
		abort();
	if (hll.vt->merge(&hll, b, a) != 0)
		abort();
	mm_hll_registers(&hll, b, rb);
	if (memcmp(ra, rb, sizeof(ra)) != 0)
		abort();
done:
	hll.vt->destroy(&hll, a);
	hll.vt->destroy(&hll, b);
	mm_buf_free(&out);
	return 0;
}
