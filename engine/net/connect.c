/*
 * connect.c: the Connect protocol's unary framing (connectrpc.com/docs/
 * protocol): a POST whose body is the message, in application/proto or
 * application/json; a GET (for methods without side effects) whose query
 * string carries encoding=proto|json, message=<percent-encoded, or URL-safe
 * base64 with base64=1>, and optionally compression and connect=v1. The
 * response is the bare message with the same content type; an error is
 * JSON {"code": "not_found", "message": "..."} with the HTTP status the
 * protocol assigns to the code. Compression is not offered, so a request
 * compressed with anything but identity is refused as unimplemented.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "../codec/json.h"
#include "../lib/error.h"
#include "../lib/text.h"
#include "pbjson.h"
#include "rpc.h"
#include "wire.h"

static const int http_of_code[MM_RPC_NCODES] = {
	200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401,
};

static int is_identity(const char *enc)
{
	return enc == NULL || enc[0] == '\0' || strcasecmp(enc, "identity") == 0;
}

/* Content type without parameters, compared case-insensitively. */
static int type_is(const char *ct, const char *want)
{
	size_t n = strlen(want);

	return ct != NULL && strncasecmp(ct, want, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* Percent-decodes (and '+' as space, the form encoding) into the arena. */
static char *unescape(mm_arena_t *a, const char *p, size_t n, size_t *outlen)
{
	char *s = mm_arena_alloc(a, n + 1);
	size_t j = 0;

	if (s == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '%' && i + 2 < n && mm_hex_digit(p[i + 1]) >= 0 && mm_hex_digit(p[i + 2]) >= 0) {
			s[j++] = (char)(mm_hex_digit(p[i + 1]) * 16 + mm_hex_digit(p[i + 2]));
			i += 2;
		} else {
			s[j++] = p[i] == '+' ? ' ' : p[i];
		}
	}
	s[j] = '\0';
	*outlen = j;
	return s;
}

static int read_get(const mm_net_req_t *req, mm_arena_t *a, int *json, const uint8_t **msg, size_t *len)
{
	const char *q = req->query, *message = NULL, *encoding = NULL, *compression = NULL;
	size_t mlen = 0, elen = 0;
	int b64 = 0;

	while (*q) {
		const char *amp = strchr(q, '&'), *end = amp ? amp : q + strlen(q);
		const char *eq = memchr(q, '=', (size_t)(end - q));
		size_t klen = eq ? (size_t)(eq - q) : (size_t)(end - q), vlen = 0;
		const char *v = eq ? unescape(a, eq + 1, (size_t)(end - eq - 1), &vlen) : "";

		if (v == NULL)
			return mm_diag_set(MM_RPC_RESOURCE_EXHAUSTED, "out of memory");
		if (klen == 7 && memcmp(q, "message", 7) == 0)
			message = v, mlen = vlen;
		else if (klen == 8 && memcmp(q, "encoding", 8) == 0)
			encoding = v, elen = vlen;
		else if (klen == 6 && memcmp(q, "base64", 6) == 0)
			b64 = vlen == 1 && v[0] == '1';
		else if (klen == 11 && memcmp(q, "compression", 11) == 0)
			compression = v;
		q = amp ? amp + 1 : end;
	}
	if (encoding == NULL || message == NULL)
		return mm_diag_set(MM_RPC_INVALID_ARGUMENT,
				   "a Connect GET needs the query parameters encoding and message");
	if (elen == 4 && memcmp(encoding, "json", 4) == 0)
		*json = 1;
	else if (elen == 5 && memcmp(encoding, "proto", 5) == 0)
		*json = 0;
	else
		return mm_diag_set(MM_RPC_INVALID_ARGUMENT, "encoding must be json or proto");
	if (!is_identity(compression))
		return mm_diag_set(MM_RPC_UNIMPLEMENTED, "compression %s is not supported", compression);
	if (b64) {
		mm_buf_t b = {0};
		uint8_t *copy;

		if (mm_base64_decode(message, mlen, MM_BASE64_LENIENT, &b) != 0) {
			mm_buf_free(&b);
			return mm_diag_set(MM_RPC_INVALID_ARGUMENT, "message: invalid base64");
		}
		copy = mm_arena_alloc(a, b.len ? b.len : 1);
		if (copy && b.len)
			memcpy(copy, b.p, b.len);
		*len = b.len;
		mm_buf_free(&b);
		if (copy == NULL)
			return mm_diag_set(MM_RPC_RESOURCE_EXHAUSTED, "out of memory");
		*msg = copy;
		return 0;
	}
	*msg = (const uint8_t *)message;
	*len = mlen;
	return 0;
}

int mm_connect_read(const mm_net_req_t *req, mm_arena_t *a, int *json, const uint8_t **msg,
		    size_t *len, int *http_status)
{
	const char *ct = mm_net_header(req, "content-type", NULL);

	*http_status = 0;
	if (strcmp(req->method, "GET") == 0)
		return read_get(req, a, json, msg, len);
	if (strcmp(req->method, "POST") != 0) {
		*http_status = 405;
		return mm_diag_set(MM_RPC_UNIMPLEMENTED, "use POST, or GET with Connect's query encoding");
	}
	if (type_is(ct, "application/json"))
		*json = 1;
	else if (type_is(ct, "application/proto"))
		*json = 0;
	else {
		*http_status = 415;
		return mm_diag_set(MM_RPC_UNIMPLEMENTED,
				   "content type must be application/json or application/proto "
				   "(Connect), or application/grpc over HTTP/2");
	}
	if (!is_identity(mm_net_header(req, "content-encoding", NULL)))
		return mm_diag_set(MM_RPC_UNIMPLEMENTED, "compressed requests are not supported");
	*msg = req->body;
	*len = req->body_len;
	return 0;
}

void mm_connect_reply(mm_net_res_t *res, int json)
{
	res->status = 200;
	mm_net_res_type(res, json ? "application/json" : "application/proto");
}

void mm_connect_error(mm_net_res_t *res, int code, const char *msg)
{
	res->status = code > 0 && code < MM_RPC_NCODES ? http_of_code[code] : 500;
	mm_net_res_type(res, "application/json");
	res->body.len = 0;
	if (mm_buf_printf(&res->body, "{\"code\":\"%s\",\"message\":", mm_rpc_code_name(code)) ||
	    mm_json_quote(msg, strlen(msg), &res->body) || mm_buf_put_u8(&res->body, '}'))
		res->body.len = 0;
}
