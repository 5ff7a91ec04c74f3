/*
 * lmdb_meta.c: source positions and pipeline descriptors (metadata) in the
 * embedded store, the "pos" and "meta" databases: one record per source id
 * or namespace name, its bytes as the caller gave them. A position is
 * written by apply() in the flush's transaction; every read and write of
 * them (get_position, get_meta, put_meta, list_meta) goes through the
 * thread pool.
 */
#include <stdlib.h>

#include "../lib/error.h"
#include "lmdb_impl.h"

int mm_lmdb_put_position(mm_lmdb_t *st, MDB_txn *txn, const mm_position_t *p)
{
	MDB_val key = {strlen(p->source), (void *)p->source};
	MDB_val val = {p->len, (void *)p->pos};
	int mrc;

	if ((mrc = mdb_put(txn, st->dbi_pos, &key, &val, 0)))
		return mm_lmdb_fail(mrc, "put position");
	return 0;
}

static int lmdb_read_begin(mm_lmdb_t *st, MDB_txn **txn)
{
	int mrc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, txn);

	return mrc ? mm_lmdb_fail(mrc, "begin read transaction") : 0;
}

/* Reads one record of dbi into out (appending); MM_ENOTFOUND if absent. */
static int lmdb_get_bytes(mm_lmdb_t *st, MDB_dbi dbi, const char *name, const char *what,
			  mm_buf_t *out)
{
	MDB_val key = {strlen(name), (void *)name}, val;
	MDB_txn *txn;
	int rc, mrc;

	if ((rc = lmdb_read_begin(st, &txn)))
		return rc;
	mrc = mdb_get(txn, dbi, &key, &val);
	if (mrc == MDB_NOTFOUND)
		rc = mm_diag_set(MM_ENOTFOUND, "lmdb: no %s for '%s'", what, name);
	else if (mrc)
		rc = mm_lmdb_fail(mrc, what);
	else
		rc = mm_buf_append(out, val.mv_data, val.mv_size);
	mdb_txn_abort(txn);
	return rc;
}

static void lmdb_read_work(uv_work_t *req)
{
	lmdb_work_t *w = (lmdb_work_t *)req;

	mm_lmdb_work_finish(w, lmdb_get_bytes(w->st, w->dbi, w->name, w->what, w->out));
}

/* Queues a read of one record of dbi into out (the name and out stay valid
 * until cb runs, the caller's contract). */
static int lmdb_read(mm_lmdb_t *st, MDB_dbi dbi, const char *name, const char *what,
		     mm_buf_t *out, mm_store_cb cb, void *arg)
{
	lmdb_work_t *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return mm_diag_set(MM_ENOMEM, "lmdb: cannot allocate a read");
	w->st = st;
	w->cb = cb;
	w->arg = arg;
	w->dbi = dbi;
	w->name = name;
	w->what = what;
	w->out = out;
	return mm_lmdb_queue(st, w, lmdb_read_work);
}

int mm_lmdb_get_position(mm_store_t *base, const char *source, mm_buf_t *out, mm_store_cb cb,
			 void *arg)
{
	mm_lmdb_t *st = (mm_lmdb_t *)base;

	return lmdb_read(st, st->dbi_pos, source, "position", out, cb, arg);
}

int mm_lmdb_get_meta(mm_store_t *base, const char *ns_name, mm_buf_t *out, mm_store_cb cb,
		     void *arg)
{
	mm_lmdb_t *st = (mm_lmdb_t *)base;

	return lmdb_read(st, st->dbi_meta, ns_name, "metadata", out, cb, arg);
}

/* Pool thread: one fsync'd write transaction holding the descriptor. */
static void lmdb_put_meta_work(uv_work_t *req)
{
	lmdb_work_t *w = (lmdb_work_t *)req;
	MDB_val key = {strlen(w->name), (void *)w->name}, val = {w->n, (void *)w->bytes};
	MDB_txn *txn;
	int mrc;

	if ((mrc = mdb_txn_begin(w->st->env, NULL, 0, &txn))) {
		mm_lmdb_work_finish(w, mm_lmdb_fail(mrc, "begin write transaction"));
		return;
	}
	if ((mrc = mdb_put(txn, w->st->dbi_meta, &key, &val, 0))) {
		mdb_txn_abort(txn);
		mm_lmdb_work_finish(w, mm_lmdb_fail(mrc, "put metadata"));
		return;
	}
	mrc = mdb_txn_commit(txn);
	mm_lmdb_work_finish(w, mrc ? mm_lmdb_fail(mrc, "commit") : 0);
}

int mm_lmdb_put_meta(mm_store_t *base, const char *ns_name, const uint8_t *p, size_t n,
		     mm_store_cb cb, void *arg)
{
	mm_lmdb_t *st = (mm_lmdb_t *)base;
	lmdb_work_t *w;

	if (st->read_only)
		return mm_diag_set(MM_ENOTSUP, "lmdb: put_meta on a store opened read-only");
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return mm_diag_set(MM_ENOMEM, "lmdb: cannot allocate a put_meta");
	w->st = st;
	w->cb = cb;
	w->arg = arg;
	w->name = ns_name;
	w->bytes = p;
	w->n = n;
	return mm_lmdb_queue(st, w, lmdb_put_meta_work);
}

/* Appends the name of every record of the meta database, in key order. */
static int lmdb_list_names(mm_lmdb_t *st, mm_buf_t *out)
{
	MDB_cursor *cur = NULL;
	MDB_cursor_op op = MDB_FIRST;
	MDB_val key, val;
	MDB_txn *txn;
	int rc, mrc;

	if ((rc = lmdb_read_begin(st, &txn)))
		return rc;
	if ((mrc = mdb_cursor_open(txn, st->dbi_meta, &cur))) {
		rc = mm_lmdb_fail(mrc, "open cursor");
		goto out;
	}
	for (;; op = MDB_NEXT) {
		mrc = mdb_cursor_get(cur, &key, &val, op);
		if (mrc == MDB_NOTFOUND)
			break;
		if (mrc) {
			rc = mm_lmdb_fail(mrc, "list metadata");
			break;
		}
		if ((rc = mm_buf_append(out, key.mv_data, key.mv_size)) ||
		    (rc = mm_buf_put_u8(out, 0)))
			break;
	}
out:
	if (cur != NULL)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return rc;
}

static void lmdb_list_work(uv_work_t *req)
{
	lmdb_work_t *w = (lmdb_work_t *)req;

	mm_lmdb_work_finish(w, lmdb_list_names(w->st, w->out));
}

int mm_lmdb_list_meta(mm_store_t *base, mm_buf_t *out, mm_store_cb cb, void *arg)
{
	mm_lmdb_t *st = (mm_lmdb_t *)base;
	lmdb_work_t *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return mm_diag_set(MM_ENOMEM, "lmdb: cannot allocate a list_meta");
	w->st = st;
	w->cb = cb;
	w->arg = arg;
	w->out = out;
	return mm_lmdb_queue(st, w, lmdb_list_work);
}
