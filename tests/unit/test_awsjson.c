/*
 * test_awsjson.c: the JSON tree that reads AWS answers, and base64 decoding.
 *
 * The tree: shapes and values of a DynamoDB-like answer, member lookup,
 * escapes, numbers kept as raw text, errors, and reuse of one tree for many
 * documents (the arena is rewound, old nodes are not referenced). Base64: the
 * RFC 4648 test vectors both ways, and rejection of everything that is not
 * the canonical padded encoding.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "aws/awsjson.h"
#include "lib/error.h"
#include "lib/text.h"
#include "unit.h"

static int parse(mm_jtree_t *t, const char *doc)
{
	return mm_jtree_parse(t, doc, strlen(doc));
}

TEST(tree_of_a_dynamodb_answer)
{
	mm_jtree_t t = {0};
	const mm_jnode_t *item, *v, *list, *c;
	const char *doc = "{\"Responses\":{\"tbl\":[{\"pk\":{\"S\":\"ns#a\\u00e9\\\"\"},\"sk\":{\"N\":\"-3\"},"
			  "\"v\":{\"B\":\"AQID\"}},{\"pk\":{\"S\":\"ns#b\"}}]},"
			  "\"UnprocessedKeys\":{},\"x\":[true,false,null,1.5e3]}";

	REQUIRE(parse(&t, doc) == 0);
	REQUIRE(t.root != NULL && t.root->type == MM_JSON_OBJECT);
	CHECK_EQ_INT(t.root->n, 3);
	list = mm_jnode_get(mm_jnode_get(t.root, "Responses"), "tbl");
	REQUIRE(list != NULL && list->type == MM_JSON_ARRAY);
	CHECK_EQ_INT(list->n, 2);
	item = list->child;
	REQUIRE(item != NULL);
	v = mm_jnode_get(mm_jnode_get(item, "pk"), "S");
	REQUIRE(v != NULL);
	CHECK(v->len == 7 && memcmp(v->s, "ns#a\xc3\xa9\"", 7) == 0); /* unescaped */
	v = mm_jnode_get(mm_jnode_get(item, "sk"), "N");
	CHECK(mm_jnode_is(v, "-3"));
	CHECK(mm_jnode_is(mm_jnode_get(mm_jnode_get(item, "v"), "B"), "AQID"));
	CHECK(mm_jnode_get(item, "nope") == NULL);
	CHECK(mm_jnode_get(v, "x") == NULL); /* not an object */
	CHECK(mm_jnode_get(NULL, "x") == NULL);
	CHECK(mm_jnode_is(mm_jnode_get(mm_jnode_get(item->next, "pk"), "S"), "ns#b"));
	CHECK(mm_jnode_get(t.root, "UnprocessedKeys")->n == 0);
	c = mm_jnode_get(t.root, "x")->child;
	CHECK(c->type == MM_JSON_TRUE && c->next->type == MM_JSON_FALSE &&
	      c->next->next->type == MM_JSON_NULL);
	c = c->next->next->next;
	CHECK(c->type == MM_JSON_NUMBER && c->len == 5 && memcmp(c->s, "1.5e3", 5) == 0);
	mm_jtree_free(&t);
}

TEST(tree_reuse_and_errors)
{
	mm_jtree_t t = {0};
	char big[20000];
	size_t n = 0;

	/* A large document grows the arena; smaller ones reuse it. */
	n += (size_t)snprintf(big + n, sizeof(big) - n, "[");
	for (int i = 0; i < 1000; i++)
		n += (size_t)snprintf(big + n, sizeof(big) - n, "%s{\"k%d\":\"v%d\"}", i ? "," : "", i, i);
	snprintf(big + n, sizeof(big) - n, "]");
	REQUIRE(parse(&t, big) == 0);
	CHECK_EQ_INT(t.root->n, 1000);
	for (int i = 0; i < 100; i++) {
		REQUIRE(parse(&t, "{\"a\":{\"b\":[1,2,3]}}") == 0);
		CHECK_EQ_INT(mm_jnode_get(mm_jnode_get(t.root, "a"), "b")->n, 3);
	}
	CHECK(parse(&t, "{\"a\":") == MM_EJSON);
	CHECK(t.root == NULL);
	CHECK(parse(&t, "{\"a\":\"\xff\"}") == MM_EUTF8);
	CHECK(parse(&t, "\"just a string\"") == 0 && t.root->type == MM_JSON_STRING);
	mm_jtree_trim(&t, 1 << 20); /* small: kept */
	CHECK(parse(&t, "{}") == 0);
	mm_jtree_trim(&t, 0);       /* freed: still usable */
	CHECK(parse(&t, "{\"z\":1}") == 0 && mm_jnode_get(t.root, "z") != NULL);
	mm_jtree_free(&t);
}

TEST(base64_rfc4648_vectors)
{
	static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *const enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
					  "Zm9vYmFy"};
	mm_buf_t b = {0};

	for (int i = 0; i < 7; i++) {
		b.len = 0;
		CHECK(mm_base64_decode(enc[i], strlen(enc[i]), MM_BASE64_STRICT, &b) == 0);
		CHECK(b.len == strlen(plain[i]) && (b.len == 0 || memcmp(b.p, plain[i], b.len) == 0));
	}
	for (int i = 0; i < 7; i++) {
		b.len = 0;
		CHECK(mm_base64_encode(plain[i], strlen(plain[i]), &b) == 0);
		CHECK(b.len == strlen(enc[i]) && (b.len == 0 || memcmp(b.p, enc[i], b.len) == 0));
	}
	/* Every length from 0 to 300 (whole groups and both padded tails)
	 * encodes to the canonical text the strict decoder takes back. */
	{
		uint8_t in[300];
		mm_buf_t e = {0};

		for (size_t i = 0; i < sizeof(in); i++)
			in[i] = (uint8_t)(i * 37 + 11);
		for (size_t n = 0; n <= sizeof(in); n++) {
			e.len = 0;
			b.len = 0;
			CHECK(mm_base64_encode(in, n, &e) == 0);
			CHECK(e.len == (n + 2) / 3 * 4);
			CHECK(mm_base64_decode((const char *)e.p, e.len, MM_BASE64_STRICT, &b) == 0);
			CHECK(b.len == n && (n == 0 || memcmp(b.p, in, n) == 0));
		}
		mm_buf_free(&e);
	}
	/* Every byte value survives encode then decode. */
	{
		uint8_t all[256];
		mm_buf_t e = {0};

		for (int i = 0; i < 256; i++)
			all[i] = (uint8_t)(255 - i);
		REQUIRE(mm_base64_encode(all, sizeof(all), &e) == 0);
		b.len = 0;
		CHECK(mm_base64_decode((const char *)e.p, e.len, MM_BASE64_STRICT, &b) == 0);
		CHECK(b.len == 256 && memcmp(b.p, all, 256) == 0);
		mm_buf_free(&e);
	}
	mm_buf_free(&b);
}

TEST(base64_rejects_non_canonical)
{
	static const char *const bad[] = {
		"Zg=",      /* length */
		"Zg",       /* no padding */
		"Zh==",     /* unused bits set */
		"Zm9=",     /* unused bits set */
		"Z===",     /* too much padding */
		"Zg==Zg==", /* padding inside */
		"Zm9v!A==", /* bad character */
		"Zm 9",     /* space */
		"Zg=a",     /* padding then data */
	};
	mm_buf_t b = {0};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = mm_base64_decode(bad[i], strlen(bad[i]), MM_BASE64_STRICT, &b);

		if (rc != MM_ECORRUPT)
			printf("#   '%s' gave %d\n", bad[i], rc);
		CHECK(rc == MM_ECORRUPT);
	}
	mm_buf_free(&b);
}

TEST(base64_lenient_accepts_both_alphabets)
{
	/* 0xfb 0xff 0xbf is "+/+/" in the standard alphabet, "-_-_" URL-safe. */
	static const char *const ok[] = {"-_-_", "+/+/", "-_-_Zg", "-_-_Zg==", "Zh"};
	static const size_t want[] = {3, 3, 4, 4, 1};
	static const char *const bad[] = {"Z", "Zm9vY", "Zm 9", "Zg!="};
	mm_buf_t b = {0};

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		b.len = 0;
		CHECK(mm_base64_decode(ok[i], strlen(ok[i]), MM_BASE64_LENIENT, &b) == 0);
		CHECK(b.len == want[i]);
		if (i < 4)
			CHECK(b.p[0] == 0xfb && b.p[1] == 0xff && b.p[2] == 0xbf);
	}
	/* The strict mode refuses the URL-safe pair and missing padding. */
	CHECK(mm_base64_decode("-_-_", 4, MM_BASE64_STRICT, &b) == MM_ECORRUPT);
	CHECK(mm_base64_decode("-_-_Zg", 6, MM_BASE64_STRICT, &b) == MM_ECORRUPT);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(mm_base64_decode(bad[i], strlen(bad[i]), MM_BASE64_LENIENT, &b) == MM_ECORRUPT);
	mm_buf_free(&b);
}

int main(void)
{
	RUN(tree_of_a_dynamodb_answer);
	RUN(tree_reuse_and_errors);
	RUN(base64_rfc4648_vectors);
	RUN(base64_rejects_non_canonical);
	RUN(base64_lenient_accepts_both_alphabets);
	UNIT_DONE();
}
