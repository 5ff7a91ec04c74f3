/*
 * hll.c: the "hll" monoid, a HyperLogLog byte-compatible with Valkey/Redis.
 *
 * Compatibility
 * -------------
 * Adding an element yields exactly the registers Valkey's PFADD yields, our
 * estimate equals PFCOUNT's, and our encoding is the server's own string
 * value, so a store can SET it and the server can PFADD/PFMERGE/PFCOUNT it
 * (and the other way round). The element is hashed with MurmurHash64A, seed
 * 0xadc83b19 (mm_hash64). The low 14 bits choose the register; the other 50
 * bits, with bit 50 forced to 1 as a sentinel, give the rank = 1 + the number
 * of trailing zero bits, so a rank is 1..51. A register keeps the largest
 * rank seen; merging two sketches takes the register-wise maximum, which is
 * a commutative, associative and idempotent union (identity: all zero).
 *
 * Byte format ("HYLL", as documented in Redis's hyperloglog.c)
 * -----------------------------------------------------------
 *   offset 0   4 bytes  magic "HYLL"
 *   offset 4   1 byte   encoding: 0 = dense, 1 = sparse (no other value)
 *   offset 5   3 bytes  unused, written as zero, ignored on decode
 *   offset 8   8 bytes  cached cardinality, little-endian; bit 7 of byte 15
 *                       set means "stale, recompute"
 *   offset 16  registers, dense or sparse:
 *
 *   Dense: 16384 six-bit registers packed least-significant bit first, so
 *   register i occupies bits 6i..6i+5 of the little-endian bit stream:
 *   exactly 12288 bytes (12304 in all). Four registers fill three bytes.
 *
 *   Sparse: a run-length sequence of opcodes that must cover the 16384
 *   registers exactly:
 *     ZERO   00xxxxxx           xxxxxx + 1 (1..64) zero registers
 *     XZERO  01xxxxxx yyyyyyyy  xxxxxxyyyyyyyy + 1 (1..16384) zero registers
 *     VAL    1vvvvvxx           xx + 1 (1..4) registers holding vvvvv + 1
 *   so a sparse sketch cannot hold a register above 32.
 *
 * The encoder is canonical: it writes the shortest opcode sequence (ZERO for
 * gaps up to 64, XZERO beyond, VAL runs of up to 4) and, following the
 * server's rule, uses the sparse form when every register is <= 32 and the
 * whole encoding fits in hll-sparse-max-bytes (default 3000), else dense.
 * The server edits its sparse strings in place and may leave a longer
 * sequence for the same registers, so equal sketches are compared by
 * registers, not bytes. encode() writes the cached cardinality valid and
 * correct (computed with the estimator below), which saves the server a
 * recount on its first PFCOUNT; decode ignores the cache in whatever state.
 *
 * Merging into stored bytes (hll_encoded.c, the monoid's merge_encoded,
 * which the LMDB store's flush uses) writes the same registers without a
 * state: encode()'s opcodes for a sparse result, a dense stored sketch
 * patched and kept dense (as the server keeps it), and the cached
 * cardinality stale (bit 7 of byte 15 set, the other bytes zero), which the
 * server recounts on its next PFCOUNT. Both forms are this one format: a
 * reader needs nothing new, and bytes written before are read as they were.
 *
 * Decode validates before it allocates: length of the header and of the
 * dense body, magic, encoding, every sparse opcode (a truncated XZERO, runs
 * past register 16384, a sequence covering fewer registers; trailing bytes
 * after full coverage are runs past the end) and register values above 51,
 * which no hash can produce. The server ignores the unused bytes and so do
 * we.
 *
 * In-memory state
 * ---------------
 * The runtime keeps one state per (entity, bucket) and most hold a handful
 * of elements, so a state starts as a sorted list of (index << 8 | rank)
 * pairs stored inline in the 32-byte state (up to 6, no allocation), moves
 * to a heap list as it grows and becomes a plain uint8_t[16384] register
 * array when an element would make it longer than 128 pairs (HLL_ADD_LIST_MAX:
 * an insertion costs a binary search and a shift of half the list, and the
 * events of a hot key, most of a Zipf stream's, land in its long list; past
 * 128 pairs a register store is cheaper). Decode and merge, which build a
 * list in one pass, keep lists up to 1024 pairs (4 KiB, a quarter of the
 * array). `n` counts the non-zero registers
 * in every form, so is_identity is n == 0. The state holds a pointer, so
 * the caller's MM_STATE_MAX bytes must be pointer-aligned.
 *
 * Estimator and error
 * -------------------
 * The estimate is Otmar Ertl's improved raw estimator ("New cardinality
 * estimation algorithms for HyperLogLog sketches", arXiv:1702.01284) over
 * the register histogram C[0..51], in the form Redis 5+ uses for PFCOUNT:
 *   z = m * tau(1 - C[51]/m); for k = 50..1: z = (z + C[k]) / 2;
 *   z += m * sigma(C[0]/m);  estimate = round(m^2 / (2 ln 2) / z),
 * with m = 16384 and sigma/tau the series from the paper evaluated until
 * they stop changing. The floating-point steps are done in the same order
 * as the server so the rounded results agree. The relative standard error
 * is 1.04 / sqrt(16384) ~= 0.81 % over the whole range (no bias switchover
 * at small cardinalities: the estimator handles them directly).
 */
#include "hll.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "../lib/hash.h"
#include "hll_impl.h"


/* Insertions moving at most this many pairs shift them in a loop. */
#define HLL_SHIFT_INLINE 8

static uint32_t *hll_list(mm_hll_state_t *s)
{
	return s->cap == 0 ? s->u.inl : s->u.list;
}

static uint32_t hll_list_cap(const mm_hll_state_t *s)
{
	return s->cap == 0 ? HLL_INLINE : s->cap;
}

/* The register an element lands in and the rank it offers there. */
static void hll_hash(const void *p, size_t len, uint32_t *idx, uint8_t *rank)
{
	uint64_t h = mm_hash64(p, len, MM_HLL_SEED);

	*idx = (uint32_t)(h & (HLL_REGISTERS - 1));
	h >>= HLL_P;
	h |= 1ULL << HLL_Q;
	*rank = (uint8_t)(__builtin_ctzll(h) + 1);
}

/* Index of the first pair whose register is >= idx. Branch-free halving
 * (the compiler makes the step a conditional move): register indexes are
 * hashes, so a branch on the comparison would mispredict every other step. */
static uint32_t hll_lower_bound(const uint32_t *list, uint32_t n, uint32_t idx)
{
	const uint32_t *base = list;
	uint32_t key = HLL_PAIR(idx, 0);

	if (n == 0)
		return 0;
	while (n > 1) {
		uint32_t half = n / 2;

		base = base[half] < key ? base + half : base;
		n -= half;
	}
	return (uint32_t)(base - list) + (*base < key);
}

/* Grows a list state so it can hold `want` (<= HLL_LIST_MAX) pairs. On
 * failure the state is untouched. */
static int hll_list_reserve(mm_hll_state_t *s, uint32_t want)
{
	uint32_t cap = hll_list_cap(s);
	uint32_t *list;

	if (want <= cap)
		return 0;
	cap = cap < HLL_LIST_MIN_HEAP ? HLL_LIST_MIN_HEAP : cap;
	while (cap < want)
		cap *= 2;
	if (cap > HLL_LIST_MAX)
		cap = HLL_LIST_MAX;
	if (s->cap == 0) {
		list = malloc(cap * sizeof(*list));
		if (list == NULL)
			return mm_diag_set(MM_ENOMEM, "hll: cannot allocate a %u-pair list", cap);
		memcpy(list, s->u.inl, s->n * sizeof(*list));
	} else {
		list = realloc(s->u.list, cap * sizeof(*list));
		if (list == NULL)
			return mm_diag_set(MM_ENOMEM, "hll: cannot grow the list to %u pairs", cap);
	}
	s->u.list = list;
	s->cap = cap;
	return 0;
}

/* Turns a list state into the register array. On failure the state is
 * untouched. */
static int hll_to_dense(mm_hll_state_t *s)
{
	const uint32_t *list = hll_list_c(s);
	uint8_t *regs = calloc(HLL_REGISTERS, 1);
	uint32_t i;

	if (regs == NULL)
		return mm_diag_set(MM_ENOMEM, "hll: cannot allocate %u registers", HLL_REGISTERS);
	for (i = 0; i < s->n; i++)
		regs[HLL_PAIR_IDX(list[i])] = HLL_PAIR_RANK(list[i]);
	if (s->cap != 0)
		free(s->u.list);
	s->u.regs = regs;
	s->cap = HLL_CAP_DENSE;
	return 0;
}

/* Raises register idx of a dense state to at least rank. */
static inline void hll_dense_raise(mm_hll_state_t *s, uint32_t idx, uint8_t rank)
{
	if (s->u.regs[idx] < rank) {
		s->n += s->u.regs[idx] == 0;
		s->u.regs[idx] = rank;
	}
}

/* Raises register idx to at least rank. On failure the state is untouched. */
static int hll_set(mm_hll_state_t *s, uint32_t idx, uint8_t rank)
{
	uint32_t *list;
	uint32_t pos;
	int rc;

	if (hll_is_dense(s)) {
		hll_dense_raise(s, idx, rank);
		return 0;
	}
	list = hll_list(s);
	pos = hll_lower_bound(list, s->n, idx);
	if (pos < s->n && HLL_PAIR_IDX(list[pos]) == idx) {
		if (HLL_PAIR_RANK(list[pos]) < rank)
			list[pos] = HLL_PAIR(idx, rank);
		return 0;
	}
	if (s->n >= HLL_ADD_LIST_MAX) {
		rc = hll_to_dense(s);
		if (rc)
			return rc;
		return hll_set(s, idx, rank);
	}
	if (s->n == hll_list_cap(s)) {
		rc = hll_list_reserve(s, s->n + 1);
		if (rc)
			return rc;
		list = hll_list(s);
	}
	/* Most lists are a few pairs long: a short shift is cheaper in line
	 * than a call to memmove. */
	if (s->n - pos <= HLL_SHIFT_INLINE) {
		for (uint32_t k = s->n; k > pos; k--)
			list[k] = list[k - 1];
	} else {
		memmove(list + pos + 1, list + pos, (s->n - pos) * sizeof(*list));
	}
	list[pos] = HLL_PAIR(idx, rank);
	s->n++;
	return 0;
}

/* Number of distinct registers in the union of two lists. */
static uint32_t hll_union_size(const uint32_t *a, uint32_t na, const uint32_t *b, uint32_t nb)
{
	uint32_t i = 0, j = 0, n = 0;

	while (i < na && j < nb) {
		uint32_t ia = HLL_PAIR_IDX(a[i]), ib = HLL_PAIR_IDX(b[j]);

		i += ia <= ib;
		j += ib <= ia;
		n++;
	}
	return n + (na - i) + (nb - j);
}

/* Register-wise max of a list into the register array of a dense state. */
static void hll_merge_list_into_dense(mm_hll_state_t *d, const uint32_t *list, uint32_t n)
{
	uint32_t i;

	for (i = 0; i < n; i++)
		hll_dense_raise(d, HLL_PAIR_IDX(list[i]), HLL_PAIR_RANK(list[i]));
}

static int hll_check(mm_monoid_params_t *p)
{
	return 0;
}

static void hll_init(const mm_monoid_t *m, void *st)
{
	memset(st, 0, sizeof(mm_hll_state_t));
}

static void hll_destroy(const mm_monoid_t *m, void *st)
{
	mm_hll_state_t *s = st;

	if (hll_is_dense(s))
		free(s->u.regs);
	else if (s->cap != 0)
		free(s->u.list);
	memset(s, 0, sizeof(*s));
}

/* Checks an added value and hashes it to its register and rank. */
static inline int hll_value(const mm_value_t *v, uint32_t *idx, uint8_t *rank)
{
	if (v->type != MM_VAL_STRING)
		return mm_diag_set(MM_ETYPE, "hll: expects a string value, got value type %d", v->type);
	if (v->s == NULL && v->len != 0)
		return mm_diag_set(MM_EINVAL, "hll: NULL string of length %zu", v->len);
	hll_hash(v->s, v->len, idx, rank);
	return 0;
}

static int hll_add(const mm_monoid_t *m, void *st, const mm_value_t *v)
{
	uint32_t idx = 0;
	uint8_t rank = 0;
	int rc = hll_value(v, &idx, &rank);

	return rc ? rc : hll_set(st, idx, rank);
}

/* add() in two halves (monoid.h): a dense state's register store, a miss
 * into its 16 KiB array for the hot keys a flush's delta makes dense, is
 * hinted to the cache here and done by hll_add_finish, after the caller's
 * other work; a list state is small and near its entry, and takes the
 * whole add here. */
static int hll_add_start(const mm_monoid_t *m, void *st, const mm_value_t *v,
			 mm_add_later_t *later)
{
	mm_hll_state_t *s = st;
	uint32_t idx = 0;
	uint8_t rank = 0;
	int rc;

	later->pending = 0;
	if ((rc = hll_value(v, &idx, &rank)) != 0)
		return rc;
	if (!hll_is_dense(s))
		return hll_set(s, idx, rank);
	__builtin_prefetch(s->u.regs + idx, 1);
	later->a = idx;
	later->b = rank;
	later->pending = 1;
	return 0;
}

static void hll_add_finish(const mm_monoid_t *m, void *st, const mm_add_later_t *later)
{
	hll_dense_raise(st, later->a, (uint8_t)later->b);
}

/*
 * dst ⊕ src without partial results: the union size is computed first so
 * the single allocation (a bigger list, or the register array) happens
 * before anything changes. Lists are merged in place from the back. src may
 * alias dst.
 */
static int hll_merge(const mm_monoid_t *m, void *dst, const void *src)
{
	mm_hll_state_t *d = dst;
	const mm_hll_state_t *s = src;
	const uint32_t *sl;
	uint32_t *dl;
	uint32_t total, i, j, k;
	int rc;

	if (s->n == 0 || d == s)
		return 0;
	if (hll_is_dense(s)) {
		if (!hll_is_dense(d)) {
			rc = hll_to_dense(d);
			if (rc)
				return rc;
		}
		for (i = 0; i < HLL_REGISTERS; i++)
			hll_dense_raise(d, i, s->u.regs[i]);
		return 0;
	}
	sl = hll_list_c(s);
	if (hll_is_dense(d)) {
		hll_merge_list_into_dense(d, sl, s->n);
		return 0;
	}
	total = hll_union_size(hll_list_c(d), d->n, sl, s->n);
	if (total > HLL_LIST_MAX) {
		rc = hll_to_dense(d);
		if (rc)
			return rc;
		hll_merge_list_into_dense(d, sl, s->n);
		return 0;
	}
	rc = hll_list_reserve(d, total);
	if (rc)
		return rc;
	dl = hll_list(d);
	i = d->n;
	j = s->n;
	k = total;
	while (j > 0) {
		uint32_t a = i > 0 ? dl[i - 1] : 0, b = sl[j - 1];

		if (i > 0 && HLL_PAIR_IDX(a) > HLL_PAIR_IDX(b)) {
			dl[--k] = a;
			i--;
		} else if (i > 0 && HLL_PAIR_IDX(a) == HLL_PAIR_IDX(b)) {
			dl[--k] = a > b ? a : b;
			i--;
			j--;
		} else {
			dl[--k] = b;
			j--;
		}
	}
	d->n = total;
	return 0;
}

/* Ertl's sigma(x) = x + sum_{k>=1} x^(2^k) 2^(k-1), infinite at x = 1. */
static double hll_sigma(double x)
{
	double y = 1, z = x, prev;

	if (x == 1.)
		return INFINITY;
	do {
		x *= x;
		prev = z;
		z += x * y;
		y += y;
	} while (z != prev);
	return z;
}

/* Ertl's tau(x) = (1 - x - sum_{k>=1} (1 - x^(2^-k))^2 2^-k) / 3. The
 * square is written as a product: the server's pow(t, 2) is compiled to
 * the same t * t, so the rounding matches. */
static double hll_tau(double x)
{
	double y = 1.0, z = 1 - x, prev;

	if (x == 0. || x == 1.)
		return 0.;
	do {
		x = sqrt(x);
		prev = z;
		y *= 0.5;
		z -= (1 - x) * (1 - x) * y;
	} while (z != prev);
	return z / 3;
}

static uint64_t hll_estimate(const mm_hll_state_t *s)
{
	uint32_t hist[HLL_RANK_MAX + 1] = {0};
	double m = HLL_REGISTERS, z;
	uint32_t i, top = 0;
	int j;

	if (hll_is_dense(s)) {
		for (i = 0; i < HLL_REGISTERS; i++)
			hist[s->u.regs[i]]++;
		top = HLL_Q;
	} else {
		const uint32_t *list = hll_list_c(s);

		hist[0] = HLL_REGISTERS - s->n;
		for (i = 0; i < s->n; i++) {
			uint32_t r = HLL_PAIR_RANK(list[i]);

			hist[r]++;
			if (r > top)
				top = r;
		}
		if (top > HLL_Q)
			top = HLL_Q;
	}
	z = m * hll_tau((m - hist[HLL_Q + 1]) / m);
	/* A list's ranks above `top` are empty and, with none at the sentinel
	 * rank, z is zero (tau(1) = 0) until the loop reaches `top`: those steps
	 * would halve a zero, exactly. Starting at `top` skips them (two thirds
	 * of the loop for a sketch of a few hundred elements) without changing
	 * one rounding. */
	for (j = (int)(z == 0 ? top : HLL_Q); j >= 1; j--) {
		z += hist[j];
		z *= 0.5;
	}
	z += m * hll_sigma(hist[0] / m);
	return (uint64_t)llround(HLL_ALPHA_INF * m * m / z);
}


/*
 * Writes the sparse body of s into body[0..cap). Returns its length, or 0
 * when it does not fit in cap bytes or some register is above what VAL can
 * hold; the caller then goes dense. Giving up as soon as the output is too
 * long keeps a dense sketch from being scanned in full for nothing.
 */
static size_t hll_sparse_body(const mm_hll_state_t *s, uint8_t *body, size_t cap)
{
	hll_writer_t w = {body, 0, cap};
	uint32_t pos = 0, done = 0, idx, nidx = 0;
	uint8_t rank, nrank = 0;
	int more = hll_next(s, &pos, &idx, &rank);

	while (more) {
		uint32_t run = 1;

		if (rank > HLL_VAL_MAX)
			return 0;
		while ((more = hll_next(s, &pos, &nidx, &nrank)) && nidx == idx + run &&
		       nrank == rank)
			run++;
		hll_put_zeros(&w, idx - done);
		hll_put_vals(&w, rank, run);
		if (w.len > w.cap)
			return 0;
		done = idx + run;
		idx = nidx;
		rank = nrank;
	}
	hll_put_zeros(&w, HLL_REGISTERS - done);
	return w.len <= w.cap ? w.len : 0;
}

/* Packs registers six bits each, least significant bit first. */
static void hll_pack_dense(const mm_hll_state_t *s, uint8_t *body)
{
	uint32_t i;

	if (hll_is_dense(s)) {
		const uint8_t *r = s->u.regs;

		for (i = 0; i < HLL_REGISTERS; i += 4, r += 4, body += 3) {
			uint32_t w = (uint32_t)r[0] | ((uint32_t)r[1] << 6) |
				     ((uint32_t)r[2] << 12) | ((uint32_t)r[3] << 18);

			body[0] = (uint8_t)w;
			body[1] = (uint8_t)(w >> 8);
			body[2] = (uint8_t)(w >> 16);
		}
		return;
	}
	memset(body, 0, HLL_DENSE_BODY);
	for (i = 0; i < s->n; i++) {
		uint32_t bit = HLL_PAIR_IDX(hll_list_c(s)[i]) * 6;
		uint32_t shift = bit & 7;
		uint8_t rank = HLL_PAIR_RANK(hll_list_c(s)[i]);

		body[bit >> 3] |= (uint8_t)(rank << shift);
		/* Registers starting at bit 4 or 6 of a byte spill into the next;
		 * the last register starts at bit 2, so this stays in bounds. */
		if (shift > 2)
			body[(bit >> 3) + 1] |= (uint8_t)(rank >> (8 - shift));
	}
}

static int hll_encode(const mm_monoid_t *m, const void *st, mm_buf_t *out)
{
	const mm_hll_state_t *s = st;
	size_t base = out->len, len;
	uint8_t *p;
	int rc;

	rc = mm_buf_reserve(out, MM_HLL_SPARSE_MAX_BYTES);
	if (rc)
		return rc;
	p = out->p + base;
	len = hll_sparse_body(s, p + HLL_HDR_SIZE, MM_HLL_SPARSE_MAX_BYTES - HLL_HDR_SIZE);
	if (len != 0) {
		hll_put_header(p, HLL_ENC_SPARSE, hll_estimate(s));
		out->len = base + HLL_HDR_SIZE + len;
		return 0;
	}
	rc = mm_buf_reserve(out, HLL_DENSE_SIZE);
	if (rc)
		return rc;
	p = out->p + base;
	hll_put_header(p, HLL_ENC_DENSE, hll_estimate(s));
	hll_pack_dense(s, p + HLL_HDR_SIZE);
	out->len = base + HLL_DENSE_SIZE;
	return 0;
}

/* Records a decoded non-zero register in a state sized for all of them;
 * registers arrive in index order, so lists stay sorted by appending. */
static void hll_put_decoded(mm_hll_state_t *s, uint32_t idx, uint8_t rank)
{
	if (hll_is_dense(s))
		s->u.regs[idx] = rank;
	else
		hll_list(s)[s->n] = HLL_PAIR(idx, rank);
	s->n++;
}

/*
 * The counting pass is branch-free (a running maximum instead of a test per
 * register); the offending register is only looked for once the maximum
 * says there is one. A dense target takes the registers wholesale.
 */
static int hll_parse_dense(const uint8_t *body, mm_hll_state_t *s, uint32_t *nonzero)
{
	uint32_t i, k, nz = 0;
	uint8_t r[4], max = 0;

	for (i = 0; i < HLL_REGISTERS; i += 4) {
		hll_unpack4(body + i / 4 * 3, r);
		for (k = 0; k < 4; k++) {
			nz += r[k] != 0;
			max = r[k] > max ? r[k] : max;
		}
		if (s == NULL)
			continue;
		if (hll_is_dense(s)) {
			memcpy(s->u.regs + i, r, 4);
			continue;
		}
		for (k = 0; k < 4; k++) {
			if (r[k] != 0)
				hll_put_decoded(s, i + k, r[k]);
		}
	}
	if (max > HLL_RANK_MAX) {
		for (i = 0; i < HLL_REGISTERS; i += 4) {
			hll_unpack4(body + i / 4 * 3, r);
			for (k = 0; k < 4; k++) {
				if (r[k] > HLL_RANK_MAX)
					return mm_diag_set(MM_ECORRUPT,
							   "hll: dense register %u holds %u, above the maximum rank %d",
							   i + k, r[k], HLL_RANK_MAX);
			}
		}
	}
	if (s != NULL && hll_is_dense(s))
		s->n = nz;
	*nonzero = nz;
	return 0;
}

static int hll_parse_sparse(const uint8_t *body, size_t n, mm_hll_state_t *s, uint32_t *nonzero)
{
	hll_sparse_reader_t rd = {body, n, 0, 0};
	uint32_t idx = 0, run = 0, k;
	uint8_t rank = 0;
	int rc;

	*nonzero = 0;
	while ((rc = hll_sparse_run(&rd, &idx, &run, &rank)) > 0) {
		*nonzero += run;
		for (k = 0; s != NULL && k < run; k++)
			hll_put_decoded(s, idx + k, rank);
	}
	return rc;
}

/*
 * Validates the encoding p[0..n) and counts its non-zero registers; with a
 * state (sized by a previous counting pass) also stores them.
 */
static int hll_parse(const uint8_t *p, size_t n, mm_hll_state_t *s, uint32_t *nonzero)
{
	int rc = hll_check_header(p, n);

	if (rc)
		return rc;
	if (p[4] == HLL_ENC_DENSE)
		return hll_parse_dense(p + HLL_HDR_SIZE, s, nonzero);
	return hll_parse_sparse(p + HLL_HDR_SIZE, n - HLL_HDR_SIZE, s, nonzero);
}

static int hll_decode(const mm_monoid_t *m, void *st, const uint8_t *p, size_t n)
{
	mm_hll_state_t *s = st;
	uint32_t nonzero = 0;
	int rc;

	hll_destroy(m, s);
	if (p == NULL && n != 0)
		return mm_diag_set(MM_EINVAL, "hll: NULL input of length %zu", n);
	rc = hll_parse(p, n, NULL, &nonzero);
	if (rc)
		return rc;
	if (nonzero > HLL_LIST_MAX) {
		s->u.regs = calloc(HLL_REGISTERS, 1);
		if (s->u.regs == NULL)
			return mm_diag_set(MM_ENOMEM, "hll: cannot allocate %u registers",
					   HLL_REGISTERS);
		s->cap = HLL_CAP_DENSE;
	} else {
		rc = hll_list_reserve(s, nonzero);
		if (rc)
			return rc;
	}
	/* The input was validated above, so this pass only fills the state. */
	return hll_parse(p, n, s, &nonzero);
}

static int hll_to_json(const mm_monoid_t *m, const void *st, mm_buf_t *out)
{
	return mm_buf_printf(out, "{\"cardinality\":%" PRIu64 "}", hll_estimate(st));
}

static int hll_is_identity(const mm_monoid_t *m, const void *st)
{
	const mm_hll_state_t *s = st;

	return s->n == 0;
}

int mm_hll_count(const mm_monoid_t *m, const void *st, uint64_t *out)
{
	if (st == NULL || out == NULL)
		return mm_diag_set(MM_EINVAL, "hll: NULL state or output");
	*out = hll_estimate(st);
	return 0;
}

int mm_hll_registers(const mm_monoid_t *m, const void *st, uint8_t *regs)
{
	const mm_hll_state_t *s = st;
	uint32_t i;

	if (st == NULL || regs == NULL)
		return mm_diag_set(MM_EINVAL, "hll: NULL state or register array");
	if (hll_is_dense(s)) {
		memcpy(regs, s->u.regs, HLL_REGISTERS);
		return 0;
	}
	memset(regs, 0, HLL_REGISTERS);
	for (i = 0; i < s->n; i++)
		regs[HLL_PAIR_IDX(hll_list_c(s)[i])] = HLL_PAIR_RANK(hll_list_c(s)[i]);
	return 0;
}

const mm_monoid_vtable_t mm_monoid_hll_vtable = {
	.name = "hll",
	.value_kind = MM_VK_STRING,
	.check = hll_check,
	.init = hll_init,
	.destroy = hll_destroy,
	.add = hll_add,
	.add_start = hll_add_start,
	.add_finish = hll_add_finish,
	.merge = hll_merge,
	.encode = hll_encode,
	.decode = hll_decode,
	.to_json = hll_to_json,
	.is_identity = hll_is_identity,
	.merge_encoded = mm_hll_merge_encoded,
};
