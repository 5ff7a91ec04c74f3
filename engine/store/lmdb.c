/*
 * lmdb.c: the embedded default store, the source of truth on one machine.
 *
 * Layout. One LMDB environment in the directory `path`, with five named
 * databases. Integers inside keys are big-endian so that LMDB's bytewise key
 * order is numeric order; integers inside values are little-endian like every
 * other encoding in murmur.
 *
 *   "state" key   u8 ns_len, ns, u16 BE entity_len, ENTITY, BUCKET [, SEQ]
 *           value u64 LE expire_ms (0 = never) [, entity bytes], monoid encoding
 *   "marks" key   u32 BE partition, u32 BE SEQ
 *           value dedup marks, 16 bytes each (lmdb_dedup.c; 24 in format 2)
 *   "seen"  key   u8 ns_len, ns, u16 BE id_len, ID [, SEQ]
 *           value u64 LE expire_ms [, id bytes]
 *           (format 1's marks, moved to "marks" by the first apply)
 *   "pos"   key   source id (without its NUL)   value  position bytes
 *   "meta"  key   namespace name                value  metadata bytes
 *   main    key   "murmur.format"               value  u32 LE format version, 3
 *
 * Format versions: 1 kept dedup marks one record per id in "seen"; 2 moved
 * them to runs in "marks" of 24-byte entries; 3 has 16-byte entries. A
 * writer moves an older store to 3 when it opens it (lmdb_open_dbs); a
 * read-only opener reads it as it is; builds before a version refuse it.
 *
 * BUCKET is the bucket id as 8 big-endian bytes with the sign bit flipped, so
 * state keys sort by (ns, entity, bucket) and the buckets of one entity are
 * contiguous, oldest first. A purge therefore seeks to (ns, entity, 1),
 * deletes forward while the bucket is below before_bucket, and seeks past the
 * entity: it reads what it deletes plus one seek per entity.
 *
 * Long identifiers. LMDB keys have at most 511 bytes (MDB_MAXKEYSIZE, the
 * default that Debian's build keeps) while entities (and format 1's dedup
 * ids) may have 1024. An identifier whose key would be longer is stored in
 * hashed form: ENTITY/ID is mm_hash64(bytes, LMDB_HASH_SEED) as 8 big-endian
 * bytes, and the key ends (after BUCKET for states) with SEQ, a u16 BE that
 * tells apart identifiers whose hashes collide. The full identifier is kept
 * in the value right after expire_ms and compared on every lookup, so a
 * collision costs a second record and never a wrong answer. The form is a
 * function of the lengths alone (inline iff the inline key fits in 511
 * bytes), so an identifier always takes the same form, and the two forms
 * cannot share a key because their length fields differ.
 *
 * Expiry. A state with expire_ms != 0 and expire_ms <= now is absent (now is
 * the flush's now_ms for apply, the wall clock at the call for get_many):
 * reads report it missing and an apply replaces it instead of merging into
 * it. A mark is seen while expire_ms > now_ms; marks expire by whole time
 * partitions (lmdb_dedup.c).
 *
 * Threads and transactions. The environment is opened with MDB_NOTLS, so a
 * read transaction is not tied to the thread that began it. apply() runs one
 * write transaction on a libuv pool thread (uv_queue_work) and completes on
 * the loop thread; get_many(), get_position(), get_meta() and claim() do
 * and list_meta() the same with one read transaction, put_meta() with its
 * own write transaction (which waits for an apply in flight to commit: LMDB
 * has one writer at a time). A read from the map is a page fault when the
 * page is not resident, i.e. disk I/O, so nothing reads on the loop thread.
 * Every apply() is one transaction: all of it commits or none.
 *
 * Dedup. claim() answers from the marks, which apply() writes in the same
 * transaction as the states they counted: exact across kill -9
 * (lmdb_dedup.c). The store is split along its seams; lmdb_impl.h lists the
 * files.
 *
 * Durability. sync = true fsyncs every commit. sync = false (MDB_NOSYNC)
 * leaves write-back to the kernel: a process crash loses nothing committed,
 * but a power loss or kernel crash loses the last commits (and LMDB only
 * promises consistency if the filesystem preserves write order).
 *
 * Resident memory. A writer drops its mappings of the data file's pages
 * during and after every apply (lmdb_map_release), so the stale versions of
 * the tree that copy-on-write leaves in the file do not stay in its RSS; the
 * page cache keeps them for the kernel to reclaim.
 *
 * Several processes may share a store: one writer and any number of
 * read-only openers (queries), each read seeing the last committed
 * transaction. A reader maps the size the writer recorded; if the writer
 * later reopens with a larger map_size and the data outgrows the reader's
 * map, reads fail with MM_EAGAIN until the reader reopens. A process must not
 * open the same directory twice (LMDB's rule: closing one environment drops
 * the other's file locks), which is why the tests read from a child process.
 *
 * Error injection (tests only, compiled in when MM_ERRINJ is defined): the
 * environment variable MURMUR_ERRINJ_STORE_APPLY=N makes the next N apply()
 * calls fail with MM_ENOSPC before any transaction begins; each injected
 * failure decrements the variable. MURMUR_ERRINJ_LMDB_MARKS_UNREAD (set)
 * keeps start() from reading the dedup marks (lmdb_dedup.c).
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <lmdb.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "../lib/error.h"
#include "../lib/log.h"
#include "lmdb_impl.h"

#define LMDB_FORMAT 3
#define LMDB_FORMAT_KEY "murmur.format"
#define LMDB_MAP_MIN (64 * 1024)
#define LMDB_READERS_MAX 65536
#define LMDB_RELEASE_EVERY 4096
/* How many deltas ahead the flush prefetches a state and its key. */
#define LMDB_PREFETCH_AHEAD 4

typedef struct lmdb_cfg {
	const char *path;
	uint64_t map_size;
	int sync;
	int64_t max_readers;
} lmdb_cfg_t;

static const mm_option_t lmdb_options[] = {
	{MM_OPT_STRING, "path", NULL, offsetof(lmdb_cfg_t, path),
	 "Directory of the store (required); created like mkdir -p unless opened read-only."},
	{MM_OPT_SIZE, "map_size", "8g", offsetof(lmdb_cfg_t, map_size),
	 "Largest size the data file may reach. A flush that needs more fails with ENOSPC "
	 "(retriable) and writes nothing; reopen with a larger map_size to go on. Read-only "
	 "openers use the writer's."},
	{MM_OPT_BOOL, "sync", "true", offsetof(lmdb_cfg_t, sync),
	 "fsync every commit. false survives a process crash but may lose the last commits on "
	 "power loss."},
	{MM_OPT_INT, "max_readers", "126", offsetof(lmdb_cfg_t, max_readers),
	 "Most read transactions open at once across every process sharing the store."},
	{0},
};

/* Defined at the end of this file; open() stores it in the store's head. */
extern const mm_store_vtable_t mm_store_lmdb_vtable;

/* Whether an identifier of len bytes is hashed in a key whose namespace
 * prefix has nsl bytes and that ends with `tail` more bytes. */
static int ident_hashed(size_t nsl, size_t len, size_t tail)
{
	return nsl + 2 + len + tail > LMDB_KEY_MAX;
}

static void key_ident(lmdb_key_t *k, const char *ns, const void *id, size_t len, size_t tail)
{
	size_t nsl = ns_prefix(k->b, ns);

	k->ns = ns;
	k->id = id;
	k->idlen = len;
	put_u16be(k->b + nsl, len);
	k->len = nsl + 2;
	k->hashed = ident_hashed(nsl, len, tail);
	if (k->hashed) {
		put_u64be(k->b + k->len, mm_hash64(id, len, LMDB_HASH_SEED));
		k->len += 8;
	} else {
		memcpy(k->b + k->len, id, len);
		k->len += len;
	}
}

static void state_key(lmdb_key_t *k, const char *ns, const mm_key_t *key)
{
	key_ident(k, ns, key->entity, key->len, 8);
	k->bucket = key->bucket;
	put_bucket(k->b + k->len, key->bucket);
	k->len += 8;
}

/* An error reading the stored bytes of k: anything but MM_ENOMEM is
 * MM_ECORRUPT naming the key. A value that fails to decode is never treated
 * as absent: overwriting it would silently lose everything merged into it. */
static int stored_error(const lmdb_key_t *k, int rc)
{
	char why[300];

	if (rc == MM_ENOMEM)
		return rc;
	snprintf(why, sizeof(why), "%s", mm_diag_msg());
	return mm_lmdb_corrupt(k, why);
}

/*
 * Decodes a stored state into state (which is init()ed). Returns 1 if it was
 * decoded, 0 if it has expired at now_ms (state stays the identity), or
 * MM_ECORRUPT naming the key (stored_error).
 */
static int state_decode(const lmdb_key_t *k, const MDB_val *val, int64_t now_ms,
			const mm_monoid_t *m, void *state)
{
	int rc = mm_lmdb_state_decode(val->mv_data, val->mv_size, k->hashed ? k->idlen : 0, now_ms,
				      m, state);

	return rc >= 0 ? rc : stored_error(k, rc);
}

/*
 * Merges one delta into its stored state. The caller's delta is only read.
 * A monoid with merge_encoded (HLL) merges it straight from the stored bytes
 * into vb: a dense sketch is copied and patched, a sparse one merged as a
 * stream, no state decoded (the old bytes are read before the put, which is
 * what keeps them valid: LMDB promises a value only until the next write).
 * Others decode the stored state into a scratch state that takes the merge.
 * cur is a cursor on the state database that the flush's deltas share: they
 * come sorted, so each lookup starts from the page the previous one left the
 * cursor on, and a present record is rewritten where the lookup found it
 * (MDB_CURRENT) instead of by a second descent from the root. A hashed key is
 * looked up by lmdb_find's own walk and written by key.
 *
 * A merged record byte for byte equal to the stored one is not written
 * (*written stays 0): the put would dirty the record's page (and, for a
 * dense HLL, its four overflow pages) to store the same bytes. An HLL none
 * of whose registers the delta raises merges to the very bytes merge_encoded
 * wrote before (a dense sketch is patched in place, a sparse one rewritten by
 * the same canonical rules): a page whose visitors come back within the day.
 * Bytes it did not write (a valid cached cardinality, the server's own
 * sparse edits) differ and are written once, in its form.
 */
static int apply_delta(mm_lmdb_t *st, MDB_txn *txn, MDB_cursor *cur, const mm_delta_t *d,
		       int64_t now_ms, mm_buf_t *vb, int *written)
{
	const mm_monoid_t *m = d->ns->m;
	_Alignas(16) unsigned char scratch[MM_STATE_MAX];
	const uint8_t *body = NULL;
	size_t blen = 0;
	lmdb_key_t k;
	MDB_val key, val;
	unsigned flags = 0;
	int found = 0, rc = 0, mrc;

	state_key(&k, d->ns->name, &d->key);
	if (k.hashed) {
		if ((rc = mm_lmdb_find(txn, st->dbi_state, &k, &val, &found)))
			return rc;
	} else {
		key.mv_size = k.len;
		key.mv_data = k.b;
		mrc = mdb_cursor_get(cur, &key, &val, MDB_SET_KEY);
		if (mrc == 0)
			found = 1;
		else if (mrc != MDB_NOTFOUND)
			return mm_lmdb_fail(mrc, "get state");
		flags = found ? MDB_CURRENT : 0;
	}
	m->vt->init(m, scratch);
	vb->len = 0;
	if ((rc = mm_buf_put_u64le(vb, (uint64_t)d->expire_ms)) ||
	    (k.hashed && (rc = mm_buf_append(vb, k.id, k.idlen))))
		goto out;
	if (m->vt->merge_encoded != NULL) {
		if (found && (rc = mm_lmdb_state_body(val.mv_data, val.mv_size,
						      k.hashed ? k.idlen : 0, now_ms, &body,
						      &blen)) < 0)
			goto stored;
		if ((rc = m->vt->merge_encoded(m, body, blen, d->state, vb)))
			goto stored;
	} else {
		if (found && (rc = state_decode(&k, &val, now_ms, m, scratch)) < 0)
			goto out;
		if ((rc = m->vt->merge(m, scratch, d->state)) || (rc = m->vt->encode(m, scratch, vb)))
			goto out;
	}
	/* val still holds the stored record: nothing was written since the get. */
	if (found && val.mv_size == vb->len && memcmp(val.mv_data, vb->p, vb->len) == 0)
		goto out;
	key.mv_size = k.len;
	key.mv_data = k.b;
	val.mv_size = vb->len;
	val.mv_data = vb->p;
	*written = 1;
	if (k.hashed)
		mrc = mdb_put(txn, st->dbi_state, &key, &val, 0);
	else
		mrc = mdb_cursor_put(cur, &key, &val, flags);
	rc = mrc ? mm_lmdb_fail(mrc, "put state") : 0;
	goto out;
stored:
	rc = stored_error(&k, rc);
out:
	m->vt->destroy(m, scratch);
	return rc;
}

/* Parses a state key whose namespace prefix has nsl bytes into the length of
 * its (namespace, identifier) prefix and its bucket. */
static int state_key_parse(const MDB_val *key, size_t nsl, size_t *plen, int64_t *bucket)
{
	return mm_lmdb_state_key_parse(key->mv_data, key->mv_size, nsl, plen, bucket);
}

/* Turns the prefix p[0..n) into the smallest key above every key that starts
 * with it and returns its length. Prefixes end in an identifier after a u16
 * length whose high byte is at most 4, so the carry stops before it. */
static size_t key_successor(uint8_t *p, size_t n)
{
	while (p[n - 1] == 0xff)
		n--;
	p[n - 1]++;
	return n;
}

/* Deletes every state of the namespace whose bucket is in [1, before). */
static int purge_states(mm_lmdb_t *st, MDB_txn *txn, const mm_purge_t *pg, size_t *purged)
{
	uint8_t ns[1 + LMDB_NS_MAX], seek[LMDB_KEY_MAX];
	MDB_cursor *cur;
	MDB_cursor_op op = MDB_SET_RANGE;
	MDB_val key, val;
	size_t nsl, plen = 0;
	int64_t bucket = 0;
	int rc = 0, mrc;

	if (pg->before_bucket <= 1)
		return 0;
	nsl = ns_prefix(ns, pg->ns->name);
	if ((mrc = mdb_cursor_open(txn, st->dbi_state, &cur)))
		return mm_lmdb_fail(mrc, "open cursor");
	key.mv_size = nsl;
	key.mv_data = ns;
	for (;;) {
		mrc = mdb_cursor_get(cur, &key, &val, op);
		if (mrc) {
			if (mrc != MDB_NOTFOUND)
				rc = mm_lmdb_fail(mrc, "purge");
			break;
		}
		if (key.mv_size < nsl || memcmp(key.mv_data, ns, nsl) != 0)
			break;
		if ((rc = state_key_parse(&key, nsl, &plen, &bucket)))
			break;
		if (bucket >= 1 && bucket < pg->before_bucket) {
			/* After a delete the cursor already rests on the next
			 * record, and MDB_NEXT returns that one. */
			if ((mrc = mdb_cursor_del(cur, 0))) {
				rc = mm_lmdb_fail(mrc, "purge delete");
				break;
			}
			(*purged)++;
			op = MDB_NEXT;
			continue;
		}
		memcpy(seek, key.mv_data, plen);
		if (bucket < 1) {
			/* All-time and negative buckets sort first: skip to bucket 1. */
			put_bucket(seek + plen, 1);
			key.mv_size = plen + 8;
		} else {
			/* The rest of this entity's buckets are kept. */
			key.mv_size = key_successor(seek, plen);
		}
		key.mv_data = seek;
		op = MDB_SET_RANGE;
	}
	mdb_cursor_close(cur);
	return rc;
}

/* Records the outcome of pool work; the detail is copied now because the
 * diagnostics slot belongs to the pool thread. */
void mm_lmdb_work_finish(lmdb_work_t *w, int rc)
{
	w->status = rc;
	if (rc)
		snprintf(w->detail, sizeof(w->detail), "%s", mm_diag_msg());
	else
		w->detail[0] = '\0';
}

/*
 * Drops this process's mappings of the data file's pages (madvise
 * MADV_DONTNEED on the map). The pages stay in the kernel's page cache, and
 * the next read of one is a minor fault that maps it again with the same
 * bytes: the map is a read-only shared view of the file, and nothing writes a
 * page that a transaction can still read (LMDB writes a transaction's pages,
 * at commit or when it spills them, to pages no snapshot in use refers to).
 *
 * Why. An apply reads its part of the tree through the map and copies every
 * page it changes into memory of its own, so the pages it read are dead to
 * it once copied; and copy-on-write moves the live tree to other pages of the
 * file at each commit, so over a few flushes every page of the file, about
 * three times the live tree when flushes rewrite most of it, stays mapped and
 * counted in the process's resident memory although it holds no live data.
 * Releasing them during and after each apply bounds what the map adds to the
 * resident memory by the pages one stretch of LMDB_RELEASE_EVERY deltas reads.
 * Pool thread (the apply's), or wherever the write transaction runs.
 */
static void lmdb_map_release(mm_lmdb_t *st)
{
	MDB_envinfo info;
	size_t len;

	if (st->map_addr == NULL || mdb_env_info(st->env, &info))
		return;
	len = (info.me_last_pgno + 1) * st->psize;
	/* A failure only leaves the pages mapped: memory, never data. */
	(void)madvise(st->map_addr, len < st->map_len ? len : st->map_len, MADV_DONTNEED);
}

/*
 * Finds where LMDB mapped the data file: liblmdb does not tell (its
 * me_mapaddr is only set for MDB_FIXEDMAP), so the mapping of offset 0 of
 * the file's device and inode is looked up in /proc/self/maps. LMDB maps the
 * file once at open and never moves it for a writer that does not change its
 * map size, which murmur does not do after open. Not finding it (no /proc)
 * only leaves lmdb_map_release() a no-op.
 */
static void lmdb_map_find(mm_lmdb_t *st)
{
	char line[512];
	struct stat sb;
	MDB_stat stat;
	mdb_filehandle_t fd;
	FILE *maps;

	if (mdb_env_get_fd(st->env, &fd) || fstat(fd, &sb) || mdb_env_stat(st->env, &stat))
		return;
	maps = fopen("/proc/self/maps", "r");
	if (maps == NULL)
		return;
	while (fgets(line, sizeof(line), maps)) {
		unsigned long lo, hi, ino;
		unsigned long long off;
		unsigned maj, mnr;

		if (sscanf(line, "%lx-%lx %*s %llx %x:%x %lu", &lo, &hi, &off, &maj, &mnr, &ino) ==
			    6 &&
		    off == 0 && ino == (unsigned long)sb.st_ino && maj == major(sb.st_dev) &&
		    mnr == minor(sb.st_dev)) {
			st->map_addr = (void *)lo;
			st->map_len = hi - lo;
			st->psize = stat.ms_psize;
			break;
		}
	}
	fclose(maps);
}

static void lmdb_apply_work(uv_work_t *req)
{
	lmdb_work_t *w = (lmdb_work_t *)req;
	mm_lmdb_t *st = w->st;
	mm_flush_t *f = w->f;
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	mm_buf_t vb = {0};
	size_t i, purged = 0, writes = 0;
	int rc = 0, mrc;

	if (w->inject) {
		rc = mm_diag_set(MM_ENOSPC, "lmdb: injected failure (MURMUR_ERRINJ_STORE_APPLY)");
		goto out;
	}
	mm_lmdb_sort_deltas(f->deltas, f->ndeltas);
	if ((mrc = mdb_txn_begin(st->env, NULL, 0, &txn))) {
		rc = mm_lmdb_fail(mrc, "begin write transaction");
		goto out;
	}
	/* Purges go first: they then walk only what earlier flushes stored, not
	 * the states this flush is about to write (on a fresh store, the first
	 * flush's purge used to seek once per entity it had just inserted). A
	 * delta of this flush for a bucket already past the retention is
	 * expired by its expire_ms, so reads see it absent, and the next purge
	 * takes it. */
	for (i = 0; i < f->npurges && rc == 0; i++)
		rc = purge_states(st, txn, &f->purges[i], &purged);
	if (rc == 0 && f->ndeltas && (mrc = mdb_cursor_open(txn, st->dbi_state, &cur))) {
		rc = mm_lmdb_fail(mrc, "open cursor");
		goto out;
	}
	for (i = 0; i < f->ndeltas && rc == 0; i++) {
		if (i % LMDB_RELEASE_EVERY == 0)
			lmdb_map_release(st);
		/* The deltas are sorted by key, their states and key bytes lie
		 * scattered over the aggregation table: fetch a few ahead, or each
		 * merge starts with a wait on memory. */
		if (i + LMDB_PREFETCH_AHEAD < f->ndeltas) {
			__builtin_prefetch(f->deltas[i + LMDB_PREFETCH_AHEAD].state);
			__builtin_prefetch(f->deltas[i + LMDB_PREFETCH_AHEAD].key.entity);
		}
		int written = 0;

		rc = apply_delta(st, txn, cur, &f->deltas[i], f->now_ms, &vb, &written);
		writes += (size_t)written;
		if (rc == MM_ERANGE && f->delta_done) {
			/* The merge itself is impossible (a sum would overflow): no retry
			 * can help, so this delta is handed back rejected and the rest
			 * of the flush goes on. */
			f->delta_done[i] = MM_DELTA_REJECTED;
			if (f->rejected++ == 0)
				snprintf(f->reject_detail, sizeof(f->reject_detail), "%s", mm_diag_msg());
			rc = 0;
		}
	}
	if (cur != NULL) {
		mdb_cursor_close(cur);
		cur = NULL;
	}
	if (rc == 0)
		rc = mm_lmdb_write_marks(st, txn, f);
	for (i = 0; i < f->npositions && rc == 0; i++)
		rc = mm_lmdb_put_position(st, txn, &f->positions[i]);
	if (rc)
		goto out;
	mrc = mdb_txn_commit(txn);
	txn = NULL;
	if (mrc) {
		rc = mm_lmdb_fail(mrc, "commit");
		goto out;
	}
	mm_lmdb_marks_committed(st, f->now_ms);
	lmdb_map_release(st);
	f->writes = writes;
	f->purged = purged;
out:
	if (cur != NULL)
		mdb_cursor_close(cur);
	if (txn != NULL)
		mdb_txn_abort(txn);
	mm_buf_free(&vb);
	mm_lmdb_work_finish(w, rc);
}

static void lmdb_get_work(uv_work_t *req)
{
	lmdb_work_t *w = (lmdb_work_t *)req;
	const mm_monoid_t *m = w->ns->m;
	MDB_txn *txn;
	size_t i;
	int rc = 0, mrc;

	memset(w->found, 0, w->n);
	if ((mrc = mdb_txn_begin(w->st->env, NULL, MDB_RDONLY, &txn))) {
		mm_lmdb_work_finish(w, mm_lmdb_fail(mrc, "begin read transaction"));
		return;
	}
	for (i = 0; i < w->n; i++) {
		lmdb_key_t k;
		MDB_val val;
		int found;

		state_key(&k, w->ns->name, &w->keys[i]);
		if ((rc = mm_lmdb_find(txn, w->st->dbi_state, &k, &val, &found)))
			break;
		if (!found)
			continue;
		rc = state_decode(&k, &val, w->now_ms, m, (char *)w->states + i * MM_STATE_MAX);
		if (rc < 0)
			break;
		w->found[i] = (uint8_t)rc;
		rc = 0;
	}
	mdb_txn_abort(txn);
	mm_lmdb_work_finish(w, rc);
}

/* Loop thread: hands the result to the caller. The work item is freed first
 * thing after, as the callback may close the store. */
static void lmdb_after_work(uv_work_t *req, int status)
{
	lmdb_work_t *w = (lmdb_work_t *)req;

	w->st->inflight--;
	w->cb(w->arg, w->status, w->detail);
	free(w);
}

int mm_lmdb_queue(mm_lmdb_t *st, lmdb_work_t *w, uv_work_cb work)
{
	int rc = uv_queue_work(st->base.loop, &w->req, work, lmdb_after_work);

	if (rc) {
		free(w);
		return mm_diag_set(MM_EINVAL, "lmdb: uv_queue_work: %s", uv_strerror(rc));
	}
	st->inflight++;
	return 0;
}

#ifdef MM_ERRINJ
/* Consumes one injected apply failure, if any is pending. Loop thread. */
static int lmdb_errinj_apply(void)
{
	const char *v = getenv("MURMUR_ERRINJ_STORE_APPLY");
	char left[24];
	long n;

	if (v == NULL || (n = strtol(v, NULL, 10)) <= 0)
		return 0;
	snprintf(left, sizeof(left), "%ld", n - 1);
	setenv("MURMUR_ERRINJ_STORE_APPLY", left, 1);
	return 1;
}
#endif

static int lmdb_apply(mm_store_t *base, mm_flush_t *f, mm_store_cb cb, void *arg)
{
	mm_lmdb_t *st = (mm_lmdb_t *)base;
	lmdb_work_t *w;

	if (st->read_only)
		return mm_diag_set(MM_ENOTSUP, "lmdb: apply on a store opened read-only");
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return mm_diag_set(MM_ENOMEM, "lmdb: cannot allocate an apply");
	w->st = st;
	w->cb = cb;
	w->arg = arg;
	w->f = f;
#ifdef MM_ERRINJ
	w->inject = lmdb_errinj_apply();
#endif
	return mm_lmdb_queue(st, w, lmdb_apply_work);
}

/* The set-up get_many and claim share: n items of ns, read as of now. */
lmdb_work_t *mm_lmdb_reader_new(mm_store_t *base, const mm_ns_t *ns, size_t n, mm_store_cb cb,
				void *arg)
{
	lmdb_work_t *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return NULL;
	w->st = (mm_lmdb_t *)base;
	w->cb = cb;
	w->arg = arg;
	w->ns = ns;
	w->n = n;
	w->now_ms = mm_lmdb_now_ms();
	return w;
}

static int lmdb_get_many(mm_store_t *base, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
			 void *states, uint8_t *found, mm_store_cb cb, void *arg)
{
	lmdb_work_t *w = mm_lmdb_reader_new(base, ns, n, cb, arg);

	if (w == NULL)
		return mm_diag_set(MM_ENOMEM, "lmdb: cannot allocate a get_many");
	w->keys = keys;
	w->states = states;
	w->found = found;
	return mm_lmdb_queue(w->st, w, lmdb_get_work);
}

/* mkdir -p: creates every missing directory of path. */
static int lmdb_mkdir_p(const char *path)
{
	char dir[PATH_MAX], what[PATH_MAX + 32];
	size_t len = strlen(path), i;

	if (len >= sizeof(dir))
		return mm_diag_set(MM_EINVAL, "lmdb: path longer than %d bytes", PATH_MAX - 1);
	memcpy(dir, path, len + 1);
	for (i = 1; i <= len; i++) {
		char c = dir[i];

		if (c != '/' && c != '\0')
			continue;
		dir[i] = '\0';
		if (mkdir(dir, 0777) != 0 && errno != EEXIST) { /* minus the umask */
			snprintf(what, sizeof(what), "cannot create directory '%s'", dir);
			return mm_lmdb_fail(errno, what);
		}
		dir[i] = c;
	}
	return 0;
}

int mm_lmdb_format(mm_lmdb_t *st, MDB_txn *txn, uint32_t *format)
{
	MDB_val key = {sizeof(LMDB_FORMAT_KEY) - 1, LMDB_FORMAT_KEY}, val;
	int mrc = mdb_get(txn, st->dbi_main, &key, &val);

	if (mrc)
		return mm_lmdb_fail(mrc, "read format version");
	if (val.mv_size != 4)
		return mm_diag_set(MM_ECORRUPT, "lmdb: format version of %zu bytes", val.mv_size);
	*format = mm_get_u32le(val.mv_data);
	return 0;
}

/*
 * Opens the five databases and checks the format version. A new (empty)
 * environment gets the version; a non-empty one without it belongs to
 * something else and is left alone. A writer moves an older store to
 * format 3, which builds before it then refuse: a format 1 store gets its
 * "marks" database ("seen" is read until the first apply empties it,
 * lmdb_dedup.c), a format 2 store's runs are rewritten with 16-byte entries
 * in this transaction, so a crash leaves it format 2 whole.
 */
static int lmdb_open_dbs(mm_lmdb_t *st, const char *path)
{
	static const char *const names[] = {"state", "pos", "seen", "meta", "marks"};
	MDB_dbi *dbis[] = {&st->dbi_state, &st->dbi_pos, &st->dbi_seen, &st->dbi_meta,
			   &st->dbi_marks};
	MDB_val key = {sizeof(LMDB_FORMAT_KEY) - 1, LMDB_FORMAT_KEY}, val;
	uint8_t version[4];
	uint32_t format = 0;
	int upgrade = 0;
	MDB_stat stat;
	MDB_dbi main;
	MDB_txn *txn;
	size_t i;
	int rc = 0, mrc;

	if ((mrc = mdb_txn_begin(st->env, NULL, st->read_only ? MDB_RDONLY : 0, &txn)))
		return mm_lmdb_fail(mrc, "begin transaction");
	if ((mrc = mdb_dbi_open(txn, NULL, 0, &main)) || (mrc = mdb_stat(txn, main, &stat))) {
		rc = mm_lmdb_fail(mrc, "open main database");
		goto out;
	}
	mrc = mdb_get(txn, main, &key, &val);
	if (mrc == 0 && val.mv_size == 4)
		format = mm_get_u32le(val.mv_data);
	upgrade = !st->read_only && mrc == 0 && (format == 1 || format == 2);
	if ((mrc == MDB_NOTFOUND && stat.ms_entries == 0 && !st->read_only) || upgrade) {
		mm_set_u32le(version, LMDB_FORMAT);
		val.mv_size = sizeof(version);
		val.mv_data = version;
		if ((mrc = mdb_put(txn, main, &key, &val, 0))) {
			rc = mm_lmdb_fail(mrc, "write format version");
			goto out;
		}
	} else if (mrc == MDB_NOTFOUND && stat.ms_entries == 0) {
		/* A reader that comes while the writer is creating the store
		 * (before its first commit) finds it empty: nothing stored yet. */
		rc = mm_diag_set(MM_ENOTFOUND, "lmdb: '%s' holds nothing yet", path);
		goto out;
	} else if (mrc == MDB_NOTFOUND) {
		rc = mm_diag_set(MM_EINCOMPAT, "lmdb: '%s' is not a murmur store", path);
		goto out;
	} else if (mrc) {
		rc = mm_lmdb_fail(mrc, "read format version");
		goto out;
	} else if (format < 1 || format > LMDB_FORMAT) {
		rc = mm_diag_set(MM_EINCOMPAT,
				 "lmdb: '%s' has store format %u, this build reads 1 to %d", path,
				 format, LMDB_FORMAT);
		goto out;
	}
	st->marks_v2 = format == 2 && st->read_only;
	st->dbi_main = main;
	st->has_marks_db = 1;
	for (i = 0; i < 5; i++) {
		mrc = mdb_dbi_open(txn, names[i], st->read_only ? 0 : MDB_CREATE, dbis[i]);
		if (mrc == MDB_NOTFOUND && dbis[i] == &st->dbi_marks) {
			st->has_marks_db = 0; /* a reader of a format 1 store */
			continue;
		}
		if (mrc) {
			rc = mm_lmdb_fail(mrc, "open database");
			goto out;
		}
	}
	if ((mrc = mdb_stat(txn, st->dbi_seen, &stat))) {
		rc = mm_lmdb_fail(mrc, "stat database");
		goto out;
	}
	st->legacy = stat.ms_entries > 0;
	if (upgrade && format == 2) {
		/* One transaction rewrites every run: say so, as it takes a
		 * while on a large store and makes it unreadable to older
		 * builds. */
		mm_log(MM_LOG_INFO, "lmdb",
		       "upgrading '%s' from store format 2 to %d: rewriting its dedup marks "
		       "in 16 bytes (builds before format %d will refuse the store)",
		       path, LMDB_FORMAT, LMDB_FORMAT);
		if ((rc = mm_lmdb_marks_upgrade(st, txn)))
			goto out;
	}
	/* Committing (even a read-only transaction) keeps the handles. */
	mrc = mdb_txn_commit(txn);
	txn = NULL;
	if (mrc)
		rc = mm_lmdb_fail(mrc, "commit");
out:
	if (txn != NULL)
		mdb_txn_abort(txn);
	return rc;
}

static int lmdb_open(uv_loop_t *loop, const mm_kv_t *kv, size_t nkv, int read_only,
		     mm_store_t **out)
{
	unsigned flags = MDB_NOTLS;
	mm_lmdb_t *st = NULL;
	MDB_env *env = NULL;
	lmdb_cfg_t cfg;
	int rc, mrc;

	memset(&cfg, 0, sizeof(cfg));
	if ((rc = mm_options_apply(lmdb_options, "lmdb", kv, nkv, &cfg)))
		return rc;
	if (cfg.path == NULL || cfg.path[0] == '\0')
		return mm_diag_set(MM_EINVAL, "lmdb: option 'path' is required");
	if (cfg.map_size < LMDB_MAP_MIN || cfg.map_size > SIZE_MAX)
		return mm_diag_set(MM_EINVAL, "lmdb: option 'map_size' must be at least 64k");
	if (cfg.max_readers < 1 || cfg.max_readers > LMDB_READERS_MAX)
		return mm_diag_set(MM_EINVAL, "lmdb: option 'max_readers' must be in 1..%d",
				   LMDB_READERS_MAX);
	if (!read_only && (rc = lmdb_mkdir_p(cfg.path)))
		return rc;
	if ((mrc = mdb_env_create(&env)))
		return mm_lmdb_fail(mrc, "create environment");
	/* A read-only opener maps the size the writer recorded, so that it can
	 * read however far the writer's map_size lets the data grow. */
	if ((mrc = mdb_env_set_maxdbs(env, 5)) ||
	    (!read_only && (mrc = mdb_env_set_mapsize(env, (size_t)cfg.map_size))) ||
	    (mrc = mdb_env_set_maxreaders(env, (unsigned)cfg.max_readers))) {
		rc = mm_lmdb_fail(mrc, "configure environment");
		goto fail;
	}
	if (read_only)
		flags |= MDB_RDONLY;
	if (!cfg.sync)
		flags |= MDB_NOSYNC;
	/* 0666 minus murmur's umask (077 by default, engine/main.c). */
	mrc = mdb_env_open(env, cfg.path, flags, 0666);
	if (mrc == ENOENT) {
		rc = mm_diag_set(MM_ENOTFOUND, "lmdb: no store at '%s'", cfg.path);
		goto fail;
	}
	if (mrc) {
		rc = mm_lmdb_fail(mrc, "open environment");
		goto fail;
	}
	if (mdb_env_get_maxkeysize(env) < LMDB_KEY_MAX) {
		rc = mm_diag_set(MM_ENOTSUP,
				 "lmdb: liblmdb takes keys of %d bytes, murmur needs %d",
				 mdb_env_get_maxkeysize(env), LMDB_KEY_MAX);
		goto fail;
	}
	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		rc = mm_diag_set(MM_ENOMEM, "lmdb: cannot allocate the store");
		goto fail;
	}
	st->base.vt = &mm_store_lmdb_vtable;
	st->base.loop = loop;
	st->env = env;
	st->read_only = read_only;
	if ((rc = lmdb_open_dbs(st, cfg.path)))
		goto fail;
	if (uv_mutex_init(&st->marks_lock)) {
		rc = mm_diag_set(MM_ENOMEM, "lmdb: cannot create a mutex");
		goto fail;
	}
	if (uv_mutex_init(&st->set_lock)) {
		uv_mutex_destroy(&st->marks_lock);
		rc = mm_diag_set(MM_ENOMEM, "lmdb: cannot create a mutex");
		goto fail;
	}
	if (!read_only)
		lmdb_map_find(st);
	*out = &st->base;
	return 0;
fail:
	free(st);
	mdb_env_close(env);
	return rc;
}

static void lmdb_close(mm_store_t *base)
{
	mm_lmdb_t *st = (mm_lmdb_t *)base;

	assert(st->inflight == 0);
	mdb_env_close(st->env);
	mm_lmdb_marks_free(st);
	uv_mutex_destroy(&st->marks_lock);
	uv_mutex_destroy(&st->set_lock);
	free(st);
}

const mm_store_vtable_t mm_store_lmdb_vtable = {
	.name = "lmdb",
	.options = lmdb_options,
	.caps = MM_STORE_CAP_ATOMIC | MM_STORE_CAP_MARKED,
	.open = lmdb_open,
	.start = mm_lmdb_start,
	.apply = lmdb_apply,
	.get_many = lmdb_get_many,
	.get_position = mm_lmdb_get_position,
	.get_meta = mm_lmdb_get_meta,
	.put_meta = mm_lmdb_put_meta,
	.list_meta = mm_lmdb_list_meta,
	.close = lmdb_close,
	.claim = mm_lmdb_claim,
	.marked = mm_lmdb_marked,
	.marked_hold = mm_lmdb_marked_hold,
};
