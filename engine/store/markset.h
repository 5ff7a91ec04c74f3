/*
 * markset.h: a set of dedup marks in memory, for the embedded store's
 * claims (lmdb_dedup.c keeps one in front of the marks it stores).
 *
 * A mark is the 128-bit hash of (namespace, id) with its expiry
 * (mm_markhash_t, as stored on disk). The set keeps 96 bits of it: two
 * different ids whose 96 bits are equal would make the second a duplicate it
 * is not, which happens to a new id with probability L / 2^96 where L marks
 * are live (1.3e-20 for 10^9), so the hash stands for the id.
 *
 * The marks are kept in runs: sorted arrays of 16-byte slots (h0, the high
 * half of h1, the expiry as milliseconds after the set's base), each with a
 * directory of where each range of h0's top bits starts (about 4 slots a
 * range), like the runs of an LSM tree. A flush's marks become one new run,
 * sorted once (placed by h0's top bits into parts of about 256, then each
 * part by a counting sort of the next 8 bits and an insertion sort of each
 * bucket's few slots, in the first-level cache), and the newest 32 runs are
 * merged in one pass whenever they are of one size tier (tier
 * floor(log32(n))), as in a size-tiered LSM tree: a mark is copied once
 * per tier it climbs, log32(L / flush) times. The fan-in is wide because
 * the filter below makes the runs cheap to have and their copies are not:
 * a lookup past the filter (0.3% to 1.2% of absent marks) reads every run,
 * but all of them at once (mm_markset_live_runs), while with 8 runs to a
 * merge, as before, 10 million marks in flushes of 10 000 were each copied
 * 2.3 times, which cost more than sorting them (doc/performance-journal.md, "Dedup
 * ids: merges of 32 runs"). There are at most 31 runs per tier, read
 * newest first (a replay's duplicates are recent marks). The runs of a
 * tier hold marks of similar ages, so the oldest runs expire whole.
 * Nothing is ever written at a random place of a large table, and a run's
 * memory is kept for the next run or merge rather than given back to the
 * kernel, whose fresh pages (zeroed, and on a VM backed by the host on
 * first touch) were the largest cost of the hash table this replaced.
 *
 * In front of the runs, one Bloom filter for the whole set (a 64-bit word
 * per 2 to 6 marks, the word chosen by h0's top bits, six bits of it from
 * the kept half of h1 and h0's low bits) tells almost every absent mark
 * with one word: a new id (the common case: every record of a stream
 * without replays) reads that word and nothing else. A mark the filter lets
 * by is looked up in each run by its directory range (a slot or two). The
 * filter holds the bits of every mark of the runs (and of dropped ones
 * until it is rebuilt): it never says absent for a mark that is there.
 *
 * Expired marks leave at merges (a merge keeps only the live ones) and with
 * whole runs (a run whose latest expiry has passed is dropped). An expiry
 * more than 2^32 - 1 ms after the base is kept as that much: exact as long as
 * the set is read again (mm_markset_start with a new base) before its base
 * is 2^31 ms (24 days) old, which mm_markset_stale tells.
 *
 * Changes go in two steps so that readers are kept waiting only for a swap
 * of pointers: mm_markset_prepare builds the new runs and filter aside
 * (reading the set's runs, which never change once made), and
 * mm_markset_commit swaps them in; mm_markset_batch_done then keeps or frees
 * what they replaced. Memory: 16 bytes per mark plus 0.25 to 0.5 for the
 * directory and 1.3 to 4 for the filter, more while a merge's output is built
 * beside its inputs, and the kept buffers (at most the runs' size and 4 MiB).
 *
 * Not thread-safe: the owner serialises prepare, commit, batch_done, start
 * and free; the lookups (mm_markset_live, mm_markset_prefetch) only read the
 * runs and filter and may run beside a prepare but not beside a commit.
 * Pure C, any thread.
 */
#ifndef MM_MARKSET_H
#define MM_MARKSET_H

#include <stddef.h>
#include <stdint.h>

#include "../lib/bits.h"
#include "../lib/hash.h" /* mm_markhash_t */

typedef struct mm_markslot {
	uint64_t h0;
	uint32_t h1;            /* the high half of the hash's h1 */
	uint32_t exp;           /* expire_ms - base_ms, at most UINT32_MAX */
} mm_markslot_t;

/* A mapping the set's runs are made in (kept for reuse when a run ends). */
typedef struct mm_markbuf {
	void *mem;
	size_t bytes;
} mm_markbuf_t;

/* A run: n slots sorted by (h0, h1), then its directory, (1 << dbits) + 1
 * slot numbers: the slots whose h0 has top dbits bits b are
 * [dir[b], dir[b + 1]). */
typedef struct mm_markrun {
	mm_markbuf_t buf;
	mm_markslot_t *slots;
	uint32_t *dir;
	size_t n;
	unsigned dbits;
	uint32_t max_exp;       /* the latest expiry in the run */
} mm_markrun_t;

/* Fewer than MM_MARKSET_RUNS - 1 runs after a prepare (at most 31 per size
 * tier, and a merge forced before the array fills), and a new one. */
#define MM_MARKSET_RUNS 128
#define MM_MARKSET_SPARES 4

typedef struct mm_markset {
	mm_markrun_t runs[MM_MARKSET_RUNS]; /* oldest first */
	size_t nruns;
	size_t count;           /* marks in the runs (live or expired) */
	int64_t base_ms;
	uint64_t *filter;       /* 1 << fbits words, or NULL with no runs */
	unsigned fbits;
	size_t fcount;          /* marks whose bits the filter holds */
	/* Buffers of ended runs, for the next runs and merges (the owner's:
	 * lookups never read them). */
	mm_markbuf_t spare[MM_MARKSET_SPARES];
} mm_markset_t;

/* What a prepare built and what its commit replaced (mm_markset_prepare). */
typedef struct mm_markbatch {
	mm_markrun_t runs[MM_MARKSET_RUNS];
	size_t nruns, count;
	uint64_t *filter;       /* a new filter, or NULL: the run's bits are added */
	unsigned fbits;
	mm_markrun_t added;     /* the new run (n 0: none), whose bits a commit
	                         * without a new filter adds */
	mm_markrun_t gone[MM_MARKSET_RUNS * 2]; /* runs no longer in the set */
	size_t ngone;
	uint64_t *old_filter;
	unsigned old_fbits;
} mm_markbatch_t;

/* The seed of a namespace's hashes: computed once per call that hashes
 * several ids of one namespace (mm_id_hash_seed). */
uint64_t mm_markset_ns_seed(const char *ns, size_t nslen);

/* The 128-bit hash of id in the namespace of ns_seed, mm_id_hash (its 96
 * bits kept in the set never all zero); expire_ms is left to the caller. */
void mm_markset_hash(uint64_t ns_seed, const void *id, size_t len, mm_markhash_t *out);

/* Empties the set (freeing its runs and buffers) and sets its base (at most
 * the earliest now_ms it will be asked about, e.g. the now of the read that
 * fills it). */
void mm_markset_start(mm_markset_t *s, int64_t base_ms);

/* 1 when the set must be read again (mm_markset_start) to stay exact at
 * now_ms: its base is 2^31 ms old. */
static inline int mm_markset_stale(const mm_markset_t *s, int64_t now_ms)
{
	return now_ms - s->base_ms >= (int64_t)1 << 31;
}

/* Builds in b the set that s would be with the n marks m[] added (in any
 * order; a mark whose hash is there already keeps the later expiry), leaving
 * out the marks expired at now_ms or at the base and dropping the runs
 * whose marks have all expired; compact merges every run into one, which
 * leaves out every mark expired at now_ms. s is not changed but for its
 * kept buffers: its readers may go on. Returns 0, or MM_ENOMEM with nothing
 * built (the caller may then mm_markset_start again and read every mark). */
int mm_markset_prepare(mm_markset_t *s, mm_markbatch_t *b, const mm_markhash_t *m, size_t n,
		       int64_t now_ms, int compact);

/* Makes s the set b was prepared as; b keeps what it replaced. Cannot
 * fail, and does nothing slow: a pointer swap, or the new run's bits set in
 * the filter (in order, the run being sorted by the filter's word). */
void mm_markset_commit(mm_markset_t *s, mm_markbatch_t *b);

/* After the commit, once no reader can be looking at the replaced runs:
 * keeps their buffers for reuse (or frees them) and frees the old filter. */
void mm_markset_batch_done(mm_markset_t *s, mm_markbatch_t *b);

/* The filter's bits of a mark: six of the 64 of its word, five from the
 * kept half of h1 and one from h0's low bits (h0's top bits pick the word):
 * at 4 marks a word on average, 0.38% of absent marks pass, where four bits
 * let 0.52% by (a word's marks vary as a Poisson count does). */
static inline uint64_t mm_markset_filter_mask(uint64_t h0, uint32_t h1)
{
	uint64_t m = mm_bit_or(0, h1);

	m = mm_bit_or(m, h1 >> 6);
	m = mm_bit_or(m, h1 >> 12);
	m = mm_bit_or(m, h1 >> 18);
	m = mm_bit_or(m, h1 >> 24);
	return mm_bit_or(m, h0);
}

/* 0 when the filter alone tells that the set holds no mark of m's hash
 * (one word), 1 when it may. Inline, as the next two: a record with an id
 * asks the set once, and most ids end here (doc/performance-journal.md). */
static inline int mm_markset_may_hold(const mm_markset_t *s, const mm_markhash_t *m)
{
	uint64_t mask = mm_markset_filter_mask(m->h0, (uint32_t)(m->h1 >> 32));

	return s->filter != NULL && (s->filter[m->h0 >> (64 - s->fbits)] & mask) == mask;
}

/* mm_markset_live past the filter: the runs, newest first. */
int mm_markset_live_runs(const mm_markset_t *s, const mm_markhash_t *m, int64_t now_ms);

/* 1 when the set holds the mark of m's hash with an expiry after now_ms. */
static inline int mm_markset_live(const mm_markset_t *s, const mm_markhash_t *m, int64_t now_ms)
{
	return mm_markset_may_hold(s, m) && mm_markset_live_runs(s, m, now_ms);
}

/* Hints the cache about the filter's word of m: what a lookup of an absent
 * mark reads (for lookups that are mostly of new ids). */
static inline void mm_markset_prefetch(const mm_markset_t *s, const mm_markhash_t *m)
{
	if (s->filter != NULL)
		__builtin_prefetch(&s->filter[m->h0 >> (64 - s->fbits)]);
}

/* Forgets every mark and frees the runs, the filter and the kept buffers. */
void mm_markset_free(mm_markset_t *s);

#endif
