/*
 * test_agg.c: the pre-aggregation table (engine/core/agg.c): every
 * (key, bucket) pair has one entry however many times it is added, entries
 * are found again across the index's growth and through the hash given
 * in two parts (mm_agg_key_hash, mm_agg_hash_mix), iteration yields each once in
 * insertion order, kept entry pointers stay valid while gen is unchanged,
 * reset empties the table for reuse, and the index's slots are one block,
 * on a 2 MiB boundary (so that the kernel can give it a huge page) once it
 * holds 256 KiB or more.
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

		CHECK(e->klen == n && memcmp(e->key, k, n) == 0 && e->bucket == bucket);
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
		CHECK(kept == &a.entries[0] && kept->klen == 5 && memcmp(kept->key, "first", 5) == 0);
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

int main(void)
{
	RUN(sum_table);
	RUN(gen_and_reset);
	RUN(slots_block);
	UNIT_DONE();
}
