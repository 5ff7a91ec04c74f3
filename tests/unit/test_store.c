/*
 * test_store.c: the store layer (wrappers, LMDB and memory backends) on a
 * real libuv loop. The common tests run against both backends; the LMDB ones
 * also check the on-disk behaviour: reopening, a read-only query process
 * beside the writer, a full map, injected failures, corruption and hash
 * collisions of long entities (written with liblmdb directly).
 *
 * The states are those of a test monoid defined here (an int64 sum encoded as
 * 8 LE bytes), so these tests do not depend on the real monoids. Its POISON
 * value encodes to 3 bytes that its decoder rejects: storing it is how the
 * tests plant a corrupt value through the public API.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <lmdb.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "lib/error.h"
#include "lib/time.h"
#include "lib/hash.h"
#include "monoid/hll.h"
#include "store/markset.h"
#include "store/store.h"
#include "store_done.h"
#include "unit.h"

#define POISON INT64_MIN
#define MAXD 256

/* ---- the test monoid: int64 sum --------------------------------------- */

static int64_t get_i64(const void *st)
{
	int64_t v;

	memcpy(&v, st, sizeof(v));
	return v;
}

static void set_i64(void *st, int64_t v)
{
	memcpy(st, &v, sizeof(v));
}

static void tsum_init(const mm_monoid_t *m, void *st)
{
	set_i64(st, 0);
}

static void tsum_destroy(const mm_monoid_t *m, void *st)
{
}

static int tsum_add(const mm_monoid_t *m, void *st, const mm_value_t *v)
{
	if (v->type != MM_VAL_INT)
		return MM_ETYPE;
	set_i64(st, (int64_t)((uint64_t)get_i64(st) + (uint64_t)v->i));
	return 0;
}

static int tsum_merge(const mm_monoid_t *m, void *dst, const void *src)
{
	int64_t a = get_i64(dst), b = get_i64(src), r;

	if (a == POISON || b == POISON) {
		set_i64(dst, POISON);
		return 0;
	}
	/* Like the real sum: a merge that would overflow is refused. */
	if (__builtin_add_overflow(a, b, &r))
		return mm_diag_set(MM_ERANGE, "tsum: %lld + %lld overflows", (long long)a,
				   (long long)b);
	set_i64(dst, r);
	return 0;
}

static int tsum_encode(const mm_monoid_t *m, const void *st, mm_buf_t *out)
{
	if (get_i64(st) == POISON)
		return mm_buf_append(out, "bad", 3);
	return mm_buf_put_u64le(out, (uint64_t)get_i64(st));
}

static int tsum_decode(const mm_monoid_t *m, void *st, const uint8_t *p, size_t n)
{
	if (n != 8)
		return mm_diag_set(MM_ECORRUPT, "tsum: %zu bytes, expected 8", n);
	set_i64(st, (int64_t)mm_get_u64le(p));
	return 0;
}

static int tsum_to_json(const mm_monoid_t *m, const void *st, mm_buf_t *out)
{
	return mm_buf_printf(out, "{\"value\":%lld}", (long long)get_i64(st));
}

static int tsum_is_identity(const mm_monoid_t *m, const void *st)
{
	return get_i64(st) == 0;
}

static const mm_monoid_vtable_t tsum_vtable = {
	.name = "tsum",
	.value_kind = MM_VK_NUMBER,
	.init = tsum_init,
	.destroy = tsum_destroy,
	.add = tsum_add,
	.merge = tsum_merge,
	.encode = tsum_encode,
	.decode = tsum_decode,
	.to_json = tsum_to_json,
	.is_identity = tsum_is_identity,
};

static const mm_monoid_t tsum = {.vt = &tsum_vtable};
static const mm_ns_t NS = {.name = "pipe.a-1_x", .m = &tsum};
static const mm_ns_t NS2 = {.name = "other", .m = &tsum};

/* ---- fixtures ---------------------------------------------------------- */

typedef struct fx {
	uv_loop_t loop;
	mm_store_t *st;
	const char *backend;
	char dir[64];   /* temporary directory, removed at the end */
	char path[128]; /* dir/sub/db: nested, so open must create parents */
} fx_t;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int fx_open_with(fx_t *fx, int read_only, const char *map_size, const char *sync)
{
	mm_kv_t kv[3];
	size_t n = 0;

	if (strcmp(fx->backend, "lmdb") == 0) {
		kv[n++] = (mm_kv_t){"path", fx->path};
		if (map_size)
			kv[n++] = (mm_kv_t){"map_size", map_size};
		if (sync)
			kv[n++] = (mm_kv_t){"sync", sync};
	}
	return mm_store_open(fx->backend, &fx->loop, kv, n, read_only, &fx->st);
}

static int fx_init(fx_t *fx, const char *backend)
{
	memset(fx, 0, sizeof(*fx));
	fx->backend = backend;
	uv_loop_init(&fx->loop);
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/mm_store_XXXXXX");
	if (mkdtemp(fx->dir) == NULL)
		return -1;
	snprintf(fx->path, sizeof(fx->path), "%s/sub/db", fx->dir);
	return fx_open_with(fx, 0, NULL, NULL);
}

/* Closes the store and runs the loop until the close has finished. */
static void fx_close_store(fx_t *fx)
{
	mm_store_close(fx->st);
	fx->st = NULL;
	uv_run(&fx->loop, UV_RUN_DEFAULT);
}

static void fx_fini(fx_t *fx)
{
	fx_close_store(fx);
	CHECK(uv_loop_close(&fx->loop) == 0);
	nftw(fx->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Applies f, checking that the callback runs exactly once and never inside
 * the call; returns the call's error or the callback's status. */
static int apply(fx_t *fx, mm_flush_t *f, done_t *d)
{
	int rc;

	memset(d, 0, sizeof(*d));
	rc = mm_store_apply(fx->st, f, on_done, d);
	CHECK(d->calls == 0);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	if (rc)
		return rc;
	CHECK(d->calls == 1);
	return d->status;
}

static int get_many(fx_t *fx, const mm_ns_t *ns, const mm_key_t *keys, size_t n, void *states,
		    uint8_t *found)
{
	done_t d = {0};
	size_t i;
	int rc;

	for (i = 0; i < n; i++)
		ns->m->vt->init(ns->m, (char *)states + i * MM_STATE_MAX);
	rc = mm_store_get_many(fx->st, ns, keys, n, states, found, on_done, &d);
	CHECK(d.calls == 0);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	if (rc)
		return rc;
	CHECK(d.calls == 1);
	return d.status;
}

/* Reads one state: returns 1 found (value in *v), 0 absent, or an error. */
static int get1(fx_t *fx, const mm_ns_t *ns, const void *e, size_t len, int64_t bucket, int64_t *v)
{
	_Alignas(16) unsigned char s[MM_STATE_MAX];
	mm_key_t k = {e, len, bucket};
	uint8_t found = 7;
	int rc = get_many(fx, ns, &k, 1, s, &found);

	if (rc)
		return rc;
	*v = get_i64(s);
	if (!found)
		CHECK(*v == 0);
	return found;
}

/* A flush under construction, with room for MAXD deltas. */
typedef struct batch {
	mm_flush_t f;
	mm_delta_t d[MAXD];
	_Alignas(16) unsigned char s[MAXD][MM_STATE_MAX];
	mm_mark_t marks[MAXD];
	mm_purge_t purges[4];
	mm_position_t pos[4];
} batch_t;

static void batch_init(batch_t *b, int64_t now)
{
	memset(b, 0, sizeof(*b));
	b->f.deltas = b->d;
	b->f.marks = b->marks;
	b->f.purges = b->purges;
	b->f.positions = b->pos;
	b->f.now_ms = now;
}

static void add_delta(batch_t *b, const mm_ns_t *ns, const void *e, size_t len, int64_t bucket,
		      int64_t v, int64_t expire)
{
	size_t i = b->f.ndeltas++;

	set_i64(b->s[i], v);
	b->d[i] = (mm_delta_t){.ns = ns, .key = {e, len, bucket}, .expire_ms = expire,
			       .state = b->s[i]};
}

static void add_mark(batch_t *b, const mm_ns_t *ns, const void *id, size_t len, int64_t expire)
{
	b->marks[b->f.nmarks++] = (mm_mark_t){ns, id, len, expire, 0, {0, 0}};
}

static void add_purge(batch_t *b, const mm_ns_t *ns, int64_t before)
{
	b->purges[b->f.npurges++] = (mm_purge_t){ns, before};
}

static void add_pos(batch_t *b, const char *source, const void *p, size_t len)
{
	b->pos[b->f.npositions++] = (mm_position_t){source, p, len};
}

#define S(x) (x), strlen(x)

/* ---- tests for both backends ------------------------------------------ */

static void t_apply_get(const char *backend)
{
	static batch_t b;
	_Alignas(16) unsigned char s[5][MM_STATE_MAX];
	mm_key_t keys[5] = {{S("alice"), 0}, {S("bob"), 0}, {S("alice"), 5},
			    {S("carol"), 0}, {S("alice"), -3}};
	uint8_t found[5];
	fx_t fx;
	done_t d;

	REQUIRE(fx_init(&fx, backend) == 0);
	REQUIRE(fx.st != NULL);
	batch_init(&b, mm_now_ms());
	add_delta(&b, &NS, S("alice"), 0, 3, 0);
	add_delta(&b, &NS, S("bob"), 0, 4, 0);
	add_delta(&b, &NS, S("alice"), 5, 10, 0);
	add_delta(&b, &NS, S("alice"), -3, -7, 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(b.f.writes, 4);
	CHECK_EQ_INT(b.f.purged, 0);
	CHECK(d.detail[0] == '\0');

	CHECK_EQ_INT(get_many(&fx, &NS, keys, 5, s, found), 0);
	CHECK(found[0] && found[1] && found[2] && !found[3] && found[4]);
	CHECK_EQ_INT(get_i64(s[0]), 3);
	CHECK_EQ_INT(get_i64(s[1]), 4);
	CHECK_EQ_INT(get_i64(s[2]), 10);
	CHECK_EQ_INT(get_i64(s[3]), 0);
	CHECK_EQ_INT(get_i64(s[4]), -7);
	/* The same entity in another namespace is another state. */
	CHECK_EQ_INT(get_many(&fx, &NS2, keys, 1, s, found), 0);
	CHECK(!found[0]);

	CHECK_EQ_INT(fx.st->stats.ops[MM_STORE_OP_APPLY], 1);
	CHECK_EQ_INT(fx.st->stats.ops[MM_STORE_OP_GET_MANY], 2);
	CHECK_EQ_INT(fx.st->stats.errors[MM_STORE_OP_APPLY], 0);
	CHECK(fx.st->stats.ns_total[MM_STORE_OP_APPLY] > 0);
	CHECK(fx.st->stats.ns_max[MM_STORE_OP_GET_MANY] > 0);
	CHECK(fx.st->stats.ns_max[MM_STORE_OP_GET_MANY] <=
	      fx.st->stats.ns_total[MM_STORE_OP_GET_MANY]);
	fx_fini(&fx);
}

static void t_merge_accumulates(const char *backend)
{
	static batch_t b;
	int64_t v = 0;
	fx_t fx;
	done_t d;
	int i;

	REQUIRE(fx_init(&fx, backend) == 0);
	for (i = 1; i <= 3; i++) {
		batch_init(&b, mm_now_ms());
		add_delta(&b, &NS, S("k"), 7, i, 0);
		CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	}
	CHECK_EQ_INT(get1(&fx, &NS, S("k"), 7, &v), 1);
	CHECK_EQ_INT(v, 6);
	/* Twice the same key in one flush: the second merge sees the first. */
	batch_init(&b, mm_now_ms());
	add_delta(&b, &NS, S("k"), 7, 10, 0);
	add_delta(&b, &NS, S("k"), 7, 20, 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(get1(&fx, &NS, S("k"), 7, &v), 1);
	CHECK_EQ_INT(v, 36);
	/* The caller's deltas are read, never merged into. */
	CHECK_EQ_INT(get_i64(b.s[0]), 10);
	CHECK_EQ_INT(get_i64(b.s[1]), 20);
	/* Neighbouring buckets are untouched. */
	CHECK_EQ_INT(get1(&fx, &NS, S("k"), 6, &v), 0);
	CHECK_EQ_INT(get1(&fx, &NS, S("k"), 8, &v), 0);
	fx_fini(&fx);
}

static void t_positions(const char *backend)
{
	static batch_t b;
	static const uint8_t p1[] = {1, 2, 0, 3};
	mm_buf_t out = {0};
	int i, rc = 0;
	fx_t fx;
	done_t d;

	REQUIRE(fx_init(&fx, backend) == 0);
	CHECK_EQ_INT(mm_store_get_position_wait(fx.st, "kafka:t:0", &out), MM_ENOTFOUND);
	batch_init(&b, mm_now_ms());
	add_pos(&b, "kafka:t:0", p1, sizeof(p1));
	add_pos(&b, "file:/x", NULL, 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(mm_store_get_position_wait(fx.st, "kafka:t:0", &out), 0);
	CHECK(out.len == sizeof(p1) && memcmp(out.p, p1, sizeof(p1)) == 0);
	out.len = 0;
	CHECK_EQ_INT(mm_store_get_position_wait(fx.st, "file:/x", &out), 0);
	CHECK_EQ_INT(out.len, 0);
	/* A later flush moves the position; out is appended to. */
	batch_init(&b, mm_now_ms());
	add_pos(&b, "kafka:t:0", "xyz", 3);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	mm_buf_append(&out, "<", 1);
	CHECK_EQ_INT(mm_store_get_position_wait(fx.st, "kafka:t:0", &out), 0);
	CHECK(out.len == 4 && memcmp(out.p, "<xyz", 4) == 0);
	CHECK_EQ_INT(mm_store_get_position_wait(fx.st, "kafka:t:1", &out), MM_ENOTFOUND);
	/* Short read transactions give their reader slot back (126 by default). */
	for (i = 0; i < 300; i++) {
		out.len = 0;
		rc |= mm_store_get_position_wait(fx.st, "kafka:t:0", &out);
	}
	CHECK_EQ_INT(rc, 0);
	CHECK_EQ_INT(fx.st->stats.ops[MM_STORE_OP_POSITION], 305);
	CHECK_EQ_INT(fx.st->stats.errors[MM_STORE_OP_POSITION], 0);
	mm_buf_free(&out);
	fx_fini(&fx);
}

/* Whether id is counted in ns, asked as the engine asks: one claim with
 * the id's hash h (all zero: none, the store hashes the id), run to
 * completion. 1 counted (DUPLICATE), 0 new (WON), or a negative MM_E*. */
static int marked_h(fx_t *fx, const mm_ns_t *ns, const char *id, size_t len,
		    const mm_idhash_t *h)
{
	mm_claim_t c = {.id = id, .len = len, .hash = *h};
	done_t d = {0};
	int rc = mm_store_claim(fx->st, ns, &c, 1, 60000, on_done, &d);

	if (rc)
		return rc;
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	if (d.calls != 1 || d.status)
		return d.status ? d.status : MM_EINVAL;
	return c.result == MM_CLAIM_DUPLICATE;
}

static int marked(fx_t *fx, const mm_ns_t *ns, const char *id, size_t len)
{
	const mm_idhash_t none = {0, 0};

	return marked_h(fx, ns, id, len, &none);
}

/* Marks answer claims, on both private stores: a live mark makes an id
 * counted (DUPLICATE), an expired or absent one new (WON); the answer
 * comes later, from one call for many ids; renew and release change nothing. */
static void t_marks_claims(const char *backend)
{
	static batch_t b;
	static char long1[1024], long2[1024];
	int64_t t = mm_now_ms();
	mm_claim_t c[5] = {
		{.id = "evt-1", .len = 5}, {.id = "a\0b", .len = 3}, {.id = "gone", .len = 4},
		{.id = "never", .len = 5}, {.id = "a\0c", .len = 3},
	};
	fx_t fx;
	done_t d;

	memset(long1, 'x', sizeof(long1));
	memcpy(long2, long1, sizeof(long2));
	long2[1023] = 'y';
	REQUIRE(fx_init(&fx, backend) == 0);
	batch_init(&b, t);
	add_mark(&b, &NS, S("evt-1"), t + 60000);
	add_mark(&b, &NS, "a\0b", 3, t + 60000);
	add_mark(&b, &NS, long1, sizeof(long1), t + 60000);
	add_mark(&b, &NS, S("gone"), t - 1);
	add_mark(&b, &NS2, S("never"), t + 60000);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);

	memset(&d, 0, sizeof(d));
	CHECK_EQ_INT(mm_store_claim(fx.st, &NS, c, 5, 60000, on_done, &d), 0);
	CHECK(d.calls == 0);
	uv_run(&fx.loop, UV_RUN_DEFAULT);
	CHECK(d.calls == 1 && d.status == 0);
	CHECK_EQ_INT(c[0].result, MM_CLAIM_DUPLICATE);
	CHECK_EQ_INT(c[1].result, MM_CLAIM_DUPLICATE);
	CHECK_EQ_INT(c[2].result, MM_CLAIM_WON); /* its mark expired */
	CHECK_EQ_INT(c[3].result, MM_CLAIM_WON); /* marked in another namespace */
	CHECK_EQ_INT(c[4].result, MM_CLAIM_WON);
	CHECK_EQ_INT(marked(&fx, &NS, "a", 1), 0);
	CHECK_EQ_INT(marked(&fx, &NS, long1, sizeof(long1)), 1);
	CHECK_EQ_INT(marked(&fx, &NS, long2, sizeof(long2)), 0);
	CHECK_EQ_INT(marked(&fx, &NS, long1, 1023), 0);
	CHECK_EQ_INT(marked(&fx, &NS2, S("evt-1")), 0);

	/* Marking again keeps the later expiry. */
	batch_init(&b, t);
	add_mark(&b, &NS, S("evt-1"), t - 1);
	add_mark(&b, &NS, long2, sizeof(long2), t + 60000);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(marked(&fx, &NS, S("evt-1")), 1);
	CHECK_EQ_INT(marked(&fx, &NS, long2, sizeof(long2)), 1);

	memset(&d, 0, sizeof(d));
	CHECK_EQ_INT(mm_store_renew(fx.st, &NS, c + 2, 3, on_done, &d), 0);
	uv_run(&fx.loop, UV_RUN_DEFAULT);
	CHECK(d.calls == 1 && d.status == 0 && c[2].result == MM_CLAIM_RENEWED);
	memset(&d, 0, sizeof(d));
	CHECK_EQ_INT(mm_store_release(fx.st, &NS, c + 2, 3, on_done, &d), 0);
	uv_run(&fx.loop, UV_RUN_DEFAULT);
	CHECK(d.calls == 1 && d.status == 0 && c[4].result == MM_CLAIM_RELEASED);
	CHECK_EQ_INT(fx.st->stats.ops[MM_STORE_OP_CLAIM], 8);
	CHECK_EQ_INT(fx.st->stats.errors[MM_STORE_OP_CLAIM], 0);
	fx_fini(&fx);
}

/* Entities for the purge and binary tests: short, with NUL bytes, and long
 * enough for LMDB's hashed form (up to 1024 bytes). */
#define NENT 8
static char ent_buf[NENT][1024];
static size_t ent_len[NENT];

static void make_entities(void)
{
	static const size_t lens[NENT] = {1, 3, 3, 2, 100, 370, 600, 1024};
	size_t i;

	for (i = 0; i < NENT; i++) {
		ent_len[i] = lens[i];
		memset(ent_buf[i], 'a' + (int)i, lens[i]);
	}
	memcpy(ent_buf[1], "a\0b", 3);
	memcpy(ent_buf[2], "a\0c", 3);
	memcpy(ent_buf[3], "a\0", 2);
}

static void t_purge(const char *backend)
{
	static const int64_t buckets[] = {-2, 0, 1, 2, 3, 4, 5, 6, 7};
	const size_t nb = sizeof(buckets) / sizeof(buckets[0]);
	static batch_t b;
	size_t i, j;
	int64_t v;
	fx_t fx;
	done_t d;

	make_entities();
	REQUIRE(fx_init(&fx, backend) == 0);
	batch_init(&b, mm_now_ms());
	for (i = 0; i < NENT; i++)
		for (j = 0; j < nb; j++) {
			add_delta(&b, &NS, ent_buf[i], ent_len[i], buckets[j], 100 + (int64_t)j, 0);
			add_delta(&b, &NS2, ent_buf[i], ent_len[i], buckets[j], 1, 0);
		}
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);

	/* before_bucket <= 1 is an empty range. */
	batch_init(&b, mm_now_ms());
	add_purge(&b, &NS, 1);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(b.f.purged, 0);

	batch_init(&b, mm_now_ms());
	add_purge(&b, &NS, 5);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(b.f.purged, NENT * 4);
	for (i = 0; i < NENT; i++)
		for (j = 0; j < nb; j++) {
			int gone = buckets[j] >= 1 && buckets[j] < 5;

			CHECK_EQ_INT(get1(&fx, &NS, ent_buf[i], ent_len[i], buckets[j], &v), !gone);
			if (!gone)
				CHECK_EQ_INT(v, 100 + (int64_t)j);
			CHECK_EQ_INT(get1(&fx, &NS2, ent_buf[i], ent_len[i], buckets[j], &v), 1);
		}
	/* Purging again finds nothing more below 5; a later purge takes 5..6. */
	batch_init(&b, mm_now_ms());
	add_purge(&b, &NS, 5);
	add_purge(&b, &NS2, 7);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(b.f.purged, NENT * 6);
	CHECK_EQ_INT(get1(&fx, &NS2, ent_buf[7], ent_len[7], 6, &v), 0);
	CHECK_EQ_INT(get1(&fx, &NS2, ent_buf[7], ent_len[7], 7, &v), 1);
	CHECK_EQ_INT(get1(&fx, &NS2, ent_buf[7], ent_len[7], 0, &v), 1);
	fx_fini(&fx);
}

static void t_expiry(const char *backend)
{
	static batch_t b;
	int64_t t = mm_now_ms(), v;
	fx_t fx;
	done_t d;

	REQUIRE(fx_init(&fx, backend) == 0);
	batch_init(&b, t);
	add_delta(&b, &NS, S("old"), 1, 5, t - 1);
	add_delta(&b, &NS, S("live"), 1, 5, t + 60000);
	add_delta(&b, &NS, S("forever"), 1, 5, 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(get1(&fx, &NS, S("old"), 1, &v), 0);
	CHECK_EQ_INT(get1(&fx, &NS, S("live"), 1, &v), 1);
	CHECK_EQ_INT(v, 5);
	CHECK_EQ_INT(get1(&fx, &NS, S("forever"), 1, &v), 1);

	/* A flush whose clock is past the stored expiry replaces, not merges. */
	batch_init(&b, t + 60000);
	add_delta(&b, &NS, S("live"), 1, 7, t + 120000);
	add_delta(&b, &NS, S("forever"), 1, 7, 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(get1(&fx, &NS, S("live"), 1, &v), 1);
	CHECK_EQ_INT(v, 7);
	CHECK_EQ_INT(get1(&fx, &NS, S("forever"), 1, &v), 1);
	CHECK_EQ_INT(v, 12);
	/* Before it, the same delta merges. */
	batch_init(&b, t);
	add_delta(&b, &NS, S("live"), 1, 1, t + 120000);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(get1(&fx, &NS, S("live"), 1, &v), 1);
	CHECK_EQ_INT(v, 8);
	fx_fini(&fx);
}

static void t_meta(const char *backend)
{
	mm_buf_t out = {0};
	fx_t fx;

	REQUIRE(fx_init(&fx, backend) == 0);
	CHECK_EQ_INT(mm_store_list_meta_wait(fx.st, &out), 0);
	CHECK_EQ_INT(out.len, 0);
	CHECK_EQ_INT(mm_store_get_meta_wait(fx.st, "b", &out), MM_ENOTFOUND);
	CHECK_EQ_INT(mm_store_put_meta_wait(fx.st, "b", (const uint8_t *)"B1", 2), 0);
	CHECK_EQ_INT(mm_store_put_meta_wait(fx.st, "c.x", (const uint8_t *)"\0\1\2", 3), 0);
	CHECK_EQ_INT(mm_store_put_meta_wait(fx.st, "a", NULL, 0), 0);
	CHECK_EQ_INT(mm_store_put_meta_wait(fx.st, "b", (const uint8_t *)"B22", 3), 0);
	CHECK_EQ_INT(mm_store_get_meta_wait(fx.st, "b", &out), 0);
	CHECK(out.len == 3 && memcmp(out.p, "B22", 3) == 0);
	out.len = 0;
	CHECK_EQ_INT(mm_store_get_meta_wait(fx.st, "c.x", &out), 0);
	CHECK(out.len == 3 && memcmp(out.p, "\0\1\2", 3) == 0);
	out.len = 0;
	CHECK_EQ_INT(mm_store_get_meta_wait(fx.st, "a", &out), 0);
	CHECK_EQ_INT(out.len, 0);
	CHECK_EQ_INT(mm_store_list_meta_wait(fx.st, &out), 0);
	CHECK(out.len == 8 && memcmp(out.p, "a\0b\0c.x\0", 8) == 0);
	CHECK_EQ_INT(mm_store_put_meta_wait(fx.st, "bad name", (const uint8_t *)"x", 1), MM_EINVAL);
	mm_buf_free(&out);
	fx_fini(&fx);
}

/* Entities with NUL bytes, around LMDB's inline/hashed boundary and of 1024
 * bytes, differing only in their last byte, all stay distinct. */
static void t_binary_entities(const char *backend)
{
	static batch_t b;
	static char e[MAXD][1024];
	static size_t len[MAXD];
	size_t i, n = 0, l;
	int64_t v;
	fx_t fx;
	done_t d;

	make_entities();
	REQUIRE(fx_init(&fx, backend) == 0);
	for (i = 0; i < NENT; i++) {
		memcpy(e[n], ent_buf[i], ent_len[i]);
		len[n++] = ent_len[i];
	}
	for (l = 360; l <= 380; l += 2) {
		memset(e[n], 'q', l);
		len[n++] = l;
	}
	for (l = 495; l <= 515; l += 2) {
		memset(e[n], 'q', l);
		len[n++] = l;
	}
	for (i = 0; i < 6; i++) {
		memset(e[n], 'z', 1024);
		e[n][1023] = (char)i;
		len[n++] = 1024;
	}
	batch_init(&b, mm_now_ms());
	for (i = 0; i < n; i++)
		add_delta(&b, &NS, e[i], len[i], 3, 1000 + (int64_t)i, 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	batch_init(&b, mm_now_ms());
	for (i = 0; i < n; i++)
		add_delta(&b, &NS, e[i], len[i], 3, 1, 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	for (i = 0; i < n; i++) {
		CHECK_EQ_INT(get1(&fx, &NS, e[i], len[i], 3, &v), 1);
		CHECK_EQ_INT(v, 1001 + (int64_t)i);
		CHECK_EQ_INT(get1(&fx, &NS, e[i], len[i], 4, &v), 0);
	}
	CHECK_EQ_INT(get1(&fx, &NS, e[n - 1], 1023, 3, &v), 0);
	fx_fini(&fx);
}

/* A value that fails to decode fails the apply that would merge into it,
 * and nothing of that flush is written. */
static void t_corrupt(const char *backend)
{
	static batch_t b;
	mm_buf_t out = {0};
	int64_t v;
	fx_t fx;
	done_t d;

	REQUIRE(fx_init(&fx, backend) == 0);
	batch_init(&b, mm_now_ms());
	add_delta(&b, &NS, "p\0", 2, 9, POISON, 0);
	add_delta(&b, &NS, S("fine"), 9, 1, 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);

	batch_init(&b, mm_now_ms());
	add_delta(&b, &NS, S("fresh"), 9, 1, 0);
	add_delta(&b, &NS, S("fine"), 9, 1, 0);
	add_delta(&b, &NS, "p\0", 2, 9, 1, 0);
	add_pos(&b, "src", "1", 1);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), MM_ECORRUPT);
	CHECK(strstr(d.detail, "pipe.a-1_x") != NULL);
	CHECK(strstr(d.detail, "tsum: 3 bytes") != NULL);
	CHECK(!mm_err_retriable(MM_ECORRUPT));
	CHECK_EQ_INT(b.f.writes, 0);
	CHECK_EQ_INT(fx.st->stats.errors[MM_STORE_OP_APPLY], 1);
	CHECK_EQ_INT(get1(&fx, &NS, S("fresh"), 9, &v), 0);
	CHECK_EQ_INT(get1(&fx, &NS, S("fine"), 9, &v), 1);
	CHECK_EQ_INT(v, 1);
	CHECK_EQ_INT(mm_store_get_position_wait(fx.st, "src", &out), MM_ENOTFOUND);
	CHECK_EQ_INT(get1(&fx, &NS, "p\0", 2, 9, &v), MM_ECORRUPT);
	CHECK_EQ_INT(fx.st->stats.errors[MM_STORE_OP_GET_MANY], 1);
	mm_buf_free(&out);
	fx_fini(&fx);
}

/* A delta the monoid cannot merge into the stored state (an overflowing sum)
 * is handed back MM_DELTA_REJECTED with the state untouched, and the rest of
 * the flush commits: retrying could never help. */
static void t_rejected_delta(const char *backend)
{
	static batch_t b;
	static uint8_t done[MAXD];
	mm_buf_t out = {0};
	int64_t v;
	fx_t fx;
	done_t d;

	REQUIRE(fx_init(&fx, backend) == 0);
	batch_init(&b, mm_now_ms());
	add_delta(&b, &NS, S("big"), 0, INT64_MAX - 5, 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);

	batch_init(&b, mm_now_ms());
	memset(done, 0, sizeof(done));
	b.f.delta_done = done;
	add_delta(&b, &NS, S("fine"), 0, 1, 0);
	add_delta(&b, &NS, S("big"), 0, 6, 0);
	add_delta(&b, &NS, S("new"), 0, 2, 0);
	add_pos(&b, "src", "7", 1);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(b.f.rejected, 1);
	CHECK(strstr(b.f.reject_detail, "overflows") != NULL);
	for (size_t i = 0; i < b.f.ndeltas; i++)
		if (b.d[i].key.len == 3 && memcmp(b.d[i].key.entity, "big", 3) == 0)
			CHECK_EQ_INT(done[i], MM_DELTA_REJECTED);
		else
			CHECK(done[i] != MM_DELTA_REJECTED);
	CHECK_EQ_INT(get1(&fx, &NS, S("big"), 0, &v), 1);
	CHECK_EQ_INT(v, INT64_MAX - 5);
	CHECK_EQ_INT(get1(&fx, &NS, S("fine"), 0, &v), 1);
	CHECK_EQ_INT(v, 1);
	CHECK_EQ_INT(get1(&fx, &NS, S("new"), 0, &v), 1);
	CHECK_EQ_INT(v, 2);
	CHECK_EQ_INT(mm_store_get_position_wait(fx.st, "src", &out), 0);
	CHECK(out.len == 1 && out.p[0] == '7');
	mm_buf_free(&out);
	fx_fini(&fx);
}

/* Bad arguments fail in the call, and then no callback ever runs. */
static void t_validation(const char *backend)
{
	static batch_t b;
	static char big[1025];
	_Alignas(16) unsigned char s[MM_STATE_MAX];
	mm_ns_t badns = {.name = "a/b", .m = &tsum}, nomonoid = {.name = "a"};
	mm_key_t k = {S("x"), 0};
	mm_kv_t kv = {"colour", "blue"};
	mm_store_t *other = NULL;
	mm_buf_t out = {0};
	uint8_t found;
	done_t d = {0};
	fx_t fx;

	REQUIRE(fx_init(&fx, backend) == 0);
	CHECK_EQ_INT(mm_store_open("nosuch", &fx.loop, NULL, 0, 0, &other), MM_ENOTFOUND);
	CHECK(strstr(mm_diag_msg(), "lmdb, memory") != NULL);
	CHECK_EQ_INT(mm_store_open(backend, &fx.loop, &kv, 1, 0, &other), MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "colour") != NULL);
	CHECK(other == NULL);
	CHECK(mm_store_find("lmdb") != NULL && mm_store_find("memory") != NULL);

	batch_init(&b, mm_now_ms());
	add_delta(&b, &badns, S("x"), 0, 1, 0);
	CHECK_EQ_INT(mm_store_apply(fx.st, &b.f, on_done, &d), MM_EINVAL);
	b.d[0].ns = &nomonoid;
	CHECK_EQ_INT(mm_store_apply(fx.st, &b.f, on_done, &d), MM_EINVAL);
	b.d[0].ns = &NS;
	b.d[0].key.len = 0;
	CHECK_EQ_INT(mm_store_apply(fx.st, &b.f, on_done, &d), MM_EINVAL);
	b.d[0].key = (mm_key_t){big, sizeof(big), 0};
	CHECK_EQ_INT(mm_store_apply(fx.st, &b.f, on_done, &d), MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "1025") != NULL);
	b.d[0].key = (mm_key_t){big, 1024, 0};
	b.d[0].state = NULL;
	CHECK_EQ_INT(mm_store_apply(fx.st, &b.f, on_done, &d), MM_EINVAL);
	batch_init(&b, mm_now_ms());
	add_pos(&b, "", "1", 1);
	CHECK_EQ_INT(mm_store_apply(fx.st, &b.f, on_done, &d), MM_EINVAL);
	batch_init(&b, mm_now_ms());
	add_mark(&b, &NS, big, 1025, 1);
	CHECK_EQ_INT(mm_store_apply(fx.st, &b.f, on_done, &d), MM_EINVAL);
	b.f.marks = NULL;
	CHECK_EQ_INT(mm_store_apply(fx.st, &b.f, on_done, &d), MM_EINVAL);
	CHECK_EQ_INT(mm_store_apply(fx.st, &b.f, NULL, &d), MM_EINVAL);
	CHECK_EQ_INT(mm_store_apply(NULL, &b.f, on_done, &d), MM_EINVAL);
	CHECK_EQ_INT(fx.st->stats.errors[MM_STORE_OP_APPLY], 9);

	CHECK_EQ_INT(mm_store_get_many(fx.st, &NS, &k, 0, s, &found, on_done, &d), MM_EINVAL);
	CHECK_EQ_INT(mm_store_get_many(fx.st, &badns, &k, 1, s, &found, on_done, &d), MM_EINVAL);
	CHECK_EQ_INT(mm_store_get_many(fx.st, &NS, &k, 1, s, NULL, on_done, &d), MM_EINVAL);
	{
		mm_claim_t c = {.id = big, .len = 0};

		CHECK_EQ_INT(mm_store_claim(fx.st, &NS, &c, 1, 1000, on_done, &d), MM_EINVAL);
	}
	CHECK_EQ_INT(mm_store_get_position_wait(fx.st, NULL, &out), MM_EINVAL);
	CHECK_EQ_INT(mm_store_get_meta_wait(fx.st, "", &out), MM_EINVAL);
	memset(big, 'n', 129);
	big[129] = '\0';
	CHECK_EQ_INT(mm_store_get_meta_wait(fx.st, big, &out), MM_EINVAL);
	big[128] = '\0';
	CHECK_EQ_INT(mm_store_get_meta_wait(fx.st, big, &out), MM_ENOTFOUND);
	CHECK_EQ_INT(mm_store_put_meta_wait(fx.st, "a", NULL, 1), MM_EINVAL);
	CHECK_EQ_INT(mm_store_list_meta_wait(fx.st, NULL), MM_EINVAL);

	/* An empty flush is valid and completes like any other. */
	batch_init(&b, mm_now_ms());
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	uv_run(&fx.loop, UV_RUN_DEFAULT);
	CHECK_EQ_INT(d.calls, 1);
	fx_fini(&fx);
}

/* Several operations in flight complete in order, each exactly once. */
static void t_pipelined(const char *backend)
{
	static batch_t b1, b2;
	_Alignas(16) unsigned char s[MM_STATE_MAX];
	mm_key_t k = {S("k"), 0};
	done_t d1 = {0}, d2 = {0}, d3 = {0};
	uint8_t found = 0;
	fx_t fx;

	REQUIRE(fx_init(&fx, backend) == 0);
	batch_init(&b1, mm_now_ms());
	add_delta(&b1, &NS, S("k"), 0, 2, 0);
	CHECK_EQ_INT(mm_store_apply(fx.st, &b1.f, on_done, &d1), 0);
	uv_run(&fx.loop, UV_RUN_DEFAULT);
	batch_init(&b2, mm_now_ms());
	add_delta(&b2, &NS, S("k"), 0, 3, 0);
	CHECK_EQ_INT(mm_store_apply(fx.st, &b2.f, on_done, &d2), 0);
	tsum_init(&tsum, s);
	CHECK_EQ_INT(mm_store_get_many(fx.st, &NS, &k, 1, s, &found, on_done, &d3), 0);
	CHECK(d1.calls == 1 && d2.calls == 0 && d3.calls == 0);
	uv_run(&fx.loop, UV_RUN_DEFAULT);
	CHECK(d2.calls == 1 && d3.calls == 1);
	CHECK(d2.status == 0 && d3.status == 0);
	/* The read saw the first apply and maybe the second. */
	CHECK(found == 1 && (get_i64(s) == 2 || get_i64(s) == 5));
	fx_fini(&fx);
}

#define BOTH(fn)                                                                    \
	TEST(memory_##fn) { t_##fn("memory"); }                                     \
	TEST(lmdb_##fn) { t_##fn("lmdb"); }

BOTH(apply_get)
BOTH(merge_accumulates)
BOTH(positions)
BOTH(marks_claims)
BOTH(purge)
BOTH(expiry)
BOTH(meta)
BOTH(binary_entities)
BOTH(corrupt)
BOTH(rejected_delta)
BOTH(validation)
BOTH(pipelined)

/* ---- LMDB only --------------------------------------------------------- */

/* Opens the environment at path with liblmdb directly (the store is closed). */
static int raw_open(const char *path, MDB_env **env, MDB_txn **txn, const char *db, MDB_dbi *dbi)
{
	int rc;

	if ((rc = mdb_env_create(env)) || (rc = mdb_env_set_maxdbs(*env, 4)) ||
	    (rc = mdb_env_open(*env, path, 0, 0644)) ||
	    (rc = mdb_txn_begin(*env, NULL, 0, txn)) || (rc = mdb_dbi_open(*txn, db, 0, dbi)))
		return rc;
	return 0;
}

static size_t raw_count(const char *path, const char *db)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_stat stat = {0};

	if (raw_open(path, &env, &txn, db, &dbi) == 0)
		mdb_stat(txn, dbi, &stat);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return stat.ms_entries;
}

TEST(lmdb_reopen)
{
	static batch_t b;
	mm_buf_t out = {0};
	int64_t v;
	fx_t fx;
	done_t d;

	REQUIRE(fx_init(&fx, "lmdb") == 0);
	batch_init(&b, mm_now_ms());
	add_delta(&b, &NS, S("k"), 1, 41, 0);
	add_pos(&b, "src", "p1", 2);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(mm_store_put_meta_wait(fx.st, NS.name, (const uint8_t *)"m", 1), 0);
	fx_close_store(&fx);

	/* sync=false only changes durability on power loss, not what is read. */
	REQUIRE(fx_open_with(&fx, 0, "1m", "false") == 0);
	CHECK_EQ_INT(get1(&fx, &NS, S("k"), 1, &v), 1);
	CHECK_EQ_INT(v, 41);
	CHECK_EQ_INT(mm_store_get_position_wait(fx.st, "src", &out), 0);
	CHECK(out.len == 2 && memcmp(out.p, "p1", 2) == 0);
	out.len = 0;
	CHECK_EQ_INT(mm_store_get_meta_wait(fx.st, NS.name, &out), 0);
	CHECK(out.len == 1 && out.p[0] == 'm');
	batch_init(&b, mm_now_ms());
	add_delta(&b, &NS, S("k"), 1, 1, 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	fx_close_store(&fx);

	REQUIRE(fx_open_with(&fx, 1, NULL, NULL) == 0);
	CHECK_EQ_INT(get1(&fx, &NS, S("k"), 1, &v), 1);
	CHECK_EQ_INT(v, 42);
	/* A read-only store refuses writes in the call. */
	batch_init(&b, mm_now_ms());
	add_delta(&b, &NS, S("k"), 1, 1, 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), MM_ENOTSUP);
	CHECK_EQ_INT(mm_store_put_meta_wait(fx.st, "x", (const uint8_t *)"1", 1), MM_ENOTSUP);
	mm_buf_free(&out);
	fx_fini(&fx);
}

/* The resident kilobytes of this process's mapping of the file at path,
 * from /proc/self/smaps; -1 if it is not mapped. */
static long map_rss_kb(const char *path)
{
	char line[512];
	long kb = -1;
	int in = 0;
	FILE *f = fopen("/proc/self/smaps", "r");

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char *nl = strchr(line, '\n');

		if (nl)
			*nl = '\0';
		if (strchr(line, '-') && strchr(line, ':') && line[0] != ' ' &&
		    strstr(line, "kB") == NULL)
			in = strlen(line) >= strlen(path) &&
			     strcmp(line + strlen(line) - strlen(path), path) == 0;
		else if (in && sscanf(line, "Rss: %ld kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb;
}

/* An apply leaves none of the data file's pages mapped beyond a few that
 * reading the meta pages maps around them (the kernel maps up to 64 KiB
 * around a fault), where a read of every record maps the whole tree. */
TEST(lmdb_map_released)
{
	static batch_t b;
	static char ent[MAXD][400];
	_Alignas(16) static unsigned char states[MAXD][MM_STATE_MAX];
	static mm_key_t keys[MAXD];
	static uint8_t found[MAXD];
	char file[160];
	long before, after;
	fx_t fx;
	done_t d;

	REQUIRE(fx_init(&fx, "lmdb") == 0);
	snprintf(file, sizeof(file), "%s/data.mdb", fx.path);
	for (int r = 0; r < 16; r++) {
		batch_init(&b, mm_now_ms());
		for (int i = 0; i < MAXD; i++) {
			memset(ent[i], 'a' + r, sizeof(ent[i]));
			snprintf(ent[i], 16, "%03d", i);
			add_delta(&b, &NS, ent[i], sizeof(ent[i]), 1, 1, 0);
		}
		CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	}
	for (int i = 0; i < MAXD; i++)
		keys[i] = (mm_key_t){ent[i], sizeof(ent[i]), 1};
	CHECK_EQ_INT(get_many(&fx, &NS, keys, MAXD, states, found), 0);
	before = map_rss_kb(file);
	batch_init(&b, mm_now_ms());
	for (int i = 0; i < MAXD; i++)
		add_delta(&b, &NS, ent[i], sizeof(ent[i]), 1, 1, 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	after = map_rss_kb(file);
	CHECK(before >= 100);
	CHECK(after >= 0 && after <= 80);
	CHECK_EQ_INT(get_many(&fx, &NS, keys, MAXD, states, found), 0);
	CHECK(found[0] == 1 && found[MAXD - 1] == 1 && get_i64(states[0]) == 2);
	fx_fini(&fx);
}

TEST(lmdb_options)
{
	mm_kv_t kv[2];
	mm_store_t *st = NULL;
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val key = {1, "z"}, val = {1, "z"};
	uv_loop_t loop;
	char dir[64] = "/tmp/mm_store_XXXXXX", path[128];

	REQUIRE(mkdtemp(dir) != NULL);
	uv_loop_init(&loop);
	CHECK_EQ_INT(mm_store_open("lmdb", &loop, NULL, 0, 0, &st), MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "path") != NULL);
	snprintf(path, sizeof(path), "%s/missing", dir);
	kv[0] = (mm_kv_t){"path", path};
	CHECK_EQ_INT(mm_store_open("lmdb", &loop, kv, 1, 1, &st), MM_ENOTFOUND);
	kv[1] = (mm_kv_t){"map_size", "4k"};
	CHECK_EQ_INT(mm_store_open("lmdb", &loop, kv, 2, 0, &st), MM_EINVAL);
	kv[1] = (mm_kv_t){"max_readers", "0"};
	CHECK_EQ_INT(mm_store_open("lmdb", &loop, kv, 2, 0, &st), MM_EINVAL);
	kv[1] = (mm_kv_t){"sync", "maybe"};
	CHECK_EQ_INT(mm_store_open("lmdb", &loop, kv, 2, 0, &st), MM_EINVAL);
	CHECK(st == NULL);

	/* An LMDB environment that is not a murmur store is left alone. */
	snprintf(path, sizeof(path), "%s", dir);
	REQUIRE(mdb_env_create(&env) == 0);
	REQUIRE(mdb_env_open(env, path, 0, 0644) == 0);
	/* Still empty (a writer between creating and committing it): a reader
	 * finds nothing stored yet rather than a foreign store. */
	kv[0] = (mm_kv_t){"path", path};
	CHECK_EQ_INT(mm_store_open("lmdb", &loop, kv, 1, 1, &st), MM_ENOTFOUND);
	REQUIRE(mdb_txn_begin(env, NULL, 0, &txn) == 0);
	REQUIRE(mdb_dbi_open(txn, NULL, 0, &dbi) == 0);
	REQUIRE(mdb_put(txn, dbi, &key, &val, 0) == 0);
	REQUIRE(mdb_txn_commit(txn) == 0);
	mdb_env_close(env);
	kv[0] = (mm_kv_t){"path", path};
	CHECK_EQ_INT(mm_store_open("lmdb", &loop, kv, 1, 0, &st), MM_EINCOMPAT);
	CHECK(st == NULL);
	CHECK(uv_loop_close(&loop) == 0);
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The child of lmdb_readonly_process: a query process that opens the store
 * read-only beside the running writer. Exit codes name the failed step. */
static int reader_child(const char *path, int rfd, int wfd)
{
	mm_kv_t kv = {"path", path};
	fx_t fx;
	int64_t v = 0;
	char c;

	memset(&fx, 0, sizeof(fx));
	fx.backend = "lmdb";
	uv_loop_init(&fx.loop);
	if (mm_store_open("lmdb", &fx.loop, &kv, 1, 1, &fx.st) != 0)
		return 10;
	if (get1(&fx, &NS, S("k"), 0, &v) != 1 || v != 1)
		return 11;
	if (write(wfd, "r", 1) != 1 || read(rfd, &c, 1) != 1)
		return 12;
	/* The writer committed again meanwhile: a new read sees it. */
	if (get1(&fx, &NS, S("k"), 0, &v) != 1 || v != 3)
		return 13;
	if (marked(&fx, &NS, S("m1")) != 1)
		return 14;
	mm_store_close(fx.st);
	uv_run(&fx.loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&fx.loop) != 0)
		return 15;
	return 0;
}

TEST(lmdb_readonly_process)
{
	static batch_t b;
	int to_child[2], to_parent[2], status = -1;
	pid_t pid;
	char c = 0;
	fx_t fx;
	done_t d;

	REQUIRE(fx_init(&fx, "lmdb") == 0);
	batch_init(&b, mm_now_ms());
	add_delta(&b, &NS, S("k"), 0, 1, 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	REQUIRE(pipe(to_child) == 0 && pipe(to_parent) == 0);
	/* A dead child must fail the test, not kill the runner with SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);
	fflush(stdout);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		close(to_child[1]);
		close(to_parent[0]);
		_exit(reader_child(fx.path, to_child[0], to_parent[1]));
	}
	/* With only the child holding the write end, a child that dies early
	 * ends the read instead of hanging it. */
	close(to_child[0]);
	close(to_parent[1]);
	CHECK(read(to_parent[0], &c, 1) == 1 && c == 'r');
	batch_init(&b, mm_now_ms());
	add_delta(&b, &NS, S("k"), 0, 2, 0);
	add_mark(&b, &NS, S("m1"), mm_now_ms() + 600000);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK(write(to_child[1], "g", 1) == 1);
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status));
	CHECK_EQ_INT(WEXITSTATUS(status), 0);
	close(to_child[1]);
	close(to_parent[0]);
	fx_fini(&fx);
}

#ifdef MM_ERRINJ
TEST(lmdb_errinj)
{
	static batch_t b;
	mm_buf_t out = {0};
	int64_t v;
	fx_t fx;
	done_t d;

	REQUIRE(fx_init(&fx, "lmdb") == 0);
	setenv("MURMUR_ERRINJ_STORE_APPLY", "2", 1);
	batch_init(&b, mm_now_ms());
	add_delta(&b, &NS, S("k"), 0, 1, 0);
	add_pos(&b, "src", "1", 1);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), MM_ENOSPC);
	CHECK(strstr(d.detail, "injected") != NULL);
	CHECK(mm_err_retriable(d.status));
	CHECK_EQ_INT(apply(&fx, &b.f, &d), MM_ENOSPC);
	CHECK_EQ_INT(get1(&fx, &NS, S("k"), 0, &v), 0);
	CHECK_EQ_INT(mm_store_get_position_wait(fx.st, "src", &out), MM_ENOTFOUND);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK(strcmp(getenv("MURMUR_ERRINJ_STORE_APPLY"), "0") == 0);
	CHECK_EQ_INT(get1(&fx, &NS, S("k"), 0, &v), 1);
	CHECK_EQ_INT(fx.st->stats.errors[MM_STORE_OP_APPLY], 2);
	unsetenv("MURMUR_ERRINJ_STORE_APPLY");
	mm_buf_free(&out);
	fx_fini(&fx);
}
#endif

#define NPER 4

/* A 64 KiB map fills after a few flushes: the failing one writes nothing,
 * the error is retriable, and a bigger map_size carries on from the data. */
TEST(lmdb_map_full)
{
	static batch_t b;
	static char e[400][NPER][104];
	mm_buf_t out = {0};
	int rounds = 0, rc = 0, r, i;
	char pos[16];
	int64_t v;
	fx_t fx;
	done_t d;

	REQUIRE(fx_init(&fx, "lmdb") == 0);
	fx_close_store(&fx);
	REQUIRE(fx_open_with(&fx, 0, "64k", NULL) == 0);
	for (r = 0; r < 400; r++) {
		batch_init(&b, mm_now_ms());
		for (i = 0; i < NPER; i++) {
			snprintf(e[r][i], sizeof(e[r][i]), "%0*d-%d", 90, r, i);
			add_delta(&b, &NS, e[r][i], strlen(e[r][i]), 0, r * 100 + i, 0);
		}
		snprintf(pos, sizeof(pos), "%d", r);
		add_pos(&b, "src", pos, strlen(pos));
		if ((rc = apply(&fx, &b.f, &d)) != 0)
			break;
		rounds++;
	}
	CHECK_EQ_INT(rc, MM_ENOSPC);
	CHECK(mm_err_retriable(rc));
	CHECK(strstr(d.detail, "MDB_MAP_FULL") != NULL);
	REQUIRE(rounds > 2);
	for (i = 0; i < NPER; i++)
		CHECK_EQ_INT(get1(&fx, &NS, e[rounds][i], strlen(e[rounds][i]), 0, &v), 0);
	CHECK_EQ_INT(mm_store_get_position_wait(fx.st, "src", &out), 0);
	CHECK_EQ_INT(mm_buf_put_u8(&out, 0), 0);
	CHECK_EQ_INT(atoi((const char *)out.p), rounds - 1);
	fx_close_store(&fx);

	REQUIRE(fx_open_with(&fx, 0, "1m", NULL) == 0);
	for (r = 0; r < rounds; r++)
		for (i = 0; i < NPER; i++) {
			CHECK_EQ_INT(get1(&fx, &NS, e[r][i], strlen(e[r][i]), 0, &v), 1);
			CHECK_EQ_INT(v, r * 100 + i);
		}
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(get1(&fx, &NS, e[rounds][NPER - 1], strlen(e[rounds][NPER - 1]), 0, &v), 1);
	CHECK_EQ_INT(v, rounds * 100 + NPER - 1);
	mm_buf_free(&out);
	fx_fini(&fx);
}

/* A value truncated on disk is reported, never overwritten. */
TEST(lmdb_raw_corrupt)
{
	static batch_t b;
	uint8_t key[64];
	MDB_val k, val = {3, "\1\2\3"};
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	int64_t v;
	fx_t fx;
	done_t d;

	REQUIRE(fx_init(&fx, "lmdb") == 0);
	batch_init(&b, mm_now_ms());
	add_delta(&b, &NS, S("k"), 2, 5, 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	fx_close_store(&fx);

	/* The documented key: u8 ns_len, ns, u16 BE len, entity, bucket ^ sign. */
	key[0] = (uint8_t)strlen(NS.name);
	memcpy(key + 1, NS.name, key[0]);
	k.mv_size = 1 + key[0];
	key[k.mv_size++] = 0;
	key[k.mv_size++] = 1;
	key[k.mv_size++] = 'k';
	memcpy(key + k.mv_size, "\x80\0\0\0\0\0\0\x02", 8);
	k.mv_size += 8;
	k.mv_data = key;
	REQUIRE(raw_open(fx.path, &env, &txn, "state", &dbi) == 0);
	CHECK(mdb_get(txn, dbi, &k, &(MDB_val){0}) == 0);
	CHECK(mdb_put(txn, dbi, &k, &val, 0) == 0);
	CHECK(mdb_txn_commit(txn) == 0);
	mdb_env_close(env);

	REQUIRE(fx_open_with(&fx, 0, NULL, NULL) == 0);
	CHECK_EQ_INT(get1(&fx, &NS, S("k"), 2, &v), MM_ECORRUPT);
	batch_init(&b, mm_now_ms());
	add_delta(&b, &NS, S("k"), 2, 1, 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), MM_ECORRUPT);
	CHECK(strstr(d.detail, "entity 'k' bucket 2") != NULL);
	fx_fini(&fx);
}

/* Two 1024-byte entities whose hashes collide get two records: planted with
 * liblmdb, a record of entity C under entity A's hash does not answer for A,
 * and A's own record goes to the next sequence number. */
TEST(lmdb_hash_collision)
{
	static batch_t b;
	static char ea[1024], ec[1024];
	static uint8_t vbuf[8 + 1024 + 8];
	uint8_t key[64], *p = key;
	uint64_t h;
	MDB_val k, val = {sizeof(vbuf), vbuf};
	MDB_cursor *cur;
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	int64_t v;
	int i, n;
	fx_t fx;
	done_t d;

	memset(ea, 'a', sizeof(ea));
	memset(ec, 'c', sizeof(ec));
	REQUIRE(fx_init(&fx, "lmdb") == 0);
	fx_close_store(&fx);

	*p++ = (uint8_t)strlen(NS.name);
	memcpy(p, NS.name, strlen(NS.name));
	p += strlen(NS.name);
	*p++ = 1024 >> 8;
	*p++ = 1024 & 0xff;
	h = mm_hash64(ea, sizeof(ea), 0x6d757275726d6462ULL);
	for (i = 7; i >= 0; i--)
		*p++ = (uint8_t)(h >> (8 * i));
	memcpy(p, "\x80\0\0\0\0\0\0\0", 8); /* bucket 0 */
	p += 8;
	*p++ = 0; /* SEQ 0 */
	*p++ = 0;
	k.mv_size = (size_t)(p - key);
	k.mv_data = key;
	memset(vbuf, 0, 8);
	memcpy(vbuf + 8, ec, sizeof(ec));
	mm_set_u64le(vbuf + 8 + 1024, 77);
	REQUIRE(raw_open(fx.path, &env, &txn, "state", &dbi) == 0);
	CHECK(mdb_put(txn, dbi, &k, &val, 0) == 0);
	CHECK(mdb_txn_commit(txn) == 0);
	mdb_env_close(env);

	REQUIRE(fx_open_with(&fx, 0, NULL, NULL) == 0);
	CHECK_EQ_INT(get1(&fx, &NS, ea, sizeof(ea), 0, &v), 0);
	batch_init(&b, mm_now_ms());
	add_delta(&b, &NS, ea, sizeof(ea), 0, 5, 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(get1(&fx, &NS, ea, sizeof(ea), 0, &v), 1);
	CHECK_EQ_INT(v, 10);
	fx_close_store(&fx);

	/* Two records under the hash: C's untouched at SEQ 0, A's at SEQ 1. */
	REQUIRE(raw_open(fx.path, &env, &txn, "state", &dbi) == 0);
	REQUIRE(mdb_cursor_open(txn, dbi, &cur) == 0);
	k.mv_size -= 2;
	n = 0;
	for (i = mdb_cursor_get(cur, &k, &val, MDB_SET_RANGE); i == 0;
	     i = mdb_cursor_get(cur, &k, &val, MDB_NEXT)) {
		const uint8_t *kp = k.mv_data, *vp = val.mv_data;

		if (k.mv_size != (size_t)(p - key) || memcmp(kp, key, k.mv_size - 2) != 0)
			break;
		CHECK_EQ_INT(kp[k.mv_size - 1], n);
		CHECK_EQ_INT(val.mv_size, 8 + 1024 + 8);
		CHECK(vp[8] == (n == 0 ? 'c' : 'a'));
		CHECK_EQ_INT(mm_get_u64le(vp + 8 + 1024), n == 0 ? 77 : 10);
		n++;
	}
	CHECK_EQ_INT(n, 2);
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	REQUIRE(fx_open_with(&fx, 0, NULL, NULL) == 0);
	fx_fini(&fx);
}

/* Walks one database in key order: the key and value sizes of its first
 * max records, and each key's first 4 bytes as a u32 BE (0 if shorter). */
static size_t raw_records(const char *path, const char *db, size_t *ksizes, size_t *vsizes,
			  uint32_t *heads, size_t max)
{
	MDB_cursor *cur;
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k, v;
	size_t n = 0;
	int rc;

	if (raw_open(path, &env, &txn, db, &dbi) == 0 && mdb_cursor_open(txn, dbi, &cur) == 0) {
		for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && n < max;
		     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), n++) {
			const uint8_t *kp = k.mv_data;

			ksizes[n] = k.mv_size;
			vsizes[n] = v.mv_size;
			heads[n] = k.mv_size < 4 ? 0
						 : (uint32_t)kp[0] << 24 | (uint32_t)kp[1] << 16 |
							   (uint32_t)kp[2] << 8 | kp[3];
		}
		mdb_cursor_close(cur);
	}
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return n;
}

/* The on-disk form switches to hashed exactly when the inline key would pass
 * 511 bytes: with a 10-byte namespace, at 491-byte entities. */
TEST(lmdb_key_format)
{
	static batch_t b;
	static char e[1024];
	size_t sizes[8], vsizes[8], n;
	uint32_t heads[8];
	fx_t fx;
	done_t d;

	memset(e, 'e', sizeof(e));
	REQUIRE(strlen(NS.name) == 10);
	REQUIRE(fx_init(&fx, "lmdb") == 0);
	batch_init(&b, mm_now_ms());
	add_delta(&b, &NS, e, 490, 0, 1, 0);
	add_delta(&b, &NS, e, 491, 0, 1, 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	fx_close_store(&fx);
	n = raw_records(fx.path, "state", sizes, vsizes, heads, 8);
	CHECK_EQ_INT(n, 2);
	CHECK(sizes[0] + sizes[1] == 511 + 11 + 2 + 8 + 8 + 2);
	CHECK(sizes[0] == 511 || sizes[1] == 511);
	REQUIRE(fx_open_with(&fx, 0, NULL, NULL) == 0);
	fx_fini(&fx);
}

/* The value sizes of the "marks" records, in key order, and their
 * partitions (keys are 8 bytes: partition and SEQ). */
static size_t raw_runs(const char *path, size_t *sizes, uint32_t *parts, size_t max)
{
	size_t ksizes[8], n = raw_records(path, "marks", ksizes, sizes, parts, max < 8 ? max : 8);

	for (size_t i = 0; i < n; i++)
		CHECK_EQ_INT(ksizes[i], 8);
	return n;
}

/* A flush's marks are one record per hour of expiry (a run of 16-byte
 * entries); a partition whose hour has ended by an apply's now is deleted
 * whole; the marks answer claims after a reopen. */
TEST(lmdb_mark_partitions)
{
	static batch_t b;
	static char ids[300][16]; /* Room for "id-" and any int: gcc -O1 (make check) checks the snprintf. */
	const int64_t hour = 3600000;
	int64_t t = mm_now_ms(), h0 = (t / hour + 1) * hour; /* the next hour's start */
	size_t sizes[8], n;
	uint32_t parts[8];
	fx_t fx;
	done_t d;
	int i;

	REQUIRE(fx_init(&fx, "lmdb") == 0);
	batch_init(&b, t);
	for (i = 0; i < 200; i++) {
		snprintf(ids[i], sizeof(ids[i]), "id-%d", i);
		/* 150 expire in the next hour, 50 in the one after. */
		add_mark(&b, &NS, ids[i], strlen(ids[i]), i < 150 ? h0 + i : h0 + hour + i);
	}
	add_mark(&b, &NS, S("gone"), t - 1); /* expired already: not kept */
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	batch_init(&b, t);
	for (i = 200; i < 300; i++) {
		snprintf(ids[i], sizeof(ids[i]), "id-%d", i);
		add_mark(&b, &NS2, ids[i], strlen(ids[i]), h0 + i);
	}
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	fx_close_store(&fx);
	n = raw_runs(fx.path, sizes, parts, 8);
	REQUIRE(n == 3);
	/* Partition h0's runs (SEQ 0 and 1, the second from NS2), then the next. */
	CHECK_EQ_INT(parts[0], (uint32_t)(h0 / hour));
	CHECK_EQ_INT(sizes[0], 150 * 16);
	CHECK_EQ_INT(parts[1], (uint32_t)(h0 / hour));
	CHECK_EQ_INT(sizes[1], 100 * 16);
	CHECK_EQ_INT(parts[2], (uint32_t)(h0 / hour + 1));
	CHECK_EQ_INT(sizes[2], 50 * 16);

	REQUIRE(fx_open_with(&fx, 0, NULL, NULL) == 0);
	for (i = 0; i < 300; i += 7)
		CHECK_EQ_INT(marked(&fx, i < 200 ? &NS : &NS2, ids[i], strlen(ids[i])), 1);
	CHECK_EQ_INT(marked(&fx, &NS2, ids[0], strlen(ids[0])), 0);
	CHECK_EQ_INT(marked(&fx, &NS, ids[250], strlen(ids[250])), 0);
	CHECK_EQ_INT(marked(&fx, &NS, S("gone")), 0);
	/* An apply at the end of the next hour drops its partition whole. */
	batch_init(&b, h0 + hour);
	add_mark(&b, &NS, S("later"), h0 + 5 * hour);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	/* The memory forgot them too (pruned at the apply's now). */
	CHECK_EQ_INT(marked(&fx, &NS, ids[0], strlen(ids[0])), 0);
	CHECK_EQ_INT(marked(&fx, &NS, ids[199], strlen(ids[199])), 1);
	fx_close_store(&fx);
	n = raw_runs(fx.path, sizes, parts, 8);
	REQUIRE(n == 2);
	CHECK_EQ_INT(parts[0], (uint32_t)(h0 / hour + 1));
	CHECK_EQ_INT(parts[1], (uint32_t)(h0 / hour + 5));
	CHECK_EQ_INT(sizes[1], 16);
	REQUIRE(fx_open_with(&fx, 0, NULL, NULL) == 0);
	CHECK_EQ_INT(marked(&fx, &NS, ids[0], strlen(ids[0])), 0);
	CHECK_EQ_INT(marked(&fx, &NS, ids[199], strlen(ids[199])), 1);
	CHECK_EQ_INT(marked(&fx, &NS, S("later")), 1);
	fx_fini(&fx);
}

/* A flush's marks of one partition go to records of at most 65 532
 * entries (1 MiB values, below glibc's mmap threshold: lmdb_dedup.c), with
 * consecutive SEQs; every mark answers after a reopen, and the next
 * flush's run follows them. */
TEST(lmdb_mark_pieces)
{
	enum { N = 140000, PIECE = ((1 << 20) - 64) / 16 };
	static batch_t b;
	static char ids[N][16]; /* Room for "p-" and any int (gcc -O1 checks the snprintf). */
	const int64_t hour = 3600000;
	int64_t t = mm_now_ms(), h0 = (t / hour + 1) * hour;
	uint64_t seed = mm_id_hash_seed(NS.name, strlen(NS.name));
	mm_mark_t *marks = calloc(N, sizeof(*marks));
	size_t sizes[8], n;
	uint32_t parts[8];
	mm_flush_t f;
	fx_t fx;
	done_t d;
	int i;

	REQUIRE(marks != NULL);
	REQUIRE(PIECE == 65532);
	REQUIRE(fx_init(&fx, "lmdb") == 0);
	batch_init(&b, t);
	f = b.f;
	f.marks = marks;
	for (i = 0; i < N; i++) {
		snprintf(ids[i], sizeof(ids[i]), "p-%d", i);
		marks[i] = (mm_mark_t){&NS, ids[i], strlen(ids[i]), h0 + i, 0, {0, 0}};
		/* Half given their hash, as the pipeline does, half hashed by the store. */
		if (i % 2)
			mm_id_hash(seed, ids[i], strlen(ids[i]), &marks[i].hash);
	}
	f.nmarks = N;
	CHECK_EQ_INT(apply(&fx, &f, &d), 0);
	batch_init(&b, t);
	add_mark(&b, &NS, S("next"), h0 + 7);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	fx_close_store(&fx);
	n = raw_runs(fx.path, sizes, parts, 8);
	REQUIRE(n == 4);
	CHECK_EQ_INT(sizes[0], PIECE * 16);
	CHECK_EQ_INT(sizes[1], PIECE * 16);
	CHECK_EQ_INT(sizes[2], (N - 2 * PIECE) * 16);
	CHECK_EQ_INT(sizes[3], 16);
	for (i = 0; i < 4; i++)
		CHECK_EQ_INT(parts[i], (uint32_t)(h0 / hour));
	REQUIRE(fx_open_with(&fx, 0, NULL, NULL) == 0);
	for (i = 0; i < N; i += 97)
		CHECK_EQ_INT(marked(&fx, &NS, ids[i], strlen(ids[i])), 1);
	CHECK_EQ_INT(marked(&fx, &NS, ids[N - 1], strlen(ids[N - 1])), 1);
	CHECK_EQ_INT(marked(&fx, &NS, S("next")), 1);
	CHECK_EQ_INT(marked(&fx, &NS, S("p-140000")), 0);
	CHECK_EQ_INT(marked(&fx, &NS2, ids[0], strlen(ids[0])), 0);
	fx_fini(&fx);
	free(marks);
}

/* The pipeline hashes an id once (mm_id_hash) and hands the hash to the
 * store with its claim and its mark: the embedded store takes that hash as
 * the mark, so marks and claims with and without one agree, before and
 * after a reopen, and a given hash is what the store answers by. */
/* An HLL delta of the elements "<prefix>0" .. "<prefix>n-1", in b's slot i. */
static void hll_delta(batch_t *b, const mm_ns_t *ns, const char *entity, const char *prefix,
		      int n)
{
	size_t i = b->f.ndeltas++;
	char el[32];

	ns->m->vt->init(ns->m, b->s[i]);
	for (int k = 0; k < n; k++) {
		mm_value_t v = {.type = MM_VAL_STRING, .s = el};

		v.len = (size_t)snprintf(el, sizeof(el), "%s%d", prefix, k);
		CHECK_EQ_INT(ns->m->vt->add(ns->m, b->s[i], &v), 0);
	}
	b->d[i] = (mm_delta_t){.ns = ns, .key = {entity, strlen(entity), 1}, .state = b->s[i]};
}

static void batch_destroy(batch_t *b)
{
	for (size_t i = 0; i < b->f.ndeltas; i++)
		b->d[i].ns->m->vt->destroy(b->d[i].ns->m, b->s[i]);
}

/* The estimate of entity's HLL in bucket 1. */
static uint64_t hll_stored(fx_t *fx, const mm_ns_t *ns, const char *entity)
{
	_Alignas(16) unsigned char s[MM_STATE_MAX];
	mm_key_t k = {entity, strlen(entity), 1};
	uint8_t found = 0;
	uint64_t n = 0;

	CHECK_EQ_INT(get_many(fx, ns, &k, 1, s, &found), 0);
	CHECK(found);
	CHECK_EQ_INT(mm_hll_count(ns->m, s, &n), 0);
	ns->m->vt->destroy(ns->m, s);
	return n;
}

/* A merge that leaves a record's bytes as they are writes nothing: f.writes
 * counts the puts. A sum's zero delta, and HLL deltas that raise no stored
 * register, sparse (a few registers) and dense (20 000 elements), through
 * merge_encoded; the same deltas with a new register or expiry are written. */
TEST(lmdb_unchanged_skipped)
{
	static const mm_monoid_t hll = {.vt = &mm_monoid_hll_vtable};
	static const mm_ns_t HNS = {.name = "uv", .m = &hll};
	static batch_t b;
	uint64_t sparse, dense;
	int64_t v = 0;
	fx_t fx;
	done_t d;

	REQUIRE(fx_init(&fx, "lmdb") == 0);
	batch_init(&b, mm_now_ms());
	add_delta(&b, &NS, S("k"), 0, 5, 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(b.f.writes, 1);
	batch_init(&b, mm_now_ms());
	add_delta(&b, &NS, S("k"), 0, 0, 0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(b.f.writes, 0);
	CHECK_EQ_INT(get1(&fx, &NS, S("k"), 0, &v), 1);
	CHECK_EQ_INT(v, 5);
	/* The same state with another expiry is another record. */
	batch_init(&b, mm_now_ms());
	add_delta(&b, &NS, S("k"), 0, 0, mm_now_ms() + 3600000);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(b.f.writes, 1);

	batch_init(&b, mm_now_ms());
	hll_delta(&b, &HNS, "sparse", "u", 50);
	hll_delta(&b, &HNS, "dense", "u", 20000);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(b.f.writes, 2);
	batch_destroy(&b);
	sparse = hll_stored(&fx, &HNS, "sparse");
	dense = hll_stored(&fx, &HNS, "dense");
	CHECK(sparse >= 45 && sparse <= 55);
	CHECK(dense >= 19000 && dense <= 21000);
	/* The same elements again, or some of them: nothing is written. */
	batch_init(&b, mm_now_ms());
	hll_delta(&b, &HNS, "sparse", "u", 50);
	hll_delta(&b, &HNS, "dense", "u", 300);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(b.f.writes, 0);
	batch_destroy(&b);
	CHECK(hll_stored(&fx, &HNS, "sparse") == sparse);
	CHECK(hll_stored(&fx, &HNS, "dense") == dense);
	/* A new element raises a register of the small sketch. */
	batch_init(&b, mm_now_ms());
	hll_delta(&b, &HNS, "sparse", "new", 1);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(b.f.writes, 1);
	batch_destroy(&b);
	CHECK(hll_stored(&fx, &HNS, "sparse") > sparse);
	fx_fini(&fx);
}

TEST(lmdb_given_hashes)
{
	static batch_t b;
	uint64_t seed = mm_id_hash_seed(NS.name, strlen(NS.name));
	const mm_idhash_t none = {0, 0};
	mm_idhash_t ha, hb, hc, hz;
	int64_t t = mm_now_ms();
	fx_t fx;
	done_t d;

	mm_id_hash(seed, "a", 1, &ha);
	mm_id_hash(seed, "b", 1, &hb);
	mm_id_hash(seed, "c", 1, &hc);
	mm_id_hash(seed, "z", 1, &hz);
	REQUIRE(fx_init(&fx, "lmdb") == 0);
	/* A mark without its id's bytes needs its hash. */
	batch_init(&b, t);
	add_mark(&b, &NS, NULL, 1, t + 3600000);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), MM_EINVAL);
	batch_init(&b, t);
	add_mark(&b, &NS, S("a"), t + 3600000);
	b.marks[0].hash = ha;
	add_mark(&b, &NS, S("b"), t + 3600000);
	/* Its hash alone: the pending ids of a store with marked() keep no
	 * bytes (core/idset.h). */
	add_mark(&b, &NS, NULL, 1, t + 3600000);
	b.marks[2].hash = hc;
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	for (int reopen = 0; reopen < 2; reopen++) {
		CHECK_EQ_INT(marked_h(&fx, &NS, S("c"), &none), 1);
		CHECK_EQ_INT(marked_h(&fx, &NS, S("a"), &none), 1);
		CHECK_EQ_INT(marked_h(&fx, &NS, S("a"), &ha), 1);
		CHECK_EQ_INT(marked_h(&fx, &NS, S("b"), &hb), 1);
		CHECK_EQ_INT(marked_h(&fx, &NS, S("z"), &hz), 0);
		/* The hash given is the id as far as the store is concerned. */
		CHECK_EQ_INT(marked_h(&fx, &NS, S("z"), &ha), 1);
		CHECK_EQ_INT(marked_h(&fx, &NS, S("a"), &hz), 0);
		fx_close_store(&fx);
		REQUIRE(fx_open_with(&fx, 0, NULL, NULL) == 0);
	}
	fx_fini(&fx);
	/* A store without marked() writes ids' bytes: it takes no hash alone. */
	REQUIRE(fx_init(&fx, "memory") == 0);
	batch_init(&b, t);
	add_mark(&b, &NS, NULL, 1, t + 3600000);
	b.marks[0].hash = hc;
	CHECK_EQ_INT(apply(&fx, &b.f, &d), MM_EINVAL);
	fx_fini(&fx);
}

/* Marks handed over as hashes (mm_flush_t.hashed, as a pipeline that asks
 * the store's marks does): written as they are, one run per partition
 * whichever partition the first mark is in, and answered from memory and
 * after a reopen; one expired already answers as absent; beside marks by
 * id in one flush, both are kept. A store that keeps its marks by id
 * refuses them. */
TEST(lmdb_hashed_marks)
{
	static batch_t b;
	static mm_markhash_t hm[201];
	static char ids[200][16];
	const int64_t hour = 3600000;
	int64_t t = mm_now_ms(), h0 = (t / hour + 1) * hour;
	uint64_t seed = mm_id_hash_seed(NS.name, strlen(NS.name));
	mm_idhash_t h, none = {0, 0};
	size_t sizes[8], n;
	uint32_t parts[8];
	fx_t fx;
	done_t d;
	int i;

	REQUIRE(fx_init(&fx, "lmdb") == 0);
	batch_init(&b, t);
	for (i = 0; i < 200; i++) {
		snprintf(ids[i], sizeof(ids[i]), "h-%d", i);
		mm_id_hash(seed, ids[i], strlen(ids[i]), &h);
		/* The first 50 in the hour after next, the rest in the next. */
		hm[i] = (mm_markhash_t){h.h0, h.h1, i < 50 ? h0 + hour + i : h0 + i};
	}
	mm_id_hash(seed, "gone", 4, &h);
	hm[200] = (mm_markhash_t){h.h0, h.h1, t - 1};
	b.f.hashed = hm;
	b.f.nhashed = 201;
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	for (int reopen = 0; reopen < 2; reopen++) {
		for (i = 0; i < 200; i += 9)
			CHECK_EQ_INT(marked(&fx, &NS, ids[i], strlen(ids[i])), 1);
		CHECK_EQ_INT(marked(&fx, &NS, ids[5], strlen(ids[5])), 1);
		CHECK_EQ_INT(marked(&fx, &NS2, ids[5], strlen(ids[5])), 0);
		CHECK_EQ_INT(marked(&fx, &NS, S("gone")), 0);
		fx_close_store(&fx);
		if (reopen == 0) {
			n = raw_runs(fx.path, sizes, parts, 8);
			REQUIRE(n == 3);
			/* The expired one's (this hour), the next hour's, the one after. */
			CHECK_EQ_INT(parts[0], (uint32_t)(t / hour));
			CHECK_EQ_INT(sizes[0], 16);
			CHECK_EQ_INT(parts[1], (uint32_t)(h0 / hour));
			CHECK_EQ_INT(sizes[1], 150 * 16);
			CHECK_EQ_INT(parts[2], (uint32_t)(h0 / hour + 1));
			CHECK_EQ_INT(sizes[2], 50 * 16);
		}
		REQUIRE(fx_open_with(&fx, 0, NULL, NULL) == 0);
	}
	/* Hashes and ids in one flush. */
	batch_init(&b, t);
	mm_id_hash(seed, "x", 1, &h);
	hm[0] = (mm_markhash_t){h.h0, h.h1, h0};
	b.f.hashed = hm;
	b.f.nhashed = 1;
	add_mark(&b, &NS, S("y"), h0);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	CHECK_EQ_INT(marked_h(&fx, &NS, S("x"), &none), 1);
	CHECK_EQ_INT(marked(&fx, &NS, S("y")), 1);
	CHECK_EQ_INT(marked(&fx, &NS, ids[7], strlen(ids[7])), 1);
	fx_fini(&fx);
	REQUIRE(fx_init(&fx, "memory") == 0);
	batch_init(&b, t);
	b.f.hashed = hm;
	b.f.nhashed = 1;
	CHECK_EQ_INT(apply(&fx, &b.f, &d), MM_EINVAL);
	fx_fini(&fx);
}

/* marked() (MM_STORE_CAP_MARKED) answers from the marks in memory, as a
 * claim would, once start() has read them: before, MM_EAGAIN; after an
 * apply, its marks too; expired marks are new again; after a reopen,
 * start() reads them from the disk. Under a hold (marked_hold, a batch's
 * lookups) the answers are the same, and an apply that commits meanwhile
 * adds its marks to the memory once the hold ends. */
TEST(lmdb_marked)
{
	static batch_t b;
	uint64_t seed = mm_id_hash_seed(NS.name, strlen(NS.name));
	mm_idhash_t h[3]; /* a, b, z */
	int64_t t = mm_now_ms();
	fx_t fx;
	done_t d;

	for (int i = 0; i < 3; i++)
		mm_id_hash(seed, &"abz"[i], 1, &h[i]);
	REQUIRE(fx_init(&fx, "lmdb") == 0);
	CHECK(mm_store_caps(fx.st) & MM_STORE_CAP_MARKED);
	CHECK_EQ_INT(mm_store_marked(fx.st, &h[0], NULL, t), MM_EAGAIN);
	REQUIRE(mm_store_start_wait(fx.st) == 0);
	CHECK_EQ_INT(mm_store_marked(fx.st, &h[0], &h[2], t), 0);
	batch_init(&b, t);
	add_mark(&b, &NS, S("a"), t + 3600000);
	add_mark(&b, &NS, S("b"), t + 1000);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	for (int reopen = 0; reopen < 2; reopen++) {
		CHECK_EQ_INT(mm_store_marked(fx.st, &h[0], &h[1], t), 1);
		CHECK_EQ_INT(mm_store_marked(fx.st, &h[1], NULL, t), 1);
		CHECK_EQ_INT(mm_store_marked(fx.st, &h[1], NULL, t + 1000), 0);
		CHECK_EQ_INT(mm_store_marked(fx.st, &h[2], NULL, t), 0);
		mm_store_marked_hold(fx.st, 1);
		CHECK_EQ_INT(mm_store_marked(fx.st, &h[0], &h[2], t), 1);
		CHECK_EQ_INT(mm_store_marked(fx.st, &h[2], NULL, t), 0);
		mm_store_marked_hold(fx.st, 0);
		/* The same answers as the claims. */
		CHECK_EQ_INT(marked(&fx, &NS, S("a")), 1);
		CHECK_EQ_INT(marked(&fx, &NS, S("z")), 0);
		fx_close_store(&fx);
		REQUIRE(fx_open_with(&fx, 0, NULL, NULL) == 0);
		REQUIRE(mm_store_start_wait(fx.st) == 0);
	}
	/* An apply on the pool while the loop holds: its commit waits to
	 * change the memory, the answers stay those of before, and after the
	 * hold the apply completes with its mark in memory. */
	batch_init(&b, t);
	add_mark(&b, &NS, S("z"), t + 3600000);
	memset(&d, 0, sizeof(d));
	mm_store_marked_hold(fx.st, 1);
	REQUIRE(mm_store_apply(fx.st, &b.f, on_done, &d) == 0);
	usleep(50000);
	CHECK_EQ_INT(mm_store_marked(fx.st, &h[2], NULL, t), 0);
	mm_store_marked_hold(fx.st, 0);
	uv_run(&fx.loop, UV_RUN_DEFAULT);
	CHECK(d.calls == 1 && d.status == 0);
	CHECK_EQ_INT(mm_store_marked(fx.st, &h[2], NULL, t), 1);
	fx_fini(&fx);
}

/* Puts a format 1 mark ("seen") with liblmdb: inline, or for a long id its
 * hash and SEQ 0 with the id after the expiry. */
static int raw_legacy_mark(MDB_txn *txn, MDB_dbi dbi, const char *ns, const char *id, size_t len,
			   int64_t expire)
{
	static uint8_t v[8 + 1024];
	uint8_t k[511], *p = k;
	size_t nsl = strlen(ns);
	MDB_val key, val = {8, v};

	*p++ = (uint8_t)nsl;
	memcpy(p, ns, nsl);
	p += nsl;
	*p++ = (uint8_t)(len >> 8);
	*p++ = (uint8_t)len;
	mm_set_u64le(v, (uint64_t)expire);
	if (3 + nsl + len <= 511) {
		memcpy(p, id, len);
		p += len;
	} else {
		uint64_t h = mm_hash64(id, len, 0x6d757275726d6462ULL);

		for (int i = 7; i >= 0; i--, h >>= 8)
			p[i] = (uint8_t)h;
		p += 8;
		*p++ = 0;
		*p++ = 0;
		memcpy(v + 8, id, len);
		val.mv_size = 8 + len;
	}
	key.mv_size = (size_t)(p - k);
	key.mv_data = k;
	return mdb_put(txn, dbi, &key, &val, 0);
}

/* A format 1 store (marks one record per id in "seen", no "marks"): its
 * marks answer claims from the start, the first apply moves the live ones
 * to runs and empties "seen", and the store is format 3 from then on. */
TEST(lmdb_format1_marks)
{
	static batch_t b;
	static char big[1024];
	int64_t t = mm_now_ms();
	uint8_t one[4] = {1, 0, 0, 0};
	MDB_val fk = {13, "murmur.format"}, fv = {4, one};
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi seen, marks, main_db;
	size_t sizes[8], nruns;
	uint32_t parts[8];
	fx_t fx;
	done_t d;

	memset(big, 'b', sizeof(big));
	REQUIRE(fx_init(&fx, "lmdb") == 0);
	fx_close_store(&fx);
	REQUIRE(raw_open(fx.path, &env, &txn, "seen", &seen) == 0);
	CHECK_EQ_INT(raw_legacy_mark(txn, seen, NS.name, S("old-1"), t + 60000), 0);
	CHECK_EQ_INT(raw_legacy_mark(txn, seen, NS.name, big, sizeof(big), t + 60000), 0);
	CHECK_EQ_INT(raw_legacy_mark(txn, seen, NS.name, S("old-gone"), t - 1), 0);
	CHECK_EQ_INT(raw_legacy_mark(txn, seen, NS2.name, S("old-2"), t + 60000), 0);
	CHECK_EQ_INT(mdb_dbi_open(txn, "marks", 0, &marks), 0);
	CHECK_EQ_INT(mdb_drop(txn, marks, 1), 0);
	CHECK_EQ_INT(mdb_dbi_open(txn, NULL, 0, &main_db), 0);
	CHECK_EQ_INT(mdb_put(txn, main_db, &fk, &fv, 0), 0);
	CHECK_EQ_INT(mdb_txn_commit(txn), 0);
	mdb_env_close(env);

	/* A reader of the format 1 store opens it as it is. */
	REQUIRE(fx_open_with(&fx, 1, NULL, NULL) == 0);
	fx_close_store(&fx);
	REQUIRE(fx_open_with(&fx, 0, NULL, NULL) == 0);
	CHECK_EQ_INT(marked(&fx, &NS, S("old-1")), 1);
	CHECK_EQ_INT(marked(&fx, &NS, big, sizeof(big)), 1);
	CHECK_EQ_INT(marked(&fx, &NS, big, sizeof(big) - 1), 0);
	CHECK_EQ_INT(marked(&fx, &NS, S("old-gone")), 0);
	CHECK_EQ_INT(marked(&fx, &NS2, S("old-2")), 1);
	CHECK_EQ_INT(marked(&fx, &NS2, S("old-1")), 0);
	batch_init(&b, t);
	add_mark(&b, &NS, S("new-1"), t + 60000);
	CHECK_EQ_INT(apply(&fx, &b.f, &d), 0);
	fx_close_store(&fx);
	CHECK_EQ_INT(raw_count(fx.path, "seen"), 0);
	nruns = raw_runs(fx.path, sizes, parts, 8);
	CHECK(nruns >= 1 && nruns <= 2);
	CHECK_EQ_INT(sizes[0] + (nruns == 2 ? sizes[1] : 0), 4 * 16);
	REQUIRE(raw_open(fx.path, &env, &txn, NULL, &main_db) == 0);
	CHECK_EQ_INT(mdb_get(txn, main_db, &fk, &fv), 0);
	CHECK(fv.mv_size == 4 && mm_get_u32le(fv.mv_data) == 3);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	REQUIRE(fx_open_with(&fx, 0, NULL, NULL) == 0);
	CHECK_EQ_INT(marked(&fx, &NS, S("old-1")), 1);
	CHECK_EQ_INT(marked(&fx, &NS, big, sizeof(big)), 1);
	CHECK_EQ_INT(marked(&fx, &NS2, S("old-2")), 1);
	CHECK_EQ_INT(marked(&fx, &NS, S("new-1")), 1);
	CHECK_EQ_INT(marked(&fx, &NS, S("old-gone")), 0);
	fx_fini(&fx);
}

/* Sets the store's format version (the store is closed). */
static int raw_set_format(const char *path, uint32_t format)
{
	uint8_t v[4];
	MDB_val fk = {13, "murmur.format"}, fv = {4, v};
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi main_db;
	int rc;

	mm_set_u32le(v, format);
	if ((rc = raw_open(path, &env, &txn, NULL, &main_db)) == 0 &&
	    (rc = mdb_put(txn, main_db, &fk, &fv, 0)) == 0)
		rc = mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
	mdb_env_close(env);
	return rc;
}

static uint32_t raw_format(const char *path)
{
	MDB_val fk = {13, "murmur.format"}, fv;
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi main_db;
	uint32_t format = 0;

	if (raw_open(path, &env, &txn, NULL, &main_db) == 0 && mdb_get(txn, main_db, &fk, &fv) == 0 &&
	    fv.mv_size == 4)
		format = mm_get_u32le(fv.mv_data);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return format;
}

/* Puts a format 2 run (24-byte entries: u64 LE h0, h1, i64 LE expire_ms) of
 * ids[0..n) of ns expiring at expire[0..n), as the record (part, seq). */
static int raw_v2_run(MDB_txn *txn, MDB_dbi dbi, const char *ns, const char *const *ids,
		      const int64_t *expire, size_t n, uint32_t part, uint32_t seq)
{
	static uint8_t v[16 * 24];
	uint8_t k[8];
	MDB_val key = {8, k}, val = {n * 24, v};
	uint64_t seed = mm_markset_ns_seed(ns, strlen(ns));

	for (int i = 0; i < 4; i++) {
		k[i] = (uint8_t)(part >> (24 - 8 * i));
		k[4 + i] = (uint8_t)(seq >> (24 - 8 * i));
	}
	for (size_t i = 0; i < n; i++) {
		mm_markhash_t m;

		mm_markset_hash(seed, ids[i], strlen(ids[i]), &m);
		mm_set_u64le(v + 24 * i, m.h0);
		mm_set_u64le(v + 24 * i + 8, m.h1);
		mm_set_u64le(v + 24 * i + 16, (uint64_t)expire[i]);
	}
	return mdb_put(txn, dbi, &key, &val, 0);
}

/* A format 2 store (runs of 24-byte entries): a read-only opener reads it as
 * it is and leaves it format 2; a writer rewrites its runs with 16-byte
 * entries in the transaction that sets format 3, and every mark answers as
 * before, after a reopen too. A run with an entry outside its partition
 * fails the writer's open and leaves the store as it was; a format newer
 * than the build's is refused, as builds before format 3 refuse it. */
/* What lmdb_format2_marks' store must answer, in either format. */
static int v2_answers_ok(fx_t *fx)
{
	return marked(fx, &NS, S("v2-a")) == 1 && marked(fx, &NS, S("v2-b")) == 1 &&
	       marked(fx, &NS2, S("v2-c")) == 1 && marked(fx, &NS, S("v2-c")) == 0 &&
	       marked(fx, &NS, S("v2-d")) == 1 && marked(fx, &NS, S("v2-gone")) == 0 &&
	       marked(fx, &NS, S("never")) == 0;
}

TEST(lmdb_format2_marks)
{
	static const char *const a[] = {"v2-a", "v2-b", "v2-gone"}, *const c[] = {"v2-c"},
				 *const dd[] = {"v2-d"}, *const bad[] = {"v2-bad"};
	const int64_t hour = 3600000;
	int64_t t = mm_now_ms(), p0 = t / hour, next = (p0 + 1) * hour;
	int64_t ea[] = {next + 5, next + hour - 1, t - 1}, ec[] = {next}, ed[] = {next + hour + 7},
		ebad[] = {next + 2 * hour};
	size_t sizes[8], n;
	uint32_t parts[8];
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi marks;
	fx_t fx;

	REQUIRE(fx_init(&fx, "lmdb") == 0);
	fx_close_store(&fx);
	CHECK_EQ_INT(raw_format(fx.path), 3);
	REQUIRE(raw_open(fx.path, &env, &txn, "marks", &marks) == 0);
	/* "v2-gone" expired already, in the partition of the hour now is in. */
	CHECK_EQ_INT(raw_v2_run(txn, marks, NS.name, a + 2, ea + 2, 1, (uint32_t)p0, 0), 0);
	CHECK_EQ_INT(raw_v2_run(txn, marks, NS.name, a, ea, 2, (uint32_t)p0 + 1, 0), 0);
	CHECK_EQ_INT(raw_v2_run(txn, marks, NS2.name, c, ec, 1, (uint32_t)p0 + 1, 1), 0);
	CHECK_EQ_INT(raw_v2_run(txn, marks, NS.name, dd, ed, 1, (uint32_t)p0 + 2, 0), 0);
	CHECK_EQ_INT(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	REQUIRE(raw_set_format(fx.path, 2) == 0);

	/* A reader reads the 24-byte runs and changes nothing. */
	REQUIRE(fx_open_with(&fx, 1, NULL, NULL) == 0);
	CHECK(v2_answers_ok(&fx));
	fx_close_store(&fx);
	CHECK_EQ_INT(raw_format(fx.path), 2);
	n = raw_runs(fx.path, sizes, parts, 8);
	REQUIRE(n == 4);
	CHECK(sizes[0] == 24 && sizes[1] == 2 * 24 && sizes[2] == 24 && sizes[3] == 24);

	/* A writer moves it to format 3. */
	REQUIRE(fx_open_with(&fx, 0, NULL, NULL) == 0);
	fx_close_store(&fx);
	CHECK_EQ_INT(raw_format(fx.path), 3);
	n = raw_runs(fx.path, sizes, parts, 8);
	REQUIRE(n == 4);
	CHECK(sizes[0] == 16 && sizes[1] == 2 * 16 && sizes[2] == 16 && sizes[3] == 16);
	CHECK(parts[0] == (uint32_t)p0 && parts[1] == (uint32_t)p0 + 1 &&
	      parts[2] == (uint32_t)p0 + 1 && parts[3] == (uint32_t)p0 + 2);
	for (int ro = 1; ro >= 0; ro--) {
		REQUIRE(fx_open_with(&fx, ro, NULL, NULL) == 0);
		CHECK(v2_answers_ok(&fx));
		fx_close_store(&fx);
	}

	/* A format 2 run whose entry is outside its partition: the writer's
	 * open fails and the store stays format 2, its runs unchanged. */
	REQUIRE(raw_set_format(fx.path, 2) == 0);
	REQUIRE(raw_open(fx.path, &env, &txn, "marks", &marks) == 0);
	CHECK_EQ_INT(mdb_drop(txn, marks, 0), 0);
	CHECK_EQ_INT(raw_v2_run(txn, marks, NS.name, a, ea, 2, (uint32_t)p0 + 1, 0), 0);
	CHECK_EQ_INT(raw_v2_run(txn, marks, NS.name, bad, ebad, 1, (uint32_t)p0 + 1, 1), 0);
	CHECK_EQ_INT(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	CHECK_EQ_INT(fx_open_with(&fx, 0, NULL, NULL), MM_ECORRUPT);
	CHECK(fx.st == NULL);
	CHECK_EQ_INT(raw_format(fx.path), 2);
	n = raw_runs(fx.path, sizes, parts, 8);
	CHECK(n == 2 && sizes[0] == 2 * 24 && sizes[1] == 24);

	/* A format this build does not know yet is refused, by writers and
	 * readers alike. */
	REQUIRE(raw_set_format(fx.path, 4) == 0);
	CHECK_EQ_INT(fx_open_with(&fx, 0, NULL, NULL), MM_EINCOMPAT);
	CHECK_EQ_INT(fx_open_with(&fx, 1, NULL, NULL), MM_EINCOMPAT);
	CHECK(fx.st == NULL);
	REQUIRE(raw_set_format(fx.path, 3) == 0);
	REQUIRE(fx_open_with(&fx, 1, NULL, NULL) == 0);
	fx_fini(&fx);
}

TEST(memory_read_only)
{
	static batch_t b;
	fx_t fx;
	done_t d;

	REQUIRE(fx_init(&fx, "memory") == 0);
	fx_close_store(&fx);
	REQUIRE(fx_open_with(&fx, 1, NULL, NULL) == 0);
	batch_init(&b, mm_now_ms());
	CHECK_EQ_INT(apply(&fx, &b.f, &d), MM_ENOTSUP);
	CHECK_EQ_INT(mm_store_put_meta_wait(fx.st, "x", NULL, 0), MM_ENOTSUP);
	fx_fini(&fx);
}

int main(void)
{
	RUN(memory_apply_get);
	RUN(lmdb_apply_get);
	RUN(memory_merge_accumulates);
	RUN(lmdb_merge_accumulates);
	RUN(memory_positions);
	RUN(lmdb_positions);
	RUN(memory_marks_claims);
	RUN(lmdb_marks_claims);
	RUN(memory_purge);
	RUN(lmdb_purge);
	RUN(memory_expiry);
	RUN(lmdb_expiry);
	RUN(memory_meta);
	RUN(lmdb_meta);
	RUN(memory_binary_entities);
	RUN(lmdb_binary_entities);
	RUN(memory_corrupt);
	RUN(memory_rejected_delta);
	RUN(lmdb_rejected_delta);
	RUN(lmdb_corrupt);
	RUN(memory_validation);
	RUN(lmdb_validation);
	RUN(memory_pipelined);
	RUN(lmdb_pipelined);
	RUN(memory_read_only);
	RUN(lmdb_reopen);
	RUN(lmdb_options);
	RUN(lmdb_map_released);
	RUN(lmdb_readonly_process);
#ifdef MM_ERRINJ
	RUN(lmdb_errinj);
#endif
	RUN(lmdb_map_full);
	RUN(lmdb_raw_corrupt);
	RUN(lmdb_hash_collision);
	RUN(lmdb_key_format);
	RUN(lmdb_mark_partitions);
	RUN(lmdb_mark_pieces);
	RUN(lmdb_given_hashes);
	RUN(lmdb_hashed_marks);
	RUN(lmdb_unchanged_skipped);
	RUN(lmdb_marked);
	RUN(lmdb_format1_marks);
	RUN(lmdb_format2_marks);
	UNIT_DONE();
}
