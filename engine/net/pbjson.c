/*
 * pbjson.c: proto3 JSON for protobuf-c messages (see pbjson.h).
 *
 * Both directions walk the message descriptor: a field's C storage is at
 * `offset` in the struct, its presence (a oneof's case, a proto3
 * `optional`'s has_ flag, a repeated field's count) at `quantifier_offset`.
 * Reading first parses the document into the tree of awsjson.h (a strict
 * RFC 8259 parse with UTF-8 checks), then fills the message from it.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../aws/awsjson.h"
#include "../codec/json.h"
#include "../lib/error.h"
#include "../lib/text.h"
#include "pbjson.h"

/* ---- storage helpers ---- */

static size_t elem_size(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return 8;
	case PROTOBUF_C_TYPE_DOUBLE:
		return sizeof(double);
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_STRING:
		return sizeof(char *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(void *);
	default:
		return 4; /* 32-bit integers, float, enum */
	}
}

/* Writes name in lowerCamelCase to out (at most cap - 1 bytes and a NUL);
 * returns the length written. */
static size_t json_name(const char *name, char *out, size_t cap)
{
	size_t j = 0;
	int up = 0;

	for (; *name && j + 1 < cap; name++) {
		if (*name == '_') {
			up = 1;
			continue;
		}
		out[j++] = up && *name >= 'a' && *name <= 'z' ? (char)(*name - 32) : *name;
		up = 0;
	}
	out[j] = '\0';
	return j;
}

/* 1 if the singular field f of msg is present in the JSON sense. */
static int field_present(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f)
{
	const char *base = (const char *)msg;
	const void *v = base + f->offset;

	if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
		return *(const uint32_t *)(base + f->quantifier_offset) == f->id;
	if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
	    f->type != PROTOBUF_C_TYPE_STRING)
		return *(const protobuf_c_boolean *)(base + f->quantifier_offset);
	switch (f->type) {
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)v;
		return s != NULL && (f->label == PROTOBUF_C_LABEL_OPTIONAL || s[0] != '\0');
	}
	case PROTOBUF_C_TYPE_MESSAGE:
		return *(void *const *)v != NULL;
	case PROTOBUF_C_TYPE_BYTES:
		return ((const ProtobufCBinaryData *)v)->len > 0;
	case PROTOBUF_C_TYPE_DOUBLE:
		return *(const double *)v != 0 || signbit(*(const double *)v);
	case PROTOBUF_C_TYPE_FLOAT:
		return *(const float *)v != 0 || signbit(*(const float *)v);
	default: {
		size_t sz = elem_size(f->type);
		static const uint8_t zero[8];
		return memcmp(v, zero, sz) != 0;
	}
	}
}

/* ---- encoding ---- */

static int put_double(mm_buf_t *out, double d)
{
	char tmp[MM_JSON_KEY_MAX + 1];

	if (isnan(d))
		return mm_buf_append(out, "\"NaN\"", 5);
	if (isinf(d))
		return d > 0 ? mm_buf_append(out, "\"Infinity\"", 10)
			     : mm_buf_append(out, "\"-Infinity\"", 11);
	return mm_buf_append(out, tmp, mm_json_double_key(d, tmp));
}

/* The encoders below append directly: a response is a handful of keys and
 * numbers, and printf's parsing of its format cost more than the rest of
 * the request together. */

/* Appends `,"jsonName":` (no comma before the first key): the field's proto
 * name in lowerCamelCase, as proto3 JSON names it. */
static int put_key(mm_buf_t *out, const char *proto_name, int first)
{
	char tmp[132];
	size_t n;

	tmp[0] = ',';
	tmp[1] = '"';
	n = json_name(proto_name, tmp + 2, 128);
	tmp[n + 2] = '"';
	tmp[n + 3] = ':';
	return mm_buf_append(out, tmp + first, n + 4 - (size_t)first);
}

/* Appends an enum value's name (a proto identifier: nothing to escape). */
static int put_quoted_name(mm_buf_t *out, const char *name)
{
	int rc = mm_buf_put_u8(out, '"');

	if (rc == 0)
		rc = mm_buf_put_str(out, name);
	return rc ? rc : mm_buf_put_u8(out, '"');
}

/* 64-bit integers are strings in proto3 JSON, exact above 2^53. */
static int put_quoted_u64(mm_buf_t *out, uint64_t v)
{
	int rc = mm_buf_put_u8(out, '"');

	if (rc == 0)
		rc = mm_buf_put_dec_u64(out, v);
	return rc ? rc : mm_buf_put_u8(out, '"');
}

static int put_quoted_i64(mm_buf_t *out, int64_t v)
{
	int rc = mm_buf_put_u8(out, '"');

	if (rc == 0)
		rc = mm_buf_put_dec_i64(out, v);
	return rc ? rc : mm_buf_put_u8(out, '"');
}

static int encode_message(const ProtobufCMessage *msg, mm_buf_t *out, int depth);

static int encode_value(const ProtobufCFieldDescriptor *f, const void *v, mm_buf_t *out, int depth)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		return mm_buf_put_dec_i64(out, *(const int32_t *)v);
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		return mm_buf_put_dec_u64(out, *(const uint32_t *)v);
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		return put_quoted_i64(out, *(const int64_t *)v);
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		return put_quoted_u64(out, *(const uint64_t *)v);
	case PROTOBUF_C_TYPE_FLOAT:
		return put_double(out, *(const float *)v);
	case PROTOBUF_C_TYPE_DOUBLE:
		return put_double(out, *(const double *)v);
	case PROTOBUF_C_TYPE_BOOL:
		return *(const protobuf_c_boolean *)v ? mm_buf_append(out, "true", 4)
						      : mm_buf_append(out, "false", 5);
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumValue *ev =
			protobuf_c_enum_descriptor_get_value(f->descriptor, *(const int *)v);
		if (ev == NULL)
			return mm_buf_put_dec_i64(out, *(const int *)v);
		return put_quoted_name(out, ev->name);
	}
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(char *const *)v;
		return mm_json_quote(s, strlen(s), out);
	}
	case PROTOBUF_C_TYPE_BYTES: {
		const ProtobufCBinaryData *b = v;
		int rc = mm_buf_put_u8(out, '"');
		if (rc == 0)
			rc = mm_base64_encode(b->data, b->len, out);
		return rc ? rc : mm_buf_put_u8(out, '"');
	}
	case PROTOBUF_C_TYPE_MESSAGE: {
		const ProtobufCMessage *m = *(void *const *)v;
		if (m == NULL)
			return mm_buf_append(out, "null", 4);
		return encode_message(m, out, depth + 1);
	}
	}
	return mm_diag_set(MM_EINVAL, "pbjson: unknown field type");
}

static int encode_message(const ProtobufCMessage *msg, mm_buf_t *out, int depth)
{
	const ProtobufCMessageDescriptor *d = msg->descriptor;
	const char *base = (const char *)msg;
	int rc = mm_buf_put_u8(out, '{'), first = 1;

	if (depth > MM_JSON_MAX_DEPTH)
		return mm_diag_set(MM_EINVAL, "pbjson: message nested too deeply");
	for (unsigned i = 0; rc == 0 && i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];

		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(base + f->quantifier_offset);
			const char *arr = *(char *const *)(base + f->offset);

			if (n == 0)
				continue;
			rc = put_key(out, f->name, first);
			if (rc == 0)
				rc = mm_buf_put_u8(out, '[');
			for (size_t k = 0; rc == 0 && k < n; k++) {
				if (k)
					rc = mm_buf_put_u8(out, ',');
				if (rc == 0)
					rc = encode_value(f, arr + k * elem_size(f->type), out, depth);
			}
			if (rc == 0)
				rc = mm_buf_put_u8(out, ']');
		} else {
			if (!field_present(msg, f))
				continue;
			rc = put_key(out, f->name, first);
			if (rc == 0)
				rc = encode_value(f, base + f->offset, out, depth);
		}
		first = 0;
	}
	return rc ? rc : mm_buf_put_u8(out, '}');
}

int mm_pbjson_encode(const ProtobufCMessage *msg, mm_buf_t *out)
{
	return encode_message(msg, out, 0);
}

/* ---- decoding ---- */

static void *arena_alloc(void *data, size_t n)
{
	return mm_arena_alloc(data, n);
}

static void arena_free(void *data, void *p)
{
}

ProtobufCAllocator mm_pb_allocator(mm_arena_t *arena)
{
	return (ProtobufCAllocator){arena_alloc, arena_free, arena};
}

typedef struct dec {
	mm_arena_t *arena;
	mm_buf_t tmp;
} dec_t;

static int bad(const ProtobufCFieldDescriptor *f, const char *what)
{
	return mm_diag_set(MM_EINVAL, "field %s: %s", f->name, what);
}

/* An integer from a NUMBER or STRING node, in [lo, hi] (signed) or
 * [0, uhi] (unsigned). */
static int read_int(const ProtobufCFieldDescriptor *f, const mm_jnode_t *n, int is_unsigned,
		    int64_t lo, int64_t hi, uint64_t uhi, int64_t *si, uint64_t *ui)
{
	char tmp[64];
	int is_int;
	int64_t i;
	double d;

	if ((n->type != MM_JSON_NUMBER && n->type != MM_JSON_STRING) || n->len == 0 ||
	    n->len >= sizeof(tmp))
		return bad(f, "expected an integer");
	memcpy(tmp, n->s, n->len);
	tmp[n->len] = '\0';
	if (is_unsigned && tmp[0] != '-') {
		char *end;
		errno = 0;
		unsigned long long u = strtoull(tmp, &end, 10);
		if (*end == '\0' && errno == 0) {
			if (u > uhi)
				return bad(f, "integer out of range");
			*ui = u;
			return 0;
		}
	}
	if (mm_json_number(tmp, n->len, &is_int, &i, &d) != 0)
		return bad(f, "expected an integer");
	if (!is_int) {
		if (d != floor(d) || d < -9.2233720368547758e18 || d >= 9.2233720368547758e18)
			return bad(f, "expected an integer");
		i = (int64_t)d;
	}
	if (is_unsigned) {
		if (i < 0 || (uint64_t)i > uhi)
			return bad(f, "integer out of range");
		*ui = (uint64_t)i;
		return 0;
	}
	if (i < lo || i > hi)
		return bad(f, "integer out of range");
	*si = i;
	return 0;
}

static int decode_message(dec_t *dc, const ProtobufCMessageDescriptor *d, const mm_jnode_t *obj,
			  ProtobufCMessage **out, int depth);

static int decode_value(dec_t *dc, const ProtobufCFieldDescriptor *f, const mm_jnode_t *n, void *v,
			int depth)
{
	int64_t si = 0;
	uint64_t ui = 0;
	int rc;

	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		rc = read_int(f, n, 0, INT32_MIN, INT32_MAX, 0, &si, &ui);
		if (rc == 0)
			*(int32_t *)v = (int32_t)si;
		return rc;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		rc = read_int(f, n, 1, 0, 0, UINT32_MAX, &si, &ui);
		if (rc == 0)
			*(uint32_t *)v = (uint32_t)ui;
		return rc;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		rc = read_int(f, n, 0, INT64_MIN, INT64_MAX, 0, &si, &ui);
		if (rc == 0)
			*(int64_t *)v = si;
		return rc;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		rc = read_int(f, n, 1, 0, 0, UINT64_MAX, &si, &ui);
		if (rc == 0)
			*(uint64_t *)v = ui;
		return rc;
	case PROTOBUF_C_TYPE_FLOAT:
	case PROTOBUF_C_TYPE_DOUBLE: {
		double d;
		int is_int;
		int64_t i;

		if (n->type == MM_JSON_STRING && n->len == 3 && memcmp(n->s, "NaN", 3) == 0)
			d = NAN;
		else if (n->type == MM_JSON_STRING && n->len == 8 && memcmp(n->s, "Infinity", 8) == 0)
			d = INFINITY;
		else if (n->type == MM_JSON_STRING && n->len == 9 && memcmp(n->s, "-Infinity", 9) == 0)
			d = -INFINITY;
		else if ((n->type == MM_JSON_NUMBER || n->type == MM_JSON_STRING) &&
			 mm_json_number(n->s, n->len, &is_int, &i, &d) == 0)
			;
		else
			return bad(f, "expected a number");
		if (f->type == PROTOBUF_C_TYPE_FLOAT)
			*(float *)v = (float)d;
		else
			*(double *)v = d;
		return 0;
	}
	case PROTOBUF_C_TYPE_BOOL:
		if (n->type != MM_JSON_TRUE && n->type != MM_JSON_FALSE)
			return bad(f, "expected true or false");
		*(protobuf_c_boolean *)v = n->type == MM_JSON_TRUE;
		return 0;
	case PROTOBUF_C_TYPE_ENUM: {
		const ProtobufCEnumValue *ev = NULL;

		if (n->type == MM_JSON_STRING) {
			char *name = mm_arena_strndup(dc->arena, n->s, n->len);
			if (name == NULL)
				return mm_diag_set(MM_ENOMEM, "pbjson: out of memory");
			ev = protobuf_c_enum_descriptor_get_value_by_name(f->descriptor, name);
			if (ev == NULL)
				return bad(f, "unknown enum value");
			*(int *)v = ev->value;
			return 0;
		}
		rc = read_int(f, n, 0, INT32_MIN, INT32_MAX, 0, &si, &ui);
		if (rc == 0)
			*(int *)v = (int)si;
		return rc;
	}
	case PROTOBUF_C_TYPE_STRING:
		if (n->type != MM_JSON_STRING)
			return bad(f, "expected a string");
		if (memchr(n->s, '\0', n->len) != NULL)
			return bad(f, "a string may not contain NUL characters");
		*(char **)v = mm_arena_strndup(dc->arena, n->s, n->len);
		return *(char **)v ? 0 : mm_diag_set(MM_ENOMEM, "pbjson: out of memory");
	case PROTOBUF_C_TYPE_BYTES: {
		ProtobufCBinaryData *b = v;

		if (n->type != MM_JSON_STRING)
			return bad(f, "expected base64 in a string");
		dc->tmp.len = 0;
		rc = mm_base64_decode(n->s, n->len, MM_BASE64_LENIENT, &dc->tmp);
		if (rc)
			return bad(f, "invalid base64");
		b->data = mm_arena_alloc(dc->arena, dc->tmp.len ? dc->tmp.len : 1);
		if (b->data == NULL)
			return mm_diag_set(MM_ENOMEM, "pbjson: out of memory");
		if (dc->tmp.len)
			memcpy(b->data, dc->tmp.p, dc->tmp.len);
		b->len = dc->tmp.len;
		return 0;
	}
	case PROTOBUF_C_TYPE_MESSAGE:
		if (n->type != MM_JSON_OBJECT)
			return bad(f, "expected an object");
		return decode_message(dc, f->descriptor, n, (ProtobufCMessage **)v, depth + 1);
	}
	return bad(f, "unsupported type");
}

static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *d,
						  const char *key, size_t len)
{
	char name[128];

	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];

		json_name(f->name, name, sizeof(name));
		if ((strlen(f->name) == len && memcmp(f->name, key, len) == 0) ||
		    (strlen(name) == len && memcmp(name, key, len) == 0))
			return f;
	}
	return NULL;
}

static int decode_message(dec_t *dc, const ProtobufCMessageDescriptor *d, const mm_jnode_t *obj,
			  ProtobufCMessage **out, int depth)
{
	ProtobufCMessage *msg;
	uint8_t *seen;
	char *base;
	int rc;

	if (depth > MM_JSON_MAX_DEPTH)
		return mm_diag_set(MM_EINVAL, "message nested too deeply");
	msg = mm_arena_calloc(dc->arena, d->sizeof_message);
	seen = mm_arena_calloc(dc->arena, d->n_fields + 1);
	if (msg == NULL || seen == NULL)
		return mm_diag_set(MM_ENOMEM, "pbjson: out of memory");
	d->message_init(msg);
	base = (char *)msg;
	for (const mm_jnode_t *m = obj->child; m != NULL; m = m->next) {
		const ProtobufCFieldDescriptor *f = find_field(d, m->key, m->key_len);

		if (f == NULL)
			return mm_diag_set(MM_EINVAL, "%s has no field '%.*s'", d->name,
					   (int)(m->key_len > 64 ? 64 : m->key_len), m->key);
		/* A field given twice (by either of its names) is ambiguous. */
		if (seen[f - d->fields]++)
			return bad(f, "given more than once");
		if (m->type == MM_JSON_NULL)
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t sz = elem_size(f->type), k = 0;
			char *arr;

			if (m->type != MM_JSON_ARRAY)
				return bad(f, "expected an array");
			arr = mm_arena_calloc(dc->arena, (m->n ? m->n : 1) * sz);
			if (arr == NULL)
				return mm_diag_set(MM_ENOMEM, "pbjson: out of memory");
			for (const mm_jnode_t *e = m->child; e != NULL; e = e->next, k++)
				if ((rc = decode_value(dc, f, e, arr + k * sz, depth)) != 0)
					return rc;
			*(size_t *)(base + f->quantifier_offset) = k;
			*(char **)(base + f->offset) = arr;
			continue;
		}
		if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
			uint32_t *c = (uint32_t *)(base + f->quantifier_offset);
			if (*c != 0)
				return bad(f, "another member of its oneof is already set");
			*c = f->id;
		} else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
			   f->type != PROTOBUF_C_TYPE_STRING) {
			*(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
		}
		if ((rc = decode_value(dc, f, m, base + f->offset, depth)) != 0)
			return rc;
	}
	*out = msg;
	return 0;
}

int mm_pbjson_decode(const ProtobufCMessageDescriptor *desc, const char *p, size_t n,
		     mm_arena_t *arena, ProtobufCMessage **out)
{
	mm_jtree_t t = {0};
	dec_t dc = {arena, {0}};
	int rc = mm_jtree_parse(&t, p, n);

	if (rc == 0 && t.root->type != MM_JSON_OBJECT)
		rc = mm_diag_set(MM_EINVAL, "the request must be a JSON object");
	if (rc == 0)
		rc = decode_message(&dc, desc, t.root, out, 0);
	mm_buf_free(&dc.tmp);
	mm_jtree_free(&t);
	return rc;
}
