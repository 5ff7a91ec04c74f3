/*
 * fuzz_aws.c: arbitrary bytes into the AWS layer: the JSON tree that reads
 * DynamoDB answers, base64 decoding of binary attributes, and the SigV4
 * canonicalisation of arbitrary paths, queries and header values.
 *
 * Checked on every input (a violation aborts):
 *   - the tree parse agrees with the SAX walk (same verdict); every node's
 *     child count matches its children; member lookups find what they list;
 *   - base64 that decodes encodes back to the same text;
 *   - signing is deterministic, the canonical request starts with the
 *     method, and the signature is 64 hex digits.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aws/awsjson.h"
#include "aws/sigv4.h"
#include "codec/json.h"
#include "lib/error.h"
#include "lib/text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int noop_str(void *ud, const char *s, size_t n)
{
	return 0;
}

static int noop_int(void *ud, int v)
{
	return 0;
}

static int noop(void *ud)
{
	return 0;
}

static void check_tree(const mm_jnode_t *n, int depth)
{
	const mm_jnode_t *c;
	size_t count = 0;

	if (depth > MM_JSON_MAX_DEPTH + 1)
		abort();
	for (c = n->child; c != NULL; c = c->next) {
		count++;
		if (n->type == MM_JSON_OBJECT) {
			char key[64];

			if (c->key == NULL)
				abort();
			/* The first member with this name is what a lookup returns. */
			if (c->key_len < sizeof(key) && memchr(c->key, 0, c->key_len) == NULL) {
				memcpy(key, c->key, c->key_len);
				key[c->key_len] = '\0';
				if (mm_jnode_get(n, key) == NULL)
					abort();
			}
		} else if (c->key != NULL) {
			abort();
		}
		check_tree(c, depth + 1);
	}
	if (count != n->n)
		abort();
	if ((n->type == MM_JSON_STRING || n->type == MM_JSON_NUMBER) && n->s == NULL)
		abort();
}

static void fuzz_tree(const char *p, size_t n)
{
	static const mm_json_visitor_t vis = {.on_null = noop, .on_bool = noop_int,
					      .on_number = noop_str, .on_string = noop_str,
					      .on_key = noop_str};
	mm_jtree_t t = {0};
	int rc = mm_jtree_parse(&t, p, n), rc2 = mm_json_parse(p, n, &vis, NULL);

	if (rc == MM_ENOMEM)
		goto out;
	if ((rc == 0) != (rc2 == 0))
		abort();
	if (rc == 0) {
		if (t.root == NULL)
			abort();
		check_tree(t.root, 0);
		/* Parsing again reuses the arena and gives the same shape. */
		if (mm_jtree_parse(&t, p, n) != 0 || t.root == NULL)
			abort();
		check_tree(t.root, 0);
	}
out:
	mm_jtree_free(&t);
}

static void fuzz_base64(const char *p, size_t n)
{
	mm_buf_t dec = {0}, enc = {0};

	if (mm_base64_decode(p, n, MM_BASE64_STRICT, &dec) == 0 && n > 0) {
		if (mm_base64_encode(dec.p, dec.len, &enc) != 0)
			abort();
		if (enc.len != n || memcmp(enc.p, p, n) != 0)
			abort();
	}
	mm_buf_free(&dec);
	mm_buf_free(&enc);
}

/* Input: path \n query \n header value \n body. */
static void fuzz_sign(const char *p, size_t n)
{
	const char *parts[4] = {"", "", "", ""};
	size_t lens[4] = {0, 0, 0, 0}, i = 0, start = 0, k;
	mm_sigv4_header_t h[2];
	mm_sigv4_request_t req;
	mm_sigv4_params_t prm = {.access_key = "AKID", .secret_key = "secret", .region = "r",
				 .service = "s", .time_s = 1440938160, .normalize_path = (int)(n & 1),
				 .sign_body = (int)((n >> 1) & 1), .expires_s = 60};
	mm_sigv4_t s = {0};
	char first[65];

	for (k = 0; k <= n && i < 4; k++) {
		if (k == n || (p[k] == '\n' && i < 3)) {
			parts[i] = p + start;
			lens[i] = k - start;
			i++;
			start = k + 1;
		}
	}
	h[0] = (mm_sigv4_header_t){"Host", 4, "example.com", 11};
	h[1] = (mm_sigv4_header_t){"X-Fuzz", 6, parts[2], lens[2]};
	req = (mm_sigv4_request_t){.method = "POST", .path = parts[0], .path_len = lens[0],
				   .query = parts[1], .query_len = lens[1], .headers = h,
				   .nheaders = 2, .body = parts[3], .body_len = lens[3]};
	if (mm_sigv4_sign_headers(&s, &req, &prm) == 0) {
		if (strlen(s.signature) != 64 || s.canonical.len < 5 ||
		    memcmp(s.canonical.p, "POST\n", 5) != 0)
			abort();
		memcpy(first, s.signature, 65);
		if (mm_sigv4_sign_headers(&s, &req, &prm) != 0 || strcmp(first, s.signature) != 0)
			abort();
	}
	if (mm_sigv4_sign_query(&s, &req, &prm) == 0 && strlen(s.signature) != 64)
		abort();
	mm_sigv4_free(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data + 1;

	if (size < 1)
		return 0;
	switch (data[0] % 3) {
	case 0:
		fuzz_tree(p, size - 1);
		break;
	case 1:
		fuzz_base64(p, size - 1);
		break;
	default:
		fuzz_sign(p, size - 1);
		break;
	}
	return 0;
}
