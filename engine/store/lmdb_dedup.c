/*
 * lmdb_dedup.c: dedup marks in the embedded store.
 *
 * A mark is the 128-bit hash of (namespace, id) with its expiry (the
 * memory keeps 96 of the bits; markset.h says why they stand for the id).
 * The pipeline computes that hash once per id (mm_id_hash) and hands it
 * over with the claim and the mark; an id that comes without one is hashed
 * here.
 * A flush's won ids are written by apply() in the same write transaction
 * as the states they counted, so a mark is durable exactly when its effect
 * is: exact across kill -9. A mark is seen while its expire_ms > now_ms.
 *
 * On disk ("marks"), marks are kept in time partitions: partition P holds
 * the marks expiring in [P * LMDB_MARK_WINDOW_MS, (P + 1) * ...), as runs,
 * a flush's marks of a partition in one record or a few (each at most
 * LMDB_RUN_MAX entries):
 *
 *   key    u32 BE P, u32 BE SEQ (the partition's runs in write order)
 *   value  N entries of 16 bytes: u64 LE h0, u32 LE the high half of h1,
 *          u32 LE expire_ms - P * LMDB_MARK_WINDOW_MS
 *
 * which are the bits the markset keeps (markset.h), so a mark read back
 * answers as the one written. Format 2 stores kept 24 bytes an entry (u64
 * LE h0, h1, i64 LE expire_ms): a writer rewrites their runs when it opens
 * the store (mm_lmdb_marks_upgrade, in the transaction that sets format 3),
 * and a read-only opener of one reads them as they are. The page cache's
 * copy of the runs and LMDB's copy into its pages were a large part of
 * what ids cost (doc/performance-journal.md): a third fewer bytes.
 *
 * So a flush writes its marks as a few records (a copy, no B-tree insert
 * per id), and marks expire by whole partitions: each apply deletes the
 * records of the partitions that ended by its now_ms, a seek and a delete
 * per run instead of a delete per id.
 *
 * In memory, a markset holds every live mark (the hashes of the live
 * partitions), filled from the disk by start() (a writer's), else by the
 * first claim or apply after open, and kept up to date by apply() after
 * each commit; claim() answers from it alone: a live mark was counted
 * (DUPLICATE), any other id is WON. No other worker writes the store, so
 * nothing can come between that answer and the apply() that marks the won
 * ids; and so marked() gives the same answer at once, for one record on the
 * loop thread, once the set is filled: the pipeline then needs no claim at
 * the flush (MM_STORE_CAP_MARKED). Memory: about 18 to 21 bytes per live
 * mark (96 bits of each hash and its expiry in sorted runs, their
 * directories and the set's filter; more while a merge is built, and the
 * buffers kept for the next runs: markset.h). The set is read from the disk
 * again when its expiry offsets' base is 24 days old; its expired marks
 * leave it at merges and with whole runs.
 * The set is a cache of what is committed: a failed commit leaves it as it
 * was, and a set that cannot take a committed mark (out of memory) is
 * dropped and read from the disk again by the next claim or apply.
 *
 * Format 1 stores (before this layout) kept one record per id in "seen"
 * (lmdb.c's layout). Their marks are read from there too, and the first
 * apply() after open moves the live ones into runs and empties "seen", in
 * its own transaction: nothing is lost whether it commits or not.
 *
 * Threads: claim and apply work run on pool threads, marked() on the loop
 * thread. The pool threads' work on the marks is serialised by
 * st->marks_lock; marked() takes st->set_lock (or the pipeline took it for
 * a whole batch: marked_hold), which a pool thread holds
 * only while it changes the set, never while it reads the disk or sorts or
 * merges runs: a set read from the disk, or a flush's marks as a run and
 * the merges they cause, are built aside and swapped in (mm_markset_commit:
 * pointers, and the new run's bits in the filter), so the loop waits for a
 * swap, and a pool thread for at most a batch.
 */
#include <stdlib.h>

#include "../lib/error.h"
#include "../lib/hugemap.h"
#include "lmdb_impl.h"

#define LMDB_MARK_WINDOW_MS 3600000LL
#define LMDB_MARK_SIZE 16
#define LMDB_MARK_SIZE_V2 24 /* format 2's entries */
/* A run's most entries (1 MiB with LMDB's page header). LMDB copies a
 * record of this size into pages it mallocs for the write transaction and
 * frees at its end: below glibc's mmap threshold (lib/heap.h), so the
 * next flush's runs reuse the heap's pages, where one record for a whole
 * flush's marks (up to 6 MB) was a fresh mapping each time, and its copy
 * the largest site of page faults of a run with ids (doc/performance-journal.md). */
#define LMDB_RUN_MAX ((((size_t)1 << 20) - 64) / LMDB_MARK_SIZE)
#define LMDB_PREFETCH 8

static uint32_t partition_of(int64_t expire_ms)
{
	return (uint32_t)(expire_ms / LMDB_MARK_WINDOW_MS);
}

static uint32_t get_u32be(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_u32be(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Decodes the run entry at p of the partition that starts at base; an
 * expiry past the partition's end is a damaged record. */
static int entry_get(const uint8_t *p, int64_t base, mm_markhash_t *m)
{
	uint32_t off = mm_get_u32le(p + 12);

	if (off >= LMDB_MARK_WINDOW_MS)
		return mm_diag_set(MM_ECORRUPT, "lmdb: corrupt mark (expiry %u ms into its hour)",
				   off);
	m->h0 = mm_get_u64le(p);
	m->h1 = (uint64_t)mm_get_u32le(p + 8) << 32;
	m->expire_ms = base + off;
	return 0;
}

/* Decodes format 2's entry at p (u64 LE h0, h1, i64 LE expire_ms). */
static void entry_get_v2(const uint8_t *p, mm_markhash_t *m)
{
	m->h0 = mm_get_u64le(p);
	m->h1 = mm_get_u64le(p + 8);
	m->expire_ms = (int64_t)mm_get_u64le(p + 16);
}

/* A claim's or mark's hash came with it (mm_id_hash never gives all zero). */
static int given(const mm_idhash_t *h)
{
	return (h->h0 | h->h1) != 0;
}

/* Room for n more pending entries (the marks of the apply in flight). */
static int pend_reserve(mm_lmdb_t *st, size_t n)
{
	size_t ncap = st->pend_cap ? st->pend_cap : 1024;
	mm_markhash_t *np;

	if (st->pend_cap - st->npend >= n)
		return 0;
	while (ncap - st->npend < n) {
		if (ncap > SIZE_MAX / 2 / sizeof(*np))
			return mm_diag_set(MM_ENOMEM, "too many dedup marks (%zu)", st->npend + n);
		ncap *= 2;
	}
	/* A mapping grown by mremap, on small pages (written and read in
	 * order: lib/hugemap.h): the entries are kept from one apply to the
	 * next, where a realloc'd array's copies cost more than its growth
	 * (doc/performance-journal.md). */
	np = mm_small_grow(st->pend, st->pend_cap * sizeof(*np), ncap * sizeof(*np));
	if (np == NULL)
		return mm_diag_set(MM_ENOMEM, "cannot grow to %zu dedup marks", ncap);
	st->pend = np;
	st->pend_cap = ncap;
	return 0;
}

/* Appends m to the pending entries. */
static int pend_add(mm_lmdb_t *st, const mm_markhash_t *m)
{
	int rc = pend_reserve(st, 1);

	if (rc == 0)
		st->pend[st->npend++] = *m;
	return rc;
}

/*
 * Reads the format 1 marks of "seen" that are live at now_ms and appends
 * them to the pending entries. A key is (u8 ns_len, ns, u16 BE id_len, ID)
 * with the expiry in the value, or, for an id too long for a key, the id's
 * 64-bit hash and a SEQ, the id following the expiry in the value.
 */
static int legacy_read(mm_lmdb_t *st, MDB_txn *txn, int64_t now_ms)
{
	MDB_cursor *cur;
	MDB_cursor_op op = MDB_FIRST;
	MDB_val key, val;
	int rc = 0, mrc;

	if ((mrc = mdb_cursor_open(txn, st->dbi_seen, &cur)))
		return mm_lmdb_fail(mrc, "open cursor");
	for (;; op = MDB_NEXT) {
		const uint8_t *kp, *id;
		size_t nsl, idlen;
		mm_markhash_t m;

		mrc = mdb_cursor_get(cur, &key, &val, op);
		if (mrc) {
			if (mrc != MDB_NOTFOUND)
				rc = mm_lmdb_fail(mrc, "read format 1 marks");
			break;
		}
		kp = key.mv_data;
		nsl = key.mv_size ? kp[0] : 0;
		if (key.mv_size < 3 + nsl || val.mv_size < 8)
			goto corrupt;
		idlen = get_u16be(kp + 1 + nsl);
		if (key.mv_size == 3 + nsl + idlen && 3 + nsl + idlen <= LMDB_KEY_MAX)
			id = kp + 3 + nsl;
		else if (key.mv_size == 3 + nsl + 10 && val.mv_size == 8 + idlen)
			id = (const uint8_t *)val.mv_data + 8;
		else
			goto corrupt;
		m.expire_ms = (int64_t)mm_get_u64le(val.mv_data);
		if (m.expire_ms <= now_ms)
			continue;
		mm_markset_hash(mm_markset_ns_seed((const char *)kp + 1, nsl), id, idlen, &m);
		if ((rc = pend_add(st, &m)))
			break;
	}
	mdb_cursor_close(cur);
	return rc;
corrupt:
	mdb_cursor_close(cur);
	return mm_diag_set(MM_ECORRUPT, "lmdb: corrupt format 1 mark (key of %zu bytes)",
			   key.mv_size);
}

/* Makes *t the markset (t NULL: none, the marks are unread), under
 * set_lock, and frees the table it replaces after. marks_lock held. */
static void set_replace(mm_lmdb_t *st, mm_markset_t *t)
{
	mm_markset_t old;

	uv_mutex_lock(&st->set_lock);
	old = st->set;
	st->set = t ? *t : (mm_markset_t){0};
	st->marks_loaded = t != NULL;
	uv_mutex_unlock(&st->set_lock);
	mm_markset_free(&old);
}

/* Fills the markset from the disk (runs and format 1 marks) if it is not
 * filled yet or its base has grown stale (markset.h). Its base is an hour
 * before now, so that a wall clock set back a little still finds the marks
 * it asks about. The set is built aside and swapped in (set_replace); one
 * that cannot be read leaves none. marks_lock held. */
static int marks_load(mm_lmdb_t *st, MDB_txn *txn, int64_t now_ms)
{
	MDB_cursor *cur = NULL;
	MDB_cursor_op op = MDB_FIRST;
	MDB_val key, val;
	mm_markset_t t = {0};
	mm_markbatch_t b;
	size_t i, keep = st->npend, size = st->marks_v2 ? LMDB_MARK_SIZE_V2 : LMDB_MARK_SIZE;
	int64_t base;
	int rc = 0, mrc;

	if (st->marks_loaded && !mm_markset_stale(&st->set, now_ms))
		return 0;
	/* A reader of a format 2 store: a writer may have rewritten its runs
	 * since the open (format 3). */
	if (st->marks_v2) {
		uint32_t format;

		if ((rc = mm_lmdb_format(st, txn, &format)))
			goto out;
		st->marks_v2 = format == 2;
	}
	mm_markset_start(&t, now_ms - LMDB_MARK_WINDOW_MS);
	if (st->has_marks_db) {
		if ((mrc = mdb_cursor_open(txn, st->dbi_marks, &cur))) {
			rc = mm_lmdb_fail(mrc, "open cursor");
			goto out;
		}
		for (;; op = MDB_NEXT) {
			const uint8_t *p;

			mrc = mdb_cursor_get(cur, &key, &val, op);
			if (mrc) {
				if (mrc != MDB_NOTFOUND)
					rc = mm_lmdb_fail(mrc, "read marks");
				break;
			}
			if (key.mv_size != 8 || val.mv_size % size) {
				rc = mm_diag_set(MM_ECORRUPT,
						 "lmdb: corrupt marks record (key of %zu bytes, "
						 "value of %zu)",
						 key.mv_size, val.mv_size);
				break;
			}
			base = (int64_t)get_u32be(key.mv_data) * LMDB_MARK_WINDOW_MS;
			for (p = val.mv_data, i = 0; i < val.mv_size / size; i++, p += size) {
				mm_markhash_t m = {0};

				if (st->marks_v2)
					entry_get_v2(p, &m);
				else if ((rc = entry_get(p, base, &m)))
					goto out;
				if (m.expire_ms > now_ms && (rc = pend_add(st, &m)))
					goto out;
			}
		}
	}
	if (rc == 0 && st->legacy)
		rc = legacy_read(st, txn, now_ms);
	/* One run of every live mark, sorted once. */
	if (rc == 0 && (rc = mm_markset_prepare(&t, &b, st->pend + keep, st->npend - keep,
						 now_ms, 0)) == 0) {
		mm_markset_commit(&t, &b);
		mm_markset_batch_done(&t, &b);
	}
out:
	st->npend = keep;
	if (cur != NULL)
		mdb_cursor_close(cur);
	if (rc)
		mm_markset_free(&t);
	set_replace(st, rc ? NULL : &t);
	return rc;
}

/* The next SEQ of partition part, after its last run. */
static int next_seq(MDB_cursor *cur, uint32_t part, uint32_t *seq)
{
	uint8_t kb[8];
	MDB_val key = {8, kb}, val;
	int mrc;

	put_u32be(kb, part + 1);
	put_u32be(kb + 4, 0);
	mrc = mdb_cursor_get(cur, &key, &val, MDB_SET_RANGE);
	if (mrc == 0)
		mrc = mdb_cursor_get(cur, &key, &val, MDB_PREV);
	else if (mrc == MDB_NOTFOUND)
		mrc = mdb_cursor_get(cur, &key, &val, MDB_LAST);
	*seq = 0;
	if (mrc == MDB_NOTFOUND)
		return 0;
	if (mrc)
		return mm_lmdb_fail(mrc, "find the last run");
	if (key.mv_size != 8)
		return mm_diag_set(MM_ECORRUPT, "lmdb: corrupt marks key of %zu bytes", key.mv_size);
	if (get_u32be(key.mv_data) == part)
		*seq = get_u32be((const uint8_t *)key.mv_data + 4) + 1;
	return 0;
}

/* Writes m as the run entry at dst of the partition that starts at base
 * (u64 LE h0, u32 LE h1 >> 32, u32 LE expire_ms - base): two little-endian
 * words, the second the two u32s. */
static inline void entry_put(uint8_t *dst, const mm_markhash_t *m, int64_t base)
{
	uint64_t w[2] = {m->h0, m->h1 >> 32 | (uint64_t)(uint32_t)(m->expire_ms - base) << 32};

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	/* Two stores: GCC does not merge the byte-wise setters below here
	 * (dst may alias m), 35 instructions a mark against 13. */
	memcpy(dst, w, sizeof(w));
#else
	mm_set_u64le(dst, w[0]);
	mm_set_u64le(dst + 8, w[1]);
#endif
}

/* Writes the next count marks of partition part in m[], from m[*at] on, as
 * run entries at dst; *at is left after the last one written. */
static void fill_run(uint8_t *dst, const mm_markhash_t *m, size_t *at, size_t count,
		     uint32_t part)
{
	int64_t base = (int64_t)part * LMDB_MARK_WINDOW_MS;
	size_t i = *at;

	for (; count > 0; i++) {
		if (partition_of(m[i].expire_ms) != part)
			continue;
		entry_put(dst, &m[i], base);
		dst += LMDB_MARK_SIZE;
		count--;
	}
	*at = i;
}

/* Writes the count marks of partition part among st->marks, the first at
 * from, as runs of at most LMDB_RUN_MAX entries. */
static int write_run(mm_lmdb_t *st, MDB_txn *txn, MDB_cursor *cur, uint32_t part, size_t from,
		     size_t count)
{
	uint8_t kb[8];
	MDB_val key = {8, kb}, val;
	uint32_t seq;
	size_t n;
	int rc, mrc;

	if ((rc = next_seq(cur, part, &seq)))
		return rc;
	put_u32be(kb, part);
	for (; count > 0; count -= n, seq++) {
		n = count < LMDB_RUN_MAX ? count : LMDB_RUN_MAX;
		put_u32be(kb + 4, seq);
		val = (MDB_val){n * LMDB_MARK_SIZE, NULL};
		if ((mrc = mdb_put(txn, st->dbi_marks, &key, &val, MDB_RESERVE)))
			return mm_lmdb_fail(mrc, "put marks");
		fill_run(val.mv_data, st->marks, &from, n, part);
	}
	return 0;
}

int mm_lmdb_marks_upgrade(mm_lmdb_t *st, MDB_txn *txn)
{
	MDB_cursor *cur;
	MDB_cursor_op op = MDB_FIRST;
	MDB_val key, val, nval;
	uint8_t kb[8], *buf = NULL;
	size_t cap = 0, n, i;
	int rc = 0, mrc;

	if ((mrc = mdb_cursor_open(txn, st->dbi_marks, &cur)))
		return mm_lmdb_fail(mrc, "open cursor");
	for (;; op = MDB_NEXT) {
		int64_t base;

		mrc = mdb_cursor_get(cur, &key, &val, op);
		if (mrc) {
			if (mrc != MDB_NOTFOUND)
				rc = mm_lmdb_fail(mrc, "read format 2 marks");
			break;
		}
		if (key.mv_size != 8 || val.mv_size % LMDB_MARK_SIZE_V2 || val.mv_size == 0) {
			rc = mm_diag_set(MM_ECORRUPT,
					 "lmdb: corrupt format 2 marks record (key of %zu bytes, "
					 "value of %zu)",
					 key.mv_size, val.mv_size);
			break;
		}
		n = val.mv_size / LMDB_MARK_SIZE_V2;
		if (n * LMDB_MARK_SIZE > cap) {
			uint8_t *nb = realloc(buf, n * LMDB_MARK_SIZE);

			if (nb == NULL) {
				rc = mm_diag_set(MM_ENOMEM, "lmdb: cannot rewrite %zu marks", n);
				break;
			}
			buf = nb;
			cap = n * LMDB_MARK_SIZE;
		}
		/* The new entries are built aside: LMDB may write the new value
		 * over the old one's pages. */
		base = (int64_t)get_u32be(key.mv_data) * LMDB_MARK_WINDOW_MS;
		for (i = 0; i < n; i++) {
			mm_markhash_t m;

			entry_get_v2((const uint8_t *)val.mv_data + i * LMDB_MARK_SIZE_V2, &m);
			if (m.expire_ms < base || m.expire_ms - base >= LMDB_MARK_WINDOW_MS) {
				rc = mm_diag_set(MM_ECORRUPT,
						 "lmdb: corrupt format 2 mark (expiry %lld outside "
						 "its partition)",
						 (long long)m.expire_ms);
				goto out;
			}
			entry_put(buf + i * LMDB_MARK_SIZE, &m, base);
		}
		/* The key too: it points into the page the put changes. */
		memcpy(kb, key.mv_data, sizeof(kb));
		key = (MDB_val){sizeof(kb), kb};
		nval = (MDB_val){n * LMDB_MARK_SIZE, buf};
		if ((mrc = mdb_cursor_put(cur, &key, &nval, MDB_CURRENT))) {
			rc = mm_lmdb_fail(mrc, "rewrite format 2 marks");
			break;
		}
	}
out:
	mdb_cursor_close(cur);
	free(buf);
	return rc;
}

/* Deletes the runs of every partition that ended by now_ms, counting them
 * in *dropped. */
static int drop_expired(MDB_cursor *cur, int64_t now_ms, size_t *dropped)
{
	MDB_cursor_op op = MDB_FIRST;
	MDB_val key, val;
	int mrc;

	for (;;) {
		mrc = mdb_cursor_get(cur, &key, &val, op);
		if (mrc == MDB_NOTFOUND)
			return 0;
		if (mrc)
			return mm_lmdb_fail(mrc, "expire marks");
		if (key.mv_size != 8)
			return mm_diag_set(MM_ECORRUPT, "lmdb: corrupt marks key of %zu bytes",
					   key.mv_size);
		if (((int64_t)get_u32be(key.mv_data) + 1) * LMDB_MARK_WINDOW_MS > now_ms)
			return 0;
		/* After a delete the cursor rests on the next record, which
		 * MDB_NEXT returns. */
		if ((mrc = mdb_cursor_del(cur, 0)))
			return mm_lmdb_fail(mrc, "expire marks");
		(*dropped)++;
		op = MDB_NEXT;
	}
}

/* Writes st->marks as one run per partition: the first mark's, then any
 * others in ascending order, each found by a pass over the marks (a
 * flush's marks expire within a flush interval of each other: one
 * partition, or two). The marks stay where they are: they may be the
 * flush's own (mm_lmdb_write_marks). */
static int write_runs(mm_lmdb_t *st, MDB_txn *txn, MDB_cursor *cur)
{
	const mm_markhash_t *m = st->marks;
	uint32_t part, q, next = 0;
	size_t i, first = 0, count = 0;
	int rc, more = 0;

	if (st->nmarks == 0)
		return 0;
	part = partition_of(m[0].expire_ms);
	for (i = 0; i < st->nmarks; i++) {
		q = partition_of(m[i].expire_ms);
		if (q == part)
			count++;
		else if (!more || q < next)
			next = q, more = 1;
	}
	if ((rc = write_run(st, txn, cur, part, 0, count)))
		return rc;
	while (more) {
		uint32_t this = next;

		more = 0;
		count = 0;
		for (i = 0; i < st->nmarks; i++) {
			q = partition_of(m[i].expire_ms);
			if (q == this) {
				if (count++ == 0)
					first = i;
			} else if (q > this && q != part && (!more || q < next)) {
				next = q, more = 1;
			}
		}
		if ((rc = write_run(st, txn, cur, this, first, count)))
			return rc;
	}
	return 0;
}

int mm_lmdb_write_marks(mm_lmdb_t *st, MDB_txn *txn, mm_flush_t *f)
{
	MDB_cursor *cur = NULL;
	const mm_ns_t *ns = NULL;
	uint64_t seed = 0;
	size_t i;
	int rc, mrc;

	uv_mutex_lock(&st->marks_lock);
	st->npend = 0;
	st->marks = NULL;
	st->nmarks = 0;
	st->migrated = 0;
	st->dropped = 0;
	if ((rc = marks_load(st, txn, f->now_ms)))
		goto out;
	if ((mrc = mdb_cursor_open(txn, st->dbi_marks, &cur))) {
		rc = mm_lmdb_fail(mrc, "open cursor");
		goto out;
	}
	if ((rc = drop_expired(cur, f->now_ms, &st->dropped)))
		goto out;
	if (f->nmarks == 0 && !st->legacy) {
		/* The flush's hashes are the marks as they are: no copy. One
		 * that expired before now is written with them and leaves
		 * with its partition; the markset leaves it out. */
		st->marks = f->hashed;
		st->nmarks = f->nhashed;
		rc = write_runs(st, txn, cur);
		goto out;
	}
	/* Room for the flush's marks at once: an append per mark is then a
	 * store, not a call. */
	if ((rc = pend_reserve(st, f->nhashed + f->nmarks)))
		goto out;
	for (i = 0; i < f->nhashed; i++)
		if (f->hashed[i].expire_ms > f->now_ms)
			st->pend[st->npend++] = f->hashed[i];
	for (i = 0; i < f->nmarks; i++) {
		const mm_mark_t *mk = &f->marks[i];
		mm_markhash_t m;

		/* A mark expired already is absent: nothing to keep. */
		if (mk->expire_ms <= f->now_ms)
			continue;
		if (given(&mk->hash)) {
			m.h0 = mk->hash.h0;
			m.h1 = mk->hash.h1;
		} else {
			if (mk->ns != ns) {
				ns = mk->ns;
				seed = mm_markset_ns_seed(ns->name, strlen(ns->name));
			}
			mm_markset_hash(seed, mk->id, mk->len, &m);
		}
		m.expire_ms = mk->expire_ms;
		st->pend[st->npend++] = m;
	}
	if (st->legacy) {
		if ((rc = legacy_read(st, txn, f->now_ms)))
			goto out;
		if ((mrc = mdb_drop(txn, st->dbi_seen, 0))) {
			rc = mm_lmdb_fail(mrc, "empty the format 1 marks");
			goto out;
		}
		st->migrated = 1;
	}
	st->marks = st->pend;
	st->nmarks = st->npend;
	rc = write_runs(st, txn, cur);
out:
	if (cur != NULL)
		mdb_cursor_close(cur);
	uv_mutex_unlock(&st->marks_lock);
	return rc;
}

void mm_lmdb_marks_committed(mm_lmdb_t *st, int64_t now_ms)
{
	mm_markbatch_t b;

	uv_mutex_lock(&st->marks_lock);
	if (st->migrated)
		st->legacy = 0;
	/* The flush's marks become a run (merged with the newest runs) built
	 * aside, beside the readers; the loop waits only for the swap. When a
	 * partition ended on the disk, every run is merged into one of the
	 * marks live at now_ms, so the memory forgets what the disk did (about
	 * once an hour). A set that cannot take them is read again from the
	 * disk, which has every mark, by the next claim or apply: it must
	 * never miss one. */
	if (st->marks_loaded) {
		if (mm_markset_prepare(&st->set, &b, st->marks, st->nmarks, now_ms,
				       st->dropped != 0) == 0) {
			uv_mutex_lock(&st->set_lock);
			mm_markset_commit(&st->set, &b);
			uv_mutex_unlock(&st->set_lock);
			mm_markset_batch_done(&st->set, &b);
		} else {
			set_replace(st, NULL);
		}
	}
	st->npend = 0;
	st->marks = NULL;
	st->nmarks = 0;
	uv_mutex_unlock(&st->marks_lock);
}

void mm_lmdb_marks_free(mm_lmdb_t *st)
{
	mm_markset_free(&st->set);
	mm_huge_drop(st->pend, st->pend_cap * sizeof(*st->pend));
}

/* A flush's claims, answered from the markset (read from the disk first if
 * needed): the ids are hashed first (unless the pipeline did), then looked up, each lookup hinting the
 * cache about the slot of the one LMDB_PREFETCH places later (a large set
 * does not fit in the cache, and a lookup is then a memory access). */
static void lmdb_claim_work(uv_work_t *req)
{
	lmdb_work_t *w = (lmdb_work_t *)req;
	mm_lmdb_t *st = w->st;
	uint64_t seed = mm_markset_ns_seed(w->ns->name, strlen(w->ns->name));
	mm_markhash_t *h = malloc((w->n + 1) * sizeof(*h));
	MDB_txn *txn;
	size_t i;
	int rc = 0, mrc;

	if (h == NULL) {
		mm_lmdb_work_finish(w, mm_diag_set(MM_ENOMEM, "lmdb: cannot allocate a claim"));
		return;
	}
	uv_mutex_lock(&st->marks_lock);
	if (!st->marks_loaded || mm_markset_stale(&st->set, w->now_ms)) {
		if ((mrc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn))) {
			rc = mm_lmdb_fail(mrc, "begin read transaction");
			goto out;
		}
		rc = marks_load(st, txn, w->now_ms);
		mdb_txn_abort(txn);
		if (rc)
			goto out;
	}
	for (i = 0; i < w->n; i++) {
		if (given(&w->claims[i].hash)) {
			h[i].h0 = w->claims[i].hash.h0;
			h[i].h1 = w->claims[i].hash.h1;
		} else {
			mm_markset_hash(seed, w->claims[i].id, w->claims[i].len, &h[i]);
		}
	}
	for (i = 0; i < w->n; i++) {
		if (i + LMDB_PREFETCH < w->n)
			mm_markset_prefetch(&st->set, &h[i + LMDB_PREFETCH]);
		w->claims[i].result = mm_markset_live(&st->set, &h[i], w->now_ms)
			? MM_CLAIM_DUPLICATE : MM_CLAIM_WON;
	}
out:
	uv_mutex_unlock(&st->marks_lock);
	free(h);
	mm_lmdb_work_finish(w, rc);
}

/* Reads the marks before the engine reads its first record (start), so
 * that marked() answers from the first generation on. A read that fails
 * leaves the set unread: the first claim or apply reads it again and reports
 * the failure as it would have without this, and until then the records'
 * ids wait for the flush's claims. */
static void lmdb_start_work(uv_work_t *req)
{
	lmdb_work_t *w = (lmdb_work_t *)req;
	mm_lmdb_t *st = w->st;
	MDB_txn *txn;

	uv_mutex_lock(&st->marks_lock);
	if (mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) == 0) {
		(void)marks_load(st, txn, w->now_ms);
		mdb_txn_abort(txn);
	}
	uv_mutex_unlock(&st->marks_lock);
	mm_lmdb_work_finish(w, 0);
}

int mm_lmdb_start(mm_store_t *base, mm_store_cb cb, void *arg)
{
	mm_lmdb_t *st = (mm_lmdb_t *)base;
	lmdb_work_t *w;

	/* A reader (queries) asks no claims. */
	if (st->read_only)
		return mm_store_complete_later(base, cb, arg, 0, "");
#ifdef MM_ERRINJ
	/* Tests: the marks stay unread, as after a failed read (the claims'
	 * path for the first generation). */
	if (getenv("MURMUR_ERRINJ_LMDB_MARKS_UNREAD"))
		return mm_store_complete_later(base, cb, arg, 0, "");
#endif
	w = mm_lmdb_reader_new(base, NULL, 0, cb, arg);
	if (w == NULL)
		return mm_diag_set(MM_ENOMEM, "lmdb: cannot allocate the start");
	return mm_lmdb_queue(st, w, lmdb_start_work);
}

/* A record's claim at once (MM_STORE_CAP_MARKED), from the markset alone:
 * the loop thread takes the lock the pool threads change it under. Until
 * the set is read (by the first claim or apply after open, or again after
 * it was dropped or grew stale), the ids wait for the flush's claims. */
int mm_lmdb_marked(mm_store_t *base, const mm_idhash_t *h, const mm_idhash_t *ahead,
		   int64_t now_ms)
{
	mm_lmdb_t *st = (mm_lmdb_t *)base;
	mm_markhash_t m = {h->h0, h->h1, 0};
	int rc;

	if (!st->set_held)
		uv_mutex_lock(&st->set_lock);
	if (!st->marks_loaded || mm_markset_stale(&st->set, now_ms)) {
		rc = MM_EAGAIN;
	} else {
		/* Most records' ids are new, which the filter's word tells
		 * alone: the runs are read only when the word lets the id by. */
		if (ahead != NULL)
			mm_markset_prefetch(&st->set, &(mm_markhash_t){ahead->h0, ahead->h1, 0});
		rc = mm_markset_live(&st->set, &m, now_ms);
	}
	if (!st->set_held)
		uv_mutex_unlock(&st->set_lock);
	return rc;
}

/* A batch's lookups under one lock (the vtable's marked_hold): a lock and
 * an unlock per record cost as much as the lookup. A pool thread that
 * changes the set meanwhile waits for the batch, as the loop waits for a
 * run of its adds. */
void mm_lmdb_marked_hold(mm_store_t *base, int hold)
{
	mm_lmdb_t *st = (mm_lmdb_t *)base;

	if (hold)
		uv_mutex_lock(&st->set_lock);
	st->set_held = hold;
	if (!hold)
		uv_mutex_unlock(&st->set_lock);
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
