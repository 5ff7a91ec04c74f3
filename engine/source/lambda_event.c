/*
 * lambda_event.c: Kinesis, SQS and DynamoDB Streams events into records
 * (see lambda_event.h).
 *
 * The event is parsed once into the awsjson tree; every field a record needs
 * is copied into ev->bytes (the tree's strings are unescaped already), so a
 * record is a set of offsets and the records survive the tree's next parse.
 * Offsets, not pointers, because ev->bytes grows while the records are made.
 */
#include "lambda_event.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../codec/json.h"
#include "../lib/error.h"
#include "../lib/text.h"
#include "position.h"

static int put_span(mm_lambda_event_t *ev, const char *p, size_t n, mm_lspan_t *out)
{
	out->off = ev->bytes.len;
	out->len = n;
	return mm_buf_append(&ev->bytes, p, n);
}

static int put_str(mm_lambda_event_t *ev, const mm_jnode_t *s, mm_lspan_t *out)
{
	if (s == NULL || s->type != MM_JSON_STRING) {
		*out = (mm_lspan_t){ev->bytes.len, 0};
		return 0;
	}
	return put_span(ev, s->s, s->len, out);
}

static mm_lambda_record_t *new_record(mm_lambda_event_t *ev)
{
	if (ev->n == ev->cap) {
		size_t cap = ev->cap ? ev->cap * 2 : 64;
		mm_lambda_record_t *r = realloc(ev->recs, cap * sizeof(*r));

		if (r == NULL)
			return NULL;
		ev->recs = r;
		ev->cap = cap;
	}
	memset(&ev->recs[ev->n], 0, sizeof(ev->recs[0]));
	return &ev->recs[ev->n++];
}

/* A JSON number node or a decimal string ("1545084650.987") times scale,
 * as epoch ms; 0 when absent or not a number. */
static int64_t epoch_ms(const mm_jnode_t *v, double scale)
{
	int is_int;
	int64_t i;
	double d;

	if (v == NULL || (v->type != MM_JSON_NUMBER && v->type != MM_JSON_STRING) ||
	    mm_json_number(v->s, v->len, &is_int, &i, &d) != 0 || !isfinite(d) || d < 0 ||
	    d * scale > 9.0e15)
		return 0;
	return (int64_t)llround(d * scale);
}

/* ---- DynamoDB JSON ---- */

static int ddb_value(const mm_jnode_t *attr, mm_buf_t *out, int depth);

/* 1 if p[0..n) is a number in JSON's grammar (RFC 8259 section 6). */
static int json_number_ok(const char *p, size_t n)
{
	size_t i = 0, d;

	if (i < n && p[i] == '-')
		i++;
	if (i < n && p[i] == '0')
		i++;
	else if (i < n && p[i] >= '1' && p[i] <= '9')
		while (i < n && p[i] >= '0' && p[i] <= '9')
			i++;
	else
		return 0;
	if (i < n && p[i] == '.') {
		for (d = ++i; i < n && p[i] >= '0' && p[i] <= '9'; i++)
			;
		if (i == d)
			return 0;
	}
	if (i < n && (p[i] == 'e' || p[i] == 'E')) {
		if (++i < n && (p[i] == '+' || p[i] == '-'))
			i++;
		for (d = i; i < n && p[i] >= '0' && p[i] <= '9'; i++)
			;
		if (i == d)
			return 0;
	}
	return i == n;
}

static int ddb_set(const mm_jnode_t *v, int numbers, mm_buf_t *out)
{
	int rc = mm_buf_put_u8(out, '[');

	if (v->type != MM_JSON_ARRAY)
		return mm_diag_set(MM_EINVAL, "dynamodb json: a set is not an array");
	for (const mm_jnode_t *e = v->child; e && rc == 0; e = e->next) {
		if (e->type != MM_JSON_STRING)
			return mm_diag_set(MM_EINVAL, "dynamodb json: a set member is not a string");
		if (e != v->child)
			rc = mm_buf_put_u8(out, ',');
		if (rc == 0)
			rc = numbers ? mm_buf_append(out, e->s, e->len) : mm_json_quote(e->s, e->len, out);
	}
	return rc ? rc : mm_buf_put_u8(out, ']');
}

static int ddb_map(const mm_jnode_t *map, mm_buf_t *out, int depth)
{
	int rc = mm_buf_put_u8(out, '{');

	if (map == NULL || map->type != MM_JSON_OBJECT)
		return mm_diag_set(MM_EINVAL, "dynamodb json: an attribute map is not an object");
	for (const mm_jnode_t *m = map->child; m && rc == 0; m = m->next) {
		if (m != map->child)
			rc = mm_buf_put_u8(out, ',');
		if (rc == 0 && (rc = mm_json_quote(m->key, m->key_len, out)) == 0 &&
		    (rc = mm_buf_put_u8(out, ':')) == 0)
			rc = ddb_value(m, out, depth + 1);
	}
	return rc ? rc : mm_buf_put_u8(out, '}');
}

/* One attribute value {"<type>": v}. A number is written as its text when
 * that is a JSON number, else quoted (DynamoDB accepts ".5", JSON does not). */
static int ddb_value(const mm_jnode_t *attr, mm_buf_t *out, int depth)
{
	const mm_jnode_t *v = attr->child;
	int is_int, rc = 0;
	int64_t i;
	double d;

	if (depth > 32)
		return mm_diag_set(MM_EINVAL, "dynamodb json: nested deeper than 32");
	if (attr->type != MM_JSON_OBJECT || attr->n != 1 || v->key_len < 1 || v->key_len > 4)
		return mm_diag_set(MM_EINVAL, "dynamodb json: an attribute value is not {\"<type>\": value}");
	if (v->key_len == 1 && (v->key[0] == 'S' || v->key[0] == 'B')) {
		if (v->type != MM_JSON_STRING)
			return mm_diag_set(MM_EINVAL, "dynamodb json: %c is not a string", v->key[0]);
		return mm_json_quote(v->s, v->len, out);
	}
	if (v->key_len == 1 && v->key[0] == 'N') {
		if (v->type != MM_JSON_STRING)
			return mm_diag_set(MM_EINVAL, "dynamodb json: N is not a string");
		if (json_number_ok(v->s, v->len) && mm_json_number(v->s, v->len, &is_int, &i, &d) == 0 &&
		    isfinite(d))
			return mm_buf_append(out, v->s, v->len);
		return mm_json_quote(v->s, v->len, out);
	}
	if (v->key_len == 1 && v->key[0] == 'M')
		return ddb_map(v, out, depth);
	if (v->key_len == 1 && v->key[0] == 'L') {
		if (v->type != MM_JSON_ARRAY)
			return mm_diag_set(MM_EINVAL, "dynamodb json: L is not an array");
		rc = mm_buf_put_u8(out, '[');
		for (const mm_jnode_t *e = v->child; e && rc == 0; e = e->next) {
			if (e != v->child)
				rc = mm_buf_put_u8(out, ',');
			if (rc == 0)
				rc = ddb_value(e, out, depth + 1);
		}
		return rc ? rc : mm_buf_put_u8(out, ']');
	}
	if (v->key_len == 4 && memcmp(v->key, "BOOL", 4) == 0) {
		if (v->type != MM_JSON_TRUE && v->type != MM_JSON_FALSE)
			return mm_diag_set(MM_EINVAL, "dynamodb json: BOOL is not true or false");
		return mm_buf_put_str(out, v->type == MM_JSON_TRUE ? "true" : "false");
	}
	if (v->key_len == 4 && memcmp(v->key, "NULL", 4) == 0)
		return mm_buf_put_str(out, "null");
	if (v->key_len == 2 && (memcmp(v->key, "SS", 2) == 0 || memcmp(v->key, "BS", 2) == 0))
		return ddb_set(v, 0, out);
	if (v->key_len == 2 && memcmp(v->key, "NS", 2) == 0)
		return ddb_set(v, 1, out);
	return mm_diag_set(MM_EINVAL, "dynamodb json: unknown attribute type '%.*s'", (int)v->key_len,
			   v->key);
}

int mm_lambda_ddb_to_json(const mm_jnode_t *map, mm_buf_t *out)
{
	return ddb_map(map, out, 0);
}

/* ---- records ---- */

static int all_digits(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] < '0' || p[i] > '9')
			return 0;
	return 1;
}

static int kinesis_record(mm_lambda_event_t *ev, const mm_jnode_t *r, mm_lambda_record_t *rec)
{
	const mm_jnode_t *k = mm_jnode_get(r, "kinesis");
	const mm_jnode_t *data = mm_jnode_get(k, "data"), *seq = mm_jnode_get(k, "sequenceNumber");
	const mm_jnode_t *eid = mm_jnode_get(r, "eventID");
	const char *colon;
	size_t start = ev->bytes.len;
	int rc;

	if (eid == NULL || eid->type != MM_JSON_STRING || seq == NULL ||
	    seq->type != MM_JSON_STRING || seq->len == 0 ||
	    (colon = memchr(eid->s, ':', eid->len)) == NULL || colon == eid->s)
		return mm_diag_set(MM_EINVAL, "kinesis event: a record lacks eventID "
				   "\"<shard>:<sequence number>\" or kinesis.sequenceNumber");
	/* The sequence number becomes the shard's stored position and is
	 * compared as a decimal string: anything else (found by
	 * fuzz_lambda_event) would store a position no later read accepts. */
	if (seq->len > MM_KINESIS_SEQ_MAX || !all_digits(seq->s, seq->len))
		return mm_diag_set(MM_EINVAL, "kinesis event: sequenceNumber \"%.*s\" is not a "
				   "decimal number of at most %d digits", (int)(seq->len > 40 ? 40 : seq->len),
				   seq->s, MM_KINESIS_SEQ_MAX);
	if (colon - eid->s > MM_KINESIS_SHARD_MAX)
		return mm_diag_set(MM_EINVAL, "kinesis event: the shard id of eventID is longer than %d bytes",
				   MM_KINESIS_SHARD_MAX);
	if ((rc = put_span(ev, eid->s, eid->len, &rec->id)))
		return rc;
	rec->shard = (mm_lspan_t){rec->id.off, (size_t)(colon - eid->s)};
	if ((rc = put_span(ev, seq->s, seq->len, &rec->seq)))
		return rc;
	rec->item = rec->seq;
	rec->ts_ms = epoch_ms(mm_jnode_get(k, "approximateArrivalTimestamp"), 1000.0);
	if (data == NULL || data->type != MM_JSON_STRING) {
		rec->bad = "kinesis.data is missing or not a string";
		return put_span(ev, "", 0, &rec->data);
	}
	rec->data.off = start = ev->bytes.len;
	if (mm_base64_decode(data->s, data->len, MM_BASE64_STRICT, &ev->bytes) != 0) {
		/* The raw text goes to the dead-letter destination instead. */
		ev->bytes.len = start;
		rec->bad = "kinesis.data is not valid base64";
		return put_span(ev, data->s, data->len, &rec->data);
	}
	rec->data.len = ev->bytes.len - start;
	return 0;
}

static int sqs_record(mm_lambda_event_t *ev, const mm_jnode_t *r, mm_lambda_record_t *rec)
{
	const mm_jnode_t *id = mm_jnode_get(r, "messageId"), *body = mm_jnode_get(r, "body");
	int rc;

	if (id == NULL || id->type != MM_JSON_STRING || id->len == 0)
		return mm_diag_set(MM_EINVAL, "sqs event: a record lacks messageId");
	if ((rc = put_str(ev, id, &rec->id)))
		return rc;
	rec->item = rec->id;
	rec->ts_ms = epoch_ms(mm_jnode_get(mm_jnode_get(r, "attributes"), "SentTimestamp"), 1.0);
	if (body == NULL || body->type != MM_JSON_STRING)
		rec->bad = "body is missing or not a string";
	return put_str(ev, body, &rec->data);
}

/* Returns 1 when the record has no NewImage (skipped), 0 or an error. */
static int ddb_record(mm_lambda_event_t *ev, const mm_jnode_t *r, mm_lambda_record_t *rec)
{
	const mm_jnode_t *d = mm_jnode_get(r, "dynamodb"), *id = mm_jnode_get(r, "eventID");
	const mm_jnode_t *seq = mm_jnode_get(d, "SequenceNumber");
	const mm_jnode_t *img = mm_jnode_get(d, "NewImage");
	size_t start;
	int rc;

	if (id == NULL || id->type != MM_JSON_STRING || id->len == 0 || seq == NULL ||
	    seq->type != MM_JSON_STRING || seq->len == 0)
		return mm_diag_set(MM_EINVAL, "dynamodb stream event: a record lacks eventID or "
				   "dynamodb.SequenceNumber");
	if (img == NULL)
		return 1;
	if ((rc = put_str(ev, id, &rec->id)) || (rc = put_str(ev, seq, &rec->item)))
		return rc;
	rec->ts_ms = epoch_ms(mm_jnode_get(d, "ApproximateCreationDateTime"), 1000.0);
	start = ev->bytes.len;
	rc = mm_lambda_ddb_to_json(img, &ev->bytes);
	if (rc == MM_ENOMEM)
		return rc;
	if (rc) {
		ev->bytes.len = start;
		rec->bad = "dynamodb.NewImage is not DynamoDB JSON";
		return put_span(ev, "", 0, &rec->data);
	}
	rec->data = (mm_lspan_t){start, ev->bytes.len - start};
	return 0;
}

int mm_lambda_event_decode(mm_lambda_event_t *ev, const char *p, size_t n)
{
	static const char *const kinds[] = {"", "aws:kinesis", "aws:sqs", "aws:dynamodb"};
	const mm_jnode_t *recs, *first, *src;
	int rc;

	ev->n = 0;
	ev->kind = 0;
	ev->skipped = 0;
	ev->bytes.len = 0;
	ev->source = (mm_lspan_t){0, 0};
	if ((rc = mm_jtree_parse(&ev->tree, p, n)))
		return rc;
	recs = mm_jnode_get(ev->tree.root, "Records");
	if (recs == NULL || recs->type != MM_JSON_ARRAY)
		return mm_diag_set(MM_EINVAL, "the event has no Records array (not a Kinesis, SQS "
				   "or DynamoDB Streams batch)");
	first = recs->child;
	src = mm_jnode_get(first, "eventSource");
	if (first == NULL)
		return 0;
	for (int k = MM_LAMBDA_KINESIS; k <= MM_LAMBDA_DYNAMODB; k++)
		if (mm_jnode_is(src, kinds[k]))
			ev->kind = k;
	if (ev->kind == 0)
		return mm_diag_set(MM_EINVAL, "eventSource %.*s is not aws:kinesis, aws:sqs or "
				   "aws:dynamodb", src && src->type == MM_JSON_STRING ? (int)src->len : 1,
				   src && src->type == MM_JSON_STRING ? src->s : "?");
	if ((rc = put_str(ev, mm_jnode_get(first, "eventSourceARN"), &ev->source)))
		return rc;
	for (const mm_jnode_t *r = first; r; r = r->next) {
		mm_lambda_record_t *rec = new_record(ev);

		if (rec == NULL)
			return mm_diag_set(MM_ENOMEM, "lambda event: out of memory");
		if (!mm_jnode_is(mm_jnode_get(r, "eventSource"), kinds[ev->kind]))
			return mm_diag_set(MM_EINVAL, "the batch mixes event sources");
		rc = ev->kind == MM_LAMBDA_KINESIS ? kinesis_record(ev, r, rec)
		     : ev->kind == MM_LAMBDA_SQS   ? sqs_record(ev, r, rec)
						   : ddb_record(ev, r, rec);
		if (rc == 1) {
			ev->n--;
			ev->skipped++;
			continue;
		}
		if (rc)
			return rc;
		if (ev->kind == MM_LAMBDA_KINESIS && ev->n > 1) {
			const mm_lambda_record_t *a = &ev->recs[0];

			if (a->shard.len != rec->shard.len ||
			    memcmp(mm_lambda_span(ev, a->shard), mm_lambda_span(ev, rec->shard),
				   a->shard.len) != 0)
				return mm_diag_set(MM_EINVAL, "the batch holds records of several shards");
		}
	}
	return 0;
}

void mm_lambda_event_free(mm_lambda_event_t *ev)
{
	free(ev->recs);
	mm_buf_free(&ev->bytes);
	mm_jtree_free(&ev->tree);
	memset(ev, 0, sizeof(*ev));
}

int mm_lambda_seq_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	while (alen > 1 && *a == '0')
		a++, alen--;
	while (blen > 1 && *b == '0')
		b++, blen--;
	if (alen != blen)
		return alen < blen ? -1 : 1;
	return memcmp(a, b, alen);
}
