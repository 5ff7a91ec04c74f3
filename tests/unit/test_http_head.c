/*
 * test_http_head.c: the HTTP client's fast path for simple response heads
 * (engine/http/http_head.c) against libhttp-parser (tests/unit/http_ref.h):
 * what it takes it must read exactly as libhttp-parser does, and what it
 * leaves, libhttp-parser reads.
 */
#include <stdlib.h>
#include <string.h>

#include "http_ref.h"
#include "lib/error.h"
#include "unit.h"

/* dynalite's answer to an UpdateItem, as the DynamoDB store gets it. */
static const char DYNALITE[] =
	"HTTP/1.1 200 OK\r\nx-amzn-RequestId: 0RE32GLEDJGAGCSU1DDKWMCHBKWFTLL1P343750D99BMOJSMJAQX\r\n"
	"x-amz-crc32: 2745614147\r\nContent-Type: application/x-amz-json-1.0\r\n"
	"Content-Length: 2\r\nDate: Sat, 05 Dec 2026 03:22:37 GMT\r\nConnection: keep-alive\r\n"
	"Keep-Alive: timeout=5\r\n\r\n{}";

/* 1 when the fast path takes p and agrees with libhttp-parser, 0 when it
 * leaves p alone; a disagreement fails the test with its description. */
static int taken(const char *p, size_t n)
{
	char why[200];
	int t = 0;
	const char *d = http_ref_compare(p, n, &t, why, sizeof(why));

	if (d != NULL)
		printf("#   %s: %.*s\n", d, (int)(n < 60 ? n : 60), p);
	CHECK(d == NULL);
	return t;
}

/* Each of heads[0..n) must be taken (want 1) or left alone (want 0). */
static void check_heads(const char *const *heads, size_t n, int want)
{
	for (size_t i = 0; i < n; i++) {
		int t = taken(heads[i], strlen(heads[i]));

		if (t != want)
			printf("#   %s: %s\n", t ? "taken" : "left alone", heads[i]);
		CHECK(t == want);
	}
}

TEST(dynalite_answer)
{
	mm_http_head_t hd;
	mm_buf_t hdrs = {0};
	size_t n = strlen(DYNALITE);

	REQUIRE(mm_http_head_parse(DYNALITE, n, &hd, &hdrs) == 1);
	CHECK_EQ_INT(hd.code, 200);
	CHECK_EQ_INT(hd.keep, 1);
	CHECK_EQ_INT(hd.body_len, 2);
	CHECK_EQ_INT(hd.head_len, n - 2);
	CHECK(hdrs.len > 16 && memcmp(hdrs.p, "x-amzn-RequestId\0000RE32", 21) == 0);
	CHECK(hdrs.p[hdrs.len - 1] == '\0');
	mm_buf_free(&hdrs);
	CHECK(taken(DYNALITE, n) == 1);
}

/* Heads of the simple shape in their less usual forms: taken, and read as
 * libhttp-parser reads them. */
TEST(simple_heads_taken)
{
	static const char *const heads[] = {
		"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 \r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 400 Bad Request\r\nContent-Length: 002\r\n\r\nno",
		"HTTP/1.1 599 X\r\nConnection: Close\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 999 X\r\nCONNECTION: KEEP-ALIVE\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nX-A:\t \tleading white space\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nX-A: inner\ttab and  spaces\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nX-A: trailing \t \r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nX-A: obs-text \x80\xff\xc3\xa9\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 Reason with \x80 and\ttab\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\r\n!#$%&'*+-.^_`|~09azAZ: v\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nContent-Length:7\r\nX: 1\r\nX: 2\r\n\r\nrepeats",
		"HTTP/1.1 200 OK\r\nContent-Length: 999999999999999999\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Lengthx: 1\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nTransfer-Encodin: chunked\r\nContent-Length: 1\r\n\r\nx",
	};

	check_heads(heads, sizeof(heads) / sizeof(heads[0]), 1);
}

/* What the fast path must leave to libhttp-parser: other framings, codes
 * whose body rules differ, HTTP/1.0, forms it does not read the same way. */
TEST(other_heads_left_alone)
{
	static const char *const heads[] = {
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nX: y\r\n\r\nup to the end",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 101 Switching\r\nUpgrade: x\r\nConnection: upgrade\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 2\r\n\r\n",
		"HTTP/1.1 199 X\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2 \r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456789\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nX-A: a\r\n folded\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nX-A:\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nX-A: \x01\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nX-A: a\x7f\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 O\x01K\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nX A: a\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nX-A : a\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\n: a\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nConnection: upgrade\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nProxy-Connection: close\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nok",
		"http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
	};

	check_heads(heads, sizeof(heads) / sizeof(heads[0]), 0);
}

/* A head is read only whole, and within MM_HTTP_HEAD_MAX bytes: every
 * proper prefix is left alone, the whole is taken. */
TEST(prefixes_and_the_bound)
{
	size_t n = strlen(DYNALITE) - 2, pad = MM_HTTP_HEAD_MAX;
	char *big = malloc(pad + 64);
	int cut_taken = 0;

	for (size_t k = 0; k < n; k++)
		cut_taken += taken(DYNALITE, k);
	CHECK_EQ_INT(cut_taken, 0);
	CHECK(taken(DYNALITE, n) == 1);
	REQUIRE(big != NULL);
	/* One header line that makes the head exactly the bound, then one
	 * byte over it. */
	for (size_t over = 0; over <= 1; over++) {
		size_t at = 0, fill = pad - over;

		at += (size_t)sprintf(big, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX: ");
		fill -= at + 4; /* the line's CRLF and the empty line */
		fill += 2 * over;
		memset(big + at, 'a', fill);
		at += fill;
		at += (size_t)sprintf(big + at, "\r\n\r\n");
		CHECK_EQ_INT(taken(big, at), at <= MM_HTTP_HEAD_MAX);
	}
	free(big);
}

/* Every byte of dynalite's answer replaced by every other value: wherever
 * the fast path still takes the head, it agrees with libhttp-parser. */
TEST(every_byte_changed)
{
	size_t n = strlen(DYNALITE);
	char *p = malloc(n);
	long count = 0, agreed = 0;

	REQUIRE(p != NULL);
	for (size_t i = 0; i < n; i++)
		for (int b = 0; b < 256; b++) {
			char why[200];

			memcpy(p, DYNALITE, n);
			if ((unsigned char)p[i] == b)
				continue;
			p[i] = (char)b;
			count++;
			if (http_ref_compare(p, n, NULL, why, sizeof(why)) == NULL)
				agreed++;
			else if (count - agreed <= 5)
				printf("#   byte %zu = 0x%02x: %s\n", i, b, why);
		}
	CHECK_EQ_INT(agreed, count);
	free(p);
}

int main(void)
{
	RUN(dynalite_answer);
	RUN(simple_heads_taken);
	RUN(other_heads_left_alone);
	RUN(prefixes_and_the_bound);
	RUN(every_byte_changed);
	UNIT_DONE();
}
