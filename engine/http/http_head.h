/*
 * http_head.h: the head of a simple HTTP/1.1 response read in one pass, the
 * client's fast path in front of libhttp-parser (http_head.c explains what
 * it takes and what it leaves to libhttp-parser).
 *
 * Pure C, any thread.
 */
#ifndef MM_HTTP_HEAD_H
#define MM_HTTP_HEAD_H

#include <stddef.h>
#include <stdint.h>

#include "../lib/buf.h"

/* The longest head the fast path reads; a longer one goes to libhttp-parser. */
#define MM_HTTP_HEAD_MAX 4096

typedef struct mm_http_head {
	long code;         /* the status code, 200 to 999 */
	int keep;          /* the connection may be reused ("Connection: close" absent) */
	size_t head_len;   /* bytes of the status line and header lines, the empty line included */
	uint64_t body_len; /* the Content-Length: body bytes after the head */
} mm_http_head_t;

/*
 * Reads the head at the start of p[0..n). Returns 1 when it is whole and of
 * the simple shape: *out is filled and the header lines are appended to hdrs
 * as "name\0value\0" each, as libhttp-parser's callbacks give them (hdrs
 * NULL: only checked; the client keeps the head as it came and splits it on
 * the first lookup, since few answers are asked for a header). Returns
 * 0 for anything else (incomplete, another shape, malformed): then hdrs may
 * hold part of the lines and the caller empties it before libhttp-parser
 * reads the same bytes. Returns MM_ENOMEM when hdrs cannot grow.
 */
int mm_http_head_parse(const char *p, size_t n, mm_http_head_t *out, mm_buf_t *hdrs);

#endif
