/*
 * test_lmdb_sort.c: the embedded store's sort of a flush's deltas
 * (engine/store/lmdb_sort.c) gives the order of the state keys, the one a
 * plain comparison sort gives: namespace name by length then bytes (names
 * equal in content but at different addresses included), identifier by
 * length then bytes (zero bytes, long identifiers sharing their first 12
 * bytes or more), bucket; on flushes below and above the radix sort's
 * threshold and with more namespace names than it ranks. Random inputs with
 * a fixed seed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/lmdb_impl.h"
#include "unit.h"

static uint64_t seed = 42;

static uint32_t rnd(void)
{
	seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
	return (uint32_t)(seed >> 33);
}

/* The order written out from its definition, for the reference sort. */
static int ref_cmp(const void *x, const void *y)
{
	const mm_delta_t *a = x, *b = y;
	size_t al = strlen(a->ns->name), bl = strlen(b->ns->name);
	int c;

	if (al != bl)
		return al < bl ? -1 : 1;
	if ((c = memcmp(a->ns->name, b->ns->name, al)) != 0)
		return c;
	if (a->key.len != b->key.len)
		return a->key.len < b->key.len ? -1 : 1;
	if ((c = memcmp(a->key.entity, b->key.entity, a->key.len)) != 0)
		return c;
	return a->key.bucket < b->key.bucket ? -1 : a->key.bucket > b->key.bucket;
}

#define MAX_NS 80
#define MAX_N 6000

static char names[MAX_NS][16];
static mm_ns_t ns[MAX_NS];
static char keys[MAX_N][40];

/* n deltas over nns namespaces (names repeat in content every `distinct`),
 * identifiers of `maxlen` bytes at most from an alphabet of `alpha` bytes
 * after a shared prefix of `prefix` bytes, buckets 1..nbuckets; the same
 * (namespace, identifier, bucket) at most once, as a flush has it. Returns
 * 1 when the sort gives the reference order. */
static int sorts_like_qsort(size_t n, int nns, int distinct, size_t maxlen, int alpha,
			    size_t prefix, int nbuckets)
{
	mm_delta_t *d = calloc(n, sizeof(*d)), *ref = calloc(n, sizeof(*d));
	size_t i, m = 0;
	int ok = 1;

	for (int k = 0; k < nns; k++) {
		snprintf(names[k], sizeof(names[k]), "%.*s", 1 + (k % distinct) % 7, "ns_abcdefgh");
		names[k][0] = (char)('a' + (k % distinct) / 7);
		ns[k].name = names[k];
	}
	while (m < n) {
		mm_delta_t c;
		size_t len = 1 + rnd() % maxlen;

		for (i = 0; i < len; i++)
			keys[m][i] = i < prefix ? 'p' : (char)(rnd() % (unsigned)alpha);
		c.ns = &ns[rnd() % (unsigned)nns];
		c.key.entity = keys[m];
		c.key.len = len;
		c.key.bucket = 1 + (int64_t)(rnd() % (unsigned)nbuckets);
		c.expire_ms = (int64_t)m;
		c.state = NULL;
		for (i = 0; i < m && ref_cmp(&d[i], &c) != 0; i++)
			;
		if (i < m)
			continue;
		d[m++] = c;
	}
	memcpy(ref, d, n * sizeof(*d));
	qsort(ref, n, sizeof(*ref), ref_cmp);
	mm_lmdb_sort_deltas(d, n);
	for (i = 0; i < n && ok; i++)
		if (ref_cmp(&d[i], &ref[i]) != 0 || d[i].expire_ms != ref[i].expire_ms) {
			printf("#   n %zu: position %zu differs\n", n, i);
			ok = 0;
		}
	free(d);
	free(ref);
	return ok;
}

/* One pipeline, short identifiers: the radix sort alone. */
TEST(one_namespace)
{
	CHECK(sorts_like_qsort(0, 1, 1, 6, 10, 0, 1));
	CHECK(sorts_like_qsort(1, 1, 1, 6, 10, 0, 1));
	CHECK(sorts_like_qsort(63, 1, 1, 6, 10, 1, 1));
	CHECK(sorts_like_qsort(64, 1, 1, 6, 10, 1, 1));
	CHECK(sorts_like_qsort(MAX_N, 1, 1, 6, 10, 1, 1));
	/* Every byte value, zero included, and lengths up to 12. */
	CHECK(sorts_like_qsort(2000, 1, 1, 12, 256, 0, 1));
}

/* Ties of the sort key ordered by the full comparison: one identifier in
 * several buckets, identifiers past 12 bytes sharing 12 or more. */
TEST(ties)
{
	CHECK(sorts_like_qsort(3000, 1, 1, 3, 6, 0, 40));
	CHECK(sorts_like_qsort(3000, 1, 1, 20, 3, 12, 2));
	CHECK(sorts_like_qsort(3000, 1, 1, 40, 2, 16, 3));
	/* Every key the same but for its bucket: one run. */
	CHECK(sorts_like_qsort(500, 1, 1, 1, 1, 1, 1000));
}

/* Several pipelines in one flush, names equal in content at different
 * addresses, and more names than the radix sort ranks (qsort then). */
TEST(namespaces)
{
	CHECK(sorts_like_qsort(4000, 5, 5, 8, 16, 0, 2));
	CHECK(sorts_like_qsort(4000, 12, 4, 8, 16, 0, 2));
	CHECK(sorts_like_qsort(4000, MAX_NS, MAX_NS, 8, 16, 0, 2));
}

int main(void)
{
	RUN(one_namespace);
	RUN(ties);
	RUN(namespaces);
	UNIT_DONE();
}
