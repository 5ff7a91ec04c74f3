/*
 * rpc.h: unary RPCs of one protobuf service over the Connect protocol
 * (connect.c: POST with application/json or application/proto, GET with
 * Connect's query encoding, Connect's error JSON) and the gRPC protocol
 * (grpc.c: length-prefixed messages over HTTP/2, grpc-status trailers).
 *
 * rpc.c decodes the request into the method's input message (binary with
 * protobuf-c, JSON with pbjson.h) in the call's arena and calls the service
 * implementation once per request; the implementation answers with
 * mm_rpc_done, now or later, with a response message or an error code, and
 * rpc.c encodes it in the protocol and encoding the client used. The
 * implementation never sees HTTP.
 *
 * Errors are gRPC's status codes, written by name in Connect
 * ("not_found") and by number in gRPC (grpc-status: 5). Messages are for
 * people and never carry a stack trace.
 *
 * Threads: the loop thread.
 */
#ifndef MM_NET_RPC_H
#define MM_NET_RPC_H

#include <protobuf-c/protobuf-c.h>
#include <stdint.h>

#include "../lib/arena.h"
#include "server.h"

enum mm_rpc_code {
	MM_RPC_OK = 0,
	MM_RPC_CANCELED = 1,
	MM_RPC_UNKNOWN = 2,
	MM_RPC_INVALID_ARGUMENT = 3,
	MM_RPC_DEADLINE_EXCEEDED = 4,
	MM_RPC_NOT_FOUND = 5,
	MM_RPC_ALREADY_EXISTS = 6,
	MM_RPC_PERMISSION_DENIED = 7,
	MM_RPC_RESOURCE_EXHAUSTED = 8,
	MM_RPC_FAILED_PRECONDITION = 9,
	MM_RPC_ABORTED = 10,
	MM_RPC_OUT_OF_RANGE = 11,
	MM_RPC_UNIMPLEMENTED = 12,
	MM_RPC_INTERNAL = 13,
	MM_RPC_UNAVAILABLE = 14,
	MM_RPC_DATA_LOSS = 15,
	MM_RPC_UNAUTHENTICATED = 16,
	MM_RPC_NCODES
};

/* Connect's name of a code ("not_found"). */
const char *mm_rpc_code_name(int code);

typedef struct mm_rpc mm_rpc_t;

/* One call, owned by rpc.c; valid until mm_rpc_done. */
typedef struct mm_rpc_call {
	unsigned method;                /* index in the service descriptor */
	const ProtobufCMessage *req;    /* the decoded request */
	mm_arena_t *arena;              /* for the response and scratch; freed after done */
} mm_rpc_call_t;

/* The service implementation: answers call with mm_rpc_done exactly once. */
typedef void (*mm_rpc_impl_fn)(void *arg, mm_rpc_call_t *call);

/* Per method, for /metrics. */
typedef struct mm_rpc_method_stats {
	uint64_t calls;
	uint64_t codes[MM_RPC_NCODES];  /* answers by code */
	uint64_t ns_total;              /* decode to encode */
	uint64_t latency_le[8];         /* calls answered within 0.1, 0.25, 0.5, 1, 2.5,
	                                 * 10, 50, 250 ms (cumulative buckets) */
} mm_rpc_method_stats_t;

extern const double mm_rpc_latency_bounds_ms[8];

/* Serves svc's methods under "/<svc full name>/" on srv through impl. */
int mm_rpc_open(mm_server_t *srv, const ProtobufCServiceDescriptor *svc, mm_rpc_impl_fn impl,
		void *arg, mm_rpc_t **out);
void mm_rpc_close(mm_rpc_t *rpc);

/* Answers a call: resp (from the call's arena, or any memory that outlives
 * this call) when code is MM_RPC_OK, else the code and a printf message. */
void mm_rpc_done(mm_rpc_call_t *call, const ProtobufCMessage *resp, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Stats of method i (NULL past the last). */
const mm_rpc_method_stats_t *mm_rpc_stats(const mm_rpc_t *rpc, unsigned i, const char **name);

#endif
