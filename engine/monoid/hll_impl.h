/*
 * hll_impl.h: what hll.c (the HyperLogLog monoid) and hll_encoded.c (merging
 * a state straight into a stored encoding) share: the constants of the byte
 * format and of the in-memory state, the state itself, and the small
 * readers and writers of both. The format and the state are described atop
 * hll.c. Internal to engine/monoid; nothing else includes it. Pure
 * functions: any thread, on states no other thread is writing.
 */
#ifndef MM_HLL_IMPL_H
#define MM_HLL_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../lib/buf.h"
#include "../lib/error.h"
#include "hll.h"

#define HLL_P MM_HLL_P
#define HLL_Q (64 - HLL_P)        /* hash bits left for the rank */
#define HLL_REGISTERS MM_HLL_REGISTERS
#define HLL_RANK_MAX (HLL_Q + 1)  /* the sentinel bit caps the rank */
#define HLL_HDR_SIZE 16
#define HLL_DENSE_BODY (HLL_REGISTERS * 6 / 8)
#define HLL_DENSE_SIZE (HLL_HDR_SIZE + HLL_DENSE_BODY)
#define HLL_ENC_DENSE 0
#define HLL_ENC_SPARSE 1
#define HLL_ALPHA_INF 0.721347520444481703680 /* 1 / (2 ln 2) */

#define HLL_ZERO_MAX 64
#define HLL_XZERO_MAX 16384
#define HLL_VAL_MAX 32
#define HLL_VAL_RUN_MAX 4

#define HLL_INLINE 6
#define HLL_LIST_MAX 1024
#define HLL_ADD_LIST_MAX 128
#define HLL_LIST_MIN_HEAP 16
#define HLL_CAP_DENSE UINT32_MAX

#define HLL_PAIR(idx, rank) (((uint32_t)(idx) << 8) | (rank))
#define HLL_PAIR_IDX(pair) ((pair) >> 8)
#define HLL_PAIR_RANK(pair) ((uint8_t)((pair) & 0xff))

/*
 * cap says which form the state is in: 0 = the inline list, HLL_CAP_DENSE =
 * the register array, anything else = a heap list of that capacity. Lists
 * are sorted by register index with no duplicates and no zero ranks.
 */
typedef struct mm_hll_state {
	uint32_t n;
	uint32_t cap;
	union {
		uint32_t inl[HLL_INLINE];
		uint32_t *list;
		uint8_t *regs;
	} u;
} mm_hll_state_t;

_Static_assert(sizeof(mm_hll_state_t) <= MM_STATE_MAX, "HLL state must fit inline");
_Static_assert(HLL_REGISTERS % 4 == 0, "dense packing works on groups of four");
_Static_assert(HLL_REGISTERS % 8 == 0, "hll_next reads the registers in 8-byte words");

static inline int hll_is_dense(const mm_hll_state_t *s)
{
	return s->cap == HLL_CAP_DENSE;
}

static inline const uint32_t *hll_list_c(const mm_hll_state_t *s)
{
	return s->cap == 0 ? s->u.inl : s->u.list;
}

static inline void hll_put_header(uint8_t *p, int encoding, uint64_t card)
{
	memcpy(p, "HYLL", 4);
	p[4] = (uint8_t)encoding;
	p[5] = p[6] = p[7] = 0;
	mm_set_u64le(p + 8, card);
}

/* A bounded writer: counts every byte but stores only those that fit, so
 * the caller can check for overflow once per run rather than per byte. */
typedef struct hll_writer {
	uint8_t *p;
	size_t len, cap;
} hll_writer_t;

static inline void hll_put(hll_writer_t *w, uint8_t b)
{
	if (w->len < w->cap)
		w->p[w->len] = b;
	w->len++;
}

static inline void hll_put_zeros(hll_writer_t *w, uint32_t run)
{
	while (run > HLL_ZERO_MAX) {
		uint32_t chunk = run < HLL_XZERO_MAX ? run : HLL_XZERO_MAX;

		hll_put(w, (uint8_t)(0x40 | ((chunk - 1) >> 8)));
		hll_put(w, (uint8_t)((chunk - 1) & 0xff));
		run -= chunk;
	}
	if (run > 0)
		hll_put(w, (uint8_t)(run - 1));
}

static inline void hll_put_vals(hll_writer_t *w, uint8_t rank, uint32_t run)
{
	while (run > 0) {
		uint32_t chunk = run < HLL_VAL_RUN_MAX ? run : HLL_VAL_RUN_MAX;

		hll_put(w, (uint8_t)(0x80 | ((rank - 1) << 2) | (chunk - 1)));
		run -= chunk;
	}
}

/* Yields the non-zero registers of s in index order; *pos starts at 0. */
static inline int hll_next(const mm_hll_state_t *s, uint32_t *pos, uint32_t *idx, uint8_t *rank)
{
	if (hll_is_dense(s)) {
		/* Zero registers are skipped a word at a time (the word holding
		 * *pos with its bytes below *pos masked off, then whole words),
		 * and the first non-zero one found by the trailing zeros of the
		 * little-endian word: a flush's dense delta holds a few hundred
		 * or thousand registers among 16384. */
		uint32_t at = *pos & ~7u;
		uint64_t w;

		if (*pos >= HLL_REGISTERS)
			return 0;
		w = mm_get_u64le(s->u.regs + at) & (~0ULL << (*pos & 7) * 8);
		while (w == 0) {
			at += 8;
			if (at == HLL_REGISTERS) {
				*pos = HLL_REGISTERS;
				return 0;
			}
			w = mm_get_u64le(s->u.regs + at);
		}
		*pos = at + (uint32_t)__builtin_ctzll(w) / 8;
		*idx = *pos;
		*rank = s->u.regs[(*pos)++];
		return 1;
	}
	if (*pos == s->n)
		return 0;
	*idx = HLL_PAIR_IDX(hll_list_c(s)[*pos]);
	*rank = HLL_PAIR_RANK(hll_list_c(s)[*pos]);
	(*pos)++;
	return 1;
}

/* Unpacks the four registers stored in one 3-byte group. */
static inline void hll_unpack4(const uint8_t *g, uint8_t *r)
{
	uint32_t w = (uint32_t)g[0] | ((uint32_t)g[1] << 8) | ((uint32_t)g[2] << 16);

	r[0] = (uint8_t)(w & 63);
	r[1] = (uint8_t)((w >> 6) & 63);
	r[2] = (uint8_t)((w >> 12) & 63);
	r[3] = (uint8_t)(w >> 18);
}

/* Checks the header of the encoding p[0..n) and, for a dense one, its
 * length: MM_ECORRUPT (with detail) or 0. */
static inline int hll_check_header(const uint8_t *p, size_t n)
{
	if (n < HLL_HDR_SIZE)
		return mm_diag_set(MM_ECORRUPT, "hll: %zu bytes, shorter than the %d-byte header",
				   n, HLL_HDR_SIZE);
	if (memcmp(p, "HYLL", 4) != 0)
		return mm_diag_set(MM_ECORRUPT, "hll: bad magic %02x %02x %02x %02x, expected \"HYLL\"",
				   p[0], p[1], p[2], p[3]);
	if (p[4] != HLL_ENC_DENSE && p[4] != HLL_ENC_SPARSE)
		return mm_diag_set(MM_ECORRUPT, "hll: unknown encoding %u", p[4]);
	if (p[4] == HLL_ENC_DENSE && n != HLL_DENSE_SIZE)
		return mm_diag_set(MM_ECORRUPT, "hll: dense encoding is %zu bytes, expected %d", n,
				   HLL_DENSE_SIZE);
	return 0;
}

/* A validating reader of a sparse body's opcodes. */
typedef struct hll_sparse_reader {
	const uint8_t *p;
	size_t n, off;
	uint32_t done; /* registers covered by the opcodes read so far */
} hll_sparse_reader_t;

/*
 * Reads the next opcode: it covers *len registers ending at rd->done, which
 * hold *rank (0 for ZERO and XZERO). Returns 1, 0 once the opcodes are over
 * and cover the 16384 registers exactly, or MM_ECORRUPT (with detail) for a
 * truncated XZERO, a run past the last register or too few registers
 * covered.
 */
static inline int hll_sparse_op(hll_sparse_reader_t *rd, uint32_t *len, uint8_t *rank)
{
	size_t at = rd->off;
	uint8_t op;

	if (at == rd->n) {
		if (rd->done != HLL_REGISTERS)
			return mm_diag_set(MM_ECORRUPT, "hll: sparse opcodes cover %u of %u registers",
					   rd->done, HLL_REGISTERS);
		return 0;
	}
	op = rd->p[at];
	*rank = 0;
	if ((op & 0xc0) == 0x00) {
		*len = (op & 0x3f) + 1u;
		rd->off += 1;
	} else if ((op & 0xc0) == 0x40) {
		if (rd->n - at < 2)
			return mm_diag_set(MM_ECORRUPT,
					   "hll: sparse XZERO opcode at body offset %zu is truncated", at);
		*len = (((uint32_t)op & 0x3f) << 8 | rd->p[at + 1]) + 1u;
		rd->off += 2;
	} else {
		*len = (op & 0x3u) + 1u;
		*rank = (uint8_t)(((op >> 2) & 0x1f) + 1);
		rd->off += 1;
	}
	if (*len > HLL_REGISTERS - rd->done)
		return mm_diag_set(MM_ECORRUPT,
				   "hll: sparse opcode at body offset %zu runs past register %u", at,
				   HLL_REGISTERS);
	rd->done += *len;
	return 1;
}

/* Reads opcodes up to the next run of non-zero registers: *idx is its first
 * register, *run its length (1..4), *rank their value. Returns as
 * hll_sparse_op. */
static inline int hll_sparse_run(hll_sparse_reader_t *rd, uint32_t *idx, uint32_t *run,
				 uint8_t *rank)
{
	int rc;

	while ((rc = hll_sparse_op(rd, run, rank)) > 0 && *rank == 0)
		;
	*idx = rd->done - *run;
	return rc;
}

/*
 * The monoid's merge_encoded (monoid.h), in hll_encoded.c: appends to out
 * the encoding of decode(p[0..n)) merged with the state src (p NULL: the
 * identity), without decoding p into a state, its cached cardinality marked
 * stale. MM_ECORRUPT for bytes decode() would reject, MM_ENOMEM.
 */
int mm_hll_merge_encoded(const mm_monoid_t *m, const uint8_t *p, size_t n, const void *src,
			 mm_buf_t *out);

#endif
