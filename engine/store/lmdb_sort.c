/*
 * lmdb_sort.c: a flush's deltas put in the order of their state keys.
 *
 * Design. apply() walks its deltas with one cursor, so it sorts them first,
 * in the order of the state database's keys: namespace name (length, then
 * bytes), identifier (length, then bytes), bucket. A comparison sort costs
 * about log2(n) calls of the comparison per delta (glibc's merge sort and
 * its callback: some 500 instructions a delta for a flush of 6 000), which
 * made the sort page_views' largest flush cost after LMDB itself.
 *
 * So each delta gets a 16-byte sort key that orders as the comparison does
 * as far as it goes: the rank of its namespace name among the flush's names
 * (16 bits), its identifier's length (16 bits) and the identifier's first 12
 * bytes, big-endian, zero padded. The keys are sorted by an LSD radix sort,
 * one counting pass per byte position where the keys differ (a byte that is
 * the same in every key, such as the rank of a flush of one pipeline, the
 * high byte of the length or the padding of short identifiers, is found by
 * OR-ing and AND-ing the keys and costs nothing). Deltas with equal sort
 * keys (one identifier in several buckets, or identifiers longer than 12
 * bytes that share their first 12) are then ordered among themselves by the
 * full comparison. The deltas are moved to their places in the array along
 * the permutation's cycles, without a copy of the array.
 *
 * A flush of fewer than LMDB_SORT_RADIX_MIN deltas, more than LMDB_SORT_RANKS
 * namespace names, or for which the scratch memory cannot be had is sorted
 * by qsort with the same comparison: the result is the same order.
 *
 * Pool thread (the apply's); no shared state.
 */
#define _GNU_SOURCE /* qsort_r */
#include <stdlib.h>

#include "lmdb_impl.h"

#define LMDB_SORT_RADIX_MIN 64
#define LMDB_SORT_RANKS 64

/* The order of two deltas of one namespace name: identifier length and
 * bytes, then bucket. */
static inline int cmp_delta_in_ns(const mm_delta_t *a, const mm_delta_t *b)
{
	int c;

	if (a->key.len != b->key.len)
		return a->key.len < b->key.len ? -1 : 1;
	c = mm_key_cmp(a->key.entity, b->key.entity, a->key.len);
	if (c == 0 && a->key.bucket != b->key.bucket)
		c = a->key.bucket < b->key.bucket ? -1 : 1;
	return c;
}

static __attribute__((noinline)) int cmp_delta_names(const mm_delta_t *a, const mm_delta_t *b)
{
	int c = mm_lmdb_cmp_names(a->ns->name, b->ns->name);

	return c ? c : cmp_delta_in_ns(a, b);
}

/* The full comparison. Deltas of one namespace (a flush's usual case)
 * compare without a call but for memcmp on keys past 16 bytes. */
static int cmp_delta(const void *x, const void *y)
{
	const mm_delta_t *a = x, *b = y;

	if (a->ns->name != b->ns->name)
		return cmp_delta_names(a, b);
	return cmp_delta_in_ns(a, b);
}

/* cmp_delta of the deltas two positions name (the ties' sort). */
static int cmp_index(const void *x, const void *y, void *deltas)
{
	const mm_delta_t *d = deltas;

	return cmp_delta(&d[*(const uint32_t *)x], &d[*(const uint32_t *)y]);
}

typedef struct sort_item {
	uint64_t hi, lo; /* the sort key */
	uint32_t i;      /* the delta's position before the sort */
} sort_item_t;

/* Byte b (0 the lowest, 15 the highest) of an item's sort key. */
static inline unsigned key_byte(const sort_item_t *s, unsigned b)
{
	return (unsigned)(((b & 8) ? s->hi : s->lo) >> (8 * (b & 7)) & 0xff);
}

/* Ranks the flush's namespace names in their key order (equal names equal
 * ranks) and writes the sort keys. Returns 0, or -1 when there are more
 * than LMDB_SORT_RANKS names. */
static int make_keys(const mm_delta_t *d, size_t n, sort_item_t *s)
{
	const char *names[LMDB_SORT_RANKS], *last = NULL;
	unsigned rank[LMDB_SORT_RANKS], nnames = 0, r = 0, j, k;

	for (size_t i = 0; i < n; i++) {
		if (d[i].ns->name == last)
			continue;
		last = d[i].ns->name;
		for (j = 0; j < nnames && names[j] != last; j++)
			;
		if (j < nnames)
			continue;
		if (nnames == LMDB_SORT_RANKS)
			return -1;
		/* Insertion in name order. */
		for (j = nnames++; j > 0 && mm_lmdb_cmp_names(names[j - 1], last) > 0; j--)
			names[j] = names[j - 1];
		names[j] = last;
	}
	for (j = 0; j < nnames; j++) {
		if (j > 0 && mm_lmdb_cmp_names(names[j - 1], names[j]) != 0)
			r++;
		rank[j] = r;
	}
	last = NULL;
	k = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char b[12] = {0};
		size_t len = d[i].key.len;

		if (d[i].ns->name != last) {
			last = d[i].ns->name;
			for (j = 0; names[j] != last; j++)
				;
			k = rank[j];
		}
		memcpy(b, d[i].key.entity, len < sizeof(b) ? len : sizeof(b));
		s[i].hi = (uint64_t)k << 48 | (uint64_t)len << 32 | mm_load_be32(b);
		s[i].lo = mm_load_be64(b + 4);
		s[i].i = (uint32_t)i;
	}
	return 0;
}

/* Sorts s[0..n) by (hi, lo) into s or tmp; returns the one holding it. */
static sort_item_t *radix_sort(sort_item_t *s, sort_item_t *tmp, size_t n)
{
	static const unsigned nbytes = 16;
	uint64_t or_hi = 0, and_hi = ~0ULL, or_lo = 0, and_lo = ~0ULL;
	uint32_t (*count)[256];
	unsigned vary[16], nvary = 0;

	for (size_t i = 0; i < n; i++) {
		or_hi |= s[i].hi;
		and_hi &= s[i].hi;
		or_lo |= s[i].lo;
		and_lo &= s[i].lo;
	}
	for (unsigned b = 0; b < nbytes; b++) {
		uint64_t diff = b < 8 ? (or_lo ^ and_lo) >> (8 * b) : (or_hi ^ and_hi) >> (8 * (b - 8));

		if (diff & 0xff)
			vary[nvary++] = b;
	}
	if (nvary == 0)
		return s;
	count = calloc(nvary, sizeof(*count));
	if (count == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
		for (unsigned v = 0; v < nvary; v++)
			count[v][key_byte(&s[i], vary[v])]++;
	for (unsigned v = 0; v < nvary; v++) {
		uint32_t at = 0;
		sort_item_t *t;

		for (unsigned c = 0; c < 256; c++) {
			uint32_t m = count[v][c];

			count[v][c] = at;
			at += m;
		}
		for (size_t i = 0; i < n; i++)
			tmp[count[v][key_byte(&s[i], vary[v])]++] = s[i];
		t = s;
		s = tmp;
		tmp = t;
	}
	free(count);
	return s;
}

/* Moves d[s[k].i] to d[k] for every k, following the permutation's cycles
 * (s[k].i is overwritten). */
static void permute(mm_delta_t *d, sort_item_t *s, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		mm_delta_t hold;
		size_t j = k;

		if (s[k].i == k)
			continue;
		hold = d[k];
		while (s[j].i != k) {
			size_t from = s[j].i;

			d[j] = d[from];
			s[j].i = (uint32_t)j;
			j = from;
		}
		d[j] = hold;
		s[j].i = (uint32_t)j;
	}
}

void mm_lmdb_sort_deltas(mm_delta_t *d, size_t n)
{
	sort_item_t *s = NULL, *tmp = NULL, *sorted;

	if (n < LMDB_SORT_RADIX_MIN || n > UINT32_MAX)
		goto fallback;
	s = malloc(n * sizeof(*s));
	tmp = malloc(n * sizeof(*tmp));
	if (s == NULL || tmp == NULL || make_keys(d, n, s) != 0)
		goto fallback;
	if ((sorted = radix_sort(s, tmp, n)) == NULL)
		goto fallback;
	/* Equal sort keys: the full comparison orders the run. */
	for (size_t i = 0, j; i < n; i = j) {
		for (j = i + 1; j < n && sorted[j].hi == sorted[i].hi && sorted[j].lo == sorted[i].lo; j++)
			;
		if (j - i > 1) {
			uint32_t *idx = (uint32_t *)(sorted == s ? tmp : s);

			for (size_t k = i; k < j; k++)
				idx[k - i] = sorted[k].i;
			qsort_r(idx, j - i, sizeof(*idx), cmp_index, d);
			for (size_t k = i; k < j; k++)
				sorted[k].i = idx[k - i];
		}
	}
	permute(d, sorted, n);
	free(s);
	free(tmp);
	return;
fallback:
	free(s);
	free(tmp);
	qsort(d, n, sizeof(*d), cmp_delta);
}
