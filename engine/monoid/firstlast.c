/*
 * firstlast.c: the first and last monoids, which keep the value with the
 * earliest (first) or latest (last) event time.
 *
 * Order. Candidates are ordered by (ts_ms, seq, value): first keeps the
 * smallest, last the largest. ts_ms is the event time (processing time when
 * the pipeline names no time field). seq is the arrival stamp the engine
 * gives every delivered record (engine.c: nanoseconds of the wall clock at
 * delivery, strictly increasing within a process, record by record), so when
 * times tie the later arrival wins for last and the earlier for first:
 * within a batch, across batches and flushes, and after a restart (a new
 * process starts its stamps at the current wall clock, after every stamp of
 * the previous one unless the clock was stepped back). Stamps of different
 * workers compare by their clocks. A state decoded from version 1 bytes
 * (below) has seq 0: it arrived before anything stamped.
 *
 * Equal (ts_ms, seq) pairs, e.g. states of two workers with equal stamps,
 * are broken by the value itself so that merge stays commutative whatever
 * order events and deltas arrive in: types order INT < DOUBLE < STRING,
 * integers and doubles by numeric value (-0.0 before +0.0), strings bytewise
 * with a prefix before its extensions; first keeps the smaller value, last
 * the larger. This is a lexicographic min/max over a total order, so the
 * monoid laws hold: identity (unset), associativity, commutativity. Two
 * states compare equal only when their encodings are identical, so the
 * result does not depend on the order of merges.
 *
 * State (inline, 32 bytes): ts, seq, the value (int64, double, or a heap
 * copy of the string owned by the state), the string length, a set flag and
 * a type. Strings are bounded by MAX_STRING (64 KiB): a longer value is
 * refused with MM_ERANGE rather than truncated, since a cut-off string is a
 * wrong answer. Doubles must be finite; -0.0 is kept as given (it has its own
 * bytes and its own place in the order). Any int64 time is accepted; to_json
 * clamps the RFC 3339 "time" to years 0000..9999 but prints "time_ms"
 * exactly.
 *
 * Encoding (little-endian). The flag byte is also the version:
 *   unset:       u8 0                                       (1 byte)
 *   set, v1:     u8 1, u8 type, i64 ts, then the value      (seq == 0)
 *   set, v2:     u8 2, u8 type, i64 ts, u64 seq != 0, then the value
 *   value:   type 1 (int):    i64 value                  (8 bytes)
 *            type 2 (double): binary64 bits, finite      (8 bytes)
 *            type 3 (string): u32 len <= 65536, len bytes (4 + len bytes)
 * So v1 is 18 bytes for numbers and 14 + len for strings, v2 8 bytes more.
 * A state with seq 0 is always written as v1 (bytes written before arrival
 * stamps existed decode unchanged and re-encode identically); v2 with seq 0
 * is not canonical and is rejected. Decoding checks the flag, the type,
 * every length and the string bound, and rejects trailing bytes, so only
 * canonical encodings are accepted.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "../codec/json.h"
#include "monoid.h"
#include "monoid_impl.h"
#include "window.h"

#define MAX_STRING 65536u

/* Type bytes of the encoding; fixed here, independent of enum mm_value_type. */
enum { FL_INT = 1, FL_DOUBLE = 2, FL_STRING = 3 };

typedef struct fl_state {
	int64_t ts;
	uint64_t seq; /* arrival stamp; 0 = before every stamp */
	union {
		int64_t i;
		double d;
		char *s; /* owned by the state, or borrowed in a candidate built from a value */
	} u;
	uint32_t len;
	uint8_t set;
	uint8_t type;
} fl_state_t;

_Static_assert(sizeof(fl_state_t) <= MM_STATE_MAX, "first/last state too large");

static uint64_t double_bits(double d)
{
	uint64_t u;

	memcpy(&u, &d, sizeof(u));
	return u;
}

/* Total order on values described in the header comment; both are set. */
static int value_cmp(const fl_state_t *a, const fl_state_t *b)
{
	uint32_t n;
	int c;

	if (a->type != b->type)
		return a->type < b->type ? -1 : 1;
	switch (a->type) {
	case FL_INT:
		return (a->u.i > b->u.i) - (a->u.i < b->u.i);
	case FL_DOUBLE:
		if (a->u.d != b->u.d)
			return a->u.d < b->u.d ? -1 : 1;
		/* Only -0.0 and +0.0 compare equal with different bits: the
		 * negative zero is the smaller. */
		return !!signbit(b->u.d) - !!signbit(a->u.d);
	default:
		/* An empty candidate's pointer may be NULL: memcmp must not see it. */
		n = a->len < b->len ? a->len : b->len;
		c = n ? memcmp(a->u.s, b->u.s, n) : 0;
		if (c)
			return c;
		return (a->len > b->len) - (a->len < b->len);
	}
}

/* 1 if cand should replace cur. */
static int wins(const fl_state_t *cand, const fl_state_t *cur, int is_last)
{
	int c;

	if (!cur->set)
		return 1;
	if (cand->ts != cur->ts)
		return is_last ? cand->ts > cur->ts : cand->ts < cur->ts;
	if (cand->seq != cur->seq)
		return is_last ? cand->seq > cur->seq : cand->seq < cur->seq;
	c = value_cmp(cand, cur);
	return is_last ? c > 0 : c < 0;
}

/* Makes dst a copy of src (which is set), copying its string. On MM_ENOMEM
 * dst is unchanged. */
static int assign(fl_state_t *dst, const fl_state_t *src)
{
	char *s = NULL;

	if (src->type == FL_STRING) {
		s = malloc(src->len + 1u);
		if (s == NULL)
			return mm_diag_set(MM_ENOMEM,
					   "first/last: cannot copy a %" PRIu32 "-byte string",
					   src->len);
		if (src->len)
			memcpy(s, src->u.s, src->len);
	}
	if (dst->set && dst->type == FL_STRING)
		free(dst->u.s);
	*dst = *src;
	if (s != NULL)
		dst->u.s = s;
	return 0;
}

static int fl_check(mm_monoid_params_t *p)
{
	return 0;
}

static void fl_init(const mm_monoid_t *m, void *st)
{
	memset(st, 0, sizeof(fl_state_t));
}

static void fl_destroy(const mm_monoid_t *m, void *st)
{
	fl_state_t *s = st;

	if (s->set && s->type == FL_STRING)
		free(s->u.s);
	memset(s, 0, sizeof(*s));
}

static int fl_add(const mm_monoid_t *m, void *st, const mm_value_t *v, int is_last)
{
	const char *name = m->vt->name;
	fl_state_t cand = {.ts = v->ts_ms, .seq = v->seq, .set = 1};

	switch (v->type) {
	case MM_VAL_INT:
		cand.type = FL_INT;
		cand.u.i = v->i;
		break;
	case MM_VAL_DOUBLE:
		if (!isfinite(v->d))
			return mm_diag_set(MM_ERANGE, "%s: %g is not a finite number", name, v->d);
		cand.type = FL_DOUBLE;
		cand.u.d = v->d;
		break;
	case MM_VAL_STRING:
		if (v->len > MAX_STRING)
			return mm_diag_set(MM_ERANGE, "%s: string of %zu bytes exceeds %u", name,
					   v->len, MAX_STRING);
		cand.type = FL_STRING;
		cand.u.s = (char *)v->s; /* borrowed: assign() copies it */
		cand.len = (uint32_t)v->len;
		break;
	default:
		return mm_diag_set(MM_ETYPE, "%s: expected a number or a string", name);
	}
	return wins(&cand, st, is_last) ? assign(st, &cand) : 0;
}

static int fl_merge(void *dst, const void *src, int is_last)
{
	const fl_state_t *b = src;

	if (!b->set || !wins(b, dst, is_last))
		return 0;
	return assign(dst, b);
}

static int fl_encode(const mm_monoid_t *m, const void *st, mm_buf_t *out)
{
	const fl_state_t *s = st;
	uint8_t h[26];
	size_t n = 10;
	int rc;

	h[0] = 0;
	if (!s->set)
		return mm_buf_append(out, h, 1);
	h[0] = s->seq ? 2 : 1;
	h[1] = s->type;
	mm_set_u64le(h + 2, (uint64_t)s->ts);
	if (s->seq) {
		mm_set_u64le(h + n, s->seq);
		n += 8;
	}
	switch (s->type) {
	case FL_INT:
		mm_set_u64le(h + n, (uint64_t)s->u.i);
		n += 8;
		break;
	case FL_DOUBLE:
		mm_set_u64le(h + n, double_bits(s->u.d));
		n += 8;
		break;
	default:
		mm_set_u32le(h + n, s->len);
		n += 4;
		break;
	}
	rc = mm_buf_append(out, h, n);
	if (rc == 0 && s->type == FL_STRING)
		rc = mm_buf_append(out, s->u.s, s->len);
	return rc;
}

static int fl_decode(const mm_monoid_t *m, void *st, const uint8_t *p, size_t n)
{
	const char *name = m->vt->name;
	fl_state_t v = {.set = 1};
	size_t need, off = 10; /* where the value starts */
	uint64_t u;
	double d;

	fl_destroy(m, st);
	if (n == 0)
		return mm_diag_set(MM_ECORRUPT, "%s: empty encoding", name);
	if (p[0] > 2)
		return mm_diag_set(MM_ECORRUPT, "%s: bad flag %u", name, p[0]);
	if (p[0] == 0) {
		if (n != 1)
			return mm_diag_set(MM_ECORRUPT, "%s: unset state has %zu bytes", name, n);
		return 0;
	}
	if (p[0] == 2)
		off = 18;
	if (n < off)
		return mm_diag_set(MM_ECORRUPT, "%s: truncated header (%zu bytes)", name, n);
	v.type = p[1];
	v.ts = (int64_t)mm_get_u64le(p + 2);
	if (p[0] == 2 && (v.seq = mm_get_u64le(p + 10)) == 0)
		return mm_diag_set(MM_ECORRUPT, "%s: version 2 state with arrival stamp 0", name);
	switch (v.type) {
	case FL_INT:
	case FL_DOUBLE:
		need = off + 8;
		break;
	case FL_STRING:
		if (n < off + 4)
			return mm_diag_set(MM_ECORRUPT, "%s: truncated string length", name);
		v.len = mm_get_u32le(p + off);
		if (v.len > MAX_STRING)
			return mm_diag_set(MM_ECORRUPT, "%s: string length %" PRIu32 " exceeds %u",
					   name, v.len, MAX_STRING);
		need = off + 4 + (size_t)v.len;
		break;
	default:
		return mm_diag_set(MM_ECORRUPT, "%s: bad value type %u", name, v.type);
	}
	if (n != need)
		return mm_diag_set(MM_ECORRUPT, "%s: %zu bytes, expected %zu", name, n, need);
	switch (v.type) {
	case FL_INT:
		v.u.i = (int64_t)mm_get_u64le(p + off);
		break;
	case FL_DOUBLE:
		u = mm_get_u64le(p + off);
		memcpy(&d, &u, sizeof(d));
		v.u.d = d;
		if (!isfinite(d))
			return mm_diag_set(MM_ECORRUPT, "%s: stored double is not finite", name);
		break;
	default:
		v.u.s = (char *)(p + off + 4); /* borrowed: assign() copies it */
		break;
	}
	return assign(st, &v);
}

static int fl_to_json(const mm_monoid_t *m, const void *st, mm_buf_t *out)
{
	const fl_state_t *s = st;
	char when[32];
	int rc;

	if (!s->set)
		return mm_buf_printf(out, "{\"value\":null,\"time\":null,\"time_ms\":null}");
	rc = mm_buf_append(out, "{\"value\":", 9);
	if (rc)
		return rc;
	switch (s->type) {
	case FL_INT:
		rc = mm_buf_printf(out, "%" PRId64, s->u.i);
		break;
	case FL_DOUBLE:
		rc = mm_monoid_put_double(out, s->u.d);
		break;
	default:
		rc = mm_json_quote(s->u.s, s->len, out);
		break;
	}
	if (rc)
		return rc;
	mm_time_format(s->ts, when);
	return mm_buf_printf(out, ",\"time\":\"%s\",\"time_ms\":%" PRId64 "}", when, s->ts);
}

static int fl_is_identity(const mm_monoid_t *m, const void *st)
{
	return !((const fl_state_t *)st)->set;
}

static int first_add(const mm_monoid_t *m, void *st, const mm_value_t *v)
{
	return fl_add(m, st, v, 0);
}

static int first_merge(const mm_monoid_t *m, void *dst, const void *src)
{
	return fl_merge(dst, src, 0);
}

static int last_add(const mm_monoid_t *m, void *st, const mm_value_t *v)
{
	return fl_add(m, st, v, 1);
}

static int last_merge(const mm_monoid_t *m, void *dst, const void *src)
{
	return fl_merge(dst, src, 1);
}

const mm_monoid_vtable_t mm_monoid_first_vtable = {
	.name = "first",
	.value_kind = MM_VK_ANY,
	.check = fl_check,
	.init = fl_init,
	.destroy = fl_destroy,
	.add = first_add,
	.merge = first_merge,
	.encode = fl_encode,
	.decode = fl_decode,
	.to_json = fl_to_json,
	.is_identity = fl_is_identity,
};

const mm_monoid_vtable_t mm_monoid_last_vtable = {
	.name = "last",
	.value_kind = MM_VK_ANY,
	.check = fl_check,
	.init = fl_init,
	.destroy = fl_destroy,
	.add = last_add,
	.merge = last_merge,
	.encode = fl_encode,
	.decode = fl_decode,
	.to_json = fl_to_json,
	.is_identity = fl_is_identity,
};
