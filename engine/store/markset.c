/*
 * markset.c: dedup marks as 96-bit hashes in memory (markset.h).
 *
 * A table of 2 MiB or more is mapped on its own and asks for transparent
 * huge pages (madvise: the setting of most distributions leaves them to the
 * program's request). Its lookups and adds are random, one per id: with 4
 * KiB pages each also misses the TLB, which maps a few MiB of them, while a
 * 64 MiB table (2 000 000 marks) is 32 huge pages. The mapping starts on a
 * 2 MiB boundary so that every page of it can be huge; where huge pages are
 * off, it is an ordinary mapping, zeroed by the kernel as calloc's is.
 *
 * The filter (markset.h) is a Bloom filter blocked by 64-bit words: a
 * mark's word is the one of its home slot's 16 and its four bits come from
 * the 32 bits of h1 its slot keeps, so a growth or a copy rebuilds it from
 * the slots alone, in order. At 4 bits per slot and a table 3/8 to 3/4 full, a mark has
 * 5.3 to 10.7 bits: an absent one passes the filter with a probability of
 * about 1.5% to 10%, and then costs the slot's probe it cost before. The
 * filter sits after the slots in the same allocation.
 */
#include "markset.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "../lib/error.h"
#include "../lib/hash.h"

#define MARKSET_MIN 1024
#define MARKSET_STALE_MS (1LL << 31)
#define MARKSET_HUGE ((size_t)2 << 20)

uint64_t mm_markset_ns_seed(const char *ns, size_t nslen)
{
	return mm_id_hash_seed(ns, nslen);
}

void mm_markset_hash(uint64_t ns_seed, const void *id, size_t len, mm_markhash_t *out)
{
	mm_idhash_t h;

	mm_id_hash(ns_seed, id, len, &h);
	out->h0 = h.h0;
	out->h1 = h.h1;
}

/* The bytes of a table of cap slots: the slots, then the filter's cap / 16
 * words; a mapped one rounded up to whole huge pages. */
static size_t table_bytes(size_t cap)
{
	size_t bytes = cap * sizeof(mm_markslot_t) + cap / 2;

	return bytes < MARKSET_HUGE ? bytes : (bytes + MARKSET_HUGE - 1) & ~(MARKSET_HUGE - 1);
}

/* A zeroed table of cap slots (a power of two, at least MARKSET_MIN) and
 * its filter for s, or MM_ENOMEM. */
static int table_alloc(mm_markset_t *s, size_t cap)
{
	size_t bytes = table_bytes(cap);
	uintptr_t raw, start;
	void *p;

	if (bytes < MARKSET_HUGE) {
		p = calloc(1, bytes);
		if (p == NULL)
			return MM_ENOMEM;
		start = (uintptr_t)p;
	} else {
		/* bytes is a multiple of 2 MiB: map one more and trim both ends. */
		p = mmap(NULL, bytes + MARKSET_HUGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return MM_ENOMEM;
		raw = (uintptr_t)p;
		start = (raw + MARKSET_HUGE - 1) & ~(uintptr_t)(MARKSET_HUGE - 1);
		if (start > raw)
			munmap(p, start - raw);
		munmap((void *)(start + bytes), raw + MARKSET_HUGE - start);
#ifdef MADV_HUGEPAGE
		/* A refusal (no THP in this kernel) leaves small pages: still
		 * correct. */
		(void)madvise((void *)start, bytes, MADV_HUGEPAGE);
#endif
	}
	s->slots = (mm_markslot_t *)start;
	s->filter = (uint64_t *)(s->slots + cap);
	s->cap = cap;
	return 0;
}

static void table_free(mm_markslot_t *slots, size_t cap)
{
	if (slots == NULL)
		return;
	if (table_bytes(cap) < MARKSET_HUGE)
		free(slots);
	else
		munmap(slots, table_bytes(cap));
}

static int is_empty(const mm_markslot_t *e)
{
	return (e->h0 | e->h1) == 0;
}

static size_t slot_of(const mm_markset_t *s, uint64_t h0)
{
	return (size_t)(h0 ^ (h0 >> 29)) & (s->cap - 1);
}

/* The filter's word of a mark: the one of its home slot's 16 (so that a
 * growth, walking the old table in order, writes the new filter in order
 * too), and the four bits it sets there, from the 32 bits of h1 the slot
 * keeps (the home slot is h0's). */
static uint64_t *filter_word(const mm_markset_t *s, size_t home)
{
	return &s->filter[home / 16];
}

static uint64_t filter_mask(uint32_t h1)
{
	return 1ULL << (h1 & 63) | 1ULL << (h1 >> 6 & 63) | 1ULL << (h1 >> 12 & 63) |
	       1ULL << (h1 >> 18 & 63);
}

/* The slot of (h0, h1) or the empty one where it belongs, from its home. */
static mm_markslot_t *find(const mm_markset_t *s, size_t home, uint64_t h0, uint32_t h1)
{
	size_t i = home;

	for (;; i = (i + 1) & (s->cap - 1)) {
		mm_markslot_t *e = &s->slots[i];

		if ((e->h0 == h0 && e->h1 == h1) || is_empty(e))
			return e;
	}
}

static int live(const mm_markset_t *s, const mm_markslot_t *e, int64_t now_ms)
{
	return !is_empty(e) && s->base_ms + (int64_t)e->exp > now_ms;
}

/* Copies the marks of s live at now_ms into t, a new table with room for
 * `extra` more; s is left as it is. */
static int rebuild_into(mm_markset_t *t, const mm_markset_t *s, int64_t now_ms, size_t extra)
{
	size_t n = 0, i, cap;

	*t = (mm_markset_t){.base_ms = s->base_ms};
	/* The live marks are counted only when some may have expired. */
	if (s->count && s->base_ms + (int64_t)s->min_exp > now_ms)
		n = s->count;
	else
		for (i = 0; i < s->cap; i++)
			n += live(s, &s->slots[i], now_ms);
	cap = MARKSET_MIN;
	while ((n + extra) * 4 > cap * 3)
		cap *= 2;
	if (table_alloc(t, cap))
		return mm_diag_set(MM_ENOMEM, "cannot allocate %zu dedup marks", cap);
	for (i = 0; i < s->cap; i++) {
		const mm_markslot_t *e = &s->slots[i];

		if (live(s, e, now_ms)) {
			size_t home = slot_of(t, e->h0);

			*find(t, home, e->h0, e->h1) = *e;
			*filter_word(t, home) |= filter_mask(e->h1);
			if (t->count++ == 0 || e->exp < t->min_exp)
				t->min_exp = e->exp;
		}
	}
	return 0;
}

/* Moves the marks live at now_ms into a new table with room for `extra`
 * more. */
static int rebuild(mm_markset_t *s, int64_t now_ms, size_t extra)
{
	mm_markset_t t;
	int rc = rebuild_into(&t, s, now_ms, extra);

	if (rc)
		return rc;
	table_free(s->slots, s->cap);
	*s = t;
	return 0;
}

void mm_markset_start(mm_markset_t *s, int64_t base_ms)
{
	mm_markset_free(s);
	s->base_ms = base_ms;
}

int mm_markset_stale(const mm_markset_t *s, int64_t now_ms)
{
	return now_ms - s->base_ms >= MARKSET_STALE_MS;
}

int mm_markset_add(mm_markset_t *s, const mm_markhash_t *m, int64_t now_ms)
{
	int64_t off = m->expire_ms - s->base_ms;
	uint32_t exp = off > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)off;
	mm_markslot_t *e;
	size_t home;
	int rc;

	if (off <= 0)
		return 0;
	/* Growing first drops the expired marks, and doubles only if the live
	 * ones still fill more than half of the larger table's room. */
	if ((s->count + 1) * 4 > s->cap * 3 && (rc = rebuild(s, now_ms, s->count / 2 + 1)))
		return rc;
	home = slot_of(s, m->h0);
	e = find(s, home, m->h0, (uint32_t)(m->h1 >> 32));
	if (is_empty(e)) {
		e->h0 = m->h0;
		e->h1 = (uint32_t)(m->h1 >> 32);
		e->exp = exp;
		*filter_word(s, home) |= filter_mask(e->h1);
		if (s->count++ == 0 || exp < s->min_exp)
			s->min_exp = exp;
	} else if (exp > e->exp) {
		e->exp = exp;
	}
	return 0;
}

int mm_markset_has_room(const mm_markset_t *s, size_t n)
{
	return (s->count + n) * 4 <= s->cap * 3;
}

int mm_markset_copy(mm_markset_t *t, const mm_markset_t *s, size_t n, int64_t now_ms)
{
	return rebuild_into(t, s, now_ms, n + (s->count + n) / 2);
}

/* Whether the filter lets m by, m's home slot given (cap is not 0). */
static int filter_has(const mm_markset_t *s, size_t home, const mm_markhash_t *m)
{
	uint64_t mask = filter_mask((uint32_t)(m->h1 >> 32));

	return (*filter_word(s, home) & mask) == mask;
}

int mm_markset_may_hold(const mm_markset_t *s, const mm_markhash_t *m)
{
	return s->cap && filter_has(s, slot_of(s, m->h0), m);
}

int64_t mm_markset_expiry(const mm_markset_t *s, const mm_markhash_t *m)
{
	const mm_markslot_t *e;
	size_t home;

	if (s->cap == 0)
		return 0;
	home = slot_of(s, m->h0);
	if (!filter_has(s, home, m))
		return 0;
	e = find(s, home, m->h0, (uint32_t)(m->h1 >> 32));
	return is_empty(e) ? 0 : s->base_ms + (int64_t)e->exp;
}

void mm_markset_prefetch(const mm_markset_t *s, const mm_markhash_t *m)
{
	if (s->cap) {
		size_t home = slot_of(s, m->h0);

		__builtin_prefetch(filter_word(s, home));
		__builtin_prefetch(&s->slots[home]);
	}
}

void mm_markset_prefetch_word(const mm_markset_t *s, const mm_markhash_t *m)
{
	if (s->cap)
		__builtin_prefetch(filter_word(s, slot_of(s, m->h0)));
}

void mm_markset_free(mm_markset_t *s)
{
	table_free(s->slots, s->cap);
	s->slots = NULL;
	s->filter = NULL;
	s->cap = s->count = 0;
	s->min_exp = 0;
}
