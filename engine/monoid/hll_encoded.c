/*
 * hll_encoded.c: merging an HLL state into a stored encoding without
 * decoding it (the monoid's merge_encoded, monoid.h; format atop hll.c).
 *
 * Why. A store's flush merges each key's delta, most often a short list of
 * registers, into the sketch it holds. Decoding the stored sketch into a
 * state, merging and encoding again costs, for a dense sketch, an unpack of
 * 16384 registers, a merge pass, an attempt at the sparse form, a pack and a
 * histogram for the cached cardinality: several passes over 12-16 KiB per
 * key and flush for a delta of a few registers. Here:
 *
 *   - A dense stored sketch is copied as it is, its registers are checked
 *     in one pass over the packed bytes (eight six-bit registers per 48-bit
 *     word, none above 51, which decode() would reject), and each register
 *     of the delta is raised where it lies in the packed bits.
 *   - A sparse stored sketch (or none) is merged as two sorted streams: its
 *     opcodes are read in order, those the delta does not touch are copied
 *     as they are when encode() would write them so (whole stretches of
 *     them checked in a tight loop and copied with one memcpy while the
 *     output is level with the input: hll_copy_span), the others are taken
 *     apart and merged with the delta's registers by index, and the result
 *     is written as opcodes by encode()'s canonical rules, in one pass and
 *     no allocation. When the result has a register
 *     above 32 or passes hll-sparse-max-bytes, it is written dense instead:
 *     the stored registers are set into a zeroed body, then the delta's.
 *   - No stored sketch and a list delta (a key's first flush in its
 *     bucket) skip the emitter: the list is written as opcodes directly
 *     (hll_list_to_sparse), a few instructions per register where the
 *     emitter made a call for each.
 *
 * Form of the result. encode()'s choice for the merged registers, with one
 * exception: a dense stored sketch stays dense, as Valkey's own PFADD and
 * PFMERGE keep it (encode() of the decoded state could choose the sparse
 * form only for a dense sketch that was never dense by our rules, such as
 * one written by the server, or in contrived register patterns).
 *
 * Cached cardinality. Written stale (bit 7 of byte 15 set, the other seven
 * bytes zero), which the format provides for: the server recounts on its
 * next PFCOUNT, and decode() ignores the cache. An estimate per key and
 * flush would be a histogram of the registers and Ertl's series for a
 * figure no reader of a store takes from the cache; encode() (used where
 * the bytes go to the server to be counted) still writes it valid.
 *
 * Errors. The stored bytes get every check decode() makes, with its
 * messages: header length, magic, encoding, dense length, dense registers
 * above 51, and the sparse opcodes (a truncated XZERO, runs past the last
 * register, too few registers covered, bytes after the last one).
 * tests/unit/test_hll.c compares the result with decode-merge-encode on
 * random inputs and with decode()'s verdict on corrupt ones.
 */
#include "hll_impl.h"

#include "../lib/error.h"

/* The cached cardinality's stale flag, as a little-endian u64. */
#define HLL_CARD_STALE (1ULL << 63)

/* Eight six-bit lanes of a 48-bit word: their low five bits, their high bit,
 * and 12 in each. */
#define HLL_LANES_LOW 0x7df7df7df7dfULL
#define HLL_LANES_HIGH 0x820820820820ULL
#define HLL_LANES_12 0x30c30c30c30cULL

_Static_assert(HLL_RANK_MAX == 51, "the lane test below checks for registers >= 52");
_Static_assert(HLL_DENSE_BODY % 6 == 0, "the lane test reads the body in 6-byte words");

/* Raises register idx of the packed dense body to at least rank. Registers
 * starting at bit 4 or 6 of a byte spill into the next one; the last
 * register starts at bit 2 of the last byte, so this stays in bounds. */
static inline void hll_body_raise(uint8_t *body, uint32_t idx, uint8_t rank)
{
	uint32_t bit = idx * 6, at = bit >> 3, shift = bit & 7;
	uint32_t w = body[at];
	uint8_t cur;

	if (shift > 2)
		w |= (uint32_t)body[at + 1] << 8;
	cur = (uint8_t)((w >> shift) & 63);
	if (cur >= rank)
		return;
	w = (w & ~(63u << shift)) | ((uint32_t)rank << shift);
	body[at] = (uint8_t)w;
	if (shift > 2)
		body[at + 1] = (uint8_t)(w >> 8);
}

/* Raises the registers of the packed body to those of the state s. */
static void hll_body_merge_state(uint8_t *body, const mm_hll_state_t *s)
{
	uint32_t i, g, k;

	if (!hll_is_dense(s)) {
		const uint32_t *list = hll_list_c(s);

		for (i = 0; i < s->n; i++)
			hll_body_raise(body, HLL_PAIR_IDX(list[i]), HLL_PAIR_RANK(list[i]));
		return;
	}
	/* A flush's dense delta holds a few hundred or thousand registers
	 * among 16384: its zeros are skipped eight at a time (6 bytes of the
	 * body), then each group of four is merged unless it is zero. */
	for (i = 0; i < HLL_REGISTERS; i += 8, body += 6) {
		if (mm_get_u64le(s->u.regs + i) == 0)
			continue;
		for (g = 0; g < 8; g += 4) {
			const uint8_t *d = s->u.regs + i + g;
			uint8_t *b = body + g / 4 * 3, r[4];
			uint32_t w;

			memcpy(&w, d, 4);
			if (w == 0)
				continue;
			hll_unpack4(b, r);
			for (k = 0; k < 4; k++)
				r[k] = d[k] > r[k] ? d[k] : r[k];
			w = (uint32_t)r[0] | ((uint32_t)r[1] << 6) | ((uint32_t)r[2] << 12) |
			    ((uint32_t)r[3] << 18);
			b[0] = (uint8_t)w;
			b[1] = (uint8_t)(w >> 8);
			b[2] = (uint8_t)(w >> 16);
		}
	}
}

/* The lanes of the 48-bit word x that hold a register above 51 (see
 * hll_body_check), each as its high bit. */
static inline uint64_t hll_lanes_over(uint64_t x)
{
	return ((x & HLL_LANES_LOW) + HLL_LANES_12) & x & HLL_LANES_HIGH;
}

/*
 * Checks that no register of the packed body is above 51. A lane x = 32h +
 * l (l < 32) is above 51 when h is set and l + 12 reaches 32; l + 12 is at
 * most 43, so adding 12 to all lanes at once carries into no other lane.
 * Only when some lane fails is the register looked for, for the message.
 */
static int hll_body_check(const uint8_t *body)
{
	uint64_t bad = 0;
	uint32_t i;

	/* Each 6-byte word but the last is the low bytes of an 8-byte load
	 * (one load where there were six byte loads and their shifts: every
	 * merge into a dense sketch checks its 2048 words); the last one is
	 * read in two parts, as the load would pass the body's end. */
	for (i = 0; i + 8 <= HLL_DENSE_BODY; i += 6)
		bad |= hll_lanes_over(mm_get_u64le(body + i) & 0xffffffffffffULL);
	bad |= hll_lanes_over(mm_get_u32le(body + i) | (uint64_t)mm_get_u16le(body + i + 4) << 32);
	if (bad == 0)
		return 0;
	for (i = 0; i < HLL_REGISTERS; i += 4) {
		uint8_t r[4];

		hll_unpack4(body + i / 4 * 3, r);
		for (uint32_t k = 0; k < 4; k++)
			if (r[k] > HLL_RANK_MAX)
				return mm_diag_set(MM_ECORRUPT,
						   "hll: dense register %u holds %u, above the maximum rank %d",
						   i + k, r[k], HLL_RANK_MAX);
	}
	return 0;
}

/*
 * The canonical sparse writer of encode(), fed runs of equal non-zero
 * registers in index order: adjacent runs of one rank become one, and a run
 * is written (its zero gap, then VAL opcodes) when the next one cannot
 * extend it. over is set once the output cannot be sparse.
 */
typedef struct hll_emitter {
	hll_writer_t w;
	uint32_t done;        /* registers written so far */
	uint32_t idx, run;    /* the pending run (run 0: none) */
	uint8_t rank;
	int over;
} hll_emitter_t;

static void hll_emit_flush(hll_emitter_t *e)
{
	uint32_t gap, run = e->run;

	if (e->run == 0)
		return;
	if (e->rank > HLL_VAL_MAX) {
		e->over = 1;
		return;
	}
	gap = e->idx - e->done;
	/* A gap (below 16384 registers) is at most one XZERO and a run of n
	 * registers ceil(n / 4) VALs: with room for both, the bytes are
	 * written without a bounds test each. */
	if (e->w.len + 2 + (run + HLL_VAL_RUN_MAX - 1) / HLL_VAL_RUN_MAX <= e->w.cap) {
		uint8_t *o = e->w.p + e->w.len, val = (uint8_t)(0x80 | ((e->rank - 1) << 2));

		if (gap > HLL_ZERO_MAX) {
			*o++ = (uint8_t)(0x40 | ((gap - 1) >> 8));
			*o++ = (uint8_t)((gap - 1) & 0xff);
		} else if (gap > 0) {
			*o++ = (uint8_t)(gap - 1);
		}
		for (; run > HLL_VAL_RUN_MAX; run -= HLL_VAL_RUN_MAX)
			*o++ = (uint8_t)(val | (HLL_VAL_RUN_MAX - 1));
		*o++ = (uint8_t)(val | (run - 1));
		e->w.len = (size_t)(o - e->w.p);
	} else {
		hll_put_zeros(&e->w, gap);
		hll_put_vals(&e->w, e->rank, run);
		e->over = e->w.len > e->w.cap;
	}
	e->done = e->idx + e->run;
	e->run = 0;
}

static inline void hll_emit(hll_emitter_t *e, uint32_t idx, uint32_t run, uint8_t rank)
{
	if (e->run != 0 && idx == e->idx + e->run && rank == e->rank) {
		e->run += run;
		return;
	}
	hll_emit_flush(e);
	e->idx = idx;
	e->run = run;
	e->rank = rank;
}

/* What the next opcode of rd holds: -1 none, 0 zeros, else its rank. */
static inline int hll_sparse_peek(const hll_sparse_reader_t *rd)
{
	uint8_t op;

	if (rd->off == rd->n)
		return -1;
	op = rd->p[rd->off];
	return op & 0x80 ? ((op >> 2) & 0x1f) + 1 : 0;
}

/*
 * Whether the stored opcode op[0..size), covering registers [a, b) of value
 * rank (0: zeros), can be copied to the output as it is: no register of the
 * delta is in it or right after it (didx, the delta's next register, is >=
 * a), and it is written as encode() would write it next to its neighbours.
 * encode() writes a zero gap as one opcode (ZERO up to 64, else XZERO)
 * between non-zero registers, and a run of equal registers in VALs of 4
 * with the remainder last. The opcode after is next (hll_sparse_peek); the
 * one before is judged by what the emitter did with it: an opcode that is
 * not copied leaves a pending run (a VAL) or pending zeros (a gap) that
 * this one would continue, so a VAL is not copied after a pending run of its
 * rank ending at a, nor a gap after zeros the emitter has not written. When
 * the opcode can be copied, the emitter is brought up to a.
 */
static int hll_copyable(hll_emitter_t *e, uint32_t a, uint32_t b, uint8_t rank, size_t size,
			int next, uint32_t didx)
{
	if (rank == 0) {
		if (didx < b || next == 0 || (b - a <= HLL_ZERO_MAX) != (size == 1))
			return 0;
		hll_emit_flush(e);
		return !e->over && e->done == a;
	}
	if (didx <= b || (next == rank && b - a != HLL_VAL_RUN_MAX) ||
	    (e->run != 0 && e->idx + e->run == a && e->rank == rank))
		return 0;
	hll_emit_flush(e);
	hll_put_zeros(&e->w, a - e->done);
	return !e->over;
}

/*
 * The bulk form of hll_copyable for a stretch of stored opcodes, taken while
 * the emitter is level with the reader (no pending run, every register
 * before rd->done written): the opcodes from rd's position on that the
 * per-opcode path would copy one by one, as long as each is whole and within
 * the registers, ends before didx (the delta's next register, at most
 * HLL_REGISTERS + 1; a VAL also not right before it) and is written as
 * encode() would write it next to the opcode after it (a zero gap as one
 * opcode, ZERO up to 64 registers, and not followed by another gap; a VAL
 * short of four only when the next one is not of its rank). They are copied
 * with one memcpy. What makes it stop is left to the per-opcode path, which
 * also words the errors. A stored sketch of a few hundred registers is mostly
 * such stretches between the few registers a flush's delta touches, so this
 * loop is most of a sparse merge's instructions, and its tests are on the
 * opcodes' bytes: a VAL's rank and count are its bits 2-6 and 0-1, so a next
 * VAL of its rank is a next byte equal to it in bits 2-7, and the opcode
 * after a gap is a gap when its bit 7 is clear. "Within the registers" needs
 * no test of its own: a VAL is copied only when the register after it is
 * below didx, which is at most HLL_REGISTERS + 1, and a gap only when it ends
 * by zlim, which is at most HLL_REGISTERS.
 */
static void hll_copy_span(hll_emitter_t *e, hll_sparse_reader_t *rd, uint32_t didx)
{
	const uint8_t *p = rd->p;
	size_t off = rd->off, start = rd->off, n = rd->n;
	uint32_t done = rd->done, end, zlim = didx < HLL_REGISTERS ? didx : HLL_REGISTERS;

	while (off < n) {
		uint8_t op = p[off];

		if (op & 0x80) {
			end = done + (op & 0x3u) + 1;
			if (didx <= end || ((op & 0x3u) != HLL_VAL_RUN_MAX - 1 && off + 1 < n &&
					    (p[off + 1] & 0xfcu) == (op & 0xfcu)))
				break;
			off += 1;
		} else if (op & 0x40) {
			if (n - off < 2)
				break;
			end = done + (((uint32_t)op & 0x3f) << 8 | p[off + 1]) + 1;
			if (end - done <= HLL_ZERO_MAX || zlim < end ||
			    (off + 2 < n && !(p[off + 2] & 0x80)))
				break;
			off += 2;
		} else {
			end = done + (op & 0x3fu) + 1;
			if (zlim < end || (off + 1 < n && !(p[off + 1] & 0x80)))
				break;
			off += 1;
		}
		done = end;
	}
	if (off == start)
		return;
	if (e->w.len + (off - start) <= e->w.cap)
		memcpy(e->w.p + e->w.len, p + start, off - start);
	e->w.len += off - start;
	e->over = e->w.len > e->w.cap;
	e->done = done;
	rd->off = off;
	rd->done = done;
}

/*
 * Merges the sparse body p[0..n) (p NULL: no registers) and the state s
 * into e. Stored opcodes away from the delta's registers are copied as they
 * are (most of them: a flush's delta touches a few registers of a sketch);
 * the others are taken apart into runs and merged register by register.
 * Returns 0 (e->over tells whether the result fits), or MM_ECORRUPT for a
 * bad opcode met before the output overflowed.
 */
static int hll_merge_sparse(hll_emitter_t *e, const uint8_t *p, size_t n,
			    const mm_hll_state_t *s)
{
	hll_sparse_reader_t rd = {p, p == NULL ? 0 : n, 0, p == NULL ? HLL_REGISTERS : 0};
	uint32_t pos = 0, didx = 0, len = 0;
	uint8_t drank = 0, rank = 0;
	int dmore = hll_next(s, &pos, &didx, &drank), rc = 0;

	while (!e->over) {
		size_t at;
		uint32_t a, b, sidx;

		if (e->run == 0 && e->done == rd.done) {
			hll_copy_span(e, &rd, dmore ? didx : HLL_REGISTERS + 1);
			if (e->over)
				break;
		}
		at = rd.off;
		if ((rc = hll_sparse_op(&rd, &len, &rank)) <= 0)
			break;
		b = rd.done;
		a = b - len;
		if (hll_copyable(e, a, b, rank, rd.off - at, hll_sparse_peek(&rd),
				 dmore ? didx : HLL_REGISTERS + 1)) {
			for (; at < rd.off; at++)
				hll_put(&e->w, p[at]);
			e->over = e->w.len > e->w.cap;
			e->done = b;
		} else if (rank == 0) {
			for (; dmore && didx < b; dmore = hll_next(s, &pos, &didx, &drank))
				hll_emit(e, didx, 1, drank);
		} else {
			for (sidx = a; dmore && didx < b; dmore = hll_next(s, &pos, &didx, &drank)) {
				if (didx > sidx)
					hll_emit(e, sidx, didx - sidx, rank);
				hll_emit(e, didx, 1, drank > rank ? drank : rank);
				sidx = didx + 1;
			}
			if (sidx < b)
				hll_emit(e, sidx, b - sidx, rank);
		}
	}
	if (rc < 0)
		return rc;
	for (; !e->over && dmore; dmore = hll_next(s, &pos, &didx, &drank))
		hll_emit(e, didx, 1, drank);
	hll_emit_flush(e);
	if (!e->over) {
		hll_put_zeros(&e->w, HLL_REGISTERS - e->done);
		e->over = e->w.len > e->w.cap;
	}
	return 0;
}

/* Sets the registers of the sparse body p[0..n) into the zeroed dense
 * body, validating all of it. */
static int hll_sparse_to_body(const uint8_t *p, size_t n, uint8_t *body)
{
	hll_sparse_reader_t rd = {p, n, 0, 0};
	uint32_t idx = 0, run = 0;
	uint8_t rank = 0;
	int rc;

	while ((rc = hll_sparse_run(&rd, &idx, &run, &rank)) > 0)
		for (uint32_t k = 0; k < run; k++)
			hll_body_raise(body, idx + k, rank);
	return rc;
}

/*
 * The result for no stored sketch and a list state (a key's first flush in
 * its bucket, the common case on a fresh store or a new day): the list's
 * registers written straight as encode()'s sparse opcodes in one pass, with
 * no emitter. A register adjacent to the one before and of its rank raises
 * the count of the last VAL while that VAL holds fewer than four, which is
 * encode()'s run of VALs of four with the remainder last. o has room for
 * 3 * s->n + 2 bytes (a gap and a VAL per register, then the closing
 * gap). Returns the bytes written, or 0 when a register above 32 makes the
 * result dense: the general path writes it then.
 */
static size_t hll_list_to_sparse(const mm_hll_state_t *s, uint8_t *o)
{
	const uint32_t *list = hll_list_c(s);
	uint8_t *start = o, *val = NULL;
	uint32_t done = 0, gap, i;

	for (i = 0; i < s->n; i++) {
		uint32_t idx = HLL_PAIR_IDX(list[i]);
		uint8_t rank = HLL_PAIR_RANK(list[i]), op = (uint8_t)(0x80 | ((rank - 1) << 2));

		if (rank > HLL_VAL_MAX)
			return 0;
		gap = idx - done;
		done = idx + 1;
		if (gap == 0 && val != NULL && (*val & 0xfc) == op &&
		    (*val & 3) != HLL_VAL_RUN_MAX - 1) {
			(*val)++;
			continue;
		}
		if (gap > HLL_ZERO_MAX) {
			*o++ = (uint8_t)(0x40 | ((gap - 1) >> 8));
			*o++ = (uint8_t)((gap - 1) & 0xff);
		} else if (gap > 0) {
			*o++ = (uint8_t)(gap - 1);
		}
		val = o;
		*o++ = op;
	}
	gap = HLL_REGISTERS - done;
	if (gap > HLL_ZERO_MAX) {
		*o++ = (uint8_t)(0x40 | ((gap - 1) >> 8));
		*o++ = (uint8_t)((gap - 1) & 0xff);
	} else if (gap > 0) {
		*o++ = (uint8_t)(gap - 1);
	}
	return (size_t)(o - start);
}

int mm_hll_merge_encoded(const mm_monoid_t *m, const uint8_t *p, size_t n, const void *src,
			 mm_buf_t *out)
{
	const mm_hll_state_t *s = src;
	const uint8_t *sparse = NULL;
	size_t base = out->len;
	hll_emitter_t e;
	uint8_t *hdr;
	size_t len;
	int rc;

	if (p == NULL && !hll_is_dense(s) &&
	    3 * (size_t)s->n + 2 <= MM_HLL_SPARSE_MAX_BYTES - HLL_HDR_SIZE) {
		if ((rc = mm_buf_reserve(out, HLL_HDR_SIZE + 3 * (size_t)s->n + 2)))
			return rc;
		hdr = out->p + base;
		if ((len = hll_list_to_sparse(s, hdr + HLL_HDR_SIZE)) > 0) {
			hll_put_header(hdr, HLL_ENC_SPARSE, HLL_CARD_STALE);
			out->len = base + HLL_HDR_SIZE + len;
			return 0;
		}
	}
	memset(&e, 0, sizeof(e));
	if (p != NULL && (rc = hll_check_header(p, n)) != 0)
		return rc;
	if (p != NULL && p[4] == HLL_ENC_DENSE) {
		if ((rc = mm_buf_reserve(out, HLL_DENSE_SIZE)))
			return rc;
		hdr = out->p + base;
		memcpy(hdr, p, HLL_DENSE_SIZE);
		if ((rc = hll_body_check(hdr + HLL_HDR_SIZE)))
			return rc;
		goto dense;
	}
	if (p != NULL)
		sparse = p + HLL_HDR_SIZE;
	if ((rc = mm_buf_reserve(out, MM_HLL_SPARSE_MAX_BYTES)))
		return rc;
	hdr = out->p + base;
	e.w.p = hdr + HLL_HDR_SIZE;
	e.w.cap = MM_HLL_SPARSE_MAX_BYTES - HLL_HDR_SIZE;
	if ((rc = hll_merge_sparse(&e, sparse, n - (p ? HLL_HDR_SIZE : 0), s)))
		return rc;
	if (!e.over) {
		hll_put_header(hdr, HLL_ENC_SPARSE, HLL_CARD_STALE);
		out->len = base + HLL_HDR_SIZE + e.w.len;
		return 0;
	}
	/* Promotion: the stored registers go into a zeroed dense body (all of
	 * the stored opcodes read again, and validated this time to the end),
	 * then the delta's below. */
	if ((rc = mm_buf_reserve(out, HLL_DENSE_SIZE)))
		return rc;
	hdr = out->p + base;
	memset(hdr + HLL_HDR_SIZE, 0, HLL_DENSE_BODY);
	if (sparse != NULL && (rc = hll_sparse_to_body(sparse, n - HLL_HDR_SIZE, hdr + HLL_HDR_SIZE)))
		return rc;
dense:
	hll_body_merge_state(hdr + HLL_HDR_SIZE, s);
	hll_put_header(hdr, HLL_ENC_DENSE, HLL_CARD_STALE);
	out->len = base + HLL_DENSE_SIZE;
	return 0;
}
