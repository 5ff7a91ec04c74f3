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

/* cap zeroed slots (a power of two), or NULL. */
static mm_markslot_t *slots_alloc(size_t cap)
{
	size_t bytes = cap * sizeof(mm_markslot_t);
	uintptr_t raw, start;
	void *p;

	if (bytes < MARKSET_HUGE)
		return calloc(cap, sizeof(mm_markslot_t));
	/* bytes is a multiple of 2 MiB: map one more and trim both ends. */
	p = mmap(NULL, bytes + MARKSET_HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		 -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	raw = (uintptr_t)p;
	start = (raw + MARKSET_HUGE - 1) & ~(uintptr_t)(MARKSET_HUGE - 1);
	if (start > raw)
		munmap(p, start - raw);
	munmap((void *)(start + bytes), raw + MARKSET_HUGE - start);
#ifdef MADV_HUGEPAGE
	/* A refusal (no THP in this kernel) leaves small pages: still correct. */
	(void)madvise((void *)start, bytes, MADV_HUGEPAGE);
#endif
	return (mm_markslot_t *)start;
}

static void slots_free(mm_markslot_t *slots, size_t cap)
{
	if (slots == NULL)
		return;
	if (cap * sizeof(mm_markslot_t) < MARKSET_HUGE)
		free(slots);
	else
		munmap(slots, cap * sizeof(mm_markslot_t));
}

static int is_empty(const mm_markslot_t *e)
{
	return (e->h0 | e->h1) == 0;
}

static size_t slot_of(const mm_markset_t *s, uint64_t h0)
{
	return (size_t)(h0 ^ (h0 >> 29)) & (s->cap - 1);
}

static mm_markslot_t *find(const mm_markset_t *s, uint64_t h0, uint32_t h1)
{
	size_t i = slot_of(s, h0);

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
	size_t n = 0, i;

	*t = (mm_markset_t){.base_ms = s->base_ms};
	for (i = 0; i < s->cap; i++)
		n += live(s, &s->slots[i], now_ms);
	t->cap = MARKSET_MIN;
	while ((n + extra) * 4 > t->cap * 3)
		t->cap *= 2;
	t->slots = slots_alloc(t->cap);
	if (t->slots == NULL) {
		n = t->cap;
		t->cap = 0;
		return mm_diag_set(MM_ENOMEM, "cannot allocate %zu dedup marks", n);
	}
	for (i = 0; i < s->cap; i++) {
		const mm_markslot_t *e = &s->slots[i];

		if (live(s, e, now_ms)) {
			*find(t, e->h0, e->h1) = *e;
			t->count++;
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
	slots_free(s->slots, s->cap);
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
	int rc;

	if (off <= 0)
		return 0;
	/* Growing first drops the expired marks, and doubles only if the live
	 * ones still fill more than half of the larger table's room. */
	if ((s->count + 1) * 4 > s->cap * 3 && (rc = rebuild(s, now_ms, s->count / 2 + 1)))
		return rc;
	e = find(s, m->h0, (uint32_t)(m->h1 >> 32));
	if (is_empty(e)) {
		e->h0 = m->h0;
		e->h1 = (uint32_t)(m->h1 >> 32);
		e->exp = exp;
		s->count++;
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

int64_t mm_markset_expiry(const mm_markset_t *s, const mm_markhash_t *m)
{
	const mm_markslot_t *e;

	if (s->cap == 0)
		return 0;
	e = find(s, m->h0, (uint32_t)(m->h1 >> 32));
	return is_empty(e) ? 0 : s->base_ms + (int64_t)e->exp;
}

void mm_markset_prefetch(const mm_markset_t *s, const mm_markhash_t *m)
{
	if (s->cap)
		__builtin_prefetch(&s->slots[slot_of(s, m->h0)]);
}

void mm_markset_free(mm_markset_t *s)
{
	slots_free(s->slots, s->cap);
	s->slots = NULL;
	s->cap = s->count = 0;
}
