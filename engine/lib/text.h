/*
 * text.h: UTF-8 validation and base64, for dead-letter records, output and
 * the binary values of AWS answers, events and RPC messages.
 * Pure functions: any thread.
 */
#ifndef MM_TEXT_H
#define MM_TEXT_H

#include <stddef.h>

#include "buf.h"

/*
 * Checks the UTF-8 sequence starting at p (p[0] >= 0x80), with avail bytes
 * readable, against the well-formed byte sequences of Unicode table 3-7 (no
 * overlongs, encoded surrogates, code points above U+10FFFF or truncated
 * sequences). Returns its length (2..4) when well formed, otherwise minus the
 * length of its maximal ill-formed prefix (the lead byte and the continuation
 * bytes that were still acceptable), which is what one U+FFFD replaces.
 * Inline because the JSON scanner calls it for each non-ASCII character of a
 * string.
 */
static inline int mm_utf8_seq(const unsigned char *p, size_t avail)
{
	unsigned c = p[0], lo = 0x80, hi = 0xbf;
	size_t need, i;

	if (c >= 0xc2 && c <= 0xdf) {
		need = 1;
	} else if (c >= 0xe0 && c <= 0xef) {
		need = 2;
		if (c == 0xe0)
			lo = 0xa0; /* overlong */
		else if (c == 0xed)
			hi = 0x9f; /* surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 3;
		if (c == 0xf0)
			lo = 0x90; /* overlong */
		else if (c == 0xf4)
			hi = 0x8f; /* above U+10FFFF */
	} else {
		return -1;
	}
	for (i = 1; i <= need; i++) {
		if (i >= avail || p[i] < lo || p[i] > hi)
			return -(int)i;
		lo = 0x80;
		hi = 0xbf;
	}
	return (int)need + 1;
}

/* 1 if p[0..n) is well-formed UTF-8 (mm_utf8_seq's rules). */
int mm_utf8_valid(const char *p, size_t n);

/* The value of hexadecimal digit c (0-9, a-f, A-F), or -1. */
int mm_hex_digit(int c);

/* Appends the standard base64 (RFC 4648, padded) of p[0..n). */
int mm_base64_encode(const void *p, size_t n, mm_buf_t *out);

/* How strictly mm_base64_decode reads its input. */
enum {
	/* Standard alphabet, padded to a multiple of 4, and the bits a padded
	 * block leaves unused are zero: every byte string has exactly one
	 * accepted encoding, the one mm_base64_encode writes (AWS answers,
	 * stored bytes, Kinesis record data). */
	MM_BASE64_STRICT = 0,
	/* Standard or URL-safe alphabet (RFC 4648 section 5), padding optional,
	 * unused bits ignored: what proto3 JSON and Connect's GET accept. */
	MM_BASE64_LENIENT = 1,
};

/* Decodes base64 p[0..n) under flags (MM_BASE64_*) and appends the bytes to
 * out. Returns 0, MM_ECORRUPT for input the flags do not accept (the
 * diagnostics name the offset), or MM_ENOMEM; out may hold a partial result
 * after an error. */
int mm_base64_decode(const char *p, size_t n, unsigned flags, mm_buf_t *out);

#endif
