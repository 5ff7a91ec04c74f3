/*
 * test_bloom.c: the Bloom filter monoid: geometry, laws across the pending
 * (hash pairs) and bit-array forms, no false negatives, the measured
 * false-positive rate, the byte format and corrupt input.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/error.h"
#include "monoid/bloom.h"
#include "monoid/monoid.h"
#include "monoid_state.h"
#include "unit.h"

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static mm_monoid_t bloom(uint64_t capacity, double fpr)
{
	mm_monoid_t m = {.vt = &mm_monoid_bloom_vtable};

	m.p.capacity = capacity;
	m.p.fpr = fpr;
	if (m.vt->check(&m.p) != 0)
		abort();
	return m;
}

static int has(const mm_monoid_t *m, const state_t *st, const char *s)
{
	return mm_bloom_contains(m, st->b, s, strlen(s));
}

TEST(params)
{
	mm_monoid_params_t p = {0};
	mm_monoid_t m = bloom(0, 0);
	state_t st;

	CHECK_EQ_INT(mm_monoid_bloom_vtable.check(&p), 0);
	CHECK_EQ_INT(p.capacity, 100000);
	CHECK(p.fpr == 0.01);
	p.fpr = 1;
	CHECK_EQ_INT(mm_monoid_bloom_vtable.check(&p), MM_EINVAL);
	p.fpr = -0.5;
	CHECK_EQ_INT(mm_monoid_bloom_vtable.check(&p), MM_EINVAL);
	p.fpr = NAN;
	CHECK_EQ_INT(mm_monoid_bloom_vtable.check(&p), MM_EINVAL);
	p.fpr = 0.01;
	p.capacity = UINT64_C(1) << 40;
	CHECK_EQ_INT(mm_monoid_bloom_vtable.check(&p), MM_EINVAL);

	/* m = ceil(-n ln p / ln^2 2), k = round(m/n ln 2). */
	m.vt->init(&m, st.b);
	CHECK(json_is(&m, &st, "{\"bits\":958506,\"hashes\":7,\"approx_count\":0}"));
	m = bloom(10000, 0.001);
	CHECK(json_is(&m, &st, "{\"bits\":143776,\"hashes\":10,\"approx_count\":0}"));
	m = bloom(1, 0.5);
	CHECK(json_is(&m, &st, "{\"bits\":2,\"hashes\":1,\"approx_count\":0}"));
}

TEST(identity)
{
	mm_monoid_t m = bloom(1000, 0.01);
	state_t id, x, y;
	mm_buf_t b;

	m.vt->init(&m, id.b);
	CHECK(m.vt->is_identity(&m, id.b));
	CHECK_EQ_INT(has(&m, &id, "a"), 0);
	b = enc(&m, &id);
	CHECK_EQ_INT(b.len, 28 + (9586 + 7) / 8);
	m.vt->init(&m, x.b);
	CHECK_EQ_INT(m.vt->decode(&m, x.b, b.p, b.len), 0);
	CHECK(m.vt->is_identity(&m, x.b));
	mm_buf_free(&b);

	add_str(&m, &x, "a");
	CHECK(!m.vt->is_identity(&m, x.b));
	copy(&m, &y, &x);
	CHECK_EQ_INT(m.vt->merge(&m, y.b, id.b), 0);
	CHECK(same(&m, &x, &y));
	m.vt->destroy(&m, y.b);
	copy(&m, &y, &id);
	CHECK_EQ_INT(m.vt->merge(&m, y.b, x.b), 0);
	CHECK(same(&m, &x, &y));
	m.vt->destroy(&m, x.b);
	m.vt->destroy(&m, y.b);
	m.vt->destroy(&m, id.b);
}

TEST(type_and_argument_errors)
{
	static const mm_monoid_vtable_t not_bloom = {.name = "not_bloom"};
	mm_monoid_t m = bloom(1000, 0.01), other = {.vt = &not_bloom};
	mm_value_t v = {.type = MM_VAL_DOUBLE, .d = 1.5};
	state_t st;

	m.vt->init(&m, st.b);
	CHECK_EQ_INT(m.vt->add(&m, st.b, &v), MM_ETYPE);
	CHECK(m.vt->is_identity(&m, st.b));
	CHECK_EQ_INT(mm_bloom_contains(&other, st.b, "a", 1), MM_EINVAL);
	CHECK_EQ_INT(mm_bloom_contains(&m, NULL, "a", 1), MM_EINVAL);
	CHECK_EQ_INT(mm_bloom_contains(&m, st.b, NULL, 1), MM_EINVAL);
	CHECK_EQ_INT(mm_bloom_contains(&m, st.b, NULL, 0), 0);
}

/* A state with `n` random elements named "e<r>". */
static void fill(const mm_monoid_t *m, state_t *st, int n)
{
	char s[32];

	m->vt->init(m, st->b);
	for (int i = 0; i < n; i++) {
		snprintf(s, sizeof(s), "e%" PRIu64, unit_xorshift64(&rng) % 5000);
		if (add_str(m, st, s) != 0)
			abort();
	}
}

TEST(laws)
{
	/* Sizes straddle the switch from hash pairs to the bit array (at 32
	 * pairs for this geometry), so every combination of forms merges. */
	static const int sizes[] = {0, 1, 3, 20, 31, 33, 200, 2000};
	mm_monoid_t m = bloom(1000, 0.01);
	enum { NS = sizeof(sizes) / sizeof(*sizes) };

	for (int i = 0; i < NS; i++)
		for (int j = 0; j < NS; j++) {
			state_t a, b, c, ab_c, bc, x;

			fill(&m, &a, sizes[i]);
			fill(&m, &b, sizes[j]);
			fill(&m, &c, sizes[(i + j) % NS]);
			check_merge_laws(&m, &a, &b, &c, &ab_c, &bc);
			copy(&m, &x, &ab_c);
			CHECK_EQ_INT(roundtrip(&m, &x), 0);
			CHECK(same(&m, &x, &ab_c));
			/* add(x, v) == merge(x, add(init, v)). */
			{
				state_t one;

				m.vt->init(&m, one.b);
				add_str(&m, &one, "extra");
				CHECK_EQ_INT(m.vt->merge(&m, x.b, one.b), 0);
				add_str(&m, &ab_c, "extra");
				CHECK(same(&m, &x, &ab_c));
				m.vt->destroy(&m, one.b);
			}
			m.vt->destroy(&m, a.b);
			m.vt->destroy(&m, b.b);
			m.vt->destroy(&m, c.b);
			m.vt->destroy(&m, ab_c.b);
			m.vt->destroy(&m, bc.b);
			m.vt->destroy(&m, x.b);
		}
}

TEST(forms_agree)
{
	/* m = 4098 bits and k = 2, so 15 elements fit the pending table (at
	 * most 16 pairs); kept as pairs, the filter must answer exactly like its
	 * decoded bit array, false positives included. */
	mm_monoid_t m = bloom(1420, 0.25);
	state_t pend, bits;
	char s[32];
	int differ = 0, positives = 0;

	m.vt->init(&m, pend.b);
	for (int i = 0; i < 15; i++) {
		snprintf(s, sizeof(s), "member%d", i);
		add_str(&m, &pend, s);
	}
	copy(&m, &bits, &pend);
	REQUIRE(roundtrip(&m, &bits) == 0);
	CHECK(same(&m, &pend, &bits));
	for (int i = 0; i < 200000; i++) {
		int a, b;

		snprintf(s, sizeof(s), "q%d", i);
		a = has(&m, &pend, s);
		b = has(&m, &bits, s);
		differ += a != b;
		positives += b;
	}
	CHECK_EQ_INT(differ, 0);
	CHECK(positives > 0);
	printf("# %d of 200000 non-members answered 1 by both forms\n", positives);
	for (int i = 0; i < 15; i++) {
		snprintf(s, sizeof(s), "member%d", i);
		CHECK_EQ_INT(has(&m, &pend, s), 1);
	}
	m.vt->destroy(&m, pend.b);
	m.vt->destroy(&m, bits.b);
}

TEST(saturated_filter)
{
	/* m = 2, k = 1: a few elements set both bits. The fill-ratio estimate
	 * is infinite for a full filter, so it reports the X = m - 1 value. */
	mm_monoid_t m = bloom(1, 0.5);
	state_t st;
	char s[16];

	m.vt->init(&m, st.b);
	for (int i = 0; i < 64; i++) {
		snprintf(s, sizeof(s), "%d", i);
		add_str(&m, &st, s);
	}
	CHECK(json_is(&m, &st, "{\"bits\":2,\"hashes\":1,\"approx_count\":1}"));
	CHECK_EQ_INT(has(&m, &st, "anything"), 1);
	CHECK_EQ_INT(roundtrip(&m, &st), 0);
	CHECK(json_is(&m, &st, "{\"bits\":2,\"hashes\":1,\"approx_count\":1}"));
	m.vt->destroy(&m, st.b);
}

TEST(merge_with_itself)
{
	mm_monoid_t m = bloom(1000, 0.01);
	state_t x, y, z;

	for (int n = 1; n <= 100; n += 99) {
		fill(&m, &x, n);
		copy(&m, &y, &x);
		CHECK_EQ_INT(m.vt->merge(&m, x.b, x.b), 0);
		CHECK_EQ_INT(m.vt->merge(&m, y.b, y.b), 0);
		copy(&m, &z, &y);
		CHECK(same(&m, &x, &y));
		CHECK(same(&m, &x, &z));
		m.vt->destroy(&m, x.b);
		m.vt->destroy(&m, y.b);
		m.vt->destroy(&m, z.b);
	}
}

/* States of monoids with other parameters have other m and k: merging them
 * must fail, never OR bit arrays of different lengths. */
TEST(merge_other_geometry)
{
	mm_monoid_t small = bloom(100, 0.01), big = bloom(100000, 0.01);
	state_t a, b, before;
	int n[2] = {2, 400}; /* pending pairs, then the bit array */

	for (int i = 0; i < 2; i++)
		for (int j = 0; j < 2; j++) {
			fill(&small, &a, n[i]);
			fill(&big, &b, n[j]);
			copy(&big, &before, &b);
			CHECK_EQ_INT(big.vt->merge(&big, b.b, a.b), MM_EINCOMPAT);
			CHECK(same(&big, &b, &before));
			big.vt->destroy(&big, before.b);
			copy(&small, &before, &a);
			CHECK_EQ_INT(small.vt->merge(&small, a.b, b.b), MM_EINCOMPAT);
			CHECK(same(&small, &a, &before));
			small.vt->destroy(&small, before.b);
			/* Into an identity state of the other monoid, too. */
			small.vt->init(&small, before.b);
			CHECK_EQ_INT(small.vt->merge(&small, before.b, b.b), MM_EINCOMPAT);
			CHECK(small.vt->is_identity(&small, before.b));
			small.vt->destroy(&small, a.b);
			big.vt->destroy(&big, b.b);
		}
}

static void accuracy(uint64_t capacity, double fpr)
{
	mm_monoid_t m = bloom(capacity, fpr);
	state_t st, dec;
	char s[32];
	int missing = 0, fp = 0, fp_dec = 0;
	mm_buf_t js = {0};
	unsigned long long approx = 0;

	m.vt->init(&m, st.b);
	for (uint64_t i = 0; i < capacity; i++) {
		snprintf(s, sizeof(s), "member-%" PRIu64, i);
		add_str(&m, &st, s);
	}
	copy(&m, &dec, &st);
	REQUIRE(roundtrip(&m, &dec) == 0);
	for (uint64_t i = 0; i < capacity; i++) {
		snprintf(s, sizeof(s), "member-%" PRIu64, i);
		missing += has(&m, &st, s) != 1;
		missing += has(&m, &dec, s) != 1;
	}
	CHECK_EQ_INT(missing, 0);
	for (int i = 0; i < 1000000; i++) {
		snprintf(s, sizeof(s), "outsider-%d", i);
		fp += has(&m, &st, s);
		fp_dec += i < 100000 ? has(&m, &dec, s) == has(&m, &st, s) ? 0 : 1 : 0;
	}
	CHECK_EQ_INT(fp_dec, 0);
	printf("# capacity %" PRIu64 ", fpr %g: measured %.5f on 1000000 non-members\n", capacity,
	       fpr, fp / 1e6);
	CHECK(fp / 1e6 <= 1.5 * fpr);

	REQUIRE(m.vt->to_json(&m, st.b, &js) == 0);
	mm_buf_put_u8(&js, 0);
	REQUIRE(sscanf(strstr((char *)js.p, "approx_count"), "approx_count\":%llu", &approx) == 1);
	printf("# approx_count %llu for %" PRIu64 " distinct\n", approx, capacity);
	CHECK(fabs((double)approx - (double)capacity) < 0.03 * (double)capacity);
	mm_buf_free(&js);
	m.vt->destroy(&m, st.b);
	m.vt->destroy(&m, dec.b);
}

TEST(accuracy_100k_at_1_percent)
{
	accuracy(100000, 0.01);
}

TEST(accuracy_10k_at_0_1_percent)
{
	accuracy(10000, 0.001);
}

/* A valid encoding of a small filter (m = 959 bits, 120 bytes of bits). */
static mm_buf_t sample(const mm_monoid_t *m)
{
	state_t st;
	mm_buf_t b;

	fill(m, &st, 40);
	b = enc(m, &st);
	m->vt->destroy(m, st.b);
	return b;
}

TEST(decode_rejects)
{
	mm_monoid_t m = bloom(100, 0.01), m2 = bloom(101, 0.01);
	state_t st;
	mm_buf_t b = sample(&m), c = {0};

	REQUIRE(b.len == 28 + 120);
	m.vt->init(&m, st.b);
	CHECK_EQ_INT(m.vt->decode(&m, st.b, b.p, b.len), 0);

#define REJECT(what)                                                                 \
	do {                                                                         \
		CHECK_EQ_INT(m.vt->decode(&m, st.b, c.p, c.len), MM_ECORRUPT);       \
		CHECK(m.vt->is_identity(&m, st.b));                                  \
		if (strstr(mm_diag_msg(), what) == NULL)                             \
			printf("# unexpected detail: %s\n", mm_diag_msg());          \
		CHECK(strstr(mm_diag_msg(), what) != NULL);                          \
	} while (0)
#define MUTATE(stmt)                                                                 \
	do {                                                                         \
		c.len = 0;                                                           \
		mm_buf_append(&c, b.p, b.len);                                       \
		stmt;                                                                \
	} while (0)

	MUTATE(c.p[1] = 'X');
	REJECT("magic");
	MUTATE(c.p[4] = 9);
	REJECT("version");
	MUTATE(c.p[7] = 1);
	REJECT("reserved");
	MUTATE(mm_set_u64le(c.p + 8, 960));
	REJECT("geometry mismatch");
	MUTATE(mm_set_u32le(c.p + 16, 8));
	REJECT("geometry mismatch");
	MUTATE(c.len--);
	REJECT("bytes of bits");
	MUTATE(mm_buf_put_u8(&c, 0));
	REJECT("bytes of bits");
	MUTATE(c.p[c.len - 1] |= 0x80);
	REJECT("past m");
	MUTATE(mm_set_u64le(c.p + 20, 0));
	REJECT("inconsistent");
	MUTATE(memset(c.p + 28, 0, 120));
	REJECT("inconsistent");
	MUTATE(c.len = 27);
	REJECT("truncated");
#undef MUTATE
#undef REJECT

	/* A filter written with another capacity has another geometry. */
	CHECK_EQ_INT(m2.vt->decode(&m2, st.b, b.p, b.len), MM_ECORRUPT);
	CHECK(strstr(mm_diag_msg(), "geometry mismatch") != NULL);
	mm_buf_free(&b);
	mm_buf_free(&c);
}

TEST(truncations_and_flips)
{
	mm_monoid_t m = bloom(100, 0.01);
	mm_buf_t b = sample(&m);

	check_truncations_and_flips(&m, b.p, b.len);
	mm_buf_free(&b);
}

int main(void)
{
	RUN(params);
	RUN(identity);
	RUN(type_and_argument_errors);
	RUN(laws);
	RUN(forms_agree);
	RUN(saturated_filter);
	RUN(merge_with_itself);
	RUN(merge_other_geometry);
	RUN(accuracy_100k_at_1_percent);
	RUN(accuracy_10k_at_0_1_percent);
	RUN(decode_rejects);
	RUN(truncations_and_flips);
	UNIT_DONE();
}
