/*
 * kafka_partitions.c: the Kafka source's partition table and its positions:
 * finding and adding partitions (every one this worker has read, assigned
 * or not), their read rate, fetch pauses, and the encoding of positions in
 * and out of that table, whole (batch->end_pos, start(), ack()) or in parts
 * (vtable pos_parts). It is separate from kafka.c because it is the one
 * place that knows the position format and how the table maps onto it;
 * kafka.c (delivery, flow control, shutdown) and kafka_rebalance.c
 * (assignment, commits) only call it. kafka_impl.h holds what they share.
 *
 * Positions, little-endian:
 *   u32 magic "MKP1", u32 count, then count times
 *   { u16 topic length, topic bytes, i32 partition, i64 next offset }
 * The next offset of every partition this worker has read (assigned or not)
 * is kept in the batch's position; the engine stores it in parts, one per
 * partition this worker owns and moved (mm_ksrc_pos_parts), so members of a
 * group sharing a store each write their own partitions' positions. Where
 * an assigned partition starts is chosen in kafka_rebalance.c, after its
 * part is read.
 *
 * Ownership: the source owns its partitions and their topic names (freed
 * with the source in kafka.c); ks->pos is the source's buffer, rewritten by
 * each encode. Loop thread only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "../lib/log.h"
#include "kafka_impl.h"

#define MM_KSRC_POS_MAGIC MM_KAFKA_POS_MAGIC
#define MM_KSRC_RATE_WINDOW_MS 1000

/* ---- partitions ---- */

mm_kpart_t *mm_ksrc_part_find(mm_ksrc_t *ks, const char *topic, int32_t partition)
{
	for (size_t i = 0; i < ks->nparts; i++)
		if (ks->parts[i].partition == partition && strcmp(ks->parts[i].topic, topic) == 0)
			return &ks->parts[i];
	return NULL;
}

/* Finds or adds a partition; NULL when out of memory. */
mm_kpart_t *mm_ksrc_part_get(mm_ksrc_t *ks, const char *topic, int32_t partition)
{
	mm_kpart_t *kp = mm_ksrc_part_find(ks, topic, partition), *grown;

	if (kp)
		return kp;
	if (ks->nparts == ks->capparts) {
		size_t cap = ks->capparts ? ks->capparts * 2 : 16;

		grown = realloc(ks->parts, cap * sizeof(*grown));
		if (grown == NULL)
			return NULL;
		ks->parts = grown;
		ks->capparts = cap;
	}
	kp = &ks->parts[ks->nparts];
	memset(kp, 0, sizeof(*kp));
	kp->topic = strdup(topic);
	if (kp->topic == NULL)
		return NULL;
	kp->partition = partition;
	kp->next = kp->stored = kp->acked = kp->committed = kp->stored_sent = -1;
	kp->rate_ms = mm_ksrc_now_ms();
	ks->nparts++;
	return kp;
}

/* The partition of a message, by its topic handle first (one pointer
 * comparison for consecutive messages of a partition). */
mm_kpart_t *mm_ksrc_part_of(mm_ksrc_t *ks, const rd_kafka_message_t *m)
{
	mm_kpart_t *kp;

	if (ks->last_part < ks->nparts) {
		kp = &ks->parts[ks->last_part];
		if (kp->rkt == m->rkt && kp->partition == m->partition)
			return kp;
	}
	for (size_t i = 0; i < ks->nparts; i++) {
		kp = &ks->parts[i];
		if (kp->partition == m->partition &&
		    (kp->rkt == m->rkt || strcmp(kp->topic, mm_rdk.topic_name(m->rkt)) == 0)) {
			kp->rkt = m->rkt;
			ks->last_part = i;
			return kp;
		}
	}
	return NULL;
}

/* The durable offset of a partition in our store, -1 if none. */
int64_t mm_ksrc_part_durable(const mm_kpart_t *kp)
{
	return kp->acked > kp->stored ? kp->acked : kp->stored;
}

void mm_ksrc_rate(mm_kpart_t *kp, int64_t now)
{
	int64_t dt = now - kp->rate_ms;

	if (dt < MM_KSRC_RATE_WINDOW_MS)
		return;
	/* A window that saw nothing gives zero. */
	kp->rate = (double)(kp->records - kp->rate_records) * 1000.0 / (double)dt;
	kp->rate_records = kp->records;
	kp->rate_ms = now;
}

/* Builds a list of the partitions in the given state (enum mm_kpart_state). */
rd_kafka_topic_partition_list_t *mm_ksrc_list(mm_ksrc_t *ks, int state)
{
	rd_kafka_topic_partition_list_t *l = mm_rdk.topic_partition_list_new((int)ks->nparts + 1);

	for (size_t i = 0; i < ks->nparts; i++)
		if (ks->parts[i].state == state)
			mm_rdk.topic_partition_list_add(l, ks->parts[i].topic,
							ks->parts[i].partition);
	return l;
}

/* Pauses (or resumes) fetching the partitions of l in librdkafka. */
void mm_ksrc_fetch_pause(mm_ksrc_t *ks, rd_kafka_topic_partition_list_t *l, int pause)
{
	rd_kafka_resp_err_t err;

	if (l->cnt == 0)
		return;
	err = pause ? mm_rdk.pause_partitions(ks->rk, l) : mm_rdk.resume_partitions(ks->rk, l);
	if (err)
		mm_log(MM_LOG_WARN, "kafka", "%s: cannot %s %d partition(s): %s", ks->base.id,
		       pause ? "pause" : "resume", l->cnt, mm_rdk.err2str(err));
	for (int i = 0; i < l->cnt; i++) {
		mm_kpart_t *kp = mm_ksrc_part_find(ks, l->elems[i].topic, l->elems[i].partition);

		if (kp)
			kp->fetch_paused = pause;
	}
}

/* ---- positions ---- */

/* Encodes the next offset of every partition that has one into ks->pos. */
int mm_ksrc_pos_encode(mm_ksrc_t *ks)
{
	uint32_t count = 0;
	int rc;

	ks->pos.len = 0;
	rc = mm_buf_put_u32le(&ks->pos, MM_KSRC_POS_MAGIC);
	rc |= mm_buf_put_u32le(&ks->pos, 0);
	for (size_t i = 0; i < ks->nparts && rc == 0; i++) {
		const mm_kpart_t *kp = &ks->parts[i];
		size_t tlen = strlen(kp->topic);

		if (kp->next < 0)
			continue;
		rc |= mm_buf_put_u16le(&ks->pos, (uint16_t)tlen);
		rc |= mm_buf_append(&ks->pos, kp->topic, tlen);
		rc |= mm_buf_put_u32le(&ks->pos, (uint32_t)kp->partition);
		rc |= mm_buf_put_u64le(&ks->pos, (uint64_t)kp->next);
		count++;
	}
	if (rc)
		return MM_ENOMEM;
	mm_set_u32le(ks->pos.p + 4, count);
	return 0;
}

struct mm_ksrc_walk {
	mm_ksrc_t *ks;
	mm_ksrc_pos_fn fn;
};

static int mm_ksrc_pos_one(void *ud, const char *topic, int32_t partition, int64_t offset)
{
	struct mm_ksrc_walk *w = ud;
	mm_kpart_t *kp = mm_ksrc_part_get(w->ks, topic, partition);

	if (kp == NULL)
		return mm_diag_set(MM_ENOMEM, "%s: out of memory", w->ks->base.id);
	w->fn(w->ks, kp, offset);
	return 0;
}

/* Walks a position (mm_kafka_pos_walk, position.c), calling fn for each
 * partition in it (creating the partitions it names) unless fn is NULL.
 * Returns 0, MM_ECORRUPT or MM_ENOMEM. */
static int mm_ksrc_pos_walk(mm_ksrc_t *ks, const uint8_t *p, size_t len, mm_ksrc_pos_fn fn)
{
	struct mm_ksrc_walk w = {ks, fn};

	return mm_kafka_pos_walk(ks->base.id, p, len, fn ? mm_ksrc_pos_one : NULL, &w);
}

/* Applies fn to each partition of a position, only if all of it is valid. */
int mm_ksrc_pos_decode(mm_ksrc_t *ks, const uint8_t *p, size_t len, mm_ksrc_pos_fn fn)
{
	int rc = mm_ksrc_pos_walk(ks, p, len, NULL);

	return rc ? rc : mm_ksrc_pos_walk(ks, p, len, fn);
}

struct mm_ksrc_parts {
	mm_ksrc_t *ks;
	int (*fn)(void *ud, const char *part, const uint8_t *p, size_t n);
	void *ud;
	mm_buf_t one;
};

/* One partition of a position, as a part of its own if this member owns the
 * partition (assigned, or being revoked: the revoke's flush) and it moved. */
static int mm_ksrc_part_one(void *ud, const char *topic, int32_t partition, int64_t offset)
{
	struct mm_ksrc_parts *w = ud;
	const mm_kpart_t *kp = mm_ksrc_part_find(w->ks, topic, partition);
	size_t tlen = strlen(topic);
	char name[300];
	int rc;

	if (kp == NULL || kp->state == MM_KP_IDLE || offset <= mm_ksrc_part_durable(kp))
		return 0;
	w->one.len = 0;
	rc = mm_buf_put_u32le(&w->one, MM_KSRC_POS_MAGIC);
	rc |= mm_buf_put_u32le(&w->one, 1);
	rc |= mm_buf_put_u16le(&w->one, (uint16_t)tlen);
	rc |= mm_buf_append(&w->one, topic, tlen);
	rc |= mm_buf_put_u32le(&w->one, (uint32_t)partition);
	rc |= mm_buf_put_u64le(&w->one, (uint64_t)offset);
	if (rc)
		return mm_diag_set(MM_ENOMEM, "%s: out of memory", w->ks->base.id);
	snprintf(name, sizeof(name), "%s/%d", topic, (int)partition);
	return w->fn(w->ud, name, w->one.p, w->one.len);
}

/*
 * The position in parts (vtable pos_parts): one per partition, under the key
 * "<source key>#<topic>/<partition>", each holding a position of that one
 * partition. A member writes only the parts of the partitions it owns, and
 * reads a partition's part when the partition is assigned to it
 * (kafka_rebalance.c), so members of a group sharing a store never
 * overwrite each other's positions, and each partition's pending flush
 * (doc/dynamodb.md, "Flush intents") is finished by its next owner.
 */
int mm_ksrc_pos_parts(mm_source_t *src, const uint8_t *pos, size_t len,
		      int (*fn)(void *ud, const char *part, const uint8_t *p, size_t n),
		      void *ud)
{
	struct mm_ksrc_parts w = {(mm_ksrc_t *)src, fn, ud, {0}};
	int rc = mm_kafka_pos_walk(src->id, pos, len, NULL, NULL);

	if (rc == 0)
		rc = mm_kafka_pos_walk(src->id, pos, len, mm_ksrc_part_one, &w);
	mm_buf_free(&w.one);
	return rc;
}

void mm_ksrc_pos_stored(mm_ksrc_t *ks, mm_kpart_t *kp, int64_t offset)
{
	kp->stored = offset;
	kp->next = offset;
}

void mm_ksrc_pos_acked(mm_ksrc_t *ks, mm_kpart_t *kp, int64_t offset)
{
	if (offset > kp->acked)
		kp->acked = offset;
}
