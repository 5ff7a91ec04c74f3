/*
 * strtab.c: the string table behind Top-K and the bounded set (see strtab.h).
 *
 * Growth doubles the entry array and the arena, and keeps the slot array at
 * least twice the entry capacity, so probes stay short (load <= 1/2) and a
 * run of puts costs amortised O(1). The index is rebuilt from the stored
 * hashes, never by rehashing key bytes.
 */
#include "strtab.h"

#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"

int mm_strtab_cmp(const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen)
{
	uint32_t n = alen < blen ? alen : blen;
	int c = n ? memcmp(a, b, n) : 0;

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

/* Fills the slot array from the entries; the array must be large enough. */
static void strtab_reindex(mm_strtab_t *t)
{
	uint32_t i;

	memset(t->slot, 0xff, ((size_t)t->mask + 1) * sizeof(*t->slot));
	for (i = 0; i < t->n; i++) {
		uint32_t s = (uint32_t)t->e[i].hash & t->mask;

		while (t->slot[s] != MM_STRTAB_EMPTY)
			s = (s + 1) & t->mask;
		t->slot[s] = i;
	}
}

int mm_strtab_grow(mm_strtab_t *t, size_t entries, size_t bytes)
{
	size_t need = (size_t)t->n + entries;
	size_t kneed = t->klen + bytes;

	if (entries > MM_STRTAB_MAX_ENTRIES || need > MM_STRTAB_MAX_ENTRIES)
		return mm_diag_set(MM_ENOMEM, "string table: more than %u entries",
				   (unsigned)MM_STRTAB_MAX_ENTRIES);
	if (kneed < t->klen)
		return mm_diag_set(MM_ENOMEM, "string table: key bytes overflow");

	if (need > t->cap) {
		size_t cap = t->cap ? t->cap : 16;
		mm_strtab_entry_t *e;

		while (cap < need)
			cap *= 2;
		if (cap > MM_STRTAB_MAX_ENTRIES)
			cap = MM_STRTAB_MAX_ENTRIES;
		e = realloc(t->e, cap * sizeof(*e));
		if (e == NULL)
			return mm_diag_set(MM_ENOMEM, "string table: cannot grow to %zu entries",
					   cap);
		t->e = e;
		t->cap = (uint32_t)cap;
	}

	/* The index is replaced only once its successor exists, so a failure
	 * here leaves the old (still correct) index in place. */
	if (t->slot == NULL || (size_t)t->mask + 1 < 2 * (size_t)t->cap) {
		size_t nslots = 32;
		uint32_t *slot;

		while (nslots < 2 * (size_t)t->cap)
			nslots *= 2;
		slot = malloc(nslots * sizeof(*slot));
		if (slot == NULL)
			return mm_diag_set(MM_ENOMEM, "string table: cannot allocate %zu slots",
					   nslots);
		free(t->slot);
		t->slot = slot;
		t->mask = (uint32_t)(nslots - 1);
		strtab_reindex(t);
	}

	/* The arena always exists after a reserve, so key pointers are never
	 * NULL even when every key is empty. */
	if (kneed > t->kcap || t->keys == NULL) {
		size_t kcap = t->kcap ? t->kcap : 256;
		uint8_t *keys;

		while (kcap < kneed) {
			if (kcap > SIZE_MAX / 2) {
				kcap = kneed;
				break;
			}
			kcap *= 2;
		}
		keys = realloc(t->keys, kcap);
		if (keys == NULL)
			return mm_diag_set(MM_ENOMEM, "string table: cannot grow arena to %zu bytes",
					   kcap);
		t->keys = keys;
		t->kcap = kcap;
	}
	return 0;
}

/* Appends key[0..len) as a new entry with val 0 at the empty slot s. */
static mm_strtab_entry_t *strtab_append(mm_strtab_t *t, uint32_t s, const void *key, uint32_t len,
					uint64_t hash)
{
	mm_strtab_entry_t *e = &t->e[t->n];

	e->val = 0;
	e->hash = hash;
	e->off = t->klen;
	e->len = len;
	if (len)
		memcpy(t->keys + t->klen, key, len);
	t->klen += len;
	t->slot[s] = t->n++;
	return e;
}

mm_strtab_entry_t *mm_strtab_put(mm_strtab_t *t, const void *key, uint32_t len, uint64_t hash,
				 int *created)
{
	mm_strtab_entry_t *e;
	uint32_t s;

	for (s = (uint32_t)hash & t->mask; t->slot[s] != MM_STRTAB_EMPTY; s = (s + 1) & t->mask) {
		e = &t->e[t->slot[s]];
		if (e->hash == hash && e->len == len && mm_key_eq(t->keys + e->off, key, len)) {
			*created = 0;
			return e;
		}
	}
	*created = 1;
	return strtab_append(t, s, key, len, hash);
}

mm_strtab_entry_t *mm_strtab_insert_at(mm_strtab_t *t, uint32_t slot, const void *key, uint32_t len,
				       uint64_t hash)
{
	return strtab_append(t, slot, key, len, hash);
}

mm_strtab_entry_t *mm_strtab_insert(mm_strtab_t *t, const void *key, uint32_t len, uint64_t hash)
{
	uint32_t s;

	for (s = (uint32_t)hash & t->mask; t->slot[s] != MM_STRTAB_EMPTY; s = (s + 1) & t->mask)
		;
	return strtab_append(t, s, key, len, hash);
}

void mm_strtab_compact(mm_strtab_t *t, uint64_t sub)
{
	/* Locals: a store through e would otherwise make the compiler reload
	 * the table's fields on every entry (they could alias). */
	mm_strtab_entry_t *e = t->e;
	uint8_t *keys = t->keys;
	uint32_t i, n = 0, count = t->n;
	size_t klen = 0;

	/* Entries are in arena order, so moving each survivor down never
	 * overwrites bytes that a later survivor still needs. */
	for (i = 0; i < count; i++) {
		mm_strtab_entry_t x = e[i];

		if (x.val <= sub)
			continue;
		x.val -= sub;
		if (x.off != klen)
			memmove(keys + klen, keys + x.off, x.len);
		x.off = klen;
		klen += x.len;
		e[n++] = x;
	}
	t->n = n;
	t->klen = klen;
	if (t->slot)
		strtab_reindex(t);
}

void mm_strtab_free(mm_strtab_t *t)
{
	free(t->e);
	free(t->slot);
	free(t->keys);
	memset(t, 0, sizeof(*t));
}
