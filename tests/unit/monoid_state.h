/*
 * monoid_state.h: what the unit tests of the string monoids (test_bloom.c,
 * test_set.c, test_topk.c) share: a state's storage, string adds, the state
 * as the runtime sees it between flushes (its encoding, a decode of that
 * encoding, a merge into a fresh state, its JSON), the merge laws on three
 * states, and the soundness check of decode with the truncation and
 * bit-flip sweep of their corruption tests. The helpers abort where a test
 * could not go on without their result. They are static inline so that a
 * test using some of them compiles without the others.
 */
#ifndef MM_TEST_MONOID_STATE_H
#define MM_TEST_MONOID_STATE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/error.h"
#include "monoid/monoid.h"
#include "unit.h"

typedef struct state {
	_Alignas(16) unsigned char b[MM_STATE_MAX];
} state_t;

static inline int add(const mm_monoid_t *m, state_t *st, const char *s, size_t len)
{
	mm_value_t v = {.type = MM_VAL_STRING, .s = s, .len = len};

	return m->vt->add(m, st->b, &v);
}

static inline int add_str(const mm_monoid_t *m, state_t *st, const char *s)
{
	return add(m, st, s, strlen(s));
}

/* Encodes st into a fresh buffer the caller frees. */
static inline mm_buf_t enc(const mm_monoid_t *m, const state_t *st)
{
	mm_buf_t b = {0};

	if (m->vt->encode(m, st->b, &b) != 0)
		abort();
	return b;
}

/* 1 if a and b encode to the same bytes. */
static inline int same(const mm_monoid_t *m, const state_t *a, const state_t *b)
{
	mm_buf_t x = enc(m, a), y = enc(m, b);
	int eq = x.len == y.len && memcmp(x.p, y.p, x.len) == 0;

	mm_buf_free(&x);
	mm_buf_free(&y);
	return eq;
}

/* dst = the identity merged with src. */
static inline void copy(const mm_monoid_t *m, state_t *dst, const state_t *src)
{
	m->vt->init(m, dst->b);
	if (m->vt->merge(m, dst->b, src->b) != 0)
		abort();
}

/* st = decode(encode(st)), as the runtime does between flushes. */
static inline int roundtrip(const mm_monoid_t *m, state_t *st)
{
	mm_buf_t b = enc(m, st);
	int rc = m->vt->decode(m, st->b, b.p, b.len);

	mm_buf_free(&b);
	return rc;
}

/* 1 if st's JSON is want; prints what it got otherwise. */
static inline int json_is(const mm_monoid_t *m, const state_t *st, const char *want)
{
	mm_buf_t b = {0};
	int eq;

	if (m->vt->to_json(m, st->b, &b) != 0)
		return 0;
	eq = b.len == strlen(want) && memcmp(b.p, want, b.len) == 0;
	if (!eq)
		printf("# got %.*s\n", (int)b.len, (char *)b.p);
	mm_buf_free(&b);
	return eq;
}

/* Decode must reject p[0..n) (MM_ECORRUPT, the state left the identity) or
 * accept it into a state whose encoding is the input itself, every accepted
 * encoding being canonical, and whose JSON can be written. */
static inline int decode_is_sound(const mm_monoid_t *m, const uint8_t *p, size_t n)
{
	state_t st;
	mm_buf_t b = {0};
	int ok = 1, rc;

	m->vt->init(m, st.b);
	rc = m->vt->decode(m, st.b, p, n);
	if (rc == 0) {
		b = enc(m, &st);
		ok = b.len == n && memcmp(b.p, p, n) == 0;
		mm_buf_free(&b);
		if (m->vt->to_json(m, st.b, &b) != 0)
			ok = 0;
		mm_buf_free(&b);
	} else if (rc != MM_ECORRUPT || !m->vt->is_identity(m, st.b)) {
		ok = 0;
	}
	m->vt->destroy(m, st.b);
	return ok;
}

/* Merges a, b and c in both orders and both groupings: checks that a + b ==
 * b + a and (a + b) + c == a + (b + c), and leaves (a + b) + c in abc and
 * b + c in bc, which the caller destroys. */
static inline void check_merge_laws(const mm_monoid_t *m, const state_t *a, const state_t *b,
				    const state_t *c, state_t *abc, state_t *bc)
{
	state_t ab, ba, a_bc;

	copy(m, &ab, a);
	CHECK_EQ_INT(m->vt->merge(m, ab.b, b->b), 0);
	copy(m, &ba, b);
	CHECK_EQ_INT(m->vt->merge(m, ba.b, a->b), 0);
	CHECK(same(m, &ab, &ba));
	copy(m, abc, &ab);
	CHECK_EQ_INT(m->vt->merge(m, abc->b, c->b), 0);
	copy(m, bc, b);
	CHECK_EQ_INT(m->vt->merge(m, bc->b, c->b), 0);
	copy(m, &a_bc, a);
	CHECK_EQ_INT(m->vt->merge(m, a_bc.b, bc->b), 0);
	CHECK(same(m, abc, &a_bc));
	m->vt->destroy(m, ab.b);
	m->vt->destroy(m, ba.b);
	m->vt->destroy(m, a_bc.b);
}

/* Decode refuses every proper prefix of the encoding p[0..n) with
 * MM_ECORRUPT, and is sound (decode_is_sound) on the encoding and on each
 * of its single-bit flips; prints how many flips decode. */
static inline void check_truncations_and_flips(const mm_monoid_t *m, const uint8_t *p, size_t n)
{
	uint8_t *q = malloc(n);
	int bad = 0, accepted = 0;
	state_t st;

	if (q == NULL)
		abort();
	CHECK(decode_is_sound(m, p, n));
	for (size_t len = 0; len < n; len++) {
		m->vt->init(m, st.b);
		CHECK_EQ_INT(m->vt->decode(m, st.b, p, len), MM_ECORRUPT);
		m->vt->destroy(m, st.b);
	}
	for (size_t i = 0; i < n; i++)
		for (int bit = 0; bit < 8; bit++) {
			memcpy(q, p, n);
			q[i] ^= (uint8_t)(1u << bit);
			bad += !decode_is_sound(m, q, n);
			m->vt->init(m, st.b);
			accepted += m->vt->decode(m, st.b, q, n) == 0;
			m->vt->destroy(m, st.b);
		}
	free(q);
	CHECK_EQ_INT(bad, 0);
	printf("# %d of %zu single-bit flips decode (to canonical states)\n", accepted, n * 8);
}

#endif
