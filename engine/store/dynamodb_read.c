/*
 * dynamodb_read.c: the reads of the DynamoDB store: get_many, asynchronous,
 * and the calls of start-up (positions and pipeline metadata), asynchronous
 * too.
 *
 * get_many sorts the keys, fetches each distinct key once (duplicates in the
 * request share the answer) with BatchGetItem in chunks of 100, chunks
 * concurrently; UnprocessedKeys are sent again with backoff; results land in
 * request order. An item whose ttl has passed is absent (DynamoDB deletes
 * expired items only within days).
 *
 * get_position, get_meta and put_meta are jobs of one to two independent
 * requests (J_CALL) on the same slots, retried on the slots' backoff timers,
 * so a DynamoDB outage while a pipeline is added (at start-up or by a hot
 * reload) never stalls the loop; the query server reads descriptors through
 * get_meta too, and list_meta (its ListPipelines) is a job of one GetItem
 * of the registry item put_meta adds names to.
 */
#define _GNU_SOURCE /* qsort_r */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../codec/json.h"
#include "../lib/error.h"
#include "../lib/text.h"
#include "dynamodb_impl.h"

static int key_cmp(const void *a, const void *b, void *arg)
{
	const mm_key_t *keys = arg, *x = &keys[*(const size_t *)a], *y = &keys[*(const size_t *)b];
	int c = memcmp(x->entity, y->entity, x->len < y->len ? x->len : y->len);

	if (c)
		return c;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return (x->bucket > y->bucket) - (x->bucket < y->bucket);
}

static int key_eq(const mm_key_t *x, const mm_key_t *y)
{
	return x->len == y->len && x->bucket == y->bucket && memcmp(x->entity, y->entity, x->len) == 0;
}

static int build_batch_get(mm_ddb_t *st, ddb_slot_t *sl)
{
	ddb_job_t *job = sl->job;
	mm_buf_t *b = &sl->body;
	size_t i;
	int rc;

	sl->target = "BatchGetItem";
	b->len = 0;
	if ((rc = PUT(b, "{\"RequestItems\":{")) ||
	    (rc = mm_buf_append(b, st->table_json, strlen(st->table_json))) ||
	    (rc = PUT(b, ":{\"Keys\":[")))
		return rc;
	for (i = 0; i < sl->nkeys; i++) {
		const mm_key_t *k = &job->keys[job->idx[job->grp[sl->keys[i]]]];

		if ((i && (rc = PUT(b, ","))) ||
		    (rc = mm_ddb_make_pk(&sl->pk, job->ns->name, k->entity, k->len)) ||
		    (rc = mm_ddb_put_key(b, &sl->pk, k->bucket)))
			return rc;
	}
	return mm_buf_printf(b, "],\"ConsistentRead\":%s}}}",
			     st->cfg.consistent_read ? "true" : "false");
}

/* Finds which of the slot's pending groups an item or key object is. */
static ssize_t match_group(ddb_slot_t *sl, const mm_jnode_t *obj)
{
	ddb_job_t *job = sl->job;
	const mm_jnode_t *pk = mm_ddb_attr_s(obj, "pk");
	int ok = 0;
	int64_t sk = mm_ddb_attr_i64(obj, "sk", &ok);
	size_t i;

	if (pk == NULL || !ok)
		return -1;
	for (i = 0; i < sl->nkeys; i++) {
		const mm_key_t *k = &job->keys[job->idx[job->grp[sl->keys[i]]]];

		if (k->bucket != sk || mm_ddb_make_pk(&sl->pk, job->ns->name, k->entity, k->len))
			continue;
		if (sl->pk.len == pk->len && memcmp(sl->pk.p, pk->s, pk->len) == 0)
			return (ssize_t)i;
	}
	return -1;
}

/* Decodes a returned item into every key of its group. */
static int get_fill(ddb_slot_t *sl, size_t g, const mm_jnode_t *item)
{
	ddb_job_t *job = sl->job;
	const mm_monoid_t *m = job->ns->m;
	size_t j;
	int rc;

	if (mm_ddb_item_expired(item, job->now_ms) || mm_jnode_get(item, "v") == NULL)
		return 0;
	for (j = job->grp[g]; j < job->grp[g + 1]; j++) {
		size_t i = job->idx[j];
		void *state = (char *)job->states + i * MM_STATE_MAX;

		if ((rc = mm_ddb_item_state(m, item, state, &sl->val))) {
			char why[300];

			snprintf(why, sizeof(why), "%s", mm_diag_msg());
			return mm_diag_set(rc == MM_ENOMEM ? rc : MM_ECORRUPT,
					   "stored %s state of '%s' bucket %" PRId64
					   " is unreadable: %s",
					   m->vt->name, job->ns->name, job->keys[i].bucket, why);
		}
		job->found[i] = 1;
	}
	return 0;
}

void mm_ddb_get_answer(ddb_slot_t *sl)
{
	mm_ddb_t *st = sl->st;
	const mm_jnode_t *root = sl->tree.root, *items, *unproc, *it;
	size_t keep[DDB_BATCH_MAX], nkeep = 0, before = sl->nkeys, i;
	uint8_t got[DDB_BATCH_MAX] = {0};
	int rc;

	items = mm_jnode_get(mm_jnode_get(root, "Responses"), st->table);
	for (it = items ? items->child : NULL; it; it = it->next) {
		ssize_t k = match_group(sl, it);

		if (k < 0) {
			mm_ddb_slot_finish(sl, MM_ECORRUPT, "BatchGetItem returned an item that was not asked for");
			return;
		}
		if ((rc = get_fill(sl, sl->keys[k], it))) {
			mm_ddb_slot_finish(sl, rc, NULL);
			return;
		}
		got[k] = 1;
	}
	unproc = mm_jnode_get(mm_jnode_get(mm_jnode_get(root, "UnprocessedKeys"), st->table),
			      "Keys");
	for (it = unproc ? unproc->child : NULL; it; it = it->next) {
		ssize_t k = match_group(sl, it);

		if (k < 0 || got[k]) {
			mm_ddb_slot_finish(sl, MM_ECORRUPT, "BatchGetItem returned an unknown unprocessed key");
			return;
		}
		got[k] = 2;
	}
	for (i = 0; i < sl->nkeys; i++)
		if (got[i] == 2)
			keep[nkeep++] = sl->keys[i];
	if (nkeep == 0) {
		mm_ddb_slot_finish(sl, 0, NULL);
		return;
	}
	st->stats.unprocessed_keys += nkeep;
	memcpy(sl->keys, keep, nkeep * sizeof(keep[0]));
	sl->nkeys = nkeep;
	if ((rc = build_batch_get(st, sl))) {
		mm_ddb_slot_finish(sl, rc, NULL);
		return;
	}
	/* Progress resets the attempt count: only a stalled batch gives up. */
	if (nkeep < before)
		sl->attempts = 0;
	mm_ddb_slot_retry(sl, "BatchGetItem left keys unprocessed");
}

int mm_ddb_start_get_item(ddb_slot_t *sl)
{
	ddb_job_t *job = sl->job;
	size_t first = sl->item * DDB_BATCH_MAX, i;
	int rc;

	sl->kind = K_BATCH_GET;
	sl->nkeys = 0;
	for (i = first; i < job->ngrp && i < first + DDB_BATCH_MAX; i++)
		sl->keys[sl->nkeys++] = i;
	rc = build_batch_get(sl->st, sl);
	return rc ? rc : mm_ddb_slot_send(sl);
}

int mm_ddb_get_many(mm_store_t *base, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
			void *states, uint8_t *found, mm_store_cb cb, void *arg)
{
	mm_ddb_t *st = (mm_ddb_t *)base;
	ddb_job_t *job = calloc(1, sizeof(*job));
	size_t i;

	if (job == NULL || (job->idx = malloc(n * sizeof(size_t))) == NULL ||
	    (job->grp = malloc((n + 1) * sizeof(size_t))) == NULL) {
		if (job)
			mm_ddb_job_free(job);
		return mm_diag_set(MM_ENOMEM, "dynamodb: cannot allocate a get_many of %zu keys", n);
	}
	for (i = 0; i < n; i++)
		job->idx[i] = i;
	qsort_r(job->idx, n, sizeof(size_t), key_cmp, (void *)keys);
	for (i = 0; i < n; i++)
		if (i == 0 || !key_eq(&keys[job->idx[i]], &keys[job->idx[i - 1]]))
			job->grp[job->ngrp++] = i;
	job->grp[job->ngrp] = n;
	memset(found, 0, n);
	job->kind = J_GET;
	job->cb = cb;
	job->arg = arg;
	job->t0 = uv_hrtime();
	job->ns = ns;
	job->keys = keys;
	job->states = states;
	job->found = found;
	job->now_ms = mm_ddb_now_ms();
	job->nitems = (job->ngrp + DDB_BATCH_MAX - 1) / DDB_BATCH_MAX;
	mm_ddb_enqueue(st, job);
	return 0;
}

/* Queues a call of n prepared requests. */
static ddb_job_t *call_new(void)
{
	ddb_job_t *job = calloc(1, sizeof(*job));

	if (job == NULL)
		mm_diag_set(MM_ENOMEM, "dynamodb: cannot allocate a call");
	return job;
}

static int call_queue(mm_ddb_t *st, ddb_job_t *job, size_t n, mm_store_cb cb, void *arg)
{
	job->kind = J_CALL;
	job->cb = cb;
	job->arg = arg;
	job->t0 = uv_hrtime();
	job->nitems = n;
	mm_ddb_enqueue(st, job);
	return 0;
}

/* Queues a consistent GetItem of (pk, sk) whose attribute attr (B) is
 * appended to out; pos_pk (a position's key) makes the answer roll pending
 * intents forward. */
static int call_get_bytes(mm_ddb_t *st, const mm_buf_t *key, int64_t sk, const char *attr,
			  mm_buf_t *out, const mm_buf_t *pos_pk, mm_store_cb cb, void *arg)
{
	ddb_job_t *job = call_new();
	int rc;

	if (job == NULL)
		return MM_ENOMEM;
	if ((rc = mm_ddb_put_head(st, &job->call_body[0], key, sk)) ||
	    (rc = PUT(&job->call_body[0], ",\"ConsistentRead\":true}")) ||
	    (pos_pk && (rc = mm_buf_append(&job->call_pk, pos_pk->p, pos_pk->len)))) {
		mm_ddb_job_free(job);
		return rc;
	}
	job->call_target[0] = "GetItem";
	job->call_out = out;
	job->call_attr = attr;
	job->call_raw = attr == NULL;
	return call_queue(st, job, 1, cb, arg);
}

int mm_ddb_call_get(mm_ddb_t *st, const mm_buf_t *pk, int64_t sk, const char *attr,
		    mm_buf_t *out, mm_store_cb cb, void *arg)
{
	return call_get_bytes(st, pk, sk, attr, out, NULL, cb, arg);
}

/* A call of one request of target whose body is taken over (*body is left
 * empty); NULL when out of memory. */
static ddb_job_t *call_one(const char *target, mm_buf_t *body)
{
	ddb_job_t *job = call_new();

	if (job != NULL) {
		job->call_target[0] = target;
		job->call_body[0] = *body;
		*body = (mm_buf_t){0};
	}
	return job;
}

int mm_ddb_call_write(mm_ddb_t *st, const char *target, mm_buf_t *body, int *cond_failed,
		      mm_store_cb cb, void *arg)
{
	ddb_job_t *job = call_one(target, body);

	if (job == NULL)
		return MM_ENOMEM;
	job->call_cond_ok = 1;
	job->call_cond_failed = cond_failed;
	return call_queue(st, job, 1, cb, arg);
}

int mm_ddb_call_check(mm_ddb_t *st, const char *target, mm_buf_t *body, mm_store_cb cb,
		      void *arg)
{
	ddb_job_t *job = call_one(target, body);

	if (job == NULL)
		return MM_ENOMEM;
	job->call_start = 1;
	job->call_err = st->start_err;
	job->call_status = strcmp(target, "DescribeTable") == 0 ? st->start_status : NULL;
	st->start_err[0] = '\0';
	return call_queue(st, job, 1, cb, arg);
}

int mm_ddb_start_call_item(ddb_slot_t *sl)
{
	ddb_job_t *job = sl->job;
	int rc;

	sl->target = job->call_target[sl->item];
	sl->body.len = 0;
	if ((rc = mm_buf_append(&sl->body, job->call_body[sl->item].p, job->call_body[sl->item].len)))
		return rc;
	return mm_ddb_slot_send(sl);
}

/* The roll-forward a position read waited for is done: read the position
 * again (it has moved), or fail the read, which the engine retries. */
static void on_rolled(void *arg, int status, const char *detail)
{
	ddb_job_t *job = arg;
	mm_ddb_t *st = mm_ddb_rf_store(job->call_rf);

	mm_ddb_rf_free(job->call_rf);
	job->call_rf = NULL;
	if (status == 0)
		job->next_item = 0;
	mm_ddb_job_resume(st, job, status, detail);
}

/*
 * A position item that points to a flush intent (`pend`) belongs to a flush
 * its worker left unfinished: it is rolled forward first, which writes the
 * position it moves to (dynamodb_intent.c), and the item is read again. The
 * read gives its slot back and waits for the roll-forward's own jobs. A
 * writer that keeps pointing it to new intents is alive and reading this
 * source too (a misconfiguration: two readers of one position at once);
 * after a few rounds the position is taken as it stands. A read-only store
 * (queries) does not write: it answers the position as stored.
 */
static int call_pending_intent(ddb_slot_t *sl, const mm_jnode_t *item)
{
	ddb_job_t *job = sl->job;
	const mm_jnode_t *pend = mm_jnode_get(mm_jnode_get(item, "pend"), "S");
	int rc;

	if (job->call_pk.len == 0 || pend == NULL || pend->type != MM_JSON_STRING ||
	    sl->st->read_only || job->call_rounds >= 3)
		return 0;
	job->call_rounds++;
	rc = mm_ddb_rf_start(sl->st, &job->call_pk, pend->s, pend->len, on_rolled, job, &job->call_rf);
	if (rc == 0)
		mm_ddb_job_wait(job);
	mm_ddb_slot_finish(sl, rc, NULL);
	return 1;
}

/* The item a read answered: a GetItem's Item, or the Attributes of the
 * UpdateItem that takes a position (ALL_NEW). */
static const mm_jnode_t *answer_item(const ddb_slot_t *sl)
{
	const mm_jnode_t *item = mm_jnode_get(sl->tree.root, "Item");

	return item ? item : mm_jnode_get(sl->tree.root, "Attributes");
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The registry item's string set of names, sorted, into out: none is an
 * empty list, not MM_ENOTFOUND. */
static int list_names(const mm_jnode_t *item, mm_buf_t *out)
{
	const mm_jnode_t *ss = mm_jnode_get(mm_jnode_get(item, "names"), "SS"), *n;
	const char **names;
	size_t count = 0, i;
	int rc = 0;

	if (ss == NULL || ss->n == 0)
		return 0;
	if ((names = malloc(ss->n * sizeof(*names))) == NULL)
		return mm_diag_set(MM_ENOMEM, "dynamodb: out of memory");
	for (n = ss->child; n; n = n->next)
		if (n->type == MM_JSON_STRING)
			names[count++] = n->s;
	qsort(names, count, sizeof(*names), str_cmp);
	for (i = 0; i < count && rc == 0; i++)
		rc = mm_buf_append(out, names[i], strlen(names[i]) + 1);
	free(names);
	return rc;
}

void mm_ddb_call_answer(ddb_slot_t *sl)
{
	ddb_job_t *job = sl->job;
	const mm_jnode_t *v;

	if (job->call_take)
		mm_ddb_taken_note(sl->st, (const char *)job->call_pk.p, job->call_pk.len, 1);

	if (job->call_out == NULL) {
		if (job->call_status) {
			v = mm_jnode_get(mm_jnode_get(sl->tree.root, "Table"), "TableStatus");
			snprintf(job->call_status, DDB_STATUS_MAX, "%s",
				 v && v->type == MM_JSON_STRING ? v->s : "");
		}
		mm_ddb_slot_finish(sl, 0, NULL);
		return;
	}
	if (job->call_list) {
		mm_ddb_slot_finish(sl, list_names(answer_item(sl), job->call_out), NULL);
		return;
	}
	if (call_pending_intent(sl, answer_item(sl)))
		return;
	v = mm_jnode_get(mm_jnode_get(answer_item(sl), job->call_attr), "B");
	if (v == NULL || v->type != MM_JSON_STRING) {
		mm_ddb_slot_finish(sl, MM_ENOTFOUND, "no such item");
		return;
	}
	mm_ddb_slot_finish(sl, mm_base64_decode(v->s, v->len, MM_BASE64_STRICT, job->call_out), NULL);
}

/*
 * A writer that owns a position from now on (a Kafka partition assigned to
 * it) reads it by taking it (the zombie fence,
 * doc/dynamodb.md "Kafka partitions"): one UpdateItem sets own = <this
 * writer> and answers the item as it is then (ALL_NEW). From then on a
 * flush of any other writer that would point this position to its intent
 * fails its condition (dynamodb_intent.c), so a worker that lost the
 * position without knowing it cannot write a flush over what this reader
 * reads. The item is created when absent (it then holds no position).
 */
static int call_take_position(mm_ddb_t *st, const mm_buf_t *pk, mm_buf_t *out, mm_store_cb cb,
			      void *arg)
{
	ddb_job_t *job = call_new();
	mm_buf_t *b;
	int rc;

	if (job == NULL)
		return MM_ENOMEM;
	b = &job->call_body[0];
	if ((rc = mm_ddb_put_head(st, b, pk, DDB_SK_POS)) ||
	    (rc = PUT(b, ",\"UpdateExpression\":\"SET #o = :me\",\"ExpressionAttributeNames\":"
			 "{\"#o\":\"own\"},\"ExpressionAttributeValues\":{\":me\":{\"S\":")) ||
	    (rc = mm_buf_printf(b, "\"%s\"}},\"ReturnValues\":\"ALL_NEW\"}", st->writer_attr + 2)) ||
	    (rc = mm_buf_append(&job->call_pk, pk->p, pk->len))) {
		mm_ddb_job_free(job);
		return rc;
	}
	job->call_target[0] = "UpdateItem";
	job->call_out = out;
	job->call_attr = "v";
	job->call_take = 1;
	return call_queue(st, job, 1, cb, arg);
}

void mm_ddb_taken_note(mm_ddb_t *st, const char *pk, size_t n, int own)
{
	size_t pre = sizeof("#pos#") - 1, i;
	char *source;

	if (n <= pre || memcmp(pk, "#pos#", pre) != 0)
		return;
	pk += pre;
	n -= pre;
	for (i = 0; i < st->ntaken; i++)
		if (strlen(st->taken[i].source) == n && memcmp(st->taken[i].source, pk, n) == 0) {
			st->taken[i].own = own;
			return;
		}
	if (st->ntaken == st->taken_cap) {
		size_t cap = st->taken_cap ? st->taken_cap * 2 : 8;
		struct ddb_taken *grown = realloc(st->taken, cap * sizeof(*grown));

		if (grown == NULL)
			return;
		st->taken = grown;
		st->taken_cap = cap;
	}
	if ((source = strndup(pk, n)) == NULL)
		return;
	st->taken[st->ntaken++] = (struct ddb_taken){source, own};
}

void mm_ddb_positions_taken(const mm_store_t *base,
			    void (*fn)(void *ud, const char *source, int own), void *ud)
{
	const mm_ddb_t *st = mm_ddb_of(base);

	for (size_t i = 0; st && i < st->ntaken; i++)
		fn(ud, st->taken[i].source, st->taken[i].own);
}

void mm_ddb_taken_free(mm_ddb_t *st)
{
	for (size_t i = 0; i < st->ntaken; i++)
		free(st->taken[i].source);
	free(st->taken);
	st->taken = NULL;
	st->ntaken = st->taken_cap = 0;
}

static int ddb_position(mm_store_t *base, const char *source, mm_buf_t *out, mm_store_cb cb,
			void *arg, int take)
{
	mm_ddb_t *st = (mm_ddb_t *)base;
	mm_buf_t pk = {0};
	int rc;

	/* Positions off: there is never one to resume from. */
	if (!st->cfg.positions)
		return mm_store_complete_later(base, cb, arg, MM_ENOTFOUND,
					       "dynamodb: positions are off (option positions)");
	if ((rc = mm_buf_printf(&pk, "#pos#%s", source)))
		goto out;
	if (st->read_only || !take) {
		rc = call_get_bytes(st, &pk, DDB_SK_POS, "v", out, &pk, cb, arg);
		goto out;
	}
	rc = call_take_position(st, &pk, out, cb, arg);
out:
	mm_buf_free(&pk);
	return rc;
}

int mm_ddb_get_position(mm_store_t *base, const char *source, mm_buf_t *out, mm_store_cb cb,
			void *arg)
{
	return ddb_position(base, source, out, cb, arg, 0);
}

int mm_ddb_take_position(mm_store_t *base, const char *source, mm_buf_t *out, mm_store_cb cb,
			 void *arg)
{
	return ddb_position(base, source, out, cb, arg, 1);
}

int mm_ddb_get_meta(mm_store_t *base, const char *ns_name, mm_buf_t *out, mm_store_cb cb,
		    void *arg)
{
	mm_buf_t key = {.p = (uint8_t *)(uintptr_t)ns_name, .len = strlen(ns_name)};

	key.cap = key.len;
	return call_get_bytes((mm_ddb_t *)base, &key, DDB_SK_META, "v", out, NULL, cb, arg);
}

/* Two independent requests: the descriptor (PutItem) and the name in the
 * registry that list_meta reads (ADD to a string set). Both are idempotent,
 * so a retry of either is harmless. */
int mm_ddb_put_meta(mm_store_t *base, const char *ns_name, const uint8_t *p, size_t n,
		    mm_store_cb cb, void *arg)
{
	mm_ddb_t *st = (mm_ddb_t *)base;
	ddb_job_t *job;
	mm_buf_t *b;
	int rc;

	if (st->read_only)
		return mm_diag_set(MM_ENOTSUP, "dynamodb: put_meta on a store opened read-only");
	if ((job = call_new()) == NULL)
		return MM_ENOMEM;
	b = &job->call_body[0];
	job->call_target[0] = "PutItem";
	if ((rc = PUT(b, "{\"TableName\":")) ||
	    (rc = mm_buf_append(b, st->table_json, strlen(st->table_json))) ||
	    (rc = PUT(b, ",\"Item\":{\"pk\":{\"S\":")) ||
	    (rc = mm_json_quote(ns_name, strlen(ns_name), b)) || (rc = PUT(b, "},\"sk\":")) ||
	    (rc = mm_ddb_put_n(b, DDB_SK_META)) || (rc = PUT(b, ",\"v\":{\"B\":\"")) ||
	    (n > 0 && (rc = mm_base64_encode(p, n, b))) || (rc = PUT(b, "\"}}}")))
		goto fail;
	b = &job->call_body[1];
	job->call_target[1] = "UpdateItem";
	if ((rc = PUT(b, "{\"TableName\":")) ||
	    (rc = mm_buf_append(b, st->table_json, strlen(st->table_json))) ||
	    (rc = PUT(b, ",\"Key\":{\"pk\":{\"S\":\"#meta\"},\"sk\":")) ||
	    (rc = mm_ddb_put_n(b, DDB_SK_META)) ||
	    (rc = PUT(b, "},\"UpdateExpression\":\"ADD #n :n\",\"ExpressionAttributeNames\":"
			 "{\"#n\":\"names\"},\"ExpressionAttributeValues\":{\":n\":{\"SS\":[")) ||
	    (rc = mm_json_quote(ns_name, strlen(ns_name), b)) || (rc = PUT(b, "]}}}")))
		goto fail;
	return call_queue(st, job, 2, cb, arg);
fail:
	mm_ddb_job_free(job);
	return rc;
}

/* One consistent GetItem of the registry item put_meta adds names to. */
int mm_ddb_list_meta(mm_store_t *base, mm_buf_t *out, mm_store_cb cb, void *arg)
{
	mm_buf_t key = {.p = (uint8_t *)(uintptr_t) "#meta", .len = 5, .cap = 5};
	ddb_job_t *job = call_new();
	int rc;

	if (job == NULL)
		return MM_ENOMEM;
	if ((rc = mm_ddb_put_head((mm_ddb_t *)base, &job->call_body[0], &key, DDB_SK_META)) ||
	    (rc = PUT(&job->call_body[0], ",\"ConsistentRead\":true}"))) {
		mm_ddb_job_free(job);
		return rc;
	}
	job->call_target[0] = "GetItem";
	job->call_out = out;
	job->call_list = 1;
	return call_queue((mm_ddb_t *)base, job, 1, cb, arg);
}
