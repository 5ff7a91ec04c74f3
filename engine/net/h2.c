/*
 * h2.c: HTTP/2 cleartext on a connection, with libnghttp2's server session
 * (the HTTP/2 engine of curl, Apache httpd and Envoy).
 *
 * nghttp2 does the framing, HPACK, flow control and stream states; this file
 * turns a stream's headers and DATA into an exchange when the client ends
 * the stream, and an exchange's response into HEADERS, DATA and, when the
 * response carries trailers (gRPC's grpc-status), a trailing HEADERS frame.
 * A response with neither body nor trailers is one HEADERS frame that ends
 * the stream (gRPC's "trailers-only" errors).
 *
 * Input is fed with nghttp2_session_mem_recv and output pulled with
 * nghttp2_session_mem_send into one buffer per round, written with one
 * uv_write. A stream over the header or body limit is reset
 * (REFUSED_STREAM for headers, CANCEL for a body: the client must not
 * retry it as is); the connection goes on serving its other streams.
 *
 * Exchanges: every stream's exchange is on the connection's list from its
 * first HEADERS frame; the stream's close callback frees it, unless a
 * handler still holds it, which then finishes it into the void.
 *
 * Slow clients. Each stream must arrive whole (headers and body) within the
 * request timeout of its first HEADERS frame, whatever else happens on the
 * connection: the connection's one timer is set to the nearest such
 * deadline, and a stream that misses it is reset with CANCEL (counted as a
 * timeout) while the connection goes on serving the others. Opening new
 * streams, PINGs, SETTINGS and WINDOW_UPDATEs never move a deadline, so
 * neither a stream fed a byte at a time beside busy ones nor a connection
 * sending only control frames can hold the server's memory: with no stream
 * open, the timer is the idle timeout since the last stream event (before
 * the first stream, the request timeout since the connection opened), and
 * its expiry closes the connection. A response that the client's flow
 * control stalls holds its stream only until that idle timeout, too.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../lib/error.h"
#include "conn.h"

#define H2_MAX_STREAMS 128

static void h2_flush(mm_conn_t *c)
{
	mm_buf_t out = {0};
	const uint8_t *p;
	ssize_t n;

	if (c->closing)
		return;
	while ((n = nghttp2_session_mem_send(c->h2, &p)) > 0)
		if (mm_buf_append(&out, p, (size_t)n)) {
			mm_buf_free(&out);
			mm_conn_close(c);
			return;
		}
	if (n < 0) {
		mm_buf_free(&out);
		mm_conn_close(c);
		return;
	}
	mm_conn_write(c, out.p, out.len);
	mm_buf_free(&out);
	if (!c->closing && !nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2) &&
	    c->tcp.write_queue_size == 0)
		mm_conn_close(c);
}

static void unlink_ex(mm_conn_t *c, mm_net_ex_t *ex)
{
	for (mm_net_ex_t **pp = &c->exs; *pp != NULL; pp = &(*pp)->next)
		if (*pp == ex) {
			*pp = ex->next;
			return;
		}
}

/* Sets the connection's timer: the nearest deadline of a stream still
 * being received; none while a handler prepares an answer (the wait is the
 * server's, not the client's); else the idle timeout. */
static void h2_arm(mm_conn_t *c)
{
	uint64_t now = uv_now(c->srv->loop), first = UINT64_MAX;
	int busy = 0;

	for (mm_net_ex_t *ex = c->exs; ex != NULL; ex = ex->next) {
		if (ex->refused)
			continue;
		if (!ex->received && ex->deadline < first)
			first = ex->deadline;
		busy |= ex->in_handler;
	}
	if (first != UINT64_MAX)
		mm_conn_timer(c, first > now ? first - now : 1);
	else
		mm_conn_timer(c, busy ? 0 : c->srv->opt.idle_timeout_ms);
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
	mm_conn_t *c = ud;
	mm_net_ex_t *ex;

	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	ex = mm_net_ex_new(c);
	if (ex == NULL)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	ex->stream_id = frame->hd.stream_id;
	ex->next = c->exs;
	c->exs = ex;
	nghttp2_session_set_stream_user_data(s, frame->hd.stream_id, ex);
	ex->deadline = uv_now(c->srv->loop) + c->srv->opt.request_timeout_ms;
	h2_arm(c);
	return 0;
}

/* Resets a stream the server will not answer; counter says why. */
static void refuse_stream(nghttp2_session *s, mm_net_ex_t *ex, uint32_t code, uint64_t *counter)
{
	if (ex->refused)
		return;
	ex->refused = 1;
	(*counter)++;
	nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, ex->stream_id, code);
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
	mm_conn_t *c = ud;
	mm_net_ex_t *ex = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);

	if (ex == NULL || ex->refused || frame->hd.type != NGHTTP2_HEADERS ||
	    frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	ex->h2_header_bytes += namelen + valuelen + 32;
	if (ex->h2_header_bytes > c->srv->opt.max_header_bytes) {
		refuse_stream(s, ex, NGHTTP2_REFUSED_STREAM, &c->srv->stats.bad_requests);
		return 0;
	}
	if (mm_buf_append(&ex->h2_hdrs, name, namelen) || mm_buf_put_u8(&ex->h2_hdrs, 0) ||
	    mm_buf_append(&ex->h2_hdrs, value, valuelen) || mm_buf_put_u8(&ex->h2_hdrs, 0))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data,
		   size_t len, void *ud)
{
	mm_conn_t *c = ud;
	mm_net_ex_t *ex = nghttp2_session_get_stream_user_data(s, stream_id);

	if (ex == NULL || ex->refused)
		return 0;
	if (ex->res.body.len + len > c->srv->opt.max_body_bytes) {
		refuse_stream(s, ex, NGHTTP2_CANCEL, &c->srv->stats.bad_requests);
		return 0;
	}
	if (mm_buf_append(&ex->res.body, data, len))
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	return 0;
}

/* Fills ex->req from the collected headers and body (as http1.c does).
 * Returns 0 or -1 when a pseudo-header is missing or memory ran out. */
static int build_request(mm_net_ex_t *ex)
{
	mm_net_req_t *req = &ex->req;
	mm_arena_t *a = &ex->arena;
	const uint8_t *hp = ex->h2_hdrs.p, *end = hp ? hp + ex->h2_hdrs.len : hp;
	size_t n = 0, k = 0;
	mm_net_header_t *h;
	const char *path = NULL;

	for (const uint8_t *s = hp; s < end; s++)
		n += *s == 0;
	n /= 2;
	h = mm_arena_alloc(a, (n ? n : 1) * sizeof(*h));
	if (h == NULL)
		return -1;
	req->method = NULL;
	for (size_t i = 0; i < n; i++) {
		const char *name = (const char *)hp, *value = name + strlen(name) + 1;
		size_t vl = strlen(value);

		hp = (const uint8_t *)value + vl + 1;
		if (strcmp(name, ":method") == 0)
			req->method = value;
		else if (strcmp(name, ":path") == 0)
			path = value;
		else if (name[0] != ':')
			h[k++] = (mm_net_header_t){name, value, vl};
	}
	if (req->method == NULL || path == NULL || path[0] != '/')
		return -1;
	{
		const char *q = strchr(path, '?');

		req->path = q ? mm_arena_strndup(a, path, (size_t)(q - path)) : path;
		req->query = q ? q + 1 : "";
		if (req->path == NULL)
			return -1;
	}
	req->headers = h;
	req->nheaders = k;
	req->http2 = 1;
	return mm_net_ex_take_body(ex) ? -1 : 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
	mm_conn_t *c = ud;
	mm_net_ex_t *ex;

	if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
	    !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	ex = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
	if (ex == NULL || ex->refused || ex->received)
		return 0;
	ex->received = 1;
	if (build_request(ex) != 0) {
		refuse_stream(s, ex, NGHTTP2_PROTOCOL_ERROR, &c->srv->stats.bad_requests);
		return 0;
	}
	ex->head = strcmp(ex->req.method, "HEAD") == 0;
	mm_server_dispatch(c->srv, ex);
	h2_arm(c);
	return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *ud)
{
	mm_conn_t *c = ud;
	mm_net_ex_t *ex = nghttp2_session_get_stream_user_data(s, stream_id);

	if (ex == NULL || c->closing)
		return 0;
	nghttp2_session_set_stream_user_data(s, stream_id, NULL);
	unlink_ex(c, ex);
	if (ex->in_handler)
		ex->conn = NULL; /* the handler's finish frees it */
	else
		mm_net_ex_free(ex);
	h2_arm(c);
	return 0;
}

/* Turns "name\0value\0" pairs into nghttp2 header entries (copied by
 * nghttp2 when submitted). */
static size_t pairs_to_nv(const mm_buf_t *b, nghttp2_nv *nv, size_t max)
{
	const uint8_t *p = b->p, *end = p ? p + b->len : p;
	size_t n = 0;

	while (p < end && n < max) {
		uint8_t *name = (uint8_t *)p, *value = name + strlen((char *)name) + 1;

		nv[n++] = (nghttp2_nv){name, value, strlen((char *)name), strlen((char *)value),
				       NGHTTP2_NV_FLAG_NONE};
		p = value + strlen((char *)value) + 1;
	}
	return n;
}

static ssize_t read_body(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
			 uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	mm_net_ex_t *ex = src->ptr;
	size_t left = ex->res.body.len - ex->sent, n = left < length ? left : length;

	if (n)
		memcpy(buf, ex->res.body.p + ex->sent, n);
	ex->sent += n;
	if (ex->sent == ex->res.body.len) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (ex->res.trailers.len > 0) {
			nghttp2_nv nv[16];
			size_t nnv = pairs_to_nv(&ex->res.trailers, nv, 16);

			*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
			if (nghttp2_submit_trailer(s, stream_id, nv, nnv) != 0)
				return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
		}
	}
	return (ssize_t)n;
}

void mm_h2_respond(mm_conn_t *c, mm_net_ex_t *ex)
{
	mm_net_res_t *res = &ex->res;
	char status[8], clen[24];
	nghttp2_nv nv[40];
	size_t n = 0;
	nghttp2_data_provider prd = {.source.ptr = ex, .read_callback = read_body};
	int has_body;

	snprintf(status, sizeof(status), "%d", res->status);
	nv[n++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status, 7, strlen(status), 0};
	if (res->content_type[0])
		nv[n++] = (nghttp2_nv){(uint8_t *)"content-type", (uint8_t *)res->content_type, 12,
				       strlen(res->content_type), 0};
	if (res->trailers.len == 0 && res->status != 204) {
		snprintf(clen, sizeof(clen), "%zu", res->body.len);
		nv[n++] = (nghttp2_nv){(uint8_t *)"content-length", (uint8_t *)clen, 14,
				       strlen(clen), 0};
	}
	n += pairs_to_nv(&res->headers, nv + n, 40 - n);
	if (ex->head)
		res->body.len = 0;
	has_body = res->body.len > 0 || res->trailers.len > 0;
	if (nghttp2_submit_response(c->h2, ex->stream_id, nv, n, has_body ? &prd : NULL) != 0)
		nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, ex->stream_id,
					  NGHTTP2_INTERNAL_ERROR);
	h2_flush(c);
	h2_arm(c);
}

int mm_h2_init(mm_conn_t *c)
{
	nghttp2_session_callbacks *cb;
	nghttp2_settings_entry iv[] = {
		{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2_MAX_STREAMS},
		{NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)c->srv->opt.max_header_bytes},
	};
	int rc;

	if (nghttp2_session_callbacks_new(&cb) != 0)
		return mm_diag_set(MM_ENOMEM, "http2: out of memory");
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	rc = nghttp2_session_server_new(&c->h2, cb, c);
	nghttp2_session_callbacks_del(cb);
	if (rc != 0)
		return mm_diag_set(MM_ENOMEM, "http2: %s", nghttp2_strerror(rc));
	nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
	return 0;
}

void mm_h2_input(mm_conn_t *c)
{
	ssize_t rv = nghttp2_session_mem_recv(c->h2, c->in.p + c->in_off, c->in.len - c->in_off);

	if (rv < 0) {
		c->srv->stats.bad_requests++;
		mm_conn_close(c);
		return;
	}
	c->in_off = c->in.len;
	h2_flush(c);
}

void mm_h2_free(mm_conn_t *c)
{
	nghttp2_session_del(c->h2);
	c->h2 = NULL;
}

int mm_h2_timeout(mm_conn_t *c)
{
	uint64_t now = uv_now(c->srv->loop);
	int receiving = 0;

	for (mm_net_ex_t *ex = c->exs; ex != NULL; ex = ex->next) {
		if (ex->refused || ex->received)
			continue;
		receiving = 1;
		if (ex->deadline <= now)
			refuse_stream(c->h2, ex, NGHTTP2_CANCEL, &c->srv->stats.timeouts);
	}
	if (!receiving)
		return 0;
	h2_flush(c);
	h2_arm(c);
	return 1;
}
