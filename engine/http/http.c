/*
 * http.c: murmur's own HTTP/1.1 client on a libuv loop (see http.h), the
 * requests side: hosts and their connection limits, queues, deadlines,
 * completion, and the blocking helper. Connections are in http_conn.c,
 * TLS in tls.c, URLs in url.c; the objects are described in http_impl.h.
 *
 * A request is turned into its request head at once (one buffer: request
 * line, Host unless the caller gave one, the caller's lines,
 * Content-Length), so sending it later is one write; the URL's split and
 * host are those of the request before when the URL is the same. It then takes an idle
 * connection of its host, or opens one while the host has fewer than
 * max_connections, or waits in the host's queue (first come, first
 * served) for a connection to come free.
 *
 * Deadlines (each request's timeout_ms, each new connection's
 * connect_timeout_ms) share one uv_timer_t set to the earliest of them;
 * when it fires, every expired one is handled and it is set again.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../lib/error.h"
#include "http_head.h"
#include "http_impl.h"
#include "url.h"

#define HTTP_POOL_MAX 64

void mm_http__maybe_free(mm_http_t *h)
{
	if (h->closing && h->open_handles == 0) {
		free(h->url_memo);
		mm_buf_free(&h->plain);
		mm_buf_free(&h->tlsout);
		free(h);
	}
}

static void on_timer_closed(uv_handle_t *handle)
{
	mm_http_t *h = handle->data;

	h->open_handles--;
	mm_http__maybe_free(h);
}

/* ---- transfers ---- */

static void xfer_free(http_xfer_t *x)
{
	mm_buf_free(&x->head);
	mm_buf_free(&x->body);
	mm_buf_free(&x->resp);
	mm_buf_free(&x->hdrs);
	mm_buf_free(&x->raw);
	free(x);
}

static void xfer_unlink(mm_http_t *h, http_xfer_t *x)
{
	if (x->prev)
		x->prev->next = x->next;
	else
		h->xfers = x->next;
	if (x->next)
		x->next->prev = x->prev;
	x->prev = x->next = NULL;
}

/* Keeps a finished transfer's buffers for the next request (unless the
 * pool is full, the client closing or the buffers huge). */
static void xfer_recycle(mm_http_t *h, http_xfer_t *x)
{
	if (h->npool >= HTTP_POOL_MAX || h->closing) {
		xfer_free(x);
		return;
	}
	if (x->resp.cap > 1 << 20)
		mm_buf_free(&x->resp);
	if (x->body.cap > 1 << 20)
		mm_buf_free(&x->body);
	x->next = h->pool;
	h->pool = x;
	h->npool++;
}

void mm_http__complete(http_xfer_t *x, int status, const char *error)
{
	mm_http_t *h = x->h;
	mm_http_response_t res = {0};

	xfer_unlink(h, x);
	if (--h->inflight == 0 && h->timer_due != 0) {
		/* Every deadline belongs to a request: an idle client keeps no
		 * loop running. */
		uv_timer_stop(&h->timer);
		h->timer_due = 0;
	}
	h->stats.requests++;
	h->stats.bytes_out += x->body.len;
	h->stats.bytes_in += x->resp.len;
	res.status = status;
	res.code = status ? 0 : x->code;
	res.body = x->resp.p;
	res.len = x->resp.len;
	res.error = error;
	res.ns = uv_hrtime() - x->t0;
	res.priv = x;
	if (status)
		h->stats.failures++;
	x->cb(x->arg, &res);
	xfer_recycle(h, x);
}

const char *mm_http_response_header(const mm_http_response_t *res, const char *name)
{
	http_xfer_t *x = res ? res->priv : NULL;
	const char *p, *end, *v;
	mm_http_head_t hd;

	if (x == NULL || res->status != 0)
		return NULL;
	/* The fast path kept the head whole (one copy instead of two a
	 * header: few answers are asked for a header); it took these bytes
	 * once, so it takes them again. */
	if (x->raw.len > 0) {
		x->hdrs.len = 0;
		if (mm_http_head_parse((const char *)x->raw.p, x->raw.len, &hd, &x->hdrs) != 1)
			x->hdrs.len = 0;
		x->raw.len = 0;
	}
	if (x->hdrs.len == 0)
		return NULL;
	p = (const char *)x->hdrs.p;
	end = p + x->hdrs.len;
	while (p < end) {
		v = p + strlen(p) + 1;
		if (v >= end)
			break;
		if (strcasecmp(p, name) == 0)
			return v;
		p = v + strlen(v) + 1;
	}
	return NULL;
}

/* ---- hosts ---- */

static http_host_t *host_get(mm_http_t *h, const mm_http_url_t *u)
{
	http_host_t *host;

	for (host = h->hosts; host; host = host->next)
		if (host->tls == u->tls && host->port == u->port &&
		    strlen(host->name) == u->host_len &&
		    memcmp(host->name, u->host, u->host_len) == 0 &&
		    strlen(host->hostport) == u->hostport_len &&
		    memcmp(host->hostport, u->hostport, u->hostport_len) == 0)
			return host;
	host = calloc(1, sizeof(*host));
	if (host == NULL || (host->name = strndup(u->host, u->host_len)) == NULL ||
	    (host->hostport = strndup(u->hostport, u->hostport_len)) == NULL) {
		if (host)
			free(host->name);
		free(host);
		return NULL;
	}
	host->tls = u->tls;
	host->port = u->port;
	host->next = h->hosts;
	h->hosts = host;
	return host;
}

static void host_dequeue(http_host_t *host, http_xfer_t *x)
{
	http_xfer_t **pp, *prev = NULL;

	for (pp = &host->qhead; *pp; prev = *pp, pp = &(*pp)->qnext)
		if (*pp == x) {
			*pp = x->qnext;
			if (host->qtail == x)
				host->qtail = prev;
			break;
		}
	x->qnext = NULL;
}

void mm_http__dispatch(http_xfer_t *x)
{
	mm_http_t *h = x->h;
	http_host_t *host = x->host;
	http_conn_t *c = host->idle;

	if (x->deadline)
		mm_http__arm(h, x->deadline); /* again: a retry may have missed a turn */
	/* A retry goes on a new connection when the limit allows. */
	if (c != NULL && !(x->retried && host->nconns < h->max_connections)) {
		host->idle = c->inext;
		c->inext = NULL;
		mm_http__conn_assign(c, x);
	} else if (host->nconns < h->max_connections) {
		mm_http__conn_open(h, host, x);
	} else {
		x->qnext = NULL;
		if (host->qtail)
			host->qtail->qnext = x;
		else
			host->qhead = x;
		host->qtail = x;
	}
}

void mm_http__pump(http_host_t *host, mm_http_t *h)
{
	http_xfer_t *x;

	while ((x = host->qhead) != NULL && (host->idle || host->nconns < h->max_connections)) {
		host->qhead = x->qnext;
		if (host->qhead == NULL)
			host->qtail = NULL;
		x->qnext = NULL;
		mm_http__dispatch(x);
	}
}

/* ---- deadlines ---- */

static void on_timer(uv_timer_t *t);

void mm_http__arm(mm_http_t *h, uint64_t due)
{
	uint64_t now = uv_now(h->loop);

	if (h->closing || (h->timer_due != 0 && h->timer_due <= due))
		return;
	h->timer_due = due;
	uv_timer_start(&h->timer, on_timer, due > now ? due - now : 0, 0);
}

/* The first queued request past its deadline, or NULL. */
static http_xfer_t *expired_queued(mm_http_t *h, uint64_t now)
{
	http_xfer_t *x;

	for (x = h->xfers; x; x = x->next)
		if (x->conn == NULL && x->deadline != 0 && x->deadline <= now)
			return x;
	return NULL;
}

static void on_timer(uv_timer_t *t)
{
	mm_http_t *h = t->data;
	uint64_t now = uv_now(h->loop), next = 0;
	http_conn_t *c, *cn;
	http_xfer_t *x;

	h->timer_due = 0;
	/* Connections and requests on them: closing calls nobody back now. */
	for (c = h->conns; c; c = cn) {
		cn = c->next;
		if (c->deadline != 0 && c->deadline <= now)
			mm_http__conn_close(c, MM_ETIMEDOUT, "http: connecting to %s timed out "
					    "after %ld ms", c->host->hostport,
					    h->connect_timeout_ms);
		else if (c->x && c->x->deadline != 0 && c->x->deadline <= now)
			mm_http__conn_close(c, MM_ETIMEDOUT, "http: request to %s timed out "
					    "after %ld ms", c->host->hostport, c->x->timeout_ms);
	}
	/* Queued requests call back here, one at a time: a callback may
	 * change the lists or close the client. */
	while ((x = expired_queued(h, now)) != NULL) {
		host_dequeue(x->host, x);
		mm_http__complete(x, x->nomem ? MM_ENOMEM : MM_ETIMEDOUT,
				  x->nomem ? "http: out of memory for a connection"
					   : "http: request timed out waiting for a connection");
		if (h->closing)
			return;
	}
	for (c = h->conns; c; c = c->next)
		if (c->deadline != 0 && (next == 0 || c->deadline < next))
			next = c->deadline;
	for (x = h->xfers; x; x = x->next)
		if (x->deadline != 0 && (x->conn == NULL || !x->conn->closing) &&
		    (next == 0 || x->deadline < next))
			next = x->deadline;
	if (next)
		mm_http__arm(h, next);
}

/* ---- requests ---- */

/* The host and request target of url: the last request's when the URL is
 * the same (a store sends every request to one endpoint), else parsed and
 * kept. Returns 0, MM_EINVAL or MM_ENOMEM. */
static int url_of(mm_http_t *h, const char *url, mm_http_url_t *u, http_host_t **host)
{
	char *copy;
	int rc;

	if (h->url_memo == NULL || strcmp(url, h->url_memo) != 0) {
		if ((copy = strdup(url)) == NULL)
			return mm_diag_set(MM_ENOMEM, "http: cannot copy the URL");
		if ((rc = mm_http_url_parse(copy, u)) != 0) {
			free(copy);
			return rc;
		}
		if ((*host = host_get(h, u)) == NULL) {
			free(copy);
			return mm_diag_set(MM_ENOMEM, "http: cannot allocate a host");
		}
		free(h->url_memo);
		h->url_memo = copy;
		h->url_parsed = *u;
		h->url_host = *host;
	}
	*u = h->url_parsed;
	*host = h->url_host;
	return 0;
}

/* Writes the request head; the header lines are checked (no CR or LF: a
 * line may not add lines of its own) as they are copied. Returns 0,
 * MM_EINVAL or MM_ENOMEM. */
static int head_build(mm_buf_t *b, const mm_http_request_t *req, const mm_http_url_t *u)
{
	int has_host = 0, bad = 0;
	size_t i, n;

	b->len = 0;
	for (i = 0; i < req->nheaders; i++) {
		if (req->headers[i] == NULL)
			return mm_diag_set(MM_EINVAL, "http: bad header line");
		if ((req->headers[i][0] | 0x20) == 'h' && strncasecmp(req->headers[i], "Host:", 5) == 0)
			has_host = 1;
	}
	bad |= mm_buf_put_str(b, req->method);
	bad |= mm_buf_append(b, " ", 1);
	if (u->path[0] != '/')
		bad |= mm_buf_append(b, "/", 1);
	bad |= mm_buf_append(b, u->path, u->path_len);
	bad |= mm_buf_append(b, " HTTP/1.1\r\n", 11);
	if (!has_host) {
		bad |= mm_buf_append(b, "Host: ", 6);
		bad |= mm_buf_append(b, u->hostport, u->hostport_len);
		bad |= mm_buf_append(b, "\r\n", 2);
	}
	for (i = 0; i < req->nheaders; i++) {
		n = strcspn(req->headers[i], "\r\n");
		if (req->headers[i][n] != '\0')
			return mm_diag_set(MM_EINVAL, "http: bad header line");
		bad |= mm_buf_append(b, req->headers[i], n);
		bad |= mm_buf_append(b, "\r\n", 2);
	}
	if (req->body_len > 0 || strcmp(req->method, "POST") == 0 ||
	    strcmp(req->method, "PUT") == 0) {
		bad |= mm_buf_append(b, "Content-Length: ", 16);
		bad |= mm_buf_put_dec_u64(b, req->body_len);
		bad |= mm_buf_append(b, "\r\n", 2);
	}
	bad |= mm_buf_append(b, "\r\n", 2);
	return bad ? mm_diag_set(MM_ENOMEM, "http: cannot build the request head") : 0;
}

static int http_check_request(const mm_http_request_t *req)
{
	size_t i;

	if (req == NULL || req->method == NULL || req->url == NULL || req->method[0] == '\0' ||
	    (req->nheaders > 0 && req->headers == NULL) || (req->body_len > 0 && !req->body) ||
	    req->timeout_ms < 0)
		return mm_diag_set(MM_EINVAL, "http: incomplete request");
	/* The method is a token: it goes into the request line as it is. The
	 * header lines are checked as head_build copies them. */
	for (i = 0; req->method[i]; i++)
		if (!(req->method[i] >= 'A' && req->method[i] <= 'Z'))
			return mm_diag_set(MM_EINVAL, "http: bad method '%s'", req->method);
	return 0;
}

/* mm_http_open clears everything around rbuf: rbuf must stay the one field
 * between npool and plain. */
_Static_assert(offsetof(mm_http_t, plain) == offsetof(mm_http_t, rbuf) + sizeof(((mm_http_t *)0)->rbuf),
	       "mm_http_t: plain must follow rbuf");

int mm_http_open(uv_loop_t *loop, const mm_http_options_t *opt, mm_http_t **out)
{
	mm_http_t *h;

	*out = NULL;
	/* Zeroed but for the 64 KiB read buffer, which every read writes before
	 * it is parsed: calloc's clearing of it cost up to 16 page faults at
	 * each client's open (a Lambda runtime opens two before its first
	 * /next), where reads of small answers touch one page. */
	h = malloc(sizeof(*h));
	if (h == NULL)
		return mm_diag_set(MM_ENOMEM, "http: cannot allocate the client");
	memset(h, 0, offsetof(mm_http_t, rbuf));
	memset(&h->plain, 0, sizeof(*h) - offsetof(mm_http_t, plain));
	h->loop = loop;
	h->max_connections = opt && opt->max_connections > 0 ? opt->max_connections : 32;
	h->connect_timeout_ms = opt && opt->connect_timeout_ms > 0 ? opt->connect_timeout_ms : 5000;
	uv_timer_init(loop, &h->timer);
	h->timer.data = h;
	h->open_handles = 1;
	*out = h;
	return 0;
}

int mm_http_request(mm_http_t *h, const mm_http_request_t *req, mm_http_cb cb, void *arg)
{
	mm_http_url_t u;
	http_host_t *host;
	http_xfer_t *x;
	int rc;

	if (h == NULL || cb == NULL)
		return mm_diag_set(MM_EINVAL, "http: request needs a client and a callback");
	if ((rc = http_check_request(req)))
		return rc;
	if (h->closing)
		return mm_diag_set(MM_ECLOSED, "http: the client is closing");
	if ((rc = url_of(h, req->url, &u, &host)))
		return rc;
	if (h->pool) {
		x = h->pool;
		h->pool = x->next;
		h->npool--;
	} else if ((x = calloc(1, sizeof(*x))) == NULL) {
		return mm_diag_set(MM_ENOMEM, "http: cannot allocate a transfer");
	}
	x->h = h;
	x->next = x->prev = x->qnext = NULL;
	x->conn = NULL;
	x->body.len = x->resp.len = x->hdrs.len = x->raw.len = 0;
	x->hdr_state = x->done = x->retried = x->nomem = 0;
	x->code = 0;
	if ((rc = head_build(&x->head, req, &u)) ||
	    (rc = mm_buf_append(&x->body, req->body, req->body_len)))
		goto fail;
	x->host = host;
	x->cb = cb;
	x->arg = arg;
	x->t0 = uv_hrtime();
	x->timeout_ms = req->timeout_ms;
	x->deadline = req->timeout_ms ? uv_now(h->loop) + (uint64_t)req->timeout_ms : 0;
	x->next = h->xfers;
	if (h->xfers)
		h->xfers->prev = x;
	h->xfers = x;
	h->inflight++;
	mm_http__dispatch(x);
	return 0;
fail:
	xfer_free(x);
	return rc;
}

size_t mm_http_inflight(const mm_http_t *h)
{
	return h ? h->inflight : 0;
}

void mm_http_get_stats(const mm_http_t *h, mm_http_stats_t *out)
{
	*out = h->stats;
}

void mm_http_close(mm_http_t *h)
{
	http_host_t *host;
	http_xfer_t *x;

	if (h == NULL || h->closing)
		return;
	h->closing = 1;
	while ((x = h->xfers) != NULL) {
		xfer_unlink(h, x);
		if (x->conn)
			x->conn->x = NULL;
		xfer_free(x);
	}
	h->inflight = 0;
	while (h->conns)
		mm_http__conn_close(h->conns, 0, NULL);
	while ((x = h->pool) != NULL) {
		h->pool = x->next;
		xfer_free(x);
	}
	h->npool = 0;
	while ((host = h->hosts) != NULL) {
		h->hosts = host->next;
		free(host->name);
		free(host->hostport);
		free(host);
	}
	uv_close((uv_handle_t *)&h->timer, on_timer_closed);
}

/* ---- the blocking helper: the same client on a private loop ---- */

typedef struct fetch {
	int status;
	long code;
	mm_buf_t *body;
	char error[256];
} fetch_t;

static void on_fetched(void *arg, const mm_http_response_t *res)
{
	fetch_t *f = arg;

	f->status = res->status;
	f->code = res->code;
	snprintf(f->error, sizeof(f->error), "%s", res->error);
	if (res->status == 0 && mm_buf_append(f->body, res->body, res->len))
		f->status = MM_ENOMEM;
}

int mm_http_fetch(const mm_http_request_t *req, long *code, mm_buf_t *body)
{
	fetch_t f = {.status = MM_EIO, .body = body};
	uv_loop_t loop;
	mm_http_t *h;
	int rc;

	if ((rc = http_check_request(req)))
		return rc;
	if (code == NULL || body == NULL)
		return mm_diag_set(MM_EINVAL, "http: fetch needs a code and a body buffer");
	if ((rc = uv_loop_init(&loop)) != 0)
		return mm_diag_set(MM_EIO, "http: fetch: %s", uv_strerror(rc));
	if ((rc = mm_http_open(&loop, NULL, &h)) == 0) {
		if ((rc = mm_http_request(h, req, on_fetched, &f)) == 0)
			uv_run(&loop, UV_RUN_DEFAULT);
		mm_http_close(h);
		uv_run(&loop, UV_RUN_DEFAULT);
	}
	uv_loop_close(&loop);
	if (rc)
		return rc;
	if (f.status)
		return mm_diag_set(f.status, "http: %s %s: %s", req->method, req->url, f.error);
	*code = f.code;
	return 0;
}
