/*
 * test_hll.c: the HyperLogLog monoid and lib/hash.h (mm_hash64, the key
 * compares).
 *
 * Golden byte strings below were produced by redis-server 7.0.15 (PFADD,
 * then PFCOUNT so the cached cardinality is valid, then GET); matching them
 * byte for byte pins the hash, the register layout, the sparse opcodes and
 * the header. tests/spec/hll_valkey_spec.lua repeats the comparison live.
 */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "lib/error.h"
#include "lib/hash.h"
#include "monoid/hll.h"
#include "unit.h"

#define DENSE_SIZE 12304
#define HDR 16
#define MAX_ERR (3 * 1.04 / 128.0) /* three standard errors at 2^14 registers */

static const mm_monoid_t hll = {.vt = &mm_monoid_hll_vtable};

typedef union state {
	uint8_t bytes[MM_STATE_MAX];
	uint64_t align;
} state_t;

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

/* A TAP comment line, for measured figures. */
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

static void add_str(state_t *st, const char *s)
{
	mm_value_t v = {.type = MM_VAL_STRING, .s = s, .len = strlen(s)};

	if (hll.vt->add(&hll, st, &v) != 0)
		abort();
}

/* Adds "u<i>" for i in [from, to). */
static void add_range(state_t *st, unsigned long long from, unsigned long long to)
{
	char buf[32];

	for (; from < to; from++) {
		snprintf(buf, sizeof(buf), "u%llu", from);
		add_str(st, buf);
	}
}

static uint64_t count(const state_t *st)
{
	uint64_t n = 0;

	mm_hll_count(&hll, st, &n);
	return n;
}

static int same_registers(const state_t *a, const state_t *b)
{
	static uint8_t ra[MM_HLL_REGISTERS], rb[MM_HLL_REGISTERS];

	mm_hll_registers(&hll, a, ra);
	mm_hll_registers(&hll, b, rb);
	return memcmp(ra, rb, sizeof(ra)) == 0;
}

static void hex_to_buf(const char *hex, mm_buf_t *out)
{
	size_t i, n = strlen(hex);

	out->len = 0;
	for (i = 0; i + 1 < n; i += 2) {
		unsigned b;

		sscanf(hex + i, "%2x", &b);
		mm_buf_put_u8(out, (uint8_t)b);
	}
}

/* Sets register idx of a packed dense body, bit by bit, independently of
 * the packing code under test. */
static void dense_set(uint8_t *body, unsigned idx, unsigned val)
{
	unsigned b;

	for (b = 0; b < 6; b++) {
		unsigned bit = idx * 6 + b;

		if (val >> b & 1)
			body[bit / 8] |= (uint8_t)(1u << (bit % 8));
		else
			body[bit / 8] &= (uint8_t)~(1u << (bit % 8));
	}
}

static void dense_header(uint8_t *p)
{
	memset(p, 0, HDR);
	memcpy(p, "HYLL", 4);
	p[15] = 0x80; /* stale cache */
}

/* Decodes exactly n bytes copied into their own allocation, so ASan sees any
 * read past the end. */
static int decode_exact(state_t *st, const uint8_t *p, size_t n)
{
	uint8_t *copy = malloc(n ? n : 1);
	int rc;

	if (n)
		memcpy(copy, p, n);
	rc = hll.vt->decode(&hll, st, copy, n);
	free(copy);
	return rc;
}

TEST(hash_properties)
{
	/* The seed and every tail length matter, and the empty key needs no
	 * pointer. Exact values against the server are pinned by the golden
	 * encodings below, which hash every tail length. */
	const char *s = "abcdefghijklmnopq";
	uint64_t seen[18];
	size_t i, j;

	for (i = 0; i <= 17; i++) {
		seen[i] = mm_hash64(s, i, MM_HLL_SEED);
		CHECK(seen[i] == mm_hash64(s, i, MM_HLL_SEED));
		for (j = 0; j < i; j++)
			CHECK(seen[i] != seen[j]);
	}
	CHECK(mm_hash64("a", 1, 0) != mm_hash64("a", 1, MM_HLL_SEED));
	CHECK(mm_hash64(NULL, 0, 1) == mm_hash64("", 0, 1));
}

/* MurmurHash64A as its description gives it: blocks, then the trailing
 * bytes folded in one at a time. mm_hash64 assembles the tail with
 * overlapping loads instead and must agree at every length and alignment. */
static uint64_t murmur64a_bytewise(const uint8_t *p, size_t len, uint64_t seed)
{
	const uint64_t m = 0xc6a4a7935bd1e995ULL;
	uint64_t h = seed ^ (len * m);
	size_t i, nb = len / 8;

	for (i = 0; i < nb; i++) {
		uint64_t k = 0;

		for (int b = 7; b >= 0; b--)
			k = k << 8 | p[8 * i + b];
		k *= m;
		k ^= k >> 47;
		k *= m;
		h ^= k;
		h *= m;
	}
	if (len & 7) {
		for (i = 0; i < (len & 7); i++)
			h ^= (uint64_t)p[8 * nb + i] << (8 * i);
		h *= m;
	}
	h ^= h >> 47;
	h *= m;
	h ^= h >> 47;
	return h;
}

TEST(hash_tail_matches_bytewise)
{
	uint8_t buf[64];
	size_t off, len;

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 151 + 7);
	for (off = 0; off < 8; off++)
		for (len = 0; off + len <= 48; len++) {
			CHECK(mm_hash64(buf + off, len, MM_HLL_SEED) ==
			      murmur64a_bytewise(buf + off, len, MM_HLL_SEED));
			CHECK(mm_hash64(buf + off, len, 0x5d1e2c3b4a596877ULL) ==
			      murmur64a_bytewise(buf + off, len, 0x5d1e2c3b4a596877ULL));
		}
}

/* A dedup id's hash is two MurmurHash64A under the namespace's seed and
 * that seed XOR MM_ID_SEED2, as the embedded store's marks on disk were
 * written (hash.h); mm_id_hash computes both in one pass and must equal
 * them at every length and alignment, the all-zero fix-up aside. */
TEST(id_hash_is_two_seeds)
{
	uint8_t buf[64];
	mm_idhash_t h;
	uint64_t seed = mm_id_hash_seed("recently_interacted", 19);

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i * 151 + 7);
	for (size_t off = 0; off < 8; off++)
		for (size_t len = 0; off + len <= 48; len++) {
			mm_id_hash(seed, buf + off, len, &h);
			CHECK(h.h0 == murmur64a_bytewise(buf + off, len, seed));
			CHECK(h.h1 == murmur64a_bytewise(buf + off, len, seed ^ MM_ID_SEED2));
		}
	CHECK(seed == murmur64a_bytewise((const uint8_t *)"recently_interacted", 19,
					 0x6d61726b73657431ULL));
}

/* mm_key_eq and mm_key_cmp agree with memcmp at every length up to 40, for
 * keys equal up to each position, with bytes on both sides of 0x80 (the
 * order is unsigned). */
TEST(key_compares_match_memcmp)
{
	uint8_t a[48], b[48];
	int bad = 0;

	for (size_t n = 0; n <= 40; n++)
		for (size_t at = 0; at <= n; at++)
			for (int v = 0; v < 4; v++) {
				static const uint8_t vals[4] = {0x00, 0x7f, 0x80, 0xff};
				int want, got;

				for (size_t i = 0; i < sizeof(a); i++)
					a[i] = b[i] = (uint8_t)(i * 37 + n);
				if (at < n) {
					a[at] = vals[v];
					b[at] = vals[3 - v];
				}
				want = memcmp(a, b, n);
				want = (want > 0) - (want < 0);
				got = mm_key_cmp(a, b, n);
				if (got != want || mm_key_eq(a, b, n) != (want == 0) ||
				    mm_key_cmp(b, a, n) != -want)
					bad++;
			}
	CHECK_EQ_INT(bad, 0);
}

TEST(empty)
{
	state_t st;
	mm_buf_t out = {0};
	static const uint8_t want[] = {'H', 'Y', 'L', 'L', 1, 0, 0, 0,
				       0,   0,   0,   0,   0, 0, 0, 0, 0x7f, 0xff};

	hll.vt->init(&hll, &st);
	CHECK(hll.vt->is_identity(&hll, &st));
	CHECK_EQ_INT(count(&st), 0);
	REQUIRE(hll.vt->encode(&hll, &st, &out) == 0);
	/* Byte-identical to what the server stores for `PFADD k` (no elements). */
	CHECK(out.len == sizeof(want) && memcmp(out.p, want, sizeof(want)) == 0);
	out.len = 0;
	REQUIRE(hll.vt->to_json(&hll, &st, &out) == 0);
	CHECK(out.len == 17 && memcmp(out.p, "{\"cardinality\":0}", 17) == 0);
	hll.vt->destroy(&hll, &st);
	mm_buf_free(&out);
}

TEST(single_element)
{
	state_t st;
	uint8_t regs[MM_HLL_REGISTERS];
	int nonzero = 0;
	unsigned i;
	mm_buf_t out = {0};

	hll.vt->init(&hll, &st);
	add_str(&st, "hello");
	CHECK(!hll.vt->is_identity(&hll, &st));
	CHECK_EQ_INT(count(&st), 1);
	mm_hll_registers(&hll, &st, regs);
	for (i = 0; i < MM_HLL_REGISTERS; i++)
		nonzero += regs[i] != 0;
	CHECK_EQ_INT(nonzero, 1);
	REQUIRE(hll.vt->to_json(&hll, &st, &out) == 0);
	CHECK(out.len == 17 && memcmp(out.p, "{\"cardinality\":1}", 17) == 0);
	hll.vt->destroy(&hll, &st);
	mm_buf_free(&out);
}

TEST(golden_redis_encodings)
{
	static const char *abc =
		"48594c4c01000000030000000000000060f38050b1844bfb80425a";
	/* "", "a", "ab", ... "abcdefghijklmnopq" (every tail length) and
	 * "h\xc3\xa9llo". */
	static const char *tails =
		"48594c4c01000000130000000000000042ce8042968049258c421f804551843d"
		"8440ef8443c38048cc8040a98040908040db90455d9c44848040938c414c8443"
		"a684405f9441778048d5";
	const char *alpha = "abcdefghijklmnopq";
	state_t st;
	mm_buf_t want = {0}, out = {0};
	mm_value_t v = {.type = MM_VAL_STRING};
	size_t i;

	hll.vt->init(&hll, &st);
	add_str(&st, "a");
	add_str(&st, "b");
	add_str(&st, "c");
	REQUIRE(hll.vt->encode(&hll, &st, &out) == 0);
	hex_to_buf(abc, &want);
	CHECK(out.len == want.len && memcmp(out.p, want.p, want.len) == 0);
	hll.vt->destroy(&hll, &st);

	hll.vt->init(&hll, &st);
	v.s = alpha;
	for (i = 0; i <= 17; i++) {
		v.len = i;
		REQUIRE(hll.vt->add(&hll, &st, &v) == 0);
	}
	add_str(&st, "h\xc3\xa9llo");
	out.len = 0;
	REQUIRE(hll.vt->encode(&hll, &st, &out) == 0);
	hex_to_buf(tails, &want);
	CHECK(out.len == want.len && memcmp(out.p, want.p, want.len) == 0);
	CHECK_EQ_INT(count(&st), 19);
	hll.vt->destroy(&hll, &st);
	mm_buf_free(&want);
	mm_buf_free(&out);
}

TEST(readding_is_idempotent)
{
	static const int sizes[] = {3, 500, 20000};
	size_t k;

	for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		state_t a, b;

		hll.vt->init(&hll, &a);
		hll.vt->init(&hll, &b);
		add_range(&a, 0, (unsigned)sizes[k]);
		add_range(&b, 0, (unsigned)sizes[k]);
		add_range(&b, 0, (unsigned)sizes[k]);
		add_range(&b, (unsigned)sizes[k] / 2, (unsigned)sizes[k]);
		CHECK(same_registers(&a, &b));
		CHECK_EQ_INT(count(&a), count(&b));
		hll.vt->destroy(&hll, &a);
		hll.vt->destroy(&hll, &b);
	}
}

TEST(add_rejects_non_strings)
{
	state_t st;
	mm_value_t v = {.type = MM_VAL_INT, .i = 42};

	hll.vt->init(&hll, &st);
	CHECK_EQ_INT(hll.vt->add(&hll, &st, &v), MM_ETYPE);
	CHECK(hll.vt->is_identity(&hll, &st));
	v.type = MM_VAL_STRING;
	v.s = NULL;
	v.len = 0;
	CHECK_EQ_INT(hll.vt->add(&hll, &st, &v), 0);
	CHECK_EQ_INT(count(&st), 1);
	hll.vt->destroy(&hll, &st);
}

/*
 * Merge equals adding the union, for every pair of in-memory forms (inline
 * list, heap list, register array) and in both orders.
 */
TEST(merge_is_union)
{
	static const unsigned sizes[] = {0, 1, 5, 40, 900, 3000, 60000};
	size_t i, j;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		for (j = 0; j < sizeof(sizes) / sizeof(sizes[0]); j++) {
			state_t a, b, ab, ba, all;
			/* a = [0, si), b = [si/2, si/2 + sj): overlapping. */
			unsigned si = sizes[i], sj = sizes[j];

			hll.vt->init(&hll, &a);
			hll.vt->init(&hll, &b);
			hll.vt->init(&hll, &ab);
			hll.vt->init(&hll, &ba);
			hll.vt->init(&hll, &all);
			add_range(&a, 0, si);
			add_range(&b, si / 2, si / 2 + sj);
			add_range(&all, 0, si);
			add_range(&all, si / 2, si / 2 + sj);
			REQUIRE(hll.vt->merge(&hll, &ab, &a) == 0);
			REQUIRE(hll.vt->merge(&hll, &ab, &b) == 0);
			REQUIRE(hll.vt->merge(&hll, &ba, &b) == 0);
			REQUIRE(hll.vt->merge(&hll, &ba, &a) == 0);
			CHECK(same_registers(&ab, &all));
			CHECK(same_registers(&ba, &all));
			CHECK_EQ_INT(count(&ab), count(&all));
			CHECK_EQ_INT(hll.vt->is_identity(&hll, &ab), si + sj == 0);
			/* Merging into itself changes nothing. */
			REQUIRE(hll.vt->merge(&hll, &ab, &ab) == 0);
			CHECK(same_registers(&ab, &all));
			/* The source is not modified. */
			state_t a2;

			hll.vt->init(&hll, &a2);
			add_range(&a2, 0, si);
			CHECK(same_registers(&a, &a2));
			hll.vt->destroy(&hll, &a2);
			hll.vt->destroy(&hll, &a);
			hll.vt->destroy(&hll, &b);
			hll.vt->destroy(&hll, &ab);
			hll.vt->destroy(&hll, &ba);
			hll.vt->destroy(&hll, &all);
		}
	}
}

TEST(merge_is_associative)
{
	state_t a, b, c, l, r, bc;
	int k;

	for (k = 0; k < 20; k++) {
		unsigned na = (unsigned)(unit_xorshift64(&rng) % 3000), nb = (unsigned)(unit_xorshift64(&rng) % 3000),
			 nc = (unsigned)(unit_xorshift64(&rng) % 3000);
		unsigned long long base = unit_xorshift64(&rng) % 100000;

		hll.vt->init(&hll, &a);
		hll.vt->init(&hll, &b);
		hll.vt->init(&hll, &c);
		hll.vt->init(&hll, &l);
		hll.vt->init(&hll, &r);
		hll.vt->init(&hll, &bc);
		add_range(&a, base, base + na);
		add_range(&b, base + na / 2, base + na / 2 + nb);
		add_range(&c, base + 2 * na, base + 2 * na + nc);
		/* l = (a ⊕ b) ⊕ c, r = a ⊕ (b ⊕ c) */
		REQUIRE(hll.vt->merge(&hll, &l, &a) == 0);
		REQUIRE(hll.vt->merge(&hll, &l, &b) == 0);
		REQUIRE(hll.vt->merge(&hll, &l, &c) == 0);
		REQUIRE(hll.vt->merge(&hll, &bc, &b) == 0);
		REQUIRE(hll.vt->merge(&hll, &bc, &c) == 0);
		REQUIRE(hll.vt->merge(&hll, &r, &a) == 0);
		REQUIRE(hll.vt->merge(&hll, &r, &bc) == 0);
		CHECK(same_registers(&l, &r));
		hll.vt->destroy(&hll, &a);
		hll.vt->destroy(&hll, &b);
		hll.vt->destroy(&hll, &c);
		hll.vt->destroy(&hll, &l);
		hll.vt->destroy(&hll, &r);
		hll.vt->destroy(&hll, &bc);
	}
}

/* decode(encode(x)) has x's registers and estimate, and re-encodes to the
 * same bytes; the cached cardinality written is the estimate. */
TEST(round_trip)
{
	/* Sizes around the in-memory thresholds and the sparse limit. */
	static const struct {
		unsigned n;
		int enc;
	} sizes[] = {{0, 1},    {1, 1},    {6, 1},    {7, 1},    {100, 1},   {1024, 1},
		     {1025, 1}, {1500, 1}, {2000, 0}, {5000, 0}, {100000, 0}};
	mm_buf_t out = {0}, again = {0};
	size_t k;

	for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		state_t a, b;

		hll.vt->init(&hll, &a);
		hll.vt->init(&hll, &b);
		add_range(&a, 0, sizes[k].n);
		out.len = again.len = 0;
		REQUIRE(hll.vt->encode(&hll, &a, &out) == 0);
		REQUIRE(out.len >= HDR);
		CHECK(memcmp(out.p, "HYLL", 4) == 0);
		CHECK_EQ_INT(mm_get_u64le(out.p + 8), count(&a));
		if (out.p[4] == 1)
			CHECK(out.len <= MM_HLL_SPARSE_MAX_BYTES);
		else
			CHECK_EQ_INT(out.len, DENSE_SIZE);
		CHECK_EQ_INT(out.p[4], sizes[k].enc);
		REQUIRE(decode_exact(&b, out.p, out.len) == 0);
		CHECK(same_registers(&a, &b));
		CHECK_EQ_INT(count(&a), count(&b));
		CHECK_EQ_INT(hll.vt->is_identity(&hll, &b), sizes[k].n == 0);
		REQUIRE(hll.vt->encode(&hll, &b, &again) == 0);
		CHECK(again.len == out.len && memcmp(again.p, out.p, out.len) == 0);
		hll.vt->destroy(&hll, &a);
		hll.vt->destroy(&hll, &b);
	}
	mm_buf_free(&out);
	mm_buf_free(&again);
}

/* The cache bytes are ignored on decode, valid or stale, right or wrong. */
TEST(decode_ignores_cache)
{
	state_t a, b;
	mm_buf_t out = {0};

	hll.vt->init(&hll, &a);
	hll.vt->init(&hll, &b);
	add_range(&a, 0, 300);
	REQUIRE(hll.vt->encode(&hll, &a, &out) == 0);
	memset(out.p + 8, 0xff, 8);
	REQUIRE(decode_exact(&b, out.p, out.len) == 0);
	CHECK_EQ_INT(count(&b), count(&a));
	out.p[15] = 0x7f; /* "valid" but wrong */
	REQUIRE(decode_exact(&b, out.p, out.len) == 0);
	CHECK_EQ_INT(count(&b), count(&a));
	CHECK(same_registers(&a, &b));
	hll.vt->destroy(&hll, &a);
	hll.vt->destroy(&hll, &b);
	mm_buf_free(&out);
}

/*
 * Adding one element at a time, the encoding stays sparse while it fits in
 * 3000 bytes and is dense from the first element that would make it longer.
 */
TEST(sparse_to_dense_promotion)
{
	state_t st;
	mm_buf_t out = {0};
	size_t last_sparse = 0;
	unsigned long long i;
	int promoted = 0;

	hll.vt->init(&hll, &st);
	for (i = 0; i < 4000 && !promoted; i++) {
		add_range(&st, i, i + 1);
		out.len = 0;
		REQUIRE(hll.vt->encode(&hll, &st, &out) == 0);
		if (out.p[4] == 1) {
			CHECK(out.len <= MM_HLL_SPARSE_MAX_BYTES);
			last_sparse = out.len;
		} else {
			CHECK_EQ_INT(out.len, DENSE_SIZE);
			promoted = 1;
		}
	}
	CHECK(promoted);
	/* One element grows the encoding by at most 3 bytes (a zero run split
	 * around a new VAL), so the last sparse one was close to the limit. */
	CHECK(last_sparse > MM_HLL_SPARSE_MAX_BYTES - 3);
	note("promoted to dense at %llu elements, last sparse %zu bytes", i, last_sparse);
	hll.vt->destroy(&hll, &st);
	mm_buf_free(&out);
}

/*
 * A register above 32 cannot be written as VAL, so one such register makes
 * the encoding dense; 32 still fits. Also checks dense packing of a list
 * state against an independent bit-by-bit packer, including registers that
 * straddle bytes and the last register.
 */
TEST(large_register_forces_dense)
{
	static const unsigned idx[] = {0, 1, 2, 3, 5, 6, 7, 8191, 16382, 16383};
	static const unsigned val[] = {33, 51, 1, 2, 17, 40, 50, 32, 45, 51};
	uint8_t *in = calloc(DENSE_SIZE, 1);
	uint8_t regs[MM_HLL_REGISTERS];
	mm_buf_t out = {0};
	state_t st;
	size_t k;

	dense_header(in);
	for (k = 0; k < sizeof(idx) / sizeof(idx[0]); k++)
		dense_set(in + HDR, idx[k], val[k]);
	hll.vt->init(&hll, &st);
	REQUIRE(decode_exact(&st, in, DENSE_SIZE) == 0);
	mm_hll_registers(&hll, &st, regs);
	for (k = 0; k < sizeof(idx) / sizeof(idx[0]); k++)
		CHECK_EQ_INT(regs[idx[k]], val[k]);
	REQUIRE(hll.vt->encode(&hll, &st, &out) == 0);
	REQUIRE(out.len == DENSE_SIZE);
	CHECK_EQ_INT(out.p[4], 0);
	CHECK(memcmp(out.p + HDR, in + HDR, DENSE_SIZE - HDR) == 0);

	/* Only registers <= 32: the same state encodes sparse. */
	memset(in + HDR, 0, DENSE_SIZE - HDR);
	dense_set(in + HDR, 100, 32);
	dense_set(in + HDR, 101, 32);
	REQUIRE(decode_exact(&st, in, DENSE_SIZE) == 0);
	out.len = 0;
	REQUIRE(hll.vt->encode(&hll, &st, &out) == 0);
	CHECK_EQ_INT(out.p[4], 1);
	/* XZERO(100), VAL(32, run 2), XZERO(16282). */
	CHECK_EQ_INT(out.len, HDR + 5);
	CHECK_EQ_INT(out.p[HDR + 2], 0x80 | 31 << 2 | 1);
	hll.vt->destroy(&hll, &st);
	mm_buf_free(&out);
	free(in);
}

/* A dense sketch that became dense in memory encodes identically to one
 * built from a list (both packers agree). */
TEST(dense_state_packing)
{
	state_t a, b;
	mm_buf_t ea = {0}, eb = {0};
	uint8_t *in = calloc(DENSE_SIZE, 1);
	uint8_t regs[MM_HLL_REGISTERS];
	unsigned i;

	hll.vt->init(&hll, &a);
	hll.vt->init(&hll, &b);
	add_range(&a, 0, 50000);
	mm_hll_registers(&hll, &a, regs);
	dense_header(in);
	for (i = 0; i < MM_HLL_REGISTERS; i++)
		dense_set(in + HDR, i, regs[i]);
	REQUIRE(hll.vt->encode(&hll, &a, &ea) == 0);
	REQUIRE(ea.len == DENSE_SIZE);
	CHECK(memcmp(ea.p + HDR, in + HDR, DENSE_SIZE - HDR) == 0);
	REQUIRE(decode_exact(&b, in, DENSE_SIZE) == 0);
	REQUIRE(hll.vt->encode(&hll, &b, &eb) == 0);
	CHECK(ea.len == eb.len && memcmp(ea.p, eb.p, ea.len) == 0);
	hll.vt->destroy(&hll, &a);
	hll.vt->destroy(&hll, &b);
	mm_buf_free(&ea);
	mm_buf_free(&eb);
	free(in);
}

struct decode_case {
	const char *name;
	const char *hex; /* the whole input, or the body after a sparse header */
	int body;        /* 1: hex is a sparse body */
	int want;        /* 0 or MM_ECORRUPT */
};

TEST(corrupt_inputs_rejected)
{
	static const char *sparse_hdr = "48594c4c01000000" "0000000000000080";
	static const struct decode_case cases[] = {
		{"empty input", "", 0, MM_ECORRUPT},
		{"15-byte header", "48594c4c0100000000000000000000", 0, MM_ECORRUPT},
		{"bad magic", "48594c4d0100000000000000000000807fff", 0, MM_ECORRUPT},
		{"lowercase magic", "68796c6c0100000000000000000000807fff", 0, MM_ECORRUPT},
		{"encoding 2", "48594c4c0200000000000000000000807fff", 0, MM_ECORRUPT},
		{"encoding 255", "48594c4cff00000000000000000000807fff", 0, MM_ECORRUPT},
		{"dense header only", "48594c4c000000000000000000000080", 0, MM_ECORRUPT},
		{"sparse without opcodes", "", 1, MM_ECORRUPT},
		{"truncated XZERO", "7f", 1, MM_ECORRUPT},
		{"XZERO then truncated XZERO", "7ffe7f", 1, MM_ECORRUPT},
		{"16383 registers", "7ffe", 1, MM_ECORRUPT},
		{"ZERO run past the end", "7fff00", 1, MM_ECORRUPT},
		{"VAL run past the end", "7ffe83", 1, MM_ECORRUPT},
		{"trailing garbage", "7fffff", 1, MM_ECORRUPT},
		{"two full runs", "7fff7fff", 1, MM_ECORRUPT},
		{"ZEROs only", "3f3f3f", 1, MM_ECORRUPT},
		/* Controls: valid inputs next to the corrupt ones. */
		{"XZERO 16383 + VAL", "7ffe80", 1, 0},
		{"unused bytes set", "48594c4c01ffffff00000000000000807fff", 0, 0},
		{"256 ZERO of 64", NULL, 1, 0},
	};
	mm_buf_t in = {0};
	state_t st;
	size_t k;

	hll.vt->init(&hll, &st);
	for (k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		int rc;

		in.len = 0;
		if (cases[k].hex == NULL) {
			hex_to_buf(sparse_hdr, &in);
			while (in.len < HDR + 256)
				mm_buf_put_u8(&in, 0x3f);
		} else if (cases[k].body) {
			char hex[256];

			snprintf(hex, sizeof(hex), "%s%s", sparse_hdr, cases[k].hex);
			hex_to_buf(hex, &in);
		} else {
			hex_to_buf(cases[k].hex, &in);
		}
		/* Start from a non-empty state: failure must leave the identity. */
		add_range(&st, 0, 10);
		mm_diag_clear();
		rc = decode_exact(&st, in.p, in.len);
		if (rc != cases[k].want)
			note("case '%s' returned %d", cases[k].name, rc);
		CHECK_EQ_INT(rc, cases[k].want);
		if (rc == 0)
			continue;
		CHECK(strncmp(mm_diag_msg(), "hll: ", 5) == 0);
		CHECK(hll.vt->is_identity(&hll, &st));
	}
	hll.vt->destroy(&hll, &st);
	mm_buf_free(&in);
}

TEST(dense_length_and_register_checks)
{
	uint8_t *in = calloc(DENSE_SIZE + 1, 1);
	state_t st;

	dense_header(in);
	hll.vt->init(&hll, &st);
	CHECK_EQ_INT(decode_exact(&st, in, DENSE_SIZE), 0);
	CHECK(hll.vt->is_identity(&hll, &st));
	CHECK_EQ_INT(decode_exact(&st, in, DENSE_SIZE - 1), MM_ECORRUPT);
	CHECK_EQ_INT(decode_exact(&st, in, DENSE_SIZE + 1), MM_ECORRUPT);
	/* 52 is above the largest rank a 50-bit remainder can give. */
	dense_set(in + HDR, 16383, 52);
	CHECK_EQ_INT(decode_exact(&st, in, DENSE_SIZE), MM_ECORRUPT);
	dense_set(in + HDR, 16383, 51);
	CHECK_EQ_INT(decode_exact(&st, in, DENSE_SIZE), 0);
	dense_set(in + HDR, 4, 63);
	CHECK_EQ_INT(decode_exact(&st, in, DENSE_SIZE), MM_ECORRUPT);
	CHECK(hll.vt->is_identity(&hll, &st));
	hll.vt->destroy(&hll, &st);
	free(in);
}

/* Every proper prefix of a valid encoding is rejected; random byte flips
 * are either rejected as corrupt or decode to something that round-trips. */
TEST(truncations_and_mutations)
{
	static const unsigned sizes[] = {1, 40, 1200, 8000};
	mm_buf_t enc = {0}, re = {0};
	state_t st, back;
	size_t k, n;
	int m, accepted = 0, rejected = 0;

	hll.vt->init(&hll, &st);
	hll.vt->init(&hll, &back);
	for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		state_t src;

		hll.vt->init(&hll, &src);
		add_range(&src, 0, sizes[k]);
		enc.len = 0;
		REQUIRE(hll.vt->encode(&hll, &src, &enc) == 0);
		hll.vt->destroy(&hll, &src);
		for (n = 0; n < enc.len; n++)
			CHECK_EQ_INT(decode_exact(&st, enc.p, n), MM_ECORRUPT);
		for (m = 0; m < 300; m++) {
			uint8_t *mut = malloc(enc.len);
			size_t flips = 1 + unit_xorshift64(&rng) % 3, f;
			int rc;

			memcpy(mut, enc.p, enc.len);
			for (f = 0; f < flips; f++)
				mut[unit_xorshift64(&rng) % enc.len] ^= (uint8_t)(1u << (unit_xorshift64(&rng) % 8));
			rc = hll.vt->decode(&hll, &st, mut, enc.len);
			free(mut);
			if (rc != 0) {
				CHECK_EQ_INT(rc, MM_ECORRUPT);
				rejected++;
				continue;
			}
			accepted++;
			re.len = 0;
			REQUIRE(hll.vt->encode(&hll, &st, &re) == 0);
			REQUIRE(decode_exact(&back, re.p, re.len) == 0);
			CHECK(same_registers(&st, &back));
		}
	}
	note("mutations: %d accepted, %d rejected", accepted, rejected);
	CHECK(accepted > 0 && rejected > 0);
	hll.vt->destroy(&hll, &st);
	hll.vt->destroy(&hll, &back);
	mm_buf_free(&enc);
	mm_buf_free(&re);
}

/*
 * merge_encoded (the LMDB store's flush path) against decode-merge-encode.
 * The stored side is absent, sparse of every size up to the promotion
 * boundary, or dense; the delta a list or a dense state, overlapping the
 * stored elements or not. The registers must be equal; a result from
 * absent or sparse bytes must be encode()'s bytes exactly, and from dense
 * bytes dense (merge_encoded keeps the dense form), except for the cached
 * cardinality, which merge_encoded writes stale.
 */
static int encoded_matches(const uint8_t *stored, size_t n, const state_t *delta, int *promoted)
{
	state_t want, got;
	mm_buf_t e = {0}, g = {0};
	int ok = 0;

	hll.vt->init(&hll, &want);
	hll.vt->init(&hll, &got);
	if ((stored != NULL && hll.vt->decode(&hll, &want, stored, n) != 0) ||
	    hll.vt->merge(&hll, &want, delta) != 0 || hll.vt->encode(&hll, &want, &e) != 0)
		goto out;
	mm_buf_put_u8(&g, 0xa5); /* merge_encoded appends: leave a byte before */
	if (hll.vt->merge_encoded(&hll, stored, n, delta, &g) != 0 || g.p[0] != 0xa5 ||
	    decode_exact(&got, g.p + 1, g.len - 1) != 0 || !same_registers(&want, &got))
		goto out;
	/* Stale: bit 7 of byte 15, the rest of the cache zero. */
	if (memcmp(g.p + 1 + 8, "\0\0\0\0\0\0\0\x80", 8) != 0)
		goto out;
	if (stored != NULL && stored[4] == 0 && g.p[1 + 4] != 0)
		goto out;
	if (promoted != NULL)
		*promoted += (stored == NULL || stored[4] == 1) && g.p[1 + 4] == 0;
	if (g.p[1 + 4] == e.p[4] &&
	    (g.len - 1 != e.len || memcmp(g.p + 1, e.p, 8) != 0 ||
	     memcmp(g.p + 1 + HDR, e.p + HDR, e.len - HDR) != 0))
		goto out;
	ok = stored == NULL || stored[4] == 0 || g.p[1 + 4] == e.p[4];
out:
	hll.vt->destroy(&hll, &want);
	hll.vt->destroy(&hll, &got);
	mm_buf_free(&e);
	mm_buf_free(&g);
	return ok;
}

TEST(merge_encoded_matches_decode_merge_encode)
{
	static const unsigned stored_sizes[] = {0, 1, 3, 50, 700, 1500, 1650, 1685, 1700, 5000, 60000};
	static const unsigned delta_sizes[] = {1, 2, 7, 90, 600, 1100, 3000};
	mm_buf_t enc = {0};
	int trials = 0, promoted = 0;
	size_t i, j;

	rng = 0x5eed5eed5eedULL;
	for (i = 0; i < sizeof(stored_sizes) / sizeof(stored_sizes[0]); i++) {
		for (j = 0; j < sizeof(delta_sizes) / sizeof(delta_sizes[0]); j++) {
			for (int rep = 0; rep < 3; rep++) {
				unsigned long long base = unit_xorshift64(&rng) % 1000000;
				/* Half the delta overlaps the stored elements. */
				unsigned long long from = base + stored_sizes[i] / 2 + unit_xorshift64(&rng) % 4;
				state_t st, delta;

				hll.vt->init(&hll, &st);
				hll.vt->init(&hll, &delta);
				add_range(&st, base, base + stored_sizes[i]);
				add_range(&delta, from, from + delta_sizes[j]);
				enc.len = 0;
				REQUIRE(hll.vt->encode(&hll, &st, &enc) == 0);
				CHECK(encoded_matches(enc.p, enc.len, &delta, &promoted));
				if (stored_sizes[i] == 0)
					CHECK(encoded_matches(NULL, 0, &delta, &promoted));
				trials++;
				hll.vt->destroy(&hll, &st);
				hll.vt->destroy(&hll, &delta);
			}
		}
	}
	note("merge_encoded: %d trials, %d promoted from sparse to dense", trials, promoted);
	CHECK(promoted > 0);
	mm_buf_free(&enc);
}

/* A delta register above 32 promotes a sparse stored sketch (and the
 * identity) to dense; registers straddling bytes and the last one patch a
 * dense stored sketch in place of the right bits. */
TEST(merge_encoded_high_registers)
{
	static const unsigned idx[] = {0, 1, 2, 3, 5, 6, 7, 8191, 16382, 16383};
	static const unsigned val[] = {33, 51, 1, 2, 17, 40, 50, 32, 45, 51};
	uint8_t *in = calloc(DENSE_SIZE, 1);
	mm_buf_t enc = {0};
	state_t delta, st;
	int promoted = 0;
	size_t k;

	hll.vt->init(&hll, &delta);
	hll.vt->init(&hll, &st);
	dense_header(in);
	for (k = 0; k < sizeof(idx) / sizeof(idx[0]); k++)
		dense_set(in + HDR, idx[k], val[k]);
	REQUIRE(decode_exact(&delta, in, DENSE_SIZE) == 0);
	CHECK(encoded_matches(NULL, 0, &delta, &promoted));
	add_range(&st, 0, 400);
	REQUIRE(hll.vt->encode(&hll, &st, &enc) == 0);
	REQUIRE(enc.p[4] == 1);
	CHECK(encoded_matches(enc.p, enc.len, &delta, &promoted));
	CHECK_EQ_INT(promoted, 2);
	/* Dense stored: the same registers one lower than the delta's, and
	 * others around them, patched and kept. */
	memset(in + HDR, 0, DENSE_SIZE - HDR);
	for (k = 0; k < sizeof(idx) / sizeof(idx[0]); k++) {
		dense_set(in + HDR, idx[k], val[k] - 1);
		dense_set(in + HDR, (idx[k] + 9) % MM_HLL_REGISTERS, 51);
	}
	CHECK(encoded_matches(in, DENSE_SIZE, &delta, NULL));
	CHECK(encoded_matches(in, DENSE_SIZE, &st, NULL));
	/* Every value above 51 in every position of the 8-register words the
	 * check reads is caught, and 51 nowhere. */
	for (k = 0; k < 16; k++) {
		unsigned at = (unsigned)(k * 1031 % MM_HLL_REGISTERS);

		for (unsigned v = 51; v < 64; v++) {
			dense_set(in + HDR, at, v);
			enc.len = 0;
			CHECK_EQ_INT(hll.vt->merge_encoded(&hll, in, DENSE_SIZE, &st, &enc),
				     v > 51 ? MM_ECORRUPT : 0);
		}
		dense_set(in + HDR, at, 0);
	}
	hll.vt->destroy(&hll, &delta);
	hll.vt->destroy(&hll, &st);
	mm_buf_free(&enc);
	free(in);
}

/* Stored opcodes that encode() would write otherwise (a gap in two ZEROs,
 * a run of four in two VALs, a short gap as XZERO: the server's in-place
 * edits leave such sequences) are not copied as they are: the result is
 * still encode()'s bytes. */
TEST(merge_encoded_canonicalises)
{
	static const uint8_t body[] = {0x09, 0x09, 0x89, 0x89, 0x40, 0x1d, 0x90, 0x7f, 0xc8};
	uint8_t in[HDR + sizeof(body)];
	state_t delta;

	memset(in, 0, HDR);
	memcpy(in, "HYLL", 4);
	in[4] = 1;
	memcpy(in + HDR, body, sizeof(body));
	hll.vt->init(&hll, &delta);
	CHECK(encoded_matches(in, sizeof(in), &delta, NULL));
	add_range(&delta, 0, 5);
	CHECK(encoded_matches(in, sizeof(in), &delta, NULL));
	add_range(&delta, 5, 300);
	CHECK(encoded_matches(in, sizeof(in), &delta, NULL));
	hll.vt->destroy(&hll, &delta);
}

/* Writes to p a sparse body of random opcodes covering every register:
 * zero gaps as ZERO, XZERO (short ones too) or several opcodes, VAL runs of
 * every length and neighbours of one rank, the sequences the server's
 * in-place edits leave beside encode()'s own. Returns its length (at most
 * cap). */
static size_t random_sparse_body(uint8_t *p, size_t cap, unsigned zero_max)
{
	size_t len = 0;
	unsigned done = 0, rank = 1;

	while (done < MM_HLL_REGISTERS && len + 4 <= cap) {
		unsigned left = MM_HLL_REGISTERS - done, run, kind = (unsigned)(unit_xorshift64(&rng) % 8);

		if (kind < 3) {
			run = 1 + (unsigned)(unit_xorshift64(&rng) % 4);
			run = run < left ? run : left;
			/* Often the rank of the opcode before, to make neighbours
			 * encode() would have joined. */
			if (unit_xorshift64(&rng) % 2)
				rank = 1 + (unsigned)(unit_xorshift64(&rng) % 32);
			p[len++] = (uint8_t)(0x80 | ((rank - 1) << 2) | (run - 1));
		} else if (kind < 6) {
			run = 1 + (unsigned)(unit_xorshift64(&rng) % 64);
			run = run < left ? run : left;
			p[len++] = (uint8_t)(run - 1);
		} else {
			run = 1 + (unsigned)(unit_xorshift64(&rng) % zero_max);
			run = run < left ? run : left;
			p[len++] = (uint8_t)(0x40 | ((run - 1) >> 8));
			p[len++] = (uint8_t)((run - 1) & 0xff);
		}
		done += run;
	}
	if (done < MM_HLL_REGISTERS) {
		unsigned run = MM_HLL_REGISTERS - done;

		p[len++] = (uint8_t)(0x40 | ((run - 1) >> 8));
		p[len++] = (uint8_t)((run - 1) & 0xff);
	}
	return len;
}

/* Random opcode sequences, canonical or not, and deltas of a few registers
 * (some right at or next to the stored runs, some dense enough to merge
 * runs): the result is encode()'s bytes for the merged registers. This
 * exercises the bulk copy of untouched opcodes against the per-opcode
 * path's judgement of what encode() would write. */
TEST(merge_encoded_random_opcodes)
{
	static const unsigned zero_max[] = {64, 300, 4000};
	uint8_t in[HDR + 3000], dbody[3000];
	int trials = 0;

	rng = 0x0bc0de5eedULL;
	memset(in, 0, HDR);
	memcpy(in, "HYLL", 4);
	in[4] = 1;
	for (int t = 0; t < 3000; t++) {
		size_t n = random_sparse_body(in + HDR, sizeof(in) - HDR, zero_max[t % 3]);
		size_t dn = random_sparse_body(dbody, sizeof(dbody), 4000 + (unsigned)(t % 7) * 1000);
		uint8_t denc[HDR + sizeof(dbody)];
		state_t delta;

		memcpy(denc, in, HDR);
		memcpy(denc + HDR, dbody, dn);
		hll.vt->init(&hll, &delta);
		if (t % 5 == 0)
			add_range(&delta, (unsigned long long)t, (unsigned long long)t + 3);
		else
			REQUIRE(decode_exact(&delta, denc, HDR + dn) == 0);
		CHECK(encoded_matches(in, HDR + n, &delta, NULL));
		hll.vt->destroy(&hll, &delta);
		trials++;
	}
	note("merge_encoded: %d random opcode sequences", trials);
}

/* No stored sketch and a list delta take merge_encoded's direct writer:
 * its bytes are encode()'s for runs of one rank longer than a VAL holds,
 * adjacent runs of two ranks, gaps of 64 and 65 registers (the ZERO and
 * XZERO boundary) and the last register set, and for random deltas of a
 * few dozen registers with neighbours of one rank. */
TEST(merge_encoded_into_nothing)
{
	/* Registers 0-8 rank 3, 9 rank 4, 64 zeros, 74 rank 2, 65 zeros, 140
	 * rank 1, zeros up to 16383, which is rank 1. */
	static const uint8_t body[] = {0x8b, 0x8b, 0x88, 0x8c, 0x3f, 0x84,
				       0x40, 0x40, 0x80, 0x7f, 0x71, 0x80};
	static const unsigned zero_max[] = {64, 300, 4000};
	uint8_t in[HDR + 3000];
	state_t delta;

	dense_header(in);
	in[4] = 1; /* sparse */
	memcpy(in + HDR, body, sizeof(body));
	hll.vt->init(&hll, &delta);
	REQUIRE(decode_exact(&delta, in, HDR + sizeof(body)) == 0);
	CHECK(encoded_matches(NULL, 0, &delta, NULL));
	hll.vt->destroy(&hll, &delta);
	rng = 0x1157f1e5ULL;
	for (int t = 0; t < 3000; t++) {
		size_t n = random_sparse_body(in + HDR, sizeof(in) - HDR, zero_max[t % 3]);

		hll.vt->init(&hll, &delta);
		REQUIRE(decode_exact(&delta, in, HDR + n) == 0);
		CHECK(encoded_matches(NULL, 0, &delta, NULL));
		hll.vt->destroy(&hll, &delta);
	}
}

/* Corrupt stored bytes: merge_encoded rejects exactly what decode()
 * rejects, with MM_ECORRUPT, and never reads past the end (the bytes are
 * copied to their own allocation for ASan). */
TEST(merge_encoded_rejects_what_decode_rejects)
{
	static const unsigned sizes[] = {1, 40, 1200, 1680, 8000};
	mm_buf_t enc = {0}, out = {0};
	state_t src, st, delta;
	int agreed = 0;
	size_t k, n;

	hll.vt->init(&hll, &st);
	hll.vt->init(&hll, &delta);
	add_range(&delta, 500, 520);
	for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		hll.vt->init(&hll, &src);
		add_range(&src, 0, sizes[k]);
		enc.len = 0;
		REQUIRE(hll.vt->encode(&hll, &src, &enc) == 0);
		hll.vt->destroy(&hll, &src);
		for (int m = 0; m < 400; m++) {
			size_t len = enc.len;
			uint8_t *mut;
			int want, got;

			if (m % 4 == 0)
				len = unit_xorshift64(&rng) % enc.len; /* a truncation */
			mut = malloc(len ? len : 1);
			memcpy(mut, enc.p, len);
			for (n = 1 + unit_xorshift64(&rng) % 3; n > 0 && len > 0 && m % 4 != 0; n--)
				mut[unit_xorshift64(&rng) % len] ^= (uint8_t)(1u << (unit_xorshift64(&rng) % 8));
			/* Now and then a dense register above 51. */
			if (m % 7 == 1 && len == DENSE_SIZE)
				dense_set(mut + HDR, (unsigned)(unit_xorshift64(&rng) % MM_HLL_REGISTERS),
					  52 + (unsigned)(unit_xorshift64(&rng) % 12));
			want = hll.vt->decode(&hll, &st, mut, len);
			out.len = 0;
			got = hll.vt->merge_encoded(&hll, mut, len, &delta, &out);
			CHECK_EQ_INT(got, want);
			if (want == 0)
				CHECK(encoded_matches(mut, len, &delta, NULL));
			agreed += got == want;
			free(mut);
		}
	}
	note("merge_encoded: %d corrupt or mutated inputs judged as decode() judges them", agreed);
	hll.vt->destroy(&hll, &st);
	hll.vt->destroy(&hll, &delta);
	mm_buf_free(&enc);
	mm_buf_free(&out);
}

TEST(accuracy)
{
	static const unsigned long long sizes[] = {10, 1000, 100000, 10000000};
	size_t k;

	for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		state_t st;
		double err;

		hll.vt->init(&hll, &st);
		add_range(&st, 0, sizes[k]);
		err = fabs((double)count(&st) - (double)sizes[k]) / (double)sizes[k];
		note("n=%llu estimate=%llu relative error %.4f%% (bound %.2f%%)", sizes[k],
		     (unsigned long long)count(&st), 100 * err, 100 * MAX_ERR);
		CHECK(err <= MAX_ERR);
		hll.vt->destroy(&hll, &st);
	}
}

int main(void)
{
	RUN(hash_properties);
	RUN(hash_tail_matches_bytewise);
	RUN(id_hash_is_two_seeds);
	RUN(key_compares_match_memcmp);
	RUN(empty);
	RUN(single_element);
	RUN(golden_redis_encodings);
	RUN(readding_is_idempotent);
	RUN(add_rejects_non_strings);
	RUN(merge_is_union);
	RUN(merge_is_associative);
	RUN(round_trip);
	RUN(decode_ignores_cache);
	RUN(sparse_to_dense_promotion);
	RUN(large_register_forces_dense);
	RUN(dense_state_packing);
	RUN(corrupt_inputs_rejected);
	RUN(dense_length_and_register_checks);
	RUN(truncations_and_mutations);
	RUN(merge_encoded_matches_decode_merge_encode);
	RUN(merge_encoded_high_registers);
	RUN(merge_encoded_canonicalises);
	RUN(merge_encoded_random_opcodes);
	RUN(merge_encoded_into_nothing);
	RUN(merge_encoded_rejects_what_decode_rejects);
	RUN(accuracy);
	UNIT_DONE();
}
