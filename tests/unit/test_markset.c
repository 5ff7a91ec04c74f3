/*
 * test_markset.c: the in-memory dedup marks of the embedded store
 * (engine/store/markset.h): hashes that share their first 64 bits stay
 * apart, within a run and through merges, a later expiry wins within a
 * flush and across runs, far expiries
 * saturate until the set is stale, and, against a reference table over
 * many flushes of random sizes (repeated ids, expiries that pass, runs
 * merged, dropped and compacted, the set read again from its live marks as
 * after a reopen), every live mark is found and no other, and every run is
 * sorted with a directory that matches it; the runs stay few and
 * the filter turns away most absent marks; the hash of an id depends on
 * its namespace.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/markset.h"
#include "unit.h"

/* Adds n marks as one flush does: prepare, commit, done. */
static int add_c(mm_markset_t *s, const mm_markhash_t *m, size_t n, int64_t now_ms, int compact)
{
	mm_markbatch_t b;
	int rc = mm_markset_prepare(s, &b, m, n, now_ms, compact);

	if (rc == 0) {
		mm_markset_commit(s, &b);
		mm_markset_batch_done(s, &b);
	}
	return rc;
}

static int add(mm_markset_t *s, const mm_markhash_t *m, size_t n, int64_t now_ms)
{
	return add_c(s, m, n, now_ms, 0);
}

/* The number of faults in the set's runs: slots not in strictly increasing
 * (h0, h1) order (one slot per hash), directory ranges that do not hold
 * exactly the slots of their top bits, and a latest expiry that is not the
 * run's. */
static size_t run_faults(const mm_markset_t *s)
{
	size_t faults = 0;

	for (size_t r = 0; r < s->nruns; r++) {
		const mm_markrun_t *run = &s->runs[r];
		size_t nb = (size_t)1 << run->dbits;
		uint32_t most = 0;

		for (size_t i = 0; i < run->n; i++) {
			const mm_markslot_t *a = &run->slots[i];
			size_t b = run->dbits ? (size_t)(a->h0 >> (64 - run->dbits)) : 0;

			if (i > 0 && !(a[-1].h0 < a->h0 || (a[-1].h0 == a->h0 && a[-1].h1 < a->h1)))
				faults++;
			if (i < run->dir[b] || i >= run->dir[b + 1])
				faults++;
			if (a->exp > most)
				most = a->exp;
		}
		faults += run->dir[0] != 0 || run->dir[nb] != run->n || most != run->max_exp;
	}
	return faults;
}

/* Marks with the same h0 (the same directory range) and different h1: 96
 * bits tell ids apart, not 64. */
TEST(same_h0)
{
	mm_markset_t s = {0};
	mm_markhash_t m[3] = {{42, 1ULL << 32, 1000}, {42, 2ULL << 32, 1000}, {43, 1ULL << 32, 1000}};
	mm_markhash_t other = {42, 3ULL << 32, 0};

	mm_markset_start(&s, 0);
	REQUIRE(add(&s, m, 2, 0) == 0);
	REQUIRE(add(&s, m + 2, 1, 0) == 0);
	CHECK(mm_markset_live(&s, &m[0], 0));
	CHECK(mm_markset_live(&s, &m[1], 0));
	CHECK(mm_markset_live(&s, &m[2], 999));
	CHECK(!mm_markset_live(&s, &m[2], 1000));
	CHECK(!mm_markset_live(&s, &other, 0));
	mm_markset_free(&s);
}

/* Merges of runs whose slots share an h0: marks of one hash in several
 * runs fold into one slot with the latest expiry (an expired copy before a
 * live one included), hashes that share only h0 stay apart in h1 order, and
 * h0 = 2^64 - 1 (the merge's key for a run at its end) is kept. */
TEST(merge_ties)
{
	const uint64_t top = UINT64_MAX;
	mm_markset_t s = {0};
	mm_markhash_t f1[] = {{10, 3ULL << 32, 5000}, {top, 1ULL << 32, 5000}};
	mm_markhash_t f2[] = {{10, 1ULL << 32, 5000}, {10, 3ULL << 32, 9000}, {top, 2ULL << 32, 5000}};
	mm_markhash_t f3[] = {{10, 2ULL << 32, 150}, {10, 1ULL << 32, 7000}, {5, 1ULL << 32, 5000}};
	mm_markhash_t f4[] = {{10, 2ULL << 32, 8000}, {top, 1ULL << 32, 4000}};
	mm_markhash_t q;

	mm_markset_start(&s, 0);
	REQUIRE(add(&s, f1, 2, 100) == 0);
	REQUIRE(add(&s, f2, 3, 100) == 0);
	REQUIRE(add(&s, f3, 3, 100) == 0);
	REQUIRE(add(&s, f4, 2, 100) == 0);
	CHECK_EQ_INT(s.nruns, 4);
	/* One run of every hash, merged from the four at 200, when the first
	 * (10, 2) has expired. */
	REQUIRE(add_c(&s, NULL, 0, 200, 1) == 0);
	CHECK_EQ_INT(s.nruns, 1);
	CHECK_EQ_INT(s.count, 6);
	CHECK_EQ_INT(run_faults(&s), 0);
	q = (mm_markhash_t){10, 3ULL << 32, 0};
	CHECK(mm_markset_live(&s, &q, 8999));
	CHECK(!mm_markset_live(&s, &q, 9000));
	q = (mm_markhash_t){10, 1ULL << 32, 0};
	CHECK(mm_markset_live(&s, &q, 6999));
	CHECK(!mm_markset_live(&s, &q, 7000));
	q = (mm_markhash_t){10, 2ULL << 32, 0};
	CHECK(mm_markset_live(&s, &q, 7999));
	q = (mm_markhash_t){top, 1ULL << 32, 0};
	CHECK(mm_markset_live(&s, &q, 4999));
	CHECK(!mm_markset_live(&s, &q, 5000));
	q = (mm_markhash_t){top, 2ULL << 32, 0};
	CHECK(mm_markset_live(&s, &q, 4999));
	q = (mm_markhash_t){5, 1ULL << 32, 0};
	CHECK(mm_markset_live(&s, &q, 4999));
	q = (mm_markhash_t){10, 4ULL << 32, 0};
	CHECK(!mm_markset_live(&s, &q, 0));
	mm_markset_free(&s);
}

/* One hash twice: the later expiry wins, in one flush and across two. */
TEST(later_expiry)
{
	mm_markset_t s = {0};
	mm_markhash_t m[2] = {{5, 6ULL << 32, 3000}, {5, 6ULL << 32, 2000}};

	mm_markset_start(&s, 0);
	REQUIRE(add(&s, m, 2, 0) == 0);
	CHECK_EQ_INT(s.count, 1);
	CHECK(mm_markset_live(&s, &m[0], 2999));
	m[0].expire_ms = 9000;
	REQUIRE(add(&s, m, 1, 100) == 0);
	CHECK(mm_markset_live(&s, &m[0], 8999));
	CHECK(!mm_markset_live(&s, &m[0], 9000));
	mm_markset_free(&s);
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
	CHECK_EQ_INT(add(&s, &m, 1, base - 10), 0);
	CHECK_EQ_INT(s.count, 0);
	m.expire_ms = base + (1LL << 40);
	CHECK_EQ_INT(add(&s, &m, 1, base), 0);
	CHECK(mm_markset_live(&s, &m, base + (int64_t)UINT32_MAX - 1));
	CHECK(!mm_markset_live(&s, &m, base + (int64_t)UINT32_MAX));
	CHECK(!mm_markset_stale(&s, base + (1LL << 31) - 1));
	CHECK(mm_markset_stale(&s, base + (1LL << 31)));
	mm_markset_start(&s, base + (1LL << 31));
	CHECK(!mm_markset_live(&s, &m, base + (1LL << 31)));
	CHECK_EQ_INT(add(&s, &m, 1, base + (1LL << 31)), 0);
	CHECK(mm_markset_live(&s, &m, base + (1LL << 31) + (int64_t)UINT32_MAX - 1));
	mm_markset_free(&s);
}

#define REF_IDS 120000

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static void id_mark(uint64_t seed, size_t i, mm_markhash_t *m)
{
	char id[24];

	snprintf(id, sizeof(id), "e%zu", i);
	mm_markset_hash(seed, id, strlen(id), m);
}

/* id_mark with h0's top bit cleared (which 0), set (1) or left (2). */
static void half_mark(uint64_t seed, int which, size_t id, mm_markhash_t *m)
{
	id_mark(seed, id, m);
	if (which == 0)
		m->h0 &= ~(1ULL << 63);
	else if (which == 1)
		m->h0 |= 1ULL << 63;
}

/* A merge goes through the hash space in blocks, in order: marks all in
 * its low half (the high half's blocks empty), all in the high half, or in
 * both, with expired and repeated ones (so that the output is shorter than
 * the input and each block's slots move down): one run in order, every
 * mark live as the reference says. */
TEST(merge_halves)
{
	enum { IDS = 3000 };
	uint64_t seed = mm_markset_ns_seed("halves", 6);
	static mm_markhash_t m[1000];
	static int64_t ref[IDS];
	size_t i, wrong = 0;

	for (int which = 0; which < 3; which++) {
		mm_markset_t s = {0};

		memset(ref, 0, sizeof(ref));
		mm_markset_start(&s, 0);
		for (size_t f = 0; f < 3; f++) {
			for (i = 0; i < 1000; i++) {
				/* A tenth of the third flush repeats ids of the
				 * first, a tenth of each expires before the merge. */
				size_t id = f == 2 && i % 10 == 1 ? i : f * 1000 + i;

				half_mark(seed, which, id, &m[i]);
				m[i].expire_ms = i % 10 == 0 ? 500 : 10000 + (int64_t)f;
				if (m[i].expire_ms > ref[id])
					ref[id] = m[i].expire_ms;
			}
			REQUIRE(add(&s, m, 1000, 100) == 0);
		}
		REQUIRE(add_c(&s, NULL, 0, 1000, 1) == 0);
		CHECK_EQ_INT(s.nruns, 1);
		CHECK_EQ_INT(run_faults(&s), 0);
		for (i = 0; i < IDS; i++) {
			mm_markhash_t q;

			half_mark(seed, which, i, &q);
			wrong += mm_markset_live(&s, &q, 1000) != (ref[i] > 1000);
			wrong += ref[i] > 1000 && (mm_markset_live(&s, &q, ref[i] - 1) != 1 ||
						   mm_markset_live(&s, &q, ref[i]) != 0);
		}
		mm_markset_free(&s);
	}
	CHECK_EQ_INT(wrong, 0);
}

/* Checks every id against the reference (expiry ref[i]: live while after
 * now), and counts the absent ids (REF_IDS and on) the filter lets by. */
static size_t check_all(const mm_markset_t *s, uint64_t seed, const int64_t *ref, int64_t now,
			size_t *passed)
{
	size_t i, wrong = 0;
	mm_markhash_t m;

	for (i = 0; i < REF_IDS; i++) {
		id_mark(seed, i, &m);
		wrong += mm_markset_live(s, &m, now) != (ref[i] > now);
	}
	*passed = 0;
	for (i = REF_IDS; i < 2 * REF_IDS; i++) {
		id_mark(seed, i, &m);
		*passed += mm_markset_may_hold(s, &m);
		wrong += mm_markset_live(s, &m, now);
	}
	return wrong;
}

/* Flushes of 1 to 12 000 marks of random ids (a quarter of them repeats of
 * earlier ones, with a new expiry), the clock moving on so that marks and
 * whole runs expire, checked after each flush against a table of each id's
 * latest expiry; halfway, and at the end, the set is read again from its
 * live marks (as after a reopen) and checked the same way. */
TEST(reference)
{
	const int64_t base = 1700000000000LL;
	uint64_t seed = mm_markset_ns_seed("ns", 2);
	int64_t *ref = calloc(REF_IDS, sizeof(*ref)), now = base;
	mm_markhash_t *batch = malloc(12000 * sizeof(*batch)), *live = NULL;
	mm_markset_t s = {0};
	size_t next = 0, flush, i, wrong = 0, passed = 0, most_runs = 0, nlive, expired = 0;

	REQUIRE(ref != NULL && batch != NULL);
	mm_markset_start(&s, base - 3600000);
	for (flush = 0; flush < 80; flush++) {
		size_t n = 1 + unit_xorshift64(&rng_state) % (flush % 7 == 0 ? 12 : 12000);

		for (i = 0; i < n; i++) {
			size_t id = next > 0 && unit_xorshift64(&rng_state) % 4 == 0 ? unit_xorshift64(&rng_state) % next
							       : (next < REF_IDS ? next++ : unit_xorshift64(&rng_state) % next);

			id_mark(seed, id, &batch[i]);
			/* Expiries from already past to about an hour on. */
			batch[i].expire_ms = now - 1000 + (int64_t)(unit_xorshift64(&rng_state) % 3600000);
			if (batch[i].expire_ms > ref[id])
				ref[id] = batch[i].expire_ms;
		}
		/* Every ninth flush compacts (as when a partition ended on the
		 * disk): one run of the live marks. */
		REQUIRE(add_c(&s, batch, n, now, flush % 9 == 8) == 0);
		if (flush % 9 == 8) {
			CHECK(s.nruns <= 1);
			for (i = 0; i < (s.nruns ? s.runs[0].n : 0); i++)
				expired += (int64_t)s.runs[0].slots[i].exp <= now - s.base_ms;
		}
		if (s.nruns > most_runs)
			most_runs = s.nruns;
		wrong += run_faults(&s);
		now += 60000 + (int64_t)(unit_xorshift64(&rng_state) % 120000);
		wrong += check_all(&s, seed, ref, now, &passed);
		if (flush == 40 || flush == 79) {
			/* Read again: one flush of every live mark. */
			free(live);
			live = malloc(REF_IDS * sizeof(*live));
			REQUIRE(live != NULL);
			for (i = nlive = 0; i < REF_IDS; i++)
				if (ref[i] > now) {
					id_mark(seed, i, &live[nlive]);
					live[nlive++].expire_ms = ref[i];
				}
			mm_markset_start(&s, now - 3600000);
			REQUIRE(add(&s, live, nlive, now) == 0);
			CHECK_EQ_INT(s.count, nlive);
			CHECK_EQ_INT(s.nruns, nlive ? 1 : 0);
			wrong += check_all(&s, seed, ref, now, &passed);
		}
	}
	CHECK_EQ_INT(wrong, 0);
	CHECK_EQ_INT(expired, 0);
	/* Sizes more than double from run to run: at most log2(count) + 1. */
	CHECK(most_runs <= 18);
	/* At 2 to 6 marks a filter word, about 1% of absent ids pass. */
	CHECK(passed < REF_IDS / 20);
	printf("# %zu flushes, at most %zu runs, %zu of %d absent ids passed the filter\n", flush,
	       most_runs, passed, REF_IDS);
	free(live);
	free(batch);
	free(ref);
	mm_markset_free(&s);
}

/* markset.c's merges: 32 runs at once, size tiers of 32x. */
#define FANIN 32

static unsigned tier(size_t n)
{
	unsigned t = 0;

	for (; n >= FANIN; n /= FANIN)
		t++;
	return t;
}

/* Many flushes of new ids, all live: the set keeps every one of them, the
 * newest 32 runs merged into one whenever they are of one size tier
 * (floor(log32(n))): at most 31 runs per tier. */
TEST(runs_stay_few)
{
	uint64_t seed = mm_markset_ns_seed("ns", 2);
	mm_markhash_t *batch = malloc(5000 * sizeof(*batch));
	mm_markset_t s = {0};
	size_t f, i, missing = 0, n = 0;

	REQUIRE(batch != NULL);
	mm_markset_start(&s, 0);
	for (f = 0; f < 70; f++) {
		for (i = 0; i < 5000; i++) {
			id_mark(seed, n++, &batch[i]);
			batch[i].expire_ms = 1000000;
		}
		REQUIRE(add(&s, batch, 5000, 0) == 0);
		CHECK_EQ_INT(run_faults(&s), 0);
		for (i = FANIN - 1; i < s.nruns; i++)
			CHECK(tier(s.runs[i - FANIN + 1].n) > tier(s.runs[i].n));
	}
	/* Runs of 5 000 and 160 000 marks (tiers 2 and 3): 2 of 160 000 and 6
	 * of 5 000 after 70 flushes. */
	CHECK_EQ_INT(s.nruns, 8);
	CHECK_EQ_INT(s.count, n);
	printf("# %zu marks in %zu runs\n", n, s.nruns);
	for (i = 0; i < n; i++) {
		id_mark(seed, i, &batch[0]);
		missing += !mm_markset_live(&s, &batch[0], 0);
	}
	CHECK_EQ_INT(missing, 0);
	free(batch);
	mm_markset_free(&s);
}

/* A merge of 32 runs of one tier (as the flushes of a long run make them),
 * whose marks repeat one another's with later and earlier expiries and
 * partly expire before it: after each flush, and across the merge, every
 * live mark is found with its latest expiry and no other mark is. */
TEST(merge_wide)
{
	enum { FLUSH = 2000, FLUSHES = 40, IDS = FLUSH * FLUSHES };
	uint64_t seed = mm_markset_ns_seed("wide", 4);
	static mm_markhash_t batch[FLUSH];
	static int64_t ref[IDS];
	mm_markset_t s = {0};
	size_t f, i, next = 0, wrong = 0, merged = 0;
	int64_t now = 0;

	mm_markset_start(&s, 0);
	for (f = 0; f < FLUSHES; f++) {
		size_t before = s.nruns;

		for (i = 0; i < FLUSH; i++) {
			/* A fifth repeat an earlier flush's ids; a tenth expire
			 * within the next two flushes. */
			size_t id = next > 0 && i % 5 == 0 ? unit_xorshift64(&rng_state) % next
							   : next++;
			int64_t life = i % 10 == 3 ? 1500
					: 100000 + (int64_t)(unit_xorshift64(&rng_state) % 100000);

			id_mark(seed, id, &batch[i]);
			batch[i].expire_ms = now + life;
			if (batch[i].expire_ms > ref[id])
				ref[id] = batch[i].expire_ms;
		}
		REQUIRE(add(&s, batch, FLUSH, now) == 0);
		merged += s.nruns <= before;
		wrong += run_faults(&s);
		now += 1000;
		for (i = 0; i < next; i++) {
			mm_markhash_t q;

			id_mark(seed, i, &q);
			wrong += mm_markset_live(&s, &q, now) != (ref[i] > now);
		}
	}
	CHECK_EQ_INT(wrong, 0);
	/* Flush 32 made the 32nd run of tier 2 (1 024 to 32 767 marks): one
	 * merge of all of them, then 8 more runs. */
	CHECK_EQ_INT(merged, 1);
	CHECK_EQ_INT(s.nruns, 9);
	mm_markset_free(&s);
}

/* One id in two namespaces: two hashes; never all zero. */
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
	RUN(later_expiry);
	RUN(merge_ties);
	RUN(merge_halves);
	RUN(base_and_stale);
	RUN(reference);
	RUN(runs_stay_few);
	RUN(merge_wide);
	RUN(namespaces);
	UNIT_DONE();
}
