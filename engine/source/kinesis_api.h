/*
 * kinesis_api.h: a signed AWS JSON-protocol client on the loop, used by the
 * Kinesis source for the Kinesis API (ListShards, GetShardIterator,
 * GetRecords) and by its lease manager for the DynamoDB lease table.
 *
 * Both services speak the same protocol: POST / with a JSON body, the
 * operation in X-Amz-Target ("Kinesis_20131202.GetRecords",
 * "DynamoDB_20120810.UpdateItem"), the content type
 * application/x-amz-json-1.1 (Kinesis) or 1.0 (DynamoDB), SigV4 over the
 * whole request, and errors as a non-200 answer whose JSON names the
 * exception in "__type" (after a '#' on DynamoDB). One mm_kapi_t is one
 * endpoint of one service with its own credentials (engine/aws) and HTTP
 * client (engine/http); calls are independent and may overlap.
 *
 * The client does not retry: what a failure means depends on the call
 * (a throttled GetRecords is paced by the shard, a lost conditional lease
 * write is a result). The answer hands the exception name to the caller,
 * which decides; mm_kapi_retriable() says which failures are transient.
 *
 * Contracts (libuv's): a call's callback runs later on the loop thread,
 * never inside mm_kapi_call; a call that returns an error never calls it.
 * Closing abandons calls in flight without their callbacks.
 *
 * Credentials from the container endpoint are fetched on the loop by the
 * first call; calls made meanwhile wait for them, and all of them fail
 * retriably (MM_EIO, naming the endpoint) if the fetch does.
 *
 * Threads: the loop thread.
 */
#ifndef MM_KINESIS_API_H
#define MM_KINESIS_API_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../aws/awsjson.h"
#include "../lib/buf.h"

typedef struct mm_kapi mm_kapi_t;

typedef struct mm_kapi_config {
	const char *who;          /* prefix of messages ("kinesis"); must outlive the client */
	const char *service;      /* SigV4 service: "kinesis" or "dynamodb" */
	const char *target;       /* X-Amz-Target prefix: "Kinesis_20131202" */
	const char *content_type; /* "application/x-amz-json-1.1" */
	const char *endpoint;     /* "http(s)://host[:port]"; NULL: AWS's for the region */
	const char *region;       /* NULL: $AWS_REGION, $AWS_DEFAULT_REGION, us-east-1 */
	long timeout_ms;          /* per request; 0 = 10 s */
} mm_kapi_config_t;

/* The outcome of a call, valid during the callback only. */
typedef struct mm_kapi_answer {
	int status;             /* 0: a 200 answer parsed into root; else MM_EIO
	                         * (transport, 5xx, unreadable), MM_EAGAIN
	                         * (throttled) or MM_EINVAL (any other exception) */
	const mm_jnode_t *root; /* the answer's JSON (status 0) */
	const char *error;      /* exception name ("ExpiredIteratorException"), "" if none */
	const char *detail;     /* "HTTP 400 Name: message", for logs */
	size_t bytes;           /* response body size */
} mm_kapi_answer_t;

typedef void (*mm_kapi_cb)(void *arg, const mm_kapi_answer_t *a);

/* Opens a client without I/O: finds where the credentials come from
 * (engine/aws/credentials.h) and starts their refresh. Returns 0, MM_EINVAL
 * (bad endpoint, no credentials; the message says what to set) or
 * MM_ENOMEM. */
int mm_kapi_open(uv_loop_t *loop, const mm_kapi_config_t *cfg, mm_kapi_t **out);

/* Signs and sends `op` with body[0..len) (copied), or queues it until the
 * container credentials are fetched. cb runs once with the answer. Returns
 * 0, MM_ENOMEM, MM_ECLOSED or the HTTP client's refusal. */
int mm_kapi_call(mm_kapi_t *api, const char *op, const void *body, size_t len, mm_kapi_cb cb,
		 void *arg);

/* 1 if a failed answer may succeed when sent again (transport, 5xx,
 * throttling, an expired token). */
int mm_kapi_retriable(const mm_kapi_answer_t *a);

/* The endpoint URL the client sends to (for status). */
const char *mm_kapi_url(const mm_kapi_t *api);

/* Abandons calls in flight, closes the handles and frees the client;
 * done(arg) runs from the last close callback (done may be NULL). */
void mm_kapi_close(mm_kapi_t *api, void (*done)(void *arg), void *arg);

#endif
