/*
 * set.c: the "set" monoid, a union of distinct strings bounded to
 * params.max_size members.
 *
 * The value of a state is the pair (the max_size smallest members of the
 * union, in bytewise memcmp order with a proper prefix first; a "truncated"
 * flag saying some member was dropped). Keeping the smallest rather than,
 * say, the first seen makes merge a function of the union alone:
 * min_M(min_M(A u B) u C) = min_M(A u B u C), and the flag is set exactly
 * when an operand was truncated or the union outgrew M. So the monoid is
 * associative, commutative and deterministic, and the bound only costs
 * completeness: a truncated set is a deterministic sample, not a count (use
 * hll for cardinality).
 *
 * In memory a state holds up to M + max(M, 64) members and then prunes back
 * to the M smallest, so adds are amortised O(log M). After a prune it
 * remembers its largest member: anything larger can never be kept, and is
 * rejected without being stored. encode() and to_json() present the
 * canonical value (sorted, cut to M) without modifying the state.
 *
 * Byte format, version 1 (integers little-endian):
 *
 *     offset size
 *     0      4    magic "MMST"
 *     4      1    version (1)
 *     5      1    flags: bit 0 = truncated, the other bits zero
 *     6      4    u32 member count, at most max_size (exactly max_size
 *                 when truncated)
 *     10     ...  members in strictly increasing order: u32 length, bytes
 *
 * decode() rejects anything else, so every accepted encoding is canonical.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../codec/json.h"
#include "../lib/error.h"
#include "monoid.h"
#include "strtab.h"

#define MM_SET_MAGIC "MMST"
#define MM_SET_VERSION 1
#define MM_SET_HEADER 10
#define MM_SET_TRUNCATED 0x01
#define MM_SET_DEFAULT_MAX 1000
#define MM_SET_MAX_MAX 1000000

typedef struct mm_set {
	mm_strtab_t t;   /* val = 1 for every member */
	int truncated;   /* a member was dropped (not counting the in-memory surplus) */
	uint32_t cutoff; /* after a prune, the index of the largest member, else MM_STRTAB_EMPTY */
} mm_set_t;

/* A member in sorting scratch space. */
typedef struct mm_set_ref {
	const uint8_t *key;
	uint32_t len;
	uint32_t idx;
} mm_set_ref_t;

static mm_set_t *set_get(const void *st)
{
	mm_set_t *h;

	memcpy(&h, st, sizeof(h));
	return h;
}

static void set_put(void *st, mm_set_t *h)
{
	memcpy(st, &h, sizeof(h));
}

/* The number of members a state may hold in memory before pruning. */
static uint32_t set_limit(uint32_t max)
{
	return max + (max < 64 ? 64 : max);
}

static int set_ref_cmp(const void *a, const void *b)
{
	const mm_set_ref_t *x = a, *y = b;

	return mm_strtab_cmp(x->key, x->len, y->key, y->len);
}

/* Fills refs[0..t->n) with t's members in increasing order. */
static void set_sort(const mm_strtab_t *t, mm_set_ref_t *refs)
{
	for (uint32_t i = 0; i < t->n; i++) {
		refs[i].key = mm_strtab_key(t, &t->e[i]);
		refs[i].len = t->e[i].len;
		refs[i].idx = i;
	}
	qsort(refs, t->n, sizeof(*refs), set_ref_cmp);
}

/* Keeps the max smallest of h's members (it holds more), using refs (room
 * for h->t.n) as scratch. */
static void set_prune(mm_set_t *h, uint32_t max, mm_set_ref_t *refs)
{
	uint32_t i;

	set_sort(&h->t, refs);
	for (i = max; i < h->t.n; i++)
		h->t.e[refs[i].idx].val = 0;
	mm_strtab_compact(&h->t, 0);
	h->truncated = 1;
	h->cutoff = 0;
	for (i = 1; i < h->t.n; i++)
		if (mm_strtab_cmp(mm_strtab_key(&h->t, &h->t.e[i]), h->t.e[i].len,
				  mm_strtab_key(&h->t, &h->t.e[h->cutoff]),
				  h->t.e[h->cutoff].len) > 0)
			h->cutoff = i;
}

/* 1 if key sorts after the remembered largest member, so it cannot be kept. */
static int set_beyond_cutoff(const mm_set_t *h, const uint8_t *key, uint32_t len)
{
	const mm_strtab_entry_t *c;

	if (h->cutoff == MM_STRTAB_EMPTY)
		return 0;
	c = &h->t.e[h->cutoff];
	return mm_strtab_cmp(key, len, mm_strtab_key(&h->t, c), c->len) > 0;
}

static mm_set_t *set_new(void)
{
	mm_set_t *h = calloc(1, sizeof(*h));

	if (h == NULL) {
		mm_diag_set(MM_ENOMEM, "set: cannot allocate a set");
		return NULL;
	}
	h->cutoff = MM_STRTAB_EMPTY;
	return h;
}

static void set_free(mm_set_t *h)
{
	if (h) {
		mm_strtab_free(&h->t);
		free(h);
	}
}

static int set_check(mm_monoid_params_t *p)
{
	if (p->max_size == 0)
		p->max_size = MM_SET_DEFAULT_MAX;
	if (p->max_size > MM_SET_MAX_MAX)
		return mm_diag_set(MM_EINVAL, "set: max_size must be between 1 and %d, got %" PRIu32,
				   MM_SET_MAX_MAX, p->max_size);
	return 0;
}

static void set_init(const mm_monoid_t *m, void *st)
{
	memset(st, 0, MM_STATE_MAX);
}

static void set_destroy(const mm_monoid_t *m, void *st)
{
	set_free(set_get(st));
	set_put(st, NULL);
}

static int set_add(const mm_monoid_t *m, void *st, const mm_value_t *v)
{
	mm_set_t *h = set_get(st);
	mm_set_ref_t *refs = NULL;
	uint64_t hash;
	int fresh = h == NULL, created, rc;

	if (v->type != MM_VAL_STRING)
		return mm_diag_set(MM_ETYPE, "set: expects a string value");
	if (v->len > UINT32_MAX)
		return mm_diag_set(MM_ERANGE, "set: member of %zu bytes is too long", v->len);
	hash = mm_strtab_hash(v->s, v->len);
	if (h && (set_beyond_cutoff(h, (const uint8_t *)v->s, (uint32_t)v->len) ||
		  mm_strtab_find(&h->t, v->s, (uint32_t)v->len, hash)))
		return 0;
	if (fresh && (h = set_new()) == NULL)
		return MM_ENOMEM;
	rc = mm_strtab_reserve(&h->t, 1, v->len);
	if (rc == 0 && h->t.n + 1 > set_limit(m->p.max_size) &&
	    (refs = malloc(((size_t)h->t.n + 1) * sizeof(*refs))) == NULL)
		rc = mm_diag_set(MM_ENOMEM, "set: cannot allocate %" PRIu32 " sort entries",
				 h->t.n + 1);
	if (rc) {
		if (fresh)
			set_free(h);
		return rc;
	}
	mm_strtab_put(&h->t, v->s, (uint32_t)v->len, hash, &created)->val = 1;
	if (refs)
		set_prune(h, m->p.max_size, refs);
	free(refs);
	set_put(st, h);
	return 0;
}

static int set_merge(const mm_monoid_t *m, void *dst, const void *src)
{
	mm_set_t *d = set_get(dst), *s = set_get(src);
	mm_set_ref_t *refs = NULL;
	int fresh = d == NULL, rc;

	/* A set united with itself is itself. */
	if (s == NULL || d == s)
		return 0;
	if (fresh && (d = set_new()) == NULL)
		return MM_ENOMEM;
	rc = mm_strtab_reserve(&d->t, s->t.n, s->t.klen);
	if (rc == 0 && (size_t)d->t.n + s->t.n > set_limit(m->p.max_size) &&
	    (refs = malloc(((size_t)d->t.n + s->t.n) * sizeof(*refs))) == NULL)
		rc = mm_diag_set(MM_ENOMEM, "set: cannot allocate %zu sort entries",
				 (size_t)d->t.n + s->t.n);
	if (rc) {
		if (fresh)
			set_free(d);
		return rc;
	}
	for (uint32_t i = 0; i < s->t.n; i++) {
		const mm_strtab_entry_t *e = &s->t.e[i];
		const uint8_t *key = mm_strtab_key(&s->t, e);
		int created;

		if (!set_beyond_cutoff(d, key, e->len))
			mm_strtab_put(&d->t, key, e->len, e->hash, &created)->val = 1;
	}
	d->truncated |= s->truncated;
	if (refs && d->t.n > set_limit(m->p.max_size))
		set_prune(d, m->p.max_size, refs);
	free(refs);
	set_put(dst, d);
	return 0;
}

/* The canonical view: *refs (malloc()ed, NULL when empty) holds the sorted
 * members of which the first *n are kept; *truncated is the flag. */
static int set_view(const mm_monoid_t *m, const mm_set_t *h, mm_set_ref_t **refs, uint32_t *n,
		    int *truncated)
{
	*refs = NULL;
	*n = 0;
	*truncated = h ? h->truncated : 0;
	if (h == NULL || h->t.n == 0)
		return 0;
	*refs = malloc((size_t)h->t.n * sizeof(**refs));
	if (*refs == NULL)
		return mm_diag_set(MM_ENOMEM, "set: cannot allocate %" PRIu32 " sort entries",
				   h->t.n);
	set_sort(&h->t, *refs);
	*n = h->t.n;
	if (*n > m->p.max_size) {
		*n = m->p.max_size;
		*truncated = 1;
	}
	return 0;
}

static int set_encode(const mm_monoid_t *m, const void *st, mm_buf_t *out)
{
	mm_set_ref_t *refs;
	size_t size = MM_SET_HEADER;
	uint32_t i, n;
	int truncated, rc;
	uint8_t *p;

	rc = set_view(m, set_get(st), &refs, &n, &truncated);
	if (rc)
		return rc;
	for (i = 0; i < n; i++)
		size += 4 + (size_t)refs[i].len;
	rc = mm_buf_reserve(out, size);
	if (rc)
		goto out;
	p = out->p + out->len;
	memcpy(p, MM_SET_MAGIC, 4);
	p[4] = MM_SET_VERSION;
	p[5] = truncated ? MM_SET_TRUNCATED : 0;
	mm_set_u32le(p + 6, n);
	p += MM_SET_HEADER;
	for (i = 0; i < n; i++) {
		mm_set_u32le(p, refs[i].len);
		if (refs[i].len)
			memcpy(p + 4, refs[i].key, refs[i].len);
		p += 4 + refs[i].len;
	}
	out->len += size;
out:
	free(refs);
	return rc;
}

static int set_decode(const mm_monoid_t *m, void *st, const uint8_t *p, size_t n)
{
	mm_set_t *h;
	const uint8_t *prev = NULL;
	uint32_t count, i, prev_len = 0;
	size_t off = MM_SET_HEADER;
	int rc;

	set_destroy(m, st);
	if (n < MM_SET_HEADER)
		return mm_diag_set(MM_ECORRUPT, "set: truncated header (%zu bytes)", n);
	if (memcmp(p, MM_SET_MAGIC, 4) != 0)
		return mm_diag_set(MM_ECORRUPT, "set: bad magic");
	if (p[4] != MM_SET_VERSION)
		return mm_diag_set(MM_ECORRUPT, "set: unsupported version %u", p[4]);
	if (p[5] & ~MM_SET_TRUNCATED)
		return mm_diag_set(MM_ECORRUPT, "set: unknown flags 0x%02x", p[5]);
	count = mm_get_u32le(p + 6);
	if (count > m->p.max_size)
		return mm_diag_set(MM_ECORRUPT, "set: %" PRIu32 " members exceed max_size=%" PRIu32,
				   count, m->p.max_size);
	if ((p[5] & MM_SET_TRUNCATED) && count != m->p.max_size)
		return mm_diag_set(MM_ECORRUPT, "set: truncated set of %" PRIu32
				   " members, expected max_size=%" PRIu32 " (max_size changed?)",
				   count, m->p.max_size);
	if (count == 0) {
		if (n != MM_SET_HEADER)
			return mm_diag_set(MM_ECORRUPT, "set: %zu trailing bytes", n - MM_SET_HEADER);
		return 0;
	}

	h = set_new();
	if (h == NULL)
		return MM_ENOMEM;
	rc = mm_strtab_reserve(&h->t, count, n - MM_SET_HEADER);
	if (rc)
		goto fail;
	for (i = 0; i < count; i++) {
		const uint8_t *key;
		uint32_t len;
		int created;

		if (n - off < 4) {
			rc = mm_diag_set(MM_ECORRUPT, "set: member %" PRIu32 " truncated", i);
			goto fail;
		}
		len = mm_get_u32le(p + off);
		off += 4;
		if (len > n - off) {
			rc = mm_diag_set(MM_ECORRUPT, "set: member %" PRIu32 " length %" PRIu32
					 " exceeds the input", i, len);
			goto fail;
		}
		key = p + off;
		off += len;
		/* Strictly increasing order also rules out duplicates. */
		if (prev && mm_strtab_cmp(prev, prev_len, key, len) >= 0) {
			rc = mm_diag_set(MM_ECORRUPT, "set: member %" PRIu32 " out of order", i);
			goto fail;
		}
		mm_strtab_put(&h->t, key, len, mm_strtab_hash(key, len), &created)->val = 1;
		prev = key;
		prev_len = len;
	}
	if (off != n) {
		rc = mm_diag_set(MM_ECORRUPT, "set: %zu trailing bytes", n - off);
		goto fail;
	}
	if (p[5] & MM_SET_TRUNCATED) {
		h->truncated = 1;
		h->cutoff = count - 1;
	}
	set_put(st, h);
	return 0;

fail:
	set_free(h);
	return rc;
}

static int set_to_json(const mm_monoid_t *m, const void *st, mm_buf_t *out)
{
	mm_set_ref_t *refs;
	size_t start = out->len;
	uint32_t i, n;
	int truncated, rc;

	rc = set_view(m, set_get(st), &refs, &n, &truncated);
	if (rc)
		return rc;
	rc = mm_buf_printf(out, "{\"size\":%" PRIu32 ",\"truncated\":%s,\"members\":[", n,
			   truncated ? "true" : "false");
	for (i = 0; rc == 0 && i < n; i++) {
		if (i)
			rc = mm_buf_put_u8(out, ',');
		if (rc == 0)
			rc = mm_json_quote((const char *)refs[i].key, refs[i].len, out);
	}
	if (rc == 0)
		rc = mm_buf_append(out, "]}", 2);
	if (rc)
		out->len = start;
	free(refs);
	return rc;
}

static int set_is_identity(const mm_monoid_t *m, const void *st)
{
	const mm_set_t *h = set_get(st);

	return h == NULL || (h->t.n == 0 && !h->truncated);
}

const mm_monoid_vtable_t mm_monoid_set_vtable = {
	.name = "set",
	.value_kind = MM_VK_STRING,
	.check = set_check,
	.init = set_init,
	.destroy = set_destroy,
	.add = set_add,
	.merge = set_merge,
	.encode = set_encode,
	.decode = set_decode,
	.to_json = set_to_json,
	.is_identity = set_is_identity,
};
