/*
 * http_ref.h: libhttp-parser's reading of a response head, the reference
 * that the HTTP client's fast path (engine/http/http_head.c) must agree
 * with wherever it takes a head. Used by test_http_head.c and by the client's
 * fuzz target (tests/fuzz/fuzz_http_client.c).
 *
 * The reference is fed one byte at a time, so it also sees every name and
 * value in pieces, as the client's parser callbacks do across reads.
 */
#ifndef MM_TEST_HTTP_REF_H
#define MM_TEST_HTTP_REF_H

#include <http_parser.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http_head.h"

typedef struct http_ref {
	int complete;            /* the head ended */
	size_t head_len;         /* bytes fed when it ended */
	long code;
	uint64_t content_length; /* ULLONG_MAX in libhttp-parser when absent */
	int keep;
	char hdrs[8192];         /* "name\0value\0" each, as the client keeps them */
	size_t hlen;
	int state;               /* 0 before a name, 1 in a name, 2 in a value */
	int overflow;
} http_ref_t;

static int http_ref_put(http_parser *p, int state, const char *at, size_t n)
{
	http_ref_t *r = p->data;

	if (r->hlen + n + 1 > sizeof(r->hdrs)) {
		r->overflow = 1;
		return 0;
	}
	if (r->state != state && r->state != 0)
		r->hdrs[r->hlen++] = '\0';
	r->state = state;
	memcpy(r->hdrs + r->hlen, at, n);
	r->hlen += n;
	return 0;
}

static int http_ref_field(http_parser *p, const char *at, size_t n)
{
	return http_ref_put(p, 1, at, n);
}

static int http_ref_value(http_parser *p, const char *at, size_t n)
{
	return http_ref_put(p, 2, at, n);
}

static int http_ref_done(http_parser *p)
{
	http_ref_t *r = p->data;

	if (r->state == 2 && r->hlen < sizeof(r->hdrs))
		r->hdrs[r->hlen++] = '\0';
	r->complete = 1;
	r->code = p->status_code;
	r->content_length = p->content_length;
	r->keep = http_should_keep_alive(p);
	http_parser_pause(p, 1);
	return 0;
}

/* Feeds p[0..n) to libhttp-parser a byte at a time up to the end of the
 * head (or an error). */
static void http_ref_read(const char *p, size_t n, http_ref_t *r)
{
	static const http_parser_settings settings = {
		.on_header_field = http_ref_field,
		.on_header_value = http_ref_value,
		.on_headers_complete = http_ref_done,
	};
	http_parser hp;
	size_t i;

	memset(r, 0, sizeof(*r));
	http_parser_init(&hp, HTTP_RESPONSE);
	hp.data = r;
	for (i = 0; i < n && !r->complete; i++)
		if (http_parser_execute(&hp, &settings, p + i, 1) != 1 && !r->complete)
			break;
	r->head_len = i;
}

/*
 * Reads p[0..n) with the fast path and, when it takes the head, with
 * libhttp-parser, and says where they differ: NULL when they agree (or the
 * fast path left the head alone), else a description in why[0..cap).
 * *taken (when not NULL) says whether the fast path took it.
 */
static const char *http_ref_compare(const char *p, size_t n, int *taken, char *why, size_t cap)
{
	mm_http_head_t hd, hd0;
	mm_buf_t hdrs = {0};
	http_ref_t *r = malloc(sizeof(*r));
	int rc = mm_http_head_parse(p, n, &hd, &hdrs);
	/* Without a buffer for the lines (the client's read of an answer) the
	 * same head is taken or left, with the same fields. */
	int rc0 = mm_http_head_parse(p, n, &hd0, NULL);
	const char *out = NULL;

	if (taken)
		*taken = rc == 1;
	if (rc >= 0 && (rc0 != rc || (rc == 1 && (hd0.code != hd.code || hd0.keep != hd.keep ||
						  hd0.head_len != hd.head_len ||
						  hd0.body_len != hd.body_len)))) {
		snprintf(why, cap, "taken %d without the lines' buffer, %d with it", rc0, rc);
		out = why;
	} else if (rc == 1 && r != NULL) {
		http_ref_read(p, n, r);
		if (!r->complete)
			snprintf(why, cap, "libhttp-parser did not finish the head (%zu bytes)", r->head_len);
		else if (r->head_len != hd.head_len)
			snprintf(why, cap, "head of %zu bytes, libhttp-parser %zu", hd.head_len, r->head_len);
		else if (r->code != hd.code)
			snprintf(why, cap, "code %ld, libhttp-parser %ld", hd.code, r->code);
		else if (r->content_length != hd.body_len)
			snprintf(why, cap, "Content-Length %llu, libhttp-parser %llu",
				 (unsigned long long)hd.body_len, (unsigned long long)r->content_length);
		else if (r->keep != hd.keep)
			snprintf(why, cap, "keep-alive %d, libhttp-parser %d", hd.keep, r->keep);
		else if (r->overflow || r->hlen != hdrs.len || memcmp(r->hdrs, hdrs.p, hdrs.len) != 0)
			snprintf(why, cap, "header block of %zu bytes, libhttp-parser %zu", hdrs.len,
				 r->hlen);
		else
			why = NULL;
		out = why;
	} else if (rc < 0) {
		snprintf(why, cap, "out of memory");
		out = why;
	}
	free(r);
	mm_buf_free(&hdrs);
	return out;
}

#endif
