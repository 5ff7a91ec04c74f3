/*
 * kafka_rebalance.c: the Kafka source's rebalance and commit machinery:
 * assignment (with the committed-offset fetch on the thread pool), revocation
 * (flush, commit, unassign), the results of librdkafka's auto-commits, and
 * the queue that runs rebalances one at a time. kafka.c is the rest of the
 * source, kafka_partitions.c its partition table and positions;
 * kafka_impl.h what they share.
 *
 * Start offsets. On assignment the partition's position is read from the
 * store (its part, kafka_partitions.c "Positions"; on a shared store that
 * read first finishes a flush a dead member left unfinished), and the
 * partition starts at max(offset in the store, group's committed offset):
 * the store's is larger when we crashed after a durable flush but before
 * its commit (so nothing is counted twice), the group's when another worker went further
 * meanwhile (its store has those effects). The committed offsets are
 * fetched on the thread pool (rd_kafka_committed blocks), the parts through
 * the store's asynchronous calls, and the partitions are assigned when both
 * arrived; librdkafka waits for the assign call.
 *
 * Commits. librdkafka never stores an offset on its own
 * (enable.auto.offset.store=false). ack(pos) marks each partition's offset in
 * pos durable (it is the offset of the next record to read, i.e. the last
 * processed offset + 1, which is what Kafka commits) and stores the durable
 * offsets of the assigned partitions (rd_kafka_offsets_store, taken as is);
 * librdkafka's auto-commit sends them every auto.commit.interval.ms (200 by
 * default here) and again on unassign. So a committed offset never passes
 * data that is not in the store, and is retried until it succeeds. Explicit
 * commits would be simpler to follow but are unsafe in librdkafka 2.0.2: one
 * sent while this member is rejoining a cooperative rebalance fails with
 * ILLEGAL_GENERATION and librdkafka then drops the whole assignment as lost
 * (confluentinc/librdkafka#4059); the auto-commit timer skips rebalances.
 *
 * Rebalances run one at a time, in the order librdkafka reports them.
 * Revoke: pause the partitions (messages already queued for them are
 * dropped), sink->flush, and in its done callback commit their durable
 * offsets (unless the assignment was lost: another member may own them),
 * then unassign (rd_kafka_incremental_unassign, or rd_kafka_assign(NULL) for
 * eager assignors). Assign: fetch committed offsets, choose the start offsets
 * above, assign. The default assignor is cooperative-sticky: only partitions
 * that move are revoked, and they are revoked while the group is stable, so
 * the revoke commit is accepted. (Eager assignors revoke everything while
 * the group is rebalancing. Apache Kafka accepts that commit; librdkafka's
 * mock refuses every commit while a group is joining, and a partition moving
 * to another worker is then replayed from the previous commit.)
 *
 * Threads: the loop thread, except mm_ksrc_committed_work (thread pool).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "../lib/log.h"
#include "kafka_impl.h"

#define MM_KSRC_COMMITTED_TIMEOUT_MS 10000
#define MM_KSRC_RETRY_MIN_MS 100
#define MM_KSRC_RETRY_MAX_MS 5000
#define MM_KSRC_REVOKE_COMMIT_TRIES 5

static void mm_ksrc_rebal_next(mm_ksrc_t *ks);
static void mm_ksrc_assign_read(mm_ksrc_t *ks);

/* ---- commits ---- */

/* Records the partitions a commit confirmed. */
static void mm_ksrc_committed_parts(mm_ksrc_t *ks, rd_kafka_topic_partition_list_t *offsets)
{
	for (int i = 0; offsets && i < offsets->cnt; i++) {
		const rd_kafka_topic_partition_t *e = &offsets->elems[i];
		mm_kpart_t *kp;

		if (e->err || e->offset < 0)
			continue;
		kp = mm_ksrc_part_find(ks, e->topic, e->partition);
		if (kp && e->offset > kp->committed)
			kp->committed = e->offset;
	}
}

/* Results of librdkafka's auto-commits, served on the consumer queue. */
void mm_ksrc_on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
		       rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
	mm_ksrc_t *ks = opaque;

	int64_t sum = 0;

	mm_ksrc_committed_parts(ks, offsets);
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR__NO_OFFSET) {
		ks->commits++;
		if (mm_log_get_level() >= MM_LOG_DEBUG) {
			for (size_t i = 0; i < ks->nparts; i++)
				sum += ks->parts[i].committed > 0 ? ks->parts[i].committed : 0;
			mm_log(MM_LOG_DEBUG, "kafka", "%s: committed %d partition(s); committed offsets "
			       "sum to %" PRId64, ks->base.id, offsets ? offsets->cnt : 0, sum);
		}
		return;
	}
	ks->commit_failures++;
	mm_log(MM_LOG_WARN, "kafka", "%s: commit failed: %s (retried with the next auto-commit)",
	       ks->base.id, mm_rdk.err2str(err));
}

/* Hands the durable offsets of the assigned partitions that moved to
 * librdkafka, which commits them. */
void mm_ksrc_store(mm_ksrc_t *ks)
{
	rd_kafka_topic_partition_list_t *l;
	rd_kafka_resp_err_t err;

	if (ks->phase >= MM_KS_DESTROY)
		return;
	l = mm_rdk.topic_partition_list_new((int)ks->nparts + 1);
	for (size_t i = 0; i < ks->nparts; i++) {
		const mm_kpart_t *kp = &ks->parts[i];

		if (kp->state != MM_KP_IDLE && kp->acked > kp->stored_sent &&
		    kp->acked > kp->committed)
			mm_rdk.topic_partition_list_add(l, kp->topic, kp->partition)->offset =
			    kp->acked;
	}
	if (l->cnt > 0) {
		err = mm_rdk.offsets_store(ks->rk, l);
		if (err && err != RD_KAFKA_RESP_ERR__STATE)
			mm_log(MM_LOG_WARN, "kafka", "%s: cannot store offsets: %s", ks->base.id,
			       mm_rdk.err2str(err));
		for (int i = 0; i < l->cnt; i++) {
			mm_kpart_t *kp = mm_ksrc_part_find(ks, l->elems[i].topic,
							   l->elems[i].partition);

			/* __STATE: no longer assigned; the revoke committed it. */
			if (kp && !l->elems[i].err)
				kp->stored_sent = l->elems[i].offset;
		}
	}
	mm_rdk.topic_partition_list_destroy(l);
}

/* ---- rebalances ---- */

void mm_ksrc_rebal_free(mm_krebal_t *op)
{
	mm_rdk.topic_partition_list_destroy(op->parts);
	mm_buf_free(&op->key);
	mm_buf_free(&op->buf);
	free(op);
}

/* The head rebalance is handled: start the next one. */
static void mm_ksrc_rebal_done(mm_ksrc_t *ks)
{
	mm_krebal_t *op = ks->rebal;

	ks->rebal = op->next;
	if (ks->rebal == NULL)
		ks->rebal_tail = &ks->rebal;
	ks->rebal_busy = 0;
	mm_ksrc_rebal_free(op);
	ks->rebalances++;
	/* Partitions assigned back may carry durable offsets the group has not
	 * seen (we crashed, or our assignment was lost, before the commit). */
	mm_ksrc_store(ks);
	mm_ksrc_rebal_next(ks);
	mm_ksrc_check_eof(ks);
	if (ks->phase == MM_KS_CLOSE)
		mm_ksrc_close_step(ks);
}

/* Hands the assignment in op->parts (offsets chosen) to librdkafka. */
static void mm_ksrc_assign_apply(mm_ksrc_t *ks, mm_krebal_t *op)
{
	rd_kafka_topic_partition_list_t *mine;
	rd_kafka_error_t *error = NULL;
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;

	if (ks->cooperative)
		error = mm_rdk.incremental_assign(ks->rk, op->parts);
	else
		err = mm_rdk.assign(ks->rk, op->parts);
	if (error) {
		mm_log(MM_LOG_ERROR, "kafka", "%s: incremental assign failed: %s", ks->base.id,
		       mm_rdk.error_string(error));
		mm_rdk.error_destroy(error);
	} else if (err) {
		mm_log(MM_LOG_ERROR, "kafka", "%s: assign failed: %s", ks->base.id,
		       mm_rdk.err2str(err));
	}
	ks->ever_assigned = 1;
	for (int i = 0; i < op->parts->cnt; i++) {
		const rd_kafka_topic_partition_t *e = &op->parts->elems[i];
		mm_kpart_t *kp = mm_ksrc_part_get(ks, e->topic, e->partition);

		if (kp == NULL) {
			mm_ksrc_fail(ks, MM_ENOMEM, "out of memory assigning partitions");
			break;
		}
		kp->state = MM_KP_ACTIVE;
		kp->fetch_paused = 0;
		kp->at_eof = 0;
		/* librdkafka starts the partition with no stored offset. */
		kp->stored_sent = -1;
		kp->next = e->offset >= 0 ? e->offset : -1;
	}
	/* New partitions of a paused or stopped source must not be fetched. */
	if (ks->fetch_stopped || ks->phase != MM_KS_RUN) {
		mine = mm_rdk.topic_partition_list_copy(op->parts);
		mm_ksrc_fetch_pause(ks, mine, 1);
		mm_rdk.topic_partition_list_destroy(mine);
	}
}

void mm_ksrc_on_rebal_timer(uv_timer_t *h);

/* Chooses where each assigned partition starts, from our store's offsets and
 * the group's committed offsets in op->parts. */
static void mm_ksrc_assign_offsets(mm_ksrc_t *ks, mm_krebal_t *op)
{
	for (int i = 0; i < op->parts->cnt; i++) {
		rd_kafka_topic_partition_t *e = &op->parts->elems[i];
		mm_kpart_t *kp = mm_ksrc_part_get(ks, e->topic, e->partition);
		int64_t group = e->offset >= 0 ? e->offset : -1;
		int64_t ours = kp ? mm_ksrc_part_durable(kp) : -1;
		int64_t start = group > ours ? group : ours;

		if (kp)
			kp->committed = group;
		/* Neither has one: the start option, not INVALID, which would make
		 * librdkafka fetch the committed offset a second time. */
		if (start >= 0)
			e->offset = start;
		else
			e->offset = ks->start[0] == 'l' ? RD_KAFKA_OFFSET_END : RD_KAFKA_OFFSET_BEGINNING;
		if (start < 0)
			mm_log(MM_LOG_INFO, "kafka", "%s: assigned %s[%d] from the %s offset (no offset "
			       "in this store or the group)", ks->base.id, e->topic, (int)e->partition,
			       ks->start);
		else
			mm_log(MM_LOG_INFO, "kafka", "%s: assigned %s[%d] from offset %" PRId64
			       " (this store: %" PRId64 ", group: %" PRId64 ")", ks->base.id, e->topic,
			       (int)e->partition, start, ours, group);
	}
}

/* Leaving the group: the offsets do not matter, nothing will be read. Ends
 * the assignment and returns 1, or returns 0 while the source runs. */
static int mm_ksrc_assign_leaving(mm_ksrc_t *ks, mm_krebal_t *op)
{
	if (ks->phase < MM_KS_CLOSE)
		return 0;
	for (int i = 0; i < op->parts->cnt; i++)
		op->parts->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
	mm_ksrc_assign_apply(ks, op);
	mm_ksrc_rebal_done(ks);
	return 1;
}

/* Backs off before retrying the head assignment's step. */
static void mm_ksrc_assign_retry(mm_ksrc_t *ks, const char *what, const char *why)
{
	mm_krebal_t *op = ks->rebal;
	int64_t delay;

	op->attempts++;
	delay = MM_KSRC_RETRY_MIN_MS << (op->attempts < 6 ? op->attempts : 6);
	if (delay > MM_KSRC_RETRY_MAX_MS)
		delay = MM_KSRC_RETRY_MAX_MS;
	mm_log(MM_LOG_WARN, "kafka", "%s: cannot %s: %s; retrying in %" PRId64 " ms", ks->base.id,
	       what, why, delay);
	uv_timer_start(&ks->rebal_timer, mm_ksrc_on_rebal_timer, (uint64_t)delay, 0);
}

/* Takes the offset of a partition's stored part as where this store has
 * counted it to (it may be another member's work: the store is shared). */
static int mm_ksrc_part_read_one(void *ud, const char *topic, int32_t partition, int64_t offset)
{
	mm_ksrc_t *ks = ud;
	mm_kpart_t *kp = mm_ksrc_part_get(ks, topic, partition);

	if (kp == NULL)
		return mm_diag_set(MM_ENOMEM, "%s: out of memory", ks->base.id);
	if (offset > kp->stored)
		kp->stored = offset;
	return 0;
}

static void mm_ksrc_on_part_read(void *arg, int status, const char *detail)
{
	mm_ksrc_t *ks = arg;
	mm_krebal_t *op = ks->rebal;
	char what[64];
	int rc = 0;

	ks->work_busy = 0;
	if (mm_ksrc_assign_leaving(ks, op))
		return;
	if (status == 0 &&
	    (rc = mm_kafka_pos_walk(ks->base.id, op->buf.p, op->buf.len, NULL, NULL)) == 0)
		rc = mm_kafka_pos_walk(ks->base.id, op->buf.p, op->buf.len, mm_ksrc_part_read_one, ks);
	if (rc) {
		/* Not a Kafka position under a Kafka part's key: nothing of ours. */
		mm_log(MM_LOG_ERROR, "kafka", "%s: ignoring the stored position %s: %s", ks->base.id,
		       (const char *)op->key.p, mm_diag_msg());
	} else if (status && status != MM_ENOTFOUND) {
		snprintf(what, sizeof(what), "read the stored position of %s[%d]",
			 op->parts->elems[op->read_next].topic,
			 (int)op->parts->elems[op->read_next].partition);
		mm_ksrc_assign_retry(ks, what, detail ? detail : mm_err_name(status));
		return;
	}
	op->read_next++;
	mm_ksrc_assign_read(ks);
}

/*
 * Reads the stored position of each assigned partition, one after the
 * other, before any of them is assigned: on a shared store (DynamoDB) the
 * partition may have moved here from a member that died in the middle of a
 * flush, and that read finishes the flush (its intent, doc/dynamodb.md)
 * before this member reads the partition on from the position it moved to.
 * Then the start offsets are chosen and the partitions assigned.
 */
static void mm_ksrc_assign_read(mm_ksrc_t *ks)
{
	mm_krebal_t *op = ks->rebal;
	const rd_kafka_topic_partition_t *e;
	char part[300];
	int rc;

	if (op->read_next >= op->parts->cnt || ks->base.sink.position == NULL) {
		op->reading = 0;
		mm_ksrc_assign_offsets(ks, op);
		mm_ksrc_assign_apply(ks, op);
		mm_ksrc_rebal_done(ks);
		return;
	}
	e = &op->parts->elems[op->read_next];
	snprintf(part, sizeof(part), "%s/%d", e->topic, (int)e->partition);
	op->buf.len = 0;
	if ((rc = mm_source_part_key(&ks->base, part, &op->key)) ||
	    (rc = ks->base.sink.position(ks->base.sink.ctx, &ks->base, (const char *)op->key.p,
					 &op->buf, mm_ksrc_on_part_read, ks))) {
		mm_ksrc_assign_retry(ks, "read a partition's stored position", mm_diag_msg());
		return;
	}
	ks->work_busy = 1;
}

static void mm_ksrc_committed_work(uv_work_t *req)
{
	mm_ksrc_t *ks = req->data;
	mm_krebal_t *op = ks->rebal;

	op->werr = mm_rdk.committed(ks->rk, op->parts, MM_KSRC_COMMITTED_TIMEOUT_MS);
	for (int i = 0; op->werr == RD_KAFKA_RESP_ERR_NO_ERROR && i < op->parts->cnt; i++)
		if (op->parts->elems[i].err)
			op->werr = op->parts->elems[i].err;
}

static void mm_ksrc_committed_done(uv_work_t *req, int status)
{
	mm_ksrc_t *ks = req->data;
	mm_krebal_t *op = ks->rebal;

	ks->work_busy = 0;
	if (mm_ksrc_assign_leaving(ks, op))
		return;
	if (status != 0 || op->werr) {
		mm_ksrc_assign_retry(ks, "fetch committed offsets",
				     status ? uv_strerror(status) : mm_rdk.err2str(op->werr));
		return;
	}
	op->attempts = 0;
	op->reading = 1;
	op->read_next = 0;
	mm_ksrc_assign_read(ks);
}

/* Fetches the group's committed offsets of op->parts on the thread pool. */
static void mm_ksrc_assign_fetch(mm_ksrc_t *ks)
{
	mm_krebal_t *op = ks->rebal;
	int rc;

	for (int i = 0; i < op->parts->cnt; i++)
		op->parts->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
	op->werr = RD_KAFKA_RESP_ERR_NO_ERROR;
	ks->work.data = ks;
	rc = uv_queue_work(ks->base.loop, &ks->work, mm_ksrc_committed_work, mm_ksrc_committed_done);
	if (rc < 0) {
		mm_log(MM_LOG_WARN, "kafka", "%s: cannot queue the committed-offset fetch: %s; "
		       "retrying", ks->base.id, uv_strerror(rc));
		uv_timer_start(&ks->rebal_timer, mm_ksrc_on_rebal_timer, MM_KSRC_RETRY_MAX_MS, 0);
		return;
	}
	ks->work_busy = 1;
}

static void mm_ksrc_unassign(mm_ksrc_t *ks)
{
	mm_krebal_t *op = ks->rebal;
	rd_kafka_error_t *error = NULL;
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;

	if (ks->cooperative)
		error = mm_rdk.incremental_unassign(ks->rk, op->parts);
	else
		err = mm_rdk.assign(ks->rk, NULL);
	if (error) {
		mm_log(MM_LOG_ERROR, "kafka", "%s: incremental unassign failed: %s", ks->base.id,
		       mm_rdk.error_string(error));
		mm_rdk.error_destroy(error);
	} else if (err) {
		mm_log(MM_LOG_ERROR, "kafka", "%s: unassign failed: %s", ks->base.id,
		       mm_rdk.err2str(err));
	}
	for (int i = 0; i < op->parts->cnt; i++) {
		mm_kpart_t *kp = mm_ksrc_part_find(ks, op->parts->elems[i].topic,
						   op->parts->elems[i].partition);

		if (kp) {
			kp->state = MM_KP_IDLE;
			kp->fetch_paused = 0;
			kp->stored_sent = -1;
		}
	}
	if (!ks->cooperative)
		for (size_t i = 0; i < ks->nparts; i++)
			ks->parts[i].state = MM_KP_IDLE;
	mm_ksrc_rebal_done(ks);
}

static void mm_ksrc_on_revoke_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
				     rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
	mm_ksrc_t *ks = opaque;
	mm_krebal_t *op = ks->rebal;
	int retry = err == RD_KAFKA_RESP_ERR_NOT_COORDINATOR ||
		    err == RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE ||
		    err == RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS ||
		    err == RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT ||
		    err == RD_KAFKA_RESP_ERR__TRANSPORT || err == RD_KAFKA_RESP_ERR__TIMED_OUT ||
		    err == RD_KAFKA_RESP_ERR__WAIT_COORD;

	mm_ksrc_committed_parts(ks, offsets);
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR__NO_OFFSET) {
		ks->commits++;
		mm_log(MM_LOG_INFO, "kafka", "%s: committed %d revoked partition(s)", ks->base.id,
		       offsets ? offsets->cnt : 0);
		mm_ksrc_unassign(ks);
		return;
	}
	ks->commit_failures++;
	if (retry && ++op->attempts < MM_KSRC_REVOKE_COMMIT_TRIES) {
		mm_log(MM_LOG_WARN, "kafka", "%s: commit of revoked partitions failed: %s; retrying",
		       ks->base.id, mm_rdk.err2str(err));
		uv_timer_start(&ks->rebal_timer, mm_ksrc_on_rebal_timer,
			       (uint64_t)(MM_KSRC_RETRY_MIN_MS * op->attempts), 0);
		return;
	}
	mm_log(MM_LOG_WARN, "kafka", "%s: commit of revoked partitions failed: %s; releasing them "
	       "uncommitted (their next owner replays from the previous commit)",
	       ks->base.id, mm_rdk.err2str(err));
	mm_ksrc_unassign(ks);
}

/* Commits the durable offsets of the revoked partitions, then unassigns. */
void mm_ksrc_revoke_commit(mm_ksrc_t *ks)
{
	mm_krebal_t *op = ks->rebal;
	rd_kafka_topic_partition_list_t *l;
	rd_kafka_resp_err_t err;

	if (op->lost) {
		mm_log(MM_LOG_WARN, "kafka", "%s: %d partition(s) lost (session timeout or fenced): "
		       "released without committing", ks->base.id, op->parts->cnt);
		mm_ksrc_unassign(ks);
		return;
	}
	l = mm_rdk.topic_partition_list_new(op->parts->cnt + 1);
	for (int i = 0; i < op->parts->cnt; i++) {
		const mm_kpart_t *kp = mm_ksrc_part_find(ks, op->parts->elems[i].topic,
							 op->parts->elems[i].partition);

		if (kp && kp->acked > kp->committed)
			mm_rdk.topic_partition_list_add(l, kp->topic, kp->partition)->offset =
			    kp->acked;
	}
	if (l->cnt == 0) {
		mm_rdk.topic_partition_list_destroy(l);
		mm_ksrc_unassign(ks);
		return;
	}
	err = mm_rdk.commit_queue(ks->rk, l, ks->rkqu, mm_ksrc_on_revoke_commit, ks);
	mm_rdk.topic_partition_list_destroy(l);
	if (err)
		mm_ksrc_on_revoke_commit(ks->rk, err, NULL, ks);
}

static void mm_ksrc_on_revoke_flushed(void *arg, int status)
{
	mm_kflush_t *fw = arg;
	mm_ksrc_t *ks = fw->owner;

	free(fw);
	if (ks == NULL)
		return; /* the source closed without waiting for this flush */
	ks->flush_wait = NULL;
	if (status != 0) {
		mm_log(MM_LOG_WARN, "kafka", "%s: flush before revoke failed (%s): releasing the "
		       "partitions uncommitted", ks->base.id, mm_err_name(status));
		mm_ksrc_unassign(ks);
		return;
	}
	mm_ksrc_revoke_commit(ks);
}

/* Revoke: stop the partitions, make what was delivered durable, commit. */
static void mm_ksrc_revoke_begin(mm_ksrc_t *ks)
{
	mm_krebal_t *op = ks->rebal;
	mm_kflush_t *fw;

	for (int i = 0; i < op->parts->cnt; i++) {
		mm_kpart_t *kp = mm_ksrc_part_find(ks, op->parts->elems[i].topic,
						   op->parts->elems[i].partition);

		if (kp)
			kp->state = MM_KP_REVOKING;
	}
	mm_ksrc_fetch_pause(ks, op->parts, 1);
	mm_log(MM_LOG_INFO, "kafka", "%s: %d partition(s) revoked%s: flushing before release",
	       ks->base.id, op->parts->cnt, op->lost ? " (lost)" : "");
	if (ks->phase >= MM_KS_CLOSE) {
		/* The engine closes sources after its last flush: what was
		 * delivered is durable and acked. */
		mm_ksrc_revoke_commit(ks);
		return;
	}
	fw = malloc(sizeof(*fw));
	if (fw == NULL) {
		mm_ksrc_fail(ks, MM_ENOMEM, "out of memory revoking partitions");
		mm_ksrc_unassign(ks);
		return;
	}
	fw->owner = ks;
	ks->flush_wait = fw;
	ks->base.sink.flush(ks->base.sink.ctx, &ks->base, mm_ksrc_on_revoke_flushed, fw);
}

void mm_ksrc_on_rebal_timer(uv_timer_t *h)
{
	mm_ksrc_t *ks = h->data;
	mm_krebal_t *op = ks->rebal;

	if (ks->close_waiting) {
		/* The first assignment did not come in time. */
		ks->close_waiting = 0;
		ks->close_waited = 1;
		mm_ksrc_close_step(ks);
		return;
	}
	if (op == NULL)
		return;
	if (op->kind == MM_KR_ASSIGN && op->reading)
		mm_ksrc_assign_read(ks);
	else if (op->kind == MM_KR_ASSIGN)
		mm_ksrc_assign_fetch(ks);
	else if (op->kind == MM_KR_REVOKE)
		mm_ksrc_revoke_commit(ks);
}

/* Starts handling the head rebalance, if none is in progress. */
static void mm_ksrc_rebal_next(mm_ksrc_t *ks)
{
	mm_krebal_t *op = ks->rebal;

	if (op == NULL || ks->rebal_busy || ks->phase >= MM_KS_DESTROY)
		return;
	ks->rebal_busy = 1;
	switch (op->kind) {
	case MM_KR_ASSIGN:
		if (ks->phase >= MM_KS_CLOSE) {
			mm_ksrc_assign_apply(ks, op);
			mm_ksrc_rebal_done(ks);
		} else {
			mm_ksrc_assign_fetch(ks);
		}
		break;
	case MM_KR_REVOKE:
		mm_ksrc_revoke_begin(ks);
		break;
	default:
		mm_rdk.assign(ks->rk, NULL);
		for (size_t i = 0; i < ks->nparts; i++)
			ks->parts[i].state = MM_KP_IDLE;
		mm_ksrc_rebal_done(ks);
		break;
	}
}

void mm_ksrc_on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
			  rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	mm_ksrc_t *ks = opaque;
	const char *proto = mm_rdk.rebalance_protocol(rk);
	mm_krebal_t *op = calloc(1, sizeof(*op));

	if (op == NULL || (op->parts = mm_rdk.topic_partition_list_copy(parts)) == NULL) {
		free(op);
		mm_ksrc_fail(ks, MM_ENOMEM, "out of memory handling a rebalance");
		mm_rdk.assign(rk, NULL);
		return;
	}
	ks->cooperative = proto != NULL && strcmp(proto, "COOPERATIVE") == 0;
	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
		op->kind = MM_KR_ASSIGN;
	} else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
		op->kind = MM_KR_REVOKE;
		op->lost = mm_rdk.assignment_lost(rk);
	} else {
		op->kind = MM_KR_RESET;
		mm_log(MM_LOG_WARN, "kafka", "%s: rebalance error: %s", ks->base.id,
		       mm_rdk.err2str(err));
	}
	*ks->rebal_tail = op;
	ks->rebal_tail = &op->next;
	mm_ksrc_rebal_next(ks);
}
