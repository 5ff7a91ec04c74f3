/* position.c: decoders of the file, Kafka and Kinesis source positions (position.h). */
#include "position.h"

#include <string.h>

#include "../lib/buf.h"
#include "../lib/error.h"

int mm_kafka_pos_walk(const char *id, const uint8_t *p, size_t len, mm_kafka_pos_fn fn, void *ud)
{
	const uint8_t *end = p + len;
	char topic[256];
	uint32_t count;
	int rc;

	if (len < 8 || mm_get_u32le(p) != MM_KAFKA_POS_MAGIC)
		return mm_diag_set(MM_ECORRUPT, "%s: position is not a Kafka position", id);
	count = mm_get_u32le(p + 4);
	p += 8;
	for (uint32_t i = 0; i < count; i++) {
		size_t tlen;
		int32_t partition;
		int64_t offset;

		if (end - p < 2)
			goto corrupt;
		tlen = mm_get_u16le(p);
		if (tlen == 0 || tlen >= sizeof(topic) || (size_t)(end - p) < 2 + tlen + 12)
			goto corrupt;
		memcpy(topic, p + 2, tlen);
		topic[tlen] = '\0';
		p += 2 + tlen;
		partition = (int32_t)mm_get_u32le(p);
		offset = (int64_t)mm_get_u64le(p + 4);
		p += 12;
		if (partition < 0 || offset < 0 || memchr(topic, '\0', tlen) != NULL)
			goto corrupt;
		if (fn != NULL && (rc = fn(ud, topic, partition, offset)) != 0)
			return rc;
	}
	if (p != end)
		goto corrupt;
	return 0;
corrupt:
	return mm_diag_set(MM_ECORRUPT, "%s: position of %zu bytes is truncated or corrupt", id,
			   len);
}

int mm_kinesis_pos_walk(const char *id, const uint8_t *p, size_t len, mm_kinesis_pos_fn fn,
			void *ud)
{
	const uint8_t *end = p + len;
	char shard[MM_KINESIS_SHARD_MAX + 1], seq[MM_KINESIS_SEQ_MAX + 1];
	uint32_t count;
	int rc;

	if (len < 8 || mm_get_u32le(p) != MM_KINESIS_POS_MAGIC)
		return mm_diag_set(MM_ECORRUPT, "%s: position is not a Kinesis position", id);
	count = mm_get_u32le(p + 4);
	p += 8;
	for (uint32_t i = 0; i < count; i++) {
		size_t slen, qlen;
		int flags;

		if (end - p < 2)
			goto corrupt;
		slen = mm_get_u16le(p);
		if (slen == 0 || slen > MM_KINESIS_SHARD_MAX || (size_t)(end - p) < 2 + slen + 3)
			goto corrupt;
		memcpy(shard, p + 2, slen);
		shard[slen] = '\0';
		p += 2 + slen;
		flags = p[0];
		qlen = mm_get_u16le(p + 1);
		p += 3;
		if (flags > 1 || qlen > MM_KINESIS_SEQ_MAX || (size_t)(end - p) < qlen ||
		    memchr(shard, '\0', slen) != NULL)
			goto corrupt;
		for (size_t k = 0; k < qlen; k++)
			if (p[k] < '0' || p[k] > '9')
				goto corrupt;
		memcpy(seq, p, qlen);
		seq[qlen] = '\0';
		p += qlen;
		if (fn != NULL && (rc = fn(ud, shard, seq, flags & 1)) != 0)
			return rc;
	}
	if (p != end)
		goto corrupt;
	return 0;
corrupt:
	return mm_diag_set(MM_ECORRUPT, "%s: position of %zu bytes is truncated or corrupt", id,
			   len);
}

int mm_file_pos_decode(const char *id, const uint8_t *p, size_t len, uint64_t *dev, uint64_t *ino,
		       uint64_t *off)
{
	if (len != MM_FILE_POS_LEN)
		return mm_diag_set(MM_ECORRUPT, "%s: position has %zu bytes, expected %d", id, len,
				   MM_FILE_POS_LEN);
	*dev = mm_get_u64le(p);
	*ino = mm_get_u64le(p + 8);
	*off = mm_get_u64le(p + 16);
	return 0;
}
