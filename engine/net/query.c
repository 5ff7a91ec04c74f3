/*
 * query.c: the query service's methods (see query.h).
 *
 * A read (Get*, MightContain) becomes a job: the pipeline's descriptor
 * (read once through get_meta, without blocking the loop, then cached;
 * calls that name it while the read is out wait for the same read), the
 * bucket range its method asks for, the
 * keys (entity x bucket) and, per store, a states array that get_many
 * fills. When every store has answered, each entity's states are merged
 * with the monoid into one value and turned into a typed Result through the
 * monoid's to_json (the same text `murmur query --json` prints, so both
 * agree by construction). Everything a job allocates lives in the call's
 * arena, except the monoid states' heap parts, destroyed at the end.
 *
 * Errors follow the contract: an unknown pipeline is not_found; a
 * window or range on an all-time pipeline (or a whole-retention Get on a
 * pipeline that keeps every bucket) is failed_precondition; a reversed,
 * malformed or out-of-retention range is invalid_argument; a store failure
 * is unavailable when retrying may help, else internal.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "murmur/v1/query.pb-c.h"

#include "../aws/awsjson.h"
#include "../codec/json.h"
#include "../lib/time.h"
#include "../lib/error.h"
#include "../monoid/bloom.h"
#include "../monoid/window.h"
#include "../store/keyset.h"
#include "query.h"
#include "rcache.h"

#define MAX_BUCKETS 100000
#define MAX_KEYS 200000
#define MAX_ENTITY 1024

typedef struct pipe_meta {
	char *name;
	mm_monoid_t m;
	char describe[96];
	int64_t gran, ret;
	char *script;
	char **keys;
	size_t nkeys;
	struct pipe_meta *next;
} pipe_meta_t;

typedef struct job job_t;

/* A call waiting for a descriptor that is not cached yet. It lives in the
 * call's arena; fn gets the descriptor, or rc and its detail. */
typedef struct meta_wait {
	void (*fn)(void *arg, int rc, const char *detail, const pipe_meta_t *pm);
	void *arg;
	struct meta_wait *next;
} meta_wait_t;

struct mm_query {
	mm_store_t **stores;
	size_t nstores;
	pipe_meta_t *metas;
	struct meta_read *reading;  /* descriptor reads in flight */
	size_t inflight;            /* store reads queued or in flight */
	uv_check_t *check;          /* flushes `queue` after each poll phase */
	mm_rcache_t *rcache;        /* results kept for --result-cache, or NULL */
	job_t *queue, **queue_tail; /* jobs planned in this loop iteration */
};

enum { RANGE_ALL, RANGE_WINDOW, RANGE_FROM_TO };

/* A job's view of one store's answers: key i's state and found flag are
 * at index map[i] of states and found (index i when map is NULL). */
typedef struct slot {
	job_t *job;
	uint8_t *states;
	uint8_t *found;
	const uint32_t *map;
} slot_t;

struct job {
	mm_query_t *q;
	mm_rpc_call_t *call;
	const pipe_meta_t *pm;
	char **ents;
	size_t nent;
	int64_t lo, hi;             /* bucket range; 0..0 for all-time */
	size_t nb;
	mm_key_t *keys;
	slot_t *slots;
	size_t pending;
	int status;
	char detail[256];
	int include_raw;
	int bloom;                  /* MightContain */
	char **items;
	size_t nitems;
	job_t *next;                /* in the query's queue, then in its batch */
	int fresh;                  /* fresh_read: skip the result cache */
	int mode;                   /* RANGE_*, with the request's strings below */
	const char *window, *at, *from, *to;
	meta_wait_t wait;           /* while the descriptor is read */
	struct hit {                /* per entity, when every one was cached */
		uint8_t *p;
		size_t n;
		int found;
	} *hits;
};

/* The reads of every job of one pipeline queued in one loop iteration, as
 * one get_many per store (see mm_query_call), each distinct key read once.
 * The jobs' slots point into its arrays until they finish; it owns the
 * states and destroys them after the jobs. */
typedef struct batch {
	mm_query_t *q;
	const pipe_meta_t *pm;
	mm_ns_t ns;                 /* read by the store until it answers */
	job_t *jobs;
	size_t n;                   /* keys of the jobs */
	size_t u;                   /* distinct keys: the front of keys */
	mm_key_t *keys;
	uint32_t *map;              /* key i's index in keys; NULL if u == n */
	uint8_t **states, **found;  /* per store, u each */
	size_t ready;               /* stores whose u states are initialised */
	size_t pending;
	int status;
	char detail[256];
} batch_t;

/* ---- descriptors ---- */

static void meta_free(pipe_meta_t *pm)
{
	free(pm->name);
	free(pm->script);
	for (size_t i = 0; i < pm->nkeys; i++)
		free(pm->keys[i]);
	free(pm->keys);
	free(pm);
}

static char *dup_node(const mm_jnode_t *n)
{
	return n && n->type == MM_JSON_STRING ? strndup(n->s, n->len) : NULL;
}

static double num_node(const mm_jnode_t *n)
{
	int is_int;
	int64_t i;
	double d = 0;

	if (n && n->type == MM_JSON_NUMBER && mm_json_number(n->s, n->len, &is_int, &i, &d) == 0)
		return is_int ? (double)i : d;
	return 0;
}

/* Parses a stored descriptor "compat\n{json}" (runner.lua meta_of). */
static int meta_parse(const char *name, const mm_buf_t *raw, pipe_meta_t **out)
{
	const char *nl = memchr(raw->p, '\n', raw->len);
	mm_jtree_t t = {0};
	pipe_meta_t *pm = calloc(1, sizeof(*pm));
	const mm_jnode_t *mo, *keys;
	mm_monoid_params_t p = {0};
	char *mname = NULL;
	mm_buf_t d = {0};
	int rc;

	if (pm == NULL)
		return mm_diag_set(MM_ENOMEM, "query: out of memory");
	rc = nl ? mm_jtree_parse(&t, nl + 1, raw->len - (size_t)(nl + 1 - (const char *)raw->p))
		: mm_diag_set(MM_ECORRUPT, "pipeline '%s': descriptor without JSON", name);
	if (rc)
		goto fail;
	mo = mm_jnode_get(t.root, "monoid");
	mname = dup_node(mm_jnode_get(mo, "name"));
	if (mname == NULL) {
		rc = mm_diag_set(MM_ECORRUPT, "pipeline '%s': descriptor names no monoid", name);
		goto fail;
	}
	{
		const mm_jnode_t *fl = mm_jnode_get(mo, "float");
		p.is_float = fl && fl->type == MM_JSON_TRUE;
	}
	p.k = (uint32_t)num_node(mm_jnode_get(mo, "k"));
	p.max_size = (uint32_t)num_node(mm_jnode_get(mo, "max_size"));
	p.capacity = (uint64_t)num_node(mm_jnode_get(mo, "capacity"));
	p.fpr = num_node(mm_jnode_get(mo, "fpr"));
	if ((rc = mm_monoid_init(&pm->m, mname, &p)) != 0)
		goto fail;
	if (mm_monoid_describe(&pm->m, &d) == 0)
		snprintf(pm->describe, sizeof(pm->describe), "%.*s", (int)d.len, (const char *)d.p);
	pm->gran = (int64_t)num_node(mm_jnode_get(t.root, "granularity_ms"));
	pm->ret = (int64_t)num_node(mm_jnode_get(t.root, "retention_ms"));
	pm->script = dup_node(mm_jnode_get(t.root, "script"));
	keys = mm_jnode_get(t.root, "key");
	if (keys && keys->type == MM_JSON_ARRAY && keys->n > 0) {
		pm->keys = calloc(keys->n, sizeof(char *));
		for (const mm_jnode_t *k = keys->child; pm->keys && k; k = k->next)
			if (k->type == MM_JSON_STRING)
				pm->keys[pm->nkeys++] = dup_node(k);
	}
	pm->name = strdup(name);
	if (pm->name == NULL) {
		rc = mm_diag_set(MM_ENOMEM, "query: out of memory");
		goto fail;
	}
	*out = pm;
	pm = NULL;
fail:
	if (pm)
		meta_free(pm);
	free(mname);
	mm_buf_free(&d);
	mm_jtree_free(&t);
	return rc;
}

/* The cached descriptor of pipeline `name`, or NULL. */
static const pipe_meta_t *meta_find(const mm_query_t *q, const char *name)
{
	for (const pipe_meta_t *pm = q->metas; pm != NULL; pm = pm->next)
		if (strcmp(pm->name, name) == 0)
			return pm;
	return NULL;
}

/* One store's answer to a descriptor read. */
typedef struct meta_part {
	struct meta_read *mr;
	mm_buf_t raw;
	int status;
	char detail[200];
} meta_part_t;

/* A descriptor read in flight: one get_meta per store (on the loop, like
 * get_many: over DynamoDB a request, over LMDB the thread pool), for every
 * call that asked for the pipeline before the answer came. */
struct meta_read {
	mm_query_t *q;
	char *name;
	meta_part_t *parts;         /* per store */
	size_t pending;
	meta_wait_t *waiters;
	struct meta_read *next;     /* in q->reading */
};

/* Every store has answered: parse, check that the stores agree, cache the
 * descriptor, then answer the waiters. Errors are not cached: the next call
 * reads again. */
static void meta_read_done(struct meta_read *mr)
{
	mm_query_t *q = mr->q;
	pipe_meta_t *pm = NULL;
	const char *detail = NULL;
	char msg[256];
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < q->nstores; i++) {
		meta_part_t *pt = &mr->parts[i];
		pipe_meta_t *other = NULL;

		if (pt->status == MM_ENOTFOUND)
			continue;
		if ((rc = pt->status) != 0) {
			detail = pt->detail;
			break;
		}
		if ((rc = meta_parse(mr->name, &pt->raw, pm ? &other : &pm)) != 0)
			break;
		if (other) {
			int same = strcmp(other->describe, pm->describe) == 0 && other->gran == pm->gran;

			meta_free(other);
			if (!same)
				rc = mm_diag_set(MM_EINCOMPAT,
						 "pipeline '%s' has different monoids or windows in different data directories",
						 mr->name);
		}
	}
	if (rc == 0 && pm == NULL)
		rc = mm_diag_set(MM_ENOTFOUND, "no pipeline '%s' in the store", mr->name);
	if (rc && detail == NULL) {
		snprintf(msg, sizeof(msg), "%s", mm_diag_msg());
		detail = msg;
	}
	if (rc && pm) {
		meta_free(pm);
		pm = NULL;
	}
	if (pm) {
		pm->next = q->metas;
		q->metas = pm;
	}
	for (struct meta_read **p = &q->reading; *p != NULL; p = &(*p)->next)
		if (*p == mr) {
			*p = mr->next;
			break;
		}
	for (meta_wait_t *w = mr->waiters, *next; w != NULL; w = next) {
		next = w->next;
		w->fn(w->arg, rc, detail, pm);
	}
	q->inflight--;
	for (size_t i = 0; i < q->nstores; i++)
		mm_buf_free(&mr->parts[i].raw);
	free(mr->parts);
	free(mr->name);
	free(mr);
}

static void on_meta_read(void *arg, int status, const char *detail)
{
	meta_part_t *pt = arg;

	pt->status = status;
	if (status)
		snprintf(pt->detail, sizeof(pt->detail), "%s", detail ? detail : mm_strerror(status));
	if (--pt->mr->pending == 0)
		meta_read_done(pt->mr);
}

/* Reads the descriptor of pipeline `name` (not cached) from every store,
 * without blocking the loop: w->fn runs when all have answered (before this
 * returns only if no store could start its read). Calls asking for the same
 * pipeline meanwhile share the read. Returns 0, or MM_ENOMEM (then w->fn is
 * not called). */
static int meta_read(mm_query_t *q, const char *name, meta_wait_t *w)
{
	struct meta_read *mr;

	for (mr = q->reading; mr != NULL; mr = mr->next)
		if (strcmp(mr->name, name) == 0) {
			w->next = mr->waiters;
			mr->waiters = w;
			return 0;
		}
	if ((mr = calloc(1, sizeof(*mr))) == NULL || (mr->name = strdup(name)) == NULL ||
	    (mr->parts = calloc(q->nstores, sizeof(meta_part_t))) == NULL) {
		if (mr)
			free(mr->name);
		free(mr);
		return mm_diag_set(MM_ENOMEM, "query: out of memory");
	}
	mr->q = q;
	mr->waiters = w;
	w->next = NULL;
	mr->next = q->reading;
	q->reading = mr;
	q->inflight++;
	mr->pending = 1; /* held until every read is started */
	for (size_t i = 0; i < q->nstores; i++) {
		meta_part_t *pt = &mr->parts[i];
		int rc;

		pt->mr = mr;
		mr->pending++;
		if ((rc = mm_store_get_meta(q->stores[i], name, &pt->raw, on_meta_read, pt)) != 0) {
			mr->pending--;
			pt->status = rc;
			snprintf(pt->detail, sizeof(pt->detail), "%s", mm_diag_msg());
		}
	}
	if (--mr->pending == 0)
		meta_read_done(mr);
	return 0;
}

static int code_of(int rc)
{
	if (rc == MM_ENOTFOUND)
		return MM_RPC_NOT_FOUND;
	if (rc == MM_EINCOMPAT)
		return MM_RPC_FAILED_PRECONDITION;
	if (rc == MM_ENOMEM)
		return MM_RPC_RESOURCE_EXHAUSTED;
	return mm_err_retriable(rc) ? MM_RPC_UNAVAILABLE : MM_RPC_INTERNAL;
}

/* ---- bucket ranges (lua/murmur/query.lua buckets_for) ---- */

static int parse_when(const char *s, int64_t *ms)
{
	char tmp[40];
	size_t n = strlen(s);

	if (n == 10 && s[4] == '-' && s[7] == '-') {
		snprintf(tmp, sizeof(tmp), "%sT00:00:00Z", s);
		return mm_time_parse_rfc3339(tmp, strlen(tmp), ms);
	}
	return mm_time_parse_rfc3339(s, n, ms);
}

static void fmt_span(int64_t ms, char *out, size_t cap)
{
	if (ms % MM_DAY_MS == 0)
		snprintf(out, cap, "%" PRId64 "d", (int64_t)(ms / MM_DAY_MS));
	else if (ms % MM_HOUR_MS == 0)
		snprintf(out, cap, "%" PRId64 "h", (int64_t)(ms / MM_HOUR_MS));
	else
		snprintf(out, cap, "%" PRId64 "ms", ms);
}

/* Fills j->lo/hi/nb; returns 0 or an MM_RPC code with j->detail. */
static int plan_range(job_t *j, int mode, const char *window, const char *at, const char *from,
		      const char *to)
{
	const pipe_meta_t *pm = j->pm;
	int64_t gran = pm->gran, ret = pm->ret, now = mm_now_ms(), lo, hi, d;

#define FAIL(code, ...) (snprintf(j->detail, sizeof(j->detail), __VA_ARGS__), (code))
	if (gran == 0) {
		if (mode != RANGE_ALL)
			return FAIL(MM_RPC_FAILED_PRECONDITION,
				    "pipeline '%s' has no window (it keeps all-time values): use Get",
				    pm->name);
		j->lo = j->hi = 0;
		j->nb = 1;
		return 0;
	}
	if (at && at[0] && parse_when(at, &now) != 0)
		return FAIL(MM_RPC_INVALID_ARGUMENT, "at: %s", mm_diag_msg());
	if (mode == RANGE_WINDOW) {
		if (window == NULL || window[0] == '\0' ||
		    mm_duration_parse(window, strlen(window), &d) != 0 || d <= 0)
			return FAIL(MM_RPC_INVALID_ARGUMENT,
				    "window: expected a duration such as 30d or 12h, got '%s'",
				    window ? window : "");
		hi = mm_window_bucket(gran, now);
		lo = hi - (d + gran - 1) / gran + 1;
		if (lo > hi)
			lo = hi;
	} else if (mode == RANGE_FROM_TO) {
		int64_t f, t;

		if (!from || !from[0] || !to || !to[0])
			return FAIL(MM_RPC_INVALID_ARGUMENT, "from and to are both required");
		if (parse_when(from, &f) != 0)
			return FAIL(MM_RPC_INVALID_ARGUMENT, "from: %s", mm_diag_msg());
		if (parse_when(to, &t) != 0)
			return FAIL(MM_RPC_INVALID_ARGUMENT, "to: %s", mm_diag_msg());
		if (f > t)
			return FAIL(MM_RPC_INVALID_ARGUMENT,
				    "from %s is after to %s: give the earlier time first", from, to);
		lo = mm_window_bucket(gran, f);
		hi = mm_window_bucket(gran, t);
	} else {
		if (ret == 0)
			return FAIL(MM_RPC_FAILED_PRECONDITION,
				    "pipeline '%s' keeps every bucket: use GetWindow or GetRange",
				    pm->name);
		hi = mm_window_bucket(gran, now);
		lo = mm_window_oldest_kept(gran, ret, now);
	}
	if (ret > 0) {
		int64_t oldest = mm_window_oldest_kept(gran, ret, now);

		if (hi < oldest) {
			char when[32], span[32];

			mm_time_format(mm_window_bucket_start_ms(gran, oldest), when);
			fmt_span(ret, span, sizeof(span));
			return FAIL(MM_RPC_INVALID_ARGUMENT,
				    "the range ends before %s, the oldest time this pipeline keeps "
				    "(retention %s): nothing there to read",
				    when, span);
		}
		if (lo < oldest)
			lo = oldest;
	}
	if (lo < 1)
		lo = 1;
	if (hi < lo || hi - lo + 1 > MAX_BUCKETS)
		return FAIL(MM_RPC_INVALID_ARGUMENT, "the range spans more than %d buckets", MAX_BUCKETS);
	j->lo = lo;
	j->hi = hi;
	j->nb = (size_t)(hi - lo + 1);
	return 0;
#undef FAIL
}

/* ---- results ---- */

#define NEW(a, T, init) ({ T *x_ = mm_arena_alloc((a), sizeof(T)); if (x_) init(x_); x_; })

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
static int fill_value(mm_arena_t *a, const pipe_meta_t *pm, const void *acc, int include_raw,
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

static Murmur__V1__Window *make_window(mm_arena_t *a, const job_t *j)
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

/* ---- jobs ---- */

/* The result cache's key of entity e's read: pipeline, entity, range. */
static size_t cache_key(const job_t *j, size_t e, char *buf)
{
	size_t pl = strlen(j->pm->name) + 1, el = strlen(j->ents[e]) + 1;

	memcpy(buf, j->pm->name, pl);
	memcpy(buf + pl, j->ents[e], el);
	memcpy(buf + pl + el, &j->lo, 8);
	memcpy(buf + pl + el + 8, &j->hi, 8);
	return pl + el + 16;
}

#define CACHE_KEY_MAX (128 + 1 + MAX_ENTITY + 1 + 16)

/* Keeps entity e's merged value for the next requests (best effort: a
 * failure only costs a later read). */
static void cache_store(job_t *j, size_t e, const void *acc, int found)
{
	char key[CACHE_KEY_MAX];
	mm_buf_t b = {0};

	if (j->q->rcache == NULL || j->hits != NULL || found < 0)
		return;
	if (j->pm->m.vt->encode(&j->pm->m, acc, &b) == 0)
		mm_rcache_put(j->q->rcache, key, cache_key(j, e, key), mm_now_ms(), b.p, b.len, found);
	mm_buf_free(&b);
}

/* 1 when every entity of j is in the result cache (copied into j->hits). */
static int cache_lookup(job_t *j)
{
	char key[CACHE_KEY_MAX];
	int64_t now = mm_now_ms();
	struct hit *hits;

	if (j->q->rcache == NULL || j->fresh)
		return 0;
	hits = mm_arena_alloc(j->call->arena, j->nent * sizeof(*hits));
	for (size_t e = 0; hits != NULL && e < j->nent; e++) {
		const uint8_t *p;

		if (!mm_rcache_get(j->q->rcache, key, cache_key(j, e, key), now, &p, &hits[e].n, &hits[e].found))
			return 0;
		if ((hits[e].p = mm_arena_alloc(j->call->arena, hits[e].n ? hits[e].n : 1)) == NULL)
			return 0;
		if (hits[e].n)
			memcpy(hits[e].p, p, hits[e].n);
	}
	j->hits = hits;
	return hits != NULL;
}

/* Merges entity e's states over buckets and stores into acc (or its cached
 * value); returns the number found, or a negative MM_E* code. */
static int merge_entity(job_t *j, size_t e, void *acc)
{
	const mm_monoid_t *m = &j->pm->m;
	int found = 0, rc;

	if (j->hits) {
		_Alignas(16) unsigned char st[MM_STATE_MAX];

		m->vt->init(m, st);
		rc = m->vt->decode(m, st, j->hits[e].p, j->hits[e].n);
		if (rc == 0)
			rc = m->vt->merge(m, acc, st);
		m->vt->destroy(m, st);
		return rc ? rc : j->hits[e].found;
	}

	for (size_t s = 0; s < j->q->nstores; s++)
		for (size_t b = 0; b < j->nb; b++) {
			size_t i = e * j->nb + b;

			const slot_t *sl = &j->slots[s];
			size_t k = sl->map ? sl->map[i] : i;

			if (!sl->found[k])
				continue;
			found++;
			if ((rc = m->vt->merge(m, acc, sl->states + k * MM_STATE_MAX)) != 0)
				return rc;
		}
	return found;
}

static void job_finish(job_t *j)
{
	mm_arena_t *a = j->call->arena;
	const mm_monoid_t *m = &j->pm->m;
	_Alignas(16) unsigned char acc[MM_STATE_MAX];
	Murmur__V1__Result **results;
	Murmur__V1__Window *win = NULL;
	int rc = 0;

	j->q->inflight--;
	if (j->status) {
		int code = code_of(j->status);

		mm_rpc_done(j->call, NULL, code, "reading the store failed: %s", j->detail);
		return;
	}
	if (j->bloom) {
		Murmur__V1__MightContainResponse *resp =
			NEW(a, Murmur__V1__MightContainResponse, murmur__v1__might_contain_response__init);
		int found;

		m->vt->init(m, acc);
		found = merge_entity(j, 0, acc);
		cache_store(j, 0, acc, found);
		if (resp == NULL || (resp->results = mm_arena_alloc(a, (j->nitems + 1) *
								       sizeof(protobuf_c_boolean))) == NULL)
			found = MM_ENOMEM;
		for (size_t i = 0; found >= 0 && i < j->nitems; i++) {
			int c = mm_bloom_contains(m, acc, j->items[i], strlen(j->items[i]));

			if (c < 0) {
				found = c;
				break;
			}
			resp->results[i] = c == 1;
		}
		m->vt->destroy(m, acc);
		if (found < 0) {
			mm_rpc_done(j->call, NULL, code_of(found), "%s", mm_diag_msg());
			return;
		}
		resp->n_results = j->nitems;
		resp->found = found > 0;
		mm_rpc_done(j->call, &resp->base, MM_RPC_OK, NULL);
		return;
	}
	results = mm_arena_alloc(a, j->nent * sizeof(*results));
	if (j->pm->gran != 0 && (win = make_window(a, j)) == NULL)
		rc = MM_ENOMEM;
	if (results == NULL)
		rc = MM_ENOMEM;
	for (size_t e = 0; rc == 0 && e < j->nent; e++) {
		Murmur__V1__Result *r = NEW(a, Murmur__V1__Result, murmur__v1__result__init);
		int found;

		if (r == NULL) {
			rc = MM_ENOMEM;
			break;
		}
		m->vt->init(m, acc);
		found = merge_entity(j, e, acc);
		cache_store(j, e, acc, found);
		if (found < 0)
			rc = found;
		else
			rc = fill_value(a, j->pm, acc, j->include_raw, r);
		m->vt->destroy(m, acc);
		r->pipeline = j->pm->name;
		r->entity = j->ents[e];
		r->monoid = (char *)m->vt->name;
		r->found = found > 0;
		r->buckets_found = found > 0 ? found : 0;
		r->window = win;
		results[e] = r;
	}
	if (rc) {
		mm_rpc_done(j->call, NULL, code_of(rc), "%s", mm_diag_msg());
		return;
	}
	if (j->call->req->descriptor == &murmur__v1__get_request__descriptor ||
	    j->call->req->descriptor == &murmur__v1__get_window_request__descriptor ||
	    j->call->req->descriptor == &murmur__v1__get_range_request__descriptor) {
		Murmur__V1__GetResponse *resp =
			NEW(a, Murmur__V1__GetResponse, murmur__v1__get_response__init);

		if (resp == NULL) {
			mm_rpc_done(j->call, NULL, MM_RPC_RESOURCE_EXHAUSTED, "out of memory");
			return;
		}
		resp->result = results[0];
		mm_rpc_done(j->call, &resp->base, MM_RPC_OK, NULL);
	} else {
		Murmur__V1__GetManyResponse *resp =
			NEW(a, Murmur__V1__GetManyResponse, murmur__v1__get_many_response__init);

		if (resp == NULL) {
			mm_rpc_done(j->call, NULL, MM_RPC_RESOURCE_EXHAUSTED, "out of memory");
			return;
		}
		resp->n_results = j->nent;
		resp->results = results;
		mm_rpc_done(j->call, &resp->base, MM_RPC_OK, NULL);
	}
}

/* Every store has answered: each job takes its part of the batch. */
static void batch_done(batch_t *bt)
{
	job_t *j, *next;

	for (j = bt->jobs; j != NULL; j = next) {
		next = j->next;
		if (bt->status && !j->status) {
			j->status = bt->status;
			snprintf(j->detail, sizeof(j->detail), "%s", bt->detail);
		}
		job_finish(j);
	}
	for (size_t s = 0; s < bt->q->nstores; s++) {
		if (s < bt->ready)
			for (size_t i = 0; i < bt->u; i++)
				bt->pm->m.vt->destroy(&bt->pm->m, bt->states[s] + i * MM_STATE_MAX);
		free(bt->states[s]);
		free(bt->found[s]);
	}
	free(bt->states);
	free(bt->found);
	free(bt->map);
	free(bt->keys);
	free(bt);
}

static void on_batch_read(void *arg, int status, const char *detail)
{
	batch_t *bt = arg;

	if (status && !bt->status) {
		bt->status = status;
		snprintf(bt->detail, sizeof(bt->detail), "%s", detail ? detail : mm_strerror(status));
	}
	if (--bt->pending == 0)
		batch_done(bt);
}

/* Starts one get_many per store for jobs (a list, all of pipeline pm). */
static void batch_start(mm_query_t *q, const pipe_meta_t *pm, job_t *jobs)
{
	batch_t *bt = calloc(1, sizeof(*bt));
	const mm_monoid_t *m = &pm->m;
	size_t off = 0;
	job_t *j;

	if (bt == NULL) {
		for (j = jobs; j != NULL; j = jobs) {
			jobs = j->next;
			j->status = MM_ENOMEM;
			snprintf(j->detail, sizeof(j->detail), "out of memory");
			job_finish(j);
		}
		return;
	}
	bt->q = q;
	bt->pm = pm;
	bt->ns = (mm_ns_t){pm->name, &pm->m};
	bt->jobs = jobs;
	for (j = jobs; j != NULL; j = j->next)
		bt->n += j->nent * j->nb;
	bt->keys = malloc(bt->n * sizeof(mm_key_t));
	bt->map = malloc(bt->n * sizeof(uint32_t));
	bt->states = calloc(q->nstores, sizeof(uint8_t *));
	bt->found = calloc(q->nstores, sizeof(uint8_t *));
	bt->pending = 1; /* held until every read is started */
	if (bt->keys != NULL && bt->map != NULL) {
		int64_t u;

		for (j = jobs; j != NULL; j = j->next) {
			memcpy(bt->keys + off, j->keys, j->nent * j->nb * sizeof(mm_key_t));
			off += j->nent * j->nb;
		}
		off = 0;
		u = mm_keyset_fold(bt->keys, bt->n, bt->map);
		bt->u = u < 0 ? 0 : (size_t)u;
		if (u < 0) {
			free(bt->keys);
			bt->keys = NULL; /* reported as out of memory below */
		} else if (bt->u == bt->n) {
			free(bt->map);
			bt->map = NULL;
		}
	}
	if (bt->keys == NULL || (bt->map == NULL && bt->u != bt->n) || bt->states == NULL ||
	    bt->found == NULL) {
		bt->status = MM_ENOMEM;
		snprintf(bt->detail, sizeof(bt->detail), "out of memory");
		if (bt->states == NULL || bt->found == NULL) {
			/* batch_done walks them: give it empty ones. */
			free(bt->states);
			free(bt->found);
			bt->states = calloc(q->nstores, sizeof(uint8_t *));
			bt->found = calloc(q->nstores, sizeof(uint8_t *));
			if (bt->states == NULL || bt->found == NULL)
				abort(); /* not even a few pointers: nothing sane left to do */
		}
	}
	for (size_t s = 0; !bt->status && s < q->nstores; s++) {
		bt->states[s] = malloc(bt->u * MM_STATE_MAX + 1);
		bt->found[s] = calloc(bt->u + 1, 1);
		if (bt->states[s] == NULL || bt->found[s] == NULL) {
			bt->status = MM_ENOMEM;
			snprintf(bt->detail, sizeof(bt->detail), "out of memory");
			break;
		}
		for (size_t i = 0; i < bt->u; i++)
			m->vt->init(m, bt->states[s] + i * MM_STATE_MAX);
		bt->ready = s + 1;
	}
	for (j = jobs; j != NULL; j = j->next) {
		/* With repeated keys every job indexes the distinct states through
		 * its part of the map; without, it gets its own slice. */
		for (size_t s = 0; s < q->nstores; s++) {
			slot_t *sl = &j->slots[s];

			sl->states = bt->status ? NULL : bt->states[s] + (bt->map ? 0 : off * MM_STATE_MAX);
			sl->found = bt->status ? NULL : bt->found[s] + (bt->map ? 0 : off);
			sl->map = bt->map ? bt->map + off : NULL;
		}
		off += j->nent * j->nb;
	}
	for (size_t s = 0; !bt->status && s < q->nstores; s++) {
		int rc;

		bt->pending++;
		rc = mm_store_get_many(q->stores[s], &bt->ns, bt->keys, bt->u, bt->states[s], bt->found[s],
				       on_batch_read, bt);
		if (rc) {
			bt->pending--;
			bt->status = rc;
			snprintf(bt->detail, sizeof(bt->detail), "%s", mm_diag_msg());
		}
	}
	on_batch_read(bt, 0, NULL);
}

/* After the poll phase: the jobs of this iteration, one batch per pipeline. */
static void on_check(uv_check_t *h)
{
	mm_query_t *q = h->data;
	job_t *all = q->queue;

	q->queue = NULL;
	q->queue_tail = &q->queue;
	uv_check_stop(h);
	while (all != NULL) {
		const pipe_meta_t *pm = all->pm;
		job_t *mine = NULL, **mt = &mine, *rest = NULL, **rt = &rest, *j, *next;

		for (j = all; j != NULL; j = next) {
			next = j->next;
			j->next = NULL;
			if (j->pm == pm) {
				*mt = j;
				mt = &j->next;
			} else {
				*rt = j;
				rt = &j->next;
			}
		}
		batch_start(q, pm, mine);
		all = rest;
	}
}

/* Queues the reads of a planned job for this iteration's batch. */
static void job_start(job_t *j)
{
	mm_arena_t *a = j->call->arena;
	mm_query_t *q = j->q;
	size_t n = j->nent * j->nb;

	j->keys = mm_arena_alloc(a, n * sizeof(mm_key_t));
	j->slots = mm_arena_calloc(a, q->nstores * sizeof(slot_t));
	if (j->keys == NULL || j->slots == NULL) {
		mm_rpc_done(j->call, NULL, MM_RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	for (size_t e = 0; e < j->nent; e++)
		for (size_t b = 0; b < j->nb; b++)
			j->keys[e * j->nb + b] = (mm_key_t){j->ents[e], strlen(j->ents[e]),
							    j->pm->gran ? j->lo + (int64_t)b : 0};
	for (size_t s = 0; s < q->nstores; s++)
		j->slots[s].job = j;
	q->inflight++;
	j->next = NULL;
	*q->queue_tail = j;
	q->queue_tail = &j->next;
	uv_check_start(q->check, on_check);
}

/* ---- methods ---- */

static Murmur__V1__Pipeline *pipeline_msg(mm_arena_t *a, const pipe_meta_t *pm)
{
	Murmur__V1__Pipeline *p = NEW(a, Murmur__V1__Pipeline, murmur__v1__pipeline__init);

	if (p == NULL)
		return NULL;
	p->name = pm->name;
	p->monoid = (char *)pm->describe;
	p->granularity_ms = pm->gran;
	p->retention_ms = pm->ret;
	p->script = pm->script ? pm->script : (char *)"";
	p->n_key = pm->nkeys;
	p->key = pm->keys;
	return p;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A ListPipelines call: the names, then each one's descriptor in turn. */
typedef struct list_ctx {
	mm_query_t *q;
	mm_rpc_call_t *call;
	Murmur__V1__ListPipelinesResponse *resp;
	char **v;
	size_t k, i;
	meta_wait_t wait;
} list_ctx_t;

static void list_next(list_ctx_t *lc);

static void on_list_meta(void *arg, int rc, const char *detail, const pipe_meta_t *pm)
{
	list_ctx_t *lc = arg;

	if (rc) {
		mm_rpc_done(lc->call, NULL, code_of(rc), "%s", detail);
		return;
	}
	if ((lc->resp->pipelines[lc->resp->n_pipelines++] = pipeline_msg(lc->call->arena, pm)) == NULL) {
		mm_rpc_done(lc->call, NULL, MM_RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	lc->i++;
	list_next(lc);
}

/* Adds the cached descriptors from name i on; reads the first one that is
 * not cached and goes on from its callback. */
static void list_next(list_ctx_t *lc)
{
	for (; lc->i < lc->k; lc->i++) {
		const char *name = lc->v[lc->i];
		const pipe_meta_t *pm;

		if (lc->i > 0 && strcmp(name, lc->v[lc->i - 1]) == 0)
			continue; /* in several data directories */
		if ((pm = meta_find(lc->q, name)) == NULL) {
			lc->wait = (meta_wait_t){on_list_meta, lc, NULL};
			if (meta_read(lc->q, name, &lc->wait) != 0)
				mm_rpc_done(lc->call, NULL, MM_RPC_RESOURCE_EXHAUSTED, "out of memory");
			return;
		}
		if ((lc->resp->pipelines[lc->resp->n_pipelines++] = pipeline_msg(lc->call->arena, pm)) == NULL) {
			mm_rpc_done(lc->call, NULL, MM_RPC_RESOURCE_EXHAUSTED, "out of memory");
			return;
		}
	}
	mm_rpc_done(lc->call, &lc->resp->base, MM_RPC_OK, NULL);
}

/* The names come from list_meta, which is still a blocking read (one per
 * ListPipelines call); the descriptors are read through the loop. */
static void list_pipelines(mm_query_t *q, mm_rpc_call_t *call)
{
	mm_arena_t *a = call->arena;
	list_ctx_t *lc = mm_arena_calloc(a, sizeof(*lc));
	mm_buf_t names = {0};
	char *copy = NULL;
	size_t n = 0;
	int rc = 0;

	for (size_t s = 0; rc == 0 && s < q->nstores; s++)
		rc = mm_store_list_meta(q->stores[s], &names);
	for (size_t i = 0; i < names.len; i++)
		n += names.p[i] == 0;
	if (rc == 0 && (lc == NULL ||
			(lc->resp = NEW(a, Murmur__V1__ListPipelinesResponse,
					murmur__v1__list_pipelines_response__init)) == NULL ||
			(lc->v = mm_arena_alloc(a, (n + 1) * sizeof(char *))) == NULL ||
			(lc->resp->pipelines = mm_arena_alloc(a, (n + 1) * sizeof(*lc->resp->pipelines))) == NULL ||
			(copy = mm_arena_alloc(a, names.len + 1)) == NULL))
		rc = mm_diag_set(MM_ENOMEM, "query: out of memory");
	if (rc) {
		mm_rpc_done(call, NULL, code_of(rc), "%s", mm_diag_msg());
		mm_buf_free(&names);
		return;
	}
	/* The names outlive this call's stack: they go in the arena. */
	if (names.len > 0)
		memcpy(copy, names.p, names.len);
	for (size_t i = 0; i < names.len; i += strlen(copy + i) + 1)
		lc->v[lc->k++] = copy + i;
	mm_buf_free(&names);
	qsort(lc->v, lc->k, sizeof(char *), name_cmp);
	lc->q = q;
	lc->call = call;
	list_next(lc);
}

static int check_name(mm_rpc_call_t *call, const char *pipeline)
{
	if (pipeline == NULL || pipeline[0] == '\0') {
		mm_rpc_done(call, NULL, MM_RPC_INVALID_ARGUMENT, "pipeline is required");
		return -1;
	}
	return 0;
}

static int check_entities(mm_rpc_call_t *call, char **ents, size_t n)
{
	if (n == 0) {
		mm_rpc_done(call, NULL, MM_RPC_INVALID_ARGUMENT, "entity is required");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		size_t len = strlen(ents[i]);

		if (len == 0 || len > MAX_ENTITY) {
			mm_rpc_done(call, NULL, MM_RPC_INVALID_ARGUMENT,
				    "an entity has 1 to %d bytes, got %zu", MAX_ENTITY, len);
			return -1;
		}
	}
	return 0;
}

static void on_describe_meta(void *arg, int rc, const char *detail, const pipe_meta_t *pm)
{
	mm_rpc_call_t *call = arg;
	Murmur__V1__DescribeResponse *resp;

	if (rc) {
		mm_rpc_done(call, NULL, code_of(rc), "%s", detail);
		return;
	}
	resp = NEW(call->arena, Murmur__V1__DescribeResponse, murmur__v1__describe_response__init);
	if (resp == NULL || (resp->pipeline = pipeline_msg(call->arena, pm)) == NULL) {
		mm_rpc_done(call, NULL, MM_RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	mm_rpc_done(call, &resp->base, MM_RPC_OK, NULL);
}

/* A read whose descriptor is known: its bucket range, then the result
 * cache or the store. */
static void job_plan(job_t *j)
{
	mm_rpc_call_t *call = j->call;
	int rc;

	if (j->bloom && j->pm->m.vt != &mm_monoid_bloom_vtable) {
		mm_rpc_done(call, NULL, MM_RPC_FAILED_PRECONDITION,
			    "pipeline '%s' is a %s, not a bloom filter", j->pm->name, j->pm->m.vt->name);
		return;
	}
	if ((rc = plan_range(j, j->mode, j->window, j->at, j->from, j->to)) != 0) {
		mm_rpc_done(call, NULL, rc, "%s", j->detail);
		return;
	}
	if (j->nent * j->nb > MAX_KEYS) {
		mm_rpc_done(call, NULL, MM_RPC_INVALID_ARGUMENT,
			    "%zu entities x %zu buckets is more than %d keys in one call", j->nent,
			    j->nb, MAX_KEYS);
		return;
	}
	if (cache_lookup(j)) {
		j->q->inflight++; /* job_finish counts it out */
		job_finish(j);
		return;
	}
	job_start(j);
}

static void on_job_meta(void *arg, int rc, const char *detail, const pipe_meta_t *pm)
{
	job_t *j = arg;

	if (rc) {
		mm_rpc_done(j->call, NULL, code_of(rc), "%s", detail);
		return;
	}
	j->pm = pm;
	job_plan(j);
}

void mm_query_call(void *arg, mm_rpc_call_t *call)
{
	mm_query_t *q = arg;
	const ProtobufCMessageDescriptor *d = call->req->descriptor;
	const void *req = call->req;
	const char *pipeline = NULL, *window = NULL, *at = NULL, *from = NULL, *to = NULL;
	char **ents = NULL, *one = NULL;
	size_t nent = 0;
	int mode = RANGE_ALL, include_raw = 0;
	job_t *j;

	if (d == &murmur__v1__list_pipelines_request__descriptor) {
		list_pipelines(q, call);
		return;
	}
	if (d == &murmur__v1__describe_request__descriptor) {
		const Murmur__V1__DescribeRequest *r = req;
		const pipe_meta_t *pm;
		meta_wait_t *w;

		if (check_name(call, r->pipeline))
			return;
		if ((pm = meta_find(q, r->pipeline)) != NULL) {
			on_describe_meta(call, 0, NULL, pm);
			return;
		}
		if ((w = mm_arena_alloc(call->arena, sizeof(*w))) != NULL) {
			*w = (meta_wait_t){on_describe_meta, call, NULL};
			if (meta_read(q, r->pipeline, w) == 0)
				return;
		}
		mm_rpc_done(call, NULL, MM_RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	j = mm_arena_calloc(call->arena, sizeof(*j));
	if (j == NULL) {
		mm_rpc_done(call, NULL, MM_RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	if (d == &murmur__v1__get_request__descriptor) {
		const Murmur__V1__GetRequest *r = req;
		pipeline = r->pipeline, one = r->entity, include_raw = r->include_raw;
		j->fresh = r->fresh_read;
	} else if (d == &murmur__v1__get_many_request__descriptor) {
		const Murmur__V1__GetManyRequest *r = req;
		pipeline = r->pipeline, ents = r->entities, nent = r->n_entities;
		include_raw = r->include_raw;
		j->fresh = r->fresh_read;
	} else if (d == &murmur__v1__get_window_request__descriptor) {
		const Murmur__V1__GetWindowRequest *r = req;
		pipeline = r->pipeline, one = r->entity, window = r->window, at = r->at;
		include_raw = r->include_raw, mode = RANGE_WINDOW;
		j->fresh = r->fresh_read;
	} else if (d == &murmur__v1__get_window_many_request__descriptor) {
		const Murmur__V1__GetWindowManyRequest *r = req;
		pipeline = r->pipeline, ents = r->entities, nent = r->n_entities, window = r->window;
		at = r->at, include_raw = r->include_raw, mode = RANGE_WINDOW;
		j->fresh = r->fresh_read;
	} else if (d == &murmur__v1__get_range_request__descriptor) {
		const Murmur__V1__GetRangeRequest *r = req;
		pipeline = r->pipeline, one = r->entity, from = r->from, to = r->to;
		include_raw = r->include_raw, mode = RANGE_FROM_TO;
		j->fresh = r->fresh_read;
	} else if (d == &murmur__v1__get_range_many_request__descriptor) {
		const Murmur__V1__GetRangeManyRequest *r = req;
		pipeline = r->pipeline, ents = r->entities, nent = r->n_entities, from = r->from;
		to = r->to, include_raw = r->include_raw, mode = RANGE_FROM_TO;
		j->fresh = r->fresh_read;
	} else if (d == &murmur__v1__might_contain_request__descriptor) {
		const Murmur__V1__MightContainRequest *r = req;
		pipeline = r->pipeline, one = r->entity, window = r->window, at = r->at;
		from = r->from, to = r->to;
		mode = window && window[0] ? RANGE_WINDOW : (from && from[0]) || (to && to[0]) ? RANGE_FROM_TO : RANGE_ALL;
		j->bloom = 1;
		j->fresh = r->fresh_read;
		j->items = r->items;
		j->nitems = r->n_items;
	} else {
		mm_rpc_done(call, NULL, MM_RPC_UNIMPLEMENTED, "method not implemented");
		return;
	}
	if (one != NULL) {
		/* The job outlives this call: the one-entity list goes in the arena. */
		ents = mm_arena_alloc(call->arena, sizeof(char *));
		if (ents == NULL) {
			mm_rpc_done(call, NULL, MM_RPC_RESOURCE_EXHAUSTED, "out of memory");
			return;
		}
		ents[0] = one;
		nent = one[0] ? 1 : 0;
	}
	if (check_name(call, pipeline) || check_entities(call, ents, nent))
		return;
	j->q = q;
	j->call = call;
	j->ents = ents;
	j->nent = nent;
	j->include_raw = include_raw;
	j->mode = mode;
	j->window = window, j->at = at, j->from = from, j->to = to;
	if ((j->pm = meta_find(q, pipeline)) != NULL) {
		job_plan(j);
		return;
	}
	j->wait = (meta_wait_t){on_job_meta, j, NULL};
	if (meta_read(q, pipeline, &j->wait) != 0)
		mm_rpc_done(call, NULL, MM_RPC_RESOURCE_EXHAUSTED, "out of memory");
}

int mm_query_cache(mm_query_t *q, uint64_t ttl_ms)
{
	if (ttl_ms == 0 || q->rcache != NULL)
		return 0;
	return mm_rcache_open(ttl_ms, 100000, &q->rcache);
}

int mm_query_open(uv_loop_t *loop, mm_store_t *const *stores, size_t n, mm_query_t **out)
{
	mm_query_t *q = calloc(1, sizeof(*q));

	if (q == NULL || n == 0 || (q->stores = calloc(n, sizeof(*stores))) == NULL ||
	    (q->check = calloc(1, sizeof(*q->check))) == NULL) {
		if (q)
			free(q->stores);
		free(q);
		return mm_diag_set(n ? MM_ENOMEM : MM_EINVAL, "query: %s",
				   n ? "out of memory" : "no store to read");
	}
	memcpy(q->stores, stores, n * sizeof(*stores));
	q->nstores = n;
	q->queue_tail = &q->queue;
	uv_check_init(loop, q->check);
	q->check->data = q;
	*out = q;
	return 0;
}

size_t mm_query_inflight(const mm_query_t *q)
{
	return q->inflight;
}

static void on_check_closed(uv_handle_t *h)
{
	free(h);
}

void mm_query_close(mm_query_t *q)
{
	pipe_meta_t *pm, *next;

	if (q == NULL)
		return;
	uv_close((uv_handle_t *)q->check, on_check_closed);
	mm_rcache_close(q->rcache);
	for (pm = q->metas; pm != NULL; pm = next) {
		next = pm->next;
		meta_free(pm);
	}
	free(q->stores);
	free(q);
}
