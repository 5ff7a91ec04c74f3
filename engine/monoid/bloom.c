/*
 * bloom.c: the "bloom" monoid, a Bloom filter (Bloom, "Space/time trade-offs
 * in hash coding with allowable errors", CACM 1970) merged by bitwise OR.
 *
 * Geometry. For an expected number of distinct elements n (params.capacity)
 * and a target false-positive rate p (params.fpr):
 *
 *     m = ceil(-n ln p / (ln 2)^2) bits,   k = max(1, round(m/n ln 2)) hashes,
 *
 * which gives a false-positive rate of about (1 - e^(-kn/m))^k ~= p once n
 * distinct elements are in, lower before, and rising quickly past capacity.
 * There are no false negatives. Both m and k follow from the parameters, so
 * two states of one monoid always have the same geometry and OR is their
 * merge; decode() rejects bytes written with another geometry, and merge()
 * refuses (MM_EINCOMPAT, dst unchanged) a state of another geometry, such as
 * one built by a monoid with other parameters.
 *
 * Hashing (Kirsch and Mitzenmacher, "Less hashing, same performance", 2006):
 * h1 = mm_hash64(x, seed A), h2 = mm_hash64(x, seed B) | 1, and probe i sets
 * bit (h1 + i*h2) mod m, computed incrementally mod m so nothing overflows.
 * Forcing h2 odd keeps it nonzero, which the pending table below relies on.
 *
 * In memory. Most runtime deltas see a handful of elements, so a state starts
 * as a small open-addressing set of (h1, h2) pairs and only builds the bit
 * array once that set would outgrow the array (its byte size). The value is
 * the same either way; encode(), merge() and contains() treat pairs exactly
 * as the bits they would set.
 *
 * Byte format, version 1 (integers little-endian):
 *
 *     offset size
 *     0      4    magic "MMBF"
 *     4      1    version (1)
 *     5      3    reserved, zero
 *     8      8    u64 m, which must equal the monoid's m
 *     16     4    u32 k, which must equal the monoid's k
 *     20     8    u64 adds: elements added, duplicates included (saturating;
 *                 for information, it does not affect membership)
 *     28     ...  the bits, ceil(m/8) bytes; bit i is bit (i % 8) of byte i/8,
 *                 and the unused high bits of the last byte are zero
 *
 * adds is zero exactly when no bit is set (the identity); decode() rejects
 * anything else, so every accepted encoding is canonical.
 */
#include "bloom.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "../lib/hash.h"

#define MM_BLOOM_MAGIC "MMBF"
#define MM_BLOOM_VERSION 1
#define MM_BLOOM_HEADER 28
#define MM_BLOOM_SEED_A 0x8f1bbcdc5a827999ULL
#define MM_BLOOM_SEED_B 0x6ed9eba1ca62c1d6ULL
#define MM_BLOOM_DEFAULT_CAPACITY 100000
#define MM_BLOOM_DEFAULT_FPR 0.01
/* 2^32 bits = 512 MiB per state is already far past any sensible use. */
#define MM_BLOOM_MAX_BITS (UINT64_C(1) << 32)
/* The pending table starts with this many slots. */
#define MM_BLOOM_MIN_SLOTS 8

typedef struct mm_bloom_pair {
	uint64_t h1;
	uint64_t h2; /* odd; 0 marks an empty slot */
} mm_bloom_pair_t;

typedef struct mm_bloom {
	uint64_t m;
	uint32_t k;
	uint64_t adds;
	uint64_t *words;        /* ceil(m/64) words, or NULL while pairs are kept */
	mm_bloom_pair_t *pairs; /* open addressing on h1, at most half full */
	uint32_t npairs;
	uint32_t nslots;        /* power of two, or 0 */
} mm_bloom_t;

static mm_bloom_t *bloom_get(const void *st)
{
	mm_bloom_t *h;

	memcpy(&h, st, sizeof(h));
	return h;
}

static void bloom_put(void *st, mm_bloom_t *h)
{
	memcpy(st, &h, sizeof(h));
}

static uint64_t bloom_nbytes(uint64_t m)
{
	return (m + 7) / 8;
}

static uint64_t bloom_nwords(uint64_t m)
{
	return (m + 63) / 64;
}

/* m and k for checked parameters. Returns MM_EINVAL when m is too large. */
static int bloom_geometry(const mm_monoid_params_t *p, uint64_t *m, uint32_t *k)
{
	double n = (double)p->capacity;
	double bits = ceil(-n * log(p->fpr) / (M_LN2 * M_LN2));
	double hashes;

	if (!(bits <= (double)MM_BLOOM_MAX_BITS))
		return mm_diag_set(MM_EINVAL, "bloom: capacity %" PRIu64 " at fpr %g needs %.0f bits,"
				   " more than the limit of %" PRIu64, p->capacity, p->fpr,
				   bits, MM_BLOOM_MAX_BITS);
	*m = bits < 1 ? 1 : (uint64_t)bits;
	hashes = round((double)*m / n * M_LN2);
	*k = hashes < 1 ? 1 : (uint32_t)hashes;
	return 0;
}

static void bloom_hash(const char *s, size_t len, mm_bloom_pair_t *pr)
{
	pr->h1 = mm_hash64(s, len, MM_BLOOM_SEED_A);
	pr->h2 = mm_hash64(s, len, MM_BLOOM_SEED_B) | 1;
}

/* Sets the k bits of one element. */
static void bloom_set(uint64_t *w, uint64_t m, uint32_t k, const mm_bloom_pair_t *pr)
{
	uint64_t a = pr->h1 % m, b = pr->h2 % m;

	for (uint32_t i = 0; i < k; i++) {
		w[a >> 6] |= UINT64_C(1) << (a & 63);
		a += b;
		if (a >= m)
			a -= m;
	}
}

/* 1 if the k bits of one element are all set. */
static int bloom_test(const uint64_t *w, uint64_t m, uint32_t k, const mm_bloom_pair_t *pr)
{
	uint64_t a = pr->h1 % m, b = pr->h2 % m;

	for (uint32_t i = 0; i < k; i++) {
		if (!(w[a >> 6] & (UINT64_C(1) << (a & 63))))
			return 0;
		a += b;
		if (a >= m)
			a -= m;
	}
	return 1;
}

/* 1 if element pr sets bit x. */
static int bloom_pair_sets(uint64_t m, uint32_t k, const mm_bloom_pair_t *pr, uint64_t x)
{
	uint64_t a = pr->h1 % m, b = pr->h2 % m;

	for (uint32_t i = 0; i < k; i++) {
		if (a == x)
			return 1;
		a += b;
		if (a >= m)
			a -= m;
	}
	return 0;
}

/* The largest pending table whose memory stays within the bit array's. */
static uint32_t bloom_max_slots(uint64_t m)
{
	uint64_t slots = MM_BLOOM_MIN_SLOTS;

	if (bloom_nbytes(m) < MM_BLOOM_MIN_SLOTS * sizeof(mm_bloom_pair_t))
		return 0;
	while (slots * 2 * sizeof(mm_bloom_pair_t) <= bloom_nbytes(m) && slots < (1u << 30))
		slots *= 2;
	return (uint32_t)slots;
}

/* Inserts into a pending table with room; returns 1 if the pair was new. */
static int bloom_pair_insert(mm_bloom_pair_t *slots, uint32_t nslots, const mm_bloom_pair_t *pr)
{
	uint32_t mask = nslots - 1, i = (uint32_t)pr->h1 & mask;

	for (; slots[i].h2 != 0; i = (i + 1) & mask)
		if (slots[i].h1 == pr->h1 && slots[i].h2 == pr->h2)
			return 0;
	slots[i] = *pr;
	return 1;
}

/* 1 if h, a state in the pending form, holds the pair. */
static int bloom_pair_find(const mm_bloom_t *h, const mm_bloom_pair_t *pr)
{
	uint32_t mask = h->nslots - 1, i = (uint32_t)pr->h1 & mask;

	for (; h->pairs[i].h2 != 0; i = (i + 1) & mask)
		if (h->pairs[i].h1 == pr->h1 && h->pairs[i].h2 == pr->h2)
			return 1;
	return 0;
}

/* Returns a calloc()ed bit array holding h's pending pairs, or NULL. */
static uint64_t *bloom_render(const mm_bloom_t *h)
{
	uint64_t *w = calloc(bloom_nwords(h->m), sizeof(*w));

	if (w == NULL)
		return NULL;
	for (uint32_t i = 0; i < h->nslots; i++)
		if (h->pairs[i].h2 != 0)
			bloom_set(w, h->m, h->k, &h->pairs[i]);
	return w;
}

/* Switches h to the bit array. On failure h is unchanged. */
static int bloom_materialise(mm_bloom_t *h)
{
	uint64_t *w;

	if (h->words)
		return 0;
	w = bloom_render(h);
	if (w == NULL)
		return mm_diag_set(MM_ENOMEM, "bloom: cannot allocate %" PRIu64 " bytes",
				   bloom_nwords(h->m) * 8);
	free(h->pairs);
	h->pairs = NULL;
	h->npairs = h->nslots = 0;
	h->words = w;
	return 0;
}

/* Makes room for `extra` more pairs in the pending table, switching to the
 * bit array when the table would outgrow it. On failure h is unchanged. */
static int bloom_reserve(mm_bloom_t *h, uint32_t extra)
{
	uint64_t need = (uint64_t)h->npairs + extra;
	uint32_t max = bloom_max_slots(h->m), nslots = h->nslots ? h->nslots : MM_BLOOM_MIN_SLOTS;
	mm_bloom_pair_t *slots;

	if (h->words || need * 2 <= h->nslots)
		return 0;
	while ((uint64_t)nslots < need * 2 && nslots < max)
		nslots *= 2;
	if (nslots > max || (uint64_t)nslots < need * 2)
		return bloom_materialise(h);
	slots = calloc(nslots, sizeof(*slots));
	if (slots == NULL)
		return mm_diag_set(MM_ENOMEM, "bloom: cannot allocate %" PRIu32 " pairs", nslots);
	for (uint32_t i = 0; i < h->nslots; i++)
		if (h->pairs[i].h2 != 0)
			bloom_pair_insert(slots, nslots, &h->pairs[i]);
	free(h->pairs);
	h->pairs = slots;
	h->nslots = nslots;
	return 0;
}

/* Adds one element to a state that has room for it (see bloom_reserve). */
static void bloom_insert(mm_bloom_t *h, const mm_bloom_pair_t *pr)
{
	if (h->words)
		bloom_set(h->words, h->m, h->k, pr);
	else
		h->npairs += (uint32_t)bloom_pair_insert(h->pairs, h->nslots, pr);
}

static mm_bloom_t *bloom_new(const mm_monoid_t *m)
{
	mm_bloom_t *h = calloc(1, sizeof(*h));

	if (h == NULL) {
		mm_diag_set(MM_ENOMEM, "bloom: cannot allocate a filter");
		return NULL;
	}
	/* check() accepted these parameters, so the geometry is valid. */
	bloom_geometry(&m->p, &h->m, &h->k);
	return h;
}

static void bloom_free(mm_bloom_t *h)
{
	if (h) {
		free(h->words);
		free(h->pairs);
		free(h);
	}
}

static int bloom_check(mm_monoid_params_t *p)
{
	uint64_t m;
	uint32_t k;

	if (p->capacity == 0)
		p->capacity = MM_BLOOM_DEFAULT_CAPACITY;
	if (p->fpr == 0)
		p->fpr = MM_BLOOM_DEFAULT_FPR;
	if (!(p->fpr > 0 && p->fpr < 1))
		return mm_diag_set(MM_EINVAL, "bloom: fpr must be between 0 and 1 (exclusive), got %g",
				   p->fpr);
	return bloom_geometry(p, &m, &k);
}

static void bloom_init(const mm_monoid_t *m, void *st)
{
	memset(st, 0, MM_STATE_MAX);
}

static void bloom_destroy(const mm_monoid_t *m, void *st)
{
	bloom_free(bloom_get(st));
	bloom_put(st, NULL);
}

static int bloom_add(const mm_monoid_t *m, void *st, const mm_value_t *v)
{
	mm_bloom_t *h = bloom_get(st);
	mm_bloom_pair_t pr;
	int fresh = h == NULL, rc;

	if (v->type != MM_VAL_STRING)
		return mm_diag_set(MM_ETYPE, "bloom: expects a string value");
	if (fresh && (h = bloom_new(m)) == NULL)
		return MM_ENOMEM;
	rc = bloom_reserve(h, 1);
	if (rc) {
		if (fresh)
			bloom_free(h);
		return rc;
	}
	bloom_hash(v->s, v->len, &pr);
	bloom_insert(h, &pr);
	if (h->adds < UINT64_MAX)
		h->adds++;
	bloom_put(st, h);
	return 0;
}

static int bloom_merge(const mm_monoid_t *m, void *dst, const void *src)
{
	mm_bloom_t *d = bloom_get(dst), *s = bloom_get(src);
	int fresh = d == NULL, rc;

	if (s == NULL || s->adds == 0)
		return 0;
	if (fresh && (d = bloom_new(m)) == NULL)
		return MM_ENOMEM;
	/* States of another geometry (another capacity or fpr) cannot be ORed:
	 * their bits mean other things, and the bit arrays have other lengths. */
	if (d->m != s->m || d->k != s->k) {
		rc = mm_diag_set(MM_EINCOMPAT,
				 "bloom: cannot merge a filter of m=%" PRIu64 " k=%" PRIu32
				 " into one of m=%" PRIu64 " k=%" PRIu32 " (other capacity or fpr)",
				 s->m, s->k, d->m, d->k);
		if (fresh)
			bloom_free(d);
		return rc;
	}
	if (d != s) {
		/* Everything that can fail happens before d changes. */
		rc = s->words ? bloom_materialise(d) : bloom_reserve(d, s->npairs);
		if (rc) {
			if (fresh)
				bloom_free(d);
			return rc;
		}
		if (s->words) {
			for (uint64_t i = 0; i < bloom_nwords(d->m); i++)
				d->words[i] |= s->words[i];
		} else {
			for (uint32_t i = 0; i < s->nslots; i++)
				if (s->pairs[i].h2 != 0)
					bloom_insert(d, &s->pairs[i]);
		}
	}
	d->adds = d->adds > UINT64_MAX - s->adds ? UINT64_MAX : d->adds + s->adds;
	bloom_put(dst, d);
	return 0;
}

static int bloom_encode(const mm_monoid_t *m, const void *st, mm_buf_t *out)
{
	const mm_bloom_t *h = bloom_get(st);
	uint64_t bm, nbytes, *tmp = NULL;
	const uint64_t *w;
	uint32_t bk;
	uint8_t *p;
	int rc;

	if (h) {
		bm = h->m;
		bk = h->k;
	} else {
		bloom_geometry(&m->p, &bm, &bk);
	}
	nbytes = bloom_nbytes(bm);
	rc = mm_buf_reserve(out, MM_BLOOM_HEADER + nbytes);
	if (rc)
		return rc;
	p = out->p + out->len;
	memcpy(p, MM_BLOOM_MAGIC, 4);
	p[4] = MM_BLOOM_VERSION;
	p[5] = p[6] = p[7] = 0;
	mm_set_u64le(p + 8, bm);
	mm_set_u32le(p + 16, bk);
	mm_set_u64le(p + 20, h ? h->adds : 0);
	p += MM_BLOOM_HEADER;
	if (h && h->words == NULL && (tmp = bloom_render(h)) == NULL)
		return mm_diag_set(MM_ENOMEM, "bloom: cannot allocate %" PRIu64 " bytes", nbytes);
	w = h ? (h->words ? h->words : tmp) : NULL;
	if (w == NULL)
		memset(p, 0, nbytes);
	else
		for (uint64_t i = 0; i < nbytes; i++)
			p[i] = (uint8_t)(w[i >> 3] >> (8 * (i & 7)));
	out->len += MM_BLOOM_HEADER + nbytes;
	free(tmp);
	return 0;
}

static int bloom_decode(const mm_monoid_t *m, void *st, const uint8_t *p, size_t n)
{
	mm_bloom_t *h;
	uint64_t bm, nbytes, adds, any = 0;
	uint32_t bk;

	bloom_destroy(m, st);
	if (n < MM_BLOOM_HEADER)
		return mm_diag_set(MM_ECORRUPT, "bloom: truncated header (%zu bytes)", n);
	if (memcmp(p, MM_BLOOM_MAGIC, 4) != 0)
		return mm_diag_set(MM_ECORRUPT, "bloom: bad magic");
	if (p[4] != MM_BLOOM_VERSION)
		return mm_diag_set(MM_ECORRUPT, "bloom: unsupported version %u", p[4]);
	if (p[5] | p[6] | p[7])
		return mm_diag_set(MM_ECORRUPT, "bloom: reserved bytes are not zero");
	bloom_geometry(&m->p, &bm, &bk);
	if (mm_get_u64le(p + 8) != bm || mm_get_u32le(p + 16) != bk)
		return mm_diag_set(MM_ECORRUPT, "bloom: geometry mismatch (encoded m=%" PRIu64
				   " k=%" PRIu32 ", pipeline m=%" PRIu64 " k=%" PRIu32 ")",
				   mm_get_u64le(p + 8), mm_get_u32le(p + 16), bm, bk);
	nbytes = bloom_nbytes(bm);
	if (n - MM_BLOOM_HEADER != nbytes)
		return mm_diag_set(MM_ECORRUPT, "bloom: %zu bytes of bits, expected %" PRIu64,
				   n - MM_BLOOM_HEADER, nbytes);
	adds = mm_get_u64le(p + 20);
	p += MM_BLOOM_HEADER;
	if (bm % 8 && (p[nbytes - 1] >> (bm % 8)))
		return mm_diag_set(MM_ECORRUPT, "bloom: bits set past m");
	for (uint64_t i = 0; i < nbytes; i++)
		any |= p[i];
	if ((adds == 0) != (any == 0))
		return mm_diag_set(MM_ECORRUPT, "bloom: %" PRIu64 " adds inconsistent with the bits",
				   adds);
	if (adds == 0)
		return 0;

	h = bloom_new(m);
	if (h == NULL)
		return MM_ENOMEM;
	h->words = calloc(bloom_nwords(bm), sizeof(*h->words));
	if (h->words == NULL) {
		bloom_free(h);
		return mm_diag_set(MM_ENOMEM, "bloom: cannot allocate %" PRIu64 " bytes", nbytes);
	}
	for (uint64_t i = 0; i < nbytes; i++)
		h->words[i >> 3] |= (uint64_t)p[i] << (8 * (i & 7));
	h->adds = adds;
	bloom_put(st, h);
	return 0;
}

static int bloom_to_json(const mm_monoid_t *m, const void *st, mm_buf_t *out)
{
	const mm_bloom_t *h = bloom_get(st);
	uint64_t bm, set = 0, *tmp = NULL;
	const uint64_t *w;
	uint32_t bk;
	double est;

	if (h) {
		bm = h->m;
		bk = h->k;
	} else {
		bloom_geometry(&m->p, &bm, &bk);
	}
	if (h && h->words == NULL && (tmp = bloom_render(h)) == NULL)
		return mm_diag_set(MM_ENOMEM, "bloom: cannot allocate %" PRIu64 " bytes",
				   bloom_nbytes(bm));
	w = h ? (h->words ? h->words : tmp) : NULL;
	for (uint64_t i = 0; w && i < bloom_nwords(bm); i++)
		set += (uint64_t)__builtin_popcountll(w[i]);
	free(tmp);
	/* Swamidass and Baldi's estimate -m/k ln(1 - X/m); a full filter would
	 * give infinity, so X is capped at m - 1, the largest finite answer. */
	if (set >= bm)
		set = bm - 1;
	est = -(double)bm / bk * log1p(-(double)set / (double)bm);
	return mm_buf_printf(out, "{\"bits\":%" PRIu64 ",\"hashes\":%" PRIu32
			     ",\"approx_count\":%" PRIu64 "}", bm, bk, (uint64_t)llround(est));
}

static int bloom_is_identity(const mm_monoid_t *m, const void *st)
{
	const mm_bloom_t *h = bloom_get(st);

	return h == NULL || h->adds == 0;
}

int mm_bloom_contains(const mm_monoid_t *m, const void *st, const char *s, size_t len)
{
	const mm_bloom_t *h;
	mm_bloom_pair_t pr;

	if (m == NULL || m->vt != &mm_monoid_bloom_vtable || st == NULL || (s == NULL && len))
		return mm_diag_set(MM_EINVAL, "bloom: bad contains arguments");
	h = bloom_get(st);
	if (h == NULL || h->adds == 0)
		return 0;
	bloom_hash(s, len, &pr);
	if (h->words)
		return bloom_test(h->words, h->m, h->k, &pr);
	if (bloom_pair_find(h, &pr))
		return 1;
	/* Pending pairs stand for the bits they would set: each of the query's
	 * bits must be set by some pair, exactly as with the bit array. */
	{
		uint64_t a = pr.h1 % h->m, b = pr.h2 % h->m;

		for (uint32_t i = 0; i < h->k; i++) {
			uint32_t j;

			for (j = 0; j < h->nslots; j++)
				if (h->pairs[j].h2 != 0 && bloom_pair_sets(h->m, h->k, &h->pairs[j], a))
					break;
			if (j == h->nslots)
				return 0;
			a += b;
			if (a >= h->m)
				a -= h->m;
		}
	}
	return 1;
}

const mm_monoid_vtable_t mm_monoid_bloom_vtable = {
	.name = "bloom",
	.value_kind = MM_VK_STRING,
	.check = bloom_check,
	.init = bloom_init,
	.destroy = bloom_destroy,
	.add = bloom_add,
	.merge = bloom_merge,
	.encode = bloom_encode,
	.decode = bloom_decode,
	.to_json = bloom_to_json,
	.is_identity = bloom_is_identity,
};
