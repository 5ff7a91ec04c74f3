/*
 * query_meta.c: the pipeline descriptors of the query service (see
 * query_impl.h), and the two methods that answer with them.
 *
 * A descriptor is what the runner saved in the store for a pipeline
 * ("compat\n{json}", runner.lua meta_of): its monoid, window and keys. It is
 * read once per pipeline through get_meta on every store, without blocking
 * the loop, then cached for the service's life; calls that name the
 * pipeline while the read is out wait for the same read (meta_wait_t), and
 * a failed read is not cached, so the next call reads again. Several stores
 * (data directories) must agree on the monoid and the window.
 *
 * ListPipelines takes the names from every store's list_meta (through the
 * loop too), then each name's descriptor from the cache or a read; Describe
 * answers with one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../aws/awsjson.h"
#include "../codec/json.h"
#include "query_impl.h"

void mm_query_meta_free(pipe_meta_t *pm)
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
		mm_query_meta_free(pm);
	free(mname);
	mm_buf_free(&d);
	mm_jtree_free(&t);
	return rc;
}

/* The cached descriptor of pipeline `name`, or NULL. */
const pipe_meta_t *mm_query_meta_find(const mm_query_t *q, const char *name)
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

			mm_query_meta_free(other);
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
		mm_query_meta_free(pm);
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
int mm_query_meta_read(mm_query_t *q, const char *name, meta_wait_t *w)
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

/* A ListPipelines call: the names of every store (one list_meta each, on
 * the loop), then each one's descriptor in turn. */
typedef struct list_ctx {
	mm_query_t *q;
	mm_rpc_call_t *call;
	Murmur__V1__ListPipelinesResponse *resp;
	char **v;
	size_t k, i;
	meta_wait_t wait;
	mm_buf_t *names;        /* per store, until every list_meta has answered */
	size_t pending;
	int status;             /* the first failure of a list_meta */
	char detail[200];
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
		if ((pm = mm_query_meta_find(lc->q, name)) == NULL) {
			lc->wait = (meta_wait_t){on_list_meta, lc, NULL};
			if (mm_query_meta_read(lc->q, name, &lc->wait) != 0)
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

/* Every store has listed its names: merge them (a name in several data
 * directories once), then read the descriptors. */
static void list_names_done(list_ctx_t *lc)
{
	mm_query_t *q = lc->q;
	mm_arena_t *a = lc->call->arena;
	size_t n = 0, len = 0;
	char *copy = NULL;
	int rc = lc->status;

	q->inflight--;
	for (size_t s = 0; s < q->nstores; s++) {
		len += lc->names[s].len;
		for (size_t i = 0; i < lc->names[s].len; i++)
			n += lc->names[s].p[i] == 0;
	}
	if (rc == 0 && ((lc->v = mm_arena_alloc(a, (n + 1) * sizeof(char *))) == NULL ||
			(lc->resp->pipelines = mm_arena_alloc(a, (n + 1) * sizeof(*lc->resp->pipelines))) == NULL ||
			(copy = mm_arena_alloc(a, len + 1)) == NULL)) {
		rc = MM_ENOMEM;
		snprintf(lc->detail, sizeof(lc->detail), "query: out of memory");
	}
	/* The names outlive the buffers: they go in the call's arena. */
	for (size_t s = 0; rc == 0 && s < q->nstores; s++) {
		const mm_buf_t *b = &lc->names[s];

		if (b->len > 0)
			memcpy(copy, b->p, b->len);
		for (size_t i = 0; i < b->len; i += strlen(copy + i) + 1)
			lc->v[lc->k++] = copy + i;
		copy += b->len;
	}
	for (size_t s = 0; s < q->nstores; s++)
		mm_buf_free(&lc->names[s]);
	free(lc->names);
	lc->names = NULL;
	if (rc) {
		mm_rpc_done(lc->call, NULL, code_of(rc), "%s", lc->detail);
		return;
	}
	qsort(lc->v, lc->k, sizeof(char *), name_cmp);
	list_next(lc);
}

static void on_list_names(void *arg, int status, const char *detail)
{
	list_ctx_t *lc = arg;

	if (status && lc->status == 0) {
		lc->status = status;
		snprintf(lc->detail, sizeof(lc->detail), "%s", detail && *detail ? detail : mm_strerror(status));
	}
	if (--lc->pending == 0)
		list_names_done(lc);
}

/* The names come from every store's list_meta, the descriptors from
 * get_meta (mm_query_meta_read), all through the loop: a slow store delays
 * this call only. */
void mm_query_list(mm_query_t *q, mm_rpc_call_t *call)
{
	list_ctx_t *lc = mm_arena_calloc(call->arena, sizeof(*lc));

	if (lc == NULL ||
	    (lc->resp = NEW(call->arena, Murmur__V1__ListPipelinesResponse,
			    murmur__v1__list_pipelines_response__init)) == NULL ||
	    (lc->names = calloc(q->nstores ? q->nstores : 1, sizeof(mm_buf_t))) == NULL) {
		mm_rpc_done(call, NULL, MM_RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	lc->q = q;
	lc->call = call;
	q->inflight++;
	lc->pending = 1; /* held until every list_meta is started */
	for (size_t s = 0; s < q->nstores; s++) {
		int rc;

		lc->pending++;
		if ((rc = mm_store_list_meta(q->stores[s], &lc->names[s], on_list_names, lc)) != 0)
			on_list_names(lc, rc, mm_diag_msg());
	}
	on_list_names(lc, 0, NULL);
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

void mm_query_describe(mm_query_t *q, mm_rpc_call_t *call, const char *pipeline)
{
	const pipe_meta_t *pm;
	meta_wait_t *w;

	if ((pm = mm_query_meta_find(q, pipeline)) != NULL) {
		on_describe_meta(call, 0, NULL, pm);
		return;
	}
	if ((w = mm_arena_alloc(call->arena, sizeof(*w))) != NULL) {
		*w = (meta_wait_t){on_describe_meta, call, NULL};
		if (mm_query_meta_read(q, pipeline, w) == 0)
			return;
	}
	mm_rpc_done(call, NULL, MM_RPC_RESOURCE_EXHAUSTED, "out of memory");
}
