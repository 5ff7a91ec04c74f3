/*
 * sketch_fuzz.h: the body shared by the fuzz targets of the sketch-like
 * monoids (set, Top-K, Bloom), whose states encode canonically and whose
 * values are strings.
 *
 * The input is used twice. As an encoding: decode must reject it (leaving
 * the identity) or accept it as canonical, i.e. re-encode to the same bytes.
 * As a stream of members separated by '\n': the members are added to a
 * second state, the two are merged both ways, which must agree unless a
 * count would overflow, and every result must round-trip through its
 * encoding. A target may check more of the three states before they are
 * destroyed (fz_sketch's `extra`).
 */
#ifndef MM_FUZZ_SKETCH_FUZZ_H
#define MM_FUZZ_SKETCH_FUZZ_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/error.h"
#include "monoid/monoid.h"

typedef struct fz_state {
	_Alignas(16) unsigned char b[MM_STATE_MAX];
} fz_state_t;

/* Aborts unless decode(encode(st)) encodes to the same bytes. */
static void fz_roundtrip(const mm_monoid_t *m, const fz_state_t *st)
{
	mm_buf_t a = {0}, b = {0};
	fz_state_t d;

	m->vt->init(m, d.b);
	if (m->vt->encode(m, st->b, &a) != 0 || m->vt->decode(m, d.b, a.p, a.len) != 0 ||
	    m->vt->encode(m, d.b, &b) != 0 || a.len != b.len || memcmp(a.p, b.p, a.len) != 0)
		abort();
	m->vt->destroy(m, d.b);
	mm_buf_free(&a);
	mm_buf_free(&b);
}

static int fz_same(const mm_monoid_t *m, const fz_state_t *x, const fz_state_t *y)
{
	mm_buf_t a = {0}, b = {0};
	int eq;

	if (m->vt->encode(m, x->b, &a) != 0 || m->vt->encode(m, y->b, &b) != 0)
		abort();
	eq = a.len == b.len && memcmp(a.p, b.p, a.len) == 0;
	mm_buf_free(&a);
	mm_buf_free(&b);
	return eq;
}

/* dst = dst + src. Returns 0, or 1 when the counts would overflow
 * (MM_ERANGE, possible with decoded counts near 2^64), in which case dst must
 * be unchanged. Aborts on any other failure. */
static int fz_merge(const mm_monoid_t *m, fz_state_t *dst, const fz_state_t *src)
{
	mm_buf_t before = {0}, after = {0};
	int rc;

	if (m->vt->encode(m, dst->b, &before) != 0)
		abort();
	rc = m->vt->merge(m, dst->b, src->b);
	if (rc != 0) {
		if (rc != MM_ERANGE || m->vt->encode(m, dst->b, &after) != 0 ||
		    after.len != before.len || memcmp(after.p, before.p, after.len) != 0)
			abort();
		rc = 1;
	}
	mm_buf_free(&before);
	mm_buf_free(&after);
	return rc;
}

/* Checks a target makes on the stream's state and the two merged ones. */
typedef void (*fz_extra_fn)(const mm_monoid_t *m, const uint8_t *data, size_t size,
			    const fz_state_t *stream, const fz_state_t *x, const fz_state_t *y);

static int fz_sketch(mm_monoid_t *m, const uint8_t *data, size_t size, fz_extra_fn extra)
{
	fz_state_t dec, stream, x, y;
	mm_buf_t b = {0};
	size_t start = 0;
	int overflow;

	if (m->vt->check(&m->p) != 0)
		abort();
	m->vt->init(m, dec.b);
	if (m->vt->decode(m, dec.b, data, size) == 0) {
		if (m->vt->encode(m, dec.b, &b) != 0 || b.len != size || memcmp(b.p, data, size) != 0)
			abort();
		b.len = 0;
		if (m->vt->to_json(m, dec.b, &b) != 0)
			abort();
	} else if (!m->vt->is_identity(m, dec.b)) {
		abort();
	}

	m->vt->init(m, stream.b);
	for (size_t i = 0; i <= size; i++) {
		if (i == size || data[i] == '\n') {
			mm_value_t v = {.type = MM_VAL_STRING, .s = (const char *)data + start,
					.len = i - start};

			if (m->vt->add(m, stream.b, &v) != 0)
				abort();
			start = i + 1;
		}
	}
	fz_roundtrip(m, &stream);

	m->vt->init(m, x.b);
	m->vt->init(m, y.b);
	overflow = fz_merge(m, &x, &dec) | fz_merge(m, &x, &stream) |
		   fz_merge(m, &y, &stream) | fz_merge(m, &y, &dec);
	if (!overflow && !fz_same(m, &x, &y))
		abort();
	fz_roundtrip(m, &x);
	fz_merge(m, &x, &x);
	fz_roundtrip(m, &x);
	b.len = 0;
	if (m->vt->to_json(m, x.b, &b) != 0)
		abort();
	if (extra)
		extra(m, data, size, &stream, &x, &y);

	mm_buf_free(&b);
	m->vt->destroy(m, dec.b);
	m->vt->destroy(m, stream.b);
	m->vt->destroy(m, x.b);
	m->vt->destroy(m, y.b);
	return 0;
}

#endif
