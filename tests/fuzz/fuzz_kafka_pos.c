/*
 * fuzz_kafka_pos.c: arbitrary bytes as a stored Kafka source position
 * (mm_kafka_pos_walk, engine/source/position.c; layout in kafka_partitions.c).
 *
 * fuzz-link: engine/source/position.c
 *
 * Checked on every input:
 *   - the walk returns 0 or MM_ECORRUPT, the same with and without a
 *     callback, and the callback sees only topics of 1..255 bytes without a
 *     NUL, partitions >= 0 and offsets >= 0;
 *   - an accepted position is canonical: encoding the partitions the walk
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

static int on_part(void *ud, const char *topic, int32_t partition, int64_t offset)
{
	struct seen *s = ud;
	size_t tlen = strlen(topic);

	if (tlen == 0 || tlen > 255 || partition < 0 || offset < 0)
		abort();
	if (s->stop_at && s->count + 1 == s->stop_at)
		return mm_diag_set(MM_ENOMEM, "stop");
	if (mm_buf_put_u16le(&s->enc, (uint16_t)tlen) || mm_buf_append(&s->enc, topic, tlen) ||
	    mm_buf_put_u32le(&s->enc, (uint32_t)partition) ||
	    mm_buf_put_u64le(&s->enc, (uint64_t)offset))
		abort();
	s->count++;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct seen s = {0};
	int plain, walked;

	plain = mm_kafka_pos_walk("fuzz", data, size, NULL, NULL);
	if (plain != 0 && plain != MM_ECORRUPT)
		abort();
	if (mm_buf_put_u32le(&s.enc, MM_KAFKA_POS_MAGIC) || mm_buf_put_u32le(&s.enc, 0))
		abort();
	walked = mm_kafka_pos_walk("fuzz", data, size, on_part, &s);
	if (plain == 0) {
		if (walked != 0)
			abort();
		mm_set_u32le(s.enc.p + 4, s.count);
		if (s.enc.len != size || memcmp(s.enc.p, data, size) != 0)
			abort();
		if (s.count > 0) {
			/* An error from the callback stops the walk there. */
			struct seen t = {.stop_at = s.count};

			if (mm_kafka_pos_walk("fuzz", data, size, on_part, &t) != MM_ENOMEM ||
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
