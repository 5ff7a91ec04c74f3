/*
 * keyset.c: folding repeated keys (see keyset.h).
 *
 * An open-addressing table of twice the keys' count, indexed by the hash
 * of the entity bytes seeded with the bucket, holds 1 + the index of each
 * distinct key; a probe compares bucket, length and bytes.
 */
#include "keyset.h"

#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "../lib/hash.h"

static int same_key(const mm_key_t *a, const mm_key_t *b)
{
	return a->bucket == b->bucket && a->len == b->len && memcmp(a->entity, b->entity, a->len) == 0;
}

int64_t mm_keyset_fold(mm_key_t *keys, size_t n, uint32_t *map)
{
	size_t cap = 16, u = 0;
	uint32_t *tab;

	if (n > UINT32_MAX / 2)
		return mm_diag_set(MM_ENOMEM, "keyset: too many keys");
	while (cap < 2 * n)
		cap *= 2;
	tab = calloc(cap, sizeof(*tab));
	if (tab == NULL)
		return mm_diag_set(MM_ENOMEM, "keyset: out of memory");
	for (size_t i = 0; i < n; i++) {
		mm_key_t k = keys[i];
		size_t h = mm_hash64(k.entity, k.len, (uint64_t)k.bucket) & (cap - 1);

		while (tab[h] != 0 && !same_key(&keys[tab[h] - 1], &k))
			h = (h + 1) & (cap - 1);
		if (tab[h] == 0) {
			/* u <= i: the slot written is one already read. */
			keys[u++] = k;
			tab[h] = (uint32_t)u;
		}
		map[i] = tab[h] - 1;
	}
	free(tab);
	return (int64_t)u;
}
