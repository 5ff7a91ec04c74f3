/*
 * lmdb_dedup.c: dedup marks in the embedded store.
 *
 * claim() looks a flush's ids up in the marks, all in one read transaction
 * on the thread pool: an id with a live mark was counted (DUPLICATE), any
 * other is WON. No other worker writes the store, so nothing can come
 * between that read and the apply() that writes the won ids' marks in the
 * same write transaction as the states they counted: exact across kill -9.
 *
 * A mark is seen while its expire_ms > now_ms. Purges delete old buckets;
 * expired marks of a purged namespace are swept in the same transaction, at
 * most LMDB_SWEEP_MAX looked at per purge, resuming where the previous sweep
 * of that namespace stopped.
 */
#include <stdlib.h>

#include "../lib/error.h"
#include "lmdb_impl.h"

#define LMDB_SWEEP_MAX 1024

/* Stores a dedup mark, keeping the later expiry if the id is already marked. */
int mm_lmdb_apply_mark(mm_lmdb_t *st, MDB_txn *txn, const mm_mark_t *mk, mm_buf_t *vb)
{
	int64_t expire = mk->expire_ms;
	lmdb_key_t k;
	MDB_val key, val;
	int found, rc, mrc;

	mm_lmdb_mark_key(&k, mk->ns->name, mk->id, mk->len);
	vb->len = 0;
	if ((rc = mm_buf_put_u64le(vb, (uint64_t)expire)))
		return rc;
	key.mv_size = k.len;
	key.mv_data = k.b;
	if (!k.hashed) {
		/* Most ids are new: try the insert first, so the common case walks
		 * the B-tree once; an existing mark keeps the later expiry. */
		val.mv_size = vb->len;
		val.mv_data = vb->p;
		mrc = mdb_put(txn, st->dbi_seen, &key, &val, MDB_NOOVERWRITE);
		if (mrc == 0)
			return 0;
		if (mrc != MDB_KEYEXIST)
			return mm_lmdb_fail(mrc, "put mark");
		if (val.mv_size < 8)
			return mm_lmdb_corrupt(&k, "mark shorter than its expiry");
		if ((int64_t)mm_get_u64le(val.mv_data) >= expire)
			return 0;
	} else {
		if ((rc = mm_lmdb_find(txn, st->dbi_seen, &k, &val, &found)))
			return rc;
		if (found) {
			if (val.mv_size < 8)
				return mm_lmdb_corrupt(&k, "mark shorter than its expiry");
			if ((int64_t)mm_get_u64le(val.mv_data) > expire) {
				vb->len = 0;
				if ((rc = mm_buf_put_u64le(vb, mm_get_u64le(val.mv_data))))
					return rc;
			}
		}
		if ((rc = mm_buf_append(vb, k.id, k.idlen)))
			return rc;
		key.mv_size = k.len;
		key.mv_data = k.b;
	}
	val.mv_size = vb->len;
	val.mv_data = vb->p;
	if ((mrc = mdb_put(txn, st->dbi_seen, &key, &val, 0)))
		return mm_lmdb_fail(mrc, "put mark");
	return 0;
}

/* The sweep position of a namespace, added (at the namespace's start) if new. */
static mm_buf_t *sweep_slot(mm_lmdb_t *st, const uint8_t *ns, size_t nsl)
{
	mm_buf_t *slot, *grown;
	size_t i;

	for (i = 0; i < st->nsweep; i++)
		if (st->sweep[i].len >= nsl && memcmp(st->sweep[i].p, ns, nsl) == 0)
			return &st->sweep[i];
	grown = realloc(st->sweep, (st->nsweep + 1) * sizeof(*grown));
	if (grown == NULL)
		return NULL;
	st->sweep = grown;
	slot = &st->sweep[st->nsweep];
	memset(slot, 0, sizeof(*slot));
	if (mm_buf_append(slot, ns, nsl))
		return NULL;
	st->nsweep++;
	return slot;
}

/*
 * Deletes expired dedup marks of a namespace, looking at LMDB_SWEEP_MAX
 * marks at most so that a flush stays short however many marks there are;
 * the next sweep resumes after the last mark looked at and wraps around at
 * the end of the namespace.
 */
int mm_lmdb_sweep_marks(mm_lmdb_t *st, MDB_txn *txn, const mm_ns_t *mns, int64_t now_ms)
{
	uint8_t ns[1 + LMDB_NS_MAX];
	MDB_cursor *cur;
	MDB_cursor_op op = MDB_SET_RANGE;
	MDB_val key, val;
	mm_buf_t *pos;
	size_t nsl, n;
	int rc = 0, mrc;

	nsl = ns_prefix(ns, mns->name);
	pos = sweep_slot(st, ns, nsl);
	if (pos == NULL)
		return mm_diag_set(MM_ENOMEM, "lmdb: cannot allocate a sweep position");
	if ((mrc = mdb_cursor_open(txn, st->dbi_seen, &cur)))
		return mm_lmdb_fail(mrc, "open cursor");
	key.mv_size = pos->len;
	key.mv_data = pos->p;
	for (n = 0;; n++) {
		mrc = mdb_cursor_get(cur, &key, &val, op);
		if (mrc == MDB_NOTFOUND ||
		    (mrc == 0 && (key.mv_size < nsl || memcmp(key.mv_data, ns, nsl) != 0))) {
			pos->len = nsl;
			break;
		}
		if (mrc) {
			rc = mm_lmdb_fail(mrc, "sweep");
			break;
		}
		if (n == LMDB_SWEEP_MAX) {
			pos->len = nsl;
			rc = mm_buf_append(pos, (const uint8_t *)key.mv_data + nsl,
					   key.mv_size - nsl);
			break;
		}
		op = MDB_NEXT;
		if (val.mv_size >= 8 && (int64_t)mm_get_u64le(val.mv_data) <= now_ms &&
		    (mrc = mdb_cursor_del(cur, 0))) {
			rc = mm_lmdb_fail(mrc, "sweep delete");
			break;
		}
	}
	mdb_cursor_close(cur);
	return rc;
}

static int cmp_mark(const void *x, const void *y)
{
	const mm_mark_t *a = x, *b = y;

	return mm_lmdb_cmp_ident(a->ns->name, b->ns->name, a->id, a->len, b->id, b->len);
}

void mm_lmdb_sort_marks(mm_mark_t *marks, size_t n)
{
	qsort(marks, n, sizeof(*marks), cmp_mark);
}

void mm_lmdb_sweep_free(mm_lmdb_t *st)
{
	size_t i;

	for (i = 0; i < st->nsweep; i++)
		mm_buf_free(&st->sweep[i]);
	free(st->sweep);
}

/* A flush's claims on the embedded store: every id is looked up in one read
 * transaction; an id whose mark is live was counted (DUPLICATE), any other
 * is WON. No other worker writes the store, so nothing is pending between
 * this read and the apply() that writes the won ids' marks with the states. */
static void lmdb_claim_work(uv_work_t *req)
{
	lmdb_work_t *w = (lmdb_work_t *)req;
	MDB_txn *txn;
	size_t i;
	int rc = 0, mrc;

	if ((mrc = mdb_txn_begin(w->st->env, NULL, MDB_RDONLY, &txn))) {
		mm_lmdb_work_finish(w, mm_lmdb_fail(mrc, "begin read transaction"));
		return;
	}
	for (i = 0; i < w->n; i++) {
		mm_claim_t *c = &w->claims[i];
		lmdb_key_t k;
		MDB_val val;
		int found;

		mm_lmdb_mark_key(&k, w->ns->name, c->id, c->len);
		if ((rc = mm_lmdb_find(txn, w->st->dbi_seen, &k, &val, &found)))
			break;
		if (found && val.mv_size < 8) {
			rc = mm_lmdb_corrupt(&k, "mark shorter than its expiry");
			break;
		}
		c->result = found && (int64_t)mm_get_u64le(val.mv_data) > w->now_ms
			? MM_CLAIM_DUPLICATE : MM_CLAIM_WON;
	}
	mdb_txn_abort(txn);
	mm_lmdb_work_finish(w, rc);
}

int mm_lmdb_claim(mm_store_t *base, const mm_ns_t *ns, mm_claim_t *ids, size_t n, int64_t ttl_ms,
		  mm_store_cb cb, void *arg)
{
	lmdb_work_t *w = mm_lmdb_reader_new(base, ns, n, cb, arg);

	if (w == NULL)
		return mm_diag_set(MM_ENOMEM, "lmdb: cannot allocate a claim");
	w->claims = ids;
	return mm_lmdb_queue(w->st, w, lmdb_claim_work);
}
