/*
 * dynamodb_client.c: the request client of the DynamoDB store: a fixed set
 * of request slots, SigV4 signing, the classification of failed answers,
 * retry with backoff, the scheduler that hands slots to queued jobs, the
 * dispatch of answers, and statistics.
 *
 * Each of the max_inflight slots owns its buffers, answer trees and backoff
 * timer, and is reused for every request (and the HTTP client keeps its
 * transfers' buffers), so the steady state allocates nothing; a slot gives back answer trees larger than 1 MiB when it
 * goes idle (batched reads of big sketches). Jobs (an apply, a get_many, a
 * claim round) queue in arrival order; the pump gives each free slot the next
 * item of the first job that has one, and completes a job when its last
 * request has answered. Building a request (its body, base64 included, and
 * its signature) and writing it cost the loop thread time in proportion to
 * its size, so the pump yields to the loop once it has built DDB_PUMP_BYTES
 * since the kick timer last fired. A flush intent's 26 chunks of 400 KB
 * (the DynamoDB bench's unique_visitors), all started in one turn while 32
 * slots were free, took 150 ms of the loop thread's CPU and made the bench's
 * blocked loop lag 98-142 ms; one chunk a turn, 1.4-17.8 ms. Small
 * requests (600 bytes) yield once per about 400 of them.
 *
 * Throttling (ProvisionedThroughputExceeded, ThrottlingException,
 * RequestLimitExceeded), HTTP 5xx and transport failures are retried with
 * full-jitter exponential backoff (backoff_base * 2^n, capped at
 * backoff_max) up to max_attempts; then the item fails with MM_ESTORE. A
 * ConditionalCheckFailed answer is not a failure: it goes to the job's own
 * answer handler, for which it is a result. Other errors (validation,
 * access) fail the item at once.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../aws/awsrpc.h"
#include "../codec/json.h"
#include "../lib/log.h"
#include "../lib/error.h"
#include "dynamodb_impl.h"

#define DDB_TARGET "DynamoDB_20120810."
#define DDB_CT "application/x-amz-json-1.0"

int64_t mm_ddb_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t ddb_random(mm_ddb_t *st)
{
	/* xorshift64*: jitter only, seeded from getrandom at open. */
	st->rng ^= st->rng >> 12;
	st->rng ^= st->rng << 25;
	st->rng ^= st->rng >> 27;
	return st->rng * 0x2545F4914F6CDD1DULL;
}

static int ddb_op_of(const char *target)
{
	if (strcmp(target, "GetItem") == 0)
		return MM_DDB_OP_GET_ITEM;
	if (strcmp(target, "PutItem") == 0)
		return MM_DDB_OP_PUT_ITEM;
	if (strcmp(target, "UpdateItem") == 0)
		return MM_DDB_OP_UPDATE_ITEM;
	if (strcmp(target, "DeleteItem") == 0)
		return MM_DDB_OP_DELETE_ITEM;
	if (strcmp(target, "BatchGetItem") == 0)
		return MM_DDB_OP_BATCH_GET_ITEM;
	return MM_DDB_OP_OTHER;
}

static void ddb_count(mm_ddb_t *st, int op, uint64_t ns)
{
	st->stats.requests[op]++;
	st->stats.ns_total[op] += ns;
	mm_histo_observe(&st->stats.hist[op], ns);
	if (ns > st->stats.ns_max[op])
		st->stats.ns_max[op] = ns;
}

void mm_ddb_hist_add(mm_ddb_t *st, uint64_t ns)
{
	uint64_t us = ns / 1000 + 1;
	int k = (int)floor(4 * log2((double)us));

	if (k >= DDB_HIST)
		k = DDB_HIST - 1;
	st->hist[k]++;
	if (ns > st->stats.apply_ns_max)
		st->stats.apply_ns_max = ns;
}

static uint64_t hist_pct(const mm_ddb_t *st, double pct)
{
	uint64_t total = 0, acc = 0;
	int k;

	for (k = 0; k < DDB_HIST; k++)
		total += st->hist[k];
	if (total == 0)
		return 0;
	for (k = 0; k < DDB_HIST; k++) {
		acc += st->hist[k];
		if ((double)acc >= pct * (double)total)
			break;
	}
	/* The bucket's upper bound, in ns. */
	return (uint64_t)(exp2((k + 1) / 4.0) * 1000);
}

/*
 * Signs a POST of body to `target` and fills hdr with the header lines
 * ("Name: value\0" each); ptrs receives pointers to them. Returns the count
 * or a negative code.
 */
static int ddb_sign(mm_ddb_t *st, const char *target, const mm_buf_t *body, mm_buf_t *hdr,
		    const char *ptrs[8])
{
	char tgt[96];
	size_t tl = strlen(target);
	mm_aws_rpc_t rpc = {.region = st->region, .service = "dynamodb", .host = st->host,
			    .content_type = DDB_CT, .target = tgt,
			    .time_s = mm_ddb_now_ms() / 1000};

	/* Copied, not formatted (snprintf cost 2 000 instructions a request);
	 * operation names are short, a longer one is cut as snprintf did. */
	if (tl > sizeof(tgt) - sizeof(DDB_TARGET))
		tl = sizeof(tgt) - sizeof(DDB_TARGET);
	memcpy(tgt, DDB_TARGET, sizeof(DDB_TARGET) - 1);
	memcpy(tgt + sizeof(DDB_TARGET) - 1, target, tl);
	tgt[sizeof(DDB_TARGET) - 1 + tl] = '\0';
	return mm_aws_rpc_sign(&st->sig, &st->creds, &rpc, body->p, body->len, hdr, ptrs);
}

/* What a failed answer means for a retry. */
enum { R_RETRY, R_COND, R_FATAL };

/* Classifies a non-200 answer; fills err with the exception name and detail
 * with "Name: message". */
static int ddb_classify(long code, const uint8_t *body, size_t len, mm_jtree_t *tree,
			char *err, size_t errcap, char *detail, size_t dcap)
{
	const mm_jnode_t *type = NULL, *msg = NULL;
	const char *name = "";

	if (len > 0 && mm_jtree_parse(tree, (const char *)body, len) == 0) {
		type = mm_jnode_get(tree->root, "__type");
		msg = mm_jnode_get(tree->root, "message");
		if (msg == NULL)
			msg = mm_jnode_get(tree->root, "Message");
	}
	if (type && type->type == MM_JSON_STRING) {
		const char *hash = strrchr(type->s, '#');

		name = hash ? hash + 1 : type->s;
	}
	snprintf(err, errcap, "%s", name);
	snprintf(detail, dcap, "HTTP %ld %s%s%s", code, *name ? name : "(no error type)",
		 msg && msg->type == MM_JSON_STRING ? ": " : "",
		 msg && msg->type == MM_JSON_STRING ? msg->s : "");
	if (strcmp(name, "ConditionalCheckFailedException") == 0)
		return R_COND;
	if (code >= 500 || strcmp(name, "ProvisionedThroughputExceededException") == 0 ||
	    strcmp(name, "ThrottlingException") == 0 ||
	    strcmp(name, "RequestLimitExceeded") == 0 ||
	    strcmp(name, "LimitExceededException") == 0 ||
	    strcmp(name, "InternalServerError") == 0 ||
	    strcmp(name, "ServiceUnavailable") == 0 || strcmp(name, "ExpiredTokenException") == 0 ||
	    strcmp(name, "TransactionInProgressException") == 0 || code == 429)
		return R_RETRY;
	return R_FATAL;
}

static void ddb_pump(mm_ddb_t *st);
static int slot_start_item(ddb_slot_t *sl);
static void on_response(void *arg, const mm_http_response_t *res);

static void on_kick(uv_timer_t *t)
{
	mm_ddb_t *st = t->data;

	/* The loop has turned since the pump last yielded: it may build again. */
	st->pump_bytes = 0;
	ddb_pump(st);
}

void mm_ddb_enqueue(mm_ddb_t *st, ddb_job_t *job)
{
	ddb_job_t **pp = &st->jobs;

	while (*pp)
		pp = &(*pp)->next;
	job->next = NULL;
	*pp = job;
	uv_timer_start(&st->kick, on_kick, 0, 0);
}

static void job_fail(ddb_job_t *job, int rc, const char *what, const char *detail)
{
	if (job->rc == 0) {
		job->rc = rc;
		snprintf(job->detail, sizeof(job->detail), "dynamodb: %s: %s", what, detail);
	}
}

/* The wait counts as an item in flight, so the scheduler neither completes
 * the job nor gives it a slot for it. */
void mm_ddb_job_wait(ddb_job_t *job)
{
	job->outstanding++;
}

void mm_ddb_kick(mm_ddb_t *st)
{
	uv_timer_start(&st->kick, on_kick, 0, 0);
}

void mm_ddb_job_resume(mm_ddb_t *st, ddb_job_t *job, int rc, const char *detail)
{
	job->outstanding--;
	if (rc) {
		/* The detail names its request already ("dynamodb: GetItem: ..."). */
		if (job->rc == 0) {
			job->rc = rc;
			snprintf(job->detail, sizeof(job->detail), "%s", detail ? detail : "");
		}
		job->stop = 1;
	}
	/* Called from another job's completion, inside the pump or not: the
	 * next turn of the pump completes or restarts this one. */
	uv_timer_start(&st->kick, on_kick, 0, 0);
}

/* Ends the slot's item: bookkeeping only; the caller pumps. */
void mm_ddb_slot_finish(ddb_slot_t *sl, int rc, const char *detail)
{
	ddb_job_t *job = sl->job;
	mm_ddb_t *st = sl->st;

	if (rc) {
		job_fail(job, rc, sl->target, detail ? detail : mm_diag_msg());
		if (job->kind == J_APPLY || job->kind == J_GET || job->kind == J_CALL)
			job->stop = 1;
		else
			job->claims[sl->item].result = rc;
	}
	job->outstanding--;
	sl->job = NULL;
	sl->next_free = st->free_slots;
	st->free_slots = sl;
	/* A batch of big sketches can leave megabytes in the answer trees: keep
	 * an idle slot's memory to what ordinary answers need. */
	mm_jtree_trim(&sl->batch_tree, DDB_TREE_KEEP);
	mm_jtree_trim(&sl->tree, DDB_TREE_KEEP);
}

/* Sends the slot's body to its target. Errors here are final for the item. */
int mm_ddb_slot_send(ddb_slot_t *sl)
{
	mm_ddb_t *st = sl->st;
	const char *hdrs[8];
	int n = ddb_sign(st, sl->target, &sl->body, &sl->hdr, hdrs);
	mm_http_request_t req;

	if (n < 0)
		return n;
	req = (mm_http_request_t){.method = "POST", .url = st->url, .headers = hdrs,
				  .nheaders = (size_t)n, .body = sl->body.p, .body_len = sl->body.len,
				  .timeout_ms = st->cfg.request_timeout_ms};
	sl->op = ddb_op_of(sl->target);
	return mm_http_request(st->http, &req, on_response, sl);
}

static void on_backoff(uv_timer_t *t)
{
	ddb_slot_t *sl = t->data;
	int rc = mm_ddb_slot_send(sl);

	if (rc) {
		mm_ddb_slot_finish(sl, rc, NULL);
		ddb_pump(sl->st);
	}
}

/* Sends the slot's request (already built) after delay_ms. */
void mm_ddb_slot_send_later(ddb_slot_t *sl, uint64_t delay_ms)
{
	uv_timer_start(&sl->timer, on_backoff, delay_ms, 0);
}

/* Full-jitter delay for attempt n (1-based). */
uint64_t mm_ddb_backoff_ms(mm_ddb_t *st, int n)
{
	uint64_t cap = (uint64_t)st->cfg.backoff_max_ms, d = (uint64_t)st->cfg.backoff_base_ms;

	while (--n > 0 && d < cap)
		d *= 2;
	if (d > cap)
		d = cap;
	return d ? ddb_random(st) % (d + 1) : 0;
}

/* Sends the slot's request again after a pause, or fails the item when its
 * attempts are used up. */
void mm_ddb_slot_retry(ddb_slot_t *sl, const char *detail)
{
	mm_ddb_t *st = sl->st;

	if (++sl->attempts >= st->cfg.max_attempts) {
		char msg[400];

		snprintf(msg, sizeof(msg), "%s (gave up after %d attempts)", detail, sl->attempts);
		mm_ddb_slot_finish(sl, MM_ESTORE, msg);
		return;
	}
	st->stats.retries++;
	if (mm_log_get_level() >= MM_LOG_DEBUG)
		mm_log(MM_LOG_DEBUG, "dynamodb", "%s: %s; retry %d", sl->target, detail, sl->attempts);
	uv_timer_start(&sl->timer, on_backoff, mm_ddb_backoff_ms(st, sl->attempts), 0);
}

static void job_complete(mm_ddb_t *st, ddb_job_t *job)
{
	uint64_t ns = uv_hrtime() - job->t0;

	if (job->kind == J_APPLY)
		mm_ddb_apply_done(st, job, ns);
	job->cb(job->arg, job->rc, job->rc ? job->detail : "");
}

void mm_ddb_job_free(ddb_job_t *job)
{
	for (int i = 0; i < DDB_CALL_MAX; i++)
		mm_buf_free(&job->call_body[i]);
	mm_buf_free(&job->call_pk);
	mm_ddb_rf_free(job->call_rf);
	free(job->idx);
	free(job->grp);
	free(job->single);
	free(job->cas);
	mm_buf_free(&job->intent);
	free(job);
}

static void ddb_pump(mm_ddb_t *st)
{
	ddb_job_t *job, *next, **pp;

	for (pp = &st->jobs; !st->closing && (job = *pp) != NULL;) {
		/* start() runs first; its failure is every job's. */
		if (st->start_state == DDB_STARTING && !job->call_start) {
			pp = &job->next;
			continue;
		}
		if (st->start_state < 0 && !job->call_start && job->rc == 0) {
			job->rc = st->start_state;
			snprintf(job->detail, sizeof(job->detail), "%s", st->start_detail);
			job->stop = 1;
		}
		while (!job->stop && st->free_slots) {
			ddb_slot_t *sl;
			int rc;

			while (job->next_item < job->nitems && mm_ddb_apply_item_done(job, job->next_item))
				job->next_item++;
			if (job->next_item >= job->nitems)
				break;
			if (st->pump_bytes >= DDB_PUMP_BYTES) {
				/* Yields to the loop: in 1 ms, since libuv runs a 0 ms
				 * timer started from a timer callback in the same pass.
				 * A kick already due is left as it is: restarting it on
				 * every answer would hold new requests back for as long
				 * as answers keep coming. */
				if (!uv_is_active((uv_handle_t *)&st->kick))
					uv_timer_start(&st->kick, on_kick, 1, 0);
				return;
			}
			sl = st->free_slots;
			st->free_slots = sl->next_free;
			sl->job = job;
			sl->item = job->next_item++;
			sl->attempts = 0;
			sl->conflicts = 0;
			sl->in_chunk = 0;
			job->outstanding++;
			if ((rc = slot_start_item(sl)))
				mm_ddb_slot_finish(sl, rc, NULL);
			st->pump_bytes += sl->body.len;
		}
		if (job->outstanding > 0 || (!job->stop && job->next_item < job->nitems)) {
			pp = &job->next;
			continue;
		}
		if (job->kind == J_APPLY && job->rc == 0 && mm_ddb_apply_next_phase(st, job))
			continue;
		next = job->next;
		*pp = next;
		job_complete(st, job);
		mm_ddb_job_free(job);
		/* The callback may have queued jobs (at the tail) or closed us. */
	}
}

static void on_response(void *arg, const mm_http_response_t *res)
{
	ddb_slot_t *sl = arg;
	mm_ddb_t *st = sl->st;
	char err[96], detail[400];
	int cls;

	ddb_count(st, sl->op, res->ns);
	if (sl->kind == K_PRUNE && (res->status != 0 || res->code != 200)) {
		/* Best effort: the delta is durable already; stale tokens stay. */
		mm_ddb_slot_finish(sl, 0, NULL);
		goto out;
	}
	if (res->status != 0) {
		st->stats.transport_errors++;
		snprintf(detail, sizeof(detail), "%s", res->error);
		mm_ddb_slot_retry(sl, detail);
		goto out;
	}
	if (res->code == 200) {
		if (mm_jtree_parse(&sl->tree, (const char *)res->body, res->len) != 0) {
			snprintf(detail, sizeof(detail), "unreadable answer: %s", mm_diag_msg());
			mm_ddb_slot_retry(sl, detail);
			goto out;
		}
		cls = -1;
	} else {
		cls = ddb_classify(res->code, res->body, res->len, &sl->tree, err, sizeof(err),
				   detail, sizeof(detail));
		if (res->code >= 500)
			st->stats.server_errors++;
		else if (strstr(err, "Throughput") || strstr(err, "Throttling") ||
			 strstr(err, "RequestLimit"))
			st->stats.throttled++;
		if (cls == R_RETRY) {
			mm_ddb_slot_retry(sl, detail);
			goto out;
		}
		if (cls == R_FATAL) {
			if (sl->job->kind == J_CALL && sl->job->call_err)
				snprintf(sl->job->call_err, DDB_ERR_MAX, "%s", err);
			mm_ddb_slot_finish(sl, MM_ESTORE, detail);
			goto out;
		}
	}
	if (sl->job->kind == J_CALL && sl->job->call_raw && cls == -1)
		mm_ddb_slot_finish(sl, mm_buf_append(sl->job->call_out, res->body, res->len), NULL);
	else if (sl->job->kind == J_APPLY)
		mm_ddb_apply_answer(sl, cls == R_COND);
	else if (sl->job->kind == J_GET || sl->job->kind == J_CALL) {
		if (cls == R_COND && sl->job->call_cond_failed)
			*sl->job->call_cond_failed = 1;
		if (cls == R_COND && !sl->job->call_cond_ok)
			mm_ddb_slot_finish(sl, MM_ESTORE, detail);
		else if (sl->job->kind == J_GET)
			mm_ddb_get_answer(sl);
		else
			mm_ddb_call_answer(sl);
	} else
		mm_ddb_claim_answer(sl, cls == R_COND);
out:
	ddb_pump(st);
}

/* Builds {"TableName":T,"Key":{pk,sk},"ConsistentRead":true} for a GetItem. */
static int slot_start_item(ddb_slot_t *sl)
{
	switch (sl->job->kind) {
	case J_APPLY:
		return mm_ddb_start_apply_item(sl);
	case J_GET:
		return mm_ddb_start_get_item(sl);
	case J_CALL:
		return mm_ddb_start_call_item(sl);
	default:
		return mm_ddb_start_claim_item(sl);
	}
}

int mm_ddb_get_stats(const mm_store_t *base, mm_ddb_stats_t *out)
{
	mm_ddb_t *st = mm_ddb_of(base);

	if (st == NULL || out == NULL)
		return mm_diag_set(MM_EINVAL, "dynamodb: not a DynamoDB store");
	*out = st->stats;
	out->apply_ns_p50 = hist_pct(st, 0.50);
	out->apply_ns_p99 = hist_pct(st, 0.99);
	if (out->apply_ns_p50 > out->apply_ns_max)
		out->apply_ns_p50 = out->apply_ns_max;
	if (out->apply_ns_p99 > out->apply_ns_max)
		out->apply_ns_p99 = out->apply_ns_max;
	return 0;
}
