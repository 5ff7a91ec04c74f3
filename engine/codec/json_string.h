/*
 * json_string.h: the string lexer of the JSON scanner, included by json.c
 * alone. Its functions are static (the hot ones always_inline) so that they
 * compile inside the scanner's translation unit, as they did when they were
 * written there: the compiler inlines them into the walk and the flat fast
 * path exactly as before, and splitting them out costs no instruction.
 *
 * Strings are the bulk of an event, so their bodies are skipped a block at a
 * time (16 bytes with SSE2, 8 with a portable SWAR test): one mask flags every
 * byte that is '"', '\\', a control character (< 0x20) or non-ASCII
 * (>= 0x80), the scanner jumps to the first flagged byte, and when that byte
 * is the closing quote (the common case) the string is done without looking
 * at it again. Fewer than a block of bytes before the end of the document
 * are tested by re-reading the document's last block and shifting the mask,
 * so short strings near the end need no byte loop either. UTF-8 is checked
 * only for bytes >= 0x80, against the well-formed byte sequences of Unicode
 * table 3-7, which excludes overlongs, encoded surrogates, code points above
 * U+10FFFF and truncated sequences.
 * Also here: the byte classes, escape decoding (decode_escape), the
 * "unexpected byte" errors, literals, whitespace and the comparison of an
 * escaped key with a wanted name.
 */
#ifndef MM_JSON_STRING_H
#define MM_JSON_STRING_H

#include <stdint.h>
#include <string.h>

#include "../lib/error.h"
#include "../lib/text.h"
#include "json_lex.h"

/* Byte classes inside a string body; 0 is "copy as is". */
enum { C_PLAIN = 0, C_QUOTE, C_BSLASH, C_CTRL, C_HIGH };

static const unsigned char str_class[256] = {
	[0x00 ... 0x1f] = C_CTRL,
	['"'] = C_QUOTE,
	['\\'] = C_BSLASH,
	[0x80 ... 0xff] = C_HIGH,
};

/*
 * special_mask(p, &quotes) looks at one block of BLOCK bytes and returns a
 * mask flagging the bytes that need attention in a string body ('"', '\\',
 * < 0x20, >= 0x80), and in *quotes the bytes equal to '"'. Bit i << MASK_SHIFT
 * stands for byte i. With SSE2 (every x86-64) a block is 16 bytes: a signed
 * compare with 0x20 catches both control and non-ASCII bytes. Elsewhere it is
 * a 64-bit SWAR test, where the zero-byte trick flags the lowest matching
 * byte exactly (its borrows only ever run towards higher bytes), which is all
 * the scanner uses.
 */
#if defined(__SSE2__) && !defined(MM_JSON_PORTABLE) /* the latter to test the SWAR path */
#include <emmintrin.h>

#define BLOCK 16
#define MASK_SHIFT 0

static inline uint64_t special_mask(const unsigned char *p, uint64_t *quotes)
{
	__m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
	__m128i q = _mm_cmpeq_epi8(x, _mm_set1_epi8('"'));
	__m128i o = _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('\\')),
				 _mm_cmplt_epi8(x, _mm_set1_epi8(0x20)));

	*quotes = (unsigned)_mm_movemask_epi8(q);
	return *quotes | (unsigned)_mm_movemask_epi8(o);
}

/* special_mask without the separate quote mask. */
static inline uint64_t any_special(const unsigned char *p)
{
	__m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
	__m128i o = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')),
					      _mm_cmpeq_epi8(x, _mm_set1_epi8('\\'))),
				 _mm_cmpgt_epi8(_mm_set1_epi8(0x20), x));

	return (unsigned)_mm_movemask_epi8(o);
}
#else
#define BLOCK 8
#define MASK_SHIFT 3
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

static inline uint64_t special_mask(const unsigned char *p, uint64_t *quotes)
{
	uint64_t x, q, b;

	memcpy(&x, p, 8);
	q = x ^ (ONES * '"');
	b = x ^ (ONES * '\\');
	*quotes = (q - ONES) & ~q & HIGHS;
	return (*quotes | ((b - ONES) & ~b) | ((x - ONES * 0x20) & ~x) | x) & HIGHS;
}

static inline uint64_t any_special(const unsigned char *p)
{
	uint64_t quotes;

	return special_mask(p, &quotes);
}
#endif

static inline int hex_value(unsigned char c)
{
	if (is_digit(c))
		return c - '0';
	c |= 0x20;
	if ((unsigned)(c - 'a') < 6)
		return c - 'a' + 10;
	return -1;
}

static size_t utf8_put(char *out, uint32_t cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* Why decode_escape rejected an escape; the caller turns it into a message. */
enum { ESC_TRUNCATED = -1, ESC_BAD = -2, ESC_BAD_HEX = -3, ESC_LONE = -4 };

static int hex4(const unsigned char *p, uint32_t *out)
{
	int a = hex_value(p[0]), b = hex_value(p[1]), c = hex_value(p[2]), d = hex_value(p[3]);

	if ((a | b | c | d) < 0)
		return -1;
	*out = (uint32_t)(a << 12 | b << 8 | c << 4 | d);
	return 0;
}

/*
 * Decodes the escape at p (p[0] == '\\'), reading no further than end. On
 * success writes its UTF-8 (1..4 bytes) to out, sets *next past the escape
 * (a surrogate pair is one escape of 12 bytes) and returns the byte count;
 * otherwise returns an ESC_* code.
 */
static int decode_escape(const unsigned char *p, const unsigned char *end, char out[4],
			 const unsigned char **next)
{
	uint32_t cp, lo;

	if (end - p < 2)
		return ESC_TRUNCATED;
	switch (p[1]) {
	case '"':
	case '\\':
	case '/':
		out[0] = (char)p[1];
		break;
	case 'b':
		out[0] = '\b';
		break;
	case 'f':
		out[0] = '\f';
		break;
	case 'n':
		out[0] = '\n';
		break;
	case 'r':
		out[0] = '\r';
		break;
	case 't':
		out[0] = '\t';
		break;
	case 'u':
		if (end - p < 6)
			return ESC_TRUNCATED;
		if (hex4(p + 2, &cp))
			return ESC_BAD_HEX;
		if (cp >= 0xdc00 && cp <= 0xdfff)
			return ESC_LONE;
		if (cp < 0xd800 || cp > 0xdbff) {
			*next = p + 6;
			return (int)utf8_put(out, cp);
		}
		/* A high surrogate must be followed at once by a low one. */
		if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || hex4(p + 8, &lo) ||
		    lo < 0xdc00 || lo > 0xdfff)
			return ESC_LONE;
		*next = p + 12;
		return (int)utf8_put(out, 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00));
	default:
		return ESC_BAD;
	}
	*next = p + 2;
	return 1;
}

/* Formats "unexpected ..." for the byte at q (or the end of input). */
static int fail_at(const char *base, const unsigned char *q, const unsigned char *end)
{
	size_t off = (size_t)((const char *)q - base);

	if (q >= end)
		return mm_diag_set(MM_EJSON, "json: unexpected end of input at offset %zu", off);
	if (*q > 0x20 && *q < 0x7f)
		return mm_diag_set(MM_EJSON, "json: unexpected character '%c' at offset %zu", *q, off);
	return mm_diag_set(MM_EJSON, "json: unexpected byte 0x%02x at offset %zu", *q, off);
}

static int fail_escape(int why, const char *base, const unsigned char *q)
{
	size_t off = (size_t)((const char *)q - base);

	switch (why) {
	case ESC_TRUNCATED:
		return mm_diag_set(MM_EJSON, "json: truncated escape at offset %zu", off);
	case ESC_BAD_HEX:
		return mm_diag_set(MM_EJSON, "json: \\u needs 4 hex digits at offset %zu", off);
	case ESC_LONE:
		return mm_diag_set(MM_EJSON, "json: lone surrogate escape at offset %zu", off);
	default:
		return mm_diag_set(MM_EJSON, "json: invalid escape at offset %zu", off);
	}
}

/*
 * win_mask(p) flags the special bytes (as any_special does) of the WIN bytes
 * at p, bit i << MASK_SHIFT for p[i], every one of them exactly: the flat
 * path takes a member's key and value from the same mask, so it uses more
 * than its lowest bit. With SSE2 a window is two blocks, 32 bytes, which
 * holds most members of an event; the portable build tests 8 bytes with a
 * SWAR form that has no borrow between bytes (its windows hold few members,
 * so it mostly takes the per-string path: it exists to be correct).
 */
#if BLOCK == 16
#define WIN 32

static inline uint64_t win_mask(const unsigned char *p)
{
	return any_special(p) | any_special(p + BLOCK) << BLOCK;
}
#else
#define WIN 8
#define LOWS (ONES * 0x7f)

static inline uint64_t win_mask(const unsigned char *p)
{
	uint64_t x, q, b, low;

	memcpy(&x, p, 8);
	low = x & LOWS;
	/* A byte's low seven bits plus 0x7f carry into its top bit unless
	 * they are zero, and never into the next byte. */
	q = (x ^ (ONES * '"')) & LOWS;
	b = (x ^ (ONES * '\\')) & LOWS;
	q = ~((q + LOWS) | (x ^ (ONES * '"')));
	b = ~((b + LOWS) | (x ^ (ONES * '\\')));
	/* Below 0x20: the low bits plus 0x60 stay under 0x80. */
	return (q | b | ~(low + ONES * 0x60) | x) & HIGHS;
}
#endif

/*
 * On x86-64, the flat path is also compiled for AVX2 (with BMI1's bit
 * instructions), which tests a whole window at once; mm_json_plan chooses it
 * when the CPU has both (MM_JSON_WIDE names the target).
 */
#if BLOCK == 16 && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define MM_JSON_WIDE "avx2,bmi"

static inline __attribute__((always_inline, target(MM_JSON_WIDE))) uint64_t
win_mask_wide(const unsigned char *p)
{
	__m256i x = _mm256_loadu_si256((const __m256i *)(const void *)p);
	__m256i o = _mm256_or_si256(_mm256_or_si256(_mm256_cmpeq_epi8(x, _mm256_set1_epi8('"')),
						     _mm256_cmpeq_epi8(x, _mm256_set1_epi8('\\'))),
				    _mm256_cmpgt_epi8(_mm256_set1_epi8(0x20), x));

	return (uint32_t)_mm256_movemask_epi8(o);
}
#endif

/*
 * special_mask for the last 1..BLOCK-1 bytes of the document, p[0..end-p).
 * Bits past the end are never set, so a zero mask means the string is not
 * terminated. With SSE2 the document's last block is re-read and the bytes
 * before p shifted out: byte compares cannot leak into their neighbours. The
 * SWAR test can (a borrow from a '"' just before p would flag the byte after
 * it), so it, and documents shorter than a block, test a padded copy.
 */
static inline uint64_t tail_mask(const char *base, const unsigned char *p,
				 const unsigned char *end, uint64_t *quotes)
{
	unsigned char pad[BLOCK];
	uint64_t m;

#if BLOCK == 16
	if (end - (const unsigned char *)base >= BLOCK) {
		int skip = BLOCK - (int)(end - p);

		m = special_mask(end - BLOCK, quotes) >> skip;
		*quotes >>= skip;
		return m;
	}
#else
	(void)base;
#endif
	/* Spaces are plain string bytes. */
	memset(pad, ' ', BLOCK);
	memcpy(pad, p, (size_t)(end - p));
	m = special_mask(pad, quotes);
	return m & ((1ULL << ((end - p) << MASK_SHIFT)) - 1);
}

/*
 * The rare cases of a string body: the byte at p is a backslash, a control
 * character or non-ASCII. Validates it and returns the position after it, or
 * NULL after setting the diag.
 */
static __attribute__((noinline)) const unsigned char *
string_special(const char *base, const unsigned char *p, const unsigned char *end, int *escaped,
	       int *rc)
{
	const unsigned char *next;
	char tmp[4];
	int r;

	switch (str_class[*p]) {
	case C_BSLASH:
		r = decode_escape(p, end, tmp, &next);
		if (r < 0) {
			*rc = fail_escape(r, base, p);
			return NULL;
		}
		*escaped = 1;
		return next;
	case C_CTRL:
		*rc = mm_diag_set(MM_EJSON, "json: control character 0x%02x in string at offset %zu",
				  *p, (size_t)((const char *)p - base));
		return NULL;
	default:
		r = mm_utf8_seq(p, (size_t)(end - p));
		if (r < 0) {
			*rc = mm_diag_set(MM_EUTF8, "json: invalid UTF-8 at offset %zu",
					  (size_t)((const char *)p - base));
			return NULL;
		}
		return p + r;
	}
}

/*
 * Validates a string body that starts at *pp (just after the opening quote).
 * On success sets *pp to the closing quote, sets *escaped when a backslash
 * was seen and returns 0. Inlined: this loop is most of a scan's time, and
 * the common case (plain ASCII up to the quote) must not pay for a call.
 */
static inline __attribute__((always_inline)) int
scan_string(const char *base, const unsigned char **pp, const unsigned char *end, int *escaped)
{
	const unsigned char *p = *pp;
	uint64_t m, quotes;
	int rc = 0;

	for (;;) {
		if (end - p >= BLOCK) {
			m = special_mask(p, &quotes);
			if (m == 0) {
				p += BLOCK;
				continue;
			}
		} else {
			m = p < end ? tail_mask(base, p, end, &quotes) : 0;
			if (m == 0)
				return fail_at(base, end, end);
		}
		p += __builtin_ctzll(m) >> MASK_SHIFT;
		/* When the first special byte is the quote we are done without
		 * reloading it. */
		if (m & (0 - m) & quotes) {
			*pp = p;
			return 0;
		}
		p = string_special(base, p, end, escaped, &rc);
		if (p == NULL)
			return rc;
	}
}

/* Matches the literal lit at p; returns the end or NULL with *bad set. */
static inline const unsigned char *scan_literal(const unsigned char *p, const unsigned char *end,
						const char *lit, size_t len,
						const unsigned char **bad)
{
	size_t i;

	if ((size_t)(end - p) >= len && memcmp(p, lit, len) == 0)
		return p + len;
	for (i = 0; p + i < end && p[i] == (unsigned char)lit[i]; i++)
		;
	*bad = p + i;
	return NULL;
}

static inline const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end)
{
	while (p < end && *p <= ' ' && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
		p++;
	return p;
}

/* Compares the escaped key body k[0..klen) (already validated) with name. */
static int key_equal_escaped(const unsigned char *k, size_t klen, const char *name, size_t nlen)
{
	const unsigned char *end = k + klen, *next;
	size_t j = 0;
	char tmp[4];
	int r;

	while (k < end) {
		if (*k != '\\') {
			if (j == nlen || (unsigned char)name[j] != *k)
				return 0;
			j++;
			k++;
			continue;
		}
		r = decode_escape(k, end, tmp, &next);
		if (r < 0 || nlen - j < (size_t)r || memcmp(name + j, tmp, (size_t)r) != 0)
			return 0;
		j += (size_t)r;
		k = next;
	}
	return j == nlen;
}


#endif
