/*
 * lmdb_impl.h: what the files of the embedded store share (private to
 * engine/store/lmdb*.c; the store is reached through mm_store_lmdb_vtable).
 *
 * The store is one struct (mm_lmdb_t) that every file reads; each file owns
 * one seam of it:
 *   lmdb.c         the layout, state keys, options, apply (deltas, purges),
 *                  get_many, the thread-pool work items, the map release,
 *                  open/close
 *   lmdb_key.c     the lookup of hashed identifiers, errors
 *   lmdb_dedup.c   dedup marks: claim(), marks written by apply() as
 *                  time-partitioned runs, their expiry, format 1's marks
 *   markset.c      the live marks in memory, which claim() answers from
 *   lmdb_meta.c    positions and pipeline descriptors (metadata)
 *   lmdb_sort.c    a flush's deltas sorted in the order of their keys
 *   lmdb_format.c  the record decoders, fuzzed on their own (lmdb_format.h)
 *
 * Threads: the work functions run on a libuv pool thread, everything else on
 * the loop thread, as lmdb.c's design comment explains.
 */
#ifndef MM_LMDB_IMPL_H
#define MM_LMDB_IMPL_H

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../lib/hash.h"
#include "lmdb_format.h"
#include "markset.h"
#include "store.h"

#define LMDB_KEY_MAX MM_LMDB_KEY_MAX
#define LMDB_NS_MAX 128
#define LMDB_HASH_SEED 0x6d757275726d6462ULL /* "murmurdb" */
#define LMDB_SIGN (1ULL << 63)

typedef struct mm_lmdb {
	mm_store_t base;
	MDB_env *env;
	MDB_dbi dbi_state, dbi_pos, dbi_seen, dbi_meta, dbi_marks, dbi_main;
	int read_only;
	int has_marks_db;       /* 0: a read-only opener of a format 1 store */
	int marks_v2;           /* a read-only opener of a format 2 store: runs
				 * of 24-byte entries (lmdb_dedup.c), until a
				 * writer moves it to format 3 */
	unsigned inflight;
	/* Dedup marks (lmdb_dedup.c), under marks_lock, which serialises the
	 * pool threads' work on them: every live mark once loaded, the entries
	 * of the apply in flight, and whether format 1 marks are left in
	 * "seen" (legacy) or this apply moves them. The set and marks_loaded
	 * are also read by marked() on the loop thread, under set_lock alone:
	 * a pool thread (holding marks_lock) takes set_lock only while it
	 * changes them, briefly, and reads them without it. */
	uv_mutex_t marks_lock, set_lock;
	int set_held;           /* the loop thread holds set_lock (marked_hold) */
	mm_markset_t set;
	int marks_loaded, legacy, migrated;
	mm_markhash_t *pend;
	size_t npend, pend_cap;
	/* The marks the apply in flight writes: pend, or the flush's hashed
	 * marks as they are (mm_lmdb_write_marks). */
	const mm_markhash_t *marks;
	size_t nmarks;
	size_t dropped;         /* runs the apply in flight deleted */
	/* Where LMDB mapped the data file and its page size, for
	 * lmdb_map_release(); map_addr is NULL for a read-only opener, or when
	 * the mapping could not be found. */
	void *map_addr;
	size_t map_len, psize;
} mm_lmdb_t;

/* One apply(), get_many(), claim(), position or metadata call on its way
 * through the thread pool. */
typedef struct lmdb_work {
	uv_work_t req;
	mm_lmdb_t *st;
	mm_store_cb cb;
	void *arg;
	mm_flush_t *f;          /* apply */
	int inject;             /* apply: fail with an injected MM_ENOSPC */
	mm_claim_t *claims;     /* claim */
	const mm_ns_t *ns;      /* get_many, claim */
	/* get_position, get_meta (name -> out) and put_meta (name, bytes) */
	MDB_dbi dbi;
	const char *name, *what;
	mm_buf_t *out;
	const uint8_t *bytes;
	const mm_key_t *keys;
	size_t n;
	void *states;
	uint8_t *found;
	int64_t now_ms;
	int status;             /* set on the pool thread, read in after_work */
	char detail[512];
} lmdb_work_t;

/*
 * A key under construction. For a hashed identifier `len` stops before SEQ,
 * which mm_lmdb_find appends once it knows which record is the identifier's.
 */
typedef struct lmdb_key {
	uint8_t b[LMDB_KEY_MAX];
	size_t len;
	int hashed;
	const char *ns;         /* for messages */
	const uint8_t *id;      /* the entity */
	size_t idlen;
	int64_t bucket;
} lmdb_key_t;

static inline void put_u16be(uint8_t *p, size_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline size_t get_u16be(const uint8_t *p)
{
	return (size_t)p[0] << 8 | p[1];
}

static inline void put_u64be(uint8_t *p, uint64_t v)
{
	int i;

	for (i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static inline void put_bucket(uint8_t *p, int64_t bucket)
{
	put_u64be(p, (uint64_t)bucket ^ LMDB_SIGN);
}

/* Writes the namespace prefix (u8 length, name) and returns its length. */
static inline size_t ns_prefix(uint8_t *p, const char *name)
{
	size_t n = strlen(name);

	p[0] = (uint8_t)n;
	memcpy(p + 1, name, n);
	return 1 + n;
}

/* lmdb_key.c */

/* Maps an LMDB or errno code to an MM_E* code and sets the diagnostics
 * ("lmdb: WHAT: reason"); returns the code. */
int mm_lmdb_fail(int mrc, const char *what);
/* The wall clock in ms since the epoch. */
int64_t mm_lmdb_now_ms(void);
/* MM_ECORRUPT naming the record of k and why. */
int mm_lmdb_corrupt(const lmdb_key_t *k, const char *why);
/* Looks k up in dbi, completing a hashed key with its SEQ: *found tells
 * whether val holds the record (valid until the next write in txn). */
int mm_lmdb_find(MDB_txn *txn, MDB_dbi dbi, lmdb_key_t *k, MDB_val *val, int *found);
/* Orders two different namespace names as their keys sort: length, then
 * bytes. */
int mm_lmdb_cmp_names(const char *ans, const char *bns);
/* Orders identifiers as their keys sort: namespace length and bytes, then
 * identifier length and bytes. Inline: a flush's sort calls it about
 * n log n times, and its items share one namespace name. */
static inline int mm_lmdb_cmp_ident(const char *ans, const char *bns, const char *a, size_t alen,
				    const char *b, size_t blen)
{
	int c;

	if (ans != bns && (c = mm_lmdb_cmp_names(ans, bns)) != 0)
		return c;
	if (alen != blen)
		return alen < blen ? -1 : 1;
	return mm_key_cmp(a, b, alen);
}

/* lmdb.c */

/* Records the outcome of pool work (copies the diagnostics detail). */
void mm_lmdb_work_finish(lmdb_work_t *w, int rc);
/* Queues w (calloc'ed) on the thread pool; frees it if that fails. */
int mm_lmdb_queue(mm_lmdb_t *st, lmdb_work_t *w, uv_work_cb work);
/* A work item reading n items of ns as of now; NULL when out of memory. */
lmdb_work_t *mm_lmdb_reader_new(mm_store_t *base, const mm_ns_t *ns, size_t n, mm_store_cb cb,
				void *arg);

/* The store's format version as of txn (lmdb.c). */
int mm_lmdb_format(mm_lmdb_t *st, MDB_txn *txn, uint32_t *format);

/* lmdb_dedup.c */

/* Writes the flush's marks in the apply's transaction, drops the partitions
 * that ended by f->now_ms and moves format 1 marks over if any are left. */
int mm_lmdb_write_marks(mm_lmdb_t *st, MDB_txn *txn, mm_flush_t *f);
/* Rewrites a format 2 store's runs (24-byte entries) in format 3's 16-byte
 * entries, in txn (a writer's, at open, which sets format 3 in it). */
int mm_lmdb_marks_upgrade(mm_lmdb_t *st, MDB_txn *txn);
/* After the apply's commit: its marks join the markset. */
void mm_lmdb_marks_committed(mm_lmdb_t *st, int64_t now_ms);
/* Frees the markset and the pending entries (close). */
void mm_lmdb_marks_free(mm_lmdb_t *st);
int mm_lmdb_claim(mm_store_t *base, const mm_ns_t *ns, mm_claim_t *ids, size_t n, int64_t ttl_ms,
		  mm_store_cb cb, void *arg);
/* The vtable's start(): a writer reads its marks into memory. */
int mm_lmdb_start(mm_store_t *base, mm_store_cb cb, void *arg);
/* The vtable's marked(): a record's claim answered from the markset. */
int mm_lmdb_marked(mm_store_t *base, const mm_idhash_t *h, const mm_idhash_t *ahead,
		   int64_t now_ms);
/* The vtable's marked_hold(): set_lock held across a batch's lookups. */
void mm_lmdb_marked_hold(mm_store_t *base, int hold);

/* lmdb_sort.c */

/* Sorts d[0..n) in place in the order of their state keys: namespace name
 * (length, then bytes), identifier (length, then bytes), bucket. */
void mm_lmdb_sort_deltas(mm_delta_t *d, size_t n);

/* lmdb_meta.c */

/* Writes a source's position in the apply's transaction. */
int mm_lmdb_put_position(mm_lmdb_t *st, MDB_txn *txn, const mm_position_t *p);
int mm_lmdb_get_position(mm_store_t *base, const char *source, mm_buf_t *out, mm_store_cb cb,
			 void *arg);
int mm_lmdb_get_meta(mm_store_t *base, const char *ns_name, mm_buf_t *out, mm_store_cb cb,
		     void *arg);
int mm_lmdb_put_meta(mm_store_t *base, const char *ns_name, const uint8_t *p, size_t n,
		     mm_store_cb cb, void *arg);
int mm_lmdb_list_meta(mm_store_t *base, mm_buf_t *out, mm_store_cb cb, void *arg);

#endif
