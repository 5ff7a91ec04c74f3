/*
 * topk.c: the "topk" monoid, heavy hitters with a mergeable Misra-Gries
 * summary (Misra and Gries, "Finding repeated elements", 1982; Agarwal,
 * Cormode, Huang, Phillips, Wei and Yi, "Mergeable summaries", PODS 2012).
 *
 * A sketch is a table of (item, counter) pairs plus n, the total weight added,
 * and err, the sum of every threshold ever subtracted. Reducing to a capacity
 * C >= K finds c, the (C+1)-th largest counter, subtracts c from every counter
 * and drops those left at zero (at most C survive), then adds c to err. Each
 * reduction removes at least (C+1)*c >= (K+1)*c of weight, and merging adds
 * counters, n and err, so for every state
 *
 *     sum(counters) + (K+1) * err <= n,   hence   err <= n / (K+1),
 *
 * and for every item, with lower = its counter (0 when absent),
 *
 *     lower <= true count <= lower + err = upper.
 *
 * So any item whose true count exceeds n/(K+1) is present. Decoding checks the
 * first inequality, which catches most inconsistent inputs.
 *
 * In memory a state stays exact until it holds more than T = max(8K, 1024)
 * distinct items, so a runtime delta with few distinct items is exact. Past T
 * it reduces with C = T/2, which leaves room for T/2 new items before the
 * next reduction and so keeps adds amortised O(1). The canonical value of a
 * state is that table reduced with C = K: encode() and to_json() present it
 * without modifying the state, so the stored bytes hold at most K items.
 *
 * Laws: merge is commutative (it is a function of the summed table), and
 * add(x, v) equals merge(x, {v}). It is associative exactly as long as no
 * merge reduces in memory, i.e. while the merged tables together hold at most
 * T distinct items; reductions at encode time do not matter because they
 * apply to the same exact table. Past T the grouping can change which small
 * counters survive (Misra-Gries merging is only approximately associative),
 * but the bounds above hold for every grouping. An in-memory state can be
 * more precise than its encoding, so merging it differs from merging its
 * decoded bytes once encode has had to reduce. add() and merge() return
 * MM_ERANGE, leaving the state unchanged, rather than let n pass 2^64 - 1.
 *
 * Byte format, version 1 (integers little-endian):
 *
 *     offset size
 *     0      4    magic "MMTK"
 *     4      1    version (1)
 *     5      3    reserved, zero
 *     8      4    u32 K, which must equal the monoid's params.k
 *     12     8    u64 n
 *     20     8    u64 err
 *     28     4    u32 item count, at most K
 *     32     ...  items: u64 counter (> 0), u32 length, the item's bytes
 *
 * Items are distinct and sorted by counter descending, then by bytes
 * ascending (memcmp order, a proper prefix first); decode() rejects any other
 * order, so every accepted encoding is the canonical one.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../codec/json.h"
#include "../lib/error.h"
#include "monoid.h"
#include "strtab.h"

#define MM_TOPK_MAGIC "MMTK"
#define MM_TOPK_VERSION 1
#define MM_TOPK_HEADER 32
#define MM_TOPK_ITEM_HEADER 12
#define MM_TOPK_DEFAULT_K 32
#define MM_TOPK_MAX_K 100000

typedef struct mm_topk {
	uint64_t n;
	uint64_t err;
	mm_strtab_t t; /* val = counter */
} mm_topk_t;

/* One item of the canonical (reduced to K, sorted) view of a state. */
typedef struct mm_topk_item {
	uint64_t count;
	const uint8_t *key;
	uint32_t len;
} mm_topk_item_t;

/* The inline state holds only the heap pointer (NULL = identity); memcpy
 * keeps the access independent of how the caller aligned its storage. */
static mm_topk_t *topk_get(const void *st)
{
	mm_topk_t *h;

	memcpy(&h, st, sizeof(h));
	return h;
}

static void topk_set(void *st, mm_topk_t *h)
{
	memcpy(st, &h, sizeof(h));
}

/* The number of distinct items a state may hold in memory. */
static uint32_t topk_limit(uint32_t k)
{
	return k < 128 ? 1024 : 8 * k;
}

/* Counters below this are counted exactly by topk_threshold's histogram. */
#define MM_TOPK_SMALL 64

/* The (c+1)-th largest counter of t, which must hold more than c entries:
 * the largest x with more than c counters >= x. Most counters of a table
 * being reduced are small (an item enters with 1 and every reduction takes
 * the threshold off), so one pass counts the values below MM_TOPK_SMALL
 * in a histogram, which answers whenever at most c counters are larger;
 * otherwise bisection over the larger values finds it, without allocating
 * (reductions never allocate). */
static uint64_t topk_threshold(const mm_strtab_t *t, uint32_t c)
{
	uint32_t small[MM_TOPK_SMALL] = {0}, ge = 0;
	uint64_t lo, hi = 0;
	uint32_t i;

	for (i = 0; i < t->n; i++) {
		uint64_t v = t->e[i].val;

		if (v < MM_TOPK_SMALL)
			small[v]++;
		else
			ge++;
		if (v > hi)
			hi = v;
	}
	if (ge <= c) {
		/* ge counts the counters >= x as x goes down. */
		for (lo = MM_TOPK_SMALL - 1; lo > 1; lo--) {
			ge += small[lo];
			if (ge > c)
				return lo;
		}
		return 1;
	}
	lo = MM_TOPK_SMALL;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo + 1) / 2;

		ge = 0;
		for (i = 0; i < t->n; i++)
			ge += t->e[i].val >= mid;
		if (ge > c)
			lo = mid;
		else
			hi = mid - 1;
	}
	return lo;
}

/* Reduces h, which holds more than c items, to at most c (see the top of
 * the file). */
static void topk_reduce(mm_topk_t *h, uint32_t c)
{
	uint64_t thr = topk_threshold(&h->t, c);

	/* Every counter loses thr; those at or below it go. */
	mm_strtab_compact(&h->t, thr);
	h->err += thr;
}

static int topk_item_cmp(const void *a, const void *b)
{
	const mm_topk_item_t *x = a, *y = b;

	if (x->count != y->count)
		return x->count > y->count ? -1 : 1;
	return mm_strtab_cmp(x->key, x->len, y->key, y->len);
}

/* Builds the canonical view of h (which may be NULL): the items left after a
 * reduction to K, sorted, and the error including that reduction. *items is
 * malloc()ed (NULL when there are none) and points into h's arena. */
static int topk_view(const mm_monoid_t *m, const mm_topk_t *h, mm_topk_item_t **items,
		     uint32_t *nitems, uint64_t *err)
{
	mm_topk_item_t *v;
	uint64_t thr = 0;
	uint32_t i, n = 0;

	*items = NULL;
	*nitems = 0;
	*err = h ? h->err : 0;
	if (h == NULL || h->t.n == 0)
		return 0;
	if (h->t.n > m->p.k)
		thr = topk_threshold(&h->t, m->p.k);
	v = malloc((h->t.n < m->p.k ? h->t.n : m->p.k) * sizeof(*v));
	if (v == NULL)
		return mm_diag_set(MM_ENOMEM, "topk: cannot allocate %" PRIu32 " items", m->p.k);
	for (i = 0; i < h->t.n; i++) {
		const mm_strtab_entry_t *e = &h->t.e[i];

		if (e->val <= thr)
			continue;
		v[n].count = e->val - thr;
		v[n].key = mm_strtab_key(&h->t, e);
		v[n].len = e->len;
		n++;
	}
	qsort(v, n, sizeof(*v), topk_item_cmp);
	*items = v;
	*nitems = n;
	*err += thr;
	return 0;
}

static int topk_check(mm_monoid_params_t *p)
{
	if (p->k == 0)
		p->k = MM_TOPK_DEFAULT_K;
	if (p->k > MM_TOPK_MAX_K)
		return mm_diag_set(MM_EINVAL, "topk: k must be between 1 and %d, got %" PRIu32,
				   MM_TOPK_MAX_K, p->k);
	return 0;
}

static void topk_init(const mm_monoid_t *m, void *st)
{
	memset(st, 0, MM_STATE_MAX);
}

static void topk_destroy(const mm_monoid_t *m, void *st)
{
	mm_topk_t *h = topk_get(st);

	if (h) {
		mm_strtab_free(&h->t);
		free(h);
	}
	topk_set(st, NULL);
}

static int topk_add(const mm_monoid_t *m, void *st, const mm_value_t *v)
{
	mm_topk_t *h = topk_get(st);
	mm_strtab_entry_t *e;
	uint64_t hash;
	uint32_t slot = 0;
	int rc;

	if (v->type != MM_VAL_STRING)
		return mm_diag_set(MM_ETYPE, "topk: expects a string value");
	if (v->len > UINT32_MAX)
		return mm_diag_set(MM_ERANGE, "topk: item of %zu bytes is too long", v->len);
	if (h && h->n == UINT64_MAX)
		return mm_diag_set(MM_ERANGE, "topk: total count overflows");
	hash = mm_strtab_hash(v->s, v->len);
	e = h ? mm_strtab_find_slot(&h->t, v->s, (uint32_t)v->len, hash, &slot) : NULL;
	if (e == NULL) {
		int fresh = h == NULL;
		uint32_t mask = fresh ? 0 : h->t.mask;

		if (fresh && (h = calloc(1, sizeof(*h))) == NULL)
			return mm_diag_set(MM_ENOMEM, "topk: cannot allocate a sketch");
		rc = mm_strtab_reserve(&h->t, 1, v->len);
		if (rc) {
			if (fresh)
				free(h);
			return rc;
		}
		/* The find just missed, and a reserve moves no key. The slot
		 * its probe ended at holds unless the reserve rebuilt the
		 * index, which always changes its size. */
		if (!fresh && h->t.mask == mask && mask != 0)
			e = mm_strtab_insert_at(&h->t, slot, v->s, (uint32_t)v->len, hash);
		else
			e = mm_strtab_insert(&h->t, v->s, (uint32_t)v->len, hash);
	}
	e->val++;
	h->n++;
	if (h->t.n > topk_limit(m->p.k))
		topk_reduce(h, topk_limit(m->p.k) / 2);
	topk_set(st, h);
	return 0;
}

static int topk_merge(const mm_monoid_t *m, void *dst, const void *src)
{
	mm_topk_t *d = topk_get(dst), *s = topk_get(src);
	uint64_t sn, serr;
	uint32_t i, snitems;
	int fresh = 0, rc;

	if (s == NULL || s->n == 0)
		return 0;
	/* Read src before dst changes: they may be the same state. */
	sn = s->n;
	serr = s->err;
	snitems = s->t.n;
	if (d && d->n > UINT64_MAX - sn)
		return mm_diag_set(MM_ERANGE, "topk: total count overflows");
	if (d == NULL) {
		d = calloc(1, sizeof(*d));
		if (d == NULL)
			return mm_diag_set(MM_ENOMEM, "topk: cannot allocate a sketch");
		fresh = 1;
	}
	/* Every counter is at most n, so once n cannot overflow no counter can,
	 * and after this reserve nothing below can fail. */
	rc = mm_strtab_reserve(&d->t, snitems, s->t.klen);
	if (rc) {
		if (fresh)
			free(d);
		return rc;
	}
	for (i = 0; i < snitems; i++) {
		const mm_strtab_entry_t *se = &s->t.e[i];
		uint64_t add = se->val;
		mm_strtab_entry_t *de;
		int created;

		de = mm_strtab_put(&d->t, mm_strtab_key(&s->t, se), se->len, se->hash, &created);
		de->val += add;
	}
	d->n += sn;
	d->err += serr;
	if (d->t.n > topk_limit(m->p.k))
		topk_reduce(d, topk_limit(m->p.k) / 2);
	topk_set(dst, d);
	return 0;
}

static int topk_encode(const mm_monoid_t *m, const void *st, mm_buf_t *out)
{
	const mm_topk_t *h = topk_get(st);
	mm_topk_item_t *items;
	uint32_t i, nitems;
	uint64_t err;
	size_t size = MM_TOPK_HEADER;
	uint8_t *p;
	int rc;

	rc = topk_view(m, h, &items, &nitems, &err);
	if (rc)
		return rc;
	for (i = 0; i < nitems; i++)
		size += MM_TOPK_ITEM_HEADER + items[i].len;
	rc = mm_buf_reserve(out, size);
	if (rc)
		goto out;

	p = out->p + out->len;
	memcpy(p, MM_TOPK_MAGIC, 4);
	p[4] = MM_TOPK_VERSION;
	p[5] = p[6] = p[7] = 0;
	mm_set_u32le(p + 8, m->p.k);
	mm_set_u64le(p + 12, h ? h->n : 0);
	mm_set_u64le(p + 20, err);
	mm_set_u32le(p + 28, nitems);
	p += MM_TOPK_HEADER;
	for (i = 0; i < nitems; i++) {
		mm_set_u64le(p, items[i].count);
		mm_set_u32le(p + 8, items[i].len);
		if (items[i].len)
			memcpy(p + MM_TOPK_ITEM_HEADER, items[i].key, items[i].len);
		p += MM_TOPK_ITEM_HEADER + items[i].len;
	}
	out->len += size;
out:
	free(items);
	return rc;
}

static int topk_decode(const mm_monoid_t *m, void *st, const uint8_t *p, size_t n)
{
	mm_topk_t *h = NULL;
	const uint8_t *prev = NULL;
	uint64_t total, err, sum = 0, prev_count = 0, bound;
	uint32_t k, count, i, prev_len = 0;
	size_t off = MM_TOPK_HEADER;
	int rc;

	topk_destroy(m, st);
	if (n < MM_TOPK_HEADER)
		return mm_diag_set(MM_ECORRUPT, "topk: truncated header (%zu bytes)", n);
	if (memcmp(p, MM_TOPK_MAGIC, 4) != 0)
		return mm_diag_set(MM_ECORRUPT, "topk: bad magic");
	if (p[4] != MM_TOPK_VERSION)
		return mm_diag_set(MM_ECORRUPT, "topk: unsupported version %u", p[4]);
	if (p[5] | p[6] | p[7])
		return mm_diag_set(MM_ECORRUPT, "topk: reserved bytes are not zero");
	k = mm_get_u32le(p + 8);
	total = mm_get_u64le(p + 12);
	err = mm_get_u64le(p + 20);
	count = mm_get_u32le(p + 28);
	if (k != m->p.k)
		return mm_diag_set(MM_ECORRUPT, "topk: k mismatch (encoded k=%" PRIu32
				   ", pipeline k=%" PRIu32 ")", k, m->p.k);
	if (count > k)
		return mm_diag_set(MM_ECORRUPT, "topk: %" PRIu32 " items exceed k=%" PRIu32,
				   count, k);
	if (total == 0 && count == 0 && err == 0) {
		if (n != MM_TOPK_HEADER)
			return mm_diag_set(MM_ECORRUPT, "topk: %zu trailing bytes",
					   n - MM_TOPK_HEADER);
		return 0;
	}

	h = calloc(1, sizeof(*h));
	if (h == NULL)
		return mm_diag_set(MM_ENOMEM, "topk: cannot allocate a sketch");
	h->n = total;
	h->err = err;
	rc = mm_strtab_reserve(&h->t, count, n - MM_TOPK_HEADER);
	if (rc)
		goto fail;
	for (i = 0; i < count; i++) {
		mm_strtab_entry_t *e;
		const uint8_t *key;
		uint64_t c;
		uint32_t len;
		int created;

		if (n - off < MM_TOPK_ITEM_HEADER) {
			rc = mm_diag_set(MM_ECORRUPT, "topk: item %" PRIu32 " truncated", i);
			goto fail;
		}
		c = mm_get_u64le(p + off);
		len = mm_get_u32le(p + off + 8);
		off += MM_TOPK_ITEM_HEADER;
		if (len > n - off) {
			rc = mm_diag_set(MM_ECORRUPT, "topk: item %" PRIu32 " length %" PRIu32
					 " exceeds the input", i, len);
			goto fail;
		}
		key = p + off;
		off += len;
		if (c == 0) {
			rc = mm_diag_set(MM_ECORRUPT, "topk: item %" PRIu32 " has a zero count", i);
			goto fail;
		}
		if (prev && (c > prev_count ||
			     (c == prev_count && mm_strtab_cmp(prev, prev_len, key, len) >= 0))) {
			rc = mm_diag_set(MM_ECORRUPT, "topk: item %" PRIu32 " out of order", i);
			goto fail;
		}
		if (__builtin_add_overflow(sum, c, &sum)) {
			rc = mm_diag_set(MM_ECORRUPT, "topk: counts overflow");
			goto fail;
		}
		e = mm_strtab_put(&h->t, key, len, mm_strtab_hash(key, len), &created);
		if (!created) {
			rc = mm_diag_set(MM_ECORRUPT, "topk: item %" PRIu32 " is a duplicate", i);
			goto fail;
		}
		e->val = c;
		prev = key;
		prev_len = len;
		prev_count = c;
	}
	if (off != n) {
		rc = mm_diag_set(MM_ECORRUPT, "topk: %zu trailing bytes", n - off);
		goto fail;
	}
	/* sum + (K+1) * err <= n holds for every state this file produces. */
	if (__builtin_mul_overflow(err, (uint64_t)k + 1, &bound) ||
	    __builtin_add_overflow(bound, sum, &bound) || bound > total) {
		rc = mm_diag_set(MM_ECORRUPT, "topk: counts and error inconsistent with n=%" PRIu64,
				 total);
		goto fail;
	}
	topk_set(st, h);
	return 0;

fail:
	mm_strtab_free(&h->t);
	free(h);
	return rc;
}

static int topk_to_json(const mm_monoid_t *m, const void *st, mm_buf_t *out)
{
	const mm_topk_t *h = topk_get(st);
	mm_topk_item_t *items;
	size_t start = out->len;
	uint32_t i, nitems;
	uint64_t err;
	int rc;

	rc = topk_view(m, h, &items, &nitems, &err);
	if (rc)
		return rc;
	rc = mm_buf_printf(out, "{\"k\":%" PRIu32 ",\"n\":%" PRIu64 ",\"error\":%" PRIu64
			   ",\"items\":[", m->p.k, h ? h->n : 0, err);
	for (i = 0; rc == 0 && i < nitems; i++) {
		rc = mm_buf_printf(out, "%s{\"item\":", i ? "," : "");
		if (rc == 0)
			rc = mm_json_quote((const char *)items[i].key, items[i].len, out);
		if (rc == 0)
			rc = mm_buf_printf(out, ",\"count\":%" PRIu64 ",\"lower\":%" PRIu64
					   ",\"upper\":%" PRIu64 "}", items[i].count,
					   items[i].count, items[i].count + err);
	}
	if (rc == 0)
		rc = mm_buf_append(out, "]}", 2);
	if (rc)
		out->len = start;
	free(items);
	return rc;
}

static int topk_is_identity(const mm_monoid_t *m, const void *st)
{
	const mm_topk_t *h = topk_get(st);

	return h == NULL || h->n == 0;
}

const mm_monoid_vtable_t mm_monoid_topk_vtable = {
	.name = "topk",
	.value_kind = MM_VK_STRING,
	.check = topk_check,
	.init = topk_init,
	.destroy = topk_destroy,
	.add = topk_add,
	.merge = topk_merge,
	.encode = topk_encode,
	.decode = topk_decode,
	.to_json = topk_to_json,
	.is_identity = topk_is_identity,
};
