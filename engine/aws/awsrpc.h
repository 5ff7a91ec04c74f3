/*
 * awsrpc.h: what every client of an AWS JSON-protocol service (DynamoDB,
 * Kinesis) does the same way: split its endpoint URL, pick a setting from
 * the option or the environment, and sign a POST with its X-Amz-Target into
 * the header lines the HTTP client sends.
 *
 * Pure C on top of the signer; any thread, one thread at a time per signer.
 */
#ifndef MM_AWSRPC_H
#define MM_AWSRPC_H

#include <stddef.h>
#include <stdint.h>

#include "../lib/buf.h"
#include "credentials.h"
#include "sigv4.h"

/* v when set and not empty, else the value of the variable a, else of b
 * (each when set and not empty), else NULL. a and b may be NULL. */
const char *mm_aws_env_or(const char *v, const char *a, const char *b);

/* Splits "http(s)://host[:port][/]" into the URL to send to (with its
 * trailing '/') and the Host header value, both malloc'ed for the caller.
 * Returns 0, MM_EINVAL ("<who>: endpoint ... must ...") or MM_ENOMEM. */
int mm_aws_endpoint(const char *who, const char *ep, char **url, char **host);

/* What a signed JSON call is sent as. */
typedef struct mm_aws_rpc {
	const char *region, *service; /* "us-east-1", "dynamodb" */
	const char *host;             /* the Host header */
	const char *content_type;     /* "application/x-amz-json-1.0" */
	const char *target;           /* "DynamoDB_20120810.PutItem" */
	int64_t time_s;               /* signing time, epoch seconds */
} mm_aws_rpc_t;

/* Signs a POST / of body[0..len) with the credentials c and writes the
 * header lines to send ("Name: value\0" each) to hdr, with pointers to them
 * in ptrs. Returns the number of lines (at most 6) or a negative MM_E*. */
int mm_aws_rpc_sign(mm_sigv4_t *sig, const mm_aws_creds_t *c, const mm_aws_rpc_t *rpc,
		    const void *body, size_t len, mm_buf_t *hdr, const char *ptrs[8]);

#endif
