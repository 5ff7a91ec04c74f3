/*
 * idset.c: the pending dedup ids of a pipeline generation (see idset.h).
 *
 * A probe compares the tag in the slot, then the full hash and length in
 * its entry and, in a set that keeps them, the id's bytes (such a set keeps
 * ids exactly: two ids whose hashes match stay apart). The index doubles at
 * half full, refilled from the entries read in order. Reset clears the
 * slots and keeps the arena's chunks (lib/arena.h), as it keeps the slots
 * and entries, so that a steady stream of ids maps no new memory after
 * warm-up: each fresh small page cost a page fault, thousands a generation
 * (doc/performance-journal.md). The slots, read at random, are on huge pages only
 * beyond the TLB's reach; the entries and id pointers, written and read in
 * order, on small pages (lib/hugemap.h).
 *
 * Expiries are offsets from exp_base, which the first entry after a reset
 * sets 2^31 ms (24.8 days) below its own expiry, so that the generation's
 * later expiries fit either side of it. The first that does not moves every
 * expiry into wide, exactly, and the set stays there until the reset.
 */
#include "idset.h"

#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "../lib/hugemap.h"

/* Arena chunks for about 2 000 ids: a flush's ids take few allocations. */
#define MM_IDSET_ARENA_CHUNK 65536

/* How far below a generation's first expiry its base lies. */
#define MM_IDSET_EXP_HALF ((int64_t)1 << 31)

void mm_idset_init(mm_idset_t *s, int keep)
{
	memset(s, 0, sizeof(*s));
	s->keep = keep;
	s->arena.chunk = MM_IDSET_ARENA_CHUNK;
	/* A generation's ids take about as many chunks as the last one's. */
	s->arena.keep = 1;
}

/* The words of the filter of cap slots. */
static size_t idset_filter_words(size_t cap)
{
	return cap / MM_IDSET_FILTER_SLOTS;
}

/* Makes the index and its filter ncap slots (a power of two, more than
 * cap), refilled from the entries, which stay where they are. */
static int idset_resize(mm_idset_t *s, size_t ncap)
{
	/* Renewed in place: the pages it has are kept, and only the growth
	 * is new memory. On small pages up to the TLB's reach (8 MiB, a
	 * generation of about 500 000 ids), where a fresh huge page's first
	 * touch cost more than the TLB's misses save (lib/hugemap.h). */
	uint64_t *nf = calloc(idset_filter_words(ncap), sizeof(*nf));
	mm_idset_slot_t *ns = nf ? mm_index_renew(s->slots, s->cap * sizeof(*ns), ncap * sizeof(*ns))
				 : NULL;

	if (ns == NULL) {
		free(nf);
		return mm_diag_set(MM_ENOMEM, "pending ids: cannot grow to %zu slots", ncap);
	}
	/* Written once now, page by page: the probes below and the record
	 * loop's read a slot before they write it, and a fresh page first
	 * read is the zero page, copied at the first write, a second fault
	 * (and for a huge page, a 2 MiB copy). */
	for (size_t off = 0; off < ncap * sizeof(*ns); off += 4096)
		((volatile char *)ns)[off] = 0;
	free(s->filter);
	s->filter = nf;
	s->slots = ns;
	s->cap = ncap;
	/* The entries are read in order, each hash where the slot needs it. */
	for (size_t i = 0; i < s->count; i++) {
		size_t j = s->entries[i].hash.h0 & (ncap - 1);

		while (ns[j].tag)
			j = (j + 1) & (ncap - 1);
		ns[j] = (mm_idset_slot_t){mm_idset_tag(&s->entries[i].hash), (uint32_t)i};
		*mm_idset_filter_word(s, &s->entries[i].hash) |=
			mm_idset_filter_mask(&s->entries[i].hash);
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
			    (!s->keep || mm_key_eq(s->ids[sl->entry], id, len)))
				return j;
		}
		j = (j + 1) & (s->cap - 1);
	}
}

mm_idset_entry_t *mm_idset_find_in(const mm_idset_t *s, const char *id, size_t len,
				   const mm_idhash_t *h)
{
	size_t j = idset_probe(s, id, len, h);

	return s->slots[j].tag ? &s->entries[s->slots[j].entry] : NULL;
}

/* Room for one more entry: the entries, and the id pointers and wide
 * expiries where the set has them, each grown to the same capacity. One
 * that fails leaves the id pointers grown before it with their room,
 * recorded in icap (a mapping is freed by its size), and the next try
 * grows only what is short. */
static int idset_grow_entries(mm_idset_t *s)
{
	size_t ncap = s->ecap ? (size_t)s->ecap * 2 : 64;

	if (ncap > UINT32_MAX)
		goto fail;
	/* Grown by mremap (no copy), and kept by reset; on small pages, since
	 * the entries are written and read in order (lib/hugemap.h): on huge
	 * pages, a generation's new pages cost the host's faults on this
	 * project's VMs (doc/performance-journal.md). */
	if (s->keep && s->icap < ncap) {
		const char **ni = mm_small_grow(s->ids, s->icap * sizeof(*ni), ncap * sizeof(*ni));

		if (ni == NULL)
			goto fail;
		s->ids = ni;
		s->icap = (uint32_t)ncap;
	}
	if (s->wide) {
		int64_t *nw = realloc(s->wide, ncap * sizeof(*nw));

		if (nw == NULL)
			goto fail;
		s->wide = nw;
	}
	if (s->ecap < ncap) {
		mm_idset_entry_t *ne =
			mm_small_grow(s->entries, s->ecap * sizeof(*ne), ncap * sizeof(*ne));

		if (ne == NULL)
			goto fail;
		s->entries = ne;
		s->ecap = (uint32_t)ncap;
	}
	return 0;
fail:
	return mm_diag_set(MM_ENOMEM, "pending ids: cannot grow to %zu entries", ncap);
}

mm_idset_entry_t *mm_idset_upsert(mm_idset_t *s, const char *id, size_t len,
				  const mm_idhash_t *h, int64_t expire_ms, int *created)
{
	mm_idset_entry_t *e;
	size_t j;

	if (len > MM_IDSET_MAX_LEN) {
		mm_diag_set(MM_EINVAL, "pending ids: a %zu-byte id is too long", len);
		return NULL;
	}
	if (((size_t)s->count + 1) * 2 > s->cap && idset_resize(s, s->cap ? s->cap * 2 : 64) != 0)
		return NULL;
	j = idset_probe(s, id, len, h);
	if (s->slots[j].tag) {
		e = &s->entries[s->slots[j].entry];
		*created = 0;
		return mm_idset_set_expiry(s, e, expire_ms) == 0 ? e : NULL;
	}
	if (s->count == s->ecap && idset_grow_entries(s) != 0)
		return NULL;
	if (s->keep) {
		const char *copy = mm_idset_copy(s, id, len);

		if (copy == NULL)
			return NULL;
		s->ids[s->count] = copy;
	}
	if (s->count == 0 && s->wide == NULL)
		s->exp_base = expire_ms > INT64_MIN + MM_IDSET_EXP_HALF
				      ? expire_ms - MM_IDSET_EXP_HALF
				      : INT64_MIN;
	/* The entry written whole, without reading it first: a fresh page
	 * read before it is written (the bit fields' read-modify-write) took
	 * two page faults instead of one. */
	e = &s->entries[s->count];
	*e = (mm_idset_entry_t){.hash = *h, .len = (uint32_t)len};
	if (mm_idset_set_expiry(s, e, expire_ms) != 0)
		return NULL;
	s->slots[j] = (mm_idset_slot_t){mm_idset_tag(h), (uint32_t)s->count++};
	*mm_idset_filter_word(s, h) |= mm_idset_filter_mask(h);
	*created = 1;
	return e;
}

int mm_idset_reserve(mm_idset_t *s, size_t n)
{
	size_t ncap = s->cap ? s->cap : 64;

	if (n > UINT32_MAX / 2)
		return mm_diag_set(MM_ENOMEM, "pending ids: cannot reserve %zu entries", n);
	while ((n + 1) * 2 > ncap)
		ncap *= 2;
	if (ncap > s->cap && idset_resize(s, ncap) != 0)
		return MM_ENOMEM;
	while (s->ecap < n)
		if (idset_grow_entries(s) != 0)
			return MM_ENOMEM;
	return 0;
}

int mm_idset_set_wide(mm_idset_t *s, mm_idset_entry_t *e, int64_t expire_ms)
{
	size_t i = (size_t)(e - s->entries);

	if (s->wide == NULL) {
		/* The first expiry out of range: every entry's moves, exactly. */
		int64_t *w = malloc(s->ecap * sizeof(*w));

		if (w == NULL)
			return mm_diag_set(MM_ENOMEM, "pending ids: cannot widen the expiries");
		for (size_t k = 0; k < s->count; k++)
			w[k] = s->exp_base + (int64_t)s->entries[k].expire;
		s->wide = w;
	}
	s->wide[i] = expire_ms;
	return 0;
}

const char *mm_idset_copy(mm_idset_t *s, const char *id, size_t len)
{
	char *copy = mm_arena_alloc(&s->arena, len);

	if (copy == NULL) {
		mm_diag_set(MM_ENOMEM, "pending ids: cannot copy a %zu-byte id", len);
		return NULL;
	}
	return memcpy(copy, id, len);
}

void mm_idset_reset(mm_idset_t *s)
{
	if (s->count) {
		memset(s->slots, 0, s->cap * sizeof(*s->slots));
		memset(s->filter, 0, idset_filter_words(s->cap) * sizeof(*s->filter));
	}
	mm_arena_reset(&s->arena);
	/* Out of range once in a long while: the next generation starts on
	 * offsets again. */
	free(s->wide);
	s->wide = NULL;
	s->count = 0;
}

void mm_idset_free(mm_idset_t *s)
{
	mm_arena_free(&s->arena);
	mm_huge_drop(s->slots, s->cap * sizeof(*s->slots));
	free(s->filter);
	mm_huge_drop(s->entries, s->ecap * sizeof(*s->entries));
	mm_huge_drop(s->ids, s->icap * sizeof(*s->ids));
	free(s->wide);
	mm_idset_init(s, s->keep);
}
