/*
 * http1.c: HTTP/1.1 on a connection, parsed with libhttp-parser (Debian's
 * http-parser 2.9, the parser Node.js used for a decade).
 *
 * The parser runs over the connection's input buffer. Callbacks collect the
 * URL, the headers (as "name\0value\0" with names lower-cased) and the body,
 * each under the server's limits; a request over a limit or malformed is
 * answered with its status (400, 413, 431) and the connection closes after
 * that answer, since the rest of the stream can no longer be framed.
 *
 * Pipelining: on_message_complete pauses the parser and stops reading, so
 * a pipelined request waits, unparsed in the buffer, until the response of
 * the one before it is written; the responses leave in request order and a
 * client that pipelines a thousand requests costs one buffer, not a
 * thousand exchanges. A response may be finished inside the dispatch call
 * (plain routes) or later (queries); both resume the same parse loop, which
 * never re-enters itself.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "../lib/error.h"
#include "conn.h"

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	case 415: return "Unsupported Media Type";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 499: return "Client Closed Request";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Status";
	}
}

static mm_conn_t *conn_of(http_parser *p)
{
	return p->data;
}

/* Counts request-line and header bytes against the limit; sets the refusal
 * status when it is passed. */
static int header_bytes(mm_conn_t *c, size_t n)
{
	c->h1_header_bytes += n;
	if (c->h1_header_bytes > c->srv->opt.max_header_bytes) {
		c->h1_error = 431;
		return -1;
	}
	return 0;
}

static int on_message_begin(http_parser *p)
{
	mm_conn_t *c = conn_of(p);

	c->cur = mm_net_ex_new(c);
	if (c->cur == NULL) {
		c->h1_error = 503;
		return -1;
	}
	c->h1_url.len = 0;
	c->h1_hdrs.len = 0;
	c->h1_header_bytes = 0;
	c->h1_last_was_value = 0;
	mm_conn_timer(c, c->srv->opt.request_timeout_ms);
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
	mm_conn_t *c = conn_of(p);

	if (header_bytes(c, n) || mm_buf_append(&c->h1_url, at, n))
		return c->h1_error ? -1 : (c->h1_error = 503, -1);
	return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
	mm_conn_t *c = conn_of(p);

	if (header_bytes(c, n + 4))
		return -1;
	if (c->h1_last_was_value && mm_buf_put_u8(&c->h1_hdrs, 0))
		goto nomem;
	c->h1_last_was_value = 0;
	if (mm_buf_reserve(&c->h1_hdrs, n))
		goto nomem;
	for (size_t i = 0; i < n; i++)
		c->h1_hdrs.p[c->h1_hdrs.len++] = (uint8_t)tolower((unsigned char)at[i]);
	return 0;
nomem:
	c->h1_error = 503;
	return -1;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
	mm_conn_t *c = conn_of(p);

	if (header_bytes(c, n))
		return -1;
	if (!c->h1_last_was_value && mm_buf_put_u8(&c->h1_hdrs, 0))
		goto nomem;
	c->h1_last_was_value = 1;
	if (mm_buf_append(&c->h1_hdrs, at, n))
		goto nomem;
	return 0;
nomem:
	c->h1_error = 503;
	return -1;
}

static int on_headers_complete(http_parser *p)
{
	mm_conn_t *c = conn_of(p);

	if (c->h1_hdrs.len > 0 && mm_buf_put_u8(&c->h1_hdrs, 0)) {
		c->h1_error = 503;
		return -1;
	}
	if (p->http_major != 1) {
		c->h1_error = 505;
		return -1;
	}
	if (p->content_length != ULLONG_MAX && p->content_length > c->srv->opt.max_body_bytes) {
		c->h1_error = 413;
		return -1;
	}
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
	mm_conn_t *c = conn_of(p);
	mm_net_ex_t *ex = c->cur;

	if (ex->res.body.len + n > c->srv->opt.max_body_bytes) {
		c->h1_error = 413;
		return -1;
	}
	/* The body collects in the response buffer until the request is
	 * complete; it moves to the arena there (see on_message_complete). */
	if (mm_buf_append(&ex->res.body, at, n)) {
		c->h1_error = 503;
		return -1;
	}
	return 0;
}

/* Moves what the callbacks collected into the exchange's arena and fills
 * ex->req. Returns 0, or the status to refuse the request with. */
static int build_request(mm_conn_t *c, mm_net_ex_t *ex)
{
	mm_net_req_t *req = &ex->req;
	mm_arena_t *a = &ex->arena;
	const char *url = (const char *)c->h1_url.p, *q;
	size_t ulen = c->h1_url.len, n = 0, plen;
	mm_net_header_t *h;
	const uint8_t *hp = c->h1_hdrs.p, *end = hp ? hp + c->h1_hdrs.len : hp;

	if (ulen == 0)
		return 400;
	if (url[0] != '/') {
		/* The absolute form ("GET http://host/path"), for proxies. */
		struct http_parser_url u;

		http_parser_url_init(&u);
		if (http_parser_parse_url(url, ulen, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH)))
			return 400;
		url += u.field_data[UF_PATH].off;
		ulen -= u.field_data[UF_PATH].off;
	}
	q = memchr(url, '?', ulen);
	plen = q ? (size_t)(q - url) : ulen;
	req->path = mm_arena_strndup(a, url, plen);
	if (q) {
		const char *hash = memchr(q + 1, '#', ulen - plen - 1);

		req->query = mm_arena_strndup(a, q + 1, hash ? (size_t)(hash - q - 1) : ulen - plen - 1);
	} else {
		req->query = "";
	}
	req->method = http_method_str((enum http_method)c->parser.method);
	for (const uint8_t *s = hp; s < end; s++)
		n += *s == 0;
	n /= 2;
	h = mm_arena_alloc(a, (n ? n : 1) * sizeof(*h));
	if (req->path == NULL || req->query == NULL || h == NULL)
		return 503;
	for (size_t i = 0; i < n; i++) {
		size_t nl = strlen((const char *)hp), vl = strlen((const char *)hp + nl + 1);

		h[i].name = mm_arena_strndup(a, (const char *)hp, nl);
		h[i].value = mm_arena_strndup(a, (const char *)hp + nl + 1, vl);
		h[i].value_len = vl;
		if (h[i].name == NULL || h[i].value == NULL)
			return 503;
		hp += nl + vl + 2;
	}
	req->headers = h;
	req->nheaders = n;
	return mm_net_ex_take_body(ex) ? 503 : 0;
}

static int on_message_complete(http_parser *p)
{
	mm_conn_t *c = conn_of(p);
	mm_net_ex_t *ex = c->cur;
	int status;

	c->cur = NULL;
	status = build_request(c, ex);
	if (status) {
		mm_net_ex_free(ex);
		c->h1_error = status;
		return -1;
	}
	if (!http_should_keep_alive(p))
		c->h1_close_after = 1;
	/* One request at a time: the parser waits for this response. */
	c->h1_waiting = 1;
	http_parser_pause(p, 1);
	mm_conn_timer(c, 0);
	ex->next = c->exs;
	c->exs = ex;
	mm_server_dispatch(c->srv, ex);
	return 0;
}

static const http_parser_settings settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

void mm_http1_init(mm_conn_t *c)
{
	http_parser_init(&c->parser, HTTP_REQUEST);
	c->parser.data = c;
}

void mm_http1_free(mm_conn_t *c)
{
	if (c->cur)
		mm_net_ex_free(c->cur);
	c->cur = NULL;
	mm_buf_free(&c->h1_url);
	mm_buf_free(&c->h1_hdrs);
}

/* Refuses the request being parsed and closes once the answer is out. */
static void refuse(mm_conn_t *c, int status)
{
	char head[256];
	const char *msg = status == 431 ? "request header fields too large"
			  : status == 413 ? "request body too large"
			  : status == 503 ? "server out of memory"
			  : status == 505 ? "only HTTP/1.x and HTTP/2 are spoken here"
					  : "malformed HTTP request";
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
			 "content-length: %zu\r\nconnection: close\r\n\r\n%s\n",
			 status, reason(status), strlen(msg) + 1, msg);

	c->srv->stats.bad_requests++;
	if (c->cur) {
		mm_net_ex_free(c->cur);
		c->cur = NULL;
	}
	c->h1_close_after = 1;
	mm_conn_read(c, 0);
	mm_conn_write(c, head, (size_t)n);
}

/* Nothing pending and nothing more to read: close now, or once the
 * queued writes are out (on_written in server.c). */
static void maybe_close(mm_conn_t *c)
{
	if (!c->closing && c->h1_close_after && !c->h1_waiting && c->exs == NULL &&
	    c->tcp.write_queue_size == 0)
		mm_conn_close(c);
}

void mm_http1_input(mm_conn_t *c)
{
	if (c->h1_parsing)
		return;
	c->h1_parsing = 1;
	while (!c->closing && !c->h1_waiting && !c->h1_error && c->in_off < c->in.len) {
		size_t n = http_parser_execute(&c->parser, &settings, (const char *)c->in.p + c->in_off,
					       c->in.len - c->in_off);
		enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);

		c->in_off += n;
		if (err == HPE_PAUSED) {
			/* h1_waiting holds further parsing until the response. */
			http_parser_pause(&c->parser, 0);
			continue;
		}
		if (err != HPE_OK) {
			refuse(c, c->h1_error ? c->h1_error : 400);
			break;
		}
	}
	c->h1_parsing = 0;
	if (c->closing || c->h1_waiting)
		return;
	if (c->h1_close_after && !c->h1_error) {
		maybe_close(c);
		return;
	}
	if (!c->h1_error)
		mm_conn_read(c, 1);
}

/* Appends "name: value\r\n". */
static int put_header(mm_buf_t *out, const char *name, const char *value)
{
	int rc = mm_buf_put_str(out, name);

	if (rc == 0)
		rc = mm_buf_append(out, ": ", 2);
	if (rc == 0)
		rc = mm_buf_put_str(out, value);
	return rc ? rc : mm_buf_append(out, "\r\n", 2);
}

void mm_http1_respond(mm_conn_t *c, mm_net_ex_t *ex)
{
	mm_net_res_t *res = &ex->res;
	mm_buf_t out = {0};
	const uint8_t *hp = res->headers.p, *end = hp ? hp + res->headers.len : hp;
	int no_body = res->status == 204 || res->status == 304;
	int rc;

	for (mm_net_ex_t **pp = &c->exs; *pp != NULL; pp = &(*pp)->next)
		if (*pp == ex) {
			*pp = ex->next;
			break;
		}
	/* One allocation sized for the usual head and the body, and plain
	 * appends instead of printf: this runs once per request. */
	rc = mm_buf_reserve(&out, 128 + res->headers.len + res->body.len);
	if (rc == 0)
		rc = mm_buf_append(&out, "HTTP/1.1 ", 9);
	if (rc == 0)
		rc = mm_buf_put_dec_u64(&out, (uint64_t)res->status);
	if (rc == 0)
		rc = mm_buf_put_u8(&out, ' ');
	if (rc == 0)
		rc = mm_buf_put_str(&out, reason(res->status));
	if (rc == 0)
		rc = mm_buf_append(&out, "\r\n", 2);
	if (rc == 0 && res->content_type[0])
		rc = put_header(&out, "content-type", res->content_type);
	if (rc == 0 && !no_body)
		rc = mm_buf_append(&out, "content-length: ", 16);
	if (rc == 0 && !no_body)
		rc = mm_buf_put_dec_u64(&out, res->body.len);
	if (rc == 0 && !no_body)
		rc = mm_buf_append(&out, "\r\n", 2);
	while (rc == 0 && hp < end) {
		const char *name = (const char *)hp, *value = name + strlen(name) + 1;

		rc = put_header(&out, name, value);
		hp = (const uint8_t *)value + strlen(value) + 1;
	}
	if (rc == 0 && c->h1_close_after)
		rc = mm_buf_append(&out, "connection: close\r\n", 19);
	if (rc == 0)
		rc = mm_buf_append(&out, "\r\n", 2);
	if (rc == 0 && !ex->head && !no_body)
		rc = mm_buf_append(&out, res->body.p, res->body.len);
	if (rc == 0)
		mm_conn_write(c, out.p, out.len);
	else
		mm_conn_close(c);
	mm_buf_free(&out);
	mm_net_ex_free(ex);
	if (c->closing)
		return;
	c->h1_waiting = 0;
	mm_conn_timer(c, c->srv->opt.idle_timeout_ms);
	mm_http1_input(c);
}
