/*
 * credentials.h: the AWS credentials a signed client uses, found the way the
 * AWS SDKs look for them, and kept fresh on the libuv loop.
 *
 * Where they come from, in order:
 *   1. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN):
 *      static keys that never expire (any values do for a local emulator);
 *   2. the container endpoint (ECS, and the Lambda runtime's equivalent):
 *      AWS_CONTAINER_CREDENTIALS_FULL_URI, or
 *      AWS_CONTAINER_CREDENTIALS_RELATIVE_URI under http://169.254.170.2,
 *      with AWS_CONTAINER_AUTHORIZATION_TOKEN or
 *      AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE as its Authorization header.
 *      The answer ({"AccessKeyId", "SecretAccessKey", "Token",
 *      "Expiration"}) is fetched on the loop (find + start + fetch), never
 *      blocking; once started, a
 *      timer on the loop fetches it again five minutes before it expires
 *      (retrying every 10 s on failure), so a long-running worker never signs
 *      with an expired key.
 *
 * One mm_aws_creds_t per client (a DynamoDB store, a Kinesis source...),
 * embedded in its owner. The owner reads akid/secret/token when it signs; a
 * refresh replaces them between two loop callbacks, never during a signing.
 * Secrets are wiped from memory when replaced or freed.
 *
 * Lifetime: find (no I/O) -> start (arms the refresh timer on the loop) ->
 * fetch (the first container answer, on the loop; again after a failure) ->
 * close (the timer goes; `closed` runs from its close callback) -> free. A
 * failed or never-started find is undone with free alone.
 *
 * Threads: the loop thread (find may run before the loop does).
 */
#ifndef MM_AWS_CREDENTIALS_H
#define MM_AWS_CREDENTIALS_H

#include <stdint.h>
#include <uv.h>

#include "../http/http.h"

typedef struct mm_aws_creds {
	/* The current credentials (NUL-terminated; token may be NULL). */
	char *akid, *secret, *token;
	int64_t expires_ms;        /* epoch ms; 0 = static, never refreshed */
	/* Private. */
	const char *who;           /* prefix of messages, e.g. "dynamodb" */
	char *url, *auth;          /* container endpoint and its header line */
	mm_http_t *http;
	uv_timer_t timer;
	int refreshing, closing;
	void (*fetched)(void *arg, int status, const char *detail);
	void *fetched_arg;
	void (*closed)(void *arg);
	void *closed_arg;
} mm_aws_creds_t;

/*
 * Finds where the credentials come from, without I/O: 0 when they are at hand
 * (static keys), 1 when they come from the container endpoint and are fetched
 * once started (mm_aws_creds_fetch), MM_EINVAL when none is configured (the
 * message says what to set) or MM_ENOMEM. who prefixes messages and must
 * outlive c. On failure c holds nothing that free cannot release.
 */
int mm_aws_creds_find(mm_aws_creds_t *c, const char *who);

/*
 * After start, for find's 1: fetches the container credentials now, on the
 * loop; done(arg, status, detail) runs with 0 or the failure (not retried),
 * unless c is closed first. Returns 0 or an error (done is then not called).
 */
int mm_aws_creds_fetch(mm_aws_creds_t *c, void (*done)(void *arg, int status, const char *detail),
		       void *arg);

/* Starts refreshing expiring credentials on loop through http (which must
 * outlive the close). Cannot fail. */
void mm_aws_creds_start(mm_aws_creds_t *c, uv_loop_t *loop, mm_http_t *http);

/* Stops refreshing and closes the timer; closed(arg) runs from its close
 * callback, after which c may be freed. Only after start. */
void mm_aws_creds_close(mm_aws_creds_t *c, void (*closed)(void *arg), void *arg);

/* Wipes and frees the credentials and settings (not c itself). */
void mm_aws_creds_free(mm_aws_creds_t *c);

#endif
