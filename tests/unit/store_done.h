/*
 * store_done.h: the completion record the store tests share (test_store.c,
 * test_valkey.c, test_dynamodb.c and tests/helpers/valkey_claim.c): on_done
 * is a store callback (mm_store_cb) that counts its calls and keeps the
 * last status and detail in the done_t its argument points to.
 */
#ifndef MM_TEST_STORE_DONE_H
#define MM_TEST_STORE_DONE_H

#include <stdio.h>

typedef struct done {
	int calls, status;
	char detail[512];
} done_t;

static inline void on_done(void *arg, int status, const char *detail)
{
	done_t *d = arg;

	d->calls++;
	d->status = status;
	snprintf(d->detail, sizeof(d->detail), "%s", detail);
}

#endif
