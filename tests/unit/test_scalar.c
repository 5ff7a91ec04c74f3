/*
 * test_scalar.c: sum, count, min, max, first and last with known values,
 * their encodings byte for byte, their error paths, and the registry
 * functions (find, init with defaults, describe), and the decimal text that
 * sums and DynamoDB numbers are written with. The algebraic laws are in
 * test_monoid_laws.c.
 */
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "lib/buf.h"
#include "lib/error.h"
#include "monoid/monoid.h"
#include "unit.h"

/* Caller-owned state storage, aligned for any state layout. */
typedef union {
	max_align_t align;
	uint8_t b[MM_STATE_MAX];
} state_t;

static mm_monoid_t mk(const char *name, int is_float)
{
	mm_monoid_params_t p = {.is_float = is_float};
	mm_monoid_t m = {0};

	if (mm_monoid_init(&m, name, &p) != 0)
		printf("# cannot init %s: %s\n", name, mm_diag_msg());
	return m;
}

static int add_int(const mm_monoid_t *m, state_t *s, int64_t i, int64_t ts)
{
	mm_value_t v = {.type = MM_VAL_INT, .i = i, .ts_ms = ts};

	return m->vt->add(m, s, &v);
}

static int add_dbl(const mm_monoid_t *m, state_t *s, double d, int64_t ts)
{
	mm_value_t v = {.type = MM_VAL_DOUBLE, .d = d, .ts_ms = ts};

	return m->vt->add(m, s, &v);
}

static int add_str(const mm_monoid_t *m, state_t *s, const char *str, size_t len, int64_t ts)
{
	mm_value_t v = {.type = MM_VAL_STRING, .s = str, .len = len, .ts_ms = ts};

	return m->vt->add(m, s, &v);
}

/* 1 if st encodes to exactly the n bytes at want. */
static int enc_is(const mm_monoid_t *m, const state_t *s, const void *want, size_t n)
{
	mm_buf_t b = {0};
	int ok = m->vt->encode(m, s, &b) == 0 && b.len == n && memcmp(b.p, want, n) == 0;

	if (!ok) {
		printf("#   encoding (%zu bytes):", b.len);
		for (size_t i = 0; i < b.len; i++)
			printf(" %02x", b.p[i]);
		printf("\n");
	}
	mm_buf_free(&b);
	return ok;
}

/* 1 if to_json(st) is exactly want. */
static int json_is(const mm_monoid_t *m, const state_t *s, const char *want)
{
	mm_buf_t b = {0};
	int ok = m->vt->to_json(m, s, &b) == 0 && b.len == strlen(want) &&
		 memcmp(b.p, want, b.len) == 0;

	if (!ok)
		printf("#   json: %.*s\n#   want: %s\n", (int)b.len, (const char *)b.p, want);
	mm_buf_free(&b);
	return ok;
}

/* Decodes n bytes into a fresh state; returns the decode status. */
static int dec(const mm_monoid_t *m, state_t *s, const void *p, size_t n)
{
	m->vt->init(m, s);
	return m->vt->decode(m, s, p, n);
}

TEST(sum_int)
{
	mm_monoid_t m = mk("sum", 0);
	state_t s, t;
	static const uint8_t zero[8], minus2[8] = {0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

	m.vt->init(&m, &s);
	CHECK(m.vt->is_identity(&m, &s));
	CHECK(enc_is(&m, &s, zero, 8));
	CHECK(json_is(&m, &s, "{\"value\":0}"));
	CHECK_EQ_INT(add_int(&m, &s, 5, 0), 0);
	CHECK_EQ_INT(add_dbl(&m, &s, -7.0, 0), 0); /* integral doubles are converted */
	CHECK(!m.vt->is_identity(&m, &s));
	CHECK(enc_is(&m, &s, minus2, 8));
	CHECK(json_is(&m, &s, "{\"value\":-2}"));

	CHECK_EQ_INT(add_dbl(&m, &s, 2.5, 0), MM_ETYPE);
	CHECK_EQ_INT(add_dbl(&m, &s, NAN, 0), MM_ERANGE);
	CHECK_EQ_INT(add_dbl(&m, &s, INFINITY, 0), MM_ERANGE);
	CHECK_EQ_INT(add_dbl(&m, &s, 9223372036854775808.0, 0), MM_ERANGE);
	CHECK_EQ_INT(add_str(&m, &s, "1", 1, 0), MM_ETYPE);
	CHECK(enc_is(&m, &s, minus2, 8)); /* failed adds left it alone */

	/* Overflow is refused, by add and by merge, and leaves the state as it was. */
	m.vt->init(&m, &s);
	CHECK_EQ_INT(add_int(&m, &s, INT64_MAX, 0), 0);
	CHECK_EQ_INT(add_int(&m, &s, 1, 0), MM_ERANGE);
	CHECK(json_is(&m, &s, "{\"value\":9223372036854775807}"));
	m.vt->init(&m, &t);
	CHECK_EQ_INT(add_int(&m, &t, 1, 0), 0);
	CHECK_EQ_INT(m.vt->merge(&m, &s, &t), MM_ERANGE);
	CHECK(json_is(&m, &s, "{\"value\":9223372036854775807}"));
	CHECK_EQ_INT(add_int(&m, &t, INT64_MIN, 0), 0);
	CHECK(json_is(&m, &t, "{\"value\":-9223372036854775807}"));
	CHECK_EQ_INT(add_int(&m, &t, -1, 0), 0);
	CHECK(json_is(&m, &t, "{\"value\":-9223372036854775808}"));
	CHECK_EQ_INT(m.vt->merge(&m, &s, &t), 0);
	CHECK(json_is(&m, &s, "{\"value\":-1}"));

	/* Decoding: any 8 bytes are an int64; other lengths are corrupt. */
	CHECK_EQ_INT(dec(&m, &s, minus2, 8), 0);
	CHECK(json_is(&m, &s, "{\"value\":-2}"));
	CHECK_EQ_INT(dec(&m, &s, minus2, 7), MM_ECORRUPT);
	CHECK(strstr(mm_diag_msg(), "sum") != NULL);
	CHECK(m.vt->is_identity(&m, &s));
	CHECK_EQ_INT(dec(&m, &s, minus2, 0), MM_ECORRUPT);
}

TEST(sum_float)
{
	mm_monoid_t m = mk("sum", 1);
	state_t s;
	uint8_t b[8];

	m.vt->init(&m, &s);
	CHECK(json_is(&m, &s, "{\"value\":0}"));
	CHECK_EQ_INT(add_dbl(&m, &s, 0.1, 0), 0);
	CHECK(json_is(&m, &s, "{\"value\":0.1}"));
	CHECK_EQ_INT(add_dbl(&m, &s, 0.2, 0), 0);
	CHECK(json_is(&m, &s, "{\"value\":0.30000000000000004}"));
	CHECK_EQ_INT(add_int(&m, &s, 3, 0), 0);
	CHECK(json_is(&m, &s, "{\"value\":3.3}"));

	CHECK_EQ_INT(add_dbl(&m, &s, NAN, 0), MM_ERANGE);
	CHECK_EQ_INT(add_dbl(&m, &s, -INFINITY, 0), MM_ERANGE);
	CHECK_EQ_INT(add_str(&m, &s, "x", 1, 0), MM_ETYPE);
	m.vt->init(&m, &s);
	CHECK_EQ_INT(add_dbl(&m, &s, 1.5e308, 0), 0);
	CHECK_EQ_INT(add_dbl(&m, &s, 1.5e308, 0), MM_ERANGE);
	CHECK(json_is(&m, &s, "{\"value\":1.5e+308}"));

	/* A negative zero never makes the state differ from the identity. */
	m.vt->init(&m, &s);
	CHECK_EQ_INT(add_dbl(&m, &s, -0.0, 0), 0);
	CHECK(m.vt->is_identity(&m, &s));
	memset(b, 0, sizeof(b));
	CHECK(enc_is(&m, &s, b, 8));

	/* 1.0 is 0x3ff0000000000000. */
	b[6] = 0xf0;
	b[7] = 0x3f;
	CHECK_EQ_INT(dec(&m, &s, b, 8), 0);
	CHECK(json_is(&m, &s, "{\"value\":1}"));
	/* NaN, infinity and -0.0 are not canonical encodings. */
	b[6] = 0xf8;
	b[7] = 0x7f;
	CHECK_EQ_INT(dec(&m, &s, b, 8), MM_ECORRUPT);
	b[6] = 0xf0;
	CHECK_EQ_INT(dec(&m, &s, b, 8), MM_ECORRUPT);
	b[6] = 0;
	b[7] = 0x80;
	CHECK_EQ_INT(dec(&m, &s, b, 8), MM_ECORRUPT);
	CHECK(m.vt->is_identity(&m, &s));
}

TEST(count)
{
	mm_monoid_t m = mk("count", 0);
	state_t s, t;
	mm_value_t none = {.type = MM_VAL_NONE};
	static const uint8_t three[8] = {3},
			     max[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

	CHECK_EQ_INT(m.vt->value_kind, MM_VK_NONE);
	m.vt->init(&m, &s);
	CHECK(m.vt->is_identity(&m, &s));
	CHECK_EQ_INT(m.vt->add(&m, &s, &none), 0);
	CHECK_EQ_INT(add_str(&m, &s, "ignored", 7, 0), 0);
	CHECK_EQ_INT(add_dbl(&m, &s, NAN, 0), 0); /* the value is not looked at */
	CHECK(enc_is(&m, &s, three, 8));
	CHECK(json_is(&m, &s, "{\"value\":3}"));
	m.vt->init(&m, &t);
	CHECK_EQ_INT(m.vt->merge(&m, &t, &s), 0);
	CHECK_EQ_INT(m.vt->merge(&m, &t, &s), 0);
	CHECK(json_is(&m, &t, "{\"value\":6}"));

	CHECK_EQ_INT(dec(&m, &s, max, 8), 0);
	CHECK(json_is(&m, &s, "{\"value\":18446744073709551615}"));
	CHECK_EQ_INT(m.vt->add(&m, &s, &none), MM_ERANGE);
	CHECK_EQ_INT(m.vt->merge(&m, &s, &t), MM_ERANGE);
	CHECK(enc_is(&m, &s, max, 8));
	CHECK_EQ_INT(dec(&m, &s, max, 9), MM_ECORRUPT);
	CHECK(m.vt->is_identity(&m, &s));
}

TEST(min_max)
{
	mm_monoid_t mn = mk("min", 0), mx = mk("max", 0);
	state_t a, b;
	static const uint8_t unset[1] = {0};
	uint8_t set[9] = {1, 0, 0, 0, 0, 0, 0, 0xf8, 0xbf}; /* -1.5 */

	mn.vt->init(&mn, &a);
	mx.vt->init(&mx, &b);
	CHECK(mn.vt->is_identity(&mn, &a));
	CHECK(enc_is(&mn, &a, unset, 1));
	CHECK(json_is(&mn, &a, "{\"value\":null}"));
	CHECK(json_is(&mx, &b, "{\"value\":null}"));
	CHECK_EQ_INT(add_int(&mn, &a, 3, 0), 0);
	CHECK_EQ_INT(add_dbl(&mn, &a, -1.5, 0), 0);
	CHECK_EQ_INT(add_int(&mn, &a, 7, 0), 0);
	CHECK_EQ_INT(add_int(&mx, &b, 3, 0), 0);
	CHECK_EQ_INT(add_dbl(&mx, &b, -1.5, 0), 0);
	CHECK_EQ_INT(add_int(&mx, &b, 7, 0), 0);
	CHECK(json_is(&mn, &a, "{\"value\":-1.5}"));
	CHECK(json_is(&mx, &b, "{\"value\":7}"));
	CHECK(enc_is(&mn, &a, set, 9));
	CHECK(!mn.vt->is_identity(&mn, &a));

	CHECK_EQ_INT(add_dbl(&mn, &a, NAN, 0), MM_ERANGE);
	CHECK_EQ_INT(add_dbl(&mx, &b, INFINITY, 0), MM_ERANGE);
	CHECK_EQ_INT(add_str(&mn, &a, "1", 1, 0), MM_ETYPE);
	CHECK(enc_is(&mn, &a, set, 9));

	/* -0.0 and +0.0 give the same bytes in either order. */
	mn.vt->init(&mn, &a);
	CHECK_EQ_INT(add_dbl(&mn, &a, -0.0, 0), 0);
	CHECK_EQ_INT(add_dbl(&mn, &a, 0.0, 0), 0);
	mn.vt->init(&mn, &b);
	CHECK_EQ_INT(add_dbl(&mn, &b, 0.0, 0), 0);
	CHECK_EQ_INT(add_dbl(&mn, &b, -0.0, 0), 0);
	set[7] = set[8] = 0;
	CHECK(enc_is(&mn, &a, set, 9));
	CHECK(enc_is(&mn, &b, set, 9));
	CHECK(json_is(&mn, &a, "{\"value\":0}"));

	/* Merge keeps the extreme; an unset side changes nothing. */
	mx.vt->init(&mx, &a);
	CHECK_EQ_INT(add_int(&mx, &a, 10, 0), 0);
	mx.vt->init(&mx, &b);
	CHECK_EQ_INT(mx.vt->merge(&mx, &b, &a), 0);
	CHECK(json_is(&mx, &b, "{\"value\":10}"));
	mx.vt->init(&mx, &a);
	CHECK_EQ_INT(mx.vt->merge(&mx, &b, &a), 0);
	CHECK(json_is(&mx, &b, "{\"value\":10}"));

	/* Decoding. */
	set[7] = 0xf8;
	set[8] = 0xbf;
	CHECK_EQ_INT(dec(&mx, &a, set, 9), 0);
	CHECK(json_is(&mx, &a, "{\"value\":-1.5}"));
	CHECK_EQ_INT(dec(&mx, &a, unset, 1), 0);
	CHECK(mx.vt->is_identity(&mx, &a));
	CHECK_EQ_INT(dec(&mx, &a, set, 8), MM_ECORRUPT);
	CHECK_EQ_INT(dec(&mx, &a, set, 1), MM_ECORRUPT); /* flag 1 without a value */
	CHECK_EQ_INT(dec(&mx, &a, unset, 0), MM_ECORRUPT);
	set[0] = 0;
	CHECK_EQ_INT(dec(&mx, &a, set, 9), MM_ECORRUPT); /* unset with trailing bytes */
	set[0] = 2;
	CHECK_EQ_INT(dec(&mx, &a, set, 9), MM_ECORRUPT);
	set[0] = 1;
	set[7] = 0xf8;
	set[8] = 0x7f; /* NaN */
	CHECK_EQ_INT(dec(&mx, &a, set, 9), MM_ECORRUPT);
	CHECK(strstr(mm_diag_msg(), "max") != NULL);
	CHECK(mx.vt->is_identity(&mx, &a));
}

TEST(first_last_order)
{
	mm_monoid_t f = mk("first", 0), l = mk("last", 0);
	state_t a, b;

	f.vt->init(&f, &a);
	l.vt->init(&l, &b);
	CHECK(json_is(&f, &a, "{\"value\":null,\"time\":null,\"time_ms\":null}"));
	CHECK(f.vt->is_identity(&f, &a));
	CHECK_EQ_INT(add_int(&f, &a, 10, 2000), 0);
	CHECK_EQ_INT(add_int(&l, &b, 10, 2000), 0);
	CHECK_EQ_INT(add_str(&f, &a, "early", 5, 1000), 0);
	CHECK_EQ_INT(add_str(&l, &b, "early", 5, 1000), 0);
	CHECK_EQ_INT(add_dbl(&f, &a, 2.5, 3000), 0);
	CHECK_EQ_INT(add_dbl(&l, &b, 2.5, 3000), 0);
	CHECK(json_is(
		&f, &a,
		"{\"value\":\"early\",\"time\":\"1970-01-01T00:00:01.000Z\",\"time_ms\":1000}"));
	CHECK(json_is(&l, &b,
		      "{\"value\":2.5,\"time\":\"1970-01-01T00:00:03.000Z\",\"time_ms\":3000}"));
	CHECK(!f.vt->is_identity(&f, &a));

	/* Ties on time: first keeps the smaller value, last the larger; types
	 * order int < double < string. */
	f.vt->destroy(&f, &a);
	l.vt->destroy(&l, &b);
	f.vt->init(&f, &a);
	l.vt->init(&l, &b);
	CHECK_EQ_INT(add_str(&f, &a, "b", 1, 5), 0);
	CHECK_EQ_INT(add_str(&f, &a, "a", 1, 5), 0);
	CHECK_EQ_INT(add_str(&f, &a, "ab", 2, 5), 0);
	CHECK(json_is(&f, &a,
		      "{\"value\":\"a\",\"time\":\"1970-01-01T00:00:00.005Z\",\"time_ms\":5}"));
	CHECK_EQ_INT(add_dbl(&f, &a, 99.0, 5), 0);
	CHECK_EQ_INT(add_int(&f, &a, 100, 5), 0);
	CHECK(json_is(&f, &a,
		      "{\"value\":100,\"time\":\"1970-01-01T00:00:00.005Z\",\"time_ms\":5}"));
	CHECK_EQ_INT(add_int(&l, &b, 100, 5), 0);
	CHECK_EQ_INT(add_str(&l, &b, "a", 1, 5), 0);
	CHECK_EQ_INT(add_str(&l, &b, "ab", 2, 5), 0);
	CHECK_EQ_INT(add_dbl(&l, &b, 1e9, 5), 0);
	CHECK(json_is(&l, &b,
		      "{\"value\":\"ab\",\"time\":\"1970-01-01T00:00:00.005Z\",\"time_ms\":5}"));

	/* -0.0 sorts before +0.0 so the tie is still decided. */
	f.vt->destroy(&f, &a);
	f.vt->init(&f, &a);
	CHECK_EQ_INT(add_dbl(&f, &a, 0.0, 7), 0);
	CHECK_EQ_INT(add_dbl(&f, &a, -0.0, 7), 0);
	CHECK(json_is(&f, &a,
		      "{\"value\":-0,\"time\":\"1970-01-01T00:00:00.007Z\",\"time_ms\":7}"));

	/* Merge picks by the same rule and copies the string. */
	l.vt->destroy(&l, &b);
	f.vt->init(&f, &b);
	CHECK_EQ_INT(add_str(&f, &b, "merged", 6, -86400000), 0);
	CHECK_EQ_INT(f.vt->merge(&f, &a, &b), 0);
	f.vt->destroy(&f, &b);
	CHECK(json_is(&f, &a,
		      "{\"value\":\"merged\",\"time\":\"1969-12-31T00:00:00.000Z\","
		      "\"time_ms\":-86400000}"));
	f.vt->destroy(&f, &a);
}

TEST(first_last_values)
{
	mm_monoid_t f = mk("first", 0);
	state_t a;
	char *big = malloc(65537);

	REQUIRE(big != NULL);
	memset(big, 'x', 65537);
	f.vt->init(&f, &a);
	CHECK_EQ_INT(add_str(&f, &a, "keep", 4, 10), 0);
	CHECK_EQ_INT(add_str(&f, &a, big, 65537, 1), MM_ERANGE);
	CHECK_EQ_INT(add_dbl(&f, &a, NAN, 1), MM_ERANGE);
	CHECK_EQ_INT(add_dbl(&f, &a, INFINITY, 1), MM_ERANGE);
	{
		mm_value_t none = {.type = MM_VAL_NONE, .ts_ms = 1};

		CHECK_EQ_INT(f.vt->add(&f, &a, &none), MM_ETYPE);
	}
	CHECK(json_is(&f, &a,
		      "{\"value\":\"keep\",\"time\":\"1970-01-01T00:00:00.010Z\",\"time_ms\":10}"));
	CHECK_EQ_INT(add_str(&f, &a, big, 65536, 1), 0);
	f.vt->destroy(&f, &a);
	free(big);

	/* Escaping: quotes, backslashes, control characters and bad UTF-8. */
	f.vt->init(&f, &a);
	CHECK_EQ_INT(add_str(&f, &a, "a\"b\\c\x01\xff\xc3\xa9", 9, 0), 0);
	CHECK(json_is(&f, &a,
		      "{\"value\":\"a\\\"b\\\\c\\u0001\\ufffd\xc3\xa9\",\"time\":"
		      "\"1970-01-01T00:00:00.000Z\",\"time_ms\":0}"));
	f.vt->destroy(&f, &a);

	/* Empty strings are values too. */
	f.vt->init(&f, &a);
	CHECK_EQ_INT(add_str(&f, &a, NULL, 0, 0), 0);
	CHECK(!f.vt->is_identity(&f, &a));
	/* Ties against it, with and without a pointer, keep it (it sorts first). */
	CHECK_EQ_INT(add_str(&f, &a, NULL, 0, 0), 0);
	CHECK_EQ_INT(add_str(&f, &a, "a", 1, 0), 0);
	CHECK(json_is(&f, &a,
		      "{\"value\":\"\",\"time\":\"1970-01-01T00:00:00.000Z\",\"time_ms\":0}"));
	f.vt->destroy(&f, &a);

	/* Times outside years 0000..9999 print clamped but time_ms stays exact. */
	f.vt->init(&f, &a);
	CHECK_EQ_INT(add_int(&f, &a, -3, INT64_MAX), 0);
	CHECK(json_is(&f, &a,
		      "{\"value\":-3,\"time\":\"9999-12-31T23:59:59.999Z\","
		      "\"time_ms\":9223372036854775807}"));
	f.vt->destroy(&f, &a);
}

TEST(first_last_encoding)
{
	mm_monoid_t l = mk("last", 0);
	state_t a;
	static const uint8_t unset[1] = {0};
	static const uint8_t str[] = {1, 3, 0xe8, 0x03, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 'h', 'i'};
	static const uint8_t i64[] = {1,    1,	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
				      0xff, 42, 0,    0,    0,	  0,	0,    0,    0};
	uint8_t bad[sizeof(str)];

	l.vt->init(&l, &a);
	CHECK(enc_is(&l, &a, unset, 1));
	CHECK_EQ_INT(add_str(&l, &a, "hi", 2, 1000), 0);
	CHECK(enc_is(&l, &a, str, sizeof(str)));
	l.vt->destroy(&l, &a);
	l.vt->init(&l, &a);
	CHECK_EQ_INT(add_int(&l, &a, 42, -1), 0);
	CHECK(enc_is(&l, &a, i64, sizeof(i64)));

	/* Decode replaces a state that owns a string, without leaking it. */
	CHECK_EQ_INT(add_str(&l, &a, "zz", 2, 5000), 0);
	CHECK_EQ_INT(l.vt->decode(&l, &a, str, sizeof(str)), 0);
	CHECK(enc_is(&l, &a, str, sizeof(str)));
	CHECK_EQ_INT(l.vt->decode(&l, &a, i64, sizeof(i64)), 0);
	CHECK(json_is(&l, &a,
		      "{\"value\":42,\"time\":\"1969-12-31T23:59:59.999Z\",\"time_ms\":-1}"));
	CHECK_EQ_INT(l.vt->decode(&l, &a, unset, 1), 0);
	CHECK(l.vt->is_identity(&l, &a));

	/* Every truncation of a valid encoding is corrupt, and so are extensions. */
	for (size_t n = 0; n < sizeof(str); n++) {
		CHECK_EQ_INT(l.vt->decode(&l, &a, str, n), MM_ECORRUPT);
		CHECK(l.vt->is_identity(&l, &a));
	}
	CHECK_EQ_INT(l.vt->decode(&l, &a, i64, 17), MM_ECORRUPT);
	memcpy(bad, str, sizeof(str));
	bad[1] = 4; /* unknown type */
	CHECK_EQ_INT(l.vt->decode(&l, &a, bad, sizeof(bad)), MM_ECORRUPT);
	bad[1] = 3;
	bad[10] = 3; /* length says 3, 2 bytes follow */
	CHECK_EQ_INT(l.vt->decode(&l, &a, bad, sizeof(bad)), MM_ECORRUPT);
	bad[10] = 1; /* length says 1, 2 bytes follow */
	CHECK_EQ_INT(l.vt->decode(&l, &a, bad, sizeof(bad)), MM_ECORRUPT);
	bad[10] = 1;
	bad[12] = 1; /* 65537 bytes: over the bound, whatever follows */
	CHECK_EQ_INT(l.vt->decode(&l, &a, bad, sizeof(bad)), MM_ECORRUPT);
	CHECK(strstr(mm_diag_msg(), "exceeds") != NULL);
	bad[0] = 2;
	CHECK_EQ_INT(l.vt->decode(&l, &a, bad, sizeof(bad)), MM_ECORRUPT);
	CHECK(l.vt->is_identity(&l, &a));
	l.vt->destroy(&l, &a);
}

static int add_str_at(const mm_monoid_t *m, state_t *s, const char *str, int64_t ts, uint64_t seq)
{
	mm_value_t v = {.type = MM_VAL_STRING, .s = str, .len = strlen(str), .ts_ms = ts, .seq = seq};

	return m->vt->add(m, s, &v);
}

/* Without a time field every event of a batch has the same processing
 * time: arrival order (the engine's stamps) decides, not the value. */
TEST(first_last_arrival)
{
	mm_monoid_t f = mk("first", 0), l = mk("last", 0);
	state_t a, b, c, d;
	static const uint8_t v1[] = {1, 3, 5, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 'o', 'n'};
	static const uint8_t v2[] = {2, 3, 5, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0,
				     0, 0, 2, 0, 0, 0, 'o', 'n'};
	uint8_t bad[sizeof(v2)];

	f.vt->init(&f, &a);
	l.vt->init(&l, &b);
	CHECK_EQ_INT(add_str_at(&f, &a, "online", 5, 100), 0);
	CHECK_EQ_INT(add_str_at(&l, &b, "online", 5, 100), 0);
	CHECK_EQ_INT(add_str_at(&f, &a, "offline", 5, 101), 0);
	CHECK_EQ_INT(add_str_at(&l, &b, "offline", 5, 101), 0);
	CHECK(json_is(&f, &a,
		      "{\"value\":\"online\",\"time\":\"1970-01-01T00:00:00.005Z\",\"time_ms\":5}"));
	CHECK(json_is(&l, &b,
		      "{\"value\":\"offline\",\"time\":\"1970-01-01T00:00:00.005Z\",\"time_ms\":5}"));
	/* Time still comes first. */
	CHECK_EQ_INT(add_str_at(&l, &b, "zzz", 4, 500), 0);
	CHECK(json_is(&l, &b,
		      "{\"value\":\"offline\",\"time\":\"1970-01-01T00:00:00.005Z\",\"time_ms\":5}"));

	/* Merges of stored states agree, in either order: a delta of later
	 * arrivals wins for last, loses for first. */
	l.vt->init(&l, &c);
	l.vt->init(&l, &d);
	CHECK_EQ_INT(add_str_at(&l, &c, "b", 7, 10), 0); /* stored */
	CHECK_EQ_INT(add_str_at(&l, &d, "a", 7, 11), 0); /* a later flush */
	CHECK_EQ_INT(l.vt->merge(&l, &c, &d), 0);
	CHECK(json_is(&l, &c, "{\"value\":\"a\",\"time\":\"1970-01-01T00:00:00.007Z\",\"time_ms\":7}"));
	l.vt->destroy(&l, &d);
	l.vt->init(&l, &d);
	CHECK_EQ_INT(add_str_at(&l, &d, "b", 7, 10), 0);
	CHECK_EQ_INT(add_str_at(&l, &c, "a", 7, 11), 0);
	CHECK_EQ_INT(l.vt->merge(&l, &d, &c), 0);
	CHECK(json_is(&l, &d, "{\"value\":\"a\",\"time\":\"1970-01-01T00:00:00.007Z\",\"time_ms\":7}"));

	/* Bytes written before stamps existed (v1) decode with stamp 0: they
	 * arrived before anything stamped, and re-encode unchanged. */
	l.vt->destroy(&l, &c);
	l.vt->init(&l, &c);
	CHECK_EQ_INT(l.vt->decode(&l, &c, v1, sizeof(v1)), 0);
	CHECK(enc_is(&l, &c, v1, sizeof(v1)));
	CHECK_EQ_INT(add_str_at(&l, &c, "ab", 5, 1), 0);
	CHECK(json_is(&l, &c, "{\"value\":\"ab\",\"time\":\"1970-01-01T00:00:00.005Z\",\"time_ms\":5}"));
	/* Stamped states are v2, round trip, and v2 with stamp 0 is refused. */
	CHECK_EQ_INT(l.vt->decode(&l, &c, v2, sizeof(v2)), 0);
	CHECK(enc_is(&l, &c, v2, sizeof(v2)));
	memcpy(bad, v2, sizeof(v2));
	bad[10] = 0;
	CHECK_EQ_INT(l.vt->decode(&l, &c, bad, sizeof(bad)), MM_ECORRUPT);
	CHECK(l.vt->is_identity(&l, &c));
	for (size_t n = 0; n < sizeof(v2); n++)
		CHECK_EQ_INT(l.vt->decode(&l, &c, v2, n), MM_ECORRUPT);
	bad[10] = 9;
	bad[0] = 3;
	CHECK_EQ_INT(l.vt->decode(&l, &c, bad, sizeof(bad)), MM_ECORRUPT);
	f.vt->destroy(&f, &a);
	l.vt->destroy(&l, &b);
	l.vt->destroy(&l, &c);
	l.vt->destroy(&l, &d);
}

TEST(registry)
{
	static const char *const names[] = {"sum",  "count", "min", "max",  "first",
					    "last", "set",   "hll", "topk", "bloom"};
	mm_monoid_params_t p = {0};
	mm_monoid_t m = {0};
	mm_buf_t b = {0};
	size_t n = 0;

	while (mm_monoid_registry[n] != NULL)
		n++;
	CHECK_EQ_INT(n, 10);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const mm_monoid_vtable_t *vt = mm_monoid_find(names[i]);

		REQUIRE(vt != NULL);
		CHECK(strcmp(vt->name, names[i]) == 0);
		CHECK(vt->check && vt->init && vt->destroy && vt->add && vt->merge && vt->encode &&
		      vt->decode && vt->to_json && vt->is_identity);
	}
	CHECK(mm_monoid_find("median") == NULL);
	CHECK(mm_monoid_find(NULL) == NULL);
	CHECK(mm_monoid_find("SUM") == NULL);

	CHECK_EQ_INT(mm_monoid_init(&m, "median", &p), MM_ENOTFOUND);
	CHECK(strstr(mm_diag_msg(), "median") != NULL);
	p.is_float = 2;
	CHECK_EQ_INT(mm_monoid_init(&m, "sum", &p), MM_EINVAL);
	CHECK(m.vt == NULL); /* untouched on failure */

	/* Descriptions fill in defaults for zero parameters. */
	{
		static const struct {
			const char *name, *want;
		} d[] = {
			{"sum", "sum(float=0)"},
			{"count", "count"},
			{"min", "min"},
			{"max", "max"},
			{"first", "first"},
			{"last", "last"},
			{"topk", "topk(k=32)"},
			{"bloom", "bloom(capacity=100000,fpr=0.01)"},
			{"set", "set(max_size=1000)"},
			{"hll", "hll(p=14)"},
		};

		for (size_t i = 0; i < sizeof(d) / sizeof(d[0]); i++) {
			mm_monoid_params_t zero = {0};

			REQUIRE(mm_monoid_init(&m, d[i].name, &zero) == 0);
			b.len = 0;
			CHECK(mm_monoid_describe(&m, &b) == 0);
			if (b.len != strlen(d[i].want) || memcmp(b.p, d[i].want, b.len) != 0) {
				printf("#   describe %s: %.*s\n", d[i].name, (int)b.len,
				       (char *)b.p);
				CHECK(0);
			}
		}
	}
	/* NULL parameters mean all defaults; explicit ones are kept. */
	REQUIRE(mm_monoid_init(&m, "sum", NULL) == 0);
	CHECK_EQ_INT(m.p.is_float, 0);
	p = (mm_monoid_params_t){.is_float = 1};
	REQUIRE(mm_monoid_init(&m, "sum", &p) == 0);
	b.len = 0;
	CHECK(mm_monoid_describe(&m, &b) == 0 && b.len == 12 &&
	      memcmp(b.p, "sum(float=1)", 12) == 0);
	p = (mm_monoid_params_t){.capacity = 5000, .fpr = 0.001};
	REQUIRE(mm_monoid_init(&m, "bloom", &p) == 0);
	b.len = 0;
	CHECK(mm_monoid_describe(&m, &b) == 0 && b.len == 30 &&
	      memcmp(b.p, "bloom(capacity=5000,fpr=0.001)", 30) == 0);
	mm_buf_free(&b);
}

/* One value through mm_dec_u64 and both buffer writers, against printf. */
static int dec_matches(uint64_t v)
{
	char want[48], got[20];
	mm_buf_t b = {0};
	size_t n = mm_dec_u64(got, v);
	int ok = (size_t)snprintf(want, sizeof(want), "%" PRIu64, v) == n &&
		 memcmp(got, want, n) == 0;

	ok = ok && mm_buf_put_dec_u64(&b, v) == 0 && b.len == n && memcmp(b.p, want, n) == 0;
	b.len = 0;
	snprintf(want, sizeof(want), "%" PRId64, (int64_t)v);
	ok = ok && mm_buf_put_dec_i64(&b, (int64_t)v) == 0 && b.len == strlen(want) &&
	     memcmp(b.p, want, b.len) == 0;
	mm_buf_free(&b);
	if (!ok)
		printf("#   decimal text of %" PRIu64 " differs from printf's\n", v);
	return ok;
}

/* Every length from 1 to 20 digits, each side of every power of ten, the
 * extremes of both signs, and pseudo-random values of every magnitude. */
TEST(decimal_text)
{
	uint64_t p = 1, x = 0x9e3779b97f4a7c15u;
	int i, bad = 0;

	for (i = 0; i < 200; i++)
		bad += !dec_matches((uint64_t)i);
	for (i = 0; i < 20; i++, p *= 10) {
		bad += !dec_matches(p - 1);
		bad += !dec_matches(p);
		bad += !dec_matches(p + 1);
		bad += !dec_matches(p * 9 + p - 1);
	}
	bad += !dec_matches(UINT64_MAX);
	bad += !dec_matches((uint64_t)INT64_MAX);
	bad += !dec_matches((uint64_t)INT64_MIN);
	bad += !dec_matches((uint64_t)-1 - 99);
	for (i = 0; i < 100000; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		bad += !dec_matches(x >> (i % 64));
	}
	CHECK_EQ_INT(bad, 0);
}

int main(void)
{
	RUN(sum_int);
	RUN(sum_float);
	RUN(count);
	RUN(min_max);
	RUN(first_last_order);
	RUN(first_last_values);
	RUN(first_last_encoding);
	RUN(first_last_arrival);
	RUN(registry);
	RUN(decimal_text);
	UNIT_DONE();
}
