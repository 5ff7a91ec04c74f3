/*
 * valkey.c: a Valkey (or Redis >= 7) cache layered over another store.
 *
 * The store named "valkey" wraps a backing store (option `backing`, opened
 * with the options given as `backing.<name>`), which stays the only source of
 * truth. Every write goes to the backing store first; only once it is
 * durable does the cache change, and a cache failure never fails a write (it
 * is counted). Reads look in the cache first and read misses from the
 * backing store, then fill the cache. The cache is never trusted: any entry
 * may be missing at any time, and the protocol below makes sure that a
 * present entry holds the store's value, so a cold, partial or freshly
 * flushed cache costs reads but never serves a wrong value.
 *
 * Connection. One hiredis asynchronous connection on the libuv loop (the
 * adapter in <hiredis/adapters/libuv.h>; hiredis 0.14, so no built-in
 * timeouts: every command gets a deadline here, and a late reply drops the
 * connection). Host names are resolved with uv_getaddrinfo so the loop never
 * blocks on DNS. A lost connection is retried after 100 ms, doubling up to
 * `backoff_max`, with jitter; meanwhile reads and writes go to the backing
 * store alone. Operations issued before the very first handshake completes
 * wait for it (a query process asks right after opening); later ones never
 * wait. Scripts are loaded at the handshake and called with EVALSHA. The
 * connection's poll handle and the background timers do not keep the loop
 * alive (the engine's loop ends when its own handles close); a command in
 * flight does, through its deadline timer. close() disconnects gracefully:
 * what is queued (a query's fills, sent right after its answer) is sent and
 * answered first, under the same deadline.
 *
 * Keys (P = option `prefix`, default "murmur:"; NS has no ':', so the
 * entity, which may hold any bytes, is unambiguous at the end):
 *
 *   P s:NS:BUCKET:ENTITY  a cached state (see "values" below)
 *   P e:NS:BUCKET         the bucket's write epoch (an integer)
 *   P l:NS:BUCKET         the bucket's write leases (a sorted set)
 *   P d:NS:ID             a dedup mark or claim (dedup = valkey)
 *   P gen                 the cache generation: "<run_id>:<random>"
 *   P tmp                 scratch key inside scripts
 *
 * Values. count and integer sum: the decimal integer, so INCRBY applies a
 * delta. hll: our encoding, which is Valkey's own HYLL string, so PFMERGE
 * applies a delta and PFCOUNT over several buckets answers a multi-day
 * unique count (mm_valkey_count). Everything else (top-k, set, bloom,
 * first, last, min, max, float sum): the monoid's encoding, updated by
 * compare-and-set (below). A bucket the store lacks is cached too, so that
 * windows with empty days are answered by the cache: as the identity state
 * (which no stored state is, as every delta holds an event; updates merge
 * into it), or for sums, which may add up to zero, as an empty string that
 * every update refuses and so deletes.
 *
 * Consistency protocol. The danger is a reader filling the cache with a
 * value read from the store just before a write, after that write's cache
 * update has run (the entry would then miss the write), or the converse, an
 * in-place update applied to an entry whose fill already included the
 * write (a double count). Writers and readers coordinate per (NS, BUCKET):
 *
 *  - A writer first adds a lease (member token:seq, score = now + `lease`,
 *    in server time) to the bucket's lease set, then writes the store, then
 *    runs one script per batch of keys that, if its lease is still present
 *    and unexpired, applies the delta to every key that EXISTS (INCRBY,
 *    PFMERGE, or compare-and-set) and never creates one; with the last
 *    batch it removes its lease and increments the epoch. A lost lease
 *    (expired, or wiped by a FLUSHALL) turns the update into DEL. HLL and
 *    byte-valued batches are checked first (which entries exist; for bytes
 *    their values), so that deltas of kilobytes travel only to entries that
 *    take them; the lease keeps fills away between check and update.
 *  - A reader reads the entry and the epoch together (MGET). On a miss it
 *    reads the store, then fills with a script that writes only if the
 *    epoch is unchanged and no unexpired lease is present.
 *
 * A fill that passes saw no lease, so every write whose store part began
 * before the fill has finished its cache part too (its lease is gone), and
 * the unchanged epoch says none finished after the reader looked, so the
 * value read includes exactly the writes already applied to the cache, and
 * later writers will find the entry and update it in place. A write that
 * could not take a lease (cache down) deletes its keys and bumps the epoch
 * once the store write is done, or remembers them as dirty when Valkey does
 * not answer and deletes them when it does; reads of this process bypass
 * the cache while anything is dirty. Epochs start at a random value when
 * their key is created, so a key lost and recreated cannot repeat one.
 *
 * Compare-and-set (byte values): after the store write the writer reads the
 * entries with their SHA-1 (computed by the server), merges its delta into
 * each in C exactly as the store does (decode, merge the in-memory delta,
 * encode), and the update script writes the result only if the SHA-1 is
 * unchanged, else deletes the entry. With one writer the entry then equals
 * the store's bytes; with several, Top-K (the one order-sensitive sketch)
 * may end up with a different but equally valid summary of the same events,
 * and float sums may differ in rounding. Those are the only differences.
 *
 * Lifetimes. A fill sets the entry to expire at min(now + `cache_ttl`, the
 * bucket's retention end), the latter known from the pipeline descriptor in
 * the backing store's metadata (granularity_ms, retention_ms). Updates never
 * extend an entry's life (PEXPIREAT ... LT with the delta's expiry), so
 * whatever the protocol could not see (a writer that lost Valkey and never
 * came back, a misconfigured writer that bypasses the cache) is stale for at
 * most `cache_ttl`.
 *
 * Data loss. The generation key holds the server's run_id and a random
 * part. At every handshake and every `check_interval` it is compared with
 * what this store saw last and with the server's run_id: missing or
 * different means FLUSHALL, a restart (possibly from an older snapshot) or a
 * failover. The store then deletes every cached state under the prefix
 * (SCAN + UNLINK; coordination keys are kept), writes a new generation,
 * deletes its dirty keys and rebuilds the entries it used last (up to
 * `hot_keys`, most recent first) from the backing store.
 *
 * Dedup on Valkey (dedup = valkey): marks are kept in Valkey instead of the
 * backing store, written with SET NX PXAT once the flush is durable, and
 * seen() asks Valkey with EXISTS. seen() is synchronous in store.h, so it
 * uses a second, blocking connection with the same deadline; if Valkey does
 * not answer, ids are treated as new (duplicates may be counted). Marks are
 * lost with Valkey's data: that is the weaker guarantee doc/valkey.md
 * describes. mm_valkey_claim/release offer claim-before-effect for runtimes
 * that batch their dedup.
 *
 * States handed to the caller are filled by decoding bytes (from the cache,
 * or re-encoded from the backing store's answer), never moved.
 *
 * Threads: loop thread only, like every store. close() returns at once;
 * the memory goes when the loop has closed every handle and the backing
 * store's last pool job has finished.
 */
#include "valkey.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "../codec/json.h"
#include "../core/log.h"
#include "../lib/error.h"
#include "../lib/hash.h"
#include "../monoid/window.h"
#include "valkey_format.h"

#define VK_CHUNK 256          /* keys per script call */
#define VK_READ_CHUNK 512     /* keys per MGET */
#define VK_COUNT_MAX 4000     /* keys one PFCOUNT script takes (Lua's unpack limit) */
#define VK_DIRTY_MAX 100000   /* dirty keys remembered one by one; beyond: drop everything */
#define VK_BACKOFF_MIN_MS 100
#define VK_NS_MAX 128
#define VK_LOG "valkey"

/* ---- configuration ------------------------------------------------------ */

typedef struct vk_cfg {
	const char *backing;
	const char *url;
	const char *prefix;
	const char *dedup;
	int64_t timeout_ms;
	int64_t cache_ttl_ms;
	int64_t lease_ms;
	int64_t check_ms;
	int64_t backoff_max_ms;
	int64_t hot_keys;
} vk_cfg_t;

static const mm_option_t vk_options[] = {
	{MM_OPT_STRING, "backing", "lmdb", offsetof(vk_cfg_t, backing),
	 "The store that holds the truth (lmdb, memory, ...). Its own options are given with a "
	 "'backing.' prefix, e.g. backing.path."},
	{MM_OPT_STRING, "url", "redis://127.0.0.1:6379", offsetof(vk_cfg_t, url),
	 "The server: redis://[[user]:password@]host[:port][/db] (valkey:// is the same)."},
	{MM_OPT_STRING, "prefix", "murmur:", offsetof(vk_cfg_t, prefix),
	 "Prefix of every key; stores sharing a server need different prefixes, and every writer "
	 "and reader of one store the same."},
	{MM_OPT_DURATION_MS, "timeout", "1s", offsetof(vk_cfg_t, timeout_ms),
	 "Deadline of every command. A late reply drops the connection; operations then fall "
	 "back to the backing store."},
	{MM_OPT_DURATION_MS, "cache_ttl", "10m", offsetof(vk_cfg_t, cache_ttl_ms),
	 "Longest life of an entry filled from the store (writes never extend it): the bound on "
	 "staleness when a writer could not update the cache."},
	{MM_OPT_DURATION_MS, "lease", "30s", offsetof(vk_cfg_t, lease_ms),
	 "How long a write's lease blocks fills of its buckets; a write slower than this "
	 "deletes its entries instead of updating them."},
	{MM_OPT_DURATION_MS, "check_interval", "1s", offsetof(vk_cfg_t, check_ms),
	 "How often the generation key is checked to detect FLUSHALL and data loss."},
	{MM_OPT_DURATION_MS, "backoff_max", "10s", offsetof(vk_cfg_t, backoff_max_ms),
	 "Longest wait between reconnection attempts (from 100ms, doubling, with jitter)."},
	{MM_OPT_INT, "hot_keys", "10000", offsetof(vk_cfg_t, hot_keys),
	 "How many of the keys used last are rebuilt after Valkey lost data (0: none)."},
	{MM_OPT_STRING, "dedup", "store", offsetof(vk_cfg_t, dedup),
	 "Where dedup marks live: store (with the states, exact) or valkey (SET NX with a TTL; "
	 "lost if Valkey loses data)."},
	{0},
};

/* ---- server-side scripts -------------------------------------------------
 * Loaded with SCRIPT LOAD at each handshake and run with EVALSHA. Times come
 * from the server's clock (TIME) so that writers on different machines agree
 * on lease expiry. */

#define VK_LUA_NOW                                                                   \
	"local t = redis.call('TIME')\n"                                             \
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

enum {
	VK_S_LEASE,
	VK_S_POST,
	VK_S_CASREAD,
	VK_S_EXISTS,
	VK_S_INVAL,
	VK_S_FILL,
	VK_S_COUNT,
	VK_S_MARK,
	VK_S_CLAIM,
	VK_S_RELEASE,
	VK_S_MAX
};

static const char *const vk_scripts[VK_S_MAX] = {
	/* KEYS: lease sets. ARGV: member, lease ms. */
	[VK_S_LEASE] = VK_LUA_NOW
	"local ms = tonumber(ARGV[2])\n"
	"for i = 1, #KEYS do\n"
	"  redis.call('ZADD', KEYS[i], string.format('%d', now + ms), ARGV[1])\n"
	"  redis.call('PEXPIRE', KEYS[i], string.format('%d', 2 * ms))\n"
	"end\n"
	"return #KEYS\n",

	/* KEYS: lease set, epoch, tmp, entries. ARGV: member, last (0/1), epoch
	 * seed, epoch ttl, then per entry op, a, b, expire (0 = keep):
	 * i = INCRBY a; h = PFMERGE of the HLL bytes a; c = SET b if SHA-1 = a;
	 * d = DEL. Returns {lease held, entries updated}. */
	[VK_S_POST] = VK_LUA_NOW
	"local score = redis.call('ZSCORE', KEYS[1], ARGV[1])\n"
	"local held = score and tonumber(score) > now\n"
	"local done = 0\n"
	"for i = 4, #KEYS do\n"
	"  local k, j = KEYS[i], 5 + (i - 4) * 4\n"
	"  local op, a, b, exp = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3]\n"
	"  if not held or op == 'd' then\n"
	"    redis.call('DEL', k)\n"
	"  elseif redis.call('EXISTS', k) == 1 then\n"
	"    local r\n"
	"    if op == 'i' then\n"
	"      r = redis.pcall('INCRBY', k, a)\n"
	"    elseif op == 'h' then\n"
	"      redis.call('SET', KEYS[3], a)\n"
	"      r = redis.pcall('PFMERGE', k, KEYS[3])\n"
	"      redis.call('DEL', KEYS[3])\n"
	"    else\n"
	"      local cur = redis.pcall('GET', k)\n"
	"      if type(cur) == 'string' and redis.sha1hex(cur) == a then\n"
	"        r = redis.pcall('SET', k, b, 'KEEPTTL')\n"
	"      else\n"
	"        r = {err = 'changed'}\n"
	"      end\n"
	"    end\n"
	"    if type(r) == 'table' and r.err then\n"
	"      redis.call('DEL', k)\n"
	"    else\n"
	"      if exp ~= '0' then redis.call('PEXPIREAT', k, exp, 'LT') end\n"
	"      done = done + 1\n"
	"    end\n"
	"  end\n"
	"end\n"
	"if ARGV[2] == '1' then\n"
	"  redis.call('ZREM', KEYS[1], ARGV[1])\n"
	"  if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], ARGV[3]) end\n"
	"  redis.call('INCR', KEYS[2])\n"
	"  redis.call('PEXPIRE', KEYS[2], ARGV[4])\n"
	"end\n"
	"return {held and 1 or 0, done}\n",

	/* KEYS: entries. Returns value, SHA-1 (or nil, nil) per entry. */
	[VK_S_CASREAD] = "local r = {}\n"
	"for i = 1, #KEYS do\n"
	"  local v = redis.pcall('GET', KEYS[i])\n"
	"  if type(v) == 'string' then\n"
	"    r[2 * i - 1] = v\n"
	"    r[2 * i] = redis.sha1hex(v)\n"
	"  else\n"
	"    r[2 * i - 1] = false\n"
	"    r[2 * i] = false\n"
	"  end\n"
	"end\n"
	"return r\n",

	/* KEYS: entries. Returns 1 or 0 per entry. */
	[VK_S_EXISTS] = "local r = {}\n"
	"for i = 1, #KEYS do r[i] = redis.call('EXISTS', KEYS[i]) end\n"
	"return r\n",

	/* KEYS: epoch, entries. ARGV: epoch seed, epoch ttl. */
	[VK_S_INVAL] = "for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end\n"
	"if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[1]) end\n"
	"redis.call('INCR', KEYS[1])\n"
	"redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
	"return #KEYS - 1\n",

	/* KEYS: per entry the entry, its epoch, its lease set. ARGV: ttl ms, then
	 * per entry value, epoch seen ("n" none, "v<epoch>"), expire (0 =
	 * none), nx (1: only if absent). Returns the number written. */
	[VK_S_FILL] = VK_LUA_NOW
	"local ttl = tonumber(ARGV[1])\n"
	"local filled = 0\n"
	"for i = 1, #KEYS, 3 do\n"
	"  local j = 2 + (i - 1) / 3 * 4\n"
	"  local e = redis.call('GET', KEYS[i + 1])\n"
	"  local seen = ARGV[j + 1]\n"
	"  if (not e and seen == 'n') or (e and seen == 'v' .. e) then\n"
	"    redis.call('ZREMRANGEBYSCORE', KEYS[i + 2], '-inf', string.format('%d', now))\n"
	"    if redis.call('ZCARD', KEYS[i + 2]) == 0 then\n"
	"      local at = now + ttl\n"
	"      local exp = tonumber(ARGV[j + 2])\n"
	"      if exp > 0 and exp < at then at = exp end\n"
	"      if at > now then\n"
	"        local pxat = string.format('%d', at)\n"
	"        if ARGV[j + 3] == '1' then\n"
	"          if redis.call('SET', KEYS[i], ARGV[j], 'PXAT', pxat, 'NX') then\n"
	"            filled = filled + 1\n"
	"          end\n"
	"        else\n"
	"          redis.call('SET', KEYS[i], ARGV[j], 'PXAT', pxat)\n"
	"          filled = filled + 1\n"
	"        end\n"
	"      end\n"
	"    end\n"
	"  end\n"
	"end\n"
	"return filled\n",

	/* KEYS: HLL entries. ARGV: length of an empty sketch. Returns -1 unless
	 * every entry exists, else {PFCOUNT of all, entries not empty}. */
	[VK_S_COUNT] = "if redis.call('EXISTS', unpack(KEYS)) < #KEYS then return -1 end\n"
	"local nonempty = 0\n"
	"for i = 1, #KEYS do\n"
	"  if redis.call('STRLEN', KEYS[i]) ~= tonumber(ARGV[1]) then nonempty = nonempty + 1 end\n"
	"end\n"
	"return {redis.call('PFCOUNT', unpack(KEYS)), nonempty}\n",

	/* KEYS: marks. ARGV: per mark its expiry (ms). Keeps the later expiry. */
	[VK_S_MARK] = "for i = 1, #KEYS do\n"
	"  if not redis.call('SET', KEYS[i], '1', 'PXAT', ARGV[i], 'NX') then\n"
	"    redis.call('PEXPIREAT', KEYS[i], ARGV[i], 'GT')\n"
	"  end\n"
	"end\n"
	"return #KEYS\n",

	/* KEYS: marks. ARGV: token, then per mark its expiry. 1 = ours. */
	[VK_S_CLAIM] = "local r = {}\n"
	"for i = 1, #KEYS do\n"
	"  if redis.call('SET', KEYS[i], ARGV[1], 'PXAT', ARGV[i + 1], 'NX') then\n"
	"    r[i] = 1\n"
	"  elseif redis.call('GET', KEYS[i]) == ARGV[1] then\n"
	"    r[i] = 1\n"
	"  else\n"
	"    r[i] = 0\n"
	"  end\n"
	"end\n"
	"return r\n",

	/* KEYS: marks. ARGV: token. Deletes the claims that are ours. */
	[VK_S_RELEASE] = "local n = 0\n"
	"for i = 1, #KEYS do\n"
	"  if redis.call('GET', KEYS[i]) == ARGV[1] then\n"
	"    redis.call('DEL', KEYS[i])\n"
	"    n = n + 1\n"
	"  end\n"
	"end\n"
	"return n\n",
};

/* ---- types --------------------------------------------------------------- */

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
	uint64_t t0;
	vk_reply_fn fn;
	void *ctx;
} vk_cmd_t;

typedef struct vk_hsref {
	mm_valkey_t *st;
	int script;
} vk_hsref_t;

struct mm_valkey {
	mm_store_t base;
	mm_store_vtable_t vt;   /* per store: atomic_flush is the backing store's */
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
	vk_keyset_t hot, dirty;
	uint64_t kseq;
	mm_valkey_stats_t vs;
	size_t empty_hll_len;
	/* Scratch for building one command at a time. */
	const char **av;
	size_t *avl, avcap;
	vk_list_t sk, sa;
	/* The blocking connection of seen() (dedup = valkey). */
	redisContext *sc;
	uint64_t sc_retry_at;
	int64_t sc_backoff_ms;
	/* Lifetime: one reference while open, one per open handle, address
	 * lookup and operation in progress; the memory goes at zero. */
	int refs;
	int closing;
	int deadline_closed;
};

static void vk_unref(mm_valkey_t *st);
static void vk_lost(mm_valkey_t *st, redisAsyncContext *ac, const char *why);
static void vk_drop(mm_valkey_t *st, const char *why);
static void vk_connect(mm_valkey_t *st);
static void vk_ready(mm_valkey_t *st);
static void vk_loss(mm_valkey_t *st, const char *why);
static void vk_replay_dirty(mm_valkey_t *st);
static void vk_repopulate_hot(mm_valkey_t *st);
static void vk_close(mm_store_t *base);

/* ---- small helpers -------------------------------------------------------- */

static uint64_t vk_rand(mm_valkey_t *st)
{
	/* xorshift64*: jitter and epoch seeds need spread, not secrecy. */
	st->rng ^= st->rng >> 12;
	st->rng ^= st->rng << 25;
	st->rng ^= st->rng >> 27;
	return st->rng * 0x2545f4914f6cdd1dULL;
}

static char *vk_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = malloc(n);

	if (p != NULL)
		memcpy(p, s, n);
	return p;
}

static mm_valkey_t *vk_of(const mm_store_t *base)
{
	if (base == NULL || base->vt == NULL || base->vt->close != vk_close)
		return NULL;
	return (mm_valkey_t *)(uintptr_t)base;
}

static int vk_usable(const mm_valkey_t *st)
{
	return st->state == VK_READY && st->dirty.n == 0 && !st->dirty.overflow;
}

/* Operations issued before the first handshake wait for it. */
static int vk_should_wait(const mm_valkey_t *st)
{
	return st->state == VK_CONNECTING && !st->ever_ready;
}

static int vk_list_mark(vk_list_t *l)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		size_t *end = realloc(l->end, cap * sizeof(*end));

		if (end == NULL)
			return mm_diag_set(MM_ENOMEM, "valkey: cannot grow an argument list");
		l->end = end;
		l->cap = cap;
	}
	l->end[l->n++] = l->b.len;
	return 0;
}

static int vk_list_add(vk_list_t *l, const void *p, size_t n)
{
	int rc = mm_buf_append(&l->b, p, n);

	return rc ? rc : vk_list_mark(l);
}

static int vk_list_str(vk_list_t *l, const char *s)
{
	return vk_list_add(l, s, strlen(s));
}

static void vk_list_reset(vk_list_t *l)
{
	l->b.len = 0;
	l->n = 0;
}

static void vk_list_free(vk_list_t *l)
{
	mm_buf_free(&l->b);
	free(l->end);
	memset(l, 0, sizeof(*l));
}

static const char *vk_list_at(const vk_list_t *l, size_t i, size_t *len)
{
	size_t start = i ? l->end[i - 1] : 0;

	*len = l->end[i] - start;
	return (const char *)l->b.p + start;
}

/* Appends v in decimal. Keys are built per read and write, many at a time,
 * so they are assembled with plain appends rather than printf. */
static int vk_put_i64(mm_buf_t *b, int64_t v)
{
	char num[24], *p = num + sizeof(num);
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;

	do
		*--p = (char)('0' + u % 10);
	while ((u /= 10) != 0);
	if (v < 0)
		*--p = '-';
	return mm_buf_append(b, p, (size_t)(num + sizeof(num) - p));
}

/* Appends PREFIX, the kind ("s:"), NS and ':' to l's current string. */
static int vk_key_head(const mm_valkey_t *st, vk_list_t *l, const char *kind, const char *ns)
{
	int rc;

	if ((rc = mm_buf_append(&l->b, st->prefix, st->prefix_len)) ||
	    (rc = mm_buf_append(&l->b, kind, 2)) || (rc = mm_buf_append(&l->b, ns, strlen(ns))))
		return rc;
	return mm_buf_put_u8(&l->b, ':');
}

static int vk_list_i64(vk_list_t *l, int64_t v)
{
	int rc = vk_put_i64(&l->b, v);

	return rc ? rc : vk_list_mark(l);
}

/* Appends "P s:NS:BUCKET:ENTITY" and closes it as one string of l. */
static int vk_state_key(const mm_valkey_t *st, vk_list_t *l, const char *ns, int64_t bucket,
			const char *entity, size_t len)
{
	int rc;

	if ((rc = vk_key_head(st, l, "s:", ns)) || (rc = vk_put_i64(&l->b, bucket)) ||
	    (rc = mm_buf_put_u8(&l->b, ':')) || (rc = mm_buf_append(&l->b, entity, len)))
		return rc;
	return vk_list_mark(l);
}

/* Appends "P <kind>:NS:BUCKET" (kind 'e' epoch, 'l' leases). */
static int vk_coord_key(const mm_valkey_t *st, vk_list_t *l, char kind, const char *ns,
			int64_t bucket)
{
	const char k[2] = {kind, ':'};
	int rc;

	if ((rc = vk_key_head(st, l, k, ns)) || (rc = vk_put_i64(&l->b, bucket)))
		return rc;
	return vk_list_mark(l);
}

static int vk_mark_key(const mm_valkey_t *st, vk_list_t *l, const char *ns, const char *id,
		       size_t len)
{
	int rc;

	if ((rc = vk_key_head(st, l, "d:", ns)) || (rc = mm_buf_append(&l->b, id, len)))
		return rc;
	return vk_list_mark(l);
}

/* ---- namespaces and value conversions ------------------------------------ */

static int vk_kind_of(const mm_monoid_t *m)
{
	if (mm_valkey_int_cached(m))
		return VK_INT;
	if (m->vt == &mm_monoid_hll_vtable)
		return VK_HLL;
	return VK_BYTES;
}

/*
 * How a bucket the store lacks is cached, so that a window's empty buckets
 * are answered by the cache too. As the identity state when no stored state
 * is ever the identity (deltas always hold at least one event, so that is
 * every monoid but sums): updates then merge into it like into any entry.
 * Sums can add up to zero, so for them an empty string stands for
 * "absent": no update accepts it (INCRBY and decode fail), so a write
 * deletes it and the next read fills the real value.
 */
static int vk_negative_of(const mm_monoid_t *m)
{
	return m->vt == &mm_monoid_sum_vtable ? VK_NEG_EMPTY : VK_NEG_IDENTITY;
}

static int vk_same_monoid(const mm_monoid_t *a, const mm_monoid_t *b)
{
	return a->vt == b->vt && a->p.is_float == b->p.is_float && a->p.k == b->p.k &&
	       a->p.max_size == b->p.max_size && a->p.capacity == b->p.capacity &&
	       a->p.fpr == b->p.fpr;
}

/* The copy of ns this store keeps (made on first sight). */
static vk_ns_t *vk_ns_get(mm_valkey_t *st, const mm_ns_t *ns)
{
	vk_ns_t *vn, **nss;
	size_t i;

	for (i = 0; i < st->nns; i++) {
		vn = st->nss[i];
		if (strcmp(vn->name, ns->name) == 0) {
			/* A namespace redefined with other parameters takes them (the
			 * runtime refuses such changes while state exists). */
			if (!vk_same_monoid(&vn->m, ns->m)) {
				vn->m = *ns->m;
				vn->kind = vk_kind_of(&vn->m);
				vn->negative = vk_negative_of(&vn->m);
			}
			return vn;
		}
	}
	nss = realloc(st->nss, (st->nns + 1) * sizeof(*nss));
	if (nss == NULL)
		return NULL;
	st->nss = nss;
	vn = calloc(1, sizeof(*vn));
	if (vn == NULL || (vn->name = vk_strdup(ns->name)) == NULL) {
		free(vn);
		return NULL;
	}
	vn->m = *ns->m;
	vn->ns.name = vn->name;
	vn->ns.m = &vn->m;
	vn->kind = vk_kind_of(&vn->m);
	vn->negative = vk_negative_of(&vn->m);
	st->nss[st->nns++] = vn;
	return vn;
}

static vk_ns_t *vk_ns_need(mm_valkey_t *st, const mm_ns_t *ns)
{
	vk_ns_t *vn = vk_ns_get(st, ns);

	if (vn == NULL)
		mm_diag_set(MM_ENOMEM, "valkey: cannot remember namespace '%s'", ns->name);
	return vn;
}

/*
 * Reads the pipeline's window from the descriptor the runtime stores as the
 * namespace's metadata ("compat line\n{json}"), so fills can expire with
 * the bucket. Without it, entries live cache_ttl.
 */
static void vk_ns_window(mm_valkey_t *st, vk_ns_t *vn)
{
	mm_json_field_t f[2] = {{"granularity_ms", 14, 0, NULL, 0, 0},
				{"retention_ms", 12, 0, NULL, 0, 0}};
	mm_buf_t meta = {0};
	const char *json;
	int64_t v[2];
	double d;
	int is_int, i;

	vn->window = -1;
	if (mm_store_get_meta(st->backing, vn->name, &meta) != 0)
		goto out;
	json = memchr(meta.p, '\n', meta.len);
	json = json ? json + 1 : (const char *)meta.p;
	if (mm_json_scan(json, meta.len - (size_t)(json - (const char *)meta.p), f, 2) != 0)
		goto out;
	for (i = 0; i < 2; i++)
		if (f[i].type != MM_JSON_NUMBER ||
		    mm_json_number(f[i].p, f[i].len, &is_int, &v[i], &d) != 0 || !is_int ||
		    v[i] < 0)
			goto out;
	vn->gran_ms = v[0];
	vn->retention_ms = v[1];
	vn->window = 1;
out:
	mm_buf_free(&meta);
}

/* When the store lets the bucket go (ms since the epoch), or 0 if unknown
 * or never. */
static int64_t vk_ns_expire(mm_valkey_t *st, vk_ns_t *vn, int64_t bucket)
{
	if (vn->window == 0)
		vk_ns_window(st, vn);
	if (vn->window != 1 || bucket <= 0 || vn->gran_ms <= 0 || vn->retention_ms <= 0)
		return 0;
	return mm_window_bucket_start_ms(vn->gran_ms, bucket + 1) + vn->retention_ms;
}

/* The value of an 8-byte count or integer sum encoding, for INCRBY. */
static int vk_int_value(const vk_ns_t *vn, const uint8_t *enc, size_t n, int64_t *out)
{
	uint64_t u;

	if (n != 8)
		return mm_diag_set(MM_ECORRUPT, "valkey: %s encodes to %zu bytes, expected 8",
				   vn->m.vt->name, n);
	u = mm_get_u64le(enc);
	if (vn->m.vt == &mm_monoid_count_vtable && u > (uint64_t)INT64_MAX)
		return mm_diag_set(MM_ERANGE, "valkey: count %" PRIu64 " does not fit INCRBY", u);
	*out = (int64_t)u;
	return 0;
}

/* The INCRBY amount of a count or integer sum delta. */
static int vk_int_of(const vk_ns_t *vn, const void *state, mm_buf_t *tmp, int64_t *out)
{
	int rc;

	tmp->len = 0;
	if ((rc = vn->m.vt->encode(&vn->m, state, tmp)))
		return rc;
	return vk_int_value(vn, tmp->p, tmp->len, out);
}

/* Appends the cache form of the monoid encoding enc[0..n) to l as one string. */
static int vk_cache_value(const vk_ns_t *vn, const uint8_t *enc, size_t n, vk_list_t *l)
{
	int64_t v;
	int rc;

	if (vn->kind != VK_INT)
		return vk_list_add(l, enc, n);
	if ((rc = vk_int_value(vn, enc, n, &v)))
		return rc;
	return vk_list_i64(l, v);
}

/* Decodes a cached value into state (init()ed). MM_ECORRUPT if it is not
 * what this namespace caches (valkey_format.c). */
static int vk_from_cache(const vk_ns_t *vn, const char *p, size_t n, void *state)
{
	return mm_valkey_cache_decode(&vn->m, p, n, state);
}

/* ---- key sets -------------------------------------------------------------- */

static uint64_t vk_key_hash(const vk_ns_t *vn, int64_t bucket, const char *e, size_t len)
{
	uint64_t h = mm_hash64(e, len, (uint64_t)bucket * 0x9e3779b97f4a7c15ULL);

	return h ^ ((uint64_t)(uintptr_t)vn * 0xff51afd7ed558ccdULL);
}

static void vk_keyset_unlink(vk_keyset_t *ks, vk_kent_t *e)
{
	vk_kent_t **pp = &ks->tab[e->hash & ks->mask];

	while (*pp != e)
		pp = &(*pp)->next;
	*pp = e->next;
	if (e->older)
		e->older->newer = e->newer;
	else
		ks->oldest = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	else
		ks->newest = e->older;
	ks->n--;
}

static void vk_keyset_append(vk_keyset_t *ks, vk_kent_t *e)
{
	e->newer = NULL;
	e->older = ks->newest;
	if (ks->newest)
		ks->newest->newer = e;
	else
		ks->oldest = e;
	ks->newest = e;
}

static int vk_keyset_grow(vk_keyset_t *ks)
{
	size_t cap = ks->tab ? (ks->mask + 1) * 2 : 64, i;
	vk_kent_t **tab = calloc(cap, sizeof(*tab)), *e, *next;

	if (tab == NULL)
		return MM_ENOMEM;
	for (i = 0; ks->tab && i <= ks->mask; i++)
		for (e = ks->tab[i]; e; e = next) {
			next = e->next;
			e->next = tab[e->hash & (cap - 1)];
			tab[e->hash & (cap - 1)] = e;
		}
	free(ks->tab);
	ks->tab = tab;
	ks->mask = cap - 1;
	return 0;
}

/* Adds the key or, if present, makes it the newest. When full, the oldest
 * key goes and `overflow` is set. 0 or MM_ENOMEM. */
static int vk_keyset_add(vk_keyset_t *ks, vk_ns_t *vn, int64_t bucket, const char *entity,
			 size_t len, uint64_t seq)
{
	uint64_t h = vk_key_hash(vn, bucket, entity, len);
	vk_kent_t *e;

	if (ks->max == 0)
		return 0;
	if (ks->tab != NULL)
		for (e = ks->tab[h & ks->mask]; e; e = e->next)
			if (e->hash == h && e->ns == vn && e->bucket == bucket && e->len == len &&
			    memcmp(e->entity, entity, len) == 0) {
				e->seq = seq;
				if (e != ks->newest) {
					vk_keyset_unlink(ks, e);
					ks->n++;
					e->next = ks->tab[h & ks->mask];
					ks->tab[h & ks->mask] = e;
					vk_keyset_append(ks, e);
				}
				return 0;
			}
	if (ks->n >= ks->max) {
		e = ks->oldest;
		vk_keyset_unlink(ks, e);
		free(e);
		ks->overflow = 1;
	}
	if ((ks->tab == NULL || ks->n + 1 > ks->mask + 1) && vk_keyset_grow(ks))
		return MM_ENOMEM;
	e = malloc(sizeof(*e) + len);
	if (e == NULL)
		return MM_ENOMEM;
	e->hash = h;
	e->seq = seq;
	e->ns = vn;
	e->bucket = bucket;
	e->len = len;
	memcpy(e->entity, entity, len);
	e->next = ks->tab[h & ks->mask];
	ks->tab[h & ks->mask] = e;
	vk_keyset_append(ks, e);
	ks->n++;
	return 0;
}

/* Drops every key whose seq is at most `upto` (they are the oldest). */
static void vk_keyset_trim(vk_keyset_t *ks, uint64_t upto)
{
	while (ks->oldest && ks->oldest->seq <= upto) {
		vk_kent_t *e = ks->oldest;

		vk_keyset_unlink(ks, e);
		free(e);
	}
}

static void vk_keyset_free(vk_keyset_t *ks)
{
	vk_keyset_trim(ks, UINT64_MAX);
	free(ks->tab);
	ks->tab = NULL;
	ks->mask = 0;
	ks->overflow = 0;
}

static void vk_remember(mm_valkey_t *st, vk_keyset_t *ks, vk_ns_t *vn, const mm_key_t *k)
{
	/* Forgetting a hot key only costs a rebuild; a dirty key that cannot be
	 * remembered must still be invalidated, so it counts as an overflow. */
	if (vk_keyset_add(ks, vn, k->bucket, k->entity, k->len, ++st->kseq) && ks == &st->dirty)
		ks->overflow = 1;
	if (ks == &st->dirty)
		st->vs.dirty = ks->n;
}

/* ---- the deferred queues --------------------------------------------------- */

static void vk_later_cb(uv_timer_t *t)
{
	mm_valkey_t *st = t->data;
	vk_op_t *op = st->later, *next;

	st->later = NULL;
	st->later_tail = &st->later;
	for (; op != NULL; op = next) {
		next = op->next;
		op->run(op);
	}
}

/* Runs op->run on a later loop iteration (never inside the caller). */
static void vk_later(vk_op_t *op, vk_op_fn run)
{
	mm_valkey_t *st = op->st;

	op->run = run;
	op->next = NULL;
	if (st->later == NULL)
		uv_timer_start(&st->later_timer, vk_later_cb, 0, 0);
	*st->later_tail = op;
	st->later_tail = &op->next;
}

static void vk_wait(vk_op_t *op, vk_op_fn run)
{
	mm_valkey_t *st = op->st;

	op->run = run;
	op->next = NULL;
	*st->waiting_tail = op;
	st->waiting_tail = &op->next;
}

/* The first handshake ended (either way): the waiting operations start. */
static void vk_release_waiting(mm_valkey_t *st)
{
	vk_op_t *op = st->waiting, *next;

	st->waiting = NULL;
	st->waiting_tail = &st->waiting;
	for (; op != NULL; op = next) {
		next = op->next;
		vk_later(op, op->run);
	}
}

/* ---- commands ---------------------------------------------------------------- */

static void vk_deadline_cb(uv_timer_t *t);

static void vk_arm_deadline(mm_valkey_t *st)
{
	uint64_t now, due;

	if (st->deadline_closed)
		return;
	if (st->cmd_head == NULL) {
		uv_timer_stop(&st->deadline);
		return;
	}
	now = uv_hrtime();
	due = st->cmd_head->t0 + (uint64_t)st->timeout_ms * 1000000u;
	uv_timer_start(&st->deadline, vk_deadline_cb, due > now ? (due - now) / 1000000u + 1 : 0,
		       0);
}

static void vk_deadline_cb(uv_timer_t *t)
{
	mm_valkey_t *st = t->data;
	char why[64];

	if (st->cmd_head == NULL)
		return;
	if (uv_hrtime() - st->cmd_head->t0 >= (uint64_t)st->timeout_ms * 1000000u) {
		snprintf(why, sizeof(why), "no reply within %" PRId64 " ms", st->timeout_ms);
		vk_drop(st, why);
		return;
	}
	vk_arm_deadline(st);
}

static void vk_cmd_unlink(mm_valkey_t *st, vk_cmd_t *cmd)
{
	if (cmd->prev)
		cmd->prev->next = cmd->next;
	else
		st->cmd_head = cmd->next;
	if (cmd->next)
		cmd->next->prev = cmd->prev;
	else
		st->cmd_tail = cmd->prev;
}

static void vk_on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	vk_cmd_t *cmd = privdata;
	mm_valkey_t *st = cmd->st;
	redisReply *r = reply;
	uint64_t ns = uv_hrtime() - cmd->t0;
	int noscript = 0;

	vk_cmd_unlink(st, cmd);
	st->vs.ops[cmd->op]++;
	st->vs.ns_total[cmd->op] += ns;
	if (ns > st->vs.ns_max[cmd->op])
		st->vs.ns_max[cmd->op] = ns;
	if (r == NULL || r->type == REDIS_REPLY_ERROR)
		st->vs.errors[cmd->op]++;
	/* A NULL reply comes only while hiredis frees the context. */
	if (r == NULL)
		vk_lost(st, ac, ac->errstr ? ac->errstr : "connection closed");
	else if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0)
		noscript = 1;
	cmd->fn(cmd->ctx, r);
	free(cmd);
	/* SCRIPT FLUSH on the server: reconnecting loads the scripts again. */
	if (noscript && st->ac == ac)
		vk_drop(st, "the server forgot our scripts");
	vk_arm_deadline(st);
}

/* Sends one command; fn runs with its reply. MM_ECLOSED without a connection. */
static int vk_send(mm_valkey_t *st, int op, vk_reply_fn fn, void *ctx, int argc,
		   const char **argv, const size_t *argvlen)
{
	vk_cmd_t *cmd;

	if (st->ac == NULL || st->closing)
		return mm_diag_set(MM_ECLOSED, "valkey: not connected");
	cmd = malloc(sizeof(*cmd));
	if (cmd == NULL)
		return mm_diag_set(MM_ENOMEM, "valkey: cannot allocate a command");
	cmd->st = st;
	cmd->op = op;
	cmd->t0 = uv_hrtime();
	cmd->fn = fn;
	cmd->ctx = ctx;
	if (redisAsyncCommandArgv(st->ac, vk_on_reply, cmd, argc, argv, argvlen) != REDIS_OK) {
		free(cmd);
		/* The context is disconnecting or freeing itself. */
		vk_lost(st, st->ac, "connection closing");
		return mm_diag_set(MM_ECLOSED, "valkey: connection closing");
	}
	cmd->next = NULL;
	cmd->prev = st->cmd_tail;
	if (st->cmd_tail)
		st->cmd_tail->next = cmd;
	else
		st->cmd_head = cmd;
	st->cmd_tail = cmd;
	if (cmd == st->cmd_head)
		vk_arm_deadline(st);
	return 0;
}

static int vk_argv_reserve(mm_valkey_t *st, size_t n)
{
	const char **av;
	size_t *avl, cap;

	if (n <= st->avcap)
		return 0;
	cap = n * 2;
	av = realloc(st->av, cap * sizeof(*av));
	if (av == NULL)
		return mm_diag_set(MM_ENOMEM, "valkey: cannot grow argv");
	st->av = av;
	avl = realloc(st->avl, cap * sizeof(*avl));
	if (avl == NULL)
		return mm_diag_set(MM_ENOMEM, "valkey: cannot grow argv");
	st->avl = avl;
	st->avcap = cap;
	return 0;
}

/* EVALSHA script with keys and args (either may be NULL). */
static int vk_eval(mm_valkey_t *st, int op, int script, const vk_list_t *keys,
		   const vk_list_t *args, vk_reply_fn fn, void *ctx)
{
	size_t nk = keys ? keys->n : 0, na = args ? args->n : 0, n = 0, i;
	char numkeys[24];
	int rc;

	if ((rc = vk_argv_reserve(st, 3 + nk + na)))
		return rc;
	st->av[n] = "EVALSHA";
	st->avl[n++] = 7;
	st->av[n] = st->sha[script];
	st->avl[n++] = 40;
	st->av[n] = numkeys;
	st->avl[n++] = (size_t)snprintf(numkeys, sizeof(numkeys), "%zu", nk);
	for (i = 0; i < nk; i++, n++)
		st->av[n] = vk_list_at(keys, i, &st->avl[n]);
	for (i = 0; i < na; i++, n++)
		st->av[n] = vk_list_at(args, i, &st->avl[n]);
	return vk_send(st, op, fn, ctx, (int)n, st->av, st->avl);
}

/* A plain command whose arguments are all in l. */
static int vk_command(mm_valkey_t *st, int op, const vk_list_t *l, vk_reply_fn fn, void *ctx)
{
	size_t i;
	int rc;

	if ((rc = vk_argv_reserve(st, l->n)))
		return rc;
	for (i = 0; i < l->n; i++)
		st->av[i] = vk_list_at(l, i, &st->avl[i]);
	return vk_send(st, op, fn, ctx, (int)l->n, st->av, st->avl);
}

static int vk_reply_ok(const redisReply *r)
{
	return r != NULL && r->type != REDIS_REPLY_ERROR;
}

/* ---- the connection ---------------------------------------------------------- */

static void vk_retry_cb(uv_timer_t *t)
{
	vk_connect(t->data);
}

static void vk_schedule_retry(mm_valkey_t *st)
{
	int64_t wait = st->backoff_ms, jitter = wait / 4;

	if (st->closing)
		return;
	if (jitter > 0)
		wait += (int64_t)(vk_rand(st) % (uint64_t)(2 * jitter + 1)) - jitter;
	st->backoff_ms = st->backoff_ms * 2 > st->backoff_max_ms ? st->backoff_max_ms
								 : st->backoff_ms * 2;
	uv_timer_start(&st->retry, vk_retry_cb, (uint64_t)(wait > 0 ? wait : 0), 0);
}

/*
 * Forgets the connection ac (if it is the current one): hiredis frees it
 * itself or is being told to. Idempotent. Cache use stops until the next
 * handshake; waiting operations go on without the cache.
 */
static void vk_close_deadline(mm_valkey_t *st);

static void vk_lost(mm_valkey_t *st, redisAsyncContext *ac, const char *why)
{
	if (ac == NULL || st->ac != ac)
		return;
	st->ac = NULL;
	st->state = VK_DOWN;
	st->checking = st->scanning = st->replaying = 0;
	if (st->closing) {
		/* The graceful disconnect of close() is over. */
		vk_close_deadline(st);
		return;
	}
	st->vs.disconnects++;
	uv_timer_stop(&st->tick);
	mm_log(MM_LOG_WARN, VK_LOG, "%s:%d: %s; reads and writes use the store alone, "
	       "retrying in about %" PRId64 " ms", st->host, st->port, why, st->backoff_ms);
	vk_schedule_retry(st);
	vk_release_waiting(st);
}

/* Drops the current connection on our own initiative (deadline, protocol). */
static void vk_drop(mm_valkey_t *st, const char *why)
{
	redisAsyncContext *ac = st->ac;

	if (ac == NULL)
		return;
	vk_lost(st, ac, why);
	/* Inside a hiredis callback this is deferred until it returns; the
	 * pending callbacks then run with NULL replies. */
	redisAsyncFree(ac);
}

static void vk_connect_failed(mm_valkey_t *st, const char *why)
{
	st->state = VK_DOWN;
	st->vs.disconnects++;
	if (!st->closing) {
		mm_log(MM_LOG_WARN, VK_LOG, "%s:%d: %s; retrying in about %" PRId64 " ms",
		       st->host, st->port, why, st->backoff_ms);
		vk_schedule_retry(st);
	}
	vk_release_waiting(st);
}

static void vk_on_connect(const redisAsyncContext *c, int status)
{
	mm_valkey_t *st = c->data;

	/* On failure hiredis frees the context right after this callback. */
	if (status != REDIS_OK)
		vk_lost(st, (redisAsyncContext *)(uintptr_t)c, c->errstr ? c->errstr
								       : "cannot connect");
}

static void vk_on_disconnect(const redisAsyncContext *c, int status)
{
	mm_valkey_t *st = c->data;

	const char *why = c->errstr ? c->errstr : "disconnected";

	vk_lost(st, (redisAsyncContext *)(uintptr_t)c,
		status == REDIS_OK ? "connection closed" : why);
}

static void vk_hs_step(mm_valkey_t *st)
{
	size_t rl = strlen(st->run_id);
	const char *why = NULL;

	if (--st->hs_left > 0 || st->ac == NULL)
		return;
	/* Every reply is in: can what the server holds be trusted? */
	if (!st->hs_has_gen)
		why = st->have_gen ? "the cache generation is gone (FLUSHALL, restart or eviction)"
				   : NULL;
	else if (strncmp(st->hs_gen, st->run_id, rl) != 0 || st->hs_gen[rl] != ':')
		why = "the server restarted or is another one (its run_id changed)";
	else if (st->have_gen && strcmp(st->hs_gen, st->gen) != 0)
		why = "the cache generation changed";
	if (why == NULL && st->hs_has_gen) {
		snprintf(st->gen, sizeof(st->gen), "%s", st->hs_gen);
		st->have_gen = 1;
		vk_replay_dirty(st);
		return;
	}
	vk_loss(st, why);
}

static void vk_hs_simple(void *ctx, redisReply *r)
{
	mm_valkey_t *st = ctx;
	char why[160];

	if (r == NULL)
		return;
	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(why, sizeof(why), "handshake refused: %s", r->str);
		vk_drop(st, why);
		return;
	}
	vk_hs_step(st);
}

static void vk_hs_script(void *ctx, redisReply *r)
{
	vk_hsref_t *ref = ctx;
	mm_valkey_t *st = ref->st;

	if (r == NULL)
		return;
	if (r->type != REDIS_REPLY_STRING || r->len != 40) {
		vk_drop(st, r->type == REDIS_REPLY_ERROR ? r->str
							 : "SCRIPT LOAD: unexpected reply");
		return;
	}
	memcpy(st->sha[ref->script], r->str, 40);
	st->sha[ref->script][40] = '\0';
	vk_hs_step(st);
}

static void vk_hs_info(void *ctx, redisReply *r)
{
	mm_valkey_t *st = ctx;

	if (r == NULL)
		return;
	if (r->type != REDIS_REPLY_STRING || mm_valkey_run_id(r->str, st->run_id) != 0) {
		vk_drop(st, "INFO server has no run_id");
		return;
	}
	vk_hs_step(st);
}

static void vk_hs_gen(void *ctx, redisReply *r)
{
	mm_valkey_t *st = ctx;

	if (r == NULL)
		return;
	st->hs_has_gen = r->type == REDIS_REPLY_STRING && r->len < sizeof(st->hs_gen) &&
			 memchr(r->str, '\0', r->len) == NULL;
	if (st->hs_has_gen) {
		memcpy(st->hs_gen, r->str, r->len);
		st->hs_gen[r->len] = '\0';
	}
	vk_hs_step(st);
}

/* Queues the handshake; hiredis sends it once the socket connects. */
static void vk_handshake(mm_valkey_t *st)
{
	vk_list_t *l = &st->sa;
	char db[16];
	int i, rc = 0;

	st->hs_left = VK_S_MAX + 2 + (st->password != NULL) + (st->db != 0);
	st->hs_has_gen = 0;
	if (st->password != NULL) {
		vk_list_reset(l);
		if ((rc = vk_list_str(l, "AUTH")) ||
		    (st->user && (rc = vk_list_str(l, st->user))) ||
		    (rc = vk_list_str(l, st->password)) ||
		    (rc = vk_command(st, MM_VALKEY_OP_CHECK, l, vk_hs_simple, st)))
			goto fail;
	}
	if (st->db != 0) {
		vk_list_reset(l);
		snprintf(db, sizeof(db), "%d", st->db);
		if ((rc = vk_list_str(l, "SELECT")) || (rc = vk_list_str(l, db)) ||
		    (rc = vk_command(st, MM_VALKEY_OP_CHECK, l, vk_hs_simple, st)))
			goto fail;
	}
	for (i = 0; i < VK_S_MAX; i++) {
		vk_list_reset(l);
		st->hsref[i].st = st;
		st->hsref[i].script = i;
		if ((rc = vk_list_str(l, "SCRIPT")) || (rc = vk_list_str(l, "LOAD")) ||
		    (rc = vk_list_str(l, vk_scripts[i])) ||
		    (rc = vk_command(st, MM_VALKEY_OP_CHECK, l, vk_hs_script, &st->hsref[i])))
			goto fail;
	}
	vk_list_reset(l);
	if ((rc = vk_list_str(l, "INFO")) || (rc = vk_list_str(l, "server")) ||
	    (rc = vk_command(st, MM_VALKEY_OP_CHECK, l, vk_hs_info, st)))
		goto fail;
	vk_list_reset(l);
	if ((rc = vk_list_str(l, "GET")) || (rc = mm_buf_printf(&l->b, "%sgen", st->prefix)) ||
	    (rc = vk_list_mark(l)) || (rc = vk_command(st, MM_VALKEY_OP_CHECK, l, vk_hs_gen, st)))
		goto fail;
	return;
fail:
	vk_drop(st, mm_diag_msg());
}

/*
 * hiredis 0.14's libuv adapter ignores a poll error: libuv reports POLLERR
 * (a refused connect, a reset connection) as status UV_EBADF and stops the
 * handle, so hiredis would never learn of it and the failure would only
 * show when a deadline passed. These hooks wrap the adapter's and give the
 * handle a callback that passes errors on as the events hiredis waits for,
 * where its read or write fails and reports the error.
 */
static void vk_poll_cb(uv_poll_t *handle, int status, int events)
{
	redisLibuvEvents *p = handle->data;
	int ev = status ? p->events : events;

	if (p->context != NULL && (ev & UV_READABLE))
		redisAsyncHandleRead(p->context);
	if (p->context != NULL && (ev & UV_WRITABLE))
		redisAsyncHandleWrite(p->context);
}

static void vk_poll_restart(void *privdata)
{
	redisLibuvEvents *p = privdata;

	if (p->events)
		uv_poll_start(&p->handle, p->events, vk_poll_cb);
}

static void vk_add_read(void *privdata)
{
	redisLibuvAddRead(privdata);
	vk_poll_restart(privdata);
}

static void vk_del_read(void *privdata)
{
	redisLibuvDelRead(privdata);
	vk_poll_restart(privdata);
}

static void vk_add_write(void *privdata)
{
	redisLibuvAddWrite(privdata);
	vk_poll_restart(privdata);
}

static void vk_del_write(void *privdata)
{
	redisLibuvDelWrite(privdata);
	vk_poll_restart(privdata);
}

static void vk_connect_ip(mm_valkey_t *st, const char *ip)
{
	redisAsyncContext *ac = redisAsyncConnect(ip, st->port);
	char why[160];

	if (ac == NULL) {
		vk_connect_failed(st, "out of memory");
		return;
	}
	if (ac->err) {
		snprintf(why, sizeof(why), "%s", ac->errstr);
		redisAsyncFree(ac);
		vk_connect_failed(st, why);
		return;
	}
	ac->data = st;
	mm_valkey_reader_bound(ac->c.reader);
	if (redisLibuvAttach(ac, st->base.loop) != REDIS_OK) {
		redisAsyncFree(ac);
		vk_connect_failed(st, "cannot attach to the loop");
		return;
	}
	/* An idle connection must not keep the loop alive (the engine's loop
	 * ends when its own handles are closed); a command in flight does,
	 * through the deadline timer. */
	uv_unref((uv_handle_t *)&((redisLibuvEvents *)ac->ev.data)->handle);
	ac->ev.addRead = vk_add_read;
	ac->ev.delRead = vk_del_read;
	ac->ev.addWrite = vk_add_write;
	ac->ev.delWrite = vk_del_write;
	redisAsyncSetConnectCallback(ac, vk_on_connect);
	redisAsyncSetDisconnectCallback(ac, vk_on_disconnect);
	st->ac = ac;
	vk_handshake(st);
}

static void vk_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	mm_valkey_t *st = req->data;
	const void *addr = NULL;
	char why[160];

	st->resolving = 0;
	if (!st->closing && status == 0 && res != NULL) {
		if (res->ai_family == AF_INET)
			addr = &((struct sockaddr_in *)(void *)res->ai_addr)->sin_addr;
		else if (res->ai_family == AF_INET6)
			addr = &((struct sockaddr_in6 *)(void *)res->ai_addr)->sin6_addr;
	}
	if (addr != NULL && inet_ntop(res->ai_family, addr, st->ip, sizeof(st->ip)) != NULL) {
		vk_connect_ip(st, st->ip);
	} else if (!st->closing) {
		snprintf(why, sizeof(why), "cannot resolve '%s': %s", st->host,
			 status ? uv_strerror(status) : "no address");
		vk_connect_failed(st, why);
	}
	uv_freeaddrinfo(res);
	vk_unref(st);
}

static void vk_connect(mm_valkey_t *st)
{
	struct in6_addr a6;
	struct in_addr a4;
	int rc;

	if (st->closing || st->ac != NULL)
		return;
	st->state = VK_CONNECTING;
	if (inet_pton(AF_INET, st->host, &a4) == 1 || inet_pton(AF_INET6, st->host, &a6) == 1) {
		snprintf(st->ip, sizeof(st->ip), "%s", st->host);
		vk_connect_ip(st, st->ip);
		return;
	}
	st->gai.data = st;
	rc = uv_getaddrinfo(st->base.loop, &st->gai, vk_resolved, st->host, NULL, NULL);
	if (rc) {
		vk_connect_failed(st, uv_strerror(rc));
		return;
	}
	st->resolving = 1;
	st->refs++;
}

/* ---- generations, scans, dirty keys -------------------------------------------- */

static void vk_tick_cb(uv_timer_t *t);

static void vk_ready(mm_valkey_t *st)
{
	int first = !st->ever_ready;

	st->state = VK_READY;
	st->ever_ready = 1;
	st->backoff_ms = VK_BACKOFF_MIN_MS;
	st->vs.connects++;
	mm_log(first ? MM_LOG_DEBUG : MM_LOG_INFO, VK_LOG, "%s:%d: cache in use (generation %s)",
	       st->host, st->port, st->gen);
	uv_timer_start(&st->tick, vk_tick_cb, (uint64_t)st->check_ms, (uint64_t)st->check_ms);
	vk_release_waiting(st);
	if (st->repop_pending) {
		st->repop_pending = 0;
		vk_repopulate_hot(st);
	}
}

static void vk_gen_adopted(void *ctx, redisReply *r)
{
	mm_valkey_t *st = ctx;

	if (r == NULL)
		return;
	if (r->type != REDIS_REPLY_STRING || r->len >= sizeof(st->gen)) {
		vk_drop(st, "cannot read back the cache generation");
		return;
	}
	memcpy(st->gen, r->str, r->len);
	st->gen[r->len] = '\0';
	st->have_gen = 1;
	st->scanning = 0;
	vk_replay_dirty(st);
}

static void vk_ignore(void *ctx, redisReply *r)
{
}

/* The scan is over: a new generation (SET NX: another store may have set
 * one already, so it is read back and adopted). */
static void vk_new_gen(mm_valkey_t *st)
{
	vk_list_t *l = &st->sa;
	char gen[96];
	int rc;

	snprintf(gen, sizeof(gen), "%s:%016" PRIx64, st->run_id, vk_rand(st));
	vk_list_reset(l);
	if ((rc = vk_list_str(l, "SET")) || (rc = mm_buf_printf(&l->b, "%sgen", st->prefix)) ||
	    (rc = vk_list_mark(l)) || (rc = vk_list_str(l, gen)) || (rc = vk_list_str(l, "NX")) ||
	    (rc = vk_command(st, MM_VALKEY_OP_CHECK, l, vk_ignore, st)))
		goto fail;
	vk_list_reset(l);
	if ((rc = vk_list_str(l, "GET")) || (rc = mm_buf_printf(&l->b, "%sgen", st->prefix)) ||
	    (rc = vk_list_mark(l)) ||
	    (rc = vk_command(st, MM_VALKEY_OP_CHECK, l, vk_gen_adopted, st)))
		goto fail;
	return;
fail:
	vk_drop(st, mm_diag_msg());
}

static void vk_scan_next(mm_valkey_t *st);

static void vk_scan_reply(void *ctx, redisReply *r)
{
	mm_valkey_t *st = ctx;
	redisReply *keys;
	vk_list_t *l = &st->sa;
	size_t i;
	int rc = 0;

	if (r == NULL || !st->scanning)
		return;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING ||
	    r->element[0]->len >= sizeof(st->scan_cursor) ||
	    r->element[1]->type != REDIS_REPLY_ARRAY) {
		vk_drop(st, "SCAN: unexpected reply");
		return;
	}
	memcpy(st->scan_cursor, r->element[0]->str, r->element[0]->len);
	st->scan_cursor[r->element[0]->len] = '\0';
	keys = r->element[1];
	if (keys->elements > 0) {
		vk_list_reset(l);
		rc = vk_list_str(l, "UNLINK");
		for (i = 0; i < keys->elements && rc == 0; i++)
			if (keys->element[i]->type == REDIS_REPLY_STRING)
				rc = vk_list_add(l, keys->element[i]->str, keys->element[i]->len);
		if (rc == 0)
			rc = vk_command(st, MM_VALKEY_OP_CHECK, l, vk_ignore, st);
		if (rc) {
			vk_drop(st, mm_diag_msg());
			return;
		}
	}
	if (strcmp(st->scan_cursor, "0") == 0)
		vk_new_gen(st);
	else
		vk_scan_next(st);
}

static void vk_scan_next(mm_valkey_t *st)
{
	vk_list_t *l = &st->sa;
	const char *p;
	int rc;

	vk_list_reset(l);
	if ((rc = vk_list_str(l, "SCAN")) || (rc = vk_list_str(l, st->scan_cursor)) ||
	    (rc = vk_list_str(l, "MATCH")))
		goto fail;
	/* The prefix is matched literally: glob characters are escaped. */
	for (p = st->prefix; *p && rc == 0; p++) {
		if (strchr("*?[]\\", *p))
			rc = mm_buf_put_u8(&l->b, '\\');
		if (rc == 0)
			rc = mm_buf_put_u8(&l->b, (uint8_t)*p);
	}
	if (rc || (rc = mm_buf_append(&l->b, "s:*", 3)) || (rc = vk_list_mark(l)) ||
	    (rc = vk_list_str(l, "COUNT")) || (rc = vk_list_str(l, "1000")) ||
	    (rc = vk_command(st, MM_VALKEY_OP_CHECK, l, vk_scan_reply, st)))
		goto fail;
	return;
fail:
	vk_drop(st, mm_diag_msg());
}

/*
 * The server lost data, restarted (maybe from an older snapshot) or is not
 * the one we knew: drop every cached state under the prefix, then take a
 * new generation. why is NULL for a store's first sight of a server with
 * no generation (a new cache): scanning it costs little and makes sure
 * nothing older is trusted.
 */
static void vk_loss(mm_valkey_t *st, const char *why)
{
	if (why != NULL) {
		st->vs.data_losses++;
		st->repop_pending = 1;
		mm_log(MM_LOG_WARN, VK_LOG, "%s:%d: %s: dropping cached states and rebuilding",
		       st->host, st->port, why);
	}
	st->state = VK_CONNECTING;
	uv_timer_stop(&st->tick);
	st->scanning = 1;
	/* The scan deletes what is dirty now; keys dirtied later are tracked. */
	st->dirty.overflow = 0;
	snprintf(st->scan_cursor, sizeof(st->scan_cursor), "0");
	vk_scan_next(st);
}

typedef struct vk_replay {
	mm_valkey_t *st;
	int pending, failed, sending;
	uint64_t upto;
} vk_replay_t;

static void vk_replay_done(vk_replay_t *rp)
{
	mm_valkey_t *st = rp->st;

	st->replaying = 0;
	if (!rp->failed) {
		vk_keyset_trim(&st->dirty, rp->upto);
		st->vs.dirty = st->dirty.n;
		if (st->state == VK_CONNECTING && st->ac != NULL)
			vk_ready(st);
	} else {
		/* The server refused (out of memory?): reconnect and try again
		 * after a backoff rather than trust it. */
		vk_drop(st, "cannot delete dirty keys");
	}
	free(rp);
}

static void vk_replay_reply(void *ctx, redisReply *r)
{
	vk_replay_t *rp = ctx;

	if (vk_reply_ok(r) && r->type == REDIS_REPLY_INTEGER)
		rp->st->vs.invalidated += (uint64_t)r->integer;
	else
		rp->failed = 1;
	if (--rp->pending == 0 && !rp->sending)
		vk_replay_done(rp);
}

/* Sends INVAL for the keys k (epoch first) with a fresh seed. */
static int vk_inval_batch(mm_valkey_t *st, vk_list_t *k, vk_list_t *a, vk_reply_fn fn, void *ctx)
{
	int rc;

	vk_list_reset(a);
	if ((rc = vk_list_i64(a, (int64_t)(vk_rand(st) >> 16))) ||
	    (rc = vk_list_i64(a, st->cache_ttl_ms)))
		return rc;
	return vk_eval(st, MM_VALKEY_OP_INVALIDATE, VK_S_INVAL, k, a, fn, ctx);
}

/*
 * Deletes every dirty key (grouped by bucket, each group bumping its epoch)
 * and, when the store is (re)connecting, becomes ready once done. An
 * overflowed dirty set, which forgot keys, takes a full scan instead.
 */
static void vk_replay_dirty(mm_valkey_t *st)
{
	vk_list_t k = {0}, a = {0};
	vk_replay_t *rp;
	vk_kent_t *e, *g;
	size_t n;
	int rc = 0;

	if (st->replaying)
		return;
	if (st->dirty.overflow) {
		vk_loss(st, NULL);
		return;
	}
	if (st->dirty.n == 0) {
		if (st->state == VK_CONNECTING)
			vk_ready(st);
		return;
	}
	rp = calloc(1, sizeof(*rp));
	if (rp == NULL) {
		vk_drop(st, "out of memory");
		return;
	}
	rp->st = st;
	rp->upto = st->kseq;
	rp->sending = 1;
	st->replaying = 1;
	/* Dirty keys are few and come in runs of one bucket (a flush's keys). */
	for (e = st->dirty.oldest; e != NULL && rc == 0;) {
		vk_list_reset(&k);
		rc = vk_coord_key(st, &k, 'e', e->ns->name, e->bucket);
		for (g = e, n = 0; g != NULL && rc == 0 && n < VK_CHUNK && g->ns == e->ns &&
				   g->bucket == e->bucket;
		     g = g->newer, n++)
			rc = vk_state_key(st, &k, g->ns->name, g->bucket, g->entity, g->len);
		if (rc == 0 && (rc = vk_inval_batch(st, &k, &a, vk_replay_reply, rp)) == 0)
			rp->pending++;
		e = g;
	}
	vk_list_free(&k);
	vk_list_free(&a);
	rp->sending = 0;
	if (rc)
		rp->failed = 1;
	if (rp->pending == 0)
		vk_replay_done(rp);
}

static void vk_check_reply(void *ctx, redisReply *r)
{
	mm_valkey_t *st = ctx;

	st->checking = 0;
	if (r == NULL || st->state != VK_READY)
		return;
	if (r->type == REDIS_REPLY_ERROR)
		return;
	if (r->type != REDIS_REPLY_STRING || strlen(st->gen) != r->len ||
	    memcmp(st->gen, r->str, r->len) != 0)
		vk_loss(st, r->type == REDIS_REPLY_STRING ? "the cache generation changed"
							  : "the cache generation is gone");
}

/* Every check_interval while ready: is the generation still ours? Are
 * there dirty keys to invalidate? */
static void vk_tick_cb(uv_timer_t *t)
{
	mm_valkey_t *st = t->data;
	vk_list_t *l = &st->sa;
	int rc;

	if (st->state != VK_READY)
		return;
	if (st->dirty.n > 0 || st->dirty.overflow)
		vk_replay_dirty(st);
	if (st->checking || st->state != VK_READY)
		return;
	vk_list_reset(l);
	if ((rc = vk_list_str(l, "GET")) || (rc = mm_buf_printf(&l->b, "%sgen", st->prefix)) ||
	    (rc = vk_list_mark(l)) ||
	    (rc = vk_command(st, MM_VALKEY_OP_CHECK, l, vk_check_reply, st)))
		return;
	st->checking = 1;
}

/* ---- reads: get_many and repopulate ------------------------------------------- */

enum { VK_R_HIT = 1, VK_R_SEEN = 2, VK_R_CORRUPT = 4 };

typedef struct vk_read {
	vk_op_t op;
	vk_ns_t *ns;
	const mm_key_t *keys;
	size_t n;
	void *states;           /* the caller's (get_many); NULL for repopulate */
	uint8_t *found;
	int repop;              /* repopulate: every key is read from the store */
	uint8_t *flags;         /* per key: VK_R_* */
	vk_list_t keystr;       /* per key: entry, epoch, lease set */
	vk_list_t epochs;       /* per key: "n" (none), "v<epoch>", or "" (not seen) */
	int nofill;             /* the epoch list could not be built */
	size_t next_chunk;
	int pending, sending;
	/* Misses, read from the backing store. */
	size_t *miss, nmiss;
	mm_key_t *mkeys;
	unsigned char *mstates;
	uint8_t *mfound;
	vk_list_t fill;         /* per miss: its cache value */
	/* repopulate: owned copies of the keys */
	mm_key_t *own_keys;
	char *own_bytes;
} vk_read_t;

static void vk_read_free(vk_read_t *rd)
{
	mm_valkey_t *st = rd->op.st;
	size_t j;

	if (rd->mstates != NULL)
		for (j = 0; j < rd->nmiss; j++)
			rd->ns->m.vt->destroy(&rd->ns->m, rd->mstates + j * MM_STATE_MAX);
	free(rd->flags);
	vk_list_free(&rd->keystr);
	vk_list_free(&rd->epochs);
	free(rd->miss);
	free(rd->mkeys);
	free(rd->mstates);
	free(rd->mfound);
	vk_list_free(&rd->fill);
	free(rd->own_keys);
	free(rd->own_bytes);
	free(rd);
	vk_unref(st);
}

/* Answers the caller once (get_many answers before its fill). */
static void vk_read_complete(vk_read_t *rd, int status, const char *detail)
{
	mm_store_cb cb = rd->op.cb;

	rd->op.cb = NULL;
	if (cb != NULL)
		cb(rd->op.arg, status, detail);
}

static void vk_read_end(vk_read_t *rd, int status, const char *detail)
{
	vk_read_complete(rd, status, detail);
	vk_read_free(rd);
}

static void vk_fill_reply(void *ctx, redisReply *r)
{
	vk_read_t *rd = ctx;
	mm_valkey_t *st = rd->op.st;

	if (vk_reply_ok(r) && r->type == REDIS_REPLY_INTEGER) {
		st->vs.fills += (uint64_t)r->integer;
		if (rd->repop)
			st->vs.repopulated += (uint64_t)r->integer;
	}
	if (--rd->pending == 0 && !rd->sending)
		vk_read_end(rd, 0, "");
}

/* Appends one key's FILL arguments (entry, epoch, lease; value, epoch
 * seen, expiry, nx). */
static int vk_fill_args(vk_read_t *rd, size_t i, size_t j, vk_list_t *k, vk_list_t *a)
{
	mm_valkey_t *st = rd->op.st;
	const char *p;
	size_t len, x;
	int rc = 0;

	for (x = 0; x < 3 && rc == 0; x++) {
		p = vk_list_at(&rd->keystr, 3 * i + x, &len);
		rc = vk_list_add(k, p, len);
	}
	if (rc)
		return rc;
	p = vk_list_at(&rd->fill, j, &len);
	if ((rc = vk_list_add(a, p, len)))
		return rc;
	p = vk_list_at(&rd->epochs, i, &len);
	if ((rc = vk_list_add(a, p, len)) ||
	    (rc = vk_list_i64(a, vk_ns_expire(st, rd->ns, rd->keys[i].bucket))))
		return rc;
	return vk_list_str(a, rd->repop || (rd->flags[i] & VK_R_CORRUPT) ? "0" : "1");
}

/* Writes the values read from the store into the cache, guarded by the
 * epochs seen before the store was read. */
static void vk_read_fill(vk_read_t *rd)
{
	mm_valkey_t *st = rd->op.st;
	vk_list_t k = {0}, a = {0};
	size_t j, batch = 0;
	int rc = 0;

	rd->sending = 1;
	for (j = 0; j < rd->nmiss && rc == 0 && !rd->nofill && vk_usable(st); j++) {
		size_t i = rd->miss[j];

		if (!(rd->flags[i] & VK_R_SEEN))
			continue;
		if (batch == 0) {
			vk_list_reset(&k);
			vk_list_reset(&a);
			rc = vk_list_i64(&a, st->cache_ttl_ms);
		}
		if (rc == 0)
			rc = vk_fill_args(rd, i, j, &k, &a);
		if (rc == 0 && ++batch == VK_CHUNK) {
			if (vk_eval(st, MM_VALKEY_OP_FILL, VK_S_FILL, &k, &a, vk_fill_reply,
				    rd) == 0)
				rd->pending++;
			batch = 0;
		}
	}
	if (rc == 0 && batch > 0 &&
	    vk_eval(st, MM_VALKEY_OP_FILL, VK_S_FILL, &k, &a, vk_fill_reply, rd) == 0)
		rd->pending++;
	vk_list_free(&k);
	vk_list_free(&a);
	rd->sending = 0;
	if (rd->pending == 0)
		vk_read_end(rd, 0, "");
}

/* The backing store answered the misses: hand the states over (decoded
 * from the bytes the cache will get), answer, then fill. */
static void vk_read_stored(void *arg, int status, const char *detail)
{
	vk_read_t *rd = arg;
	mm_valkey_t *st = rd->op.st;
	const mm_monoid_t *m = &rd->ns->m;
	mm_buf_t enc = {0};
	char why[512];
	size_t j;
	int rc = 0;

	if (status != 0 || st->closing) {
		vk_read_end(rd, status ? status : MM_ECLOSED, status ? detail : "valkey: closing");
		return;
	}
	for (j = 0; j < rd->nmiss && rc == 0; j++) {
		size_t i = rd->miss[j];

		enc.len = 0;
		if (!rd->mfound[j] && rd->ns->negative == VK_NEG_EMPTY) {
			if ((rc = vk_list_add(&rd->fill, "", 0)))
				break;
			continue;
		}
		if ((rc = m->vt->encode(m, rd->mstates + j * MM_STATE_MAX, &enc)) ||
		    (rc = vk_cache_value(rd->ns, enc.p, enc.len, &rd->fill)))
			break;
		if (rd->repop || !rd->mfound[j])
			continue;
		if ((rc = m->vt->decode(m, (char *)rd->states + i * MM_STATE_MAX, enc.p, enc.len)))
			break;
		rd->found[i] = 1;
	}
	mm_buf_free(&enc);
	if (rc) {
		snprintf(why, sizeof(why), "%s", mm_diag_msg());
		vk_read_end(rd, rc, why);
		return;
	}
	if (!rd->repop) {
		st->vs.misses += rd->nmiss;
		vk_read_complete(rd, 0, "");
	}
	vk_read_fill(rd);
}

/* Every lookup is in: read what the cache did not answer from the store. */
static void vk_read_looked(vk_read_t *rd)
{
	mm_valkey_t *st = rd->op.st;
	char why[512];
	size_t i, j;
	int rc;

	for (i = 0; i < rd->n; i++)
		if (!(rd->flags[i] & VK_R_HIT))
			rd->nmiss++;
	if (rd->nmiss == 0) {
		vk_read_end(rd, 0, "");
		return;
	}
	rd->miss = malloc(rd->nmiss * sizeof(*rd->miss));
	rd->mkeys = malloc(rd->nmiss * sizeof(*rd->mkeys));
	rd->mfound = calloc(rd->nmiss, 1);
	if (rd->miss && rd->mkeys && rd->mfound)
		rd->mstates = aligned_alloc(16, rd->nmiss * MM_STATE_MAX);
	if (rd->mstates == NULL) {
		vk_read_end(rd, MM_ENOMEM, "valkey: cannot allocate the misses of a read");
		return;
	}
	for (i = 0, j = 0; i < rd->n; i++)
		if (!(rd->flags[i] & VK_R_HIT)) {
			rd->miss[j] = i;
			rd->mkeys[j] = rd->keys[i];
			rd->ns->m.vt->init(&rd->ns->m, rd->mstates + j * MM_STATE_MAX);
			j++;
		}
	rc = mm_store_get_many(st->backing, &rd->ns->ns, rd->mkeys, rd->nmiss, rd->mstates,
			       rd->mfound, vk_read_stored, rd);
	if (rc) {
		snprintf(why, sizeof(why), "%s", mm_diag_msg());
		vk_read_end(rd, rc, why);
	}
}

/* Notes the epoch a lookup saw for key i (e NULL: the lookup failed). The
 * list gets exactly one string per key, in order. */
static void vk_read_epoch(vk_read_t *rd, size_t i, const redisReply *e)
{
	int rc = 0, seen = 0;

	if (e != NULL && e->type == REDIS_REPLY_STRING) {
		seen = 1;
		if ((rc = mm_buf_put_u8(&rd->epochs.b, 'v')) == 0)
			rc = mm_buf_append(&rd->epochs.b, e->str, e->len);
	} else if (e != NULL && e->type == REDIS_REPLY_NIL) {
		seen = 1;
		rc = mm_buf_put_u8(&rd->epochs.b, 'n');
	}
	if (rc == 0)
		rc = vk_list_mark(&rd->epochs);
	if (rc)
		rd->nofill = 1;
	else if (seen)
		rd->flags[i] |= VK_R_SEEN;
}

static void vk_read_mget(void *ctx, redisReply *r)
{
	vk_read_t *rd = ctx;
	mm_valkey_t *st = rd->op.st;
	const mm_monoid_t *m = &rd->ns->m;
	size_t first = rd->next_chunk, cnt, x;
	int ok;

	cnt = rd->n - first < VK_READ_CHUNK ? rd->n - first : VK_READ_CHUNK;
	rd->next_chunk += cnt;
	ok = r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 * cnt;
	for (x = 0; x < cnt; x++) {
		size_t i = first + x;
		const redisReply *v;
		void *state;

		vk_read_epoch(rd, i, ok ? r->element[2 * x + 1] : NULL);
		if (!ok || rd->repop)
			continue;
		v = r->element[2 * x];
		if (v->type != REDIS_REPLY_STRING)
			continue;
		if (v->len == 0 && rd->ns->negative == VK_NEG_EMPTY) {
			/* The marker of a bucket the store lacks. */
			st->vs.hits++;
			rd->flags[i] |= VK_R_HIT;
			continue;
		}
		state = (char *)rd->states + i * MM_STATE_MAX;
		if (vk_from_cache(rd->ns, v->str, v->len, state) != 0) {
			/* Refilled from the store, replacing the bad value. */
			st->vs.corrupt++;
			rd->flags[i] |= VK_R_CORRUPT;
			m->vt->destroy(m, state);
			m->vt->init(m, state);
			continue;
		}
		st->vs.hits++;
		rd->flags[i] |= VK_R_HIT;
		rd->found[i] = !(rd->ns->negative == VK_NEG_IDENTITY &&
				 m->vt->is_identity(m, state));
	}
	if (--rd->pending == 0 && !rd->sending)
		vk_read_looked(rd);
}

/* Sends the lookups: MGET of entry and epoch per key, in chunks. 0 once
 * something is on its way (unsent chunks are completed as failures), or an
 * error with nothing sent. */
static int vk_read_send(vk_read_t *rd)
{
	mm_valkey_t *st = rd->op.st;
	vk_list_t *l = &st->sa;
	size_t i, x, cnt, sent = 0;
	int rc = 0;

	for (i = 0; i < rd->n && rc == 0; i++) {
		const mm_key_t *k = &rd->keys[i];

		if ((rc = vk_state_key(st, &rd->keystr, rd->ns->name, k->bucket, k->entity,
				       k->len)) ||
		    (rc = vk_coord_key(st, &rd->keystr, 'e', rd->ns->name, k->bucket)))
			break;
		rc = vk_coord_key(st, &rd->keystr, 'l', rd->ns->name, k->bucket);
	}
	if (rc)
		return rc;
	rd->sending = 1;
	for (i = 0; i < rd->n && rc == 0; i += cnt) {
		cnt = rd->n - i < VK_READ_CHUNK ? rd->n - i : VK_READ_CHUNK;
		vk_list_reset(l);
		rc = vk_list_str(l, "MGET");
		for (x = 0; x < cnt && rc == 0; x++) {
			size_t kl, el;
			const char *kp = vk_list_at(&rd->keystr, 3 * (i + x), &kl);
			const char *ep = vk_list_at(&rd->keystr, 3 * (i + x) + 1, &el);

			if ((rc = vk_list_add(l, kp, kl)) == 0)
				rc = vk_list_add(l, ep, el);
		}
		if (rc == 0 && (rc = vk_command(st, MM_VALKEY_OP_GET, l, vk_read_mget, rd)) == 0) {
			rd->pending++;
			sent += cnt;
		}
	}
	rd->sending = 0;
	if (rd->pending == 0)
		return rc ? rc : mm_diag_set(MM_ECLOSED, "valkey: nothing sent");
	/* Keys of chunks that could not go were not looked up. */
	for (i = sent; i < rd->n; i++)
		vk_read_epoch(rd, i, NULL);
	rd->next_chunk = 0;
	return 0;
}

static vk_read_t *vk_read_new(mm_valkey_t *st, vk_ns_t *vn, size_t n)
{
	vk_read_t *rd = calloc(1, sizeof(*rd));

	if (rd == NULL)
		return NULL;
	rd->flags = calloc(n, 1);
	if (rd->flags == NULL) {
		free(rd);
		return NULL;
	}
	rd->op.st = st;
	rd->ns = vn;
	rd->n = n;
	st->refs++;
	return rd;
}

/* Starts a read that waited for the first handshake. */
static void vk_read_run(vk_op_t *op)
{
	vk_read_t *rd = (vk_read_t *)op;
	mm_valkey_t *st = op->st;
	char why[512];
	int rc;

	if (!st->closing && vk_usable(st) && vk_read_send(rd) == 0)
		return;
	if (rd->repop || st->closing) {
		vk_read_end(rd, MM_EAGAIN, "valkey: the cache is unavailable");
		return;
	}
	/* The cache is unavailable: the store answers alone, to the caller. */
	st->vs.bypassed++;
	rc = mm_store_get_many(st->backing, &rd->ns->ns, rd->keys, rd->n, rd->states, rd->found,
			       op->cb, op->arg);
	if (rc) {
		snprintf(why, sizeof(why), "%s", mm_diag_msg());
		vk_read_end(rd, rc, why);
		return;
	}
	rd->op.cb = NULL;
	vk_read_free(rd);
}

static int vk_get_many(mm_store_t *base, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
		       void *states, uint8_t *found, mm_store_cb cb, void *arg)
{
	mm_valkey_t *st = (mm_valkey_t *)base;
	vk_ns_t *vn = vk_ns_need(st, ns);
	vk_read_t *rd;
	size_t i;

	if (vn == NULL)
		return MM_ENOMEM;
	for (i = 0; i < n; i++)
		vk_remember(st, &st->hot, vn, &keys[i]);
	memset(found, 0, n);
	if (vk_usable(st) || vk_should_wait(st)) {
		rd = vk_read_new(st, vn, n);
		if (rd == NULL)
			return mm_diag_set(MM_ENOMEM, "valkey: cannot allocate a read");
		rd->keys = keys;
		rd->states = states;
		rd->found = found;
		rd->op.cb = cb;
		rd->op.arg = arg;
		if (vk_should_wait(st)) {
			vk_wait(&rd->op, vk_read_run);
			return 0;
		}
		if (vk_read_send(rd) == 0)
			return 0;
		rd->op.cb = NULL;
		vk_read_free(rd);
	}
	st->vs.bypassed++;
	return mm_store_get_many(st->backing, &vn->ns, keys, n, states, found, cb, arg);
}

static void vk_repop_fail(vk_op_t *op)
{
	vk_read_end((vk_read_t *)op, MM_EAGAIN, "valkey: the cache is unavailable");
}

/* A read that rebuilds keys (copied) from the store. Always completes
 * through cb. */
static int vk_repop_start(mm_valkey_t *st, vk_ns_t *vn, const mm_key_t *keys, size_t n,
			  mm_store_cb cb, void *arg)
{
	vk_read_t *rd;
	size_t i, bytes = 0, off = 0;

	for (i = 0; i < n; i++)
		bytes += keys[i].len;
	rd = vk_read_new(st, vn, n);
	if (rd == NULL)
		return mm_diag_set(MM_ENOMEM, "valkey: cannot allocate a repopulate");
	rd->repop = 1;
	rd->own_keys = malloc(n * sizeof(*rd->own_keys));
	rd->own_bytes = malloc(bytes ? bytes : 1);
	if (rd->own_keys == NULL || rd->own_bytes == NULL) {
		vk_read_free(rd);
		return mm_diag_set(MM_ENOMEM, "valkey: cannot allocate a repopulate");
	}
	for (i = 0; i < n; i++) {
		memcpy(rd->own_bytes + off, keys[i].entity, keys[i].len);
		rd->own_keys[i] = (mm_key_t){rd->own_bytes + off, keys[i].len, keys[i].bucket};
		off += keys[i].len;
	}
	rd->keys = rd->own_keys;
	rd->op.cb = cb;
	rd->op.arg = arg;
	if (vk_should_wait(st))
		vk_wait(&rd->op, vk_read_run);
	else if (!vk_usable(st) || vk_read_send(rd) != 0)
		vk_later(&rd->op, vk_repop_fail);
	return 0;
}

static void vk_repop_hot_done(void *arg, int status, const char *detail)
{
	if (status != 0 && status != MM_ECLOSED)
		mm_log(MM_LOG_WARN, VK_LOG, "rebuilding the cache: %s", detail);
}

/* After a data loss: rebuild the keys this store used last, one read per
 * namespace. */
static void vk_repopulate_hot(mm_valkey_t *st)
{
	mm_key_t *keys = malloc((st->hot.n ? st->hot.n : 1) * sizeof(*keys));
	size_t i, n;
	vk_kent_t *e;

	if (keys == NULL)
		return;
	for (i = 0; i < st->nns; i++) {
		n = 0;
		for (e = st->hot.newest; e != NULL; e = e->older)
			if (e->ns == st->nss[i])
				keys[n++] = (mm_key_t){e->entity, e->len, e->bucket};
		if (n > 0 && vk_repop_start(st, st->nss[i], keys, n, vk_repop_hot_done, st) != 0)
			mm_log(MM_LOG_WARN, VK_LOG, "rebuilding the cache: %s", mm_diag_msg());
	}
	free(keys);
}

/* ---- writes ------------------------------------------------------------------------ */

typedef struct vk_item {
	vk_ns_t *ns;
	mm_key_t key;
	int64_t expire_ms;
	const void *state;
} vk_item_t;

enum { VK_G_NONE, VK_G_UPDATE, VK_G_DELETE, VK_G_RELEASE, VK_G_INVAL };

typedef struct vk_group {
	vk_ns_t *ns;
	int64_t bucket;
	size_t first, count;
	int leased;
} vk_group_t;

typedef struct vk_apply {
	vk_op_t op;
	mm_flush_t *f;
	size_t nmarks;          /* marks kept from the backing store (dedup = valkey) */
	vk_item_t *items;
	size_t nitems;
	vk_group_t *groups;
	size_t ngroups;
	char member[64];        /* this write's lease */
	int status;
	char detail[512];
	int pending, sending;
} vk_apply_t;

/* The context of one batch command of a write. */
typedef struct vk_batch {
	vk_apply_t *ap;
	vk_group_t *g;
	size_t first, count;    /* items */
	int last;
} vk_batch_t;

static int vk_cmp_item(const void *x, const void *y)
{
	const vk_item_t *a = x, *b = y;

	if (a->ns != b->ns)
		return strcmp(a->ns->name, b->ns->name);
	return (a->key.bucket > b->key.bucket) - (a->key.bucket < b->key.bucket);
}

static void vk_apply_free(vk_apply_t *ap)
{
	mm_valkey_t *st = ap->op.st;

	free(ap->items);
	free(ap->groups);
	free(ap);
	vk_unref(st);
}

static void vk_apply_finish(vk_apply_t *ap)
{
	mm_store_cb cb = ap->op.cb;
	void *arg = ap->op.arg;
	int status = ap->status;
	char detail[512];

	snprintf(detail, sizeof(detail), "%s", ap->detail);
	vk_apply_free(ap);
	cb(arg, status, detail);
}

static void vk_apply_step(vk_apply_t *ap)
{
	if (--ap->pending == 0 && !ap->sending)
		vk_apply_finish(ap);
}

/* Remembers the batch's keys as dirty: Valkey did not confirm them. */
static void vk_batch_dirty(vk_batch_t *b)
{
	mm_valkey_t *st = b->ap->op.st;
	size_t i;

	for (i = 0; i < b->count; i++)
		vk_remember(st, &st->dirty, b->ap->items[b->first + i].ns,
			    &b->ap->items[b->first + i].key);
}

static void vk_post_reply(void *ctx, redisReply *r)
{
	vk_batch_t *b = ctx;
	mm_valkey_t *st = b->ap->op.st;

	if (vk_reply_ok(r) && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[0]->type == REDIS_REPLY_INTEGER) {
		if (r->element[0]->integer == 1) {
			st->vs.updates += (uint64_t)r->element[1]->integer;
		} else {
			st->vs.lost_leases++;
			st->vs.invalidated += b->count;
		}
	} else {
		vk_batch_dirty(b);
	}
	vk_apply_step(b->ap);
	free(b);
}

static void vk_inval_reply(void *ctx, redisReply *r)
{
	vk_batch_t *b = ctx;
	mm_valkey_t *st = b->ap->op.st;

	if (vk_reply_ok(r) && r->type == REDIS_REPLY_INTEGER)
		st->vs.invalidated += (uint64_t)r->integer;
	else
		vk_batch_dirty(b);
	vk_apply_step(b->ap);
	free(b);
}

static vk_batch_t *vk_batch_new(vk_apply_t *ap, vk_group_t *g, size_t first, size_t count,
				int last)
{
	vk_batch_t *b = malloc(sizeof(*b));

	if (b != NULL) {
		b->ap = ap;
		b->g = g;
		b->first = first;
		b->count = count;
		b->last = last;
	}
	return b;
}

/* Sends a batch: on failure to send, its keys become dirty. */
static void vk_batch_send(vk_batch_t *b, int script, const vk_list_t *k, const vk_list_t *a,
			  vk_reply_fn fn)
{
	mm_valkey_t *st = b->ap->op.st;
	int op = script == VK_S_INVAL ? MM_VALKEY_OP_INVALIDATE : MM_VALKEY_OP_UPDATE;

	if (vk_eval(st, op, script, k, a, fn, b) == 0) {
		b->ap->pending++;
		return;
	}
	vk_batch_dirty(b);
	free(b);
}

/* Appends the POST head (lease, epoch, tmp; member, last, seed, epoch ttl). */
static int vk_post_head(vk_apply_t *ap, vk_group_t *g, int last, vk_list_t *k, vk_list_t *a)
{
	mm_valkey_t *st = ap->op.st;
	int rc;

	vk_list_reset(k);
	vk_list_reset(a);
	if ((rc = vk_coord_key(st, k, 'l', g->ns->name, g->bucket)) ||
	    (rc = vk_coord_key(st, k, 'e', g->ns->name, g->bucket)) ||
	    (rc = mm_buf_printf(&k->b, "%stmp", st->prefix)) || (rc = vk_list_mark(k)) ||
	    (rc = vk_list_str(a, ap->member)) || (rc = vk_list_str(a, last ? "1" : "0")) ||
	    (rc = vk_list_i64(a, (int64_t)(vk_rand(st) >> 16))))
		return rc;
	return vk_list_i64(a, st->cache_ttl_ms);
}

/* An entry's POST operation without operands: "d" deletes, "c" with an
 * empty SHA-1 never matches an existing entry (it is only deleted if the
 * lease was lost). */
static int vk_post_noop(vk_list_t *a, const char *op)
{
	int rc;

	if ((rc = vk_list_str(a, op)) || (rc = vk_list_add(a, "", 0)) ||
	    (rc = vk_list_add(a, "", 0)))
		return rc;
	return vk_list_str(a, "0");
}

/* One entry's POST operation for an INT or HLL delta. */
static int vk_post_op(vk_apply_t *ap, const vk_item_t *it, vk_list_t *a, mm_buf_t *tmp)
{
	const vk_ns_t *vn = it->ns;
	int64_t v = 0;
	int rc;

	if (vn->kind == VK_INT) {
		if ((rc = vk_int_of(vn, it->state, tmp, &v)) || (rc = vk_list_str(a, "i")) ||
		    (rc = vk_list_i64(a, v)))
			return rc;
	} else {
		tmp->len = 0;
		if ((rc = vn->m.vt->encode(&vn->m, it->state, tmp)) || (rc = vk_list_str(a, "h")) ||
		    (rc = vk_list_add(a, tmp->p, tmp->len)))
			return rc;
	}
	if ((rc = vk_list_add(a, "", 0)))
		return rc;
	return vk_list_i64(a, it->expire_ms);
}

/*
 * Sends a group's POST batches: each entry gets its delta (INT and HLL; the
 * CAS path builds its batches in vk_cas_reply), or is deleted when
 * delete_all. With count == 0 it only releases the lease and bumps the
 * epoch.
 */
static void vk_group_post(vk_apply_t *ap, vk_group_t *g, int delete_all)
{
	mm_valkey_t *st = ap->op.st;
	vk_list_t k = {0}, a = {0};
	mm_buf_t tmp = {0};
	size_t i = 0, cnt;
	int rc = 0;

	do {
		size_t first = g->first + i, x;
		int last;
		vk_batch_t *b;

		cnt = g->count - i < VK_CHUNK ? g->count - i : VK_CHUNK;
		last = i + cnt == g->count;
		if ((rc = vk_post_head(ap, g, last, &k, &a)))
			break;
		for (x = 0; x < cnt && rc == 0; x++) {
			const vk_item_t *it = &ap->items[first + x];

			rc = vk_state_key(st, &k, it->ns->name, it->key.bucket, it->key.entity,
					  it->key.len);
			if (rc == 0 && delete_all) {
				rc = vk_post_noop(&a, "d");
			} else if (rc == 0) {
				rc = vk_post_op(ap, it, &a, &tmp);
			}
		}
		if (rc)
			break;
		b = vk_batch_new(ap, g, first, cnt, last);
		if (b == NULL) {
			rc = MM_ENOMEM;
			break;
		}
		vk_batch_send(b, VK_S_POST, &k, &a, vk_post_reply);
		i += cnt;
	} while (i < g->count);
	if (rc) {
		/* Could not even build the batch: what is left becomes dirty. */
		vk_batch_t b = {ap, g, g->first + i, g->count - i, 0};

		vk_batch_dirty(&b);
	}
	vk_list_free(&k);
	vk_list_free(&a);
	mm_buf_free(&tmp);
}

/* Deletes a group's entries without a lease and bumps its epoch. */
static void vk_group_inval(vk_apply_t *ap, vk_group_t *g)
{
	mm_valkey_t *st = ap->op.st;
	vk_list_t k = {0}, a = {0};
	size_t i, x, cnt;
	int rc = 0;

	for (i = 0; i < g->count; i += cnt) {
		vk_batch_t *b;

		cnt = g->count - i < VK_CHUNK ? g->count - i : VK_CHUNK;
		vk_list_reset(&k);
		rc = vk_coord_key(st, &k, 'e', g->ns->name, g->bucket);
		for (x = 0; x < cnt && rc == 0; x++) {
			const vk_item_t *it = &ap->items[g->first + i + x];

			rc = vk_state_key(st, &k, it->ns->name, it->key.bucket, it->key.entity,
					  it->key.len);
		}
		if (rc || (b = vk_batch_new(ap, g, g->first + i, cnt, 0)) == NULL)
			break;
		if (vk_inval_batch(st, &k, &a, vk_inval_reply, b) == 0) {
			ap->pending++;
		} else {
			vk_batch_dirty(b);
			free(b);
		}
	}
	if (i < g->count) {
		vk_batch_t b = {ap, g, g->first + i, g->count - i, 0};

		vk_batch_dirty(&b);
	}
	vk_list_free(&k);
	vk_list_free(&a);
}

/* The entry of one item of a checked batch, from the check's reply: HLL
 * (EXISTS: 1 or 0 per entry) or bytes (value and SHA-1, or nils). Appends
 * its POST operation: the delta or the merged value for a cached entry, a
 * delete (a no-op for an absent one) otherwise. */
static int vk_checked_op(vk_apply_t *ap, const vk_item_t *it, const redisReply *r, size_t x,
			 vk_list_t *a, mm_buf_t *enc)
{
	mm_valkey_t *st = ap->op.st;
	const mm_monoid_t *m = &it->ns->m;
	const redisReply *v, *sha;
	_Alignas(16) unsigned char scratch[MM_STATE_MAX];
	int rc;

	if (it->ns->kind == VK_HLL) {
		if (r->element[x]->type == REDIS_REPLY_INTEGER && r->element[x]->integer == 1)
			return vk_post_op(ap, it, a, enc);
		return vk_post_noop(a, "d");
	}
	v = r->element[2 * x];
	sha = r->element[2 * x + 1];
	/* Absent, or the marker of an absent bucket: the entry must go. */
	if (v->type != REDIS_REPLY_STRING || sha->type != REDIS_REPLY_STRING || v->len == 0)
		return vk_post_noop(a, "d");
	m->vt->init(m, scratch);
	enc->len = 0;
	rc = m->vt->decode(m, scratch, (const uint8_t *)v->str, v->len);
	if (rc == MM_ECORRUPT)
		st->vs.corrupt++;
	if (rc == 0)
		rc = m->vt->merge(m, scratch, it->state);
	if (rc == 0)
		rc = m->vt->encode(m, scratch, enc);
	m->vt->destroy(m, scratch);
	if (rc != 0)
		return vk_post_noop(a, "d");
	if ((rc = vk_list_str(a, "c")) || (rc = vk_list_add(a, sha->str, sha->len)) ||
	    (rc = vk_list_add(a, enc->p, enc->len)))
		return rc;
	return vk_list_i64(a, it->expire_ms);
}

/* Two-phase update: a batch's check arrived; send the conditional update. */
static void vk_checked_reply(void *ctx, redisReply *r)
{
	vk_batch_t *b = ctx;
	vk_apply_t *ap = b->ap;
	mm_valkey_t *st = ap->op.st;
	size_t per = b->g->ns->kind == VK_HLL ? 1 : 2, x;
	vk_list_t k = {0}, a = {0};
	mm_buf_t enc = {0};
	vk_batch_t *nb = NULL;
	int rc;

	if (!vk_reply_ok(r) || r->type != REDIS_REPLY_ARRAY || r->elements != per * b->count) {
		/* Unknown state: the entries must go (the lease, if this batch
		 * was to release it, expires by itself). */
		vk_batch_dirty(b);
		goto out;
	}
	rc = vk_post_head(ap, b->g, b->last, &k, &a);
	for (x = 0; x < b->count && rc == 0; x++) {
		const vk_item_t *it = &ap->items[b->first + x];

		if ((rc = vk_state_key(st, &k, it->ns->name, it->key.bucket, it->key.entity,
				       it->key.len)) == 0)
			rc = vk_checked_op(ap, it, r, x, &a, &enc);
	}
	if (rc == 0)
		nb = vk_batch_new(ap, b->g, b->first, b->count, b->last);
	if (nb != NULL)
		vk_batch_send(nb, VK_S_POST, &k, &a, vk_post_reply);
	else
		vk_batch_dirty(b);
out:
	mm_buf_free(&enc);
	vk_list_free(&k);
	vk_list_free(&a);
	vk_apply_step(ap);
	free(b);
}

/*
 * Two-phase update of HLL and byte-valued groups: first which entries are
 * cached (HLL: EXISTS, so that deltas of a few KiB go only where they are
 * merged; bytes: the values with their SHA-1, to merge in C), batch by
 * batch, then the conditional update. The lease keeps fills away between
 * the two, so an entry absent at the check is still absent at the update.
 */
static void vk_group_checked(vk_apply_t *ap, vk_group_t *g)
{
	mm_valkey_t *st = ap->op.st;
	int script = g->ns->kind == VK_HLL ? VK_S_EXISTS : VK_S_CASREAD;
	vk_list_t k = {0};
	size_t i, x, cnt;
	int rc = 0;

	for (i = 0; i < g->count && rc == 0; i += cnt) {
		vk_batch_t *b;

		cnt = g->count - i < VK_CHUNK ? g->count - i : VK_CHUNK;
		vk_list_reset(&k);
		for (x = 0; x < cnt && rc == 0; x++) {
			const vk_item_t *it = &ap->items[g->first + i + x];

			rc = vk_state_key(st, &k, it->ns->name, it->key.bucket, it->key.entity,
					  it->key.len);
		}
		if (rc || (b = vk_batch_new(ap, g, g->first + i, cnt, i + cnt == g->count)) == NULL)
			break;
		if (vk_eval(st, MM_VALKEY_OP_UPDATE, script, &k, NULL, vk_checked_reply, b) == 0) {
			ap->pending++;
		} else {
			vk_batch_dirty(b);
			free(b);
		}
	}
	if (i < g->count) {
		vk_batch_t b = {ap, g, g->first + i, g->count - i, 0};

		vk_batch_dirty(&b);
	}
	vk_list_free(&k);
}

static void vk_mark_reply(void *ctx, redisReply *r)
{
	vk_apply_step(ctx);
}

/* dedup = valkey: the flush is durable, its marks go to Valkey. A mark that
 * cannot be written is lost (counted as a cache_mark error): the weaker
 * guarantee of marks kept outside the store. */
static void vk_send_marks(vk_apply_t *ap)
{
	mm_valkey_t *st = ap->op.st;
	const mm_flush_t *f = ap->f;
	vk_list_t k = {0}, a = {0};
	size_t i;
	int rc = 0;

	for (i = 0; i < ap->nmarks && rc == 0; i++) {
		const mm_mark_t *mk = &f->marks[i];

		if (mk->expire_ms <= f->now_ms)
			continue;
		if ((rc = vk_mark_key(st, &k, mk->ns->name, mk->id, mk->len)) ||
		    (rc = vk_list_i64(&a, mk->expire_ms)))
			break;
		if (k.n == VK_CHUNK) {
			if ((rc = vk_eval(st, MM_VALKEY_OP_MARK, VK_S_MARK, &k, &a, vk_mark_reply,
					  ap)) == 0)
				ap->pending++;
			vk_list_reset(&k);
			vk_list_reset(&a);
		}
	}
	if (rc == 0 && k.n > 0 &&
	    (rc = vk_eval(st, MM_VALKEY_OP_MARK, VK_S_MARK, &k, &a, vk_mark_reply, ap)) == 0)
		ap->pending++;
	if (rc)
		st->vs.errors[MM_VALKEY_OP_MARK]++;
	vk_list_free(&k);
	vk_list_free(&a);
}

/* The backing store finished: update, delete or remember the cache entries
 * of every group, then answer the caller. */
static void vk_apply_stored(void *arg, int status, const char *detail)
{
	vk_apply_t *ap = arg;
	mm_valkey_t *st = ap->op.st;
	int atomic = st->backing->vt->atomic_flush;
	size_t i;

	if (st->dedup_valkey)
		ap->f->nmarks = ap->nmarks;
	ap->status = status;
	snprintf(ap->detail, sizeof(ap->detail), "%s", status ? detail : "");
	ap->sending = 1;
	ap->pending = 1;
	if (status == 0 && st->dedup_valkey && ap->nmarks > 0) {
		if (st->state == VK_READY)
			vk_send_marks(ap);
		else
			st->vs.errors[MM_VALKEY_OP_MARK]++;
	}
	for (i = 0; i < ap->ngroups; i++) {
		vk_group_t *g = &ap->groups[i];
		int mode;

		if (status == 0)
			mode = g->leased ? VK_G_UPDATE : VK_G_INVAL;
		else if (atomic)
			mode = g->leased ? VK_G_RELEASE : VK_G_NONE;
		else
			mode = g->leased ? VK_G_DELETE : VK_G_INVAL;
		if (mode == VK_G_NONE)
			continue;
		if (st->state != VK_READY || st->closing) {
			/* Valkey does not answer: the entries must not be trusted
			 * later. A held lease expires by itself. */
			if (mode != VK_G_RELEASE) {
				vk_batch_t b = {ap, g, g->first, g->count, 0};

				vk_batch_dirty(&b);
			}
			continue;
		}
		switch (mode) {
		case VK_G_UPDATE:
			if (g->ns->kind == VK_INT)
				vk_group_post(ap, g, 0);
			else
				vk_group_checked(ap, g);
			break;
		case VK_G_DELETE:
			vk_group_post(ap, g, 1);
			break;
		case VK_G_RELEASE: {
			size_t count = g->count;

			g->count = 0;
			vk_group_post(ap, g, 0);
			g->count = count;
			break;
		}
		default:
			vk_group_inval(ap, g);
			break;
		}
	}
	st->vs.dirty = st->dirty.n;
	ap->sending = 0;
	vk_apply_step(ap);
}

/* Hands the flush to the backing store, keeping the marks from it when
 * they live in Valkey. 0, or the backing store's refusal (nothing sent). */
static int vk_apply_backing(vk_apply_t *ap)
{
	mm_valkey_t *st = ap->op.st;
	int rc;

	if (st->dedup_valkey) {
		ap->nmarks = ap->f->nmarks;
		ap->f->nmarks = 0;
	}
	rc = mm_store_apply(st->backing, ap->f, vk_apply_stored, ap);
	if (rc && st->dedup_valkey)
		ap->f->nmarks = ap->nmarks;
	return rc;
}

static void vk_lease_reply(void *ctx, redisReply *r)
{
	vk_batch_t *b = ctx;
	vk_apply_t *ap = b->ap;
	size_t i;
	int rc;

	if (vk_reply_ok(r) && r->type == REDIS_REPLY_INTEGER)
		for (i = 0; i < b->count; i++)
			ap->groups[b->first + i].leased = 1;
	free(b);
	if (--ap->pending > 0 || ap->sending)
		return;
	if ((rc = vk_apply_backing(ap)))
		vk_apply_stored(ap, rc, mm_diag_msg());
}

/* Takes the leases of every group (batches of groups). */
static int vk_take_leases(vk_apply_t *ap)
{
	mm_valkey_t *st = ap->op.st;
	vk_list_t k = {0}, a = {0};
	size_t i = 0, x, cnt;
	int rc = 0;

	ap->sending = 1;
	if ((rc = vk_list_str(&a, ap->member)) || (rc = vk_list_i64(&a, st->lease_ms)))
		goto out;
	for (i = 0; i < ap->ngroups && rc == 0; i += cnt) {
		vk_batch_t *b;

		cnt = ap->ngroups - i < VK_CHUNK ? ap->ngroups - i : VK_CHUNK;
		vk_list_reset(&k);
		for (x = 0; x < cnt && rc == 0; x++)
			rc = vk_coord_key(st, &k, 'l', ap->groups[i + x].ns->name,
					  ap->groups[i + x].bucket);
		if (rc || (b = vk_batch_new(ap, NULL, i, cnt, 0)) == NULL)
			break;
		if (vk_eval(st, MM_VALKEY_OP_LEASE, VK_S_LEASE, &k, &a, vk_lease_reply, b) == 0) {
			ap->pending++;
		} else {
			free(b);
			break;
		}
	}
out:
	vk_list_free(&k);
	vk_list_free(&a);
	ap->sending = 0;
	return ap->pending > 0 ? 0 : MM_ECLOSED;
}

static int vk_apply(mm_store_t *base, mm_flush_t *f, mm_store_cb cb, void *arg)
{
	mm_valkey_t *st = (mm_valkey_t *)base;
	vk_apply_t *ap;
	vk_ns_t *vn = NULL;
	const mm_ns_t *last = NULL;
	size_t i, n = 0;
	int rc;

	if (st->read_only)
		return mm_diag_set(MM_ENOTSUP, "valkey: apply on a store opened read-only");
	ap = calloc(1, sizeof(*ap));
	if (ap == NULL)
		return mm_diag_set(MM_ENOMEM, "valkey: cannot allocate an apply");
	st->refs++;
	ap->op.st = st;
	ap->op.cb = cb;
	ap->op.arg = arg;
	ap->f = f;
	ap->items = malloc((f->ndeltas ? f->ndeltas : 1) * sizeof(*ap->items));
	ap->groups = malloc((f->ndeltas ? f->ndeltas : 1) * sizeof(*ap->groups));
	if (ap->items == NULL || ap->groups == NULL) {
		rc = mm_diag_set(MM_ENOMEM, "valkey: cannot allocate an apply");
		goto fail;
	}
	/* Deltas a previous attempt of this flush made durable need nothing;
	 * the others are noted now, before the backing store may reorder them. */
	for (i = 0; i < f->ndeltas; i++) {
		const mm_delta_t *d = &f->deltas[i];

		if (f->delta_done != NULL && f->delta_done[i])
			continue;
		if (d->ns != last) {
			if ((vn = vk_ns_need(st, d->ns)) == NULL) {
				rc = MM_ENOMEM;
				goto fail;
			}
			last = d->ns;
		}
		ap->items[n] = (vk_item_t){vn, d->key, d->expire_ms, d->state};
		vk_remember(st, &st->hot, vn, &d->key);
		n++;
	}
	ap->nitems = n;
	qsort(ap->items, n, sizeof(*ap->items), vk_cmp_item);
	for (i = 0; i < n; i++) {
		vk_group_t *g;

		if (i == 0 || ap->items[i].ns != ap->items[i - 1].ns ||
		    ap->items[i].key.bucket != ap->items[i - 1].key.bucket) {
			g = &ap->groups[ap->ngroups++];
			g->ns = ap->items[i].ns;
			g->bucket = ap->items[i].key.bucket;
			g->first = i;
			g->count = 0;
			g->leased = 0;
		}
		ap->groups[ap->ngroups - 1].count++;
	}
	snprintf(ap->member, sizeof(ap->member), "%s:%" PRIu64, st->token, ++st->seq);
	if (ap->ngroups > 0 && st->state == VK_READY && vk_take_leases(ap) == 0)
		return 0;
	/* No leases: the store is written now; the entries are deleted (or
	 * remembered as dirty) afterwards. */
	if ((rc = vk_apply_backing(ap)) == 0)
		return 0;
fail:
	vk_apply_free(ap);
	return rc;
}

/* ---- cardinality, claims -------------------------------------------------------- */

/* Count and claims are built when called (the caller's arrays may go) and
 * sent from the deferred queue, so they complete the same way whether or
 * not the cache answers. */
typedef struct vk_count {
	vk_op_t op;
	vk_list_t k, a;
	uint64_t *count, *nonempty;
	int *cached;
	size_t n;
} vk_count_t;

static void vk_count_done(vk_op_t *op)
{
	vk_count_t *c = (vk_count_t *)op;
	mm_valkey_t *st = op->st;
	mm_store_cb cb = op->cb;
	void *arg = op->arg;

	vk_list_free(&c->k);
	vk_list_free(&c->a);
	free(c);
	vk_unref(st);
	cb(arg, 0, "");
}

static void vk_count_reply(void *ctx, redisReply *r)
{
	vk_count_t *c = ctx;

	if (vk_reply_ok(r) && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer >= 0 &&
	    r->element[1]->type == REDIS_REPLY_INTEGER) {
		*c->count = (uint64_t)r->element[0]->integer;
		*c->nonempty = (uint64_t)r->element[1]->integer;
		*c->cached = 1;
		c->op.st->vs.hits += c->n;
	}
	vk_count_done(&c->op);
}

static void vk_count_run(vk_op_t *op)
{
	vk_count_t *c = (vk_count_t *)op;
	mm_valkey_t *st = op->st;

	if (!st->closing && vk_usable(st) &&
	    vk_eval(st, MM_VALKEY_OP_COUNT, VK_S_COUNT, &c->k, &c->a, vk_count_reply, c) == 0)
		return;
	vk_count_done(op);
}

int mm_valkey_count(mm_store_t *base, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
		    uint64_t *count, uint64_t *nonempty, int *cached, mm_store_cb cb, void *arg)
{
	mm_valkey_t *st = vk_of(base);
	vk_count_t *c;
	vk_ns_t *vn;
	size_t i;
	int rc = 0;

	if (st == NULL)
		return mm_diag_set(MM_EINVAL, "valkey: count needs a store opened as \"valkey\"");
	if (ns == NULL || ns->name == NULL || ns->m == NULL || ns->m->vt != &mm_monoid_hll_vtable ||
	    strlen(ns->name) > VK_NS_MAX)
		return mm_diag_set(MM_EINVAL, "valkey: count needs an hll namespace");
	if (n == 0 || keys == NULL || count == NULL || nonempty == NULL || cached == NULL ||
	    cb == NULL)
		return mm_diag_set(MM_EINVAL, "valkey: count needs keys, outputs and a callback");
	for (i = 0; i < n; i++)
		if (keys[i].entity == NULL || keys[i].len < 1 || keys[i].len > 1024)
			return mm_diag_set(MM_EINVAL, "valkey: count key %zu is malformed", i);
	if ((vn = vk_ns_need(st, ns)) == NULL)
		return MM_ENOMEM;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return mm_diag_set(MM_ENOMEM, "valkey: cannot allocate a count");
	for (i = 0; i < n && rc == 0 && n <= VK_COUNT_MAX; i++)
		rc = vk_state_key(st, &c->k, vn->name, keys[i].bucket, keys[i].entity, keys[i].len);
	if (rc == 0)
		rc = vk_list_i64(&c->a, (int64_t)st->empty_hll_len);
	if (rc) {
		vk_list_free(&c->k);
		vk_list_free(&c->a);
		free(c);
		return rc;
	}
	st->refs++;
	c->op.st = st;
	c->op.cb = cb;
	c->op.arg = arg;
	c->count = count;
	c->nonempty = nonempty;
	c->cached = cached;
	c->n = n;
	*cached = 0;
	for (i = 0; i < n; i++)
		vk_remember(st, &st->hot, vn, &keys[i]);
	/* More keys than one script takes: the caller reads and merges. */
	if (n > VK_COUNT_MAX)
		vk_later(&c->op, vk_count_done);
	else if (vk_should_wait(st))
		vk_wait(&c->op, vk_count_run);
	else
		vk_later(&c->op, vk_count_run);
	return 0;
}

typedef struct vk_claim {
	vk_op_t op;
	vk_list_t *k, *a;       /* per batch of VK_CHUNK marks */
	size_t nbatch;
	uint8_t *won;           /* NULL: a release */
	size_t n, next;
	int pending, sending, status;
} vk_claim_t;

static void vk_claim_done(vk_op_t *op)
{
	vk_claim_t *c = (vk_claim_t *)op;
	mm_valkey_t *st = op->st;
	mm_store_cb cb = op->cb;
	void *arg = op->arg;
	int status = c->status;
	size_t i;

	for (i = 0; i < c->nbatch; i++) {
		vk_list_free(&c->k[i]);
		vk_list_free(&c->a[i]);
	}
	free(c->k);
	free(c->a);
	free(c);
	vk_unref(st);
	cb(arg, status, status ? "valkey: the cache is unavailable" : "");
}

static void vk_claim_reply(void *ctx, redisReply *r)
{
	vk_claim_t *c = ctx;
	size_t first = c->next, cnt = c->n - first < VK_CHUNK ? c->n - first : VK_CHUNK, i;

	c->next += cnt;
	if (!vk_reply_ok(r))
		c->status = MM_EAGAIN;
	else if (c->won != NULL && (r->type != REDIS_REPLY_ARRAY || r->elements != cnt))
		c->status = MM_EAGAIN;
	else if (c->won != NULL)
		for (i = 0; i < cnt; i++)
			c->won[first + i] = r->element[i]->type == REDIS_REPLY_INTEGER &&
					    r->element[i]->integer == 1;
	if (--c->pending == 0 && !c->sending)
		vk_claim_done(&c->op);
}

static void vk_claim_run(vk_op_t *op)
{
	vk_claim_t *c = (vk_claim_t *)op;
	mm_valkey_t *st = op->st;
	size_t i;

	c->sending = 1;
	for (i = 0; i < c->nbatch && !st->closing && st->state == VK_READY; i++) {
		if (vk_eval(st, MM_VALKEY_OP_CLAIM, c->won ? VK_S_CLAIM : VK_S_RELEASE, &c->k[i],
			    &c->a[i], vk_claim_reply, c) != 0)
			break;
		c->pending++;
	}
	c->sending = 0;
	if (i < c->nbatch)
		c->status = MM_EAGAIN;
	if (c->pending == 0)
		vk_claim_done(op);
}

static int vk_claims(mm_store_t *base, const mm_mark_t *marks, size_t n, uint8_t *won,
		     mm_store_cb cb, void *arg)
{
	mm_valkey_t *st = vk_of(base);
	vk_claim_t *c;
	size_t i;
	int rc = 0;

	if (st == NULL)
		return mm_diag_set(MM_EINVAL, "valkey: claims need a store opened as \"valkey\"");
	if (n == 0 || marks == NULL || cb == NULL)
		return mm_diag_set(MM_EINVAL, "valkey: claims need marks and a callback");
	for (i = 0; i < n; i++)
		if (marks[i].ns == NULL || marks[i].ns->name == NULL || marks[i].id == NULL ||
		    marks[i].len < 1 || marks[i].len > 1024 ||
		    strlen(marks[i].ns->name) > VK_NS_MAX)
			return mm_diag_set(MM_EINVAL, "valkey: claim %zu is malformed", i);
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return mm_diag_set(MM_ENOMEM, "valkey: cannot allocate a claim");
	c->nbatch = (n + VK_CHUNK - 1) / VK_CHUNK;
	c->k = calloc(c->nbatch, sizeof(*c->k));
	c->a = calloc(c->nbatch, sizeof(*c->a));
	if (c->k == NULL || c->a == NULL)
		rc = mm_diag_set(MM_ENOMEM, "valkey: cannot allocate a claim");
	for (i = 0; i < n && rc == 0; i++) {
		vk_list_t *k = &c->k[i / VK_CHUNK], *a = &c->a[i / VK_CHUNK];

		if (i % VK_CHUNK == 0)
			rc = vk_list_str(a, st->token);
		if (rc == 0)
			rc = vk_mark_key(st, k, marks[i].ns->name, marks[i].id, marks[i].len);
		if (rc == 0 && won != NULL)
			rc = vk_list_i64(a, marks[i].expire_ms);
	}
	st->refs++;
	c->op.st = st;
	c->op.cb = cb;
	c->op.arg = arg;
	c->won = won;
	c->n = n;
	if (rc) {
		c->op.cb = NULL;
		/* Frees through the common path; cb is not called. */
		for (i = 0; c->k && c->a && i < c->nbatch; i++) {
			vk_list_free(&c->k[i]);
			vk_list_free(&c->a[i]);
		}
		free(c->k);
		free(c->a);
		free(c);
		vk_unref(st);
		return rc;
	}
	if (won != NULL)
		memset(won, 0, n);
	if (vk_should_wait(st))
		vk_wait(&c->op, vk_claim_run);
	else
		vk_later(&c->op, vk_claim_run);
	return 0;
}

int mm_valkey_claim(mm_store_t *st, const mm_mark_t *marks, size_t n, uint8_t *won,
		    mm_store_cb cb, void *arg)
{
	if (won == NULL)
		return mm_diag_set(MM_EINVAL, "valkey: claim needs a won array");
	return vk_claims(st, marks, n, won, cb, arg);
}

int mm_valkey_release(mm_store_t *st, const mm_mark_t *marks, size_t n, mm_store_cb cb,
		      void *arg)
{
	return vk_claims(st, marks, n, NULL, cb, arg);
}

int mm_valkey_repopulate(mm_store_t *base, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
			 mm_store_cb cb, void *arg)
{
	mm_valkey_t *st = vk_of(base);
	vk_ns_t *vn;
	size_t i;

	if (st == NULL)
		return mm_diag_set(MM_EINVAL,
				   "valkey: repopulate needs a store opened as \"valkey\"");
	if (ns == NULL || ns->name == NULL || ns->m == NULL || strlen(ns->name) > VK_NS_MAX ||
	    n == 0 || keys == NULL || cb == NULL)
		return mm_diag_set(MM_EINVAL,
				   "valkey: repopulate needs a namespace, keys and a callback");
	for (i = 0; i < n; i++)
		if (keys[i].entity == NULL || keys[i].len < 1 || keys[i].len > 1024)
			return mm_diag_set(MM_EINVAL, "valkey: repopulate key %zu is malformed", i);
	if ((vn = vk_ns_need(st, ns)) == NULL)
		return MM_ENOMEM;
	return vk_repop_start(st, vn, keys, n, cb, arg);
}

/* ---- dedup lookups (synchronous) --------------------------------------------------- */

static void vk_sync_failed(mm_valkey_t *st, uint64_t now)
{
	if (st->sc != NULL) {
		redisFree(st->sc);
		st->sc = NULL;
	}
	st->sc_retry_at = now + (uint64_t)st->sc_backoff_ms * 1000000u;
	st->sc_backoff_ms = st->sc_backoff_ms * 2 > st->backoff_max_ms ? st->backoff_max_ms
									: st->sc_backoff_ms * 2;
}

static int vk_sync_command(redisContext *sc, int argc, const char **argv, const size_t *len,
			   long long *out)
{
	redisReply *r = redisCommandArgv(sc, argc, argv, len);
	int ok = r != NULL && r->type != REDIS_REPLY_ERROR;

	if (ok && out)
		*out = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
	if (r)
		freeReplyObject(r);
	return ok ? 0 : -1;
}

static int vk_sync_connect(mm_valkey_t *st, uint64_t now)
{
	struct timeval tv = {st->timeout_ms / 1000, (st->timeout_ms % 1000) * 1000};
	const char *argv[3];
	size_t len[3];
	char db[16];
	int n = 0;

	if (now < st->sc_retry_at)
		return -1;
	st->sc = redisConnectWithTimeout(st->ip[0] ? st->ip : st->host, st->port, tv);
	if (st->sc == NULL || st->sc->err || redisSetTimeout(st->sc, tv) != REDIS_OK)
		goto fail;
	mm_valkey_reader_bound(st->sc->reader);
	if (st->password) {
		argv[n++] = "AUTH";
		if (st->user)
			argv[n++] = st->user;
		argv[n++] = st->password;
		for (int i = 0; i < n; i++)
			len[i] = strlen(argv[i]);
		if (vk_sync_command(st->sc, n, argv, len, NULL))
			goto fail;
	}
	if (st->db) {
		snprintf(db, sizeof(db), "%d", st->db);
		argv[0] = "SELECT";
		argv[1] = db;
		len[0] = 6;
		len[1] = strlen(db);
		if (vk_sync_command(st->sc, 2, argv, len, NULL))
			goto fail;
	}
	st->sc_backoff_ms = VK_BACKOFF_MIN_MS;
	return 0;
fail:
	vk_sync_failed(st, now);
	return -1;
}

static int vk_seen(mm_store_t *base, const mm_ns_t *ns, const char *id, size_t len,
		   int64_t now_ms)
{
	mm_valkey_t *st = (mm_valkey_t *)base;
	uint64_t t0 = uv_hrtime(), dt;
	const char *argv[2];
	size_t alen[2];
	long long n = 0;
	int rc = -1;

	if (!st->dedup_valkey)
		return mm_store_seen(st->backing, ns, id, len, now_ms);
	vk_list_reset(&st->sk);
	if (vk_mark_key(st, &st->sk, ns->name, id, len))
		return MM_ENOMEM;
	argv[0] = "EXISTS";
	alen[0] = 6;
	argv[1] = vk_list_at(&st->sk, 0, &alen[1]);
	if (st->sc != NULL) {
		rc = vk_sync_command(st->sc, 2, argv, alen, &n);
		if (rc != 0) {
			/* Maybe just stale (the server restarted): one fresh
			 * connection is tried at once before the id counts as new. */
			redisFree(st->sc);
			st->sc = NULL;
			st->sc_retry_at = 0;
		}
	}
	if (rc != 0 && vk_sync_connect(st, t0) == 0) {
		rc = vk_sync_command(st->sc, 2, argv, alen, &n);
		if (rc != 0)
			vk_sync_failed(st, t0);
	}
	dt = uv_hrtime() - t0;
	st->vs.ops[MM_VALKEY_OP_SEEN]++;
	st->vs.ns_total[MM_VALKEY_OP_SEEN] += dt;
	if (dt > st->vs.ns_max[MM_VALKEY_OP_SEEN])
		st->vs.ns_max[MM_VALKEY_OP_SEEN] = dt;
	if (rc) {
		/* Unreachable: the id counts as new (the weaker guarantee). */
		st->vs.errors[MM_VALKEY_OP_SEEN]++;
		return 0;
	}
	return n > 0;
}

/* ---- delegated calls, stats -------------------------------------------------------- */

static int vk_get_position(mm_store_t *base, const char *source, mm_buf_t *out)
{
	return mm_store_get_position(((mm_valkey_t *)base)->backing, source, out);
}

static int vk_get_meta(mm_store_t *base, const char *ns_name, mm_buf_t *out)
{
	return mm_store_get_meta(((mm_valkey_t *)base)->backing, ns_name, out);
}

static int vk_put_meta(mm_store_t *base, const char *ns_name, const uint8_t *p, size_t n)
{
	mm_valkey_t *st = (mm_valkey_t *)base;
	size_t i;
	int rc = mm_store_put_meta(st->backing, ns_name, p, n);

	/* The window may have changed with the descriptor. */
	for (i = 0; rc == 0 && i < st->nns; i++)
		if (strcmp(st->nss[i]->name, ns_name) == 0)
			st->nss[i]->window = 0;
	return rc;
}

static int vk_list_meta(mm_store_t *base, mm_buf_t *out)
{
	return mm_store_list_meta(((mm_valkey_t *)base)->backing, out);
}

static const char *const vk_op_names[MM_VALKEY_OP_MAX] = {
	[MM_VALKEY_OP_GET] = "cache_get",
	[MM_VALKEY_OP_FILL] = "cache_fill",
	[MM_VALKEY_OP_LEASE] = "cache_lease",
	[MM_VALKEY_OP_UPDATE] = "cache_update",
	[MM_VALKEY_OP_INVALIDATE] = "cache_invalidate",
	[MM_VALKEY_OP_COUNT] = "cache_count",
	[MM_VALKEY_OP_CLAIM] = "cache_claim",
	[MM_VALKEY_OP_MARK] = "cache_mark",
	[MM_VALKEY_OP_SEEN] = "cache_seen",
	[MM_VALKEY_OP_CHECK] = "cache_check",
};

const char *mm_valkey_op_name(int op)
{
	return op >= 0 && op < MM_VALKEY_OP_MAX ? vk_op_names[op] : NULL;
}

int mm_valkey_stats(const mm_store_t *base, mm_valkey_stats_t *out)
{
	const mm_valkey_t *st = vk_of(base);

	if (st == NULL || out == NULL)
		return mm_diag_set(MM_EINVAL,
				   "valkey: stats need a \"valkey\" store and an output");
	*out = st->vs;
	out->dirty = st->dirty.n;
	out->connected = st->state == VK_READY;
	return 0;
}

/* ---- open and close ------------------------------------------------------------------ */

/* redis://[[user]:password@]host[:port][/db] */
static int vk_parse_url(mm_valkey_t *st, const char *url)
{
	const char *p = url, *at, *end, *colon, *slash;
	char *q;
	long v;

	if (strncmp(p, "redis://", 8) == 0)
		p += 8;
	else if (strncmp(p, "valkey://", 9) == 0)
		p += 9;
	else
		return mm_diag_set(MM_EINVAL,
				   "valkey: url '%s' must start with redis:// or valkey://", url);
	slash = strchr(p, '/');
	end = slash ? slash : p + strlen(p);
	at = memchr(p, '@', (size_t)(end - p));
	if (at != NULL) {
		colon = memchr(p, ':', (size_t)(at - p));
		if (colon == NULL)
			return mm_diag_set(MM_EINVAL,
					   "valkey: url '%s': userinfo needs ':password'", url);
		if (colon > p && (st->user = strndup(p, (size_t)(colon - p))) == NULL)
			return MM_ENOMEM;
		if ((st->password = strndup(colon + 1, (size_t)(at - colon - 1))) == NULL)
			return MM_ENOMEM;
		p = at + 1;
	}
	if (*p == '[') {
		const char *close = memchr(p, ']', (size_t)(end - p));

		if (close == NULL)
			return mm_diag_set(MM_EINVAL, "valkey: url '%s': unclosed '['", url);
		st->host = strndup(p + 1, (size_t)(close - p - 1));
		p = close + 1;
	} else {
		colon = memchr(p, ':', (size_t)(end - p));
		st->host = strndup(p, (size_t)((colon ? colon : end) - p));
		p = colon ? colon : end;
	}
	if (st->host == NULL)
		return MM_ENOMEM;
	if (st->host[0] == '\0')
		return mm_diag_set(MM_EINVAL, "valkey: url '%s' has no host", url);
	st->port = 6379;
	if (*p == ':') {
		v = strtol(p + 1, &q, 10);
		if (q == p + 1 || q != end || v < 1 || v > 65535)
			return mm_diag_set(MM_EINVAL, "valkey: url '%s': bad port", url);
		st->port = (int)v;
	} else if (p != end) {
		return mm_diag_set(MM_EINVAL, "valkey: url '%s': unexpected '%c'", url, *p);
	}
	if (slash != NULL && slash[1] != '\0') {
		v = strtol(slash + 1, &q, 10);
		if (*q != '\0' || v < 0 || v > 1000000)
			return mm_diag_set(MM_EINVAL, "valkey: url '%s': bad database number", url);
		st->db = (int)v;
	}
	return 0;
}

static void vk_free(mm_valkey_t *st)
{
	size_t i;

	for (i = 0; i < st->nns; i++) {
		free(st->nss[i]->name);
		free(st->nss[i]);
	}
	free(st->nss);
	vk_keyset_free(&st->hot);
	vk_keyset_free(&st->dirty);
	vk_list_free(&st->sk);
	vk_list_free(&st->sa);
	free(st->av);
	free(st->avl);
	free(st->host);
	free(st->user);
	free(st->password);
	free(st->prefix);
	free(st);
}

static void vk_final(uv_handle_t *h)
{
	mm_valkey_t *st = h->data;

	if (st->backing != NULL)
		mm_store_close(st->backing);
	vk_free(st);
}

static void vk_unref(mm_valkey_t *st)
{
	if (--st->refs > 0)
		return;
	/* Everything else is closed: the last handle's close callback frees
	 * the store, outside any hiredis or backing-store callback. */
	uv_close((uv_handle_t *)&st->later_timer, vk_final);
}

static void vk_handle_closed(uv_handle_t *h)
{
	vk_unref(h->data);
}

static int vk_split_options(const mm_kv_t *kv, size_t nkv, mm_kv_t *own, size_t *nown,
			    mm_kv_t *back, size_t *nback)
{
	size_t i;

	*nown = *nback = 0;
	for (i = 0; i < nkv; i++) {
		if (strncmp(kv[i].key, "backing.", 8) == 0) {
			if (kv[i].key[8] == '\0')
				return mm_diag_set(MM_EINVAL,
						   "valkey: option 'backing.' names no option");
			back[(*nback)++] = (mm_kv_t){kv[i].key + 8, kv[i].value};
		} else {
			own[(*nown)++] = kv[i];
		}
	}
	return 0;
}

static int vk_open(uv_loop_t *loop, const mm_kv_t *kv, size_t nkv, int read_only,
		   mm_store_t **out)
{
	mm_kv_t *own = NULL, *back = NULL;
	size_t nown, nback;
	mm_valkey_t *st = NULL;
	mm_monoid_t hll;
	mm_buf_t empty = {0};
	unsigned char hs[MM_STATE_MAX] __attribute__((aligned(16)));
	vk_cfg_t cfg;
	uint64_t seed;
	int rc, i;

	own = malloc((nkv ? nkv : 1) * sizeof(*own));
	back = malloc((nkv ? nkv : 1) * sizeof(*back));
	if (own == NULL || back == NULL) {
		rc = mm_diag_set(MM_ENOMEM, "valkey: cannot allocate options");
		goto fail;
	}
	memset(&cfg, 0, sizeof(cfg));
	if ((rc = vk_split_options(kv, nkv, own, &nown, back, &nback)) ||
	    (rc = mm_options_apply(vk_options, "valkey", own, nown, &cfg)))
		goto fail;
	if (strcmp(cfg.backing, "valkey") == 0) {
		rc = mm_diag_set(MM_EINVAL, "valkey: the backing store cannot be valkey itself");
		goto fail;
	}
	if (strcmp(cfg.dedup, "store") != 0 && strcmp(cfg.dedup, "valkey") != 0) {
		rc = mm_diag_set(MM_EINVAL,
				 "valkey: option 'dedup' must be store or valkey, not '%s'",
				 cfg.dedup);
		goto fail;
	}
	if (cfg.timeout_ms < 1 || cfg.cache_ttl_ms < 1 || cfg.lease_ms < 1 || cfg.check_ms < 1 ||
	    cfg.backoff_max_ms < VK_BACKOFF_MIN_MS || cfg.hot_keys < 0) {
		rc = mm_diag_set(MM_EINVAL,
				 "valkey: timeout, cache_ttl, lease and check_interval must be "
				 "positive, backoff_max at least 100ms, hot_keys >= 0");
		goto fail;
	}
	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		rc = mm_diag_set(MM_ENOMEM, "valkey: cannot allocate the store");
		goto fail;
	}
	if ((rc = vk_parse_url(st, cfg.url)))
		goto fail;
	st->prefix_len = strlen(cfg.prefix);
	if ((st->prefix = vk_strdup(cfg.prefix)) == NULL) {
		rc = mm_diag_set(MM_ENOMEM, "valkey: cannot allocate the store");
		goto fail;
	}
	/* The empty HLL's length tells PFCOUNT's script which entries are
	 * stand-ins for absent buckets. */
	mm_monoid_init(&hll, "hll", &(mm_monoid_params_t){0});
	hll.vt->init(&hll, hs);
	rc = hll.vt->encode(&hll, hs, &empty);
	hll.vt->destroy(&hll, hs);
	st->empty_hll_len = empty.len;
	mm_buf_free(&empty);
	if (rc)
		goto fail;
	if ((rc = mm_store_open(cfg.backing, loop, back, nback, read_only, &st->backing)))
		goto fail;
	st->vt = mm_store_valkey_vtable;
	st->vt.atomic_flush = st->backing->vt->atomic_flush;
	st->base.vt = &st->vt;
	st->base.loop = loop;
	st->read_only = read_only;
	st->dedup_valkey = strcmp(cfg.dedup, "valkey") == 0;
	/* Claims stay the backing store's business: the cache never decides
	 * whether an event was counted, unless dedup = valkey was asked for. */
	st->base.claims = !st->dedup_valkey && st->backing->claims;
	st->base.lease_ms = st->backing->lease_ms;
	st->timeout_ms = cfg.timeout_ms;
	st->cache_ttl_ms = cfg.cache_ttl_ms;
	st->lease_ms = cfg.lease_ms;
	st->check_ms = cfg.check_ms;
	st->backoff_max_ms = cfg.backoff_max_ms;
	st->backoff_ms = VK_BACKOFF_MIN_MS;
	st->sc_backoff_ms = VK_BACKOFF_MIN_MS;
	st->hot.max = (size_t)cfg.hot_keys;
	st->dirty.max = VK_DIRTY_MAX;
	st->waiting_tail = &st->waiting;
	st->later_tail = &st->later;
	if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
		seed = uv_hrtime() ^ ((uint64_t)(uintptr_t)st << 17);
	st->rng = seed | 1;
	snprintf(st->token, sizeof(st->token), "%016" PRIx64 "%016" PRIx64, vk_rand(st),
		 vk_rand(st));
	/* One reference for the open store, one per handle closed at close(). */
	st->refs = 4;
	uv_timer_t *timers[] = {&st->retry, &st->tick, &st->deadline, &st->later_timer};
	for (i = 0; i < 4; i++) {
		uv_timer_init(loop, timers[i]);
		timers[i]->data = st;
	}
	/* Background work (reconnecting, checking) does not keep a loop alive. */
	uv_unref((uv_handle_t *)&st->retry);
	uv_unref((uv_handle_t *)&st->tick);
	*out = &st->base;
	free(own);
	free(back);
	vk_connect(st);
	return 0;
fail:
	if (st != NULL)
		vk_free(st);
	free(own);
	free(back);
	return rc;
}

static void vk_close_deadline(mm_valkey_t *st)
{
	if (st->deadline_closed)
		return;
	st->deadline_closed = 1;
	uv_close((uv_handle_t *)&st->deadline, vk_handle_closed);
}

/*
 * Closes the store. The connection is closed gracefully: what hiredis has
 * not sent yet (a query's fills, typically: it closes right after its
 * answer) is sent and answered first, still under the deadline, which
 * forces the connection closed if the server does not answer. The deadline
 * timer goes with the connection; the memory goes with the last reference.
 */
static void vk_close(mm_store_t *base)
{
	mm_valkey_t *st = (mm_valkey_t *)base;

	st->closing = 1;
	if (st->sc != NULL) {
		redisFree(st->sc);
		st->sc = NULL;
	}
	vk_release_waiting(st);
	if (st->resolving)
		uv_cancel((uv_req_t *)&st->gai);
	uv_close((uv_handle_t *)&st->retry, vk_handle_closed);
	uv_close((uv_handle_t *)&st->tick, vk_handle_closed);
	if (st->ac != NULL) {
		st->state = VK_DOWN;
		/* Ends in vk_lost (from the disconnect or connect callback, or
		 * from the deadline's forced free), which closes the deadline. */
		redisAsyncDisconnect(st->ac);
	} else {
		vk_close_deadline(st);
	}
	vk_unref(st);
}

/* ---- dedup claims: the backing store's ---------------------------------------------- */

static int vk_claim(mm_store_t *base, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		    int64_t ttl_ms, mm_store_cb cb, void *arg)
{
	return mm_store_claim(((mm_valkey_t *)base)->backing, ns, ids, n, ttl_ms, cb, arg);
}

static int vk_renew(mm_store_t *base, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		    mm_store_cb cb, void *arg)
{
	return mm_store_renew(((mm_valkey_t *)base)->backing, ns, ids, n, cb, arg);
}

static int vk_release(mm_store_t *base, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		      mm_store_cb cb, void *arg)
{
	return mm_store_release(((mm_valkey_t *)base)->backing, ns, ids, n, cb, arg);
}

const mm_store_vtable_t mm_store_valkey_vtable = {
	.name = "valkey",
	.options = vk_options,
	.atomic_flush = 1,
	.open = vk_open,
	.apply = vk_apply,
	.get_many = vk_get_many,
	.get_position = vk_get_position,
	.seen = vk_seen,
	.get_meta = vk_get_meta,
	.put_meta = vk_put_meta,
	.list_meta = vk_list_meta,
	.close = vk_close,
	.claim = vk_claim,
	.renew = vk_renew,
	.release = vk_release,
};
