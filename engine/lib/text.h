/*
 * text.h: UTF-8 validation and base64, for dead-letter records, output and
 * the binary values of AWS answers, events and RPC messages.
 * Pure functions: any thread.
 */
#ifndef MM_TEXT_H
#define MM_TEXT_H

#include <stddef.h>

#include "buf.h"

/* 1 if p[0..n) is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
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
