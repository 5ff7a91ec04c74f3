/*
 * valkey_dedup.c: dedup in Valkey (dedup = valkey): the synchronous seen()
 * lookup over a second, blocking connection, and claims for runtimes that
 * claim an event id before applying its effect (mm_valkey_claim/release).
 * Marks kept in Valkey are lost with Valkey's data: the weaker guarantee
 * doc/valkey.md describes.
 */
#include "valkey_impl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "valkey_format.h"

/* ---- claims ------------------------------------------------------------------ */

/* Claims are built when called (the caller's arrays may go) and sent from
 * the deferred queue, so they complete the same way whether or not the
 * cache answers. */
typedef struct vk_claim {
	vk_op_t op;
	vk_list_t *k, *a;       /* per batch of VK_CHUNK marks */
	size_t nbatch;
	uint8_t *won;           /* NULL: a release */
	size_t n, next;
	int pending, sending, status;
} vk_claim_t;

static void vk_claim_done(vk_op_t *op)
{
	vk_claim_t *c = (vk_claim_t *)op;
	mm_valkey_t *st = op->st;
	mm_store_cb cb = op->cb;
	void *arg = op->arg;
	int status = c->status;
	size_t i;

	for (i = 0; i < c->nbatch; i++) {
		mm_vk_list_free(&c->k[i]);
		mm_vk_list_free(&c->a[i]);
	}
	free(c->k);
	free(c->a);
	free(c);
	mm_vk_unref(st);
	cb(arg, status, status ? "valkey: the cache is unavailable" : "");
}

static void vk_claim_reply(void *ctx, redisReply *r)
{
	vk_claim_t *c = ctx;
	size_t first = c->next, cnt = c->n - first < VK_CHUNK ? c->n - first : VK_CHUNK, i;

	c->next += cnt;
	if (!mm_vk_reply_ok(r))
		c->status = MM_EAGAIN;
	else if (c->won != NULL && (r->type != REDIS_REPLY_ARRAY || r->elements != cnt))
		c->status = MM_EAGAIN;
	else if (c->won != NULL)
		for (i = 0; i < cnt; i++)
			c->won[first + i] = r->element[i]->type == REDIS_REPLY_INTEGER &&
					    r->element[i]->integer == 1;
	if (--c->pending == 0 && !c->sending)
		vk_claim_done(&c->op);
}

static void vk_claim_run(vk_op_t *op)
{
	vk_claim_t *c = (vk_claim_t *)op;
	mm_valkey_t *st = op->st;
	size_t i;

	c->sending = 1;
	for (i = 0; i < c->nbatch && !st->closing && st->state == VK_READY; i++) {
		if (mm_vk_eval(st, MM_VALKEY_OP_CLAIM, c->won ? VK_S_CLAIM : VK_S_RELEASE, &c->k[i],
			    &c->a[i], vk_claim_reply, c) != 0)
			break;
		c->pending++;
	}
	c->sending = 0;
	if (i < c->nbatch)
		c->status = MM_EAGAIN;
	if (c->pending == 0)
		vk_claim_done(op);
}

static int vk_claims(mm_store_t *base, const mm_mark_t *marks, size_t n, uint8_t *won,
		     mm_store_cb cb, void *arg)
{
	mm_valkey_t *st = mm_vk_of(base);
	vk_claim_t *c;
	size_t i;
	int rc = 0;

	if (st == NULL)
		return mm_diag_set(MM_EINVAL, "valkey: claims need a store opened as \"valkey\"");
	if (n == 0 || marks == NULL || cb == NULL)
		return mm_diag_set(MM_EINVAL, "valkey: claims need marks and a callback");
	for (i = 0; i < n; i++)
		if (marks[i].ns == NULL || marks[i].ns->name == NULL || marks[i].id == NULL ||
		    marks[i].len < 1 || marks[i].len > 1024 ||
		    strlen(marks[i].ns->name) > VK_NS_MAX)
			return mm_diag_set(MM_EINVAL, "valkey: claim %zu is malformed", i);
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return mm_diag_set(MM_ENOMEM, "valkey: cannot allocate a claim");
	c->nbatch = (n + VK_CHUNK - 1) / VK_CHUNK;
	c->k = calloc(c->nbatch, sizeof(*c->k));
	c->a = calloc(c->nbatch, sizeof(*c->a));
	if (c->k == NULL || c->a == NULL)
		rc = mm_diag_set(MM_ENOMEM, "valkey: cannot allocate a claim");
	for (i = 0; i < n && rc == 0; i++) {
		vk_list_t *k = &c->k[i / VK_CHUNK], *a = &c->a[i / VK_CHUNK];

		if (i % VK_CHUNK == 0)
			rc = mm_vk_list_str(a, st->token);
		if (rc == 0)
			rc = mm_vk_mark_key(st, k, marks[i].ns->name, marks[i].id, marks[i].len);
		if (rc == 0 && won != NULL)
			rc = mm_vk_list_i64(a, marks[i].expire_ms);
	}
	st->refs++;
	c->op.st = st;
	c->op.cb = cb;
	c->op.arg = arg;
	c->won = won;
	c->n = n;
	if (rc) {
		c->op.cb = NULL;
		/* Frees through the common path; cb is not called. */
		for (i = 0; c->k && c->a && i < c->nbatch; i++) {
			mm_vk_list_free(&c->k[i]);
			mm_vk_list_free(&c->a[i]);
		}
		free(c->k);
		free(c->a);
		free(c);
		mm_vk_unref(st);
		return rc;
	}
	if (won != NULL)
		memset(won, 0, n);
	if (mm_vk_should_wait(st))
		mm_vk_wait(&c->op, vk_claim_run);
	else
		mm_vk_later(&c->op, vk_claim_run);
	return 0;
}

int mm_valkey_claim(mm_store_t *st, const mm_mark_t *marks, size_t n, uint8_t *won,
		    mm_store_cb cb, void *arg)
{
	if (won == NULL)
		return mm_diag_set(MM_EINVAL, "valkey: claim needs a won array");
	return vk_claims(st, marks, n, won, cb, arg);
}

int mm_valkey_release(mm_store_t *st, const mm_mark_t *marks, size_t n, mm_store_cb cb,
		      void *arg)
{
	return vk_claims(st, marks, n, NULL, cb, arg);
}

/* ---- dedup lookups (synchronous) --------------------------------------------------- */

static void vk_sync_failed(mm_valkey_t *st, uint64_t now)
{
	if (st->sc != NULL) {
		redisFree(st->sc);
		st->sc = NULL;
	}
	st->sc_retry_at = now + (uint64_t)st->sc_backoff_ms * 1000000u;
	st->sc_backoff_ms = st->sc_backoff_ms * 2 > st->backoff_max_ms ? st->backoff_max_ms
									: st->sc_backoff_ms * 2;
}

static int vk_sync_command(redisContext *sc, int argc, const char **argv, const size_t *len,
			   long long *out)
{
	redisReply *r = redisCommandArgv(sc, argc, argv, len);
	int ok = r != NULL && r->type != REDIS_REPLY_ERROR;

	if (ok && out)
		*out = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
	if (r)
		freeReplyObject(r);
	return ok ? 0 : -1;
}

static int vk_sync_connect(mm_valkey_t *st, uint64_t now)
{
	struct timeval tv = {st->timeout_ms / 1000, (st->timeout_ms % 1000) * 1000};
	const char *argv[3];
	size_t len[3];
	char db[16];
	int n = 0;

	if (now < st->sc_retry_at)
		return -1;
	st->sc = redisConnectWithTimeout(st->ip[0] ? st->ip : st->host, st->port, tv);
	if (st->sc == NULL || st->sc->err || redisSetTimeout(st->sc, tv) != REDIS_OK)
		goto fail;
	mm_valkey_reader_bound(st->sc->reader);
	if (st->password) {
		argv[n++] = "AUTH";
		if (st->user)
			argv[n++] = st->user;
		argv[n++] = st->password;
		for (int i = 0; i < n; i++)
			len[i] = strlen(argv[i]);
		if (vk_sync_command(st->sc, n, argv, len, NULL))
			goto fail;
	}
	if (st->db) {
		snprintf(db, sizeof(db), "%d", st->db);
		argv[0] = "SELECT";
		argv[1] = db;
		len[0] = 6;
		len[1] = strlen(db);
		if (vk_sync_command(st->sc, 2, argv, len, NULL))
			goto fail;
	}
	st->sc_backoff_ms = VK_BACKOFF_MIN_MS;
	return 0;
fail:
	vk_sync_failed(st, now);
	return -1;
}

int mm_vk_seen(mm_store_t *base, const mm_ns_t *ns, const char *id, size_t len,
		   int64_t now_ms)
{
	mm_valkey_t *st = (mm_valkey_t *)base;
	uint64_t t0 = uv_hrtime(), dt;
	const char *argv[2];
	size_t alen[2];
	long long n = 0;
	int rc = -1;

	if (!st->dedup_valkey)
		return mm_store_seen(st->backing, ns, id, len, now_ms);
	mm_vk_list_reset(&st->sk);
	if (mm_vk_mark_key(st, &st->sk, ns->name, id, len))
		return MM_ENOMEM;
	argv[0] = "EXISTS";
	alen[0] = 6;
	argv[1] = mm_vk_list_at(&st->sk, 0, &alen[1]);
	if (st->sc != NULL) {
		rc = vk_sync_command(st->sc, 2, argv, alen, &n);
		if (rc != 0) {
			/* Maybe just stale (the server restarted): one fresh
			 * connection is tried at once before the id counts as new. */
			redisFree(st->sc);
			st->sc = NULL;
			st->sc_retry_at = 0;
		}
	}
	if (rc != 0 && vk_sync_connect(st, t0) == 0) {
		rc = vk_sync_command(st->sc, 2, argv, alen, &n);
		if (rc != 0)
			vk_sync_failed(st, t0);
	}
	dt = uv_hrtime() - t0;
	st->vs.ops[MM_VALKEY_OP_SEEN]++;
	st->vs.ns_total[MM_VALKEY_OP_SEEN] += dt;
	mm_histo_observe(&st->vs.hist[MM_VALKEY_OP_SEEN], dt);
	if (dt > st->vs.ns_max[MM_VALKEY_OP_SEEN])
		st->vs.ns_max[MM_VALKEY_OP_SEEN] = dt;
	if (rc) {
		/* Unreachable: the id counts as new (the weaker guarantee). */
		st->vs.errors[MM_VALKEY_OP_SEEN]++;
		return 0;
	}
	return n > 0;
}
