/*
 * buf.h: a growable byte buffer, growable arrays, and little-endian integer
 * helpers.
 *
 * Ownership: an mm_buf_t owns its bytes; mm_buf_free releases them. A zeroed
 * struct is a valid empty buffer. Encoders append to a caller-owned buffer,
 * so one buffer can be reused across many encodes (set len = 0 between).
 */
#ifndef MM_BUF_H
#define MM_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct mm_buf {
	uint8_t *p;
	size_t len;
	size_t cap;
} mm_buf_t;

/* Grows b to hold `extra` more bytes (the slow half of mm_buf_reserve).
 * Returns 0 or MM_ENOMEM. */
int mm_buf_grow(mm_buf_t *b, size_t extra);

/* Ensures room for `extra` more bytes. Returns 0 or MM_ENOMEM. Inline, as
 * mm_buf_append: the store's request building appends a few bytes at a
 * time, and the call and the capacity check cost more than the copy. */
static inline int mm_buf_reserve(mm_buf_t *b, size_t extra)
{
	return extra <= b->cap - b->len ? 0 : mm_buf_grow(b, extra);
}

/* Grows the array *p of *cap items of `size` bytes to hold at least need
 * (doubling from 64); *p and *cap change only on success. Returns 0 or
 * MM_ENOMEM with `what` (the items, for the message). */
int mm_array_grow(void **p, size_t *cap, size_t need, size_t size, const char *what);

/* Appends n bytes. Returns 0 or MM_ENOMEM. */
static inline int mm_buf_append(mm_buf_t *b, const void *p, size_t n)
{
	int rc;

	if (n > b->cap - b->len && (rc = mm_buf_grow(b, n)) != 0)
		return rc;
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	return 0;
}

/* Appends a printf-formatted string (without the NUL). Returns 0 or MM_ENOMEM. */
int mm_buf_printf(mm_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends a NUL-terminated string (without the NUL), or an integer in
 * decimal ASCII: the cheap forms of the printf calls that hot paths make.
 * Return 0 or MM_ENOMEM. */
int mm_buf_put_str(mm_buf_t *b, const char *s);
int mm_buf_put_dec_u64(mm_buf_t *b, uint64_t v);
int mm_buf_put_dec_i64(mm_buf_t *b, int64_t v);

/* Writes v in decimal ASCII to out, without a NUL; returns the length (1..20). */
size_t mm_dec_u64(char out[20], uint64_t v);

/* Appends little-endian integers. Return 0 or MM_ENOMEM. */
int mm_buf_put_u8(mm_buf_t *b, uint8_t v);
int mm_buf_put_u16le(mm_buf_t *b, uint16_t v);
int mm_buf_put_u32le(mm_buf_t *b, uint32_t v);
int mm_buf_put_u64le(mm_buf_t *b, uint64_t v);

/* Releases the bytes and zeroes the struct. */
void mm_buf_free(mm_buf_t *b);

static inline uint16_t mm_get_u16le(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t mm_get_u32le(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static inline uint64_t mm_get_u64le(const uint8_t *p)
{
	return (uint64_t)mm_get_u32le(p) | ((uint64_t)mm_get_u32le(p + 4) << 32);
}

static inline void mm_set_u32le(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static inline void mm_set_u64le(uint8_t *p, uint64_t v)
{
	mm_set_u32le(p, (uint32_t)v);
	mm_set_u32le(p + 4, (uint32_t)(v >> 32));
}

#endif
