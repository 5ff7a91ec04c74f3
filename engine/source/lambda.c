/*
 * lambda.c: the "lambda" source, an AWS Lambda custom runtime. The process
 * started by Lambda (`murmur lambda`) asks the Runtime API for invocations,
 * hands their records to the pipelines as one batch, makes them durable and
 * answers with the records that are not.
 *
 * Runtime API (version 2018-06-01, at http://$AWS_LAMBDA_RUNTIME_API), over
 * the loop's HTTP client:
 *   GET  /runtime/invocation/next           the next event; no time limit,
 *                                           Lambda freezes us while we wait
 *   POST /runtime/invocation/{id}/response  {"batchItemFailures":[...]}
 *   POST /runtime/invocation/{id}/error     an event we cannot read
 * The headers of /next give the request id, the deadline
 * (Lambda-Runtime-Deadline-Ms, epoch ms) and the trace id
 * (Lambda-Runtime-Trace-Id, exported as _X_AMZN_TRACE_ID).
 *
 * One invocation at a time:
 *   1. decode the event (lambda_event.c); a Kinesis batch switches the
 *      position key to its shard, "lambda:<stream ARN>/<shard>#<consumer>",
 *      and reads the position stored there: the sequence number of the last
 *      record whose effect is durable. Records at or below it were applied
 *      by an earlier invocation (Lambda redelivers from the first failure it
 *      was told about, so overlaps are normal) and are skipped.
 *   2. deliver the rest as one batch (the record id, MM_REC_ID, is the
 *      eventID "<shard>:<sequence number>" or the messageId, so a pipeline
 *      with `dedup = { id = murmur.record_id }`-style ids or a shared dedup on
 *      an event field recognises repeats across sources);
 *   3. ask the engine to flush (sink->flush): deltas, dead letters and the
 *      position become durable together;
 *   4. answer: no failures when the flush succeeded; every delivered record
 *      when it failed or when the deadline (minus `margin`) comes first. The
 *      flush is never cut short: it goes on retrying, and the next /next is
 *      asked only once it has finished, so the redelivered records meet a
 *      position (or claims) that already says what became durable.
 * Kinesis redelivers from the lowest sequence number reported, so reporting
 * every delivered record and reporting the first one are equivalent; all are
 * listed so the answer is also right for SQS, where each message is retried
 * on its own.
 *
 * Records whose payload is not valid base64 (or DynamoDB JSON) are delivered
 * flagged MM_REC_UNDECODABLE: the pipelines send them to the dead-letter
 * destination and they never fail the batch.
 *
 * Deferred records (on a shared store, ids another live writer has claimed)
 * are not durable after the flush: the flush is repeated until they are,
 * and the deadline reports them meanwhile.
 *
 * Threads: the loop thread only. Handles: three timers embedded here, freed
 * in the last close callback; the HTTP client is closed by close().
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../codec/json.h"
#include "../http/http.h"
#include "../lib/error.h"
#include "../lib/log.h"
#include "../lib/time.h"
#include "lambda_event.h"
#include "source.h"

extern const mm_source_vtable_t mm_source_lambda_vtable;

#define LSRC_PATH "/2018-06-01/runtime/invocation/"

struct mm_lsrc_cfg {
	const char *api;
	const char *consumer;
	int64_t margin_ms;
};

typedef struct mm_lsrc {
	mm_source_t base;
	mm_http_t *http;
	char api[256];
	char consumer[201];
	int64_t margin_ms;
	uv_timer_t deadline; /* the invocation's deadline minus margin */
	uv_timer_t kick;     /* resumes the invocation loop outside a caller */
	uv_timer_t again;    /* flushes again while records are deferred */
	uint64_t again_ms;
	int handles;         /* timers not yet closed */
	int started, stopped, paused, closing;
	int waiting;         /* a GET /next or a POST is in flight */
	int reading;         /* the shard's position is being read */
	int flushing;        /* the invocation's records are not all durable yet */
	int responded;       /* this invocation's answer is sent */
	int has_event;       /* an event waits for delivery (arrived while paused) */
	char reqid[128];
	int64_t deadline_ms;
	mm_lambda_event_t ev;
	size_t first;        /* records of ev before this one were applied earlier */
	mm_record_t *recs;
	size_t cap;
	mm_buf_t body, url, pos;
	uint64_t invocations, failed_invocations, failures_reported, dead_letters, skipped, errors;
	uint64_t deferrals;
	void (*close_done)(void *);
	void *close_arg;
} mm_lsrc_t;

static void lsrc_next(mm_lsrc_t *ls);
static void on_kick(uv_timer_t *t);

static void lsrc_kick_later(mm_lsrc_t *ls)
{
	if (!ls->closing)
		uv_timer_start(&ls->kick, on_kick, 0, 0);
}

static int lsrc_url(mm_lsrc_t *ls, const char *tail)
{
	ls->url.len = 0;
	if (mm_buf_printf(&ls->url, "http://%s" LSRC_PATH "%s", ls->api, tail) ||
	    mm_buf_put_u8(&ls->url, 0))
		return mm_diag_set(MM_ENOMEM, "lambda: out of memory");
	return 0;
}

static void lsrc_fail(mm_lsrc_t *ls, int err, const char *detail)
{
	ls->errors++;
	if (!ls->stopped) {
		ls->stopped = 1;
		ls->base.sink.error(ls->base.sink.ctx, &ls->base, err, detail);
	}
}

static void on_posted(void *arg, const mm_http_response_t *res)
{
	mm_lsrc_t *ls = arg;

	ls->waiting = 0;
	if (res->status != 0 || res->code != 202) {
		/* 400/403/413 name a bad answer of ours; 500 a container error after
		 * which the runtime should exit. Either way the invocation's outcome
		 * is Lambda's now, and it redelivers what it could not record. */
		char msg[256];

		snprintf(msg, sizeof(msg), "the Runtime API refused the answer for %s: HTTP %ld %s",
			 ls->reqid, res->code, res->error);
		if (res->status != 0 || res->code >= 500) {
			lsrc_fail(ls, MM_EIO, msg);
			return;
		}
		ls->errors++;
		mm_log(MM_LOG_ERROR, ls->base.id, "%s", msg);
	}
	if (!ls->flushing)
		lsrc_next(ls);
}

static void lsrc_post(mm_lsrc_t *ls, const char *what, const char *extra_header)
{
	const char *hdrs[2] = {"Content-Type: application/json", extra_header};
	mm_http_request_t req = {.method = "POST", .headers = hdrs, .nheaders = extra_header ? 2 : 1,
				 .body = ls->body.p, .body_len = ls->body.len, .timeout_ms = 10000};
	char tail[192];
	int rc;

	snprintf(tail, sizeof(tail), "%s/%s", ls->reqid, what);
	if ((rc = lsrc_url(ls, tail))) {
		lsrc_fail(ls, rc, mm_diag_msg());
		return;
	}
	req.url = (const char *)ls->url.p;
	ls->responded = 1;
	ls->waiting = 1;
	if ((rc = mm_http_request(ls->http, &req, on_posted, ls))) {
		ls->waiting = 0;
		lsrc_fail(ls, rc, mm_diag_msg());
	}
}

/* Answers the invocation: with every delivered record as a failure, or with
 * none. */
static void lsrc_respond(mm_lsrc_t *ls, int failed)
{
	int rc;

	ls->body.len = 0;
	rc = mm_buf_put_str(&ls->body, "{\"batchItemFailures\":[");
	for (size_t i = ls->first; failed && i < ls->ev.n && rc == 0; i++) {
		const mm_lambda_record_t *r = &ls->ev.recs[i];

		rc |= mm_buf_put_str(&ls->body, i > ls->first ? ",{\"itemIdentifier\":" : "{\"itemIdentifier\":");
		rc |= mm_json_quote(mm_lambda_span(&ls->ev, r->item), r->item.len, &ls->body);
		rc |= mm_buf_put_u8(&ls->body, '}');
	}
	rc |= mm_buf_put_str(&ls->body, "]}");
	if (rc) {
		lsrc_fail(ls, MM_ENOMEM, "lambda: out of memory for the answer");
		return;
	}
	if (failed) {
		ls->failed_invocations++;
		ls->failures_reported += ls->ev.n - ls->first;
	}
	lsrc_post(ls, "response", NULL);
}

/* An event we cannot read at all: an invocation error, so Lambda retries it
 * or sends it to the function's own failure destination. */
static void lsrc_error(mm_lsrc_t *ls, const char *type, const char *msg)
{
	ls->errors++;
	mm_log(MM_LOG_ERROR, ls->base.id, "invocation %s: %s", ls->reqid, msg);
	ls->body.len = 0;
	if (mm_buf_put_str(&ls->body, "{\"errorMessage\":") ||
	    mm_json_quote(msg, strlen(msg), &ls->body) ||
	    mm_buf_printf(&ls->body, ",\"errorType\":\"%s\",\"stackTrace\":[]}", type)) {
		lsrc_fail(ls, MM_ENOMEM, "lambda: out of memory for the error");
		return;
	}
	lsrc_post(ls, "error", "Lambda-Runtime-Function-Error-Type: Runtime.InvalidEvent");
}

static void on_deadline(uv_timer_t *t)
{
	mm_lsrc_t *ls = t->data;

	if (ls->responded)
		return;
	/* The store may retry a throttled or failing position read for longer
	 * than the invocation lasts: answer before Lambda kills the runtime.
	 * Nothing was delivered, so the whole batch comes back; the next /next
	 * waits for the read to end (on_position). */
	if (ls->reading) {
		mm_log(MM_LOG_WARN, ls->base.id, "invocation %s: the shard's position was not read "
		       "%" PRId64 " ms before the deadline; its %zu records are reported as failures",
		       ls->reqid, ls->margin_ms, ls->ev.n);
		lsrc_respond(ls, 1);
		return;
	}
	if (!ls->flushing)
		return;
	mm_log(MM_LOG_WARN, ls->base.id, "invocation %s: the flush did not finish %" PRId64
	       " ms before the deadline; its %zu records are reported as failures and the flush "
	       "goes on", ls->reqid, ls->margin_ms, ls->ev.n - ls->first);
	lsrc_respond(ls, 1);
}

static void on_flushed(void *arg, int status);

static void on_again(uv_timer_t *t)
{
	mm_lsrc_t *ls = t->data;

	if (!ls->stopped)
		ls->base.sink.flush(ls->base.sink.ctx, &ls->base, on_flushed, ls);
}

static void on_flushed(void *arg, int status)
{
	mm_lsrc_t *ls = arg;

	/* Records whose ids another live writer holds were deferred: they are
	 * not durable yet. Flush again (20 ms, doubling to 1 s) until that
	 * writer commits (they are duplicates) or releases (they are ours);
	 * the deadline reports them as failures meanwhile. */
	if (status == 0 && !ls->stopped && ls->base.sink.pending &&
	    ls->base.sink.pending(ls->base.sink.ctx, &ls->base) > 0) {
		ls->deferrals++;
		ls->again_ms = ls->again_ms ? (ls->again_ms * 2 > 1000 ? 1000 : ls->again_ms * 2) : 20;
		uv_timer_start(&ls->again, on_again, ls->again_ms, 0);
		return;
	}
	ls->again_ms = 0;
	ls->flushing = 0;
	uv_timer_stop(&ls->deadline);
	if (!ls->responded) {
		if (status != 0)
			mm_log(MM_LOG_WARN, ls->base.id, "invocation %s: flush failed (%s); its %zu "
			       "records are reported as failures", ls->reqid, mm_err_name(status),
			       ls->ev.n - ls->first);
		lsrc_respond(ls, status != 0);
	} else if (!ls->waiting) {
		lsrc_next(ls);
	}
}

/* Switches the position key to the batch's shard and starts reading the
 * position stored there; on_position goes on. Returns 0 or an error. */
static void on_position(void *arg, int status, const char *detail);

static int lsrc_position(mm_lsrc_t *ls)
{
	const mm_lambda_event_t *ev = &ls->ev;
	const mm_lambda_record_t *r0 = &ev->recs[0];
	int64_t wait;
	int n;

	n = snprintf(ls->base.pos_id, sizeof(ls->base.pos_id), "lambda:%.*s/%.*s#%s",
		     (int)ev->source.len, mm_lambda_span(ev, ev->source), (int)r0->shard.len,
		     mm_lambda_span(ev, r0->shard), ls->consumer);
	if (n < 0 || (size_t)n >= sizeof(ls->base.pos_id))
		return mm_diag_set(MM_EINVAL, "lambda: the stream ARN and shard id are too long "
				   "for a position key");
	ls->pos.len = 0;
	if (ls->base.sink.position == NULL)
		return mm_diag_set(MM_ENOTSUP, "lambda: the engine reads no positions");
	wait = ls->deadline_ms - ls->margin_ms - mm_now_ms();
	uv_timer_start(&ls->deadline, on_deadline, wait > 0 ? (uint64_t)wait : 0, 0);
	ls->reading = 1;
	return ls->base.sink.position(ls->base.sink.ctx, &ls->base, NULL, &ls->pos, on_position, ls);
}

static void lsrc_deliver(mm_lsrc_t *ls);

/* The shard's position arrived: skips the records it covers (applied by an
 * earlier invocation), then delivers the rest. Without the position nothing
 * is known to be applied: nothing is delivered, and the whole batch is
 * reported, for Lambda to send again. */
static void on_position(void *arg, int status, const char *detail)
{
	mm_lsrc_t *ls = arg;
	const mm_lambda_event_t *ev = &ls->ev;

	ls->reading = 0;
	uv_timer_stop(&ls->deadline);
	if (ls->stopped)
		return;
	/* The deadline answered while the read went on: the batch was reported,
	 * and the next invocation may come now that the store is free. */
	if (ls->responded) {
		if (!ls->waiting)
			lsrc_next(ls);
		return;
	}
	if (status != 0 && status != MM_ENOTFOUND && status != MM_ENOTSUP) {
		mm_log(MM_LOG_ERROR, ls->base.id, "invocation %s: cannot read the shard's position "
		       "(%s: %s); the batch is reported as failed", ls->reqid, mm_err_name(status),
		       detail ? detail : "");
		lsrc_respond(ls, 1);
		return;
	}
	while (status == 0 && ls->first < ev->n) {
		const mm_lambda_record_t *r = &ev->recs[ls->first];

		if (mm_lambda_seq_cmp(mm_lambda_span(ev, r->seq), r->seq.len, (const char *)ls->pos.p,
				      ls->pos.len) > 0)
			break;
		ls->first++;
	}
	ls->skipped += ls->first;
	if (ls->first > 0)
		mm_log(MM_LOG_INFO, ls->base.id, "invocation %s: %zu records up to sequence number "
		       "%.*s were applied before; skipped", ls->reqid, ls->first, (int)ls->pos.len,
		       (const char *)ls->pos.p);
	if (ls->first == ev->n) {
		lsrc_respond(ls, 0);
		return;
	}
	/* A read that outlived the invocation's budget leaves no time to flush. */
	if (mm_now_ms() >= ls->deadline_ms - ls->margin_ms) {
		mm_log(MM_LOG_WARN, ls->base.id, "invocation %s: the shard's position came too late "
		       "to flush before the deadline; the batch is reported as failed", ls->reqid);
		lsrc_respond(ls, 1);
		return;
	}
	ls->has_event = 1;
	if (!ls->paused)
		lsrc_deliver(ls);
}

/* Delivers the decoded event as one batch and asks for the flush. */
static void lsrc_deliver(mm_lsrc_t *ls)
{
	const mm_lambda_event_t *ev = &ls->ev;
	size_t n = ev->n - ls->first;
	mm_batch_t b = {.src = &ls->base, .now_ms = mm_now_ms()};
	int64_t wait;

	ls->has_event = 0;
	if (n > ls->cap) {
		mm_record_t *grown = realloc(ls->recs, n * sizeof(*grown));

		if (grown == NULL) {
			lsrc_fail(ls, MM_ENOMEM, "lambda: out of memory for a batch");
			return;
		}
		ls->recs = grown;
		ls->cap = n;
	}
	for (size_t i = 0; i < n; i++) {
		const mm_lambda_record_t *r = &ev->recs[ls->first + i];
		mm_record_t *rec = &ls->recs[i];

		memset(rec, 0, sizeof(*rec));
		rec->p = mm_lambda_span(ev, r->data);
		rec->len = (uint32_t)r->data.len;
		rec->orig_len = r->data.len;
		rec->offset = ls->first + i;
		rec->ts_ms = r->ts_ms;
		rec->id = mm_lambda_span(ev, r->id);
		rec->id_len = (uint32_t)r->id.len;
		rec->flags = MM_REC_ID;
		if (r->bad) {
			rec->flags |= MM_REC_UNDECODABLE;
			ls->dead_letters++;
			mm_log(MM_LOG_WARN, ls->base.id, "record %.*s: %s; it goes to the dead-letter "
			       "destination", (int)r->id.len, rec->id, r->bad);
		}
		if (r->data.len > ls->base.max_record && r->data.len > MM_REC_PREFIX) {
			rec->flags |= MM_REC_TOOBIG;
			rec->len = MM_REC_PREFIX;
		}
	}
	b.recs = ls->recs;
	b.n = n;
	if (ev->kind == MM_LAMBDA_KINESIS) {
		const mm_lambda_record_t *last = &ev->recs[ev->n - 1];

		b.end_pos = (const uint8_t *)mm_lambda_span(ev, last->seq);
		b.end_pos_len = last->seq.len;
	}
	ls->base.records += n;
	ls->flushing = 1;
	ls->base.sink.deliver(ls->base.sink.ctx, &b);
	wait = ls->deadline_ms - ls->margin_ms - mm_now_ms();
	uv_timer_start(&ls->deadline, on_deadline, wait > 0 ? (uint64_t)wait : 0, 0);
	ls->base.sink.flush(ls->base.sink.ctx, &ls->base, on_flushed, ls);
}

static void on_next(void *arg, const mm_http_response_t *res)
{
	mm_lsrc_t *ls = arg;
	const char *id, *dl, *trace;
	int rc;

	ls->waiting = 0;
	if (ls->stopped)
		return;
	if (res->status != 0 || res->code != 200) {
		char msg[256];

		snprintf(msg, sizeof(msg), "GET invocation/next: HTTP %ld %s", res->code, res->error);
		lsrc_fail(ls, res->status ? res->status : MM_EIO, msg);
		return;
	}
	id = mm_http_response_header(res, "Lambda-Runtime-Aws-Request-Id");
	dl = mm_http_response_header(res, "Lambda-Runtime-Deadline-Ms");
	trace = mm_http_response_header(res, "Lambda-Runtime-Trace-Id");
	if (id == NULL || id[0] == '\0' || strlen(id) >= sizeof(ls->reqid) || strchr(id, '/')) {
		lsrc_fail(ls, MM_EIO, "invocation/next answered without a usable "
			  "Lambda-Runtime-Aws-Request-Id");
		return;
	}
	snprintf(ls->reqid, sizeof(ls->reqid), "%s", id);
	ls->deadline_ms = dl ? strtoll(dl, NULL, 10) : 0;
	if (ls->deadline_ms <= 0)
		ls->deadline_ms = mm_now_ms() + 3000; /* Lambda's default timeout */
	/* The X-Ray trace id of this invocation, where the AWS SDKs look. */
	if (trace)
		setenv("_X_AMZN_TRACE_ID", trace, 1);
	else
		unsetenv("_X_AMZN_TRACE_ID");
	ls->invocations++;
	ls->responded = 0;
	ls->first = 0;
	rc = mm_lambda_event_decode(&ls->ev, (const char *)res->body, res->len);
	if (rc == MM_ENOMEM) {
		lsrc_fail(ls, rc, mm_diag_msg());
		return;
	}
	if (rc) {
		lsrc_error(ls, "Runtime.InvalidEvent", mm_diag_msg());
		return;
	}
	if (ls->ev.kind == MM_LAMBDA_KINESIS && ls->ev.n > 0) {
		if ((rc = lsrc_position(ls))) {
			ls->reading = 0;
			on_position(ls, rc, mm_diag_msg());
		}
		return;
	}
	if (ls->first == ls->ev.n) {
		lsrc_respond(ls, 0);
		return;
	}
	ls->has_event = 1;
	if (!ls->paused)
		lsrc_deliver(ls);
}

static void lsrc_next(mm_lsrc_t *ls)
{
	mm_http_request_t req = {.method = "GET"};
	int rc;

	if (ls->stopped || ls->waiting || ls->reading || ls->flushing || ls->has_event || ls->paused)
		return;
	if ((rc = lsrc_url(ls, "next"))) {
		lsrc_fail(ls, rc, mm_diag_msg());
		return;
	}
	req.url = (const char *)ls->url.p;
	ls->waiting = 1;
	if ((rc = mm_http_request(ls->http, &req, on_next, ls))) {
		ls->waiting = 0;
		lsrc_fail(ls, rc, mm_diag_msg());
	}
}

static void on_kick(uv_timer_t *t)
{
	mm_lsrc_t *ls = t->data;

	if (ls->has_event && !ls->paused && !ls->stopped)
		lsrc_deliver(ls);
	else
		lsrc_next(ls);
}

/* ---- vtable ---- */

static const mm_option_t mm_lsrc_options[] = {
	{MM_OPT_STRING, "api", NULL, offsetof(struct mm_lsrc_cfg, api),
	 "host:port of the Runtime API (default: AWS_LAMBDA_RUNTIME_API)."},
	{MM_OPT_STRING, "consumer", "lambda", offsetof(struct mm_lsrc_cfg, consumer),
	 "Whose positions these are: the shard positions are stored as "
	 "lambda:<stream ARN>/<shard>#<consumer> (default: the function name)."},
	{MM_OPT_DURATION_MS, "margin", "1s", offsetof(struct mm_lsrc_cfg, margin_ms),
	 "Time kept before the invocation's deadline: a flush still running then is reported "
	 "as failed records (and goes on)."},
	{0},
};

static int mm_lsrc_open(uv_loop_t *loop, const mm_kv_t *kv, size_t nkv, const mm_source_sink_t *sink,
			mm_source_t **out)
{
	struct mm_lsrc_cfg cfg;
	mm_lsrc_t *ls;
	const char *api;
	int rc;

	if ((rc = mm_options_apply(mm_lsrc_options, "lambda source", kv, nkv, &cfg)))
		return rc;
	api = cfg.api ? cfg.api : getenv("AWS_LAMBDA_RUNTIME_API");
	if (api == NULL || api[0] == '\0' || strlen(api) >= 256 || strchr(api, '/'))
		return mm_diag_set(MM_EINVAL, "lambda source: AWS_LAMBDA_RUNTIME_API is not set to "
				   "host:port (murmur lambda runs inside AWS Lambda)");
	if (strlen(cfg.consumer) > 200 || strchr(cfg.consumer, '#'))
		return mm_diag_set(MM_EINVAL, "lambda source: consumer '%s' is longer than 200 bytes "
				   "or holds '#'", cfg.consumer);
	if ((ls = calloc(1, sizeof(*ls))) == NULL)
		return mm_diag_set(MM_ENOMEM, "lambda source: out of memory");
	if ((rc = mm_http_open(loop, NULL, &ls->http))) {
		free(ls);
		return rc;
	}
	ls->base.vt = &mm_source_lambda_vtable;
	ls->base.loop = loop;
	ls->base.sink = *sink;
	ls->base.max_record = 1 << 20;
	snprintf(ls->base.id, sizeof(ls->base.id), "lambda:%s", api);
	snprintf(ls->base.pos_id, sizeof(ls->base.pos_id), "lambda#%s", cfg.consumer);
	snprintf(ls->api, sizeof(ls->api), "%s", api);
	snprintf(ls->consumer, sizeof(ls->consumer), "%s", cfg.consumer);
	ls->margin_ms = cfg.margin_ms;
	uv_timer_init(loop, &ls->deadline);
	uv_timer_init(loop, &ls->kick);
	uv_timer_init(loop, &ls->again);
	ls->deadline.data = ls->kick.data = ls->again.data = ls;
	ls->handles = 3;
	*out = &ls->base;
	return 0;
}

/* The position given at start is the source-wide key's, which holds nothing:
 * positions are per shard and read with each invocation. */
static int mm_lsrc_start(mm_source_t *src, const uint8_t *pos, size_t len)
{
	mm_lsrc_t *ls = (mm_lsrc_t *)src;

	ls->started = 1;
	lsrc_kick_later(ls);
	return 0;
}

static void mm_lsrc_pause(mm_source_t *src)
{
	((mm_lsrc_t *)src)->paused = 1;
}

static void mm_lsrc_resume(mm_source_t *src)
{
	mm_lsrc_t *ls = (mm_lsrc_t *)src;

	ls->paused = 0;
	if (ls->started)
		lsrc_kick_later(ls);
}

static void mm_lsrc_ack(mm_source_t *src, const uint8_t *pos, size_t len)
{
}

static void mm_lsrc_stop(mm_source_t *src)
{
	mm_lsrc_t *ls = (mm_lsrc_t *)src;

	ls->stopped = 1;
	uv_timer_stop(&ls->kick);
}

static void on_timer_closed(uv_handle_t *h)
{
	mm_lsrc_t *ls = h->data;

	if (--ls->handles > 0)
		return;
	if (ls->close_done)
		ls->close_done(ls->close_arg);
	mm_lambda_event_free(&ls->ev);
	free(ls->recs);
	mm_buf_free(&ls->body);
	mm_buf_free(&ls->url);
	mm_buf_free(&ls->pos);
	free(ls);
}

static void mm_lsrc_close(mm_source_t *src, void (*done)(void *), void *arg)
{
	mm_lsrc_t *ls = (mm_lsrc_t *)src;

	ls->stopped = ls->closing = 1;
	ls->close_done = done;
	ls->close_arg = arg;
	mm_http_close(ls->http);
	uv_close((uv_handle_t *)&ls->deadline, on_timer_closed);
	uv_close((uv_handle_t *)&ls->kick, on_timer_closed);
	uv_close((uv_handle_t *)&ls->again, on_timer_closed);
}

static int mm_lsrc_describe(mm_source_t *src, const mm_record_t *r, mm_buf_t *out)
{
	if (r->flags & MM_REC_ID)
		return mm_buf_printf(out, "record %.*s of invocation %s", (int)r->id_len, r->id,
				     ((mm_lsrc_t *)src)->reqid);
	return mm_buf_printf(out, "record %" PRIu64 " of invocation %s", r->offset,
			     ((mm_lsrc_t *)src)->reqid);
}

static int mm_lsrc_status(mm_source_t *src, mm_buf_t *out)
{
	mm_lsrc_t *ls = (mm_lsrc_t *)src;

	return mm_buf_printf(out, "{\"invocations\":%" PRIu64 ",\"failed_invocations\":%" PRIu64
			     ",\"failures_reported\":%" PRIu64 ",\"dead_letters\":%" PRIu64
			     ",\"skipped\":%" PRIu64 ",\"deferrals\":%" PRIu64 ",\"errors\":%" PRIu64 "}",
			     ls->invocations, ls->failed_invocations, ls->failures_reported,
			     ls->dead_letters, ls->skipped, ls->deferrals, ls->errors);
}

const mm_source_vtable_t mm_source_lambda_vtable = {
	.name = "lambda",
	.options = mm_lsrc_options,
	.open = mm_lsrc_open,
	.start = mm_lsrc_start,
	.pause = mm_lsrc_pause,
	.resume = mm_lsrc_resume,
	.ack = mm_lsrc_ack,
	.stop = mm_lsrc_stop,
	.close = mm_lsrc_close,
	.describe = mm_lsrc_describe,
	.status = mm_lsrc_status,
};
