/*
 * fuzz_valkey.c: arbitrary bytes as what a Valkey server sends the cache:
 * RESP parsed by hiredis's reader (as the connection does), then every
 * string in the replies read the way valkey.c reads them, as a cached value
 * of each monoid (mm_valkey_cache_decode) and as an INFO reply
 * (mm_valkey_run_id); engine/store/valkey_format.c.
 *
 * fuzz-link: engine/store/valkey_format.c -lhiredis
 *
 * Checked on every input:
 *   - a cached value decodes (0) or fails with MM_ECORRUPT/MM_EINCOMPAT,
 *     leaving the identity; an integer-cached value (count, integer sum)
 *     decodes only from a canonical-enough decimal: optional '-' (not for
 *     counts), 1..19 digits, within int64, and then the state's value
 *     prints back to the same number;
 *   - a decoded state of another monoid re-encodes and decodes again to
 *     the same encoding;
 *   - a run id found is the 40 lowercase hex digits after the reply's first
 *     "run_id:";
 *   - a reader bounded as the connections are (mm_valkey_reader_bound)
 *     never allocates an element table for an array announced longer than
 *     MM_VALKEY_MAX_ELEMENTS (libFuzzer's malloc limit catches one).
 */
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/error.h"
#include "monoid/monoid.h"
#include "monoids.h"
#include "store/valkey_format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static void check_int(const mm_monoid_t *m, const char *p, size_t n, const void *state)
{
	mm_buf_t enc = {0};
	char back[32];
	size_t i = 0;
	int64_t v;

	if (m->vt->encode(m, state, &enc) != 0 || enc.len != 8)
		abort();
	v = (int64_t)mm_get_u64le(enc.p);
	snprintf(back, sizeof(back), "%" PRId64, v);
	/* Leading zeros and "-0" are accepted; compare without them. */
	if (p[0] == '-')
		i = 1;
	while (i + 1 < n && p[i] == '0')
		i++;
	if (v == 0) {
		if (n - i != 1 || p[i] != '0')
			abort();
	} else if (strlen(back) - (v < 0) != n - i ||
		   memcmp(back + (v < 0), p + i, n - i) != 0 || (v < 0) != (p[0] == '-')) {
		abort();
	}
	mm_buf_free(&enc);
}

static void check_string(const char *p, size_t n, unsigned pick)
{
	const mm_monoid_t *m = &monoids[pick % NMONOIDS];
	uint8_t state[MM_STATE_MAX], again[MM_STATE_MAX];
	char id[41];
	int rc;

	m->vt->init(m, state);
	rc = mm_valkey_cache_decode(m, p, n, state);
	if (rc != 0) {
		if ((rc != MM_ECORRUPT && rc != MM_EINCOMPAT) || !m->vt->is_identity(m, state))
			abort();
	} else if (mm_valkey_int_cached(m)) {
		check_int(m, p, n, state);
	} else {
		mm_buf_t enc = {0}, enc2 = {0};

		if (m->vt->encode(m, state, &enc) != 0)
			abort();
		m->vt->init(m, again);
		if (m->vt->decode(m, again, enc.p, enc.len) != 0 ||
		    m->vt->encode(m, again, &enc2) != 0 || enc.len != enc2.len ||
		    (enc.len && memcmp(enc.p, enc2.p, enc.len) != 0))
			abort();
		m->vt->destroy(m, again);
		mm_buf_free(&enc);
		mm_buf_free(&enc2);
	}
	m->vt->destroy(m, state);

	/* hiredis NUL-terminates every string it hands over. */
	if (p[n] != '\0')
		abort();
	if (mm_valkey_run_id(p, id) == 0) {
		/* The id follows the reply's first "run_id:". */
		const char *at = strstr(p, "run_id:");

		if (strlen(id) != 40 || strspn(id, "0123456789abcdef") != 40 || at == NULL ||
		    memcmp(at + 7, id, 40) != 0)
			abort();
	}
}

static void walk(const redisReply *r, unsigned *pick, int depth)
{
	if (depth > 16)
		return;
	switch (r->type) {
	case REDIS_REPLY_STRING:
	case REDIS_REPLY_STATUS:
	case REDIS_REPLY_ERROR:
		check_string(r->str, r->len, (*pick)++);
		break;
	case REDIS_REPLY_ARRAY:
		for (size_t i = 0; i < r->elements; i++)
			walk(r->element[i], pick, depth + 1);
		break;
	default:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	redisReader *rd;
	void *reply;
	unsigned pick = size ? data[0] : 0;
	int replies = 0;

	if ((rd = redisReaderCreate()) == NULL)
		abort();
	mm_valkey_reader_bound(rd);
	if (redisReaderFeed(rd, (const char *)data, size) == REDIS_OK)
		while (replies < 64 && redisReaderGetReply(rd, &reply) == REDIS_OK && reply != NULL) {
			walk(reply, &pick, 0);
			freeReplyObject(reply);
			replies++;
		}
	redisReaderFree(rd);
	return 0;
}
