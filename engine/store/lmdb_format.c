/* lmdb_format.c: decoders of the LMDB store's records (lmdb_format.h). */
#include "lmdb_format.h"

#include "../lib/buf.h"
#include "../lib/error.h"

static size_t get_u16be(const uint8_t *p)
{
	return (size_t)p[0] << 8 | p[1];
}

int mm_lmdb_state_key_parse(const uint8_t *p, size_t n, size_t nsl, size_t *plen,
			    int64_t *bucket)
{
	uint64_t v = 0;
	size_t len;
	int hashed;

	if (n < nsl + 2)
		goto bad;
	len = get_u16be(p + nsl);
	/* The hashed form is a function of the lengths (see lmdb.c). */
	hashed = nsl + 2 + len + 8 > MM_LMDB_KEY_MAX;
	*plen = nsl + 2 + (hashed ? 8 : len);
	if (n != *plen + 8 + (hashed ? 2 : 0))
		goto bad;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[*plen + (size_t)i];
	*bucket = (int64_t)(v ^ (1ULL << 63));
	return 0;
bad:
	return mm_diag_set(MM_ECORRUPT, "lmdb: malformed state key of %zu bytes", n);
}

int mm_lmdb_state_body(const uint8_t *p, size_t n, size_t idlen, int64_t now_ms,
		       const uint8_t **body, size_t *len)
{
	size_t hdr = 8 + idlen;
	int64_t expire;

	if (n < hdr)
		return mm_diag_set(MM_ECORRUPT, "value shorter than its header");
	expire = (int64_t)mm_get_u64le(p);
	if (expire != 0 && expire <= now_ms)
		return 0;
	*body = p + hdr;
	*len = n - hdr;
	return 1;
}

int mm_lmdb_state_decode(const uint8_t *p, size_t n, size_t idlen, int64_t now_ms,
			 const mm_monoid_t *m, void *state)
{
	const uint8_t *body = NULL;
	size_t len = 0;
	int rc = mm_lmdb_state_body(p, n, idlen, now_ms, &body, &len);

	if (rc <= 0)
		return rc;
	rc = m->vt->decode(m, state, body, len);
	return rc ? rc : 1;
}
