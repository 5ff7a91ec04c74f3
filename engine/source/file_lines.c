/*
 * file_lines.c: the read buffer of the "file" and "stdin" sources (see
 * file_impl.h), cut into records.
 *
 * Lines. A line ends at '\n'; one trailing '\r' is removed. Empty lines are
 * not delivered but still advance the position. At the end of input (not
 * following), and when a followed file is rotated or truncated, a last line
 * without '\n' is delivered as it is.
 *
 * Oversized lines. A line longer than src->max_record is delivered with
 * MM_REC_TOOBIG, its first MM_REC_PREFIX bytes and its true length. Such a
 * line is never buffered whole: once the partial line exceeds
 * max(max_record, MM_REC_PREFIX) + 1 bytes (the +1 leaves room for a '\r'
 * that would not count), its prefix is copied aside and the rest is counted
 * and dropped until the '\n'. The buffer therefore never holds more than
 * max(max_record, MM_REC_PREFIX) + 1 + read_size bytes.
 */
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../lib/error.h"
#include "file_impl.h"

static int64_t mm_fsrc_now_ms(void)
{
	uv_timeval64_t tv;

	if (uv_gettimeofday(&tv) != 0)
		return 0;
	return tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Empties the buffer and sets the next input offset. */
void mm_fsrc_reset(mm_fsrc_t *fs, uint64_t off)
{
	fs->len = fs->head = fs->scanned = 0;
	fs->skipping = 0;
	fs->buf_off = fs->read_off = off;
}

/* Makes room for read_size more bytes. The capacity doubles (so a long
 * partial line is not copied once per read) but never beyond the most a
 * partial line plus one read can need. The first buffer has room for two
 * reads: every read after the first lands behind a partial line, and a
 * buffer of exactly one read would be copied into a larger one at once
 * (from the heap, where malloc's thresholds put a buffer of this size
 * (lib/heap.h), that copy faults in every page of the new one); the
 * second read's room is not touched until it is needed. */
int mm_fsrc_reserve(mm_fsrc_t *fs)
{
	size_t need = fs->len + fs->read_size;
	size_t most = fs->keep_max + fs->read_size;
	size_t cap;
	uint8_t *p;

	if (need <= fs->cap)
		return 0;
	cap = fs->cap * 2 > need ? fs->cap * 2 : need;
	if (fs->cap == 0 && cap < 2 * fs->read_size)
		cap = 2 * fs->read_size;
	if (cap > most)
		cap = most > need ? most : need;
	p = realloc(fs->buf, cap);
	if (p == NULL)
		return MM_ENOMEM;
	fs->buf = p;
	fs->cap = cap;
	return 0;
}

/* Counts n bytes of the oversized line being skipped. */
static void mm_fsrc_skip(mm_fsrc_t *fs, const uint8_t *p, size_t n)
{
	fs->skip_len += n;
	if (n)
		fs->skip_cr = p[n - 1] == '\r';
}

/* Fills in a record of len bytes at p, input offset off. */
static inline void rec_put(mm_record_t *r, const uint8_t *p, uint64_t len, uint64_t off,
			   uint64_t max_record)
{
	r->p = (const char *)p;
	r->flags = 0;
	r->orig_len = len;
	r->offset = off;
	r->ts_ms = 0;
	if (len > max_record) {
		r->flags = MM_REC_TOOBIG;
		len = len < MM_REC_PREFIX ? len : MM_REC_PREFIX;
	}
	r->len = (uint32_t)len;
}

/*
 * The newline search of mm_fsrc_collect. One memchr per line cost a call and
 * its set-up for every record (lines here are about 80 bytes: a few vector
 * steps of work). With SSE2, the newlines of 64 bytes at a time are taken
 * into a bit mask instead, and each line's end is the mask's lowest bit:
 * the bytes before win have been looked at, and bit i of mask stands for
 * byte win - 64 + i, a newline not yet handed out. The last 63 bytes or
 * fewer of the buffer (a window would read past its end) go through memchr,
 * as does everything elsewhere.
 */
#if defined(__SSE2__)
static inline uint64_t nl_mask64(const uint8_t *p)
{
	const __m128i nl = _mm_set1_epi8('\n');
	uint64_t m0 = (unsigned)_mm_movemask_epi8(
		_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(const void *)p), nl));
	uint64_t m1 = (unsigned)_mm_movemask_epi8(
		_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 16)), nl));
	uint64_t m2 = (unsigned)_mm_movemask_epi8(
		_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 32)), nl));
	uint64_t m3 = (unsigned)_mm_movemask_epi8(
		_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(const void *)(p + 48)), nl));

	return m0 | m1 << 16 | m2 << 32 | m3 << 48;
}
#endif

/* Fills recs with the next complete lines, at most batch_max, and consumes
 * them (and any empty lines among them). With fs->final set the unterminated
 * rest of the input counts as a line. Returns the number of records. */
size_t mm_fsrc_collect(mm_fsrc_t *fs)
{
	mm_record_t *recs = fs->recs;
	const uint8_t *buf;
	size_t n = 0, len, head, batch_max = fs->batch_max;
	uint64_t bytes = 0, buf_off = fs->buf_off, max_record = fs->base.max_record;
	size_t win;      /* the newline search: see nl_mask64 */
	uint64_t mask = 0;

	if (fs->skipping) {
		const uint8_t *p = fs->buf + fs->head;
		size_t avail = fs->len - fs->head;
		const uint8_t *nl = memchr(p, '\n', avail);
		size_t k;

		if (nl == NULL && !fs->final)
			return 0;
		k = nl ? (size_t)(nl - p) : avail;
		mm_fsrc_skip(fs, p, k);
		fs->head += nl ? k + 1 : k;
		fs->skipping = 0;
		/* Longer than keep_max, so rec_put marks it TOOBIG and takes
		 * MM_REC_PREFIX bytes: exactly what the prefix holds. */
		rec_put(&fs->recs[n++], fs->prefix, fs->skip_len - (uint64_t)fs->skip_cr, fs->skip_off,
			fs->base.max_record);
		fs->base.bytes += fs->skip_len - (uint64_t)fs->skip_cr;
	}
	/* Lines end in order, so the search goes on from where the last one
	 * ended; [head, scanned) is known to hold no newline. The buffer's
	 * fields are held in locals: the records' stores could alias them
	 * (the build has no strict aliasing), which reloaded them every line. */
	buf = fs->buf;
	len = fs->len;
	head = fs->head;
	win = fs->scanned > head ? fs->scanned : head;
	while (n < batch_max && head < len) {
		size_t at, k, used;

#if defined(__SSE2__)
		while (mask == 0 && len - win >= 64) {
			mask = nl_mask64(buf + win);
			win += 64;
		}
		if (mask != 0) {
			at = win - 64 + (size_t)__builtin_ctzll(mask);
			mask &= mask - 1;
		} else
#endif
		{
			const uint8_t *q = memchr(buf + win, '\n', len - win);

			at = q ? (size_t)(q - buf) : len;
			win = q ? at + 1 : len;
		}

		if (at == len) {
			fs->scanned = len;
			if (!fs->final)
				break;
			k = used = len - head;
		} else {
			k = at - head;
			used = k + 1;
		}
		if (k > 0 && buf[head + k - 1] == '\r')
			k--;
		if (k > 0) {
			rec_put(&recs[n++], buf + head, k, buf_off + head, max_record);
			bytes += k;
		}
		head += used;
	}
	fs->head = head;
	fs->base.bytes += bytes;
	return n;
}

void mm_fsrc_deliver(mm_fsrc_t *fs, size_t n)
{
	uint64_t end = fs->buf_off + fs->head;
	mm_batch_t b;

	b.src = &fs->base;
	b.recs = fs->recs;
	b.n = n;
	b.end_pos = fs->end_pos;
	if (fs->is_stdin) {
		mm_set_u64le(fs->end_pos, end);
		b.end_pos_len = MM_FSRC_STDIN_POS_LEN;
	} else {
		mm_set_u64le(fs->end_pos, fs->dev);
		mm_set_u64le(fs->end_pos + 8, fs->ino);
		mm_set_u64le(fs->end_pos + 16, end);
		b.end_pos_len = MM_FSRC_FILE_POS_LEN;
	}
	b.now_ms = mm_fsrc_now_ms();
	fs->base.records += n;
	fs->base.sink.deliver(fs->base.sink.ctx, &b);
}

/* Moves the partial last line to the front of the buffer before the next
 * read; past keep_max bytes it becomes an oversized line to skip. */
void mm_fsrc_compact(mm_fsrc_t *fs)
{
	size_t rest = fs->len - fs->head;

	if (fs->skipping) {
		mm_fsrc_skip(fs, fs->buf + fs->head, rest);
		fs->buf_off += fs->len;
		fs->len = fs->head = fs->scanned = 0;
		return;
	}
	if (fs->head > 0) {
		memmove(fs->buf, fs->buf + fs->head, rest);
		fs->buf_off += fs->head;
		fs->scanned = fs->scanned > fs->head ? fs->scanned - fs->head : 0;
		fs->len = rest;
		fs->head = 0;
	}
	if (fs->len > fs->keep_max) {
		fs->skipping = 1;
		fs->skip_off = fs->buf_off;
		fs->skip_len = 0;
		memcpy(fs->prefix, fs->buf, MM_REC_PREFIX);
		mm_fsrc_skip(fs, fs->buf, fs->len);
		fs->buf_off += fs->len;
		fs->len = fs->scanned = 0;
	}
}
