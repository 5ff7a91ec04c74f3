/*
 * fuzz_lmdb.c: arbitrary bytes as the keys and values of the LMDB store's
 * "state" database (mm_lmdb_state_key_parse, mm_lmdb_state_decode,
 * engine/store/lmdb_format.c; layout in lmdb.c). What a store file holds is
 * read back on every start and query, and the file may be damaged.
 *
 * fuzz-link: engine/store/lmdb_format.c
 *
 * Input: byte 0 picks the monoid and whether the key is hashed, byte 1 the
 * namespace prefix length, byte 2 where the key ends; the rest is key, then
 * value. Checked on every input:
 *   - a key parses (0) or is MM_ECORRUPT; a parsed key has a prefix inside
 *     it and re-encodes, with its bucket, to the same bytes (the bucket is
 *     big-endian with the sign bit flipped, so key order is bucket order);
 *   - a value decodes (1), has expired (0), or fails with MM_ECORRUPT (or
 *     MM_EINCOMPAT for a sketch of other parameters); a decoded state
 *     encodes, and that encoding stored after the same header decodes to the
 *     same encoding; a state is the identity after every failure.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/error.h"
#include "monoid/monoid.h"
#include "monoids.h"
#include "store/lmdb_format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static void check_key(const uint8_t *k, size_t kn, size_t nsl)
{
	size_t plen = 0;
	int64_t bucket = 0;
	uint64_t v;
	int rc = mm_lmdb_state_key_parse(k, kn, nsl, &plen, &bucket);

	if (rc != 0) {
		if (rc != MM_ECORRUPT)
			abort();
		return;
	}
	if (plen < nsl + 2 || plen + 8 > kn)
		abort();
	v = (uint64_t)bucket ^ (1ULL << 63);
	for (int i = 7; i >= 0; i--, v >>= 8)
		if (k[plen + (size_t)i] != (uint8_t)v)
			abort();
}

static int ok_error(int rc)
{
	return rc == MM_ECORRUPT || rc == MM_EINCOMPAT;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const mm_monoid_t *m;
	uint8_t state[MM_STATE_MAX], again[MM_STATE_MAX];
	mm_buf_t enc = {0}, enc2 = {0}, val = {0};
	size_t nsl, cut, idlen;
	int rc;

	if (size < 3)
		return 0;
	m = &monoids[data[0] % NMONOIDS];
	idlen = (data[0] / NMONOIDS) % 4 == 0 ? (size_t)(data[0] % 7) : 0;
	nsl = data[1];
	cut = data[2];
	data += 3;
	size -= 3;
	if (cut > size)
		cut = size;
	check_key(data, cut, nsl);

	m->vt->init(m, state);
	rc = mm_lmdb_state_decode(data + cut, size - cut, idlen, 1000, m, state);
	if (rc < 0) {
		if (!ok_error(rc) || !m->vt->is_identity(m, state))
			abort();
	} else if (rc == 0) {
		if (!m->vt->is_identity(m, state))
			abort();
	} else if (rc == 1) {
		if (m->vt->encode(m, state, &enc) != 0)
			abort();
		if (mm_buf_append(&val, data + cut, 8 + idlen) != 0 ||
		    mm_buf_append(&val, enc.p, enc.len) != 0)
			abort();
		m->vt->init(m, again);
		if (mm_lmdb_state_decode(val.p, val.len, idlen, 1000, m, again) != 1 ||
		    m->vt->encode(m, again, &enc2) != 0 || enc2.len != enc.len ||
		    (enc.len && memcmp(enc.p, enc2.p, enc.len) != 0))
			abort();
		m->vt->destroy(m, again);
	} else {
		abort();
	}
	m->vt->destroy(m, state);
	mm_buf_free(&enc);
	mm_buf_free(&enc2);
	mm_buf_free(&val);
	return 0;
}
