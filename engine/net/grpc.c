/*
 * grpc.c: the gRPC protocol's unary framing over HTTP/2 (gRPC's
 * PROTOCOL-HTTP2.md): the request body is one length-prefixed message
 * (a compressed-flag byte, a 4-byte big-endian length, the bytes); the
 * response is HEADERS (:status 200, content-type), one prefixed message and
 * trailers with grpc-status and grpc-message (percent-encoded). An error is
 * "trailers-only": one HEADERS frame carrying the status, no body. Messages
 * are protobuf (application/grpc, application/grpc+proto) or JSON
 * (application/grpc+json). Compressed messages are refused (unimplemented):
 * the server announces no grpc-accept-encoding, so clients do not send them.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "../lib/error.h"
#include "rpc.h"
#include "wire.h"

int mm_grpc_is(const mm_net_req_t *req)
{
	const char *ct = mm_net_header(req, "content-type", NULL);

	return ct != NULL && strncasecmp(ct, "application/grpc", 16) == 0 &&
	       (ct[16] == '\0' || ct[16] == '+' || ct[16] == ';');
}

int mm_grpc_read(const mm_net_req_t *req, int *json, const uint8_t **msg, size_t *len)
{
	const char *ct = mm_net_header(req, "content-type", NULL);
	const uint8_t *b = req->body;
	uint32_t n;

	*json = strncasecmp(ct + 16, "+json", 5) == 0;
	if (!*json && ct[16] == '+' && strncasecmp(ct + 16, "+proto", 6) != 0)
		return mm_diag_set(MM_RPC_UNIMPLEMENTED, "content type %s is not supported", ct);
	if (!req->http2)
		return mm_diag_set(MM_RPC_UNIMPLEMENTED, "gRPC needs HTTP/2 (h2c with prior knowledge)");
	if (strcmp(req->method, "POST") != 0)
		return mm_diag_set(MM_RPC_UNIMPLEMENTED, "gRPC requests are POSTs");
	if (req->body_len < 5)
		return mm_diag_set(MM_RPC_INVALID_ARGUMENT, "a unary call carries exactly one message");
	n = (uint32_t)b[1] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 8 | b[4];
	if (b[0] != 0)
		return mm_diag_set(MM_RPC_UNIMPLEMENTED, "compressed messages are not supported");
	if ((size_t)n != req->body_len - 5)
		return mm_diag_set(MM_RPC_INVALID_ARGUMENT, "a unary call carries exactly one message");
	*msg = b + 5;
	*len = n;
	return 0;
}

static void set_type(mm_net_res_t *res, int json)
{
	res->status = 200;
	mm_net_res_type(res, json ? "application/grpc+json" : "application/grpc+proto");
}

void mm_grpc_reply(mm_net_res_t *res, int json)
{
	size_t n = res->body.len;

	set_type(res, json);
	if (mm_buf_reserve(&res->body, 5) != 0) {
		mm_grpc_error(res, json, MM_RPC_RESOURCE_EXHAUSTED, "out of memory");
		return;
	}
	memmove(res->body.p + 5, res->body.p, n);
	res->body.p[0] = 0;
	res->body.p[1] = (uint8_t)(n >> 24);
	res->body.p[2] = (uint8_t)(n >> 16);
	res->body.p[3] = (uint8_t)(n >> 8);
	res->body.p[4] = (uint8_t)n;
	res->body.len = n + 5;
	res->trailers.len = 0;
	mm_buf_append(&res->trailers, "grpc-status\0" "0\0", 14);
}

void mm_grpc_error(mm_net_res_t *res, int json, int code, const char *msg)
{
	char status[8], enc[1024];
	size_t j = 0;

	/* grpc-message is percent-encoded: everything outside printable
	 * ASCII, and '%' itself. */
	for (const unsigned char *p = (const unsigned char *)msg; *p && j + 4 < sizeof(enc); p++) {
		if (*p >= 0x20 && *p <= 0x7e && *p != '%')
			enc[j++] = (char)*p;
		else
			j += (size_t)snprintf(enc + j, 4, "%%%02X", *p);
	}
	enc[j] = '\0';
	set_type(res, json);
	res->body.len = 0;
	res->trailers.len = 0;
	snprintf(status, sizeof(status), "%d", code);
	mm_net_res_header(res, "grpc-status", status);
	mm_net_res_header(res, "grpc-message", enc);
}
