/*
 * markset.c: dedup marks as 96-bit hashes in sorted runs (markset.h).
 *
 * A run, its directory after its slots, lives in one anonymous mapping on
 * small pages: a run is written and read in order (its lookups are the
 * rare marks the filter lets by), and on this project's VMs a fresh huge
 * page cost about six times as much as 2 MiB of small ones (lib/hugemap.h).
 * When a run ends (merged into a larger one, or expired) its mapping is
 * kept, up to MM_MARKSET_SPARES of them and about the set's own size in
 * all, and the next run or merge takes the smallest one that is large
 * enough, or grows the largest with mremap, which moves its pages (already
 * backed, already in the cache's reach) rather than copying them. A new
 * mapping is the last resort: a fresh page costs more than its zeroing,
 * and the hash table this replaced took four times the final table's size
 * in fresh pages over a run of doublings.
 *
 * The filter's word of a mark is chosen by h0's top bits, the order the
 * runs are sorted in, so filling it from a run writes its words in order;
 * its six bits come from the kept half of h1 and h0's low bits. It is
 * rebuilt from the runs when it holds more than 6 marks a word (at 4 a word
 * on average, about 0.4% of the absent marks pass it; at 6, about 1.4%) or
 * more stale bits (of dropped marks) than live ones, at a size of 2 to 4
 * marks a word.
 */
#include "markset.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "../lib/error.h"
#include "../lib/hash.h"
#include "../lib/hugemap.h"

#define MARKSET_PAGE ((size_t)4096)
#define MARKSET_FMIN 6          /* the least filter: 64 words */
#define MARKSET_FANIN 32        /* runs merged at once */

uint64_t mm_markset_ns_seed(const char *ns, size_t nslen)
{
	return mm_id_hash_seed(ns, nslen);
}

void mm_markset_hash(uint64_t ns_seed, const void *id, size_t len, mm_markhash_t *out)
{
	mm_idhash_t h;

	mm_id_hash(ns_seed, id, len, &h);
	out->h0 = h.h0;
	out->h1 = h.h1;
}

/* A buffer's size: from 1 MiB on, whole 2 MiB units, so that the buffer of
 * one flush's run (65 000 to 120 000 marks, 1 to 1.9 MB) fits the next
 * one's; the rounding costs at most 1 MiB a run. */
static size_t buf_round(size_t bytes)
{
	size_t unit = bytes < MM_HUGE_PAGE / 2 ? MARKSET_PAGE : MM_HUGE_PAGE;

	return (bytes + unit - 1) & ~(unit - 1);
}

/* A mapping of at least bytes: the smallest kept one large enough, else
 * the largest kept one grown, else a new one. */
static int buf_get(mm_markset_t *s, size_t bytes, mm_markbuf_t *out)
{
	size_t i, fit = MM_MARKSET_SPARES, big = MM_MARKSET_SPARES;
	void *p;

	bytes = buf_round(bytes);
	for (i = 0; i < MM_MARKSET_SPARES; i++) {
		const mm_markbuf_t *k = &s->spare[i];

		if (k->mem == NULL)
			continue;
		if (k->bytes >= bytes && (fit == MM_MARKSET_SPARES || k->bytes < s->spare[fit].bytes))
			fit = i;
		if (big == MM_MARKSET_SPARES || k->bytes > s->spare[big].bytes)
			big = i;
	}
	if (fit != MM_MARKSET_SPARES) {
		*out = s->spare[fit];
		s->spare[fit] = (mm_markbuf_t){0};
		return 0;
	}
	/* mm_small_grow: on small pages (a run is read in order), mapped whole
	 * at the rounded size, so that munmap of (mem, bytes) frees it; a kept
	 * buffer grows by mremap, keeping its pages. */
	if (big != MM_MARKSET_SPARES &&
	    (p = mm_small_grow(s->spare[big].mem, s->spare[big].bytes, bytes)) != NULL) {
		s->spare[big] = (mm_markbuf_t){0};
	} else if ((p = mm_small_grow(NULL, 0, bytes)) == NULL) {
		return mm_diag_set(MM_ENOMEM, "cannot map %zu bytes of dedup marks", bytes);
	}
	*out = (mm_markbuf_t){p, bytes};
	return 0;
}

/* Keeps b for a later buf_get, giving back the smallest of the kept ones
 * and b while there is no free place or they would be more than the set's
 * marks' size and 4 MiB. */
static void buf_put(mm_markset_t *s, mm_markbuf_t b)
{
	size_t limit = s->count * sizeof(mm_markslot_t) + 2 * MM_HUGE_PAGE;

	if (b.mem == NULL)
		return;
	for (;;) {
		size_t i, total = b.bytes, empty = MM_MARKSET_SPARES, small = MM_MARKSET_SPARES;

		for (i = 0; i < MM_MARKSET_SPARES; i++) {
			if (s->spare[i].mem == NULL) {
				empty = i;
				continue;
			}
			total += s->spare[i].bytes;
			if (small == MM_MARKSET_SPARES || s->spare[i].bytes < s->spare[small].bytes)
				small = i;
		}
		if (empty != MM_MARKSET_SPARES && total <= limit) {
			s->spare[empty] = b;
			return;
		}
		if (small == MM_MARKSET_SPARES || s->spare[small].bytes > b.bytes) {
			munmap(b.mem, b.bytes);
			return;
		}
		munmap(s->spare[small].mem, s->spare[small].bytes);
		s->spare[small] = (mm_markbuf_t){0};
	}
}

static void run_unmap(mm_markrun_t *r)
{
	if (r->buf.mem != NULL)
		munmap(r->buf.mem, r->buf.bytes);
	*r = (mm_markrun_t){0};
}

static unsigned dir_bits(size_t n)
{
	unsigned b = 0;

	while (((size_t)8 << b) <= n)
		b++;
	return b;
}

static size_t bucket(uint64_t h0, unsigned bits)
{
	return bits ? (size_t)(h0 >> (64 - bits)) : 0;
}

static size_t run_bytes(size_t n)
{
	return n * sizeof(mm_markslot_t) + (((size_t)1 << dir_bits(n)) + 1) * sizeof(uint32_t);
}

/* A run for up to n slots in a buffer of s's (its directory after the n
 * slots). */
static int run_alloc(mm_markset_t *s, mm_markrun_t *r, size_t n)
{
	int rc;

	*r = (mm_markrun_t){0};
	if (n > UINT32_MAX)
		return mm_diag_set(MM_ENOMEM, "too many dedup marks (%zu)", n);
	if ((rc = buf_get(s, run_bytes(n), &r->buf)))
		return rc;
	r->slots = r->buf.mem;
	r->dir = (uint32_t *)(r->slots + n);
	return 0;
}

/* A run's directory is filled as its sorted slots are written
 * (run_from_marks, run_merge), where a pass of its own after them read the
 * whole run again: dir_open, dir_slot for each slot (and its h0) once it is
 * in its place (its h0 is final there; a fold changes only its expiry),
 * dir_close once the run has its n. The directory is sized for the slots
 * the run was made for (run_alloc), which is more than it needs when some
 * were folded or dropped; a lookup goes by r->dbits. */
static void dir_open(mm_markrun_t *r, size_t made_for, size_t *b)
{
	r->dbits = dir_bits(made_for);
	r->dir[0] = 0;
	*b = 0;
}

static void dir_slot(mm_markrun_t *r, size_t *b, size_t i, uint64_t h0)
{
	size_t k = bucket(h0, r->dbits);

	while (*b < k)
		r->dir[++*b] = (uint32_t)i;
}

static void dir_close(mm_markrun_t *r, size_t b)
{
	size_t nb = (size_t)1 << r->dbits;

	while (b < nb)
		r->dir[++b] = (uint32_t)r->n;
}

static int slot_less(const mm_markslot_t *a, const mm_markslot_t *b)
{
	return a->h0 < b->h0 || (a->h0 == b->h0 && a->h1 < b->h1);
}

static int slot_same(const mm_markslot_t *a, const mm_markslot_t *b)
{
	return a->h0 == b->h0 && a->h1 == b->h1;
}

/* The slot of m in a set of base base_ms, 0 when it is not to be kept
 * (expired at now_ms, or at the base). */
static int slot_of_mark(const mm_markhash_t *m, int64_t base_ms, int64_t now_ms, mm_markslot_t *e)
{
	int64_t off = m->expire_ms - base_ms;

	if (off <= 0 || m->expire_ms <= now_ms)
		return 0;
	e->h0 = m->h0;
	e->h1 = (uint32_t)(m->h1 >> 32);
	e->exp = off > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)off;
	return 1;
}

/* A merge goes through the hash space in blocks, each 2^MERGE_SPAN of the
 * output's directory ranges (256 to 512 slots): the blocks of the inputs'
 * sorted slots are read in order, and the output is written in order. */
#define MERGE_SPAN 6
/* A block's counting sort: 2^MERGE_SORT_BITS buckets (1 or 2 slots each). */
#define MERGE_SORT_BITS 8
/* The most parts a new run's marks are first placed in (run_from_marks):
 * 1 024 streams of writes, 64 KiB of lines in the cache at once. */
#define RUN_SPLIT_BITS 10

/* Where the slots of run r from at on stop being of block blk (the top bb
 * bits of h0): from r's directory when it is as fine as the blocks, else
 * found by reading on (a run much smaller than the merge's output). */
static const mm_markslot_t *block_end(const mm_markrun_t *r, const mm_markslot_t *at, size_t blk,
				      unsigned bb)
{
	const mm_markslot_t *end = r->slots + r->n;

	if (bb == 0)
		return end;
	if (r->dbits >= bb)
		return r->slots + r->dir[(blk + 1) << (r->dbits - bb)];
	while (at < end && at->h0 >> (64 - bb) == blk)
		at++;
	return at;
}

/* Sorts the c slots of o by (h0, h1): counted by the MERGE_SORT_BITS bits
 * of h0 after the block's bb, placed, then put in order within each bucket
 * by an insertion sort; from the k inputs' ranges [at[j], end[j]). */
static void block_sort(mm_markslot_t *o, size_t c, const mm_markslot_t *const *at,
		       const mm_markslot_t *const *end, size_t k, unsigned bb)
{
	uint32_t pos[(1 << MERGE_SORT_BITS) + 1];
	const mm_markslot_t *p;
	mm_markslot_t e;
	size_t i, j;

	memset(pos, 0, sizeof(pos));
	for (j = 0; j < k; j++)
		for (p = at[j]; p < end[j]; p++)
			pos[((p->h0 << bb) >> (64 - MERGE_SORT_BITS)) + 1]++;
	for (i = 1; i <= (1 << MERGE_SORT_BITS); i++)
		pos[i] += pos[i - 1];
	for (j = 0; j < k; j++)
		for (p = at[j]; p < end[j]; p++)
			o[pos[(p->h0 << bb) >> (64 - MERGE_SORT_BITS)]++] = *p;
	for (i = 1; i < c; i++) {
		e = o[i];
		for (j = i; j > 0 && slot_less(&e, &o[j - 1]); j--)
			o[j] = o[j - 1];
		o[j] = e;
	}
}

/* Builds in r the run of the marks m[0..n) kept at now_ms, sorted, one
 * slot per hash (the later expiry); r has no slots (and no buffer) when none
 * is kept. The marks are first placed by h0's top bits into parts of at most
 * about 256 (up to 2^RUN_SPLIT_BITS of them): that scatter writes one
 * stream per part, in order, which the cache holds, where a single counting
 * sort into 2^17 buckets wrote every mark at a random place of the run and
 * waited for a miss each. Each part is then copied aside and sorted back in
 * place by block_sort, within the first-level cache. */
static int run_from_marks(mm_markset_t *s, mm_markrun_t *r, const mm_markhash_t *m, size_t n,
			  int64_t now_ms)
{
	uint32_t at[(1 << RUN_SPLIT_BITS) + 1];
	unsigned bits = 0;
	mm_markslot_t e, *tmp;
	size_t i, j, d, part, big = 0, live = 0;
	int rc;

	*r = (mm_markrun_t){0};
	while (bits < RUN_SPLIT_BITS && ((size_t)256 << bits) < n)
		bits++;
	memset(at, 0, (((size_t)1 << bits) + 1) * sizeof(at[0]));
	for (i = 0; i < n; i++)
		if (slot_of_mark(&m[i], s->base_ms, now_ms, &e)) {
			at[bucket(e.h0, bits) + 1]++;
			live++;
		}
	if (live == 0)
		return 0;
	for (i = 1; i <= (size_t)1 << bits; i++) {
		if (at[i] > big)
			big = at[i];
		at[i] += at[i - 1];
	}
	if ((tmp = malloc(big * sizeof(*tmp))) == NULL)
		return mm_diag_set(MM_ENOMEM, "cannot sort %zu dedup marks", n);
	if ((rc = run_alloc(s, r, live))) {
		free(tmp);
		return rc;
	}
	for (i = 0; i < n; i++)
		if (slot_of_mark(&m[i], s->base_ms, now_ms, &e))
			r->slots[at[bucket(e.h0, bits)]++] = e;
	/* Each at[part] is now where the next part starts. */
	for (part = 0, i = 0; part < (size_t)1 << bits; i = at[part++]) {
		const mm_markslot_t *from = tmp, *to = tmp + (at[part] - i);

		memcpy(tmp, r->slots + i, (at[part] - i) * sizeof(*tmp));
		block_sort(r->slots + i, at[part] - i, &from, &to, 1, bits);
	}
	free(tmp);
	dir_open(r, live, &d);
	dir_slot(r, &d, 0, r->slots[0].h0);
	r->max_exp = r->slots[0].exp;
	for (i = 1, j = 0; i < live; i++) {
		if (r->slots[i].exp > r->max_exp)
			r->max_exp = r->slots[i].exp;
		if (slot_same(&r->slots[i], &r->slots[j])) {
			if (r->slots[i].exp > r->slots[j].exp)
				r->slots[j].exp = r->slots[i].exp;
		} else {
			r->slots[++j] = r->slots[i];
			dir_slot(r, &d, j, r->slots[j].h0);
		}
	}
	r->n = j + 1;
	dir_close(r, d);
	return 0;
}

/* Merges the k runs in[] (k at most MARKSET_FANIN) into a new run,
 * keeping the marks live at now_off (milliseconds after the base), one slot
 * per hash (the later expiry). The inputs are sorted and hashes are spread
 * evenly, so a block of the hash space holds a few slots of each input, in
 * a few ranges the inputs' directories tell: each block's slots are sorted
 * in place in the output (block_sort, all within the first-level cache),
 * then folded (one slot per hash) and written down with their directory.
 * Every input is read in order and the output written in order. A slot
 * costs about what it did in the merge of eight runs' heads this replaced
 * (a tree of comparisons for each slot out), but no more with 32 inputs
 * than with 8, which a wider tree would. */
static int run_merge(mm_markset_t *s, mm_markrun_t *out, const mm_markrun_t *in, size_t k,
		     int64_t now_off)
{
	const mm_markslot_t *at[MARKSET_FANIN], *end[MARKSET_FANIN];
	size_t n = 0, w = 0, j, i, c, d, blk;
	unsigned bb;
	int rc;

	for (j = 0; j < k; j++) {
		n += in[j].n;
		at[j] = in[j].slots;
	}
	if ((rc = run_alloc(s, out, n)))
		return rc;
	dir_open(out, n, &d);
	bb = out->dbits > MERGE_SPAN ? out->dbits - MERGE_SPAN : 0;
	out->max_exp = 0;
	for (blk = 0; blk < (size_t)1 << bb; blk++) {
		mm_markslot_t *o = out->slots + w;

		for (j = 0, c = 0; j < k; j++) {
			end[j] = block_end(&in[j], at[j], blk, bb);
			c += (size_t)(end[j] - at[j]);
		}
		block_sort(o, c, at, end, k, bb);
		/* Written back over the block's own sorted slots, never
		 * ahead of the one read. */
		for (i = 0; i < c;) {
			mm_markslot_t e = o[i];

			for (i++; i < c && slot_same(&o[i], &e); i++)
				if (o[i].exp > e.exp)
					e.exp = o[i].exp;
			if ((int64_t)e.exp <= now_off)
				continue;
			out->slots[w] = e;
			dir_slot(out, &d, w++, e.h0);
			if (e.exp > out->max_exp)
				out->max_exp = e.exp;
		}
		memcpy(at, end, k * sizeof(at[0]));
	}
	out->n = w;
	dir_close(out, d);
	return 0;
}

/* The size tier of a run of n slots: floor(log(n) / log(MARKSET_FANIN)). */
static unsigned tier(size_t n)
{
	unsigned t = 0;

	while (n >= MARKSET_FANIN) {
		n /= MARKSET_FANIN;
		t++;
	}
	return t;
}

/* A zeroed filter of 1 << fbits words, an index read at random, one word a
 * record: on small pages up to the TLB's reach, where a fresh huge page's
 * first touch cost more than the TLB's misses save, on huge pages beyond
 * it (mm_index_renew, lib/hugemap.h). */
static uint64_t *filter_alloc(unsigned fbits)
{
	return mm_index_renew(NULL, 0, ((size_t)1 << fbits) * sizeof(uint64_t));
}

static void filter_free(uint64_t *filter, unsigned fbits)
{
	mm_huge_drop(filter, ((size_t)1 << fbits) * sizeof(uint64_t));
}

static void filter_add_run(uint64_t *filter, unsigned fbits, const mm_markrun_t *r)
{
	for (size_t i = 0; i < r->n; i++) {
		const mm_markslot_t *sl = &r->slots[i];

		filter[sl->h0 >> (64 - fbits)] |= mm_markset_filter_mask(sl->h0, sl->h1);
	}
}

void mm_markset_start(mm_markset_t *s, int64_t base_ms)
{
	mm_markset_free(s);
	s->base_ms = base_ms;
}

int mm_markset_prepare(mm_markset_t *s, mm_markbatch_t *b, const mm_markhash_t *m, size_t n,
		       int64_t now_ms, int compact)
{
	int64_t now_off = now_ms - s->base_ms;
	mm_markbuf_t made[MM_MARKSET_RUNS + 1]; /* the buffers this prepare mapped */
	size_t words, i, nmade = 0, merged = 0;
	mm_markrun_t nr, out;
	int rc;

	memset(b, 0, sizeof(*b));
	if ((rc = run_from_marks(s, &nr, m, n, now_ms)))
		return rc;
	for (i = 0; i < s->nruns; i++) {
		if ((int64_t)s->runs[i].max_exp > now_off)
			b->runs[b->nruns++] = s->runs[i];
		else
			b->gone[b->ngone++] = s->runs[i];
	}
	/* At most MM_MARKSET_RUNS - 1 runs after a prepare (below): room
	 * for one more. */
	if (nr.n) {
		made[nmade++] = nr.buf;
		b->runs[b->nruns++] = nr;
		b->added = nr;
	}
	/* The newest MARKSET_FANIN runs are merged while they are of one size
	 * tier (or the oldest of them of a lower one), all of them to
	 * compact, and always before the runs could outgrow their array. */
	for (;;) {
		size_t k = b->nruns < MARKSET_FANIN ? b->nruns : MARKSET_FANIN;
		mm_markrun_t *x = &b->runs[b->nruns - k];

		if (k < 2 || !(compact || b->nruns >= MM_MARKSET_RUNS - 1 ||
			       (k == MARKSET_FANIN && tier(x->n) <= tier(x[k - 1].n))))
			break;
		if ((rc = run_merge(s, &out, x, k, now_off)))
			goto fail;
		made[nmade++] = out.buf;
		for (i = 0; i < k; i++)
			b->gone[b->ngone++] = x[i];
		*x = out;
		b->nruns -= k - 1;
		merged++;
	}
	/* A lone run not merged above is compacted by a merge with itself
	 * alone. */
	if (compact && b->nruns == 1 && !merged) {
		if ((rc = run_merge(s, &out, &b->runs[0], 1, now_off)))
			goto fail;
		made[nmade++] = out.buf;
		b->gone[b->ngone++] = b->runs[0];
		b->runs[0] = out;
	}
	for (i = 0; i < b->nruns; i++)
		b->count += b->runs[i].n;
	words = s->filter ? (size_t)1 << s->fbits : 0;
	if (b->count && (s->filter == NULL || b->count > 6 * words ||
			 s->fcount + b->added.n > 2 * b->count + words)) {
		b->fbits = MARKSET_FMIN;
		while (((size_t)4 << b->fbits) < b->count)
			b->fbits++;
		b->filter = filter_alloc(b->fbits);
		if (b->filter == NULL) {
			rc = mm_diag_set(MM_ENOMEM, "cannot allocate a filter of %zu dedup marks",
					 b->count);
			goto fail;
		}
		for (i = 0; i < b->nruns; i++)
			filter_add_run(b->filter, b->fbits, &b->runs[i]);
	}
	return 0;
fail:
	/* The set's own runs stay; what this prepare mapped goes. */
	for (i = 0; i < nmade; i++)
		munmap(made[i].mem, made[i].bytes);
	memset(b, 0, sizeof(*b));
	return rc;
}

void mm_markset_commit(mm_markset_t *s, mm_markbatch_t *b)
{
	if (b->filter != NULL) {
		b->old_filter = s->filter;
		b->old_fbits = s->fbits;
		s->filter = b->filter;
		s->fbits = b->fbits;
		s->fcount = b->count;
		b->filter = NULL;
	} else if (b->added.n) {
		filter_add_run(s->filter, s->fbits, &b->added);
		s->fcount += b->added.n;
	}
	memcpy(s->runs, b->runs, b->nruns * sizeof(b->runs[0]));
	s->nruns = b->nruns;
	s->count = b->count;
}

void mm_markset_batch_done(mm_markset_t *s, mm_markbatch_t *b)
{
	for (size_t i = 0; i < b->ngone; i++)
		buf_put(s, b->gone[i].buf);
	filter_free(b->old_filter, b->old_fbits);
	memset(b, 0, sizeof(*b));
}

int mm_markset_live_runs(const mm_markset_t *s, const mm_markhash_t *m, int64_t now_ms)
{
	int64_t now_off = now_ms - s->base_ms;
	uint32_t h1 = (uint32_t)(m->h1 >> 32);
	uint32_t from[MM_MARKSET_RUNS], to[MM_MARKSET_RUNS];
	size_t i, j;

	/* Each run costs two misses, its directory's range then its slots:
	 * every run's range is asked for first, then every run's first slot,
	 * so that the misses of all the runs overlap, where a run read after
	 * another waited for each in turn. */
	for (i = 0; i < s->nruns; i++)
		__builtin_prefetch(&s->runs[i].dir[bucket(m->h0, s->runs[i].dbits)]);
	for (i = 0; i < s->nruns; i++) {
		const mm_markrun_t *r = &s->runs[i];
		size_t k = bucket(m->h0, r->dbits);

		from[i] = r->dir[k];
		to[i] = r->dir[k + 1];
		__builtin_prefetch(&r->slots[from[i]]);
	}
	for (i = s->nruns; i-- > 0;) {
		const mm_markslot_t *sl = s->runs[i].slots;

		for (j = from[i]; j < to[i] && sl[j].h0 <= m->h0; j++) {
			if (sl[j].h0 == m->h0 && sl[j].h1 == h1) {
				if ((int64_t)sl[j].exp > now_off)
					return 1;
				break;
			}
		}
	}
	return 0;
}

void mm_markset_free(mm_markset_t *s)
{
	size_t i;

	for (i = 0; i < s->nruns; i++)
		run_unmap(&s->runs[i]);
	for (i = 0; i < MM_MARKSET_SPARES; i++)
		if (s->spare[i].mem != NULL)
			munmap(s->spare[i].mem, s->spare[i].bytes);
	filter_free(s->filter, s->fbits);
	memset(s, 0, sizeof(*s));
}
