/*
 * oplog.c: the adds of a generation whose dedup ids are not settled yet
 * (oplog.h). Offsets rather than pointers are kept, because the byte buffer
 * moves when it grows.
 */
#include "oplog.h"

#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"

int mm_oplog_add(mm_oplog_t *l, int claiming, const char *key, size_t klen, int64_t bucket,
		 int64_t expire_ms, const mm_value_t *v)
{
	size_t slen = v->type == MM_VAL_STRING ? v->len : 0;
	mm_oplog_op_t *op;
	int rc;

	if (l->n == l->cap &&
	    (rc = mm_array_grow((void **)&l->ops, &l->cap, l->n + 1, sizeof(*l->ops), "logged adds")))
		return rc;
	if ((rc = mm_buf_reserve(&l->data, klen + slen)))
		return rc;
	op = &l->ops[l->n++];
	op->claim = claiming ? (uint32_t)l->nclaims : MM_OPLOG_NO_CLAIM;
	op->klen = (uint32_t)klen;
	op->key_off = l->data.len;
	memcpy(l->data.p + l->data.len, key, klen);
	l->data.len += klen;
	op->bucket = bucket;
	op->expire_ms = expire_ms;
	op->vtype = v->type;
	op->slen = (uint32_t)slen;
	op->s_off = l->data.len;
	if (slen) {
		memcpy(l->data.p + l->data.len, v->s, slen);
		l->data.len += slen;
	}
	op->i = v->i;
	op->d = v->d;
	op->ts_ms = v->ts_ms;
	op->seq = v->seq;
	return 0;
}

int mm_oplog_claim(mm_oplog_t *l, const char *id, size_t len, const mm_idhash_t *h)
{
	int rc;

	if (l->nclaims == l->ccap && (rc = mm_array_grow((void **)&l->claims, &l->ccap, l->nclaims + 1,
							 sizeof(*l->claims), "logged claims")))
		return rc;
	l->claims[l->nclaims++] = (mm_claim_t){.id = id, .len = len, .hash = *h};
	l->open = l->n;
	return 0;
}

int mm_oplog_keeps(const mm_oplog_t *l, size_t i)
{
	uint32_t c = l->ops[i].claim;
	int result;

	if (c == MM_OPLOG_NO_CLAIM)
		return 1;
	result = l->claims[c].result;
	return result == MM_CLAIM_WON || result == MM_CLAIM_STOLEN;
}

void mm_oplog_value(const mm_oplog_t *l, size_t i, mm_value_t *out)
{
	const mm_oplog_op_t *op = &l->ops[i];

	memset(out, 0, sizeof(*out));
	out->type = op->vtype;
	out->i = op->i;
	out->d = op->d;
	if (op->vtype == MM_VAL_STRING) {
		out->s = (const char *)l->data.p + op->s_off;
		out->len = op->slen;
	}
	out->ts_ms = op->ts_ms;
	out->seq = op->seq;
}

void mm_oplog_reset(mm_oplog_t *l)
{
	l->data.len = 0;
	l->n = 0;
	l->nclaims = 0;
	l->open = 0;
	l->on = 0;
}

void mm_oplog_free(mm_oplog_t *l)
{
	mm_buf_free(&l->data);
	free(l->ops);
	free(l->claims);
	memset(l, 0, sizeof(*l));
}
