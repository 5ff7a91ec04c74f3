/*
 * test_idset.c: the pending dedup ids (engine/core/idset.h). Ids whose
 * hashes share a tag, a whole h0 or even all 128 bits stay apart in a set
 * that keeps ids (it keeps them exactly), and in one that does not, ids
 * are told apart by hash and length and no bytes are copied but those
 * asked for; a large id is kept whole beside small ones; expiries are
 * kept exactly, on either side of the generation's first and past the
 * 32-bit offsets' range; and, against a reference set, two generations
 * used as the pipeline uses them (ids added to the current one, looked up
 * in both, the other reset and the roles swapped) find every id they hold
 * and no other, keep each entry's hash, expiry and tag, and keep the id
 * bytes of earlier entries in place while the set grows, also past the
 * sizes where its arrays are mappings grown by mremap, and with
 * generations reusing the arena chunks that reset kept; the filter in
 * front of the slots turns away almost every absent id, at the set's
 * fullest and emptiest; a set reserved for n ids takes them without
 * growing; the record loop's inline insert adds what upsert would, or
 * nothing.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/idset.h"
#include "lib/hugemap.h"
#include "lib/hash.h"
#include "unit.h"

TEST(colliding_hashes)
{
	mm_idset_t s;
	/* Same tag, other slot; same h0, other h1; the very same hash. */
	mm_idhash_t a = {0x1234567800000005ULL, 1}, b = {0x1234567800000006ULL, 1},
		    c = {0x1234567800000005ULL, 2};
	mm_idset_entry_t *ea, *eb, *ec, *ed;
	int created;

	mm_idset_init(&s, 1);
	CHECK(mm_idset_find(&s, "a", 1, &a) == NULL);
	ea = mm_idset_upsert(&s, "a", 1, &a, 7, &created);
	REQUIRE(ea && created);
	ea->tag = 1;
	eb = mm_idset_upsert(&s, "b", 1, &b, 8, &created);
	REQUIRE(eb && created);
	ec = mm_idset_upsert(&s, "c", 1, &c, 9, &created);
	REQUIRE(ec && created);
	ed = mm_idset_upsert(&s, "d", 1, &a, 10, &created);
	REQUIRE(ed && created);
	CHECK_EQ_INT(s.count, 4);
	CHECK(mm_idset_find(&s, "a", 1, &a) == &s.entries[0]);
	CHECK(mm_idset_find(&s, "b", 1, &b) == &s.entries[1]);
	CHECK(mm_idset_find(&s, "c", 1, &c) == &s.entries[2]);
	CHECK(mm_idset_find(&s, "d", 1, &a) == &s.entries[3]);
	CHECK(mm_idset_find(&s, "a", 1, &b) == NULL);
	CHECK(mm_idset_find(&s, "ab", 2, &a) == NULL);
	CHECK(mm_idset_upsert(&s, "a", 1, &a, 99, &created) == &s.entries[0] && !created);
	CHECK_EQ_INT(mm_idset_expiry(&s, &s.entries[0]), 99);
	CHECK_EQ_INT(s.entries[0].tag, 1);
	CHECK_EQ_INT(s.entries[3].tag, 0);
	CHECK(s.entries[2].hash.h1 == 2);
	mm_idset_reset(&s);
	CHECK_EQ_INT(s.count, 0);
	CHECK(mm_idset_find(&s, "a", 1, &a) == NULL);
	mm_idset_free(&s);
}

TEST(large_id)
{
	mm_idset_t s;
	size_t big = 70000;
	char *id = malloc(big);
	mm_idhash_t h, hs;
	mm_idset_entry_t *e;
	const char *small;
	int created;

	REQUIRE(id);
	memset(id, 'x', big);
	mm_idset_init(&s, 1);
	mm_id_hash(1, "s", 1, &hs);
	e = mm_idset_upsert(&s, "s", 1, &hs, 0, &created);
	REQUIRE(e);
	small = mm_idset_id(&s, e);
	mm_id_hash(1, id, big, &h);
	e = mm_idset_upsert(&s, id, big, &h, 0, &created);
	REQUIRE(e && created);
	CHECK(mm_idset_id(&s, e) != id && memcmp(mm_idset_id(&s, e), id, big) == 0);
	CHECK(mm_idset_find(&s, id, big, &h) == e);
	e = mm_idset_upsert(&s, "t", 1, &(mm_idhash_t){3, 3}, 0, &created);
	REQUIRE(e);
	CHECK(mm_idset_id(&s, e)[0] == 't' && small[0] == 's');
	e = mm_idset_find(&s, id, big, &h);
	CHECK(e && memcmp(mm_idset_id(&s, e), id, big) == 0);
	/* Past the longest id a set takes: refused, nothing added. */
	CHECK(mm_idset_upsert(&s, id, (size_t)MM_IDSET_MAX_LEN + 1, &h, 0, &created) == NULL);
	CHECK_EQ_INT(s.count, 3);
	mm_idset_reset(&s);
	mm_idset_free(&s);
	free(id);
}

/* The reference: which ids of the universe each generation holds. */
#define UNIVERSE 3000

static void id_of(unsigned n, char *buf, size_t *len)
{
	*len = (size_t)snprintf(buf, 32, "event-%u", n);
}

/* Half the universe is given hashes that collide on purpose (few distinct
 * h0 values), to walk long probe runs; where the set keeps ids, entries
 * with equal hashes too, and where it does not (ids are their hash and
 * length), h1 tells them apart. */
static void hash_of(unsigned n, int keep, mm_idhash_t *h)
{
	char buf[32];
	size_t len;

	id_of(n, buf, &len);
	mm_id_hash(42, buf, len, h);
	if (n % 2)
		*h = (mm_idhash_t){(uint64_t)(n % 7) << 40 | (n % 5), keep ? n % 3 : n};
}

/* The expiry given to id n: either side of the first one's, far apart. */
static int64_t expiry_of(unsigned n)
{
	return 1765000000000LL + ((int64_t)n - UNIVERSE / 2) * 1000003;
}

static void generations(int keep)
{
	mm_idset_t ids[2];
	static unsigned char ref[2][UNIVERSE];
	static const char *ptr[2][UNIVERSE];
	int cur = 0;
	uint64_t rnd = 88172645463325252ULL;

	mm_idset_init(&ids[0], keep);
	mm_idset_init(&ids[1], keep);
	memset(ref, 0, sizeof(ref));
	for (int round = 0; round < 40; round++) {
		/* Rounds of very different sizes: growth, and resets of a big set. */
		int adds = round % 5 == 0 ? 2500 : (int)(rnd % 400);

		for (int k = 0; k < adds; k++) {
			unsigned n;
			char buf[32];
			size_t len;
			mm_idhash_t h;
			mm_idset_entry_t *e;
			int created, pending;

			n = (unsigned)(unit_xorshift64(&rnd) % UNIVERSE);
			id_of(n, buf, &len);
			hash_of(n, keep, &h);
			pending = mm_idset_find(&ids[cur], buf, len, &h) != NULL ||
				  mm_idset_find(&ids[!cur], buf, len, &h) != NULL;
			CHECK_EQ_INT(pending, ref[cur][n] || ref[!cur][n]);
			if (pending)
				continue;
			e = mm_idset_upsert(&ids[cur], buf, len, &h, expiry_of(n), &created);
			REQUIRE(e && created);
			e->tag = n % 2;
			ref[cur][n] = 1;
			ptr[cur][n] = mm_idset_id(&ids[cur], e);
		}
		/* Every id of the universe: found exactly where the reference has
		 * it, with its hash, expiry, tag, and bytes where they were. */
		for (int g = 0; g < 2; g++) {
			size_t held = 0;

			for (unsigned n = 0; n < UNIVERSE; n++) {
				char buf[32];
				size_t len;
				mm_idhash_t h;
				mm_idset_entry_t *e;

				id_of(n, buf, &len);
				hash_of(n, keep, &h);
				e = mm_idset_find(&ids[g], buf, len, &h);
				CHECK_EQ_INT(e != NULL, ref[g][n]);
				if (e == NULL)
					continue;
				held++;
				CHECK(e->hash.h0 == h.h0 && e->hash.h1 == h.h1);
				CHECK(mm_idset_expiry(&ids[g], e) == expiry_of(n));
				CHECK_EQ_INT(e->tag, n % 2);
				CHECK_EQ_INT(e->len, len);
				if (keep)
					CHECK(mm_idset_id(&ids[g], e) == ptr[g][n] &&
					      memcmp(mm_idset_id(&ids[g], e), buf, len) == 0);
				else
					CHECK(mm_idset_id(&ids[g], e) == NULL);
			}
			CHECK_EQ_INT(ids[g].count, held);
			/* Without keep, no id's bytes are copied. */
			if (!keep)
				CHECK(ids[g].arena.chunks == NULL && ids[g].ids == NULL);
		}
		/* The flush: the other generation's apply commits (reset), then
		 * the current one becomes the flushing one. */
		mm_idset_reset(&ids[!cur]);
		memset(ref[!cur], 0, sizeof(ref[!cur]));
		cur = !cur;
	}
	mm_idset_free(&ids[0]);
	mm_idset_free(&ids[1]);
}

TEST(generations_against_reference)
{
	generations(1);
}

TEST(generations_by_hash_against_reference)
{
	generations(0);
}

/* A set without keep: the same hash and length is the same id, whatever
 * the bytes; another length or h1 is another; what mm_idset_copy copied
 * stays as it was while the set grows. */
TEST(by_hash)
{
	mm_idset_t s;
	mm_idhash_t a = {0x1234567800000005ULL, 1}, c = {0x1234567800000005ULL, 2};
	const char *copy;
	int created;

	mm_idset_init(&s, 0);
	REQUIRE(mm_idset_upsert(&s, "ab", 2, &a, 5, &created) && created);
	CHECK(mm_idset_find(&s, "xy", 2, &a) == &s.entries[0]);
	CHECK(mm_idset_find(&s, "abc", 3, &a) == NULL);
	CHECK(mm_idset_find(&s, "ab", 2, &c) == NULL);
	CHECK(mm_idset_upsert(&s, "ab", 2, &c, 6, &created) == &s.entries[1] && created);
	CHECK(mm_idset_id(&s, &s.entries[0]) == NULL);
	CHECK(s.arena.chunks == NULL);
	copy = mm_idset_copy(&s, "claimed", 7);
	REQUIRE(copy && memcmp(copy, "claimed", 7) == 0);
	for (uint64_t k = 0; k < 1000; k++)
		REQUIRE(mm_idset_upsert(&s, "n", 1, &(mm_idhash_t){k * 0x9E3779B97F4A7C15ULL, k}, 7,
					&created));
	CHECK(memcmp(copy, "claimed", 7) == 0);
	CHECK_EQ_INT(mm_idset_expiry(&s, &s.entries[1]), 6);
	mm_idset_free(&s);
}

/* Expiries as offsets from the generation's first: up to 2^31 ms either
 * side are kept as offsets; the first beyond moves them all to 64 bits,
 * exactly, through growth and later changes, until the reset, after which
 * the next generation starts on offsets again. */
TEST(expiries)
{
	mm_idset_t s;
	const int64_t t = 1765000000000LL, half = (int64_t)1 << 31;
	int64_t want[300];
	int created;

	mm_idset_init(&s, 0);
	for (int round = 0; round < 2; round++) {
		int n = 0;

		want[n++] = t;
		want[n++] = t - half;
		want[n++] = t + half - 1;
		for (int k = 0; k < 3; k++)
			REQUIRE(mm_idset_upsert(&s, "i", 1, &(mm_idhash_t){(uint64_t)k, 1}, want[k],
						&created) && created);
		CHECK(s.wide == NULL);
		/* Out of range: below the base, or a year later on the second
		 * round, and then set on an old entry. */
		want[n++] = round ? t + 365LL * 86400000 : t - half - 1;
		REQUIRE(mm_idset_upsert(&s, "i", 1, &(mm_idhash_t){3, 1}, want[3], &created));
		CHECK(s.wide != NULL);
		want[1] = INT64_MAX;
		CHECK_EQ_INT(mm_idset_set_expiry(&s, &s.entries[1], want[1]), 0);
		/* Growth past the first arrays: the wide expiries grow too. */
		while (n < 300) {
			want[n] = t + n;
			REQUIRE(mm_idset_upsert(&s, "i", 1, &(mm_idhash_t){(uint64_t)n, 1}, want[n],
						&created) && created);
			n++;
		}
		for (int k = 0; k < n; k++)
			CHECK(mm_idset_expiry(&s, &s.entries[k]) == want[k]);
		mm_idset_reset(&s);
		CHECK(s.wide == NULL);
	}
	/* Offsets again after the reset, from the new first expiry. */
	REQUIRE(mm_idset_upsert(&s, "i", 1, &(mm_idhash_t){1, 1}, 5, &created));
	REQUIRE(mm_idset_upsert(&s, "i", 1, &(mm_idhash_t){2, 1}, 6, &created));
	CHECK(s.wide == NULL);
	CHECK(mm_idset_expiry(&s, &s.entries[0]) == 5 && mm_idset_expiry(&s, &s.entries[1]) == 6);
	mm_idset_free(&s);
}

/* Generations past 2 MiB of slots (131 072 ids) and of entries (52 429),
 * mappings grown by mremap (lib/hugemap.h; its own test takes an index past
 * MM_HUGE_INDEX, onto huge pages), of ids of 4 to 200 bytes
 * and now and then one larger than an arena chunk: against a reference of
 * which ids each generation holds, every held id is found with its bytes
 * where they were put, no other is, and generations of the same size
 * after the first few reuse the arena's chunks instead of adding any. */
#define BIG_UNIVERSE 600000

/* Id n: its 4 bytes, then up to 196 more that depend on n; now and then
 * 70 000 bytes, more than an arena chunk. */
static size_t big_id(unsigned n, char *buf)
{
	size_t len = 4 + (n * 2654435761u >> 8) % 197;

	if (n % 100003 == 7)
		len = 70000;
	memcpy(buf, &n, 4);
	for (size_t i = 4; i < len; i++)
		buf[i] = (char)('a' + (n >> (i % 20)) % 26);
	return len;
}

/* The arena's chunks of the normal size, in use or kept. */
static size_t arena_chunks(const mm_arena_t *a)
{
	size_t n = 0;

	for (const mm_arena_chunk_t *c = a->chunks; c; c = c->next)
		n += c->cap == a->chunk;
	for (const mm_arena_chunk_t *c = a->spare; c; c = c->next)
		n += c->cap == a->chunk;
	return n;
}

TEST(huge_generations_against_reference)
{
	mm_idset_t ids[2];
	unsigned char *gen = calloc(BIG_UNIVERSE, 1); /* 0: none, 1 + g: in ids[g] */
	const char **ptr = calloc(BIG_UNIVERSE, sizeof(*ptr));
	char *buf = malloc(70000), *buf2 = malloc(70000);
	uint64_t rnd = 0x9E3779B97F4A7C15ULL;
	size_t kept[2] = {0, 0}, bytes[2] = {0, 0}, last_bytes[2] = {0, 0};
	int cur = 0;

	REQUIRE(gen && ptr && buf && buf2);
	mm_idset_init(&ids[0], 1);
	mm_idset_init(&ids[1], 1);
	for (int round = 0; round < 8; round++) {
		/* 140 000 ids, a round of 20 000, then the big size again. */
		int adds = round % 3 == 1 ? 20000 : 140000;

		for (int k = 0; k < adds; k++) {
			unsigned n = (unsigned)(unit_xorshift64(&rnd) % BIG_UNIVERSE);
			size_t len = big_id(n, buf);
			mm_idhash_t h;
			mm_idset_entry_t *e;
			int created, pending;

			mm_id_hash(7, buf, len, &h);
			pending = mm_idset_find(&ids[cur], buf, len, &h) != NULL ||
				  mm_idset_find(&ids[!cur], buf, len, &h) != NULL;
			if (pending != (gen[n] != 0)) {
				CHECK_EQ_INT(pending, gen[n] != 0);
				break;
			}
			if (pending)
				continue;
			e = mm_idset_upsert(&ids[cur], buf, len, &h, n, &created);
			REQUIRE(e && created);
			gen[n] = (unsigned char)(1 + cur);
			ptr[n] = mm_idset_id(&ids[cur], e);
			if (len <= 65536)
				bytes[cur] += (len + MM_ARENA_ALIGN - 1) & ~(size_t)(MM_ARENA_ALIGN - 1);
		}
		for (int g = 0; g < 2; g++) {
			size_t held = 0;

			for (unsigned n = 0; n < BIG_UNIVERSE; n++) {
				size_t len = big_id(n, buf2);
				mm_idhash_t h;
				mm_idset_entry_t *e;

				mm_id_hash(7, buf2, len, &h);
				e = mm_idset_find(&ids[g], buf2, len, &h);
				if ((e != NULL) != (gen[n] == 1 + g)) {
					CHECK_EQ_INT(e != NULL, gen[n] == 1 + g);
					break;
				}
				if (e == NULL)
					continue;
				held++;
				CHECK(mm_idset_id(&ids[g], e) == ptr[n] && e->len == len &&
				      memcmp(mm_idset_id(&ids[g], e), buf2, len) == 0);
				CHECK_EQ_INT(mm_idset_expiry(&ids[g], e), n);
			}
			CHECK_EQ_INT(ids[g].count, held);
		}
		/* A generation of fewer id bytes than the last one in the same
		 * set needs no new chunk: it reuses those its reset kept. */
		if (bytes[cur] < last_bytes[cur] - last_bytes[cur] / 20)
			CHECK_EQ_INT(arena_chunks(&ids[cur].arena), kept[cur]);
		/* The reset keeps every chunk of the normal size. */
		kept[!cur] = arena_chunks(&ids[!cur].arena);
		last_bytes[!cur] = bytes[!cur];
		bytes[!cur] = 0;
		mm_idset_reset(&ids[!cur]);
		CHECK_EQ_INT(arena_chunks(&ids[!cur].arena), kept[!cur]);
		for (unsigned n = 0; n < BIG_UNIVERSE; n++)
			if (gen[n] == 1 + !cur)
				gen[n] = 0;
		cur = !cur;
	}
	CHECK(ids[0].cap * sizeof(mm_idset_slot_t) >= MM_HUGE_PAGE);
	mm_idset_free(&ids[0]);
	mm_idset_free(&ids[1]);
	CHECK(ids[0].arena.chunks == NULL && ids[0].arena.spare == NULL && ids[0].slots == NULL);
	free(gen);
	free(ptr);
	free(buf);
	free(buf2);
}

/* The share of 100 000 absent ids whose filter word has all their bits
 * (the rest are never looked up in the slots), in per mille. */
static size_t filter_passed(const mm_idset_t *s)
{
	size_t passed = 0, len;
	mm_idhash_t h;
	char buf[32];

	for (unsigned a = 0; a < 100000; a++) {
		uint64_t mask;

		id_of(10000000 + a, buf, &len);
		mm_id_hash(7, buf, len, &h);
		mask = mm_idset_filter_mask(&h);
		passed += (*mm_idset_filter_word(s, &h) & mask) == mask;
		CHECK(mm_idset_find(s, buf, len, &h) == NULL);
	}
	return passed / 100;
}

/* The filter in front of the slots: at the set's fullest (half its slots
 * taken, 16 bits of filter an id) and emptiest (just past a doubling, 32
 * bits), under 1.2% and 0.3% of absent ids pass it (about 0.8% and 0.1%
 * expected). */
TEST(filter)
{
	mm_idset_t s;
	mm_idhash_t h;
	char buf[32];
	size_t len, pm;
	int created;

	mm_idset_init(&s, 0);
	for (unsigned n = 0; s.cap <= 131072; n++) {
		id_of(n, buf, &len);
		mm_id_hash(7, buf, len, &h);
		REQUIRE(mm_idset_upsert(&s, buf, len, &h, 1, &created) != NULL);
		if (s.cap >= 65536 && s.count + 1 == s.cap / 2) {
			pm = filter_passed(&s);
			printf("# %u ids in %zu slots: %zu per mille of absent ids pass\n", s.count, s.cap, pm);
			CHECK(pm < 12);
		} else if (s.cap >= 65536 && s.count == s.cap / 4 + 1) {
			pm = filter_passed(&s);
			printf("# %u ids in %zu slots: %zu per mille of absent ids pass\n", s.count, s.cap, pm);
			CHECK(pm < 3);
		}
	}
	mm_idset_free(&s);
}

/* A set reserved for n ids takes them without growing its index or its
 * entries (a generation sized by the last one), keeps what it held when
 * reserved on top of it, and finds all of them. */
TEST(reserve)
{
	mm_idset_t s;
	mm_idhash_t h;
	char buf[32];
	size_t len, cap, ecap;
	int created;

	mm_idset_init(&s, 1);
	for (unsigned n = 0; n < 10; n++) {
		id_of(n, buf, &len);
		mm_id_hash(7, buf, len, &h);
		REQUIRE(mm_idset_upsert(&s, buf, len, &h, 1000 + n, &created) != NULL);
	}
	REQUIRE(mm_idset_reserve(&s, 50000) == 0);
	cap = s.cap;
	ecap = s.ecap;
	CHECK(cap >= 100002 && ecap >= 50000);
	for (unsigned n = 10; n < 50000; n++) {
		id_of(n, buf, &len);
		mm_id_hash(7, buf, len, &h);
		REQUIRE(mm_idset_upsert(&s, buf, len, &h, 1000 + n, &created) != NULL);
	}
	CHECK_EQ_INT(s.cap, cap);
	CHECK_EQ_INT(s.ecap, ecap);
	for (unsigned n = 0; n < 50000; n++) {
		mm_idset_entry_t *e;

		id_of(n, buf, &len);
		mm_id_hash(7, buf, len, &h);
		e = mm_idset_find(&s, buf, len, &h);
		CHECK(e != NULL && mm_idset_expiry(&s, e) == 1000 + (int64_t)n &&
		      memcmp(mm_idset_id(&s, e), buf, len) == 0);
	}
	/* Less than it has: nothing changes. */
	REQUIRE(mm_idset_reserve(&s, 10) == 0);
	CHECK_EQ_INT(s.cap, cap);
	mm_idset_free(&s);
}

/* The record loop's inline insert takes an absent id where the set's
 * common case holds, exactly as mm_idset_upsert would, and otherwise
 * changes nothing and says so, leaving the case to mm_idset_upsert. */
TEST(add_new)
{
	mm_idset_t s, k;
	mm_idhash_t a = {0x1234567800000005ULL, 1}, b = {0x1234567800000005ULL, 2},
		    c = {0x00000042000000a0ULL, 3}, h;
	mm_idset_entry_t *e;
	char buf[32];
	size_t len;
	int created;

	mm_idset_init(&s, 0);
	/* Empty: the expiries' base is not set yet. */
	CHECK(mm_idset_add_new(&s, 1, &a, 1000) == NULL);
	CHECK_EQ_INT(s.count, 0);
	REQUIRE(mm_idset_upsert(&s, "a", 1, &a, 1000, &created) != NULL && created);
	REQUIRE(mm_idset_reserve(&s, 100) == 0);
	/* A slot on its probe with its tag (here the same h0): not added. */
	CHECK(mm_idset_add_new(&s, 1, &b, 1001) == NULL);
	CHECK(mm_idset_add_new(&s, 1, &a, 1001) == NULL);
	CHECK_EQ_INT(s.count, 1);
	/* An expiry outside the offsets' range: not added. */
	CHECK(mm_idset_add_new(&s, 1, &c, s.exp_base - 1) == NULL);
	CHECK(mm_idset_add_new(&s, 1, &c, s.exp_base + ((int64_t)1 << 33)) == NULL);
	CHECK(mm_idset_add_new(&s, MM_IDSET_MAX_LEN + 1, &c, 1001) == NULL);
	CHECK_EQ_INT(s.count, 1);
	e = mm_idset_add_new(&s, 3, &c, 1002);
	REQUIRE(e != NULL);
	CHECK(e->tag == 0 && e->len == 3 && e->hash.h0 == c.h0 && e->hash.h1 == c.h1 &&
	      mm_idset_expiry(&s, e) == 1002);
	CHECK(mm_idset_find(&s, "xyz", 3, &c) == e);
	CHECK(mm_idset_find(&s, "xy", 2, &c) == NULL);
	CHECK(mm_idset_find(&s, "a", 1, &a) != NULL);
	/* Up to the fill that needs a doubling; then nothing is added. */
	for (unsigned n = 0;; n++) {
		id_of(n, buf, &len);
		mm_id_hash(7, buf, len, &h);
		if ((e = mm_idset_add_new(&s, len, &h, 2000 + n)) == NULL)
			break;
		CHECK(mm_idset_find(&s, buf, len, &h) == e);
	}
	CHECK((size_t)(s.count + 1) * 2 > s.cap || s.count == s.ecap);
	/* A set that keeps the ids' bytes takes its inserts by upsert. */
	mm_idset_init(&k, 1);
	REQUIRE(mm_idset_upsert(&k, "a", 1, &a, 1000, &created) != NULL);
	CHECK(mm_idset_add_new(&k, 3, &c, 1002) == NULL);
	CHECK_EQ_INT(k.count, 1);
	mm_idset_free(&k);
	mm_idset_free(&s);
}

int main(void)
{
	RUN(colliding_hashes);
	RUN(large_id);
	RUN(generations_against_reference);
	RUN(generations_by_hash_against_reference);
	RUN(by_hash);
	RUN(expiries);
	RUN(huge_generations_against_reference);
	RUN(filter);
	RUN(reserve);
	RUN(add_new);
	UNIT_DONE();
}
