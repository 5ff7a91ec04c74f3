/*
 * monoid.c: the registry of built-in monoids, lookup by name, parameter
 * checking and the canonical description used to detect incompatible
 * redefinitions.
 *
 * The description names every parameter that changes the meaning or the
 * byte format of a state, with defaults filled in, so "topk" and "topk(k=32)"
 * describe the same monoid while "topk(k=64)" does not. Parameters that a
 * monoid ignores never appear, so stray fields cannot cause a false mismatch.
 */
#include "monoid.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "hll.h"
#include "monoid_impl.h"

const mm_monoid_vtable_t *const mm_monoid_registry[] = {
	&mm_monoid_sum_vtable,
	&mm_monoid_count_vtable,
	&mm_monoid_min_vtable,
	&mm_monoid_max_vtable,
	&mm_monoid_first_vtable,
	&mm_monoid_last_vtable,
	&mm_monoid_set_vtable,
	&mm_monoid_hll_vtable,
	&mm_monoid_topk_vtable,
	&mm_monoid_bloom_vtable,
	NULL,
};

const mm_monoid_vtable_t *mm_monoid_find(const char *name)
{
	if (name == NULL)
		return NULL;
	for (size_t i = 0; mm_monoid_registry[i] != NULL; i++)
		if (strcmp(mm_monoid_registry[i]->name, name) == 0)
			return mm_monoid_registry[i];
	return NULL;
}

int mm_monoid_init(mm_monoid_t *m, const char *name, const mm_monoid_params_t *p)
{
	const mm_monoid_vtable_t *vt = mm_monoid_find(name);
	mm_monoid_params_t params = {0};
	int rc;

	if (vt == NULL)
		return mm_diag_set(MM_ENOTFOUND,
				   "unknown monoid '%s' (expected one of: sum, count, min, max, "
				   "first, last, set, hll, topk, bloom)",
				   name ? name : "(null)");
	if (p != NULL)
		params = *p;
	rc = vt->check(&params);
	if (rc)
		return rc;
	m->vt = vt;
	m->p = params;
	return 0;
}

int mm_monoid_describe(const mm_monoid_t *m, mm_buf_t *out)
{
	const mm_monoid_vtable_t *vt = m->vt;
	int rc;

	if (vt == &mm_monoid_sum_vtable)
		return mm_buf_printf(out, "sum(float=%d)", m->p.is_float ? 1 : 0);
	if (vt == &mm_monoid_topk_vtable)
		return mm_buf_printf(out, "topk(k=%" PRIu32 ")", m->p.k);
	if (vt == &mm_monoid_set_vtable)
		return mm_buf_printf(out, "set(max_size=%" PRIu32 ")", m->p.max_size);
	if (vt == &mm_monoid_hll_vtable)
		return mm_buf_printf(out, "hll(p=%d)", MM_HLL_P);
	if (vt == &mm_monoid_bloom_vtable) {
		rc = mm_buf_printf(out, "bloom(capacity=%" PRIu64 ",fpr=", m->p.capacity);
		if (rc == 0)
			rc = mm_monoid_put_double(out, m->p.fpr);
		if (rc == 0)
			rc = mm_buf_put_u8(out, ')');
		return rc;
	}
	return mm_buf_append(out, vt->name, strlen(vt->name));
}

int mm_monoid_put_double(mm_buf_t *out, double d)
{
	char tmp[32];
	int prec;

	if (!isfinite(d))
		return mm_buf_append(out, "null", 4);
	for (prec = 15; prec < 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
		if (strtod(tmp, NULL) == d)
			break;
	}
	if (prec == 17)
		snprintf(tmp, sizeof(tmp), "%.17g", d);
	return mm_buf_append(out, tmp, strlen(tmp));
}
