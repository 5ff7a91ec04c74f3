/*
 * dynamodb_apply.c: apply() of the DynamoDB store: a flush's deltas merged
 * into their items, then its commit record and dedup marks, then its source
 * positions (the design and guarantees are at the top of dynamodb.c).
 *
 * An apply is one job of the scheduler whose items change with its phase:
 * the flush intent's chunks and the positions' pointers to it
 * (dynamodb_intent.c), deltas (sums, counts, min and max one request each; the other monoids
 * read-merge-written in chunks read with one BatchGetItem), the commit record
 * (one PutItem when the flush carries claimed ids), the marks of unclaimed
 * ids, the positions. Each phase starts when the previous one is entirely
 * durable. Every delta that becomes durable is flagged in f->delta_done (and
 * every mark in f->mark_done), so a retried flush skips them, and the replay
 * token recognises a write whose answer was lost.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../codec/json.h"
#include "../lib/log.h"
#include "../lib/error.h"
#include "../lib/text.h"
#include "dynamodb_impl.h"

/*
 * UpdateItem ADD for sum/count. Every DDB_PRUNE_EVERY-th write (the first of
 * a store included) asks for the item back (ALL_NEW) to find stale replay
 * tokens to remove; the others need no answer, which keeps requests and
 * their parsing cheap. The members come in the order of how often they
 * change: those of every write of a store (table, expressions, attribute
 * names), then those of the flush (its sequence number, the bucket's expiry
 * and sort key, mostly one day's), then the delta and the key's entity. The
 * signer hashes the body and resumes from its memo of the last body's first
 * 64-byte blocks where they are equal: four of a page_views body's six.
 */
static int build_add(mm_ddb_t *st, ddb_slot_t *sl, const mm_delta_t *d, uint64_t seq)
{
	const ddb_job_t *job = sl->job;
	mm_buf_t *b = &sl->body;
	char num[64];
	int rc, ttl = has_ttl(d->expire_ms);

	if ((rc = mm_ddb_state_number(d->ns->m, d->state, &sl->val, num, sizeof(num))) ||
	    (rc = mm_ddb_make_pk(&sl->pk, d->ns->name, d->key.entity, d->key.len)) ||
	    (rc = mm_ddb_put_table(st, b)) ||
	    (rc = PUT(b, ",\"UpdateExpression\":\"ADD #v :d SET #w = :s")) ||
	    (ttl && (rc = PUT(b, ", #t = :t"))) ||
	    (rc = PUT(b, "\",\"ConditionExpression\":\"attribute_not_exists(#w) OR #w < :s\""
			 ",\"ExpressionAttributeNames\":{\"#v\":\"v\",\"#w\":\"")) ||
	    (rc = mm_ddb_put_str(b, job->writer_attr)) || (rc = PUT(b, "\"")) ||
	    (ttl && (rc = PUT(b, ",\"#t\":\"ttl\""))) ||
	    (rc = PUT(b, "},\"ExpressionAttributeValues\":{\":s\":")) ||
	    (rc = mm_ddb_put_n(b, (int64_t)seq)) ||
	    (ttl && ((rc = PUT(b, ",\":t\":")) || (rc = mm_ddb_put_n(b, ttl_of(d->expire_ms))))) ||
	    (rc = PUT(b, ",\":d\":{\"N\":\"")) || (rc = mm_ddb_put_str(b, num)) ||
	    (rc = PUT(b, "\"}},\"Key\":{\"sk\":")) || (rc = mm_ddb_put_n(b, d->key.bucket)) ||
	    (rc = PUT(b, ",\"pk\":{\"S\":")) ||
	    (rc = mm_json_quote((const char *)sl->pk.p, sl->pk.len, b)))
		return rc;
	if (st->adds++ % DDB_PRUNE_EVERY == 0)
		return PUT(b, "}},\"ReturnValues\":\"ALL_NEW\"}");
	return PUT(b, "}}}");
}

/* Min/max, with the constant members first as in build_add. */
static int build_minmax(mm_ddb_t *st, ddb_slot_t *sl, const mm_delta_t *d)
{
	mm_buf_t *b = &sl->body;
	char num[64];
	int rc, ttl = has_ttl(d->expire_ms);
	const char *cmp = mm_ddb_mkind(d->ns->m) == M_MIN ? ">" : "<";

	if ((rc = mm_ddb_state_number(d->ns->m, d->state, &sl->val, num, sizeof(num))) ||
	    (rc = mm_ddb_make_pk(&sl->pk, d->ns->name, d->key.entity, d->key.len)) ||
	    (rc = mm_ddb_put_table(st, b)) ||
	    (rc = mm_buf_printf(b, ",\"UpdateExpression\":\"SET #v = :x%s\"",
				ttl ? ", #t = :t" : "")) ||
	    (rc = mm_buf_printf(b, ",\"ConditionExpression\":\"attribute_not_exists(#v) OR #v %s :x\"",
				cmp)) ||
	    (rc = mm_buf_printf(b, ",\"ExpressionAttributeNames\":{\"#v\":\"v\"%s}",
				ttl ? ",\"#t\":\"ttl\"" : "")) ||
	    (rc = PUT(b, ",\"Key\":")) || (rc = mm_ddb_put_key(b, &sl->pk, d->key.bucket)) ||
	    (rc = mm_buf_printf(b, ",\"ExpressionAttributeValues\":{\":x\":{\"N\":\"%s\"}", num)))
		return rc;
	if (ttl && ((rc = PUT(b, ",\":t\":")) || (rc = mm_ddb_put_n(b, ttl_of(d->expire_ms)))))
		return rc;
	return PUT(b, "}}");
}

/* The flush mark: confirmed, ours, unless another owner holds a live one. */
static int build_mark(mm_ddb_t *st, ddb_slot_t *sl, const mm_mark_t *mk, int64_t now_ms)
{
	mm_buf_t *b = &sl->body;
	int rc;

	if ((rc = mm_ddb_make_pk(&sl->pk, mk->ns->name, mk->id, mk->len)) ||
	    (rc = mm_ddb_put_head(st, b, &sl->pk, DDB_SK_MARK)) ||
	    (rc = PUT(b, ",\"UpdateExpression\":\"SET #st = :c, #own = :me, #t = :t REMOVE #ls\""
			 ",\"ConditionExpression\":\"attribute_not_exists(pk) OR #own = :me OR #t < :now\""
			 ",\"ExpressionAttributeNames\":{\"#st\":\"st\",\"#own\":\"own\",\"#t\":\"ttl\","
			 "\"#ls\":\"ls\"},\"ExpressionAttributeValues\":{\":c\":{\"S\":\"C\"},\":me\":{\"S\":")) ||
	    (rc = mm_json_quote(st->owner, strlen(st->owner), b)) || (rc = PUT(b, "},\":t\":")) ||
	    (rc = mm_ddb_put_n(b, ttl_of(mk->expire_ms > 0 ? mk->expire_ms : now_ms))) ||
	    (rc = PUT(b, ",\":now\":")) || (rc = mm_ddb_put_n(b, now_ms / 1000)))
		return rc;
	return PUT(b, "}}");
}

/*
 * The commit record of a flush whose marks were claimed: written once every
 * delta is durable, before the marks are confirmed. A claimant that finds
 * one of those ids still pending (the worker died while confirming, or has
 * not confirmed yet) reads it and knows the effect is durable. It lives as
 * long as the marks.
 */
static int build_commit(mm_ddb_t *st, ddb_slot_t *sl, const mm_flush_t *f)
{
	const ddb_job_t *job = sl->job;
	mm_buf_t *b = &sl->body;
	int64_t until = job->rf ? job->rf_commit_until : mm_ddb_commit_until(f);
	char tag[64];
	int n = snprintf(tag, sizeof(tag), "%s#%" PRIu64, job->writer_attr + 2, job->commit_seq);
	int rc;

	if ((rc = mm_ddb_commit_pk(&sl->pk, tag, (size_t)n)) ||
	    (rc = mm_ddb_put_item_start(st, b, &sl->pk, DDB_SK_COMMIT)) || (rc = PUT(b, ",\"ttl\":")) ||
	    (rc = mm_ddb_put_n(b, ttl_of(until))))
		return rc;
	return PUT(b, "}}");
}

/*
 * The position write: an UpdateItem that sets the position and removes the
 * item's pointer to the flush's intent, and keeps its owner (`own`, the
 * zombie fence). A flush that wrote an intent (and a roll-forward of one)
 * writes it only while the item still points to that intent: when it does
 * not, the position was written already by whoever finished the flush
 * first (the writer, or another reader rolling it forward) and may have
 * moved on since (a partition's next owner reading on), so writing it again
 * would move it back: ConditionalCheckFailed then means done, nothing to
 * write. A flush without an intent (positions alone) writes it only while
 * no other writer took the item: ConditionalCheckFailed then means this
 * writer lost the position, and the flush fails with EFENCED like a
 * refused pointer (mm_ddb_apply_answer).
 */
static int build_pos(mm_ddb_t *st, ddb_slot_t *sl, const mm_position_t *pos)
{
	ddb_job_t *job = sl->job;
	mm_buf_t *b = &sl->body;
	int pend = job->rf || job->want_intent || job->intent_durable, rc;

	sl->pk.len = 0;
	if ((rc = PUT(&sl->pk, "#pos#")) ||
	    (rc = mm_buf_append(&sl->pk, pos->source, strlen(pos->source))))
		return rc;
	if ((rc = mm_ddb_put_head(st, b, &sl->pk, DDB_SK_POS)) ||
	    (rc = PUT(b, ",\"UpdateExpression\":\"SET #v = :v REMOVE #pd\",\"ConditionExpression\":")) ||
	    (rc = pend ? PUT(b, "\"begins_with(#pd, :pf)\"")
		       : PUT(b, "\"attribute_not_exists(#o) OR #o = :me\"")) ||
	    (rc = PUT(b, ",\"ExpressionAttributeNames\":{\"#v\":\"v\",\"#pd\":\"pend\"")) ||
	    (!pend && (rc = PUT(b, ",\"#o\":\"own\""))) ||
	    (rc = PUT(b, "},\"ExpressionAttributeValues\":{\":v\":{\"B\":\"")) ||
	    (pos->len > 0 && (rc = mm_base64_encode(pos->pos, pos->len, b))))
		return rc;
	if (pend)
		return mm_buf_printf(b, "\"},\":pf\":{\"S\":\"%s#%" PRIu64 "#\"}}}",
				     job->writer_attr + 2, job->seq);
	return mm_buf_printf(b, "\"},\":me\":{\"S\":\"%s\"}}}", job->writer_attr + 2);
}

static int cas_write(mm_ddb_t *st, ddb_slot_t *sl, const mm_jnode_t *item);

/*
 * Starts chunk k of the read-merge-write deltas: one consistent BatchGetItem
 * for every delta of the chunk not yet durable. The writes follow one by one
 * from cas_next, each conditional on the version read, so a batched read is
 * exactly as safe as a GetItem per delta and saves a request per delta.
 */
static int start_cas_chunk(ddb_slot_t *sl, size_t k)
{
	mm_ddb_t *st = sl->st;
	ddb_job_t *job = sl->job;
	mm_buf_t *b = &sl->body;
	size_t i, end = (k + 1) * job->chunk < job->ncas ? (k + 1) * job->chunk : job->ncas;
	int rc;

	sl->in_chunk = 1;
	sl->ncas = 0;
	sl->cas_pos = 0;
	for (i = k * job->chunk; i < end; i++)
		if (!job->f->delta_done[job->cas[i]])
			sl->cas_idx[sl->ncas++] = job->cas[i];
	sl->kind = K_CAS_BATCH;
	sl->target = "BatchGetItem";
	b->len = 0;
	if ((rc = PUT(b, "{\"RequestItems\":{")) || (rc = mm_ddb_put_str(b, st->table_json)) ||
	    (rc = PUT(b, ":{\"Keys\":[")))
		return rc;
	for (i = 0; i < sl->ncas; i++) {
		const mm_delta_t *d = &job->f->deltas[sl->cas_idx[i]];

		sl->cas_item[i] = NULL;
		sl->cas_read[i] = 0;
		if ((i && (rc = PUT(b, ","))) ||
		    (rc = mm_ddb_make_pk(&sl->pk, d->ns->name, d->key.entity, d->key.len)) ||
		    (rc = mm_ddb_put_key(b, &sl->pk, d->key.bucket)))
			return rc;
	}
	if ((rc = PUT(b, "],\"ConsistentRead\":true}}}")))
		return rc;
	return mm_ddb_slot_send(sl);
}

/* Writes the chunk's next delta that is not durable yet; finishes the slot's
 * item when none is left. */
static void cas_next(ddb_slot_t *sl)
{
	mm_ddb_t *st = sl->st;
	ddb_job_t *job = sl->job;
	int rc = 0;

	for (; sl->cas_pos < sl->ncas; sl->cas_pos++) {
		const mm_delta_t *d;

		sl->item = sl->cas_idx[sl->cas_pos];
		if (job->f->delta_done[sl->item])
			continue;
		d = &job->f->deltas[sl->item];
		sl->attempts = 0;
		sl->conflicts = 0;
		if ((rc = mm_ddb_make_pk(&sl->pk, d->ns->name, d->key.entity, d->key.len)))
			break;
		if (!sl->cas_read[sl->cas_pos]) {
			/* Left unprocessed by the batch: read it alone. */
			sl->kind = K_CAS_GET;
			if ((rc = mm_ddb_build_get(st, sl, &sl->pk, d->key.bucket)) == 0)
				rc = mm_ddb_slot_send(sl);
		} else {
			rc = cas_write(st, sl, sl->cas_item[sl->cas_pos]);
			if (rc == 1) {
				job->f->delta_done[sl->item] = 1;
				st->stats.replays_skipped++;
				continue;
			}
		}
		if (rc)
			break;
		return;
	}
	mm_ddb_slot_finish(sl, sl->cas_pos < sl->ncas ? rc : 0, NULL);
}

/* The chunk's batched read arrived (in sl->tree): keep it in batch_tree, note
 * what it found for each delta, and start the writes. */
static void cas_batch_answer(ddb_slot_t *sl)
{
	mm_ddb_t *st = sl->st;
	ddb_job_t *job = sl->job;
	const mm_jnode_t *items, *unproc, *it;
	mm_jtree_t tmp = sl->batch_tree;
	size_t i;

	sl->batch_tree = sl->tree;
	sl->tree = tmp;
	items = mm_jnode_get(mm_jnode_get(sl->batch_tree.root, "Responses"), st->table);
	unproc = mm_jnode_get(mm_jnode_get(mm_jnode_get(sl->batch_tree.root, "UnprocessedKeys"),
					   st->table), "Keys");
	for (i = 0; i < sl->ncas; i++) {
		const mm_delta_t *d = &job->f->deltas[sl->cas_idx[i]];
		int listed = 0;

		if (mm_ddb_make_pk(&sl->pk, d->ns->name, d->key.entity, d->key.len)) {
			mm_ddb_slot_finish(sl, MM_ENOMEM, NULL);
			return;
		}
		for (it = items ? items->child : NULL; it; it = it->next) {
			const mm_jnode_t *pk = mm_ddb_attr_s(it, "pk");
			int ok = 0;

			if (pk && pk->len == sl->pk.len && memcmp(pk->s, sl->pk.p, pk->len) == 0 &&
			    mm_ddb_attr_i64(it, "sk", &ok) == d->key.bucket && ok) {
				sl->cas_item[i] = it;
				break;
			}
		}
		for (it = unproc ? unproc->child : NULL; it && !sl->cas_item[i]; it = it->next) {
			const mm_jnode_t *pk = mm_ddb_attr_s(it, "pk");
			int ok = 0;

			if (pk && pk->len == sl->pk.len && memcmp(pk->s, sl->pk.p, pk->len) == 0 &&
			    mm_ddb_attr_i64(it, "sk", &ok) == d->key.bucket && ok)
				listed = 1;
		}
		/* Absent from both lists: the item does not exist (NULL item). */
		sl->cas_read[i] = !listed;
		st->stats.unprocessed_keys += (uint64_t)listed;
	}
	cas_next(sl);
}

/* Starts the item of an apply job that sl was given. */
int mm_ddb_start_apply_item(ddb_slot_t *sl)
{
	mm_ddb_t *st = sl->st;
	ddb_job_t *job = sl->job;
	mm_flush_t *f = job->f;
	int rc;

	if (job->phase == P_INTENT || job->phase == P_PENDING || job->phase == P_ARM)
		return mm_ddb_start_intent_item(sl);
	if (job->phase == P_COMMIT) {
		sl->kind = K_COMMIT;
		sl->target = "PutItem";
		rc = build_commit(st, sl, f);
	} else if (job->phase == P_POSITIONS) {
		sl->kind = K_POS;
		sl->target = "UpdateItem";
		rc = build_pos(st, sl, &f->positions[sl->item]);
	} else if (job->phase == P_MARKS) {
		sl->kind = K_MARK;
		sl->target = "UpdateItem";
		rc = build_mark(st, sl, &f->marks[sl->item], job->now_ms);
	} else if (sl->item >= job->nsingle) {
		return start_cas_chunk(sl, sl->item - job->nsingle);
	} else {
		const mm_delta_t *d;
		int mk;

		sl->item = job->single[sl->item];
		d = &f->deltas[sl->item];
		mk = mm_ddb_mkind(d->ns->m);
		if (mk == M_ADD_INT || mk == M_ADD_UINT || mk == M_ADD_FLOAT) {
			sl->kind = K_ADD;
			sl->target = "UpdateItem";
			rc = build_add(st, sl, d, job->seq);
		} else if (mk == M_MIN || mk == M_MAX) {
			sl->kind = K_MINMAX;
			sl->target = "UpdateItem";
			rc = build_minmax(st, sl, d);
		} else {
			sl->kind = K_CAS_GET;
			rc = mm_ddb_make_pk(&sl->pk, d->ns->name, d->key.entity, d->key.len);
			if (rc == 0)
				rc = mm_ddb_build_get(st, sl, &sl->pk, d->key.bucket);
		}
	}
	return rc ? rc : mm_ddb_slot_send(sl);
}

static int is_stale_token(const mm_ddb_t *st, const ddb_job_t *job, const mm_jnode_t *attr)
{
	int64_t now_ms = job->now_ms;
	const mm_jnode_t *n;
	int is_int = 0;
	int64_t v = 0;
	double d;

	if (attr->key_len < 3 || memcmp(attr->key, "w_", 2) != 0 ||
	    strcmp(attr->key, job->writer_attr) == 0)
		return 0;
	n = mm_jnode_get(attr, "N");
	if (n == NULL || n->type != MM_JSON_STRING || mm_json_number(n->s, n->len, &is_int, &v, &d))
		return 0;
	return is_int && v < now_ms - st->cfg.token_ttl_ms;
}

/* After an ADD: removes stale replay tokens of other writers, each only if it
 * still holds the value we saw. Returns 1 if a request was sent. */
static int start_prune(mm_ddb_t *st, ddb_slot_t *sl, const mm_jnode_t *item)
{
	const mm_delta_t *d = &sl->job->f->deltas[sl->item];
	mm_buf_t *b = &sl->body;
	const mm_jnode_t *a;
	int n = 0, i, rc;

	for (a = item ? item->child : NULL; a && n < DDB_PRUNE_MAX; a = a->next)
		n += is_stale_token(st, sl->job, a);
	if (n == 0)
		return 0;
	if ((rc = mm_ddb_put_head(st, b, &sl->pk, d->key.bucket)) || (rc = PUT(b, ",\"UpdateExpression\":\"REMOVE ")))
		return rc;
	for (i = 0; i < n; i++)
		if ((rc = mm_buf_printf(b, "%s#p%d", i ? ", " : "", i)))
			return rc;
	if ((rc = PUT(b, "\",\"ConditionExpression\":\"")))
		return rc;
	for (i = 0; i < n; i++)
		if ((rc = mm_buf_printf(b, "%s#p%d = :p%d", i ? " AND " : "", i, i)))
			return rc;
	if ((rc = PUT(b, "\",\"ExpressionAttributeNames\":{")))
		return rc;
	for (a = item->child, i = 0; a && i < n; a = a->next) {
		if (!is_stale_token(st, sl->job, a))
			continue;
		if ((rc = mm_buf_printf(b, "%s\"#p%d\":", i ? "," : "", i)) ||
		    (rc = mm_json_quote(a->key, a->key_len, b)))
			return rc;
		i++;
	}
	if ((rc = PUT(b, "},\"ExpressionAttributeValues\":{")))
		return rc;
	for (a = item->child, i = 0; a && i < n; a = a->next) {
		const mm_jnode_t *v;

		if (!is_stale_token(st, sl->job, a))
			continue;
		v = mm_jnode_get(a, "N");
		if ((rc = mm_buf_printf(b, "%s\":p%d\":{\"N\":", i ? "," : "", i)) ||
		    (rc = mm_json_quote(v->s, v->len, b)) || (rc = PUT(b, "}")))
			return rc;
		i++;
	}
	if ((rc = PUT(b, "}}")))
		return rc;
	sl->kind = K_PRUNE;
	sl->target = "UpdateItem";
	sl->attempts = 0;
	return mm_ddb_slot_send(sl) == 0;
}

/*
 * Builds with MM_ERRINJ: MURMUR_ERRINJ_DDB_CAS_HOLD_MS=N holds every
 * conditional write N ms after its read. Whether two writers' read-merge-write
 * cycles overlap is otherwise left to the scheduler, and on a loaded machine
 * they may never do; the hold widens the window so the concurrent-writers
 * spec runs the conflict path however the processes are scheduled.
 */
static uint64_t cas_hold_ms(void)
{
#ifdef MM_ERRINJ
	const char *v = getenv("MURMUR_ERRINJ_DDB_CAS_HOLD_MS");

	return v && *v ? strtoull(v, NULL, 10) : 0;
#else
	return 0;
#endif
}

/*
 * Read-merge-write, after the read: decides whether the delta is already in
 * (our token), merges it into what was read, and sends the conditional write.
 * Returns 0 when a write was sent, 1 when the delta turned out applied, or a
 * negative code.
 */
static int cas_write(mm_ddb_t *st, ddb_slot_t *sl, const mm_jnode_t *item)
{
	ddb_job_t *job = sl->job;
	const mm_delta_t *d = &job->f->deltas[sl->item];
	const mm_monoid_t *m = d->ns->m;
	_Alignas(16) unsigned char acc[MM_STATE_MAX];
	mm_buf_t *b = &sl->body;
	const mm_jnode_t *a;
	int ok = 0, rc, ttl = has_ttl(d->expire_ms), np = 0, i;
	int64_t token = item ? mm_ddb_attr_i64(item, job->writer_attr, &ok) : 0;
	uint64_t hold;

	if (item && ok && (uint64_t)token >= job->seq)
		return 1;
	sl->have_item = item != NULL;
	sl->ver = item ? mm_ddb_attr_i64(item, "ver", &sl->have_ver) : 0;
	if (!item)
		sl->have_ver = 0;
	m->vt->init(m, acc);
	if (item && mm_jnode_get(item, "v") && !mm_ddb_item_expired(item, job->now_ms) &&
	    (rc = mm_ddb_item_state(m, item, acc, &sl->val))) {
		char why[300];

		snprintf(why, sizeof(why), "%s", mm_diag_msg());
		rc = mm_diag_set(rc == MM_ENOMEM ? rc : MM_ECORRUPT,
				 "stored %s state of '%s' bucket %" PRId64 " is unreadable: %s",
				 m->vt->name, d->ns->name, d->key.bucket, why);
		goto out;
	}
	sl->val.len = 0;
	if ((rc = m->vt->merge(m, acc, d->state)) || (rc = m->vt->encode(m, acc, &sl->val)))
		goto out;
	if ((rc = mm_ddb_put_head(st, b, &sl->pk, d->key.bucket)) ||
	    (rc = mm_buf_printf(b, ",\"UpdateExpression\":\"SET #v = :v, #ver = :nv, #w = :s%s",
				ttl ? ", #t = :t" : "")))
		goto out;
	for (a = item ? item->child : NULL; a && np < DDB_PRUNE_MAX; a = a->next) {
		if (!is_stale_token(st, job, a))
			continue;
		if ((rc = mm_buf_printf(b, "%s#p%d", np ? ", " : " REMOVE ", np)))
			goto out;
		np++;
	}
	if ((rc = mm_buf_printf(b, "\",\"ConditionExpression\":\"%s\"",
				!sl->have_item ? "attribute_not_exists(pk)"
				: sl->have_ver ? "#ver = :ov"
					       : "attribute_not_exists(#ver)")) ||
	    (rc = mm_buf_printf(b, ",\"ExpressionAttributeNames\":{\"#v\":\"v\",\"#ver\":\"ver\","
				   "\"#w\":\"%s\"%s",
				job->writer_attr, ttl ? ",\"#t\":\"ttl\"" : "")))
		goto out;
	for (a = item ? item->child : NULL, i = 0; a && i < np; a = a->next) {
		if (!is_stale_token(st, job, a))
			continue;
		if ((rc = mm_buf_printf(b, ",\"#p%d\":", i++)) ||
		    (rc = mm_json_quote(a->key, a->key_len, b)))
			goto out;
	}
	if ((rc = PUT(b, "},\"ExpressionAttributeValues\":{\":v\":{\"B\":\"")) ||
	    (rc = mm_base64_encode(sl->val.p, sl->val.len, b)) || (rc = PUT(b, "\"},\":nv\":")) ||
	    (rc = mm_ddb_put_n(b, sl->ver + 1)) ||
	    (rc = mm_buf_printf(b, ",\":s\":{\"N\":\"%" PRIu64 "\"}", job->seq)))
		goto out;
	if (sl->have_ver && ((rc = PUT(b, ",\":ov\":")) || (rc = mm_ddb_put_n(b, sl->ver))))
		goto out;
	if (ttl && ((rc = PUT(b, ",\":t\":")) || (rc = mm_ddb_put_n(b, ttl_of(d->expire_ms)))))
		goto out;
	if ((rc = PUT(b, "}}")))
		goto out;
	sl->kind = K_CAS_PUT;
	sl->target = "UpdateItem";
	if ((hold = cas_hold_ms()) > 0)
		mm_ddb_slot_send_later(sl, hold);
	else
		rc = mm_ddb_slot_send(sl);
out:
	m->vt->destroy(m, acc);
	return rc;
}

/* Handles a 200 (cond = 0) or a ConditionalCheckFailed (cond = 1) answer to
 * an apply request. */
void mm_ddb_apply_answer(ddb_slot_t *sl, int cond)
{
	mm_ddb_t *st = sl->st;
	ddb_job_t *job = sl->job;
	mm_flush_t *f = job->f;
	int rc;

	switch (sl->kind) {
	case K_ADD:
		f->delta_done[sl->item] = 1;
		if (cond) {
			st->stats.replays_skipped++;
		} else {
			job->writes++;
			mm_ddb_errinj_delta(st, job);
			if (start_prune(st, sl, mm_jnode_get(sl->tree.root, "Attributes")) == 1)
				return;
		}
		mm_ddb_slot_finish(sl, 0, NULL);
		return;
	case K_PRUNE:
		mm_ddb_slot_finish(sl, 0, NULL);
		return;
	case K_MINMAX:
		f->delta_done[sl->item] = 1;
		job->writes += !cond;
		mm_ddb_errinj_delta(st, job);
		mm_ddb_slot_finish(sl, 0, NULL);
		return;
	case K_CAS_BATCH:
		cas_batch_answer(sl);
		return;
	case K_CAS_GET:
		rc = cas_write(st, sl, mm_jnode_get(sl->tree.root, "Item"));
		if (rc == 1) {
			f->delta_done[sl->item] = 1;
			st->stats.replays_skipped++;
		}
		if (rc == 1 && sl->in_chunk) {
			sl->cas_pos++;
			cas_next(sl);
		} else if (rc != 0) {
			mm_ddb_slot_finish(sl, rc == 1 ? 0 : rc, NULL);
		}
		return;
	case K_CAS_PUT:
		if (!cond) {
			f->delta_done[sl->item] = 1;
			job->writes++;
			mm_ddb_errinj_delta(st, job);
			if (sl->in_chunk) {
				sl->cas_pos++;
				cas_next(sl);
			} else {
				mm_ddb_slot_finish(sl, 0, NULL);
			}
			return;
		}
		st->stats.cas_conflicts++;
		if (++sl->conflicts > DDB_CAS_MAX) {
			mm_ddb_slot_finish(sl, MM_ESTORE, "lost the read-merge-write race too many times");
			return;
		}
		sl->kind = K_CAS_GET;
		sl->attempts = 0;
		if ((rc = mm_ddb_build_get(st, sl, &sl->pk, f->deltas[sl->item].key.bucket))) {
			mm_ddb_slot_finish(sl, rc, NULL);
			return;
		}
		/* Re-read after a short jittered pause, so racing writers spread out. */
		mm_ddb_slot_send_later(sl, mm_ddb_backoff_ms(st, sl->conflicts < 4 ? sl->conflicts : 4));
		return;
	case K_MARK:
		f->mark_done[sl->item] = 1;
		if (cond) {
			const mm_mark_t *mk = &f->marks[sl->item];

			/* Another owner holds the id: our lease ran out (a flush slower
			 * than the lease) and the record may have been counted by the
			 * new owner too. */
			st->stats.mark_conflicts++;
			mm_log(MM_LOG_WARN, mk->ns->name,
			       "dedup id of %zu bytes is held by another owner; it may be counted twice",
			       mk->len);
		}
		mm_ddb_slot_finish(sl, 0, NULL);
		return;
	case K_PENDING:
	case K_ARM:
		if (cond) {
			mm_ddb_intent_fenced(sl);
			return;
		}
		mm_ddb_slot_finish(sl, 0, NULL);
		return;
	case K_POS:
		/* A flush without an intent writes a position only while no
		 * other reader took it: refused, this writer lost its source
		 * (the zombie fence), and stops as a refused pointer does. With
		 * an intent a refusal means the flush was finished already. */
		if (cond && !(job->rf || job->want_intent || job->intent_durable)) {
			mm_ddb_intent_fenced(sl);
			return;
		}
		mm_ddb_slot_finish(sl, 0, NULL);
		return;
	case K_COMMIT:
	case K_INTENT:
		mm_ddb_slot_finish(sl, 0, NULL);
		return;
	}
}

/*
 * Splits the deltas into work units: sums, counts, min and max are single
 * requests; read-merge-writes are read in chunks, sized so that the chunks
 * still keep every slot busy (one chunk per slot when there are few; at most
 * 100 keys, BatchGetItem's limit). With a chunk of one the plain GetItem path
 * is used.
 */
static int apply_plan(mm_ddb_t *st, ddb_job_t *job)
{
	const mm_flush_t *f = job->f;
	size_t i, n = f->ndeltas ? f->ndeltas : 1, ncas = 0;

	job->single = malloc(n * sizeof(size_t));
	job->cas = malloc(n * sizeof(size_t));
	if (job->single == NULL || job->cas == NULL) {
		free(job->single);
		free(job->cas);
		return -1;
	}
	for (i = 0; i < f->ndeltas; i++)
		ncas += mm_ddb_mkind(f->deltas[i].ns->m) == M_BYTES;
	job->chunk = (ncas + st->nslots - 1) / st->nslots;
	if (job->chunk > DDB_BATCH_MAX)
		job->chunk = DDB_BATCH_MAX;
	for (i = 0; i < f->ndeltas; i++) {
		if (job->chunk > 1 && mm_ddb_mkind(f->deltas[i].ns->m) == M_BYTES)
			job->cas[job->ncas++] = i;
		else
			job->single[job->nsingle++] = i;
	}
	job->delta_items =
		job->nsingle + (job->chunk > 1 ? (job->ncas + job->chunk - 1) / job->chunk : 0);
	return 0;
}

/* A new apply job of f for st's own writer (the caller sets seq). */
static ddb_job_t *apply_new(mm_ddb_t *st, mm_flush_t *f, mm_store_cb cb, void *arg)
{
	ddb_job_t *job;

	if (st->read_only) {
		mm_diag_set(MM_ENOTSUP, "dynamodb: apply on a store opened read-only");
		return NULL;
	}
	if ((f->ndeltas && !f->delta_done) || (f->nmarks && !f->mark_done)) {
		mm_diag_set(MM_EINVAL, "dynamodb: a flush needs delta_done and mark_done");
		return NULL;
	}
	job = calloc(1, sizeof(*job));
	if (job == NULL) {
		mm_diag_set(MM_ENOMEM, "dynamodb: cannot allocate an apply");
		return NULL;
	}
	job->kind = J_APPLY;
	job->cb = cb;
	job->arg = arg;
	job->t0 = uv_hrtime();
	job->f = f;
	job->now_ms = f->now_ms ? f->now_ms : mm_ddb_now_ms();
	memcpy(job->writer_attr, st->writer_attr, sizeof(job->writer_attr));
	job->commit_seq = st->commit_seq;
	/* No items in P_START: the scheduler moves on to the first phase with
	 * work at once. */
	job->phase = P_START;
	if (apply_plan(st, job)) {
		free(job);
		mm_diag_set(MM_ENOMEM, "dynamodb: cannot plan an apply of %zu deltas", f->ndeltas);
		return NULL;
	}
	return job;
}

int mm_ddb_apply(mm_store_t *base, mm_flush_t *f, mm_store_cb cb, void *arg)
{
	mm_ddb_t *st = (mm_ddb_t *)base;
	ddb_job_t *job = apply_new(st, f, cb, arg);
	int rc;

	if (job == NULL)
		return mm_diag_code();
	if (f == st->retry_flush) {
		job->seq = st->retry_seq;
	} else {
		uint64_t now = (uint64_t)mm_ddb_now_ms();

		st->last_seq = now > st->last_seq ? now : st->last_seq + 1;
		job->seq = st->last_seq;
	}
	if ((rc = mm_ddb_intent_plan(st, job))) {
		mm_ddb_job_free(job);
		return rc;
	}
	mm_ddb_enqueue(st, job);
	return 0;
}

int mm_ddb_apply_rf(mm_ddb_t *st, mm_flush_t *f, const char *writer, uint64_t seq,
		    uint64_t commit_seq, int has_commit, int64_t commit_until, mm_store_cb cb,
		    void *arg)
{
	ddb_job_t *job = apply_new(st, f, cb, arg);

	if (job == NULL)
		return mm_diag_code();
	snprintf(job->writer_attr, sizeof(job->writer_attr), "w_%.16s", writer);
	job->seq = seq;
	job->commit_seq = commit_seq;
	job->rf = 1;
	job->rf_has_commit = has_commit;
	job->rf_commit_until = commit_until;
	mm_ddb_enqueue(st, job);
	return 0;
}

/* 1 if item i of the apply's current phase is durable already: a retried
 * flush skips it. */
int mm_ddb_apply_item_done(const ddb_job_t *job, size_t i)
{
	if (job->kind != J_APPLY)
		return 0;
	if (job->phase == P_DELTAS) {
		size_t k, end;

		if (i < job->nsingle)
			return job->f->delta_done[job->single[i]];
		k = (i - job->nsingle) * job->chunk;
		end = k + job->chunk < job->ncas ? k + job->chunk : job->ncas;
		for (; k < end; k++)
			if (!job->f->delta_done[job->cas[k]])
				return 0;
		return 1;
	}
	/* Claimed marks are confirmed by the commit record. */
	if (job->phase == P_MARKS)
		return job->f->mark_done[i] || job->f->marks[i].claimed;
	return 0;
}

/* Moves an apply to its next phase with work; 0 when none is left. */
int mm_ddb_apply_next_phase(mm_ddb_t *st, ddb_job_t *job)
{
	while (++job->phase < P_DONE) {
		const mm_flush_t *f = job->f;

		job->next_item = 0;
		switch (job->phase) {
		case P_INTENT:
			job->nitems = job->want_intent ? job->nchunks : 0;
			break;
		case P_PENDING:
			job->nitems = job->want_intent ? f->npositions : 0;
			break;
		case P_ARM:
			job->nitems = job->want_intent ? 1 : 0;
			break;
		case P_DELTAS:
			/* The intent and its pointers are durable: a retry skips them. */
			job->intent_durable |= job->want_intent;
			job->nitems = job->delta_items;
			break;
		case P_COMMIT:
			job->nitems = job->rf ? (size_t)job->rf_has_commit : (f->nmarks > 0);
			break;
		case P_MARKS:
			job->nitems = f->nmarks;
			break;
		default:
			job->nitems = st->cfg.positions ? f->npositions : 0;
			break;
		}
		if (job->nitems > 0)
			return 1;
	}
	return 0;
}

/* Bookkeeping of a finished apply: a failed one is remembered so that its
 * retry (the same mm_flush_t) reuses its sequence number. */
void mm_ddb_apply_done(mm_ddb_t *st, ddb_job_t *job, uint64_t ns)
{
	/* A roll-forward is not this writer's flush: its sequence, commit
	 * record and retry are the intent's. */
	if (job->rf) {
		st->stats.rolled_forward += job->rc == 0;
		return;
	}
	if (job->rc == 0) {
		job->f->writes = job->writes;
		job->f->purged = 0;
		/* The next flush's claims carry a new tag. */
		if (job->f->nmarks > 0)
			st->commit_seq++;
		st->retry_flush = NULL;
		st->stats.applies++;
		mm_ddb_hist_add(st, ns);
	} else {
		st->retry_flush = job->f;
		st->retry_seq = job->seq;
		st->retry_intent_durable = job->intent_durable;
	}
}
