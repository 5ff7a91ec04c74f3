/*
 * query_value.c: a query's answer as protobuf messages (see query_impl.h).
 *
 * A merged value becomes a typed Result (a set, an HLL cardinality with its
 * raw registers on request, a top-K, a bloom filter's shape, or a scalar)
 * through the monoid's to_json: the same text `murmur query --json` prints,
 * so both agree by construction. Everything is allocated in the call's
 * arena.
 */
#include <stdlib.h>
#include <string.h>

#include "../aws/awsjson.h"
#include "../codec/json.h"
#include "../lib/time.h"
#include "../monoid/window.h"
#include "query_impl.h"

static char *arena_str(mm_arena_t *a, const mm_jnode_t *n)
{
	if (n == NULL || n->type != MM_JSON_STRING)
		return mm_arena_strndup(a, "", 0);
	return mm_arena_strndup(a, n->s, n->len);
}

static uint64_t u64_node(const mm_jnode_t *n)
{
	char tmp[32];

	if (n == NULL || n->type != MM_JSON_NUMBER || n->len >= sizeof(tmp))
		return 0;
	memcpy(tmp, n->s, n->len);
	tmp[n->len] = '\0';
	return strtoull(tmp, NULL, 10);
}

/* Fills the oneof of r from the monoid's JSON (engine/monoid to_json). */
int mm_query_fill_value(mm_arena_t *a, const pipe_meta_t *pm, const void *acc, int include_raw,
			Murmur__V1__Result *r)
{
	const char *mname = pm->m.vt->name;
	mm_buf_t js = {0};
	mm_jtree_t t = {0};
	const mm_jnode_t *root;
	int rc = pm->m.vt->to_json(&pm->m, acc, &js);

	if (rc == 0)
		rc = mm_jtree_parse(&t, (const char *)js.p, js.len);
	if (rc)
		goto done;
	root = t.root;
	rc = MM_ENOMEM;
	if (strcmp(mname, "set") == 0) {
		Murmur__V1__SetValue *v = NEW(a, Murmur__V1__SetValue, murmur__v1__set_value__init);
		const mm_jnode_t *mem = mm_jnode_get(root, "members"), *tr = mm_jnode_get(root, "truncated");

		if (v == NULL)
			goto done;
		v->size = (uint32_t)u64_node(mm_jnode_get(root, "size"));
		v->truncated = tr && tr->type == MM_JSON_TRUE;
		v->n_members = mem ? mem->n : 0;
		v->members = mm_arena_alloc(a, (v->n_members + 1) * sizeof(char *));
		if (v->members == NULL)
			goto done;
		size_t i = 0;
		for (const mm_jnode_t *e = mem ? mem->child : NULL; e; e = e->next)
			if ((v->members[i++] = arena_str(a, e)) == NULL)
				goto done;
		r->value_case = MURMUR__V1__RESULT__VALUE_SET;
		r->set = v;
	} else if (strcmp(mname, "hll") == 0) {
		Murmur__V1__HllValue *v = NEW(a, Murmur__V1__HllValue, murmur__v1__hll_value__init);

		if (v == NULL)
			goto done;
		v->cardinality = u64_node(mm_jnode_get(root, "cardinality"));
		if (include_raw) {
			js.len = 0;
			if (pm->m.vt->encode(&pm->m, acc, &js) != 0 ||
			    (v->raw.data = mm_arena_alloc(a, js.len ? js.len : 1)) == NULL)
				goto done;
			memcpy(v->raw.data, js.p, js.len);
			v->raw.len = js.len;
		}
		r->value_case = MURMUR__V1__RESULT__VALUE_HLL;
		r->hll = v;
	} else if (strcmp(mname, "topk") == 0) {
		Murmur__V1__TopKValue *v = NEW(a, Murmur__V1__TopKValue, murmur__v1__top_kvalue__init);
		const mm_jnode_t *items = mm_jnode_get(root, "items");
		size_t i = 0;

		if (v == NULL)
			goto done;
		v->k = (uint32_t)u64_node(mm_jnode_get(root, "k"));
		v->n = u64_node(mm_jnode_get(root, "n"));
		v->error = u64_node(mm_jnode_get(root, "error"));
		v->n_items = items ? items->n : 0;
		v->items = mm_arena_alloc(a, (v->n_items + 1) * sizeof(*v->items));
		if (v->items == NULL)
			goto done;
		for (const mm_jnode_t *e = items ? items->child : NULL; e; e = e->next) {
			Murmur__V1__TopKItem *it = NEW(a, Murmur__V1__TopKItem, murmur__v1__top_kitem__init);

			if (it == NULL || (it->item = arena_str(a, mm_jnode_get(e, "item"))) == NULL)
				goto done;
			it->count = u64_node(mm_jnode_get(e, "count"));
			it->lower = u64_node(mm_jnode_get(e, "lower"));
			it->upper = u64_node(mm_jnode_get(e, "upper"));
			v->items[i++] = it;
		}
		r->value_case = MURMUR__V1__RESULT__VALUE_TOPK;
		r->topk = v;
	} else if (strcmp(mname, "bloom") == 0) {
		Murmur__V1__BloomValue *v = NEW(a, Murmur__V1__BloomValue, murmur__v1__bloom_value__init);

		if (v == NULL)
			goto done;
		v->bits = u64_node(mm_jnode_get(root, "bits"));
		v->hashes = (uint32_t)u64_node(mm_jnode_get(root, "hashes"));
		v->approx_count = u64_node(mm_jnode_get(root, "approx_count"));
		r->value_case = MURMUR__V1__RESULT__VALUE_BLOOM;
		r->bloom = v;
	} else {
		/* sum, count, min, max, first, last */
		Murmur__V1__Scalar *v = NEW(a, Murmur__V1__Scalar, murmur__v1__scalar__init);
		const mm_jnode_t *val = mm_jnode_get(root, "value"), *tm = mm_jnode_get(root, "time");
		int is_int = 0;
		int64_t i = 0;
		double d = 0;

		if (v == NULL)
			goto done;
		if (val && val->type == MM_JSON_NUMBER) {
			if (mm_json_number(val->s, val->len, &is_int, &i, &d) != 0) {
				rc = mm_diag_set(MM_ERANGE, "value out of range");
				goto done;
			}
			/* A float sum stays a double even when its value is whole. */
			if (is_int && !(strcmp(mname, "sum") == 0 && pm->m.p.is_float)) {
				v->value_case = MURMUR__V1__SCALAR__VALUE_INT_VALUE;
				v->int_value = i;
			} else {
				v->value_case = MURMUR__V1__SCALAR__VALUE_DOUBLE_VALUE;
				v->double_value = d;
			}
		} else if (val && val->type == MM_JSON_STRING) {
			v->value_case = MURMUR__V1__SCALAR__VALUE_STRING_VALUE;
			if ((v->string_value = arena_str(a, val)) == NULL)
				goto done;
		}
		if (tm && tm->type == MM_JSON_STRING && (v->time = arena_str(a, tm)) == NULL)
			goto done;
		r->value_case = MURMUR__V1__RESULT__VALUE_SCALAR;
		r->scalar = v;
	}
	rc = 0;
done:
	if (rc == MM_ENOMEM)
		mm_diag_set(MM_ENOMEM, "query: out of memory");
	mm_buf_free(&js);
	mm_jtree_free(&t);
	return rc;
}

Murmur__V1__Window *mm_query_make_window(mm_arena_t *a, const job_t *j)
{
	Murmur__V1__Window *w;
	char from[32], to[32];

	if (j->pm->gran == 0)
		return NULL;
	w = NEW(a, Murmur__V1__Window, murmur__v1__window__init);
	if (w == NULL)
		return NULL;
	mm_time_format(mm_window_bucket_start_ms(j->pm->gran, j->lo), from);
	mm_time_format(mm_window_bucket_start_ms(j->pm->gran, j->hi + 1) - 1, to);
	w->from = mm_arena_strndup(a, from, strlen(from));
	w->to = mm_arena_strndup(a, to, strlen(to));
	w->buckets = (int32_t)j->nb;
	return w;
}
