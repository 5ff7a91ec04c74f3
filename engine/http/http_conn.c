/*
 * http_conn.c: one client connection (see http_impl.h): resolve, connect,
 * TLS handshake, write a request, parse its response in place.
 *
 * A request goes out in one write: the head built in one buffer by
 * mm_http_request and the body as a second uv_buf_t (through TLS both are
 * encrypted into one buffer first), written at once with uv_try_write and,
 * if the socket does not take it all, the rest with uv_write. The response is parsed where the read
 * landed: when its first read holds a whole head of the simple shape that
 * DynamoDB and the other AWS services send (a status line, header lines, a
 * Content-Length), by the fast path of http_head.c, and its body is copied
 * from that read and the next; anything else by libhttp-parser in
 * HTTP_RESPONSE mode (Content-Length, chunked, or until the server closes),
 * from the response's first byte, as if the fast path had not looked.
 * Headers and body are copied into the request as they are recognised (the
 * fast path copies its head whole, split into headers only when one is
 * looked up: two copies a header were 300 instructions an answer). A
 * response that does not allow keep-alive, or bytes after the response,
 * close the connection; otherwise it goes back to its host for the next
 * request.
 *
 * Every failure closes the connection, and its request fails from the close
 * callback, so nothing calls back inside mm_http_request. A request on a
 * connection that had served others, which the server closed before any
 * byte of the answer came (it ended an idle connection just as we used it),
 * is sent again once on a new connection.
 *
 * An idle connection keeps reading, unreferenced (it holds no loop open):
 * an end of file or an error closes it at once, and so does any byte of a
 * plain connection (TLS may still send session tickets).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "http_head.h"
#include "http_impl.h"

#define HTTP_BODY_MAX ((size_t)64 << 20) /* DynamoDB answers at most 16 MB */

typedef struct tls_write {
	uv_write_t w;
	mm_buf_t data;
} tls_write_t;

/* ---- closing ---- */

static void host_unidle(http_host_t *host, http_conn_t *c)
{
	http_conn_t **pp;

	for (pp = &host->idle; *pp; pp = &(*pp)->inext)
		if (*pp == c) {
			*pp = c->inext;
			break;
		}
	c->inext = NULL;
}

/* Frees c once every libuv handle and request of it has called back, then
 * fails or retries its request. */
static void conn_release(http_conn_t *c)
{
	mm_http_t *h = c->h;
	http_xfer_t *x = c->x;

	if (c->handles > 0)
		return;
	if (x != NULL && !h->closing) {
		x->conn = NULL;
		if (c->err == MM_EIO && c->used > 0 && !c->got && !x->retried) {
			x->retried = 1;
			mm_http__dispatch(x);
		} else {
			mm_http__complete(x, c->err ? c->err : MM_EIO,
					  c->errmsg[0] ? c->errmsg : "connection closed");
		}
	}
	mm_tls_free(c->tls);
	free(c);
	h->open_handles--;
	mm_http__maybe_free(h);
}

static void on_conn_closed(uv_handle_t *handle)
{
	http_conn_t *c = handle->data;

	c->handles--;
	conn_release(c);
}

void mm_http__conn_close(http_conn_t *c, int err, const char *fmt, ...)
{
	mm_http_t *h = c->h;
	va_list ap;

	if (c->closing)
		return;
	c->closing = 1;
	c->err = err;
	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
		va_end(ap);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		h->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->x == NULL)
		host_unidle(c->host, c);
	c->host->nconns--;
	if (c->state == CONN_RESOLVING)
		uv_cancel((uv_req_t *)&c->gai); /* its callback still comes */
	uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
	if (!h->closing)
		mm_http__pump(c->host, h);
}

/* ---- writing ---- */

static void on_written(uv_write_t *w, int status)
{
	http_conn_t *c = w->handle->data;

	c->writing--;
	if (status < 0 && status != UV_ECANCELED)
		mm_http__conn_close(c, MM_EIO, "http: sending to %s: %s", c->host->hostport,
				    uv_strerror(status));
}

static void on_tls_written(uv_write_t *w, int status)
{
	tls_write_t *tw = (tls_write_t *)w;

	on_written(w, status);
	mm_buf_free(&tw->data);
	free(tw);
}

/*
 * Writes what the socket takes at once (uv_try_write) and leaves in b[0..*nb)
 * what is still to send. A request that goes out whole this way costs one
 * writev and nothing else: through uv_write, libuv would also mark the
 * stream for POLLOUT and unmark it when the write completes, one epoll_ctl
 * per request, although a write request on an empty queue is written at
 * once too. uv_try_write declines (UV_EAGAIN) while an earlier write is
 * queued, so bytes never overtake each other. Returns 0 or a libuv error.
 */
static int conn_try_write(http_conn_t *c, uv_buf_t *b, unsigned *nb)
{
	int n = uv_try_write((uv_stream_t *)&c->tcp, b, *nb);
	unsigned i = 0;

	if (n == UV_EAGAIN)
		return 0;
	if (n < 0)
		return n;
	while (i < *nb && (size_t)n >= b[i].len)
		n -= (int)b[i++].len;
	if (i < *nb) {
		b[i].base += n;
		b[i].len -= (size_t)n;
	}
	memmove(b, b + i, (*nb - i) * sizeof(*b));
	*nb -= i;
	return 0;
}

/* Sends what TLS has for the peer: through the client's scratch buffer when
 * the socket takes it all, else what is left from a copy a write request
 * owns. Returns 0 or a negative code. */
static int conn_tls_flush(http_conn_t *c)
{
	mm_buf_t *out = &c->h->tlsout;
	tls_write_t *tw;
	unsigned nb = 1;
	uv_buf_t b;
	int rc;

	if (mm_tls_out_pending(c->tls) == 0)
		return 0;
	out->len = 0;
	if ((rc = mm_tls_take_out(c->tls, out)))
		return mm_diag_set(rc, "http: TLS write");
	b = uv_buf_init((char *)out->p, (unsigned)out->len);
	rc = conn_try_write(c, &b, &nb);
	tw = rc == 0 && nb > 0 ? calloc(1, sizeof(*tw)) : NULL;
	if (tw && mm_buf_append(&tw->data, b.base, b.len)) {
		free(tw);
		tw = NULL;
	}
	if (out->cap > 1 << 20)
		mm_buf_free(out); /* a big body's; requests are small */
	if (rc != 0)
		return mm_diag_set(MM_EIO, "http: sending to %s: %s", c->host->hostport,
				   uv_strerror(rc));
	if (nb == 0)
		return 0;
	if (tw == NULL)
		return mm_diag_set(MM_ENOMEM, "http: TLS write");
	b = uv_buf_init((char *)tw->data.p, (unsigned)tw->data.len);
	if ((rc = uv_write(&tw->w, (uv_stream_t *)&c->tcp, &b, 1, on_tls_written)) != 0) {
		mm_buf_free(&tw->data);
		free(tw);
		return mm_diag_set(MM_EIO, "http: sending to %s: %s", c->host->hostport,
				   uv_strerror(rc));
	}
	c->writing++;
	return 0;
}

static void conn_send(http_conn_t *c)
{
	http_xfer_t *x = c->x;
	unsigned nb = x->body.len ? 2 : 1;
	uv_buf_t b[2];
	int rc;

	if (c->tls) {
		if ((rc = mm_tls_write(c->tls, x->head.p, x->head.len)) ||
		    (x->body.len && (rc = mm_tls_write(c->tls, x->body.p, x->body.len))) ||
		    (rc = conn_tls_flush(c)))
			mm_http__conn_close(c, MM_EIO, "%s", mm_diag_msg());
		return;
	}
	b[0] = uv_buf_init((char *)x->head.p, (unsigned)x->head.len);
	b[1] = uv_buf_init((char *)x->body.p, (unsigned)x->body.len);
	rc = conn_try_write(c, b, &nb);
	if (rc == 0 && nb == 0)
		return;
	if (rc == 0)
		rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, b, nb, on_written);
	if (rc != 0) {
		mm_http__conn_close(c, MM_EIO, "http: sending to %s: %s", c->host->hostport,
				    uv_strerror(rc));
		return;
	}
	c->writing++;
}

/* ---- parsing ---- */

/* Headers are kept as "name\0value\0" pairs; a name or value may come in
 * several pieces, one per read. A chunked answer's trailer fields come
 * through the same callbacks after the head: they are not headers of the
 * answer (RFC 9110, 6.5.1) and are dropped, which also keeps the block
 * ending with its last value's NUL for mm_http_response_header. */
static int hdr_put(http_xfer_t *x, int state, const char *at, size_t n)
{
	static const char nul = '\0';

	if (x->hdr_state == HDR_DONE)
		return 0;
	if (x->hdr_state != state && x->hdr_state != 0 && mm_buf_append(&x->hdrs, &nul, 1))
		return -1;
	x->hdr_state = state;
	return mm_buf_append(&x->hdrs, at, n) ? -1 : 0;
}

static int on_hfield(http_parser *p, const char *at, size_t n)
{
	http_conn_t *c = p->data;

	return hdr_put(c->x, 1, at, n);
}

static int on_hvalue(http_parser *p, const char *at, size_t n)
{
	http_conn_t *c = p->data;

	return hdr_put(c->x, 2, at, n);
}

static int on_headers_complete(http_parser *p)
{
	http_conn_t *c = p->data;
	http_xfer_t *x = c->x;
	static const char nul = '\0';

	/* libhttp-parser takes one to three digits; a status code has three
	 * (RFC 9112, 4), and a caller testing its class would misread "20". */
	if (p->status_code < 100)
		return -1;
	if (x->hdr_state == 2 && mm_buf_append(&x->hdrs, &nul, 1))
		return -1;
	x->hdr_state = HDR_DONE;
	x->code = p->status_code;
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
	http_conn_t *c = p->data;
	mm_buf_t *b = &c->x->resp;

	if (b->len + n > HTTP_BODY_MAX || mm_buf_append(b, at, n))
		return -1;
	return 0;
}

static int on_message_complete(http_parser *p)
{
	http_conn_t *c = p->data;

	/* A 1xx answer is followed by the real one. */
	if (p->status_code >= 100 && p->status_code < 200) {
		c->x->hdrs.len = c->x->raw.len = 0;
		c->x->hdr_state = 0;
		c->x->resp.len = 0;
		return 0;
	}
	c->x->done = 1;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings parser_settings = {
	.on_header_field = on_hfield,
	.on_header_value = on_hvalue,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

/* The response is complete: c goes back to its host (or closes) before
 * the callback, which may start requests or close the client. */
static void conn_finish(http_conn_t *c, int keep)
{
	http_xfer_t *x = c->x;

	c->x = NULL;
	x->conn = NULL;
	c->used++;
	c->got = 0;
	if (keep && c->writing == 0) {
		uv_unref((uv_handle_t *)&c->tcp);
		c->inext = c->host->idle;
		c->host->idle = c;
		mm_http__pump(c->host, c->h);
	} else {
		mm_http__conn_close(c, 0, NULL);
	}
	mm_http__complete(x, 0, "");
}

/* Words a parse failure; our callbacks refuse in two cases of their own. */
static const char *parse_error(const http_parser *p, enum http_errno e)
{
	if (e == HPE_CB_body)
		return "body over 64 MiB";
	if (e == HPE_CB_headers_complete && p->status_code < 100)
		return "status code not of three digits";
	return http_errno_description(e);
}

/*
 * The fast path: a response whose first read holds its whole head, of the
 * simple shape mm_http_head_parse takes, and then its Content-Length of
 * body, from this read and the next ones. Returns 1 when it took the bytes
 * (*used of them), 0 when libhttp-parser is to read the response from its
 * start, or MM_ENOMEM.
 */
static int conn_fast(http_conn_t *c, const char *p, size_t n, size_t *used)
{
	http_xfer_t *x = c->x;
	mm_http_head_t hd;
	size_t take;
	int rc;

	*used = 0;
	if (!c->fast) {
		if ((rc = mm_http_head_parse(p, n, &hd, NULL)) <= 0 || hd.body_len > HTTP_BODY_MAX)
			return rc < 0 ? rc : 0;
		if ((rc = mm_buf_append(&x->raw, p, hd.head_len)) != 0)
			return rc;
		c->fast = 1;
		c->fast_keep = hd.keep;
		c->body_left = hd.body_len;
		x->code = hd.code;
		x->hdr_state = HDR_DONE;
		*used = hd.head_len;
	}
	take = n - *used < c->body_left ? n - *used : (size_t)c->body_left;
	if (take > 0 && (rc = mm_buf_append(&x->resp, p + *used, take)) != 0)
		return rc;
	*used += take;
	c->body_left -= take;
	if (c->body_left == 0)
		x->done = 1;
	return 1;
}

/* Parses n bytes of response (eof: the server closed after them). */
static void conn_input(http_conn_t *c, const char *p, size_t n, int eof)
{
	http_xfer_t *x = c->x;
	size_t used = 0;
	enum http_errno e;
	int rc = 0;

	if (x == NULL) {
		mm_http__conn_close(c, 0, NULL);
		return;
	}
	if (n > 0) {
		if (!c->got || c->fast)
			rc = conn_fast(c, p, n, &used);
		if (rc < 0) {
			mm_http__conn_close(c, rc, "http: out of memory for the response from %s",
					    c->host->hostport);
			return;
		}
		if (rc == 0 && !c->got) {
			http_parser_init(&c->parser, HTTP_RESPONSE);
			c->parser.data = c;
		}
		c->got = 1;
		if (rc == 0)
			used = http_parser_execute(&c->parser, &parser_settings, p, n);
	}
	if (!x->done && eof && c->got && !c->fast && HTTP_PARSER_ERRNO(&c->parser) == HPE_OK)
		http_parser_execute(&c->parser, &parser_settings, NULL, 0);
	if (x->done) {
		conn_finish(c, !eof && used == n &&
			    (c->fast ? c->fast_keep : http_should_keep_alive(&c->parser)));
		return;
	}
	/* libhttp-parser has a state only once it got bytes of this response. */
	e = c->fast || !c->got ? HPE_OK : HTTP_PARSER_ERRNO(&c->parser);
	if (e != HPE_OK)
		mm_http__conn_close(c, MM_EIO, "http: bad response from %s: %s", c->host->hostport,
				    parse_error(&c->parser, e));
	else if (eof)
		mm_http__conn_close(c, MM_EIO, "http: %s closed the connection %s",
				    c->host->hostport,
				    c->got ? "in the middle of the response" : "before answering");
}

/* Decrypts what a read brought and parses it. */
static void conn_tls_input(http_conn_t *c, const char *p, size_t n, int eof)
{
	mm_http_t *h = c->h;
	ssize_t r;
	int rc;

	if (n > 0 && mm_tls_feed(c->tls, p, n)) {
		mm_http__conn_close(c, MM_ENOMEM, "%s", mm_diag_msg());
		return;
	}
	if (c->state == CONN_HANDSHAKE) {
		rc = mm_tls_handshake(c->tls);
		if (rc < 0 || conn_tls_flush(c)) {
			mm_http__conn_close(c, MM_EIO, "%s", mm_diag_msg());
			return;
		}
		if (rc == 0) {
			if (eof)
				mm_http__conn_close(c, MM_EIO, "http: %s closed the connection in the "
						    "TLS handshake", c->host->hostport);
			return;
		}
		c->state = CONN_READY;
		c->deadline = 0;
		if (c->x)
			conn_send(c);
		else
			mm_http__conn_close(c, 0, NULL);
		if (c->closing)
			return;
	}
	h->plain.len = 0;
	for (;;) {
		if (mm_buf_reserve(&h->plain, 16384)) {
			mm_http__conn_close(c, MM_ENOMEM, "%s", mm_diag_msg());
			return;
		}
		r = mm_tls_read(c->tls, h->plain.p + h->plain.len, h->plain.cap - h->plain.len);
		if (r <= 0)
			break;
		h->plain.len += (size_t)r;
	}
	if (r < 0 && r != MM_ECLOSED) {
		mm_http__conn_close(c, MM_EIO, "%s", mm_diag_msg());
		return;
	}
	if (conn_tls_flush(c)) {
		mm_http__conn_close(c, MM_EIO, "%s", mm_diag_msg());
		return;
	}
	if (c->x == NULL && h->plain.len == 0 && !eof && r == 0)
		return; /* an idle connection got session tickets */
	conn_input(c, (const char *)h->plain.p, h->plain.len, eof || r == MM_ECLOSED);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
	http_conn_t *c = handle->data;

	*buf = uv_buf_init(c->h->rbuf, sizeof(c->h->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	http_conn_t *c = s->data;

	if (n == 0 || c->closing)
		return;
	if (n < 0 && n != UV_EOF) {
		uv_read_stop(s);
		if (c->x == NULL)
			mm_http__conn_close(c, 0, NULL);
		else
			mm_http__conn_close(c, MM_EIO, "http: reading from %s: %s",
					    c->host->hostport, uv_strerror((int)n));
		return;
	}
	if (n == UV_EOF)
		uv_read_stop(s);
	if (c->tls)
		conn_tls_input(c, buf->base, n > 0 ? (size_t)n : 0, n == UV_EOF);
	else
		conn_input(c, buf->base, n > 0 ? (size_t)n : 0, n == UV_EOF);
}

/* ---- connecting ---- */

static void on_connected(uv_connect_t *req, int status)
{
	http_conn_t *c = req->data;
	int rc;

	if (c->closing)
		return;
	if (status < 0) {
		mm_http__conn_close(c, MM_EIO, "http: cannot connect to %s: %s",
				    c->host->hostport, uv_strerror(status));
		return;
	}
	c->h->stats.connects++;
	uv_tcp_nodelay(&c->tcp, 1);
	uv_tcp_keepalive(&c->tcp, 1, 60);
	if ((rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read)) != 0) {
		mm_http__conn_close(c, MM_EIO, "http: reading from %s: %s", c->host->hostport,
				    uv_strerror(rc));
		return;
	}
	if (c->tls) {
		c->state = CONN_HANDSHAKE;
		if (mm_tls_handshake(c->tls) < 0 || conn_tls_flush(c))
			mm_http__conn_close(c, MM_EIO, "%s", mm_diag_msg());
		return;
	}
	c->state = CONN_READY;
	c->deadline = 0;
	conn_send(c);
}

static void conn_connect(http_conn_t *c, const struct sockaddr *sa)
{
	int rc;

	c->state = CONN_CONNECTING;
	c->creq.data = c;
	if ((rc = uv_tcp_connect(&c->creq, &c->tcp, sa, on_connected)) != 0)
		mm_http__conn_close(c, MM_EIO, "http: cannot connect to %s: %s",
				    c->host->hostport, uv_strerror(rc));
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	http_conn_t *c = req->data;
	struct addrinfo *ai, *pick = res;

	c->handles--;
	c->state = CONN_CONNECTING; /* nothing left to cancel */
	if (c->closing) {
		uv_freeaddrinfo(res);
		conn_release(c);
		return;
	}
	if (status < 0 || res == NULL) {
		mm_http__conn_close(c, MM_EIO, "http: cannot resolve %s: %s", c->host->name,
				    status < 0 ? uv_strerror(status) : "no address");
		uv_freeaddrinfo(res);
		return;
	}
	/* IPv4 first: the services we call answer on it everywhere. */
	for (ai = res; ai; ai = ai->ai_next)
		if (ai->ai_family == AF_INET) {
			pick = ai;
			break;
		}
	conn_connect(c, pick->ai_addr);
	uv_freeaddrinfo(res);
}

void mm_http__conn_assign(http_conn_t *c, http_xfer_t *x)
{
	c->x = x;
	x->conn = c;
	c->got = 0;
	c->fast = 0;
	uv_ref((uv_handle_t *)&c->tcp);
	if (c->state == CONN_READY)
		conn_send(c);
}

void mm_http__conn_open(mm_http_t *h, http_host_t *host, http_xfer_t *x)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct sockaddr_storage sa;
	http_conn_t *c = calloc(1, sizeof(*c));
	char port[8];
	int rc;

	if (c == NULL) {
		/* Nothing to close: fail x from the deadline timer's next turn. */
		x->nomem = 1;
		x->deadline = 1;
		mm_http__arm(h, 1);
		return;
	}
	c->h = h;
	c->host = host;
	c->state = CONN_CONNECTING; /* RESOLVING only while uv_getaddrinfo runs */
	c->tcp.data = c;
	c->gai.data = c;
	uv_tcp_init(h->loop, &c->tcp);
	c->handles = 1;
	h->open_handles++;
	c->next = h->conns;
	if (h->conns)
		h->conns->prev = c;
	h->conns = c;
	host->nconns++;
	c->deadline = uv_now(h->loop) + (uint64_t)h->connect_timeout_ms;
	mm_http__arm(h, c->deadline);
	mm_http__conn_assign(c, x);
	if (host->tls && (rc = mm_tls_new(host->name, strlen(host->name), &c->tls))) {
		mm_http__conn_close(c, rc, "%s", mm_diag_msg());
		return;
	}
	if (uv_ip4_addr(host->name, host->port, (struct sockaddr_in *)&sa) == 0 ||
	    uv_ip6_addr(host->name, host->port, (struct sockaddr_in6 *)&sa) == 0) {
		conn_connect(c, (struct sockaddr *)&sa);
		return;
	}
	snprintf(port, sizeof(port), "%d", host->port);
	c->state = CONN_RESOLVING;
	if ((rc = uv_getaddrinfo(h->loop, &c->gai, on_resolved, host->name, port, &hints)) != 0) {
		c->state = CONN_CONNECTING; /* nothing to cancel */
		mm_http__conn_close(c, MM_EIO, "http: cannot resolve %s: %s", host->name,
				    uv_strerror(rc));
		return;
	}
	c->handles++;
}
