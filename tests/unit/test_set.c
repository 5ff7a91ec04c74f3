/*
 * test_set.c: the bounded set monoid: laws, agreement with a reference model
 * (the max_size smallest members of the union), truncation, the byte format
 * and corrupt input.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/error.h"
#include "monoid/monoid.h"
#include "monoid_state.h"
#include "unit.h"

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static mm_monoid_t set(uint32_t max_size)
{
	mm_monoid_t m = {.vt = &mm_monoid_set_vtable};

	m.p.max_size = max_size;
	if (m.vt->check(&m.p) != 0)
		abort();
	return m;
}

/* The reference model: the strings ever added, as NUL-free C strings. */
typedef struct model {
	char **s;
	size_t n, cap;
} model_t;

static void model_add(model_t *md, const char *s)
{
	if (md->n == md->cap) {
		md->cap = md->cap ? 2 * md->cap : 64;
		md->s = realloc(md->s, md->cap * sizeof(*md->s));
	}
	md->s[md->n++] = strdup(s);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The canonical encoding of the model's value under max_size, written from
 * the documented format, independently of set.c. */
static mm_buf_t model_encode(const model_t *md, uint32_t max_size)
{
	char **v = malloc((md->n + 1) * sizeof(*v));
	size_t n = 0;
	mm_buf_t b = {0};

	memcpy(v, md->s, md->n * sizeof(*v));
	qsort(v, md->n, sizeof(*v), cmp_str);
	for (size_t i = 0; i < md->n; i++)
		if (n == 0 || strcmp(v[n - 1], v[i]) != 0)
			v[n++] = v[i];
	mm_buf_append(&b, "MMST\x01", 5);
	mm_buf_put_u8(&b, n > max_size ? 1 : 0);
	mm_buf_put_u32le(&b, (uint32_t)(n > max_size ? max_size : n));
	for (size_t i = 0; i < n && i < max_size; i++) {
		mm_buf_put_u32le(&b, (uint32_t)strlen(v[i]));
		mm_buf_append(&b, v[i], strlen(v[i]));
	}
	free(v);
	return b;
}

static void model_free(model_t *md)
{
	for (size_t i = 0; i < md->n; i++)
		free(md->s[i]);
	free(md->s);
	memset(md, 0, sizeof(*md));
}

static int matches(const mm_monoid_t *m, const state_t *st, const model_t *md)
{
	mm_buf_t x = enc(m, st), y = model_encode(md, m->p.max_size);
	int eq = x.len == y.len && memcmp(x.p, y.p, x.len) == 0;

	mm_buf_free(&x);
	mm_buf_free(&y);
	return eq;
}

/* Adds n random members drawn from `pool` names to st and to the models. */
static void fill(const mm_monoid_t *m, state_t *st, int n, uint32_t pool, model_t *md,
		 model_t *all)
{
	char s[32];

	m->vt->init(m, st->b);
	for (int i = 0; i < n; i++) {
		/* Varying lengths make prefixes ("m1" < "m10") part of the order. */
		snprintf(s, sizeof(s), "m%" PRIu64, unit_xorshift64(&rng) % pool);
		if (add_str(m, st, s) != 0)
			abort();
		model_add(md, s);
		model_add(all, s);
	}
}

TEST(params)
{
	mm_monoid_params_t p = {0};

	CHECK_EQ_INT(mm_monoid_set_vtable.check(&p), 0);
	CHECK_EQ_INT(p.max_size, 1000);
	p.max_size = 1000000;
	CHECK_EQ_INT(mm_monoid_set_vtable.check(&p), 0);
	p.max_size = 1000001;
	CHECK_EQ_INT(mm_monoid_set_vtable.check(&p), MM_EINVAL);
	CHECK_EQ_INT(mm_monoid_set_vtable.value_kind, MM_VK_STRING);
}

TEST(identity_and_basics)
{
	mm_monoid_t m = set(3);
	state_t id, x, y;
	mm_buf_t b;
	mm_value_t v = {.type = MM_VAL_INT, .i = 1};

	m.vt->init(&m, id.b);
	CHECK(m.vt->is_identity(&m, id.b));
	CHECK(json_is(&m, &id, "{\"size\":0,\"truncated\":false,\"members\":[]}"));
	b = enc(&m, &id);
	CHECK(b.len == 10 && memcmp(b.p, "MMST\x01\0\0\0\0\0", 10) == 0);
	m.vt->init(&m, x.b);
	CHECK_EQ_INT(m.vt->decode(&m, x.b, b.p, b.len), 0);
	CHECK(m.vt->is_identity(&m, x.b));
	mm_buf_free(&b);
	CHECK_EQ_INT(m.vt->add(&m, x.b, &v), MM_ETYPE);
	CHECK(m.vt->is_identity(&m, x.b));

	add_str(&m, &x, "b");
	add_str(&m, &x, "a");
	add_str(&m, &x, "b");
	CHECK(!m.vt->is_identity(&m, x.b));
	CHECK(json_is(&m, &x, "{\"size\":2,\"truncated\":false,\"members\":[\"a\",\"b\"]}"));
	copy(&m, &y, &x);
	CHECK_EQ_INT(m.vt->merge(&m, y.b, id.b), 0);
	CHECK(same(&m, &x, &y));
	m.vt->destroy(&m, y.b);
	copy(&m, &y, &id);
	CHECK_EQ_INT(m.vt->merge(&m, y.b, x.b), 0);
	CHECK(same(&m, &x, &y));

	/* Over max_size: the smallest members stay, bytewise, prefix first. */
	add_str(&m, &x, "ab");
	add_str(&m, &x, "");
	CHECK(json_is(&m, &x, "{\"size\":3,\"truncated\":true,\"members\":[\"\",\"a\",\"ab\"]}"));
	/* Larger than everything kept: dropped, still truncated. */
	add_str(&m, &x, "zzz");
	add(&m, &x, "\xff", 1);
	CHECK(json_is(&m, &x, "{\"size\":3,\"truncated\":true,\"members\":[\"\",\"a\",\"ab\"]}"));
	CHECK_EQ_INT(roundtrip(&m, &x), 0);
	CHECK(json_is(&m, &x, "{\"size\":3,\"truncated\":true,\"members\":[\"\",\"a\",\"ab\"]}"));
	/* A smaller member still enters a truncated set. */
	add(&m, &x, "\0", 1);
	CHECK(json_is(&m, &x, "{\"size\":3,\"truncated\":true,\"members\":[\"\",\"\\u0000\",\"a\"]}"));
	m.vt->destroy(&m, x.b);
	m.vt->destroy(&m, y.b);
	m.vt->destroy(&m, id.b);
}

TEST(json_escaping)
{
	mm_monoid_t m = set(10);
	state_t st;

	m.vt->init(&m, st.b);
	add(&m, &st, "q\"\\", 3);
	add(&m, &st, "\t\x1f", 2);
	add(&m, &st, "\xc3\xa9", 2);
	add(&m, &st, "\xc3(", 2);
	CHECK(json_is(&m, &st, "{\"size\":4,\"truncated\":false,\"members\":"
			       "[\"\\t\\u001f\",\"q\\\"\\\\\",\"\\ufffd(\",\"\xc3\xa9\"]}"));
	m.vt->destroy(&m, st.b);
}

static void check_laws(uint32_t max_size, int n, uint32_t pool)
{
	mm_monoid_t m = set(max_size);
	model_t ma = {0}, mb = {0}, mc = {0}, all = {0};
	state_t a, b, c, ab_c, bc, x;

	fill(&m, &a, n, pool, &ma, &all);
	fill(&m, &b, n / 2, pool, &mb, &all);
	fill(&m, &c, n * 2, pool, &mc, &all);
	CHECK(matches(&m, &a, &ma));
	CHECK(matches(&m, &b, &mb));
	CHECK(matches(&m, &c, &mc));

	check_merge_laws(&m, &a, &b, &c, &ab_c, &bc);
	CHECK(matches(&m, &ab_c, &all));

	/* Merging decoded states (as the runtime does) gives the same value. */
	copy(&m, &x, &a);
	CHECK_EQ_INT(roundtrip(&m, &x), 0);
	CHECK(same(&m, &x, &a));
	CHECK_EQ_INT(roundtrip(&m, &bc), 0);
	CHECK_EQ_INT(m.vt->merge(&m, x.b, bc.b), 0);
	CHECK(same(&m, &x, &ab_c));

	/* add(x, v) == merge(x, add(init, v)), for a small and a large v. */
	for (int i = 0; i < 2; i++) {
		const char *v = i ? "zz" : "";
		state_t s1, one;

		copy(&m, &s1, &a);
		m.vt->init(&m, one.b);
		add_str(&m, &one, v);
		CHECK_EQ_INT(m.vt->merge(&m, s1.b, one.b), 0);
		add_str(&m, &a, v);
		CHECK(same(&m, &a, &s1));
		m.vt->destroy(&m, s1.b);
		m.vt->destroy(&m, one.b);
	}

	m.vt->destroy(&m, a.b);
	m.vt->destroy(&m, b.b);
	m.vt->destroy(&m, c.b);
	m.vt->destroy(&m, ab_c.b);
	m.vt->destroy(&m, bc.b);
	m.vt->destroy(&m, x.b);
	model_free(&ma);
	model_free(&mb);
	model_free(&mc);
	model_free(&all);
}

TEST(laws_and_model)
{
	check_laws(1000, 300, 200);   /* no truncation */
	check_laws(1, 50, 30);        /* the smallest bound */
	check_laws(5, 200, 100);      /* truncation, no in-memory prune */
	check_laws(10, 3000, 100000); /* in-memory prunes and the cutoff */
	check_laws(200, 5000, 600);
}

TEST(merge_with_itself)
{
	mm_monoid_t m = set(4);
	state_t x, y;

	m.vt->init(&m, x.b);
	add_str(&m, &x, "b");
	add_str(&m, &x, "a");
	copy(&m, &y, &x);
	CHECK_EQ_INT(m.vt->merge(&m, x.b, x.b), 0);
	CHECK(same(&m, &x, &y));
	m.vt->destroy(&m, x.b);
	m.vt->destroy(&m, y.b);
}

/* Builds "MMST" encodings by hand for the reject table. */
static void build(mm_buf_t *b, uint8_t flags, uint32_t count, const char *const *members)
{
	b->len = 0;
	mm_buf_append(b, "MMST\x01", 5);
	mm_buf_put_u8(b, flags);
	mm_buf_put_u32le(b, count);
	for (uint32_t i = 0; i < count; i++) {
		mm_buf_put_u32le(b, (uint32_t)strlen(members[i]));
		mm_buf_append(b, members[i], strlen(members[i]));
	}
}

TEST(decode_rejects)
{
	mm_monoid_t m = set(3);
	state_t st;
	mm_buf_t b = {0};
	static const char *const ok[] = {"a", "ab", "b"}, *const four[] = {"a", "b", "c", "d"},
				 *const dup[] = {"a", "a"}, *const order[] = {"b", "a"},
				 *const prefix[] = {"ab", "a"};

	m.vt->init(&m, st.b);
	build(&b, 1, 3, ok);
	CHECK_EQ_INT(m.vt->decode(&m, st.b, b.p, b.len), 0);
	CHECK(json_is(&m, &st, "{\"size\":3,\"truncated\":true,\"members\":[\"a\",\"ab\",\"b\"]}"));

#define REJECT(what)                                                                 \
	do {                                                                         \
		CHECK_EQ_INT(m.vt->decode(&m, st.b, b.p, b.len), MM_ECORRUPT);       \
		CHECK(m.vt->is_identity(&m, st.b));                                  \
		if (strstr(mm_diag_msg(), what) == NULL)                             \
			printf("# unexpected detail: %s\n", mm_diag_msg());          \
		CHECK(strstr(mm_diag_msg(), what) != NULL);                          \
	} while (0)

	build(&b, 0, 3, ok);
	b.p[0] = 'm';
	REJECT("magic");
	build(&b, 0, 3, ok);
	b.p[4] = 0;
	REJECT("version");
	build(&b, 2, 3, ok);
	REJECT("flags");
	build(&b, 0, 4, four);
	REJECT("exceed");
	build(&b, 1, 2, ok);
	REJECT("max_size");
	build(&b, 1, 0, NULL);
	REJECT("max_size");
	build(&b, 0, 2, dup);
	REJECT("out of order");
	build(&b, 0, 2, order);
	REJECT("out of order");
	build(&b, 0, 2, prefix);
	REJECT("out of order");
	build(&b, 0, 3, ok);
	mm_buf_put_u8(&b, 'x');
	REJECT("trailing");
	build(&b, 0, 0, NULL);
	mm_buf_put_u8(&b, 'x');
	REJECT("trailing");
	build(&b, 0, 3, ok);
	mm_set_u32le(b.p + 10, 100);
	REJECT("exceeds the input");
	build(&b, 0, 3, ok);
	b.len = 9;
	REJECT("truncated");
#undef REJECT
	mm_buf_free(&b);
}

TEST(truncations_and_flips)
{
	mm_monoid_t m = set(6);
	state_t st;
	mm_buf_t b;
	static const char *const members[] = {"alpha", "b", "beta", "", "gamma", "\xff\xfe", "z"};

	m.vt->init(&m, st.b);
	for (size_t i = 0; i < sizeof(members) / sizeof(*members); i++)
		add_str(&m, &st, members[i]);
	add(&m, &st, "", 0);
	b = enc(&m, &st);
	m.vt->destroy(&m, st.b);
	check_truncations_and_flips(&m, b.p, b.len);
	mm_buf_free(&b);
}

TEST(many_members)
{
	/* 200000 distinct adds into max_size 1000: the 1000 smallest survive. */
	mm_monoid_t m = set(1000);
	model_t md = {0};
	state_t st;
	char s[32];

	m.vt->init(&m, st.b);
	for (int i = 0; i < 200000; i++) {
		snprintf(s, sizeof(s), "%08" PRIx64, unit_xorshift64(&rng) & 0xffffffffu);
		add_str(&m, &st, s);
		model_add(&md, s);
	}
	CHECK(matches(&m, &st, &md));
	m.vt->destroy(&m, st.b);
	model_free(&md);
}

int main(void)
{
	RUN(params);
	RUN(identity_and_basics);
	RUN(json_escaping);
	RUN(laws_and_model);
	RUN(merge_with_itself);
	RUN(decode_rejects);
	RUN(truncations_and_flips);
	RUN(many_members);
	UNIT_DONE();
}
