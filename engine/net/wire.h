/*
 * wire.h: the two RPC protocols' framing, shared by rpc.c. Not public.
 *
 * connect.c reads a Connect unary request (POST body, or a GET's query
 * string) and writes Connect responses and error JSON; grpc.c reads a gRPC
 * request's one length-prefixed message and writes the prefixed response
 * with grpc-status trailers. Each reader returns 0 and the message bytes,
 * or an MM_RPC_* code with a message in the diagnostics slot; a reply never
 * fails (out of memory turns into a bodiless error status).
 */
#ifndef MM_NET_WIRE_H
#define MM_NET_WIRE_H

#include "../lib/arena.h"
#include "route.h"

/* Connect. *json: 1 for application/json, 0 for application/proto. A
 * request that is not Connect at all (another content type) returns
 * MM_RPC_UNIMPLEMENTED with *http_status = 415. */
int mm_connect_read(const mm_net_req_t *req, mm_arena_t *a, int *json, const uint8_t **msg,
		    size_t *len, int *http_status);
void mm_connect_reply(mm_net_res_t *res, int json);   /* res->body holds the message */
void mm_connect_error(mm_net_res_t *res, int code, const char *msg);

/* 1 if req is a gRPC request (content type application/grpc...). */
int mm_grpc_is(const mm_net_req_t *req);
int mm_grpc_read(const mm_net_req_t *req, int *json, const uint8_t **msg, size_t *len);
/* res->body holds the message: prefixes it, adds grpc-status 0 trailers. */
void mm_grpc_reply(mm_net_res_t *res, int json);
void mm_grpc_error(mm_net_res_t *res, int json, int code, const char *msg);

#endif
