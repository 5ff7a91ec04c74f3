/*
 * http_head.c: the head of a simple HTTP/1.1 response read in one pass
 * (http_head.h), the client's fast path in front of libhttp-parser.
 *
 * DynamoDB, Kinesis and the Lambda Runtime API answer with one shape: a
 * status line, a few header lines, a Content-Length and a small body.
 * libhttp-parser walks such a head a byte at a time through its state
 * machine and calls back for every name and value: about 6 500 instructions
 * for dynalite's 230 bytes, the largest part of the client's own work per
 * DynamoDB request once signing is left out (doc/performance-journal.md, "DynamoDB
 * requests: the fast path for answers"). Here each line is one loop over a
 * table of byte classes and each header one append.
 *
 * It takes only what it reads exactly as libhttp-parser does, and leaves
 * everything else to libhttp-parser, which then reads the same bytes from
 * the start as if nothing had looked at them:
 *  - the whole head, through its empty line, within the bytes given and
 *    within MM_HTTP_HEAD_MAX bytes;
 *  - the status line "HTTP/1.1 NNN reason", NNN from 200 to 999 but not 204
 *    or 304 (no interim answers; no code that libhttp-parser's framing
 *    treats apart), the reason of visible bytes, spaces and tabs;
 *  - header lines "name:value" ending in CRLF: the name a token (RFC 9110,
 *    5.6.2), the value after the spaces and tabs that open it (skipped, as
 *    libhttp-parser skips them) not empty, of visible bytes, bytes from
 *    0x80 up, spaces and tabs (those at its end stay in it, as they do in
 *    libhttp-parser's);
 *  - exactly one Content-Length of at most 18 digits, no Transfer-Encoding,
 *    Upgrade or Proxy-Connection, and a Connection header only of
 *    "keep-alive" or "close" (any case), which libhttp-parser reads the same
 *    way: keep-alive unless "close".
 * A line folded onto the next, a bare LF, a control byte, HTTP/1.0, a
 * chunked body or a body up to the end of the connection all go to
 * libhttp-parser. The unit test (tests/unit/test_http_head.c) and the HTTP
 * client's fuzz target compare every head this takes with what
 * libhttp-parser makes of the same bytes.
 */
#include "http_head.h"

#include <strings.h>

#include "../lib/error.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

enum { C_TOKEN = 1, C_TEXT = 2 };

/* C_TOKEN: tchar; C_TEXT: a byte of a reason phrase or header value (HTAB,
 * SP, VCHAR, obs-text). */
static const uint8_t cls[256] = {
	['\t'] = C_TEXT,
	[' '] = C_TEXT,
	['!'] = C_TOKEN | C_TEXT,
	['"'] = C_TEXT,
	['#'] = C_TOKEN | C_TEXT,
	['$'] = C_TOKEN | C_TEXT,
	['%'] = C_TOKEN | C_TEXT,
	['&'] = C_TOKEN | C_TEXT,
	['\''] = C_TOKEN | C_TEXT,
	['('] = C_TEXT,
	[')'] = C_TEXT,
	['*'] = C_TOKEN | C_TEXT,
	['+'] = C_TOKEN | C_TEXT,
	[','] = C_TEXT,
	['-'] = C_TOKEN | C_TEXT,
	['.'] = C_TOKEN | C_TEXT,
	['/'] = C_TEXT,
	['0' ... '9'] = C_TOKEN | C_TEXT,
	[':' ... '@'] = C_TEXT,
	['A' ... 'Z'] = C_TOKEN | C_TEXT,
	['['] = C_TEXT,
	['\\'] = C_TEXT,
	[']'] = C_TEXT,
	['^'] = C_TOKEN | C_TEXT,
	['_'] = C_TOKEN | C_TEXT,
	['`'] = C_TOKEN | C_TEXT,
	['a' ... 'z'] = C_TOKEN | C_TEXT,
	['{'] = C_TEXT,
	['|'] = C_TOKEN | C_TEXT,
	['}'] = C_TEXT,
	['~'] = C_TOKEN | C_TEXT,
	[0x80 ... 0xff] = C_TEXT,
};

/* The end of a run of C_TEXT bytes from q, one byte at a time. */
static const uint8_t *text_tail(const uint8_t *q, const uint8_t *end)
{
	while (q < end && (cls[*q] & C_TEXT))
		q++;
	return q;
}

#define ONES UINT64_C(0x0101010101010101)
#define HIGH UINT64_C(0x8080808080808080)

/* The end of a run of C_TEXT bytes from q: sixteen bytes at a time (SSE2)
 * and then eight while none is a control byte or DEL (a tab, rare in
 * answers, ends the fast steps), then one at a time. The eight-byte test is
 * exact: x - 0x20 sets a byte's high bit under ~x only where the byte is
 * below 0x20 (Hacker's Delight, 6-1). With SSE2 the compares are signed, so
 * a byte from 0x80 up (obs-text, allowed) is negative and is left out of
 * "below 0x20" by its compare with -1. Either way the bytes after the fast
 * steps are classed one by one, so the result is the byte loop's. */
static const uint8_t *text_end(const uint8_t *q, const uint8_t *end)
{
	uint64_t w, d;

#if defined(__SSE2__)
	const __m128i sp = _mm_set1_epi8(0x20), neg = _mm_set1_epi8(-1), del = _mm_set1_epi8(0x7f);

	while (end - q >= 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)q);
		__m128i ctl = _mm_and_si128(_mm_cmplt_epi8(v, sp), _mm_cmpgt_epi8(v, neg));
		unsigned m = (unsigned)_mm_movemask_epi8(_mm_or_si128(ctl, _mm_cmpeq_epi8(v, del)));

		if (m)
			return text_tail(q + __builtin_ctz(m), end);
		q += 16;
	}
#endif
	while (end - q >= 8) {
		memcpy(&w, q, 8);
		d = w ^ (ONES * 0x7f);
		if (((w - ONES * 0x20) & ~w & HIGH) | ((d - ONES) & ~d & HIGH))
			break;
		q += 8;
	}
	return text_tail(q, end);
}

/* The end of a header name (a run of C_TOKEN bytes) from q. Names are
 * letters, digits and '-' in practice: with SSE2 sixteen bytes at a time are
 * checked for those (a subset of the tokens), and the byte loop classes what
 * follows the first other byte, so the result is the byte loop's. */
static const uint8_t *token_end(const uint8_t *q, const uint8_t *end)
{
#if defined(__SSE2__)
	const __m128i lo = _mm_set1_epi8('a' - 1), hi = _mm_set1_epi8('z' + 1),
		      d0 = _mm_set1_epi8('0' - 1), d9 = _mm_set1_epi8('9' + 1),
		      dash = _mm_set1_epi8('-'), up = _mm_set1_epi8(0x20);

	while (end - q >= 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)q);
		__m128i l = _mm_or_si128(v, up); /* A-Z to a-z; no other byte lands in a-z */
		__m128i ok = _mm_or_si128(
			_mm_and_si128(_mm_cmpgt_epi8(l, lo), _mm_cmplt_epi8(l, hi)),
			_mm_or_si128(_mm_and_si128(_mm_cmpgt_epi8(v, d0), _mm_cmplt_epi8(v, d9)),
				     _mm_cmpeq_epi8(v, dash)));
		unsigned m = ~(unsigned)_mm_movemask_epi8(ok) & 0xffff;

		if (m) {
			q += __builtin_ctz(m);
			break;
		}
		q += 16;
	}
#endif
	while (q < end && (cls[*q] & C_TOKEN))
		q++;
	return q;
}

/* 1 when name[0..len) is `lower` in any case. lower holds letters and '-'
 * only: a byte b with b | 0x20 equal to a lower-case letter is that letter
 * in either case, and the other byte with b | 0x20 == '-' is CR, which
 * neither a name nor a value holds here, so or-ing 0x20 into every byte
 * compares exactly. Names of 8 bytes and more (three a DynamoDB answer) are
 * compared as their first and last eight bytes, without strncasecmp's call. */
static int name_is(const uint8_t *name, size_t len, const char *lower, size_t want)
{
	const uint64_t up = ONES * 0x20;
	uint64_t a, b, x, y;

	if (len != want || (name[0] | 0x20) != (uint8_t)lower[0])
		return 0;
	if (want < 8)
		return strncasecmp((const char *)name, lower, want) == 0;
	memcpy(&a, name, 8);
	memcpy(&b, name + want - 8, 8);
	memcpy(&x, lower, 8);
	memcpy(&y, lower + want - 8, 8);
	return ((a | up) == x) & ((b | up) == y);
}

/* The value of a header libhttp-parser gives a meaning: 1 to take the head
 * (with *len or *close set), 0 to leave it to libhttp-parser. */
static int framing(const uint8_t *name, size_t nl, const uint8_t *v, size_t vl, uint64_t *len,
		   int *close)
{
	size_t i;

	switch (nl) {
	case 14:
		if (!name_is(name, nl, "content-length", 14))
			return 1;
		if (*len != UINT64_MAX || vl > 18)
			return 0; /* libhttp-parser refuses a second one */
		*len = 0;
		for (i = 0; i < vl; i++) {
			if (v[i] < '0' || v[i] > '9')
				return 0;
			*len = *len * 10 + (uint64_t)(v[i] - '0');
		}
		return 1;
	case 10:
		if (!name_is(name, nl, "connection", 10))
			return 1;
		if (name_is(v, vl, "close", 5))
			*close = 1;
		else if (!name_is(v, vl, "keep-alive", 10))
			return 0; /* "upgrade", a list of tokens */
		return 1;
	case 7:
		return !name_is(name, nl, "upgrade", 7);
	case 16:
		return !name_is(name, nl, "proxy-connection", 16);
	case 17:
		return !name_is(name, nl, "transfer-encoding", 17);
	default:
		return 1;
	}
}

int mm_http_head_parse(const char *p, size_t n, mm_http_head_t *out, mm_buf_t *hdrs)
{
	const uint8_t *s = (const uint8_t *)p, *end, *q, *name, *v;
	uint64_t len = UINT64_MAX;
	int close = 0, rc;
	size_t nl, vl;
	long code;

	end = s + (n < MM_HTTP_HEAD_MAX ? n : MM_HTTP_HEAD_MAX);
	if (end - s < 13 || memcmp(s, "HTTP/1.1 ", 9) != 0 || s[9] < '0' || s[9] > '9' ||
	    s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9' || s[12] != ' ')
		return 0;
	code = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
	if (code < 200 || code == 204 || code == 304)
		return 0;
	q = text_end(s + 13, end);
	if (end - q < 2 || q[0] != '\r' || q[1] != '\n')
		return 0;
	for (q += 2;;) {
		if (end - q < 2)
			return 0;
		if (q[0] == '\r') {
			if (q[1] != '\n')
				return 0;
			q += 2;
			break;
		}
		name = q;
		q = token_end(q, end);
		nl = (size_t)(q - name);
		if (nl == 0 || q == end || *q != ':')
			return 0;
		for (q++; q < end && (*q == ' ' || *q == '\t'); q++)
			;
		v = q;
		q = text_end(q, end);
		vl = (size_t)(q - v);
		if (vl == 0 || end - q < 2 || q[0] != '\r' || q[1] != '\n' ||
		    !framing(name, nl, v, vl, &len, &close))
			return 0;
		q += 2;
		if (hdrs == NULL)
			continue;
		if ((rc = mm_buf_reserve(hdrs, nl + vl + 2)) != 0)
			return rc;
		memcpy(hdrs->p + hdrs->len, name, nl);
		hdrs->p[hdrs->len + nl] = '\0';
		memcpy(hdrs->p + hdrs->len + nl + 1, v, vl);
		hdrs->p[hdrs->len + nl + 1 + vl] = '\0';
		hdrs->len += nl + vl + 2;
	}
	if (len == UINT64_MAX)
		return 0; /* a body up to the end of the connection */
	out->code = code;
	out->keep = !close;
	out->head_len = (size_t)(q - s);
	out->body_len = len;
	return 1;
}
