/*
 * test_topk.c: the Top-K (Misra-Gries) monoid: laws, byte format, corrupt
 * input, and the error bounds on a Zipf stream fed the way the runtime feeds
 * it (per-flush deltas merged into a stored sketch that is encoded and
 * decoded between flushes).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/error.h"
#include "monoid/monoid.h"
#include "monoid_state.h"
#include "unit.h"

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static mm_monoid_t topk(uint32_t k)
{
	mm_monoid_t m = {.vt = &mm_monoid_topk_vtable};

	m.p.k = k;
	if (m.vt->check(&m.p) != 0)
		abort();
	return m;
}

/* A test-side reader of the documented byte format, independent of topk.c. */
typedef struct parsed_item {
	uint64_t count;
	const uint8_t *s;
	uint32_t len;
} parsed_item_t;

typedef struct parsed {
	uint32_t k, count;
	uint64_t n, err;
	parsed_item_t *items;
} parsed_t;

static void parse(const mm_buf_t *b, parsed_t *out)
{
	size_t off = 32;

	if (b->len < 32 || memcmp(b->p, "MMTK", 4) != 0 || b->p[4] != 1)
		abort();
	out->k = mm_get_u32le(b->p + 8);
	out->n = mm_get_u64le(b->p + 12);
	out->err = mm_get_u64le(b->p + 20);
	out->count = mm_get_u32le(b->p + 28);
	out->items = calloc(out->count + 1, sizeof(*out->items));
	for (uint32_t i = 0; i < out->count; i++) {
		out->items[i].count = mm_get_u64le(b->p + off);
		out->items[i].len = mm_get_u32le(b->p + off + 8);
		out->items[i].s = b->p + off + 12;
		off += 12 + out->items[i].len;
	}
	if (off != b->len)
		abort();
}

/* The stored lower bound of item s in an encoding (0 when absent). */
static uint64_t lower_of(const parsed_t *p, const char *s)
{
	size_t len = strlen(s);

	for (uint32_t i = 0; i < p->count; i++)
		if (p->items[i].len == len && memcmp(p->items[i].s, s, len) == 0)
			return p->items[i].count;
	return 0;
}

TEST(params)
{
	mm_monoid_params_t p = {0};

	CHECK_EQ_INT(mm_monoid_topk_vtable.check(&p), 0);
	CHECK_EQ_INT(p.k, 32);
	p.k = 100000;
	CHECK_EQ_INT(mm_monoid_topk_vtable.check(&p), 0);
	p.k = 100001;
	CHECK_EQ_INT(mm_monoid_topk_vtable.check(&p), MM_EINVAL);
	CHECK_EQ_INT(mm_monoid_topk_vtable.value_kind, MM_VK_STRING);
	CHECK(strcmp(mm_monoid_topk_vtable.name, "topk") == 0);
}

TEST(identity)
{
	mm_monoid_t m = topk(32);
	state_t id, x, y;
	mm_buf_t b = {0};

	m.vt->init(&m, id.b);
	m.vt->init(&m, x.b);
	CHECK(m.vt->is_identity(&m, id.b));
	b = enc(&m, &id);
	CHECK_EQ_INT(b.len, 32);
	CHECK_EQ_INT(m.vt->decode(&m, x.b, b.p, b.len), 0);
	CHECK(m.vt->is_identity(&m, x.b));
	mm_buf_free(&b);
	CHECK_EQ_INT(m.vt->to_json(&m, id.b, &b), 0);
	CHECK_EQ_INT(b.len, strlen("{\"k\":32,\"n\":0,\"error\":0,\"items\":[]}"));
	CHECK(memcmp(b.p, "{\"k\":32,\"n\":0,\"error\":0,\"items\":[]}", b.len) == 0);
	mm_buf_free(&b);

	add_str(&m, &x, "a");
	add_str(&m, &x, "b");
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

TEST(exact_small)
{
	mm_monoid_t m = topk(3);
	state_t st;
	mm_buf_t b = {0};
	parsed_t p;
	const char *want = "{\"k\":3,\"n\":5,\"error\":0,\"items\":["
			   "{\"item\":\"b\",\"count\":3,\"lower\":3,\"upper\":3},"
			   "{\"item\":\"a\",\"count\":1,\"lower\":1,\"upper\":1},"
			   "{\"item\":\"c\",\"count\":1,\"lower\":1,\"upper\":1}]}";

	m.vt->init(&m, st.b);
	add_str(&m, &st, "c");
	add_str(&m, &st, "b");
	add_str(&m, &st, "b");
	add_str(&m, &st, "a");
	add_str(&m, &st, "b");
	CHECK_EQ_INT(m.vt->to_json(&m, st.b, &b), 0);
	CHECK(b.len == strlen(want) && memcmp(b.p, want, b.len) == 0);
	mm_buf_free(&b);
	b = enc(&m, &st);
	parse(&b, &p);
	CHECK_EQ_INT(p.k, 3);
	CHECK_EQ_INT(p.n, 5);
	CHECK_EQ_INT(p.err, 0);
	REQUIRE(p.count == 3);
	CHECK(p.items[0].count == 3 && p.items[0].len == 1 && p.items[0].s[0] == 'b');
	CHECK(p.items[1].count == 1 && p.items[1].s[0] == 'a');
	CHECK(p.items[2].count == 1 && p.items[2].s[0] == 'c');
	free(p.items);
	mm_buf_free(&b);

	/* A fourth item makes the (K+1)-th largest counter 1 at encode time:
	 * only b survives, with 3 - 1, and the error becomes 1. */
	add_str(&m, &st, "d");
	b = enc(&m, &st);
	parse(&b, &p);
	CHECK_EQ_INT(p.n, 6);
	CHECK_EQ_INT(p.err, 1);
	REQUIRE(p.count == 1);
	CHECK(p.items[0].count == 2 && p.items[0].s[0] == 'b');
	free(p.items);
	mm_buf_free(&b);
	b = (mm_buf_t){0};
	CHECK_EQ_INT(m.vt->to_json(&m, st.b, &b), 0);
	want = "{\"k\":3,\"n\":6,\"error\":1,\"items\":["
	       "{\"item\":\"b\",\"count\":2,\"lower\":2,\"upper\":3}]}";
	CHECK(b.len == strlen(want) && memcmp(b.p, want, b.len) == 0);
	mm_buf_free(&b);

	/* The in-memory state stayed exact: under K=4 nothing is reduced. */
	{
		mm_monoid_t m4 = topk(4);
		state_t s4;

		m4.vt->init(&m4, s4.b);
		CHECK_EQ_INT(m4.vt->merge(&m4, s4.b, st.b), 0);
		b = enc(&m4, &s4);
		parse(&b, &p);
		CHECK_EQ_INT(p.err, 0);
		CHECK_EQ_INT(p.count, 4);
		free(p.items);
		mm_buf_free(&b);
		m4.vt->destroy(&m4, s4.b);
	}
	m.vt->destroy(&m, st.b);
}

static int cmp_desc_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x > y ? -1 : x < y;
}

/* The encode-time reduction to K subtracts the (K+1)-th largest counter:
 * checked against a sort for counters on both sides of the threshold
 * search's histogram (values below 64) and its bisection (64 and up),
 * ties across that boundary included. */
TEST(reduction_threshold_is_the_k_plus_first_counter)
{
	static const uint64_t fixed[][8] = {
		{5, 3, 3, 2, 1}, {200, 150, 100, 99, 64, 63, 1}, {64, 64, 64, 63},
		{65, 64, 63, 63}, {63, 63, 63, 2}, {1000, 900, 64, 64, 64, 1},
	};
	static const uint32_t fixed_k[] = {2, 3, 2, 2, 2, 2};
	uint64_t counts[64], sorted[64];
	char name[16];

	for (int round = 0; round < 300; round++) {
		uint32_t n, k;
		mm_monoid_t m;
		state_t st;
		mm_buf_t b;
		parsed_t p;
		uint64_t thr, total = 0;
		uint32_t want = 0;

		if (round < 6) {
			k = fixed_k[round];
			for (n = 0; n < 8 && fixed[round][n]; n++)
				counts[n] = fixed[round][n];
		} else {
			k = 1 + (uint32_t)(unit_xorshift64(&rng) % 8);
			n = k + 1 + (uint32_t)(unit_xorshift64(&rng) % 50);
			for (uint32_t i = 0; i < n; i++)
				counts[i] = 1 + unit_xorshift64(&rng) % (round % 2 ? 40 : 160);
		}
		m = topk(k);
		m.vt->init(&m, st.b);
		for (uint32_t i = 0; i < n; i++) {
			snprintf(name, sizeof(name), "i%u", i);
			for (uint64_t c = 0; c < counts[i]; c++)
				REQUIRE(add_str(&m, &st, name) == 0);
			total += counts[i];
		}
		memcpy(sorted, counts, n * sizeof(*counts));
		qsort(sorted, n, sizeof(*sorted), cmp_desc_u64);
		thr = sorted[k];
		for (uint32_t i = 0; i < n; i++)
			want += counts[i] > thr;
		b = enc(&m, &st);
		parse(&b, &p);
		CHECK_EQ_INT(p.n, total);
		CHECK_EQ_INT(p.err, thr);
		CHECK_EQ_INT(p.count, want);
		for (uint32_t i = 0; i < n; i++) {
			snprintf(name, sizeof(name), "i%u", i);
			CHECK_EQ_INT(lower_of(&p, name), counts[i] > thr ? counts[i] - thr : 0);
		}
		free(p.items);
		mm_buf_free(&b);
		m.vt->destroy(&m, st.b);
	}
}

/* A reference of the in-memory summary: the items in insertion order, a
 * new one appended, and past 1 024 items (the limit for k below 128) every
 * counter loses the 513th largest and those at or below it go. */
typedef struct ref_item {
	uint32_t id;
	uint64_t count;
} ref_item_t;

static int cmp_desc_ref(const void *a, const void *b)
{
	uint64_t x = ((const ref_item_t *)a)->count, y = ((const ref_item_t *)b)->count;

	return x < y ? 1 : x > y ? -1 : 0;
}

/* The (c+1)-th largest count of r[0..n), n > c. */
static uint64_t ref_threshold(const ref_item_t *r, uint32_t n, uint32_t c)
{
	ref_item_t *s = malloc(n * sizeof(*s));
	uint64_t thr;

	memcpy(s, r, n * sizeof(*s));
	qsort(s, n, sizeof(*s), cmp_desc_ref);
	thr = s[c].count;
	free(s);
	return thr;
}

/* Whether the encoding of st gives the reference's view: its K largest
 * counters above the (K+1)-th, the error, the total; prints the first
 * difference. */
static int matches_reference(const mm_monoid_t *m, const state_t *st, const ref_item_t *ref,
			     uint32_t n, uint64_t err, uint64_t total, uint32_t k)
{
	uint64_t thr = n > k ? ref_threshold(ref, n, k) : 0;
	uint32_t want = 0, bad = 0;
	char name[16];
	mm_buf_t b = enc(m, st);
	parsed_t p;

	parse(&b, &p);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t got, exp = ref[i].count > thr ? ref[i].count - thr : 0;

		want += exp > 0;
		snprintf(name, sizeof(name), "e%u", ref[i].id);
		if ((got = lower_of(&p, name)) != exp && bad++ == 0)
			printf("#   %s: %" PRIu64 " where the reference has %" PRIu64 "\n", name, got,
			       exp);
	}
	if (p.n != total || p.err != err + thr || p.count != want) {
		printf("#   n %" PRIu64 " err %" PRIu64 " items %u; the reference: %" PRIu64
		       " %" PRIu64 " %u\n",
		       p.n, p.err, p.count, total, err + thr, want);
		bad++;
	}
	free(p.items);
	mm_buf_free(&b);
	return bad == 0;
}

/*
 * Adds of a skewed stream of 3 000 names, so that the summary's table grows
 * its index from 32 slots to 4 096 (a reserve that rebuilds the index lands
 * between an add's find and its insert), reduces every few hundred new
 * items, and takes items back after they were reduced away: after every add
 * of the first 1 100 (every growth) and every 97th after, the encoding must
 * give the reference's counters, error and number of items. A new item goes
 * into the slot its find ended at unless the index was rebuilt, and a
 * reduction subtracts and compacts in one pass; this checks both against
 * the plain algorithm, with a K as large as the view can be.
 */
TEST(memory_reductions_match_a_reference)
{
	enum { K = 127, LIMIT = 1024, ADDS = 30000 };
	ref_item_t *ref = malloc((LIMIT + 1) * sizeof(*ref));
	mm_monoid_t m = topk(K);
	uint32_t n = 0, bad = 0;
	uint64_t err = 0, total = 0;
	char name[16];
	state_t st;

	m.vt->init(&m, st.b);
	for (uint32_t a = 0; a < ADDS; a++) {
		uint32_t id = (uint32_t)(unit_xorshift64(&rng) % (1 + unit_xorshift64(&rng) % 3000)), i;

		snprintf(name, sizeof(name), "e%u", id);
		REQUIRE(add_str(&m, &st, name) == 0);
		total++;
		for (i = 0; i < n && ref[i].id != id; i++)
			;
		if (i == n)
			ref[n++] = (ref_item_t){id, 0};
		ref[i].count++;
		if (n > LIMIT) {
			uint64_t t = ref_threshold(ref, n, LIMIT / 2);
			uint32_t kept = 0;

			for (i = 0; i < n; i++)
				if (ref[i].count > t)
					ref[kept++] = (ref_item_t){ref[i].id, ref[i].count - t};
			n = kept;
			err += t;
		}
		if ((a < 1100 || a % 97 == 0) && !matches_reference(&m, &st, ref, n, err, total, K) &&
		    bad++ < 3)
			printf("#   after add %u\n", a);
	}
	CHECK_EQ_INT(bad, 0);
	CHECK(err > 0); /* the stream did reduce */
	m.vt->destroy(&m, st.b);
	free(ref);
}

TEST(json_escaping)
{
	mm_monoid_t m = topk(8);
	state_t st;
	mm_buf_t b = {0};
	/* Listed in the canonical order: all counts 1, bytes ascending. */
	const char *want = "{\"k\":8,\"n\":5,\"error\":0,\"items\":["
			   "{\"item\":\"\",\"count\":1,\"lower\":1,\"upper\":1},"
			   "{\"item\":\"\\u0001\\n\",\"count\":1,\"lower\":1,\"upper\":1},"
			   "{\"item\":\"q\\\"b\\\\s\",\"count\":1,\"lower\":1,\"upper\":1},"
			   "{\"item\":\"x\\ufffdy\",\"count\":1,\"lower\":1,\"upper\":1},"
			   "{\"item\":\"\xc3\xa9t\xc3\xa9\",\"count\":1,\"lower\":1,\"upper\":1}]}";

	m.vt->init(&m, st.b);
	add(&m, &st, "\x01\n", 2);
	add(&m, &st, "q\"b\\s", 5);
	add(&m, &st, "\xc3\xa9t\xc3\xa9", 5);
	add(&m, &st, "x\xffy", 3);
	add(&m, &st, "", 0);
	CHECK_EQ_INT(m.vt->to_json(&m, st.b, &b), 0);
	if (!(b.len == strlen(want) && memcmp(b.p, want, b.len) == 0))
		printf("# got %.*s\n", (int)b.len, (char *)b.p);
	CHECK(b.len == strlen(want) && memcmp(b.p, want, b.len) == 0);
	mm_buf_free(&b);
	m.vt->destroy(&m, st.b);
}

TEST(type_errors)
{
	mm_monoid_t m = topk(4);
	state_t st;
	mm_value_t v = {.type = MM_VAL_INT, .i = 3};

	m.vt->init(&m, st.b);
	CHECK_EQ_INT(m.vt->add(&m, st.b, &v), MM_ETYPE);
	v.type = MM_VAL_NONE;
	CHECK_EQ_INT(m.vt->add(&m, st.b, &v), MM_ETYPE);
	CHECK(m.vt->is_identity(&m, st.b));
	m.vt->destroy(&m, st.b);
}

/* Fills st with `events` draws over `distinct` items named "i<n>". */
static void fill(const mm_monoid_t *m, state_t *st, int events, uint32_t distinct,
		 uint64_t *truth)
{
	char s[32];

	m->vt->init(m, st->b);
	for (int i = 0; i < events; i++) {
		/* Squaring skews the draw so counters differ. */
		uint64_t r = unit_xorshift64(&rng) % distinct;
		uint32_t item = (uint32_t)(r * r / distinct);

		snprintf(s, sizeof(s), "i%" PRIu32, item);
		if (add_str(m, st, s) != 0)
			abort();
		if (truth)
			truth[item]++;
	}
}

static void check_laws(const mm_monoid_t *m, int events, uint32_t distinct, int expect_assoc)
{
	state_t a, b, c, ab, ab_c, bc, a_bc, ba, x;

	fill(m, &a, events, distinct, NULL);
	fill(m, &b, events, distinct, NULL);
	fill(m, &c, events, distinct, NULL);

	copy(m, &ab, &a);
	CHECK_EQ_INT(m->vt->merge(m, ab.b, b.b), 0);
	copy(m, &ba, &b);
	CHECK_EQ_INT(m->vt->merge(m, ba.b, a.b), 0);
	CHECK(same(m, &ab, &ba));

	copy(m, &ab_c, &ab);
	CHECK_EQ_INT(m->vt->merge(m, ab_c.b, c.b), 0);
	copy(m, &bc, &b);
	CHECK_EQ_INT(m->vt->merge(m, bc.b, c.b), 0);
	copy(m, &a_bc, &a);
	CHECK_EQ_INT(m->vt->merge(m, a_bc.b, bc.b), 0);
	if (expect_assoc)
		CHECK(same(m, &ab_c, &a_bc));

	/* Round trip: decode(encode(x)) encodes to the same bytes. */
	copy(m, &x, &ab_c);
	CHECK_EQ_INT(roundtrip(m, &x), 0);
	CHECK(same(m, &x, &ab_c));

	/* add(x, v) == merge(x, add(init, v)). */
	{
		state_t s1, one;

		copy(m, &s1, &a);
		m->vt->init(m, one.b);
		add_str(m, &one, "i1");
		CHECK_EQ_INT(m->vt->merge(m, s1.b, one.b), 0);
		add_str(m, &a, "i1");
		CHECK(same(m, &a, &s1));
		m->vt->destroy(m, s1.b);
		m->vt->destroy(m, one.b);
	}

	m->vt->destroy(m, a.b);
	m->vt->destroy(m, b.b);
	m->vt->destroy(m, c.b);
	m->vt->destroy(m, ab.b);
	m->vt->destroy(m, ba.b);
	m->vt->destroy(m, ab_c.b);
	m->vt->destroy(m, bc.b);
	m->vt->destroy(m, a_bc.b);
	m->vt->destroy(m, x.b);
}

TEST(laws_without_memory_reductions)
{
	/* Up to 300 distinct items in all: the in-memory tables stay exact, so
	 * all laws hold exactly even though encode reduces to K. */
	for (int rep = 0; rep < 20; rep++) {
		mm_monoid_t m = topk(rep % 2 ? 4 : 32);

		check_laws(&m, 200 + rep * 50, 50 + 12 * (uint32_t)rep, 1);
	}
}

TEST(laws_with_memory_reductions)
{
	/* 5000 distinct items per operand exceed the in-memory limit of 1024:
	 * commutativity and the round trip still hold exactly (associativity is
	 * checked through the bounds in merge_groupings_keep_bounds). */
	mm_monoid_t m = topk(4);

	check_laws(&m, 20000, 5000, 0);
}

/* Checks lower <= true <= upper for every item, err <= n/(K+1) and that
 * every item above n/(K+1) is present. */
static void check_bounds(const mm_monoid_t *m, const state_t *st, const uint64_t *truth,
			 uint32_t distinct)
{
	mm_buf_t b = enc(m, st);
	parsed_t p;
	char s[32];
	uint64_t n = 0, sum = 0;
	int bad = 0;

	parse(&b, &p);
	for (uint32_t i = 0; i < distinct; i++)
		n += truth[i];
	CHECK_EQ_INT(p.n, n);
	CHECK(p.count <= m->p.k);
	CHECK(p.err * ((uint64_t)m->p.k + 1) <= n);
	for (uint32_t i = 0; i < p.count; i++)
		sum += p.items[i].count;
	CHECK(sum + p.err * ((uint64_t)m->p.k + 1) <= n);
	for (uint32_t i = 0; i < distinct; i++) {
		uint64_t lo;

		snprintf(s, sizeof(s), "i%" PRIu32, i);
		lo = lower_of(&p, s);
		if (lo > truth[i] || truth[i] > lo + p.err)
			bad++;
		if (truth[i] * ((uint64_t)m->p.k + 1) > n && lo == 0)
			bad++;
	}
	CHECK_EQ_INT(bad, 0);
	free(p.items);
	mm_buf_free(&b);
}

TEST(merge_groupings_keep_bounds)
{
	enum { DISTINCT = 6000 };
	mm_monoid_t m = topk(8);
	uint64_t *truth = calloc(DISTINCT, sizeof(*truth));
	state_t a, b, c, t, ab_c, a_bc;

	REQUIRE(truth != NULL);
	fill(&m, &a, 30000, DISTINCT, truth);
	fill(&m, &b, 30000, DISTINCT, truth);
	fill(&m, &c, 30000, DISTINCT, truth);

	copy(&m, &ab_c, &a);
	m.vt->merge(&m, ab_c.b, b.b);
	m.vt->merge(&m, ab_c.b, c.b);
	copy(&m, &t, &b);
	m.vt->merge(&m, t.b, c.b);
	copy(&m, &a_bc, &a);
	m.vt->merge(&m, a_bc.b, t.b);
	check_bounds(&m, &ab_c, truth, DISTINCT);
	check_bounds(&m, &a_bc, truth, DISTINCT);
	printf("# (a+b)+c %s a+(b+c) after in-memory reductions\n",
	       same(&m, &ab_c, &a_bc) ? "==" : "!=");

	m.vt->destroy(&m, a.b);
	m.vt->destroy(&m, b.b);
	m.vt->destroy(&m, c.b);
	m.vt->destroy(&m, t.b);
	m.vt->destroy(&m, ab_c.b);
	m.vt->destroy(&m, a_bc.b);
	free(truth);
}

TEST(merge_with_itself)
{
	mm_monoid_t m = topk(4);
	state_t x, y;
	mm_buf_t b;
	parsed_t p;

	m.vt->init(&m, x.b);
	add_str(&m, &x, "a");
	add_str(&m, &x, "a");
	add_str(&m, &x, "b");
	copy(&m, &y, &x);
	CHECK_EQ_INT(m.vt->merge(&m, x.b, x.b), 0);
	CHECK_EQ_INT(m.vt->merge(&m, y.b, y.b), 0);
	CHECK(same(&m, &x, &y));
	b = enc(&m, &x);
	parse(&b, &p);
	CHECK_EQ_INT(p.n, 6);
	REQUIRE(p.count == 2);
	CHECK_EQ_INT(p.items[0].count, 4);
	CHECK_EQ_INT(p.items[1].count, 2);
	free(p.items);
	mm_buf_free(&b);
	m.vt->destroy(&m, x.b);
	m.vt->destroy(&m, y.b);
}

TEST(adversarial_uniform_stream)
{
	/* Every item distinct once per round: the worst case for Misra-Gries. */
	enum { DISTINCT = 3000 };
	mm_monoid_t m = topk(16);
	uint64_t truth[DISTINCT] = {0};
	state_t st;
	char s[32];

	m.vt->init(&m, st.b);
	for (int round = 0; round < 3; round++)
		for (uint32_t i = 0; i < DISTINCT; i++) {
			snprintf(s, sizeof(s), "i%" PRIu32, i);
			add_str(&m, &st, s);
			truth[i]++;
		}
	for (int i = 0; i < 500; i++) {
		add_str(&m, &st, "i7");
		truth[7]++;
	}
	check_bounds(&m, &st, truth, DISTINCT);
	CHECK_EQ_INT(roundtrip(&m, &st), 0);
	check_bounds(&m, &st, truth, DISTINCT);
	m.vt->destroy(&m, st.b);
}

/* Zipf(s) over `items` by inverse CDF: cdf[i] = sum of 1/(j+1)^s for j <= i. */
static uint32_t zipf_draw(const double *cdf, uint32_t items)
{
	double u = (double)(unit_xorshift64(&rng) >> 11) * 0x1.0p-53 * cdf[items - 1];
	uint32_t lo = 0, hi = items - 1;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (cdf[mid] > u)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

static void zipf_run(uint32_t k, const uint32_t *stream, uint32_t events, uint32_t items,
		     const uint64_t *truth)
{
	mm_monoid_t m = topk(k);
	state_t acc, delta;
	char s[32];
	mm_buf_t b;
	parsed_t p;
	uint32_t top[3];

	m.vt->init(&m, acc.b);
	for (uint32_t chunk = 0; chunk < 10; chunk++) {
		m.vt->init(&m, delta.b);
		for (uint32_t i = chunk * (events / 10); i < (chunk + 1) * (events / 10); i++) {
			snprintf(s, sizeof(s), "i%" PRIu32, stream[i]);
			add_str(&m, &delta, s);
		}
		REQUIRE(m.vt->merge(&m, acc.b, delta.b) == 0);
		m.vt->destroy(&m, delta.b);
		REQUIRE(roundtrip(&m, &acc) == 0);
	}
	check_bounds(&m, &acc, truth, items);

	b = enc(&m, &acc);
	parse(&b, &p);
	/* The three most frequent items by true count (ties: lowest index). */
	for (int j = 0; j < 3; j++) {
		int have = 0;

		for (uint32_t i = 0; i < items; i++) {
			int taken = 0;

			for (int q = 0; q < j; q++)
				taken |= top[q] == i;
			if (!taken && (!have || truth[i] > truth[top[j]])) {
				top[j] = i;
				have = 1;
			}
		}
	}
	for (int j = 0; j < 3; j++) {
		uint64_t lo;

		snprintf(s, sizeof(s), "i%" PRIu32, top[j]);
		lo = lower_of(&p, s);
		printf("# K=%" PRIu32 " %s: true %" PRIu64 ", estimate [%" PRIu64 ", %" PRIu64 "]\n",
		       k, s, truth[top[j]], lo, lo + p.err);
		CHECK(lo <= truth[top[j]] && truth[top[j]] <= lo + p.err);
	}
	printf("# K=%" PRIu32 " n=%" PRIu64 " error=%" PRIu64 " (bound n/(K+1)=%" PRIu64
	       "), %" PRIu32 " items stored\n",
	       k, p.n, p.err, p.n / (k + 1), p.count);
	free(p.items);
	mm_buf_free(&b);
	m.vt->destroy(&m, acc.b);
}

TEST(zipf_accuracy)
{
	enum { ITEMS = 100000, EVENTS = 1000000 };
	double *cdf = malloc(ITEMS * sizeof(*cdf));
	uint32_t *stream = malloc(EVENTS * sizeof(*stream));
	uint64_t *truth = calloc(ITEMS, sizeof(*truth));
	double acc = 0;

	REQUIRE(cdf && stream && truth);
	for (uint32_t i = 0; i < ITEMS; i++) {
		acc += pow(i + 1.0, -1.1);
		cdf[i] = acc;
	}
	rng = 0x2545f4914f6cdd1dULL;
	for (uint32_t i = 0; i < EVENTS; i++) {
		stream[i] = zipf_draw(cdf, ITEMS);
		truth[stream[i]]++;
	}
	zipf_run(32, stream, EVENTS, ITEMS, truth);
	zipf_run(10, stream, EVENTS, ITEMS, truth);
	free(cdf);
	free(stream);
	free(truth);
}

/* A valid encoding with K=4 to corrupt: items b:5, a:2, c:2, n=12, err=1. */
static void sample(mm_buf_t *b)
{
	mm_monoid_t m = topk(4);
	state_t st;
	static const char *const ev[] = {"b", "b", "b", "b", "b", "a", "a", "c", "c", "d", "e", "f", "g", "h"};

	m.vt->init(&m, st.b);
	for (size_t i = 0; i < sizeof(ev) / sizeof(*ev); i++)
		add_str(&m, &st, ev[i]);
	*b = enc(&m, &st);
	m.vt->destroy(&m, st.b);
}

/* Builds an encoding by hand (K=4) for the reject table. */
static void build(mm_buf_t *b, uint32_t k, uint64_t n, uint64_t err, uint32_t count,
		  const uint64_t *counts, const char *const *items)
{
	b->len = 0;
	mm_buf_append(b, "MMTK\x01\0\0\0", 8);
	mm_buf_put_u32le(b, k);
	mm_buf_put_u64le(b, n);
	mm_buf_put_u64le(b, err);
	mm_buf_put_u32le(b, count);
	for (uint32_t i = 0; i < count; i++) {
		mm_buf_put_u64le(b, counts[i]);
		mm_buf_put_u32le(b, (uint32_t)strlen(items[i]));
		mm_buf_append(b, items[i], strlen(items[i]));
	}
}

TEST(decode_rejects)
{
	mm_monoid_t m = topk(4);
	state_t st;
	mm_buf_t b = {0};
	static const char *const ab[] = {"a", "b"}, *const aa[] = {"a", "a"},
				 *const ba[] = {"b", "a"}, *const aba[] = {"a", "b", "a"},
				 *const five[] = {"a", "b", "c", "d", "e"};
	static const uint64_t c21[] = {2, 1}, c12[] = {1, 2}, c11[] = {1, 1}, c0[] = {0, 1},
			      c321[] = {3, 2, 1}, c5[] = {1, 1, 1, 1, 1};

	m.vt->init(&m, st.b);

	/* Sanity: the hand builder makes valid encodings. */
	build(&b, 4, 3, 0, 2, c21, ab);
	CHECK_EQ_INT(m.vt->decode(&m, st.b, b.p, b.len), 0);
	CHECK(!m.vt->is_identity(&m, st.b));

#define REJECT(what)                                                                 \
	do {                                                                         \
		CHECK_EQ_INT(m.vt->decode(&m, st.b, b.p, b.len), MM_ECORRUPT);       \
		CHECK(m.vt->is_identity(&m, st.b));                                  \
		if (mm_diag_code() != MM_ECORRUPT || strstr(mm_diag_msg(), what) == NULL) \
			printf("# unexpected detail: %s\n", mm_diag_msg());          \
		CHECK(strstr(mm_diag_msg(), what) != NULL);                          \
	} while (0)

	build(&b, 8, 3, 0, 2, c21, ab);
	REJECT("k mismatch");
	build(&b, 4, 3, 0, 2, c21, ab);
	b.p[0] = 'X';
	REJECT("magic");
	build(&b, 4, 3, 0, 2, c21, ab);
	b.p[4] = 2;
	REJECT("version");
	build(&b, 4, 3, 0, 2, c21, ab);
	b.p[6] = 1;
	REJECT("reserved");
	build(&b, 4, 5, 0, 5, c5, five);
	REJECT("exceed");
	build(&b, 4, 3, 0, 2, c0, ab);
	REJECT("zero count");
	build(&b, 4, 3, 0, 2, c12, ab);
	REJECT("out of order");
	build(&b, 4, 3, 0, 2, c11, ba);
	REJECT("out of order");
	build(&b, 4, 3, 0, 2, c11, aa);
	REJECT("out of order");
	build(&b, 4, 6, 0, 3, c321, aba);
	REJECT("duplicate");
	build(&b, 4, 3, 0, 2, c21, ab);
	mm_buf_put_u8(&b, 0);
	REJECT("trailing");
	build(&b, 4, 2, 0, 2, c21, ab);
	REJECT("inconsistent");
	build(&b, 4, 12, 2, 2, c21, ab);
	REJECT("inconsistent");
	build(&b, 4, UINT64_MAX, UINT64_MAX / 2, 2, c21, ab);
	REJECT("inconsistent");
	build(&b, 4, 3, 0, 2, c21, ab);
	mm_set_u32le(b.p + 32 + 8, 1000);
	REJECT("exceeds the input");
	build(&b, 4, 0, 0, 0, NULL, NULL);
	mm_buf_put_u8(&b, 7);
	REJECT("trailing");
	b.len = 31;
	REJECT("truncated");
#undef REJECT

	/* n > 0 with no items is a valid (fully reduced) state. */
	build(&b, 4, 10, 2, 0, NULL, NULL);
	CHECK_EQ_INT(m.vt->decode(&m, st.b, b.p, b.len), 0);
	CHECK(!m.vt->is_identity(&m, st.b));
	m.vt->destroy(&m, st.b);
	mm_buf_free(&b);
}

TEST(truncations_and_flips)
{
	mm_monoid_t m = topk(4);
	mm_buf_t b;

	sample(&b);
	check_truncations_and_flips(&m, b.p, b.len);
	mm_buf_free(&b);
}

TEST(decode_replaces_state)
{
	mm_monoid_t m = topk(4);
	state_t st, other;
	mm_buf_t b;

	sample(&b);
	m.vt->init(&m, st.b);
	add_str(&m, &st, "zzz");
	CHECK_EQ_INT(m.vt->decode(&m, st.b, b.p, b.len), 0);
	m.vt->init(&m, other.b);
	CHECK_EQ_INT(m.vt->decode(&m, other.b, b.p, b.len), 0);
	CHECK(same(&m, &st, &other));
	/* A failed decode leaves the identity, freeing what was there. */
	CHECK_EQ_INT(m.vt->decode(&m, st.b, b.p, 5), MM_ECORRUPT);
	CHECK(m.vt->is_identity(&m, st.b));
	m.vt->destroy(&m, st.b);
	m.vt->destroy(&m, other.b);
	mm_buf_free(&b);
}

int main(void)
{
	RUN(params);
	RUN(identity);
	RUN(exact_small);
	RUN(reduction_threshold_is_the_k_plus_first_counter);
	RUN(memory_reductions_match_a_reference);
	RUN(json_escaping);
	RUN(type_errors);
	RUN(laws_without_memory_reductions);
	RUN(laws_with_memory_reductions);
	RUN(merge_groupings_keep_bounds);
	RUN(merge_with_itself);
	RUN(adversarial_uniform_stream);
	RUN(zipf_accuracy);
	RUN(decode_rejects);
	RUN(truncations_and_flips);
	RUN(decode_replaces_state);
	UNIT_DONE();
}
