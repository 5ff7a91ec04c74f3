/* markset.c: dedup marks as 128-bit hashes in memory (markset.h). */
#include "markset.h"

#include <stdlib.h>

#include "../lib/error.h"
#include "../lib/hash.h"

#define MARKSET_SEED 0x6d61726b73657431ULL /* "markset1" */
#define MARKSET_SEED2 0x9e3779b97f4a7c15ULL
#define MARKSET_MIN 1024

uint64_t mm_markset_ns_seed(const char *ns, size_t nslen)
{
	return mm_hash64(ns, nslen, MARKSET_SEED);
}

void mm_markset_hash(uint64_t ns_seed, const void *id, size_t len, mm_markhash_t *out)
{
	out->h0 = mm_hash64(id, len, ns_seed);
	out->h1 = mm_hash64(id, len, ns_seed ^ MARKSET_SEED2);
	/* All zero is the empty slot: one hash in 2^128 moves by one. */
	if ((out->h0 | out->h1) == 0)
		out->h1 = 1;
}

static size_t slot_of(const mm_markset_t *s, const mm_markhash_t *m)
{
	return (size_t)(m->h0 ^ (m->h1 >> 17)) & (s->cap - 1);
}

static mm_markhash_t *find(const mm_markset_t *s, const mm_markhash_t *m)
{
	size_t i = slot_of(s, m);

	for (;; i = (i + 1) & (s->cap - 1)) {
		mm_markhash_t *e = &s->slots[i];

		if ((e->h0 == m->h0 && e->h1 == m->h1) || (e->h0 | e->h1) == 0)
			return e;
	}
}

/* Moves the marks live at now_ms (all when now_ms is INT64_MIN) into a new
 * table with room for `extra` more. */
static int rebuild(mm_markset_t *s, int64_t now_ms, size_t extra)
{
	mm_markset_t t = {0};
	size_t live = 0, i;

	for (i = 0; i < s->cap; i++)
		live += (s->slots[i].h0 | s->slots[i].h1) != 0 && s->slots[i].expire_ms > now_ms;
	t.cap = MARKSET_MIN;
	while ((live + extra) * 4 > t.cap * 3)
		t.cap *= 2;
	t.slots = calloc(t.cap, sizeof(*t.slots));
	if (t.slots == NULL)
		return mm_diag_set(MM_ENOMEM, "cannot allocate %zu dedup marks", t.cap);
	for (i = 0; i < s->cap; i++) {
		const mm_markhash_t *e = &s->slots[i];

		if ((e->h0 | e->h1) != 0 && e->expire_ms > now_ms) {
			*find(&t, e) = *e;
			t.count++;
		}
	}
	free(s->slots);
	*s = t;
	return 0;
}

int mm_markset_add(mm_markset_t *s, const mm_markhash_t *m, int64_t now_ms)
{
	mm_markhash_t *e;
	int rc;

	/* Growing first drops the expired marks, and doubles only if the live
	 * ones still fill more than half of the larger table's room. */
	if ((s->count + 1) * 4 > s->cap * 3 && (rc = rebuild(s, now_ms, s->count / 2 + 1)))
		return rc;
	e = find(s, m);
	if ((e->h0 | e->h1) == 0) {
		*e = *m;
		s->count++;
	} else if (m->expire_ms > e->expire_ms) {
		e->expire_ms = m->expire_ms;
	}
	return 0;
}

int64_t mm_markset_expiry(const mm_markset_t *s, const mm_markhash_t *m)
{
	if (s->cap == 0)
		return 0;
	return find(s, m)->expire_ms;
}

void mm_markset_prefetch(const mm_markset_t *s, const mm_markhash_t *m)
{
	if (s->cap)
		__builtin_prefetch(&s->slots[slot_of(s, m)]);
}

int mm_markset_prune(mm_markset_t *s, int64_t now_ms)
{
	return s->cap ? rebuild(s, now_ms, 0) : 0;
}

void mm_markset_free(mm_markset_t *s)
{
	free(s->slots);
	s->slots = NULL;
	s->cap = s->count = 0;
}
