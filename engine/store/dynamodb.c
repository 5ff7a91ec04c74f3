/*
 * dynamodb.c: the DynamoDB store, asynchronous on the libuv loop through the
 * libcurl multi client (engine/http/http.c), signed with our SigV4
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
 *   position     pk "#pos#<source>"   sk -3   v B
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
 * Not atomic (atomic_flush = 0): each delta that becomes durable is flagged in
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
 * Synchronous calls (get_position, get_meta, put_meta, list_meta, and the
 * table check and credential fetch in open) block on mm_http_fetch. They are
 * start-up calls; seen() returns MM_ENOTSUP (dedup on a shared store goes
 * through the claim protocol).
 *
 * Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
 * else the container endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI, or
 * AWS_CONTAINER_CREDENTIALS_RELATIVE_URI under http://169.254.170.2, with
 * AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]); container credentials are
 * refreshed on the loop five minutes before they expire.
 *
 * Memory: a fixed array of max_inflight request slots, each with its own
 * buffers, answer trees and backoff timer, reused for every request, so the
 * steady state allocates only inside libcurl; a slot gives back answer trees
 * larger than 1 MiB when it goes idle (batched reads of big sketches).
 */
#define _GNU_SOURCE /* qsort_r */
#include "dynamodb.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "../aws/awsjson.h"
#include "../aws/sigv4.h"
#include "../codec/json.h"
#include "../core/log.h"
#include "../http/http.h"
#include "../lib/error.h"
#include "../lib/text.h"
#include "../monoid/window.h"

#define DDB_BATCH_MAX 100       /* keys per BatchGetItem */
#define DDB_CAS_MAX 64          /* lost races per delta before the apply fails */
#define DDB_PRUNE_MAX 16        /* stale tokens removed per request */
#define DDB_PRUNE_EVERY 8       /* one ADD in 8 asks for the item, to prune */
#define DDB_TREE_KEEP (1 << 20) /* answer trees kept per slot between requests */
#define DDB_SK_MARK (-1)
#define DDB_SK_META (-2)
#define DDB_SK_POS (-3)
#define DDB_SK_COMMIT (-4)
#define DDB_TARGET "DynamoDB_20120810."
#define DDB_CT "application/x-amz-json-1.0"
#define DDB_CONTAINER_HOST "http://169.254.170.2"
#define DDB_HIST 128            /* latency histogram: bucket k covers 2^(k/4) us */

extern const mm_store_vtable_t mm_store_dynamodb_vtable;

/* ---- configuration ---- */

typedef struct ddb_cfg {
	const char *table;
	const char *region;
	const char *endpoint;
	const char *owner;
	int64_t max_inflight;
	int64_t max_attempts;
	int64_t backoff_base_ms;
	int64_t backoff_max_ms;
	int64_t request_timeout_ms;
	int64_t connect_timeout_ms;
	int64_t token_ttl_ms;
	int64_t lease_ms;
	int consistent_read;
	int positions;
	int create_table;
} ddb_cfg_t;

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
	 "Lease of a dedup claim: how long an event id claimed by a worker that then "
	 "died stays blocked before another worker may take it over. Longer than the "
	 "slowest flush (claims of a flush being retried are renewed)."},
	{MM_OPT_BOOL, "consistent_read", "false", offsetof(ddb_cfg_t, consistent_read),
	 "Strongly consistent reads for get_many and queries (read-merge-write always "
	 "reads consistently)."},
	{MM_OPT_BOOL, "positions", "true", offsetof(ddb_cfg_t, positions),
	 "Store source positions as items after each flush, so a restarted file source "
	 "resumes after the last durable flush."},
	{MM_OPT_BOOL, "create_table", "false", offsetof(ddb_cfg_t, create_table),
	 "Create the table (and enable TTL) at open when it does not exist."},
	{MM_OPT_STRING, "owner", NULL, offsetof(ddb_cfg_t, owner),
	 "Owner id written on dedup claims. Default: random per process."},
	{0},
};

/* ---- types ---- */

enum ddb_kind {
	K_ADD,        /* sum/count UpdateItem ADD */
	K_PRUNE,      /* conditional REMOVE of stale replay tokens */
	K_MINMAX,     /* conditional SET */
	K_CAS_GET,    /* read of read-merge-write */
	K_CAS_PUT,    /* conditional write of read-merge-write */
	K_CAS_BATCH,  /* the batched read of a chunk of read-merge-writes */
	K_MARK,       /* flush mark: confirm-or-create */
	K_POS,        /* position PutItem */
	K_BATCH_GET,
	K_CLAIM,
	K_CLAIM_GET,  /* classify a failed claim */
	K_COMMIT,     /* the flush's commit record PutItem */
	K_COMMIT_GET, /* is the flush of another owner's pending claim committed? */
	K_STEAL,      /* take over a pending claim whose lease ran out */
	K_CONFIRM,
	K_RELEASE,
	K_RENEW,
};

enum ddb_job_kind { J_APPLY, J_GET, J_CLAIM, J_CONFIRM, J_RELEASE, J_RENEW };

enum ddb_mkind { M_ADD_INT, M_ADD_UINT, M_ADD_FLOAT, M_MIN, M_MAX, M_BYTES };

/* An apply runs in phases, each starting when the previous one is durable:
 * a mark (a confirmed dedup id) must never be durable without its effect, and
 * a position never before the records it covers. */
enum ddb_phase { P_DELTAS, P_COMMIT, P_MARKS, P_POSITIONS, P_DONE };

typedef struct ddb_job {
	struct ddb_job *next;
	int kind;
	mm_store_cb cb;
	void *arg;
	uint64_t t0;
	size_t next_item, nitems, outstanding;
	int stop;               /* a permanent failure: start nothing more */
	int rc;
	char detail[400];
	int64_t now_ms;
	/* apply */
	mm_flush_t *f;
	uint64_t seq;
	int phase;              /* enum ddb_phase */
	size_t writes;
	/* The deltas phase's work units: single deltas (one request chain
	 * each), then chunks of read-merge-write deltas read together. */
	size_t *single, nsingle;
	size_t *cas, ncas, chunk;
	/* get_many */
	const mm_ns_t *ns;
	const mm_key_t *keys;
	void *states;
	uint8_t *found;
	size_t *idx;            /* key indices sorted by key */
	size_t *grp;            /* ngrp + 1 offsets into idx: runs of equal keys */
	size_t ngrp;
	/* claims */
	mm_claim_t *claims;
	int64_t lease_ms, ttl_ms;
} ddb_job_t;

typedef struct mm_ddb mm_ddb_t;

typedef struct ddb_slot {
	mm_ddb_t *st;
	ddb_job_t *job;         /* NULL while free */
	struct ddb_slot *next_free;
	uv_timer_t timer;       /* retry backoff */
	int kind;               /* enum ddb_kind of the request in flight */
	int op;                 /* enum mm_ddb_op, for stats */
	const char *target;     /* "UpdateItem" */
	size_t item;            /* delta/mark/position/claim index, or chunk */
	int attempts;           /* retriable failures of the current request */
	int conflicts;          /* lost races of the current item */
	mm_buf_t body;
	mm_buf_t pk;            /* scratch: partition key text */
	mm_buf_t val;           /* scratch: encodings */
	mm_buf_t hdr;           /* header lines for curl, NUL-separated */
	mm_jtree_t tree;
	/* read-merge-write */
	int have_item, have_ver;
	int64_t ver;
	/* A claim held by another owner: its owner and lease, as read. */
	int64_t held_ls;
	int held_has_ls;
	/* BatchGetItem: groups of the job still to fetch */
	size_t keys[DDB_BATCH_MAX];
	size_t nkeys;
	/* A chunk of read-merge-writes: its deltas, what the batched read found
	 * for each (kept in batch_tree while the writes go out one by one), and
	 * the next one to write. */
	int in_chunk;
	size_t cas_idx[DDB_BATCH_MAX];
	const mm_jnode_t *cas_item[DDB_BATCH_MAX];
	uint8_t cas_read[DDB_BATCH_MAX];
	size_t ncas, cas_pos;
	mm_jtree_t batch_tree;
} ddb_slot_t;

struct mm_ddb {
	mm_store_t base;
	ddb_cfg_t cfg;
	int read_only;
	int closing;
	size_t open_handles;
	char *table, *region, *url, *host, *owner;
	char *table_json;       /* the table name as a JSON string */
	char writer_attr[24];   /* "w_<16 hex>" */
	/* credentials */
	char *akid, *secret, *token;
	int64_t cred_expires_ms; /* 0 = static */
	char *cred_url, *cred_auth;
	uv_timer_t cred_timer;
	int cred_refreshing;
	mm_sigv4_t sig;
	mm_http_t *http;
	uint64_t rng;
	uint64_t adds;          /* ADD requests built, to ask for every 8th item back */
	/* flush sequence and the flush being retried */
	uint64_t last_seq;
	uint64_t commit_seq;    /* claims carry the tag "<writer>#<commit_seq>" of
	                         * the flush that will commit them */
	const mm_flush_t *retry_flush;
	uint64_t retry_seq;
	/* scheduling */
	ddb_slot_t *slots;
	size_t nslots;
	ddb_slot_t *free_slots;
	ddb_job_t *jobs;
	uv_timer_t kick;
	/* blocking calls */
	mm_buf_t sync_body, sync_resp, sync_hdr;
	mm_jtree_t sync_tree;
	char sync_err[96];      /* the __type suffix of the last failed sync call */
	int created;            /* open() created the table */
	const char *ttl_state;  /* what enabling TTL did: "enabled", "unsupported", ... */
	mm_ddb_stats_t stats;
	uint64_t hist[DDB_HIST];
};

/* ---- small helpers ---- */

static int64_t ddb_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t ddb_random(mm_ddb_t *st)
{
	/* xorshift64*: jitter only, seeded from getrandom at open. */
	st->rng ^= st->rng >> 12;
	st->rng ^= st->rng << 25;
	st->rng ^= st->rng >> 27;
	return st->rng * 0x2545F4914F6CDD1DULL;
}

static void ddb_free_str(char **p)
{
	if (*p) {
		memset(*p, 0, strlen(*p));
		free(*p);
		*p = NULL;
	}
}

#define PUT(b, lit) mm_buf_append((b), (lit), sizeof(lit) - 1)

/* Appends a NUL-terminated string. The request builders below run once per
 * request, so they append pieces instead of formatting with printf. */
static int put_str(mm_buf_t *b, const char *s)
{
	return mm_buf_append(b, s, strlen(s));
}

/* Appends v in decimal. */
static int put_int(mm_buf_t *b, int64_t v)
{
	char tmp[24], *p = tmp + sizeof(tmp);
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;

	do
		*--p = (char)('0' + u % 10);
	while ((u /= 10) != 0);
	if (v < 0)
		*--p = '-';
	return mm_buf_append(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

/* A DynamoDB number attribute value: {"N":"<v>"}. */
static int put_n(mm_buf_t *b, int64_t v)
{
	int rc;

	if ((rc = PUT(b, "{\"N\":\"")) || (rc = put_int(b, v)))
		return rc;
	return PUT(b, "\"}");
}

/* Shortest text that reads back as exactly d ("0.1", not 0.10000000000000001). */
static void fmt_double(char *out, size_t cap, double d)
{
	int prec;

	if (d == 0) {
		snprintf(out, cap, "0");
		return;
	}
	for (prec = 15; prec <= 17; prec++) {
		snprintf(out, cap, "%.*g", prec, d);
		if (strtod(out, NULL) == d)
			return;
	}
}

/* Partition key text of (ns, bytes) into b: "<ns>#<bytes>" or "<ns>!<base64>". */
static int make_pk(mm_buf_t *b, const char *ns, const char *p, size_t n)
{
	int rc;

	b->len = 0;
	if ((rc = mm_buf_append(b, ns, strlen(ns))))
		return rc;
	if (mm_utf8_valid(p, n)) {
		if ((rc = PUT(b, "#")))
			return rc;
		return mm_buf_append(b, p, n);
	}
	if ((rc = PUT(b, "!")))
		return rc;
	return mm_base64_encode(p, n, b);
}

/* "Key":{"pk":{"S":pk},"sk":{"N":"sk"}} */
static int put_key_obj(mm_buf_t *b, const mm_buf_t *pk, int64_t sk)
{
	int rc;

	if ((rc = PUT(b, "{\"pk\":{\"S\":")) ||
	    (rc = mm_json_quote((const char *)pk->p, pk->len, b)) || (rc = PUT(b, "},\"sk\":")) ||
	    (rc = put_n(b, sk)))
		return rc;
	return PUT(b, "}");
}

/* {"TableName":T,"Key":{...}, -- the common head of item requests. */
static int put_head(mm_ddb_t *st, mm_buf_t *b, const mm_buf_t *pk, int64_t sk)
{
	int rc;

	b->len = 0;
	if ((rc = PUT(b, "{\"TableName\":")) ||
	    (rc = mm_buf_append(b, st->table_json, strlen(st->table_json))) ||
	    (rc = PUT(b, ",\"Key\":")))
		return rc;
	return put_key_obj(b, pk, sk);
}

/* Windowed buckets expire; all-time ones (expire_ms 0) carry no ttl. */
static int has_ttl(int64_t expire_ms)
{
	return expire_ms > 0;
}

/* Epoch seconds of an expiry: rounded up, so an item never expires early. */
static int64_t ttl_of(int64_t expire_ms)
{
	return (expire_ms + 999) / 1000;
}

/* ---- monoid values as attributes ---- */

static int ddb_mkind(const mm_monoid_t *m)
{
	if (m->vt == &mm_monoid_sum_vtable)
		return m->p.is_float ? M_ADD_FLOAT : M_ADD_INT;
	if (m->vt == &mm_monoid_count_vtable)
		return M_ADD_UINT;
	if (m->vt == &mm_monoid_min_vtable)
		return M_MIN;
	if (m->vt == &mm_monoid_max_vtable)
		return M_MAX;
	return M_BYTES;
}

/*
 * Writes the number a numeric state stands for into out (a DynamoDB N text),
 * reading the monoid's own fixed encoding (scalar.c): int64 LE for sums,
 * uint64 LE for counts, binary64 LE for float sums, flag + binary64 for
 * min/max. Returns MM_ERANGE for a value DynamoDB cannot hold.
 */
static int state_number(const mm_monoid_t *m, const void *state, mm_buf_t *tmp, char *out,
			size_t cap)
{
	int kind = ddb_mkind(m), rc;
	uint64_t u;
	double d;

	tmp->len = 0;
	if ((rc = m->vt->encode(m, state, tmp)))
		return rc;
	if (kind == M_MIN || kind == M_MAX) {
		if (tmp->len != 9 || tmp->p[0] != 1)
			return mm_diag_set(MM_ECORRUPT, "dynamodb: unexpected %s encoding",
					   m->vt->name);
		u = mm_get_u64le(tmp->p + 1);
	} else {
		if (tmp->len != 8)
			return mm_diag_set(MM_ECORRUPT, "dynamodb: unexpected %s encoding",
					   m->vt->name);
		u = mm_get_u64le(tmp->p);
	}
	if (kind == M_ADD_INT) {
		snprintf(out, cap, "%" PRId64, (int64_t)u);
		return 0;
	}
	if (kind == M_ADD_UINT) {
		snprintf(out, cap, "%" PRIu64, u);
		return 0;
	}
	memcpy(&d, &u, sizeof(d));
	/* DynamoDB numbers range over 1e-130 .. 9.99e125 in magnitude. */
	if (d != 0 && (fabs(d) < 1e-130 || fabs(d) >= 1e126))
		return mm_diag_set(MM_ERANGE, "dynamodb: %g is outside DynamoDB's number range", d);
	fmt_double(out, cap, d);
	return 0;
}

/* Parses a DynamoDB N text into the state (which is init()ed). */
static int number_state(const mm_monoid_t *m, const char *s, size_t len, void *state)
{
	int kind = ddb_mkind(m), is_int = 0;
	int64_t i = 0;
	double d = 0;
	uint8_t enc[9];

	if (len == 0 || mm_json_number(s, len, &is_int, &i, &d) != 0)
		return mm_diag_set(MM_ECORRUPT, "dynamodb: bad number '%.*s'", (int)(len < 64 ? len : 64), s);
	if (kind == M_ADD_INT || kind == M_ADD_UINT) {
		if (!is_int && !(d == floor(d) && fabs(d) < 9007199254740992.0))
			return mm_diag_set(MM_ERANGE, "dynamodb: %s value '%.*s' is not an int64",
					   m->vt->name, (int)(len < 64 ? len : 64), s);
		if (!is_int)
			i = (int64_t)d;
		if (kind == M_ADD_UINT && i < 0)
			return mm_diag_set(MM_ECORRUPT, "dynamodb: negative count %" PRId64, i);
		mm_set_u64le(enc, (uint64_t)i);
		return m->vt->decode(m, state, enc, 8);
	}
	if (kind == M_ADD_FLOAT) {
		uint64_t u;

		memcpy(&u, &d, sizeof(u));
		mm_set_u64le(enc, u);
		return m->vt->decode(m, state, enc, 8);
	}
	{
		uint64_t u;

		if (d == 0)
			d = 0; /* min/max store +0.0: "-0" must not decode as -0.0 */
		memcpy(&u, &d, sizeof(u));
		enc[0] = 1;
		mm_set_u64le(enc + 1, u);
		return m->vt->decode(m, state, enc, 9);
	}
}

/* Decodes an item's v into state: N for numeric monoids, B for the rest. */
static int item_state(const mm_monoid_t *m, const mm_jnode_t *item, void *state, mm_buf_t *tmp)
{
	const mm_jnode_t *v = mm_jnode_get(item, "v"), *x;
	int rc;

	if (ddb_mkind(m) != M_BYTES) {
		x = mm_jnode_get(v, "N");
		if (x == NULL || x->type != MM_JSON_STRING)
			return mm_diag_set(MM_ECORRUPT, "dynamodb: item has no number v");
		return number_state(m, x->s, x->len, state);
	}
	x = mm_jnode_get(v, "B");
	if (x == NULL || x->type != MM_JSON_STRING)
		return mm_diag_set(MM_ECORRUPT, "dynamodb: item has no binary v");
	tmp->len = 0;
	if ((rc = mm_aws_base64_decode(x->s, x->len, tmp)))
		return rc;
	return m->vt->decode(m, state, tmp->p, tmp->len);
}

/* Reads an N attribute as int64; 0 when absent or malformed (*ok = 0). */
static int64_t attr_i64(const mm_jnode_t *item, const char *name, int *ok)
{
	const mm_jnode_t *n = mm_jnode_get(mm_jnode_get(item, name), "N");
	int is_int = 0;
	int64_t i = 0;
	double d;

	if (n == NULL || n->type != MM_JSON_STRING ||
	    mm_json_number(n->s, n->len, &is_int, &i, &d) != 0 || !is_int) {
		if (ok)
			*ok = 0;
		return 0;
	}
	if (ok)
		*ok = 1;
	return i;
}

static const mm_jnode_t *attr_s(const mm_jnode_t *item, const char *name)
{
	const mm_jnode_t *s = mm_jnode_get(mm_jnode_get(item, name), "S");

	return s && s->type == MM_JSON_STRING ? s : NULL;
}

/* 1 if the item carries a ttl that has passed. */
static int item_expired(const mm_jnode_t *item, int64_t now_ms)
{
	int ok = 0;
	int64_t ttl = attr_i64(item, "ttl", &ok);

	return ok && ttl * 1000 <= now_ms;
}

/* ---- statistics ---- */

static int ddb_op_of(const char *target)
{
	if (strcmp(target, "GetItem") == 0)
		return MM_DDB_OP_GET_ITEM;
	if (strcmp(target, "PutItem") == 0)
		return MM_DDB_OP_PUT_ITEM;
	if (strcmp(target, "UpdateItem") == 0)
		return MM_DDB_OP_UPDATE_ITEM;
	if (strcmp(target, "DeleteItem") == 0)
		return MM_DDB_OP_DELETE_ITEM;
	if (strcmp(target, "BatchGetItem") == 0)
		return MM_DDB_OP_BATCH_GET_ITEM;
	return MM_DDB_OP_OTHER;
}

static void ddb_count(mm_ddb_t *st, int op, uint64_t ns)
{
	st->stats.requests[op]++;
	st->stats.ns_total[op] += ns;
	mm_histo_observe(&st->stats.hist[op], ns);
	if (ns > st->stats.ns_max[op])
		st->stats.ns_max[op] = ns;
}

static void hist_add(mm_ddb_t *st, uint64_t ns)
{
	uint64_t us = ns / 1000 + 1;
	int k = (int)floor(4 * log2((double)us));

	if (k >= DDB_HIST)
		k = DDB_HIST - 1;
	st->hist[k]++;
	if (ns > st->stats.apply_ns_max)
		st->stats.apply_ns_max = ns;
}

static uint64_t hist_pct(const mm_ddb_t *st, double pct)
{
	uint64_t total = 0, acc = 0;
	int k;

	for (k = 0; k < DDB_HIST; k++)
		total += st->hist[k];
	if (total == 0)
		return 0;
	for (k = 0; k < DDB_HIST; k++) {
		acc += st->hist[k];
		if ((double)acc >= pct * (double)total)
			break;
	}
	/* The bucket's upper bound, in ns. */
	return (uint64_t)(exp2((k + 1) / 4.0) * 1000);
}

/* ---- credentials ---- */

static int creds_parse(mm_ddb_t *st, const uint8_t *p, size_t n)
{
	mm_jtree_t t = {0};
	const mm_jnode_t *ak, *sk, *tok, *exp;
	int64_t exp_ms = 0;
	int rc;

	if ((rc = mm_jtree_parse(&t, (const char *)p, n)))
		goto out;
	ak = mm_jnode_get(t.root, "AccessKeyId");
	sk = mm_jnode_get(t.root, "SecretAccessKey");
	tok = mm_jnode_get(t.root, "Token");
	exp = mm_jnode_get(t.root, "Expiration");
	if (!ak || ak->type != MM_JSON_STRING || !sk || sk->type != MM_JSON_STRING) {
		rc = mm_diag_set(MM_EINVAL, "dynamodb: container credentials lack AccessKeyId or "
					    "SecretAccessKey");
		goto out;
	}
	if (exp && exp->type == MM_JSON_STRING && mm_time_parse_rfc3339(exp->s, exp->len, &exp_ms))
		exp_ms = 0;
	ddb_free_str(&st->akid);
	ddb_free_str(&st->secret);
	ddb_free_str(&st->token);
	st->akid = strdup(ak->s);
	st->secret = strdup(sk->s);
	st->token = tok && tok->type == MM_JSON_STRING ? strdup(tok->s) : NULL;
	st->cred_expires_ms = exp_ms;
	if (!st->akid || !st->secret)
		rc = mm_diag_set(MM_ENOMEM, "dynamodb: out of memory");
out:
	mm_jtree_free(&t);
	return rc;
}

/* Reads the container endpoint's settings; 0 = none configured. */
static int creds_container_setup(mm_ddb_t *st)
{
	const char *full = getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	const char *rel = getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	const char *tok = getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN");
	const char *file = getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	char buf[4096];
	int rc;

	if (full && *full) {
		st->cred_url = strdup(full);
	} else if (rel && *rel) {
		mm_buf_t u = {0};

		if ((rc = mm_buf_printf(&u, "%s%s%c", DDB_CONTAINER_HOST, rel, 0)))
			return rc;
		st->cred_url = (char *)u.p;
	} else {
		return 0;
	}
	if (st->cred_url == NULL)
		return mm_diag_set(MM_ENOMEM, "dynamodb: out of memory");
	if (file && *file) {
		FILE *f = fopen(file, "rb");
		size_t n;

		if (f == NULL)
			return mm_diag_set(MM_EINVAL, "dynamodb: cannot read %s",
					   "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
			n--;
		buf[n] = '\0';
		tok = buf;
	}
	if (tok && *tok) {
		mm_buf_t h = {0};

		if ((rc = mm_buf_printf(&h, "Authorization: %s%c", tok, 0)))
			return rc;
		st->cred_auth = (char *)h.p;
	}
	return 1;
}

static int creds_fetch_blocking(mm_ddb_t *st)
{
	const char *hdrs[1] = {st->cred_auth};
	mm_http_request_t req = {.method = "GET", .url = st->cred_url, .headers = hdrs,
				 .nheaders = st->cred_auth ? 1 : 0, .timeout_ms = 5000};
	mm_buf_t body = {0};
	long code = 0;
	int rc;

	if ((rc = mm_http_fetch(&req, &code, &body)))
		goto out;
	if (code != 200) {
		rc = mm_diag_set(MM_EIO, "dynamodb: container credentials endpoint answered %ld",
				 code);
		goto out;
	}
	rc = creds_parse(st, body.p, body.len);
out:
	mm_buf_free(&body);
	return rc;
}

static void on_cred_timer(uv_timer_t *t);

/* Arms the refresh five minutes before expiry (at least a second from now,
 * so credentials that are already short-lived cannot make us spin). */
static void cred_arm(mm_ddb_t *st)
{
	int64_t delay;

	if (st->closing || st->cred_url == NULL || st->cred_expires_ms == 0)
		return;
	delay = st->cred_expires_ms - 300000 - ddb_now_ms();
	if (delay < 1000)
		delay = 1000;
	uv_timer_start(&st->cred_timer, on_cred_timer, (uint64_t)delay, 0);
}

static void on_cred_response(void *arg, const mm_http_response_t *res)
{
	mm_ddb_t *st = arg;

	st->cred_refreshing = 0;
	if (res->status == 0 && res->code == 200 && creds_parse(st, res->body, res->len) == 0) {
		mm_log(MM_LOG_INFO, "dynamodb", "refreshed container credentials");
		cred_arm(st);
		return;
	}
	mm_log(MM_LOG_WARN, "dynamodb", "refreshing container credentials failed (%s, HTTP %ld); "
	       "retrying in 10 s", res->status ? res->error : "bad answer", res->code);
	if (!st->closing)
		uv_timer_start(&st->cred_timer, on_cred_timer, 10000, 0);
}

static void on_cred_timer(uv_timer_t *t)
{
	mm_ddb_t *st = t->data;
	const char *hdrs[1] = {st->cred_auth};
	mm_http_request_t req = {.method = "GET", .url = st->cred_url, .headers = hdrs,
				 .nheaders = st->cred_auth ? 1 : 0, .timeout_ms = 5000};

	if (st->cred_refreshing)
		return;
	if (mm_http_request(st->http, &req, on_cred_response, st) == 0)
		st->cred_refreshing = 1;
	else
		uv_timer_start(&st->cred_timer, on_cred_timer, 10000, 0);
}

static int creds_init(mm_ddb_t *st)
{
	const char *ak = getenv("AWS_ACCESS_KEY_ID"), *sk = getenv("AWS_SECRET_ACCESS_KEY");
	const char *tok = getenv("AWS_SESSION_TOKEN");
	int rc;

	if (ak && *ak && sk && *sk) {
		st->akid = strdup(ak);
		st->secret = strdup(sk);
		st->token = tok && *tok ? strdup(tok) : NULL;
		if (!st->akid || !st->secret)
			return mm_diag_set(MM_ENOMEM, "dynamodb: out of memory");
		return 0;
	}
	if ((rc = creds_container_setup(st)) < 0)
		return rc;
	if (rc == 0)
		return mm_diag_set(MM_EINVAL,
				   "dynamodb: no AWS credentials: set AWS_ACCESS_KEY_ID and "
				   "AWS_SECRET_ACCESS_KEY (any values for a local emulator) or run "
				   "where AWS_CONTAINER_CREDENTIALS_FULL_URI/_RELATIVE_URI is set");
	return creds_fetch_blocking(st);
}

/* ---- signing ---- */

/*
 * Signs a POST of body to `target` and fills hdr with the header lines
 * ("Name: value\0" each); ptrs receives pointers to them. Returns the count
 * or a negative code.
 */
static int ddb_sign(mm_ddb_t *st, const char *target, const mm_buf_t *body, mm_buf_t *hdr,
		    const char *ptrs[8])
{
	char tgt[96];
	size_t off[8];
	int n = 0, rc, i;
	mm_sigv4_header_t sh[3];
	mm_sigv4_request_t req;
	mm_sigv4_params_t p = {
		.access_key = st->akid,
		.secret_key = st->secret,
		.session_token = st->token,
		.region = st->region,
		.service = "dynamodb",
		.time_s = ddb_now_ms() / 1000,
		.normalize_path = 1,
	};

	memcpy(tgt, DDB_TARGET, sizeof(DDB_TARGET) - 1);
	snprintf(tgt + sizeof(DDB_TARGET) - 1, sizeof(tgt) - sizeof(DDB_TARGET) + 1, "%s", target);
	sh[0] = (mm_sigv4_header_t){"host", 4, st->host, strlen(st->host)};
	sh[1] = (mm_sigv4_header_t){"content-type", 12, DDB_CT, sizeof(DDB_CT) - 1};
	sh[2] = (mm_sigv4_header_t){"x-amz-target", 12, tgt, strlen(tgt)};
	req = (mm_sigv4_request_t){.method = "POST", .path = "/", .path_len = 1, .headers = sh,
				   .nheaders = 3, .body = body->p, .body_len = body->len};
	if ((rc = mm_sigv4_sign_headers(&st->sig, &req, &p)))
		return rc;
	hdr->len = 0;
#define HLINE(name_, v_, n_)                                                       \
	do {                                                                       \
		off[n++] = hdr->len;                                               \
		if ((rc = PUT(hdr, name_ ": ")) || (rc = mm_buf_append(hdr, (v_), (n_))) || \
		    (rc = mm_buf_put_u8(hdr, 0)))                                  \
			return rc;                                                 \
	} while (0)
	HLINE("Host", st->host, strlen(st->host));
	HLINE("Content-Type", DDB_CT, sizeof(DDB_CT) - 1);
	HLINE("X-Amz-Target", tgt, strlen(tgt));
	HLINE("X-Amz-Date", st->sig.amz_date, strlen(st->sig.amz_date));
	HLINE("Authorization", st->sig.authorization.p, st->sig.authorization.len);
	if (st->token)
		HLINE("X-Amz-Security-Token", st->token, strlen(st->token));
#undef HLINE
	for (i = 0; i < n; i++)
		ptrs[i] = (const char *)hdr->p + off[i];
	return n;
}

/* What a failed answer means for a retry. */
enum { R_RETRY, R_COND, R_FATAL };

/* Classifies a non-200 answer; fills err with the exception name and detail
 * with "Name: message". */
static int ddb_classify(long code, const uint8_t *body, size_t len, mm_jtree_t *tree,
			char *err, size_t errcap, char *detail, size_t dcap)
{
	const mm_jnode_t *type = NULL, *msg = NULL;
	const char *name = "";

	if (len > 0 && mm_jtree_parse(tree, (const char *)body, len) == 0) {
		type = mm_jnode_get(tree->root, "__type");
		msg = mm_jnode_get(tree->root, "message");
		if (msg == NULL)
			msg = mm_jnode_get(tree->root, "Message");
	}
	if (type && type->type == MM_JSON_STRING) {
		const char *hash = strrchr(type->s, '#');

		name = hash ? hash + 1 : type->s;
	}
	snprintf(err, errcap, "%s", name);
	snprintf(detail, dcap, "HTTP %ld %s%s%s", code, *name ? name : "(no error type)",
		 msg && msg->type == MM_JSON_STRING ? ": " : "",
		 msg && msg->type == MM_JSON_STRING ? msg->s : "");
	if (strcmp(name, "ConditionalCheckFailedException") == 0)
		return R_COND;
	if (code >= 500 || strcmp(name, "ProvisionedThroughputExceededException") == 0 ||
	    strcmp(name, "ThrottlingException") == 0 ||
	    strcmp(name, "RequestLimitExceeded") == 0 ||
	    strcmp(name, "LimitExceededException") == 0 ||
	    strcmp(name, "InternalServerError") == 0 ||
	    strcmp(name, "ServiceUnavailable") == 0 || strcmp(name, "ExpiredTokenException") == 0 ||
	    strcmp(name, "TransactionInProgressException") == 0 || code == 429)
		return R_RETRY;
	return R_FATAL;
}

/* ---- the scheduler ---- */

static void ddb_pump(mm_ddb_t *st);
static int slot_start_item(ddb_slot_t *sl);
static void on_response(void *arg, const mm_http_response_t *res);

static void on_kick(uv_timer_t *t)
{
	ddb_pump(t->data);
}

static void ddb_enqueue(mm_ddb_t *st, ddb_job_t *job)
{
	ddb_job_t **pp = &st->jobs;

	while (*pp)
		pp = &(*pp)->next;
	job->next = NULL;
	*pp = job;
	uv_timer_start(&st->kick, on_kick, 0, 0);
}

static void job_fail(ddb_job_t *job, int rc, const char *what, const char *detail)
{
	if (job->rc == 0) {
		job->rc = rc;
		snprintf(job->detail, sizeof(job->detail), "dynamodb: %s: %s", what, detail);
	}
}

/* Ends the slot's item: bookkeeping only; the caller pumps. */
static void slot_finish(ddb_slot_t *sl, int rc, const char *detail)
{
	ddb_job_t *job = sl->job;
	mm_ddb_t *st = sl->st;

	if (rc) {
		job_fail(job, rc, sl->target, detail ? detail : mm_diag_msg());
		if (job->kind == J_APPLY || job->kind == J_GET)
			job->stop = 1;
		else
			job->claims[sl->item].result = rc;
	}
	job->outstanding--;
	sl->job = NULL;
	sl->next_free = st->free_slots;
	st->free_slots = sl;
	/* A batch of big sketches can leave megabytes in the answer trees: keep
	 * an idle slot's memory to what ordinary answers need. */
	mm_jtree_trim(&sl->batch_tree, DDB_TREE_KEEP);
	mm_jtree_trim(&sl->tree, DDB_TREE_KEEP);
}

/* Sends the slot's body to its target. Errors here are final for the item. */
static int slot_send(ddb_slot_t *sl)
{
	mm_ddb_t *st = sl->st;
	const char *hdrs[8];
	int n = ddb_sign(st, sl->target, &sl->body, &sl->hdr, hdrs);
	mm_http_request_t req;

	if (n < 0)
		return n;
	req = (mm_http_request_t){.method = "POST", .url = st->url, .headers = hdrs,
				  .nheaders = (size_t)n, .body = sl->body.p, .body_len = sl->body.len,
				  .timeout_ms = st->cfg.request_timeout_ms};
	sl->op = ddb_op_of(sl->target);
	return mm_http_request(st->http, &req, on_response, sl);
}

static void on_backoff(uv_timer_t *t)
{
	ddb_slot_t *sl = t->data;
	int rc = slot_send(sl);

	if (rc) {
		slot_finish(sl, rc, NULL);
		ddb_pump(sl->st);
	}
}

/* Full-jitter delay for attempt n (1-based). */
static uint64_t backoff_ms(mm_ddb_t *st, int n)
{
	uint64_t cap = (uint64_t)st->cfg.backoff_max_ms, d = (uint64_t)st->cfg.backoff_base_ms;

	while (--n > 0 && d < cap)
		d *= 2;
	if (d > cap)
		d = cap;
	return d ? ddb_random(st) % (d + 1) : 0;
}

/* Sends the slot's request again after a pause, or fails the item when its
 * attempts are used up. */
static void slot_retry(ddb_slot_t *sl, const char *detail)
{
	mm_ddb_t *st = sl->st;

	if (++sl->attempts >= st->cfg.max_attempts) {
		char msg[400];

		snprintf(msg, sizeof(msg), "%s (gave up after %d attempts)", detail, sl->attempts);
		slot_finish(sl, MM_ESTORE, msg);
		return;
	}
	st->stats.retries++;
	if (mm_log_get_level() >= MM_LOG_DEBUG)
		mm_log(MM_LOG_DEBUG, "dynamodb", "%s: %s; retry %d", sl->target, detail, sl->attempts);
	uv_timer_start(&sl->timer, on_backoff, backoff_ms(st, sl->attempts), 0);
}

static int job_item_done(const ddb_job_t *job, size_t i)
{
	if (job->kind != J_APPLY)
		return 0;
	if (job->phase == P_DELTAS) {
		size_t k, end;

		if (i < job->nsingle)
			return job->f->delta_done[job->single[i]];
		k = (i - job->nsingle) * job->chunk;
		end = k + job->chunk < job->ncas ? k + job->chunk : job->ncas;
		for (; k < end; k++)
			if (!job->f->delta_done[job->cas[k]])
				return 0;
		return 1;
	}
	/* Claimed marks are confirmed by the commit record. */
	if (job->phase == P_MARKS)
		return job->f->mark_done[i] || job->f->marks[i].claimed;
	return 0;
}

/* Moves an apply to its next phase with work; 0 when none is left. */
static int job_next_phase(mm_ddb_t *st, ddb_job_t *job)
{
	while (++job->phase < P_DONE) {
		job->next_item = 0;
		job->nitems = job->phase == P_COMMIT ? (job->f->nmarks > 0)
			      : job->phase == P_MARKS ? job->f->nmarks
			      : job->phase == P_POSITIONS && st->cfg.positions ? job->f->npositions
										 : 0;
		if (job->nitems > 0)
			return 1;
	}
	return 0;
}

static void job_complete(mm_ddb_t *st, ddb_job_t *job)
{
	uint64_t ns = uv_hrtime() - job->t0;

	if (job->kind == J_APPLY) {
		if (job->rc == 0) {
			job->f->writes = job->writes;
			job->f->purged = 0;
			/* The next flush's claims carry a new tag. */
			if (job->f->nmarks > 0)
				st->commit_seq++;
			st->retry_flush = NULL;
			st->stats.applies++;
			hist_add(st, ns);
		} else {
			st->retry_flush = job->f;
			st->retry_seq = job->seq;
		}
	}
	job->cb(job->arg, job->rc, job->rc ? job->detail : "");
}

static void job_free(ddb_job_t *job)
{
	free(job->idx);
	free(job->grp);
	free(job->single);
	free(job->cas);
	free(job);
}

static void ddb_pump(mm_ddb_t *st)
{
	ddb_job_t *job, *next, **pp;

	for (pp = &st->jobs; !st->closing && (job = *pp) != NULL;) {
		while (!job->stop && st->free_slots) {
			ddb_slot_t *sl;
			int rc;

			while (job->next_item < job->nitems && job_item_done(job, job->next_item))
				job->next_item++;
			if (job->next_item >= job->nitems)
				break;
			sl = st->free_slots;
			st->free_slots = sl->next_free;
			sl->job = job;
			sl->item = job->next_item++;
			sl->attempts = 0;
			sl->conflicts = 0;
			sl->in_chunk = 0;
			job->outstanding++;
			if ((rc = slot_start_item(sl)))
				slot_finish(sl, rc, NULL);
		}
		if (job->outstanding > 0 || (!job->stop && job->next_item < job->nitems)) {
			pp = &job->next;
			continue;
		}
		if (job->kind == J_APPLY && job->rc == 0 && job_next_phase(st, job))
			continue;
		next = job->next;
		*pp = next;
		job_complete(st, job);
		job_free(job);
		/* The callback may have queued jobs (at the tail) or closed us. */
	}
}

/* ---- apply ---- */

/*
 * UpdateItem ADD for sum/count. Every DDB_PRUNE_EVERY-th write (the first of
 * a store included) asks for the item back (ALL_NEW) to find stale replay
 * tokens to remove; the others need no answer, which keeps requests and
 * their parsing cheap.
 */
static int build_add(mm_ddb_t *st, ddb_slot_t *sl, const mm_delta_t *d, uint64_t seq)
{
	mm_buf_t *b = &sl->body;
	char num[64];
	int rc, ttl = has_ttl(d->expire_ms);

	if ((rc = state_number(d->ns->m, d->state, &sl->val, num, sizeof(num))) ||
	    (rc = make_pk(&sl->pk, d->ns->name, d->key.entity, d->key.len)) ||
	    (rc = put_head(st, b, &sl->pk, d->key.bucket)) ||
	    (rc = PUT(b, ",\"UpdateExpression\":\"ADD #v :d SET #w = :s")) ||
	    (ttl && (rc = PUT(b, ", #t = :t"))) ||
	    (rc = PUT(b, "\",\"ConditionExpression\":\"attribute_not_exists(#w) OR #w < :s\""
			 ",\"ExpressionAttributeNames\":{\"#v\":\"v\",\"#w\":\"")) ||
	    (rc = put_str(b, st->writer_attr)) || (rc = PUT(b, "\"")) ||
	    (ttl && (rc = PUT(b, ",\"#t\":\"ttl\""))) ||
	    (rc = PUT(b, "},\"ExpressionAttributeValues\":{\":d\":{\"N\":\"")) ||
	    (rc = put_str(b, num)) || (rc = PUT(b, "\"},\":s\":")) || (rc = put_n(b, (int64_t)seq)))
		return rc;
	if (ttl && ((rc = PUT(b, ",\":t\":")) || (rc = put_n(b, ttl_of(d->expire_ms)))))
		return rc;
	if (st->adds++ % DDB_PRUNE_EVERY == 0)
		return PUT(b, "},\"ReturnValues\":\"ALL_NEW\"}");
	return PUT(b, "}}");
}

static int build_minmax(mm_ddb_t *st, ddb_slot_t *sl, const mm_delta_t *d)
{
	mm_buf_t *b = &sl->body;
	char num[64];
	int rc, ttl = has_ttl(d->expire_ms);
	const char *cmp = ddb_mkind(d->ns->m) == M_MIN ? ">" : "<";

	if ((rc = state_number(d->ns->m, d->state, &sl->val, num, sizeof(num))) ||
	    (rc = make_pk(&sl->pk, d->ns->name, d->key.entity, d->key.len)) ||
	    (rc = put_head(st, b, &sl->pk, d->key.bucket)) ||
	    (rc = mm_buf_printf(b, ",\"UpdateExpression\":\"SET #v = :x%s\"",
				ttl ? ", #t = :t" : "")) ||
	    (rc = mm_buf_printf(b, ",\"ConditionExpression\":\"attribute_not_exists(#v) OR #v %s :x\"",
				cmp)) ||
	    (rc = mm_buf_printf(b, ",\"ExpressionAttributeNames\":{\"#v\":\"v\"%s}",
				ttl ? ",\"#t\":\"ttl\"" : "")) ||
	    (rc = mm_buf_printf(b, ",\"ExpressionAttributeValues\":{\":x\":{\"N\":\"%s\"}", num)))
		return rc;
	if (ttl && ((rc = PUT(b, ",\":t\":")) || (rc = put_n(b, ttl_of(d->expire_ms)))))
		return rc;
	return PUT(b, "}}");
}

static int build_get(mm_ddb_t *st, ddb_slot_t *sl, const mm_buf_t *pk, int64_t sk)
{
	int rc;

	sl->target = "GetItem";
	if ((rc = put_head(st, &sl->body, pk, sk)))
		return rc;
	return PUT(&sl->body, ",\"ConsistentRead\":true}");
}

/* The flush mark: confirmed, ours, unless another owner holds a live one. */
static int build_mark(mm_ddb_t *st, ddb_slot_t *sl, const mm_mark_t *mk, int64_t now_ms)
{
	mm_buf_t *b = &sl->body;
	int rc;

	if ((rc = make_pk(&sl->pk, mk->ns->name, mk->id, mk->len)) ||
	    (rc = put_head(st, b, &sl->pk, DDB_SK_MARK)) ||
	    (rc = PUT(b, ",\"UpdateExpression\":\"SET #st = :c, #own = :me, #t = :t REMOVE #ls\""
			 ",\"ConditionExpression\":\"attribute_not_exists(pk) OR #own = :me OR #t < :now\""
			 ",\"ExpressionAttributeNames\":{\"#st\":\"st\",\"#own\":\"own\",\"#t\":\"ttl\","
			 "\"#ls\":\"ls\"},\"ExpressionAttributeValues\":{\":c\":{\"S\":\"C\"},\":me\":{\"S\":")) ||
	    (rc = mm_json_quote(st->owner, strlen(st->owner), b)) || (rc = PUT(b, "},\":t\":")) ||
	    (rc = put_n(b, ttl_of(mk->expire_ms > 0 ? mk->expire_ms : now_ms))) ||
	    (rc = PUT(b, ",\":now\":")) || (rc = put_n(b, now_ms / 1000)))
		return rc;
	return PUT(b, "}}");
}

/* Starts a PutItem body: {"TableName":T,"Item":{"pk":{"S":pk},"sk":N
 * (the caller adds the other attributes and closes). */
static int put_item_start(mm_ddb_t *st, mm_buf_t *b, const mm_buf_t *pk, int64_t sk)
{
	int rc;

	b->len = 0;
	if ((rc = PUT(b, "{\"TableName\":")) ||
	    (rc = mm_buf_append(b, st->table_json, strlen(st->table_json))) ||
	    (rc = PUT(b, ",\"Item\":{\"pk\":{\"S\":")) ||
	    (rc = mm_json_quote((const char *)pk->p, pk->len, b)) || (rc = PUT(b, "},\"sk\":")))
		return rc;
	return put_n(b, sk);
}

/* This writer's tag of its next flush with dedup claims: "<writer>#<seq>". */
static int tag_of(const mm_ddb_t *st, char *tag, size_t n)
{
	return snprintf(tag, n, "%s#%" PRIu64, st->writer_attr + 2, st->commit_seq);
}

/* The partition key of the commit record of the flush tagged tag (len n). */
static int commit_pk(mm_buf_t *pk, const char *tag, size_t n)
{
	int rc;

	pk->len = 0;
	if ((rc = PUT(pk, "#commit#")))
		return rc;
	return mm_buf_append(pk, tag, n);
}

/* The tag of this writer's next flush with dedup marks: "<writer>#<seq>". */
static int put_tag(mm_ddb_t *st, mm_buf_t *b)
{
	char tag[64];
	int n = tag_of(st, tag, sizeof(tag));

	return mm_json_quote(tag, (size_t)n, b);
}

/*
 * The commit record of a flush whose marks were claimed: written once every
 * delta is durable, before the marks are confirmed. A claimant that finds
 * one of those ids still pending (the worker died while confirming, or has
 * not confirmed yet) reads it and knows the effect is durable. It lives as
 * long as the marks.
 */
static int build_commit(mm_ddb_t *st, ddb_slot_t *sl, const mm_flush_t *f)
{
	mm_buf_t *b = &sl->body;
	int64_t until = f->now_ms;
	char tag[64];
	int n = tag_of(st, tag, sizeof(tag));
	int rc;

	for (size_t i = 0; i < f->nmarks; i++)
		if (f->marks[i].expire_ms > until)
			until = f->marks[i].expire_ms;
	if ((rc = commit_pk(&sl->pk, tag, (size_t)n)) ||
	    (rc = put_item_start(st, b, &sl->pk, DDB_SK_COMMIT)) || (rc = PUT(b, ",\"ttl\":")) ||
	    (rc = put_n(b, ttl_of(until))))
		return rc;
	return PUT(b, "}}");
}

static int build_pos(mm_ddb_t *st, ddb_slot_t *sl, const mm_position_t *pos)
{
	mm_buf_t *b = &sl->body;
	int rc;

	sl->pk.len = 0;
	if ((rc = PUT(&sl->pk, "#pos#")) ||
	    (rc = mm_buf_append(&sl->pk, pos->source, strlen(pos->source))))
		return rc;
	if ((rc = put_item_start(st, b, &sl->pk, DDB_SK_POS)) ||
	    (rc = PUT(b, ",\"v\":{\"B\":\"")) ||
	    (pos->len > 0 && (rc = mm_base64_encode(pos->pos, pos->len, b))))
		return rc;
	return PUT(b, "\"}}}");
}

static int cas_write(mm_ddb_t *st, ddb_slot_t *sl, const mm_jnode_t *item);

/*
 * Starts chunk k of the read-merge-write deltas: one consistent BatchGetItem
 * for every delta of the chunk not yet durable. The writes follow one by one
 * from cas_next, each conditional on the version read, so a batched read is
 * exactly as safe as a GetItem per delta and saves a request per delta.
 */
static int start_cas_chunk(ddb_slot_t *sl, size_t k)
{
	mm_ddb_t *st = sl->st;
	ddb_job_t *job = sl->job;
	mm_buf_t *b = &sl->body;
	size_t i, end = (k + 1) * job->chunk < job->ncas ? (k + 1) * job->chunk : job->ncas;
	int rc;

	sl->in_chunk = 1;
	sl->ncas = 0;
	sl->cas_pos = 0;
	for (i = k * job->chunk; i < end; i++)
		if (!job->f->delta_done[job->cas[i]])
			sl->cas_idx[sl->ncas++] = job->cas[i];
	sl->kind = K_CAS_BATCH;
	sl->target = "BatchGetItem";
	b->len = 0;
	if ((rc = PUT(b, "{\"RequestItems\":{")) || (rc = put_str(b, st->table_json)) ||
	    (rc = PUT(b, ":{\"Keys\":[")))
		return rc;
	for (i = 0; i < sl->ncas; i++) {
		const mm_delta_t *d = &job->f->deltas[sl->cas_idx[i]];

		sl->cas_item[i] = NULL;
		sl->cas_read[i] = 0;
		if ((i && (rc = PUT(b, ","))) ||
		    (rc = make_pk(&sl->pk, d->ns->name, d->key.entity, d->key.len)) ||
		    (rc = put_key_obj(b, &sl->pk, d->key.bucket)))
			return rc;
	}
	if ((rc = PUT(b, "],\"ConsistentRead\":true}}}")))
		return rc;
	return slot_send(sl);
}

/* Writes the chunk's next delta that is not durable yet; finishes the slot's
 * item when none is left. */
static void cas_next(ddb_slot_t *sl)
{
	mm_ddb_t *st = sl->st;
	ddb_job_t *job = sl->job;
	int rc = 0;

	for (; sl->cas_pos < sl->ncas; sl->cas_pos++) {
		const mm_delta_t *d;

		sl->item = sl->cas_idx[sl->cas_pos];
		if (job->f->delta_done[sl->item])
			continue;
		d = &job->f->deltas[sl->item];
		sl->attempts = 0;
		sl->conflicts = 0;
		if ((rc = make_pk(&sl->pk, d->ns->name, d->key.entity, d->key.len)))
			break;
		if (!sl->cas_read[sl->cas_pos]) {
			/* Left unprocessed by the batch: read it alone. */
			sl->kind = K_CAS_GET;
			if ((rc = build_get(st, sl, &sl->pk, d->key.bucket)) == 0)
				rc = slot_send(sl);
		} else {
			rc = cas_write(st, sl, sl->cas_item[sl->cas_pos]);
			if (rc == 1) {
				job->f->delta_done[sl->item] = 1;
				st->stats.replays_skipped++;
				continue;
			}
		}
		if (rc)
			break;
		return;
	}
	slot_finish(sl, sl->cas_pos < sl->ncas ? rc : 0, NULL);
}

/* The chunk's batched read arrived (in sl->tree): keep it in batch_tree, note
 * what it found for each delta, and start the writes. */
static void cas_batch_answer(ddb_slot_t *sl)
{
	mm_ddb_t *st = sl->st;
	ddb_job_t *job = sl->job;
	const mm_jnode_t *items, *unproc, *it;
	mm_jtree_t tmp = sl->batch_tree;
	size_t i;

	sl->batch_tree = sl->tree;
	sl->tree = tmp;
	items = mm_jnode_get(mm_jnode_get(sl->batch_tree.root, "Responses"), st->table);
	unproc = mm_jnode_get(mm_jnode_get(mm_jnode_get(sl->batch_tree.root, "UnprocessedKeys"),
					   st->table), "Keys");
	for (i = 0; i < sl->ncas; i++) {
		const mm_delta_t *d = &job->f->deltas[sl->cas_idx[i]];
		int listed = 0;

		if (make_pk(&sl->pk, d->ns->name, d->key.entity, d->key.len)) {
			slot_finish(sl, MM_ENOMEM, NULL);
			return;
		}
		for (it = items ? items->child : NULL; it; it = it->next) {
			const mm_jnode_t *pk = attr_s(it, "pk");
			int ok = 0;

			if (pk && pk->len == sl->pk.len && memcmp(pk->s, sl->pk.p, pk->len) == 0 &&
			    attr_i64(it, "sk", &ok) == d->key.bucket && ok) {
				sl->cas_item[i] = it;
				break;
			}
		}
		for (it = unproc ? unproc->child : NULL; it && !sl->cas_item[i]; it = it->next) {
			const mm_jnode_t *pk = attr_s(it, "pk");
			int ok = 0;

			if (pk && pk->len == sl->pk.len && memcmp(pk->s, sl->pk.p, pk->len) == 0 &&
			    attr_i64(it, "sk", &ok) == d->key.bucket && ok)
				listed = 1;
		}
		/* Absent from both lists: the item does not exist (NULL item). */
		sl->cas_read[i] = !listed;
		st->stats.unprocessed_keys += (uint64_t)listed;
	}
	cas_next(sl);
}

/* Starts the item of an apply job that sl was given. */
static int start_apply_item(ddb_slot_t *sl)
{
	mm_ddb_t *st = sl->st;
	ddb_job_t *job = sl->job;
	mm_flush_t *f = job->f;
	int rc;

	if (job->phase == P_COMMIT) {
		sl->kind = K_COMMIT;
		sl->target = "PutItem";
		rc = build_commit(st, sl, f);
	} else if (job->phase == P_POSITIONS) {
		sl->kind = K_POS;
		sl->target = "PutItem";
		rc = build_pos(st, sl, &f->positions[sl->item]);
	} else if (job->phase == P_MARKS) {
		sl->kind = K_MARK;
		sl->target = "UpdateItem";
		rc = build_mark(st, sl, &f->marks[sl->item], job->now_ms);
	} else if (sl->item >= job->nsingle) {
		return start_cas_chunk(sl, sl->item - job->nsingle);
	} else {
		const mm_delta_t *d;
		int mk;

		sl->item = job->single[sl->item];
		d = &f->deltas[sl->item];
		mk = ddb_mkind(d->ns->m);
		if (mk == M_ADD_INT || mk == M_ADD_UINT || mk == M_ADD_FLOAT) {
			sl->kind = K_ADD;
			sl->target = "UpdateItem";
			rc = build_add(st, sl, d, job->seq);
		} else if (mk == M_MIN || mk == M_MAX) {
			sl->kind = K_MINMAX;
			sl->target = "UpdateItem";
			rc = build_minmax(st, sl, d);
		} else {
			sl->kind = K_CAS_GET;
			rc = make_pk(&sl->pk, d->ns->name, d->key.entity, d->key.len);
			if (rc == 0)
				rc = build_get(st, sl, &sl->pk, d->key.bucket);
		}
	}
	return rc ? rc : slot_send(sl);
}

static int is_stale_token(mm_ddb_t *st, const mm_jnode_t *attr, int64_t now_ms)
{
	const mm_jnode_t *n;
	int is_int = 0;
	int64_t v = 0;
	double d;

	if (attr->key_len < 3 || memcmp(attr->key, "w_", 2) != 0 ||
	    strcmp(attr->key, st->writer_attr) == 0)
		return 0;
	n = mm_jnode_get(attr, "N");
	if (n == NULL || n->type != MM_JSON_STRING || mm_json_number(n->s, n->len, &is_int, &v, &d))
		return 0;
	return is_int && v < now_ms - st->cfg.token_ttl_ms;
}

/* After an ADD: removes stale replay tokens of other writers, each only if it
 * still holds the value we saw. Returns 1 if a request was sent. */
static int start_prune(mm_ddb_t *st, ddb_slot_t *sl, const mm_jnode_t *item)
{
	const mm_delta_t *d = &sl->job->f->deltas[sl->item];
	mm_buf_t *b = &sl->body;
	const mm_jnode_t *a;
	int n = 0, i, rc;

	for (a = item ? item->child : NULL; a && n < DDB_PRUNE_MAX; a = a->next)
		n += is_stale_token(st, a, sl->job->now_ms);
	if (n == 0)
		return 0;
	if ((rc = put_head(st, b, &sl->pk, d->key.bucket)) || (rc = PUT(b, ",\"UpdateExpression\":\"REMOVE ")))
		return rc;
	for (i = 0; i < n; i++)
		if ((rc = mm_buf_printf(b, "%s#p%d", i ? ", " : "", i)))
			return rc;
	if ((rc = PUT(b, "\",\"ConditionExpression\":\"")))
		return rc;
	for (i = 0; i < n; i++)
		if ((rc = mm_buf_printf(b, "%s#p%d = :p%d", i ? " AND " : "", i, i)))
			return rc;
	if ((rc = PUT(b, "\",\"ExpressionAttributeNames\":{")))
		return rc;
	for (a = item->child, i = 0; a && i < n; a = a->next) {
		if (!is_stale_token(st, a, sl->job->now_ms))
			continue;
		if ((rc = mm_buf_printf(b, "%s\"#p%d\":", i ? "," : "", i)) ||
		    (rc = mm_json_quote(a->key, a->key_len, b)))
			return rc;
		i++;
	}
	if ((rc = PUT(b, "},\"ExpressionAttributeValues\":{")))
		return rc;
	for (a = item->child, i = 0; a && i < n; a = a->next) {
		const mm_jnode_t *v;

		if (!is_stale_token(st, a, sl->job->now_ms))
			continue;
		v = mm_jnode_get(a, "N");
		if ((rc = mm_buf_printf(b, "%s\":p%d\":{\"N\":", i ? "," : "", i)) ||
		    (rc = mm_json_quote(v->s, v->len, b)) || (rc = PUT(b, "}")))
			return rc;
		i++;
	}
	if ((rc = PUT(b, "}}")))
		return rc;
	sl->kind = K_PRUNE;
	sl->target = "UpdateItem";
	sl->attempts = 0;
	return slot_send(sl) == 0;
}

/*
 * Read-merge-write, after the read: decides whether the delta is already in
 * (our token), merges it into what was read, and sends the conditional write.
 * Returns 0 when a write was sent, 1 when the delta turned out applied, or a
 * negative code.
 */
static int cas_write(mm_ddb_t *st, ddb_slot_t *sl, const mm_jnode_t *item)
{
	ddb_job_t *job = sl->job;
	const mm_delta_t *d = &job->f->deltas[sl->item];
	const mm_monoid_t *m = d->ns->m;
	_Alignas(16) unsigned char acc[MM_STATE_MAX];
	mm_buf_t *b = &sl->body;
	const mm_jnode_t *a;
	int ok = 0, rc, ttl = has_ttl(d->expire_ms), np = 0, i;
	int64_t token = item ? attr_i64(item, st->writer_attr, &ok) : 0;

	if (item && ok && (uint64_t)token >= job->seq)
		return 1;
	sl->have_item = item != NULL;
	sl->ver = item ? attr_i64(item, "ver", &sl->have_ver) : 0;
	if (!item)
		sl->have_ver = 0;
	m->vt->init(m, acc);
	if (item && mm_jnode_get(item, "v") && !item_expired(item, job->now_ms) &&
	    (rc = item_state(m, item, acc, &sl->val))) {
		char why[300];

		snprintf(why, sizeof(why), "%s", mm_diag_msg());
		rc = mm_diag_set(rc == MM_ENOMEM ? rc : MM_ECORRUPT,
				 "stored %s state of '%s' bucket %" PRId64 " is unreadable: %s",
				 m->vt->name, d->ns->name, d->key.bucket, why);
		goto out;
	}
	sl->val.len = 0;
	if ((rc = m->vt->merge(m, acc, d->state)) || (rc = m->vt->encode(m, acc, &sl->val)))
		goto out;
	if ((rc = put_head(st, b, &sl->pk, d->key.bucket)) ||
	    (rc = mm_buf_printf(b, ",\"UpdateExpression\":\"SET #v = :v, #ver = :nv, #w = :s%s",
				ttl ? ", #t = :t" : "")))
		goto out;
	for (a = item ? item->child : NULL; a && np < DDB_PRUNE_MAX; a = a->next) {
		if (!is_stale_token(st, a, job->now_ms))
			continue;
		if ((rc = mm_buf_printf(b, "%s#p%d", np ? ", " : " REMOVE ", np)))
			goto out;
		np++;
	}
	if ((rc = mm_buf_printf(b, "\",\"ConditionExpression\":\"%s\"",
				!sl->have_item ? "attribute_not_exists(pk)"
				: sl->have_ver ? "#ver = :ov"
					       : "attribute_not_exists(#ver)")) ||
	    (rc = mm_buf_printf(b, ",\"ExpressionAttributeNames\":{\"#v\":\"v\",\"#ver\":\"ver\","
				   "\"#w\":\"%s\"%s",
				st->writer_attr, ttl ? ",\"#t\":\"ttl\"" : "")))
		goto out;
	for (a = item ? item->child : NULL, i = 0; a && i < np; a = a->next) {
		if (!is_stale_token(st, a, job->now_ms))
			continue;
		if ((rc = mm_buf_printf(b, ",\"#p%d\":", i++)) ||
		    (rc = mm_json_quote(a->key, a->key_len, b)))
			goto out;
	}
	if ((rc = PUT(b, "},\"ExpressionAttributeValues\":{\":v\":{\"B\":\"")) ||
	    (rc = mm_base64_encode(sl->val.p, sl->val.len, b)) || (rc = PUT(b, "\"},\":nv\":")) ||
	    (rc = put_n(b, sl->ver + 1)) ||
	    (rc = mm_buf_printf(b, ",\":s\":{\"N\":\"%" PRIu64 "\"}", job->seq)))
		goto out;
	if (sl->have_ver && ((rc = PUT(b, ",\":ov\":")) || (rc = put_n(b, sl->ver))))
		goto out;
	if (ttl && ((rc = PUT(b, ",\":t\":")) || (rc = put_n(b, ttl_of(d->expire_ms)))))
		goto out;
	if ((rc = PUT(b, "}}")))
		goto out;
	sl->kind = K_CAS_PUT;
	sl->target = "UpdateItem";
	rc = slot_send(sl);
out:
	m->vt->destroy(m, acc);
	return rc;
}

/* Handles a 200 (cond = 0) or a ConditionalCheckFailed (cond = 1) answer to
 * an apply request. */
static void apply_answer(ddb_slot_t *sl, int cond)
{
	mm_ddb_t *st = sl->st;
	ddb_job_t *job = sl->job;
	mm_flush_t *f = job->f;
	int rc;

	switch (sl->kind) {
	case K_ADD:
		f->delta_done[sl->item] = 1;
		if (cond) {
			st->stats.replays_skipped++;
		} else {
			job->writes++;
			if (start_prune(st, sl, mm_jnode_get(sl->tree.root, "Attributes")) == 1)
				return;
		}
		slot_finish(sl, 0, NULL);
		return;
	case K_PRUNE:
		slot_finish(sl, 0, NULL);
		return;
	case K_MINMAX:
		f->delta_done[sl->item] = 1;
		job->writes += !cond;
		slot_finish(sl, 0, NULL);
		return;
	case K_CAS_BATCH:
		cas_batch_answer(sl);
		return;
	case K_CAS_GET:
		rc = cas_write(st, sl, mm_jnode_get(sl->tree.root, "Item"));
		if (rc == 1) {
			f->delta_done[sl->item] = 1;
			st->stats.replays_skipped++;
		}
		if (rc == 1 && sl->in_chunk) {
			sl->cas_pos++;
			cas_next(sl);
		} else if (rc != 0) {
			slot_finish(sl, rc == 1 ? 0 : rc, NULL);
		}
		return;
	case K_CAS_PUT:
		if (!cond) {
			f->delta_done[sl->item] = 1;
			job->writes++;
			if (sl->in_chunk) {
				sl->cas_pos++;
				cas_next(sl);
			} else {
				slot_finish(sl, 0, NULL);
			}
			return;
		}
		st->stats.cas_conflicts++;
		if (++sl->conflicts > DDB_CAS_MAX) {
			slot_finish(sl, MM_ESTORE, "lost the read-merge-write race too many times");
			return;
		}
		sl->kind = K_CAS_GET;
		sl->attempts = 0;
		if ((rc = build_get(st, sl, &sl->pk, f->deltas[sl->item].key.bucket))) {
			slot_finish(sl, rc, NULL);
			return;
		}
		/* Re-read after a short jittered pause, so racing writers spread out. */
		uv_timer_start(&sl->timer, on_backoff, backoff_ms(st, sl->conflicts < 4 ? sl->conflicts : 4), 0);
		return;
	case K_MARK:
		f->mark_done[sl->item] = 1;
		if (cond) {
			const mm_mark_t *mk = &f->marks[sl->item];

			/* Another owner holds the id: our lease ran out (a flush slower
			 * than the lease) and the record may have been counted by the
			 * new owner too. */
			st->stats.mark_conflicts++;
			mm_log(MM_LOG_WARN, mk->ns->name,
			       "dedup id of %zu bytes is held by another owner; it may be counted twice",
			       mk->len);
		}
		slot_finish(sl, 0, NULL);
		return;
	case K_POS:
	case K_COMMIT:
		slot_finish(sl, 0, NULL);
		return;
	}
}

/*
 * Splits the deltas into work units: sums, counts, min and max are single
 * requests; read-merge-writes are read in chunks, sized so that the chunks
 * still keep every slot busy (one chunk per slot when there are few; at most
 * 100 keys, BatchGetItem's limit). With a chunk of one the plain GetItem path
 * is used.
 */
static int apply_plan(mm_ddb_t *st, ddb_job_t *job)
{
	const mm_flush_t *f = job->f;
	size_t i, n = f->ndeltas ? f->ndeltas : 1, ncas = 0;

	job->single = malloc(n * sizeof(size_t));
	job->cas = malloc(n * sizeof(size_t));
	if (job->single == NULL || job->cas == NULL) {
		free(job->single);
		free(job->cas);
		return -1;
	}
	for (i = 0; i < f->ndeltas; i++)
		ncas += ddb_mkind(f->deltas[i].ns->m) == M_BYTES;
	job->chunk = (ncas + st->nslots - 1) / st->nslots;
	if (job->chunk > DDB_BATCH_MAX)
		job->chunk = DDB_BATCH_MAX;
	for (i = 0; i < f->ndeltas; i++) {
		if (job->chunk > 1 && ddb_mkind(f->deltas[i].ns->m) == M_BYTES)
			job->cas[job->ncas++] = i;
		else
			job->single[job->nsingle++] = i;
	}
	job->nitems = job->nsingle + (job->chunk > 1 ? (job->ncas + job->chunk - 1) / job->chunk : 0);
	return 0;
}

static int ddb_apply(mm_store_t *base, mm_flush_t *f, mm_store_cb cb, void *arg)
{
	mm_ddb_t *st = (mm_ddb_t *)base;
	ddb_job_t *job;

	if (st->read_only)
		return mm_diag_set(MM_ENOTSUP, "dynamodb: apply on a store opened read-only");
	if ((f->ndeltas && !f->delta_done) || (f->nmarks && !f->mark_done))
		return mm_diag_set(MM_EINVAL, "dynamodb: a flush needs delta_done and mark_done");
	job = calloc(1, sizeof(*job));
	if (job == NULL)
		return mm_diag_set(MM_ENOMEM, "dynamodb: cannot allocate an apply");
	job->kind = J_APPLY;
	job->cb = cb;
	job->arg = arg;
	job->t0 = uv_hrtime();
	job->f = f;
	job->now_ms = f->now_ms ? f->now_ms : ddb_now_ms();
	job->phase = P_DELTAS;
	if (apply_plan(st, job)) {
		free(job);
		return mm_diag_set(MM_ENOMEM, "dynamodb: cannot plan an apply of %zu deltas",
				   f->ndeltas);
	}
	if (f == st->retry_flush) {
		job->seq = st->retry_seq;
	} else {
		uint64_t now = (uint64_t)ddb_now_ms();

		st->last_seq = now > st->last_seq ? now : st->last_seq + 1;
		job->seq = st->last_seq;
	}
	ddb_enqueue(st, job);
	return 0;
}

/* ---- get_many ---- */

static int key_cmp(const void *a, const void *b, void *arg)
{
	const mm_key_t *keys = arg, *x = &keys[*(const size_t *)a], *y = &keys[*(const size_t *)b];
	int c = memcmp(x->entity, y->entity, x->len < y->len ? x->len : y->len);

	if (c)
		return c;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return (x->bucket > y->bucket) - (x->bucket < y->bucket);
}

static int key_eq(const mm_key_t *x, const mm_key_t *y)
{
	return x->len == y->len && x->bucket == y->bucket && memcmp(x->entity, y->entity, x->len) == 0;
}

static int build_batch_get(mm_ddb_t *st, ddb_slot_t *sl)
{
	ddb_job_t *job = sl->job;
	mm_buf_t *b = &sl->body;
	size_t i;
	int rc;

	sl->target = "BatchGetItem";
	b->len = 0;
	if ((rc = PUT(b, "{\"RequestItems\":{")) ||
	    (rc = mm_buf_append(b, st->table_json, strlen(st->table_json))) ||
	    (rc = PUT(b, ":{\"Keys\":[")))
		return rc;
	for (i = 0; i < sl->nkeys; i++) {
		const mm_key_t *k = &job->keys[job->idx[job->grp[sl->keys[i]]]];

		if ((i && (rc = PUT(b, ","))) ||
		    (rc = make_pk(&sl->pk, job->ns->name, k->entity, k->len)) ||
		    (rc = put_key_obj(b, &sl->pk, k->bucket)))
			return rc;
	}
	return mm_buf_printf(b, "],\"ConsistentRead\":%s}}}",
			     st->cfg.consistent_read ? "true" : "false");
}

/* Finds which of the slot's pending groups an item or key object is. */
static ssize_t match_group(ddb_slot_t *sl, const mm_jnode_t *obj)
{
	ddb_job_t *job = sl->job;
	const mm_jnode_t *pk = attr_s(obj, "pk");
	int ok = 0;
	int64_t sk = attr_i64(obj, "sk", &ok);
	size_t i;

	if (pk == NULL || !ok)
		return -1;
	for (i = 0; i < sl->nkeys; i++) {
		const mm_key_t *k = &job->keys[job->idx[job->grp[sl->keys[i]]]];

		if (k->bucket != sk || make_pk(&sl->pk, job->ns->name, k->entity, k->len))
			continue;
		if (sl->pk.len == pk->len && memcmp(sl->pk.p, pk->s, pk->len) == 0)
			return (ssize_t)i;
	}
	return -1;
}

/* Decodes a returned item into every key of its group. */
static int get_fill(ddb_slot_t *sl, size_t g, const mm_jnode_t *item)
{
	ddb_job_t *job = sl->job;
	const mm_monoid_t *m = job->ns->m;
	size_t j;
	int rc;

	if (item_expired(item, job->now_ms) || mm_jnode_get(item, "v") == NULL)
		return 0;
	for (j = job->grp[g]; j < job->grp[g + 1]; j++) {
		size_t i = job->idx[j];
		void *state = (char *)job->states + i * MM_STATE_MAX;

		if ((rc = item_state(m, item, state, &sl->val))) {
			char why[300];

			snprintf(why, sizeof(why), "%s", mm_diag_msg());
			return mm_diag_set(rc == MM_ENOMEM ? rc : MM_ECORRUPT,
					   "stored %s state of '%s' bucket %" PRId64
					   " is unreadable: %s",
					   m->vt->name, job->ns->name, job->keys[i].bucket, why);
		}
		job->found[i] = 1;
	}
	return 0;
}

static void get_answer(ddb_slot_t *sl)
{
	mm_ddb_t *st = sl->st;
	const mm_jnode_t *root = sl->tree.root, *items, *unproc, *it;
	size_t keep[DDB_BATCH_MAX], nkeep = 0, before = sl->nkeys, i;
	uint8_t got[DDB_BATCH_MAX] = {0};
	int rc;

	items = mm_jnode_get(mm_jnode_get(root, "Responses"), st->table);
	for (it = items ? items->child : NULL; it; it = it->next) {
		ssize_t k = match_group(sl, it);

		if (k < 0) {
			slot_finish(sl, MM_ECORRUPT, "BatchGetItem returned an item that was not asked for");
			return;
		}
		if ((rc = get_fill(sl, sl->keys[k], it))) {
			slot_finish(sl, rc, NULL);
			return;
		}
		got[k] = 1;
	}
	unproc = mm_jnode_get(mm_jnode_get(mm_jnode_get(root, "UnprocessedKeys"), st->table),
			      "Keys");
	for (it = unproc ? unproc->child : NULL; it; it = it->next) {
		ssize_t k = match_group(sl, it);

		if (k < 0 || got[k]) {
			slot_finish(sl, MM_ECORRUPT, "BatchGetItem returned an unknown unprocessed key");
			return;
		}
		got[k] = 2;
	}
	for (i = 0; i < sl->nkeys; i++)
		if (got[i] == 2)
			keep[nkeep++] = sl->keys[i];
	if (nkeep == 0) {
		slot_finish(sl, 0, NULL);
		return;
	}
	st->stats.unprocessed_keys += nkeep;
	memcpy(sl->keys, keep, nkeep * sizeof(keep[0]));
	sl->nkeys = nkeep;
	if ((rc = build_batch_get(st, sl))) {
		slot_finish(sl, rc, NULL);
		return;
	}
	/* Progress resets the attempt count: only a stalled batch gives up. */
	if (nkeep < before)
		sl->attempts = 0;
	slot_retry(sl, "BatchGetItem left keys unprocessed");
}

static int start_get_item(ddb_slot_t *sl)
{
	ddb_job_t *job = sl->job;
	size_t first = sl->item * DDB_BATCH_MAX, i;
	int rc;

	sl->kind = K_BATCH_GET;
	sl->nkeys = 0;
	for (i = first; i < job->ngrp && i < first + DDB_BATCH_MAX; i++)
		sl->keys[sl->nkeys++] = i;
	rc = build_batch_get(sl->st, sl);
	return rc ? rc : slot_send(sl);
}

static int ddb_get_many(mm_store_t *base, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
			void *states, uint8_t *found, mm_store_cb cb, void *arg)
{
	mm_ddb_t *st = (mm_ddb_t *)base;
	ddb_job_t *job = calloc(1, sizeof(*job));
	size_t i;

	if (job == NULL || (job->idx = malloc(n * sizeof(size_t))) == NULL ||
	    (job->grp = malloc((n + 1) * sizeof(size_t))) == NULL) {
		if (job)
			job_free(job);
		return mm_diag_set(MM_ENOMEM, "dynamodb: cannot allocate a get_many of %zu keys", n);
	}
	for (i = 0; i < n; i++)
		job->idx[i] = i;
	qsort_r(job->idx, n, sizeof(size_t), key_cmp, (void *)keys);
	for (i = 0; i < n; i++)
		if (i == 0 || !key_eq(&keys[job->idx[i]], &keys[job->idx[i - 1]]))
			job->grp[job->ngrp++] = i;
	job->grp[job->ngrp] = n;
	memset(found, 0, n);
	job->kind = J_GET;
	job->cb = cb;
	job->arg = arg;
	job->t0 = uv_hrtime();
	job->ns = ns;
	job->keys = keys;
	job->states = states;
	job->found = found;
	job->now_ms = ddb_now_ms();
	job->nitems = (job->ngrp + DDB_BATCH_MAX - 1) / DDB_BATCH_MAX;
	ddb_enqueue(st, job);
	return 0;
}

/* ---- claims ---- */

static int build_claim(mm_ddb_t *st, ddb_slot_t *sl)
{
	ddb_job_t *job = sl->job;
	const mm_claim_t *c = &job->claims[sl->item];
	mm_buf_t *b = &sl->body;
	int64_t now = ddb_now_ms();
	int rc;

	/* sl->kind says which: K_CLAIM or K_STEAL (set by the caller). */
	sl->target = "PutItem";
	if ((rc = make_pk(&sl->pk, job->ns->name, c->id, c->len)) ||
	    (rc = put_item_start(st, b, &sl->pk, DDB_SK_MARK)) ||
	    (rc = PUT(b, ",\"st\":{\"S\":\"P\"},\"own\":{\"S\":")) ||
	    (rc = mm_json_quote(st->owner, strlen(st->owner), b)) || (rc = PUT(b, "},\"fl\":{\"S\":")) ||
	    (rc = put_tag(st, b)) || (rc = PUT(b, "},\"ls\":")) ||
	    (rc = put_n(b, now + job->lease_ms)) || (rc = PUT(b, ",\"ttl\":")) ||
	    (rc = put_n(b, ttl_of(now + (job->ttl_ms > job->lease_ms ? job->ttl_ms : job->lease_ms)))))
		return rc;
	/* A plain claim takes a free id (or ours again); a steal replaces exactly
	 * the pending claim that was read, once its lease has run out and its
	 * flush is known not to have committed. */
	if (sl->kind == K_STEAL) {
		if ((rc = PUT(b, "},\"ConditionExpression\":\"#own = :old AND #st = :p AND ")) ||
		    (rc = sl->held_has_ls ? PUT(b, "#ls = :ls\"") : PUT(b, "attribute_not_exists(#ls)\"")) ||
		    (rc = PUT(b, ",\"ExpressionAttributeNames\":{\"#own\":\"own\",\"#st\":\"st\","
				 "\"#ls\":\"ls\"},\"ExpressionAttributeValues\":{\":old\":{\"S\":")) ||
		    (rc = mm_json_quote((const char *)sl->val.p, sl->val.len, b)) ||
		    (rc = PUT(b, "},\":p\":{\"S\":\"P\"}")) ||
		    (sl->held_has_ls && ((rc = PUT(b, ",\":ls\":")) || (rc = put_n(b, sl->held_ls)))))
			return rc;
		return PUT(b, "},\"ReturnValues\":\"ALL_OLD\"}");
	}
	if ((rc = PUT(b, "},\"ConditionExpression\":\"attribute_not_exists(pk) OR (#own = :me AND "
			 "#st = :p AND #fl = :fl) OR #t < :nows\","
			 "\"ExpressionAttributeNames\":{\"#own\":\"own\",\"#st\":\"st\",\"#fl\":\"fl\","
			 "\"#t\":\"ttl\"},\"ExpressionAttributeValues\":{\":me\":{\"S\":")) ||
	    (rc = mm_json_quote(st->owner, strlen(st->owner), b)) ||
	    (rc = PUT(b, "},\":fl\":{\"S\":")) || (rc = put_tag(st, b)) ||
	    (rc = PUT(b, "},\":p\":{\"S\":\"P\"},\":nows\":")) || (rc = put_n(b, now / 1000)))
		return rc;
	return PUT(b, "},\"ReturnValues\":\"ALL_OLD\"}");
}

/* Confirm, release or renew one of our claims: conditional on owning it. */
static int build_owned(mm_ddb_t *st, ddb_slot_t *sl)
{
	ddb_job_t *job = sl->job;
	const mm_claim_t *c = &job->claims[sl->item];
	mm_buf_t *b = &sl->body;
	int64_t now = ddb_now_ms();
	int rc;

	sl->target = job->kind == J_RELEASE ? "DeleteItem" : "UpdateItem";
	sl->kind = job->kind == J_RELEASE ? K_RELEASE : job->kind == J_RENEW ? K_RENEW : K_CONFIRM;
	if ((rc = make_pk(&sl->pk, job->ns->name, c->id, c->len)) ||
	    (rc = put_head(st, b, &sl->pk, DDB_SK_MARK)))
		return rc;
	switch (sl->kind) {
	case K_RELEASE:
		rc = PUT(b, ",\"ConditionExpression\":\"#own = :me AND #st = :p\","
			    "\"ExpressionAttributeNames\":{\"#own\":\"own\",\"#st\":\"st\"},"
			    "\"ExpressionAttributeValues\":{\":p\":{\"S\":\"P\"},\":me\":{\"S\":");
		break;
	case K_RENEW:
		rc = PUT(b, ",\"UpdateExpression\":\"SET #ls = :ls\","
			    "\"ConditionExpression\":\"#own = :me AND #st = :p\","
			    "\"ExpressionAttributeNames\":{\"#own\":\"own\",\"#st\":\"st\",\"#ls\":\"ls\"},"
			    "\"ExpressionAttributeValues\":{\":p\":{\"S\":\"P\"},\":me\":{\"S\":");
		break;
	default:
		rc = PUT(b, ",\"UpdateExpression\":\"SET #st = :c, #t = :t REMOVE #ls\","
			    "\"ConditionExpression\":\"#own = :me\","
			    "\"ExpressionAttributeNames\":{\"#own\":\"own\",\"#st\":\"st\",\"#t\":\"ttl\","
			    "\"#ls\":\"ls\"},\"ExpressionAttributeValues\":{\":c\":{\"S\":\"C\"},\":me\":{\"S\":");
		break;
	}
	if (rc || (rc = mm_json_quote(st->owner, strlen(st->owner), b)) || (rc = PUT(b, "}")))
		return rc;
	if (sl->kind == K_CONFIRM &&
	    ((rc = PUT(b, ",\":t\":")) || (rc = put_n(b, ttl_of(now + job->ttl_ms)))))
		return rc;
	if (sl->kind == K_RENEW &&
	    ((rc = PUT(b, ",\":ls\":")) || (rc = put_n(b, now + job->lease_ms))))
		return rc;
	return PUT(b, "}}");
}

static int start_claim_item(ddb_slot_t *sl)
{
	ddb_job_t *job = sl->job;
	int rc;

	sl->kind = K_CLAIM;
	if (job->kind == J_CLAIM)
		rc = build_claim(sl->st, sl);
	else
		rc = build_owned(sl->st, sl);
	return rc ? rc : slot_send(sl);
}

/* Claims the slot's id again after it changed under us. */
static void claim_retry(ddb_slot_t *sl)
{
	int rc;

	if (++sl->conflicts > DDB_CAS_MAX) {
		slot_finish(sl, MM_ESTORE, "the claim kept changing under us");
		return;
	}
	sl->kind = K_CLAIM;
	if ((rc = build_claim(sl->st, sl)) || (rc = slot_send(sl)))
		slot_finish(sl, rc, NULL);
}

/* Another owner's claim whose flush has not committed: busy while its lease
 * lasts, else taken over (conditional on it being unchanged). */
static void claim_pending(ddb_slot_t *sl, int64_t now)
{
	mm_claim_t *c = &sl->job->claims[sl->item];
	int rc;

	if (sl->held_has_ls && sl->held_ls >= now) {
		c->result = MM_CLAIM_BUSY;
		c->lease_until_ms = sl->held_ls;
		slot_finish(sl, 0, NULL);
		return;
	}
	sl->kind = K_STEAL;
	sl->attempts = 0;
	if ((rc = build_claim(sl->st, sl)) || (rc = slot_send(sl)))
		slot_finish(sl, rc, NULL);
}

static void claim_answer(ddb_slot_t *sl, int cond)
{
	mm_ddb_t *st = sl->st;
	ddb_job_t *job = sl->job;
	mm_claim_t *c = &job->claims[sl->item];
	const mm_jnode_t *item, *own, *state;
	int64_t now = ddb_now_ms();
	int rc;

	switch (sl->kind) {
	case K_CLAIM:
		if (cond) {
			/* Somebody holds it: read who, to tell a duplicate from a busy id. */
			sl->kind = K_CLAIM_GET;
			sl->attempts = 0;
			if ((rc = build_get(st, sl, &sl->pk, DDB_SK_MARK)) || (rc = slot_send(sl)))
				slot_finish(sl, rc, NULL);
			return;
		}
		item = mm_jnode_get(sl->tree.root, "Attributes");
		own = attr_s(item, "own");
		c->result = item && own && !item_expired(item, now) &&
				    !(own->len == strlen(st->owner) && memcmp(own->s, st->owner, own->len) == 0)
			    ? MM_CLAIM_STOLEN
			    : MM_CLAIM_WON;
		slot_finish(sl, 0, NULL);
		return;
	case K_CLAIM_GET:
		item = mm_jnode_get(sl->tree.root, "Item");
		state = attr_s(item, "st");
		own = attr_s(item, "own");
		if (item && state && own && !item_expired(item, now)) {
			const mm_jnode_t *fl = attr_s(item, "fl");

			if (state->len == 1 && state->s[0] == 'C') {
				c->result = MM_CLAIM_DUPLICATE;
				slot_finish(sl, 0, NULL);
				return;
			}
			/* Pending under another owner: remember whose, then ask
			 * whether its flush committed (the effect is durable and
			 * only the confirmation is missing). */
			sl->val.len = 0;
			sl->held_ls = attr_i64(item, "ls", &sl->held_has_ls);
			if ((rc = mm_buf_append(&sl->val, own->s, own->len))) {
				slot_finish(sl, rc, NULL);
				return;
			}
			if (fl) {
				sl->kind = K_COMMIT_GET;
				sl->attempts = 0;
				if ((rc = commit_pk(&sl->pk, fl->s, fl->len)) ||
				    (rc = build_get(st, sl, &sl->pk, DDB_SK_COMMIT)) || (rc = slot_send(sl)))
					slot_finish(sl, rc, NULL);
				return;
			}
			claim_pending(sl, now);
			return;
		}
		/* It changed under us (released, expired): claim again. */
		claim_retry(sl);
		return;
	case K_COMMIT_GET:
		if (mm_jnode_get(sl->tree.root, "Item") != NULL) {
			c->result = MM_CLAIM_DUPLICATE;
			slot_finish(sl, 0, NULL);
			return;
		}
		claim_pending(sl, now);
		return;
	case K_STEAL:
		if (cond) {
			/* It moved on (confirmed, renewed, taken): look again. */
			claim_retry(sl);
			return;
		}
		c->result = MM_CLAIM_STOLEN;
		slot_finish(sl, 0, NULL);
		return;
	case K_COMMIT:
		break;
	case K_CONFIRM:
		c->result = cond ? MM_CLAIM_NOT_OWNER : MM_CLAIM_CONFIRMED;
		slot_finish(sl, 0, NULL);
		return;
	case K_RELEASE:
		c->result = cond ? MM_CLAIM_NOT_OWNER : MM_CLAIM_RELEASED;
		slot_finish(sl, 0, NULL);
		return;
	case K_RENEW:
		c->result = cond ? MM_CLAIM_NOT_OWNER : MM_CLAIM_RENEWED;
		slot_finish(sl, 0, NULL);
		return;
	}
}

static int slot_start_item(ddb_slot_t *sl)
{
	switch (sl->job->kind) {
	case J_APPLY:
		return start_apply_item(sl);
	case J_GET:
		return start_get_item(sl);
	default:
		return start_claim_item(sl);
	}
}

/* ---- answers ---- */

static void on_response(void *arg, const mm_http_response_t *res)
{
	ddb_slot_t *sl = arg;
	mm_ddb_t *st = sl->st;
	char err[96], detail[400];
	int cls;

	ddb_count(st, sl->op, res->ns);
	if (sl->kind == K_PRUNE && (res->status != 0 || res->code != 200)) {
		/* Best effort: the delta is durable already; stale tokens stay. */
		slot_finish(sl, 0, NULL);
		goto out;
	}
	if (res->status != 0) {
		st->stats.transport_errors++;
		snprintf(detail, sizeof(detail), "%s", res->error);
		slot_retry(sl, detail);
		goto out;
	}
	if (res->code == 200) {
		if (mm_jtree_parse(&sl->tree, (const char *)res->body, res->len) != 0) {
			snprintf(detail, sizeof(detail), "unreadable answer: %s", mm_diag_msg());
			slot_retry(sl, detail);
			goto out;
		}
		cls = -1;
	} else {
		cls = ddb_classify(res->code, res->body, res->len, &sl->tree, err, sizeof(err),
				   detail, sizeof(detail));
		if (res->code >= 500)
			st->stats.server_errors++;
		else if (strstr(err, "Throughput") || strstr(err, "Throttling") ||
			 strstr(err, "RequestLimit"))
			st->stats.throttled++;
		if (cls == R_RETRY) {
			slot_retry(sl, detail);
			goto out;
		}
		if (cls == R_FATAL) {
			slot_finish(sl, MM_ESTORE, detail);
			goto out;
		}
	}
	if (sl->job->kind == J_APPLY)
		apply_answer(sl, cls == R_COND);
	else if (sl->job->kind == J_GET) {
		if (cls == R_COND)
			slot_finish(sl, MM_ESTORE, detail);
		else
			get_answer(sl);
	} else
		claim_answer(sl, cls == R_COND);
out:
	ddb_pump(st);
}

/* ---- blocking calls (start-up only) ---- */

/*
 * Sends one request and waits for it, retrying throttling, 5xx and transport
 * failures like the asynchronous path (sleeping in between). On success the
 * answer is in st->sync_tree. A DynamoDB error returns MM_ESTORE with the
 * exception name in st->sync_err (MM_ENOTFOUND for ResourceNotFoundException).
 */
static int ddb_call_sync(mm_ddb_t *st, const char *target)
{
	char err[96], detail[400];
	int attempt, n, rc = 0;

	st->sync_err[0] = '\0';
	for (attempt = 1;; attempt++) {
		const char *hdrs[8];
		mm_http_request_t req;
		long code = 0;

		if (st->cred_expires_ms && st->cred_expires_ms - 60000 < ddb_now_ms() &&
		    (rc = creds_fetch_blocking(st)))
			return rc;
		n = ddb_sign(st, target, &st->sync_body, &st->sync_hdr, hdrs);
		if (n < 0)
			return n;
		req = (mm_http_request_t){.method = "POST", .url = st->url, .headers = hdrs,
					  .nheaders = (size_t)n, .body = st->sync_body.p,
					  .body_len = st->sync_body.len,
					  .timeout_ms = st->cfg.request_timeout_ms};
		st->sync_resp.len = 0;
		rc = mm_http_fetch(&req, &code, &st->sync_resp);
		ddb_count(st, ddb_op_of(target), 0);
		if (rc == 0 && code == 200) {
			if ((rc = mm_jtree_parse(&st->sync_tree, (const char *)st->sync_resp.p,
						 st->sync_resp.len)))
				return mm_diag_set(MM_ESTORE, "dynamodb: %s: unreadable answer",
						   target);
			return 0;
		}
		if (rc == 0) {
			int cls = ddb_classify(code, st->sync_resp.p, st->sync_resp.len,
					       &st->sync_tree, err, sizeof(err), detail,
					       sizeof(detail));

			snprintf(st->sync_err, sizeof(st->sync_err), "%s", err);
			if (cls != R_RETRY) {
				if (strcmp(err, "ResourceNotFoundException") == 0)
					return mm_diag_set(MM_ENOTFOUND, "dynamodb: %s: %s",
							   target, detail);
				return mm_diag_set(MM_ESTORE, "dynamodb: %s: %s", target, detail);
			}
		} else {
			snprintf(detail, sizeof(detail), "%s", mm_diag_msg());
		}
		if (attempt >= st->cfg.max_attempts)
			return mm_diag_set(MM_ESTORE, "dynamodb: %s: %s (gave up after %d attempts)",
					   target, detail, attempt);
		st->stats.retries++;
		usleep((useconds_t)(backoff_ms(st, attempt) * 1000));
	}
}

/* Builds {"TableName":T,"Key":{pk,sk},"ConsistentRead":true} for a GetItem. */
static int sync_get_body(mm_ddb_t *st, const char *pk, size_t pklen, int64_t sk)
{
	mm_buf_t key = {.p = (uint8_t *)(uintptr_t)pk, .len = pklen, .cap = pklen};
	int rc;

	if ((rc = put_head(st, &st->sync_body, &key, sk)))
		return rc;
	return PUT(&st->sync_body, ",\"ConsistentRead\":true}");
}

/* GetItem of (pk, sk) and appends its v (B) to out: 0, MM_ENOTFOUND or error. */
static int sync_get_bytes(mm_ddb_t *st, const char *pk, size_t pklen, int64_t sk, mm_buf_t *out)
{
	const mm_jnode_t *v;
	int rc;

	if ((rc = sync_get_body(st, pk, pklen, sk)) || (rc = ddb_call_sync(st, "GetItem")))
		return rc;
	v = mm_jnode_get(mm_jnode_get(mm_jnode_get(st->sync_tree.root, "Item"), "v"), "B");
	if (v == NULL || v->type != MM_JSON_STRING)
		return mm_diag_set(MM_ENOTFOUND, "dynamodb: no item '%.*s'", (int)pklen, pk);
	return mm_aws_base64_decode(v->s, v->len, out);
}

static int ddb_get_position(mm_store_t *base, const char *source, mm_buf_t *out)
{
	mm_ddb_t *st = (mm_ddb_t *)base;
	mm_buf_t pk = {0};
	int rc;

	if (!st->cfg.positions)
		return mm_diag_set(MM_ENOTSUP, "dynamodb: positions are off (option positions)");
	if ((rc = mm_buf_printf(&pk, "#pos#%s", source)) == 0)
		rc = sync_get_bytes(st, (const char *)pk.p, pk.len, DDB_SK_POS, out);
	mm_buf_free(&pk);
	return rc;
}

static int ddb_get_meta(mm_store_t *base, const char *ns_name, mm_buf_t *out)
{
	return sync_get_bytes((mm_ddb_t *)base, ns_name, strlen(ns_name), DDB_SK_META, out);
}

static int ddb_put_meta(mm_store_t *base, const char *ns_name, const uint8_t *p, size_t n)
{
	mm_ddb_t *st = (mm_ddb_t *)base;
	mm_buf_t *b = &st->sync_body;
	int rc;

	if (st->read_only)
		return mm_diag_set(MM_ENOTSUP, "dynamodb: put_meta on a store opened read-only");
	b->len = 0;
	if ((rc = PUT(b, "{\"TableName\":")) ||
	    (rc = mm_buf_append(b, st->table_json, strlen(st->table_json))) ||
	    (rc = PUT(b, ",\"Item\":{\"pk\":{\"S\":")) ||
	    (rc = mm_json_quote(ns_name, strlen(ns_name), b)) || (rc = PUT(b, "},\"sk\":")) ||
	    (rc = put_n(b, DDB_SK_META)) || (rc = PUT(b, ",\"v\":{\"B\":\"")) ||
	    (n > 0 && (rc = mm_base64_encode(p, n, b))) || (rc = PUT(b, "\"}}}")) ||
	    (rc = ddb_call_sync(st, "PutItem")))
		return rc;
	/* Then the registry that list_meta reads: ADD to a string set. */
	b->len = 0;
	if ((rc = PUT(b, "{\"TableName\":")) ||
	    (rc = mm_buf_append(b, st->table_json, strlen(st->table_json))) ||
	    (rc = PUT(b, ",\"Key\":{\"pk\":{\"S\":\"#meta\"},\"sk\":")) ||
	    (rc = put_n(b, DDB_SK_META)) ||
	    (rc = PUT(b, "},\"UpdateExpression\":\"ADD #n :n\",\"ExpressionAttributeNames\":"
			 "{\"#n\":\"names\"},\"ExpressionAttributeValues\":{\":n\":{\"SS\":[")) ||
	    (rc = mm_json_quote(ns_name, strlen(ns_name), b)) || (rc = PUT(b, "]}}}")))
		return rc;
	return ddb_call_sync(st, "UpdateItem");
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int ddb_list_meta(mm_store_t *base, mm_buf_t *out)
{
	mm_ddb_t *st = (mm_ddb_t *)base;
	const mm_jnode_t *ss, *n;
	const char **names = NULL;
	size_t count = 0, i;
	int rc;

	if ((rc = sync_get_body(st, "#meta", 5, DDB_SK_META)) || (rc = ddb_call_sync(st, "GetItem")))
		return rc;
	ss = mm_jnode_get(mm_jnode_get(mm_jnode_get(st->sync_tree.root, "Item"), "names"), "SS");
	if (ss == NULL || ss->n == 0)
		return 0;
	names = malloc(ss->n * sizeof(*names));
	if (names == NULL)
		return mm_diag_set(MM_ENOMEM, "dynamodb: out of memory");
	for (n = ss->child; n; n = n->next)
		if (n->type == MM_JSON_STRING)
			names[count++] = n->s;
	qsort(names, count, sizeof(*names), str_cmp);
	for (i = 0; i < count && rc == 0; i++)
		rc = mm_buf_append(out, names[i], strlen(names[i]) + 1);
	free(names);
	return rc;
}

static int ddb_seen(mm_store_t *base, const mm_ns_t *ns, const char *id, size_t len,
		    int64_t now_ms)
{
	return mm_diag_set(MM_ENOTSUP, "dynamodb: seen() is not offered; dedup on a shared store "
				       "uses claims");
}

static int ddb_vt_claim(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
			int64_t ttl_ms, mm_store_cb cb, void *arg)
{
	return mm_ddb_claim(st, ns, ids, n, st->lease_ms, ttl_ms, cb, arg);
}

static int ddb_vt_renew(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
			mm_store_cb cb, void *arg)
{
	return mm_ddb_renew(st, ns, ids, n, st->lease_ms, cb, arg);
}

/* ---- the table ---- */

static int table_status(mm_ddb_t *st, char *out, size_t cap)
{
	const mm_jnode_t *s;
	int rc;

	st->sync_body.len = 0;
	if ((rc = PUT(&st->sync_body, "{\"TableName\":")) ||
	    (rc = mm_buf_append(&st->sync_body, st->table_json, strlen(st->table_json))) ||
	    (rc = PUT(&st->sync_body, "}")) || (rc = ddb_call_sync(st, "DescribeTable")))
		return rc;
	s = mm_jnode_get(mm_jnode_get(st->sync_tree.root, "Table"), "TableStatus");
	snprintf(out, cap, "%s", s && s->type == MM_JSON_STRING ? s->s : "");
	return 0;
}

/* Creates the table if needed, waits until ACTIVE, enables TTL where the
 * service has it. *created and *ttl describe what happened (for the CLI). */
static int table_create(mm_ddb_t *st, int *created, const char **ttl)
{
	mm_buf_t *b = &st->sync_body;
	char status[32];
	int rc, i;

	*created = 0;
	*ttl = "enabled";
	b->len = 0;
	if ((rc = PUT(b, "{\"TableName\":")) ||
	    (rc = mm_buf_append(b, st->table_json, strlen(st->table_json))) ||
	    (rc = PUT(b, ",\"AttributeDefinitions\":[{\"AttributeName\":\"pk\",\"AttributeType\":\"S\"},"
			 "{\"AttributeName\":\"sk\",\"AttributeType\":\"N\"}],\"KeySchema\":["
			 "{\"AttributeName\":\"pk\",\"KeyType\":\"HASH\"},{\"AttributeName\":\"sk\","
			 "\"KeyType\":\"RANGE\"}],\"BillingMode\":\"PAY_PER_REQUEST\"}")))
		return rc;
	rc = ddb_call_sync(st, "CreateTable");
	if (rc == 0)
		*created = 1;
	else if (strcmp(st->sync_err, "ResourceInUseException") != 0)
		return rc;
	/* Real DynamoDB takes seconds to create a table. */
	for (i = 0; i < 600; i++) {
		if ((rc = table_status(st, status, sizeof(status))))
			return rc;
		if (strcmp(status, "ACTIVE") == 0)
			break;
		usleep(200000);
	}
	if (i == 600)
		return mm_diag_set(MM_ETIMEDOUT, "dynamodb: table '%s' did not become ACTIVE",
				   st->table);
	b->len = 0;
	if ((rc = PUT(b, "{\"TableName\":")) ||
	    (rc = mm_buf_append(b, st->table_json, strlen(st->table_json))) ||
	    (rc = PUT(b, ",\"TimeToLiveSpecification\":{\"AttributeName\":\"ttl\",\"Enabled\":true}}")))
		return rc;
	rc = ddb_call_sync(st, "UpdateTimeToLive");
	if (rc && strcmp(st->sync_err, "UnknownOperationException") == 0) {
		*ttl = "unsupported"; /* dynalite */
		rc = 0;
	} else if (rc && strcmp(st->sync_err, "ValidationException") == 0 &&
		   strstr(mm_diag_msg(), "already enabled")) {
		*ttl = "already enabled";
		rc = 0;
	}
	return rc;
}

/* ---- open and close ---- */

/* Splits "scheme://host[:port][/]" into the URL curl uses and the Host header. */
static int parse_endpoint(mm_ddb_t *st, const char *ep)
{
	const char *p = strstr(ep, "://"), *host, *end;
	mm_buf_t u = {0};
	int rc;

	if (p == NULL || !((p - ep == 4 && strncmp(ep, "http", 4) == 0) ||
			   (p - ep == 5 && strncmp(ep, "https", 5) == 0)))
		return mm_diag_set(MM_EINVAL, "dynamodb: endpoint '%s' must start with http:// or "
					      "https://", ep);
	host = p + 3;
	end = host + strcspn(host, "/?#");
	if (end == host || (*end && strcmp(end, "/") != 0))
		return mm_diag_set(MM_EINVAL, "dynamodb: endpoint '%s' must be scheme://host[:port] "
					      "without a path", ep);
	st->host = strndup(host, (size_t)(end - host));
	if ((rc = mm_buf_printf(&u, "%.*s/%c", (int)(end - ep), ep, 0))) {
		mm_buf_free(&u);
		return rc;
	}
	st->url = (char *)u.p;
	if (st->host == NULL)
		return mm_diag_set(MM_ENOMEM, "dynamodb: out of memory");
	return 0;
}

static const char *env_or(const char *v, const char *a, const char *b)
{
	const char *e;

	if (v && *v)
		return v;
	if (a && (e = getenv(a)) && *e)
		return e;
	if (b && (e = getenv(b)) && *e)
		return e;
	return NULL;
}

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
	mm_buf_free(&st->sync_body);
	mm_buf_free(&st->sync_resp);
	mm_buf_free(&st->sync_hdr);
	mm_jtree_free(&st->sync_tree);
	ddb_free_str(&st->akid);
	ddb_free_str(&st->secret);
	ddb_free_str(&st->token);
	ddb_free_str(&st->cred_auth);
	free(st->cred_url);
	free(st->table);
	free(st->table_json);
	free(st->region);
	free(st->url);
	free(st->host);
	free(st->owner);
	free(st);
}

static void ddb_handle_gone(mm_ddb_t *st)
{
	if (--st->open_handles == 0)
		ddb_free(st);
}

static void on_timer_closed(uv_handle_t *h)
{
	ddb_handle_gone(h->data);
}

static void on_slot_timer_closed(uv_handle_t *h)
{
	ddb_handle_gone(((ddb_slot_t *)h->data)->st);
}

/* Closes every libuv handle; st is freed when the last one is closed. */
static void ddb_close_handles(mm_ddb_t *st)
{
	size_t i;

	st->closing = 1;
	mm_http_close(st->http);
	st->http = NULL;
	st->open_handles = 2 + st->nslots;
	uv_close((uv_handle_t *)&st->kick, on_timer_closed);
	uv_close((uv_handle_t *)&st->cred_timer, on_timer_closed);
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
		job_free(job);
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
	char status[32];
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
	st->base.claims = !read_only;
	st->base.lease_ms = st->cfg.lease_ms;
	table = env_or(st->cfg.table, "MURMUR_DYNAMODB_TABLE", NULL);
	region = env_or(st->cfg.region, "AWS_REGION", "AWS_DEFAULT_REGION");
	endpoint = env_or(st->cfg.endpoint, "MURMUR_DYNAMODB_ENDPOINT", NULL);
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
	if (endpoint && (rc = parse_endpoint(st, endpoint)))
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
	/* Start-up checks, blocking (no handle exists yet, so failing is simple). */
	if ((rc = creds_init(st)))
		goto fail;
	if (st->cfg.create_table && !read_only) {
		if ((rc = table_create(st, &st->created, &st->ttl_state)))
			goto fail;
		if (st->created)
			mm_log(MM_LOG_INFO, "dynamodb", "created table '%s' (TTL %s)", st->table,
			       st->ttl_state);
	} else if ((rc = table_status(st, status, sizeof(status))) == MM_ENOTFOUND) {
		rc = mm_diag_set(MM_ENOTFOUND,
				 "dynamodb: table '%s' does not exist at %s (create it with `murmur ddb "
				 "create-table --table %s` or the store option create_table = true)",
				 st->table, st->url, st->table);
		goto fail;
	} else if (rc) {
		goto fail;
	}
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
	uv_timer_init(loop, &st->cred_timer);
	st->kick.data = st->cred_timer.data = st;
	for (i = st->nslots; i-- > 0;) {
		ddb_slot_t *sl = &st->slots[i];

		sl->st = st;
		uv_timer_init(loop, &sl->timer);
		sl->timer.data = sl;
		sl->next_free = st->free_slots;
		st->free_slots = sl;
	}
	cred_arm(st);
	mm_buf_free(&tmp);
	*out = &st->base;
	return 0;
fail:
	mm_buf_free(&tmp);
	ddb_free(st);
	return rc;
}

/* ---- dynamodb.h ---- */

static mm_ddb_t *ddb_of(const mm_store_t *base)
{
	return base && base->vt == &mm_store_dynamodb_vtable ? (mm_ddb_t *)base : NULL;
}

static int claim_job(mm_store_t *base, int kind, const mm_ns_t *ns, mm_claim_t *ids,
		     size_t n, int64_t lease_ms, int64_t ttl_ms, mm_store_cb cb, void *arg)
{
	mm_ddb_t *st = ddb_of(base);
	ddb_job_t *job;
	size_t i;

	if (st == NULL)
		return mm_diag_set(MM_EINVAL, "dynamodb: not a DynamoDB store");
	if (st->read_only)
		return mm_diag_set(MM_ENOTSUP, "dynamodb: claims on a store opened read-only");
	if (ns == NULL || ns->name == NULL || (n && ids == NULL) || cb == NULL || lease_ms < 0 ||
	    ttl_ms < 0)
		return mm_diag_set(MM_EINVAL, "dynamodb: claim needs a namespace, ids and a callback");
	for (i = 0; i < n; i++) {
		if (ids[i].id == NULL || ids[i].len < 1 || ids[i].len > 1024)
			return mm_diag_set(MM_EINVAL, "dynamodb: claim id %zu must have 1..1024 bytes",
					   i);
		ids[i].result = 0;
		ids[i].lease_until_ms = 0;
	}
	job = calloc(1, sizeof(*job));
	if (job == NULL)
		return mm_diag_set(MM_ENOMEM, "dynamodb: cannot allocate a claim");
	job->kind = kind;
	job->cb = cb;
	job->arg = arg;
	job->t0 = uv_hrtime();
	job->ns = ns;
	job->claims = ids;
	job->nitems = n;
	job->lease_ms = lease_ms;
	job->ttl_ms = ttl_ms;
	job->now_ms = ddb_now_ms();
	ddb_enqueue(st, job);
	return 0;
}

int mm_ddb_claim(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		 int64_t lease_ms, int64_t ttl_ms, mm_store_cb cb, void *arg)
{
	return claim_job(st, J_CLAIM, ns, ids, n, lease_ms, ttl_ms, cb, arg);
}

int mm_ddb_confirm(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		   int64_t ttl_ms, mm_store_cb cb, void *arg)
{
	return claim_job(st, J_CONFIRM, ns, ids, n, 0, ttl_ms, cb, arg);
}

int mm_ddb_release(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		   mm_store_cb cb, void *arg)
{
	return claim_job(st, J_RELEASE, ns, ids, n, 0, 0, cb, arg);
}

int mm_ddb_renew(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		 int64_t lease_ms, mm_store_cb cb, void *arg)
{
	return claim_job(st, J_RENEW, ns, ids, n, lease_ms, 0, cb, arg);
}

const char *mm_ddb_owner(const mm_store_t *base)
{
	mm_ddb_t *st = ddb_of(base);

	return st ? st->owner : NULL;
}

int mm_ddb_get_stats(const mm_store_t *base, mm_ddb_stats_t *out)
{
	mm_ddb_t *st = ddb_of(base);

	if (st == NULL || out == NULL)
		return mm_diag_set(MM_EINVAL, "dynamodb: not a DynamoDB store");
	*out = st->stats;
	out->apply_ns_p50 = hist_pct(st, 0.50);
	out->apply_ns_p99 = hist_pct(st, 0.99);
	if (out->apply_ns_p50 > out->apply_ns_max)
		out->apply_ns_p50 = out->apply_ns_max;
	if (out->apply_ns_p99 > out->apply_ns_max)
		out->apply_ns_p99 = out->apply_ns_max;
	return 0;
}

/* ---- administration ---- */

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
	mm_buf_t pk = {0};
	int rc;

	if ((rc = make_pk(&pk, ns, entity, strlen(entity))) == 0 &&
	    (rc = sync_get_body(st, (const char *)pk.p, pk.len, bucket)) == 0 &&
	    (rc = ddb_call_sync(st, "GetItem")) == 0)
		rc = mm_buf_append(out, st->sync_resp.p, st->sync_resp.len);
	mm_buf_free(&pk);
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
	if ((rc = mm_store_open("dynamodb", &loop, opts, nopts, 0, &base)))
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

const mm_store_vtable_t mm_store_dynamodb_vtable = {
	.name = "dynamodb",
	.options = ddb_options,
	.atomic_flush = 0,
	.open = ddb_open,
	.apply = ddb_apply,
	.get_many = ddb_get_many,
	.get_position = ddb_get_position,
	.seen = ddb_seen,
	.get_meta = ddb_get_meta,
	.put_meta = ddb_put_meta,
	.list_meta = ddb_list_meta,
	.close = ddb_close,
	.claim = ddb_vt_claim,
	.renew = ddb_vt_renew,
	.release = mm_ddb_release,
};
