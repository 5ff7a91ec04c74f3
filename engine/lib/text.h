/*
 * text.h: UTF-8 validation and base64, for dead-letter records and output.
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

#endif
