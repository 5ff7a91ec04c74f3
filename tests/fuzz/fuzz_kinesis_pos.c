/*
 * fuzz_kinesis_pos.c: arbitrary bytes as a stored Kinesis source position
 * (mm_kinesis_pos_walk, engine/source/position.c; layout in kinesis.c).
 *
 * fuzz-link: engine/source/position.c
 *
 * Checked on every input:
 *   - the walk returns 0 or MM_ECORRUPT, the same with and without a
 *     callback, and the callback sees only shard ids of 1..128 bytes
 *     without a NUL and sequence numbers of at most 128 decimal digits;
 *   - an accepted position is canonical: encoding the shards the walk
 *     reported gives back exactly the input bytes;
 *   - a callback error stops the walk and is returned as is.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/error.h"
#include "source/position.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seen {
	mm_buf_t enc;
	uint32_t count, stop_at;
};

static int on_shard(void *ud, const char *shard, const char *seq, int ended)
{
	struct seen *s = ud;
	size_t slen = strlen(shard), qlen = strlen(seq);

	if (slen == 0 || slen > MM_KINESIS_SHARD_MAX || qlen > MM_KINESIS_SEQ_MAX ||
	    strspn(seq, "0123456789") != qlen || (ended != 0 && ended != 1))
		abort();
	if (s->stop_at && s->count + 1 == s->stop_at)
		return mm_diag_set(MM_ENOMEM, "stop");
	if (mm_buf_put_u16le(&s->enc, (uint16_t)slen) || mm_buf_append(&s->enc, shard, slen) ||
	    mm_buf_put_u8(&s->enc, (uint8_t)ended) || mm_buf_put_u16le(&s->enc, (uint16_t)qlen) ||
	    mm_buf_append(&s->enc, seq, qlen))
		abort();
	s->count++;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct seen s = {0};
	int plain, walked;

	plain = mm_kinesis_pos_walk("fuzz", data, size, NULL, NULL);
	if (plain != 0 && plain != MM_ECORRUPT)
		abort();
	if (mm_buf_put_u32le(&s.enc, MM_KINESIS_POS_MAGIC) || mm_buf_put_u32le(&s.enc, 0))
		abort();
	walked = mm_kinesis_pos_walk("fuzz", data, size, on_shard, &s);
	if (plain == 0) {
		if (walked != 0)
			abort();
		mm_set_u32le(s.enc.p + 4, s.count);
		if (s.enc.len != size || memcmp(s.enc.p, data, size) != 0)
			abort();
		if (s.count > 0) {
			struct seen t = {.stop_at = s.count};

			if (mm_kinesis_pos_walk("fuzz", data, size, on_shard, &t) != MM_ENOMEM ||
			    t.count != s.count - 1)
				abort();
			mm_buf_free(&t.enc);
		}
	} else if (walked != MM_ECORRUPT) {
		abort();
	}
	mm_buf_free(&s.enc);
	return 0;
}
