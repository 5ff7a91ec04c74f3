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
 *
 * This file holds the dispatch, the jobs and their batched store reads;
 * descriptors, ranges and result messages are in the files query_impl.h
 * lists.
 */
#include <stdlib.h>
#include <string.h>

#include "../lib/time.h"
#include "../monoid/bloom.h"
#include "query_impl.h"

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
	if (j->pm->gran != 0 && (win = mm_query_make_window(a, j)) == NULL)
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
			rc = mm_query_fill_value(a, j->pm, acc, j->include_raw, r);
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
	if ((rc = mm_query_plan_range(j, j->mode, j->window, j->at, j->from, j->to)) != 0) {
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
		mm_query_list(q, call);
		return;
	}
	if (d == &murmur__v1__describe_request__descriptor) {
		const Murmur__V1__DescribeRequest *r = req;

		if (!check_name(call, r->pipeline))
			mm_query_describe(q, call, r->pipeline);
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
	if ((j->pm = mm_query_meta_find(q, pipeline)) != NULL) {
		job_plan(j);
		return;
	}
	j->wait = (meta_wait_t){on_job_meta, j, NULL};
	if (mm_query_meta_read(q, pipeline, &j->wait) != 0)
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
		mm_query_meta_free(pm);
	}
	free(q->stores);
	free(q);
}

