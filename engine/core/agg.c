/*
 * agg.c: pre-aggregation hash table (see agg.h).
 *
 * The hash mixes the entity's MurmurHash64A with the bucket, so one entity's
 * daily buckets spread over the table. A short entity is kept in its entry;
 * longer ones go to an arena of 64 KiB chunks (bigger keys get a chunk of
 * their own), so reset() frees no key one by one: it destroys the states of
 * the dense entries and clears the index.
 */
#include "agg.h"

#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "../lib/hash.h"
#include "../lib/hugemap.h"

#define MM_AGG_CHUNK 65536

/* An entry is one cache line, its key and bucket in the line's first half,
 * and a far key's pointer fits the last bytes of the inline ones. */
_Static_assert(sizeof(mm_agg_entry_t) == 64, "an aggregation entry is one cache line");
_Static_assert(MM_AGG_KEY_INLINE >= sizeof(const char *) + sizeof(uint32_t),
	       "a far key's pointer lies after the inline key's first four bytes");

struct mm_agg_chunk {
	mm_agg_chunk_t *next;
	size_t used;
	size_t size;
	char data[];
};

void mm_agg_init(mm_agg_t *a, const mm_monoid_t *m)
{
	memset(a, 0, sizeof(*a));
	a->m = m;
}

uint64_t mm_agg_key_hash(const char *key, size_t klen)
{
	return mm_hash64(key, klen, 0x9e3779b97f4a7c15ULL);
}

uint64_t mm_agg_hash(const char *key, size_t klen, int64_t bucket)
{
	return mm_agg_hash_mix(mm_agg_key_hash(key, klen), bucket);
}

static inline __attribute__((always_inline)) const char *
arena_copy(mm_agg_t *a, const char *key, size_t klen)
{
	mm_agg_chunk_t *c = a->chunks;
	char *dst;

	if (c == NULL || c->size - c->used < klen) {
		size_t size = klen > MM_AGG_CHUNK ? klen : MM_AGG_CHUNK;

		/* Keep a partly used chunk in front when a huge key gets its own. */
		c = malloc(sizeof(*c) + size);
		if (c == NULL)
			return NULL;
		c->used = 0;
		c->size = size;
		if (klen > MM_AGG_CHUNK && a->chunks) {
			c->next = a->chunks->next;
			a->chunks->next = c;
		} else {
			c->next = a->chunks;
			a->chunks = c;
		}
	}
	dst = c->data + c->used;
	memcpy(dst, key, klen);
	c->used += klen;
	a->key_bytes += klen;
	return dst;
}

/* The index's slots from this many bytes on are one huge page or more:
 * filling a table then takes one page fault for its index instead of one
 * per 4 KiB at each doubling (8 us apiece on the bench's guest), and the
 * record loop's random slot reads stay within one TLB entry instead of a
 * nested page walk each. A table of 32 768 slots (384 KiB) or more takes a
 * whole 2 MiB page, at most 1.6 MiB more than it uses; smaller ones stay on
 * the heap (doc/performance-journal.md, "unique_visitors: the slot index on a huge
 * page"). */
#define MM_AGG_HUGE_SLOTS ((size_t)256 << 10)

/* The length of the one block holding cap slots' hashes and then their
 * entry numbers, as given to mm_huge_alloc and mm_huge_free: raised to
 * MM_HUGE_MIN past MM_AGG_HUGE_SLOTS, which puts it on a huge page. */
static size_t slots_len(size_t cap)
{
	size_t bytes = cap * (sizeof(uint64_t) + sizeof(uint32_t));

	return bytes >= MM_AGG_HUGE_SLOTS && bytes < MM_HUGE_MIN ? MM_HUGE_MIN : bytes;
}

/* Doubles the index; entries stay where they are. */
static int agg_grow(mm_agg_t *a)
{
	size_t ncap = a->cap ? a->cap * 2 : 64;
	uint64_t *nh;
	uint32_t *ni;

	if (ncap > SIZE_MAX / 2 / (sizeof(*nh) + sizeof(*ni)) ||
	    (nh = mm_huge_alloc(slots_len(ncap))) == NULL)
		return mm_diag_set(MM_ENOMEM, "aggregation table: cannot grow to %zu slots", ncap);
	ni = (uint32_t *)(nh + ncap);
	for (size_t i = 0; i < a->cap; i++) {
		size_t j;

		if (a->hashes[i] == 0)
			continue;
		j = a->hashes[i] & (ncap - 1);
		while (nh[j])
			j = (j + 1) & (ncap - 1);
		nh[j] = a->hashes[i];
		ni[j] = a->index[i];
	}
	mm_huge_free(a->hashes, slots_len(a->cap));
	a->hashes = nh;
	a->index = ni;
	a->cap = ncap;
	return 0;
}

/* Doubles the room for entries, which may move them. The entries are a
 * growable mapping (lib/hugemap.h): the kernel moves their pages instead of
 * realloc copying them (from the heap, where malloc's thresholds put
 * blocks under 4 MiB, lib/heap.h), and past 2 MiB they are on huge pages.
 * A table is reset and reused flush after flush, so it grows only while it
 * first fills. */
static int agg_grow_entries(mm_agg_t *a)
{
	size_t ncap = a->ecap ? a->ecap * 2 : 32;
	mm_agg_entry_t *ne;

	if (ncap > UINT32_MAX ||
	    (ne = mm_huge_grow(a->entries, a->ecap * sizeof(*ne), ncap * sizeof(*ne))) == NULL)
		return mm_diag_set(MM_ENOMEM, "aggregation table: cannot grow to %zu entries",
				   ncap);
	a->entries = ne;
	a->ecap = ncap;
	a->gen++;
	return 0;
}

/* The slot of (key, bucket): its own, or the empty slot where it belongs. */
static inline __attribute__((always_inline)) size_t
agg_probe(const mm_agg_t *a, const char *key, size_t klen, int64_t bucket,
			uint64_t h)
{
	size_t j = h & (a->cap - 1);

	for (;;) {
		uint64_t sh = a->hashes[j];

		if (sh == 0)
			return j;
		if (sh == h) {
			const mm_agg_entry_t *e = &a->entries[a->index[j]];

			if (e->bucket == bucket && e->klen == klen &&
			    mm_key_eq(mm_agg_entry_key(e), key, klen))
				return j;
		}
		j = (j + 1) & (a->cap - 1);
	}
}

mm_agg_entry_t *mm_agg_find_h(const mm_agg_t *a, const char *key, size_t klen, int64_t bucket,
			      uint64_t h)
{
	size_t j;

	/* An empty table (the flushed generation's, most of the time) is not
	 * probed: after a reset its index is still there, all zero. */
	if (a->count == 0)
		return NULL;
	j = agg_probe(a, key, klen, bucket, h | 1);
	return a->hashes[j] ? &a->entries[a->index[j]] : NULL;
}

mm_agg_entry_t *mm_agg_find(const mm_agg_t *a, const char *key, size_t klen, int64_t bucket)
{
	if (a->count == 0)
		return NULL;
	return mm_agg_find_h(a, key, klen, bucket, mm_agg_hash(key, klen, bucket));
}

/* mm_agg_upsert_h, inlined into both upserts so that the one taking no
 * hash does not pay a second call. */
static inline __attribute__((always_inline)) mm_agg_entry_t *
agg_upsert(mm_agg_t *a, const char *key, size_t klen, int64_t bucket, uint64_t h, int *created)
{
	mm_agg_entry_t *e;
	size_t j;

	h |= 1; /* 0 is the empty slot */
	if ((a->count + 1) * 2 > a->cap && agg_grow(a) != 0)
		return NULL;
	j = agg_probe(a, key, klen, bucket, h);
	if (a->hashes[j]) {
		*created = 0;
		return &a->entries[a->index[j]];
	}
	if (a->count == a->ecap && agg_grow_entries(a) != 0)
		return NULL;
	e = &a->entries[a->count];
	if (klen <= MM_AGG_KEY_INLINE) {
		memcpy(e->kbytes, key, klen);
	} else {
		const char *far = arena_copy(a, key, klen);

		if (far == NULL) {
			mm_diag_set(MM_ENOMEM, "aggregation table: cannot copy a %zu-byte key",
				    klen);
			return NULL;
		}
		memcpy(e->kbytes + MM_AGG_KEY_INLINE - sizeof(far), &far, sizeof(far));
	}
	e->klen = (uint32_t)klen;
	e->bucket = bucket;
	e->expire_ms = 0;
	if (a->m)
		a->m->vt->init(a->m, e->state);
	a->hashes[j] = h;
	a->index[j] = (uint32_t)a->count++;
	*created = 1;
	return e;
}

mm_agg_entry_t *mm_agg_upsert_h(mm_agg_t *a, const char *key, size_t klen, int64_t bucket,
				uint64_t h, int *created)
{
	return agg_upsert(a, key, klen, bucket, h, created);
}

mm_agg_entry_t *mm_agg_upsert(mm_agg_t *a, const char *key, size_t klen, int64_t bucket,
			      int *created)
{
	return agg_upsert(a, key, klen, bucket, mm_agg_hash(key, klen, bucket), created);
}

void mm_agg_reset(mm_agg_t *a)
{
	mm_agg_chunk_t *c = a->chunks;

	a->gen++;
	if (a->m)
		for (size_t i = 0; i < a->count; i++)
			a->m->vt->destroy(a->m, a->entries[i].state);
	if (a->count)
		memset(a->hashes, 0, a->cap * sizeof(*a->hashes));
	/* Keep one chunk for reuse; large keys were one-offs. */
	if (c) {
		mm_agg_chunk_t *rest = c->next;

		c->next = NULL;
		c->used = 0;
		while (rest) {
			mm_agg_chunk_t *n = rest->next;

			free(rest);
			rest = n;
		}
	}
	a->key_bytes = 0;
	a->count = 0;
}

void mm_agg_free(mm_agg_t *a)
{
	mm_agg_reset(a);
	free(a->chunks);
	mm_huge_drop(a->entries, a->ecap * sizeof(*a->entries));
	mm_huge_free(a->hashes, slots_len(a->cap));
	a->chunks = NULL;
	a->entries = NULL;
	a->hashes = NULL;
	a->index = NULL;
	a->cap = 0;
	a->ecap = 0;
}
