/*
 * scalar.c: the sum, count, min and max monoids.
 *
 * States live inline in the caller's MM_STATE_MAX bytes; nothing is
 * allocated. Encodings are fixed-length little-endian:
 *
 *   sum, float=0   8 bytes: int64 two's complement. Identity: 0.
 *   sum, float=1   8 bytes: IEEE 754 binary64 bits. Identity: +0.0.
 *   count          8 bytes: uint64. Identity: 0.
 *   min, max       1 byte flag: 0 = unset (the identity, encoded as that
 *                  single byte), 1 = set, followed by 8 bytes binary64.
 *
 * The encodings are canonical and the decoders accept only what the
 * encoders can produce (exact lengths, flags 0/1, finite doubles, no -0.0
 * where a state cannot hold one), so equal values always have equal bytes
 * and anything else is reported as MM_ECORRUPT.
 *
 * Numbers. Integer sums are exact and refuse to overflow, in add and merge
 * alike (MM_ERANGE, state unchanged): a reported error is better than a
 * total that silently wrapped. Float sums, min and max refuse NaN and
 * infinities (MM_ERANGE): NaN has no order, and JSON can write neither.
 * min and max store -0.0 as +0.0, because the two compare equal and the
 * result (and its bytes) would otherwise depend on the order of arguments.
 * A float sum never holds -0.0: starting from +0.0, round-to-nearest
 * addition only yields -0.0 from two negative zeros.
 *
 * Float sums are commutative, but associative only up to rounding (the law
 * tests use binary-exact values). min and max keep doubles, so integers
 * beyond 2^53 are rounded.
 */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "../lib/error.h"
#include "monoid.h"
#include "monoid_impl.h"

typedef union sum_state {
	int64_t i;
	double d;
} sum_state_t;

typedef struct minmax_state {
	uint8_t set;
	double v;
} minmax_state_t;

_Static_assert(sizeof(sum_state_t) <= MM_STATE_MAX, "sum state too large");
_Static_assert(sizeof(uint64_t) <= MM_STATE_MAX, "count state too large");
_Static_assert(sizeof(minmax_state_t) <= MM_STATE_MAX, "min/max state too large");

static uint64_t double_bits(double d)
{
	uint64_t u;

	memcpy(&u, &d, sizeof(u));
	return u;
}

static double bits_double(uint64_t u)
{
	double d;

	memcpy(&d, &u, sizeof(d));
	return d;
}

/* Reads a number value as a finite double, for float sums, min and max. */
static int number_value(const char *name, const mm_value_t *v, double *out)
{
	double d;

	switch (v->type) {
	case MM_VAL_INT:
		d = (double)v->i;
		break;
	case MM_VAL_DOUBLE:
		d = v->d;
		break;
	default:
		return mm_diag_set(MM_ETYPE, "%s: expected a number", name);
	}
	if (!isfinite(d))
		return mm_diag_set(MM_ERANGE, "%s: %g is not a finite number", name, d);
	*out = d == 0 ? 0.0 : d;
	return 0;
}

static int check_none(mm_monoid_params_t *p)
{
	return 0;
}

static void scalar_init(const mm_monoid_t *m, void *st)
{
	memset(st, 0, MM_STATE_MAX);
}

static void scalar_destroy(const mm_monoid_t *m, void *st)
{
}

/* sum */

static int sum_check(mm_monoid_params_t *p)
{
	if (p->is_float != 0 && p->is_float != 1)
		return mm_diag_set(MM_EINVAL, "sum: float must be 0 or 1, not %d", p->is_float);
	return 0;
}

static int sum_add(const mm_monoid_t *m, void *st, const mm_value_t *v)
{
	sum_state_t *s = st;
	int64_t i, r;
	double d = 0;
	int rc;

	if (m->p.is_float) {
		rc = number_value("sum", v, &d);
		if (rc)
			return rc;
		d += s->d;
		if (!isfinite(d))
			return mm_diag_set(MM_ERANGE, "sum: result overflows a double");
		s->d = d;
		return 0;
	}
	switch (v->type) {
	case MM_VAL_INT:
		i = v->i;
		break;
	case MM_VAL_DOUBLE:
		if (!isfinite(v->d))
			return mm_diag_set(MM_ERANGE, "sum: %g is not a finite number", v->d);
		if (v->d != trunc(v->d))
			return mm_diag_set(MM_ETYPE, "sum: %.17g is not an integer (use float=1)",
					   v->d);
		/* 2^63 is exact as a double; every integral double below it fits. */
		if (!(v->d >= -9223372036854775808.0 && v->d < 9223372036854775808.0))
			return mm_diag_set(MM_ERANGE, "sum: %.17g does not fit in int64", v->d);
		i = (int64_t)v->d;
		break;
	default:
		return mm_diag_set(MM_ETYPE, "sum: expected a number");
	}
	if (__builtin_add_overflow(s->i, i, &r))
		return mm_diag_set(MM_ERANGE, "sum: int64 overflow");
	s->i = r;
	return 0;
}

static int sum_merge(const mm_monoid_t *m, void *dst, const void *src)
{
	sum_state_t *a = dst;
	const sum_state_t *b = src;
	int64_t r;
	double d;

	if (m->p.is_float) {
		d = a->d + b->d;
		if (!isfinite(d))
			return mm_diag_set(MM_ERANGE, "sum: result overflows a double");
		a->d = d;
		return 0;
	}
	if (__builtin_add_overflow(a->i, b->i, &r))
		return mm_diag_set(MM_ERANGE, "sum: int64 overflow");
	a->i = r;
	return 0;
}

static int sum_encode(const mm_monoid_t *m, const void *st, mm_buf_t *out)
{
	const sum_state_t *s = st;

	return mm_buf_put_u64le(out, m->p.is_float ? double_bits(s->d) : (uint64_t)s->i);
}

static int sum_decode(const mm_monoid_t *m, void *st, const uint8_t *p, size_t n)
{
	sum_state_t *s = st;
	uint64_t u;
	double d;

	s->i = 0;
	if (n != 8)
		return mm_diag_set(MM_ECORRUPT, "sum: expected 8 bytes, got %zu", n);
	u = mm_get_u64le(p);
	if (!m->p.is_float) {
		s->i = (int64_t)u;
		return 0;
	}
	d = bits_double(u);
	if (!isfinite(d) || u == 0x8000000000000000ULL)
		return mm_diag_set(MM_ECORRUPT,
				   "sum: stored double 0x%016" PRIx64 " is not canonical", u);
	s->d = d;
	return 0;
}

static int sum_to_json(const mm_monoid_t *m, const void *st, mm_buf_t *out)
{
	const sum_state_t *s = st;
	int rc;

	/* Plain appends rather than printf: the query server renders a result
	 * per request. */
	rc = mm_buf_append(out, "{\"value\":", 9);
	if (rc == 0)
		rc = m->p.is_float ? mm_monoid_put_double(out, s->d) : mm_buf_put_dec_i64(out, s->i);
	if (rc == 0)
		rc = mm_buf_put_u8(out, '}');
	return rc;
}

static int sum_is_identity(const mm_monoid_t *m, const void *st)
{
	const sum_state_t *s = st;

	return m->p.is_float ? s->d == 0 : s->i == 0;
}

const mm_monoid_vtable_t mm_monoid_sum_vtable = {
	.name = "sum",
	.value_kind = MM_VK_NUMBER,
	.check = sum_check,
	.init = scalar_init,
	.destroy = scalar_destroy,
	.add = sum_add,
	.merge = sum_merge,
	.encode = sum_encode,
	.decode = sum_decode,
	.to_json = sum_to_json,
	.is_identity = sum_is_identity,
};

/* count */

static int count_add(const mm_monoid_t *m, void *st, const mm_value_t *v)
{
	uint64_t *c = st;

	if (*c == UINT64_MAX)
		return mm_diag_set(MM_ERANGE, "count: overflow");
	(*c)++;
	return 0;
}

static int count_merge(const mm_monoid_t *m, void *dst, const void *src)
{
	uint64_t *a = dst, r;
	const uint64_t *b = src;

	if (__builtin_add_overflow(*a, *b, &r))
		return mm_diag_set(MM_ERANGE, "count: overflow");
	*a = r;
	return 0;
}

static int count_encode(const mm_monoid_t *m, const void *st, mm_buf_t *out)
{
	return mm_buf_put_u64le(out, *(const uint64_t *)st);
}

static int count_decode(const mm_monoid_t *m, void *st, const uint8_t *p, size_t n)
{
	uint64_t *c = st;

	*c = 0;
	if (n != 8)
		return mm_diag_set(MM_ECORRUPT, "count: expected 8 bytes, got %zu", n);
	*c = mm_get_u64le(p);
	return 0;
}

static int count_to_json(const mm_monoid_t *m, const void *st, mm_buf_t *out)
{
	int rc = mm_buf_append(out, "{\"value\":", 9);

	if (rc == 0)
		rc = mm_buf_put_dec_u64(out, *(const uint64_t *)st);
	return rc ? rc : mm_buf_put_u8(out, '}');
}

static int count_is_identity(const mm_monoid_t *m, const void *st)
{
	return *(const uint64_t *)st == 0;
}

const mm_monoid_vtable_t mm_monoid_count_vtable = {
	.name = "count",
	.value_kind = MM_VK_NONE,
	.check = check_none,
	.init = scalar_init,
	.destroy = scalar_destroy,
	.add = count_add,
	.merge = count_merge,
	.encode = count_encode,
	.decode = count_decode,
	.to_json = count_to_json,
	.is_identity = count_is_identity,
};

/* min and max: one implementation, `is_max` picks the direction. */

static void minmax_take(minmax_state_t *s, double d, int is_max)
{
	if (!s->set || (is_max ? d > s->v : d < s->v)) {
		s->set = 1;
		s->v = d;
	}
}

static int minmax_add(const mm_monoid_t *m, void *st, const mm_value_t *v, int is_max)
{
	double d = 0;
	int rc = number_value(m->vt->name, v, &d);

	if (rc)
		return rc;
	minmax_take(st, d, is_max);
	return 0;
}

static int minmax_merge(void *dst, const void *src, int is_max)
{
	const minmax_state_t *b = src;

	if (b->set)
		minmax_take(dst, b->v, is_max);
	return 0;
}

static int minmax_encode(const mm_monoid_t *m, const void *st, mm_buf_t *out)
{
	const minmax_state_t *s = st;
	uint8_t t[9] = {0};

	if (!s->set)
		return mm_buf_append(out, t, 1);
	t[0] = 1;
	mm_set_u64le(t + 1, double_bits(s->v));
	return mm_buf_append(out, t, sizeof(t));
}

static int minmax_decode(const mm_monoid_t *m, void *st, const uint8_t *p, size_t n)
{
	minmax_state_t *s = st;
	const char *name = m->vt->name;
	uint64_t u;
	double d;

	s->set = 0;
	s->v = 0;
	if (n == 0)
		return mm_diag_set(MM_ECORRUPT, "%s: empty encoding", name);
	if (p[0] > 1)
		return mm_diag_set(MM_ECORRUPT, "%s: bad flag %u", name, p[0]);
	if (n != (p[0] ? 9u : 1u))
		return mm_diag_set(MM_ECORRUPT, "%s: %s state has %zu bytes, expected %u", name,
				   p[0] ? "set" : "unset", n, p[0] ? 9u : 1u);
	if (p[0] == 0)
		return 0;
	u = mm_get_u64le(p + 1);
	d = bits_double(u);
	if (!isfinite(d) || u == 0x8000000000000000ULL)
		return mm_diag_set(MM_ECORRUPT,
				   "%s: stored double 0x%016" PRIx64 " is not canonical", name, u);
	s->set = 1;
	s->v = d;
	return 0;
}

static int minmax_to_json(const mm_monoid_t *m, const void *st, mm_buf_t *out)
{
	const minmax_state_t *s = st;
	int rc;

	if (!s->set)
		return mm_buf_append(out, "{\"value\":null}", 14);
	rc = mm_buf_append(out, "{\"value\":", 9);
	if (rc == 0)
		rc = mm_monoid_put_double(out, s->v);
	if (rc == 0)
		rc = mm_buf_put_u8(out, '}');
	return rc;
}

static int minmax_is_identity(const mm_monoid_t *m, const void *st)
{
	return !((const minmax_state_t *)st)->set;
}

static int min_add(const mm_monoid_t *m, void *st, const mm_value_t *v)
{
	return minmax_add(m, st, v, 0);
}

static int min_merge(const mm_monoid_t *m, void *dst, const void *src)
{
	return minmax_merge(dst, src, 0);
}

static int max_add(const mm_monoid_t *m, void *st, const mm_value_t *v)
{
	return minmax_add(m, st, v, 1);
}

static int max_merge(const mm_monoid_t *m, void *dst, const void *src)
{
	return minmax_merge(dst, src, 1);
}

const mm_monoid_vtable_t mm_monoid_min_vtable = {
	.name = "min",
	.value_kind = MM_VK_NUMBER,
	.check = check_none,
	.init = scalar_init,
	.destroy = scalar_destroy,
	.add = min_add,
	.merge = min_merge,
	.encode = minmax_encode,
	.decode = minmax_decode,
	.to_json = minmax_to_json,
	.is_identity = minmax_is_identity,
};

const mm_monoid_vtable_t mm_monoid_max_vtable = {
	.name = "max",
	.value_kind = MM_VK_NUMBER,
	.check = check_none,
	.init = scalar_init,
	.destroy = scalar_destroy,
	.add = max_add,
	.merge = max_merge,
	.encode = minmax_encode,
	.decode = minmax_decode,
	.to_json = minmax_to_json,
	.is_identity = minmax_is_identity,
};
