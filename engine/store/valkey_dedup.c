/*
 * valkey_dedup.c: dedup in Valkey (dedup = valkey), through the store's
 * claim contract (store.h, MM_STORE_CAP_SHARED).
 *
 * Records that carry an event id are held by the runtime until the flush,
 * which claims all of their ids at once (engine/core/claims.c): here one
 * EVALSHA per VK_CHUNK ids, every chunk sent before any reply is read, so
 * a flush's ids cost one pipelined round trip and the loop never waits.
 * A claim is the mark key holding this store's token with the lease as its
 * expiry (SET NX PX); the flush that carries the ids' effects confirms them
 * once the backing store made it durable (mark.lua turns our token into
 * "1" with the dedup window as expiry); a flush abandoned releases them.
 *
 * Per id, claim.lua answers: won (the key was free, or is ours already: a
 * retried flush), duplicate (confirmed: counted before), or busy (another
 * worker's pending claim, with the time its lease has left). A worker that
 * dies leaves its claims to expire with their lease; a live one renews
 * them while its flush is retried (release.lua with the lease).
 *
 * When Valkey does not answer, claims fail with MM_EAGAIN and the runtime
 * retries them with backoff: the flush waits, nothing is counted twice or
 * lost. What Valkey loses (FLUSHALL, a restart without persistence) it
 * forgets: ids seen before may be counted again, the weaker guarantee
 * doc/valkey.md describes.
 */
#include "valkey_impl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "../lib/time.h"

enum { VK_C_CLAIM, VK_C_RENEW, VK_C_RELEASE };

/* One claim, renew or release call. The commands are built when called
 * (the caller's id strings may go) and sent from the deferred queue, so the
 * call completes the same way whether or not the cache answers. */
typedef struct vk_claim {
	vk_op_t op;
	int kind;               /* VK_C_* */
	vk_list_t *k, *a;       /* per batch of VK_CHUNK ids */
	size_t nbatch;
	mm_claim_t *ids;        /* the caller's; results go here */
	size_t n;
	int64_t now_ms;         /* when the call was made (busy leases) */
	int pending, sending, status;
} vk_claim_t;

typedef struct vk_claim_batch {
	vk_claim_t *c;
	size_t first, count;
} vk_claim_batch_t;

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
	cb(arg, status, status ? "valkey: the cache is unavailable for dedup claims" : "");
}

/* The result of id i from its reply element(s). */
static void vk_claim_result(vk_claim_t *c, mm_claim_t *id, const redisReply *r, size_t x)
{
	const redisReply *code, *ttl;

	if (c->kind != VK_C_CLAIM) {
		code = r->element[x];
		if (code->type != REDIS_REPLY_INTEGER)
			id->result = MM_EAGAIN;
		else if (code->integer != 1)
			id->result = MM_CLAIM_NOT_OWNER;
		else
			id->result = c->kind == VK_C_RENEW ? MM_CLAIM_RENEWED : MM_CLAIM_RELEASED;
		return;
	}
	code = r->element[2 * x];
	ttl = r->element[2 * x + 1];
	if (code->type != REDIS_REPLY_INTEGER || ttl->type != REDIS_REPLY_INTEGER) {
		id->result = MM_EAGAIN;
		return;
	}
	switch (code->integer) {
	case 1:
		id->result = MM_CLAIM_WON;
		break;
	case 2:
		id->result = MM_CLAIM_DUPLICATE;
		break;
	default:
		/* Held by another worker: ask again once its lease has run out. */
		id->result = MM_CLAIM_BUSY;
		id->lease_until_ms = c->now_ms + (ttl->integer > 0 ? ttl->integer : 0);
		break;
	}
}

static void vk_claim_reply(void *ctx, redisReply *r)
{
	vk_claim_batch_t *b = ctx;
	vk_claim_t *c = b->c;
	size_t per = c->kind == VK_C_CLAIM ? 2 : 1, i;

	if (!mm_vk_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements != per * b->count) {
		for (i = 0; i < b->count; i++)
			c->ids[b->first + i].result = MM_EAGAIN;
		c->status = MM_EAGAIN;
	} else {
		for (i = 0; i < b->count; i++)
			vk_claim_result(c, &c->ids[b->first + i], r, i);
	}
	free(b);
	if (--c->pending == 0 && !c->sending)
		vk_claim_done(&c->op);
}

static void vk_claim_run(vk_op_t *op)
{
	vk_claim_t *c = (vk_claim_t *)op;
	mm_valkey_t *st = op->st;
	vk_claim_batch_t *b = NULL;
	int script = c->kind == VK_C_CLAIM ? VK_S_CLAIM : VK_S_RELEASE;
	size_t i, j;

	c->sending = 1;
	for (i = 0; i < c->nbatch && !st->closing && st->state == VK_READY; i++) {
		if ((b = malloc(sizeof(*b))) == NULL)
			break;
		*b = (vk_claim_batch_t){c, i * VK_CHUNK, c->k[i].n};
		if (mm_vk_eval(st, MM_VALKEY_OP_CLAIM, script, &c->k[i], &c->a[i], vk_claim_reply,
			       b) != 0)
			break;
		c->pending++;
		b = NULL;
	}
	free(b);
	c->sending = 0;
	if (i < c->nbatch) {
		/* Unsent ids failed, retriably: the runtime asks again. */
		for (j = i * VK_CHUNK; j < c->n; j++)
			c->ids[j].result = MM_EAGAIN;
		c->status = MM_EAGAIN;
	}
	if (c->pending == 0)
		vk_claim_done(op);
}

/* Builds the batches of a claim call (KEYS: marks; ARGV: token, then the
 * lease, 0 for a release) and queues them. */
static int vk_claims(mm_valkey_t *st, int kind, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		     mm_store_cb cb, void *arg)
{
	vk_claim_t *c = calloc(1, sizeof(*c));
	size_t i;
	int rc = 0;

	if (c == NULL)
		return mm_diag_set(MM_ENOMEM, "valkey: cannot allocate a claim");
	c->nbatch = (n + VK_CHUNK - 1) / VK_CHUNK;
	c->k = calloc(c->nbatch + 1, sizeof(*c->k));
	c->a = calloc(c->nbatch + 1, sizeof(*c->a));
	if (c->k == NULL || c->a == NULL)
		rc = mm_diag_set(MM_ENOMEM, "valkey: cannot allocate a claim");
	for (i = 0; i < n && rc == 0; i++) {
		vk_list_t *k = &c->k[i / VK_CHUNK], *a = &c->a[i / VK_CHUNK];

		if (i % VK_CHUNK == 0 && (rc = mm_vk_list_str(a, st->token)) == 0)
			rc = mm_vk_list_i64(a, kind == VK_C_RELEASE ? 0 : st->lease_ms);
		if (rc == 0)
			rc = mm_vk_mark_key(st, k, ns->name, ids[i].id, ids[i].len);
	}
	if (rc) {
		for (i = 0; c->k && c->a && i < c->nbatch; i++) {
			mm_vk_list_free(&c->k[i]);
			mm_vk_list_free(&c->a[i]);
		}
		free(c->k);
		free(c->a);
		free(c);
		return rc;
	}
	st->refs++;
	c->op.st = st;
	c->op.cb = cb;
	c->op.arg = arg;
	c->kind = kind;
	c->ids = ids;
	c->n = n;
	c->now_ms = mm_now_ms();
	for (i = 0; i < n; i++)
		ids[i].result = 0;
	if (mm_vk_should_wait(st))
		mm_vk_wait(&c->op, vk_claim_run);
	else
		mm_vk_later(&c->op, vk_claim_run);
	return 0;
}

int mm_vk_claim(mm_store_t *base, const mm_ns_t *ns, mm_claim_t *ids, size_t n, int64_t ttl_ms,
		mm_store_cb cb, void *arg)
{
	mm_valkey_t *st = (mm_valkey_t *)base;

	/* A claim lives as long as its lease; confirming it gives it the dedup
	 * window (the marks' expiry), so ttl_ms is not needed here. */
	if (!st->dedup_valkey)
		return mm_store_claim(st->backing, ns, ids, n, ttl_ms, cb, arg);
	if (st->read_only)
		return mm_diag_set(MM_ENOTSUP, "valkey: claims on a store opened read-only");
	return vk_claims(st, VK_C_CLAIM, ns, ids, n, cb, arg);
}

int mm_vk_renew(mm_store_t *base, const mm_ns_t *ns, mm_claim_t *ids, size_t n, mm_store_cb cb,
		void *arg)
{
	mm_valkey_t *st = (mm_valkey_t *)base;

	if (!st->dedup_valkey)
		return mm_store_renew(st->backing, ns, ids, n, cb, arg);
	return vk_claims(st, VK_C_RENEW, ns, ids, n, cb, arg);
}

int mm_vk_release(mm_store_t *base, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		  mm_store_cb cb, void *arg)
{
	mm_valkey_t *st = (mm_valkey_t *)base;

	if (!st->dedup_valkey)
		return mm_store_release(st->backing, ns, ids, n, cb, arg);
	return vk_claims(st, VK_C_RELEASE, ns, ids, n, cb, arg);
}
