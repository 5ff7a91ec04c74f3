/*
 * test_markset.c: the in-memory dedup marks of the embedded store
 * (engine/store/markset.h): hashes that share their first 64 bits stay
 * apart, growth keeps every live mark and drops the expired ones, a later
 * expiry wins, a copy leaves out what expired (and is grown once for the
 * marks to come), far expiries saturate until the set is stale, the filter
 * in front of the slots never turns away a mark that is there and turns
 * away most that are not, and the hash of an id depends on its namespace.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "store/markset.h"
#include "unit.h"

/* Marks with the same h0 (the same slot, a probe chain) and different h1:
 * 96 bits tell ids apart, not 64. */
TEST(same_h0)
{
	mm_markset_t s = {0};
	mm_markhash_t m = {42, 0, 0};
	uint64_t i;

	mm_markset_start(&s, 0);
	for (i = 1; i <= 100; i++) {
		m.h1 = i << 32;
		m.expire_ms = 1000 + (int64_t)i;
		CHECK_EQ_INT(mm_markset_add(&s, &m, 0), 0);
	}
	CHECK_EQ_INT(s.count, 100);
	for (i = 1; i <= 100; i++) {
		m.h1 = i << 32;
		CHECK_EQ_INT(mm_markset_expiry(&s, &m), 1000 + (int64_t)i);
	}
	m.h1 = 101ULL << 32;
	CHECK_EQ_INT(mm_markset_expiry(&s, &m), 0);
	m.h0 = 43;
	m.h1 = 1ULL << 32;
	CHECK_EQ_INT(mm_markset_expiry(&s, &m), 0);
	mm_markset_free(&s);
}

/* The mark of id "e<i>" in the namespace of seed, expiring at expire_ms. */
static void mark_of(uint64_t seed, int i, int64_t expire_ms, mm_markhash_t *m)
{
	char id[16];

	snprintf(id, sizeof(id), "e%d", i);
	mm_markset_hash(seed, id, strlen(id), m);
	m->expire_ms = expire_ms;
}

/* 100 000 marks, half of them expired by the time the table grows: every
 * live one is found, the later expiry of a mark added twice wins, and a
 * copy keeps only what is live. */
TEST(grow_and_prune)
{
	mm_markset_t s = {0}, t;
	mm_markhash_t m;
	uint64_t seed = mm_markset_ns_seed("ns", 2);
	char id[16];
	int i, miss = 0;

	mm_markset_start(&s, 0);
	for (i = 0; i < 100000; i++) {
		snprintf(id, sizeof(id), "e%d", i);
		mm_markset_hash(seed, id, strlen(id), &m);
		m.expire_ms = i % 2 ? 5000 : 500;
		REQUIRE(mm_markset_add(&s, &m, i < 50000 ? 0 : 1000) == 0);
	}
	for (i = 0; i < 100000; i++) {
		int64_t e;

		snprintf(id, sizeof(id), "e%d", i);
		mm_markset_hash(seed, id, strlen(id), &m);
		e = mm_markset_expiry(&s, &m);
		/* Expired marks may be gone (dropped by a growth) or still there. */
		miss += i % 2 ? e != 5000 : e != 500 && e != 0;
	}
	CHECK_EQ_INT(miss, 0);
	/* A table of 2 MiB or more starts on a huge page's boundary (markset.c). */
	REQUIRE(s.cap * sizeof(mm_markslot_t) >= ((size_t)2 << 20));
	CHECK_EQ_INT((uintptr_t)s.slots & (((uintptr_t)2 << 20) - 1), 0);
	snprintf(id, sizeof(id), "e%d", 7);
	mm_markset_hash(seed, id, strlen(id), &m);
	m.expire_ms = 9000;
	CHECK_EQ_INT(mm_markset_add(&s, &m, 1000), 0);
	m.expire_ms = 100;
	CHECK_EQ_INT(mm_markset_add(&s, &m, 1000), 0);
	CHECK_EQ_INT(mm_markset_expiry(&s, &m), 9000);
	REQUIRE(mm_markset_copy(&t, &s, 0, 1000) == 0);
	mm_markset_free(&s);
	s = t;
	CHECK_EQ_INT(s.count, 50000);
	CHECK(s.count * 4 <= s.cap * 3);
	REQUIRE(mm_markset_copy(&t, &s, 0, 6000) == 0);
	mm_markset_free(&s);
	s = t;
	CHECK_EQ_INT(s.count, 1);
	CHECK_EQ_INT(mm_markset_expiry(&s, &m), 9000);
	mm_markset_free(&s);
	CHECK_EQ_INT(mm_markset_expiry(&s, &m), 0);
}

/* Expiries are kept relative to the base: one at or before it is left out,
 * one beyond 2^32 - 1 ms after it is kept as that much, which stays right
 * until the set is stale (2^31 ms after its base) and read again. */
TEST(base_and_stale)
{
	const int64_t base = 1700000000000LL;
	mm_markset_t s = {0};
	mm_markhash_t m = {7, 9ULL << 32, base};

	mm_markset_start(&s, base);
	CHECK_EQ_INT(mm_markset_add(&s, &m, base), 0);
	CHECK_EQ_INT(s.count, 0);
	m.expire_ms = base + (1LL << 40);
	CHECK_EQ_INT(mm_markset_add(&s, &m, base), 0);
	CHECK_EQ_INT(mm_markset_expiry(&s, &m), base + (int64_t)UINT32_MAX);
	CHECK(!mm_markset_stale(&s, base + (1LL << 31) - 1));
	CHECK(mm_markset_stale(&s, base + (1LL << 31)));
	mm_markset_start(&s, base + (1LL << 31));
	CHECK_EQ_INT(mm_markset_expiry(&s, &m), 0);
	CHECK_EQ_INT(mm_markset_add(&s, &m, base + (1LL << 31)), 0);
	CHECK_EQ_INT(mm_markset_expiry(&s, &m), base + (1LL << 31) + (int64_t)UINT32_MAX);
	mm_markset_free(&s);
}

/* A copy for n more marks is grown once: the n adds then leave it as it
 * is, at most half full, while the set it was copied from is unchanged;
 * has_room tells when a table takes n more without a growth. */
TEST(copy_for_more)
{
	mm_markset_t s = {0}, t = {0};
	mm_markhash_t m;
	uint64_t seed = mm_markset_ns_seed("ns", 2);
	mm_markslot_t *slots = NULL;
	size_t cap = 0;
	int i, miss = 0;

	mm_markset_start(&s, 0);
	for (i = 0; i < 1000; i++) {
		mark_of(seed, i, 5000, &m);
		REQUIRE(mm_markset_add(&s, &m, 0) == 0);
	}
	CHECK(!mm_markset_has_room(&s, 30000));
	REQUIRE(mm_markset_copy(&t, &s, 30000, 0) == 0);
	CHECK_EQ_INT(t.count, 1000);
	CHECK(mm_markset_has_room(&t, 30000));
	cap = t.cap;
	slots = t.slots;
	for (i = 1000; i < 31000; i++) {
		mark_of(seed, i, 5000, &m);
		REQUIRE(mm_markset_add(&t, &m, 0) == 0);
	}
	CHECK(t.cap == cap && t.slots == slots);
	CHECK(t.count * 2 <= t.cap);
	CHECK_EQ_INT(s.count, 1000);
	for (i = 0; i < 31000; i++) {
		mark_of(seed, i, 5000, &m);
		miss += mm_markset_expiry(&t, &m) != 5000;
		miss += mm_markset_expiry(&s, &m) != (i < 1000 ? 5000 : 0);
	}
	CHECK_EQ_INT(miss, 0);
	mm_markset_free(&s);
	mm_markset_free(&t);
}

/* The filter (markset.h): every mark added, grown or copied passes it;
 * absent ids mostly do not (about 3% to 8% at the fill levels a table goes
 * through, 10% at most), and an empty set holds nothing. */
TEST(filter)
{
	mm_markset_t s = {0}, t;
	mm_markhash_t m;
	uint64_t seed = mm_markset_ns_seed("ns", 2);
	int i, j, miss, pass;

	mark_of(seed, 0, 5000, &m);
	CHECK(!mm_markset_may_hold(&s, &m));
	mm_markset_start(&s, 0);
	for (i = 0; i < 200000; i++) {
		mark_of(seed, i, 5000 + i % 7, &m);
		REQUIRE(mm_markset_add(&s, &m, 0) == 0);
		if ((i + 1) % 50000)
			continue;
		miss = pass = 0;
		for (j = 0; j <= i; j++) {
			mark_of(seed, j, 0, &m);
			miss += !mm_markset_may_hold(&s, &m);
		}
		for (j = 0; j < 20000; j++) {
			mark_of(seed, 1000000 + j, 0, &m);
			pass += mm_markset_may_hold(&s, &m);
			/* The filter's verdict and the lookup's agree on absence. */
			miss += mm_markset_expiry(&s, &m) != 0;
		}
		CHECK_EQ_INT(miss, 0);
		CHECK(pass > 0 && pass < 20000 / 10);
	}
	/* A copy rebuilds the filter from the slots, for a larger table. */
	REQUIRE(mm_markset_copy(&t, &s, 300000, 0) == 0);
	CHECK(t.cap > s.cap);
	miss = 0;
	for (j = 0; j < 200000; j++) {
		mark_of(seed, j, 0, &m);
		miss += !mm_markset_may_hold(&t, &m) || mm_markset_expiry(&t, &m) != 5000 + j % 7;
	}
	CHECK_EQ_INT(miss, 0);
	mm_markset_free(&s);
	mm_markset_free(&t);
}

/* One id in two namespaces: two hashes; never the empty slot's zeros. */
TEST(namespaces)
{
	mm_markhash_t a, b;

	mm_markset_hash(mm_markset_ns_seed("a", 1), "id", 2, &a);
	mm_markset_hash(mm_markset_ns_seed("b", 1), "id", 2, &b);
	CHECK(a.h0 != b.h0 || a.h1 != b.h1);
	CHECK((a.h0 | (a.h1 >> 32)) != 0);
	mm_markset_hash(mm_markset_ns_seed("a", 1), "id", 2, &b);
	CHECK(a.h0 == b.h0 && a.h1 == b.h1);
	/* The hashes are the embedded store's marks on disk: pinned. */
	CHECK(a.h0 == 0x96bfcc1ff2821b9fULL && a.h1 == 0xc7c4c2d62b126b81ULL);
	mm_markset_hash(mm_markset_ns_seed("recently_interacted", 19), "e12345", 6, &a);
	CHECK(a.h0 == 0x03f0feb6674e4cdaULL && a.h1 == 0x7c20672ce2fc132cULL);
}

int main(void)
{
	RUN(same_h0);
	RUN(grow_and_prune);
	RUN(base_and_stale);
	RUN(copy_for_more);
	RUN(filter);
	RUN(namespaces);
	UNIT_DONE();
}
