/*
 * dynamodb_admin.c: `murmur ddb` (lua/murmur/ddb.lua through the FFI): opens
 * a store on a private loop, runs one command (create-table, the claim
 * family, get) and answers with one line of JSON. The claim commands call
 * the same code as the engine's claim rounds.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../codec/json.h"
#include "../lib/error.h"
#include "../monoid/window.h"
#include "dynamodb_impl.h"

typedef struct admin_wait {
	int done, status;
	char detail[512];
} admin_wait_t;

static void on_admin_done(void *arg, int status, const char *detail)
{
	admin_wait_t *w = arg;

	w->done = 1;
	w->status = status;
	snprintf(w->detail, sizeof(w->detail), "%s", detail ? detail : "");
}

static const char *result_name(int r)
{
	switch (r) {
	case MM_CLAIM_WON:
		return "won";
	case MM_CLAIM_STOLEN:
		return "stolen";
	case MM_CLAIM_DUPLICATE:
		return "duplicate";
	case MM_CLAIM_BUSY:
		return "busy";
	case MM_CLAIM_CONFIRMED:
		return "confirmed";
	case MM_CLAIM_RELEASED:
		return "released";
	case MM_CLAIM_RENEWED:
		return "renewed";
	case MM_CLAIM_NOT_OWNER:
		return "not_owner";
	default:
		return "error";
	}
}

/* Runs one claim-family call for the CLI on the store's loop. */
static int admin_claim(mm_ddb_t *st, const char *cmd, const mm_ns_t *ns, const char *id,
		       int64_t lease_ms, int64_t ttl_ms, mm_buf_t *out)
{
	mm_claim_t c = {.id = id, .len = strlen(id)};
	admin_wait_t w = {0};
	int rc;

	if (strcmp(cmd, "claim") == 0)
		rc = mm_ddb_claim(&st->base, ns, &c, 1, lease_ms, ttl_ms, on_admin_done, &w);
	else if (strcmp(cmd, "confirm") == 0)
		rc = mm_ddb_confirm(&st->base, ns, &c, 1, ttl_ms, on_admin_done, &w);
	else if (strcmp(cmd, "renew") == 0)
		rc = mm_ddb_renew(&st->base, ns, &c, 1, lease_ms, on_admin_done, &w);
	else
		rc = mm_ddb_release(&st->base, ns, &c, 1, on_admin_done, &w);
	while (rc == 0 && !w.done)
		uv_run(st->base.loop, UV_RUN_ONCE);
	if (rc)
		return rc;
	if (w.status)
		return mm_diag_set(w.status, "%s", w.detail);
	rc = mm_buf_printf(out, "{\"result\":\"%s\",\"owner\":", result_name(c.result));
	if (rc == 0)
		rc = mm_json_quote(st->owner, strlen(st->owner), out);
	if (rc == 0 && c.result == MM_CLAIM_BUSY)
		rc = mm_buf_printf(out, ",\"lease_until_ms\":%" PRId64, c.lease_until_ms);
	return rc ? rc : PUT(out, "}");
}

/* Prints the GetItem answer as DynamoDB sent it: {"Item":{...}} or {}. */
static int admin_get(mm_ddb_t *st, const char *ns, const char *entity, int64_t bucket,
		     mm_buf_t *out)
{
	admin_wait_t w = {0};
	mm_buf_t pk = {0};
	int rc;

	if ((rc = mm_ddb_make_pk(&pk, ns, entity, strlen(entity))) == 0)
		rc = mm_ddb_call_get(st, &pk, bucket, NULL, out, on_admin_done, &w);
	while (rc == 0 && !w.done)
		uv_run(st->base.loop, UV_RUN_ONCE);
	mm_buf_free(&pk);
	if (rc == 0 && w.status)
		rc = mm_diag_set(w.status, "%s", w.detail);
	return rc;
}

int mm_ddb_admin(const char *cmd, const char *const *kv, size_t nkv, char **out)
{
	const char *ns_name = NULL, *id = NULL, *entity = NULL;
	int64_t lease_ms = 30000, ttl_ms = 2 * 86400000LL, bucket = 0; /* the store's own defaults */
	mm_kv_t *opts = NULL;
	size_t nopts = 0, i;
	mm_store_t *base = NULL;
	mm_ddb_t *st;
	mm_buf_t res = {0};
	uv_loop_t loop;
	int rc, loop_ok = 0, create = cmd && strcmp(cmd, "create-table") == 0;

	if (out == NULL || cmd == NULL || (nkv && kv == NULL))
		return mm_diag_set(MM_EINVAL, "ddb: admin needs a command and an out pointer");
	*out = NULL;
	opts = calloc(nkv + 1, sizeof(*opts));
	if (opts == NULL)
		return mm_diag_set(MM_ENOMEM, "ddb: out of memory");
	for (i = 0; i < nkv; i++) {
		const char *k = kv[2 * i], *v = kv[2 * i + 1];

		if (k == NULL || v == NULL) {
			rc = mm_diag_set(MM_EINVAL, "ddb: option %zu has a NULL key or value", i);
			goto out;
		}
		if (strcmp(k, "ns") == 0)
			ns_name = v;
		else if (strcmp(k, "id") == 0)
			id = v;
		else if (strcmp(k, "entity") == 0)
			entity = v;
		else if (strcmp(k, "bucket") == 0)
			bucket = strtoll(v, NULL, 10);
		else if (strcmp(k, "lease") == 0 || strcmp(k, "ttl") == 0) {
			int64_t ms;

			if (mm_duration_parse(v, strlen(v), &ms)) {
				rc = mm_diag_set(MM_EINVAL, "ddb: --%s: bad duration '%s'", k, v);
				goto out;
			}
			*(k[0] == 'l' ? &lease_ms : &ttl_ms) = ms;
		} else
			opts[nopts++] = (mm_kv_t){k, v};
	}
	if (create)
		opts[nopts++] = (mm_kv_t){"create_table", "true"};
	if (uv_loop_init(&loop) != 0) {
		rc = mm_diag_set(MM_ENOMEM, "ddb: cannot create a loop");
		goto out;
	}
	loop_ok = 1;
	if ((rc = mm_store_open("dynamodb", &loop, opts, nopts, 0, &base)) ||
	    (rc = mm_store_start_wait(base)))
		goto out;
	st = (mm_ddb_t *)base;
	if (create) {
		rc = mm_buf_printf(&res, "{\"table\":");
		if (rc == 0)
			rc = mm_json_quote(st->table, strlen(st->table), &res);
		if (rc == 0)
			rc = mm_buf_printf(&res, ",\"created\":%s,\"status\":\"ACTIVE\",\"ttl\":\"%s\"}",
					   st->created ? "true" : "false", st->ttl_state);
	} else if (strcmp(cmd, "claim") == 0 || strcmp(cmd, "confirm") == 0 ||
		   strcmp(cmd, "release") == 0 || strcmp(cmd, "renew") == 0) {
		mm_monoid_t m;
		mm_ns_t ns = {ns_name, &m};

		if (ns_name == NULL || id == NULL || *id == '\0') {
			rc = mm_diag_set(MM_EINVAL, "ddb %s: needs --ns and an id", cmd);
			goto out;
		}
		mm_monoid_init(&m, "count", &(mm_monoid_params_t){0});
		rc = admin_claim(st, cmd, &ns, id, lease_ms, ttl_ms, &res);
	} else if (strcmp(cmd, "get") == 0) {
		if (ns_name == NULL || entity == NULL || *entity == '\0') {
			rc = mm_diag_set(MM_EINVAL, "ddb get: needs --ns and an entity");
			goto out;
		}
		rc = admin_get(st, ns_name, entity, bucket, &res);
	} else {
		rc = mm_diag_set(MM_EINVAL, "ddb: unknown command '%s'", cmd);
	}
	if (rc == 0)
		rc = mm_buf_put_u8(&res, 0);
	if (rc == 0) {
		*out = (char *)res.p;
		res = (mm_buf_t){0};
	}
out:
	if (rc) {
		char why[512];

		snprintf(why, sizeof(why), "%s", mm_diag_msg());
		*out = strdup(why);
	}
	if (base)
		mm_store_close(base);
	if (loop_ok) {
		uv_run(&loop, UV_RUN_DEFAULT);
		uv_loop_close(&loop);
	}
	mm_buf_free(&res);
	free(opts);
	return rc;
}

void mm_ddb_free(void *p)
{
	free(p);
}
