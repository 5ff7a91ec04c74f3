/* buf.c: growable byte buffer. Capacity doubles so appends are amortised O(1). */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "error.h"

int mm_buf_grow(mm_buf_t *b, size_t extra)
{
	size_t need = b->len + extra;
	size_t cap = b->cap ? b->cap : 64;
	uint8_t *p;

	if (need < b->len)
		return mm_diag_set(MM_ENOMEM, "buffer size overflow");
	if (need <= b->cap)
		return 0;
	while (cap < need)
		cap *= 2;
	p = realloc(b->p, cap);
	if (p == NULL)
		return mm_diag_set(MM_ENOMEM, "cannot grow buffer to %zu bytes", cap);
	b->p = p;
	b->cap = cap;
	return 0;
}

int mm_array_grow(void **p, size_t *cap, size_t need, size_t size, const char *what)
{
	size_t ncap = *cap ? *cap : 64;
	void *np;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	if (ncap > SIZE_MAX / size || (np = realloc(*p, ncap * size)) == NULL)
		return mm_diag_set(MM_ENOMEM, "cannot grow to %zu %s", need, what);
	*p = np;
	*cap = ncap;
	return 0;
}

int mm_buf_printf(mm_buf_t *b, const char *fmt, ...)
{
	size_t room = b->cap - b->len;
	va_list ap;
	int n, rc;

	/* Formatting straight into the spare capacity costs one pass when the
	 * text fits, which is the common case for a reused buffer; only a
	 * longer text is measured and formatted again. */
	va_start(ap, fmt);
	n = vsnprintf(room ? (char *)b->p + b->len : NULL, room, fmt, ap);
	va_end(ap);
	if (n < 0)
		return mm_diag_set(MM_EINVAL, "bad format string");
	if ((size_t)n >= room) {
		rc = mm_buf_reserve(b, (size_t)n + 1);
		if (rc)
			return rc;
		va_start(ap, fmt);
		vsnprintf((char *)b->p + b->len, (size_t)n + 1, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
	return 0;
}

int mm_buf_put_str(mm_buf_t *b, const char *s)
{
	return mm_buf_append(b, s, strlen(s));
}

/* "00" to "99": two digits per division by 100 halve the divisions of a
 * long number (a DynamoDB UpdateItem writes five numbers, among them a
 * writer's sequence of 13 digits and an expiry of 10). */
static const char dec_pairs[201] =
	"0001020304050607080910111213141516171819"
	"2021222324252627282930313233343536373839"
	"4041424344454647484950515253545556575859"
	"6061626364656667686970717273747576777879"
	"8081828384858687888990919293949596979899";

size_t mm_dec_u64(char out[20], uint64_t v)
{
	char tmp[20], *p = tmp + sizeof(tmp);
	size_t n;

	for (; v >= 100; v /= 100) {
		p -= 2;
		memcpy(p, dec_pairs + 2 * (v % 100), 2);
	}
	if (v >= 10) {
		p -= 2;
		memcpy(p, dec_pairs + 2 * v, 2);
	} else {
		*--p = (char)('0' + v);
	}
	n = (size_t)(tmp + sizeof(tmp) - p);
	memcpy(out, p, n);
	return n;
}

int mm_buf_put_dec_u64(mm_buf_t *b, uint64_t v)
{
	char tmp[20];

	return mm_buf_append(b, tmp, mm_dec_u64(tmp, v));
}

int mm_buf_put_dec_i64(mm_buf_t *b, int64_t v)
{
	int rc = 0;

	if (v < 0)
		rc = mm_buf_put_u8(b, '-');
	return rc ? rc : mm_buf_put_dec_u64(b, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
}

int mm_buf_put_u8(mm_buf_t *b, uint8_t v)
{
	return mm_buf_append(b, &v, 1);
}

int mm_buf_put_u16le(mm_buf_t *b, uint16_t v)
{
	uint8_t t[2] = {(uint8_t)v, (uint8_t)(v >> 8)};

	return mm_buf_append(b, t, 2);
}

int mm_buf_put_u32le(mm_buf_t *b, uint32_t v)
{
	uint8_t t[4];

	mm_set_u32le(t, v);
	return mm_buf_append(b, t, 4);
}

int mm_buf_put_u64le(mm_buf_t *b, uint64_t v)
{
	uint8_t t[8];

	mm_set_u64le(t, v);
	return mm_buf_append(b, t, 8);
}

void mm_buf_free(mm_buf_t *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}
