/*
 * dynamodb.c: the DynamoDB store, asynchronous on the libuv loop through
 * murmur's HTTP client (engine/http/http.h), signed with our SigV4
 * (engine/aws/sigv4.c). Shared by every worker: Kafka workers and the Kinesis
 * Lambda write the same rows.
 *
 * Table schema (one table, created by `murmur ddb create-table`):
 *
 *   pk  S  partition key     sk  N  sort key
 *
 *   state        pk "<ns>#<entity>"   sk bucket (0 = all-time, else the
 *                                     window bucket id)
 *                v    N (sum, count, min, max) or B (every other monoid:
 *                     the monoid's own encoding, e.g. Valkey's HLL bytes)
 *                ttl  N epoch seconds, windowed buckets only (native TTL)
 *                ver  N version of a B value, for optimistic concurrency
 *                w_<writer>  N replay token of one writer process (below)
 *   dedup mark   pk "<ns>#<id>"       sk -1   st S ("P" pending, "C"
 *                confirmed), own S (owner), ls N (lease end, ms), ttl N
 *   metadata     pk "<ns>"            sk -2   v B (the pipeline descriptor)
 *   ns registry  pk "#meta"           sk -2   names SS (namespaces with metadata)
 *   position     pk "#pos#<source>"   sk -3   v B, pend S (a flush intent
 *                                     being applied: "<writer>#<seq>#<chunks>")
 *   intent       pk "#intent#<writer>#<seq>"  sk chunk   d B, ttl N
 *
 * Namespace names are [A-Za-z0-9_.-], so "<ns>#..." never collides with
 * "<ns>" or "#...". An entity (or id) that is not valid UTF-8 cannot be a
 * DynamoDB string; it is stored as "<ns>!<base64>" instead.
 *
 * Merges (apply), one request per delta, up to max_inflight at once:
 *   sum, count  UpdateItem "ADD v :d SET ttl = :t, w_me = :seq", condition
 *               "attribute_not_exists(w_me) OR w_me < :seq": one atomic
 *               request, no read. Float sums add in DynamoDB's decimal
 *               arithmetic (38 digits).
 *   min, max    UpdateItem "SET v = :x", condition "attribute_not_exists(v)
 *               OR v > :x" (min) / "v < :x" (max); a failed condition means
 *               the stored value already wins. Idempotent by nature.
 *   the rest    read (consistent) -> decode -> merge -> encode ->
 *               UpdateItem "SET v, ver = ver + 1, ttl, w_me" conditional on
 *               the version read ("attribute_not_exists(ver)" for a new
 *               item); a lost race (ConditionalCheckFailed) re-reads with
 *               GetItem after a jittered pause. The reads are batched: the
 *               keys are cut into chunks (one per slot while there are few,
 *               at most 100), a slot reads its chunk with one BatchGetItem
 *               and then writes the chunk's keys one by one.
 * Throttling (ProvisionedThroughputExceeded, ThrottlingException,
 * RequestLimitExceeded), HTTP 5xx and transport failures are retried with
 * full-jitter exponential backoff (backoff_base * 2^n, capped at backoff_max)
 * up to max_attempts; then the apply fails with MM_ESTORE and the engine
 * pauses the sources and retries the same flush later. Other errors
 * (validation, access) fail the apply at once.
 *
 * Not atomic (no MM_STORE_CAP_ATOMIC): each delta that becomes durable is flagged in
 * f->delta_done, and a retried flush skips flagged deltas. The remaining
 * hazard is a request that DynamoDB applied but whose answer was lost (a
 * timeout, a reset connection): retrying an ADD would count twice. Hence the
 * replay token. Every writer (store open) has a random 64-bit id and numbers
 * its flushes with a strictly increasing seq (>= the wall clock in ms); every
 * write stores w_<writer> = seq on the item, conditional on the stored token
 * being older. A retried flush reuses its seq (the engine retries with the
 * same mm_flush_t, which is how a retry is recognised), so a write that was
 * applied fails its condition and is counted as done, whatever other writers
 * did to the item meanwhile. The read-merge-write path checks the token it
 * read the same way. This needs at most one delta per (ns, entity, bucket) in
 * a flush, which the engine's pre-aggregation guarantees. Tokens older than
 * token_ttl are removed opportunistically (one sum/count write in eight asks
 * for the item back and removes them with a conditional REMOVE; the
 * read-merge-write path removes them in its write), so items do not grow with restarts; the
 * idempotency window of a flush retry is therefore token_ttl (1 day).
 *
 * An apply runs in phases: deltas, then the flush's dedup marks, then the
 * positions, each phase only once the previous one is entirely durable. Marks
 * are written as "confirmed" (condition: absent, ours, or expired), which is
 * the confirm step of the claim protocol in dynamodb.h, so a confirmed id
 * always has its effect in the table. Purges are no-ops: windowed
 * buckets carry a ttl and expire natively (DynamoDB deletes them within days;
 * reads treat an item whose ttl has passed as absent). Positions are written
 * as items after every delta and mark of the flush is durable (option
 * `positions`); with a shared store the source's own commit (Kafka offsets)
 * is the position that matters.
 *
 * get_many: BatchGetItem in chunks of 100 unique keys (duplicates in the
 * request are fetched once), chunks concurrently; UnprocessedKeys are sent
 * again with backoff; results land in request order.
 *
 * Flush intents (dynamodb_intent.c): before the first delta of a flush that
 * moves a source position, the flush's deltas and positions are written as
 * an intent and each position item points to it; whoever reads a position
 * that points to an intent first finishes that flush with its writer's
 * replay tokens (idempotent), so a worker killed between deltas leaves no
 * half-applied flush behind its position.
 *
 * Positions and metadata (get_position, get_meta, put_meta, list_meta) are
 * asynchronous jobs like apply and get_many, and so are the start-up checks
 * (start(): container credentials, DescribeTable, with create_table
 * CreateTable and the wait for ACTIVE on a timer; dynamodb_start.c), and
 * `murmur ddb` drives its private loop through the same jobs: nothing here
 * blocks or sleeps.
 *
 * Credentials: engine/aws/credentials.c (static keys, else the container
 * endpoint, refreshed on the loop before they expire).
 *
 * The code: dynamodb_impl.h lists the pieces (client, item codec, apply,
 * reads, claims, administration, start-up checks); this file holds the
 * options, open and close.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "../aws/awsrpc.h"
#include "../codec/json.h"
#include "../lib/log.h"
#include "../lib/error.h"
#include "dynamodb_impl.h"

static const mm_option_t ddb_options[] = {
	{MM_OPT_STRING, "table", NULL, offsetof(ddb_cfg_t, table),
	 "Table name. Default $MURMUR_DYNAMODB_TABLE; required."},
	{MM_OPT_STRING, "region", NULL, offsetof(ddb_cfg_t, region),
	 "AWS region. Default $AWS_REGION, then $AWS_DEFAULT_REGION, then us-east-1."},
	{MM_OPT_STRING, "endpoint", NULL, offsetof(ddb_cfg_t, endpoint),
	 "Endpoint URL, e.g. http://127.0.0.1:8000 for an emulator. Default "
	 "$MURMUR_DYNAMODB_ENDPOINT, then https://dynamodb.REGION.amazonaws.com."},
	{MM_OPT_INT, "max_inflight", "32", offsetof(ddb_cfg_t, max_inflight),
	 "Requests in flight at once (1..1024); also the HTTP connections kept open."},
	{MM_OPT_INT, "max_attempts", "10", offsetof(ddb_cfg_t, max_attempts),
	 "Attempts per request on throttling, 5xx and transport errors before the apply "
	 "fails (the engine then pauses the sources and retries the flush)."},
	{MM_OPT_DURATION_MS, "backoff_base", "25ms", offsetof(ddb_cfg_t, backoff_base_ms),
	 "First retry delay; doubles per attempt, with full jitter."},
	{MM_OPT_DURATION_MS, "backoff_max", "5s", offsetof(ddb_cfg_t, backoff_max_ms),
	 "Longest retry delay."},
	{MM_OPT_DURATION_MS, "request_timeout", "10s", offsetof(ddb_cfg_t, request_timeout_ms),
	 "Time limit of one HTTP request (then retried)."},
	{MM_OPT_DURATION_MS, "connect_timeout", "3s", offsetof(ddb_cfg_t, connect_timeout_ms),
	 "Time limit of a TCP/TLS connect."},
	{MM_OPT_DURATION_MS, "token_ttl", "1d", offsetof(ddb_cfg_t, token_ttl_ms),
	 "How long a writer's replay token stays on an item: the window in which a retried "
	 "flush is recognised as already applied."},
	{MM_OPT_DURATION_MS, "lease", "30s", offsetof(ddb_cfg_t, lease_ms),
	 "Lease of a dedup claim: how long the claims of a worker that stopped renewing "
	 "its lease (it died) stay blocked before another worker may take them over. A "
	 "live worker renews its lease every third of it while a flush with claims is in "
	 "progress, however long the flush takes."},
	{MM_OPT_BOOL, "consistent_read", "false", offsetof(ddb_cfg_t, consistent_read),
	 "Strongly consistent reads for get_many and queries (read-merge-write always "
	 "reads consistently)."},
	{MM_OPT_BOOL, "positions", "true", offsetof(ddb_cfg_t, positions),
	 "Store source positions as items after each flush, so a restarted file source "
	 "resumes after the last durable flush."},
	{MM_OPT_BOOL, "create_table", "false", offsetof(ddb_cfg_t, create_table),
	 "Create the table (and enable TTL) at start-up when it does not exist."},
	{MM_OPT_STRING, "owner", NULL, offsetof(ddb_cfg_t, owner),
	 "Owner id written on dedup claims. Default: random per process. A fixed owner per "
	 "reader lets a restarted run take its own unfinished claims back at once instead of "
	 "waiting out their lease; it must be unique among the workers that run at the same "
	 "time."},
	{0},
};

static void ddb_free(mm_ddb_t *st)
{
	size_t i;

	for (i = 0; i < st->nslots; i++) {
		ddb_slot_t *sl = &st->slots[i];

		mm_buf_free(&sl->body);
		mm_buf_free(&sl->pk);
		mm_buf_free(&sl->val);
		mm_buf_free(&sl->hdr);
		mm_jtree_free(&sl->tree);
		mm_jtree_free(&sl->batch_tree);
	}
	free(st->slots);
	mm_sigv4_free(&st->sig);
	mm_aws_creds_free(&st->creds);
	free(st->table);
	free(st->table_json);
	free(st->region);
	free(st->url);
	free(st->host);
	free(st->owner);
	mm_ddb_taken_free(st);
	free(st);
}

void mm_ddb_handle_gone(mm_ddb_t *st)
{
	if (--st->open_handles == 0)
		ddb_free(st);
}

static void on_timer_closed(uv_handle_t *h)
{
	mm_ddb_handle_gone(h->data);
}

static void on_creds_closed(void *arg)
{
	mm_ddb_handle_gone(arg);
}

static void on_slot_timer_closed(uv_handle_t *h)
{
	mm_ddb_handle_gone(((ddb_slot_t *)h->data)->st);
}

/* Closes every libuv handle; st is freed when the last one is closed. */
static void ddb_close_handles(mm_ddb_t *st)
{
	size_t i;

	st->closing = 1;
	mm_http_close(st->http);
	st->http = NULL;
	/* An intent's encoding or decoding still on the thread pool counts too. */
	st->open_handles = 3 + st->nslots + st->encoding;
	uv_close((uv_handle_t *)&st->kick, on_timer_closed);
	uv_close((uv_handle_t *)&st->start_timer, on_timer_closed);
	mm_aws_creds_close(&st->creds, on_creds_closed, st);
	for (i = 0; i < st->nslots; i++)
		uv_close((uv_handle_t *)&st->slots[i].timer, on_slot_timer_closed);
}

/* One line of counters when the store closes: INFO for a store that flushed,
 * DEBUG for queries and administration. */
static void ddb_log_stats(mm_ddb_t *st)
{
	static const char *const names[MM_DDB_NOPS] = {"GetItem", "PutItem", "UpdateItem",
						       "DeleteItem", "BatchGetItem", "other"};
	mm_ddb_stats_t s;
	char ops[256] = "", lat[128] = "";
	size_t len = 0;
	uint64_t total = 0;
	int i;

	mm_ddb_get_stats(&st->base, &s);
	for (i = 0; i < MM_DDB_NOPS; i++) {
		total += s.requests[i];
		if (s.requests[i] && len < sizeof(ops))
			len += (size_t)snprintf(ops + len, sizeof(ops) - len, "%s%s %" PRIu64,
						len ? ", " : "", names[i], s.requests[i]);
	}
	if (total == 0)
		return;
	if (s.applies)
		snprintf(lat, sizeof(lat), "; %" PRIu64 " applies, p50 %.2f ms, p99 %.2f ms, max %.2f ms",
			 s.applies, s.apply_ns_p50 / 1e6, s.apply_ns_p99 / 1e6,
			 s.apply_ns_max / 1e6);
	mm_log(s.applies ? MM_LOG_INFO : MM_LOG_DEBUG, "dynamodb",
	       "%" PRIu64 " requests (%s); %" PRIu64 " retries, %" PRIu64 " throttled, %" PRIu64
	       " 5xx, %" PRIu64 " transport errors, %" PRIu64 " CAS conflicts, %" PRIu64
	       " replays skipped, %" PRIu64 " unprocessed keys%s",
	       total, ops, s.retries, s.throttled, s.server_errors, s.transport_errors,
	       s.cas_conflicts, s.replays_skipped, s.unprocessed_keys, lat);
}

static void ddb_close(mm_store_t *base)
{
	mm_ddb_t *st = (mm_ddb_t *)base;

	ddb_log_stats(st);
	while (st->jobs) {
		ddb_job_t *job = st->jobs;

		st->jobs = job->next;
		/* The completion of an encoding in flight frees its job. */
		if (!job->encoding)
			mm_ddb_job_free(job);
	}
	ddb_close_handles(st);
}

static int ddb_open(uv_loop_t *loop, const mm_kv_t *kv, size_t nkv, int read_only,
		    mm_store_t **out)
{
	mm_ddb_t *st = calloc(1, sizeof(*st));
	const char *table, *region, *endpoint;
	mm_buf_t tmp = {0};
	mm_http_options_t hopt;
	uint64_t rnd[2] = {0, 0};
	size_t i;
	int rc;

	if (st == NULL)
		return mm_diag_set(MM_ENOMEM, "dynamodb: cannot allocate the store");
	st->base.vt = &mm_store_dynamodb_vtable;
	st->base.loop = loop;
	st->read_only = read_only;
	st->ttl_state = "unchanged";
	if ((rc = mm_options_apply(ddb_options, "dynamodb", kv, nkv, &st->cfg)))
		goto fail;
	if (st->cfg.max_inflight < 1 || st->cfg.max_inflight > 1024 || st->cfg.max_attempts < 1 ||
	    st->cfg.request_timeout_ms < 1 || st->cfg.token_ttl_ms < 60000 || st->cfg.lease_ms < 100) {
		rc = mm_diag_set(MM_EINVAL, "dynamodb: max_inflight must be 1..1024, max_attempts "
					    ">= 1, request_timeout > 0, token_ttl >= 1m and lease >= 100ms");
		goto fail;
	}
	st->base.lease_ms = st->cfg.lease_ms;
	table = mm_aws_env_or(st->cfg.table, "MURMUR_DYNAMODB_TABLE", NULL);
	region = mm_aws_env_or(st->cfg.region, "AWS_REGION", "AWS_DEFAULT_REGION");
	endpoint = mm_aws_env_or(st->cfg.endpoint, "MURMUR_DYNAMODB_ENDPOINT", NULL);
	if (table == NULL) {
		rc = mm_diag_set(MM_EINVAL, "dynamodb: no table: set the store option 'table' or "
					    "MURMUR_DYNAMODB_TABLE");
		goto fail;
	}
	st->table = strdup(table);
	st->region = strdup(region ? region : "us-east-1");
	if ((rc = mm_json_quote(table, strlen(table), &tmp)) || (rc = mm_buf_put_u8(&tmp, 0)))
		goto fail;
	st->table_json = (char *)tmp.p;
	tmp = (mm_buf_t){0};
	if (endpoint == NULL && st->region) {
		if ((rc = mm_buf_printf(&tmp, "https://dynamodb.%s.amazonaws.com%c", st->region, 0)))
			goto fail;
		endpoint = (const char *)tmp.p;
	}
	if (endpoint && (rc = mm_aws_endpoint("dynamodb", endpoint, &st->url, &st->host)))
		goto fail;
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		rnd[0] = uv_hrtime() ^ ((uint64_t)getpid() << 32);
		rnd[1] = rnd[0] * 0x9E3779B97F4A7C15ULL;
	}
	st->rng = rnd[1] | 1;
	snprintf(st->writer_attr, sizeof(st->writer_attr), "w_%016" PRIx64, rnd[0]);
	st->owner = strdup(st->cfg.owner ? st->cfg.owner : st->writer_attr + 2);
	if (!st->table || !st->region || !st->owner || !st->url) {
		rc = mm_diag_set(MM_ENOMEM, "dynamodb: out of memory");
		goto fail;
	}
	/* Where the credentials come from; a container's are fetched by start(),
	 * on the loop, like the table checks. */
	if ((rc = mm_aws_creds_find(&st->creds, "dynamodb")) < 0)
		goto fail;
	st->creds_pending = rc == 1;
	st->nslots = (size_t)st->cfg.max_inflight;
	st->slots = calloc(st->nslots, sizeof(*st->slots));
	if (st->slots == NULL) {
		rc = mm_diag_set(MM_ENOMEM, "dynamodb: cannot allocate %zu slots", st->nslots);
		goto fail;
	}
	hopt = (mm_http_options_t){.max_connections = st->cfg.max_inflight,
				   .connect_timeout_ms = st->cfg.connect_timeout_ms};
	if ((rc = mm_http_open(loop, &hopt, &st->http)))
		goto fail;
	/* From here on nothing fails: the handles need the loop to close. */
	uv_timer_init(loop, &st->kick);
	st->kick.data = st;
	uv_timer_init(loop, &st->start_timer);
	st->start_timer.data = st;
	for (i = st->nslots; i-- > 0;) {
		ddb_slot_t *sl = &st->slots[i];

		sl->st = st;
		uv_timer_init(loop, &sl->timer);
		sl->timer.data = sl;
		sl->next_free = st->free_slots;
		st->free_slots = sl;
	}
	mm_aws_creds_start(&st->creds, loop, st->http);
	mm_buf_free(&tmp);
	*out = &st->base;
	return 0;
fail:
	mm_buf_free(&tmp);
	ddb_free(st);
	return rc;
}

mm_ddb_t *mm_ddb_of(const mm_store_t *base)
{
	return base && base->vt == &mm_store_dynamodb_vtable ? (mm_ddb_t *)base : NULL;
}

const char *mm_ddb_owner(const mm_store_t *base)
{
	mm_ddb_t *st = mm_ddb_of(base);

	return st ? st->owner : NULL;
}

const mm_store_vtable_t mm_store_dynamodb_vtable = {
	.name = "dynamodb",
	.options = ddb_options,
	.caps = MM_STORE_CAP_SHARED,
	.open = ddb_open,
	.start = mm_ddb_start,
	.apply = mm_ddb_apply,
	.get_many = mm_ddb_get_many,
	.get_position = mm_ddb_get_position,
	.take_position = mm_ddb_take_position,
	.positions_taken = mm_ddb_positions_taken,
	.get_meta = mm_ddb_get_meta,
	.put_meta = mm_ddb_put_meta,
	.list_meta = mm_ddb_list_meta,
	.close = ddb_close,
	.claim = mm_ddb_vt_claim,
	.renew = mm_ddb_vt_renew,
	.release = mm_ddb_release,
};
