/*
 * store.c: the mm_store_* wrappers that every caller goes through.
 *
 * This file is the one place that checks arguments, so backends can trust
 * theirs and a bad call fails the same way whatever the backend. It is also
 * the one place that measures: every operation is counted in st->stats with
 * its latency from uv_hrtime. For apply() and get_many() the latency runs
 * from the call to the callback, so the user's callback is wrapped in a small
 * heap context (mm_store_call_t) that the wrapper's own callback frees. When
 * the backend refuses a call, the context is freed at once and no callback
 * ever runs, which is libuv's contract and the one store.h promises.
 *
 * Limits checked here, beyond what the types say: namespace names match
 * [A-Za-z0-9_.-]{1,128}; entities and dedup ids are 1..1024 bytes; source
 * ids are 1..255 bytes (they are keys in every backend, and the engine makes
 * them short: "kafka:orders:3").
 *
 * Threads: loop thread only, like every mm_store_* function.
 */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"

#define MM_STORE_KEY_MAX 1024
#define MM_STORE_NS_MAX 128
#define MM_STORE_SOURCE_MAX 255

/* The wrapper's context for one asynchronous operation. */
typedef struct mm_store_call {
	mm_store_t *st;
	int op;
	int hist;               /* the histogram slot (MM_STORE_HIST_GET or op) */
	uint64_t t0;
	mm_store_cb cb;
	void *arg;
} mm_store_call_t;

const mm_store_vtable_t *mm_store_find(const char *name)
{
	size_t i;

	for (i = 0; mm_store_registry[i] != NULL; i++)
		if (strcmp(mm_store_registry[i]->name, name) == 0)
			return mm_store_registry[i];
	return NULL;
}

static void mm_store_count_in(mm_store_t *st, int op, int hist, uint64_t t0, int failed)
{
	uint64_t ns = uv_hrtime() - t0;

	st->stats.ops[op]++;
	mm_histo_observe(&st->stats.hist[hist], ns);
	if (failed) {
		st->stats.errors[op]++;
		st->stats.hist_errors[hist]++;
	}
	st->stats.ns_total[op] += ns;
	if (ns > st->stats.ns_max[op])
		st->stats.ns_max[op] = ns;
}

static void mm_store_count(mm_store_t *st, int op, uint64_t t0, int failed)
{
	mm_store_count_in(st, op, op, t0, failed);
}

/* get_many's histogram slot: one key is the contract's store_get. */
static int mm_store_get_hist(size_t n)
{
	return n == 1 ? MM_STORE_HIST_GET : MM_STORE_OP_GET_MANY;
}

/* The bytes of a namespace name, [A-Za-z0-9_.-], as a table: the name is
 * checked on every dedup lookup, once per event with ids. */
static const unsigned char ns_name_char[256] = {
	['A' ... 'Z'] = 1, ['a' ... 'z'] = 1, ['0' ... '9'] = 1, ['_'] = 1, ['.'] = 1, ['-'] = 1,
};

static int mm_store_check_ns_name(const char *name)
{
	size_t i;

	if (name == NULL)
		return mm_diag_set(MM_EINVAL, "store: namespace name is NULL");
	for (i = 0; name[i] != '\0'; i++) {
		if (i == MM_STORE_NS_MAX)
			return mm_diag_set(MM_EINVAL, "store: namespace name longer than %d bytes",
					   MM_STORE_NS_MAX);
		if (!ns_name_char[(unsigned char)name[i]])
			return mm_diag_set(MM_EINVAL,
					   "store: namespace name '%s' has a character outside "
					   "[A-Za-z0-9_.-]",
					   name);
	}
	if (i == 0)
		return mm_diag_set(MM_EINVAL, "store: namespace name is empty");
	return 0;
}

static int mm_store_check_ns(const mm_ns_t *ns)
{
	if (ns == NULL)
		return mm_diag_set(MM_EINVAL, "store: namespace is NULL");
	if (ns->m == NULL || ns->m->vt == NULL)
		return mm_diag_set(MM_EINVAL, "store: namespace '%s' has no monoid",
				   ns->name ? ns->name : "(null)");
	return mm_store_check_ns_name(ns->name);
}

static int mm_store_check_bytes(const char *what, size_t i, const void *p, size_t len)
{
	if (p == NULL)
		return mm_diag_set(MM_EINVAL, "store: %s %zu is NULL", what, i);
	if (len < 1 || len > MM_STORE_KEY_MAX)
		return mm_diag_set(MM_EINVAL, "store: %s %zu has %zu bytes, expected 1..%d", what,
				   i, len, MM_STORE_KEY_MAX);
	return 0;
}

static int mm_store_check_array(const char *what, const void *p, size_t n)
{
	if (n > 0 && p == NULL)
		return mm_diag_set(MM_EINVAL, "store: %zu %s but the array is NULL", n, what);
	return 0;
}

static int mm_store_check_source(const char *source)
{
	size_t len;

	if (source == NULL)
		return mm_diag_set(MM_EINVAL, "store: source id is NULL");
	len = strnlen(source, MM_STORE_SOURCE_MAX + 1);
	if (len < 1 || len > MM_STORE_SOURCE_MAX)
		return mm_diag_set(MM_EINVAL, "store: source id must have 1..%d bytes",
				   MM_STORE_SOURCE_MAX);
	return 0;
}

/*
 * Checks a whole flush before any of it reaches the backend, so a backend
 * never starts a transaction it would have to abort for a malformed entry.
 * Deltas of one flush almost always share a namespace, so the last namespace
 * that passed is remembered instead of re-scanning its name per delta.
 */
static int mm_store_check_flush(const mm_store_t *st, const mm_flush_t *f)
{
	/* A store whose marks are the ids' hashes takes a mark by its hash. */
	int by_hash = (mm_store_caps(st) & MM_STORE_CAP_MARKED) != 0;
	const mm_ns_t *ok = NULL;
	size_t i;
	int rc;

	if ((rc = mm_store_check_array("deltas", f->deltas, f->ndeltas)) ||
	    (rc = mm_store_check_array("marks", f->marks, f->nmarks)) ||
	    (rc = mm_store_check_array("hashed marks", f->hashed, f->nhashed)) ||
	    (rc = mm_store_check_array("purges", f->purges, f->npurges)) ||
	    (rc = mm_store_check_array("positions", f->positions, f->npositions)))
		return rc;
	if (f->nhashed && !by_hash)
		return mm_diag_set(MM_EINVAL, "store: %s keeps no marks by hash (%zu given)",
				   st->vt->name, f->nhashed);
	for (i = 0; i < f->ndeltas; i++) {
		const mm_delta_t *d = &f->deltas[i];

		if (d->ns != ok && (rc = mm_store_check_ns(d->ns)))
			return rc;
		ok = d->ns;
		if ((rc = mm_store_check_bytes("delta entity", i, d->key.entity, d->key.len)))
			return rc;
		if (d->state == NULL)
			return mm_diag_set(MM_EINVAL, "store: delta %zu has no state", i);
		if (d->expire_ms < 0)
			return mm_diag_set(MM_EINVAL, "store: delta %zu has a negative expiry", i);
	}
	for (i = 0; i < f->nmarks; i++) {
		const mm_mark_t *mk = &f->marks[i];

		if (mk->ns != ok && (rc = mm_store_check_ns(mk->ns)))
			return rc;
		ok = mk->ns;
		if (mk->id == NULL && by_hash && (mk->hash.h0 | mk->hash.h1) != 0 && mk->len >= 1 &&
		    mk->len <= MM_STORE_KEY_MAX)
			continue;
		if ((rc = mm_store_check_bytes("mark id", i, mk->id, mk->len)))
			return rc;
	}
	for (i = 0; i < f->npurges; i++)
		if ((rc = mm_store_check_ns(f->purges[i].ns)))
			return rc;
	for (i = 0; i < f->npositions; i++) {
		const mm_position_t *p = &f->positions[i];

		if ((rc = mm_store_check_source(p->source)))
			return rc;
		if (p->len > 0 && p->pos == NULL)
			return mm_diag_set(MM_EINVAL, "store: position %zu has %zu bytes at NULL",
					   i, p->len);
	}
	return 0;
}

int mm_store_open(const char *backend, uv_loop_t *loop, const mm_kv_t *kv, size_t nkv,
		  int read_only, mm_store_t **out)
{
	const mm_store_vtable_t *vt;
	size_t i;

	if (out == NULL)
		return mm_diag_set(MM_EINVAL, "store: open without an out pointer");
	*out = NULL;
	if (backend == NULL || loop == NULL)
		return mm_diag_set(MM_EINVAL, "store: open needs a backend name and a loop");
	if (nkv > 0 && kv == NULL)
		return mm_diag_set(MM_EINVAL, "store: %zu options but the array is NULL", nkv);
	for (i = 0; i < nkv; i++)
		if (kv[i].key == NULL || kv[i].value == NULL)
			return mm_diag_set(MM_EINVAL, "store: option %zu has a NULL key or value",
					   i);
	vt = mm_store_find(backend);
	if (vt == NULL) {
		char names[256] = "";
		size_t len = 0;

		for (i = 0; mm_store_registry[i] != NULL && len < sizeof(names); i++)
			len += (size_t)snprintf(names + len, sizeof(names) - len, "%s%s",
						i ? ", " : "", mm_store_registry[i]->name);
		return mm_diag_set(MM_ENOTFOUND,
				   "store: unknown backend '%s' (expected one of: %s)", backend,
				   names);
	}
	return vt->open(loop, kv, nkv, read_only ? 1 : 0, out);
}

/* Runs on the loop thread when the backend completes: count, then hand the
 * result on. The context is freed before the user's callback runs because
 * that callback may well close the store or start the next operation. */
static void mm_store_done(void *arg, int status, const char *detail)
{
	mm_store_call_t *call = arg;
	mm_store_cb cb = call->cb;
	void *user = call->arg;

	mm_store_count_in(call->st, call->op, call->hist, call->t0, status != 0);
	free(call);
	cb(user, status, detail);
}

static mm_store_call_t *mm_store_call_new(mm_store_t *st, int op, uint64_t t0, mm_store_cb cb,
					  void *arg)
{
	mm_store_call_t *call = malloc(sizeof(*call));

	if (call == NULL)
		return NULL;
	call->st = st;
	call->op = op;
	call->hist = op;
	call->t0 = t0;
	call->cb = cb;
	call->arg = arg;
	return call;
}

int mm_store_start(mm_store_t *st, mm_store_cb cb, void *arg)
{
	if (st == NULL || cb == NULL)
		return mm_diag_set(MM_EINVAL, "store: start needs a store and a callback");
	if (st->vt->start == NULL)
		return mm_store_complete_later(st, cb, arg, 0, "");
	return st->vt->start(st, cb, arg);
}

int mm_store_apply(mm_store_t *st, mm_flush_t *f, mm_store_cb cb, void *arg)
{
	uint64_t t0 = uv_hrtime();
	mm_store_call_t *call = NULL;
	int rc;

	if (st == NULL)
		return mm_diag_set(MM_EINVAL, "store: apply on a NULL store");
	if (f == NULL || cb == NULL) {
		rc = mm_diag_set(MM_EINVAL, "store: apply needs a flush and a callback");
		goto fail;
	}
	if ((rc = mm_store_check_flush(st, f)))
		goto fail;
	f->writes = 0;
	f->purged = 0;
	call = mm_store_call_new(st, MM_STORE_OP_APPLY, t0, cb, arg);
	if (call == NULL) {
		rc = mm_diag_set(MM_ENOMEM, "store: cannot allocate an apply context");
		goto fail;
	}
	if ((rc = st->vt->apply(st, f, mm_store_done, call)))
		goto fail;
	return 0;
fail:
	free(call);
	mm_store_count(st, MM_STORE_OP_APPLY, t0, 1);
	return rc;
}

int mm_store_get_many(mm_store_t *st, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
		      void *states, uint8_t *found, mm_store_cb cb, void *arg)
{
	uint64_t t0 = uv_hrtime();
	mm_store_call_t *call = NULL;
	size_t i;
	int rc;

	if (st == NULL)
		return mm_diag_set(MM_EINVAL, "store: get_many on a NULL store");
	if (n == 0 || keys == NULL || states == NULL || found == NULL || cb == NULL) {
		rc = mm_diag_set(MM_EINVAL,
				 "store: get_many needs n > 0 keys, states, found and a callback");
		goto fail;
	}
	if ((rc = mm_store_check_ns(ns)))
		goto fail;
	for (i = 0; i < n; i++)
		if ((rc = mm_store_check_bytes("key entity", i, keys[i].entity, keys[i].len)))
			goto fail;
	call = mm_store_call_new(st, MM_STORE_OP_GET_MANY, t0, cb, arg);
	if (call == NULL) {
		rc = mm_diag_set(MM_ENOMEM, "store: cannot allocate a get_many context");
		goto fail;
	}
	call->hist = mm_store_get_hist(n);
	if ((rc = st->vt->get_many(st, ns, keys, n, states, found, mm_store_done, call)))
		goto fail;
	return 0;
fail:
	free(call);
	mm_store_count_in(st, MM_STORE_OP_GET_MANY, mm_store_get_hist(n), t0, 1);
	return rc;
}

/* A missing position or descriptor is the normal state of a new source or
 * pipeline, not a failure: it is not counted as an error. */
static void mm_store_done_found(void *arg, int status, const char *detail)
{
	mm_store_call_t *call = arg;
	mm_store_cb cb = call->cb;
	void *user = call->arg;

	mm_store_count_in(call->st, call->op, call->hist, call->t0,
			  status != 0 && status != MM_ENOTFOUND);
	free(call);
	cb(user, status, detail);
}

/* get_position, get_meta and put_meta share their accounting. */
static mm_store_call_t *mm_store_call_start(mm_store_t *st, int op, uint64_t t0, mm_store_cb cb,
					    void *arg)
{
	mm_store_call_t *call;

	if (cb == NULL) {
		mm_diag_set(MM_EINVAL, "store: an asynchronous call needs a callback");
		return NULL;
	}
	call = mm_store_call_new(st, op, t0, cb, arg);
	if (call == NULL)
		mm_diag_set(MM_ENOMEM, "store: cannot allocate a call context");
	return call;
}

static int mm_store_position(mm_store_t *st, const char *source, mm_buf_t *out, mm_store_cb cb,
			     void *arg, int take)
{
	uint64_t t0 = uv_hrtime();
	mm_store_call_t *call;
	int rc;

	if (st == NULL || out == NULL)
		return mm_diag_set(MM_EINVAL, "store: get_position needs a store and an out buffer");
	if ((rc = mm_store_check_source(source)))
		return rc;
	if ((call = mm_store_call_start(st, MM_STORE_OP_POSITION, t0, cb, arg)) == NULL)
		return mm_diag_code();
	if (take && st->vt->take_position)
		rc = st->vt->take_position(st, source, out, mm_store_done_found, call);
	else
		rc = st->vt->get_position(st, source, out, mm_store_done_found, call);
	if (rc) {
		free(call);
		mm_store_count(st, MM_STORE_OP_POSITION, t0, 1);
	}
	return rc;
}

int mm_store_get_position(mm_store_t *st, const char *source, mm_buf_t *out, mm_store_cb cb,
			  void *arg)
{
	return mm_store_position(st, source, out, cb, arg, 0);
}

int mm_store_take_position(mm_store_t *st, const char *source, mm_buf_t *out, mm_store_cb cb,
			   void *arg)
{
	return mm_store_position(st, source, out, cb, arg, 1);
}

int mm_store_get_meta(mm_store_t *st, const char *ns_name, mm_buf_t *out, mm_store_cb cb,
		      void *arg)
{
	uint64_t t0 = uv_hrtime();
	mm_store_call_t *call;
	int rc;

	if (st == NULL || out == NULL)
		return mm_diag_set(MM_EINVAL, "store: get_meta needs a store and an out buffer");
	if ((rc = mm_store_check_ns_name(ns_name)))
		return rc;
	if ((call = mm_store_call_start(st, MM_STORE_OP_META, t0, cb, arg)) == NULL)
		return mm_diag_code();
	if ((rc = st->vt->get_meta(st, ns_name, out, mm_store_done_found, call))) {
		free(call);
		mm_store_count(st, MM_STORE_OP_META, t0, 1);
	}
	return rc;
}

int mm_store_put_meta(mm_store_t *st, const char *ns_name, const uint8_t *p, size_t n,
		      mm_store_cb cb, void *arg)
{
	uint64_t t0 = uv_hrtime();
	mm_store_call_t *call;
	int rc;

	if (st == NULL || (n > 0 && p == NULL))
		return mm_diag_set(MM_EINVAL, "store: put_meta needs a store and n bytes at p");
	if ((rc = mm_store_check_ns_name(ns_name)))
		return rc;
	if ((call = mm_store_call_start(st, MM_STORE_OP_META, t0, cb, arg)) == NULL)
		return mm_diag_code();
	if ((rc = st->vt->put_meta(st, ns_name, p, n, mm_store_done, call))) {
		free(call);
		mm_store_count(st, MM_STORE_OP_META, t0, 1);
	}
	return rc;
}

int mm_store_list_meta(mm_store_t *st, mm_buf_t *out, mm_store_cb cb, void *arg)
{
	uint64_t t0 = uv_hrtime();
	mm_store_call_t *call;
	int rc;

	if (st == NULL || out == NULL)
		return mm_diag_set(MM_EINVAL, "store: list_meta needs a store and an out buffer");
	if ((call = mm_store_call_start(st, MM_STORE_OP_META, t0, cb, arg)) == NULL)
		return mm_diag_code();
	if ((rc = st->vt->list_meta(st, out, mm_store_done, call))) {
		free(call);
		mm_store_count(st, MM_STORE_OP_META, t0, 1);
	}
	return rc;
}

/* ---- blocking forms (tests, the CLI's private loops) ---- */

typedef struct mm_store_wait {
	int done, status;
} mm_store_wait_t;

static void mm_store_on_wait(void *arg, int status, const char *detail)
{
	mm_store_wait_t *w = arg;

	w->done = 1;
	w->status = status;
	if (status && status != MM_ENOTFOUND)
		mm_diag_set(status, "%s", detail ? detail : "");
	else if (status)
		mm_diag_set(status, "%s", detail && *detail ? detail : "not found");
}

static int mm_store_wait_for(mm_store_t *st, mm_store_wait_t *w, int rc)
{
	while (rc == 0 && !w->done)
		uv_run(st->loop, UV_RUN_ONCE);
	return rc ? rc : w->status;
}

int mm_store_get_position_wait(mm_store_t *st, const char *source, mm_buf_t *out)
{
	mm_store_wait_t w = {0, 0};

	return mm_store_wait_for(st, &w,
				 mm_store_get_position(st, source, out, mm_store_on_wait, &w));
}

int mm_store_get_meta_wait(mm_store_t *st, const char *ns_name, mm_buf_t *out)
{
	mm_store_wait_t w = {0, 0};

	return mm_store_wait_for(st, &w, mm_store_get_meta(st, ns_name, out, mm_store_on_wait, &w));
}

int mm_store_put_meta_wait(mm_store_t *st, const char *ns_name, const uint8_t *p, size_t n)
{
	mm_store_wait_t w = {0, 0};

	return mm_store_wait_for(st, &w,
				 mm_store_put_meta(st, ns_name, p, n, mm_store_on_wait, &w));
}

int mm_store_start_wait(mm_store_t *st)
{
	mm_store_wait_t w = {0, 0};

	return mm_store_wait_for(st, &w, mm_store_start(st, mm_store_on_wait, &w));
}

int mm_store_list_meta_wait(mm_store_t *st, mm_buf_t *out)
{
	mm_store_wait_t w = {0, 0};

	return mm_store_wait_for(st, &w, mm_store_list_meta(st, out, mm_store_on_wait, &w));
}

/* ---- completion on the next loop iteration ---- */

typedef struct mm_store_later {
	uv_timer_t timer;
	mm_store_cb cb;
	void *arg;
	int status;
	char detail[256];
} mm_store_later_t;

static void mm_store_later_closed(uv_handle_t *h)
{
	free(h->data);
}

static void mm_store_later_fire(uv_timer_t *t)
{
	mm_store_later_t *l = t->data;

	l->cb(l->arg, l->status, l->detail);
	uv_close((uv_handle_t *)&l->timer, mm_store_later_closed);
}

int mm_store_complete_later(mm_store_t *st, mm_store_cb cb, void *arg, int status,
			    const char *detail)
{
	mm_store_later_t *l = malloc(sizeof(*l));

	if (l == NULL)
		return mm_diag_set(MM_ENOMEM, "store: cannot allocate a completion");
	l->cb = cb;
	l->arg = arg;
	l->status = status;
	snprintf(l->detail, sizeof(l->detail), "%s", detail ? detail : "");
	uv_timer_init(st->loop, &l->timer);
	l->timer.data = l;
	uv_timer_start(&l->timer, mm_store_later_fire, 0, 0);
	return 0;
}

/* renew() and release() of a store that keeps no pending claims (no
 * MM_STORE_CAP_SHARED, NULL in its vtable): nothing to do, answered later. */
static int store_claims_answer(mm_store_t *st, mm_claim_t *ids, size_t n, int result,
			       mm_store_cb cb, void *arg)
{
	for (size_t i = 0; i < n; i++)
		ids[i].result = result;
	return mm_store_complete_later(st, cb, arg, 0, "");
}

/* claim, renew and release share their checks and their accounting. */
static int mm_store_claim_op(mm_store_t *st, int op, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
			     int64_t ttl_ms, mm_store_cb cb, void *arg)
{
	uint64_t t0 = uv_hrtime();
	mm_store_call_t *call = NULL;
	size_t i;
	int rc;

	if (st == NULL)
		return mm_diag_set(MM_EINVAL, "store: claim on a NULL store");
	if ((n > 0 && ids == NULL) || cb == NULL || ttl_ms < 0) {
		rc = mm_diag_set(MM_EINVAL, "store: a claim needs ids, a ttl and a callback");
		goto fail;
	}
	if ((rc = mm_store_check_ns(ns)))
		goto fail;
	for (i = 0; i < n; i++)
		if ((rc = mm_store_check_bytes("id", i, ids[i].id, ids[i].len)))
			goto fail;
	call = mm_store_call_new(st, op, t0, cb, arg);
	if (call == NULL) {
		rc = mm_diag_set(MM_ENOMEM, "store: cannot allocate a claim context");
		goto fail;
	}
	if (op == MM_STORE_OP_CLAIM)
		rc = st->vt->claim(st, ns, ids, n, ttl_ms, mm_store_done, call);
	else if (st->vt->renew == NULL)
		rc = store_claims_answer(st, ids, n, ttl_ms == 0 ? MM_CLAIM_RENEWED : MM_CLAIM_RELEASED,
					 mm_store_done, call);
	else if (ttl_ms == 0)
		rc = st->vt->renew(st, ns, ids, n, mm_store_done, call);
	else
		rc = st->vt->release(st, ns, ids, n, mm_store_done, call);
	if (rc)
		goto fail;
	return 0;
fail:
	free(call);
	mm_store_count(st, op, t0, 1);
	return rc;
}

int mm_store_claim(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n, int64_t ttl_ms,
		   mm_store_cb cb, void *arg)
{
	return mm_store_claim_op(st, MM_STORE_OP_CLAIM, ns, ids, n, ttl_ms, cb, arg);
}

int mm_store_renew(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n, mm_store_cb cb,
		   void *arg)
{
	return mm_store_claim_op(st, MM_STORE_OP_RENEW, ns, ids, n, 0, cb, arg);
}

/* Counted with renew: both hand back what a claim took. */
int mm_store_release(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		     mm_store_cb cb, void *arg)
{
	return mm_store_claim_op(st, MM_STORE_OP_RENEW, ns, ids, n, 1, cb, arg);
}

int mm_store_count_hll(mm_store_t *st, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
		       uint64_t *count, uint64_t *nonempty, int *cached, mm_store_cb cb, void *arg)
{
	size_t i;
	int rc;

	if (st == NULL)
		return mm_diag_set(MM_EINVAL, "store: count_hll on a NULL store");
	if (!(mm_store_caps(st) & MM_STORE_CAP_COUNT_HLL))
		return mm_diag_set(MM_ENOTSUP, "store: %s has no native hll count", st->vt->name);
	if ((rc = mm_store_check_ns(ns)))
		return rc;
	if (ns->m->vt != &mm_monoid_hll_vtable)
		return mm_diag_set(MM_EINVAL, "store: count_hll needs an hll namespace");
	if (n == 0 || keys == NULL || count == NULL || nonempty == NULL || cached == NULL ||
	    cb == NULL)
		return mm_diag_set(MM_EINVAL, "store: count_hll needs keys, outputs and a callback");
	for (i = 0; i < n; i++)
		if ((rc = mm_store_check_bytes("entity", i, keys[i].entity, keys[i].len)))
			return rc;
	return st->vt->count_hll(st, ns, keys, n, count, nonempty, cached, cb, arg);
}

struct store_own_find {
	const char *source;
	int own;
};

static void store_own_one(void *ud, const char *source, int own)
{
	struct store_own_find *q = ud;

	if (strcmp(source, q->source) == 0)
		q->own = own;
}

int mm_store_position_own(const mm_store_t *st, const char *source)
{
	struct store_own_find q = {source, -1};

	mm_store_positions_taken(st, store_own_one, &q);
	return q.own;
}

void mm_store_positions_taken(const mm_store_t *st,
			      void (*fn)(void *ud, const char *source, int own), void *ud)
{
	if (st != NULL && st->vt->positions_taken)
		st->vt->positions_taken(st, fn, ud);
}

size_t mm_store_op_stats(const mm_store_t *st, mm_store_op_stats_t *out, size_t max)
{
	if (st == NULL || !(mm_store_caps(st) & MM_STORE_CAP_CACHE))
		return 0;
	return st->vt->op_stats(st, out, max);
}

const char *mm_store_cap_name(unsigned cap)
{
	switch (cap) {
	case MM_STORE_CAP_ATOMIC:
		return "atomic";
	case MM_STORE_CAP_SHARED:
		return "shared";
	case MM_STORE_CAP_COUNT_HLL:
		return "count_hll";
	case MM_STORE_CAP_CACHE:
		return "cache";
	case MM_STORE_CAP_MARKED:
		return "marked";
	default:
		return NULL;
	}
}

void mm_store_close(mm_store_t *st)
{
	if (st != NULL)
		st->vt->close(st);
}
