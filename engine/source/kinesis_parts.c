/*
 * kinesis_parts.c: the Kinesis source's positions per shard, for workers
 * that share a stream through a lease table (kinesis_lease.c) and, most
 * often, one DynamoDB store. It is what makes them exact by positions
 * alone, without event ids, as Kafka partitions are (doc/dynamodb.md,
 * "Kafka partitions"):
 *
 * - Write only what you hold. The position is stored in parts (vtable
 *   pos_parts), one per shard under "<source key>#<shard id>", each a
 *   Kinesis position of that one shard. A flush writes the parts of the
 *   shards this worker holds and moved since its last ack; each part gets
 *   its own flush-intent pointer on a shared store, so a worker killed in
 *   the middle of a flush leaves pointers that whoever reads one of those
 *   parts next rolls forward.
 *
 * - Read when taken. When a lease is taken the shard is not read until its
 *   part is (sink->position: on DynamoDB that read first finishes a flush
 *   its last writer left unfinished). It starts after the furthest of the
 *   part, the lease's checkpoint and what this worker has acked itself:
 *   the checkpoint is written after the part, so it is never ahead of it on
 *   a shared store, but it is on separate ones (each worker its own LMDB),
 *   and a position stored whole before parts existed counts as a floor.
 *
 * - Hand over, never snatch. A lease taken from a live worker would be read
 *   by both until the owner notices, and the owner's last flush would write
 *   deltas without the part. So a worker below its share asks (handoffTo,
 *   kinesis_lease.c); the owner stops reading the shard, flushes (its part
 *   included), and only then releases the lease, which the asker takes
 *   like any free one.
 *
 * - A lease lost without a hand-over (its owner could not renew it within
 *   lease_time, stalled or cut off, and another worker may have taken it)
 *   can leave records of the shard in the engine's tables, mixed with
 *   other shards' into the same deltas: they can be neither flushed
 *   without the part (the next owner reads them again) nor taken out.
 *   So the shard stays "lost" and its part stays in every flush until
 *   they are durable: on a shared store its pointer is fenced by `own`
 *   (doc/dynamodb.md, "Kafka partitions"). If the next owner took the
 *   part, the flush fails with EFENCED before any delta and the worker
 *   stops (a supervisor restarts it, reading on from the store); if
 *   nobody took it yet, the flush writes the records with the part and
 *   whoever takes the lease later starts after them. Either way they are
 *   counted once. A lost shard's lease is not taken again before its
 *   records are durable: the take would move `own` back to this worker
 *   and reopen what the fence closed.
 *
 * Ownership: the part read in flight uses ks->part_key and ks->part_buf,
 * and ks->part_sh names its shard; the source is not freed before that
 * read answers (kinesis.c counts it as an open handle). Loop thread only.
 */
#include <stdio.h>
#include <string.h>

#include "../lib/error.h"
#include "../lib/log.h"
#include "kinesis_impl.h"

struct kin_parts {
	mm_kin_t *ks;
	int (*fn)(void *ud, const char *part, const uint8_t *p, size_t n);
	void *ud;
	mm_buf_t one;
};

/* One shard of a position, as a part of its own if this worker holds the
 * shard (handing it over included: that is the hand-over's own flush), or
 * lost its lease while records of it were not durable (below), and it
 * moved since the last ack. */
static int kin_part_one(void *ud, const char *shard, const char *seq, int ended)
{
	struct kin_parts *w = ud;
	const mm_kshard_t *sh = mm_kin_shard_find(w->ks, shard);
	int rc;

	if (sh == NULL || !(sh->owned || sh->lost) || sh->part_wait ||
	    (mm_kin_seq_cmp(seq, sh->durable) <= 0 && (!ended || sh->end_durable)))
		return 0;
	w->one.len = 0;
	rc = mm_buf_put_u32le(&w->one, MM_KINESIS_POS_MAGIC);
	rc = rc ? rc : mm_buf_put_u32le(&w->one, 1);
	rc = rc ? rc : mm_kin_pos_put(&w->one, shard, ended, seq);
	if (rc)
		return mm_diag_set(MM_ENOMEM, "%s: out of memory", w->ks->base.id);
	return w->fn(w->ud, shard, w->one.p, w->one.len);
}

int mm_kin_pos_parts(mm_source_t *src, const uint8_t *pos, size_t len,
		     int (*fn)(void *ud, const char *part, const uint8_t *p, size_t n), void *ud)
{
	struct kin_parts w = {(mm_kin_t *)src, fn, ud, {0}};
	int rc = mm_kinesis_pos_walk(src->id, pos, len, NULL, NULL);

	if (rc == 0)
		rc = mm_kinesis_pos_walk(src->id, pos, len, kin_part_one, &w);
	mm_buf_free(&w.one);
	return rc;
}

struct kin_part_seen {
	mm_kshard_t *sh;
	char seq[MM_KINESIS_SEQ_MAX + 1];
	int ended, found;
};

static int kin_part_seen(void *ud, const char *shard, const char *seq, int ended)
{
	struct kin_part_seen *p = ud;

	if (strcmp(shard, p->sh->id) != 0)
		return 0; /* not this shard's: nothing of ours */
	snprintf(p->seq, sizeof(p->seq), "%s", seq);
	p->ended = ended;
	p->found = 1;
	return 0;
}

/* Where a shard just taken starts: after the furthest of its stored part,
 * its lease's checkpoint and what this worker acked of it. */
static void kin_part_start(mm_kin_t *ks, mm_kshard_t *sh, const struct kin_part_seen *p)
{
	const char *cp = sh->l_checkpoint;
	const char *from = "its start";

	sh->part_wait = 0;
	if (p->found && mm_kin_seq_cmp(p->seq, sh->durable) > 0)
		snprintf(sh->durable, sizeof(sh->durable), "%s", p->seq);
	if (cp[0] >= '0' && cp[0] <= '9' && mm_kin_seq_cmp(cp, sh->durable) > 0)
		snprintf(sh->durable, sizeof(sh->durable), "%s", cp);
	/* Anything this worker read past that before it lost the lease is the
	 * next owner's now: read again from what is durable. */
	snprintf(sh->seq, sizeof(sh->seq), "%s", sh->durable);
	if (sh->seq[0])
		from = sh->seq;
	if (p->found && p->ended) {
		/* Read to its end by a worker that died before its checkpoint. */
		sh->end_read = sh->end_durable = 1;
		sh->state = MM_KSH_END;
	} else if (sh->state != MM_KSH_END) {
		sh->state = MM_KSH_NEW;
	}
	/* The checkpoint catches up with a part that is ahead of it. */
	mm_klease_durable(ks->leases, sh);
	mm_log(MM_LOG_INFO, "kinesis", "%s: %s starts after %s (stored position %s, checkpoint %s)",
	       ks->base.id, sh->id, from, p->found ? (p->ended ? "SHARD_END" : p->seq) : "none",
	       cp[0] ? cp : "none");
}

static void kin_on_part(void *arg, int status, const char *detail)
{
	mm_kin_t *ks = arg;
	mm_kshard_t *sh = ks->part_sh;
	struct kin_part_seen p = {sh, "", 0, 0};
	const mm_buf_t *buf = &ks->part_buf;
	int rc = 0;

	ks->part_sh = NULL;
	if (ks->phase == MM_KIN_CLOSED) {
		mm_kin_handle_gone(ks);
		return;
	}
	if (ks->phase != MM_KIN_RUN || !sh->owned || !sh->part_wait || sh->handoff) {
		sh->part_wait = 0;
		mm_kin_part_read(ks);
		return;
	}
	if (status != 0 && status != MM_ENOTFOUND) {
		sh->failures++;
		mm_log(MM_LOG_WARN, "kinesis", "%s: %s: cannot read the stored position: %s",
		       ks->base.id, sh->id, detail ? detail : mm_err_name(status));
		mm_kin_later(sh, mm_kin_backoff_ms(ks, sh->failures));
		mm_kin_part_read(ks);
		return;
	}
	sh->failures = 0;
	if (status == 0 &&
	    ((rc = mm_kinesis_pos_walk(ks->base.id, buf->p, buf->len, NULL, NULL)) ||
	     (rc = mm_kinesis_pos_walk(ks->base.id, buf->p, buf->len, kin_part_seen, &p))))
		mm_log(MM_LOG_ERROR, "kinesis", "%s: ignoring the stored position %s: %s",
		       ks->base.id, (const char *)ks->part_key.p, mm_diag_msg());
	kin_part_start(ks, sh, &p);
	mm_kin_part_read(ks);
	mm_kin_kick(ks);
}

void mm_kin_part_read(mm_kin_t *ks)
{
	mm_kshard_t *sh = NULL;
	int rc;

	if (ks->part_sh != NULL || ks->phase != MM_KIN_RUN)
		return;
	for (size_t i = 0; i < ks->nshards && sh == NULL; i++) {
		mm_kshard_t *c = ks->shards[i];

		if (c->owned && c->part_wait && !c->handoff && !c->waiting)
			sh = c;
	}
	if (sh == NULL)
		return;
	if (ks->base.sink.position == NULL) {
		struct kin_part_seen none = {sh, "", 0, 0};

		kin_part_start(ks, sh, &none);
		mm_kin_kick(ks);
		return;
	}
	ks->part_buf.len = 0;
	if ((rc = mm_source_part_key(&ks->base, sh->id, &ks->part_key)) ||
	    (rc = ks->base.sink.position(ks->base.sink.ctx, &ks->base, (const char *)ks->part_key.p,
					 &ks->part_buf, kin_on_part, ks))) {
		mm_log(MM_LOG_WARN, "kinesis", "%s: %s: cannot read the stored position: %s",
		       ks->base.id, sh->id, mm_diag_msg());
		mm_kin_later(sh, mm_kin_backoff_ms(ks, ++sh->failures));
		return;
	}
	ks->part_sh = sh;
}

void mm_kin_handoff(mm_kin_t *ks, mm_kshard_t *sh)
{
	if (!sh->owned || sh->handoff || ks->phase != MM_KIN_RUN)
		return;
	mm_log(MM_LOG_INFO, "kinesis", "%s: handing the lease of %s over to %s", ks->base.id,
	       sh->id, sh->l_handoff);
	/* Nothing more is read; what was delivered is flushed with its part,
	 * and an answer in flight or held is dropped (the next owner reads it
	 * again after the part). */
	sh->handoff = 1;
	uv_timer_stop(&sh->timer);
	sh->waiting = 0;
	sh->has_held = 0;
	sh->nheld = 0;
	sh->end_pending = 0;
	mm_kin_flush_shard(ks, sh, 1);
}

void mm_kin_part_handed(mm_kin_t *ks, mm_kshard_t *sh, int status)
{
	if (ks->phase != MM_KIN_RUN || !sh->owned || !sh->handoff)
		return; /* stopping: the close releases every lease anyway */
	if (status != 0) {
		/* Keep the lease and read on; the asker asks again. */
		sh->handoff = 0;
		if (sh->state == MM_KSH_READ)
			sh->state = MM_KSH_ITER;
		mm_kin_kick(ks);
		return;
	}
	if (sh->state == MM_KSH_READ)
		sh->state = MM_KSH_ITER;
	mm_klease_release(ks->leases, sh);
}
