/*
 * dynamodb_item.c: the item codec of the DynamoDB store: partition keys,
 * the common heads of item requests, monoid states as attribute values, and
 * readers of attributes in answers.
 *
 * A key is "<ns>#<bytes>" when the bytes are valid UTF-8 (a DynamoDB string
 * must be), else "<ns>!<base64>"; namespace names are [A-Za-z0-9_.-], so no
 * key of a namespace can collide with another's or with the "#..." items.
 * Numeric monoids (sum, count, min, max) are stored as N, so that DynamoDB
 * can ADD to them and compare them in a condition; every other monoid as B
 * holding the monoid's own encoding. Request bodies are built by appending
 * pieces (they are built once per request, on the hot path).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../codec/json.h"
#include "../lib/error.h"
#include "../lib/text.h"
#include "dynamodb_impl.h"

/* Appends a NUL-terminated string. The request builders below run once per
 * request, so they append pieces instead of formatting with printf. */
int mm_ddb_put_str(mm_buf_t *b, const char *s)
{
	return mm_buf_append(b, s, strlen(s));
}

/* A DynamoDB number attribute value: {"N":"<v>"}. */
int mm_ddb_put_n(mm_buf_t *b, int64_t v)
{
	int rc;

	if ((rc = PUT(b, "{\"N\":\"")) || (rc = mm_buf_put_dec_i64(b, v)))
		return rc;
	return PUT(b, "\"}");
}

/* Shortest text that reads back as exactly d ("0.1", not 0.10000000000000001). */
static void fmt_double(char *out, size_t cap, double d)
{
	int prec;

	if (d == 0) {
		snprintf(out, cap, "0");
		return;
	}
	for (prec = 15; prec <= 17; prec++) {
		snprintf(out, cap, "%.*g", prec, d);
		if (strtod(out, NULL) == d)
			return;
	}
}

/* Partition key text of (ns, bytes) into b: "<ns>#<bytes>" or "<ns>!<base64>". */
int mm_ddb_make_pk(mm_buf_t *b, const char *ns, const char *p, size_t n)
{
	int rc;

	b->len = 0;
	if ((rc = mm_buf_append(b, ns, strlen(ns))))
		return rc;
	if (mm_utf8_valid(p, n)) {
		if ((rc = PUT(b, "#")))
			return rc;
		return mm_buf_append(b, p, n);
	}
	if ((rc = PUT(b, "!")))
		return rc;
	return mm_base64_encode(p, n, b);
}

/* "Key":{"pk":{"S":pk},"sk":{"N":"sk"}} */
int mm_ddb_put_key(mm_buf_t *b, const mm_buf_t *pk, int64_t sk)
{
	int rc;

	if ((rc = PUT(b, "{\"pk\":{\"S\":")) ||
	    (rc = mm_json_quote((const char *)pk->p, pk->len, b)) || (rc = PUT(b, "},\"sk\":")) ||
	    (rc = mm_ddb_put_n(b, sk)))
		return rc;
	return PUT(b, "}");
}

/* {"TableName":T -- the start of every item request's body. */
int mm_ddb_put_table(mm_ddb_t *st, mm_buf_t *b)
{
	int rc;

	b->len = 0;
	if ((rc = PUT(b, "{\"TableName\":")))
		return rc;
	return mm_buf_append(b, st->table_json, strlen(st->table_json));
}

/* {"TableName":T,"Key":{...}, -- the common head of item requests. */
int mm_ddb_put_head(mm_ddb_t *st, mm_buf_t *b, const mm_buf_t *pk, int64_t sk)
{
	int rc;

	if ((rc = mm_ddb_put_table(st, b)) || (rc = PUT(b, ",\"Key\":")))
		return rc;
	return mm_ddb_put_key(b, pk, sk);
}

/* Starts a PutItem body: {"TableName":T,"Item":{"pk":{"S":pk},"sk":N
 * (the caller adds the other attributes and closes). */
int mm_ddb_put_item_start(mm_ddb_t *st, mm_buf_t *b, const mm_buf_t *pk, int64_t sk)
{
	int rc;

	b->len = 0;
	if ((rc = PUT(b, "{\"TableName\":")) ||
	    (rc = mm_buf_append(b, st->table_json, strlen(st->table_json))) ||
	    (rc = PUT(b, ",\"Item\":{\"pk\":{\"S\":")) ||
	    (rc = mm_json_quote((const char *)pk->p, pk->len, b)) || (rc = PUT(b, "},\"sk\":")))
		return rc;
	return mm_ddb_put_n(b, sk);
}

/* A consistent GetItem of (pk, sk), built into the slot. */
int mm_ddb_build_get(mm_ddb_t *st, ddb_slot_t *sl, const mm_buf_t *pk, int64_t sk)
{
	int rc;

	sl->target = "GetItem";
	if ((rc = mm_ddb_put_head(st, &sl->body, pk, sk)))
		return rc;
	return PUT(&sl->body, ",\"ConsistentRead\":true}");
}

int mm_ddb_mkind(const mm_monoid_t *m)
{
	if (m->vt == &mm_monoid_sum_vtable)
		return m->p.is_float ? M_ADD_FLOAT : M_ADD_INT;
	if (m->vt == &mm_monoid_count_vtable)
		return M_ADD_UINT;
	if (m->vt == &mm_monoid_min_vtable)
		return M_MIN;
	if (m->vt == &mm_monoid_max_vtable)
		return M_MAX;
	return M_BYTES;
}

/*
 * Writes the number a numeric state stands for into out (a DynamoDB N text),
 * reading the monoid's own fixed encoding (scalar.c): int64 LE for sums,
 * uint64 LE for counts, binary64 LE for float sums, flag + binary64 for
 * min/max. cap must be at least 32. Returns MM_ERANGE for a value DynamoDB
 * cannot hold.
 */
int mm_ddb_state_number(const mm_monoid_t *m, const void *state, mm_buf_t *tmp, char *out,
			size_t cap)
{
	int kind = mm_ddb_mkind(m), rc;
	uint64_t u;
	double d;

	tmp->len = 0;
	if ((rc = m->vt->encode(m, state, tmp)))
		return rc;
	if (kind == M_MIN || kind == M_MAX) {
		if (tmp->len != 9 || tmp->p[0] != 1)
			return mm_diag_set(MM_ECORRUPT, "dynamodb: unexpected %s encoding",
					   m->vt->name);
		u = mm_get_u64le(tmp->p + 1);
	} else {
		if (tmp->len != 8)
			return mm_diag_set(MM_ECORRUPT, "dynamodb: unexpected %s encoding",
					   m->vt->name);
		u = mm_get_u64le(tmp->p);
	}
	if (kind == M_ADD_INT || kind == M_ADD_UINT) {
		/* Once per request: formatted by hand, snprintf cost 600
		 * instructions; 21 bytes at most, which cap holds. */
		int neg = kind == M_ADD_INT && (int64_t)u < 0;
		size_t n = 0;

		if (neg)
			out[n++] = '-';
		n += mm_dec_u64(out + n, neg ? 0 - u : u);
		out[n] = '\0';
		return 0;
	}
	memcpy(&d, &u, sizeof(d));
	/* DynamoDB numbers range over 1e-130 .. 9.99e125 in magnitude. */
	if (d != 0 && (fabs(d) < 1e-130 || fabs(d) >= 1e126))
		return mm_diag_set(MM_ERANGE, "dynamodb: %g is outside DynamoDB's number range", d);
	fmt_double(out, cap, d);
	return 0;
}

/* Parses a DynamoDB N text into the state (which is init()ed). */
static int number_state(const mm_monoid_t *m, const char *s, size_t len, void *state)
{
	int kind = mm_ddb_mkind(m), is_int = 0;
	int64_t i = 0;
	double d = 0;
	uint8_t enc[9];

	if (len == 0 || mm_json_number(s, len, &is_int, &i, &d) != 0)
		return mm_diag_set(MM_ECORRUPT, "dynamodb: bad number '%.*s'", (int)(len < 64 ? len : 64), s);
	if (kind == M_ADD_INT || kind == M_ADD_UINT) {
		if (!is_int && !(d == floor(d) && fabs(d) < 9007199254740992.0))
			return mm_diag_set(MM_ERANGE, "dynamodb: %s value '%.*s' is not an int64",
					   m->vt->name, (int)(len < 64 ? len : 64), s);
		if (!is_int)
			i = (int64_t)d;
		if (kind == M_ADD_UINT && i < 0)
			return mm_diag_set(MM_ECORRUPT, "dynamodb: negative count %" PRId64, i);
		mm_set_u64le(enc, (uint64_t)i);
		return m->vt->decode(m, state, enc, 8);
	}
	if (kind == M_ADD_FLOAT) {
		uint64_t u;

		memcpy(&u, &d, sizeof(u));
		mm_set_u64le(enc, u);
		return m->vt->decode(m, state, enc, 8);
	}
	{
		uint64_t u;

		if (d == 0)
			d = 0; /* min/max store +0.0: "-0" must not decode as -0.0 */
		memcpy(&u, &d, sizeof(u));
		enc[0] = 1;
		mm_set_u64le(enc + 1, u);
		return m->vt->decode(m, state, enc, 9);
	}
}

/* Decodes an item's v into state: N for numeric monoids, B for the rest. */
int mm_ddb_item_state(const mm_monoid_t *m, const mm_jnode_t *item, void *state, mm_buf_t *tmp)
{
	const mm_jnode_t *v = mm_jnode_get(item, "v"), *x;
	int rc;

	if (mm_ddb_mkind(m) != M_BYTES) {
		x = mm_jnode_get(v, "N");
		if (x == NULL || x->type != MM_JSON_STRING)
			return mm_diag_set(MM_ECORRUPT, "dynamodb: item has no number v");
		return number_state(m, x->s, x->len, state);
	}
	x = mm_jnode_get(v, "B");
	if (x == NULL || x->type != MM_JSON_STRING)
		return mm_diag_set(MM_ECORRUPT, "dynamodb: item has no binary v");
	tmp->len = 0;
	if ((rc = mm_base64_decode(x->s, x->len, MM_BASE64_STRICT, tmp)))
		return rc;
	return m->vt->decode(m, state, tmp->p, tmp->len);
}

/* Reads an N attribute as int64; 0 when absent or malformed (*ok = 0). */
int64_t mm_ddb_attr_i64(const mm_jnode_t *item, const char *name, int *ok)
{
	const mm_jnode_t *n = mm_jnode_get(mm_jnode_get(item, name), "N");
	int is_int = 0;
	int64_t i = 0;
	double d;

	if (n == NULL || n->type != MM_JSON_STRING ||
	    mm_json_number(n->s, n->len, &is_int, &i, &d) != 0 || !is_int) {
		if (ok)
			*ok = 0;
		return 0;
	}
	if (ok)
		*ok = 1;
	return i;
}

const mm_jnode_t *mm_ddb_attr_s(const mm_jnode_t *item, const char *name)
{
	const mm_jnode_t *s = mm_jnode_get(mm_jnode_get(item, name), "S");

	return s && s->type == MM_JSON_STRING ? s : NULL;
}

/* 1 if the item carries a ttl that has passed. */
int mm_ddb_item_expired(const mm_jnode_t *item, int64_t now_ms)
{
	int ok = 0;
	int64_t ttl = mm_ddb_attr_i64(item, "ttl", &ok);

	return ok && ttl * 1000 <= now_ms;
}
