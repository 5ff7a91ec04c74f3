/*
 * idset.c: the pending dedup ids of a pipeline generation (see idset.h).
 *
 * A probe compares the tag in the slot, then the full hash and the id's
 * bytes in its entry (a set keeps ids exactly: two ids whose hashes match
 * stay apart). The index doubles at half full, refilled from the entries
 * read in order. Reset clears the slots and keeps the arena's chunks
 * (lib/arena.h), as it keeps the slots and entries, so that a steady stream
 * of ids maps no new memory after warm-up: each fresh small page cost a
 * page fault, thousands a generation (doc/performance.md). The slots, read
 * at random, are on huge pages from 1 MiB, the entries from 2 MiB
 * (lib/hugemap.h).
 */
#include "idset.h"

#include <string.h>

#include "../lib/error.h"
#include "../lib/hugemap.h"

/* Arena chunks for about 2 000 ids: a flush's ids take few allocations. */
#define MM_IDSET_ARENA_CHUNK 65536

void mm_idset_init(mm_idset_t *s)
{
	memset(s, 0, sizeof(*s));
	s->arena.chunk = MM_IDSET_ARENA_CHUNK;
	/* A generation's ids take about as many chunks as the last one's. */
	s->arena.keep = 1;
}

/* Doubles the index, refilled from the entries, which stay where they are. */
static int idset_grow(mm_idset_t *s)
{
	size_t ncap = s->cap ? s->cap * 2 : 64;
	/* On huge pages from 1 MiB (131 072 slots) on: the index is read at
	 * random, and its fresh pages took thousands of page faults a
	 * generation as it grew, two a page below that (the probes read a
	 * fresh page before they write it: lib/hugemap.h). Renewed in place
	 * from there: the pages it has are kept, and only the growth is new
	 * memory. */
	mm_idset_slot_t *ns =
		mm_huge_renew(s->slots, s->cap * sizeof(*s->slots), ncap * sizeof(*ns));

	if (ns == NULL)
		return mm_diag_set(MM_ENOMEM, "pending ids: cannot grow to %zu slots", ncap);
	s->slots = ns;
	s->cap = ncap;
	/* The entries are read in order, each hash where the slot needs it. */
	for (size_t i = 0; i < s->count; i++) {
		size_t j = s->entries[i].hash.h0 & (ncap - 1);

		while (ns[j].tag)
			j = (j + 1) & (ncap - 1);
		ns[j] = (mm_idset_slot_t){mm_idset_tag(&s->entries[i].hash), (uint32_t)i};
	}
	return 0;
}

/* The slot of the id: its own, or the empty one where it belongs. */
static inline __attribute__((always_inline)) size_t
idset_probe(const mm_idset_t *s, const char *id, size_t len, const mm_idhash_t *h)
{
	size_t j = h->h0 & (s->cap - 1);
	uint32_t tag = mm_idset_tag(h);

	for (;;) {
		const mm_idset_slot_t *sl = &s->slots[j];

		if (sl->tag == 0)
			return j;
		if (sl->tag == tag) {
			const mm_idset_entry_t *e = &s->entries[sl->entry];

			if (e->hash.h0 == h->h0 && e->hash.h1 == h->h1 && e->len == len &&
			    mm_key_eq(e->id, id, len))
				return j;
		}
		j = (j + 1) & (s->cap - 1);
	}
}

mm_idset_entry_t *mm_idset_find(const mm_idset_t *s, const char *id, size_t len,
				const mm_idhash_t *h)
{
	size_t j;

	/* An empty set (the flushed generation's, most of the time) is not
	 * probed. */
	if (s->count == 0)
		return NULL;
	j = idset_probe(s, id, len, h);
	return s->slots[j].tag ? &s->entries[s->slots[j].entry] : NULL;
}

mm_idset_entry_t *mm_idset_upsert(mm_idset_t *s, const char *id, size_t len,
				  const mm_idhash_t *h, int *created)
{
	mm_idset_entry_t *e;
	char *copy;
	size_t j;

	if ((s->count + 1) * 2 > s->cap && idset_grow(s) != 0)
		return NULL;
	j = idset_probe(s, id, len, h);
	if (s->slots[j].tag) {
		*created = 0;
		return &s->entries[s->slots[j].entry];
	}
	if (s->count == s->ecap) {
		size_t ncap = s->ecap ? s->ecap * 2 : 64;
		mm_idset_entry_t *ne;

		/* On huge pages from 2 MiB, grown by mremap (no copy): realloc'd,
		 * the 10 MB of a 250 000-id generation took a fault per 4 KiB
		 * the first time each was written, 4 500 a run of the bench
		 * (doc/performance.md), though reset keeps them. */
		if (ncap > UINT32_MAX ||
		    (ne = mm_huge_grow(s->entries, s->ecap * sizeof(*ne), ncap * sizeof(*ne))) ==
			    NULL) {
			mm_diag_set(MM_ENOMEM, "pending ids: cannot grow to %zu entries", ncap);
			return NULL;
		}
		s->entries = ne;
		s->ecap = ncap;
	}
	e = &s->entries[s->count];
	if ((copy = mm_arena_alloc(&s->arena, len)) == NULL) {
		mm_diag_set(MM_ENOMEM, "pending ids: cannot copy a %zu-byte id", len);
		return NULL;
	}
	e->id = memcpy(copy, id, len);
	e->len = (uint32_t)len;
	e->tag = 0;
	e->expire_ms = 0;
	e->hash = *h;
	s->slots[j] = (mm_idset_slot_t){mm_idset_tag(h), (uint32_t)s->count++};
	*created = 1;
	return e;
}

void mm_idset_reset(mm_idset_t *s)
{
	if (s->count)
		memset(s->slots, 0, s->cap * sizeof(*s->slots));
	mm_arena_reset(&s->arena);
	s->count = 0;
}

void mm_idset_free(mm_idset_t *s)
{
	mm_arena_free(&s->arena);
	mm_huge_free(s->slots, s->cap * sizeof(*s->slots));
	mm_huge_drop(s->entries, s->ecap * sizeof(*s->entries));
	mm_idset_init(s);
}
