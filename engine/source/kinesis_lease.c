/*
 * kinesis_lease.c: the lease manager of the Kinesis source. Several workers
 * of one application share the shards of a stream through a DynamoDB table
 * in the schema of the Kinesis Client Library, so that operators who know
 * the KCL recognise it (and its tools read it):
 *
 *   leaseKey (S, hash key)            the shard id
 *   leaseOwner (S)                    the worker reading it; absent when free
 *   leaseCounter (N)                  moved by every write of the owner
 *   checkpoint (S)                    the last durable sequence number, or
 *                                     TRIM_HORIZON / LATEST / AT_TIMESTAMP
 *                                     before any, SHARD_END once read to its end
 *   checkpointSubSequenceNumber (N)   0 (KPL sub-records are not split)
 *   ownerSwitchesSinceCheckpoint (N)  owners that took it since the checkpoint
 *   parentShardId (SS)                its parents, for resharding
 *   handoffTo (S)                     murmur's own: a worker asking the owner
 *                                     to hand the lease over (below)
 *
 * Every write is conditional, so two workers never both believe they own a
 * lease: renew sets leaseCounter to counter + 1 if leaseOwner is us and the
 * counter is the one we wrote last; a checkpoint does the same and sets the
 * checkpoint; take sets the owner if the counter is the one we saw; release
 * (clean shutdown) writes the final checkpoint and removes the owner. A
 * conditional failure on renew or checkpoint means another worker took the
 * lease: the shard is dropped at once (lease_losses; records of it not yet
 * durable keep its part in the flushes, kinesis_parts.c). One write per
 * lease is in flight at a time.
 *
 * Expiry is read from the counter, not from clocks (as the KCL does): a
 * scan of the table every lease_time / 3 notes, per lease, the local time
 * its counter last changed; a lease whose counter has not moved for
 * lease_time belongs to a dead worker and may be taken. An owner that could
 * not renew for lease_time stops reading the shard itself.
 *
 * Balancing, after each scan: the workers are the owners of live leases plus
 * us; the target is ceil(open leases / workers). Below it we take free and
 * expired leases; if there are none and a worker holds more than the target,
 * we ask for one of its leases (one per scan, as the KCL steals): SET
 * handoffTo = us, if that worker still owns it and nobody asked yet, which
 * leaves the counter alone so that the owner's renewals go on. The owner
 * sees the request in its next scan, stops reading the shard, flushes, and
 * releases the lease (checkpoint, REMOVE leaseOwner and handoffTo); the
 * lease is then free, and we take it like any free one. So a lease never
 * moves between live workers while its owner still has records of it
 * on the way to the store (kinesis_parts.c). A take removes handoffTo too.
 * Leases of shards read to their end (checkpoint SHARD_END) are neither
 * counted nor taken; the SHARD_END checkpoint releases them.
 *
 * Checkpoints move only after a durable flush (ack()); the shard's position
 * is written first, in the store. A lease taken is read from the furthest
 * of its checkpoint and its position in the store (kinesis_parts.c), so a
 * worker that died between its flush and its checkpoint leaves nothing to
 * count twice on a shared store; on separate embedded stores the records
 * after the checkpoint are counted by both workers.
 *
 * Threads: the loop thread only.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "../codec/json.h"
#include "../lib/error.h"
#include "../lib/log.h"
#include "kinesis_impl.h"

enum klease_op { OP_DESCRIBE, OP_CREATE_TABLE, OP_PUT, OP_SCAN, OP_TAKE, OP_RENEW,
		 OP_CHECKPOINT, OP_RELEASE, OP_HANDOFF };

typedef struct klease_req {
	mm_klease_t *lm;
	int op;                   /* enum klease_op */
	mm_kshard_t *sh;          /* the lease's shard, NULL for table calls */
	int64_t counter;          /* the counter the write sets */
	char cp[MM_KINESIS_SEQ_MAX + 1]; /* the checkpoint a write sets */
	struct klease_req *next;
} klease_req_t;

struct mm_klease {
	mm_kin_t *ks;
	mm_kapi_t *api;
	char *table, *worker;
	int64_t lease_ms;
	uv_timer_t timer;
	int ready;                /* the table is ACTIVE */
	int sync_wanted, scanning, closing;
	size_t inflight;
	klease_req_t *reqs;       /* in flight, freed with lm if abandoned */
	mm_buf_t body;
	uint64_t takes, losses, steals, handoffs, renewals, checkpoints, failures, scans;
	void (*done)(void *arg);
	void *done_arg;
};

static void klease_send(mm_klease_t *lm, int op, mm_kshard_t *sh, const char *target);
static void klease_scan(mm_klease_t *lm, const mm_jnode_t *start);
static void klease_release_all(mm_klease_t *lm);

static void klease_on_timer(uv_timer_t *t);

static void klease_arm(mm_klease_t *lm, uint64_t ms)
{
	if (!lm->closing)
		uv_timer_start(&lm->timer, klease_on_timer, ms, 0);
}

/* ---- request bodies ---- */

static int put_s(mm_buf_t *b, const char *name, const char *v)
{
	int rc = mm_buf_printf(b, "\"%s\":{\"S\":", name);

	rc = rc ? rc : mm_json_quote(v, strlen(v), b);
	return rc ? rc : mm_buf_printf(b, "}");
}

static int put_head(mm_klease_t *lm, mm_buf_t *b, const mm_kshard_t *sh)
{
	int rc;

	b->len = 0;
	rc = mm_buf_printf(b, "{\"TableName\":");
	rc = rc ? rc : mm_json_quote(lm->table, strlen(lm->table), b);
	if (sh) {
		rc = rc ? rc : mm_buf_printf(b, ",\"Key\":{");
		rc = rc ? rc : put_s(b, "leaseKey", sh->id);
		rc = rc ? rc : mm_buf_printf(b, "}");
	}
	return rc;
}

/* The values every owner write conditions on: we own it at counter c. */
static int put_owner_values(mm_klease_t *lm, mm_buf_t *b, const mm_kshard_t *sh, int64_t next)
{
	int rc = mm_buf_printf(b, ",\"ExpressionAttributeValues\":{");

	rc = rc ? rc : put_s(b, ":me", lm->worker);
	rc = rc ? rc : mm_buf_printf(b, ",\":c\":{\"N\":\"%" PRId64 "\"},\":n\":{\"N\":\"%" PRId64
				      "\"}", sh->l_counter, next);
	return rc;
}

/* The sentinel a new lease starts from (a child always from its start). */
static const char *klease_initial(const mm_kin_t *ks, const mm_kshard_t *sh)
{
	if (sh->parent[0] || sh->adjacent[0] || ks->start_kind == MM_KIN_TRIM)
		return "TRIM_HORIZON";
	return ks->start_kind == MM_KIN_LATEST ? "LATEST" : "AT_TIMESTAMP";
}

/* ---- answers ---- */

static const char *attr_s(const mm_jnode_t *item, const char *name)
{
	const mm_jnode_t *v = mm_jnode_get(mm_jnode_get(item, name), "S");

	return v && v->type == MM_JSON_STRING ? v->s : NULL;
}

static int64_t attr_n(const mm_jnode_t *item, const char *name)
{
	const mm_jnode_t *v = mm_jnode_get(mm_jnode_get(item, name), "N");

	return v && v->type == MM_JSON_STRING ? strtoll(v->s, NULL, 10) : 0;
}

static void klease_lost(mm_klease_t *lm, mm_kshard_t *sh, const char *why)
{
	if (!sh->owned)
		return;
	mm_log(MM_LOG_WARN, "kinesis", "%s: lost the lease of %s (%s)", lm->ks->base.id, sh->id,
	       why);
	sh->lease_losses++;
	lm->losses++;
	mm_kin_drop(lm->ks, sh);
}

/* One item of a scan: what the table says about a lease. */
static void klease_seen(mm_klease_t *lm, const mm_jnode_t *item, int64_t now)
{
	const char *key = attr_s(item, "leaseKey"), *owner = attr_s(item, "leaseOwner"),
		   *cp = attr_s(item, "checkpoint"), *asker = attr_s(item, "handoffTo");
	int64_t counter = attr_n(item, "leaseCounter");
	mm_kshard_t *sh;

	if (key == NULL || (sh = mm_kin_shard_find(lm->ks, key)) == NULL)
		return;
	/* A request to hand a lease of ours over leaves its counter alone, so
	 * it is read whatever the counter says. */
	if (sh->owned && asker && owner && strcmp(owner, lm->worker) == 0 &&
	    strcmp(asker, lm->worker) != 0) {
		snprintf(sh->l_handoff, sizeof(sh->l_handoff), "%s", asker);
		if (sh->state != MM_KSH_END && !lm->closing)
			mm_kin_handoff(lm->ks, sh);
	}
	/* Counters only grow: an answer older than what we know (a scan sent
	 * before our own write answered) says nothing new. */
	if (sh->l_exists && counter <= sh->l_counter) {
		if (counter < sh->l_counter || sh->owned || sh->l_busy)
			return;
	} else {
		sh->l_changed_ms = now;
	}
	sh->l_exists = 1;
	if (sh->l_busy)
		return; /* our own write in flight decides */
	sh->l_counter = counter;
	snprintf(sh->l_owner, sizeof(sh->l_owner), "%s", owner ? owner : "");
	snprintf(sh->l_checkpoint, sizeof(sh->l_checkpoint), "%s", cp ? cp : "");
	snprintf(sh->l_handoff, sizeof(sh->l_handoff), "%s", asker ? asker : "");
	sh->l_ended = cp && strcmp(cp, "SHARD_END") == 0;
	if (sh->owned && strcmp(sh->l_owner, lm->worker) != 0)
		klease_lost(lm, sh, "another worker owns it now");
}

static int klease_live(const mm_klease_t *lm, const mm_kshard_t *sh, int64_t now)
{
	return sh->l_owner[0] && now - sh->l_changed_ms < lm->lease_ms;
}

/* Balancing after a scan (see the top). */
static void klease_balance(mm_klease_t *lm, int64_t now)
{
	mm_kin_t *ks = lm->ks;
	size_t open = 0, mine = 0, nworkers = 1, target, most = 0;
	const char *workers[64];
	size_t counts[64];
	const char *richest = NULL;

	for (size_t i = 0; i < ks->nshards; i++) {
		mm_kshard_t *sh = ks->shards[i];
		size_t w;

		if (!sh->listed || !sh->l_exists || sh->l_ended)
			continue;
		open++;
		if (sh->owned) {
			mine++;
			continue;
		}
		if (!klease_live(lm, sh, now) || strcmp(sh->l_owner, lm->worker) == 0)
			continue;
		for (w = 0; w < nworkers - 1 && strcmp(workers[w], sh->l_owner) != 0; w++)
			;
		if (w == nworkers - 1) {
			if (nworkers - 1 >= sizeof(workers) / sizeof(workers[0]))
				continue;
			workers[w] = sh->l_owner;
			counts[w] = 0;
			nworkers++;
		}
		if (++counts[w] > most) {
			most = counts[w];
			richest = workers[w];
		}
	}
	target = (open + nworkers - 1) / nworkers;
	for (size_t i = 0; i < ks->nshards && mine < target; i++) {
		mm_kshard_t *sh = ks->shards[i];

		/* Not one we handed over lately: it is the asker's, which
		 * counts as no worker here until it holds a lease. Nor one
		 * lost with records not durable yet (kinesis_parts.c). */
		if (!sh->listed || !sh->l_exists || sh->l_ended || sh->owned || sh->lost || sh->l_busy ||
		    klease_live(lm, sh, now) ||
		    (sh->l_handed_ms && now - sh->l_handed_ms < lm->lease_ms))
			continue;
		klease_send(lm, OP_TAKE, sh, "UpdateItem");
		mine++;
	}
	if (mine >= target || richest == NULL || most <= target)
		return;
	/* One request at a time: the lease asked for is released soon. */
	for (size_t i = 0; i < ks->nshards; i++)
		if (strcmp(ks->shards[i]->l_handoff, lm->worker) == 0 && !ks->shards[i]->l_ended &&
		    ks->shards[i]->l_owner[0])
			return;
	/* Nothing free: ask the worker holding the most for one lease. */
	for (size_t i = 0; i < ks->nshards; i++) {
		mm_kshard_t *sh = ks->shards[i];

		if (sh->listed && sh->l_exists && !sh->l_ended && !sh->owned && !sh->l_busy &&
		    sh->l_handoff[0] == '\0' && strcmp(sh->l_owner, richest) == 0) {
			lm->steals++;
			klease_send(lm, OP_HANDOFF, sh, "UpdateItem");
			return;
		}
	}
}

/* A lease we now own: its shard's stored position is read before the
 * shard is (kinesis_parts.c), and it starts after the furthest of that
 * and the checkpoint. */
static void klease_taken(mm_klease_t *lm, mm_kshard_t *sh)
{
	const char *cp = sh->l_checkpoint;

	sh->owned = 1;
	sh->part_wait = 1;
	sh->lease_takes++;
	lm->takes++;
	snprintf(sh->l_owner, sizeof(sh->l_owner), "%s", lm->worker);
	sh->l_handoff[0] = '\0';
	mm_log(MM_LOG_INFO, "kinesis", "%s: took the lease of %s (checkpoint %s)",
	       lm->ks->base.id, sh->id, cp[0] ? cp : "none");
	if (sh->state != MM_KSH_END)
		sh->state = MM_KSH_NEW;
}

static void klease_after_write(mm_klease_t *lm, mm_kshard_t *sh);

static void klease_on_answer(void *arg, const mm_kapi_answer_t *a)
{
	klease_req_t *r = arg, **pp;
	mm_klease_t *lm = r->lm;
	mm_kshard_t *sh = r->sh;
	int cond = a->status != 0 && strcmp(a->error, "ConditionalCheckFailedException") == 0;
	int64_t now = mm_kin_now_ms();

	for (pp = &lm->reqs; *pp != r; pp = &(*pp)->next)
		;
	*pp = r->next;
	lm->inflight--;
	if (sh)
		sh->l_busy = 0;
	if (a->status != 0 && !cond && !(r->op == OP_DESCRIBE &&
					  strcmp(a->error, "ResourceNotFoundException") == 0) &&
	    !(r->op == OP_CREATE_TABLE && strcmp(a->error, "ResourceInUseException") == 0)) {
		lm->failures++;
		mm_log(MM_LOG_WARN, "kinesis", "%s: lease table %s: %s", lm->ks->base.id, lm->table,
		       a->detail);
	}
	switch (r->op) {
	case OP_DESCRIBE: {
		const mm_jnode_t *st = mm_jnode_get(mm_jnode_get(a->root, "Table"), "TableStatus");

		if (a->status == 0 && mm_jnode_is(st, "ACTIVE")) {
			lm->ready = 1;
			klease_arm(lm, 0);
		} else if (a->status != 0 && strcmp(a->error, "ResourceNotFoundException") == 0) {
			klease_send(lm, OP_CREATE_TABLE, NULL, "CreateTable");
		} else {
			klease_arm(lm, 200);
		}
		break;
	}
	case OP_CREATE_TABLE:
		if (a->status == 0)
			mm_log(MM_LOG_INFO, "kinesis", "%s: created the lease table %s",
			       lm->ks->base.id, lm->table);
		klease_arm(lm, 100); /* describe again until ACTIVE */
		break;
	case OP_PUT:
		if (a->status == 0 && !sh->l_exists) {
			sh->l_exists = 1;
			sh->l_changed_ms = now;
			sh->l_counter = 0;
			snprintf(sh->l_checkpoint, sizeof(sh->l_checkpoint), "%s",
				 klease_initial(lm->ks, sh));
		}
		break;
	case OP_SCAN: {
		const mm_jnode_t *items = mm_jnode_get(a->root, "Items"),
				 *last = mm_jnode_get(a->root, "LastEvaluatedKey");

		if (a->status != 0) {
			lm->scanning = 0;
			break;
		}
		for (const mm_jnode_t *it = items ? items->child : NULL; it; it = it->next)
			klease_seen(lm, it, now);
		if (last && last->type == MM_JSON_OBJECT && last->n > 0 && !lm->closing) {
			klease_scan(lm, last);
			break;
		}
		lm->scanning = 0;
		lm->scans++;
		if (!lm->closing) {
			klease_balance(lm, now);
			/* Children waiting for a parent another worker ended. */
			mm_kin_kick(lm->ks);
		}
		break;
	}
	case OP_TAKE:
		if (a->status == 0) {
			sh->l_counter = r->counter;
			sh->l_changed_ms = sh->l_renewed_ms = now;
			/* The checkpoint follows once the shard's stored
			 * position is read: it may be ahead (a crash between a
			 * flush and its checkpoint). */
			klease_taken(lm, sh);
			mm_kin_kick(lm->ks);
		}
		break;
	case OP_RENEW:
	case OP_CHECKPOINT:
		if (a->status == 0) {
			sh->l_counter = r->counter;
			sh->l_changed_ms = sh->l_renewed_ms = now;
			if (r->op == OP_RENEW) {
				lm->renewals++;
			} else {
				lm->checkpoints++;
				snprintf(sh->l_checkpoint, sizeof(sh->l_checkpoint), "%s", r->cp);
				if (strcmp(r->cp, "SHARD_END") == 0) {
					/* Done with it: released by that same write,
					 * and never renewed again. */
					sh->l_owner[0] = '\0';
					sh->l_ended = 1;
					sh->owned = 0;
				}
			}
		} else if (cond) {
			klease_lost(lm, sh, "a conditional write failed");
		}
		if (sh->owned && !lm->closing)
			klease_after_write(lm, sh);
		break;
	case OP_RELEASE:
		if (a->status == 0 && sh->handoff) {
			/* Handed over: the asker takes it as a free lease. */
			sh->l_counter = r->counter;
			sh->l_changed_ms = now;
			sh->l_owner[0] = '\0';
			sh->l_handoff[0] = '\0';
			snprintf(sh->l_checkpoint, sizeof(sh->l_checkpoint), "%s", r->cp);
			sh->l_handed_ms = now;
			lm->handoffs++;
			mm_log(MM_LOG_INFO, "kinesis",
			       "%s: handed the lease of %s over (checkpoint %s)", lm->ks->base.id,
			       sh->id, r->cp);
			mm_kin_drop(lm->ks, sh);
		} else if (a->status != 0 && sh->owned && cond) {
			klease_lost(lm, sh, "a conditional write failed");
		} else if (a->status != 0 && sh->owned && sh->handoff) {
			sh->release_wanted = 1; /* again with the next renewal */
		}
		break;
	case OP_HANDOFF:
		if (a->status == 0)
			snprintf(sh->l_handoff, sizeof(sh->l_handoff), "%s", lm->worker);
		break;
	}
	free(r);
	if (lm->closing)
		klease_release_all(lm);
}

static void klease_send(mm_klease_t *lm, int op, mm_kshard_t *sh, const char *target)
{
	mm_kin_t *ks = lm->ks;
	klease_req_t *r = calloc(1, sizeof(*r));
	mm_buf_t *b = &lm->body;
	int rc;

	if (r == NULL) {
		lm->failures++;
		return;
	}
	r->lm = lm;
	r->op = op;
	r->sh = sh;
	if (sh)
		r->counter = sh->l_counter + 1;
	rc = put_head(lm, b, op == OP_PUT || op == OP_SCAN || op == OP_DESCRIBE ||
				     op == OP_CREATE_TABLE ? NULL : sh);
	switch (op) {
	case OP_DESCRIBE:
		break;
	case OP_CREATE_TABLE:
		rc = rc ? rc : mm_buf_printf(b, ",\"AttributeDefinitions\":[{\"AttributeName\":"
					     "\"leaseKey\",\"AttributeType\":\"S\"}],\"KeySchema\":"
					     "[{\"AttributeName\":\"leaseKey\",\"KeyType\":\"HASH\"}],"
					     "\"BillingMode\":\"PAY_PER_REQUEST\"");
		break;
	case OP_PUT:
		rc = rc ? rc : mm_buf_printf(b, ",\"Item\":{");
		rc = rc ? rc : put_s(b, "leaseKey", sh->id);
		rc = rc ? rc : mm_buf_printf(b, ",");
		rc = rc ? rc : put_s(b, "checkpoint", klease_initial(ks, sh));
		rc = rc ? rc : mm_buf_printf(b, ",\"leaseCounter\":{\"N\":\"0\"},"
					     "\"checkpointSubSequenceNumber\":{\"N\":\"0\"},"
					     "\"ownerSwitchesSinceCheckpoint\":{\"N\":\"0\"}");
		if (rc == 0 && (sh->parent[0] || sh->adjacent[0])) {
			rc = mm_buf_printf(b, ",\"parentShardId\":{\"SS\":[");
			rc = rc ? rc : mm_json_quote(sh->parent[0] ? sh->parent : sh->adjacent,
						     strlen(sh->parent[0] ? sh->parent : sh->adjacent), b);
			if (rc == 0 && sh->parent[0] && sh->adjacent[0]) {
				rc = mm_buf_printf(b, ",");
				rc = rc ? rc : mm_json_quote(sh->adjacent, strlen(sh->adjacent), b);
			}
			rc = rc ? rc : mm_buf_printf(b, "]}");
		}
		rc = rc ? rc : mm_buf_printf(b, "},\"ConditionExpression\":"
					     "\"attribute_not_exists(leaseKey)\"");
		break;
	case OP_TAKE:
		rc = rc ? rc : mm_buf_printf(b, ",\"UpdateExpression\":\"SET leaseOwner = :me, "
					     "leaseCounter = :n, ownerSwitchesSinceCheckpoint = "
					     "if_not_exists(ownerSwitchesSinceCheckpoint, :zero) + "
					     ":one REMOVE handoffTo\",\"ConditionExpression\":"
					     "\"leaseCounter = :c\"");
		rc = rc ? rc : put_owner_values(lm, b, sh, r->counter);
		rc = rc ? rc : mm_buf_printf(b, ",\":zero\":{\"N\":\"0\"},\":one\":{\"N\":\"1\"}}");
		break;
	case OP_RENEW:
		rc = rc ? rc : mm_buf_printf(b, ",\"UpdateExpression\":\"SET leaseCounter = :n\","
					     "\"ConditionExpression\":\"leaseOwner = :me AND "
					     "leaseCounter = :c\"");
		rc = rc ? rc : put_owner_values(lm, b, sh, r->counter);
		rc = rc ? rc : mm_buf_printf(b, "}");
		break;
	case OP_CHECKPOINT:
	case OP_RELEASE:
		snprintf(r->cp, sizeof(r->cp), "%s",
			 sh->end_durable ? "SHARD_END"
			 : sh->durable[0] ? sh->durable
			 : sh->l_checkpoint[0] ? sh->l_checkpoint : klease_initial(ks, sh));
		rc = rc ? rc : mm_buf_printf(b, ",\"UpdateExpression\":\"SET leaseCounter = :n, "
					     "checkpoint = :cp, checkpointSubSequenceNumber = :zero, "
					     "ownerSwitchesSinceCheckpoint = :zero%s\","
					     "\"ConditionExpression\":\"leaseOwner = :me AND "
					     "leaseCounter = :c\"",
					     op == OP_RELEASE || strcmp(r->cp, "SHARD_END") == 0
						     ? " REMOVE leaseOwner, handoffTo" : "");
		rc = rc ? rc : put_owner_values(lm, b, sh, r->counter);
		rc = rc ? rc : mm_buf_printf(b, ",\":zero\":{\"N\":\"0\"},");
		rc = rc ? rc : put_s(b, ":cp", r->cp);
		rc = rc ? rc : mm_buf_printf(b, "}");
		break;
	case OP_HANDOFF:
		/* The counter is left alone: the owner renews on until it hands
		 * the lease over. */
		rc = rc ? rc : mm_buf_printf(b, ",\"UpdateExpression\":\"SET handoffTo = :me\","
					     "\"ConditionExpression\":\"leaseOwner = :o AND "
					     "attribute_not_exists(handoffTo)\","
					     "\"ExpressionAttributeValues\":{");
		rc = rc ? rc : put_s(b, ":me", lm->worker);
		rc = rc ? rc : mm_buf_printf(b, ",");
		rc = rc ? rc : put_s(b, ":o", sh->l_owner);
		rc = rc ? rc : mm_buf_printf(b, "}");
		break;
	default:
		break;
	}
	rc = rc ? rc : mm_buf_printf(b, "}");
	rc = rc ? rc : mm_kapi_call(lm->api, target, b->p, b->len, klease_on_answer, r);
	if (rc) {
		lm->failures++;
		mm_log(MM_LOG_WARN, "kinesis", "%s: lease table %s: %s: %s", ks->base.id, lm->table,
		       target, mm_diag_msg());
		free(r);
		return;
	}
	if (sh)
		sh->l_busy = 1;
	r->next = lm->reqs;
	lm->reqs = r;
	lm->inflight++;
}

static void klease_scan(mm_klease_t *lm, const mm_jnode_t *start)
{
	mm_buf_t *b = &lm->body;
	klease_req_t *r;
	int rc;

	/* The continuation key is copied into the body before the answer
	 * tree that holds it is reused. */
	rc = put_head(lm, b, NULL);
	rc = rc ? rc : mm_buf_printf(b, ",\"ConsistentRead\":true");
	if (rc == 0 && start) {
		const char *key = attr_s(start, "leaseKey");

		rc = mm_buf_printf(b, ",\"ExclusiveStartKey\":{");
		rc = rc ? rc : put_s(b, "leaseKey", key ? key : "");
		rc = rc ? rc : mm_buf_printf(b, "}");
	}
	rc = rc ? rc : mm_buf_printf(b, "}");
	if (rc || (r = calloc(1, sizeof(*r))) == NULL) {
		lm->scanning = 0;
		return;
	}
	r->lm = lm;
	r->op = OP_SCAN;
	if (mm_kapi_call(lm->api, "Scan", b->p, b->len, klease_on_answer, r) != 0) {
		free(r);
		lm->scanning = 0;
		return;
	}
	lm->scanning = 1;
	r->next = lm->reqs;
	lm->reqs = r;
	lm->inflight++;
}

/* After a write of ours: a release or a checkpoint that became due
 * meanwhile. */
static void klease_after_write(mm_klease_t *lm, mm_kshard_t *sh)
{
	if (sh->owned && !sh->l_busy && sh->release_wanted) {
		sh->release_wanted = 0;
		klease_send(lm, OP_RELEASE, sh, "UpdateItem");
		return;
	}
	if (sh->owned && !sh->l_busy &&
	    ((sh->end_durable && !sh->l_ended) ||
	     (sh->durable[0] && mm_kin_seq_cmp(sh->durable, sh->l_checkpoint) != 0 &&
	      (sh->l_checkpoint[0] < '0' || sh->l_checkpoint[0] > '9' ||
	       mm_kin_seq_cmp(sh->durable, sh->l_checkpoint) > 0))))
		klease_send(lm, OP_CHECKPOINT, sh, "UpdateItem");
}

void mm_klease_durable(mm_klease_t *lm, mm_kshard_t *sh)
{
	if (lm->ready && !lm->closing)
		klease_after_write(lm, sh);
}

void mm_klease_release(mm_klease_t *lm, mm_kshard_t *sh)
{
	if (!lm->ready || lm->closing || !sh->owned)
		return;
	sh->release_wanted = 1;
	klease_after_write(lm, sh);
}

void mm_klease_sync(mm_klease_t *lm)
{
	mm_kin_t *ks = lm->ks;

	if (!lm->ready || lm->closing) {
		lm->sync_wanted = 1;
		return;
	}
	lm->sync_wanted = 0;
	for (size_t i = 0; i < ks->nshards; i++) {
		mm_kshard_t *sh = ks->shards[i];

		if (sh->listed && !sh->l_exists && !sh->l_busy)
			klease_send(lm, OP_PUT, sh, "PutItem");
	}
	klease_arm(lm, 0);
}

/* Every lease_time / 3: renew what we own, then scan and balance. */
static void klease_on_timer(uv_timer_t *t)
{
	mm_klease_t *lm = t->data;
	mm_kin_t *ks = lm->ks;
	int64_t now = mm_kin_now_ms();

	if (lm->closing)
		return;
	if (!lm->ready) {
		klease_send(lm, OP_DESCRIBE, NULL, "DescribeTable");
		return;
	}
	if (lm->sync_wanted)
		mm_klease_sync(lm);
	for (size_t i = 0; i < ks->nshards; i++) {
		mm_kshard_t *sh = ks->shards[i];

		if (!sh->owned)
			continue;
		/* Unable to renew for a whole lease time: another worker may
		 * have taken it over already. */
		if (now - sh->l_renewed_ms >= lm->lease_ms) {
			klease_lost(lm, sh, "not renewed within the lease time");
			continue;
		}
		if (!sh->l_busy && sh->release_wanted)
			klease_after_write(lm, sh);
		else if (!sh->l_busy)
			klease_send(lm, OP_RENEW, sh, "UpdateItem");
	}
	if (!lm->scanning)
		klease_scan(lm, NULL);
	klease_arm(lm, (uint64_t)(lm->lease_ms / 3 > 0 ? lm->lease_ms / 3 : 1));
}

int mm_klease_parent_ended(mm_klease_t *lm, const char *id)
{
	mm_kshard_t *p = mm_kin_shard_find(lm->ks, id);

	return p != NULL && p->l_ended;
}

int mm_klease_settled(mm_klease_t *lm, const mm_kshard_t *sh)
{
	return sh->l_ended || (sh->l_owner[0] && strcmp(sh->l_owner, lm->worker) != 0 &&
			       klease_live(lm, sh, mm_kin_now_ms()));
}

int mm_klease_status(mm_klease_t *lm, mm_buf_t *out)
{
	size_t held = 0;
	int rc;

	for (size_t i = 0; i < lm->ks->nshards; i++)
		held += lm->ks->shards[i]->owned;
	rc = mm_buf_printf(out, ",\"leases\":{\"table\":");
	rc = rc ? rc : mm_json_quote(lm->table, strlen(lm->table), out);
	rc = rc ? rc : mm_buf_printf(out, ",\"worker\":");
	rc = rc ? rc : mm_json_quote(lm->worker, strlen(lm->worker), out);
	rc = rc ? rc : mm_buf_printf(out, ",\"ready\":%s,\"held\":%zu,\"takes\":%" PRIu64
				     ",\"steals\":%" PRIu64 ",\"handoffs\":%" PRIu64
				     ",\"losses\":%" PRIu64
				     ",\"renewals\":%" PRIu64 ",\"checkpoints\":%" PRIu64
				     ",\"failures\":%" PRIu64 ",\"scans\":%" PRIu64 "}",
				     lm->ready ? "true" : "false", held, lm->takes, lm->steals,
				     lm->handoffs, lm->losses, lm->renewals, lm->checkpoints,
				     lm->failures, lm->scans);
	return rc;
}

int mm_klease_open(mm_kin_t *ks, mm_klease_t **out)
{
	mm_klease_t *lm = calloc(1, sizeof(*lm));
	const char *endpoint = ks->cfg.lease_endpoint;
	mm_kapi_config_t acfg;
	char host[64] = "host", worker[160];
	uint64_t rnd = 0;
	int rc;

	if (lm == NULL)
		return mm_diag_set(MM_ENOMEM, "kinesis: out of memory");
	lm->ks = ks;
	lm->lease_ms = ks->cfg.lease_ms;
	if (lm->lease_ms < 300) {
		rc = mm_diag_set(MM_EINVAL, "kinesis: 'lease_time' must be at least 300ms");
		goto fail;
	}
	if (ks->cfg.worker && ks->cfg.worker[0]) {
		snprintf(worker, sizeof(worker), "%s", ks->cfg.worker);
	} else {
		/* A new identity at every start: a restarted worker must not
		 * renew the leases its previous life held without reading them. */
		gethostname(host, sizeof(host) - 1);
		if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			rnd = (uint64_t)mm_kin_now_ms();
		snprintf(worker, sizeof(worker), "%s:%d:%08" PRIx64, host, (int)getpid(),
			 rnd & 0xffffffffu);
	}
	lm->table = strdup(ks->cfg.lease_table);
	lm->worker = strdup(worker);
	if (lm->table == NULL || lm->worker == NULL) {
		rc = mm_diag_set(MM_ENOMEM, "kinesis: out of memory");
		goto fail;
	}
	if (endpoint == NULL || endpoint[0] == '\0')
		endpoint = getenv("MURMUR_DYNAMODB_ENDPOINT");
	acfg = (mm_kapi_config_t){.who = "kinesis leases", .service = "dynamodb",
				  .target = "DynamoDB_20120810",
				  .content_type = "application/x-amz-json-1.0",
				  .endpoint = endpoint, .region = ks->cfg.region};
	if ((rc = mm_kapi_open(ks->base.loop, &acfg, &lm->api)))
		goto fail;
	uv_timer_init(ks->base.loop, &lm->timer);
	lm->timer.data = lm;
	*out = lm;
	return 0;
fail:
	free(lm->table);
	free(lm->worker);
	free(lm);
	return rc;
}

void mm_klease_start(mm_klease_t *lm)
{
	mm_log(MM_LOG_INFO, "kinesis", "%s: worker %s, lease table %s", lm->ks->base.id,
	       lm->worker, lm->table);
	klease_arm(lm, 0);
}

static void klease_free(mm_klease_t *lm)
{
	while (lm->reqs) {
		klease_req_t *r = lm->reqs;

		lm->reqs = r->next;
		free(r);
	}
	mm_buf_free(&lm->body);
	free(lm->table);
	free(lm->worker);
	free(lm);
}

static void klease_on_api_closed(void *arg)
{
	mm_klease_t *lm = arg;
	void (*done)(void *) = lm->done;
	void *done_arg = lm->done_arg;

	klease_free(lm);
	done(done_arg);
}

static void klease_on_timer_closed(uv_handle_t *h)
{
	mm_klease_t *lm = h->data;

	mm_kapi_close(lm->api, klease_on_api_closed, lm);
}

static void klease_finish(mm_klease_t *lm)
{
	uv_close((uv_handle_t *)&lm->timer, klease_on_timer_closed);
}

static void klease_on_deadline(uv_timer_t *t)
{
	mm_klease_t *lm = t->data;

	mm_log(MM_LOG_WARN, "kinesis", "%s: leases not all released in time; they expire after "
	       "%" PRId64 " ms", lm->ks->base.id, lm->lease_ms);
	lm->closing = 2;
	klease_finish(lm);
}

/* Once our writes in flight have answered: one release per lease held,
 * then close when they have answered too. */
static void klease_release_all(mm_klease_t *lm)
{
	mm_kin_t *ks = lm->ks;

	if (lm->closing != 1 || lm->inflight > 0)
		return;
	for (size_t i = 0; i < ks->nshards; i++) {
		mm_kshard_t *sh = ks->shards[i];

		if (sh->owned) {
			sh->owned = 0;
			klease_send(lm, OP_RELEASE, sh, "UpdateItem");
		}
	}
	if (lm->inflight > 0)
		return;
	uv_timer_stop(&lm->timer);
	lm->closing = 2;
	klease_finish(lm);
}

void mm_klease_close(mm_klease_t *lm, void (*done)(void *arg), void *arg)
{
	lm->done = done;
	lm->done_arg = arg;
	lm->closing = 1;
	if (!lm->ready) {
		lm->closing = 2;
		uv_timer_stop(&lm->timer);
		klease_finish(lm);
		return;
	}
	/* Bounded: a table that does not answer leaves the leases to expire. */
	uv_timer_start(&lm->timer, klease_on_deadline, 5000, 0);
	klease_release_all(lm);
}
