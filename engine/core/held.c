/*
 * held.c: records held back until their dedup ids are claimed (held.h).
 * Offsets rather than pointers are kept while the table fills, because the
 * byte buffer moves when it grows.
 */
#include "held.h"

#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"

int mm_held_add(mm_held_t *h, mm_source_t *src, const mm_record_t *r, int64_t now_ms,
		const char *id, size_t idlen)
{
	mm_held_rec_t *hr;
	int created, rc;

	if ((rc = mm_array_grow((void **)&h->recs, &h->cap, h->n + 1, sizeof(*h->recs),
				"held records")) ||
	    (rc = mm_array_grow((void **)&h->claims, &h->ccap, h->nclaims + 1, sizeof(*h->claims),
				"held claims")) ||
	    (rc = mm_array_grow((void **)&h->id_off, &h->icap, h->nclaims + 1, sizeof(*h->id_off),
				"held ids")))
		return rc;
	if (mm_agg_upsert(&h->ids, id, idlen, 0, &created) == NULL)
		return MM_ENOMEM;
	hr = &h->recs[h->n];
	memset(hr, 0, sizeof(*hr));
	hr->src = src;
	hr->len = r->len;
	hr->flags = r->flags;
	hr->orig_len = r->orig_len;
	hr->offset = r->offset;
	hr->ts_ms = r->ts_ms;
	hr->seq = r->seq;
	hr->now_ms = now_ms;
	hr->claim = h->nclaims;
	hr->off = h->data.len;
	if ((rc = mm_buf_append(&h->data, r->p, r->len)))
		return rc;
	if (r->flags & MM_REC_ID) {
		hr->src_id_off = h->data.len;
		hr->src_id_len = r->id_len;
		if ((rc = mm_buf_append(&h->data, r->id, r->id_len)))
			return rc;
	}
	h->id_off[h->nclaims] = h->data.len;
	if ((rc = mm_buf_append(&h->data, id, idlen)))
		return rc;
	h->claims[h->nclaims] = (mm_claim_t){.len = idlen};
	h->nclaims++;
	h->n++;
	return 0;
}

mm_claim_t *mm_held_claims(mm_held_t *h, size_t *n)
{
	for (size_t i = 0; i < h->nclaims; i++)
		h->claims[i].id = (const char *)h->data.p + h->id_off[i];
	*n = h->nclaims;
	return h->claims;
}

void mm_held_record(const mm_held_t *h, size_t i, mm_record_t *out)
{
	const mm_held_rec_t *hr = &h->recs[i];

	memset(out, 0, sizeof(*out));
	out->p = (const char *)h->data.p + hr->off;
	out->len = hr->len;
	out->flags = hr->flags;
	out->orig_len = hr->orig_len;
	out->offset = hr->offset;
	out->ts_ms = hr->ts_ms;
	out->seq = hr->seq;
	if (hr->flags & MM_REC_ID) {
		out->id = (const char *)h->data.p + hr->src_id_off;
		out->id_len = hr->src_id_len;
	}
}

void mm_held_reset(mm_held_t *h)
{
	h->data.len = 0;
	h->n = 0;
	h->nclaims = 0;
	mm_agg_reset(&h->ids);
}

void mm_held_free(mm_held_t *h)
{
	mm_buf_free(&h->data);
	free(h->recs);
	free(h->claims);
	free(h->id_off);
	mm_agg_free(&h->ids);
	memset(h, 0, sizeof(*h));
}
