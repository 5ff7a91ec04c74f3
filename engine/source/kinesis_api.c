/*
 * kinesis_api.c: the signed AWS JSON-protocol client of the Kinesis source
 * (kinesis_api.h).
 *
 * Each call is a small heap record (kept on a list so that close can free
 * the calls it abandons) holding the caller's callback; the body is signed
 * with the client's signer at send time and copied by the HTTP client. The
 * answer is parsed into the client's one tree, which is reused by every
 * call: the callback runs before the next answer is parsed (all on the loop
 * thread), and callers copy what they keep.
 *
 * Credentials from the container endpoint (ECS, Lambda) are fetched on the
 * loop, never at open: open only finds where they come from, and the first
 * call starts the fetch. Calls made before they arrive wait on a FIFO with a
 * copy of their body and are sent, signed, once the answer is in; if the
 * fetch fails they are answered with a retriable MM_EIO naming the endpoint,
 * so each caller backs off as for any transient failure, and the next call
 * fetches again. A client opened during a hot reload therefore never stalls
 * the loop on a slow or failing endpoint.
 */
#include "kinesis_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../aws/awsrpc.h"
#include "../http/http.h"
#include "../lib/error.h"
#include "../lib/log.h"

#define KAPI_TREE_KEEP (4u << 20) /* a GetRecords answer may be 10 MB: trim after */

typedef struct kapi_call {
	mm_kapi_t *api;
	mm_kapi_cb cb;
	void *arg;
	char op[48];
	void *body;             /* owned copy while waiting for credentials */
	size_t len;
	struct kapi_call *prev, *next;
} kapi_call_t;

struct mm_kapi {
	uv_loop_t *loop;
	const char *who;
	char *service, *target, *content_type, *region, *url, *host;
	long timeout_ms;
	mm_aws_creds_t creds;
	mm_sigv4_t sig;
	mm_http_t *http;
	mm_buf_t hdr;
	mm_jtree_t tree;
	kapi_call_t *calls;          /* sent, answer pending */
	kapi_call_t *waiting, **waiting_tail; /* FIFO: waiting for credentials */
	int creds_missing;           /* container credentials not fetched yet */
	int fetching;                /* their fetch is in flight */
	int closing;
	void (*done)(void *arg);
	void *done_arg;
};

static void kapi_call_free(kapi_call_t *c)
{
	free(c->body);
	free(c);
}

static void kapi_free(mm_kapi_t *api)
{
	while (api->calls) {
		kapi_call_t *c = api->calls;

		api->calls = c->next;
		kapi_call_free(c);
	}
	while (api->waiting) {
		kapi_call_t *c = api->waiting;

		api->waiting = c->next;
		kapi_call_free(c);
	}
	mm_aws_creds_free(&api->creds);
	mm_sigv4_free(&api->sig);
	mm_buf_free(&api->hdr);
	mm_jtree_free(&api->tree);
	free(api->service);
	free(api->target);
	free(api->content_type);
	free(api->region);
	free(api->url);
	free(api->host);
	free(api);
}

int mm_kapi_open(uv_loop_t *loop, const mm_kapi_config_t *cfg, mm_kapi_t **out)
{
	mm_kapi_t *api = calloc(1, sizeof(*api));
	mm_http_options_t hopt = {.max_connections = 16};
	const char *region, *endpoint;
	char def[160];
	int rc;

	if (api == NULL)
		return mm_diag_set(MM_ENOMEM, "%s: out of memory", cfg->who);
	api->loop = loop;
	api->who = cfg->who;
	api->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 10000;
	region = mm_aws_env_or(cfg->region, "AWS_REGION", "AWS_DEFAULT_REGION");
	api->region = strdup(region ? region : "us-east-1");
	api->service = strdup(cfg->service);
	api->target = strdup(cfg->target);
	api->content_type = strdup(cfg->content_type);
	if (!api->region || !api->service || !api->target || !api->content_type) {
		rc = mm_diag_set(MM_ENOMEM, "%s: out of memory", cfg->who);
		goto fail;
	}
	endpoint = cfg->endpoint;
	if (endpoint == NULL || *endpoint == '\0') {
		snprintf(def, sizeof(def), "https://%s.%s.amazonaws.com", cfg->service, api->region);
		endpoint = def;
	}
	if ((rc = mm_aws_endpoint(cfg->who, endpoint, &api->url, &api->host)))
		goto fail;
	if ((rc = mm_aws_creds_find(&api->creds, cfg->who)) < 0)
		goto fail;
	api->creds_missing = rc == 1;
	api->waiting_tail = &api->waiting;
	if ((rc = mm_http_open(loop, &hopt, &api->http)))
		goto fail;
	mm_aws_creds_start(&api->creds, loop, api->http);
	*out = api;
	return 0;
fail:
	kapi_free(api);
	return rc;
}

/* Signs a POST of body to op; fills api->hdr with the header lines and
 * ptrs with pointers to them. Returns the count or a negative code. */
static int kapi_sign(mm_kapi_t *api, const char *op, const void *body, size_t len,
		     const char *ptrs[8])
{
	char tgt[128];
	mm_aws_rpc_t rpc = {.region = api->region, .service = api->service, .host = api->host,
			    .content_type = api->content_type, .target = tgt,
			    .time_s = (int64_t)time(NULL)};

	snprintf(tgt, sizeof(tgt), "%s.%s", api->target, op);
	return mm_aws_rpc_sign(&api->sig, &api->creds, &rpc, body, len, &api->hdr, ptrs);
}

static void kapi_unlink(mm_kapi_t *api, kapi_call_t *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		api->calls = c->next;
	if (c->next)
		c->next->prev = c->prev;
}

/* Names the exception of a failed answer and says what it means. */
static int kapi_classify(mm_kapi_t *api, const mm_http_response_t *res, char *err, size_t ecap,
			 char *detail, size_t dcap)
{
	const mm_jnode_t *type = NULL, *msg = NULL;
	const char *name = "";

	if (res->status != 0) {
		snprintf(err, ecap, "%s", "");
		snprintf(detail, dcap, "%s", res->error);
		return MM_EIO;
	}
	if (res->len > 0 && mm_jtree_parse(&api->tree, (const char *)res->body, res->len) == 0) {
		type = mm_jnode_get(api->tree.root, "__type");
		msg = mm_jnode_get(api->tree.root, "message");
		if (msg == NULL)
			msg = mm_jnode_get(api->tree.root, "Message");
	}
	if (type && type->type == MM_JSON_STRING) {
		const char *hash = strrchr(type->s, '#');

		name = hash ? hash + 1 : type->s;
	}
	snprintf(err, ecap, "%s", name);
	snprintf(detail, dcap, "HTTP %ld %s%s%s", res->code, *name ? name : "(no error type)",
		 msg && msg->type == MM_JSON_STRING ? ": " : "",
		 msg && msg->type == MM_JSON_STRING ? msg->s : "");
	if (strcmp(name, "ProvisionedThroughputExceededException") == 0 ||
	    strcmp(name, "ThrottlingException") == 0 || strcmp(name, "LimitExceededException") == 0 ||
	    strcmp(name, "RequestLimitExceeded") == 0 || res->code == 429)
		return MM_EAGAIN;
	if (res->code >= 500 || strcmp(name, "ExpiredTokenException") == 0 ||
	    strcmp(name, "InternalFailure") == 0 || strcmp(name, "ServiceUnavailable") == 0)
		return MM_EIO;
	return MM_EINVAL;
}

static void kapi_on_response(void *arg, const mm_http_response_t *res)
{
	kapi_call_t *c = arg;
	mm_kapi_t *api = c->api;
	mm_kapi_answer_t a = {.bytes = res->len};
	char err[96], detail[512];

	kapi_unlink(api, c);
	if (res->status == 0 && res->code == 200) {
		if (mm_jtree_parse(&api->tree, (const char *)res->body, res->len) == 0) {
			a.root = api->tree.root;
			a.error = a.detail = "";
		} else {
			snprintf(detail, sizeof(detail), "unreadable answer: %s", mm_diag_msg());
			a.status = MM_EIO;
			a.error = "";
			a.detail = detail;
		}
	} else {
		a.status = kapi_classify(api, res, err, sizeof(err), detail, sizeof(detail));
		a.error = err;
		a.detail = detail;
	}
	c->cb(c->arg, &a);
	kapi_call_free(c);
	mm_jtree_trim(&api->tree, KAPI_TREE_KEEP);
}

/* Signs and sends c (its body, or c->body when it waited); on success c is
 * on the list of calls in flight. Returns 0 or an error (c untouched). */
static int kapi_send(mm_kapi_t *api, kapi_call_t *c, const void *body, size_t len)
{
	const char *hdrs[8];
	mm_http_request_t req;
	int n, rc;

	if ((n = kapi_sign(api, c->op, body, len, hdrs)) < 0)
		return n;
	req = (mm_http_request_t){.method = "POST", .url = api->url, .headers = hdrs,
				  .nheaders = (size_t)n, .body = body, .body_len = len,
				  .timeout_ms = api->timeout_ms};
	if ((rc = mm_http_request(api->http, &req, kapi_on_response, c)))
		return rc;
	c->prev = NULL;
	c->next = api->calls;
	if (api->calls)
		api->calls->prev = c;
	api->calls = c;
	return 0;
}

/* Answers a call that could not be sent with a retriable failure. */
static void kapi_fail(kapi_call_t *c, const char *detail)
{
	mm_kapi_answer_t a = {.status = MM_EIO, .error = "", .detail = detail};

	c->cb(c->arg, &a);
}

/* The container credentials arrived (status 0) or could not be fetched:
 * sends or fails every call that waited for them, oldest first. */
static void kapi_on_creds(void *arg, int status, const char *detail)
{
	mm_kapi_t *api = arg;
	kapi_call_t *c = api->waiting, *next;

	api->fetching = 0;
	api->waiting = NULL;
	api->waiting_tail = &api->waiting;
	if (status == 0)
		api->creds_missing = 0;
	else
		mm_log(MM_LOG_WARN, api->who, "%s", detail);
	for (; c; c = next) {
		next = c->next;
		/* A callback may close the client: the rest are abandoned. */
		if (api->closing) {
			kapi_call_free(c);
			continue;
		}
		if (status) {
			kapi_fail(c, detail);
			kapi_call_free(c);
		} else if (kapi_send(api, c, c->body, c->len) != 0) {
			kapi_fail(c, mm_diag_msg());
			kapi_call_free(c);
		} else {
			free(c->body);
			c->body = NULL;
		}
	}
}

/* Queues c (with a copy of its body) until the credentials are fetched,
 * starting their fetch unless it is in flight. */
static int kapi_wait(mm_kapi_t *api, kapi_call_t *c, const void *body, size_t len)
{
	int rc;

	if (!api->fetching) {
		if ((rc = mm_aws_creds_fetch(&api->creds, kapi_on_creds, api)))
			return rc;
		api->fetching = 1;
	}
	if (len > 0) {
		if ((c->body = malloc(len)) == NULL)
			return mm_diag_set(MM_ENOMEM, "%s: out of memory", api->who);
		memcpy(c->body, body, len);
	}
	c->len = len;
	c->next = NULL;
	*api->waiting_tail = c;
	api->waiting_tail = &c->next;
	return 0;
}

int mm_kapi_call(mm_kapi_t *api, const char *op, const void *body, size_t len, mm_kapi_cb cb,
		 void *arg)
{
	kapi_call_t *c;
	int rc;

	if (api->closing)
		return mm_diag_set(MM_ECLOSED, "%s: client is closing", api->who);
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return mm_diag_set(MM_ENOMEM, "%s: out of memory", api->who);
	c->api = api;
	c->cb = cb;
	c->arg = arg;
	snprintf(c->op, sizeof(c->op), "%s", op);
	rc = api->creds_missing ? kapi_wait(api, c, body, len) : kapi_send(api, c, body, len);
	if (rc)
		kapi_call_free(c);
	return rc;
}

int mm_kapi_retriable(const mm_kapi_answer_t *a)
{
	return a->status == MM_EIO || a->status == MM_EAGAIN;
}

const char *mm_kapi_url(const mm_kapi_t *api)
{
	return api->url;
}

static void kapi_on_creds_closed(void *arg)
{
	mm_kapi_t *api = arg;
	void (*done)(void *) = api->done;
	void *done_arg = api->done_arg;

	kapi_free(api);
	if (done)
		done(done_arg);
}

void mm_kapi_close(mm_kapi_t *api, void (*done)(void *arg), void *arg)
{
	api->closing = 1;
	api->done = done;
	api->done_arg = arg;
	/* Abandons the calls in flight without their callbacks; their records
	 * are freed with the client. */
	mm_http_close(api->http);
	api->http = NULL;
	mm_aws_creds_close(&api->creds, kapi_on_creds_closed, api);
}
