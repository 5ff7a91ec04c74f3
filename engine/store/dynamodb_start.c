/*
 * dynamodb_start.c: start(), the DynamoDB store's start-up checks, on the
 * loop like every other call of the store.
 *
 * open() sends no request. start() first fetches the container credentials when
 * they come from there (engine/aws/credentials.c), then checks the table:
 *   - without create_table (and always for a read-only store), one
 *     DescribeTable: a missing table fails the start with a message that
 *     names `murmur ddb create-table`;
 *   - with create_table, CreateTable (an existing table answers
 *     ResourceInUseException, which is fine), then DescribeTable every
 *     200 ms on a timer until the table is ACTIVE (real DynamoDB takes
 *     seconds; at most 600 rounds), then UpdateTimeToLive (dynalite has no
 *     TTL: "unsupported"; a table that has it: "already enabled").
 * Each request is a job of the store's own request slots (mm_ddb_call_check),
 * retried with the store's backoff on the slots' timers; the scheduler runs
 * no other job until the checks are done, and fails every job with the
 * checks' failure after one (dynamodb_client.c). So the loop never waits:
 * a DynamoDB that takes its time over DescribeTable delays the store's
 * owner (the engine starts no source, the query server answers no store
 * read) but nothing else on the loop.
 */
#include <stdio.h>
#include <string.h>

#include "../lib/error.h"
#include "../lib/log.h"
#include "dynamodb_impl.h"

#define DDB_ACTIVE_POLL_MS 200
#define DDB_ACTIVE_POLLS 600

static void on_polled(void *arg, int status, const char *detail);

/* The checks are over: the scheduler runs the jobs that waited (or fails
 * them), and the owner learns the outcome. */
static void start_done(mm_ddb_t *st, int rc, const char *detail)
{
	st->start_state = rc ? rc : DDB_READY;
	snprintf(st->start_detail, sizeof(st->start_detail), "%s", rc ? detail : "");
	mm_ddb_kick(st);
	st->start_cb(st->start_arg, rc, st->start_detail);
}

/* Queues one check of target with body {"TableName":T<rest>}. */
static int check(mm_ddb_t *st, const char *target, const char *rest, mm_store_cb cb)
{
	mm_buf_t b = {0};
	int rc;

	if ((rc = PUT(&b, "{\"TableName\":")) ||
	    (rc = mm_buf_append(&b, st->table_json, strlen(st->table_json))) ||
	    (rc = mm_buf_append(&b, rest, strlen(rest))) || (rc = PUT(&b, "}")) ||
	    (rc = mm_ddb_call_check(st, target, &b, cb, st)))
		mm_buf_free(&b);
	return rc;
}

/* A check that could not even be queued ends the start. */
static void checked(mm_ddb_t *st, int rc)
{
	if (rc)
		start_done(st, rc, mm_diag_msg());
}

static void on_described(void *arg, int status, const char *detail)
{
	mm_ddb_t *st = arg;

	if (status && strcmp(st->start_err, "ResourceNotFoundException") == 0) {
		mm_diag_set(MM_ENOTFOUND,
			    "dynamodb: table '%s' does not exist at %s (create it with `murmur ddb "
			    "create-table --table %s` or the store option create_table = true)",
			    st->table, st->url, st->table);
		start_done(st, MM_ENOTFOUND, mm_diag_msg());
		return;
	}
	start_done(st, status, detail);
}

static void on_ttl(void *arg, int status, const char *detail)
{
	mm_ddb_t *st = arg;

	st->ttl_state = "enabled";
	if (status && strcmp(st->start_err, "UnknownOperationException") == 0) {
		st->ttl_state = "unsupported"; /* dynalite */
		status = 0;
	} else if (status && strcmp(st->start_err, "ValidationException") == 0 &&
		   strstr(detail, "already enabled")) {
		st->ttl_state = "already enabled";
		status = 0;
	}
	if (status == 0 && st->created)
		mm_log(MM_LOG_INFO, "dynamodb", "created table '%s' (TTL %s)", st->table,
		       st->ttl_state);
	start_done(st, status, detail);
}

static void on_poll_timer(uv_timer_t *t)
{
	mm_ddb_t *st = t->data;

	checked(st, check(st, "DescribeTable", "", on_polled));
}

static void on_polled(void *arg, int status, const char *detail)
{
	mm_ddb_t *st = arg;

	if (status) {
		start_done(st, status, detail);
	} else if (strcmp(st->start_status, "ACTIVE") == 0) {
		checked(st, check(st, "UpdateTimeToLive",
				  ",\"TimeToLiveSpecification\":{\"AttributeName\":\"ttl\","
				  "\"Enabled\":true}",
				  on_ttl));
	} else if (++st->start_polls >= DDB_ACTIVE_POLLS) {
		mm_diag_set(MM_ETIMEDOUT, "dynamodb: table '%s' did not become ACTIVE", st->table);
		start_done(st, MM_ETIMEDOUT, mm_diag_msg());
	} else {
		uv_timer_start(&st->start_timer, on_poll_timer, DDB_ACTIVE_POLL_MS, 0);
	}
}

static void on_created(void *arg, int status, const char *detail)
{
	mm_ddb_t *st = arg;

	if (status == 0)
		st->created = 1;
	else if (strcmp(st->start_err, "ResourceInUseException") != 0) {
		start_done(st, status, detail);
		return;
	}
	checked(st, check(st, "DescribeTable", "", on_polled));
}

/* The table checks, once the credentials are at hand. */
static int check_table(mm_ddb_t *st)
{
	if (!st->cfg.create_table || st->read_only)
		return check(st, "DescribeTable", "", on_described);
	return check(st, "CreateTable",
		     ",\"AttributeDefinitions\":[{\"AttributeName\":\"pk\",\"AttributeType\":\"S\"},"
		     "{\"AttributeName\":\"sk\",\"AttributeType\":\"N\"}],\"KeySchema\":["
		     "{\"AttributeName\":\"pk\",\"KeyType\":\"HASH\"},{\"AttributeName\":\"sk\","
		     "\"KeyType\":\"RANGE\"}],\"BillingMode\":\"PAY_PER_REQUEST\"",
		     on_created);
}

static void on_creds(void *arg, int status, const char *detail)
{
	mm_ddb_t *st = arg;

	if (status)
		start_done(st, status, detail);
	else
		checked(st, check_table(st));
}

int mm_ddb_start(mm_store_t *base, mm_store_cb cb, void *arg)
{
	mm_ddb_t *st = (mm_ddb_t *)base;
	int rc;

	if (st->start_state != DDB_UNSTARTED)
		return mm_diag_set(MM_EINVAL, "dynamodb: start() is called once");
	st->start_state = DDB_STARTING;
	st->start_cb = cb;
	st->start_arg = arg;
	if (st->creds_pending)
		rc = mm_aws_creds_fetch(&st->creds, on_creds, st);
	else
		rc = check_table(st);
	if (rc)
		st->start_state = DDB_UNSTARTED;
	return rc;
}
