/*
 * valkey_recover.c: how the Valkey cache layer notices that the server lost
 * data and recovers: the generation check (at the handshake and every
 * `check_interval`), dropping every cached state under the prefix (SCAN +
 * UNLINK) and taking a new generation, deleting dirty keys (writes Valkey
 * did not confirm) before the cache is used again, and rebuilding the keys
 * used last (`hot_keys`) from the backing store. See valkey.c, "Data loss".
 */
#include "valkey_impl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/log.h"
#include "../lib/error.h"

/* ---- rebuilding ------------------------------------------------------------ */

static void vk_repop_hot_done(void *arg, int status, const char *detail)
{
	if (status != 0 && status != MM_ECLOSED)
		mm_log(MM_LOG_WARN, VK_LOG, "rebuilding the cache: %s", detail);
}

/* After a data loss: rebuild the keys this store used last, one read per
 * namespace. */
static void vk_repopulate_hot(mm_valkey_t *st)
{
	mm_key_t *keys = malloc((st->hot.n ? st->hot.n : 1) * sizeof(*keys));
	size_t i, n;
	vk_kent_t *e;

	if (keys == NULL)
		return;
	for (i = 0; i < st->nns; i++) {
		n = 0;
		for (e = st->hot.newest; e != NULL; e = e->older)
			if (e->ns == st->nss[i])
				keys[n++] = (mm_key_t){e->entity, e->len, e->bucket};
		if (n > 0 && mm_vk_repop_start(st, st->nss[i], keys, n, vk_repop_hot_done, st) != 0)
			mm_log(MM_LOG_WARN, VK_LOG, "rebuilding the cache: %s", mm_diag_msg());
	}
	free(keys);
}

/* ---- generations, scans, dirty keys -------------------------------------------- */

static void vk_tick_cb(uv_timer_t *t);

static void vk_ready(mm_valkey_t *st)
{
	int first = !st->ever_ready;

	st->state = VK_READY;
	st->ever_ready = 1;
	st->backoff_ms = VK_BACKOFF_MIN_MS;
	st->vs.connects++;
	mm_log(first ? MM_LOG_DEBUG : MM_LOG_INFO, VK_LOG, "%s:%d: cache in use (generation %s)",
	       st->host, st->port, st->gen);
	uv_timer_start(&st->tick, vk_tick_cb, (uint64_t)st->check_ms, (uint64_t)st->check_ms);
	mm_vk_release_waiting(st);
	if (st->repop_pending) {
		st->repop_pending = 0;
		vk_repopulate_hot(st);
	}
}

static void vk_gen_adopted(void *ctx, redisReply *r)
{
	mm_valkey_t *st = ctx;

	if (r == NULL)
		return;
	if (r->type != REDIS_REPLY_STRING || r->len >= sizeof(st->gen)) {
		mm_vk_drop(st, "cannot read back the cache generation");
		return;
	}
	memcpy(st->gen, r->str, r->len);
	st->gen[r->len] = '\0';
	st->have_gen = 1;
	st->scanning = 0;
	mm_vk_replay_dirty(st);
}

static void vk_ignore(void *ctx, redisReply *r)
{
}

/* The scan is over: a new generation (SET NX: another store may have set
 * one already, so it is read back and adopted). */
static void vk_new_gen(mm_valkey_t *st)
{
	vk_list_t *l = &st->sa;
	char gen[96];
	int rc;

	snprintf(gen, sizeof(gen), "%s:%016" PRIx64, st->run_id, mm_vk_rand(st));
	mm_vk_list_reset(l);
	if ((rc = mm_vk_list_str(l, "SET")) || (rc = mm_buf_printf(&l->b, "%sgen", st->prefix)) ||
	    (rc = mm_vk_list_mark(l)) || (rc = mm_vk_list_str(l, gen)) || (rc = mm_vk_list_str(l, "NX")) ||
	    (rc = mm_vk_command(st, MM_VALKEY_OP_CHECK, l, vk_ignore, st)))
		goto fail;
	mm_vk_list_reset(l);
	if ((rc = mm_vk_list_str(l, "GET")) || (rc = mm_buf_printf(&l->b, "%sgen", st->prefix)) ||
	    (rc = mm_vk_list_mark(l)) ||
	    (rc = mm_vk_command(st, MM_VALKEY_OP_CHECK, l, vk_gen_adopted, st)))
		goto fail;
	return;
fail:
	mm_vk_drop(st, mm_diag_msg());
}

static void vk_scan_next(mm_valkey_t *st);

static void vk_scan_reply(void *ctx, redisReply *r)
{
	mm_valkey_t *st = ctx;
	redisReply *keys;
	vk_list_t *l = &st->sa;
	size_t i;
	int rc = 0;

	if (r == NULL || !st->scanning)
		return;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING ||
	    r->element[0]->len >= sizeof(st->scan_cursor) ||
	    r->element[1]->type != REDIS_REPLY_ARRAY) {
		mm_vk_drop(st, "SCAN: unexpected reply");
		return;
	}
	memcpy(st->scan_cursor, r->element[0]->str, r->element[0]->len);
	st->scan_cursor[r->element[0]->len] = '\0';
	keys = r->element[1];
	if (keys->elements > 0) {
		mm_vk_list_reset(l);
		rc = mm_vk_list_str(l, "UNLINK");
		for (i = 0; i < keys->elements && rc == 0; i++)
			if (keys->element[i]->type == REDIS_REPLY_STRING)
				rc = mm_vk_list_add(l, keys->element[i]->str, keys->element[i]->len);
		if (rc == 0)
			rc = mm_vk_command(st, MM_VALKEY_OP_CHECK, l, vk_ignore, st);
		if (rc) {
			mm_vk_drop(st, mm_diag_msg());
			return;
		}
	}
	if (strcmp(st->scan_cursor, "0") == 0)
		vk_new_gen(st);
	else
		vk_scan_next(st);
}

static void vk_scan_next(mm_valkey_t *st)
{
	vk_list_t *l = &st->sa;
	const char *p;
	int rc;

	mm_vk_list_reset(l);
	if ((rc = mm_vk_list_str(l, "SCAN")) || (rc = mm_vk_list_str(l, st->scan_cursor)) ||
	    (rc = mm_vk_list_str(l, "MATCH")))
		goto fail;
	/* The prefix is matched literally: glob characters are escaped. */
	for (p = st->prefix; *p && rc == 0; p++) {
		if (strchr("*?[]\\", *p))
			rc = mm_buf_put_u8(&l->b, '\\');
		if (rc == 0)
			rc = mm_buf_put_u8(&l->b, (uint8_t)*p);
	}
	if (rc || (rc = mm_buf_append(&l->b, "s:*", 3)) || (rc = mm_vk_list_mark(l)) ||
	    (rc = mm_vk_list_str(l, "COUNT")) || (rc = mm_vk_list_str(l, "1000")) ||
	    (rc = mm_vk_command(st, MM_VALKEY_OP_CHECK, l, vk_scan_reply, st)))
		goto fail;
	return;
fail:
	mm_vk_drop(st, mm_diag_msg());
}

/*
 * The server lost data, restarted (maybe from an older snapshot) or is not
 * the one we knew: drop every cached state under the prefix, then take a
 * new generation. why is NULL for a store's first sight of a server with
 * no generation (a new cache): scanning it costs little and makes sure
 * nothing older is trusted.
 */
void mm_vk_loss(mm_valkey_t *st, const char *why)
{
	if (why != NULL) {
		st->vs.data_losses++;
		st->repop_pending = 1;
		mm_log(MM_LOG_WARN, VK_LOG, "%s:%d: %s: dropping cached states and rebuilding",
		       st->host, st->port, why);
	}
	st->state = VK_CONNECTING;
	uv_timer_stop(&st->tick);
	st->scanning = 1;
	/* The scan deletes what is dirty now; keys dirtied later are tracked. */
	st->dirty.overflow = 0;
	snprintf(st->scan_cursor, sizeof(st->scan_cursor), "0");
	vk_scan_next(st);
}

typedef struct vk_replay {
	mm_valkey_t *st;
	int pending, failed, sending;
	uint64_t upto;
} vk_replay_t;

static void vk_replay_done(vk_replay_t *rp)
{
	mm_valkey_t *st = rp->st;

	st->replaying = 0;
	if (!rp->failed) {
		mm_vk_keyset_trim(&st->dirty, rp->upto);
		st->vs.dirty = st->dirty.n;
		if (st->state == VK_CONNECTING && st->ac != NULL)
			vk_ready(st);
	} else {
		/* The server refused (out of memory?): reconnect and try again
		 * after a backoff rather than trust it. */
		mm_vk_drop(st, "cannot delete dirty keys");
	}
	free(rp);
}

static void vk_replay_reply(void *ctx, redisReply *r)
{
	vk_replay_t *rp = ctx;

	if (mm_vk_reply_ok(r) && r->type == REDIS_REPLY_INTEGER)
		rp->st->vs.invalidated += (uint64_t)r->integer;
	else
		rp->failed = 1;
	if (--rp->pending == 0 && !rp->sending)
		vk_replay_done(rp);
}

/* Sends INVAL for the keys k (epoch first) with a fresh seed. */
int mm_vk_inval_batch(mm_valkey_t *st, vk_list_t *k, vk_list_t *a, vk_reply_fn fn, void *ctx)
{
	int rc;

	mm_vk_list_reset(a);
	if ((rc = mm_vk_list_i64(a, (int64_t)(mm_vk_rand(st) >> 16))) ||
	    (rc = mm_vk_list_i64(a, st->cache_ttl_ms)))
		return rc;
	return mm_vk_eval(st, MM_VALKEY_OP_INVALIDATE, VK_S_INVAL, k, a, fn, ctx);
}

/*
 * Deletes every dirty key (grouped by bucket, each group bumping its epoch)
 * and, when the store is (re)connecting, becomes ready once done. An
 * overflowed dirty set, which forgot keys, takes a full scan instead.
 */
void mm_vk_replay_dirty(mm_valkey_t *st)
{
	vk_list_t k = {0}, a = {0};
	vk_replay_t *rp;
	vk_kent_t *e, *g;
	size_t n;
	int rc = 0;

	if (st->replaying)
		return;
	if (st->dirty.overflow) {
		mm_vk_loss(st, NULL);
		return;
	}
	if (st->dirty.n == 0) {
		if (st->state == VK_CONNECTING)
			vk_ready(st);
		return;
	}
	rp = calloc(1, sizeof(*rp));
	if (rp == NULL) {
		mm_vk_drop(st, "out of memory");
		return;
	}
	rp->st = st;
	rp->upto = st->kseq;
	rp->sending = 1;
	st->replaying = 1;
	/* Dirty keys are few and come in runs of one bucket (a flush's keys). */
	for (e = st->dirty.oldest; e != NULL && rc == 0;) {
		mm_vk_list_reset(&k);
		rc = mm_vk_coord_key(st, &k, 'e', e->ns->name, e->bucket);
		for (g = e, n = 0; g != NULL && rc == 0 && n < VK_CHUNK && g->ns == e->ns &&
				   g->bucket == e->bucket;
		     g = g->newer, n++)
			rc = mm_vk_state_key(st, &k, g->ns->name, g->bucket, g->entity, g->len);
		if (rc == 0 && (rc = mm_vk_inval_batch(st, &k, &a, vk_replay_reply, rp)) == 0)
			rp->pending++;
		e = g;
	}
	mm_vk_list_free(&k);
	mm_vk_list_free(&a);
	rp->sending = 0;
	if (rc)
		rp->failed = 1;
	if (rp->pending == 0)
		vk_replay_done(rp);
}

static void vk_check_reply(void *ctx, redisReply *r)
{
	mm_valkey_t *st = ctx;

	st->checking = 0;
	if (r == NULL || st->state != VK_READY)
		return;
	if (r->type == REDIS_REPLY_ERROR)
		return;
	if (r->type != REDIS_REPLY_STRING || strlen(st->gen) != r->len ||
	    memcmp(st->gen, r->str, r->len) != 0)
		mm_vk_loss(st, r->type == REDIS_REPLY_STRING ? "the cache generation changed"
							  : "the cache generation is gone");
}

/* Every check_interval while ready: is the generation still ours? Are
 * there dirty keys to invalidate? */
static void vk_tick_cb(uv_timer_t *t)
{
	mm_valkey_t *st = t->data;
	vk_list_t *l = &st->sa;
	int rc;

	if (st->state != VK_READY)
		return;
	if (st->dirty.n > 0 || st->dirty.overflow)
		mm_vk_replay_dirty(st);
	if (st->checking || st->state != VK_READY)
		return;
	mm_vk_list_reset(l);
	if ((rc = mm_vk_list_str(l, "GET")) || (rc = mm_buf_printf(&l->b, "%sgen", st->prefix)) ||
	    (rc = mm_vk_list_mark(l)) ||
	    (rc = mm_vk_command(st, MM_VALKEY_OP_CHECK, l, vk_check_reply, st)))
		return;
	st->checking = 1;
}

int mm_valkey_repopulate(mm_store_t *base, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
			 mm_store_cb cb, void *arg)
{
	mm_valkey_t *st = mm_vk_of(base);
	vk_ns_t *vn;
	size_t i;

	if (st == NULL)
		return mm_diag_set(MM_EINVAL,
				   "valkey: repopulate needs a store opened as \"valkey\"");
	if (ns == NULL || ns->name == NULL || ns->m == NULL || strlen(ns->name) > VK_NS_MAX ||
	    n == 0 || keys == NULL || cb == NULL)
		return mm_diag_set(MM_EINVAL,
				   "valkey: repopulate needs a namespace, keys and a callback");
	for (i = 0; i < n; i++)
		if (keys[i].entity == NULL || keys[i].len < 1 || keys[i].len > 1024)
			return mm_diag_set(MM_EINVAL, "valkey: repopulate key %zu is malformed", i);
	if ((vn = mm_vk_ns_need(st, ns)) == NULL)
		return MM_ENOMEM;
	return mm_vk_repop_start(st, vn, keys, n, cb, arg);
}
