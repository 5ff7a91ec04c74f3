/*
 * rcache.c: open addressing with linear probing over 2 * max_entries
 * slots, keyed by mm_hash64 of the key bytes; an entry owns one allocation
 * holding its key and value. Expired entries are replaced in place.
 */
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "../lib/hash.h"
#include "rcache.h"

#define RCACHE_SEED 0x7263616368650001ULL

typedef struct entry {
	uint64_t hash;
	int64_t stored_ms;
	uint8_t *mem;           /* key, then value; NULL = empty slot */
	size_t klen, vlen;
	int found;
} entry_t;

struct mm_rcache {
	uint64_t ttl_ms;
	size_t max, count, cap;
	entry_t *slots;
};

int mm_rcache_open(uint64_t ttl_ms, size_t max_entries, mm_rcache_t **out)
{
	mm_rcache_t *c = calloc(1, sizeof(*c));

	if (c == NULL || max_entries == 0 ||
	    (c->slots = calloc(2 * max_entries, sizeof(entry_t))) == NULL) {
		free(c);
		return mm_diag_set(MM_ENOMEM, "result cache: out of memory");
	}
	c->ttl_ms = ttl_ms;
	c->max = max_entries;
	c->cap = 2 * max_entries;
	*out = c;
	return 0;
}

static void clear(mm_rcache_t *c)
{
	for (size_t i = 0; i < c->cap; i++) {
		free(c->slots[i].mem);
		c->slots[i].mem = NULL;
	}
	c->count = 0;
}

void mm_rcache_close(mm_rcache_t *c)
{
	if (c == NULL)
		return;
	clear(c);
	free(c->slots);
	free(c);
}

/* The slot holding key, or the empty slot where it would go. */
static entry_t *find(mm_rcache_t *c, uint64_t h, const void *key, size_t klen)
{
	for (size_t i = h % c->cap;; i = (i + 1) % c->cap) {
		entry_t *e = &c->slots[i];

		if (e->mem == NULL || (e->hash == h && e->klen == klen && memcmp(e->mem, key, klen) == 0))
			return e;
	}
}

int mm_rcache_get(mm_rcache_t *c, const void *key, size_t klen, int64_t now_ms,
		  const uint8_t **val, size_t *vlen, int *found)
{
	entry_t *e = find(c, mm_hash64(key, klen, RCACHE_SEED), key, klen);

	if (e->mem == NULL || now_ms - e->stored_ms >= (int64_t)c->ttl_ms)
		return 0;
	*val = e->mem + e->klen;
	*vlen = e->vlen;
	*found = e->found;
	return 1;
}

int mm_rcache_put(mm_rcache_t *c, const void *key, size_t klen, int64_t now_ms,
		  const uint8_t *val, size_t vlen, int found)
{
	uint64_t h = mm_hash64(key, klen, RCACHE_SEED);
	uint8_t *mem = malloc(klen + vlen + 1);
	entry_t *e;

	if (mem == NULL)
		return mm_diag_set(MM_ENOMEM, "result cache: out of memory");
	memcpy(mem, key, klen);
	if (vlen)
		memcpy(mem + klen, val, vlen);
	e = find(c, h, key, klen);
	if (e->mem == NULL && c->count >= c->max) {
		clear(c);
		e = find(c, h, key, klen);
	}
	if (e->mem == NULL)
		c->count++;
	free(e->mem);
	*e = (entry_t){h, now_ms, mem, klen, vlen, found};
	return 0;
}
