/*
 * test_dynamodb.c: the DynamoDB store against dynalite, through the fault
 * proxy (tests/node/fault_proxy.js), on a real libuv loop.
 *
 * Both services are started here on 127.0.0.1 (node tests/node/..., any
 * free port) and stopped at the end; without node or `make deps`'s
 * tests/node/node_modules the whole file reports one skipped test. The proxy
 * recomputes every request's SigV4 signature with the secret we sign with, so
 * every test below also proves the signing of real requests.
 *
 * Covered: every monoid kind (ADD, conditional SET, read-merge-write) over
 * two flushes; lost responses and a retried flush counted once; throttling
 * and 5xx retried; get_many of 250 keys with duplicates, missing and expired
 * items and injected UnprocessedKeys; entities that are not UTF-8; metadata
 * and positions; pruning of stale replay tokens; the claim protocol (won,
 * busy, duplicate, stolen, renew, release, flush marks as confirmations);
 * the owner's lease item (one renewal for every claim, busy while the owner
 * renews, taken over after it stops, the lapse found);
 * container credentials with refresh; a store closed while an intent is
 * decoded on the thread pool; open errors. Every test ends with the
 * loop closing cleanly.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "http/http.h"
#include "lib/error.h"
#include "lib/time.h"
#include "lib/text.h"
#include "store/dynamodb.h"
#include "store/dynamodb_impl.h"
#include "store/store.h"
#include "store_done.h"
#include "unit.h"

#define SECRET "test-secret"

static pid_t dyn_pid, proxy_pid;
static int dyn_port, proxy_port;
static char endpoint[64];
static int table_no;

/* ---- services ---- */

/* Starts `node script args...`, reads "listening PORT" from its stdout. */
static pid_t spawn_node(const char *script, const char *a1, const char *a2, int *port)
{
	int fds[2];
	pid_t pid;
	char line[128];
	FILE *f;

	if (pipe(fds) != 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		dup2(fds[1], 1);
		close(fds[0]);
		close(fds[1]);
		execlp("node", "node", script, a1, a2, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	f = fdopen(fds[0], "r");
	if (f == NULL || fgets(line, sizeof(line), f) == NULL || sscanf(line, "listening %d", port) != 1) {
		if (f)
			fclose(f);
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return -1;
	}
	fclose(f);
	return pid;
}

static void stop(pid_t pid)
{
	if (pid > 0) {
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
	}
}

/* POSTs a JSON document to the proxy's control port. */
static int proxy_post(const char *path, const char *json)
{
	char url[128];
	mm_buf_t body = {0};
	long code = 0;
	mm_http_request_t req = {.method = "POST", .url = url, .body = json,
				 .body_len = strlen(json), .timeout_ms = 5000};
	int rc;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", proxy_port, path);
	rc = mm_http_fetch(&req, &code, &body);
	mm_buf_free(&body);
	return rc == 0 && code == 200 ? 0 : -1;
}

static void faults(const char *rules)
{
	char doc[1024];

	snprintf(doc, sizeof(doc), "{\"verify_secret\":\"" SECRET "\",\"rules\":[%s]}", rules);
	if (proxy_post("/__faults", doc) != 0)
		printf("#   cannot configure the proxy\n");
}

/* Sends one raw request to dynalite itself (no proxy, no real signature). */
static int raw(const char *op, const char *json, mm_buf_t *out)
{
	char url[64], target[96];
	const char *hdrs[4] = {"Content-Type: application/x-amz-json-1.0", target,
			       "Authorization: AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=00",
			       "X-Amz-Date: 20260101T000000Z"};
	long code = 0;
	mm_http_request_t req = {.method = "POST", .url = url, .headers = hdrs, .nheaders = 4,
				 .body = json, .body_len = strlen(json), .timeout_ms = 5000};

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", dyn_port);
	snprintf(target, sizeof(target), "X-Amz-Target: DynamoDB_20120810.%s", op);
	out->len = 0;
	if (mm_http_fetch(&req, &code, out) != 0 || code != 200)
		return -1;
	return mm_buf_put_u8(out, 0);
}

/* ---- fixtures ---- */

typedef struct fx {
	uv_loop_t loop;
	mm_store_t *st;
	char table[32];
} fx_t;

static int fx_open_opts(fx_t *x, const char *table, const mm_kv_t *extra, size_t nextra)
{
	mm_kv_t kv[12] = {{"table", table}, {"endpoint", endpoint}, {"create_table", "true"},
			  {"backoff_base", "2ms"}, {"backoff_max", "20ms"}};
	size_t n = 5;

	int rc;

	for (size_t i = 0; i < nextra; i++)
		kv[n++] = extra[i];
	/* The table is created by the start-up checks, on the loop. */
	if ((rc = mm_store_open("dynamodb", &x->loop, kv, n, 0, &x->st)) == 0)
		rc = mm_store_start_wait(x->st);
	return rc;
}

/* A fresh table per test, so tests never see each other's items. */
static int fx_open(fx_t *x, const mm_kv_t *extra, size_t nextra)
{
	memset(x, 0, sizeof(*x));
	uv_loop_init(&x->loop);
	snprintf(x->table, sizeof(x->table), "test_%d_%d", (int)getpid(), ++table_no);
	return fx_open_opts(x, x->table, extra, nextra);
}

static int fx_close(fx_t *x)
{
	if (x->st)
		mm_store_close(x->st);
	uv_run(&x->loop, UV_RUN_DEFAULT);
	return uv_loop_close(&x->loop);
}

static int wait_done(fx_t *x, done_t *d)
{
	while (d->calls == 0)
		uv_run(&x->loop, UV_RUN_ONCE);
	return d->status;
}

static int apply(fx_t *x, mm_flush_t *f)
{
	done_t d = {0};
	int rc = mm_store_apply(x->st, f, on_done, &d);

	if (rc)
		return rc;
	rc = wait_done(x, &d);
	if (rc)
		printf("#   apply: %s\n", d.detail);
	return rc;
}

static int get_many(fx_t *x, const mm_ns_t *ns, const mm_key_t *keys, size_t n, void *states,
		    uint8_t *found)
{
	done_t d = {0};
	int rc;

	for (size_t i = 0; i < n; i++)
		ns->m->vt->init(ns->m, (char *)states + i * MM_STATE_MAX);
	rc = mm_store_get_many(x->st, ns, keys, n, states, found, on_done, &d);
	if (rc)
		return rc;
	rc = wait_done(x, &d);
	if (rc)
		printf("#   get_many: %s\n", d.detail);
	return rc;
}

/* A flush of n deltas (states owned by the caller), with done flags. */
typedef struct flush {
	mm_flush_t f;
	mm_delta_t d[300];
	mm_mark_t mk[8];
	uint8_t dd[300], md[8];
} flush_t;

static void flush_init(flush_t *fl)
{
	memset(fl, 0, sizeof(*fl));
	fl->f.deltas = fl->d;
	fl->f.marks = fl->mk;
	fl->f.delta_done = fl->dd;
	fl->f.mark_done = fl->md;
	fl->f.now_ms = mm_now_ms();
}

static void add_delta(flush_t *fl, const mm_ns_t *ns, const char *entity, int64_t bucket,
		      int64_t expire_ms, void *state)
{
	fl->d[fl->f.ndeltas++] = (mm_delta_t){ns, {entity, strlen(entity), bucket}, expire_ms, state};
}

static int add_int(const mm_monoid_t *m, void *st, int64_t v)
{
	mm_value_t val = {.type = MM_VAL_INT, .i = v};

	return m->vt->add(m, st, &val);
}

static int add_str(const mm_monoid_t *m, void *st, const char *s, int64_t ts)
{
	mm_value_t val = {.type = MM_VAL_STRING, .s = s, .len = strlen(s), .ts_ms = ts};

	return m->vt->add(m, st, &val);
}

static int json_of(const mm_monoid_t *m, const void *st, char *out, size_t cap)
{
	mm_buf_t b = {0};
	int rc = m->vt->to_json(m, st, &b);

	snprintf(out, cap, "%.*s", (int)b.len, (const char *)b.p);
	mm_buf_free(&b);
	return rc;
}

/* st = decode(encode(st)). */
static int roundtrip(const mm_monoid_t *m, void *st)
{
	mm_buf_t b = {0};
	int rc = m->vt->encode(m, st, &b);

	m->vt->destroy(m, st);
	m->vt->init(m, st);
	if (rc == 0)
		rc = m->vt->decode(m, st, b.p, b.len);
	mm_buf_free(&b);
	return rc;
}

static mm_monoid_t monoid(const char *name, mm_monoid_params_t p)
{
	mm_monoid_t m;

	mm_monoid_init(&m, name, &p);
	return m;
}

/* ---- tests ---- */

TEST(numeric_monoids)
{
	mm_monoid_t msum = monoid("sum", (mm_monoid_params_t){0});
	mm_monoid_t mflt = monoid("sum", (mm_monoid_params_t){.is_float = 1});
	mm_monoid_t mcnt = monoid("count", (mm_monoid_params_t){0});
	mm_monoid_t mmin = monoid("min", (mm_monoid_params_t){0});
	mm_monoid_t mmax = monoid("max", (mm_monoid_params_t){0});
	mm_ns_t ns[5] = {{"sum_i", &msum}, {"sum_f", &mflt}, {"cnt", &mcnt}, {"mn", &mmin},
			 {"mx", &mmax}};
	_Alignas(16) unsigned char s[5][MM_STATE_MAX], got[2][MM_STATE_MAX];
	const int64_t vals[2][5] = {{-7, 0, 3, 10, 10}, {12, 0, 2, -4, 25}};
	const double fv[2] = {0.1, 0.2};
	int64_t exp_ms = mm_now_ms() + 86400000;
	static flush_t fl;
	char js[128];
	fx_t x;
	uint8_t found[2];

	REQUIRE(fx_open(&x, NULL, 0) == 0);
	faults("");
	for (int round = 0; round < 2; round++) {
		flush_init(&fl);
		for (int i = 0; i < 5; i++) {
			mm_value_t v = {.type = MM_VAL_DOUBLE, .d = fv[round]};

			ns[i].m->vt->init(ns[i].m, s[i]);
			if (i == 1)
				CHECK(ns[i].m->vt->add(ns[i].m, s[i], &v) == 0);
			else if (i == 2)
				for (int k = 0; k < vals[round][i]; k++)
					CHECK(ns[i].m->vt->add(ns[i].m, s[i], &(mm_value_t){0}) == 0);
			else
				CHECK(add_int(ns[i].m, s[i], vals[round][i]) == 0);
			add_delta(&fl, &ns[i], "k", 20000, exp_ms, s[i]);
		}
		CHECK(apply(&x, &fl.f) == 0);
		CHECK_EQ_INT(fl.f.writes, 5);
	}
	{
		const char *expect[5] = {"{\"value\":5}", "{\"value\":0.3}", "{\"value\":5}",
					 "{\"value\":-4}", "{\"value\":25}"};
		mm_key_t keys[2] = {{"k", 1, 20000}, {"k", 1, 20001}};

		for (int i = 0; i < 5; i++) {
			REQUIRE(get_many(&x, &ns[i], keys, 2, got, found) == 0);
			CHECK(found[0] == 1 && found[1] == 0);
			json_of(ns[i].m, got[0], js, sizeof(js));
			if (strcmp(js, expect[i]) != 0)
				printf("#   %s: got %s, expected %s\n", ns[i].name, js, expect[i]);
			CHECK(strcmp(js, expect[i]) == 0);
			ns[i].m->vt->destroy(ns[i].m, got[0]);
			ns[i].m->vt->destroy(ns[i].m, got[1]);
		}
	}
	CHECK(fx_close(&x) == 0);
}

/* The N text of integer states, which mm_ddb_state_number formats by hand:
 * the extremes, zero and a count. */
TEST(state_number_text)
{
	mm_monoid_t msum = monoid("sum", (mm_monoid_params_t){0});
	mm_monoid_t mcnt = monoid("count", (mm_monoid_params_t){0});
	const int64_t vals[] = {INT64_MIN, INT64_MAX, 0, -7, 1234567890123};
	const char *expect[] = {"-9223372036854775808", "9223372036854775807", "0", "-7",
				"1234567890123"};
	_Alignas(16) unsigned char st[MM_STATE_MAX];
	mm_buf_t tmp = {0};
	char num[64];

	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		msum.vt->init(&msum, st);
		CHECK(add_int(&msum, st, vals[i]) == 0);
		REQUIRE(mm_ddb_state_number(&msum, st, &tmp, num, sizeof(num)) == 0);
		if (strcmp(num, expect[i]) != 0)
			printf("#   sum %s: got %s\n", expect[i], num);
		CHECK(strcmp(num, expect[i]) == 0);
		msum.vt->destroy(&msum, st);
	}
	mcnt.vt->init(&mcnt, st);
	for (int k = 0; k < 3; k++)
		CHECK(mcnt.vt->add(&mcnt, st, &(mm_value_t){0}) == 0);
	REQUIRE(mm_ddb_state_number(&mcnt, st, &tmp, num, sizeof(num)) == 0);
	CHECK(strcmp(num, "3") == 0);
	mcnt.vt->destroy(&mcnt, st);
	mm_buf_free(&tmp);
}

TEST(sketch_monoids_read_merge_write)
{
	const char *names[6] = {"topk", "hll", "set", "first", "last", "bloom"};
	mm_monoid_t m[6];
	mm_ns_t ns[6];
	_Alignas(16) unsigned char d[2][6][MM_STATE_MAX], acc[6][MM_STATE_MAX], got[6][MM_STATE_MAX];
	static flush_t fl;
	char a[4096], b[4096], item[32];
	fx_t x;
	uint8_t found[1];

	for (int i = 0; i < 6; i++) {
		m[i] = monoid(names[i], (mm_monoid_params_t){.k = 4, .max_size = 5,
							    .capacity = 1000, .fpr = 0.01});
		ns[i] = (mm_ns_t){names[i], &m[i]};
		m[i].vt->init(&m[i], acc[i]);
	}
	REQUIRE(fx_open(&x, NULL, 0) == 0);
	faults("");
	for (int round = 0; round < 2; round++) {
		flush_init(&fl);
		for (int i = 0; i < 6; i++) {
			m[i].vt->init(&m[i], d[round][i]);
			for (int k = 0; k < 40; k++) {
				snprintf(item, sizeof(item), "i%d", (k * k + round * 7) % 13);
				CHECK(add_str(&m[i], d[round][i], item, 1000 + round * 100 + k) == 0);
			}
			/* What the store does: decode, merge, encode (Top-K reduces to K
			 * when encoding, so the stored value is the round-tripped one). */
			CHECK(m[i].vt->merge(&m[i], acc[i], d[round][i]) == 0);
			CHECK(roundtrip(&m[i], acc[i]) == 0);
			add_delta(&fl, &ns[i], "hot", 0, 0, d[round][i]);
		}
		CHECK(apply(&x, &fl.f) == 0);
		CHECK_EQ_INT(fl.f.writes, 6);
	}
	for (int i = 0; i < 6; i++) {
		mm_key_t key = {"hot", 3, 0};

		REQUIRE(get_many(&x, &ns[i], &key, 1, got[i], found) == 0);
		CHECK(found[0] == 1);
		json_of(&m[i], acc[i], a, sizeof(a));
		json_of(&m[i], got[i], b, sizeof(b));
		if (strcmp(a, b) != 0)
			printf("#   %s: stored %s, expected %s\n", names[i], b, a);
		CHECK(strcmp(a, b) == 0);
		for (int r = 0; r < 2; r++)
			m[i].vt->destroy(&m[i], d[r][i]);
		m[i].vt->destroy(&m[i], acc[i]);
		m[i].vt->destroy(&m[i], got[i]);
	}
	CHECK(fx_close(&x) == 0);
}

/*
 * Responses dropped after dynalite applied the write: with one attempt per
 * request the apply fails, and the retry of the same flush must neither skip
 * a delta nor count one twice (ADD and read-merge-write alike).
 */
TEST(lost_responses_are_not_double_counted)
{
	mm_monoid_t msum = monoid("sum", (mm_monoid_params_t){0});
	mm_monoid_t mtk = monoid("topk", (mm_monoid_params_t){.k = 8});
	mm_ns_t nsum = {"lost_sum", &msum}, ntk = {"lost_tk", &mtk};
	mm_kv_t one = {"max_attempts", "1"};
	_Alignas(16) unsigned char s[20][MM_STATE_MAX], t[MM_STATE_MAX], got[MM_STATE_MAX];
	static flush_t fl;
	char ent[20][16], js[512];
	mm_ddb_stats_t stats;
	fx_t x;
	uint8_t found[1];
	int rc, attempts = 0, done = 0;

	REQUIRE(fx_open(&x, &one, 1) == 0);
	faults("{\"op\":\"UpdateItem\",\"action\":\"drop_response\",\"count\":6}");
	flush_init(&fl);
	for (int i = 0; i < 20; i++) {
		snprintf(ent[i], sizeof(ent[i]), "e%d", i);
		msum.vt->init(&msum, s[i]);
		add_int(&msum, s[i], i + 1);
		add_delta(&fl, &nsum, ent[i], 0, 0, s[i]);
	}
	mtk.vt->init(&mtk, t);
	add_str(&mtk, t, "a", 0);
	add_str(&mtk, t, "a", 0);
	add_str(&mtk, t, "b", 0);
	add_delta(&fl, &ntk, "g", 0, 0, t);
	do {
		rc = apply(&x, &fl.f);
		attempts++;
	} while (rc != 0 && attempts < 10);
	CHECK(rc == 0);
	CHECK(attempts > 1);
	for (size_t i = 0; i < fl.f.ndeltas; i++)
		done += fl.dd[i];
	CHECK_EQ_INT(done, 21);
	REQUIRE(mm_ddb_get_stats(x.st, &stats) == 0);
	CHECK(stats.replays_skipped >= 1);
	/* The HTTP client itself resends a request whose reused connection
	 * died before answering, so some drops never reach us; each is caught
	 * by its token. */
	CHECK(stats.transport_errors >= 1 && stats.transport_errors <= 6);
	for (int i = 0; i < 20; i++) {
		mm_key_t key = {ent[i], strlen(ent[i]), 0};

		REQUIRE(get_many(&x, &nsum, &key, 1, got, found) == 0);
		json_of(&msum, got, js, sizeof(js));
		CHECK(found[0] == 1);
		if (atoi(js + 9) != i + 1)
			printf("#   %s = %s, expected %d\n", ent[i], js, i + 1);
		CHECK(atoi(js + 9) == i + 1); /* {"value":N} */
	}
	{
		mm_key_t key = {"g", 1, 0};

		REQUIRE(get_many(&x, &ntk, &key, 1, got, found) == 0);
		json_of(&mtk, got, js, sizeof(js));
		CHECK(strstr(js, "\"n\":3") != NULL);
		mtk.vt->destroy(&mtk, got);
	}
	/* A new flush (a new sequence number) adds again. */
	flush_init(&fl);
	add_delta(&fl, &nsum, ent[0], 0, 0, s[0]);
	faults("");
	CHECK(apply(&x, &fl.f) == 0);
	{
		mm_key_t key = {ent[0], strlen(ent[0]), 0};

		REQUIRE(get_many(&x, &nsum, &key, 1, got, found) == 0);
		json_of(&msum, got, js, sizeof(js));
		CHECK(strcmp(js, "{\"value\":2}") == 0);
	}
	mtk.vt->destroy(&mtk, t);
	CHECK(fx_close(&x) == 0);
}

/*
 * Many read-merge-write deltas are read in batches (BatchGetItem, chunks per
 * slot): under injected UnprocessedKeys, lost answers and a second writer
 * racing on the same keys, every member of every set must land once.
 */
TEST(batched_read_merge_write)
{
	enum { N = 300 };
	mm_monoid_t mset = monoid("set", (mm_monoid_params_t){.max_size = 100});
	mm_ns_t ns = {"bset", &mset};
	mm_kv_t many = {"max_attempts", "30"};
	_Alignas(16) static unsigned char s[2][2][N][MM_STATE_MAX], got[N][MM_STATE_MAX];
	static flush_t fl[2];
	static char ent[N][16];
	mm_key_t keys[N];
	mm_store_t *b = NULL;
	mm_ddb_stats_t stats;
	uint8_t found[N];
	char js[4096], member[32];
	fx_t x;
	int bad = 0;

	REQUIRE(fx_open(&x, &many, 1) == 0);
	{
		mm_kv_t kv[3] = {{"table", x.table}, {"endpoint", endpoint}, many};

		REQUIRE(mm_store_open("dynamodb", &x.loop, kv, 3, 0, &b) == 0);
	}
	faults("{\"op\":\"BatchGetItem\",\"action\":\"unprocessed\",\"keep\":3,\"rate\":0.5},"
	       "{\"op\":\"UpdateItem\",\"action\":\"drop_response\",\"count\":10}");
	for (int round = 0; round < 2; round++) {
		done_t da = {0}, db = {0};

		for (int w = 0; w < 2; w++) {
			flush_init(&fl[w]);
			for (int i = 0; i < N; i++) {
				snprintf(ent[i], sizeof(ent[i]), "s%d", i);
				keys[i] = (mm_key_t){ent[i], strlen(ent[i]), 0};
				mset.vt->init(&mset, s[round][w][i]);
				snprintf(member, sizeof(member), "r%dw%d", round, w);
				add_str(&mset, s[round][w][i], member, 0);
				add_delta(&fl[w], &ns, ent[i], 0, 0, s[round][w][i]);
			}
		}
		/* Both writers at once on the same 300 keys. */
		REQUIRE(mm_store_apply(x.st, &fl[0].f, on_done, &da) == 0);
		REQUIRE(mm_store_apply(b, &fl[1].f, on_done, &db) == 0);
		CHECK(wait_done(&x, &da) == 0);
		CHECK(wait_done(&x, &db) == 0);
		if (da.status || db.status)
			printf("#   %s / %s\n", da.detail, db.detail);
	}
	faults("");
	REQUIRE(get_many(&x, &ns, keys, N, got, found) == 0);
	for (int i = 0; i < N; i++) {
		json_of(&mset, got[i], js, sizeof(js));
		bad += !found[i] || !strstr(js, "\"r0w0\"") || !strstr(js, "\"r0w1\"") ||
		       !strstr(js, "\"r1w0\"") || !strstr(js, "\"r1w1\"");
		mset.vt->destroy(&mset, got[i]);
	}
	CHECK_EQ_INT(bad, 0);
	REQUIRE(mm_ddb_get_stats(x.st, &stats) == 0);
	/*
	 * 300 deltas in chunks of 10: about 30 batched reads per round, not 300
	 * GetItems. A key is read alone only when the batch left it unprocessed,
	 * when it lost the race to the other writer, or after one of the 10
	 * dropped answers; how often the writers race depends on the machine's
	 * load, so the bound counts those causes instead of a fixed number.
	 */
	CHECK(stats.requests[MM_DDB_OP_BATCH_GET_ITEM] >= 60);
	CHECK(stats.requests[MM_DDB_OP_GET_ITEM] <= stats.cas_conflicts + stats.unprocessed_keys + 10);
	printf("#   batched: %llu BatchGetItem, %llu GetItem, %llu UpdateItem, %llu conflicts, "
	       "%llu unprocessed, %llu replays\n",
	       (unsigned long long)stats.requests[MM_DDB_OP_BATCH_GET_ITEM],
	       (unsigned long long)stats.requests[MM_DDB_OP_GET_ITEM],
	       (unsigned long long)stats.requests[MM_DDB_OP_UPDATE_ITEM],
	       (unsigned long long)stats.cas_conflicts, (unsigned long long)stats.unprocessed_keys,
	       (unsigned long long)stats.replays_skipped);
	for (int r = 0; r < 2; r++)
		for (int w = 0; w < 2; w++)
			for (int i = 0; i < N; i++)
				mset.vt->destroy(&mset, s[r][w][i]);
	mm_store_close(b);
	CHECK(fx_close(&x) == 0);
}

TEST(throttling_and_5xx_are_retried)
{
	mm_monoid_t msum = monoid("sum", (mm_monoid_params_t){0});
	mm_monoid_t mset = monoid("set", (mm_monoid_params_t){.max_size = 100});
	mm_ns_t nsum = {"thr", &msum}, nset = {"thrset", &mset};
	mm_kv_t many = {"max_attempts", "30"};
	_Alignas(16) unsigned char s[200][MM_STATE_MAX], got[200][MM_STATE_MAX];
	static flush_t fl;
	static char ent[200][16];
	mm_key_t keys[200];
	mm_ddb_stats_t stats;
	fx_t x;
	uint8_t found[200];
	char js[2048];
	int bad = 0;

	REQUIRE(fx_open(&x, &many, 1) == 0);
	faults("{\"op\":\"*\",\"action\":\"throttle\",\"rate\":0.15},"
	       "{\"op\":\"*\",\"action\":\"throttling\",\"rate\":0.05},"
	       "{\"op\":\"*\",\"action\":\"error500\",\"rate\":0.1},"
	       "{\"op\":\"*\",\"action\":\"error503\",\"rate\":0.1}");
	flush_init(&fl);
	for (int i = 0; i < 190; i++) {
		snprintf(ent[i], sizeof(ent[i]), "t%d", i);
		msum.vt->init(&msum, s[i]);
		add_int(&msum, s[i], 1000 + i);
		add_delta(&fl, &nsum, ent[i], 0, 0, s[i]);
		keys[i] = (mm_key_t){ent[i], strlen(ent[i]), 0};
	}
	CHECK(apply(&x, &fl.f) == 0);
	/* Read-merge-write under the same faults: ten flushes of one member. */
	for (int i = 190; i < 200; i++) {
		char member[16];

		snprintf(member, sizeof(member), "x%d", i - 190);
		mset.vt->init(&mset, s[i]);
		add_str(&mset, s[i], member, 0);
		flush_init(&fl);
		add_delta(&fl, &nset, "shared", 0, 0, s[i]);
		CHECK(apply(&x, &fl.f) == 0);
	}
	REQUIRE(get_many(&x, &nsum, keys, 190, got, found) == 0);
	for (int i = 0; i < 190; i++) {
		json_of(&msum, got[i], js, sizeof(js));
		bad += !found[i] || atoi(js + 9) != 1000 + i;
	}
	CHECK_EQ_INT(bad, 0);
	{
		mm_key_t key = {"shared", 6, 0};

		REQUIRE(get_many(&x, &nset, &key, 1, got[0], found) == 0);
		json_of(&mset, got[0], js, sizeof(js));
		for (int i = 0; i < 10; i++) {
			char member[16];

			snprintf(member, sizeof(member), "\"x%d\"", i);
			CHECK(strstr(js, member) != NULL);
		}
		mset.vt->destroy(&mset, got[0]);
	}
	REQUIRE(mm_ddb_get_stats(x.st, &stats) == 0);
	CHECK(stats.throttled > 0 && stats.server_errors > 0 && stats.retries > 0);
	faults("");
	for (int i = 190; i < 200; i++)
		mset.vt->destroy(&mset, s[i]);
	CHECK(fx_close(&x) == 0);
}

TEST(get_many_chunks_duplicates_and_unprocessed_keys)
{
	mm_monoid_t msum = monoid("sum", (mm_monoid_params_t){0});
	mm_ns_t ns = {"gm", &msum};
	_Alignas(16) static unsigned char s[200][MM_STATE_MAX], got[250][MM_STATE_MAX];
	static flush_t fl;
	static char ent[250][16];
	mm_key_t keys[250];
	int expect[250];
	uint8_t found[250];
	mm_ddb_stats_t stats;
	char js[64];
	fx_t x;
	int bad = 0;

	REQUIRE(fx_open(&x, NULL, 0) == 0);
	faults("");
	flush_init(&fl);
	for (int i = 0; i < 200; i++) {
		snprintf(ent[i], sizeof(ent[i]), "g%d", i);
		msum.vt->init(&msum, s[i]);
		add_int(&msum, s[i], i + 1);
		/* Key 7 expired a minute ago: stored, but absent for readers. */
		add_delta(&fl, &ns, ent[i], 30000, i == 7 ? mm_now_ms() - 60000 : mm_now_ms() + 3600000, s[i]);
	}
	REQUIRE(apply(&x, &fl.f) == 0);
	/* 250 keys, shuffled: 200 stored, 40 missing, 10 duplicates. */
	for (int i = 0; i < 250; i++) {
		int src = i < 200 ? (i * 37) % 200 : i < 240 ? -1 : (i * 13) % 200;

		if (src < 0) {
			snprintf(ent[i], sizeof(ent[i]), "none%d", i);
			keys[i] = (mm_key_t){ent[i], strlen(ent[i]), 30000};
			expect[i] = 0;
		} else {
			keys[i] = (mm_key_t){ent[src], strlen(ent[src]), 30000};
			expect[i] = src == 7 ? 0 : src + 1;
		}
	}
	faults("{\"op\":\"BatchGetItem\",\"action\":\"unprocessed\",\"keep\":30}");
	REQUIRE(get_many(&x, &ns, keys, 250, got, found) == 0);
	for (int i = 0; i < 250; i++) {
		json_of(&msum, got[i], js, sizeof(js));
		bad += found[i] != (expect[i] != 0) || (expect[i] && atoi(js + 9) != expect[i]);
	}
	CHECK_EQ_INT(bad, 0);
	REQUIRE(mm_ddb_get_stats(x.st, &stats) == 0);
	CHECK(stats.unprocessed_keys > 0);
	CHECK(stats.requests[MM_DDB_OP_BATCH_GET_ITEM] >= 7); /* 3 chunks of <= 100, each cut to 30 */
	faults("");
	CHECK(fx_close(&x) == 0);
}

TEST(entities_that_are_not_utf8)
{
	mm_monoid_t msum = monoid("sum", (mm_monoid_params_t){0});
	mm_ns_t ns = {"bin", &msum};
	_Alignas(16) unsigned char s[3][MM_STATE_MAX], got[3][MM_STATE_MAX];
	static flush_t fl;
	const char *ents[3] = {"\xff\xfe", "\xfe\xff", "ok"};
	mm_key_t keys[3];
	uint8_t found[3];
	char js[64];
	fx_t x;

	REQUIRE(fx_open(&x, NULL, 0) == 0);
	faults("");
	flush_init(&fl);
	for (int i = 0; i < 3; i++) {
		msum.vt->init(&msum, s[i]);
		add_int(&msum, s[i], 10 * (i + 1));
		add_delta(&fl, &ns, ents[i], 0, 0, s[i]);
		keys[i] = (mm_key_t){ents[i], 2, 0};
	}
	REQUIRE(apply(&x, &fl.f) == 0);
	REQUIRE(get_many(&x, &ns, keys, 3, got, found) == 0);
	for (int i = 0; i < 3; i++) {
		json_of(&msum, got[i], js, sizeof(js));
		CHECK(found[i] && atoi(js + 9) == 10 * (i + 1));
	}
	CHECK(fx_close(&x) == 0);
}

TEST(metadata_and_positions)
{
	mm_monoid_t msum = monoid("sum", (mm_monoid_params_t){0});
	mm_ns_t ns = {"posns", &msum};
	_Alignas(16) unsigned char s[MM_STATE_MAX];
	static flush_t fl;
	mm_position_t pos = {"file:/tmp/x.jsonl", (const uint8_t *)"\x01\x02\x00\x03", 4};
	mm_buf_t b = {0};
	fx_t x;

	REQUIRE(fx_open(&x, NULL, 0) == 0);
	faults("");
	CHECK(mm_store_get_meta_wait(x.st, "zeta", &b) == MM_ENOTFOUND);
	CHECK(mm_store_put_meta_wait(x.st, "zeta", (const uint8_t *)"z-meta", 6) == 0);
	CHECK(mm_store_put_meta_wait(x.st, "alpha", (const uint8_t *)"a\nmeta", 6) == 0);
	CHECK(mm_store_put_meta_wait(x.st, "alpha", (const uint8_t *)"a\nmeta2", 7) == 0);
	b.len = 0;
	CHECK(mm_store_get_meta_wait(x.st, "alpha", &b) == 0);
	CHECK(b.len == 7 && memcmp(b.p, "a\nmeta2", 7) == 0);
	b.len = 0;
	CHECK(mm_store_list_meta_wait(x.st, &b) == 0);
	CHECK(b.len == 11 && memcmp(b.p, "alpha\0zeta\0", 11) == 0);
	b.len = 0;
	CHECK(mm_store_get_position_wait(x.st, pos.source, &b) == MM_ENOTFOUND);
	flush_init(&fl);
	msum.vt->init(&msum, s);
	add_int(&msum, s, 1);
	add_delta(&fl, &ns, "k", 0, 0, s);
	fl.f.positions = &pos;
	fl.f.npositions = 1;
	CHECK(apply(&x, &fl.f) == 0);
	b.len = 0;
	CHECK(mm_store_get_position_wait(x.st, pos.source, &b) == 0);
	CHECK(b.len == 4 && memcmp(b.p, pos.pos, 4) == 0);
	mm_buf_free(&b);
	CHECK(fx_close(&x) == 0);
}

/* Points the position item of source to the intent named tag, as a writer
 * does before its deltas. */
static int set_pend(const fx_t *x, const char *source, const char *tag)
{
	mm_buf_t doc = {0}, out = {0};
	int rc;

	mm_buf_printf(&doc, "{\"TableName\":\"%s\",\"Key\":{\"pk\":{\"S\":\"#pos#%s\"},\"sk\":{\"N\":\"-3\"}},"
			    "\"UpdateExpression\":\"SET pend = :p\",\"ExpressionAttributeValues\":"
			    "{\":p\":{\"S\":\"%s\"}}}%c",
		      x->table, source, tag, 0);
	rc = raw("UpdateItem", (const char *)doc.p, &out);
	mm_buf_free(&doc);
	mm_buf_free(&out);
	return rc;
}

/* The pointer to the one intent of x's table, from a scan: "<name>#1#a",
 * one chunk, armed. */
static int intent_tag(const fx_t *x, char *tag, size_t size)
{
	mm_buf_t doc = {0}, out = {0};
	const char *name, *end;
	int rc;

	mm_buf_printf(&doc, "{\"TableName\":\"%s\"}%c", x->table, 0);
	rc = raw("Scan", (const char *)doc.p, &out);
	name = rc ? NULL : strstr((const char *)out.p, "#intent#");
	end = name ? strchr(name + 8, '"') : NULL;
	if (end == NULL || end - name - 8 >= 60)
		rc = -1;
	else
		snprintf(tag, size, "%.*s#1#a", (int)(end - name - 8), name + 8);
	mm_buf_free(&doc);
	mm_buf_free(&out);
	return rc;
}

/*
 * Flush intents: a position that points to an intent is rolled forward
 * before it is read. The delta whose item was lost is applied again with
 * the writer's token; the delta still carrying it is skipped (not doubled).
 * The roll-forward runs on the store's own slots (its requests and the
 * skipped replay are in this store's counters), and when its requests fail
 * the position read fails and a later read finishes it. A corrupt intent
 * fails the read with ECORRUPT; a vanished one is dropped with an error and
 * the stored position is answered.
 */
TEST(flush_intents_roll_forward)
{
	mm_monoid_t msum = monoid("sum", (mm_monoid_params_t){0});
	mm_ns_t ns = {"rf", &msum};
	_Alignas(16) unsigned char s[2][MM_STATE_MAX];
	static flush_t fl;
	mm_position_t pos = {"file:/tmp/rf.jsonl#c", (const uint8_t *)"P1", 2};
	mm_buf_t b = {0}, doc = {0}, out = {0};
	char tag[96], js[64];
	uint8_t found[2];
	mm_key_t keys[2] = {{"a", 1, 0}, {"b", 1, 0}};
	mm_kv_t few = {"max_attempts", "2"};
	mm_ddb_stats_t before, after;
	fx_t x;

	REQUIRE(fx_open(&x, &few, 1) == 0);
	faults("");
	flush_init(&fl);
	for (int i = 0; i < 2; i++) {
		msum.vt->init(&msum, s[i]);
		add_int(&msum, s[i], 5 + i);
	}
	add_delta(&fl, &ns, "a", 0, 0, s[0]);
	add_delta(&fl, &ns, "b", 0, 0, s[1]);
	fl.f.positions = &pos;
	fl.f.npositions = 1;
	REQUIRE(apply(&x, &fl.f) == 0);
	REQUIRE(intent_tag(&x, tag, sizeof(tag)) == 0);
	/* As if the worker died after its first delta: item b is gone, and the
	 * position still points to the intent. */
	doc.len = 0;
	mm_buf_printf(&doc, "{\"TableName\":\"%s\",\"Key\":{\"pk\":{\"S\":\"rf#b\"},\"sk\":{\"N\":\"0\"}}}%c",
		      x.table, 0);
	REQUIRE(raw("DeleteItem", (const char *)doc.p, &out) == 0);
	doc.len = 0;
	mm_buf_printf(&doc, "{\"TableName\":\"%s\",\"Key\":{\"pk\":{\"S\":\"#pos#%s\"},\"sk\":{\"N\":\"-3\"}},"
			    "\"UpdateExpression\":\"SET pend = :p, v = :v\",\"ExpressionAttributeValues\":"
			    "{\":p\":{\"S\":\"%s\"},\":v\":{\"B\":\"UDA=\"}}}%c",
		      x.table, pos.source, tag, 0);
	REQUIRE(raw("UpdateItem", (const char *)doc.p, &out) == 0);
	/* The intent cannot be read: the position read fails, to be retried. */
	faults("{\"op\":\"GetItem\",\"action\":\"error500\",\"match\":\"#intent#\"}");
	CHECK(mm_store_get_position_wait(x.st, pos.source, &b) == MM_ESTORE);
	faults("");
	REQUIRE(mm_ddb_get_stats(x.st, &before) == 0);
	b.len = 0;
	CHECK(mm_store_get_position_wait(x.st, pos.source, &b) == 0);
	CHECK(b.len == 2 && memcmp(b.p, "P1", 2) == 0);
	REQUIRE(mm_ddb_get_stats(x.st, &after) == 0);
	CHECK(after.rolled_forward == before.rolled_forward + 1);
	CHECK(after.replays_skipped == before.replays_skipped + 1);
	/* The position read twice and the intent's chunk; the cancel that found
	 * the intent armed, both deltas (one skipped by its token) and the
	 * position, all through this store. */
	CHECK(after.requests[MM_DDB_OP_GET_ITEM] - before.requests[MM_DDB_OP_GET_ITEM] == 3);
	CHECK(after.requests[MM_DDB_OP_UPDATE_ITEM] - before.requests[MM_DDB_OP_UPDATE_ITEM] >= 4);
	CHECK(after.requests[MM_DDB_OP_PUT_ITEM] - before.requests[MM_DDB_OP_PUT_ITEM] == 0);
	CHECK(get_many(&x, &ns, keys, 2, s, found) == 0);
	CHECK(found[0] && found[1]);
	json_of(&msum, s[0], js, sizeof(js));
	CHECK(strcmp(js, "{\"value\":5}") == 0);
	json_of(&msum, s[1], js, sizeof(js));
	CHECK(strcmp(js, "{\"value\":6}") == 0);
	/* The same intent unarmed (its writer had not set every pointer yet):
	 * the reader cancels it and applies nothing; the writer's arming would
	 * now fail. */
	doc.len = 0;
	mm_buf_printf(&doc, "{\"TableName\":\"%s\",\"Key\":{\"pk\":{\"S\":\"#intent#%.*s\"},\"sk\":{\"N\":\"0\"}},"
			    "\"UpdateExpression\":\"REMOVE arm\"}%c",
		      x.table, (int)(strstr(tag, "#1#a") - tag), tag, 0);
	REQUIRE(raw("UpdateItem", (const char *)doc.p, &out) == 0);
	doc.len = 0;
	mm_buf_printf(&doc, "{\"TableName\":\"%s\",\"Key\":{\"pk\":{\"S\":\"rf#b\"},\"sk\":{\"N\":\"0\"}}}%c",
		      x.table, 0);
	REQUIRE(raw("DeleteItem", (const char *)doc.p, &out) == 0);
	REQUIRE(set_pend(&x, pos.source, tag) == 0);
	b.len = 0;
	CHECK(mm_store_get_position_wait(x.st, pos.source, &b) == 0);
	CHECK(b.len == 2 && memcmp(b.p, "P1", 2) == 0);
	CHECK(get_many(&x, &ns, keys, 2, s, found) == 0);
	CHECK(found[0] && !found[1]);
	doc.len = 0;
	mm_buf_printf(&doc, "{\"TableName\":\"%s\",\"Key\":{\"pk\":{\"S\":\"#intent#%.*s\"},\"sk\":{\"N\":\"0\"}}}%c",
		      x.table, (int)(strstr(tag, "#1#a") - tag), tag, 0);
	REQUIRE(raw("GetItem", (const char *)doc.p, &out) == 0);
	CHECK(strstr((const char *)out.p, "\"cx\"") != NULL);
	/* A corrupt intent (armed). */
	snprintf(tag, sizeof(tag), "00000000000000ab#%lld#1#a", (long long)mm_now_ms());
	doc.len = 0;
	mm_buf_printf(&doc, "{\"TableName\":\"%s\",\"Item\":{\"pk\":{\"S\":\"#intent#00000000000000ab#%.*s\"},"
			    "\"sk\":{\"N\":\"0\"},\"arm\":{\"N\":\"1\"},\"d\":{\"B\":\"Z2FyYmFnZQ==\"}}}%c",
		      x.table, (int)(strstr(tag, "#1#a") - strchr(tag, '#') - 1), strchr(tag, '#') + 1, 0);
	REQUIRE(raw("PutItem", (const char *)doc.p, &out) == 0);
	REQUIRE(set_pend(&x, pos.source, tag) == 0);
	b.len = 0;
	CHECK(mm_store_get_position_wait(x.st, pos.source, &b) == MM_ECORRUPT);
	/* A vanished one: dropped, the stored position answers. */
	snprintf(tag, sizeof(tag), "00000000000000cd#%lld#1", (long long)mm_now_ms());
	REQUIRE(set_pend(&x, pos.source, tag) == 0);
	b.len = 0;
	CHECK(mm_store_get_position_wait(x.st, pos.source, &b) == 0);
	CHECK(b.len == 2 && memcmp(b.p, "P1", 2) == 0);
	mm_buf_free(&b);
	mm_buf_free(&doc);
	mm_buf_free(&out);
	CHECK(fx_close(&x) == 0);
}

/*
 * A store closed while a roll-forward's intent is being decoded on the
 * thread pool (slowed down by MURMUR_ERRINJ_DDB_RF_DECODE_SLOW_MS): the
 * close waits for the decode, which frees the roll-forward its read job
 * left behind, and the loop closes cleanly (no leak or use after free under
 * the sanitizers). The read's callback is not called.
 */
TEST(store_closed_during_intent_decode)
{
	mm_monoid_t msum = monoid("sum", (mm_monoid_params_t){0});
	mm_ns_t ns = {"rfc", &msum};
	_Alignas(16) unsigned char st[MM_STATE_MAX];
	static flush_t fl;
	mm_position_t pos = {"file:/tmp/rfc.jsonl#c", (const uint8_t *)"P1", 2};
	mm_buf_t b = {0};
	done_t d = {0};
	char tag[96];
	fx_t x;

	REQUIRE(fx_open(&x, NULL, 0) == 0);
	faults("");
	flush_init(&fl);
	msum.vt->init(&msum, st);
	add_int(&msum, st, 3);
	add_delta(&fl, &ns, "a", 0, 0, st);
	fl.f.positions = &pos;
	fl.f.npositions = 1;
	REQUIRE(apply(&x, &fl.f) == 0);
	REQUIRE(intent_tag(&x, tag, sizeof(tag)) == 0);
	REQUIRE(set_pend(&x, pos.source, tag) == 0);
	setenv("MURMUR_ERRINJ_DDB_RF_DECODE_SLOW_MS", "300", 1);
	/* The backend's own call: the store layer's wrapper assumes nothing in
	 * flight at close (store.h), but ddb_close frees what is. */
	REQUIRE(x.st->vt->get_position(x.st, pos.source, &b, on_done, &d) == 0);
	while (((mm_ddb_t *)x.st)->encoding == 0 && d.calls == 0)
		uv_run(&x.loop, UV_RUN_ONCE);
	CHECK(((mm_ddb_t *)x.st)->encoding == 1);
	CHECK(fx_close(&x) == 0);
	CHECK(d.calls == 0);
	unsetenv("MURMUR_ERRINJ_DDB_RF_DECODE_SLOW_MS");
	mm_buf_free(&b);
}

/* A reader that owns the position from now on reads it (a Kafka partition
 * at its assignment). */
static int take(fx_t *x, const char *source, mm_buf_t *out)
{
	done_t d = {0};
	int rc = mm_store_take_position(x->st, source, out, on_done, &d);

	return rc ? rc : wait_done(x, &d);
}

/* fl: one delta s of the entity "k" and the position pos, moved to at. */
static void one_delta(flush_t *fl, const mm_ns_t *ns, void *s, mm_position_t *pos, const char *at)
{
	flush_init(fl);
	add_delta(fl, ns, "k", 0, 0, s);
	pos->pos = (const uint8_t *)at;
	pos->len = strlen(at);
	fl->f.positions = pos;
	fl->f.npositions = 1;
}

/*
 * The zombie fence: a reader takes a position when it reads it, so a
 * writer that read it before (and lost it without knowing) has its next
 * flush refused with EFENCED at its pointer, before any delta, or at the
 * position itself when the flush moves positions alone; the new owner's
 * flushes go through.
 */
TEST(zombie_fence)
{
	mm_monoid_t msum = monoid("sum", (mm_monoid_params_t){0});
	mm_ns_t ns = {"zf", &msum};
	_Alignas(16) unsigned char s[MM_STATE_MAX], got[MM_STATE_MAX];
	static flush_t fl;
	mm_position_t pos = {"kafka:g/t#t/0", (const uint8_t *)"P1", 2};
	mm_key_t key = {"k", 1, 0};
	mm_buf_t b = {0};
	uint8_t found;
	char js[64];
	done_t d = {0};
	fx_t x, y;

	REQUIRE(fx_open(&x, NULL, 0) == 0);
	faults("");
	memset(&y, 0, sizeof(y));
	uv_loop_init(&y.loop);
	REQUIRE(fx_open_opts(&y, x.table, NULL, 0) == 0);
	CHECK(take(&x, pos.source, &b) == MM_ENOTFOUND);
	msum.vt->init(&msum, s);
	add_int(&msum, s, 1);
	one_delta(&fl, &ns, s, &pos, "P1");
	CHECK(apply(&x, &fl.f) == 0);
	/* y takes the position over. */
	b.len = 0;
	CHECK(take(&y, pos.source, &b) == 0);
	CHECK(b.len == 2 && memcmp(b.p, "P1", 2) == 0);
	/* x's next flush is fenced, and writes nothing. */
	one_delta(&fl, &ns, s, &pos, "P2");
	REQUIRE(mm_store_apply(x.st, &fl.f, on_done, &d) == 0);
	CHECK(wait_done(&x, &d) == MM_EFENCED);
	CHECK(strstr(d.detail, "fenced") != NULL);
	CHECK(get_many(&x, &ns, &key, 1, got, &found) == 0);
	json_of(&msum, got, js, sizeof(js));
	CHECK(found && strcmp(js, "{\"value\":1}") == 0);
	/* So is a flush that moves the position alone (no deltas, no intent):
	 * it stops the zombie too, and leaves y's position as it is. */
	flush_init(&fl);
	pos.pos = (const uint8_t *)"P2";
	fl.f.positions = &pos;
	fl.f.npositions = 1;
	d = (done_t){0};
	REQUIRE(mm_store_apply(x.st, &fl.f, on_done, &d) == 0);
	CHECK(wait_done(&x, &d) == MM_EFENCED);
	CHECK(strstr(d.detail, "fenced") != NULL);
	b.len = 0;
	CHECK(mm_store_get_position_wait(y.st, pos.source, &b) == 0);
	CHECK(b.len == 2 && memcmp(b.p, "P1", 2) == 0);
	/* y's flush goes through. */
	one_delta(&fl, &ns, s, &pos, "P3");
	CHECK(apply(&y, &fl.f) == 0);
	b.len = 0;
	CHECK(take(&y, pos.source, &b) == 0);
	CHECK(b.len == 2 && memcmp(b.p, "P3", 2) == 0);
	CHECK(get_many(&y, &ns, &key, 1, got, &found) == 0);
	json_of(&msum, got, js, sizeof(js));
	CHECK(found && strcmp(js, "{\"value\":2}") == 0);
	mm_buf_free(&b);
	CHECK(fx_close(&y) == 0);
	CHECK(fx_close(&x) == 0);
}

/* Replay tokens of writers older than token_ttl are removed by later writes. */
TEST(stale_tokens_are_pruned)
{
	mm_monoid_t msum = monoid("sum", (mm_monoid_params_t){0});
	mm_monoid_t mset = monoid("set", (mm_monoid_params_t){.max_size = 10});
	mm_ns_t nsum = {"pr", &msum}, nset = {"prs", &mset};
	_Alignas(16) unsigned char s[2][MM_STATE_MAX];
	static flush_t fl;
	mm_buf_t enc = {0}, out = {0}, doc = {0};
	fx_t x;

	REQUIRE(fx_open(&x, NULL, 0) == 0);
	faults("");
	mset.vt->init(&mset, s[1]);
	add_str(&mset, s[1], "old", 0);
	mset.vt->encode(&mset, s[1], &enc);
	mm_buf_printf(&doc, "{\"TableName\":\"%s\",\"Item\":{\"pk\":{\"S\":\"pr#k\"},\"sk\":{\"N\":\"0\"},"
			    "\"v\":{\"N\":\"5\"},\"w_00000000000000aa\":{\"N\":\"1000\"},"
			    "\"w_00000000000000bb\":{\"N\":\"%lld\"}}}%c",
		      x.table, (long long)mm_now_ms(), 0);
	REQUIRE(raw("PutItem", (const char *)doc.p, &out) == 0);
	doc.len = 0;
	mm_buf_printf(&doc, "{\"TableName\":\"%s\",\"Item\":{\"pk\":{\"S\":\"prs#k\"},\"sk\":{\"N\":\"0\"},"
			    "\"v\":{\"B\":\"",
		      x.table);
	mm_base64_encode(enc.p, enc.len, &doc);
	mm_buf_printf(&doc, "\"},\"ver\":{\"N\":\"4\"},\"w_00000000000000aa\":{\"N\":\"1000\"}}}%c", 0);
	REQUIRE(raw("PutItem", (const char *)doc.p, &out) == 0);
	mset.vt->destroy(&mset, s[1]);
	flush_init(&fl);
	msum.vt->init(&msum, s[0]);
	add_int(&msum, s[0], 2);
	add_delta(&fl, &nsum, "k", 0, 0, s[0]);
	mset.vt->init(&mset, s[1]);
	add_str(&mset, s[1], "new", 0);
	add_delta(&fl, &nset, "k", 0, 0, s[1]);
	REQUIRE(apply(&x, &fl.f) == 0);
	doc.len = 0;
	mm_buf_printf(&doc, "{\"TableName\":\"%s\",\"Key\":{\"pk\":{\"S\":\"pr#k\"},\"sk\":{\"N\":\"0\"}},"
			    "\"ConsistentRead\":true}%c", x.table, 0);
	REQUIRE(raw("GetItem", (const char *)doc.p, &out) == 0);
	CHECK(strstr((char *)out.p, "\"v\":{\"N\":\"7\"}") != NULL);
	CHECK(strstr((char *)out.p, "w_00000000000000aa") == NULL);  /* stale: removed */
	CHECK(strstr((char *)out.p, "w_00000000000000bb") != NULL);  /* recent: kept */
	doc.len = 0;
	mm_buf_printf(&doc, "{\"TableName\":\"%s\",\"Key\":{\"pk\":{\"S\":\"prs#k\"},\"sk\":{\"N\":\"0\"}},"
			    "\"ConsistentRead\":true}%c", x.table, 0);
	REQUIRE(raw("GetItem", (const char *)doc.p, &out) == 0);
	CHECK(strstr((char *)out.p, "w_00000000000000aa") == NULL);
	CHECK(strstr((char *)out.p, "\"ver\":{\"N\":\"5\"}") != NULL);
	mset.vt->destroy(&mset, s[1]);
	mm_buf_free(&enc);
	mm_buf_free(&out);
	mm_buf_free(&doc);
	CHECK(fx_close(&x) == 0);
}

static int claim_call(fx_t *x, mm_store_t *st, int op, const mm_ns_t *ns, const char *id,
		      int64_t lease_ms)
{
	mm_claim_t c = {.id = id, .len = strlen(id)};
	done_t d = {0};
	int rc;

	switch (op) {
	case 0:
		rc = mm_ddb_claim(st, ns, &c, 1, lease_ms, 3600000, on_done, &d);
		break;
	case 1:
		rc = mm_ddb_confirm(st, ns, &c, 1, 3600000, on_done, &d);
		break;
	case 2:
		rc = mm_ddb_release(st, ns, &c, 1, on_done, &d);
		break;
	default:
		rc = mm_ddb_renew(st, ns, &c, 1, lease_ms, on_done, &d);
		break;
	}
	if (rc == 0)
		rc = wait_done(x, &d);
	return rc ? rc : c.result;
}

TEST(claim_protocol)
{
	mm_monoid_t mcnt = monoid("count", (mm_monoid_params_t){0});
	mm_ns_t ns = {"dd", &mcnt};
	mm_kv_t oa = {"owner", "A"}, ob = {"owner", "B"};
	mm_store_t *b = NULL;
	mm_claim_t many[16];
	_Alignas(16) unsigned char s[MM_STATE_MAX];
	static flush_t fl;
	done_t d = {0};
	fx_t x;
	int won = 0;

	REQUIRE(fx_open(&x, &oa, 1) == 0);
	faults("");
	{
		/* A second worker on the same table and loop. */
		mm_kv_t kv[3] = {{"table", x.table}, {"endpoint", endpoint}, ob};

		REQUIRE(mm_store_open("dynamodb", &x.loop, kv, 3, 0, &b) == 0);
	}
	CHECK(strcmp(mm_ddb_owner(x.st), "A") == 0 && strcmp(mm_ddb_owner(b), "B") == 0);
	CHECK_EQ_INT(claim_call(&x, x.st, 0, &ns, "e1", 60000), MM_CLAIM_WON);
	CHECK_EQ_INT(claim_call(&x, x.st, 0, &ns, "e1", 60000), MM_CLAIM_WON); /* idempotent */
	CHECK_EQ_INT(claim_call(&x, b, 0, &ns, "e1", 60000), MM_CLAIM_BUSY);
	CHECK_EQ_INT(claim_call(&x, b, 1, &ns, "e1", 0), MM_CLAIM_NOT_OWNER);
	CHECK_EQ_INT(claim_call(&x, x.st, 3, &ns, "e1", 120000), MM_CLAIM_RENEWED);
	CHECK_EQ_INT(claim_call(&x, x.st, 1, &ns, "e1", 0), MM_CLAIM_CONFIRMED);
	CHECK_EQ_INT(claim_call(&x, b, 0, &ns, "e1", 60000), MM_CLAIM_DUPLICATE);
	CHECK_EQ_INT(claim_call(&x, x.st, 0, &ns, "e1", 60000), MM_CLAIM_DUPLICATE);
	CHECK_EQ_INT(claim_call(&x, x.st, 2, &ns, "e1", 0), MM_CLAIM_NOT_OWNER); /* confirmed */
	/* The merge failed: A releases, and B may count the record. */
	CHECK_EQ_INT(claim_call(&x, x.st, 0, &ns, "e2", 60000), MM_CLAIM_WON);
	CHECK_EQ_INT(claim_call(&x, x.st, 2, &ns, "e2", 0), MM_CLAIM_RELEASED);
	CHECK_EQ_INT(claim_call(&x, b, 0, &ns, "e2", 60000), MM_CLAIM_WON);
	/* A dies holding e3: after its lease B takes it over; A's renew fails. */
	CHECK_EQ_INT(claim_call(&x, x.st, 0, &ns, "e3", 1), MM_CLAIM_WON);
	usleep(20000);
	CHECK_EQ_INT(claim_call(&x, b, 0, &ns, "e3", 60000), MM_CLAIM_STOLEN);
	CHECK_EQ_INT(claim_call(&x, x.st, 3, &ns, "e3", 60000), MM_CLAIM_NOT_OWNER);
	CHECK_EQ_INT(claim_call(&x, x.st, 1, &ns, "e3", 0), MM_CLAIM_NOT_OWNER);
	/* A flush's marks confirm (or create) the ids after its deltas. */
	CHECK_EQ_INT(claim_call(&x, x.st, 0, &ns, "e4", 60000), MM_CLAIM_WON);
	flush_init(&fl);
	mcnt.vt->init(&mcnt, s);
	mcnt.vt->add(&mcnt, s, &(mm_value_t){0});
	add_delta(&fl, &ns, "cnt", 0, 0, s);
	fl.mk[0] = (mm_mark_t){&ns, "e4", 2, mm_now_ms() + 3600000, 0, {0, 0}};
	fl.mk[1] = (mm_mark_t){&ns, "e5", 2, mm_now_ms() + 3600000, 0, {0, 0}};
	fl.f.nmarks = 2;
	CHECK(apply(&x, &fl.f) == 0);
	CHECK(fl.md[0] == 1 && fl.md[1] == 1);
	CHECK_EQ_INT(claim_call(&x, b, 0, &ns, "e4", 60000), MM_CLAIM_DUPLICATE);
	CHECK_EQ_INT(claim_call(&x, b, 0, &ns, "e5", 60000), MM_CLAIM_DUPLICATE);
	/* A batch: 16 ids at once, one of them taken. */
	for (int i = 0; i < 16; i++)
		many[i] = (mm_claim_t){.id = i == 5 ? "e1" : "batch", .len = i == 5 ? 2 : 5};
	many[3].id = "other";
	many[3].len = 5;
	REQUIRE(mm_ddb_claim(b, &ns, many, 16, 60000, 3600000, on_done, &d) == 0);
	CHECK(wait_done(&x, &d) == 0);
	for (int i = 0; i < 16; i++)
		won += many[i].result == MM_CLAIM_WON;
	CHECK_EQ_INT(won, 15); /* the same owner re-claiming "batch" wins each time */
	CHECK_EQ_INT(many[5].result, MM_CLAIM_DUPLICATE);
	mm_store_close(b);
	CHECK(fx_close(&x) == 0);
}

/* The store's renew (what a claim round calls) renews the owner's lease
 * item: one request for every claim. A claim whose own lease ran out stays
 * busy while its owner renews, and is taken over only once the owner
 * stopped; the owner then finds its lease lapsed and each claim it lost. */
static int renew_call(fx_t *x, mm_store_t *st, const mm_ns_t *ns, mm_claim_t *c)
{
	done_t d = {0};
	int rc = mm_store_renew(st, ns, c, 1, on_done, &d);

	if (rc == 0)
		rc = wait_done(x, &d);
	return rc ? rc : c->result;
}

TEST(owner_lease)
{
	mm_monoid_t mcnt = monoid("count", (mm_monoid_params_t){0});
	mm_ns_t ns = {"ol", &mcnt};
	/* A 2 s lease: a loaded machine's dynalite can take over 300 ms for the
	 * few requests between a renewal and the other owner's claim. */
	mm_kv_t oa[2] = {{"owner", "A"}, {"lease", "2s"}};
	mm_store_t *b = NULL;
	mm_claim_t c1 = {.id = "e1", .len = 2}, c2 = {.id = "e2", .len = 2};
	mm_ddb_stats_t stats;
	done_t d = {0};
	fx_t x;

	REQUIRE(fx_open(&x, oa, 2) == 0);
	faults("");
	{
		mm_kv_t kv[3] = {{"table", x.table}, {"endpoint", endpoint}, {"owner", "B"}};

		REQUIRE(mm_store_open("dynamodb", &x.loop, kv, 3, 0, &b) == 0);
	}
	/* A claim whose own lease is long: renewing it is the owner's item alone. */
	REQUIRE(mm_ddb_claim(x.st, &ns, &c1, 1, 60000, 3600000, on_done, &d) == 0);
	REQUIRE(wait_done(&x, &d) == 0);
	CHECK_EQ_INT(c1.result, MM_CLAIM_WON);
	CHECK_EQ_INT(renew_call(&x, x.st, &ns, &c1), MM_CLAIM_RENEWED);
	/* A claim whose own lease is over at once: busy while A renews. */
	memset(&d, 0, sizeof(d));
	REQUIRE(mm_ddb_claim(x.st, &ns, &c2, 1, 1, 3600000, on_done, &d) == 0);
	REQUIRE(wait_done(&x, &d) == 0);
	CHECK_EQ_INT(c2.result, MM_CLAIM_WON);
	usleep(20000);
	CHECK_EQ_INT(renew_call(&x, x.st, &ns, &c2), MM_CLAIM_RENEWED);
	CHECK_EQ_INT(claim_call(&x, b, 0, &ns, "e2", 60000), MM_CLAIM_BUSY);
	REQUIRE(mm_ddb_get_stats(x.st, &stats) == 0);
	CHECK(stats.lease_lapses == 0);
	/* A stops renewing: after its lease, B takes e2 over, and A's next
	 * renewal finds its lease lapsed and e2 lost. */
	usleep(2100000);
	CHECK_EQ_INT(claim_call(&x, b, 0, &ns, "e2", 60000), MM_CLAIM_STOLEN);
	CHECK_EQ_INT(renew_call(&x, x.st, &ns, &c2), MM_CLAIM_NOT_OWNER);
	REQUIRE(mm_ddb_get_stats(x.st, &stats) == 0);
	CHECK(stats.lease_lapses == 1);
	mm_store_close(b);
	CHECK(fx_close(&x) == 0);
}

static void on_wait(uv_timer_t *t)
{
}

/* Credentials from the container endpoint (the proxy serves them), then
 * refreshed on the loop when they near their expiry. */
TEST(container_credentials)
{
	mm_monoid_t msum = monoid("sum", (mm_monoid_params_t){0});
	mm_ns_t ns = {"cc", &msum};
	_Alignas(16) unsigned char s[MM_STATE_MAX];
	static flush_t fl;
	char doc[512], url[96], exp[64];
	time_t t = time(NULL) + 301; /* refresh is due in a second */
	struct tm tm;
	fx_t x;
	uv_timer_t wait;
	int rc;

	gmtime_r(&t, &tm);
	strftime(exp, sizeof(exp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(doc, sizeof(doc), "{\"AccessKeyId\":\"ASIAFIRST\",\"SecretAccessKey\":\"first\","
				  "\"Token\":\"tok1\",\"Expiration\":\"%s\",\"auth\":\"Bearer abc\"}", exp);
	REQUIRE(proxy_post("/__creds", doc) == 0);
	REQUIRE(proxy_post("/__faults", "{\"verify_secret\":\"first\",\"require_token\":\"tok1\",\"rules\":[]}") == 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/creds", proxy_port);
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url, 1);
	setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer abc", 1);
	rc = fx_open(&x, NULL, 0);
	if (rc)
		printf("#   open: %s\n", mm_diag_msg());
	REQUIRE(rc == 0);
	flush_init(&fl);
	msum.vt->init(&msum, s);
	add_int(&msum, s, 1);
	add_delta(&fl, &ns, "k", 0, 0, s);
	CHECK(apply(&x, &fl.f) == 0);
	/* Rotate: the proxy now hands out and demands the second set. */
	snprintf(doc, sizeof(doc), "{\"AccessKeyId\":\"ASIASECOND\",\"SecretAccessKey\":\"second\","
				  "\"Token\":\"tok2\",\"Expiration\":\"2099-01-01T00:00:00Z\",\"auth\":\"Bearer abc\"}");
	REQUIRE(proxy_post("/__creds", doc) == 0);
	/* Let the loop run past the refresh (due one second after open). */
	uv_timer_init(&x.loop, &wait);
	uv_timer_start(&wait, on_wait, 1800, 0);
	while (uv_is_active((uv_handle_t *)&wait))
		uv_run(&x.loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&wait, NULL);
	REQUIRE(proxy_post("/__faults", "{\"verify_secret\":\"second\",\"require_token\":\"tok2\",\"rules\":[]}") == 0);
	flush_init(&fl);
	add_delta(&fl, &ns, "k", 0, 0, s);
	CHECK(apply(&x, &fl.f) == 0);
	CHECK(fx_close(&x) == 0);
	unsetenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	unsetenv("AWS_CONTAINER_AUTHORIZATION_TOKEN");
	setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1);
	setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1);
	faults("");
}

TEST(open_errors)
{
	uv_loop_t loop;
	mm_store_t *st = NULL;
	mm_kv_t missing[2] = {{"table", "no_such_table"}, {"endpoint", endpoint}};
	mm_kv_t bad_ep[2] = {{"table", "x_table"}, {"endpoint", "ftp://h"}};
	mm_kv_t unknown[2] = {{"table", "x_table"}, {"tabel", "y"}};

	uv_loop_init(&loop);
	/* open() does no I/O: the missing table is the start-up checks' failure. */
	REQUIRE(mm_store_open("dynamodb", &loop, missing, 2, 0, &st) == 0);
	CHECK(mm_store_start_wait(st) == MM_ENOTFOUND);
	CHECK(strstr(mm_diag_msg(), "create-table") != NULL);
	mm_store_close(st);
	st = NULL;
	CHECK(mm_store_open("dynamodb", &loop, bad_ep, 2, 0, &st) == MM_EINVAL);
	CHECK(mm_store_open("dynamodb", &loop, unknown, 2, 0, &st) == MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "tabel") != NULL);
	unsetenv("AWS_ACCESS_KEY_ID");
	CHECK(mm_store_open("dynamodb", &loop, missing, 2, 0, &st) == MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "AWS_ACCESS_KEY_ID") != NULL);
	setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1);
	CHECK(st == NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(uv_loop_close(&loop) == 0);
}

int main(void)
{
	const char *dir = "tests/node";

	if (system("node --version >/dev/null 2>&1") != 0 ||
	    access("tests/node/node_modules/dynalite/package.json", R_OK) != 0) {
		printf("ok 1 # SKIP node or %s/node_modules is missing (make deps)\n1..1\n", dir);
		return 0;
	}
	dyn_pid = spawn_node("tests/node/dynalite_server.js", NULL, NULL, &dyn_port);
	if (dyn_pid > 0) {
		char target[16];

		snprintf(target, sizeof(target), "%d", dyn_port);
		proxy_pid = spawn_node("tests/node/fault_proxy.js", "--target", target, &proxy_port);
	}
	if (dyn_pid <= 0 || proxy_pid <= 0) {
		printf("not ok 1 - cannot start dynalite and the fault proxy\n1..1\n");
		stop(dyn_pid);
		return 1;
	}
	snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", proxy_port);
	setenv("AWS_ACCESS_KEY_ID", "AKIDTEST", 1);
	setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1);
	unsetenv("AWS_SESSION_TOKEN");
	unsetenv("MURMUR_DYNAMODB_TABLE");
	unsetenv("MURMUR_DYNAMODB_ENDPOINT");
	RUN(numeric_monoids);
	RUN(state_number_text);
	RUN(sketch_monoids_read_merge_write);
	RUN(lost_responses_are_not_double_counted);
	RUN(batched_read_merge_write);
	RUN(throttling_and_5xx_are_retried);
	RUN(get_many_chunks_duplicates_and_unprocessed_keys);
	RUN(entities_that_are_not_utf8);
	RUN(metadata_and_positions);
	RUN(flush_intents_roll_forward);
	RUN(store_closed_during_intent_decode);
	RUN(zombie_fence);
	RUN(stale_tokens_are_pruned);
	RUN(claim_protocol);
	RUN(owner_lease);
	RUN(container_credentials);
	RUN(open_errors);
	stop(proxy_pid);
	stop(dyn_pid);
	UNIT_DONE();
}
