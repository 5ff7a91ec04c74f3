/*
 * sigv4.c: SHA-256, HMAC-SHA256 and AWS Signature Version 4 (see sigv4.h).
 *
 * SHA-256 follows FIPS 180-4 section 6.2 literally: 64-byte blocks, the
 * message schedule W[0..63], eight working variables, big-endian length
 * padding. On x86-64 processors with the SHA extensions the blocks are
 * compressed with them instead (about eight times faster; hashing was a tenth
 * of the CPU of a DynamoDB request): the state is kept as the ABEF/CDGH
 * register pair the instructions expect, each SHA256RNDS2 does two rounds,
 * and SHA256MSG1/MSG2 extend the message schedule four words at a time.
 * The choice is made once, from CPUID. HMAC follows RFC 2104 with a 64-byte
 * block (keys longer than a block are hashed first); the signer keeps its
 * signing key as the two states after the padded key, so each signature
 * hashes the string to sign and the inner digest only.
 *
 * Canonicalisation rules, as the AWS reference and its test suite state them:
 *  - URI: with normalize_path, dot segments and empty segments are removed
 *    ("//a/./b/../" -> "/a/"), a trailing slash is kept; every byte outside
 *    the RFC 3986 unreserved set (A-Z a-z 0-9 - _ . ~) except '/' is
 *    percent-encoded with upper-case hex. A '%' already in the path is
 *    encoded again (%25), which is the double encoding AWS asks of every
 *    service but S3.
 *  - Query: each parameter is split at the first '=', percent-decoded and
 *    re-encoded with the same unreserved set (so "%E1%88%B4" and the raw
 *    UTF-8 it stands for give the same text), and the list is sorted by
 *    encoded name, then encoded value.
 *  - Headers: names lower-cased, values trimmed with every run of white
 *    space (folded continuation lines included) collapsed to one space,
 *    repeated headers joined with ',' in the order given, sorted by name.
 * Byte-wise ordering is what AWS specifies (it equals code-point order for
 * UTF-8), so memcmp is the comparison throughout.
 */
#include "sigv4.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../lib/error.h"
#include "../lib/text.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* ---- SHA-256 ---- */

static const uint32_t sha256_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
	0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
	0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
	0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
	0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
	0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
	0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
	0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
	0xc67178f2,
};

static inline uint32_t ror32(uint32_t x, unsigned n)
{
	return (x >> n) | (x << (32 - n));
}

static void sha256_block(uint32_t h[8], const uint8_t *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, hh;
	int i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (i = 16; i < 64; i++) {
		uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);

		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
	for (i = 0; i < 64; i++) {
		uint32_t t1 = hh + (ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25)) + ((e & f) ^ (~e & g)) +
			      sha256_k[i] + w[i];
		uint32_t t2 = (ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));

		hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
	}
	h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
}

static void sha256_blocks_portable(uint32_t h[8], const uint8_t *p, size_t n)
{
	for (; n > 0; n--, p += 64)
		sha256_block(h, p);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>

__attribute__((target("sha,sse4.1,ssse3"))) static void sha256_blocks_ni(uint32_t h[8],
									const uint8_t *p, size_t n)
{
	const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
	__m128i abef, cdgh, tmp, w[4], msg, abef0, cdgh0;
	int i;

	/* h[0..7] = A..H  ->  abef = (F, E, B, A), cdgh = (H, G, D, C) in lanes 0..3. */
	tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(const void *)&h[0]), 0xB1);
	cdgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(const void *)&h[4]), 0x1B);
	abef = _mm_alignr_epi8(tmp, cdgh, 8);
	cdgh = _mm_blend_epi16(cdgh, tmp, 0xF0);
	for (; n > 0; n--, p += 64) {
		abef0 = abef;
		cdgh0 = cdgh;
		for (i = 0; i < 16; i++) {
			if (i < 4) {
				w[i] = _mm_shuffle_epi8(
					_mm_loadu_si128((const __m128i *)(const void *)(p + 16 * i)), bswap);
			} else {
				/* w[t-16] + s0(w[t-15]) + w[t-7], then + s1(w[t-2]). */
				tmp = _mm_sha256msg1_epu32(w[i & 3], w[(i + 1) & 3]);
				tmp = _mm_add_epi32(tmp, _mm_alignr_epi8(w[(i + 3) & 3], w[(i + 2) & 3], 4));
				w[i & 3] = _mm_sha256msg2_epu32(tmp, w[(i + 3) & 3]);
			}
			msg = _mm_add_epi32(w[i & 3],
					    _mm_loadu_si128((const __m128i *)(const void *)&sha256_k[4 * i]));
			cdgh = _mm_sha256rnds2_epu32(cdgh, abef, msg);
			abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(msg, 0x0E));
		}
		abef = _mm_add_epi32(abef, abef0);
		cdgh = _mm_add_epi32(cdgh, cdgh0);
	}
	tmp = _mm_shuffle_epi32(abef, 0x1B);
	cdgh = _mm_shuffle_epi32(cdgh, 0xB1);
	_mm_storeu_si128((__m128i *)(void *)&h[0], _mm_blend_epi16(tmp, cdgh, 0xF0));
	_mm_storeu_si128((__m128i *)(void *)&h[4], _mm_alignr_epi8(cdgh, tmp, 8));
}

static void sha256_blocks_first(uint32_t h[8], const uint8_t *p, size_t n);

/* The block function, chosen from CPUID at the first call: a relaxed atomic
 * pointer that starts at sha256_blocks_first, which stores the choice and
 * runs it. Threads that race there store the same value. (pthread_once at
 * every call cost about 50 instructions a DynamoDB request.) */
static void (*sha256_blocks)(uint32_t h[8], const uint8_t *p, size_t n) = sha256_blocks_first;

static void sha256_blocks_first(uint32_t h[8], const uint8_t *p, size_t n)
{
	void (*f)(uint32_t *, const uint8_t *, size_t) = sha256_blocks_portable;
	unsigned a, b, c, d;

	/* SSSE3 and SSE4.1 (leaf 1, ECX bits 9 and 19), SHA (leaf 7, EBX bit 29). */
	if (__get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 9)) && (c & (1u << 19)) &&
	    __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 29)))
		f = sha256_blocks_ni;
	__atomic_store_n(&sha256_blocks, f, __ATOMIC_RELAXED);
	f(h, p, n);
}
#define SHA256_BLOCKS(h, p, n) (__atomic_load_n(&sha256_blocks, __ATOMIC_RELAXED)((h), (p), (n)))
#else
#define SHA256_BLOCKS(h, p, n) sha256_blocks_portable((h), (p), (n))
#endif

/* The state before the first byte (FIPS 180-4 section 5.3.3). */
static const mm_sha256_t sha256_fresh = {
	.h = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
	      0x5be0cd19},
};

void mm_sha256_init(mm_sha256_t *c)
{
	memcpy(c->h, sha256_fresh.h, sizeof(c->h));
	c->total = 0;
	c->nblock = 0;
}

void mm_sha256_update(mm_sha256_t *c, const void *data, size_t n)
{
	const uint8_t *p = data;

	c->total += n;
	if (c->nblock) {
		size_t take = 64 - c->nblock < n ? 64 - c->nblock : n;

		memcpy(c->block + c->nblock, p, take);
		c->nblock += take;
		p += take;
		n -= take;
		if (c->nblock < 64)
			return;
		SHA256_BLOCKS(c->h, c->block, 1);
		c->nblock = 0;
	}
	if (n >= 64) {
		SHA256_BLOCKS(c->h, p, n / 64);
		p += n / 64 * 64;
		n %= 64;
	}
	memcpy(c->block, p, n);
	c->nblock = n;
}

/* Big-endian stores, one word at a time: every signature ends four hashes. */
static inline void put_be32(uint8_t *p, uint32_t v)
{
	v = __builtin_bswap32(v);
	memcpy(p, &v, 4);
}

void mm_sha256_final(mm_sha256_t *c, uint8_t out[32])
{
	uint64_t bits = __builtin_bswap64(c->total * 8);
	int i;

	c->block[c->nblock++] = 0x80;
	if (c->nblock > 56) {
		memset(c->block + c->nblock, 0, 64 - c->nblock);
		SHA256_BLOCKS(c->h, c->block, 1);
		c->nblock = 0;
	}
	memset(c->block + c->nblock, 0, 56 - c->nblock);
	memcpy(c->block + 56, &bits, 8);
	SHA256_BLOCKS(c->h, c->block, 1);
	for (i = 0; i < 8; i++)
		put_be32(out + 4 * i, c->h[i]);
}

void mm_sha256(const void *p, size_t n, uint8_t out[32])
{
	mm_sha256_t c;

	mm_sha256_init(&c);
	mm_sha256_update(&c, p, n);
	mm_sha256_final(&c, out);
}

void mm_hmac_sha256_key(mm_hmac_sha256_key_t *hk, const void *key, size_t klen)
{
	uint8_t k[64] = {0}, pad[64];
	int i;

	if (klen > 64)
		mm_sha256(key, klen, k);
	else
		memcpy(k, key, klen);
	for (i = 0; i < 64; i++)
		pad[i] = k[i] ^ 0x36;
	mm_sha256_init(&hk->inner);
	mm_sha256_update(&hk->inner, pad, 64);
	for (i = 0; i < 64; i++)
		pad[i] = k[i] ^ 0x5c;
	mm_sha256_init(&hk->outer);
	mm_sha256_update(&hk->outer, pad, 64);
	memset(k, 0, sizeof(k));
	memset(pad, 0, sizeof(pad));
}

void mm_hmac_sha256_with(const mm_hmac_sha256_key_t *hk, const void *msg, size_t n,
			 uint8_t out[32])
{
	mm_sha256_t c = hk->inner;
	uint8_t inner[32];

	mm_sha256_update(&c, msg, n);
	mm_sha256_final(&c, inner);
	c = hk->outer;
	mm_sha256_update(&c, inner, 32);
	mm_sha256_final(&c, out);
}

void mm_hmac_sha256(const void *key, size_t klen, const void *msg, size_t n, uint8_t out[32])
{
	mm_hmac_sha256_key_t hk;

	mm_hmac_sha256_key(&hk, key, klen);
	mm_hmac_sha256_with(&hk, msg, n, out);
}

/* The two hex digits of each byte value, in order: a byte is one lookup
 * and one two-byte store. The bytes short of a whole 16 take this way. */
#define HEX_ROW(h)                                                                          \
	h "0" h "1" h "2" h "3" h "4" h "5" h "6" h "7" h "8" h "9" h "a" h "b" h "c" h "d" \
	h "e" h "f"
static const char hex_pairs[] = HEX_ROW("0") HEX_ROW("1") HEX_ROW("2") HEX_ROW("3") HEX_ROW("4")
	HEX_ROW("5") HEX_ROW("6") HEX_ROW("7") HEX_ROW("8") HEX_ROW("9") HEX_ROW("a") HEX_ROW("b")
		HEX_ROW("c") HEX_ROW("d") HEX_ROW("e") HEX_ROW("f");

/* Three digests a signature are written as hex, nine instructions a byte
 * through the table; with SSE2, sixteen bytes are split into nibbles,
 * interleaved high before low, and each nibble n becomes '0' + n, plus
 * 'a' - '0' - 10 where n > 9: about a tenth of the work. */
void mm_hex_lower(const uint8_t *p, size_t n, char *out)
{
	size_t i = 0;

#if defined(__SSE2__)
	const __m128i nib = _mm_set1_epi8(0x0f), nine = _mm_set1_epi8(9),
		      zero = _mm_set1_epi8('0'), gap = _mm_set1_epi8('a' - '0' - 10);

	for (; n - i >= 16; i += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
		__m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), nib), lo = _mm_and_si128(v, nib);
		__m128i a = _mm_unpacklo_epi8(hi, lo), b = _mm_unpackhi_epi8(hi, lo);

		a = _mm_add_epi8(_mm_add_epi8(a, zero), _mm_and_si128(_mm_cmpgt_epi8(a, nine), gap));
		b = _mm_add_epi8(_mm_add_epi8(b, zero), _mm_and_si128(_mm_cmpgt_epi8(b, nine), gap));
		_mm_storeu_si128((__m128i *)(void *)(out + 2 * i), a);
		_mm_storeu_si128((__m128i *)(void *)(out + 2 * i + 16), b);
	}
#endif
	for (; i < n; i++)
		memcpy(out + 2 * i, hex_pairs + 2 * p[i], 2);
	out[2 * n] = '\0';
}

/* ---- canonicalisation ---- */

typedef struct sig_hdr {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
	size_t order;  /* position in the input, so repeated headers keep their order */
} sig_hdr_t;

/* A query parameter: offsets of its encoded key and value in s->scratch
 * (which may move while parameters are added), then pointers for sorting. */
typedef struct sig_param {
	size_t koff, klen, voff, vlen;
	const uint8_t *k, *v;
} sig_param_t;

static int is_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '.' || c == '~';
}

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Appends p[0..n) percent-encoded; '/' is kept when keep_slash. */
static int uri_encode(mm_buf_t *out, const char *p, size_t n, int keep_slash)
{
	static const char digits[] = "0123456789ABCDEF";
	size_t i;
	int rc;

	if ((rc = mm_buf_reserve(out, n * 3)))
		return rc;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];

		if (is_unreserved(c) || (keep_slash && c == '/')) {
			out->p[out->len++] = c;
		} else {
			out->p[out->len++] = '%';
			out->p[out->len++] = (uint8_t)digits[c >> 4];
			out->p[out->len++] = (uint8_t)digits[c & 15];
		}
	}
	return 0;
}

/* Appends p[0..n) percent-decoded, then encoded again: the canonical form of
 * one query component, whichever way the caller escaped it. */
static int query_component(mm_buf_t *out, const char *p, size_t n)
{
	size_t i;
	int rc = 0;

	for (i = 0; i < n && rc == 0; i++) {
		int hi, lo;
		char c = p[i];

		if (c == '%' && i + 2 < n && (hi = mm_hex_digit((unsigned char)p[i + 1])) >= 0 &&
		    (lo = mm_hex_digit((unsigned char)p[i + 2])) >= 0) {
			c = (char)(hi << 4 | lo);
			i += 2;
		}
		rc = uri_encode(out, &c, 1, 0);
	}
	return rc;
}

/* Appends the canonical URI of path[0..n). */
static int canonical_uri(mm_buf_t *out, const char *path, size_t n, int normalize)
{
	size_t segs[512][2], nseg = 0, i = 0;
	int rc, trailing;

	if (n == 0)
		return mm_buf_append(out, "/", 1);
	if (!normalize)
		return uri_encode(out, path, n, 1);
	/* Walk the segments, keeping a stack of the ones that survive. */
	trailing = path[n - 1] == '/';
	while (i < n) {
		size_t start, len;

		while (i < n && path[i] == '/')
			i++;
		start = i;
		while (i < n && path[i] != '/')
			i++;
		len = i - start;
		if (len == 0 || (len == 1 && path[start] == '.'))
			continue;
		if (len == 2 && path[start] == '.' && path[start + 1] == '.') {
			if (nseg > 0)
				nseg--;
			continue;
		}
		if (nseg == sizeof(segs) / sizeof(segs[0]))
			return mm_diag_set(MM_EINVAL, "sigv4: path has more than %zu segments",
					   nseg);
		segs[nseg][0] = start;
		segs[nseg][1] = len;
		nseg++;
	}
	if (nseg == 0)
		return mm_buf_append(out, "/", 1);
	for (i = 0; i < nseg; i++) {
		if ((rc = mm_buf_append(out, "/", 1)) ||
		    (rc = uri_encode(out, path + segs[i][0], segs[i][1], 0)))
			return rc;
	}
	return trailing ? mm_buf_append(out, "/", 1) : 0;
}

static int grow(void **arr, size_t *cap, size_t need, size_t size)
{
	void *p;
	size_t n = *cap ? *cap : 16;

	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	p = realloc(*arr, n * size);
	if (p == NULL)
		return mm_diag_set(MM_ENOMEM, "sigv4: out of memory");
	*arr = p;
	*cap = n;
	return 0;
}

static int bytes_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
	int c = memcmp(a, b, an < bn ? an : bn);

	if (c == 0 && an != bn)
		return an < bn ? -1 : 1;
	return c;
}

static int param_cmp(const void *a, const void *b)
{
	const sig_param_t *x = a, *y = b;
	int c = bytes_cmp(x->k, x->klen, y->k, y->klen);

	return c ? c : bytes_cmp(x->v, x->vlen, y->v, y->vlen);
}

/* Adds one parameter; key and value are encoded into s->scratch. When raw is
 * set they are taken as written and canonicalised; else they are plain text. */
static int add_param(mm_sigv4_t *s, size_t *np, const char *k, size_t kl, const char *v,
		     size_t vl, int raw)
{
	sig_param_t *pa;
	int rc;

	if ((rc = grow(&s->params, &s->params_cap, *np + 1, sizeof(sig_param_t))))
		return rc;
	pa = (sig_param_t *)s->params + *np;
	pa->koff = s->scratch.len;
	rc = raw ? query_component(&s->scratch, k, kl) : uri_encode(&s->scratch, k, kl, 0);
	if (rc)
		return rc;
	pa->klen = s->scratch.len - pa->koff;
	pa->voff = s->scratch.len;
	rc = raw ? query_component(&s->scratch, v, vl) : uri_encode(&s->scratch, v, vl, 0);
	if (rc)
		return rc;
	pa->vlen = s->scratch.len - pa->voff;
	(*np)++;
	return 0;
}

/* Splits the request's query into s->params (not yet sorted). */
static int parse_query(mm_sigv4_t *s, const mm_sigv4_request_t *req, size_t *np)
{
	const char *q = req->query;
	size_t n = req->query ? req->query_len : 0, i = 0;
	int rc;

	while (i < n) {
		size_t start = i, eq;

		while (i < n && q[i] != '&')
			i++;
		if (i > start) {
			for (eq = start; eq < i && q[eq] != '='; eq++)
				;
			rc = add_param(s, np, q + start, eq - start, q + eq + (eq < i),
				       i - eq - (eq < i), 1);
			if (rc)
				return rc;
		}
		i++;
	}
	return 0;
}

/* Appends the sorted parameters as "k=v&k=v". */
static int emit_query(mm_sigv4_t *s, size_t np, mm_buf_t *out)
{
	sig_param_t *pa = s->params;
	size_t i;
	int rc = 0;

	for (i = 0; i < np; i++) {
		pa[i].k = s->scratch.p + pa[i].koff;
		pa[i].v = s->scratch.p + pa[i].voff;
	}
	if (np > 1)
		qsort(pa, np, sizeof(*pa), param_cmp);
	for (i = 0; i < np && rc == 0; i++) {
		if (i > 0)
			rc = mm_buf_append(out, "&", 1);
		if (rc == 0)
			rc = mm_buf_append(out, pa[i].k, pa[i].klen);
		if (rc == 0)
			rc = mm_buf_append(out, "=", 1);
		if (rc == 0)
			rc = mm_buf_append(out, pa[i].v, pa[i].vlen);
	}
	return rc;
}

static int name_cmp(const char *a, size_t an, const char *b, size_t bn)
{
	size_t i, n = an < bn ? an : bn;

	for (i = 0; i < n; i++) {
		unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];

		if (x >= 'A' && x <= 'Z')
			x = (unsigned char)(x + 32);
		if (y >= 'A' && y <= 'Z')
			y = (unsigned char)(y + 32);
		if (x != y)
			return x < y ? -1 : 1;
	}
	return an == bn ? 0 : (an < bn ? -1 : 1);
}

static int hdr_cmp(const void *a, const void *b)
{
	const sig_hdr_t *x = a, *y = b;
	int c = name_cmp(x->name, x->name_len, y->name, y->name_len);

	if (c)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

/* Appends a header value trimmed, with white-space runs collapsed. */
static int put_value(mm_buf_t *out, const char *v, size_t n)
{
	size_t i = 0, end = n;
	int rc, gap = 0;

	while (i < end && is_space(v[i]))
		i++;
	while (end > i && is_space(v[end - 1]))
		end--;
	if ((rc = mm_buf_reserve(out, end - i)))
		return rc;
	for (; i < end; i++) {
		if (is_space(v[i])) {
			gap = 1;
			continue;
		}
		if (gap)
			out->p[out->len++] = ' ';
		gap = 0;
		out->p[out->len++] = (uint8_t)v[i];
	}
	return 0;
}

static int put_lower(mm_buf_t *out, const char *p, size_t n)
{
	size_t i;
	int rc;

	if ((rc = mm_buf_reserve(out, n)))
		return rc;
	for (i = 0; i < n; i++) {
		char c = p[i];

		out->p[out->len++] = (uint8_t)(c >= 'A' && c <= 'Z' ? c + 32 : c);
	}
	return 0;
}

/*
 * Builds s->headers_text ("name:value\n" lines) and s->signed_headers from the
 * request's headers plus `extra` (x-amz-* ones the signer adds).
 */
static int canonical_headers(mm_sigv4_t *s, const mm_sigv4_request_t *req,
			     const mm_sigv4_header_t *extra, size_t nextra)
{
	size_t n = req->nheaders + nextra, i, j;
	sig_hdr_t *h;
	int rc, has_host = 0;

	if ((rc = grow(&s->hdrs, &s->hdrs_cap, n, sizeof(sig_hdr_t))))
		return rc;
	h = s->hdrs;
	for (i = 0; i < n; i++) {
		const mm_sigv4_header_t *src =
			i < req->nheaders ? &req->headers[i] : &extra[i - req->nheaders];

		h[i] = (sig_hdr_t){src->name, src->name_len, src->value, src->value_len, i};
		if (name_cmp(src->name, src->name_len, "host", 4) == 0)
			has_host = 1;
	}
	if (!has_host)
		return mm_diag_set(MM_EINVAL, "sigv4: the request has no Host header");
	qsort(h, n, sizeof(*h), hdr_cmp);
	s->headers_text.len = 0;
	s->signed_headers.len = 0;
	for (i = 0; i < n; i = j) {
		if ((i > 0 && (rc = mm_buf_append(&s->signed_headers, ";", 1))) ||
		    (rc = put_lower(&s->signed_headers, h[i].name, h[i].name_len)) ||
		    (rc = put_lower(&s->headers_text, h[i].name, h[i].name_len)) ||
		    (rc = mm_buf_append(&s->headers_text, ":", 1)))
			return rc;
		for (j = i; j < n && name_cmp(h[i].name, h[i].name_len, h[j].name,
					      h[j].name_len) == 0; j++) {
			if ((j > i && (rc = mm_buf_append(&s->headers_text, ",", 1))) ||
			    (rc = put_value(&s->headers_text, h[j].value, h[j].value_len)))
				return rc;
		}
		if ((rc = mm_buf_append(&s->headers_text, "\n", 1)))
			return rc;
	}
	return 0;
}

static int check_params(const mm_sigv4_request_t *req, const mm_sigv4_params_t *p)
{
	if (req == NULL || p == NULL || req->method == NULL || (req->path_len && !req->path) ||
	    (req->nheaders && !req->headers) || (req->body_len && !req->body))
		return mm_diag_set(MM_EINVAL, "sigv4: incomplete request");
	if (!p->access_key || !p->secret_key || !p->region || !p->service || !*p->access_key)
		return mm_diag_set(MM_EINVAL, "sigv4: credentials, region and service are required");
	if (p->time_s < 0 || p->time_s > 253402300799LL)
		return mm_diag_set(MM_EINVAL, "sigv4: signing time out of range");
	return 0;
}

/* SHA-256 of p[0..n) continued from `start` (a fresh state or a key's
 * inner state) into out, resuming from the state *m holds after the
 * longest run of p's first whole blocks that the last text memoised had
 * too, and memoising p's own first blocks (up to MM_SIGV4_MEMO_BLOCKS) for
 * the next text. A DynamoDB canonical request shares everything but its
 * last line (the body's hash) with the one before it of the same second and
 * operation, so only its last two blocks are compressed again; a body
 * shares the blocks before its key with the one before of the same shape.
 * Equal blocks give equal states whatever follows them, so a memo never
 * changes a digest, only the work. */
static void hash_memo(const mm_sha256_t *start, mm_sigv4_memo_t *m, const uint8_t *p, size_t n,
		      uint8_t out[32])
{
	size_t k = 0, full = n / 64 < MM_SIGV4_MEMO_BLOCKS ? n / 64 : MM_SIGV4_MEMO_BLOCKS;
	mm_sha256_t c;

	while (k < m->blocks && k < full && memcmp(m->head + 64 * k, p + 64 * k, 64) == 0)
		k++;
	/* start holds whole blocks (nothing buffered), and so does each state
	 * of the memo: its hash words are all it keeps. */
	memcpy(c.h, k ? m->h[k - 1] : start->h, sizeof(c.h));
	c.total = start->total + 64 * full;
	c.nblock = 0;
	if (k < full) {
		/* The states past the first differing block belonged to it. */
		for (; k < full; k++) {
			SHA256_BLOCKS(c.h, p + 64 * k, 1);
			memcpy(m->h[k], c.h, sizeof(c.h));
			memcpy(m->head + 64 * k, p + 64 * k, 64);
		}
		m->blocks = full;
	}
	mm_sha256_update(&c, p + 64 * full, n - 64 * full);
	mm_sha256_final(&c, out);
}

/* Sets amz_date and content_sha256, and returns the scope in scope[] and its
 * length in *scl. */
static int prepare(mm_sigv4_t *s, const mm_sigv4_request_t *req, const mm_sigv4_params_t *p,
		   char *scope, size_t scope_len, size_t *scl)
{
	time_t t = (time_t)p->time_s;
	struct tm tm;
	uint8_t digest[32];
	size_t rl = strlen(p->region), sl = strlen(p->service);

	/* Requests come in bursts within one second: format the date once. */
	if (!s->date_valid || s->date_time != p->time_s) {
		if (gmtime_r(&t, &tm) == NULL)
			return mm_diag_set(MM_EINVAL, "sigv4: cannot convert the signing time");
		strftime(s->amz_date, sizeof(s->amz_date), "%Y%m%dT%H%M%SZ", &tm);
		s->date_time = p->time_s;
		s->date_valid = 1;
	}
	/* "<date>/<region>/<service>/aws4_request", copied rather than
	 * formatted: this runs for every request. */
	if (8 + 1 + rl + 1 + sl + 13 >= scope_len)
		return mm_diag_set(MM_EINVAL, "sigv4: region or service name too long");
	memcpy(scope, s->amz_date, 8);
	scope[8] = '/';
	memcpy(scope + 9, p->region, rl);
	scope[9 + rl] = '/';
	memcpy(scope + 10 + rl, p->service, sl);
	memcpy(scope + 10 + rl + sl, "/aws4_request", 14);
	*scl = 10 + rl + sl + 13;
	/* The body's first blocks are memoised too: the store writes the
	 * constant part of a request (table, expressions, attribute names)
	 * before the key and the values, so a burst of writes of one shape
	 * shares them. */
	hash_memo(&sha256_fresh, &s->body_memo,
		  (const uint8_t *)(req->body_len ? req->body : (const void *)""), req->body_len,
		  digest);
	mm_hex_lower(digest, 32, s->content_sha256);
	/* Query parameters point into scratch, even empty ones ("?="). */
	return mm_buf_reserve(&s->scratch, 64);
}

/* Canonical request -> string to sign -> signature, with the cached key.
 * The string to sign is "AWS4-HMAC-SHA256\n<date>\n<scope>\n<hex digest>"
 * and only finish writes it: when the last one has this scope (the same
 * length and text at its place), its date and digest are written over
 * instead of the six appends. */
static int finish(mm_sigv4_t *s, const mm_sigv4_params_t *p, const char *scope, size_t scl)
{
	uint8_t digest[32], k[32], inner[32];
	mm_buf_t *sts = &s->string_to_sign;
	mm_sha256_t c;
	int rc;

	hash_memo(&sha256_fresh, &s->canon_memo, s->canonical.p, s->canonical.len, digest);
	if (sts->len != 17 + 16 + 1 + scl + 1 + 64 || memcmp(sts->p + 34, scope, scl) != 0) {
		sts->len = 0;
		if ((rc = mm_buf_append(sts, "AWS4-HMAC-SHA256\n", 17)) ||
		    (rc = mm_buf_append(sts, s->amz_date, 16)) || (rc = mm_buf_append(sts, "\n", 1)) ||
		    (rc = mm_buf_append(sts, scope, scl)) || (rc = mm_buf_append(sts, "\n", 1)) ||
		    (rc = mm_buf_reserve(sts, 65)))
			return rc;
		sts->len += 64;
	}
	memcpy(sts->p + 17, s->amz_date, 16);
	/* The digest's 64 digits end the text; their NUL lands in the spare byte. */
	mm_hex_lower(digest, 32, (char *)sts->p + sts->len - 64);
	/* The scope's NUL is compared too: scl + 1 bytes fit in key_scope. */
	if (!s->key_valid || memcmp(s->key_scope, scope, scl + 1) != 0 ||
	    strcmp(s->key_secret, p->secret_key) != 0) {
		size_t sl = strlen(p->secret_key);
		char *kin = malloc(sl + 5), *copy = strdup(p->secret_key);

		if (kin == NULL || copy == NULL) {
			free(kin);
			free(copy);
			return mm_diag_set(MM_ENOMEM, "sigv4: out of memory");
		}
		memcpy(kin, "AWS4", 4);
		memcpy(kin + 4, p->secret_key, sl);
		mm_hmac_sha256(kin, sl + 4, s->amz_date, 8, k);
		memset(kin, 0, sl + 4);
		free(kin);
		mm_hmac_sha256(k, 32, p->region, strlen(p->region), k);
		mm_hmac_sha256(k, 32, p->service, strlen(p->service), k);
		mm_hmac_sha256(k, 32, "aws4_request", 12, k);
		mm_hmac_sha256_key(&s->key, k, 32);
		memset(k, 0, sizeof(k));
		snprintf(s->key_scope, sizeof(s->key_scope), "%s", scope);
		if (s->key_secret) {
			memset(s->key_secret, 0, strlen(s->key_secret));
			free(s->key_secret);
		}
		s->key_secret = copy;
		s->key_valid = 1;
		s->sts_memo.blocks = 0;
	}
	/* HMAC (mm_hmac_sha256_with) with its inner hash memoised. */
	hash_memo(&s->key.inner, &s->sts_memo, s->string_to_sign.p, s->string_to_sign.len, inner);
	c = s->key.outer;
	mm_sha256_update(&c, inner, 32);
	mm_sha256_final(&c, digest);
	mm_hex_lower(digest, 32, s->signature);
	return 0;
}

static int canonical_head(mm_sigv4_t *s, const mm_sigv4_request_t *req,
			  const mm_sigv4_params_t *p)
{
	int rc;

	s->canonical.len = 0;
	if ((rc = mm_buf_append(&s->canonical, req->method, strlen(req->method))) ||
	    (rc = mm_buf_append(&s->canonical, "\n", 1)) ||
	    (rc = canonical_uri(&s->canonical, req->path, req->path_len, p->normalize_path)))
		return rc;
	return mm_buf_append(&s->canonical, "\n", 1);
}

static int canonical_tail(mm_sigv4_t *s)
{
	int rc;

	if ((rc = mm_buf_append(&s->canonical, "\n", 1)) ||
	    (rc = mm_buf_append(&s->canonical, s->headers_text.p, s->headers_text.len)) ||
	    (rc = mm_buf_append(&s->canonical, "\n", 1)) ||
	    (rc = mm_buf_append(&s->canonical, s->signed_headers.p, s->signed_headers.len)) ||
	    (rc = mm_buf_append(&s->canonical, "\n", 1)))
		return rc;
	return mm_buf_append(&s->canonical, s->content_sha256, 64);
}

#define HDR(n, v) ((mm_sigv4_header_t){(n), sizeof(n) - 1, (v), strlen(v)})

static int authorization(mm_sigv4_t *s, const mm_sigv4_params_t *p, const char *scope,
			 size_t scl)
{
	int rc;

	s->authorization.len = 0;
	if ((rc = mm_buf_append(&s->authorization, "AWS4-HMAC-SHA256 Credential=", 28)) ||
	    (rc = mm_buf_append(&s->authorization, p->access_key, strlen(p->access_key))) ||
	    (rc = mm_buf_append(&s->authorization, "/", 1)) ||
	    (rc = mm_buf_append(&s->authorization, scope, scl)) ||
	    (rc = mm_buf_append(&s->authorization, ", SignedHeaders=", 16)) ||
	    (rc = mm_buf_append(&s->authorization, s->signed_headers.p, s->signed_headers.len)) ||
	    (rc = mm_buf_append(&s->authorization, ", Signature=", 12)))
		return rc;
	return mm_buf_append(&s->authorization, s->signature, 64);
}

int mm_sigv4_sign_headers(mm_sigv4_t *s, const mm_sigv4_request_t *req,
			  const mm_sigv4_params_t *p)
{
	mm_sigv4_header_t extra[3];
	size_t nextra = 0, np = 0;
	char scope[160];
	size_t scl;
	int rc;

	s->post_valid = 0;
	if ((rc = check_params(req, p)) || (rc = prepare(s, req, p, scope, sizeof(scope), &scl)))
		return rc;
	extra[nextra++] = HDR("x-amz-date", s->amz_date);
	if (p->session_token && *p->session_token && !p->omit_session_token)
		extra[nextra++] = HDR("x-amz-security-token", p->session_token);
	if (p->sign_body)
		extra[nextra++] = HDR("x-amz-content-sha256", s->content_sha256);
	s->scratch.len = 0;
	if ((rc = canonical_headers(s, req, extra, nextra)) || (rc = canonical_head(s, req, p)) ||
	    (rc = parse_query(s, req, &np)) || (rc = emit_query(s, np, &s->canonical)) ||
	    (rc = canonical_tail(s)))
		return rc;
	if ((rc = finish(s, p, scope, scl)))
		return rc;
	return authorization(s, p, scope, scl);
}

#define LIT(b, lit) mm_buf_append((b), (lit), sizeof(lit) - 1)

/* 1 when v[0..n) (NUL-terminated) is a header value that canonicalises to
 * itself: no white space to trim or collapse. */
static int plain_value(const char *v, size_t n)
{
	return strcspn(v, " \t\r\n") == n;
}

/* The length of "POST\n/\n\ncontent-type:", which opens sign_post's
 * canonical request. */
#define POST_HEAD 21

/* 1 when the canonical request, the signed headers and the Authorization
 * value are the ones sign_post built last for these header values (v[3]
 * the token, NULL when none is signed): the canonical request holds them at
 * places their lengths give, after the fixed text sign_post writes. */
static int post_same(const mm_sigv4_t *s, const char *const v[4], const size_t l[4])
{
	const uint8_t *c = s->canonical.p;
	size_t at = POST_HEAD; /* "POST\n/\n\ncontent-type:" */

	if (!s->post_valid || l[0] != s->post_lens[0] || l[1] != s->post_lens[1] ||
	    l[2] != s->post_lens[2] || l[3] != s->post_lens[3] || (v[3] == NULL) != !s->post_token ||
	    memcmp(c + at, v[0], l[0]) != 0)
		return 0;
	at += l[0] + 6; /* "\nhost:" */
	if (memcmp(c + at, v[1], l[1]) != 0)
		return 0;
	at += l[1] + 12 + 16; /* "\nx-amz-date:" and the date */
	if (v[3]) {
		at += 22; /* "\nx-amz-security-token:" */
		if (memcmp(c + at, v[3], l[3]) != 0)
			return 0;
		at += l[3];
	}
	return memcmp(c + at + 14, v[2], l[2]) == 0; /* after "\nx-amz-target:" */
}

int mm_sigv4_sign_post(mm_sigv4_t *s, const char *content_type, const char *host,
		       const char *target, const void *body, size_t len,
		       const mm_sigv4_params_t *p)
{
	size_t cl = strlen(content_type), hl = strlen(host), tl = strlen(target), scl, akl;
	mm_sigv4_header_t h[3] = {{"content-type", 12, content_type, cl},
				  {"host", 4, host, hl},
				  {"x-amz-target", 12, target, tl}};
	mm_sigv4_request_t req = {.method = "POST", .path = "/", .path_len = 1, .headers = h,
				  .nheaders = 3, .body = body, .body_len = len};
	const char *token = p && p->session_token && *p->session_token && !p->omit_session_token
				    ? p->session_token
				    : NULL;
	const char *v[4] = {content_type, host, target, token};
	size_t l[4] = {cl, hl, tl, token ? strlen(token) : 0};
	mm_buf_t *c = &s->canonical, *a = &s->authorization;
	char scope[160];
	int rc;

	if (p == NULL || p->sign_body)
		return mm_sigv4_sign_headers(s, &req, p);
	if ((rc = check_params(&req, p)))
		return rc;
	if (post_same(s, v, l)) {
		/* A store's requests differ from the last only in the date, the
		 * body's hash and so the signature: those are written over the
		 * last texts instead of about thirty appends. */
		if ((rc = prepare(s, &req, p, scope, sizeof(scope), &scl)))
			return rc;
		memcpy(c->p + POST_HEAD + cl + 6 + hl + 12, s->amz_date, 16);
		memcpy(c->p + c->len - 64, s->content_sha256, 64);
		if ((rc = finish(s, p, scope, scl)))
			return rc;
		akl = strlen(p->access_key);
		if (a->len != 28 + akl + 1 + scl + 16 + s->signed_headers.len + 12 + 64 ||
		    memcmp(a->p + 28, p->access_key, akl) != 0 || a->p[28 + akl] != '/' ||
		    memcmp(a->p + 29 + akl, scope, scl) != 0)
			return authorization(s, p, scope, scl);
		memcpy(a->p + a->len - 64, s->signature, 64);
		return 0;
	}
	if (!plain_value(content_type, cl) || !plain_value(host, hl) || !plain_value(target, tl) ||
	    (token && !plain_value(token, l[3])))
		return mm_sigv4_sign_headers(s, &req, p);
	s->post_valid = 0;
	if ((rc = prepare(s, &req, p, scope, sizeof(scope), &scl)))
		return rc;
	/* The lines in the order the general path sorts them to. */
	s->signed_headers.len = 0;
	c->len = 0;
	if ((rc = LIT(&s->signed_headers, "content-type;host;x-amz-date;")) ||
	    (token && (rc = LIT(&s->signed_headers, "x-amz-security-token;"))) ||
	    (rc = LIT(&s->signed_headers, "x-amz-target")) ||
	    (rc = mm_buf_append(c, "POST\n/\n\ncontent-type:", POST_HEAD)) ||
	    (rc = mm_buf_append(c, content_type, cl)) ||
	    (rc = LIT(c, "\nhost:")) || (rc = mm_buf_append(c, host, hl)) ||
	    (rc = LIT(c, "\nx-amz-date:")) || (rc = mm_buf_append(c, s->amz_date, 16)) ||
	    (token && ((rc = LIT(c, "\nx-amz-security-token:")) ||
		       (rc = mm_buf_append(c, token, l[3])))) ||
	    (rc = LIT(c, "\nx-amz-target:")) || (rc = mm_buf_append(c, target, tl)) ||
	    (rc = LIT(c, "\n\n")) ||
	    (rc = mm_buf_append(c, s->signed_headers.p, s->signed_headers.len)) ||
	    (rc = LIT(c, "\n")) || (rc = mm_buf_append(c, s->content_sha256, 64)))
		return rc;
	if ((rc = finish(s, p, scope, scl)) || (rc = authorization(s, p, scope, scl)))
		return rc;
	memcpy(s->post_lens, l, sizeof(l));
	s->post_token = token != NULL;
	s->post_valid = 1;
	return 0;
}

int mm_sigv4_sign_query(mm_sigv4_t *s, const mm_sigv4_request_t *req,
			const mm_sigv4_params_t *p)
{
	char scope[160], cred[400], expires[24];
	size_t np = 0, scl;
	int rc;

	s->post_valid = 0;
	if ((rc = check_params(req, p)) || (rc = prepare(s, req, p, scope, sizeof(scope), &scl)))
		return rc;
	if (p->expires_s < 1 || p->expires_s > 604800)
		return mm_diag_set(MM_EINVAL, "sigv4: X-Amz-Expires must be 1..604800 seconds");
	snprintf(cred, sizeof(cred), "%s/%s", p->access_key, scope);
	snprintf(expires, sizeof(expires), "%lld", (long long)p->expires_s);
	s->scratch.len = 0;
	if ((rc = canonical_headers(s, req, NULL, 0)) || (rc = canonical_head(s, req, p)) ||
	    (rc = parse_query(s, req, &np)) ||
	    (rc = add_param(s, &np, "X-Amz-Algorithm", 15, "AWS4-HMAC-SHA256", 16, 0)) ||
	    (rc = add_param(s, &np, "X-Amz-Credential", 16, cred, strlen(cred), 0)) ||
	    (rc = add_param(s, &np, "X-Amz-Date", 10, s->amz_date, 16, 0)) ||
	    (rc = add_param(s, &np, "X-Amz-Expires", 13, expires, strlen(expires), 0)))
		return rc;
	if (p->session_token && *p->session_token && !p->omit_session_token &&
	    (rc = add_param(s, &np, "X-Amz-Security-Token", 20, p->session_token,
			    strlen(p->session_token), 0)))
		return rc;
	if ((rc = add_param(s, &np, "X-Amz-SignedHeaders", 19, (const char *)s->signed_headers.p,
			    s->signed_headers.len, 0)))
		return rc;
	s->authorization.len = 0;
	if ((rc = emit_query(s, np, &s->canonical)) || (rc = canonical_tail(s)) ||
	    (rc = finish(s, p, scope, scl)) || (rc = emit_query(s, np, &s->authorization)))
		return rc;
	return mm_buf_printf(&s->authorization, "&X-Amz-Signature=%s", s->signature);
}

void mm_sigv4_free(mm_sigv4_t *s)
{
	if (s == NULL)
		return;
	mm_buf_free(&s->canonical);
	mm_buf_free(&s->string_to_sign);
	mm_buf_free(&s->signed_headers);
	mm_buf_free(&s->authorization);
	mm_buf_free(&s->scratch);
	mm_buf_free(&s->headers_text);
	free(s->hdrs);
	free(s->params);
	if (s->key_secret) {
		memset(s->key_secret, 0, strlen(s->key_secret));
		free(s->key_secret);
	}
	memset(s, 0, sizeof(*s));
}
