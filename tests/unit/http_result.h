/*
 * http_result.h: what a test's HTTP request callback saw, for the client's
 * unit tests (test_http.c, test_http_tls.c).
 */
#ifndef MM_TEST_HTTP_RESULT_H
#define MM_TEST_HTTP_RESULT_H

#include <stdio.h>

#include "http/http.h"

typedef struct result {
	int done, status;     /* done counts callbacks: exactly one is expected */
	long code;
	char body[4096];
	char error[256];
	size_t len;
	int *inside;          /* set while mm_http_request runs: the callback must not see it */
	int reentered;
} result_t;

/* The request callback: arg is a result_t. */
static void on_result(void *arg, const mm_http_response_t *res)
{
	result_t *r = arg;

	r->done++;
	r->status = res->status;
	r->code = res->code;
	r->len = res->len;
	snprintf(r->body, sizeof(r->body), "%.*s", (int)res->len, (const char *)res->body);
	snprintf(r->error, sizeof(r->error), "%s", res->error);
	if (r->inside && *r->inside)
		r->reentered = 1;
}

#endif
