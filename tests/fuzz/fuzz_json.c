/*
 * fuzz_json.c: arbitrary bytes into the JSON scanner, the SAX walk and the
 * string helpers.
 *
 * Checked on every input (a violation aborts, so libFuzzer reports it along
 * with ASan/UBSan findings):
 *   - scan returns 0 or one of ENOTOBJ, EJSON, EUTF8, and the SAX walk agrees
 *     with it (parse accepts any value, so ENOTOBJ means parse succeeds);
 *   - scan with three requested fields differs from a plain scan only by a
 *     duplicate-key error; found spans lie inside the input, strings
 *     unescape, numbers convert (or overflow with ERANGE);
 *   - the walk's begin/end callbacks balance and never nest past the limit;
 *   - quoting the input always yields a JSON string that scans and
 *     unescapes;
 *   - the scan's fast path for flat objects agrees with the general walk
 *     (mm_json_scan_reference) on the result, the error message and every
 *     field, with a requested name given twice, and so does the flat path
 *     compiled for the baseline where the scan takes AVX2's; the Lua
 *     path's shortcut (mm_json_scan_flat) takes only what the scan
 *     accepts, with its fields, and answers alike on both codes; the input is also tried
 *     wrapped as {"entity_id":"<input>",...} so that arbitrary bytes reach
 *     the fast path's string handling;
 *   - the planned scan agrees with the walk when asked for names taken from
 *     the input's own strings, and for the first of them a byte shorter.
 */
#define _GNU_SOURCE /* memmem */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/json.h"
#include "lib/buf.h"
#include "lib/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct counts {
	long tokens;
	int depth, max_depth;
};

static int c_null(void *ud)
{
	((struct counts *)ud)->tokens++;
	return 0;
}

static int c_bool(void *ud, int v)
{
	((struct counts *)ud)->tokens++;
	return 0;
}

static int c_number(void *ud, const char *raw, size_t len)
{
	int is_int, rc;
	int64_t i;
	double d;

	rc = mm_json_number(raw, len, &is_int, &i, &d);
	if (rc != 0 && rc != MM_ERANGE)
		abort();
	((struct counts *)ud)->tokens++;
	return 0;
}

static int c_string(void *ud, const char *s, size_t len)
{
	((struct counts *)ud)->tokens++;
	return 0;
}

static int c_begin(void *ud, int is_object)
{
	struct counts *c = ud;

	if (++c->depth > c->max_depth)
		c->max_depth = c->depth;
	c->tokens++;
	return 0;
}

static int c_end(void *ud, int is_object)
{
	struct counts *c = ud;

	if (--c->depth < 0)
		abort();
	return 0;
}

static const mm_json_visitor_t counter = {
	.on_null = c_null,
	.on_bool = c_bool,
	.on_number = c_number,
	.on_string = c_string,
	.on_key = c_string,
	.on_begin = c_begin,
	.on_end = c_end,
};

static void check_field(const mm_json_field_t *f, const uint8_t *data, size_t size, mm_buf_t *tmp)
{
	int is_int, rc;
	int64_t i;
	double d;

	if (f->type == MM_JSON_ABSENT)
		return;
	if (f->p < (const char *)data || f->p + f->len > (const char *)data + size)
		abort();
	switch (f->type) {
	case MM_JSON_STRING:
		tmp->len = 0;
		if (mm_json_unescape(f->p, f->len, tmp) != 0 || (!f->escaped && tmp->len != f->len))
			abort();
		break;
	case MM_JSON_NUMBER:
		rc = mm_json_number(f->p, f->len, &is_int, &i, &d);
		if (rc != 0 && rc != MM_ERANGE)
			abort();
		break;
	default:
		break;
	}
}

/* mm_json_scan and mm_json_scan_reference give the same answer, and
 * mm_json_scan_flat agrees with them where it answers. */
static void check_fast_path(const char *doc, size_t n)
{
	mm_json_field_t a[4] = {
		{.name = "entity_id", .name_len = 9},
		{.name = "user_id", .name_len = 7},
		{.name = "entity_id", .name_len = 9},
		{.name = "", .name_len = 0},
	};
	mm_json_field_t b[4], c[4], d[4], e[4];
	mm_json_plan_t plan;
	char msg[256], base_msg[256];
	int ra, rb, rc, rd, re, i;

	memcpy(b, a, sizeof(a));
	memcpy(c, a, sizeof(a));
	memcpy(d, a, sizeof(a));
	memcpy(e, a, sizeof(a));
	/* The baseline's code where mm_json_scan may take AVX2's. */
	mm_json_plan(&plan, d, 4);
	plan.wide = 0;
	rd = mm_json_scan_planned(&plan, doc, n, d);
	snprintf(base_msg, sizeof(base_msg), "%s", mm_diag_msg());
	rc = mm_json_scan_flat(doc, n, c, 4);
	/* The Lua path's shortcut answers alike on the baseline's code. */
	re = mm_json_scan_flat_planned(&plan, doc, n, e);
	if (re != rc)
		abort();
	for (i = 0; rc == 1 && i < 4; i++)
		if (c[i].type != e[i].type || c[i].p != e[i].p || c[i].len != e[i].len ||
		    c[i].escaped != e[i].escaped)
			abort();
	ra = mm_json_scan(doc, n, a, 4);
	snprintf(msg, sizeof(msg), "%s", mm_diag_msg());
	rb = mm_json_scan_reference(doc, n, b, 4);
	if (ra != rb || (ra != 0 && strcmp(msg, mm_diag_msg()) != 0))
		abort();
	for (i = 0; ra == 0 && i < 4; i++)
		if (a[i].type != b[i].type || a[i].p != b[i].p || a[i].len != b[i].len ||
		    a[i].escaped != b[i].escaped || a[i].type != d[i].type || a[i].p != d[i].p ||
		    a[i].len != d[i].len || a[i].escaped != d[i].escaped)
			abort();
	if (rd != ra || (rd != 0 && strcmp(msg, base_msg) != 0))
		abort();
	/* The Lua path's shortcut takes only what the scan accepts, with the
	 * same fields. */
	if (rc != 0 && (rc != 1 || ra != 0))
		abort();
	for (i = 0; rc == 1 && i < 4; i++)
		if (a[i].type != c[i].type || a[i].p != c[i].p || a[i].len != c[i].len ||
		    a[i].escaped != c[i].escaped)
			abort();
}

/* The planned scan (AVX2's code and the baseline's) agrees with the walk
 * when asked for names taken from the document's own strings (the bytes
 * between its first quotes: keys, mostly, of any length), so that the
 * plan's key compare meets keys that are and nearly are its names. */
static void check_own_names(const char *doc, size_t n)
{
	mm_json_field_t a[4], b[4], c[4];
	mm_json_plan_t plan;
	char msg[256];
	const char *q = doc, *end = doc + n, *close;
	int nf = 0, ra, rb, rc, i;

	while (nf < 3 && q < end && (q = memchr(q, '"', (size_t)(end - q))) != NULL &&
	       (close = memchr(q + 1, '"', (size_t)(end - q - 1))) != NULL) {
		a[nf++] = (mm_json_field_t){.name = q + 1, .name_len = (size_t)(close - q - 1)};
		q = close + 1;
	}
	/* The first name a byte shorter: a near miss of its key. */
	if (nf > 0 && a[0].name_len > 0)
		a[nf++] = (mm_json_field_t){.name = a[0].name, .name_len = a[0].name_len - 1};
	memcpy(b, a, sizeof(a));
	memcpy(c, a, sizeof(a));
	mm_json_plan(&plan, a, nf);
	ra = mm_json_scan_planned(&plan, doc, n, a);
	snprintf(msg, sizeof(msg), "%s", mm_diag_msg());
	plan.wide = 0;
	rb = mm_json_scan_planned(&plan, doc, n, b);
	if (rb != ra || (ra != 0 && strcmp(msg, mm_diag_msg()) != 0))
		abort();
	rc = mm_json_scan_reference(doc, n, c, nf);
	if (rc != ra || (ra != 0 && strcmp(msg, mm_diag_msg()) != 0))
		abort();
	for (i = 0; ra == 0 && i < nf; i++)
		if (a[i].type != c[i].type || a[i].p != c[i].p || a[i].len != c[i].len ||
		    a[i].escaped != c[i].escaped || b[i].type != c[i].type || b[i].p != c[i].p ||
		    b[i].len != c[i].len || b[i].escaped != c[i].escaped)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mm_json_field_t f[3] = {
		{.name = "entity_id", .name_len = 9},
		{.name = "user_id", .name_len = 7},
		{.name = "ts", .name_len = 2},
	};
	struct counts c = {0, 0, 0};
	mm_buf_t tmp = {0}, q = {0};
	mm_json_field_t k = {.name = "k", .name_len = 1};
	int plain, fields, parse, i;

	plain = mm_json_scan((const char *)data, size, NULL, 0);
	if (plain != 0 && plain != MM_ENOTOBJ && plain != MM_EJSON && plain != MM_EUTF8)
		abort();
	fields = mm_json_scan((const char *)data, size, f, 3);
	if (fields != plain && !(fields == MM_EJSON && strstr(mm_diag_msg(), "duplicate")))
		abort();
	if (fields == 0)
		for (i = 0; i < 3; i++)
			check_field(&f[i], data, size, &tmp);

	parse = mm_json_parse((const char *)data, size, &counter, &c);
	if (parse != (plain == MM_ENOTOBJ ? 0 : plain))
		abort();
	if (parse == 0 && (c.depth != 0 || c.max_depth > MM_JSON_MAX_DEPTH || c.tokens == 0))
		abort();

	check_fast_path((const char *)data, size);
	check_own_names((const char *)data, size);
	static const char head[] = "{\"entity_id\":\"", tail[] = "\",\"user_id\":1}";

	if (mm_buf_append(&q, head, sizeof(head) - 1) || mm_buf_append(&q, data, size) ||
	    mm_buf_append(&q, tail, sizeof(tail) - 1))
		abort();
	check_fast_path((const char *)q.p, q.len);
	q.len = 0;

	/* Any bytes quote into a valid JSON string. */
	if (mm_buf_append(&q, "{\"k\":", 5) || mm_json_quote((const char *)data, size, &q) ||
	    mm_buf_append(&q, "}", 1))
		abort();
	if (mm_json_scan((const char *)q.p, q.len, &k, 1) != 0 || k.type != MM_JSON_STRING)
		abort();
	tmp.len = 0;
	if (mm_json_unescape(k.p, k.len, &tmp) != 0)
		abort();
	/* Valid UTF-8 comes back unchanged. Whether the input is valid UTF-8
	 * is read from the quoting: no replacement character was needed. */
	if (memmem(q.p, q.len, "\\ufffd", 6) == NULL &&
	    (tmp.len != size || (size && memcmp(tmp.p, data, size) != 0)))
		abort();
	mm_buf_free(&tmp);
	mm_buf_free(&q);
	return 0;
}
