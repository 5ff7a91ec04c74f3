/*
 * valkey_read.c: the Valkey cache layer's read path. get_many looks every
 * key up with its bucket's epoch (MGET), reads the misses from the backing
 * store, answers, then fills the cache with a script that writes only if
 * the epoch is unchanged and no write lease is present (valkey.c,
 * "Consistency protocol"). Repopulating is the same read with every key
 * taken from the store. count_hll answers a multi-bucket HLL count
 * with one PFCOUNT when every bucket is cached.
 */
#include "valkey_impl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"

/* ---- reads: get_many and repopulate ------------------------------------------- */

enum { VK_R_HIT = 1, VK_R_SEEN = 2, VK_R_CORRUPT = 4 };

typedef struct vk_read {
	vk_op_t op;
	vk_ns_t *ns;
	const mm_key_t *keys;
	size_t n;
	void *states;           /* the caller's (get_many); NULL for repopulate */
	uint8_t *found;
	int repop;              /* repopulate: every key is read from the store */
	uint8_t *flags;         /* per key: VK_R_* */
	vk_list_t keystr;       /* per key: entry, epoch, lease set */
	vk_list_t epochs;       /* per key: "n" (none), "v<epoch>", or "" (not seen) */
	int nofill;             /* the epoch list could not be built */
	size_t next_chunk;
	int pending, sending;
	/* Misses, read from the backing store. */
	size_t *miss, nmiss;
	mm_key_t *mkeys;
	unsigned char *mstates;
	uint8_t *mfound;
	vk_list_t fill;         /* per miss: its cache value */
	/* repopulate: owned copies of the keys */
	mm_key_t *own_keys;
	char *own_bytes;
} vk_read_t;

static void vk_read_free(vk_read_t *rd)
{
	mm_valkey_t *st = rd->op.st;
	size_t j;

	if (rd->mstates != NULL)
		for (j = 0; j < rd->nmiss; j++)
			rd->ns->m.vt->destroy(&rd->ns->m, rd->mstates + j * MM_STATE_MAX);
	free(rd->flags);
	mm_vk_list_free(&rd->keystr);
	mm_vk_list_free(&rd->epochs);
	free(rd->miss);
	free(rd->mkeys);
	free(rd->mstates);
	free(rd->mfound);
	mm_vk_list_free(&rd->fill);
	free(rd->own_keys);
	free(rd->own_bytes);
	free(rd);
	mm_vk_unref(st);
}

/* Answers the caller once (get_many answers before its fill). */
static void vk_read_complete(vk_read_t *rd, int status, const char *detail)
{
	mm_store_cb cb = rd->op.cb;

	rd->op.cb = NULL;
	if (cb != NULL)
		cb(rd->op.arg, status, detail);
}

static void vk_read_end(vk_read_t *rd, int status, const char *detail)
{
	vk_read_complete(rd, status, detail);
	vk_read_free(rd);
}

static void vk_fill_reply(void *ctx, redisReply *r)
{
	vk_read_t *rd = ctx;
	mm_valkey_t *st = rd->op.st;

	if (mm_vk_reply_ok(r) && r->type == REDIS_REPLY_INTEGER) {
		st->vs.fills += (uint64_t)r->integer;
		if (rd->repop)
			st->vs.repopulated += (uint64_t)r->integer;
	}
	if (--rd->pending == 0 && !rd->sending)
		vk_read_end(rd, 0, "");
}

/* Appends one key's FILL arguments (entry, epoch, lease; value, epoch
 * seen, expiry, nx). Key i is miss j; the fill runs after the caller has
 * its answer, when its keys may be gone: the bucket comes from our copy. */
static int vk_fill_args(vk_read_t *rd, size_t i, size_t j, vk_list_t *k, vk_list_t *a)
{
	mm_valkey_t *st = rd->op.st;
	const char *p;
	size_t len, x;
	int rc = 0;

	for (x = 0; x < 3 && rc == 0; x++) {
		p = mm_vk_list_at(&rd->keystr, 3 * i + x, &len);
		rc = mm_vk_list_add(k, p, len);
	}
	if (rc)
		return rc;
	p = mm_vk_list_at(&rd->fill, j, &len);
	if ((rc = mm_vk_list_add(a, p, len)))
		return rc;
	p = mm_vk_list_at(&rd->epochs, i, &len);
	if ((rc = mm_vk_list_add(a, p, len)) ||
	    (rc = mm_vk_list_i64(a, mm_vk_ns_expire(st, rd->ns, rd->mkeys[j].bucket))))
		return rc;
	return mm_vk_list_str(a, rd->repop || (rd->flags[i] & VK_R_CORRUPT) ? "0" : "1");
}

/* Writes the values read from the store into the cache, guarded by the
 * epochs seen before the store was read. */
static void vk_read_fill(vk_read_t *rd)
{
	mm_valkey_t *st = rd->op.st;
	vk_list_t k = {0}, a = {0};
	size_t j, batch = 0;
	int rc = 0;

	rd->sending = 1;
	for (j = 0; j < rd->nmiss && rc == 0 && !rd->nofill && mm_vk_usable(st); j++) {
		size_t i = rd->miss[j];

		if (!(rd->flags[i] & VK_R_SEEN))
			continue;
		if (batch == 0) {
			mm_vk_list_reset(&k);
			mm_vk_list_reset(&a);
			rc = mm_vk_list_i64(&a, st->cache_ttl_ms);
		}
		if (rc == 0)
			rc = vk_fill_args(rd, i, j, &k, &a);
		if (rc == 0 && ++batch == VK_CHUNK) {
			if (mm_vk_eval(st, MM_VALKEY_OP_FILL, VK_S_FILL, &k, &a, vk_fill_reply,
				    rd) == 0)
				rd->pending++;
			batch = 0;
		}
	}
	if (rc == 0 && batch > 0 &&
	    mm_vk_eval(st, MM_VALKEY_OP_FILL, VK_S_FILL, &k, &a, vk_fill_reply, rd) == 0)
		rd->pending++;
	mm_vk_list_free(&k);
	mm_vk_list_free(&a);
	rd->sending = 0;
	if (rd->pending == 0)
		vk_read_end(rd, 0, "");
}

/* The backing store answered the misses: hand the states over (decoded
 * from the bytes the cache will get), answer, then fill. */
static void vk_read_stored(void *arg, int status, const char *detail)
{
	vk_read_t *rd = arg;
	mm_valkey_t *st = rd->op.st;
	const mm_monoid_t *m = &rd->ns->m;
	mm_buf_t enc = {0};
	char why[512];
	size_t j;
	int rc = 0;

	if (status != 0 || st->closing) {
		vk_read_end(rd, status ? status : MM_ECLOSED, status ? detail : "valkey: closing");
		return;
	}
	for (j = 0; j < rd->nmiss && rc == 0; j++) {
		size_t i = rd->miss[j];

		enc.len = 0;
		if (!rd->mfound[j] && rd->ns->negative == VK_NEG_EMPTY) {
			if ((rc = mm_vk_list_add(&rd->fill, "", 0)))
				break;
			continue;
		}
		if ((rc = m->vt->encode(m, rd->mstates + j * MM_STATE_MAX, &enc)) ||
		    (rc = mm_vk_cache_value(rd->ns, enc.p, enc.len, &rd->fill)))
			break;
		if (rd->repop || !rd->mfound[j])
			continue;
		if ((rc = m->vt->decode(m, (char *)rd->states + i * MM_STATE_MAX, enc.p, enc.len)))
			break;
		rd->found[i] = 1;
	}
	mm_buf_free(&enc);
	if (rc) {
		snprintf(why, sizeof(why), "%s", mm_diag_msg());
		vk_read_end(rd, rc, why);
		return;
	}
	if (!rd->repop) {
		st->vs.misses += rd->nmiss;
		vk_read_complete(rd, 0, "");
	}
	vk_read_fill(rd);
}

/* Every lookup is in: read what the cache did not answer from the store. */
static void vk_read_looked(vk_read_t *rd)
{
	mm_valkey_t *st = rd->op.st;
	char why[512];
	size_t i, j;
	int rc;

	for (i = 0; i < rd->n; i++)
		if (!(rd->flags[i] & VK_R_HIT))
			rd->nmiss++;
	if (rd->nmiss == 0) {
		vk_read_end(rd, 0, "");
		return;
	}
	rd->miss = malloc(rd->nmiss * sizeof(*rd->miss));
	rd->mkeys = malloc(rd->nmiss * sizeof(*rd->mkeys));
	rd->mfound = calloc(rd->nmiss, 1);
	if (rd->miss && rd->mkeys && rd->mfound)
		rd->mstates = aligned_alloc(16, rd->nmiss * MM_STATE_MAX);
	if (rd->mstates == NULL) {
		vk_read_end(rd, MM_ENOMEM, "valkey: cannot allocate the misses of a read");
		return;
	}
	for (i = 0, j = 0; i < rd->n; i++)
		if (!(rd->flags[i] & VK_R_HIT)) {
			rd->miss[j] = i;
			rd->mkeys[j] = rd->keys[i];
			rd->ns->m.vt->init(&rd->ns->m, rd->mstates + j * MM_STATE_MAX);
			j++;
		}
	rc = mm_store_get_many(st->backing, &rd->ns->ns, rd->mkeys, rd->nmiss, rd->mstates,
			       rd->mfound, vk_read_stored, rd);
	if (rc) {
		snprintf(why, sizeof(why), "%s", mm_diag_msg());
		vk_read_end(rd, rc, why);
	}
}

/* Notes the epoch a lookup saw for key i (e NULL: the lookup failed). The
 * list gets exactly one string per key, in order. */
static void vk_read_epoch(vk_read_t *rd, size_t i, const redisReply *e)
{
	int rc = 0, seen = 0;

	if (e != NULL && e->type == REDIS_REPLY_STRING) {
		seen = 1;
		if ((rc = mm_buf_put_u8(&rd->epochs.b, 'v')) == 0)
			rc = mm_buf_append(&rd->epochs.b, e->str, e->len);
	} else if (e != NULL && e->type == REDIS_REPLY_NIL) {
		seen = 1;
		rc = mm_buf_put_u8(&rd->epochs.b, 'n');
	}
	if (rc == 0)
		rc = mm_vk_list_mark(&rd->epochs);
	if (rc)
		rd->nofill = 1;
	else if (seen)
		rd->flags[i] |= VK_R_SEEN;
}

static void vk_read_mget(void *ctx, redisReply *r)
{
	vk_read_t *rd = ctx;
	mm_valkey_t *st = rd->op.st;
	const mm_monoid_t *m = &rd->ns->m;
	size_t first = rd->next_chunk, cnt, x;
	int ok;

	cnt = rd->n - first < VK_READ_CHUNK ? rd->n - first : VK_READ_CHUNK;
	rd->next_chunk += cnt;
	ok = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 * cnt;
	for (x = 0; x < cnt; x++) {
		size_t i = first + x;
		const redisReply *v;
		void *state;

		vk_read_epoch(rd, i, ok ? r->element[2 * x + 1] : NULL);
		if (!ok || rd->repop)
			continue;
		v = r->element[2 * x];
		if (v->type != REDIS_REPLY_STRING)
			continue;
		if (v->len == 0 && rd->ns->negative == VK_NEG_EMPTY) {
			/* The marker of a bucket the store lacks. */
			st->vs.hits++;
			rd->flags[i] |= VK_R_HIT;
			continue;
		}
		state = (char *)rd->states + i * MM_STATE_MAX;
		if (mm_vk_from_cache(rd->ns, v->str, v->len, state) != 0) {
			/* Refilled from the store, replacing the bad value. */
			st->vs.corrupt++;
			rd->flags[i] |= VK_R_CORRUPT;
			m->vt->destroy(m, state);
			m->vt->init(m, state);
			continue;
		}
		st->vs.hits++;
		rd->flags[i] |= VK_R_HIT;
		rd->found[i] = !(rd->ns->negative == VK_NEG_IDENTITY &&
				 m->vt->is_identity(m, state));
	}
	if (--rd->pending == 0 && !rd->sending)
		vk_read_looked(rd);
}

/* Sends the lookups: MGET of entry and epoch per key, in chunks. 0 once
 * something is on its way (unsent chunks are completed as failures), or an
 * error with nothing sent. */
static int vk_read_send(vk_read_t *rd)
{
	mm_valkey_t *st = rd->op.st;
	vk_list_t *l = &st->sa;
	size_t i, x, cnt, sent = 0;
	int rc = 0;

	for (i = 0; i < rd->n && rc == 0; i++) {
		const mm_key_t *k = &rd->keys[i];

		if ((rc = mm_vk_state_key(st, &rd->keystr, rd->ns->name, k->bucket, k->entity,
				       k->len)) ||
		    (rc = mm_vk_coord_key(st, &rd->keystr, 'e', rd->ns->name, k->bucket)))
			break;
		rc = mm_vk_coord_key(st, &rd->keystr, 'l', rd->ns->name, k->bucket);
	}
	if (rc)
		return rc;
	rd->sending = 1;
	for (i = 0; i < rd->n && rc == 0; i += cnt) {
		cnt = rd->n - i < VK_READ_CHUNK ? rd->n - i : VK_READ_CHUNK;
		mm_vk_list_reset(l);
		rc = mm_vk_list_str(l, "MGET");
		for (x = 0; x < cnt && rc == 0; x++) {
			size_t kl, el;
			const char *kp = mm_vk_list_at(&rd->keystr, 3 * (i + x), &kl);
			const char *ep = mm_vk_list_at(&rd->keystr, 3 * (i + x) + 1, &el);

			if ((rc = mm_vk_list_add(l, kp, kl)) == 0)
				rc = mm_vk_list_add(l, ep, el);
		}
		if (rc == 0 && (rc = mm_vk_command(st, MM_VALKEY_OP_GET, l, vk_read_mget, rd)) == 0) {
			rd->pending++;
			sent += cnt;
		}
	}
	rd->sending = 0;
	if (rd->pending == 0)
		return rc ? rc : mm_diag_set(MM_ECLOSED, "valkey: nothing sent");
	/* Keys of chunks that could not go were not looked up. */
	for (i = sent; i < rd->n; i++)
		vk_read_epoch(rd, i, NULL);
	rd->next_chunk = 0;
	return 0;
}

static vk_read_t *vk_read_new(mm_valkey_t *st, vk_ns_t *vn, size_t n)
{
	vk_read_t *rd = calloc(1, sizeof(*rd));

	if (rd == NULL)
		return NULL;
	rd->flags = calloc(n, 1);
	if (rd->flags == NULL) {
		free(rd);
		return NULL;
	}
	rd->op.st = st;
	rd->ns = vn;
	rd->n = n;
	st->refs++;
	return rd;
}

/* Starts a read that waited for the first handshake. */
static void vk_read_run(vk_op_t *op)
{
	vk_read_t *rd = (vk_read_t *)op;
	mm_valkey_t *st = op->st;
	char why[512];
	int rc;

	if (!st->closing && mm_vk_usable(st) && vk_read_send(rd) == 0)
		return;
	if (rd->repop || st->closing) {
		vk_read_end(rd, MM_EAGAIN, "valkey: the cache is unavailable");
		return;
	}
	/* The cache is unavailable: the store answers alone, to the caller. */
	st->vs.bypassed++;
	rc = mm_store_get_many(st->backing, &rd->ns->ns, rd->keys, rd->n, rd->states, rd->found,
			       op->cb, op->arg);
	if (rc) {
		snprintf(why, sizeof(why), "%s", mm_diag_msg());
		vk_read_end(rd, rc, why);
		return;
	}
	rd->op.cb = NULL;
	vk_read_free(rd);
}

int mm_vk_get_many(mm_store_t *base, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
		       void *states, uint8_t *found, mm_store_cb cb, void *arg)
{
	mm_valkey_t *st = (mm_valkey_t *)base;
	vk_ns_t *vn = mm_vk_ns_need(st, ns);
	vk_read_t *rd;
	size_t i;

	if (vn == NULL)
		return MM_ENOMEM;
	for (i = 0; i < n; i++)
		mm_vk_remember(st, &st->hot, vn, &keys[i]);
	memset(found, 0, n);
	if (mm_vk_usable(st) || mm_vk_should_wait(st)) {
		rd = vk_read_new(st, vn, n);
		if (rd == NULL)
			return mm_diag_set(MM_ENOMEM, "valkey: cannot allocate a read");
		rd->keys = keys;
		rd->states = states;
		rd->found = found;
		rd->op.cb = cb;
		rd->op.arg = arg;
		if (mm_vk_should_wait(st)) {
			mm_vk_wait(&rd->op, vk_read_run);
			return 0;
		}
		if (vk_read_send(rd) == 0)
			return 0;
		rd->op.cb = NULL;
		vk_read_free(rd);
	}
	st->vs.bypassed++;
	return mm_store_get_many(st->backing, &vn->ns, keys, n, states, found, cb, arg);
}

static void vk_repop_fail(vk_op_t *op)
{
	vk_read_end((vk_read_t *)op, MM_EAGAIN, "valkey: the cache is unavailable");
}

/* A read that rebuilds keys (copied) from the store. Always completes
 * through cb. */
int mm_vk_repop_start(mm_valkey_t *st, vk_ns_t *vn, const mm_key_t *keys, size_t n,
			  mm_store_cb cb, void *arg)
{
	vk_read_t *rd;
	size_t i, bytes = 0, off = 0;

	for (i = 0; i < n; i++)
		bytes += keys[i].len;
	rd = vk_read_new(st, vn, n);
	if (rd == NULL)
		return mm_diag_set(MM_ENOMEM, "valkey: cannot allocate a repopulate");
	rd->repop = 1;
	rd->own_keys = malloc(n * sizeof(*rd->own_keys));
	rd->own_bytes = malloc(bytes ? bytes : 1);
	if (rd->own_keys == NULL || rd->own_bytes == NULL) {
		vk_read_free(rd);
		return mm_diag_set(MM_ENOMEM, "valkey: cannot allocate a repopulate");
	}
	for (i = 0; i < n; i++) {
		memcpy(rd->own_bytes + off, keys[i].entity, keys[i].len);
		rd->own_keys[i] = (mm_key_t){rd->own_bytes + off, keys[i].len, keys[i].bucket};
		off += keys[i].len;
	}
	rd->keys = rd->own_keys;
	rd->op.cb = cb;
	rd->op.arg = arg;
	if (mm_vk_should_wait(st))
		mm_vk_wait(&rd->op, vk_read_run);
	else if (!mm_vk_usable(st) || vk_read_send(rd) != 0)
		mm_vk_later(&rd->op, vk_repop_fail);
	return 0;
}

/* ---- cardinality ---------------------------------------------------------------- */

/* A count is built when called (the caller's arrays may go) and sent from
 * the deferred queue, so it completes the same way whether or not the cache
 * answers. */
typedef struct vk_count {
	vk_op_t op;
	vk_list_t k, a;
	uint64_t *count, *nonempty;
	int *cached;
	size_t n;
} vk_count_t;

static void vk_count_done(vk_op_t *op)
{
	vk_count_t *c = (vk_count_t *)op;
	mm_valkey_t *st = op->st;
	mm_store_cb cb = op->cb;
	void *arg = op->arg;

	mm_vk_list_free(&c->k);
	mm_vk_list_free(&c->a);
	free(c);
	mm_vk_unref(st);
	cb(arg, 0, "");
}

static void vk_count_reply(void *ctx, redisReply *r)
{
	vk_count_t *c = ctx;

	if (mm_vk_reply_ok(r) && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer >= 0 &&
	    r->element[1]->type == REDIS_REPLY_INTEGER) {
		*c->count = (uint64_t)r->element[0]->integer;
		*c->nonempty = (uint64_t)r->element[1]->integer;
		*c->cached = 1;
		c->op.st->vs.hits += c->n;
	}
	vk_count_done(&c->op);
}

static void vk_count_run(vk_op_t *op)
{
	vk_count_t *c = (vk_count_t *)op;
	mm_valkey_t *st = op->st;

	if (!st->closing && mm_vk_usable(st) &&
	    mm_vk_eval(st, MM_VALKEY_OP_COUNT, VK_S_COUNT, &c->k, &c->a, vk_count_reply, c) == 0)
		return;
	vk_count_done(op);
}

/* The store's count_hll (store.c checked the arguments). */
int mm_vk_count_hll(mm_store_t *base, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
		    uint64_t *count, uint64_t *nonempty, int *cached, mm_store_cb cb, void *arg)
{
	mm_valkey_t *st = (mm_valkey_t *)base;
	vk_count_t *c;
	vk_ns_t *vn;
	size_t i;
	int rc = 0;

	if ((vn = mm_vk_ns_need(st, ns)) == NULL)
		return MM_ENOMEM;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return mm_diag_set(MM_ENOMEM, "valkey: cannot allocate a count");
	for (i = 0; i < n && rc == 0 && n <= VK_COUNT_MAX; i++)
		rc = mm_vk_state_key(st, &c->k, vn->name, keys[i].bucket, keys[i].entity, keys[i].len);
	if (rc == 0)
		rc = mm_vk_list_i64(&c->a, (int64_t)st->empty_hll_len);
	if (rc) {
		mm_vk_list_free(&c->k);
		mm_vk_list_free(&c->a);
		free(c);
		return rc;
	}
	st->refs++;
	c->op.st = st;
	c->op.cb = cb;
	c->op.arg = arg;
	c->count = count;
	c->nonempty = nonempty;
	c->cached = cached;
	c->n = n;
	*cached = 0;
	for (i = 0; i < n; i++)
		mm_vk_remember(st, &st->hot, vn, &keys[i]);
	/* More keys than one script takes: the caller reads and merges. */
	if (n > VK_COUNT_MAX)
		mm_vk_later(&c->op, vk_count_done);
	else if (mm_vk_should_wait(st))
		mm_vk_wait(&c->op, vk_count_run);
	else
		mm_vk_later(&c->op, vk_count_run);
	return 0;
}
