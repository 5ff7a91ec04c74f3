/*
 * dynamodb_claims.c: the claim protocol of dedup on a shared DynamoDB table
 * (dynamodb.h states it; doc/dynamodb.md gives the whole picture).
 *
 * A claim is the item ("<ns>#<id>", sk -1) with st "P" (pending), own (the
 * owner), fl (the tag "<writer>#<seq>" of the flush that will commit it), ls
 * (lease end, ms) and ttl. One claim is one conditional PutItem: it takes a
 * free or expired id, or ours again. A failed condition is classified with a
 * GetItem: confirmed ("C") is a duplicate; pending under another owner is a
 * duplicate if that flush's commit record exists (the effect is durable and
 * only its confirmation is missing), busy while its lease lasts, and taken
 * over (a PutItem conditional on the claim being exactly the one read) once
 * the lease has run out. Confirm, release and renew are conditional on our
 * ownership.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../codec/json.h"
#include "../lib/error.h"
#include "dynamodb_impl.h"

/* This writer's tag of its next flush with dedup claims: "<writer>#<seq>". */
int mm_ddb_tag_of(const mm_ddb_t *st, char *tag, size_t n)
{
	return snprintf(tag, n, "%s#%" PRIu64, st->writer_attr + 2, st->commit_seq);
}

/* A partition key of the protocol's own items: prefix, then n bytes of s. */
static int protocol_pk(mm_buf_t *pk, const char *prefix, const char *s, size_t n)
{
	int rc;

	pk->len = 0;
	if ((rc = mm_ddb_put_str(pk, prefix)))
		return rc;
	return mm_buf_append(pk, s, n);
}

/* The partition key of the commit record of the flush tagged tag (len n). */
int mm_ddb_commit_pk(mm_buf_t *pk, const char *tag, size_t n)
{
	return protocol_pk(pk, "#commit#", tag, n);
}

/* The tag of this writer's next flush with dedup marks: "<writer>#<seq>". */
static int put_tag(mm_ddb_t *st, mm_buf_t *b)
{
	char tag[64];
	int n = mm_ddb_tag_of(st, tag, sizeof(tag));

	return mm_json_quote(tag, (size_t)n, b);
}

static int build_claim(mm_ddb_t *st, ddb_slot_t *sl)
{
	ddb_job_t *job = sl->job;
	mm_claim_t *c = &job->claims[sl->item];
	mm_buf_t *b = &sl->body;
	int64_t now = mm_ddb_now_ms();
	int rc;

	/* sl->kind says which: K_CLAIM or K_STEAL (set by the caller). A won
	 * claim's lease_until_ms is its own lease, which renewals look at. */
	sl->target = "PutItem";
	c->lease_until_ms = now + job->lease_ms;
	if ((rc = mm_ddb_make_pk(&sl->pk, job->ns->name, c->id, c->len)) ||
	    (rc = mm_ddb_put_item_start(st, b, &sl->pk, DDB_SK_MARK)) ||
	    (rc = PUT(b, ",\"st\":{\"S\":\"P\"},\"own\":{\"S\":")) ||
	    (rc = mm_json_quote(st->owner, strlen(st->owner), b)) || (rc = PUT(b, "},\"fl\":{\"S\":")) ||
	    (rc = put_tag(st, b)) || (rc = PUT(b, "},\"ls\":")) ||
	    (rc = mm_ddb_put_n(b, now + job->lease_ms)) || (rc = PUT(b, ",\"ttl\":")) ||
	    (rc = mm_ddb_put_n(b, ttl_of(now + (job->ttl_ms > job->lease_ms ? job->ttl_ms : job->lease_ms)))))
		return rc;
	/* A plain claim takes a free id (or ours again); a steal replaces exactly
	 * the pending claim that was read, once its lease has run out and its
	 * flush is known not to have committed. */
	if (sl->kind == K_STEAL) {
		if ((rc = PUT(b, "},\"ConditionExpression\":\"#own = :old AND #st = :p AND ")) ||
		    (rc = sl->held_has_ls ? PUT(b, "#ls = :ls\"") : PUT(b, "attribute_not_exists(#ls)\"")) ||
		    (rc = PUT(b, ",\"ExpressionAttributeNames\":{\"#own\":\"own\",\"#st\":\"st\","
				 "\"#ls\":\"ls\"},\"ExpressionAttributeValues\":{\":old\":{\"S\":")) ||
		    (rc = mm_json_quote((const char *)sl->val.p, sl->val.len, b)) ||
		    (rc = PUT(b, "},\":p\":{\"S\":\"P\"}")) ||
		    (sl->held_has_ls && ((rc = PUT(b, ",\":ls\":")) || (rc = mm_ddb_put_n(b, sl->held_ls)))))
			return rc;
		return PUT(b, "},\"ReturnValues\":\"ALL_OLD\"}");
	}
	if ((rc = PUT(b, "},\"ConditionExpression\":\"attribute_not_exists(pk) OR (#own = :me AND "
			 "#st = :p AND #fl = :fl) OR #t < :nows\","
			 "\"ExpressionAttributeNames\":{\"#own\":\"own\",\"#st\":\"st\",\"#fl\":\"fl\","
			 "\"#t\":\"ttl\"},\"ExpressionAttributeValues\":{\":me\":{\"S\":")) ||
	    (rc = mm_json_quote(st->owner, strlen(st->owner), b)) ||
	    (rc = PUT(b, "},\":fl\":{\"S\":")) || (rc = put_tag(st, b)) ||
	    (rc = PUT(b, "},\":p\":{\"S\":\"P\"},\":nows\":")) || (rc = mm_ddb_put_n(b, now / 1000)))
		return rc;
	return PUT(b, "},\"ReturnValues\":\"ALL_OLD\"}");
}

/* Confirm, release or renew one of our claims: conditional on owning it. */
static int build_owned(mm_ddb_t *st, ddb_slot_t *sl)
{
	ddb_job_t *job = sl->job;
	const mm_claim_t *c = &job->claims[sl->item];
	mm_buf_t *b = &sl->body;
	int64_t now = mm_ddb_now_ms();
	int rc;

	sl->target = job->kind == J_RELEASE ? "DeleteItem" : "UpdateItem";
	sl->kind = job->kind == J_RELEASE ? K_RELEASE : job->kind == J_RENEW ? K_RENEW : K_CONFIRM;
	if ((rc = mm_ddb_make_pk(&sl->pk, job->ns->name, c->id, c->len)) ||
	    (rc = mm_ddb_put_head(st, b, &sl->pk, DDB_SK_MARK)))
		return rc;
	switch (sl->kind) {
	case K_RELEASE:
		rc = PUT(b, ",\"ConditionExpression\":\"#own = :me AND #st = :p\","
			    "\"ExpressionAttributeNames\":{\"#own\":\"own\",\"#st\":\"st\"},"
			    "\"ExpressionAttributeValues\":{\":p\":{\"S\":\"P\"},\":me\":{\"S\":");
		break;
	case K_RENEW:
		rc = PUT(b, ",\"UpdateExpression\":\"SET #ls = :ls\","
			    "\"ConditionExpression\":\"#own = :me AND #st = :p\","
			    "\"ExpressionAttributeNames\":{\"#own\":\"own\",\"#st\":\"st\",\"#ls\":\"ls\"},"
			    "\"ExpressionAttributeValues\":{\":p\":{\"S\":\"P\"},\":me\":{\"S\":");
		break;
	default:
		rc = PUT(b, ",\"UpdateExpression\":\"SET #st = :c, #t = :t REMOVE #ls\","
			    "\"ConditionExpression\":\"#own = :me\","
			    "\"ExpressionAttributeNames\":{\"#own\":\"own\",\"#st\":\"st\",\"#t\":\"ttl\","
			    "\"#ls\":\"ls\"},\"ExpressionAttributeValues\":{\":c\":{\"S\":\"C\"},\":me\":{\"S\":");
		break;
	}
	if (rc || (rc = mm_json_quote(st->owner, strlen(st->owner), b)) || (rc = PUT(b, "}")))
		return rc;
	if (sl->kind == K_CONFIRM &&
	    ((rc = PUT(b, ",\":t\":")) || (rc = mm_ddb_put_n(b, ttl_of(now + job->ttl_ms)))))
		return rc;
	if (sl->kind == K_RENEW &&
	    ((rc = PUT(b, ",\":ls\":")) || (rc = mm_ddb_put_n(b, now + job->lease_ms))))
		return rc;
	return PUT(b, "}}");
}

/* The partition key of an owner's lease item: "#owner#<owner>". */
static int owner_pk(mm_buf_t *pk, const char *owner, size_t n)
{
	return protocol_pk(pk, "#owner#", owner, n);
}

/*
 * The owner's lease item: SET ls = now + lease (and a ttl a day later, so
 * items of workers long gone are deleted), returning what it held. One
 * request renews every claim of the owner.
 */
static int build_lease(mm_ddb_t *st, ddb_slot_t *sl)
{
	ddb_job_t *job = sl->job;
	mm_buf_t *b = &sl->body;
	int64_t until = mm_ddb_now_ms() + job->lease_ms;
	int rc;

	sl->kind = K_LEASE;
	sl->target = "UpdateItem";
	if ((rc = owner_pk(&sl->pk, st->owner, strlen(st->owner))) ||
	    (rc = mm_ddb_put_head(st, b, &sl->pk, DDB_SK_OWNER)) ||
	    (rc = PUT(b, ",\"UpdateExpression\":\"SET #ls = :ls, #t = :t\",\"ExpressionAttributeNames\":"
			 "{\"#ls\":\"ls\",\"#t\":\"ttl\"},\"ExpressionAttributeValues\":{\":ls\":")) ||
	    (rc = mm_ddb_put_n(b, until)) || (rc = PUT(b, ",\":t\":")) ||
	    (rc = mm_ddb_put_n(b, ttl_of(until + 86400000))))
		return rc;
	return PUT(b, "},\"ReturnValues\":\"ALL_OLD\"}");
}

int mm_ddb_start_claim_item(ddb_slot_t *sl)
{
	ddb_job_t *job = sl->job;
	int rc;

	sl->kind = K_CLAIM;
	if (job->kind == J_CLAIM)
		rc = build_claim(sl->st, sl);
	else if (job->kind == J_LEASE)
		rc = build_lease(sl->st, sl);
	else
		rc = build_owned(sl->st, sl);
	return rc ? rc : mm_ddb_slot_send(sl);
}

/* Claims the slot's id again after it changed under us. */
static void claim_retry(ddb_slot_t *sl)
{
	int rc;

	if (++sl->conflicts > DDB_CAS_MAX) {
		mm_ddb_slot_finish(sl, MM_ESTORE, "the claim kept changing under us");
		return;
	}
	sl->kind = K_CLAIM;
	if ((rc = build_claim(sl->st, sl)) || (rc = mm_ddb_slot_send(sl)))
		mm_ddb_slot_finish(sl, rc, NULL);
}

/* Takes over the claim read into the slot: a PutItem conditional on it being
 * exactly what was read (owner, pending, lease). */
static void claim_steal(ddb_slot_t *sl)
{
	int rc;

	sl->kind = K_STEAL;
	sl->attempts = 0;
	if ((rc = build_claim(sl->st, sl)) || (rc = mm_ddb_slot_send(sl)))
		mm_ddb_slot_finish(sl, rc, NULL);
}

static void claim_busy(ddb_slot_t *sl, int64_t until_ms)
{
	mm_claim_t *c = &sl->job->claims[sl->item];

	c->result = MM_CLAIM_BUSY;
	c->lease_until_ms = until_ms;
	mm_ddb_slot_finish(sl, 0, NULL);
}

/*
 * Another owner's claim whose flush has not committed: busy while the
 * claim's own lease lasts; after it, busy while its owner keeps renewing its
 * lease item (a live worker whose flush takes long); taken over only when
 * the owner stopped renewing (it died, or lost the store for a whole lease).
 */
static void claim_pending(ddb_slot_t *sl, int64_t now)
{
	mm_ddb_t *st = sl->st;
	int rc;

	/* Our own owner id on a claim of an earlier flush that never committed:
	 * a previous run of this reader (a fixed `owner`) that died, whose
	 * unfinished flush, if it wrote an intent, the position's roll-forward
	 * has finished before we read. Nobody will commit it: take it back at
	 * once instead of waiting for a lease that we renew ourselves. */
	if (sl->val.len == strlen(st->owner) && memcmp(sl->val.p, st->owner, sl->val.len) == 0) {
		claim_steal(sl);
		return;
	}
	if (sl->held_has_ls && sl->held_ls >= now) {
		claim_busy(sl, sl->held_ls);
		return;
	}
	sl->kind = K_OWNER_GET;
	sl->attempts = 0;
	if ((rc = owner_pk(&sl->pk, (const char *)sl->val.p, sl->val.len)) ||
	    (rc = mm_ddb_build_get(sl->st, sl, &sl->pk, DDB_SK_OWNER)) || (rc = mm_ddb_slot_send(sl)))
		mm_ddb_slot_finish(sl, rc, NULL);
}

/*
 * The owner's lease was renewed. A claim could be taken over only while both
 * its own lease and the owner's had run out: if the owner's lease was absent
 * or over and some claim's own lease is over too, other workers may have
 * taken claims over, and the job turns into per-claim renewals, which find
 * out which (NOT_OWNER). Otherwise every claim is renewed.
 */
static void lease_answer(ddb_slot_t *sl, int64_t now)
{
	ddb_job_t *job = sl->job;
	const mm_jnode_t *old = mm_jnode_get(sl->tree.root, "Attributes");
	int ok = 0, exposed = 0;
	int64_t ls = mm_ddb_attr_i64(old, "ls", &ok);

	for (size_t i = 0; i < job->nclaims; i++)
		exposed |= job->claims[i].lease_until_ms < now;
	if (exposed && !(ok && ls >= now)) {
		sl->st->stats.lease_lapses++;
		job->kind = J_RENEW;
		job->next_item = 0;
		job->nitems = job->nclaims;
	} else {
		for (size_t i = 0; i < job->nclaims; i++)
			job->claims[i].result = MM_CLAIM_RENEWED;
	}
	mm_ddb_slot_finish(sl, 0, NULL);
}

void mm_ddb_claim_answer(ddb_slot_t *sl, int cond)
{
	mm_ddb_t *st = sl->st;
	ddb_job_t *job = sl->job;
	mm_claim_t *c = &job->claims[sl->item];
	const mm_jnode_t *item, *own, *state;
	int64_t now = mm_ddb_now_ms();
	int rc;

	switch (sl->kind) {
	case K_CLAIM:
		if (cond) {
			/* Somebody holds it: read who, to tell a duplicate from a busy id. */
			sl->kind = K_CLAIM_GET;
			sl->attempts = 0;
			if ((rc = mm_ddb_build_get(st, sl, &sl->pk, DDB_SK_MARK)) || (rc = mm_ddb_slot_send(sl)))
				mm_ddb_slot_finish(sl, rc, NULL);
			return;
		}
		item = mm_jnode_get(sl->tree.root, "Attributes");
		own = mm_ddb_attr_s(item, "own");
		c->result = item && own && !mm_ddb_item_expired(item, now) &&
				    !(own->len == strlen(st->owner) && memcmp(own->s, st->owner, own->len) == 0)
			    ? MM_CLAIM_STOLEN
			    : MM_CLAIM_WON;
		mm_ddb_slot_finish(sl, 0, NULL);
		return;
	case K_CLAIM_GET:
		item = mm_jnode_get(sl->tree.root, "Item");
		state = mm_ddb_attr_s(item, "st");
		own = mm_ddb_attr_s(item, "own");
		if (item && state && own && !mm_ddb_item_expired(item, now)) {
			const mm_jnode_t *fl = mm_ddb_attr_s(item, "fl");

			if (state->len == 1 && state->s[0] == 'C') {
				c->result = MM_CLAIM_DUPLICATE;
				mm_ddb_slot_finish(sl, 0, NULL);
				return;
			}
			/* Pending under another owner: remember whose, then ask
			 * whether its flush committed (the effect is durable and
			 * only the confirmation is missing). */
			sl->val.len = 0;
			sl->held_ls = mm_ddb_attr_i64(item, "ls", &sl->held_has_ls);
			if ((rc = mm_buf_append(&sl->val, own->s, own->len))) {
				mm_ddb_slot_finish(sl, rc, NULL);
				return;
			}
			if (fl) {
				sl->kind = K_COMMIT_GET;
				sl->attempts = 0;
				if ((rc = mm_ddb_commit_pk(&sl->pk, fl->s, fl->len)) ||
				    (rc = mm_ddb_build_get(st, sl, &sl->pk, DDB_SK_COMMIT)) || (rc = mm_ddb_slot_send(sl)))
					mm_ddb_slot_finish(sl, rc, NULL);
				return;
			}
			claim_pending(sl, now);
			return;
		}
		/* It changed under us (released, expired): claim again. */
		claim_retry(sl);
		return;
	case K_COMMIT_GET:
		if (mm_jnode_get(sl->tree.root, "Item") != NULL) {
			c->result = MM_CLAIM_DUPLICATE;
			mm_ddb_slot_finish(sl, 0, NULL);
			return;
		}
		claim_pending(sl, now);
		return;
	case K_OWNER_GET: {
		int ok = 0;
		int64_t ls = mm_ddb_attr_i64(mm_jnode_get(sl->tree.root, "Item"), "ls", &ok);

		if (ok && ls >= now)
			claim_busy(sl, ls);
		else
			claim_steal(sl);
		return;
	}
	case K_LEASE:
		lease_answer(sl, now);
		return;
	case K_STEAL:
		if (cond) {
			/* It moved on (confirmed, renewed, taken): look again. */
			claim_retry(sl);
			return;
		}
		c->result = MM_CLAIM_STOLEN;
		mm_ddb_slot_finish(sl, 0, NULL);
		return;
	case K_COMMIT:
		break;
	case K_CONFIRM:
		c->result = cond ? MM_CLAIM_NOT_OWNER : MM_CLAIM_CONFIRMED;
		mm_ddb_slot_finish(sl, 0, NULL);
		return;
	case K_RELEASE:
		c->result = cond ? MM_CLAIM_NOT_OWNER : MM_CLAIM_RELEASED;
		mm_ddb_slot_finish(sl, 0, NULL);
		return;
	case K_RENEW:
		c->result = cond ? MM_CLAIM_NOT_OWNER : MM_CLAIM_RENEWED;
		mm_ddb_slot_finish(sl, 0, NULL);
		return;
	}
}

static int claim_job(mm_store_t *base, int kind, const mm_ns_t *ns, mm_claim_t *ids,
		     size_t n, int64_t lease_ms, int64_t ttl_ms, mm_store_cb cb, void *arg)
{
	mm_ddb_t *st = mm_ddb_of(base);
	ddb_job_t *job;
	size_t i;

	if (st == NULL)
		return mm_diag_set(MM_EINVAL, "dynamodb: not a DynamoDB store");
	if (st->read_only)
		return mm_diag_set(MM_ENOTSUP, "dynamodb: claims on a store opened read-only");
	if (ns == NULL || ns->name == NULL || (n && ids == NULL) || cb == NULL || lease_ms < 0 ||
	    ttl_ms < 0)
		return mm_diag_set(MM_EINVAL, "dynamodb: claim needs a namespace, ids and a callback");
	for (i = 0; i < n; i++) {
		if (ids[i].id == NULL || ids[i].len < 1 || ids[i].len > 1024)
			return mm_diag_set(MM_EINVAL, "dynamodb: claim id %zu must have 1..1024 bytes",
					   i);
		ids[i].result = 0;
		/* A lease renewal reads each claim's own lease (lease_answer). */
		if (kind != J_LEASE)
			ids[i].lease_until_ms = 0;
	}
	job = calloc(1, sizeof(*job));
	if (job == NULL)
		return mm_diag_set(MM_ENOMEM, "dynamodb: cannot allocate a claim");
	job->kind = kind;
	job->cb = cb;
	job->arg = arg;
	job->t0 = uv_hrtime();
	job->ns = ns;
	job->claims = ids;
	job->nclaims = n;
	/* A lease renewal is one request for all the ids (the owner's item). */
	job->nitems = kind == J_LEASE ? (n > 0) : n;
	job->lease_ms = lease_ms;
	job->ttl_ms = ttl_ms;
	job->now_ms = mm_ddb_now_ms();
	mm_ddb_enqueue(st, job);
	return 0;
}

int mm_ddb_claim(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		 int64_t lease_ms, int64_t ttl_ms, mm_store_cb cb, void *arg)
{
	return claim_job(st, J_CLAIM, ns, ids, n, lease_ms, ttl_ms, cb, arg);
}

int mm_ddb_confirm(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		   int64_t ttl_ms, mm_store_cb cb, void *arg)
{
	return claim_job(st, J_CONFIRM, ns, ids, n, 0, ttl_ms, cb, arg);
}

int mm_ddb_release(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		   mm_store_cb cb, void *arg)
{
	return claim_job(st, J_RELEASE, ns, ids, n, 0, 0, cb, arg);
}

int mm_ddb_renew(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		 int64_t lease_ms, mm_store_cb cb, void *arg)
{
	return claim_job(st, J_RENEW, ns, ids, n, lease_ms, 0, cb, arg);
}

int mm_ddb_vt_claim(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
			int64_t ttl_ms, mm_store_cb cb, void *arg)
{
	return mm_ddb_claim(st, ns, ids, n, st->lease_ms, ttl_ms, cb, arg);
}

int mm_ddb_vt_renew(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
			mm_store_cb cb, void *arg)
{
	return claim_job(st, J_LEASE, ns, ids, n, st->lease_ms, 0, cb, arg);
}
