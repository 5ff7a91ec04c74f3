/*
 * test_agg.c: the pre-aggregation table (engine/core/agg.c): every
 * (key, bucket) pair has one entry however many times it is added, entries
 * are found again across the index's growth and through the hash given
 * in two parts (mm_agg_key_hash, mm_agg_hash_mix), iteration yields each once in
 * insertion order, kept entry pointers stay valid while gen is unchanged,
 * reset empties the table for reuse, and the index's slots are one block,
 * on a 2 MiB boundary (so that the kernel can give it a huge page) once it
 * holds 256 KiB or more; keys short enough to stay in their entry and
 * longer ones are told apart by their bytes alone.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/agg.h"
#include "lib/hugemap.h"
#include "lib/buf.h"
#include "lib/error.h"
#include "monoid/monoid.h"
#include "unit.h"

#define NKEYS 20000

/* The i-th key: entities of varied lengths, each in two buckets. */
static size_t key_of(int i, char *out, int64_t *bucket)
{
	*bucket = i % 2 ? -3 : 19000 + i % 7;
	return (size_t)snprintf(out, 64, "e%d%.*s", i / 2, i % 13, "xxxxxxxxxxxxx");
}

static int64_t sum_of(const mm_monoid_t *m, const void *st)
{
	mm_buf_t out = {0};
	int64_t v = -1;

	if (m->vt->to_json(m, st, &out) == 0 && mm_buf_append(&out, "", 1) == 0)
		sscanf((const char *)out.p, "{\"value\":%lld}", (long long *)&v);
	mm_buf_free(&out);
	return v;
}

TEST(sum_table)
{
	mm_monoid_params_t p = {0};
	mm_monoid_t m = {0};
	mm_agg_t a;
	char k[64];
	int64_t bucket;

	REQUIRE(mm_monoid_init(&m, "sum", &p) == 0);
	mm_agg_init(&a, &m);
	CHECK(mm_agg_find(&a, "e0", 2, 19000) == NULL);
	for (int round = 1; round <= 3; round++) {
		for (int i = 0; i < NKEYS; i++) {
			size_t n = key_of(i, k, &bucket);
			mm_value_t v = {.type = MM_VAL_INT, .i = i};
			int created = -1;
			/* Round 2 adds as the record loop does, with the key's
			 * hash taken apart from the bucket's: the same entries. */
			mm_agg_entry_t *e =
				round == 2 ? mm_agg_upsert_h(&a, k, n, bucket,
							     mm_agg_hash_mix(mm_agg_key_hash(k, n), bucket),
							     &created)
					   : mm_agg_upsert(&a, k, n, bucket, &created);

			REQUIRE(e != NULL);
			CHECK_EQ_INT(created, round == 1);
			CHECK(m.vt->add(&m, e->state, &v) == 0);
		}
		CHECK_EQ_INT(a.count, NKEYS);
	}
	/* Each entry once, in insertion order, with three times its value. */
	for (size_t i = 0; i < a.count; i++) {
		const mm_agg_entry_t *e = &a.entries[i];
		size_t n = key_of((int)i, k, &bucket);

		CHECK(e->klen == n && memcmp(mm_agg_entry_key(e), k, n) == 0 && e->bucket == bucket);
		CHECK_EQ_INT(sum_of(&m, e->state), 3 * (int64_t)i);
		CHECK(mm_agg_find(&a, k, n, bucket) == e);
	}
	/* Same entity, other bucket; same bytes, other length: absent. */
	CHECK(mm_agg_find(&a, "e0", 2, 5) == NULL);
	CHECK(mm_agg_find(&a, "e", 1, 19000) == NULL);
	mm_agg_free(&a);
	CHECK(a.count == 0 && a.cap == 0 && a.entries == NULL);
}

TEST(gen_and_reset)
{
	mm_agg_t a;
	mm_agg_entry_t *kept;
	uint64_t gen;
	char k[64];
	int64_t bucket;
	int created, moved = 0;

	mm_agg_init(&a, NULL);
	kept = mm_agg_upsert(&a, "first", 5, 7, &created);
	REQUIRE(kept != NULL && created == 1);
	gen = a.gen;
	for (int i = 0; i < NKEYS; i++) {
		size_t n = key_of(i, k, &bucket);

		REQUIRE(mm_agg_upsert(&a, k, n, bucket, &created) != NULL);
		if (a.gen != gen) {
			/* The entries grew and may have moved: look it up again. */
			moved++;
			gen = a.gen;
			kept = mm_agg_find(&a, "first", 5, 7);
			REQUIRE(kept != NULL);
		}
		CHECK(kept == &a.entries[0] && kept->klen == 5 && memcmp(mm_agg_entry_key(kept), "first", 5) == 0);
	}
	CHECK(moved > 5);
	CHECK(a.ecap >= a.count && a.cap >= 2 * a.count);
	mm_agg_reset(&a);
	CHECK(a.gen != gen);
	CHECK_EQ_INT(a.count, 0);
	CHECK(mm_agg_find(&a, "first", 5, 7) == NULL);
	for (int i = 0; i < NKEYS; i++) {
		size_t n = key_of(i, k, &bucket);

		CHECK(mm_agg_find(&a, k, n, bucket) == NULL);
	}
	/* Reused after a reset: the same keys are new again. */
	REQUIRE(mm_agg_upsert(&a, "again", 5, 1, &created) != NULL);
	CHECK(created == 1 && a.count == 1);
	CHECK(mm_agg_find(&a, "again", 5, 1) == &a.entries[0]);
	mm_agg_free(&a);
}

/* The index is one block, hashes then entry numbers, and from 256 KiB
 * (32 768 slots of 12 bytes, here, up to 65 536) a mapping of its own on a
 * huge page's boundary; every key is found at every size. */
TEST(slots_block)
{
	mm_agg_t a;
	char k[64];
	int64_t bucket;
	int created, huge = 0;
	size_t cap = 0;

	mm_agg_init(&a, NULL);
	for (int i = 0; i < NKEYS; i++) {
		size_t n = key_of(i, k, &bucket);

		REQUIRE(mm_agg_upsert(&a, k, n, bucket, &created) != NULL);
		if (a.cap == cap)
			continue;
		cap = a.cap;
		CHECK((void *)a.index == (void *)(a.hashes + a.cap));
		if (a.cap * 12 >= ((size_t)256 << 10)) {
			CHECK_EQ_INT((uintptr_t)a.hashes % MM_HUGE_PAGE, 0);
			huge++;
		}
		for (int j = 0; j <= i; j++) {
			n = key_of(j, k, &bucket);
			CHECK(mm_agg_find(&a, k, n, bucket) == &a.entries[j]);
		}
	}
	CHECK_EQ_INT(huge, 2);
	mm_agg_reset(&a);
	CHECK(mm_agg_find(&a, k, key_of(0, k, &bucket), bucket) == NULL);
	mm_agg_free(&a);
}

/* The byte inline_keys changes in variant v (1 to 3) of a key of n bytes. */
static int changed_at(int n, int v)
{
	return v == 1 ? 0 : v == 2 ? n / 2 : n - 1;
}

/* Whether variant v of a key of n bytes differs from the variants before
 * it: a short key's changed bytes coincide (all three for one byte), and
 * a key of no bytes has none to change. */
static int distinct(int n, int v)
{
	if (v == 0 || v == 4)
		return 1;
	if (n == 0)
		return 0;
	for (int u = 1; u < v; u++)
		if (changed_at(n, u) == changed_at(n, v))
			return 0;
	return 1;
}

/* Keys of every length from 0 to 40, on both sides of MM_AGG_KEY_INLINE,
 * each beside keys that differ from it in one byte (the first, the middle
 * or the last), a byte shorter or longer, or in the bucket. Every key is
 * given one and the same hash, so that only the key compare tells them
 * apart, as it does for keys whose hashes collide. The keys are found
 * again after the entries have grown (moving the inline bytes with them),
 * and read back with mm_agg_entry_key. */
TEST(inline_keys)
{
	enum { MAXLEN = 40, VARIANTS = 5 };
	const uint64_t h = 0x5eed; /* one hash for all */
	mm_agg_t a;
	char keys[MAXLEN + 1][VARIANTS][MAXLEN + 1];
	mm_agg_entry_t *e;
	int created;

	mm_agg_init(&a, NULL);
	for (int n = 0; n <= MAXLEN; n++)
		for (int v = 0; v < VARIANTS; v++) {
			for (int i = 0; i < n; i++)
				keys[n][v][i] = (char)('a' + (n + i) % 26);
			/* v 0 the key itself, 1-3 one byte changed, 4 another bucket. */
			if (n > 0 && v >= 1 && v <= 3)
				keys[n][v][changed_at(n, v)] ^= 0x20;
		}
	for (int round = 0; round < 2; round++)
		for (int n = 0; n <= MAXLEN; n++)
			for (int v = 0; v < VARIANTS; v++) {
				e = mm_agg_upsert_h(&a, keys[n][v], (size_t)n, v == 4 ? 2 : 1, h,
						    &created);
				REQUIRE(e != NULL);
				CHECK_EQ_INT(created, round == 0 && distinct(n, v));
			}
	CHECK_EQ_INT(a.count, 2 + 3 + 4 + 5 * (MAXLEN - 2));
	CHECK(a.ecap > 32); /* the entries grew at least once */
	for (int n = 0; n <= MAXLEN; n++)
		for (int v = 0; v < VARIANTS; v++) {
			if (!distinct(n, v))
				continue;
			e = mm_agg_find_h(&a, keys[n][v], (size_t)n, v == 4 ? 2 : 1, h);
			REQUIRE(e != NULL);
			CHECK(e->klen == (uint32_t)n && e->bucket == (v == 4 ? 2 : 1));
			CHECK(memcmp(mm_agg_entry_key(e), keys[n][v], (size_t)n) == 0);
			if (n <= MM_AGG_KEY_INLINE)
				CHECK(mm_agg_entry_key(e) == e->kbytes);
			/* A key one byte longer than another is not it. */
			if (n < MAXLEN)
				CHECK(mm_agg_find_h(&a, keys[n + 1][v], (size_t)n, 3, h) == NULL);
		}
	/* Only the long keys took arena bytes. */
	{
		size_t far = 0;

		for (int n = MM_AGG_KEY_INLINE + 1; n <= MAXLEN; n++)
			far += (size_t)n * VARIANTS;
		CHECK_EQ_INT(a.key_bytes, far);
	}
	mm_agg_free(&a);
}

int main(void)
{
	RUN(sum_table);
	RUN(gen_and_reset);
	RUN(slots_block);
	RUN(inline_keys);
	UNIT_DONE();
}
