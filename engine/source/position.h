/*
 * position.h: decoding the positions the file and Kafka sources store with
 * the state (internal to engine/source; exposed so that the decoders are
 * unit-tested and fuzzed on their own). The layouts are documented where
 * they are written: kafka_partitions.c, kinesis.c and file.c ("Positions"
 * in each).
 *
 * A stored position comes back from the store, which may hold anything
 * (a corrupt file, another source's position under the same id), so every
 * length is checked before use and a bad position is MM_ECORRUPT, never a
 * read past its end. Pure C: any thread.
 */
#ifndef MM_SOURCE_POSITION_H
#define MM_SOURCE_POSITION_H

#include <stddef.h>
#include <stdint.h>

#define MM_KAFKA_POS_MAGIC 0x31504b4du /* "MKP1", little-endian */
#define MM_FILE_POS_LEN 24             /* u64 LE device, inode, offset */
#define MM_KINESIS_POS_MAGIC 0x314e4b4du /* "MKN1", little-endian */
#define MM_KINESIS_SEQ_MAX 128         /* digits of a sequence number, at most */
#define MM_KINESIS_SHARD_MAX 128       /* bytes of a shard id, at most */

/* Called for each partition of a Kafka position: topic (NUL-terminated, 1 to
 * 255 bytes, no NUL inside), partition >= 0, next offset >= 0. Returns 0, or
 * an error (with the diagnostics set) that stops the walk. */
typedef int (*mm_kafka_pos_fn)(void *ud, const char *topic, int32_t partition, int64_t offset);

/* Walks the Kafka position p[0..len), calling fn (unless NULL) for each
 * partition in order. Returns 0, MM_ECORRUPT ("<id>: position is not a Kafka
 * position" or "<id>: position of N bytes is truncated or corrupt"), or what
 * fn returned. fn may have been called for the partitions before a corrupt
 * one: to act on valid positions only, walk once with fn NULL first. */
int mm_kafka_pos_walk(const char *id, const uint8_t *p, size_t len, mm_kafka_pos_fn fn, void *ud);

/* Called for each shard of a Kinesis position: shard id (NUL-terminated,
 * 1..MM_KINESIS_SHARD_MAX bytes), the sequence number of the last record
 * read (decimal digits, NUL-terminated; "" when none was read) and whether
 * the shard was read to its end (SHARD_END). Returns 0 or an error that
 * stops the walk. */
typedef int (*mm_kinesis_pos_fn)(void *ud, const char *shard, const char *seq, int ended);

/* Walks the Kinesis position p[0..len) (layout in kinesis.c, "Positions"),
 * calling fn (unless NULL) for each shard in order. Returns 0, MM_ECORRUPT
 * ("<id>: position is not a Kinesis position" or "<id>: position of N bytes
 * is truncated or corrupt"), or what fn returned; walk once with fn NULL to
 * act on valid positions only. */
int mm_kinesis_pos_walk(const char *id, const uint8_t *p, size_t len, mm_kinesis_pos_fn fn,
			void *ud);

/* Decodes a file position (device, inode, offset of the next line).
 * Returns 0 or MM_ECORRUPT ("<id>: position has N bytes, expected 24"). */
int mm_file_pos_decode(const char *id, const uint8_t *p, size_t len, uint64_t *dev, uint64_t *ino,
		       uint64_t *off);

#endif
