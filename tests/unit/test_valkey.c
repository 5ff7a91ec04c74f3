/*
 * test_valkey.c: the Valkey cache layer (engine/store/valkey.c) against a
 * real redis-server started here on 127.0.0.1 (a random port, no
 * persistence), with LMDB as the backing store.
 *
 * The tests look at the server directly through a blocking hiredis
 * connection: which entries exist, their bytes, their TTLs, and they plant
 * leases and corrupt values to drive the protocol. They check that reads
 * through the cache return what the store holds whatever the cache holds
 * (cold, partial, flushed, restarted, corrupt), that writes update only
 * entries that exist, that HyperLogLog buckets answer PFCOUNT with our own
 * estimate of their union, that Top-K entries hold the store's bytes, and
 * the dedup claims. Without redis-server the tests are skipped (reported
 * as passing with a note), like the specs.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <ftw.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "lib/error.h"
#include "lib/time.h"
#include "monoid/hll.h"
#include "store/valkey.h"
#include "store_done.h"
#include "unit.h"

#define NS_DAY 86400000LL
#define PREFIX "t:"

static int g_port;
static pid_t g_server;
static char g_url[64];
static char g_tmp[64];
static int g_have_server;

/* ---- the server -------------------------------------------------------- */

static redisContext *server_conn(void)
{
	struct timeval tv = {1, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", g_port, tv);

	if (c != NULL && c->err) {
		redisFree(c);
		return NULL;
	}
	return c;
}

/* Starts redis-server on g_port (chosen once); 0 when it answers PING. */
static int server_start(void)
{
	char port[16];
	int i;

	snprintf(port, sizeof(port), "%d", g_port);
	g_server = fork();
	if (g_server == 0) {
		int fd = open("/dev/null", 1);

		dup2(fd, 1);
		dup2(fd, 2);
		execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
		       "--save", "", "--appendonly", "no", "--dir", g_tmp, (char *)NULL);
		_exit(127);
	}
	for (i = 0; i < 200; i++) {
		redisContext *c = server_conn();

		if (c != NULL) {
			redisReply *r = redisCommand(c, "PING");
			int ok = r != NULL && r->type == REDIS_REPLY_STATUS;

			if (r)
				freeReplyObject(r);
			redisFree(c);
			if (ok)
				return 0;
		}
		if (waitpid(g_server, NULL, WNOHANG) == g_server)
			return -1;
		usleep(10000);
	}
	return -1;
}

static void server_stop(void)
{
	if (g_server > 0) {
		kill(g_server, SIGKILL);
		waitpid(g_server, NULL, 0);
		g_server = 0;
	}
}

/* Runs a command on a fresh connection; the reply is the caller's. */
static redisReply *cmd(const char *fmt, ...)
{
	redisContext *c = server_conn();
	redisReply *r;
	va_list ap;

	if (c == NULL)
		return NULL;
	va_start(ap, fmt);
	r = redisvCommand(c, fmt, ap);
	va_end(ap);
	redisFree(c);
	return r;
}

static long long cmd_int(const char *fmt, const char *a)
{
	redisReply *r = cmd(fmt, a);
	long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -999;

	if (r)
		freeReplyObject(r);
	return v;
}

/* The bytes of key k into out (at most cap); -1 if absent. */
static long get_bytes(const char *k, size_t klen, void *out, size_t cap)
{
	redisReply *r = cmd("GET %b", k, klen);
	long n = -1;

	if (r && r->type == REDIS_REPLY_STRING && r->len <= cap) {
		memcpy(out, r->str, r->len);
		n = (long)r->len;
	}
	if (r)
		freeReplyObject(r);
	return n;
}

static void entry_key(char *out, size_t cap, const char *ns, int64_t bucket, const char *entity)
{
	snprintf(out, cap, PREFIX "s:%s:%lld:%s", ns, (long long)bucket, entity);
}

static int entry_exists(const char *ns, int64_t bucket, const char *entity)
{
	char k[256];

	entry_key(k, sizeof(k), ns, bucket, entity);
	return (int)cmd_int("EXISTS %s", k);
}

/* ---- fixtures ---------------------------------------------------------- */

typedef struct fx {
	uv_loop_t loop;
	mm_store_t *st;
	char dir[64];
	char path[96];
} fx_t;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void on_heartbeat(uv_timer_t *t)
{
}

/* Runs the loop until *flag or about `ms` milliseconds passed. A heartbeat
 * timer keeps the loop alive meanwhile, as a running engine's handles do
 * (the cache's own background timers do not). */
static void spin(fx_t *fx, const int *flag, int ms)
{
	int64_t end = mm_now_ms() + ms;
	uv_timer_t beat;

	uv_timer_init(&fx->loop, &beat);
	uv_timer_start(&beat, on_heartbeat, 5, 5);
	while (!(flag && *flag) && mm_now_ms() < end)
		uv_run(&fx->loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&beat, NULL);
	uv_run(&fx->loop, UV_RUN_NOWAIT);
}

static int connected(fx_t *fx)
{
	mm_valkey_stats_t s;

	return mm_valkey_stats(fx->st, &s) == 0 && s.connected;
}

static void wait_connected(fx_t *fx, int ms)
{
	int64_t end = mm_now_ms() + ms;

	while (!connected(fx) && mm_now_ms() < end)
		spin(fx, NULL, 10);
}

static int fx_open(fx_t *fx, const char *extra_key, const char *extra_val)
{
	mm_kv_t kv[8];
	size_t n = 0;

	kv[n++] = (mm_kv_t){"backing", "lmdb"};
	kv[n++] = (mm_kv_t){"backing.path", fx->path};
	kv[n++] = (mm_kv_t){"backing.sync", "false"};
	kv[n++] = (mm_kv_t){"url", g_url};
	kv[n++] = (mm_kv_t){"prefix", PREFIX};
	kv[n++] = (mm_kv_t){"check_interval", "50ms"};
	kv[n++] = (mm_kv_t){"timeout", "500ms"};
	if (extra_key)
		kv[n++] = (mm_kv_t){extra_key, extra_val};
	return mm_store_open("valkey", &fx->loop, kv, n, 0, &fx->st);
}

static int fx_init(fx_t *fx, const char *extra_key, const char *extra_val)
{
	memset(fx, 0, sizeof(*fx));
	uv_loop_init(&fx->loop);
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/mm_valkey_XXXXXX");
	if (mkdtemp(fx->dir) == NULL)
		return -1;
	snprintf(fx->path, sizeof(fx->path), "%s/db", fx->dir);
	if (fx_open(fx, extra_key, extra_val))
		return -1;
	wait_connected(fx, 2000);
	return connected(fx) ? 0 : -1;
}

static void fx_fini(fx_t *fx)
{
	if (fx->st != NULL)
		mm_store_close(fx->st);
	fx->st = NULL;
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	CHECK(uv_loop_close(&fx->loop) == 0);
	nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Flushes out every key of the test prefix between tests. */
static void server_clean(void)
{
	redisReply *r = cmd("FLUSHALL");

	if (r)
		freeReplyObject(r);
}

/* ---- flushes and reads ----------------------------------------------- */

#define MAXD 64

typedef struct batch {
	mm_flush_t f;
	mm_delta_t d[MAXD];
	_Alignas(16) unsigned char s[MAXD][MM_STATE_MAX];
	mm_mark_t marks[MAXD];
	uint8_t ddone[MAXD], mdone[MAXD];
	const mm_monoid_t *m[MAXD];
} batch_t;

static void batch_init(batch_t *b)
{
	memset(b, 0, sizeof(*b));
	b->f.deltas = b->d;
	b->f.marks = b->marks;
	b->f.delta_done = b->ddone;
	b->f.mark_done = b->mdone;
	b->f.now_ms = mm_now_ms();
}

/* Adds a delta holding the string values (or a count of n). */
static void *batch_delta(batch_t *b, const mm_ns_t *ns, const char *entity, int64_t bucket,
			 int64_t expire_ms)
{
	size_t i = b->f.ndeltas++;

	b->d[i] = (mm_delta_t){ns, {entity, strlen(entity), bucket}, expire_ms, b->s[i]};
	b->m[i] = ns->m;
	ns->m->vt->init(ns->m, b->s[i]);
	return b->s[i];
}

static void batch_free(batch_t *b)
{
	size_t i;

	for (i = 0; i < b->f.ndeltas; i++)
		b->m[i]->vt->destroy(b->m[i], b->s[i]);
}

static void add_str(const mm_ns_t *ns, void *state, const char *s)
{
	mm_value_t v = {.type = MM_VAL_STRING, .s = s, .len = strlen(s)};

	CHECK(ns->m->vt->add(ns->m, state, &v) == 0);
}

static void add_int(const mm_ns_t *ns, void *state, int64_t i)
{
	mm_value_t v = {.type = MM_VAL_INT, .i = i};

	CHECK(ns->m->vt->add(ns->m, state, &v) == 0);
}

static int apply(fx_t *fx, batch_t *b)
{
	done_t d = {0};
	int rc = mm_store_apply(fx->st, &b->f, on_done, &d);

	CHECK(d.calls == 0);
	if (rc)
		return rc;
	spin(fx, &d.calls, 5000);
	CHECK(d.calls == 1);
	return d.status;
}

/* Reads n keys of one entity; states must hold n states. */
static int read_keys(fx_t *fx, const mm_ns_t *ns, const mm_key_t *keys, size_t n, void *states,
		     uint8_t *found)
{
	done_t d = {0};
	size_t i;
	int rc;

	for (i = 0; i < n; i++)
		ns->m->vt->init(ns->m, (char *)states + i * MM_STATE_MAX);
	rc = mm_store_get_many(fx->st, ns, keys, n, states, found, on_done, &d);
	CHECK(d.calls == 0);
	if (rc)
		return rc;
	spin(fx, &d.calls, 5000);
	CHECK(d.calls == 1);
	return d.status;
}

/* Lets the fills that follow a read land. */
static void settle(fx_t *fx)
{
	spin(fx, NULL, 30);
}

static int64_t read_count(fx_t *fx, const mm_ns_t *ns, const char *entity, int64_t bucket,
			  int *found)
{
	_Alignas(16) unsigned char s[MM_STATE_MAX];
	mm_key_t k = {entity, strlen(entity), bucket};
	uint8_t f = 9;
	mm_buf_t enc = {0};
	int64_t v = -1;

	if (read_keys(fx, ns, &k, 1, s, &f) == 0 && ns->m->vt->encode(ns->m, s, &enc) == 0 &&
	    enc.len == 8)
		v = (int64_t)mm_get_u64le(enc.p);
	ns->m->vt->destroy(ns->m, s);
	mm_buf_free(&enc);
	*found = f;
	return v;
}

static void monoid(mm_monoid_t *m, const char *name, uint32_t k)
{
	mm_monoid_params_t p = {0};

	p.k = k;
	REQUIRE(mm_monoid_init(m, name, &p) == 0);
}

/* ---- tests --------------------------------------------------------------- */

/* Reads fill the cache; writes update only entries that exist (a cold or
 * partial cache never gets an INCRBY on a key it does not hold). */
TEST(counts_through_a_partial_cache)
{
	mm_monoid_t m;
	mm_ns_t ns = {"views", &m};
	int64_t day = mm_now_ms() / NS_DAY, exp = (day + 31) * NS_DAY;
	batch_t b;
	fx_t fx;
	int found;
	char k[128], val[32];

	monoid(&m, "count", 0);
	REQUIRE(fx_init(&fx, NULL, NULL) == 0);
	batch_init(&b);
	for (int i = 0; i < 5; i++)
		add_int(&ns, batch_delta(&b, &ns, "p1", day - i, exp), 0);
	add_int(&ns, b.s[0], 0); /* p1/day: 2, others 1 */
	CHECK(apply(&fx, &b) == 0);
	batch_free(&b);
	/* Nothing was cached before: the write created nothing. */
	CHECK(entry_exists("views", day, "p1") == 0);
	/* Read two of the five buckets: they get cached. */
	CHECK(read_count(&fx, &ns, "p1", day, &found) == 2 && found);
	CHECK(read_count(&fx, &ns, "p1", day - 1, &found) == 1 && found);
	settle(&fx);
	CHECK(entry_exists("views", day, "p1") == 1);
	CHECK(entry_exists("views", day - 1, "p1") == 1);
	CHECK(entry_exists("views", day - 2, "p1") == 0);
	/* Write to every bucket again: cached ones are incremented in place,
	 * the others stay absent. */
	batch_init(&b);
	for (int i = 0; i < 5; i++)
		add_int(&ns, batch_delta(&b, &ns, "p1", day - i, exp), 0);
	CHECK(apply(&fx, &b) == 0);
	batch_free(&b);
	entry_key(k, sizeof(k), "views", day, "p1");
	CHECK(get_bytes(k, strlen(k), val, sizeof(val)) == 1 && val[0] == '3');
	CHECK(entry_exists("views", day - 2, "p1") == 0);
	for (int i = 0; i < 5; i++)
		CHECK(read_count(&fx, &ns, "p1", day - i, &found) == (i == 0 ? 3 : 2) && found);
	/* A key nobody wrote is absent through the cache too. */
	CHECK(read_count(&fx, &ns, "nobody", day, &found) == 0 && !found);
	{
		mm_valkey_stats_t s;

		CHECK(mm_valkey_stats(fx.st, &s) == 0);
		CHECK(s.hits >= 2 && s.misses >= 5 && s.updates >= 2 && s.fills >= 5);
		CHECK(s.ops[MM_VALKEY_OP_LEASE] >= 2 && s.errors[MM_VALKEY_OP_UPDATE] == 0);
	}
	/* Entries never outlive the bucket's expiry (nor cache_ttl). */
	{
		long long pttl = cmd_int("PTTL %s", k);

		CHECK(pttl > 0 && pttl <= 10 * 60 * 1000);
	}
	fx_fini(&fx);
	server_clean();
}

/* Absent buckets are cached too: for a sum as an empty marker (a stored
 * sum may be 0), which a write deletes rather than adds to. */
TEST(sum_absent_buckets_are_cached_as_a_marker)
{
	mm_monoid_t m;
	mm_ns_t ns = {"money", &m};
	int64_t day = mm_now_ms() / NS_DAY;
	mm_valkey_stats_t s0, s1;
	batch_t b;
	fx_t fx;
	int found;
	char k[128], v[32];

	monoid(&m, "sum", 0);
	REQUIRE(fx_init(&fx, NULL, NULL) == 0);
	/* A bucket that nets to zero is found, with 0. */
	batch_init(&b);
	add_int(&ns, batch_delta(&b, &ns, "acct", day - 1, 0), 5);
	add_int(&ns, b.s[0], -5);
	CHECK(apply(&fx, &b) == 0);
	batch_free(&b);
	for (int i = 0; i < 2; i++) {
		CHECK(read_count(&fx, &ns, "acct", day - 1, &found) == 0 && found == 1);
		CHECK(read_count(&fx, &ns, "acct", day, &found) == 0 && found == 0);
		settle(&fx);
	}
	entry_key(k, sizeof(k), "money", day, "acct");
	CHECK(get_bytes(k, strlen(k), v, sizeof(v)) == 0);
	CHECK(mm_valkey_stats(fx.st, &s0) == 0);
	CHECK(read_count(&fx, &ns, "acct", day, &found) == 0 && found == 0);
	CHECK(mm_valkey_stats(fx.st, &s1) == 0 && s1.hits == s0.hits + 1 && s1.misses == s0.misses);
	/* A write to the absent bucket: the marker goes, the value comes back. */
	batch_init(&b);
	add_int(&ns, batch_delta(&b, &ns, "acct", day, 0), 7);
	CHECK(apply(&fx, &b) == 0);
	batch_free(&b);
	CHECK(get_bytes(k, strlen(k), v, sizeof(v)) == -1);
	CHECK(read_count(&fx, &ns, "acct", day, &found) == 7 && found == 1);
	fx_fini(&fx);
	server_clean();
}

/* A write in progress (a lease on the bucket) makes fills stand aside,
 * and a value the cache cannot decode is never served. */
TEST(leases_block_fills_and_corrupt_values_are_replaced)
{
	mm_monoid_t m;
	mm_ns_t ns = {"views", &m};
	int64_t day = mm_now_ms() / NS_DAY;
	batch_t b;
	fx_t fx;
	int found;
	char k[128];
	redisReply *r;

	monoid(&m, "count", 0);
	REQUIRE(fx_init(&fx, NULL, NULL) == 0);
	batch_init(&b);
	add_int(&ns, batch_delta(&b, &ns, "p2", day, 0), 0);
	CHECK(apply(&fx, &b) == 0);
	batch_free(&b);
	snprintf(k, sizeof(k), PREFIX "l:views:%lld", (long long)day);
	r = cmd("ZADD %s %lld other:1", k, (long long)mm_now_ms() + 60000);
	freeReplyObject(r);
	CHECK(read_count(&fx, &ns, "p2", day, &found) == 1 && found);
	settle(&fx);
	CHECK(entry_exists("views", day, "p2") == 0);
	r = cmd("DEL %s", k);
	freeReplyObject(r);
	CHECK(read_count(&fx, &ns, "p2", day, &found) == 1 && found);
	settle(&fx);
	CHECK(entry_exists("views", day, "p2") == 1);
	/* Garbage in the entry: read from the store and replaced. */
	entry_key(k, sizeof(k), "views", day, "p2");
	r = cmd("SET %s not-a-number", k);
	freeReplyObject(r);
	CHECK(read_count(&fx, &ns, "p2", day, &found) == 1 && found);
	settle(&fx);
	{
		char v[32];

		CHECK(get_bytes(k, strlen(k), v, sizeof(v)) == 1 && v[0] == '1');
	}
	fx_fini(&fx);
	server_clean();
}

/* A store write that fails (injected ENOSPC) changes no entry and gives
 * its lease back at once, so fills of the bucket are not held up. */
TEST(failed_write_leaves_the_cache_alone)
{
	mm_monoid_t m;
	mm_ns_t ns = {"views", &m};
	int64_t day = mm_now_ms() / NS_DAY;
	batch_t b;
	fx_t fx;
	int found;
	char k[128], v[32];

	monoid(&m, "count", 0);
	REQUIRE(fx_init(&fx, NULL, NULL) == 0);
	batch_init(&b);
	add_int(&ns, batch_delta(&b, &ns, "f", day, 0), 0);
	add_int(&ns, batch_delta(&b, &ns, "g", day, 0), 0);
	CHECK(apply(&fx, &b) == 0);
	batch_free(&b);
	CHECK(read_count(&fx, &ns, "f", day, &found) == 1);
	settle(&fx);
	setenv("MURMUR_ERRINJ_STORE_APPLY", "1", 1);
	batch_init(&b);
	add_int(&ns, batch_delta(&b, &ns, "f", day, 0), 0);
	add_int(&ns, batch_delta(&b, &ns, "g", day, 0), 0);
	CHECK(apply(&fx, &b) == MM_ENOSPC);
	batch_free(&b);
	unsetenv("MURMUR_ERRINJ_STORE_APPLY");
	entry_key(k, sizeof(k), "views", day, "f");
	CHECK(get_bytes(k, strlen(k), v, sizeof(v)) == 1 && v[0] == '1');
	snprintf(k, sizeof(k), PREFIX "l:views:%lld", (long long)day);
	CHECK(cmd_int("ZCARD %s", k) == 0);
	/* g was never cached: its fill goes through right away. */
	CHECK(read_count(&fx, &ns, "g", day, &found) == 1);
	settle(&fx);
	CHECK(entry_exists("views", day, "g") == 1);
	fx_fini(&fx);
	server_clean();
}

/* Top-K entries are updated by compare-and-set and hold the store's bytes. */
TEST(topk_entries_hold_the_store_bytes)
{
	mm_monoid_t m;
	mm_ns_t ns = {"top", &m};
	_Alignas(16) unsigned char acc[MM_STATE_MAX], got[MM_STATE_MAX];
	mm_buf_t enc = {0}, want = {0};
	mm_key_t key = {"global", 6, 1};
	uint64_t seed = 42;
	uint8_t found;
	fx_t fx;
	char k[128];
	static char bytes[65536];
	long n;

	monoid(&m, "topk", 4);
	REQUIRE(fx_init(&fx, NULL, NULL) == 0);
	m.vt->init(&m, acc);
	for (int round = 0; round < 6; round++) {
		batch_t b;
		void *s;

		batch_init(&b);
		s = batch_delta(&b, &ns, "global", 1, 0);
		for (int i = 0; i < 300; i++) {
			char item[16];

			unit_xorshift64(&seed);
			snprintf(item, sizeof(item), "i%llu",
				 (unsigned long long)(seed % 40 % (round + 3)));
			add_str(&ns, s, item);
		}
		/* What the store does: decode what it holds, merge, encode. */
		enc.len = 0;
		CHECK(m.vt->encode(&m, acc, &enc) == 0);
		m.vt->destroy(&m, acc);
		m.vt->init(&m, acc);
		CHECK(m.vt->decode(&m, acc, enc.p, enc.len) == 0);
		CHECK(m.vt->merge(&m, acc, s) == 0);
		CHECK(apply(&fx, &b) == 0);
		batch_free(&b);
		if (round == 1) {
			/* Fill the cache once; later rounds update it in place. */
			CHECK(read_keys(&fx, &ns, &key, 1, got, &found) == 0 && found);
			m.vt->destroy(&m, got);
			settle(&fx);
		}
	}
	want.len = 0;
	CHECK(m.vt->encode(&m, acc, &want) == 0);
	entry_key(k, sizeof(k), "top", 1, "global");
	n = get_bytes(k, strlen(k), bytes, sizeof(bytes));
	CHECK(n == (long)want.len && memcmp(bytes, want.p, want.len) == 0);
	/* And a read answers the same bytes (now a hit). */
	CHECK(read_keys(&fx, &ns, &key, 1, got, &found) == 0 && found);
	enc.len = 0;
	CHECK(m.vt->encode(&m, got, &enc) == 0);
	CHECK(enc.len == want.len && memcmp(enc.p, want.p, want.len) == 0);
	m.vt->destroy(&m, got);
	m.vt->destroy(&m, acc);
	mm_buf_free(&enc);
	mm_buf_free(&want);
	fx_fini(&fx);
	server_clean();
}

typedef struct count_res {
	done_t d;
	uint64_t count, nonempty;
	int cached;
} count_res_t;

static int count_keys(fx_t *fx, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
		      count_res_t *c)
{
	memset(c, 0, sizeof(*c));
	if (mm_store_count_hll(fx->st, ns, keys, n, &c->count, &c->nonempty, &c->cached, on_done,
			    &c->d))
		return -1;
	CHECK(c->d.calls == 0);
	spin(fx, &c->d.calls, 5000);
	return c->d.status;
}

/* PFCOUNT over day buckets equals our estimate of their union, and a
 * bucket the store lacks is cached as an empty sketch. */
TEST(pfcount_over_day_buckets)
{
	mm_monoid_t m;
	mm_ns_t ns = {"uniq", &m};
	int64_t day = mm_now_ms() / NS_DAY;
	_Alignas(16) unsigned char states[7][MM_STATE_MAX], acc[MM_STATE_MAX];
	mm_key_t keys[7];
	uint8_t found[7];
	uint64_t want;
	count_res_t c;
	batch_t b;
	fx_t fx;

	monoid(&m, "hll", 0);
	REQUIRE(fx_init(&fx, NULL, NULL) == 0);
	batch_init(&b);
	/* Six of seven days have visitors, overlapping from day to day. */
	for (int d = 0; d < 7; d++) {
		keys[d] = (mm_key_t){"home", 4, day - d};
		if (d == 3)
			continue;
		void *s = batch_delta(&b, &ns, "home", day - d, 0);

		for (int u = d * 700; u < d * 700 + 1500; u++) {
			char user[16];

			snprintf(user, sizeof(user), "u%d", u);
			add_str(&ns, s, user);
		}
	}
	CHECK(apply(&fx, &b) == 0);
	batch_free(&b);
	CHECK(count_keys(&fx, &ns, keys, 7, &c) == 0 && c.cached == 0);
	CHECK(read_keys(&fx, &ns, keys, 7, states, found) == 0);
	settle(&fx);
	m.vt->init(&m, acc);
	for (int d = 0; d < 7; d++) {
		CHECK(found[d] == (d != 3));
		CHECK(m.vt->merge(&m, acc, states[d]) == 0);
		m.vt->destroy(&m, states[d]);
	}
	CHECK(mm_hll_count(&m, acc, &want) == 0);
	m.vt->destroy(&m, acc);
	CHECK(count_keys(&fx, &ns, keys, 7, &c) == 0);
	CHECK(c.cached == 1 && c.count == want && c.nonempty == 6);
	CHECK(want > 5500 && want < 6500);
	/* The absent day reads back as absent from the cache too. */
	CHECK(read_keys(&fx, &ns, &keys[3], 1, states[3], found) == 0 && found[0] == 0);
	m.vt->destroy(&m, states[3]);
	/* A write to the empty bucket is merged into it in place. */
	batch_init(&b);
	add_str(&ns, batch_delta(&b, &ns, "home", day - 3, 0), "newcomer");
	CHECK(apply(&fx, &b) == 0);
	batch_free(&b);
	CHECK(count_keys(&fx, &ns, keys, 7, &c) == 0);
	CHECK(c.cached == 1 && c.nonempty == 7 && c.count >= want);
	fx_fini(&fx);
	server_clean();
}

/* Valkey killed, restarted and flushed under a running store: reads fall
 * back to the store and stay exact, and the entries come back. */
TEST(kill_restart_flush)
{
	mm_monoid_t m;
	mm_ns_t ns = {"views", &m};
	int64_t day = mm_now_ms() / NS_DAY;
	mm_valkey_stats_t s;
	batch_t b;
	fx_t fx;
	int found;

	monoid(&m, "count", 0);
	REQUIRE(fx_init(&fx, NULL, NULL) == 0);
	batch_init(&b);
	add_int(&ns, batch_delta(&b, &ns, "a", day, 0), 0);
	CHECK(apply(&fx, &b) == 0);
	batch_free(&b);
	CHECK(read_count(&fx, &ns, "a", day, &found) == 1);
	settle(&fx);
	CHECK(entry_exists("views", day, "a") == 1);

	/* Killed: a write goes to the store alone, reads too. */
	server_stop();
	batch_init(&b);
	add_int(&ns, batch_delta(&b, &ns, "a", day, 0), 0);
	CHECK(apply(&fx, &b) == 0);
	batch_free(&b);
	CHECK(read_count(&fx, &ns, "a", day, &found) == 2 && found);
	CHECK(mm_valkey_stats(fx.st, &s) == 0 && !s.connected && s.bypassed >= 1);

	/* Restarted (empty): the store notices, rebuilds what it used. */
	REQUIRE(server_start() == 0);
	wait_connected(&fx, 5000);
	CHECK(connected(&fx));
	spin(&fx, NULL, 100);
	CHECK(entry_exists("views", day, "a") == 1);
	CHECK(read_count(&fx, &ns, "a", day, &found) == 2 && found);
	CHECK(mm_valkey_stats(fx.st, &s) == 0 && s.data_losses >= 1 && s.repopulated >= 1);

	/* FLUSHALL while connected: the generation check catches it. */
	server_clean();
	spin(&fx, NULL, 300);
	CHECK(entry_exists("views", day, "a") == 1);
	CHECK(mm_valkey_stats(fx.st, &s) == 0 && s.data_losses >= 2);
	batch_init(&b);
	add_int(&ns, batch_delta(&b, &ns, "a", day, 0), 0);
	CHECK(apply(&fx, &b) == 0);
	batch_free(&b);
	CHECK(read_count(&fx, &ns, "a", day, &found) == 3 && found);
	fx_fini(&fx);
	server_clean();
}

/* The server stops answering (SIGSTOP) while a write happens, but keeps
 * its data: the entry cached before the write is stale when it comes back,
 * so it must be deleted before this store trusts the cache again. */
TEST(unresponsive_server_keeps_a_stale_entry)
{
	mm_monoid_t m;
	mm_ns_t ns = {"views", &m};
	int64_t day = mm_now_ms() / NS_DAY;
	mm_valkey_stats_t s;
	batch_t b;
	fx_t fx;
	int found;
	char k[128], v[32];
	long n;

	monoid(&m, "count", 0);
	REQUIRE(fx_init(&fx, NULL, NULL) == 0);
	batch_init(&b);
	add_int(&ns, batch_delta(&b, &ns, "s", day, 0), 0);
	CHECK(apply(&fx, &b) == 0);
	batch_free(&b);
	CHECK(read_count(&fx, &ns, "s", day, &found) == 1);
	settle(&fx);
	CHECK(entry_exists("views", day, "s") == 1);

	kill(g_server, SIGSTOP);
	batch_init(&b);
	add_int(&ns, batch_delta(&b, &ns, "s", day, 0), 0);
	CHECK(apply(&fx, &b) == 0); /* the lease times out; the store is written */
	batch_free(&b);
	CHECK(mm_valkey_stats(fx.st, &s) == 0 && !s.connected && s.dirty == 1);
	CHECK(read_count(&fx, &ns, "s", day, &found) == 2 && found);
	kill(g_server, SIGCONT);
	wait_connected(&fx, 5000);
	CHECK(connected(&fx));
	entry_key(k, sizeof(k), "views", day, "s");
	n = get_bytes(k, strlen(k), v, sizeof(v));
	CHECK(n == -1 || (n == 1 && v[0] == '2'));
	CHECK(mm_valkey_stats(fx.st, &s) == 0 && s.dirty == 0 && s.data_losses == 0);
	CHECK(read_count(&fx, &ns, "s", day, &found) == 2 && found);
	fx_fini(&fx);
	server_clean();
}

typedef struct claim_res {
	done_t d;
	mm_claim_t ids[2];
} claim_res_t;

/* Claims or releases ids (kind 'c' claim, 'r' renew, 'x' release) and
 * waits for the answer; returns its status. */
static int claim_ids(fx_t *fx, int kind, const mm_ns_t *ns, const char *const *ids, size_t n,
		     claim_res_t *c)
{
	int rc;

	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < n; i++)
		c->ids[i] = (mm_claim_t){.id = ids[i], .len = strlen(ids[i])};
	if (kind == 'c')
		rc = mm_store_claim(fx->st, ns, c->ids, n, 60000, on_done, &c->d);
	else if (kind == 'r')
		rc = mm_store_renew(fx->st, ns, c->ids, n, on_done, &c->d);
	else
		rc = mm_store_release(fx->st, ns, c->ids, n, on_done, &c->d);
	if (rc)
		return rc;
	CHECK(c->d.calls == 0);
	spin(fx, &c->d.calls, 2000);
	return c->d.status;
}

/* Dedup on Valkey is a shared store's claims: one holder per id, a retry of
 * the holder wins again, another store is told how long the holder's lease
 * has left, the flush's marks confirm the claims (duplicates from then on,
 * for the dedup window), a release lets another claimant win, and seen()
 * is not how this store dedups. */
TEST(claims)
{
	mm_monoid_t m;
	mm_ns_t ns = {"views", &m};
	const char *ev1[] = {"ev-1"}, *both[] = {"ev-1", "ev-2"}, *ev2[] = {"ev-2"};
	claim_res_t a, b;
	batch_t bt;
	fx_t fx1, fx2;

	monoid(&m, "count", 0);
	REQUIRE(fx_init(&fx1, "dedup", "valkey") == 0);
	REQUIRE(fx_init(&fx2, "dedup", "valkey") == 0);
	CHECK(mm_store_caps(fx1.st) & MM_STORE_CAP_SHARED);
	CHECK(fx1.st->lease_ms == 30000);
	CHECK(claim_ids(&fx1, 'c', &ns, ev1, 1, &a) == 0 && a.ids[0].result == MM_CLAIM_WON);
	CHECK(cmd_int("PTTL %s", PREFIX "d:views:ev-1") > 25000);
	CHECK(claim_ids(&fx2, 'c', &ns, both, 2, &b) == 0);
	CHECK(b.ids[0].result == MM_CLAIM_BUSY && b.ids[1].result == MM_CLAIM_WON);
	CHECK(b.ids[0].lease_until_ms > mm_now_ms() + 25000);
	/* Claiming again what one holds is a win (a retry); renewing it too. */
	CHECK(claim_ids(&fx1, 'c', &ns, ev1, 1, &a) == 0 && a.ids[0].result == MM_CLAIM_WON);
	CHECK(claim_ids(&fx1, 'r', &ns, both, 2, &a) == 0);
	CHECK(a.ids[0].result == MM_CLAIM_RENEWED && a.ids[1].result == MM_CLAIM_NOT_OWNER);
	/* The flush carrying ev-1 confirms it for the dedup window. */
	batch_init(&bt);
	add_int(&ns, batch_delta(&bt, &ns, "x", 0, 0), 0);
	bt.marks[0] = (mm_mark_t){&ns, "ev-1", 4, mm_now_ms() + 3600000, 1, {0, 0}};
	bt.f.nmarks = 1;
	CHECK(apply(&fx1, &bt) == 0);
	batch_free(&bt);
	CHECK(bt.f.nmarks == 1);
	CHECK(cmd_int("PTTL %s", PREFIX "d:views:ev-1") > 3500000);
	CHECK(claim_ids(&fx2, 'c', &ns, ev1, 1, &b) == 0 && b.ids[0].result == MM_CLAIM_DUPLICATE);
	/* A release gives back only what is ours. */
	CHECK(claim_ids(&fx1, 'x', &ns, ev2, 1, &a) == 0 && a.ids[0].result == MM_CLAIM_NOT_OWNER);
	CHECK(claim_ids(&fx2, 'x', &ns, ev2, 1, &b) == 0 && b.ids[0].result == MM_CLAIM_RELEASED);
	CHECK(claim_ids(&fx1, 'c', &ns, ev2, 1, &a) == 0 && a.ids[0].result == MM_CLAIM_WON);
	/* Valkey gone: the claims fail retriably (the flush waits). */
	server_stop();
	CHECK(claim_ids(&fx1, 'c', &ns, ev2, 1, &a) == MM_EAGAIN && a.ids[0].result == MM_EAGAIN);
	REQUIRE(server_start() == 0);
	wait_connected(&fx1, 5000);
	wait_connected(&fx2, 5000);
	fx_fini(&fx1);
	fx_fini(&fx2);
	server_clean();
}

/* Options are checked before anything connects. */
TEST(options)
{
	uv_loop_t loop;
	mm_store_t *st = NULL;
	mm_kv_t bad_url[] = {{"backing", "memory"}, {"url", "http://x"}};
	mm_kv_t bad_dedup[] = {{"backing", "memory"}, {"dedup", "maybe"}};
	mm_kv_t bad_key[] = {{"backing", "memory"}, {"colour", "red"}};
	mm_kv_t bad_backing[] = {{"backing", "memory"}, {"backing.path", "/tmp/x"}};

	uv_loop_init(&loop);
	CHECK(mm_store_open("valkey", &loop, bad_url, 2, 0, &st) == MM_EINVAL);
	CHECK(mm_store_open("valkey", &loop, bad_dedup, 2, 0, &st) == MM_EINVAL);
	CHECK(mm_store_open("valkey", &loop, bad_key, 2, 0, &st) == MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "colour") != NULL);
	CHECK(mm_store_open("valkey", &loop, bad_backing, 2, 0, &st) == MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "memory") != NULL);
	CHECK(st == NULL);
	CHECK(uv_loop_close(&loop) == 0);
}

/* The capability set: the wrapper takes atomicity from its backing store
 * and adds the native HLL count and the cache counters; a store without
 * them refuses count_hll up front and has no op_stats. */
TEST(capabilities)
{
	mm_monoid_t m, hll;
	mm_ns_t ns = {"c", &m}, hns = {"h", &hll};
	mm_key_t key = {"k", 1, 1};
	mm_store_op_stats_t os[16];
	uint64_t count, nonempty;
	int cached;
	mm_store_t *mem = NULL;
	size_t n;
	fx_t fx;

	monoid(&m, "count", 0);
	monoid(&hll, "hll", 0);
	REQUIRE(fx_init(&fx, NULL, NULL) == 0);
	CHECK(mm_store_caps(fx.st) ==
	      (MM_STORE_CAP_ATOMIC | MM_STORE_CAP_COUNT_HLL | MM_STORE_CAP_CACHE));
	CHECK(strcmp(mm_store_cap_name(MM_STORE_CAP_COUNT_HLL), "count_hll") == 0);
	n = mm_store_op_stats(fx.st, os, 16);
	CHECK(n == MM_VALKEY_OP_MAX && strcmp(os[MM_VALKEY_OP_GET].name, "cache_get") == 0);
	CHECK(mm_store_count_hll(fx.st, &ns, &key, 1, &count, &nonempty, &cached, on_done, NULL) ==
	      MM_EINVAL);
	REQUIRE(mm_store_open("memory", &fx.loop, NULL, 0, 0, &mem) == 0);
	CHECK(mm_store_caps(mem) == MM_STORE_CAP_ATOMIC);
	CHECK(mm_store_op_stats(mem, os, 16) == 0);
	CHECK(mm_store_count_hll(mem, &hns, &key, 1, &count, &nonempty, &cached, on_done, NULL) ==
	      MM_ENOTSUP);
	mm_store_close(mem);
	fx_fini(&fx);
	server_clean();
}

int main(void)
{
	uint64_t seed = (uint64_t)getpid() * 2654435761u ^ (uint64_t)time(NULL);

	setvbuf(stdout, NULL, _IOLBF, 0);
	g_port = 20000 + (int)(seed % 20000);
	snprintf(g_url, sizeof(g_url), "redis://127.0.0.1:%d", g_port);
	snprintf(g_tmp, sizeof(g_tmp), "/tmp/mm_vkserver_XXXXXX");
	g_have_server = mkdtemp(g_tmp) != NULL && server_start() == 0;
	RUN(options);
	if (!g_have_server) {
		printf("# redis-server not available: cache tests skipped\n");
		UNIT_DONE();
	}
	RUN(counts_through_a_partial_cache);
	RUN(sum_absent_buckets_are_cached_as_a_marker);
	RUN(leases_block_fills_and_corrupt_values_are_replaced);
	RUN(failed_write_leaves_the_cache_alone);
	RUN(topk_entries_hold_the_store_bytes);
	RUN(pfcount_over_day_buckets);
	RUN(kill_restart_flush);
	RUN(unresponsive_server_keeps_a_stale_entry);
	RUN(claims);
	RUN(capabilities);
	server_stop();
	rmdir(g_tmp);
	UNIT_DONE();
}
