/*
 * test_idset.c: the pending dedup ids (engine/core/idset.h). Ids whose
 * hashes share a tag, a whole h0 or even all 128 bits stay apart (the set
 * keeps ids exactly); a large id is kept whole beside small ones; and, against a
 * reference set, two generations used as the pipeline uses them (ids added
 * to the current one, looked up in both, the other reset and the roles
 * swapped) find every id they hold and no other, keep each entry's hash,
 * expiry and tag, and keep the id bytes of earlier entries in place while
 * the set grows, also past the sizes where its arrays move to huge pages
 * and with generations reusing the arena chunks that reset kept.
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

	mm_idset_init(&s);
	CHECK(mm_idset_find(&s, "a", 1, &a) == NULL);
	ea = mm_idset_upsert(&s, "a", 1, &a, &created);
	REQUIRE(ea && created);
	ea->expire_ms = 7;
	ea->tag = 1;
	eb = mm_idset_upsert(&s, "b", 1, &b, &created);
	REQUIRE(eb && created);
	ec = mm_idset_upsert(&s, "c", 1, &c, &created);
	REQUIRE(ec && created);
	ed = mm_idset_upsert(&s, "d", 1, &a, &created);
	REQUIRE(ed && created);
	CHECK_EQ_INT(s.count, 4);
	CHECK(mm_idset_find(&s, "a", 1, &a) == &s.entries[0]);
	CHECK(mm_idset_find(&s, "b", 1, &b) == &s.entries[1]);
	CHECK(mm_idset_find(&s, "c", 1, &c) == &s.entries[2]);
	CHECK(mm_idset_find(&s, "d", 1, &a) == &s.entries[3]);
	CHECK(mm_idset_find(&s, "a", 1, &b) == NULL);
	CHECK(mm_idset_find(&s, "ab", 2, &a) == NULL);
	CHECK(mm_idset_upsert(&s, "a", 1, &a, &created) == &s.entries[0] && !created);
	CHECK_EQ_INT(s.entries[0].expire_ms, 7);
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
	mm_idset_init(&s);
	mm_id_hash(1, "s", 1, &hs);
	e = mm_idset_upsert(&s, "s", 1, &hs, &created);
	REQUIRE(e);
	small = e->id;
	mm_id_hash(1, id, big, &h);
	e = mm_idset_upsert(&s, id, big, &h, &created);
	REQUIRE(e && created);
	CHECK(e->id != id && memcmp(e->id, id, big) == 0);
	CHECK(mm_idset_find(&s, id, big, &h) == e);
	e = mm_idset_upsert(&s, "t", 1, &(mm_idhash_t){3, 3}, &created);
	REQUIRE(e);
	CHECK(e->id[0] == 't' && small[0] == 's');
	e = mm_idset_find(&s, id, big, &h);
	CHECK(e && memcmp(e->id, id, big) == 0);
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
 * h0 values), to walk long probe runs and entries with equal hashes. */
static void hash_of(unsigned n, mm_idhash_t *h)
{
	char buf[32];
	size_t len;

	id_of(n, buf, &len);
	mm_id_hash(42, buf, len, h);
	if (n % 2)
		*h = (mm_idhash_t){(uint64_t)(n % 7) << 40 | (n % 5), n % 3};
}

TEST(generations_against_reference)
{
	mm_idset_t ids[2];
	static unsigned char ref[2][UNIVERSE];
	static const char *ptr[2][UNIVERSE];
	int cur = 0;
	uint64_t rnd = 88172645463325252ULL;

	mm_idset_init(&ids[0]);
	mm_idset_init(&ids[1]);
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
			hash_of(n, &h);
			pending = mm_idset_find(&ids[cur], buf, len, &h) != NULL ||
				  mm_idset_find(&ids[!cur], buf, len, &h) != NULL;
			CHECK_EQ_INT(pending, ref[cur][n] || ref[!cur][n]);
			if (pending)
				continue;
			e = mm_idset_upsert(&ids[cur], buf, len, &h, &created);
			REQUIRE(e && created);
			e->expire_ms = n;
			e->tag = n % 2;
			ref[cur][n] = 1;
			ptr[cur][n] = e->id;
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
				hash_of(n, &h);
				e = mm_idset_find(&ids[g], buf, len, &h);
				CHECK_EQ_INT(e != NULL, ref[g][n]);
				if (e == NULL)
					continue;
				held++;
				CHECK(e->hash.h0 == h.h0 && e->hash.h1 == h.h1);
				CHECK_EQ_INT(e->expire_ms, n);
				CHECK_EQ_INT(e->tag, n % 2);
				CHECK(e->id == ptr[g][n] && e->len == len && memcmp(e->id, buf, len) == 0);
			}
			CHECK_EQ_INT(ids[g].count, held);
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

/* Generations past 2 MiB of slots (131 072 ids), where they move to huge
 * pages (lib/hugemap.h), and of entries (52 429), of ids of 4 to 200 bytes
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
	mm_idset_init(&ids[0]);
	mm_idset_init(&ids[1]);
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
			e = mm_idset_upsert(&ids[cur], buf, len, &h, &created);
			REQUIRE(e && created);
			e->expire_ms = n;
			gen[n] = (unsigned char)(1 + cur);
			ptr[n] = e->id;
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
				CHECK(e->id == ptr[n] && e->len == len && memcmp(e->id, buf2, len) == 0);
				CHECK_EQ_INT(e->expire_ms, n);
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

int main(void)
{
	RUN(colliding_hashes);
	RUN(large_id);
	RUN(generations_against_reference);
	RUN(huge_generations_against_reference);
	UNIT_DONE();
}
