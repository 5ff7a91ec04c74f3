/*
 * valkey_keys.c: the Valkey cache layer's argument lists, key names and key
 * sets (see valkey.c for the key layout).
 *
 * Commands are built as lists of byte strings in one growing buffer: keys
 * are built per read and write, many at a time, so they are assembled with
 * plain appends rather than printf. The hot set (keys rebuilt after Valkey
 * lost data) and the dirty set (keys to invalidate once Valkey answers
 * again) are bounded hash sets with an age list, newest last.
 */
#include "valkey_impl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "../lib/hash.h"

int mm_vk_list_mark(vk_list_t *l)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		size_t *end = realloc(l->end, cap * sizeof(*end));

		if (end == NULL)
			return mm_diag_set(MM_ENOMEM, "valkey: cannot grow an argument list");
		l->end = end;
		l->cap = cap;
	}
	l->end[l->n++] = l->b.len;
	return 0;
}

int mm_vk_list_add(vk_list_t *l, const void *p, size_t n)
{
	int rc = mm_buf_append(&l->b, p, n);

	return rc ? rc : mm_vk_list_mark(l);
}

int mm_vk_list_str(vk_list_t *l, const char *s)
{
	return mm_vk_list_add(l, s, strlen(s));
}

void mm_vk_list_reset(vk_list_t *l)
{
	l->b.len = 0;
	l->n = 0;
}

void mm_vk_list_free(vk_list_t *l)
{
	mm_buf_free(&l->b);
	free(l->end);
	memset(l, 0, sizeof(*l));
}

const char *mm_vk_list_at(const vk_list_t *l, size_t i, size_t *len)
{
	size_t start = i ? l->end[i - 1] : 0;

	*len = l->end[i] - start;
	return (const char *)l->b.p + start;
}

/* Appends PREFIX, the kind ("s:"), NS and ':' to l's current string. */
static int vk_key_head(const mm_valkey_t *st, vk_list_t *l, const char *kind, const char *ns)
{
	int rc;

	if ((rc = mm_buf_append(&l->b, st->prefix, st->prefix_len)) ||
	    (rc = mm_buf_append(&l->b, kind, 2)) || (rc = mm_buf_append(&l->b, ns, strlen(ns))))
		return rc;
	return mm_buf_put_u8(&l->b, ':');
}

int mm_vk_list_i64(vk_list_t *l, int64_t v)
{
	int rc = mm_buf_put_dec_i64(&l->b, v);

	return rc ? rc : mm_vk_list_mark(l);
}

/* Appends "P s:NS:BUCKET:ENTITY" and closes it as one string of l. */
int mm_vk_state_key(const mm_valkey_t *st, vk_list_t *l, const char *ns, int64_t bucket,
			const char *entity, size_t len)
{
	int rc;

	if ((rc = vk_key_head(st, l, "s:", ns)) || (rc = mm_buf_put_dec_i64(&l->b, bucket)) ||
	    (rc = mm_buf_put_u8(&l->b, ':')) || (rc = mm_buf_append(&l->b, entity, len)))
		return rc;
	return mm_vk_list_mark(l);
}

/* Appends "P <kind>:NS:BUCKET" (kind 'e' epoch, 'l' leases). */
int mm_vk_coord_key(const mm_valkey_t *st, vk_list_t *l, char kind, const char *ns,
			int64_t bucket)
{
	const char k[2] = {kind, ':'};
	int rc;

	if ((rc = vk_key_head(st, l, k, ns)) || (rc = mm_buf_put_dec_i64(&l->b, bucket)))
		return rc;
	return mm_vk_list_mark(l);
}

int mm_vk_mark_key(const mm_valkey_t *st, vk_list_t *l, const char *ns, const char *id,
		       size_t len)
{
	int rc;

	if ((rc = vk_key_head(st, l, "d:", ns)) || (rc = mm_buf_append(&l->b, id, len)))
		return rc;
	return mm_vk_list_mark(l);
}

/* ---- key sets -------------------------------------------------------------- */

static uint64_t vk_key_hash(const vk_ns_t *vn, int64_t bucket, const char *e, size_t len)
{
	uint64_t h = mm_hash64(e, len, (uint64_t)bucket * 0x9e3779b97f4a7c15ULL);

	return h ^ ((uint64_t)(uintptr_t)vn * 0xff51afd7ed558ccdULL);
}

static void vk_keyset_unlink(vk_keyset_t *ks, vk_kent_t *e)
{
	vk_kent_t **pp = &ks->tab[e->hash & ks->mask];

	while (*pp != e)
		pp = &(*pp)->next;
	*pp = e->next;
	if (e->older)
		e->older->newer = e->newer;
	else
		ks->oldest = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	else
		ks->newest = e->older;
	ks->n--;
}

static void vk_keyset_append(vk_keyset_t *ks, vk_kent_t *e)
{
	e->newer = NULL;
	e->older = ks->newest;
	if (ks->newest)
		ks->newest->newer = e;
	else
		ks->oldest = e;
	ks->newest = e;
}

static int vk_keyset_grow(vk_keyset_t *ks)
{
	size_t cap = ks->tab ? (ks->mask + 1) * 2 : 64, i;
	vk_kent_t **tab = calloc(cap, sizeof(*tab)), *e, *next;

	if (tab == NULL)
		return MM_ENOMEM;
	for (i = 0; ks->tab && i <= ks->mask; i++)
		for (e = ks->tab[i]; e; e = next) {
			next = e->next;
			e->next = tab[e->hash & (cap - 1)];
			tab[e->hash & (cap - 1)] = e;
		}
	free(ks->tab);
	ks->tab = tab;
	ks->mask = cap - 1;
	return 0;
}

/* Adds the key or, if present, makes it the newest. When full, the oldest
 * key goes and `overflow` is set. 0 or MM_ENOMEM. */
static int vk_keyset_add(vk_keyset_t *ks, vk_ns_t *vn, int64_t bucket, const char *entity,
			 size_t len, uint64_t seq)
{
	uint64_t h = vk_key_hash(vn, bucket, entity, len);
	vk_kent_t *e;

	if (ks->max == 0)
		return 0;
	if (ks->tab != NULL)
		for (e = ks->tab[h & ks->mask]; e; e = e->next)
			if (e->hash == h && e->ns == vn && e->bucket == bucket && e->len == len &&
			    memcmp(e->entity, entity, len) == 0) {
				e->seq = seq;
				if (e != ks->newest) {
					vk_keyset_unlink(ks, e);
					ks->n++;
					e->next = ks->tab[h & ks->mask];
					ks->tab[h & ks->mask] = e;
					vk_keyset_append(ks, e);
				}
				return 0;
			}
	if (ks->n >= ks->max) {
		e = ks->oldest;
		vk_keyset_unlink(ks, e);
		free(e);
		ks->overflow = 1;
	}
	if ((ks->tab == NULL || ks->n + 1 > ks->mask + 1) && vk_keyset_grow(ks))
		return MM_ENOMEM;
	e = malloc(sizeof(*e) + len);
	if (e == NULL)
		return MM_ENOMEM;
	e->hash = h;
	e->seq = seq;
	e->ns = vn;
	e->bucket = bucket;
	e->len = len;
	memcpy(e->entity, entity, len);
	e->next = ks->tab[h & ks->mask];
	ks->tab[h & ks->mask] = e;
	vk_keyset_append(ks, e);
	ks->n++;
	return 0;
}

/* Drops every key whose seq is at most `upto` (they are the oldest). */
void mm_vk_keyset_trim(vk_keyset_t *ks, uint64_t upto)
{
	while (ks->oldest && ks->oldest->seq <= upto) {
		vk_kent_t *e = ks->oldest;

		vk_keyset_unlink(ks, e);
		free(e);
	}
}

void mm_vk_keyset_free(vk_keyset_t *ks)
{
	mm_vk_keyset_trim(ks, UINT64_MAX);
	free(ks->tab);
	ks->tab = NULL;
	ks->mask = 0;
	ks->overflow = 0;
}

void mm_vk_remember(mm_valkey_t *st, vk_keyset_t *ks, vk_ns_t *vn, const mm_key_t *k)
{
	/* Forgetting a hot key only costs a rebuild; a dirty key that cannot be
	 * remembered must still be invalidated, so it counts as an overflow. */
	if (vk_keyset_add(ks, vn, k->bucket, k->entity, k->len, ++st->kseq) && ks == &st->dirty)
		ks->overflow = 1;
	if (ks == &st->dirty)
		st->vs.dirty = ks->n;
}
