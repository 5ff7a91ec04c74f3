/*
 * valkey_impl.h: what the files of the Valkey cache layer share (private to
 * engine/store/valkey*.c; the public side is valkey.h).
 *
 * The store is one struct (mm_valkey_t) used by every file; each file owns
 * one seam of it:
 *   valkey.c          options, namespaces and value conversions, the
 *                     deferred queues, delegated calls, stats, open/close
 *   valkey_keys.c     argument lists, key names, the hot and dirty key sets
 *   valkey_conn.c     commands with deadlines, the connection, handshake
 *   valkey_recover.c  generation checks, data loss, dirty keys, rebuilding
 *   valkey_read.c     get_many (lookup, store read, guarded fill), PFCOUNT
 *   valkey_write.c    apply (leases, store write, in-place updates, marks)
 *   valkey_dedup.c    dedup claims in Valkey (dedup = valkey)
 *   valkey_lua/NAME.lua  the server-side scripts, embedded at build time
 *                     (the Makefile generates their C array file)
 *
 * Everything runs on the loop thread. Functions that take a reply handler
 * or an operation follow store.h's contract: an error return means the
 * handler will not run.
 */
#ifndef MM_VALKEY_IMPL_H
#define MM_VALKEY_IMPL_H

#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "../lib/buf.h"
#include "valkey.h"

#define VK_CHUNK 256          /* keys per script call */
#define VK_READ_CHUNK 512     /* keys per MGET */
#define VK_COUNT_MAX 4000     /* keys one PFCOUNT script takes (Lua's unpack limit) */
#define VK_DIRTY_MAX 100000   /* dirty keys remembered one by one; beyond: drop everything */
#define VK_BACKOFF_MIN_MS 100
#define VK_NS_MAX 128
#define VK_LOG "valkey"

/* The server-side scripts (valkey_lua/NAME.lua), in the order they are
 * loaded at each handshake; sha[] holds their SHA-1 for EVALSHA. */
enum {
	VK_S_LEASE,     /* lease.lua: take write leases of buckets */
	VK_S_POST,      /* post.lua: update entries in place under a lease */
	VK_S_CASREAD,   /* casread.lua: values with their SHA-1, for compare-and-set */
	VK_S_EXISTS,    /* exists.lua: which entries are cached */
	VK_S_INVAL,     /* inval.lua: delete entries and bump their epoch */
	VK_S_FILL,      /* fill.lua: fill entries if no write intervened */
	VK_S_COUNT,     /* count.lua: PFCOUNT over cached HLL entries */
	VK_S_MARK,      /* mark.lua: dedup marks */
	VK_S_CLAIM,     /* claim.lua: dedup claims */
	VK_S_RELEASE,   /* release.lua: renew or give back our claims */
	VK_S_MAX
};

/* The script texts (NUL-terminated), generated from valkey_lua/NAME.lua. */
extern const char mm_valkey_lua_lease[], mm_valkey_lua_post[], mm_valkey_lua_casread[],
	mm_valkey_lua_exists[], mm_valkey_lua_inval[], mm_valkey_lua_fill[],
	mm_valkey_lua_count[], mm_valkey_lua_mark[], mm_valkey_lua_claim[],
	mm_valkey_lua_release[];

enum { VK_INT, VK_HLL, VK_BYTES };            /* how a namespace's values are cached */
enum { VK_NEG_IDENTITY = 1, VK_NEG_EMPTY };    /* how absent buckets are */
enum { VK_DOWN, VK_CONNECTING, VK_READY };    /* connection state */

typedef struct mm_valkey mm_valkey_t;

/* A namespace the store has seen, copied so that it outlives the caller's. */
typedef struct vk_ns {
	char *name;
	mm_monoid_t m;
	mm_ns_t ns;             /* {name, &m}, handed to the backing store */
	int kind;
	int negative;           /* how absent buckets are cached: VK_NEG_* */
	int window;             /* 0 not read yet, 1 known, -1 unknown */
	int64_t gran_ms, retention_ms;
} vk_ns_t;

/* A remembered key: in the hot set (rebuilt after data loss) or the dirty
 * set (to invalidate). Entries sit in a hash chain and an age list, newest
 * last; using a key again moves it to the end. */
typedef struct vk_kent {
	struct vk_kent *next;
	struct vk_kent *older, *newer;
	uint64_t hash;
	uint64_t seq;
	vk_ns_t *ns;
	int64_t bucket;
	size_t len;
	char entity[];
} vk_kent_t;

typedef struct vk_keyset {
	vk_kent_t **tab;
	size_t mask;            /* tab has mask + 1 chains; tab is NULL until the first add */
	size_t n, max;
	vk_kent_t *oldest, *newest;
	int overflow;           /* a key was dropped to stay within max */
} vk_keyset_t;

/* A list of byte strings in one buffer, for building commands. */
typedef struct vk_list {
	mm_buf_t b;
	size_t *end;
	size_t n, cap;
} vk_list_t;

typedef struct vk_op vk_op_t;
typedef void (*vk_op_fn)(vk_op_t *op);

/* Head of every multi-step operation: its caller and its place in the
 * store's queues (waiting for the first handshake, or deferred). */
struct vk_op {
	vk_op_t *next;
	vk_op_fn run;
	mm_valkey_t *st;
	mm_store_cb cb;
	void *arg;
};

/* A reply handler: r is the reply (possibly an error reply), or NULL when
 * none will come (connection lost, deadline passed, store closing). */
typedef void (*vk_reply_fn)(void *ctx, redisReply *r);

/* One command in flight, oldest first in the store's list. */
typedef struct vk_cmd {
	struct vk_cmd *prev, *next;
	mm_valkey_t *st;
	int op;
	uint64_t t0;            /* sent (latency is measured from here) */
	uint64_t wait0;         /* its deadline runs from here: sent, or the
	                         * previous reply if that came later */
	vk_reply_fn fn;
	void *ctx;
} vk_cmd_t;

typedef struct vk_hsref {
	mm_valkey_t *st;
	int script;
} vk_hsref_t;

struct mm_valkey {
	mm_store_t base;
	mm_store_vtable_t vt;   /* per store: the caps depend on the backing store */
	mm_store_t *backing;
	int read_only;
	int dedup_valkey;
	int64_t timeout_ms, cache_ttl_ms, lease_ms, check_ms, backoff_max_ms;
	/* The server. */
	char *host, *user, *password, *prefix;
	size_t prefix_len;
	int port, db;
	char ip[INET6_ADDRSTRLEN];
	/* The asynchronous connection. */
	redisAsyncContext *ac;
	int state;
	int ever_ready;
	int checking;           /* a generation check is in flight */
	int scanning;
	int replaying;          /* dirty keys are being invalidated */
	char scan_cursor[32];
	int hs_left;
	vk_hsref_t hsref[VK_S_MAX];
	char sha[VK_S_MAX][41];
	char run_id[41];
	char gen[96];           /* the generation this store trusts */
	int have_gen;
	char hs_gen[96];        /* the generation the handshake read */
	int hs_has_gen;
	int repop_pending;      /* rebuild the hot keys once ready */
	int64_t backoff_ms;
	uv_getaddrinfo_t gai;
	int resolving;
	uv_timer_t retry, tick, deadline, later_timer;
	vk_cmd_t *cmd_head, *cmd_tail;
	vk_op_t *waiting, **waiting_tail;
	vk_op_t *later, **later_tail;
	/* Identity and randomness: the token names this store in leases and
	 * claims; rng gives epoch seeds and jitter. */
	char token[33];
	uint64_t seq, rng;
	/* Namespaces, hot and dirty keys. */
	vk_ns_t **nss;
	size_t nns;
	/* Windows of namespaces whose descriptor a reader got through get_meta
	 * before any call named them: name and window only, taken by vk_ns_get. */
	vk_ns_t **seen;
	size_t nseen;
	vk_keyset_t hot, dirty;
	uint64_t kseq;
	mm_valkey_stats_t vs;
	size_t empty_hll_len;
	/* Scratch for building one command at a time. */
	const char **av;
	size_t *avl, avcap;
	vk_list_t sa;
	/* Lifetime: one reference while open, one per open handle, address
	 * lookup and operation in progress; the memory goes at zero. */
	int refs;
	int closing;
	int deadline_closed;
};

/* ---- valkey.c ---------------------------------------------------------- */

/* The store behind base, or NULL when base is not a "valkey" store. */
mm_valkey_t *mm_vk_of(const mm_store_t *base);
/* xorshift64*: jitter, epoch seeds and tokens (spread, not secrecy). */
uint64_t mm_vk_rand(mm_valkey_t *st);
/* The cache may be used: connected, handshake done, nothing dirty. */
int mm_vk_usable(const mm_valkey_t *st);
/* Operations issued before the first handshake wait for it. */
int mm_vk_should_wait(const mm_valkey_t *st);
/* Drops a reference; the last one closes the final handle and frees st. */
void mm_vk_unref(mm_valkey_t *st);
/* Closes the deadline timer once (the connection is gone at close()). */
void mm_vk_close_deadline(mm_valkey_t *st);

/* The copy of ns this store keeps, made on first sight (diag set on ENOMEM). */
vk_ns_t *mm_vk_ns_need(mm_valkey_t *st, const mm_ns_t *ns);
/* Sets vn's window from a stored descriptor (p, n), or marks it unknown. */
void mm_vk_ns_window_parse(vk_ns_t *vn, const uint8_t *p, size_t n);
/* When the store lets the bucket go (ms since the epoch), or 0 (also when
 * no put_meta or get_meta through this store gave the window). */
int64_t mm_vk_ns_expire(mm_valkey_t *st, vk_ns_t *vn, int64_t bucket);
/* The INCRBY amount of a count or integer sum delta. */
int mm_vk_int_of(const vk_ns_t *vn, const void *state, mm_buf_t *tmp, int64_t *out);
/* Appends the cache form of the monoid encoding enc[0..n) to l. */
int mm_vk_cache_value(const vk_ns_t *vn, const uint8_t *enc, size_t n, vk_list_t *l);
/* Decodes a cached value into state (init()ed); MM_ECORRUPT if malformed. */
int mm_vk_from_cache(const vk_ns_t *vn, const char *p, size_t n, void *state);

/* Runs run(op) on a later loop iteration, never inside the caller. */
void mm_vk_later(vk_op_t *op, vk_op_fn run);
/* Queues op until the first handshake ends (either way). */
void mm_vk_wait(vk_op_t *op, vk_op_fn run);
/* The first handshake ended: the waiting operations start (deferred). */
void mm_vk_release_waiting(mm_valkey_t *st);

/* ---- valkey_keys.c ----------------------------------------------------- */

/* Argument lists: strings appended to one buffer, ends remembered. */
int mm_vk_list_mark(vk_list_t *l);      /* closes the current string */
int mm_vk_list_add(vk_list_t *l, const void *p, size_t n);
int mm_vk_list_str(vk_list_t *l, const char *s);
int mm_vk_list_i64(vk_list_t *l, int64_t v);
void mm_vk_list_reset(vk_list_t *l);
void mm_vk_list_free(vk_list_t *l);
const char *mm_vk_list_at(const vk_list_t *l, size_t i, size_t *len);

/* Key names, appended to l as one string each: "P s:NS:BUCKET:ENTITY",
 * "P <kind>:NS:BUCKET" (kind 'e' epoch, 'l' leases), "P d:NS:ID". */
int mm_vk_state_key(const mm_valkey_t *st, vk_list_t *l, const char *ns, int64_t bucket,
		    const char *entity, size_t len);
int mm_vk_coord_key(const mm_valkey_t *st, vk_list_t *l, char kind, const char *ns,
		    int64_t bucket);
int mm_vk_mark_key(const mm_valkey_t *st, vk_list_t *l, const char *ns, const char *id,
		   size_t len);

/* Remembers k in the hot or dirty set of st (a dirty key that cannot be
 * remembered sets the set's overflow). */
void mm_vk_remember(mm_valkey_t *st, vk_keyset_t *ks, vk_ns_t *vn, const mm_key_t *k);
/* Drops every key whose seq is at most upto (the oldest ones). */
void mm_vk_keyset_trim(vk_keyset_t *ks, uint64_t upto);
void mm_vk_keyset_free(vk_keyset_t *ks);

/* ---- valkey_conn.c ----------------------------------------------------- */

/* Starts connecting (resolving the host first when it is a name). */
void mm_vk_connect(mm_valkey_t *st);
/* Forgets the connection ac if it is the current one (idempotent). */
void mm_vk_lost(mm_valkey_t *st, redisAsyncContext *ac, const char *why);
/* Drops the current connection on our own initiative (deadline, protocol). */
void mm_vk_drop(mm_valkey_t *st, const char *why);
/* EVALSHA script with keys and args (either may be NULL); fn gets the
 * reply. MM_ECLOSED without a connection. op is the stats slot. */
int mm_vk_eval(mm_valkey_t *st, int op, int script, const vk_list_t *keys,
	       const vk_list_t *args, vk_reply_fn fn, void *ctx);
/* A plain command whose arguments are all in l. */
int mm_vk_command(mm_valkey_t *st, int op, const vk_list_t *l, vk_reply_fn fn, void *ctx);
/* r is a reply and not an error reply. */
int mm_vk_reply_ok(const redisReply *r);

/* ---- valkey_recover.c -------------------------------------------------- */

/* The handshake read a generation that cannot be trusted (why), or found
 * none (why NULL): drop every cached state, then take a new generation. */
void mm_vk_loss(mm_valkey_t *st, const char *why);
/* Deletes the dirty keys; becomes ready when (re)connecting and done. */
void mm_vk_replay_dirty(mm_valkey_t *st);
/* Sends INVAL for the keys k (epoch first) with a fresh seed, args in a. */
int mm_vk_inval_batch(mm_valkey_t *st, vk_list_t *k, vk_list_t *a, vk_reply_fn fn, void *ctx);

/* ---- valkey_read.c, valkey_write.c, valkey_dedup.c -------------------- */

int mm_vk_get_many(mm_store_t *base, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
		   void *states, uint8_t *found, mm_store_cb cb, void *arg);
/* A read that rebuilds keys (copied) from the store into the cache.
 * Always completes through cb (MM_EAGAIN when the cache is unavailable). */
int mm_vk_repop_start(mm_valkey_t *st, vk_ns_t *vn, const mm_key_t *keys, size_t n,
		      mm_store_cb cb, void *arg);
int mm_vk_count_hll(mm_store_t *base, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
		    uint64_t *count, uint64_t *nonempty, int *cached, mm_store_cb cb, void *arg);
int mm_vk_apply(mm_store_t *base, mm_flush_t *f, mm_store_cb cb, void *arg);
/* Dedup through claims (valkey_dedup.c): Valkey's with dedup = valkey,
 * else the backing store's. */
int mm_vk_claim(mm_store_t *base, const mm_ns_t *ns, mm_claim_t *ids, size_t n, int64_t ttl_ms,
		mm_store_cb cb, void *arg);
int mm_vk_renew(mm_store_t *base, const mm_ns_t *ns, mm_claim_t *ids, size_t n, mm_store_cb cb,
		void *arg);
int mm_vk_release(mm_store_t *base, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		  mm_store_cb cb, void *arg);

#endif
