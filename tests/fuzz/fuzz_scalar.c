/*
 * fuzz_scalar.c: arbitrary bytes into the scalar monoid decoders and the
 * window/time/duration parsers.
 *
 * The first byte picks the target, the rest is its input:
 *   0..6  decode for sum (int), sum (float), count, min, max, first, last.
 *         A rejection must be MM_ECORRUPT and leave the identity. An
 *         accepted input must be canonical (it encodes back to the same
 *         bytes), print valid JSON, agree with is_identity, and merge with a
 *         copy of itself to itself where the monoid is idempotent.
 *   7     RFC 3339: an accepted time formats and parses back to itself
 *         (when within the years 0000..9999 that mm_time_format can write).
 *   8     durations: accepted ones are never negative.
 *   9     epoch numbers: 8 bytes of double and a unit byte.
 *   10    bucket arithmetic on two int64s: a time lies within its bucket.
 * Any violated expectation aborts, so libFuzzer reports it alongside
 * ASan/UBSan findings.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/json.h"
#include "lib/error.h"
#include "monoid/monoid.h"
#include "monoid/window.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const mm_monoid_t monoids[] = {
	{.vt = &mm_monoid_sum_vtable, .p = {.is_float = 0}},
	{.vt = &mm_monoid_sum_vtable, .p = {.is_float = 1}},
	{.vt = &mm_monoid_count_vtable},
	{.vt = &mm_monoid_min_vtable},
	{.vt = &mm_monoid_max_vtable},
	{.vt = &mm_monoid_first_vtable},
	{.vt = &mm_monoid_last_vtable},
};

#define N_MONOIDS (sizeof(monoids) / sizeof(monoids[0]))

/* mm_json_parse with no callbacks only validates. */
static const mm_json_visitor_t no_callbacks;

/* Aborts with the failed expectation, so a crash report says which law broke. */
#define check(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond);        \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static void fuzz_decode(const mm_monoid_t *m, const uint8_t *p, size_t n)
{
	const mm_monoid_vtable_t *vt = m->vt;
	uint64_t a[MM_STATE_MAX / 8], b[MM_STATE_MAX / 8], id[MM_STATE_MAX / 8];
	mm_buf_t out = {0}, ide = {0};
	int rc, idempotent = vt != &mm_monoid_sum_vtable && vt != &mm_monoid_count_vtable;

	vt->init(m, a);
	vt->init(m, b);
	vt->init(m, id);
	rc = vt->decode(m, a, p, n);
	if (rc != 0) {
		check(rc == MM_ECORRUPT && vt->is_identity(m, a));
		goto done;
	}
	check(vt->encode(m, a, &out) == 0 && out.len == n && memcmp(out.p, p, n) == 0);
	check(vt->encode(m, id, &ide) == 0);
	check(vt->is_identity(m, a) == (ide.len == n && memcmp(ide.p, p, n) == 0));
	out.len = 0;
	check(vt->to_json(m, a, &out) == 0);
	check(mm_json_parse((const char *)out.p, out.len, &no_callbacks, NULL) == 0);
	if (idempotent) {
		check(vt->decode(m, b, p, n) == 0 && vt->merge(m, b, a) == 0);
		out.len = 0;
		check(vt->encode(m, b, &out) == 0 && out.len == n && memcmp(out.p, p, n) == 0);
	}
done:
	vt->destroy(m, a);
	vt->destroy(m, b);
	vt->destroy(m, id);
	mm_buf_free(&out);
	mm_buf_free(&ide);
}

static void fuzz_rfc3339(const uint8_t *p, size_t n)
{
	int64_t ms, back;
	char s[32];

	if (mm_time_parse_rfc3339((const char *)p, n, &ms) != 0)
		return;
	if (ms < -62167219200000LL || ms > 253402300799999LL)
		return;
	check(mm_time_format(ms, s) == 24);
	check(mm_time_parse_rfc3339(s, 24, &back) == 0 && back == ms);
}

static void fuzz_epoch(const uint8_t *p, size_t n)
{
	uint64_t u;
	double d;
	int64_t ms;

	if (n < 9)
		return;
	memcpy(&u, p, 8);
	memcpy(&d, &u, 8);
	if (mm_time_from_epoch(d, (char)p[8], &ms) == 0)
		check(isfinite(d));
}

static void fuzz_buckets(const uint8_t *p, size_t n)
{
	int64_t g, t, b, lo, hi;
	uint64_t u;

	if (n < 16)
		return;
	memcpy(&u, p, 8);
	g = (int64_t)(u % (400 * MM_DAY_MS)) + 1;
	memcpy(&u, p + 8, 8);
	t = (int64_t)u;
	b = mm_window_bucket(g, t);
	/* Starts saturate at the ends of int64; the bracket holds elsewhere. */
	check(mm_window_bucket_start_ms(g, b) <= t);
	if (b < INT64_MAX && mm_window_bucket_start_ms(g, b + 1) < INT64_MAX)
		check(t < mm_window_bucket_start_ms(g, b + 1));
	mm_window_last_n(g, t, (int64_t)(u >> 40) + 1, &lo, &hi);
	check(hi == b && lo <= hi);
	check(mm_window_oldest_kept(g, g, t) <= b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int64_t ms;

	if (size == 0)
		return 0;
	if (data[0] < N_MONOIDS) {
		fuzz_decode(&monoids[data[0]], data + 1, size - 1);
		return 0;
	}
	switch (data[0] - N_MONOIDS) {
	case 0:
		fuzz_rfc3339(data + 1, size - 1);
		break;
	case 1:
		if (mm_duration_parse((const char *)data + 1, size - 1, &ms) == 0)
			check(ms >= 0);
		break;
	case 2:
		fuzz_epoch(data + 1, size - 1);
		break;
	case 3:
		fuzz_buckets(data + 1, size - 1);
		break;
	}
	return 0;
}
