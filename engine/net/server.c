/*
 * server.c: the listener, connections and their limits, and the dispatch of
 * a parsed request to a plain route or the handler (see server.h).
 *
 * A connection reads into its own buffer. Until it knows the protocol it
 * compares the first bytes with the HTTP/2 client preface; then every read
 * goes to http1.c or h2.c, which parse from the buffer, build exchanges and
 * call mm_server_dispatch. A handler finishes an exchange with
 * mm_net_ex_finish, which gives the response to the connection's protocol,
 * or frees it if the connection is gone (a client may hang up while its
 * query waits on the store; the exchange is orphaned, never freed under the
 * handler's feet).
 *
 * Timers: one per connection. It runs while a request is incomplete (the
 * request timeout, started at its first byte and not restarted by later
 * bytes, so a client trickling a byte a second is still cut off) and while
 * the connection is idle between requests (the idle timeout); it is stopped
 * while a response is being prepared. HTTP/2 multiplexes requests, so h2.c
 * keeps a deadline per stream and sets the timer to the nearest one
 * (mm_h2_timeout resets the late streams and keeps the connection).
 *
 * Closing: a connection closes its socket and timer and is freed when both
 * close callbacks have run. Writes still queued are cancelled by uv_close,
 * so a response followed by a close (Connection: close, a refused request)
 * closes from the write callback once nothing is queued.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "conn.h"

#define DEF_MAX_CONNECTIONS 1024
#define DEF_MAX_HEADER (16 * 1024)
#define DEF_MAX_BODY (4 * 1024 * 1024)
#define DEF_REQUEST_TIMEOUT_MS 10000
#define DEF_IDLE_TIMEOUT_MS 60000
#define READ_CHUNK 65536

static const char H2_PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define H2_PREFACE_LEN (sizeof(H2_PREFACE) - 1)

typedef struct conn_write {
	uv_write_t req;
	mm_conn_t *c;
	size_t len;
	char data[];
} conn_write_t;

const char *mm_net_header(const mm_net_req_t *req, const char *name, size_t *len)
{
	for (size_t i = 0; i < req->nheaders; i++)
		if (strcmp(req->headers[i].name, name) == 0) {
			if (len)
				*len = req->headers[i].value_len;
			return req->headers[i].value;
		}
	return NULL;
}

int mm_net_res_header(mm_net_res_t *res, const char *name, const char *value)
{
	int rc = mm_buf_append(&res->headers, name, strlen(name) + 1);

	return rc ? rc : mm_buf_append(&res->headers, value, strlen(value) + 1);
}

void mm_net_res_type(mm_net_res_t *res, const char *content_type)
{
	snprintf(res->content_type, sizeof(res->content_type), "%s", content_type);
}

/* ---- listen address ---- */

static int parse_listen(const char *s, struct sockaddr_storage *ss, int *loopback)
{
	char host[64];
	const char *colon = strrchr(s, ':'), *h = s;
	size_t hlen;
	char *end;
	long port;

	if (colon == NULL)
		return mm_diag_set(MM_EINVAL, "listen address '%s' has no port (expected HOST:PORT)", s);
	port = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || port < 0 || port > 65535)
		return mm_diag_set(MM_EINVAL, "listen address '%s': bad port", s);
	hlen = (size_t)(colon - s);
	if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
		h++;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return mm_diag_set(MM_EINVAL, "listen address '%s': bad host (expected an IP address)", s);
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	if (strcmp(host, "localhost") == 0)
		snprintf(host, sizeof(host), "127.0.0.1");
	if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0) {
		uint32_t a = ntohl(((struct sockaddr_in *)ss)->sin_addr.s_addr);
		*loopback = (a >> 24) == 127;
		return 0;
	}
	if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0) {
		*loopback = IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)ss)->sin6_addr);
		return 0;
	}
	return mm_diag_set(MM_EINVAL, "listen address '%s': '%s' is not an IP address", s, host);
}

/* ---- connections ---- */

static void server_free(mm_server_t *srv);

/* One of the handles mm_server_close waits for has closed; the last one
 * frees the server and reports. */
static void server_release(mm_server_t *srv)
{
	void (*done)(void *) = srv->done;
	void *arg = srv->done_arg;

	if (--srv->pending_closes > 0)
		return;
	server_free(srv);
	if (done)
		done(arg);
}

static void conn_free(mm_conn_t *c)
{
	mm_server_t *srv = c->srv;
	int counted = c->counted;

	if (c->proto == CONN_HTTP1)
		mm_http1_free(c);
	else if (c->proto == CONN_HTTP2)
		mm_h2_free(c);
	mm_buf_free(&c->in);
	free(c);
	if (counted)
		server_release(srv);
}

static void on_conn_closed(uv_handle_t *h)
{
	mm_conn_t *c = h->data;

	if (--c->handles == 0)
		conn_free(c);
}

void mm_conn_close(mm_conn_t *c)
{
	mm_server_t *srv = c->srv;

	if (c->closing)
		return;
	c->closing = 1;
	/* An exchange in a handler is finished by it later (and dropped then);
	 * the others (HTTP/2 streams being received or sent) go now. */
	for (mm_net_ex_t *ex = c->exs, *next; ex != NULL; ex = next) {
		next = ex->next;
		if (ex->in_handler)
			ex->conn = NULL;
		else
			mm_net_ex_free(ex);
	}
	c->exs = NULL;
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	srv->stats.open--;
	if (srv->closing) {
		c->counted = 1;
		srv->pending_closes++;
	}
	uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
	uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

/* A write finished: a failed one, or the last one of a connection that
 * closes after its response, closes the connection. */
static void written(mm_conn_t *c, int status)
{
	if (c->closing)
		return;
	if (status < 0 || (c->h1_close_after && c->tcp.write_queue_size == 0 &&
			   c->exs == NULL && !c->h1_waiting))
		mm_conn_close(c);
}

static void on_written(uv_write_t *req, int status)
{
	conn_write_t *w = (conn_write_t *)req;
	mm_conn_t *c = w->c;

	free(w);
	written(c, status);
}

int mm_conn_write(mm_conn_t *c, const void *p, size_t n)
{
	conn_write_t *w;
	uv_buf_t b;
	int rc;

	if (c->closing || n == 0)
		return 0;
	/* Most responses fit the socket's send buffer: writing them at once
	 * saves the copy, the allocation and the write request. uv_try_write
	 * refuses while earlier writes are queued, so the order holds. */
	b = uv_buf_init((char *)p, (unsigned)n);
	rc = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
	if (rc == (int)n) {
		written(c, 0);
		return 0;
	}
	if (rc < 0 && rc != UV_EAGAIN) {
		mm_conn_close(c);
		return mm_diag_set(MM_EIO, "server: write: %s", uv_strerror(rc));
	}
	if (rc > 0) {
		p = (const uint8_t *)p + rc;
		n -= (size_t)rc;
	}
	w = malloc(sizeof(*w) + n);
	if (w == NULL) {
		mm_conn_close(c);
		return mm_diag_set(MM_ENOMEM, "server: cannot allocate a write");
	}
	w->c = c;
	w->len = n;
	memcpy(w->data, p, n);
	b = uv_buf_init(w->data, (unsigned)n);
	rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
	if (rc < 0) {
		free(w);
		mm_conn_close(c);
		return mm_diag_set(MM_EIO, "server: write: %s", uv_strerror(rc));
	}
	return 0;
}

static void on_timeout(uv_timer_t *t)
{
	mm_conn_t *c = t->data;

	if (c->proto == CONN_HTTP2 && mm_h2_timeout(c))
		return;
	c->srv->stats.timeouts++;
	mm_conn_close(c);
}

void mm_conn_timer(mm_conn_t *c, uint64_t ms)
{
	if (c->closing)
		return;
	if (ms == 0)
		uv_timer_stop(&c->timer);
	else
		uv_timer_start(&c->timer, on_timeout, ms, 0);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	mm_conn_t *c = h->data;

	/* Consumed bytes at the front are dropped before the buffer grows. */
	if (c->in_off > 0) {
		memmove(c->in.p, c->in.p + c->in_off, c->in.len - c->in_off);
		c->in.len -= c->in_off;
		c->in_off = 0;
	}
	if (mm_buf_reserve(&c->in, READ_CHUNK) != 0) {
		*buf = uv_buf_init(NULL, 0);
		return;
	}
	*buf = uv_buf_init((char *)c->in.p + c->in.len, READ_CHUNK);
}

static void conn_input(mm_conn_t *c)
{
	if (c->proto == CONN_UNDECIDED) {
		size_t have = c->in.len - c->in_off;
		size_t cmp = have < H2_PREFACE_LEN ? have : H2_PREFACE_LEN;

		if (memcmp(c->in.p + c->in_off, H2_PREFACE, cmp) == 0) {
			if (have < H2_PREFACE_LEN)
				return; /* maybe HTTP/2: wait for the whole preface */
			if (mm_h2_init(c) != 0) {
				mm_conn_close(c);
				return;
			}
			c->proto = CONN_HTTP2;
		} else {
			mm_http1_init(c);
			c->proto = CONN_HTTP1;
		}
	}
	if (c->proto == CONN_HTTP1)
		mm_http1_input(c);
	else
		mm_h2_input(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	mm_conn_t *c = s->data;

	if (nread == 0)
		return;
	if (nread < 0) {
		/* EOF: the client half-closed. Pending responses are still sent
		 * (HTTP/1.1 closes after the last one); otherwise close now. */
		uv_read_stop(s);
		c->reading = 0;
		if (nread == UV_EOF && c->proto != CONN_HTTP2 && (c->exs != NULL || c->h1_waiting)) {
			c->h1_close_after = 1;
			return;
		}
		mm_conn_close(c);
		return;
	}
	c->in.len += (size_t)nread;
	conn_input(c);
}

void mm_conn_read(mm_conn_t *c, int on)
{
	if (c->closing || c->reading == on)
		return;
	if (on) {
		if (c->h1_close_after)
			return; /* the client sent EOF: nothing more will come */
		if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
			mm_conn_close(c);
			return;
		}
	} else {
		uv_read_stop((uv_stream_t *)&c->tcp);
	}
	c->reading = on;
}

static void on_connection(uv_stream_t *ls, int status)
{
	mm_server_t *srv = ls->data;
	mm_conn_t *c;

	if (status < 0 || srv->closing)
		return;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return;
	c->srv = srv;
	uv_tcp_init(srv->loop, &c->tcp);
	uv_timer_init(srv->loop, &c->timer);
	c->tcp.data = c;
	c->timer.data = c;
	c->handles = 2;
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	srv->stats.open++;
	if (uv_accept(ls, (uv_stream_t *)&c->tcp) != 0) {
		mm_conn_close(c);
		return;
	}
	srv->stats.accepted++;
	if (srv->stats.open > srv->opt.max_connections) {
		srv->stats.refused++;
		mm_conn_close(c);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	mm_conn_timer(c, srv->opt.request_timeout_ms);
	mm_conn_read(c, 1);
}

/* ---- exchanges ---- */

mm_net_ex_t *mm_net_ex_new(mm_conn_t *c)
{
	mm_net_ex_t *ex = calloc(1, sizeof(*ex));

	if (ex == NULL)
		return NULL;
	ex->conn = c;
	ex->res.status = 200;
	return ex;
}

int mm_net_ex_take_body(mm_net_ex_t *ex)
{
	uint8_t *body = mm_arena_alloc(&ex->arena, ex->res.body.len ? ex->res.body.len : 1);

	if (body == NULL)
		return mm_diag_set(MM_ENOMEM, "server: out of memory");
	if (ex->res.body.len)
		memcpy(body, ex->res.body.p, ex->res.body.len);
	ex->req.body = body;
	ex->req.body_len = ex->res.body.len;
	ex->res.body.len = 0;
	return 0;
}

void mm_net_ex_free(mm_net_ex_t *ex)
{
	mm_arena_free(&ex->arena);
	mm_buf_free(&ex->h2_hdrs);
	mm_buf_free(&ex->res.body);
	mm_buf_free(&ex->res.headers);
	mm_buf_free(&ex->res.trailers);
	free(ex);
}

const mm_net_req_t *mm_net_ex_req(const mm_net_ex_t *ex)
{
	return &ex->req;
}

mm_net_res_t *mm_net_ex_res(mm_net_ex_t *ex)
{
	return &ex->res;
}

void mm_net_ex_finish(mm_net_ex_t *ex)
{
	mm_conn_t *c = ex->conn;

	ex->in_handler = 0;
	if (c == NULL || c->closing) {
		mm_net_ex_free(ex);
		return;
	}
	c->srv->stats.requests++;
	if (ex->res.status == 401)
		c->srv->stats.unauthorized++;
	if (c->proto == CONN_HTTP2)
		mm_h2_respond(c, ex);
	else
		mm_http1_respond(c, ex);
}

/* ---- dispatch ---- */

/* Compares without an early exit, so the time taken does not tell an
 * attacker how much of a guessed token was right. */
static int token_ok(const mm_server_t *srv, const mm_net_req_t *req)
{
	size_t len, tlen = strlen(srv->token);
	const char *v = mm_net_header(req, "authorization", &len);
	unsigned char diff = 0;

	if (v == NULL || len < 7 || strncasecmp(v, "Bearer ", 7) != 0)
		return 0;
	v += 7;
	len -= 7;
	if (len != tlen)
		return 0;
	for (size_t i = 0; i < len; i++)
		diff |= (unsigned char)(v[i] ^ srv->token[i]);
	return diff == 0;
}

static const char *cors_origin(const mm_server_t *srv, const mm_net_req_t *req)
{
	const char *origin = mm_net_header(req, "origin", NULL);

	if (origin == NULL)
		return NULL;
	for (size_t i = 0; i < srv->opt.ncors; i++)
		if (strcmp(srv->cors[i], "*") == 0 || strcmp(srv->cors[i], origin) == 0)
			return origin;
	return NULL;
}

static void answer_text(mm_net_ex_t *ex, int status, const char *text)
{
	ex->res.status = status;
	mm_net_res_type(&ex->res, "text/plain; charset=utf-8");
	ex->res.body.len = 0;
	if (mm_buf_append(&ex->res.body, text, strlen(text)) == 0)
		mm_buf_put_u8(&ex->res.body, '\n');
	mm_net_ex_finish(ex);
}

void mm_server_dispatch(mm_server_t *srv, mm_net_ex_t *ex)
{
	const mm_net_req_t *req = &ex->req;
	const char *origin = cors_origin(srv, req);
	mm_route_t *r;
	int rc, in_handler;

	ex->in_handler = 1;

	if (origin != NULL) {
		mm_net_res_header(&ex->res, "access-control-allow-origin", origin);
		mm_net_res_header(&ex->res, "vary", "Origin");
		mm_net_res_header(&ex->res, "access-control-expose-headers",
				  "grpc-status, grpc-message, grpc-status-details-bin");
		if (strcmp(req->method, "OPTIONS") == 0) {
			const char *want = mm_net_header(req, "access-control-request-headers", NULL);

			mm_net_res_header(&ex->res, "access-control-allow-methods", "GET, POST");
			mm_net_res_header(&ex->res, "access-control-allow-headers",
					  want ? want : "content-type");
			mm_net_res_header(&ex->res, "access-control-max-age", "7200");
			ex->res.status = 204;
			mm_net_ex_finish(ex);
			return;
		}
	}
	for (r = srv->routes; r != NULL; r = r->next)
		if (strcmp(r->path, req->path) == 0)
			break;
	in_handler = r == NULL && srv->handler != NULL &&
		     strncmp(req->path, srv->prefix, strlen(srv->prefix)) == 0;
	if (srv->token != NULL && !(r != NULL && (r->flags & MM_ROUTE_PUBLIC)) &&
	    !token_ok(srv, req)) {
		ex->res.status = 401;
		mm_net_res_header(&ex->res, "www-authenticate", "Bearer");
		if (in_handler) {
			srv->handler(srv->handler_arg, ex); /* answers in its protocol */
			return;
		}
		answer_text(ex, 401, "a bearer token is required (Authorization: Bearer TOKEN)");
		return;
	}
	if (r != NULL) {
		if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
			mm_net_res_header(&ex->res, "allow", "GET, HEAD");
			answer_text(ex, 405, "method not allowed: use GET");
			return;
		}
		ex->head = strcmp(req->method, "HEAD") == 0;
		mm_diag_clear();
		rc = r->fn(r->arg, req, &ex->res);
		if (rc) {
			char msg[600];

			snprintf(msg, sizeof(msg), "%s: %s", mm_err_name(rc), mm_diag_msg());
			answer_text(ex, 500, msg);
			return;
		}
		mm_net_ex_finish(ex);
		return;
	}
	if (in_handler) {
		srv->handler(srv->handler_arg, ex);
		return;
	}
	answer_text(ex, 404, "not found");
}

/* ---- server ---- */

int mm_server_route(mm_server_t *srv, const char *path, unsigned flags, mm_route_fn fn, void *arg)
{
	mm_route_t *r;

	if (path == NULL || path[0] != '/' || fn == NULL)
		return mm_diag_set(MM_EINVAL, "server: a route needs a path starting with '/'");
	for (r = srv->routes; r != NULL; r = r->next)
		if (strcmp(r->path, path) == 0)
			return mm_diag_set(MM_EEXIST, "server: route %s is already taken", path);
	r = calloc(1, sizeof(*r));
	if (r == NULL || (r->path = strdup(path)) == NULL) {
		free(r);
		return mm_diag_set(MM_ENOMEM, "server: cannot add route %s", path);
	}
	r->flags = flags;
	r->fn = fn;
	r->arg = arg;
	r->next = srv->routes;
	srv->routes = r;
	return 0;
}

void mm_server_handler(mm_server_t *srv, const char *prefix, mm_net_handler_fn fn, void *arg)
{
	free(srv->prefix);
	srv->prefix = strdup(prefix);
	srv->handler = srv->prefix ? fn : NULL;
	srv->handler_arg = arg;
}

int mm_server_address(const mm_server_t *srv, char *out, size_t cap)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	char host[64];

	if (uv_tcp_getsockname(&srv->tcp, (struct sockaddr *)&ss, &len) != 0)
		return mm_diag_set(MM_EIO, "server: getsockname failed");
	if (ss.ss_family == AF_INET) {
		uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof(host));
		snprintf(out, cap, "%s:%d", host, ntohs(((struct sockaddr_in *)&ss)->sin_port));
	} else {
		uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof(host));
		snprintf(out, cap, "[%s]:%d", host, ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
	}
	return 0;
}

void mm_server_get_stats(const mm_server_t *srv, mm_server_stats_t *out)
{
	*out = srv->stats;
}

static void server_free(mm_server_t *srv)
{
	mm_route_t *r, *next;

	for (r = srv->routes; r != NULL; r = next) {
		next = r->next;
		free(r->path);
		free(r);
	}
	for (size_t i = 0; i < srv->opt.ncors; i++)
		free(srv->cors[i]);
	free(srv->cors);
	free(srv->token);
	free(srv->prefix);
	free(srv);
}

int mm_server_open(uv_loop_t *loop, const mm_server_options_t *opt, mm_server_t **out)
{
	struct sockaddr_storage ss;
	mm_server_t *srv;
	int loopback = 0, rc;
	const char *listen = opt->listen ? opt->listen : "127.0.0.1:8080";

	*out = NULL;
	rc = parse_listen(listen, &ss, &loopback);
	if (rc)
		return rc;
	if (!loopback && (opt->token == NULL || opt->token[0] == '\0'))
		return mm_diag_set(MM_EINVAL,
				   "listening on %s (not a loopback address) requires a bearer token: "
				   "give --token-file FILE or set MURMUR_TOKEN",
				   listen);
	srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return mm_diag_set(MM_ENOMEM, "server: out of memory");
	srv->loop = loop;
	srv->opt = *opt;
	srv->opt.listen = NULL;
	srv->opt.token = NULL;
	srv->opt.cors_origins = NULL;
	if (!srv->opt.max_connections)
		srv->opt.max_connections = DEF_MAX_CONNECTIONS;
	if (!srv->opt.max_header_bytes)
		srv->opt.max_header_bytes = DEF_MAX_HEADER;
	if (!srv->opt.max_body_bytes)
		srv->opt.max_body_bytes = DEF_MAX_BODY;
	if (!srv->opt.request_timeout_ms)
		srv->opt.request_timeout_ms = DEF_REQUEST_TIMEOUT_MS;
	if (!srv->opt.idle_timeout_ms)
		srv->opt.idle_timeout_ms = DEF_IDLE_TIMEOUT_MS;
	if (opt->token && opt->token[0] && (srv->token = strdup(opt->token)) == NULL)
		goto nomem;
	if (opt->ncors) {
		srv->cors = calloc(opt->ncors, sizeof(char *));
		if (srv->cors == NULL)
			goto nomem;
		for (size_t i = 0; i < opt->ncors; i++, srv->opt.ncors = i)
			if ((srv->cors[i] = strdup(opt->cors_origins[i])) == NULL)
				goto nomem;
		srv->opt.ncors = opt->ncors;
	}
	uv_tcp_init(loop, &srv->tcp);
	srv->tcp.data = srv;
	rc = uv_tcp_bind(&srv->tcp, (struct sockaddr *)&ss, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&srv->tcp, 511, on_connection);
	if (rc) {
		rc = mm_diag_set(MM_EIO, "cannot listen on %s: %s", listen, uv_strerror(rc));
		mm_server_close(srv, NULL, NULL);
		return rc;
	}
	*out = srv;
	return 0;
nomem:
	server_free(srv);
	return mm_diag_set(MM_ENOMEM, "server: out of memory");
}

static void on_listener_closed(uv_handle_t *h)
{
	server_release(h->data);
}

void mm_server_close(mm_server_t *srv, void (*done)(void *), void *arg)
{
	mm_conn_t *c, *next;

	srv->closing = 1;
	srv->done = done;
	srv->done_arg = arg;
	srv->pending_closes = 1; /* the listener */
	for (c = srv->conns; c != NULL; c = next) {
		next = c->next;
		mm_conn_close(c);
	}
	uv_close((uv_handle_t *)&srv->tcp, on_listener_closed);
}
