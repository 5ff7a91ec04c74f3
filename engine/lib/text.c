/*
 * text.c: UTF-8 validation (RFC 3629 table) and base64 (RFC 4648).
 *
 * One base64 decoder serves every reader. The strict mode accepts only the
 * canonical encoding, so stored bytes and AWS data that decode also encode
 * back to the same text (the fuzzer checks it); the lenient mode accepts
 * what proto3 JSON allows (either alphabet, padding optional).
 */
#include "text.h"

#include <stdint.h>

#include "error.h"

int mm_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n;
	int r;

	while (p < end) {
		if (*p < 0x80) {
			p++;
			continue;
		}
		if ((r = mm_utf8_seq(p, (size_t)(end - p))) < 0)
			return 0;
		p += r;
	}
	return 1;
}

/* Whole groups of three bytes in a loop without branches (a flush intent
 * encodes every delta it holds, about 60 bytes each), then the one padded
 * group, if any. */
int mm_base64_encode(const void *src, size_t n, mm_buf_t *out)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const uint8_t *p = src;
	size_t olen = (n + 2) / 3 * 4, i = 0;
	char *o;
	uint32_t v;
	int rc = mm_buf_reserve(out, olen);

	if (rc || n == 0)
		return rc;
	o = (char *)out->p + out->len;
	for (; n - i >= 3; i += 3, o += 4) {
		v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		o[0] = tab[v >> 18];
		o[1] = tab[(v >> 12) & 63];
		o[2] = tab[(v >> 6) & 63];
		o[3] = tab[v & 63];
	}
	if (i < n) {
		v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
		o[0] = tab[v >> 18];
		o[1] = tab[(v >> 12) & 63];
		o[2] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
		o[3] = '=';
	}
	out->len += olen;
	return 0;
}

int mm_hex_digit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Value + 1 of each base64 character, 0 for none; the URL-safe pair is
 * marked with B64_URL so the strict mode can refuse it. */
#define B64_URL 0x80
static const uint8_t B64[256] = {
	['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,
	['H'] = 8,  ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14,
	['O'] = 15, ['P'] = 16, ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21,
	['V'] = 22, ['W'] = 23, ['X'] = 24, ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28,
	['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35,
	['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42,
	['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48, ['w'] = 49,
	['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
	['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63,
	['/'] = 64, ['-'] = B64_URL | 63, ['_'] = B64_URL | 64,
};

int mm_base64_decode(const char *p, size_t n, unsigned flags, mm_buf_t *out)
{
	int lenient = (flags & MM_BASE64_LENIENT) != 0;
	size_t data = n, i;
	uint32_t acc = 0;
	int bits = 0, rc;

	/* The data ends where the padding starts: at most two '=' in the
	 * strict mode, which also wants the whole text in blocks of four. */
	while (data > 0 && p[data - 1] == '=' && (lenient || n - data < 2))
		data--;
	if (!lenient && n % 4 != 0)
		return mm_diag_set(MM_ECORRUPT, "base64: length %zu is not a multiple of 4", n);
	if (data % 4 == 1)
		return mm_diag_set(MM_ECORRUPT, "base64: %zu characters cannot end a block", data % 4);
	if ((rc = mm_buf_reserve(out, data / 4 * 3 + 2)))
		return rc;
	for (i = 0; i < data; i++) {
		unsigned v = B64[(unsigned char)p[i]];

		if (v == 0 || (!lenient && (v & B64_URL)))
			return mm_diag_set(MM_ECORRUPT, "base64: bad character at offset %zu", i);
		acc = (acc << 6) | ((v & ~(unsigned)B64_URL) - 1);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out->p[out->len++] = (uint8_t)(acc >> bits);
		}
	}
	/* Canonical only: the bits a partial block leaves unused must be 0. */
	if (!lenient && (acc & ((1u << bits) - 1)) != 0)
		return mm_diag_set(MM_ECORRUPT, "base64: non-canonical padding at offset %zu", i);
	return 0;
}
