/*
 * rpc.c: from an exchange to a service call and back (see rpc.h).
 *
 * The handler takes every path under "/<package>.<Service>/", picks the
 * protocol (gRPC by content type, else Connect), reads the message bytes
 * with wire.h, decodes them into the method's input type and calls the
 * implementation. mm_rpc_done encodes the answer into the exchange's
 * response and finishes it. The call lives in the exchange's arena, so an
 * exchange orphaned by a client that hung up is still answered into the
 * void and freed in one place (server.c).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "conn.h"
#include "pbjson.h"
#include "rpc.h"
#include "wire.h"

static const char *const code_names[MM_RPC_NCODES] = {
	"ok", "canceled", "unknown", "invalid_argument", "deadline_exceeded", "not_found",
	"already_exists", "permission_denied", "resource_exhausted", "failed_precondition",
	"aborted", "out_of_range", "unimplemented", "internal", "unavailable", "data_loss",
	"unauthenticated",
};

const double mm_rpc_latency_bounds_ms[8] = {0.1, 0.25, 0.5, 1, 2.5, 10, 50, 250};

struct mm_rpc {
	const ProtobufCServiceDescriptor *svc;
	mm_rpc_impl_fn impl;
	void *arg;
	char prefix[160];
	mm_rpc_method_stats_t *stats;
};

typedef struct rpc_call {
	mm_rpc_call_t pub;
	mm_rpc_t *rpc;
	mm_net_ex_t *ex;
	int grpc, json;
	int http_status;        /* Connect: a status other than the code's (415) */
	uint64_t start_ns;
} rpc_call_t;

const char *mm_rpc_code_name(int code)
{
	return code >= 0 && code < MM_RPC_NCODES ? code_names[code] : "unknown";
}

static void answer_error(rpc_call_t *c, int code, const char *msg)
{
	mm_net_res_t *res = mm_net_ex_res(c->ex);

	if (c->grpc)
		mm_grpc_error(res, c->json, code, msg);
	else
		mm_connect_error(res, code, msg);
	if (!c->grpc && c->http_status)
		res->status = c->http_status;
}

static void count(rpc_call_t *c, int code)
{
	mm_rpc_method_stats_t *s;
	uint64_t ns = uv_hrtime() - c->start_ns;

	if (c->pub.method >= c->rpc->svc->n_methods)
		return;
	s = &c->rpc->stats[c->pub.method];
	s->calls++;
	s->codes[code >= 0 && code < MM_RPC_NCODES ? code : MM_RPC_UNKNOWN]++;
	s->ns_total += ns;
	for (int i = 0; i < 8; i++)
		if ((double)ns / 1e6 <= mm_rpc_latency_bounds_ms[i])
			s->latency_le[i]++;
}

void mm_rpc_done(mm_rpc_call_t *pub, const ProtobufCMessage *resp, int code, const char *fmt, ...)
{
	rpc_call_t *c = (rpc_call_t *)pub;
	mm_net_res_t *res = mm_net_ex_res(c->ex);
	int rc = 0;

	if (code == MM_RPC_OK) {
		res->body.len = 0;
		if (c->json) {
			rc = mm_pbjson_encode(resp, &res->body);
		} else {
			size_t n = protobuf_c_message_get_packed_size(resp);

			rc = mm_buf_reserve(&res->body, n ? n : 1);
			if (rc == 0)
				res->body.len = protobuf_c_message_pack(resp, res->body.p);
		}
		if (rc) {
			code = MM_RPC_RESOURCE_EXHAUSTED;
			answer_error(c, code, "out of memory while encoding the response");
		} else if (c->grpc) {
			mm_grpc_reply(res, c->json);
		} else {
			mm_connect_reply(res, c->json);
		}
	} else {
		char msg[1024];
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		answer_error(c, code, msg);
	}
	count(c, code);
	mm_net_ex_finish(c->ex);
}

static unsigned find_method(const mm_rpc_t *rpc, const char *name)
{
	for (unsigned i = 0; i < rpc->svc->n_methods; i++)
		if (strcmp(rpc->svc->methods[i].name, name) == 0)
			return i;
	return rpc->svc->n_methods;
}

static void handle(void *arg, mm_net_ex_t *ex)
{
	mm_rpc_t *rpc = arg;
	const mm_net_req_t *req = mm_net_ex_req(ex);
	rpc_call_t *c = mm_arena_calloc(&ex->arena, sizeof(*c));
	const uint8_t *msg = NULL;
	size_t len = 0;
	int rc;
	ProtobufCMessage *in = NULL;
	const ProtobufCMethodDescriptor *m;

	if (c == NULL) {
		mm_net_ex_res(ex)->status = 503;
		mm_net_ex_finish(ex);
		return;
	}
	c->rpc = rpc;
	c->ex = ex;
	c->start_ns = uv_hrtime();
	c->grpc = mm_grpc_is(req);
	c->pub.arena = &ex->arena;
	c->pub.method = find_method(rpc, req->path + strlen(rpc->prefix));
	mm_diag_clear();
	if (mm_net_ex_res(ex)->status == 401) {
		/* The server refused the token; answer in the client's protocol. */
		mm_rpc_done(&c->pub, NULL, MM_RPC_UNAUTHENTICATED,
			    "a bearer token is required (Authorization: Bearer TOKEN)");
		return;
	}
	rc = c->grpc ? mm_grpc_read(req, &c->json, &msg, &len)
		     : mm_connect_read(req, &ex->arena, &c->json, &msg, &len, &c->http_status);
	if (rc) {
		mm_rpc_done(&c->pub, NULL, rc, "%s", mm_diag_msg());
		return;
	}
	if (c->pub.method >= rpc->svc->n_methods) {
		mm_rpc_done(&c->pub, NULL, MM_RPC_UNIMPLEMENTED, "no method %s in %s",
			    req->path + strlen(rpc->prefix), rpc->svc->name);
		return;
	}
	m = &rpc->svc->methods[c->pub.method];
	if (c->json) {
		rc = mm_pbjson_decode(m->input, (const char *)msg, len, &ex->arena, &in);
		if (rc) {
			mm_rpc_done(&c->pub, NULL, MM_RPC_INVALID_ARGUMENT, "invalid JSON request: %s",
				    mm_diag_msg());
			return;
		}
	} else {
		ProtobufCAllocator al = mm_pb_allocator(&ex->arena);

		in = protobuf_c_message_unpack(m->input, &al, len, msg);
		if (in == NULL) {
			mm_rpc_done(&c->pub, NULL, MM_RPC_INVALID_ARGUMENT,
				    "the request is not a valid %s in protobuf binary", m->input->name);
			return;
		}
	}
	c->pub.req = in;
	rpc->impl(rpc->arg, &c->pub);
}

int mm_rpc_open(mm_server_t *srv, const ProtobufCServiceDescriptor *svc, mm_rpc_impl_fn impl,
		void *arg, mm_rpc_t **out)
{
	mm_rpc_t *rpc = calloc(1, sizeof(*rpc));

	if (rpc == NULL || (rpc->stats = calloc(svc->n_methods, sizeof(*rpc->stats))) == NULL) {
		free(rpc);
		return mm_diag_set(MM_ENOMEM, "rpc: out of memory");
	}
	rpc->svc = svc;
	rpc->impl = impl;
	rpc->arg = arg;
	snprintf(rpc->prefix, sizeof(rpc->prefix), "/%s/", svc->name);
	mm_server_handler(srv, rpc->prefix, handle, rpc);
	*out = rpc;
	return 0;
}

void mm_rpc_close(mm_rpc_t *rpc)
{
	if (rpc == NULL)
		return;
	free(rpc->stats);
	free(rpc);
}

const mm_rpc_method_stats_t *mm_rpc_stats(const mm_rpc_t *rpc, unsigned i, const char **name)
{
	if (i >= rpc->svc->n_methods)
		return NULL;
	*name = rpc->svc->methods[i].name;
	return &rpc->stats[i];
}
