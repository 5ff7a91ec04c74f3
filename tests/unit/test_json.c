/*
 * test_json.c: the strict JSON scanner and its helpers.
 *
 * A table of documents with the code each must produce covers the grammar
 * rule by rule (RFC 8259 plus UTF-8 well-formedness), then field extraction,
 * numbers, quote/unescape round trips and the SAX walk. A small recursive
 * reference validator, written independently of the state machine, is
 * compared with mm_json_scan and mm_json_parse on random documents and on
 * random mutations of them (fixed seed).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/json.h"
#include "lib/buf.h"
#include "lib/error.h"
#include "lib/text.h"
#include "unit.h"

struct doc_case {
	const char *doc;
	size_t len;
	int rc;
};

#define OK(s) { s, sizeof(s) - 1, 0 }
#define NOTOBJ(s) { s, sizeof(s) - 1, MM_ENOTOBJ }
#define BAD(s) { s, sizeof(s) - 1, MM_EJSON }
#define BADUTF8(s) { s, sizeof(s) - 1, MM_EUTF8 }

static const struct doc_case cases[] = {
	/* Objects, whitespace, nesting. */
	OK("{}"),
	OK(" \t\n\r{ \t\n\r} \t\n\r"),
	OK("{\"a\":1}"),
	OK("{ \"a\" : 1 , \"b\" : [ 1 , 2 ] }"),
	OK("{\"\":\"\"}"),
	OK("{\"a\":[]}"),
	OK("{\"a\":{}}"),
	OK("{\"a\":[1,[2,[3,[]]],{\"b\":{\"c\":null}}]}"),
	OK("{\"a\":true,\"b\":false,\"c\":null}"),
	OK("{\"a\":1,\"a\":2}"), /* duplicates are fine unless requested */
	/* Numbers. */
	OK("{\"a\":0}"),
	OK("{\"a\":-0}"),
	OK("{\"a\":-0.0}"),
	OK("{\"a\":12345}"),
	OK("{\"a\":-1.5e+10}"),
	OK("{\"a\":1E5}"),
	OK("{\"a\":1e-5}"),
	OK("{\"a\":0.5}"),
	OK("{\"a\":0e0}"),
	OK("{\"a\":123456789012345678901234567890}"),
	OK("{\"a\":1e400}"), /* the grammar has no range */
	OK("{\"a\":[0,-0,1,-1]}"),
	/* Strings and escapes. */
	OK("{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}"),
	OK("{\"a\":\"\\u0000\"}"), /* escaped NUL is JSON; consumers decide */
	OK("{\"a\":\"\\u0041\\u00e9\\u20AC\\uFFFF\"}"),
	OK("{\"a\":\"\\ud83d\\ude00\"}"),
	OK("{\"a\":\"\\uD83D\\uDE00\"}"),
	OK("{\"a\":\"\\udbff\\udfff\"}"),
	OK("{\"\\u0061\":1}"),
	OK("{\"a\":\"\x7f\"}"),
	OK("{\"a\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}"),
	OK("{\"a\":\"\xc2\x80\xdf\xbf\"}"),
	OK("{\"a\":\"\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf\"}"),
	OK("{\"a\":\"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"}"),
	OK("{\"a\":\"0123456789abcdef0123456789abcdef\\n0123456789abcdef\"}"),
	/* Valid JSON, not an object. */
	NOTOBJ("[]"),
	NOTOBJ(" [1,2] "),
	NOTOBJ("1"),
	NOTOBJ("-0"),
	NOTOBJ("\"x\""),
	NOTOBJ("\"\\u0000\""),
	NOTOBJ("null"),
	NOTOBJ("true"),
	NOTOBJ("false"),
	/* Structure. */
	BAD(""),
	BAD(" \t\r\n"),
	BAD("{"),
	BAD("}"),
	BAD("{\"a\"}"),
	BAD("{\"a\":}"),
	BAD("{\"a\" 1}"),
	BAD("{\"a\":1,}"),
	BAD("{,}"),
	BAD("{\"a\":1 \"b\":2}"),
	BAD("{\"a\":1,,\"b\":2}"),
	BAD("{a:1}"),
	BAD("{'a':1}"),
	BAD("{1:1}"),
	BAD("{\"a\":[1,]}"),
	BAD("[1,]"), /* malformed non-objects are EJSON, not ENOTOBJ */
	BAD("[1 2]"),
	BAD("{\"a\":[1}"),
	BAD("{\"a\":{]}"),
	BAD("{\"a\":1]"),
	BAD("{}x"),
	BAD("{}{}"),
	BAD("{} 1"),
	BAD("{}]"),
	BAD("\xef\xbb\xbf{}"), /* BOM */
	BAD("{/*c*/}"),
	BAD("{\"a\":1}//"),
	BAD("{\f}"),
	BAD("{\v}"),
	BAD("{\xc2\xa0}"),
	BAD("{\xc3\xa9:1}"),
	/* NUL bytes. */
	BAD("\0{}"),
	BAD("{\0}"),
	BAD("{}\0"),
	BAD("{\"a\":\"\0\"}"),
	BAD("{\"a\0\":1}"),
	/* Numbers. */
	BAD("{\"a\":01}"),
	BAD("{\"a\":-01}"),
	BAD("{\"a\":00}"),
	BAD("{\"a\":+1}"),
	BAD("{\"a\":.5}"),
	BAD("{\"a\":-.5}"),
	BAD("{\"a\":1.}"),
	BAD("{\"a\":1.e5}"),
	BAD("{\"a\":1e}"),
	BAD("{\"a\":1e+}"),
	BAD("{\"a\":1E-}"),
	BAD("{\"a\":-}"),
	BAD("{\"a\":--1}"),
	BAD("{\"a\":0x10}"),
	BAD("{\"a\":1_000}"),
	BAD("{\"a\":Infinity}"),
	BAD("{\"a\":-Infinity}"),
	BAD("{\"a\":NaN}"),
	BAD("-"),
	BAD("1."),
	/* Literals. */
	BAD("{\"a\":tru}"),
	BAD("{\"a\":True}"),
	BAD("{\"a\":nul}"),
	BAD("{\"a\":nulll}"),
	BAD("{\"a\":falsey}"),
	BAD("{\"a\":undefined}"),
	BAD("nul"),
	/* Strings. */
	BAD("{\"a\":\"abc"),
	BAD("{\"a\":\"abc\\\"}"),
	BAD("{\"a\":\"\n\"}"),
	BAD("{\"a\":\"\t\"}"),
	BAD("{\"a\":\"\x1f\"}"),
	BAD("{\"a\":\"\\x41\"}"),
	BAD("{\"a\":\"\\'\"}"),
	BAD("{\"a\":\"\\U0041\"}"),
	BAD("{\"a\":\"\\u12\"}"),
	BAD("{\"a\":\"\\u12G4\"}"),
	BAD("{\"a\":\"\\u"),
	BAD("{\"a\":\"\\"),
	BAD("{\"a\":\"\\ud800\"}"),
	BAD("{\"a\":\"\\udc00\"}"),
	BAD("{\"a\":\"\\uDFFF\"}"),
	BAD("{\"a\":\"\\ud800x\"}"),
	BAD("{\"a\":\"\\ud800\\u0041\"}"),
	BAD("{\"a\":\"\\ud800\\ud800\"}"),
	BAD("{\"a\":\"\\udc00\\ud800\"}"),
	BAD("{\"a\":\"\\ud800\\n\"}"),
	BAD("{\"\\ud800\":1}"),
	/* UTF-8. */
	BADUTF8("{\"a\":\"\xc0\xaf\"}"),         /* overlong '/' */
	BADUTF8("{\"a\":\"\xe0\x80\xaf\"}"),     /* overlong '/', 3 bytes */
	BADUTF8("{\"a\":\"\xf0\x80\x80\xaf\"}"), /* overlong '/', 4 bytes */
	BADUTF8("{\"a\":\"\xc1\xbf\"}"),
	BADUTF8("{\"a\":\"\xe0\x9f\xbf\"}"),
	BADUTF8("{\"a\":\"\xf0\x8f\xbf\xbf\"}"),
	BADUTF8("{\"a\":\"\xed\xa0\x80\"}"), /* U+D800 encoded */
	BADUTF8("{\"a\":\"\xed\xbf\xbf\"}"), /* U+DFFF encoded */
	BADUTF8("{\"a\":\"\xf4\x90\x80\x80\"}"), /* U+110000 */
	BADUTF8("{\"a\":\"\xf5\x80\x80\x80\"}"),
	BADUTF8("{\"a\":\"\xf8\x88\x80\x80\x80\"}"),
	BADUTF8("{\"a\":\"\x80\"}"),
	BADUTF8("{\"a\":\"\xbf\"}"),
	BADUTF8("{\"a\":\"\xfe\xff\"}"),
	BADUTF8("{\"a\":\"\xc3\"}"),
	BADUTF8("{\"a\":\"\xe2\x82\"}"),
	BADUTF8("{\"a\":\"\xf0\x9f\x98\"}"),
	BADUTF8("{\"a\":\"\xc3"),         /* truncated at the end of input */
	BADUTF8("{\"a\":\"\xf0\x9f\x98"), /* truncated at the end of input */
	BADUTF8("{\"\xff\":1}"),
	BADUTF8("{\"a\":\"0123456789abcdef\xe9t\xc3\xa9\"}"),
};

TEST(table)
{
	size_t i;
	int rc;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		rc = mm_json_scan(cases[i].doc, cases[i].len, NULL, 0);
		if (rc != cases[i].rc) {
			printf("#   case %zu: got %s (%s), want %s\n", i, mm_err_name(rc),
			       mm_diag_msg(), mm_err_name(cases[i].rc));
			CHECK(rc == cases[i].rc);
		}
	}
	CHECK(sizeof(cases) / sizeof(cases[0]) >= 80);
}

/* Every document of the table through the SAX walk: same verdict, except that
 * parse takes any value. */
TEST(table_parse)
{
	static const mm_json_visitor_t none = {0};
	size_t i;
	int rc, want;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		rc = mm_json_parse(cases[i].doc, cases[i].len, &none, NULL);
		want = cases[i].rc == MM_ENOTOBJ ? 0 : cases[i].rc;
		if (rc != want) {
			printf("#   case %zu: got %s (%s), want %s\n", i, mm_err_name(rc),
			       mm_diag_msg(), mm_err_name(want));
			CHECK(rc == want);
		}
	}
}

static int scan_str(const char *doc)
{
	return mm_json_scan(doc, strlen(doc), NULL, 0);
}

TEST(error_details)
{
	CHECK_EQ_INT(scan_str("{\"a\":1,x}"), MM_EJSON);
	CHECK(strcmp(mm_diag_msg(), "json: unexpected character 'x' at offset 7") == 0);
	CHECK_EQ_INT(scan_str("{\"a\":"), MM_EJSON);
	CHECK(strcmp(mm_diag_msg(), "json: unexpected end of input at offset 5") == 0);
	CHECK_EQ_INT(scan_str("{\"a\":\"abc"), MM_EJSON);
	CHECK(strcmp(mm_diag_msg(), "json: unexpected end of input at offset 9") == 0);
	CHECK_EQ_INT(scan_str("{\"a\":\"0123456789abcdef0123"), MM_EJSON);
	CHECK(strcmp(mm_diag_msg(), "json: unexpected end of input at offset 26") == 0);
	CHECK_EQ_INT(mm_json_scan("{}\0", 3, NULL, 0), MM_EJSON);
	CHECK(strcmp(mm_diag_msg(), "json: unexpected byte 0x00 at offset 2") == 0);
	CHECK_EQ_INT(scan_str("{\"a\":\"x\ny\"}"), MM_EJSON);
	CHECK(strstr(mm_diag_msg(), "control character 0x0a") != NULL);
	CHECK(strstr(mm_diag_msg(), "offset 7") != NULL);
	CHECK_EQ_INT(scan_str("{\"a\":\"\\ud800\"}"), MM_EJSON);
	CHECK(strstr(mm_diag_msg(), "surrogate") != NULL);
	CHECK(strstr(mm_diag_msg(), "offset 6") != NULL);
	CHECK_EQ_INT(scan_str("{\"a\":\"xy\xc0\xaf\"}"), MM_EUTF8);
	CHECK(strcmp(mm_diag_msg(), "json: invalid UTF-8 at offset 8") == 0);
	CHECK_EQ_INT(scan_str("{\"a\":01}"), MM_EJSON);
	CHECK(strcmp(mm_diag_msg(), "json: unexpected character '1' at offset 6") == 0);
	CHECK_EQ_INT(scan_str("[1]"), MM_ENOTOBJ);
	CHECK(strstr(mm_diag_msg(), "not an object") != NULL);
}

TEST(bad_arguments)
{
	mm_json_field_t f = {.name = "a", .name_len = 1};

	CHECK_EQ_INT(mm_json_scan(NULL, 2, NULL, 0), MM_EINVAL);
	CHECK_EQ_INT(mm_json_scan("{}", 2, NULL, 1), MM_EINVAL);
	CHECK_EQ_INT(mm_json_scan("{}", 2, &f, -1), MM_EINVAL);
	CHECK_EQ_INT(mm_json_scan(NULL, 0, NULL, 0), MM_EJSON);
	CHECK_EQ_INT(mm_json_parse("{}", 2, NULL, NULL), MM_EINVAL);
}

/* Builds depth levels of '[' inside a top-level object. */
static char *nested(int depth, size_t *len)
{
	char *s = malloc((size_t)depth * 2 + 8);
	size_t n = 0;
	int i;

	s[n++] = '{';
	s[n++] = '"';
	s[n++] = 'a';
	s[n++] = '"';
	s[n++] = ':';
	for (i = 1; i < depth; i++)
		s[n++] = '[';
	for (i = 1; i < depth; i++)
		s[n++] = ']';
	s[n++] = '}';
	*len = n;
	return s;
}

TEST(depth)
{
	size_t len;
	char *s;

	s = nested(MM_JSON_MAX_DEPTH, &len);
	CHECK_EQ_INT(mm_json_scan(s, len, NULL, 0), 0);
	free(s);
	s = nested(MM_JSON_MAX_DEPTH + 1, &len);
	CHECK_EQ_INT(mm_json_scan(s, len, NULL, 0), MM_EJSON);
	CHECK(strcmp(mm_diag_msg(), "json: nesting deeper than 64 at offset 68") == 0);
	free(s);
	s = nested(10000, &len);
	CHECK_EQ_INT(mm_json_scan(s, len, NULL, 0), MM_EJSON);
	CHECK(strstr(mm_diag_msg(), "nesting deeper than 64") != NULL);
	CHECK_EQ_INT(mm_json_parse(s, len, &(mm_json_visitor_t){0}, NULL), MM_EJSON);
	free(s);
	/* Unbalanced deep input ends in an error, not in a crash. */
	s = malloc(10000);
	memset(s, '[', 10000);
	CHECK_EQ_INT(mm_json_scan(s, 10000, NULL, 0), MM_EJSON);
	memset(s, '{', 10000);
	CHECK_EQ_INT(mm_json_scan(s, 10000, NULL, 0), MM_EJSON);
	free(s);
}

TEST(big_documents)
{
	const size_t big = 10u << 20;
	mm_json_field_t f[2] = {{.name = "s", .name_len = 1}, {.name = "n", .name_len = 1}};
	mm_buf_t b = {0};
	size_t i, slen;

	/* One 10 MB string with a sprinkle of escapes and UTF-8. */
	REQUIRE(mm_buf_append(&b, "{\"n\":1,\"s\":\"", 12) == 0);
	while (b.len < big)
		REQUIRE(mm_buf_append(&b, "abcdefghij\\n\xc3\xa9 0123456789ABCDEF-", 32) == 0);
	slen = b.len - 12;
	REQUIRE(mm_buf_append(&b, "\"}", 2) == 0);
	CHECK_EQ_INT(mm_json_scan((char *)b.p, b.len, f, 2), 0);
	CHECK_EQ_INT(f[0].type, MM_JSON_STRING);
	CHECK_EQ_INT(f[0].len, slen);
	CHECK_EQ_INT(f[0].escaped, 1);
	CHECK_EQ_INT(f[1].type, MM_JSON_NUMBER);
	/* The same with its closing quote missing. */
	CHECK_EQ_INT(mm_json_scan((char *)b.p, b.len - 2, f, 2), MM_EJSON);

	/* A 10 MB array of numbers and small objects. */
	b.len = 0;
	REQUIRE(mm_buf_append(&b, "{\"a\":[", 6) == 0);
	for (i = 0; b.len < big; i++)
		REQUIRE(mm_buf_printf(&b, "%zu,-%zu.5e-3,{\"k\":[true,null]},", i, i) == 0);
	REQUIRE(mm_buf_append(&b, "0],\"n\":7}", 9) == 0);
	CHECK_EQ_INT(mm_json_scan((char *)b.p, b.len, f, 2), 0);
	CHECK_EQ_INT(f[1].type, MM_JSON_NUMBER);
	CHECK(f[1].len == 1 && f[1].p[0] == '7');
	CHECK_EQ_INT(mm_json_parse((char *)b.p, b.len, &(mm_json_visitor_t){0}, NULL), 0);
	mm_buf_free(&b);
}

/*
 * Strings of every length up to a few blocks, with one special sequence at
 * every position and the document ending 0..17 bytes after the string: this
 * walks each boundary of the block-at-a-time scan and of its tail handling.
 */
TEST(string_blocks)
{
	static const struct {
		const char *s;
		int rc;
	} specials[] = {
		{"#", 0},          {"\\n", 0},      {"\\u00e9", 0}, {"\xc3\xa9", 0},
		{"\xf0\x9f\x98\x80", 0}, {"\\\"", 0}, {"\x1f", MM_EJSON}, {"\xc3", MM_EUTF8},
		{"\\q", MM_EJSON}, {"\xe2\x82", MM_EUTF8},
	};
	mm_json_field_t f = {.name = "k", .name_len = 1};
	char doc[128];
	size_t sp, len, pos, pad, n, slen;
	int rc, bad = 0;

	for (sp = 0; sp < sizeof(specials) / sizeof(specials[0]); sp++)
		for (len = 0; len <= 40; len++)
			for (pos = 0; pos <= len; pos++)
				for (pad = 0; pad <= 17; pad++) {
					n = 0;
					memcpy(doc, "{\"k\":\"", 6);
					n = 6;
					memset(doc + n, 'a', pos);
					n += pos;
					slen = strlen(specials[sp].s);
					memcpy(doc + n, specials[sp].s, slen);
					n += slen;
					memset(doc + n, 'b', len - pos);
					n += len - pos;
					slen = n - 6;
					doc[n++] = '"';
					memset(doc + n, ' ', pad);
					n += pad;
					doc[n++] = '}';
					rc = mm_json_scan(doc, n, &f, 1);
					if (rc != specials[sp].rc ||
					    (rc == 0 && (f.type != MM_JSON_STRING || f.len != slen))) {
						if (bad++ < 5)
							printf("#   %.*s: %s\n", (int)n, doc, mm_err_name(rc));
					}
					/* The same document cut inside the string. */
					rc = mm_json_scan(doc, 6 + pos, &f, 1);
					if (rc != MM_EJSON && bad++ < 5)
						printf("#   cut %.*s: %s\n", (int)(6 + pos), doc,
						       mm_err_name(rc));
				}
	CHECK_EQ_INT(bad, 0);
}

static int fields_same(const mm_json_field_t *a, const mm_json_field_t *b)
{
	return a->type == b->type && a->p == b->p && a->len == b->len && a->escaped == b->escaped;
}

/* mm_json_scan (with its fast path for flat objects) and the general walk
 * (mm_json_scan_reference) agree on doc: result, message and fields; so does
 * a scan with a plan made once for all the documents of a test (the record
 * loop's way, mm_json_scan_planned). Returns the result, or 99 on a
 * disagreement (printed). */
static int scan_agrees(const char *doc, size_t n)
{
	mm_json_field_t a[3] = {
		{.name = "entity_id", .name_len = 9},
		{.name = "user_id", .name_len = 7},
		{.name = "entity_id", .name_len = 9},
	};
	static mm_json_plan_t plan, base;
	static int planned;
	mm_json_field_t b[3], c[3], d[3], e[3];
	char msg[256];
	int ra, rb, rc, rd, re, i;

	memcpy(b, a, sizeof(a));
	memcpy(c, a, sizeof(a));
	memcpy(d, a, sizeof(a));
	memcpy(e, a, sizeof(a));
	if (!planned) {
		mm_json_plan(&plan, a, 3);
		/* The baseline's code, where the plan would take AVX2's. */
		base = plan;
		base.wide = 0;
		planned = 1;
	}
	re = mm_json_scan_planned(&base, doc, n, e);
	snprintf(msg, sizeof(msg), "%s", mm_diag_msg());
	rd = mm_json_scan_planned(&plan, doc, n, d);
	if (re != rd || (rd != 0 && strcmp(msg, mm_diag_msg()) != 0) ||
	    (rd == 0 && (!fields_same(&d[0], &e[0]) || !fields_same(&d[1], &e[1]) ||
			 !fields_same(&d[2], &e[2])))) {
		printf("#   planned %s (%s), baseline %s (%s), or their fields differ: %.*s\n",
		       mm_err_name(rd), mm_diag_msg(), mm_err_name(re), msg, (int)n, doc);
		return 99;
	}
	rc = mm_json_scan_flat(doc, n, c, 3);
	/* The Lua path's shortcut answers alike on the baseline's code. */
	memcpy(e, a, sizeof(a));
	re = mm_json_scan_flat_planned(&base, doc, n, e);
	if (re != rc || (rc == 1 && (!fields_same(&c[0], &e[0]) || !fields_same(&c[1], &e[1]) ||
				     !fields_same(&c[2], &e[2])))) {
		printf("#   mm_json_scan_flat %d, the baseline's %d, or their fields differ: %.*s\n", rc,
		       re, (int)n, doc);
		return 99;
	}
	ra = mm_json_scan(doc, n, a, 3);
	snprintf(msg, sizeof(msg), "%s", mm_diag_msg());
	rb = mm_json_scan_reference(doc, n, b, 3);
	if (ra != rb || (ra != 0 && strcmp(msg, mm_diag_msg()) != 0)) {
		printf("#   fast %s (%s), walk %s (%s): %.*s\n", mm_err_name(ra), msg, mm_err_name(rb),
		       mm_diag_msg(), (int)n, doc);
		return 99;
	}
	if (rd != ra || (ra == 0 && (!fields_same(&d[0], &a[0]) || !fields_same(&d[1], &a[1]) ||
				     !fields_same(&d[2], &a[2])))) {
		printf("#   planned %s, scan %s, or their fields differ: %.*s\n", mm_err_name(rd),
		       mm_err_name(ra), (int)n, doc);
		return 99;
	}
	/* The Lua path's shortcut takes only documents the scan accepts, and
	 * finds the same fields there. */
	if (rc != 0 && (rc != 1 || ra != 0)) {
		printf("#   mm_json_scan_flat %d where the scan gives %s: %.*s\n", rc, mm_err_name(ra),
		       (int)n, doc);
		return 99;
	}
	for (i = 0; i < 3; i++) {
		const mm_json_field_t *other = ra == 0 && !fields_same(&a[i], &b[i]) ? &b[i]
					       : rc == 1 && !fields_same(&a[i], &c[i]) ? &c[i]
										: NULL;

		if (other != NULL) {
			printf("#   field %d differs (%s): %.*s\n", i, other == &b[i] ? "walk" : "flat",
			       (int)n, doc);
			return 99;
		}
	}
	return ra;
}

static int field_eq(const mm_json_field_t *f, int type, const char *raw);

/* mm_json_scan_flat on a NUL-terminated document, asking for entity_id;
 * -1 when the baseline's code (where the plan would take AVX2's) answers
 * otherwise. */
static int flat_of(const char *doc, mm_json_field_t *f)
{
	mm_json_field_t g = {.name = "entity_id", .name_len = 9};
	mm_json_plan_t base;
	int rc, rb;

	*f = g;
	rc = mm_json_scan_flat(doc, strlen(doc), f, 1);
	mm_json_plan(&base, &g, 1);
	base.wide = 0;
	rb = mm_json_scan_flat_planned(&base, doc, strlen(doc), &g);
	if (rb != rc || (rc == 1 && !fields_same(f, &g))) {
		printf("#   mm_json_scan_flat %d, the baseline's %d, or their fields differ: %s\n", rc,
		       rb, doc);
		return -1;
	}
	return rc;
}

/*
 * The Lua path's shortcut gives up (0, so the record is decoded in full) on
 * every document after which the decoder would not build the same object
 * from the requested fields alone, valid or not, and takes event-shaped ones.
 */
TEST(flat_whole)
{
	static const char *const refused[] = {
		"{\"entity_id\":\"p1\",\"x\":1,\"x\":2}",         /* a duplicate not asked for */
		"{\"entity_id\":\"p1\",\"x\\u0041\":1,\"xA\":2}", /* an escaped key */
		"{\"entity_id\":\"p1\",\"n\":1e999}",              /* overflows a double */
		"{\"entity_id\":\"p1\",\"n\":1E2}",                /* any exponent */
		"{\"entity_id\":\"p1\",\"o\":{\"a\":1}}",            /* nested */
		"{\"entity_id\":\"p1\",\"a\":[1]}",                /* nested */
		"{\"entity_id\":\"p1\",\"user_id\":\"u\",}",        /* invalid */
		"[\"entity_id\",\"p1\",\"user_id\",\"u\"]",          /* not an object */
#if defined(__SSE2__) && !defined(MM_JSON_PORTABLE)
		/* Shorter than a block: 16 bytes here, 8 on the SWAR path (json_string.h). */
		"{\"entity_id\":1}",
#endif
	};
	mm_json_field_t f;
	char many[512];
	size_t n = 0;
	int i;

	for (i = 0; i < (int)(sizeof(refused) / sizeof(refused[0])); i++)
		CHECK_EQ_INT(flat_of(refused[i], &f), 0);
	CHECK_EQ_INT(flat_of("{\"entity_id\":\"p1\",\"page_id\":\"p2\",\"n\":-12.5}", &f), 1);
	CHECK(field_eq(&f, MM_JSON_STRING, "p1"));
	CHECK_EQ_INT(flat_of(" {\"page_id\":\"p\\n1\",\"t\":true,\"z\":null} ", &f), 1);
	CHECK_EQ_INT(f.type, MM_JSON_ABSENT);
	CHECK_EQ_INT(flat_of("{\"entity_id\":\"p\\n1\",\"t\":true,\"z\":null}", &f), 1);
	CHECK_EQ_INT(f.escaped, 1);
	/* Names alike in length and first and last byte are told apart. */
	CHECK_EQ_INT(flat_of("{\"entity_id\":\"p1\",\"axb\":1,\"ayb\":2,\"\":3}", &f), 1);
	CHECK_EQ_INT(flat_of("{\"entity_id\":\"p1\",\"\":1,\"axb\":2,\"\":3}", &f), 0);
	/* 32 members are taken, 33 are not. */
	n += (size_t)snprintf(many + n, sizeof(many) - n, "{\"entity_id\":1");
	for (i = 1; i < 32; i++)
		n += (size_t)snprintf(many + n, sizeof(many) - n, ",\"k%d\":%d", i, i);
	snprintf(many + n, sizeof(many) - n, "}");
	CHECK_EQ_INT(flat_of(many, &f), 1);
	snprintf(many + n, sizeof(many) - n, ",\"k32\":32}");
	CHECK_EQ_INT(flat_of(many, &f), 0);
	/* The same with string values, which the window's walk takes member by
	 * member before anything else does. */
	n = (size_t)snprintf(many, sizeof(many), "{\"entity_id\":\"p1\"");
	for (i = 1; i < 32; i++)
		n += (size_t)snprintf(many + n, sizeof(many) - n, ",\"k%d\":\"%d\"", i, i);
	snprintf(many + n, sizeof(many) - n, "}");
	CHECK_EQ_INT(flat_of(many, &f), 1);
	CHECK(field_eq(&f, MM_JSON_STRING, "p1"));
	snprintf(many + n, sizeof(many) - n, ",\"k32\":\"32\"}");
	CHECK_EQ_INT(flat_of(many, &f), 0);
	/* A key given twice among string members, and across the hand-off from
	 * the window's walk to the member-by-member scan (at a number, an
	 * escaped value, whitespace), either side of it. */
	CHECK_EQ_INT(flat_of("{\"entity_id\":\"p1\",\"x\":\"a\",\"x\":\"b\"}", &f), 0);
	CHECK_EQ_INT(flat_of("{\"x\":\"a\",\"entity_id\":\"p1\",\"n\":1,\"x\":\"b\"}", &f), 0);
	CHECK_EQ_INT(flat_of("{\"x\":\"a\",\"entity_id\":\"p1\",\"e\":\"\\n\",\"x\":1}", &f), 0);
	CHECK_EQ_INT(flat_of("{\"x\":\"a\",\"entity_id\":\"p1\", \"x\":\"b\"}", &f), 0);
	CHECK_EQ_INT(flat_of("{\"x\":\"a\",\"n\":1,\"entity_id\":\"p1\",\"x\":\"b\"}", &f), 0);
	CHECK_EQ_INT(flat_of("{\"x\":\"a\",\"entity_id\":\"p1\",\"n\":1,\"y\":\"b\"}", &f), 1);
	CHECK(field_eq(&f, MM_JSON_STRING, "p1"));
	CHECK_EQ_INT(flat_of("{\"x\":\"a\",\"n\":1,\"entity_id\":\"p\\n1\",\"y\":\"b\"}", &f), 1);
	CHECK_EQ_INT(f.escaped, 1);
	/* A requested member given twice, each time a string. */
	CHECK_EQ_INT(flat_of("{\"entity_id\":\"p1\",\"entity_id\":\"p2\",\"y\":\"b\"}", &f), 0);
}

/*
 * The fast path for flat objects: a special byte sequence (multibyte and
 * invalid UTF-8, escapes, control characters, a quote escaped) at every
 * offset of a 40-byte string, in a key and in a value, in an event-shaped
 * object, so it falls at every offset of a 16-byte (or 8-byte) block and in
 * the document's last block; then whitespace, literals, numbers, nested
 * values, duplicates and every prefix of an event. Each result must be the
 * expected one and the general walk's.
 */
TEST(flat_fast_path)
{
	static const struct {
		const char *s;
		size_t len;
		int rc;
	} specials[] = {
#define SP(lit, rc) {lit, sizeof(lit) - 1, rc}
		SP("\xc3\xa9", 0),         SP("\xe2\x82\xac", 0), SP("\xf0\x9f\x98\x80", 0), SP("\\n", 0),
		SP("\\u00e9", 0),          SP("\\\"", 0),         SP("\\\\", 0),          SP("\x7f", 0),
		SP("\xc3", MM_EUTF8),       SP("\x80", MM_EUTF8),    SP("\xff", MM_EUTF8),      SP("\xc0\xaf", MM_EUTF8),
		SP("\xed\xa0\x80", MM_EUTF8), SP("\xe2\x82", MM_EUTF8), SP("\x1f", MM_EJSON),  SP("\t", MM_EJSON),
		SP("\x00", MM_EJSON),       SP("\\q", MM_EJSON),    SP("\\ud800", MM_EJSON),
#undef SP
	};
	static const char *const shapes[] = {
		"{\"entity_id\":\"%s\",\"page_id\":\"p1\",\"user_id\":\"u22\",\"source\":\"kafka\"}",
		"{\"page_id\":\"p1\",\"%s\":\"x\",\"entity_id\":\"e\"}",
		"{\"a\":1,\"entity_id\":\"%s\"}",
	};
	static const char *const docs[] = {
		" { \"entity_id\" : \"p1\" , \"user_id\" : 12 }\n",
		"{\"entity_id\":\"p1\",\"n\":-1.5e3,\"t\":true,\"f\":false,\"z\":null}",
		"{\"entity_id\":\"p1\",\"o\":{\"entity_id\":2},\"a\":[1,2]}",
		"{\"entity_id\":\"p1\",\"entity_id\":\"p2\",\"x\":1}",
		"{\"entity_id\":\"p1\",\"user_id\":\"}\"}  ",
		"{\"entity_id\":\"p1\",\"user_id\":\"u\"}}",
		"{\"entity_id\":\"p1\",\"user_id\":\"u\",}",
		"{\"entity_id\":\"p1\" \"user_id\":\"u\"}",
		"{\"entity_id\":\"p1\",\"user_id\":tru}      ",
		"{\"entity_id\":\"p1\",\"user_id\":01}       ",
		"{\"entity_id\":\"p1\",\"user_id\":\"u\"}x}",
		"{\"ent\\u0069ty_id\":\"p1\",\"user_id\":\"u\"}",
		"{\"entity_id\":\"p\\\"1\",\"user_id\":\"u\"}",
		"{                  }",
		"[\"entity_id\",\"p1\",\"user_id\",\"u\"]",
		"{\"entity_id\":\"p1\"\x0b,\"user_id\":\"u\"}",
	};
	char doc[256];
	size_t sp, pos, sh, i, n, cut;
	int rc, bad = 0;

	for (sp = 0; sp < sizeof(specials) / sizeof(specials[0]); sp++)
		for (sh = 0; sh < sizeof(shapes) / sizeof(shapes[0]); sh++)
			for (pos = 0; pos <= 40; pos++) {
				const char *hole = strstr(shapes[sh], "%s");
				size_t head = (size_t)(hole - shapes[sh]);

				/* shape up to %s, a..a special b..b (40 bytes around it), rest */
				memcpy(doc, shapes[sh], head);
				n = head;
				memset(doc + n, 'a', pos);
				n += pos;
				memcpy(doc + n, specials[sp].s, specials[sp].len);
				n += specials[sp].len;
				memset(doc + n, 'b', 40 - pos);
				n += 40 - pos;
				memcpy(doc + n, hole + 2, strlen(hole + 2));
				n += strlen(hole + 2);
				rc = scan_agrees(doc, n);
				if (rc != specials[sp].rc && bad++ < 10)
					printf("#   special %zu at %zu, shape %zu: %s\n", sp, pos, sh,
					       mm_err_name(rc));
			}
	for (i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
		n = strlen(docs[i]);
		/* Every prefix too: the fast path must not read past the end. */
		for (cut = 0; cut <= n; cut++) {
			char *copy = malloc(cut ? cut : 1);

			memcpy(copy, docs[i], cut);
			if (scan_agrees(copy, cut) == 99)
				bad++;
			free(copy);
		}
	}
	CHECK_EQ_INT(bad, 0);
	/* The expected answers of a few of them. */
	CHECK_EQ_INT(scan_agrees(docs[0], strlen(docs[0])), 0);
	CHECK_EQ_INT(scan_agrees(docs[1], strlen(docs[1])), 0);
	CHECK_EQ_INT(scan_agrees(docs[2], strlen(docs[2])), 0);
	CHECK_EQ_INT(scan_agrees(docs[3], strlen(docs[3])), MM_EJSON);
	CHECK_EQ_INT(scan_agrees(docs[4], strlen(docs[4])), 0);
	CHECK_EQ_INT(scan_agrees(docs[5], strlen(docs[5])), MM_EJSON);
	CHECK_EQ_INT(scan_agrees(docs[11], strlen(docs[11])), 0);
	CHECK_EQ_INT(scan_agrees(docs[13], strlen(docs[13])), 0);
	CHECK_EQ_INT(scan_agrees(docs[14], strlen(docs[14])), MM_ENOTOBJ);
}

/*
 * The C path's window (engine/codec/json_flat.h), with AVX2 and with the
 * baseline's code (scan_agrees runs both): a member of every key and value
 * length from 0 to 40 behind a first member of 0 to 3 bytes, so that its
 * key's end, its value's quotes and the next member fall at every offset of
 * a 32-byte window and past it, as the last member (read from the
 * document's last window) and before another; then a special byte at every
 * place of such a key and value; then a requested key given twice, the
 * second time in the same window, in a later one or after a member the
 * window does not take.
 */
TEST(flat_windows)
{
	static const char *const specials[] = {
		"\\n", "\\\"", "\xc3\xa9", "\xe2\x82\xac", "\x7f", "\xc3", "\xff", "\x1f", "\\q",
	};
	static const char *const seconds[] = {
		"\"entity_id\":\"p2\"", "\"n\":1,\"entity_id\":\"p2\"", "\"entity_id\":2",
		"\"ent\\u0069ty_id\":\"p2\"",
	};
	static const char *const openers[] = {"x", "1", "12", "t", "true", "null", "-", " ", "\\"};
	char doc[256], key[64], val[64];
	size_t kl, vl, pad, sp, at, i, n;
	int last, rc, bad = 0;

	for (kl = 0; kl <= 40; kl++)
		for (vl = 0; vl <= 40; vl++)
			for (pad = 0; pad <= 3; pad++)
				for (last = 0; last <= 1; last++) {
					/* entity_id is asked for: its length gets looked up. */
					if (kl == 9)
						memcpy(key, "entity_id", 10);
					else
						memset(key, 'k', kl), key[kl] = 0;
					memset(val, 'v', vl);
					val[vl] = 0;
					n = (size_t)snprintf(doc, sizeof(doc), "{\"%.*s\":\"\",\"%s\":\"%s\"%s}",
							     (int)pad, "abc", key, val,
							     last ? "" : ",\"user_id\":\"u1\"");
					rc = scan_agrees(doc, n);
					if (rc != 0 && bad++ < 10)
						printf("#   %s: %s\n", doc, mm_err_name(rc));
				}
	for (kl = 0; kl <= 34; kl += 17)
		for (vl = 0; vl <= 34; vl++)
			for (sp = 0; sp < sizeof(specials) / sizeof(specials[0]); sp++)
				for (at = 0; at <= kl + vl; at++) {
					size_t sl = strlen(specials[sp]);
					int in_key = at < kl;

					memset(key, 'k', kl);
					key[kl] = 0;
					memset(val, 'v', vl);
					val[vl] = 0;
					/* The special byte replaces nothing: it goes
					 * in at offset at of the key, then of the value. */
					if (in_key) {
						memmove(key + at + sl, key + at, kl - at + 1);
						memcpy(key + at, specials[sp], sl);
					} else {
						memmove(val + (at - kl) + sl, val + (at - kl), vl - (at - kl) + 1);
						memcpy(val + (at - kl), specials[sp], sl);
					}
					for (last = 0; last <= 1; last++) {
						n = (size_t)snprintf(doc, sizeof(doc),
								     "{\"a\":\"\",\"%s\":\"%s\"%s}", key, val,
								     last ? "" : ",\"user_id\":\"u1\"");
						if (scan_agrees(doc, n) == 99)
							bad++;
					}
				}
	/* A special byte just before what would end a member: a window that
	 * took it for the value's closing quote would accept these. */
	for (vl = 0; vl <= 34; vl++)
		for (sp = 0; sp < sizeof(specials) / sizeof(specials[0]); sp++)
			for (last = 0; last <= 1; last++) {
				memset(val, 'v', vl);
				n = (size_t)snprintf(doc, sizeof(doc), "{\"a\":\"\",\"k\":\"%.*s%s%s}", (int)vl, val,
						     specials[sp], last ? "" : ",\"x\":\"y\"");
				rc = scan_agrees(doc, n);
				if ((rc == 0 || rc == 99) && bad++ < 10)
					printf("#   %s: %s\n", doc, mm_err_name(rc));
			}
	/* A value that does not open with a quote, before quotes that would
	 * make a member of a window that did not look. */
	for (i = 0; i < sizeof(openers) / sizeof(openers[0]); i++)
		for (last = 0; last <= 1; last++) {
			n = (size_t)snprintf(doc, sizeof(doc), "{\"a\":\"\",\"k\":%s\"\"%s}", openers[i],
					     last ? "" : ",\"user_id\":\"u1\"");
			rc = scan_agrees(doc, n);
			if ((rc == 99 || (rc == 0) != (openers[i][0] == ' ')) && bad++ < 10)
				printf("#   %s: %s\n", doc, mm_err_name(rc));
		}
	for (pad = 0; pad <= 40; pad++)
		for (i = 0; i < sizeof(seconds) / sizeof(seconds[0]); i++) {
			memset(val, 'v', pad);
			val[pad] = 0;
			n = (size_t)snprintf(doc, sizeof(doc),
					     "{\"entity_id\":\"p1\",\"a\":\"%s\",%s,\"user_id\":\"u1\"}", val,
					     seconds[i]);
			rc = scan_agrees(doc, n);
			if (rc != MM_EJSON || strstr(mm_diag_msg(), "duplicate key") == NULL) {
				if (bad++ < 10)
					printf("#   %s: %s (%s)\n", doc, mm_err_name(rc), mm_diag_msg());
			}
		}
	CHECK_EQ_INT(bad, 0);
}

/* An empty name asked for, found in the window and seen again after it. */
TEST(flat_empty_name)
{
	mm_json_field_t f[2] = {{.name = "", .name_len = 0}, {.name = "k", .name_len = 1}};
	const char *doc = "{\"k\":\"v\",\"\":\"empty\",\"padding_key\":\"padding\"}";

	CHECK_EQ_INT(mm_json_scan(doc, strlen(doc), f, 2), 0);
	CHECK(f[0].type == MM_JSON_STRING && f[0].len == 5 && memcmp(f[0].p, "empty", 5) == 0);
	CHECK(f[1].type == MM_JSON_STRING && f[1].len == 1);
	doc = "{\"\":\"a\",\"padding_key\":\"padding\",\"\":\"b\"}";
	CHECK_EQ_INT(mm_json_scan(doc, strlen(doc), f, 2), MM_EJSON);
}

/* The planned scan (AVX2's code and the baseline's) and the walk agree on
 * doc asked for f[0..nf): result, message and every field. Returns the
 * result, or 99 on a disagreement (printed). */
static int names_agree(const char *text, size_t n, const mm_json_field_t *f, int nf)
{
	mm_json_field_t w[32], x[32], r[32];
	mm_json_plan_t plan, base;
	char msg[256], *doc = malloc(n);
	int rw, rx, rr, i;

	/* A copy of its own size, so that ASan sees a read past its end. */
	if (doc == NULL)
		return 99;
	memcpy(doc, text, n);
	memcpy(w, f, sizeof(*f) * (size_t)nf);
	memcpy(x, f, sizeof(*f) * (size_t)nf);
	memcpy(r, f, sizeof(*f) * (size_t)nf);
	mm_json_plan(&plan, f, nf);
	base = plan;
	base.wide = 0;
	rw = mm_json_scan_planned(&plan, doc, n, w);
	snprintf(msg, sizeof(msg), "%s", mm_diag_msg());
	rx = mm_json_scan_planned(&base, doc, n, x);
	if (rx != rw || (rw != 0 && strcmp(msg, mm_diag_msg()) != 0))
		goto differ;
	rr = mm_json_scan_reference(doc, n, r, nf);
	if (rr != rw || (rw != 0 && strcmp(msg, mm_diag_msg()) != 0))
		goto differ;
	for (i = 0; rw == 0 && i < nf; i++)
		if (!fields_same(&w[i], &r[i]) || !fields_same(&x[i], &r[i]))
			goto differ;
	free(doc);
	return rw;
differ:
	printf("#   planned and walk differ, asking for \"%.*s\" and %d more: %.*s\n",
	       (int)f[0].name_len, f[0].name, nf - 1, (int)n, doc);
	free(doc);
	return 99;
}

/*
 * The plan's key compare (json.c key_loads): a requested name of every
 * length from 0 to 30 (the window holds keys of up to 29), against a key
 * that is the name and keys that differ from it in one byte (at every
 * place), in their length or in the bytes around them, as the first member
 * (the load before a short key reads the '{'), a middle one and the last
 * one with an empty value (a short key's load then ends at the document's
 * last byte), beside another requested name of the same length; names
 * longer than 16 that share their first and last eight bytes; and more
 * fields than the plan has names for.
 */
TEST(flat_names)
{
	char name[40], other[40], key[40], doc[256];
	mm_json_field_t f[2], many[MM_JSON_PLAN_NAMES + 2];
	static char many_names[MM_JSON_PLAN_NAMES + 2][16];
	size_t len, at, n;
	int place, change, rc, bad = 0, found = 0;

	for (len = 0; len <= 30; len++) {
		for (at = 0; at < len; at++) {
			name[at] = (char)('a' + (at * 7 + len) % 26);
			other[at] = name[at];
		}
		if (len > 0)
			other[len / 2] = '_';
		f[0] = (mm_json_field_t){.name = name, .name_len = len};
		f[1] = (mm_json_field_t){.name = other, .name_len = len};
		/* change -1: the key is the name; 0..len-1: that byte
		 * differs; len: a byte more; len + 1: a byte less. */
		for (change = -1; change <= (int)len + 1; change++) {
			size_t kl = change == (int)len ? len + 1 : change == (int)len + 1 ? len - 1 : len;

			if (change == (int)len + 1 && len == 0)
				continue;
			memcpy(key, name, len);
			if (change >= 0 && change < (int)len)
				key[change] = (char)(key[change] == 'z' ? 'y' : key[change] + 1);
			if (change == (int)len)
				key[len] = 'q';
			for (place = 0; place < 3; place++) {
				if (place == 0)
					n = (size_t)snprintf(doc, sizeof(doc),
							     "{\"%.*s\":\"v\",\"padding\":\"padding padding\"}",
							     (int)kl, key);
				else if (place == 1)
					n = (size_t)snprintf(doc, sizeof(doc),
							     "{\"a\":\"x\",\"%.*s\":\"vv\",\"padding\":\"padding\"}",
							     (int)kl, key);
				else
					n = (size_t)snprintf(doc, sizeof(doc),
							     "{\"padding\":\"padding padding\",\"%.*s\":\"\"}",
							     (int)kl, key);
				rc = names_agree(doc, n, f, 2);
				if (rc != 0 && bad++ < 10)
					printf("#   %s: %s\n", doc, mm_err_name(rc));
				found += rc == 0 && change == -1;
			}
		}
	}
	CHECK_EQ_INT(found, 31 * 3);
	/* Two long names with the same ends, and a key that has them too. */
	f[0] = (mm_json_field_t){.name = "abcdefgh_one_12345678", .name_len = 21};
	f[1] = (mm_json_field_t){.name = "abcdefgh_two_12345678", .name_len = 21};
	n = (size_t)snprintf(doc, sizeof(doc), "{\"abcdefgh_two_12345678\":\"2\",\"k\":\"v\"}");
	CHECK_EQ_INT(names_agree(doc, n, f, 2), 0);
	n = (size_t)snprintf(doc, sizeof(doc),
			     "{\"abcdefgh_six_12345678\":\"6\",\"abcdefgh_one_12345678\":\"1\"}");
	CHECK_EQ_INT(names_agree(doc, n, f, 2), 0);
	n = (size_t)snprintf(doc, sizeof(doc),
			     "{\"abcdefgh_one_12345678\":\"1\",\"abcdefgh_one_12345678\":\"1\"}");
	CHECK_EQ_INT(names_agree(doc, n, f, 2), MM_EJSON);
	/* Names of one byte repeated, whose loads are the same at every
	 * length from eight on: the lengths tell them apart. */
	for (len = 8; len <= 20; len++) {
		memset(name, 'a', len + 1);
		f[0] = (mm_json_field_t){.name = name, .name_len = len};
		f[1] = (mm_json_field_t){.name = name, .name_len = len + 1};
		for (int k = 0; k < 2; k++) {
			n = (size_t)snprintf(doc, sizeof(doc), "{\"%.*s\":\"v\",\"padding\":\"padding\"}",
					     (int)(len + (size_t)k), name);
			rc = names_agree(doc, n, f, 2);
			CHECK_EQ_INT(rc, 0);
		}
	}
	/* More fields than the plan keeps names for: the per-string path. */
	for (int i = 0; i < MM_JSON_PLAN_NAMES + 2; i++) {
		snprintf(many_names[i], sizeof(many_names[i]), "f%d", i);
		many[i] = (mm_json_field_t){.name = many_names[i], .name_len = strlen(many_names[i])};
	}
	n = (size_t)snprintf(doc, sizeof(doc), "{\"f0\":\"a\",\"f3\":\"b\",\"f%d\":\"c\",\"x\":\"d\"}",
			     MM_JSON_PLAN_NAMES + 1);
	CHECK_EQ_INT(names_agree(doc, n, many, MM_JSON_PLAN_NAMES + 2), 0);
	CHECK_EQ_INT(mm_json_scan(doc, n, many, MM_JSON_PLAN_NAMES + 2), 0);
	CHECK(field_eq(&many[MM_JSON_PLAN_NAMES + 1], MM_JSON_STRING, "c") &&
	      field_eq(&many[3], MM_JSON_STRING, "b") && many[1].type == MM_JSON_ABSENT);
	CHECK_EQ_INT(bad, 0);
}

static int field_eq(const mm_json_field_t *f, int type, const char *raw)
{
	return f->type == type && f->len == strlen(raw) && memcmp(f->p, raw, f->len) == 0;
}

TEST(fields_basic)
{
	const char *ev = "{\"entity_id\":\"p96284\",\"user_id\":\"u224920\",\"source\":\"kafka\"}";
	mm_json_field_t f[3] = {
		{.name = "entity_id", .name_len = 9},
		{.name = "user_id", .name_len = 7},
		{.name = "ts", .name_len = 2},
	};

	REQUIRE(mm_json_scan(ev, strlen(ev), f, 3) == 0);
	CHECK(field_eq(&f[0], MM_JSON_STRING, "p96284"));
	CHECK(f[0].escaped == 0);
	CHECK(field_eq(&f[1], MM_JSON_STRING, "u224920"));
	CHECK_EQ_INT(f[2].type, MM_JSON_ABSENT);
	CHECK(f[2].p == NULL && f[2].len == 0);

	/* Fields are reset by every scan. */
	REQUIRE(mm_json_scan("{\"ts\":5}", 8, f, 3) == 0);
	CHECK_EQ_INT(f[0].type, MM_JSON_ABSENT);
	CHECK_EQ_INT(f[1].type, MM_JSON_ABSENT);
	CHECK(field_eq(&f[2], MM_JSON_NUMBER, "5"));
}

TEST(fields_types)
{
	const char *doc = "{ \"n\" : -1.5e3 , \"t\":true,\"f\":false,\"z\":null,"
			  "\"a\":[1, {\"n\":2}] ,\"o\":{\"x\":[]},\"s\":\"\",\"e\":{}}";
	mm_json_field_t f[8] = {
		{.name = "n", .name_len = 1}, {.name = "t", .name_len = 1},
		{.name = "f", .name_len = 1}, {.name = "z", .name_len = 1},
		{.name = "a", .name_len = 1}, {.name = "o", .name_len = 1},
		{.name = "s", .name_len = 1}, {.name = "e", .name_len = 1},
	};

	REQUIRE(mm_json_scan(doc, strlen(doc), f, 8) == 0);
	CHECK(field_eq(&f[0], MM_JSON_NUMBER, "-1.5e3"));
	CHECK(field_eq(&f[1], MM_JSON_TRUE, "true"));
	CHECK(field_eq(&f[2], MM_JSON_FALSE, "false"));
	CHECK(field_eq(&f[3], MM_JSON_NULL, "null"));
	CHECK(field_eq(&f[4], MM_JSON_ARRAY, "[1, {\"n\":2}]"));
	CHECK(field_eq(&f[5], MM_JSON_OBJECT, "{\"x\":[]}"));
	CHECK(field_eq(&f[6], MM_JSON_STRING, ""));
	CHECK(field_eq(&f[7], MM_JSON_OBJECT, "{}"));
}

TEST(fields_escapes)
{
	mm_json_field_t f[4] = {
		{.name = "entity_id", .name_len = 9},
		{.name = "\xc3\xa9", .name_len = 2},
		{.name = "\xf0\x9f\x98\x80", .name_len = 4},
		{.name = "a\"b", .name_len = 3},
	};
	const char *doc = "{\"entity\\u005fid\":\"x\\\"y\",\"\\u00e9\":1,\"\\ud83d\\ude00\":2,"
			  "\"a\\\"b\":3}";
	mm_buf_t b = {0};

	REQUIRE(mm_json_scan(doc, strlen(doc), f, 4) == 0);
	CHECK(field_eq(&f[0], MM_JSON_STRING, "x\\\"y"));
	CHECK_EQ_INT(f[0].escaped, 1);
	REQUIRE(mm_json_unescape(f[0].p, f[0].len, &b) == 0);
	CHECK(b.len == 3 && memcmp(b.p, "x\"y", 3) == 0);
	CHECK(field_eq(&f[1], MM_JSON_NUMBER, "1"));
	CHECK(field_eq(&f[2], MM_JSON_NUMBER, "2"));
	CHECK(field_eq(&f[3], MM_JSON_NUMBER, "3"));
	mm_buf_free(&b);

	/* Escaped keys that are a prefix, an extension or a near miss. */
	f[0].name = "abc";
	f[0].name_len = 3;
	doc = "{\"a\\u0062\":1,\"a\\u0062cd\":2,\"\\u0061bd\":3,\"ab\\u0063\":4}";
	REQUIRE(mm_json_scan(doc, strlen(doc), f, 1) == 0);
	CHECK(field_eq(&f[0], MM_JSON_NUMBER, "4"));
	/* Raw keys of the same length that differ in one byte. */
	f[0].name = "entity_id";
	f[0].name_len = 9;
	doc = "{\"entity_ie\":1,\"fntity_id\":2,\"entity\\u005fid\":3}";
	REQUIRE(mm_json_scan(doc, strlen(doc), f, 1) == 0);
	CHECK(field_eq(&f[0], MM_JSON_NUMBER, "3"));
}

TEST(fields_nested_and_duplicates)
{
	mm_json_field_t f[3] = {
		{.name = "k", .name_len = 1},
		{.name = "x", .name_len = 1},
		{.name = "k", .name_len = 1},
	};
	const char *doc;

	doc = "{\"x\":{\"k\":1,\"x\":[{\"k\":0}]},\"k\":2}";
	REQUIRE(mm_json_scan(doc, strlen(doc), f, 3) == 0);
	CHECK(field_eq(&f[0], MM_JSON_NUMBER, "2"));
	CHECK(field_eq(&f[1], MM_JSON_OBJECT, "{\"k\":1,\"x\":[{\"k\":0}]}"));
	CHECK(field_eq(&f[2], MM_JSON_NUMBER, "2")); /* asked twice, filled twice */

	doc = "{\"x\":{\"k\":1}}";
	REQUIRE(mm_json_scan(doc, strlen(doc), f, 3) == 0);
	CHECK_EQ_INT(f[0].type, MM_JSON_ABSENT);

	doc = "{\"k\":1,\"y\":0,\"k\":2}";
	CHECK_EQ_INT(mm_json_scan(doc, strlen(doc), f, 1), MM_EJSON);
	CHECK(strcmp(mm_diag_msg(), "json: duplicate key \"k\" at offset 13") == 0);
	doc = "{\"k\":1,\"\\u006b\":2}";
	CHECK_EQ_INT(mm_json_scan(doc, strlen(doc), f, 1), MM_EJSON);
	CHECK(strstr(mm_diag_msg(), "duplicate key") != NULL);
	/* A duplicate that nobody asked for is not an error. */
	CHECK_EQ_INT(mm_json_scan(doc, strlen(doc), &f[1], 1), 0);
	/* Nor is the same name at another depth. */
	doc = "{\"k\":{\"k\":{\"k\":1}}}";
	CHECK_EQ_INT(mm_json_scan(doc, strlen(doc), f, 1), 0);
	CHECK(field_eq(&f[0], MM_JSON_OBJECT, "{\"k\":{\"k\":1}}"));
	/* The empty name matches the empty key. */
	f[0].name = "";
	f[0].name_len = 0;
	REQUIRE(mm_json_scan("{\"a\":1,\"\":2}", 12, f, 1) == 0);
	CHECK(field_eq(&f[0], MM_JSON_NUMBER, "2"));
	/* Fields of an invalid document do not matter, but the error does. */
	f[0].name = "a";
	f[0].name_len = 1;
	CHECK_EQ_INT(mm_json_scan("{\"a\":1,\"b\":01}", 14, f, 1), MM_EJSON);
}

/* A planned scan of doc succeeds and finds field i as type and raw. */
static int planned_finds(const mm_json_plan_t *plan, mm_json_field_t *f, const char *doc, int i,
			 int type, const char *raw)
{
	return mm_json_scan_planned(plan, doc, strlen(doc), f) == 0 && field_eq(&f[i], type, raw);
}

/* A plan knows the requested names' lengths and whether a name is asked
 * twice, and one plan serves every document asked for those names. */
TEST(planned_scan)
{
	mm_json_field_t f[3] = {
		{.name = "k", .name_len = 1},
		{.name = "xy", .name_len = 2},
		{.name = "k", .name_len = 1},
	};
	mm_json_plan_t plan;
	const char *doc;

	mm_json_plan(&plan, f, 2);
	CHECK_EQ_INT(plan.nfields, 2);
	CHECK(plan.lens == ((1ULL << 1) | (1ULL << 2)));
	CHECK_EQ_INT(plan.same_names, 0);
	CHECK(planned_finds(&plan, f, "{\"xy\":\"a\",\"k\":12,\"kk\":true}", 0, MM_JSON_NUMBER, "12"));
	CHECK(field_eq(&f[1], MM_JSON_STRING, "a"));
	doc = "{\"kk\":1,\"xz\":\"a very long string value\"}";
	CHECK_EQ_INT(mm_json_scan_planned(&plan, doc, strlen(doc), f), 0);
	CHECK(f[0].type == MM_JSON_ABSENT && f[1].type == MM_JSON_ABSENT);
	doc = "{\"k\":1,\"xy\":2,\"k\":3}";
	CHECK_EQ_INT(mm_json_scan_planned(&plan, doc, strlen(doc), f), MM_EJSON);
	CHECK(strstr(mm_diag_msg(), "duplicate key") != NULL);

	/* A name asked twice: both fields are filled, on the fast path and
	 * (a nested value) on the walk. */
	mm_json_plan(&plan, f, 3);
	CHECK_EQ_INT(plan.same_names, 1);
	CHECK(planned_finds(&plan, f, "{\"xy\":\"a\",\"k\":\"the key's value\"}", 2, MM_JSON_STRING,
			    "the key's value"));
	CHECK(field_eq(&f[0], MM_JSON_STRING, "the key's value"));
	CHECK(planned_finds(&plan, f, "{\"xy\":[1,2,3],\"k\":{\"a\":false}}", 2, MM_JSON_OBJECT,
			    "{\"a\":false}"));
	CHECK(field_eq(&f[1], MM_JSON_ARRAY, "[1,2,3]"));

	/* Each name's bytes as the window's two loads find a key's
	 * (json.c key_loads): a short name's with its quote before and
	 * `":"` after, the bytes outside those masked off. */
	{
		static const struct {
			const char *name, *head, *tail, *mask;
		} layouts[] = {
			{"", "\0\0\0\0\0\0\0\0", "\0\0\0\0\0\0\0\0", "\0\0\0\0\0\0\0\0"},
			{"k", "\0\"k\":\"\0\0", "\0\"k\":\"\0\0", "\0\xff\xff\xff\xff\xff\0\0"},
			{"abc", "\0\"abc\":\"", "\0\"abc\":\"", "\0\xff\xff\xff\xff\xff\xff\xff"},
			{"ts_1", "\"ts_1\":\"", "\"ts_1\":\"", "\xff\xff\xff\xff\xff\xff\xff\xff"},
			{"page_id", "\"page_id", "\"page_id", "\xff\xff\xff\xff\xff\xff\xff\xff"},
			{"entity_id", "entity_i", "ntity_id", "\xff\xff\xff\xff\xff\xff\xff\xff"},
		};
		mm_json_field_t one;
		unsigned char bytes[8];

		for (size_t i = 0; i < sizeof(layouts) / sizeof(layouts[0]); i++) {
			one = (mm_json_field_t){.name = layouts[i].name, .name_len = strlen(layouts[i].name)};
			mm_json_plan(&plan, &one, 1);
			CHECK_EQ_INT((int)plan.names[0].len, (int)one.name_len);
			memcpy(bytes, &plan.names[0].head, 8);
			CHECK(memcmp(bytes, layouts[i].head, 8) == 0);
			memcpy(bytes, &plan.names[0].tail, 8);
			CHECK(memcmp(bytes, layouts[i].tail, 8) == 0);
			memcpy(bytes, &plan.names[0].mask, 8);
			CHECK(memcmp(bytes, layouts[i].mask, 8) == 0);
		}
	}

	/* Bad arguments are refused as mm_json_scan refuses them. */
	mm_json_plan(&plan, NULL, 0);
	CHECK_EQ_INT(mm_json_scan_planned(&plan, NULL, 2, NULL), MM_EINVAL);
	CHECK_EQ_INT(mm_json_scan_planned(&plan, "{\"entity_id\":\"p1\"}", 18, NULL), 0);
}

static int number(const char *s, int *is_int, int64_t *i, double *d)
{
	return mm_json_number(s, strlen(s), is_int, i, d);
}

TEST(numbers)
{
	char big[300];
	int is_int;
	int64_t i;
	double d;

	CHECK(number("0", &is_int, &i, &d) == 0 && is_int && i == 0 && d == 0 && !signbit(d));
	CHECK(number("-0", &is_int, &i, &d) == 0 && is_int && i == 0 && d == 0 && signbit(d));
	CHECK(number("-0.0", &is_int, &i, &d) == 0 && !is_int && d == 0 && signbit(d));
	CHECK(number("42", &is_int, &i, &d) == 0 && is_int && i == 42 && d == 42.0);
	CHECK(number("-17", &is_int, &i, &d) == 0 && is_int && i == -17 && d == -17.0);
	CHECK(number("9223372036854775807", &is_int, &i, &d) == 0 && is_int && i == INT64_MAX);
	CHECK(number("-9223372036854775808", &is_int, &i, &d) == 0 && is_int && i == INT64_MIN &&
	      d == -9223372036854775808.0);
	CHECK(number("9223372036854775808", &is_int, &i, &d) == 0 && !is_int &&
	      d == 9223372036854775808.0);
	CHECK(number("-9223372036854775809", &is_int, &i, &d) == 0 && !is_int &&
	      d == -9223372036854775808.0);
	CHECK(number("18446744073709551615", &is_int, &i, &d) == 0 && !is_int &&
	      d == 18446744073709551615.0);
	CHECK(number("18446744073709551616", &is_int, &i, &d) == 0 && !is_int &&
	      d == 18446744073709551616.0);
	CHECK(number("123456789012345678901234567890", &is_int, &i, &d) == 0 && !is_int &&
	      d == 123456789012345678901234567890.0);
	CHECK(number("9007199254740993", &is_int, &i, &d) == 0 && is_int &&
	      i == 9007199254740993LL);
	CHECK(number("1.5", &is_int, &i, &d) == 0 && !is_int && d == 1.5);
	CHECK(number("0.1", &is_int, &i, &d) == 0 && !is_int && d == 0.1);
	CHECK(number("1e2", &is_int, &i, &d) == 0 && !is_int && d == 100.0);
	CHECK(number("1.0", &is_int, &i, &d) == 0 && !is_int && d == 1.0);
	CHECK(number("-2.5E-3", &is_int, &i, &d) == 0 && d == -2.5e-3);
	CHECK(number("1.7976931348623157e308", &is_int, &i, &d) == 0 && d == 1.7976931348623157e308);
	CHECK(number("4.9e-324", &is_int, &i, &d) == 0 && d == 4.9e-324);
	CHECK(number("1e-400", &is_int, &i, &d) == 0 && d == 0); /* underflow is fine */
	CHECK_EQ_INT(number("1e999", &is_int, &i, &d), MM_ERANGE);
	CHECK(strstr(mm_diag_msg(), "1e999") != NULL);
	CHECK(isinf(d) && !is_int);
	CHECK_EQ_INT(number("-1e400", &is_int, &i, &d), MM_ERANGE);
	CHECK_EQ_INT(number("1.8e308", &is_int, &i, &d), MM_ERANGE);
	/* Longer than the local copy: 1 followed by 250 zeros, then a fraction. */
	memset(big, '0', sizeof(big));
	big[0] = '1';
	memcpy(big + 251, ".25", 4);
	CHECK(number(big, &is_int, &i, &d) == 0 && !is_int && d == 1e250);
	/* Only a token that scan would accept, exactly. */
	CHECK_EQ_INT(number("", &is_int, &i, &d), MM_EJSON);
	CHECK_EQ_INT(number("01", &is_int, &i, &d), MM_EJSON);
	CHECK_EQ_INT(number("+1", &is_int, &i, &d), MM_EJSON);
	CHECK_EQ_INT(number("1.", &is_int, &i, &d), MM_EJSON);
	CHECK_EQ_INT(number(".5", &is_int, &i, &d), MM_EJSON);
	CHECK_EQ_INT(number("1e", &is_int, &i, &d), MM_EJSON);
	CHECK_EQ_INT(number("1 ", &is_int, &i, &d), MM_EJSON);
	CHECK_EQ_INT(number("-", &is_int, &i, &d), MM_EJSON);
	CHECK_EQ_INT(number("nan", &is_int, &i, &d), MM_EJSON);
	/* A token inside a larger buffer is read to len only. */
	CHECK(mm_json_number("12345", 2, &is_int, &i, &d) == 0 && is_int && i == 12);
	CHECK(mm_json_number("1.5e3", 3, &is_int, &i, &d) == 0 && !is_int && d == 1.5);
}

static int quote_is(const char *in, size_t len, const char *want)
{
	mm_buf_t b = {0};
	int ok;

	if (mm_json_quote(in, len, &b) != 0)
		return 0;
	ok = b.len == strlen(want) && memcmp(b.p, want, b.len) == 0;
	if (!ok)
		printf("#   quote gave %.*s, want %s\n", (int)b.len, (char *)b.p, want);
	mm_buf_free(&b);
	return ok;
}

#define QUOTE_IS(lit, want) quote_is(lit, sizeof(lit) - 1, want)

TEST(quote)
{
	CHECK(QUOTE_IS("", "\"\""));
	CHECK(QUOTE_IS("abc", "\"abc\""));
	CHECK(QUOTE_IS("a\"b\\c/", "\"a\\\"b\\\\c/\""));
	CHECK(QUOTE_IS("\b\f\n\r\t", "\"\\b\\f\\n\\r\\t\""));
	CHECK(QUOTE_IS("\x01\x1f\0\x7f", "\"\\u0001\\u001f\\u0000\x7f\""));
	CHECK(QUOTE_IS("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""));
	CHECK(QUOTE_IS("\xff", "\"\\ufffd\""));
	CHECK(QUOTE_IS("a\x80z", "\"a\\ufffdz\""));
	CHECK(QUOTE_IS("\xe2\x82", "\"\\ufffd\""));   /* truncated: one U+FFFD */
	CHECK(QUOTE_IS("\xe2\x82z", "\"\\ufffdz\""));
	CHECK(QUOTE_IS("\xf0\x9f\x98", "\"\\ufffd\""));
	CHECK(QUOTE_IS("\xc0\xaf", "\"\\ufffd\\ufffd\"")); /* overlong */
	CHECK(QUOTE_IS("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"")); /* surrogate */
	CHECK(QUOTE_IS("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""));
	CHECK(QUOTE_IS("\xc3\xa9\xff\xc3\xa9", "\"\xc3\xa9\\ufffd\xc3\xa9\""));

	/* Appends to what the buffer holds. */
	{
		mm_buf_t b = {0};

		REQUIRE(mm_buf_append(&b, "x=", 2) == 0);
		REQUIRE(mm_json_quote("y", 1, &b) == 0);
		CHECK(b.len == 5 && memcmp(b.p, "x=\"y\"", 5) == 0);
		REQUIRE(mm_json_quote(NULL, 0, &b) == 0);
		CHECK(b.len == 7 && memcmp(b.p, "x=\"y\"\"\"", 7) == 0);
		CHECK_EQ_INT(mm_json_quote(NULL, 1, &b), MM_EINVAL);
		mm_buf_free(&b);
	}
}

static int unescape_is(const char *in, const char *want, size_t want_len)
{
	mm_buf_t b = {0};
	int ok;

	if (mm_json_unescape(in, strlen(in), &b) != 0)
		return 0;
	ok = b.len == want_len && (want_len == 0 || memcmp(b.p, want, want_len) == 0);
	mm_buf_free(&b);
	return ok;
}

#define UNESCAPE_IS(in, lit) unescape_is(in, lit, sizeof(lit) - 1)

TEST(unescape)
{
	mm_buf_t b = {0};

	CHECK(UNESCAPE_IS("", ""));
	CHECK(UNESCAPE_IS("plain", "plain"));
	CHECK(UNESCAPE_IS("\\\"\\\\\\/\\b\\f\\n\\r\\t", "\"\\/\b\f\n\r\t"));
	CHECK(UNESCAPE_IS("a\\u0000b", "a\0b"));
	CHECK(UNESCAPE_IS("\\u0041\\u00e9\\u20ac\\uFFFF", "A\xc3\xa9\xe2\x82\xac\xef\xbf\xbf"));
	CHECK(UNESCAPE_IS("\\ud83d\\ude00!", "\xf0\x9f\x98\x80!"));
	CHECK(UNESCAPE_IS("\\uDBFF\\uDFFF", "\xf4\x8f\xbf\xbf"));
	CHECK(UNESCAPE_IS("\xc3\xa9\\n\xc3\xa9", "\xc3\xa9\n\xc3\xa9"));
	CHECK_EQ_INT(mm_json_unescape("\\", 1, &b), MM_EJSON);
	CHECK_EQ_INT(mm_json_unescape("\\x", 2, &b), MM_EJSON);
	CHECK_EQ_INT(mm_json_unescape("\\u12", 4, &b), MM_EJSON);
	CHECK_EQ_INT(mm_json_unescape("\\u12g4", 6, &b), MM_EJSON);
	CHECK_EQ_INT(mm_json_unescape("\\ud800", 6, &b), MM_EJSON);
	CHECK_EQ_INT(mm_json_unescape("\\udc00", 6, &b), MM_EJSON);
	CHECK_EQ_INT(mm_json_unescape("\\ud800\\u0041", 12, &b), MM_EJSON);
	/* The span ends where len says, even inside an escape. */
	CHECK_EQ_INT(mm_json_unescape("\\u0041", 5, &b), MM_EJSON);
	/* Appends, all or nothing. */
	b.len = 0;
	REQUIRE(mm_buf_append(&b, "<", 1) == 0);
	REQUIRE(mm_json_unescape("\\t>", 3, &b) == 0);
	CHECK(b.len == 3 && memcmp(b.p, "<\t>", 3) == 0);
	CHECK_EQ_INT(mm_json_unescape("ab\\n\\x", 6, &b), MM_EJSON);
	CHECK_EQ_INT(b.len, 3);
	CHECK_EQ_INT(mm_json_unescape(NULL, 0, &b), 0);
	CHECK_EQ_INT(b.len, 3);
	CHECK_EQ_INT(mm_json_unescape(NULL, 1, &b), MM_EINVAL);
	mm_buf_free(&b);
}

/* The state of the random tests' generator (unit_xorshift64). */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static size_t put_utf8(uint8_t *out, uint32_t cp)
{
	if (cp < 0x80) {
		out[0] = (uint8_t)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (uint8_t)(0xc0 | cp >> 6);
		out[1] = (uint8_t)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (uint8_t)(0xe0 | cp >> 12);
		out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
		out[2] = (uint8_t)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (uint8_t)(0xf0 | cp >> 18);
	out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3f));
	out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
	out[3] = (uint8_t)(0x80 | (cp & 0x3f));
	return 4;
}

/* A random Unicode scalar value, biased towards ASCII and edge cases. */
static uint32_t rnd_cp(void)
{
	static const uint32_t edges[] = {0,      0x1f,   0x20,   '"',     '\\',    0x7f,
					 0x80,   0x7ff,  0x800,  0xd7ff,  0xe000,  0xfffd,
					 0xffff, 0x10000, 0x10ffff, 0x2028, 0xfeff};

	switch (unit_xorshift64(&rng_state) % 4) {
	case 0:
		return edges[unit_xorshift64(&rng_state) % (sizeof(edges) / sizeof(edges[0]))];
	case 1: {
		uint32_t cp = (uint32_t)(unit_xorshift64(&rng_state) % 0x110000);

		return cp >= 0xd800 && cp <= 0xdfff ? cp - 0x800 : cp;
	}
	default:
		return (uint32_t)(0x20 + unit_xorshift64(&rng_state) % 0x5f);
	}
}

/* Quote then unescape gives back any valid UTF-8; quote's output of any bytes
 * is a valid JSON string. */
TEST(quote_unescape_round_trip)
{
	mm_json_field_t f = {.name = "k", .name_len = 1};
	uint8_t in[512];
	mm_buf_t doc = {0}, out = {0};
	size_t n, k;
	int iter, ok = 1;

	for (iter = 0; iter < 20000 && ok; iter++) {
		n = 0;
		if (iter % 2 == 0) {
			for (k = unit_xorshift64(&rng_state) % 40; k > 0; k--)
				n += put_utf8(in + n, rnd_cp());
		} else {
			for (k = unit_xorshift64(&rng_state) % 64; k > 0; k--)
				in[n++] = (uint8_t)unit_xorshift64(&rng_state);
		}
		doc.len = 0;
		REQUIRE(mm_buf_append(&doc, "{\"k\":", 5) == 0);
		REQUIRE(mm_json_quote((char *)in, n, &doc) == 0);
		REQUIRE(mm_buf_append(&doc, "}", 1) == 0);
		if (mm_json_scan((char *)doc.p, doc.len, &f, 1) != 0 || f.type != MM_JSON_STRING) {
			printf("#   iter %d: %s\n", iter, mm_diag_msg());
			ok = 0;
			break;
		}
		out.len = 0;
		REQUIRE(mm_json_unescape(f.p, f.len, &out) == 0);
		if (iter % 2 == 0 && (out.len != n || memcmp(out.p, in, n) != 0))
			ok = 0;
	}
	CHECK(ok);
	mm_buf_free(&doc);
	mm_buf_free(&out);
}

/* The SAX walk, recorded as a trace. */
struct trace {
	mm_buf_t b;
	int abort_on_number;
};

/* mm_utf8_valid (dead letters, DynamoDB's strings, metric labels) and the
 * scanner's string check share one sequence rule (mm_utf8_seq): on random
 * bytes, mostly above 0x7f, a string is valid UTF-8 exactly when the scanner
 * takes it as a JSON string's body. Fixed cases pin the rule's edges. */
TEST(utf8_valid_agrees_with_scanner)
{
	static const struct { const char *s; int valid; } fixed[] = {
		{"", 1}, {"abc", 1}, {"\xc3\xa9", 1}, {"\xe2\x82\xac", 1}, {"\xf0\x9f\x98\x80", 1},
		{"\xf4\x8f\xbf\xbf", 1}, {"\xc0\xaf", 0}, {"\xc1\xbf", 0}, {"\xe0\x9f\xbf", 0},
		{"\xed\xa0\x80", 0}, {"\xf0\x8f\xbf\xbf", 0}, {"\xf4\x90\x80\x80", 0},
		{"\xf5\x80\x80\x80", 0}, {"\xe2\x82", 0}, {"\x80", 0}, {"a\xc3", 0},
	};
	static const uint8_t alphabet[] = {'a', 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc2,
					   0xdf, 0xe0, 0xe1, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff};
	char doc[32];
	size_t i, k, n;

	for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		CHECK_EQ_INT(mm_utf8_valid(fixed[i].s, strlen(fixed[i].s)), fixed[i].valid);
	for (i = 0; i < 200000; i++) {
		uint8_t s[8];
		int want;

		n = unit_xorshift64(&rng_state) % 9;
		for (k = 0; k < n; k++)
			s[k] = alphabet[unit_xorshift64(&rng_state) % sizeof(alphabet)];
		memcpy(doc, "{\"a\":\"", 6);
		memcpy(doc + 6, s, n);
		memcpy(doc + 6 + n, "\"}", 2);
		want = mm_json_scan(doc, n + 8, NULL, 0);
		REQUIRE(want == 0 || want == MM_EUTF8);
		if (mm_utf8_valid((const char *)s, n) != (want == 0)) {
			printf("# disagree on %zu bytes, first 0x%02x\n", n, n ? s[0] : 0);
			CHECK(0);
			return;
		}
	}
}

static int t_null(void *ud)
{
	return mm_buf_append(&((struct trace *)ud)->b, "N ", 2);
}

static int t_bool(void *ud, int v)
{
	return mm_buf_append(&((struct trace *)ud)->b, v ? "T " : "F ", 2);
}

static int t_number(void *ud, const char *raw, size_t len)
{
	struct trace *t = ud;

	if (t->abort_on_number)
		return mm_diag_set(MM_ETYPE, "no numbers here");
	return mm_buf_printf(&t->b, "#%.*s ", (int)len, raw);
}

static int t_string(void *ud, const char *s, size_t len)
{
	return mm_buf_printf(&((struct trace *)ud)->b, "s<%.*s> ", (int)len, s);
}

static int t_key(void *ud, const char *s, size_t len)
{
	return mm_buf_printf(&((struct trace *)ud)->b, "k<%.*s> ", (int)len, s);
}

static int t_begin(void *ud, int is_object)
{
	return mm_buf_append(&((struct trace *)ud)->b, is_object ? "{ " : "[ ", 2);
}

static int t_end(void *ud, int is_object)
{
	return mm_buf_append(&((struct trace *)ud)->b, is_object ? "} " : "] ", 2);
}

static const mm_json_visitor_t tracer = {
	.on_null = t_null,
	.on_bool = t_bool,
	.on_number = t_number,
	.on_string = t_string,
	.on_key = t_key,
	.on_begin = t_begin,
	.on_end = t_end,
};

static int trace_is(const char *doc, const char *want)
{
	struct trace t = {{0}, 0};
	int ok;

	if (mm_json_parse(doc, strlen(doc), &tracer, &t) != 0) {
		mm_buf_free(&t.b);
		return 0;
	}
	ok = t.b.len == strlen(want) && memcmp(t.b.p, want, t.b.len) == 0;
	if (!ok)
		printf("#   trace %.*s\n", (int)t.b.len, (char *)t.b.p);
	mm_buf_free(&t.b);
	return ok;
}

TEST(parse)
{
	struct trace t = {{0}, 1};
	mm_buf_t scratch = {0};

	CHECK(trace_is("{\"a\":[1,\"x\\ny\",true,null,{},[]],\"b\\u0021\":false}",
		       "{ k<a> [ #1 s<x\ny> T N { } [ ] ] k<b!> F } "));
	CHECK(trace_is(" [ -1.5e3 , \"\\ud83d\\ude00\" ] ", "[ #-1.5e3 s<\xf0\x9f\x98\x80> ] "));
	CHECK(trace_is("\"s\"", "s<s> "));
	CHECK(trace_is("0", "#0 "));
	CHECK(trace_is("null", "N "));
	CHECK(trace_is("{\"\":{\"\":[[]]}}", "{ k<> { k<> [ [ ] ] } } "));
	/* A callback's error stops the walk and is returned as is. */
	CHECK_EQ_INT(mm_json_parse("[\"a\",1,2]", 9, &tracer, &t), MM_ETYPE);
	CHECK(t.b.len == 7 && memcmp(t.b.p, "[ s<a> ", 7) == 0);
	mm_buf_free(&t.b);
	/* Errors are those of scan, found after the tokens before them. */
	t.abort_on_number = 0;
	CHECK_EQ_INT(mm_json_parse("[1,2,]", 6, &tracer, &t), MM_EJSON);
	CHECK(t.b.len == 8 && memcmp(t.b.p, "[ #1 #2 ", 8) == 0);
	mm_buf_free(&t.b);
	/* With a caller's scratch buffer, which keeps its capacity. */
	REQUIRE(mm_json_parse_buf("[\"a\\tb\"]", 8, &tracer, &t, &scratch) == 0);
	CHECK(t.b.len == 11 && memcmp(t.b.p, "[ s<a\tb> ] ", 11) == 0);
	CHECK(scratch.cap > 0);
	mm_buf_free(&t.b);
	mm_buf_free(&scratch);
}

/*
 * An independent recursive-descent validator used as the reference: it
 * returns 1 when p[0..n) is one valid JSON value with surrounding whitespace.
 * It decodes UTF-8 into code points and checks their ranges, where the
 * scanner uses byte-range tables.
 */
struct ref {
	const uint8_t *p, *end;
	int depth;
};

static void ref_ws(struct ref *r)
{
	while (r->p < r->end && strchr(" \t\n\r", *r->p) != NULL && *r->p != 0)
		r->p++;
}

static int ref_lit(struct ref *r, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(r->end - r->p) < n || memcmp(r->p, lit, n) != 0)
		return 0;
	r->p += n;
	return 1;
}

static int ref_digits(struct ref *r)
{
	const uint8_t *s = r->p;

	while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
		r->p++;
	return r->p > s;
}

static int ref_number(struct ref *r)
{
	if (r->p < r->end && *r->p == '-')
		r->p++;
	if (r->p < r->end && *r->p == '0')
		r->p++;
	else if (!(r->p < r->end && *r->p >= '1' && *r->p <= '9') || !ref_digits(r))
		return 0;
	if (r->p < r->end && *r->p == '.') {
		r->p++;
		if (!ref_digits(r))
			return 0;
	}
	if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
		r->p++;
		if (r->p < r->end && (*r->p == '+' || *r->p == '-'))
			r->p++;
		if (!ref_digits(r))
			return 0;
	}
	return 1;
}

static long ref_hex4(struct ref *r)
{
	long v = 0;
	int i;

	if (r->end - r->p < 4)
		return -1;
	for (i = 0; i < 4; i++) {
		int c = r->p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	r->p += 4;
	return v;
}

static int ref_string(struct ref *r)
{
	r->p++;
	while (r->p < r->end) {
		uint32_t c = *r->p++, cp, min;
		int extra, i;

		if (c == '"')
			return 1;
		if (c < 0x20)
			return 0;
		if (c == '\\') {
			long u, lo;

			if (r->p == r->end)
				return 0;
			c = *r->p++;
			if (c != 'u') {
				if (strchr("\"\\/bfnrt", (int)c) == NULL || c == 0)
					return 0;
				continue;
			}
			if ((u = ref_hex4(r)) < 0 || (u >= 0xdc00 && u <= 0xdfff))
				return 0;
			if (u >= 0xd800 && u <= 0xdbff) {
				if (!ref_lit(r, "\\u") || (lo = ref_hex4(r)) < 0xdc00 || lo > 0xdfff)
					return 0;
			}
			continue;
		}
		if (c < 0x80)
			continue;
		if ((c & 0xe0) == 0xc0)
			extra = 1, cp = c & 0x1f, min = 0x80;
		else if ((c & 0xf0) == 0xe0)
			extra = 2, cp = c & 0x0f, min = 0x800;
		else if ((c & 0xf8) == 0xf0)
			extra = 3, cp = c & 0x07, min = 0x10000;
		else
			return 0;
		for (i = 0; i < extra; i++) {
			if (r->p == r->end || (*r->p & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (*r->p++ & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
	}
	return 0;
}

static int ref_value(struct ref *r)
{
	int first = 1, ok;

	ref_ws(r);
	if (r->p == r->end)
		return 0;
	switch (*r->p) {
	case '{':
	case '[': {
		int obj = *r->p == '{';

		if (++r->depth > MM_JSON_MAX_DEPTH)
			return 0;
		r->p++;
		for (;;) {
			ref_ws(r);
			if (r->p < r->end && *r->p == (obj ? '}' : ']') && first)
				break;
			if (!first) {
				if (r->p == r->end)
					return 0;
				if (*r->p == (obj ? '}' : ']'))
					break;
				if (*r->p != ',')
					return 0;
				r->p++;
				ref_ws(r);
			}
			first = 0;
			if (obj) {
				if (r->p == r->end || *r->p != '"' || !ref_string(r))
					return 0;
				ref_ws(r);
				if (r->p == r->end || *r->p != ':')
					return 0;
				r->p++;
			}
			if (!ref_value(r))
				return 0;
			ref_ws(r);
		}
		r->p++;
		r->depth--;
		return 1;
	}
	case '"':
		return ref_string(r);
	case 't':
		return ref_lit(r, "true");
	case 'f':
		return ref_lit(r, "false");
	case 'n':
		return ref_lit(r, "null");
	default:
		ok = ref_number(r);
		return ok;
	}
}

static int ref_valid(const uint8_t *p, size_t n)
{
	struct ref r = {p, p + n, 0};

	if (!ref_value(&r))
		return 0;
	ref_ws(&r);
	return r.p == r.end;
}

/* Appends a random JSON value of bounded depth. */
static void gen_value(mm_buf_t *b, int depth)
{
	static const char *const ws[] = {"", "", "", " ", "\n\t", "\r "};
	static const char *const nums[] = {"0", "-0", "12", "-3.25", "1e10", "2E-3", "0.5e+7",
					   "123456789012345678901"};
	static const char *const escs[] = {"\\n", "\\\"", "\\\\", "\\/", "\\u00e9", "\\ud83d\\ude00",
					   "\\u0000", "\\uFFFF"};
	uint8_t u[4];
	int i, n;

	mm_buf_printf(b, "%s", ws[unit_xorshift64(&rng_state) % 6]);
	switch (depth >= 5 ? 2 + unit_xorshift64(&rng_state) % 5 : unit_xorshift64(&rng_state) % 7) {
	case 0:
	case 1: {
		int obj = (int)(unit_xorshift64(&rng_state) % 2);

		mm_buf_append(b, obj ? "{" : "[", 1);
		n = (int)(unit_xorshift64(&rng_state) % 5);
		for (i = 0; i < n; i++) {
			if (i)
				mm_buf_append(b, ",", 1);
			if (obj) {
				mm_buf_printf(b, "\"k%d\"", (int)(unit_xorshift64(&rng_state) % 4));
				mm_buf_append(b, ":", 1);
			}
			gen_value(b, depth + 1);
		}
		mm_buf_append(b, obj ? "}" : "]", 1);
		break;
	}
	case 2:
	case 3:
		mm_buf_append(b, "\"", 1);
		for (n = (int)(unit_xorshift64(&rng_state) % 24); n > 0; n--) {
			uint32_t cp = rnd_cp();

			if (unit_xorshift64(&rng_state) % 4 == 0) {
				const char *e = escs[unit_xorshift64(&rng_state) % 8];

				mm_buf_append(b, e, strlen(e));
			} else if (cp >= 0x20 && cp != '"' && cp != '\\') {
				mm_buf_append(b, u, put_utf8(u, cp));
			}
		}
		mm_buf_append(b, "\"", 1);
		break;
	case 4:
		mm_buf_printf(b, "%s", nums[unit_xorshift64(&rng_state) % 8]);
		break;
	default:
		mm_buf_printf(b, "%s", (const char *[]){"true", "false", "null"}[unit_xorshift64(&rng_state) % 3]);
		break;
	}
	mm_buf_printf(b, "%s", ws[unit_xorshift64(&rng_state) % 6]);
}

static void mutate(mm_buf_t *b)
{
	static const char alphabet[] = "{}[]\",:\\u0123456789-+.eEtrfalsn \t\n\x80\xa0\xbf\xc0\xc3\xe0\xed\xf0\xf4\0";
	size_t pos = b->len ? unit_xorshift64(&rng_state) % b->len : 0;

	switch (unit_xorshift64(&rng_state) % 4) {
	case 0: /* replace a byte */
		if (b->len)
			b->p[pos] = (uint8_t)alphabet[unit_xorshift64(&rng_state) % (sizeof(alphabet) - 1)];
		break;
	case 1: /* delete a byte */
		if (b->len) {
			memmove(b->p + pos, b->p + pos + 1, b->len - pos - 1);
			b->len--;
		}
		break;
	case 2: /* insert a byte */
		if (mm_buf_reserve(b, 1) == 0) {
			memmove(b->p + pos + 1, b->p + pos, b->len - pos);
			b->p[pos] = (uint8_t)alphabet[unit_xorshift64(&rng_state) % (sizeof(alphabet) - 1)];
			b->len++;
		}
		break;
	default: /* truncate */
		b->len = pos;
		break;
	}
}

TEST(random_against_reference)
{
	static const mm_json_visitor_t none = {0};
	mm_json_field_t f[3] = {
		{.name = "k0", .name_len = 2}, {.name = "k1", .name_len = 2}, {.name = "k2", .name_len = 2},
	};
	mm_buf_t b = {0};
	int iter, m, want, scan, scan_f, parse, valid_seen = 0, invalid_seen = 0, mismatches = 0;

	for (iter = 0; iter < 40000 && mismatches < 5; iter++) {
		b.len = 0;
		if (iter % 3 == 0) {
			mm_buf_append(&b, "{", 1);
			mm_buf_append(&b, "\"k1\":", 5);
			gen_value(&b, 1);
			mm_buf_append(&b, "}", 1);
		} else {
			gen_value(&b, 0);
		}
		for (m = (int)(unit_xorshift64(&rng_state) % 3); m > 0 && iter % 2; m--)
			mutate(&b);
		want = ref_valid(b.p, b.len);
		scan = mm_json_scan((char *)b.p, b.len, NULL, 0);
		parse = mm_json_parse((char *)b.p, b.len, &none, NULL);
		/* Requested fields may only add a duplicate-key error (which
		 * may come before another error). */
		scan_f = mm_json_scan((char *)b.p, b.len, f, 3);
		if ((scan == 0 || scan == MM_ENOTOBJ) != want || (parse == 0) != want ||
		    (scan != MM_ENOTOBJ && scan != parse) ||
		    (scan_f != scan &&
		     !(scan_f == MM_EJSON && strstr(mm_diag_msg(), "duplicate") != NULL))) {
			printf("#   iter %d: ref %d scan %s parse %s fields %s: %.*s\n", iter, want,
			       mm_err_name(scan), mm_err_name(parse), mm_err_name(scan_f),
			       (int)b.len, (char *)b.p);
			mismatches++;
		}
		if (want)
			valid_seen++;
		else
			invalid_seen++;
	}
	CHECK_EQ_INT(mismatches, 0);
	CHECK(valid_seen > 1000);
	CHECK(invalid_seen > 1000);
	mm_buf_free(&b);
}

int main(void)
{
	RUN(table);
	RUN(table_parse);
	RUN(error_details);
	RUN(bad_arguments);
	RUN(depth);
	RUN(big_documents);
	RUN(string_blocks);
	RUN(flat_fast_path);
	RUN(flat_windows);
	RUN(flat_empty_name);
	RUN(flat_names);
	RUN(flat_whole);
	RUN(fields_basic);
	RUN(fields_types);
	RUN(fields_escapes);
	RUN(fields_nested_and_duplicates);
	RUN(planned_scan);
	RUN(numbers);
	RUN(quote);
	RUN(unescape);
	RUN(quote_unescape_round_trip);
	RUN(utf8_valid_agrees_with_scanner);
	RUN(parse);
	RUN(random_against_reference);
	UNIT_DONE();
}
