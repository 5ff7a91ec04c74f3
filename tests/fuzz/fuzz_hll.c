/*
 * fuzz_hll.c: arbitrary bytes into the HLL decoder.
 *
 * Decode must either reject the input with MM_ECORRUPT (leaving the
 * identity) or accept it; an accepted sketch must encode, re-decode to the
 * same registers and estimate, and merge with itself to itself. Any other
 * outcome aborts, so libFuzzer reports it alongside ASan/UBSan findings.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/error.h"
#include "monoid/hll.h"

static const mm_monoid_t hll = {.vt = &mm_monoid_hll_vtable};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
