/*
 * valkey_write.c: the Valkey cache layer's write path. apply() takes a
 * lease on every bucket the flush touches, writes the backing store, then
 * per bucket updates the cached entries in place (INCRBY, PFMERGE, or
 * compare-and-set of bytes merged in C) and releases the lease, or deletes
 * the entries (and bumps the epoch) when it holds no lease, or remembers
 * them as dirty when Valkey does not answer (valkey.c, "Consistency
 * protocol" and "Compare-and-set"). With dedup = valkey the flush's marks
 * go to Valkey once it is durable.
 */
#include "valkey_impl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"

/* ---- writes ------------------------------------------------------------------------ */

typedef struct vk_item {
	vk_ns_t *ns;
	mm_key_t key;
	int64_t expire_ms;
	const void *state;
} vk_item_t;

enum { VK_G_NONE, VK_G_UPDATE, VK_G_DELETE, VK_G_RELEASE, VK_G_INVAL };

typedef struct vk_group {
	vk_ns_t *ns;
	int64_t bucket;
	size_t first, count;
	int leased;
} vk_group_t;

typedef struct mm_vk_apply {
	vk_op_t op;
	mm_flush_t *f;
	size_t nmarks;          /* marks kept from the backing store (dedup = valkey) */
	vk_item_t *items;
	size_t nitems;
	vk_group_t *groups;
	size_t ngroups;
	char member[64];        /* this write's lease */
	int status;
	char detail[512];
	int pending, sending;
} vk_apply_t;

/* The context of one batch command of a write. */
typedef struct vk_batch {
	vk_apply_t *ap;
	vk_group_t *g;
	size_t first, count;    /* items */
	int last;
} vk_batch_t;

static int vk_cmp_item(const void *x, const void *y)
{
	const vk_item_t *a = x, *b = y;

	if (a->ns != b->ns)
		return strcmp(a->ns->name, b->ns->name);
	return (a->key.bucket > b->key.bucket) - (a->key.bucket < b->key.bucket);
}

static void vk_apply_free(vk_apply_t *ap)
{
	mm_valkey_t *st = ap->op.st;

	free(ap->items);
	free(ap->groups);
	free(ap);
	mm_vk_unref(st);
}

static void vk_apply_finish(vk_apply_t *ap)
{
	mm_store_cb cb = ap->op.cb;
	void *arg = ap->op.arg;
	int status = ap->status;
	char detail[512];

	snprintf(detail, sizeof(detail), "%s", ap->detail);
	vk_apply_free(ap);
	cb(arg, status, detail);
}

static void vk_apply_step(vk_apply_t *ap)
{
	if (--ap->pending == 0 && !ap->sending)
		vk_apply_finish(ap);
}

/* Remembers the batch's keys as dirty: Valkey did not confirm them. */
static void vk_batch_dirty(vk_batch_t *b)
{
	mm_valkey_t *st = b->ap->op.st;
	size_t i;

	for (i = 0; i < b->count; i++)
		mm_vk_remember(st, &st->dirty, b->ap->items[b->first + i].ns,
			    &b->ap->items[b->first + i].key);
}

static void vk_post_reply(void *ctx, redisReply *r)
{
	vk_batch_t *b = ctx;
	mm_valkey_t *st = b->ap->op.st;

	if (mm_vk_reply_ok(r) && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[0]->type == REDIS_REPLY_INTEGER) {
		if (r->element[0]->integer == 1) {
			st->vs.updates += (uint64_t)r->element[1]->integer;
		} else {
			st->vs.lost_leases++;
			st->vs.invalidated += b->count;
		}
	} else {
		vk_batch_dirty(b);
	}
	vk_apply_step(b->ap);
	free(b);
}

static void vk_inval_reply(void *ctx, redisReply *r)
{
	vk_batch_t *b = ctx;
	mm_valkey_t *st = b->ap->op.st;

	if (mm_vk_reply_ok(r) && r->type == REDIS_REPLY_INTEGER)
		st->vs.invalidated += (uint64_t)r->integer;
	else
		vk_batch_dirty(b);
	vk_apply_step(b->ap);
	free(b);
}

static vk_batch_t *vk_batch_new(vk_apply_t *ap, vk_group_t *g, size_t first, size_t count,
				int last)
{
	vk_batch_t *b = malloc(sizeof(*b));

	if (b != NULL) {
		b->ap = ap;
		b->g = g;
		b->first = first;
		b->count = count;
		b->last = last;
	}
	return b;
}

/* Sends a batch: on failure to send, its keys become dirty. */
static void vk_batch_send(vk_batch_t *b, int script, const vk_list_t *k, const vk_list_t *a,
			  vk_reply_fn fn)
{
	mm_valkey_t *st = b->ap->op.st;
	int op = script == VK_S_INVAL ? MM_VALKEY_OP_INVALIDATE : MM_VALKEY_OP_UPDATE;

	if (mm_vk_eval(st, op, script, k, a, fn, b) == 0) {
		b->ap->pending++;
		return;
	}
	vk_batch_dirty(b);
	free(b);
}

/* Appends the POST head (lease, epoch, tmp; member, last, seed, epoch ttl). */
static int vk_post_head(vk_apply_t *ap, vk_group_t *g, int last, vk_list_t *k, vk_list_t *a)
{
	mm_valkey_t *st = ap->op.st;
	int rc;

	mm_vk_list_reset(k);
	mm_vk_list_reset(a);
	if ((rc = mm_vk_coord_key(st, k, 'l', g->ns->name, g->bucket)) ||
	    (rc = mm_vk_coord_key(st, k, 'e', g->ns->name, g->bucket)) ||
	    (rc = mm_buf_printf(&k->b, "%stmp", st->prefix)) || (rc = mm_vk_list_mark(k)) ||
	    (rc = mm_vk_list_str(a, ap->member)) || (rc = mm_vk_list_str(a, last ? "1" : "0")) ||
	    (rc = mm_vk_list_i64(a, (int64_t)(mm_vk_rand(st) >> 16))))
		return rc;
	return mm_vk_list_i64(a, st->cache_ttl_ms);
}

/* An entry's POST operation without operands: "d" deletes, "c" with an
 * empty SHA-1 never matches an existing entry (it is only deleted if the
 * lease was lost). */
static int vk_post_noop(vk_list_t *a, const char *op)
{
	int rc;

	if ((rc = mm_vk_list_str(a, op)) || (rc = mm_vk_list_add(a, "", 0)) ||
	    (rc = mm_vk_list_add(a, "", 0)))
		return rc;
	return mm_vk_list_str(a, "0");
}

/* One entry's POST operation for an INT or HLL delta. */
static int vk_post_op(vk_apply_t *ap, const vk_item_t *it, vk_list_t *a, mm_buf_t *tmp)
{
	const vk_ns_t *vn = it->ns;
	int64_t v = 0;
	int rc;

	if (vn->kind == VK_INT) {
		if ((rc = mm_vk_int_of(vn, it->state, tmp, &v)) || (rc = mm_vk_list_str(a, "i")) ||
		    (rc = mm_vk_list_i64(a, v)))
			return rc;
	} else {
		tmp->len = 0;
		if ((rc = vn->m.vt->encode(&vn->m, it->state, tmp)) || (rc = mm_vk_list_str(a, "h")) ||
		    (rc = mm_vk_list_add(a, tmp->p, tmp->len)))
			return rc;
	}
	if ((rc = mm_vk_list_add(a, "", 0)))
		return rc;
	return mm_vk_list_i64(a, it->expire_ms);
}

/*
 * Sends a group's POST batches: each entry gets its delta (INT and HLL; the
 * CAS path builds its batches in vk_cas_reply), or is deleted when
 * delete_all. With count == 0 it only releases the lease and bumps the
 * epoch.
 */
static void vk_group_post(vk_apply_t *ap, vk_group_t *g, int delete_all)
{
	mm_valkey_t *st = ap->op.st;
	vk_list_t k = {0}, a = {0};
	mm_buf_t tmp = {0};
	size_t i = 0, cnt;
	int rc = 0;

	do {
		size_t first = g->first + i, x;
		int last;
		vk_batch_t *b;

		cnt = g->count - i < VK_CHUNK ? g->count - i : VK_CHUNK;
		last = i + cnt == g->count;
		if ((rc = vk_post_head(ap, g, last, &k, &a)))
			break;
		for (x = 0; x < cnt && rc == 0; x++) {
			const vk_item_t *it = &ap->items[first + x];

			rc = mm_vk_state_key(st, &k, it->ns->name, it->key.bucket, it->key.entity,
					  it->key.len);
			if (rc == 0 && delete_all) {
				rc = vk_post_noop(&a, "d");
			} else if (rc == 0) {
				rc = vk_post_op(ap, it, &a, &tmp);
			}
		}
		if (rc)
			break;
		b = vk_batch_new(ap, g, first, cnt, last);
		if (b == NULL) {
			rc = MM_ENOMEM;
			break;
		}
		vk_batch_send(b, VK_S_POST, &k, &a, vk_post_reply);
		i += cnt;
	} while (i < g->count);
	if (rc) {
		/* Could not even build the batch: what is left becomes dirty. */
		vk_batch_t b = {ap, g, g->first + i, g->count - i, 0};

		vk_batch_dirty(&b);
	}
	mm_vk_list_free(&k);
	mm_vk_list_free(&a);
	mm_buf_free(&tmp);
}

/* Deletes a group's entries without a lease and bumps its epoch. */
static void vk_group_inval(vk_apply_t *ap, vk_group_t *g)
{
	mm_valkey_t *st = ap->op.st;
	vk_list_t k = {0}, a = {0};
	size_t i, x, cnt;
	int rc = 0;

	for (i = 0; i < g->count; i += cnt) {
		vk_batch_t *b;

		cnt = g->count - i < VK_CHUNK ? g->count - i : VK_CHUNK;
		mm_vk_list_reset(&k);
		rc = mm_vk_coord_key(st, &k, 'e', g->ns->name, g->bucket);
		for (x = 0; x < cnt && rc == 0; x++) {
			const vk_item_t *it = &ap->items[g->first + i + x];

			rc = mm_vk_state_key(st, &k, it->ns->name, it->key.bucket, it->key.entity,
					  it->key.len);
		}
		if (rc || (b = vk_batch_new(ap, g, g->first + i, cnt, 0)) == NULL)
			break;
		if (mm_vk_inval_batch(st, &k, &a, vk_inval_reply, b) == 0) {
			ap->pending++;
		} else {
			vk_batch_dirty(b);
			free(b);
		}
	}
	if (i < g->count) {
		vk_batch_t b = {ap, g, g->first + i, g->count - i, 0};

		vk_batch_dirty(&b);
	}
	mm_vk_list_free(&k);
	mm_vk_list_free(&a);
}

/* The entry of one item of a checked batch, from the check's reply: HLL
 * (EXISTS: 1 or 0 per entry) or bytes (value and SHA-1, or nils). Appends
 * its POST operation: the delta or the merged value for a cached entry, a
 * delete (a no-op for an absent one) otherwise. */
static int vk_checked_op(vk_apply_t *ap, const vk_item_t *it, const redisReply *r, size_t x,
			 vk_list_t *a, mm_buf_t *enc)
{
	mm_valkey_t *st = ap->op.st;
	const mm_monoid_t *m = &it->ns->m;
	const redisReply *v, *sha;
	_Alignas(16) unsigned char scratch[MM_STATE_MAX];
	int rc;

	if (it->ns->kind == VK_HLL) {
		if (r->element[x]->type == REDIS_REPLY_INTEGER && r->element[x]->integer == 1)
			return vk_post_op(ap, it, a, enc);
		return vk_post_noop(a, "d");
	}
	v = r->element[2 * x];
	sha = r->element[2 * x + 1];
	/* Absent, or the marker of an absent bucket: the entry must go. */
	if (v->type != REDIS_REPLY_STRING || sha->type != REDIS_REPLY_STRING || v->len == 0)
		return vk_post_noop(a, "d");
	m->vt->init(m, scratch);
	enc->len = 0;
	rc = m->vt->decode(m, scratch, (const uint8_t *)v->str, v->len);
	if (rc == MM_ECORRUPT)
		st->vs.corrupt++;
	if (rc == 0)
		rc = m->vt->merge(m, scratch, it->state);
	if (rc == 0)
		rc = m->vt->encode(m, scratch, enc);
	m->vt->destroy(m, scratch);
	if (rc != 0)
		return vk_post_noop(a, "d");
	if ((rc = mm_vk_list_str(a, "c")) || (rc = mm_vk_list_add(a, sha->str, sha->len)) ||
	    (rc = mm_vk_list_add(a, enc->p, enc->len)))
		return rc;
	return mm_vk_list_i64(a, it->expire_ms);
}

/* Two-phase update: a batch's check arrived; send the conditional update. */
static void vk_checked_reply(void *ctx, redisReply *r)
{
	vk_batch_t *b = ctx;
	vk_apply_t *ap = b->ap;
	mm_valkey_t *st = ap->op.st;
	size_t per = b->g->ns->kind == VK_HLL ? 1 : 2, x;
	vk_list_t k = {0}, a = {0};
	mm_buf_t enc = {0};
	vk_batch_t *nb = NULL;
	int rc;

	if (!mm_vk_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements != per * b->count) {
		/* Unknown state: the entries must go (the lease, if this batch
		 * was to release it, expires by itself). */
		vk_batch_dirty(b);
		goto out;
	}
	rc = vk_post_head(ap, b->g, b->last, &k, &a);
	for (x = 0; x < b->count && rc == 0; x++) {
		const vk_item_t *it = &ap->items[b->first + x];

		if ((rc = mm_vk_state_key(st, &k, it->ns->name, it->key.bucket, it->key.entity,
				       it->key.len)) == 0)
			rc = vk_checked_op(ap, it, r, x, &a, &enc);
	}
	if (rc == 0)
		nb = vk_batch_new(ap, b->g, b->first, b->count, b->last);
	if (nb != NULL)
		vk_batch_send(nb, VK_S_POST, &k, &a, vk_post_reply);
	else
		vk_batch_dirty(b);
out:
	mm_buf_free(&enc);
	mm_vk_list_free(&k);
	mm_vk_list_free(&a);
	vk_apply_step(ap);
	free(b);
}

/*
 * Two-phase update of HLL and byte-valued groups: first which entries are
 * cached (HLL: EXISTS, so that deltas of a few KiB go only where they are
 * merged; bytes: the values with their SHA-1, to merge in C), batch by
 * batch, then the conditional update. The lease keeps fills away between
 * the two, so an entry absent at the check is still absent at the update.
 */
static void vk_group_checked(vk_apply_t *ap, vk_group_t *g)
{
	mm_valkey_t *st = ap->op.st;
	int script = g->ns->kind == VK_HLL ? VK_S_EXISTS : VK_S_CASREAD;
	vk_list_t k = {0};
	size_t i, x, cnt;
	int rc = 0;

	for (i = 0; i < g->count && rc == 0; i += cnt) {
		vk_batch_t *b;

		cnt = g->count - i < VK_CHUNK ? g->count - i : VK_CHUNK;
		mm_vk_list_reset(&k);
		for (x = 0; x < cnt && rc == 0; x++) {
			const vk_item_t *it = &ap->items[g->first + i + x];

			rc = mm_vk_state_key(st, &k, it->ns->name, it->key.bucket, it->key.entity,
					  it->key.len);
		}
		if (rc || (b = vk_batch_new(ap, g, g->first + i, cnt, i + cnt == g->count)) == NULL)
			break;
		if (mm_vk_eval(st, MM_VALKEY_OP_UPDATE, script, &k, NULL, vk_checked_reply, b) == 0) {
			ap->pending++;
		} else {
			vk_batch_dirty(b);
			free(b);
		}
	}
	if (i < g->count) {
		vk_batch_t b = {ap, g, g->first + i, g->count - i, 0};

		vk_batch_dirty(&b);
	}
	mm_vk_list_free(&k);
}

static void vk_mark_reply(void *ctx, redisReply *r)
{
	vk_apply_step(ctx);
}

/* dedup = valkey: the flush is durable, its marks go to Valkey, confirming
 * our claims of them (valkey_dedup.c). A mark that cannot be written is
 * lost (counted as a cache_mark error; the claim expires with its lease):
 * the weaker guarantee of marks kept outside the store. */
static void vk_send_marks(vk_apply_t *ap)
{
	mm_valkey_t *st = ap->op.st;
	const mm_flush_t *f = ap->f;
	vk_list_t k = {0}, a = {0};
	size_t i;
	int rc = 0;

	for (i = 0; i < ap->nmarks && rc == 0; i++) {
		const mm_mark_t *mk = &f->marks[i];

		if (mk->expire_ms <= f->now_ms)
			continue;
		if (a.n == 0 && (rc = mm_vk_list_str(&a, st->token)))
			break;
		if ((rc = mm_vk_mark_key(st, &k, mk->ns->name, mk->id, mk->len)) ||
		    (rc = mm_vk_list_i64(&a, mk->expire_ms)))
			break;
		if (k.n == VK_CHUNK) {
			if ((rc = mm_vk_eval(st, MM_VALKEY_OP_MARK, VK_S_MARK, &k, &a, vk_mark_reply,
					  ap)) == 0)
				ap->pending++;
			mm_vk_list_reset(&k);
			mm_vk_list_reset(&a);
		}
	}
	if (rc == 0 && k.n > 0 &&
	    (rc = mm_vk_eval(st, MM_VALKEY_OP_MARK, VK_S_MARK, &k, &a, vk_mark_reply, ap)) == 0)
		ap->pending++;
	if (rc)
		st->vs.errors[MM_VALKEY_OP_MARK]++;
	mm_vk_list_free(&k);
	mm_vk_list_free(&a);
}

/* The backing store finished: update, delete or remember the cache entries
 * of every group, then answer the caller. */
static void vk_apply_stored(void *arg, int status, const char *detail)
{
	vk_apply_t *ap = arg;
	mm_valkey_t *st = ap->op.st;
	int atomic = !!(mm_store_caps(st->backing) & MM_STORE_CAP_ATOMIC);
	size_t i;

	if (st->dedup_valkey)
		ap->f->nmarks = ap->nmarks;
	ap->status = status;
	snprintf(ap->detail, sizeof(ap->detail), "%s", status ? detail : "");
	ap->sending = 1;
	ap->pending = 1;
	if (status == 0 && st->dedup_valkey && ap->nmarks > 0) {
		if (st->state == VK_READY)
			vk_send_marks(ap);
		else
			st->vs.errors[MM_VALKEY_OP_MARK]++;
	}
	for (i = 0; i < ap->ngroups; i++) {
		vk_group_t *g = &ap->groups[i];
		int mode;

		if (status == 0)
			mode = g->leased ? VK_G_UPDATE : VK_G_INVAL;
		else if (atomic)
			mode = g->leased ? VK_G_RELEASE : VK_G_NONE;
		else
			mode = g->leased ? VK_G_DELETE : VK_G_INVAL;
		if (mode == VK_G_NONE)
			continue;
		if (st->state != VK_READY || st->closing) {
			/* Valkey does not answer: the entries must not be trusted
			 * later. A held lease expires by itself. */
			if (mode != VK_G_RELEASE) {
				vk_batch_t b = {ap, g, g->first, g->count, 0};

				vk_batch_dirty(&b);
			}
			continue;
		}
		switch (mode) {
		case VK_G_UPDATE:
			if (g->ns->kind == VK_INT)
				vk_group_post(ap, g, 0);
			else
				vk_group_checked(ap, g);
			break;
		case VK_G_DELETE:
			vk_group_post(ap, g, 1);
			break;
		case VK_G_RELEASE: {
			size_t count = g->count;

			g->count = 0;
			vk_group_post(ap, g, 0);
			g->count = count;
			break;
		}
		default:
			vk_group_inval(ap, g);
			break;
		}
	}
	st->vs.dirty = st->dirty.n;
	ap->sending = 0;
	vk_apply_step(ap);
}

/* Hands the flush to the backing store, keeping the marks from it when
 * they live in Valkey. 0, or the backing store's refusal (nothing sent). */
static int vk_apply_backing(vk_apply_t *ap)
{
	mm_valkey_t *st = ap->op.st;
	int rc;

	if (st->dedup_valkey) {
		ap->nmarks = ap->f->nmarks;
		ap->f->nmarks = 0;
	}
	rc = mm_store_apply(st->backing, ap->f, vk_apply_stored, ap);
	if (rc && st->dedup_valkey)
		ap->f->nmarks = ap->nmarks;
	return rc;
}

static void vk_lease_reply(void *ctx, redisReply *r)
{
	vk_batch_t *b = ctx;
	vk_apply_t *ap = b->ap;
	size_t i;
	int rc;

	if (mm_vk_reply_ok(r) && r->type == REDIS_REPLY_INTEGER)
		for (i = 0; i < b->count; i++)
			ap->groups[b->first + i].leased = 1;
	free(b);
	if (--ap->pending > 0 || ap->sending)
		return;
	if ((rc = vk_apply_backing(ap)))
		vk_apply_stored(ap, rc, mm_diag_msg());
}

/* Takes the leases of every group (batches of groups). */
static int vk_take_leases(vk_apply_t *ap)
{
	mm_valkey_t *st = ap->op.st;
	vk_list_t k = {0}, a = {0};
	size_t i = 0, x, cnt;
	int rc = 0;

	ap->sending = 1;
	if ((rc = mm_vk_list_str(&a, ap->member)) || (rc = mm_vk_list_i64(&a, st->lease_ms)))
		goto out;
	for (i = 0; i < ap->ngroups && rc == 0; i += cnt) {
		vk_batch_t *b;

		cnt = ap->ngroups - i < VK_CHUNK ? ap->ngroups - i : VK_CHUNK;
		mm_vk_list_reset(&k);
		for (x = 0; x < cnt && rc == 0; x++)
			rc = mm_vk_coord_key(st, &k, 'l', ap->groups[i + x].ns->name,
					  ap->groups[i + x].bucket);
		if (rc || (b = vk_batch_new(ap, NULL, i, cnt, 0)) == NULL)
			break;
		if (mm_vk_eval(st, MM_VALKEY_OP_LEASE, VK_S_LEASE, &k, &a, vk_lease_reply, b) == 0) {
			ap->pending++;
		} else {
			free(b);
			break;
		}
	}
out:
	mm_vk_list_free(&k);
	mm_vk_list_free(&a);
	ap->sending = 0;
	return ap->pending > 0 ? 0 : MM_ECLOSED;
}

int mm_vk_apply(mm_store_t *base, mm_flush_t *f, mm_store_cb cb, void *arg)
{
	mm_valkey_t *st = (mm_valkey_t *)base;
	vk_apply_t *ap;
	vk_ns_t *vn = NULL;
	const mm_ns_t *last = NULL;
	size_t i, n = 0;
	int rc;

	if (st->read_only)
		return mm_diag_set(MM_ENOTSUP, "valkey: apply on a store opened read-only");
	ap = calloc(1, sizeof(*ap));
	if (ap == NULL)
		return mm_diag_set(MM_ENOMEM, "valkey: cannot allocate an apply");
	st->refs++;
	ap->op.st = st;
	ap->op.cb = cb;
	ap->op.arg = arg;
	ap->f = f;
	ap->items = malloc((f->ndeltas ? f->ndeltas : 1) * sizeof(*ap->items));
	ap->groups = malloc((f->ndeltas ? f->ndeltas : 1) * sizeof(*ap->groups));
	if (ap->items == NULL || ap->groups == NULL) {
		rc = mm_diag_set(MM_ENOMEM, "valkey: cannot allocate an apply");
		goto fail;
	}
	/* Deltas a previous attempt of this flush made durable need nothing;
	 * the others are noted now, before the backing store may reorder them. */
	for (i = 0; i < f->ndeltas; i++) {
		const mm_delta_t *d = &f->deltas[i];

		if (f->delta_done != NULL && f->delta_done[i])
			continue;
		if (d->ns != last) {
			if ((vn = mm_vk_ns_need(st, d->ns)) == NULL) {
				rc = MM_ENOMEM;
				goto fail;
			}
			last = d->ns;
		}
		ap->items[n] = (vk_item_t){vn, d->key, d->expire_ms, d->state};
		mm_vk_remember(st, &st->hot, vn, &d->key);
		n++;
	}
	ap->nitems = n;
	qsort(ap->items, n, sizeof(*ap->items), vk_cmp_item);
	for (i = 0; i < n; i++) {
		vk_group_t *g;

		if (i == 0 || ap->items[i].ns != ap->items[i - 1].ns ||
		    ap->items[i].key.bucket != ap->items[i - 1].key.bucket) {
			g = &ap->groups[ap->ngroups++];
			g->ns = ap->items[i].ns;
			g->bucket = ap->items[i].key.bucket;
			g->first = i;
			g->count = 0;
			g->leased = 0;
		}
		ap->groups[ap->ngroups - 1].count++;
	}
	snprintf(ap->member, sizeof(ap->member), "%s:%" PRIu64, st->token, ++st->seq);
	if (ap->ngroups > 0 && st->state == VK_READY && vk_take_leases(ap) == 0)
		return 0;
	/* No leases: the store is written now; the entries are deleted (or
	 * remembered as dirty) afterwards. */
	if ((rc = vk_apply_backing(ap)) == 0)
		return 0;
fail:
	vk_apply_free(ap);
	return rc;
}
