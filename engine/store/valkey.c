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
 * The layer is split along its seams (valkey_impl.h lists the files):
 * connection and handshake, recovery from data loss, the read path, the
 * write path, dedup, and the server-side scripts as .lua files embedded at
 * build time; this file holds the options, namespaces, the deferred queues,
 * open and close.
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
 * unique count (count_hll). Everything else (top-k, set, bloom,
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
 * the backing store's metadata (granularity_ms, retention_ms), as written
 * (put_meta) or read (get_meta) through this store. Updates never
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
 * backing store, and the store is shared (MM_STORE_CAP_SHARED): the runtime
 * claims a flush's ids in one pipelined round (SET NX with this store's
 * token and the lease) and the flush confirms them once durable
 * (valkey_dedup.c); no lookup blocks the loop. Marks are lost with
 * Valkey's data: that is the weaker guarantee doc/valkey.md describes.
 *
 * States handed to the caller are filled by decoding bytes (from the cache,
 * or re-encoded from the backing store's answer), never moved.
 *
 * Threads: loop thread only, like every store. close() returns at once;
 * the memory goes when the loop has closed every handle and the backing
 * store's last pool job has finished.
 */
#include "valkey_impl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "../codec/json.h"
#include "../lib/error.h"
#include "../monoid/window.h"
#include "valkey_format.h"

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
	 "deletes its entries instead of updating them. With dedup = valkey also the lease "
	 "of a dedup claim (renewed while a flush is retried)."},
	{MM_OPT_DURATION_MS, "check_interval", "1s", offsetof(vk_cfg_t, check_ms),
	 "How often the generation key is checked to detect FLUSHALL and data loss."},
	{MM_OPT_DURATION_MS, "backoff_max", "10s", offsetof(vk_cfg_t, backoff_max_ms),
	 "Longest wait between reconnection attempts (from 100ms, doubling, with jitter)."},
	{MM_OPT_INT, "hot_keys", "10000", offsetof(vk_cfg_t, hot_keys),
	 "How many of the keys used last are rebuilt after Valkey lost data (0: none)."},
	{MM_OPT_STRING, "dedup", "store", offsetof(vk_cfg_t, dedup),
	 "Where dedup marks live: store (with the states, exact) or valkey (claimed with SET NX "
	 "in one pipelined round per flush; lost if Valkey loses data)."},
	{0},
};

static void vk_close(mm_store_t *base);

/* ---- small helpers -------------------------------------------------------- */

uint64_t mm_vk_rand(mm_valkey_t *st)
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

mm_valkey_t *mm_vk_of(const mm_store_t *base)
{
	if (base == NULL || base->vt == NULL || base->vt->close != vk_close)
		return NULL;
	return (mm_valkey_t *)(uintptr_t)base;
}

int mm_vk_usable(const mm_valkey_t *st)
{
	return st->state == VK_READY && st->dirty.n == 0 && !st->dirty.overflow;
}

/* Operations issued before the first handshake wait for it. */
int mm_vk_should_wait(const mm_valkey_t *st)
{
	return st->state == VK_CONNECTING && !st->ever_ready;
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
	for (i = 0; i < st->nseen; i++)
		if (strcmp(st->seen[i]->name, vn->name) == 0) {
			vn->window = st->seen[i]->window;
			vn->gran_ms = st->seen[i]->gran_ms;
			vn->retention_ms = st->seen[i]->retention_ms;
		}
	st->nss[st->nns++] = vn;
	return vn;
}

vk_ns_t *mm_vk_ns_need(mm_valkey_t *st, const mm_ns_t *ns)
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
void mm_vk_ns_window_parse(vk_ns_t *vn, const uint8_t *p, size_t n)
{
	mm_json_field_t f[2] = {{"granularity_ms", 14, 0, NULL, 0, 0},
				{"retention_ms", 12, 0, NULL, 0, 0}};
	const char *json;
	int64_t v[2];
	double d;
	int is_int, i;

	vn->window = -1;
	json = n ? memchr(p, '\n', n) : NULL;
	json = json ? json + 1 : (const char *)p;
	if (n == 0 || mm_json_scan(json, n - (size_t)(json - (const char *)p), f, 2) != 0)
		return;
	for (i = 0; i < 2; i++)
		if (f[i].type != MM_JSON_NUMBER ||
		    mm_json_number(f[i].p, f[i].len, &is_int, &v[i], &d) != 0 || !is_int ||
		    v[i] < 0)
			return;
	vn->gran_ms = v[0];
	vn->retention_ms = v[1];
	vn->window = 1;
}

/* When the store lets the bucket go (ms since the epoch), or 0 if unknown
 * or never. */
int64_t mm_vk_ns_expire(mm_valkey_t *st, vk_ns_t *vn, int64_t bucket)
{
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
int mm_vk_int_of(const vk_ns_t *vn, const void *state, mm_buf_t *tmp, int64_t *out)
{
	int rc;

	tmp->len = 0;
	if ((rc = vn->m.vt->encode(&vn->m, state, tmp)))
		return rc;
	return vk_int_value(vn, tmp->p, tmp->len, out);
}

/* Appends the cache form of the monoid encoding enc[0..n) to l as one string. */
int mm_vk_cache_value(const vk_ns_t *vn, const uint8_t *enc, size_t n, vk_list_t *l)
{
	int64_t v;
	int rc;

	if (vn->kind != VK_INT)
		return mm_vk_list_add(l, enc, n);
	if ((rc = vk_int_value(vn, enc, n, &v)))
		return rc;
	return mm_vk_list_i64(l, v);
}

/* Decodes a cached value into state (init()ed). MM_ECORRUPT if it is not
 * what this namespace caches (valkey_format.c). */
int mm_vk_from_cache(const vk_ns_t *vn, const char *p, size_t n, void *state)
{
	return mm_valkey_cache_decode(&vn->m, p, n, state);
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
void mm_vk_later(vk_op_t *op, vk_op_fn run)
{
	mm_valkey_t *st = op->st;

	op->run = run;
	op->next = NULL;
	if (st->later == NULL)
		uv_timer_start(&st->later_timer, vk_later_cb, 0, 0);
	*st->later_tail = op;
	st->later_tail = &op->next;
}

void mm_vk_wait(vk_op_t *op, vk_op_fn run)
{
	mm_valkey_t *st = op->st;

	op->run = run;
	op->next = NULL;
	*st->waiting_tail = op;
	st->waiting_tail = &op->next;
}

/* The first handshake ended (either way): the waiting operations start. */
void mm_vk_release_waiting(mm_valkey_t *st)
{
	vk_op_t *op = st->waiting, *next;

	st->waiting = NULL;
	st->waiting_tail = &st->waiting;
	for (; op != NULL; op = next) {
		next = op->next;
		mm_vk_later(op, op->run);
	}
}

/* ---- delegated calls, stats -------------------------------------------------------- */

static int vk_get_position(mm_store_t *base, const char *source, mm_buf_t *out, mm_store_cb cb,
			   void *arg)
{
	return mm_store_get_position(((mm_valkey_t *)base)->backing, source, out, cb, arg);
}

static int vk_take_position(mm_store_t *base, const char *source, mm_buf_t *out, mm_store_cb cb,
			    void *arg)
{
	return mm_store_take_position(((mm_valkey_t *)base)->backing, source, out, cb, arg);
}

/* The backing store took the positions: it knows which are this writer's. */
static void vk_positions_taken(const mm_store_t *base,
			       void (*fn)(void *ud, const char *source, int own), void *ud)
{
	mm_store_positions_taken(((const mm_valkey_t *)base)->backing, fn, ud);
}

/* A descriptor read on the caller's behalf: the cache keeps its window. */
typedef struct vk_meta_read {
	mm_valkey_t *st;
	char *name;
	mm_buf_t *out;
	size_t at;
	mm_store_cb cb;
	void *arg;
} vk_meta_read_t;

/* The namespace called name, known or seen (created), or NULL (no memory). */
static vk_ns_t *vk_ns_seen(mm_valkey_t *st, const char *name)
{
	vk_ns_t *vn, **seen;
	size_t i;

	for (i = 0; i < st->nns; i++)
		if (strcmp(st->nss[i]->name, name) == 0)
			return st->nss[i];
	for (i = 0; i < st->nseen; i++)
		if (strcmp(st->seen[i]->name, name) == 0)
			return st->seen[i];
	if ((seen = realloc(st->seen, (st->nseen + 1) * sizeof(*seen))) == NULL)
		return NULL;
	st->seen = seen;
	if ((vn = calloc(1, sizeof(*vn))) == NULL || (vn->name = vk_strdup(name)) == NULL) {
		free(vn);
		return NULL;
	}
	st->seen[st->nseen++] = vn;
	return vn;
}

static void vk_meta_read_done(void *arg, int status, const char *detail)
{
	vk_meta_read_t *mr = arg;
	vk_ns_t *vn;

	/* Out of memory: the namespace's entries live cache_ttl. */
	if (status == 0 && (vn = vk_ns_seen(mr->st, mr->name)) != NULL)
		mm_vk_ns_window_parse(vn, mr->out->p + mr->at, mr->out->len - mr->at);
	mr->cb(mr->arg, status, detail);
	mm_vk_unref(mr->st);
	free(mr->name);
	free(mr);
}

/* Whoever reads a descriptor through the cache (`murmur query`, the query
 * server) does so before it reads values: the cache keeps the window its
 * fills need from that answer, so it never reads a descriptor itself (it
 * used to, blocking the loop, at a namespace's first fill). */
static int vk_get_meta(mm_store_t *base, const char *ns_name, mm_buf_t *out, mm_store_cb cb,
		       void *arg)
{
	mm_valkey_t *st = (mm_valkey_t *)base;
	vk_meta_read_t *mr = calloc(1, sizeof(*mr));
	int rc;

	if (mr == NULL || (mr->name = vk_strdup(ns_name)) == NULL) {
		free(mr);
		return mm_diag_set(MM_ENOMEM, "valkey: out of memory");
	}
	*mr = (vk_meta_read_t){st, mr->name, out, out->len, cb, arg};
	if ((rc = mm_store_get_meta(st->backing, ns_name, out, vk_meta_read_done, mr)) != 0) {
		free(mr->name);
		free(mr);
		return rc;
	}
	st->refs++;
	return 0;
}

static int vk_put_meta(mm_store_t *base, const char *ns_name, const uint8_t *p, size_t n,
		       mm_store_cb cb, void *arg)
{
	mm_valkey_t *st = (mm_valkey_t *)base;
	size_t i;
	int rc = mm_store_put_meta(st->backing, ns_name, p, n, cb, arg);

	/* The window may have changed with the descriptor: take it from the
	 * bytes at hand rather than reading them back. */
	for (i = 0; rc == 0 && i < st->nns; i++)
		if (strcmp(st->nss[i]->name, ns_name) == 0)
			mm_vk_ns_window_parse(st->nss[i], p, n);
	return rc;
}

/* The backing store's checks are the cache's: it serves nothing the
 * backing store could not. */
static int vk_start(mm_store_t *base, mm_store_cb cb, void *arg)
{
	return mm_store_start(((mm_valkey_t *)base)->backing, cb, arg);
}

static int vk_list_meta(mm_store_t *base, mm_buf_t *out, mm_store_cb cb, void *arg)
{
	return mm_store_list_meta(((mm_valkey_t *)base)->backing, out, cb, arg);
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
	[MM_VALKEY_OP_CHECK] = "cache_check",
};

const char *mm_valkey_op_name(int op)
{
	return op >= 0 && op < MM_VALKEY_OP_MAX ? vk_op_names[op] : NULL;
}

int mm_valkey_stats(const mm_store_t *base, mm_valkey_stats_t *out)
{
	const mm_valkey_t *st = mm_vk_of(base);

	if (st == NULL || out == NULL)
		return mm_diag_set(MM_EINVAL,
				   "valkey: stats need a \"valkey\" store and an output");
	*out = st->vs;
	out->dirty = st->dirty.n;
	out->connected = st->state == VK_READY;
	return 0;
}

/* The per-command counters, for mm_store_op_stats. */
static size_t vk_op_stats(const mm_store_t *base, mm_store_op_stats_t *out, size_t max)
{
	const mm_valkey_t *st = (const mm_valkey_t *)base;
	size_t op;

	for (op = 0; op < MM_VALKEY_OP_MAX && op < max; op++)
		out[op] = (mm_store_op_stats_t){vk_op_names[op], st->vs.ops[op], st->vs.errors[op],
						st->vs.ns_total[op], st->vs.ns_max[op]};
	return MM_VALKEY_OP_MAX;
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
	for (i = 0; i < st->nseen; i++) {
		free(st->seen[i]->name);
		free(st->seen[i]);
	}
	free(st->seen);
	mm_vk_keyset_free(&st->hot);
	mm_vk_keyset_free(&st->dirty);
	mm_vk_list_free(&st->sa);
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

void mm_vk_unref(mm_valkey_t *st)
{
	if (--st->refs > 0)
		return;
	/* Everything else is closed: the last handle's close callback frees
	 * the store, outside any hiredis or backing-store callback. */
	uv_close((uv_handle_t *)&st->later_timer, vk_final);
}

static void vk_handle_closed(uv_handle_t *h)
{
	mm_vk_unref(h->data);
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
	st->dedup_valkey = strcmp(cfg.dedup, "valkey") == 0;
	/* Atomic if the backing store is; claims stay the backing store's
	 * business: the cache never decides whether an event was counted,
	 * unless dedup = valkey was asked for. */
	st->vt.caps = MM_STORE_CAP_COUNT_HLL | MM_STORE_CAP_CACHE |
		      (mm_store_caps(st->backing) & MM_STORE_CAP_ATOMIC);
	if (!st->dedup_valkey)
		st->vt.caps |= mm_store_caps(st->backing) & MM_STORE_CAP_SHARED;
	else
		st->vt.caps |= MM_STORE_CAP_SHARED;
	st->base.vt = &st->vt;
	st->base.loop = loop;
	st->read_only = read_only;
	/* The lease of a claim: the backing store's, or with dedup = valkey
	 * this store's write lease (option lease). */
	st->base.lease_ms = st->dedup_valkey ? cfg.lease_ms : st->backing->lease_ms;
	st->timeout_ms = cfg.timeout_ms;
	st->cache_ttl_ms = cfg.cache_ttl_ms;
	st->lease_ms = cfg.lease_ms;
	st->check_ms = cfg.check_ms;
	st->backoff_max_ms = cfg.backoff_max_ms;
	st->backoff_ms = VK_BACKOFF_MIN_MS;
	st->hot.max = (size_t)cfg.hot_keys;
	st->dirty.max = VK_DIRTY_MAX;
	st->waiting_tail = &st->waiting;
	st->later_tail = &st->later;
	if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
		seed = uv_hrtime() ^ ((uint64_t)(uintptr_t)st << 17);
	st->rng = seed | 1;
	snprintf(st->token, sizeof(st->token), "%016" PRIx64 "%016" PRIx64, mm_vk_rand(st),
		 mm_vk_rand(st));
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
	mm_vk_connect(st);
	return 0;
fail:
	if (st != NULL)
		vk_free(st);
	free(own);
	free(back);
	return rc;
}

void mm_vk_close_deadline(mm_valkey_t *st)
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
	mm_vk_release_waiting(st);
	if (st->resolving)
		uv_cancel((uv_req_t *)&st->gai);
	uv_close((uv_handle_t *)&st->retry, vk_handle_closed);
	uv_close((uv_handle_t *)&st->tick, vk_handle_closed);
	if (st->ac != NULL) {
		st->state = VK_DOWN;
		/* Ends in mm_vk_lost (from the disconnect or connect callback, or
		 * from the deadline's forced free), which closes the deadline. */
		redisAsyncDisconnect(st->ac);
	} else {
		mm_vk_close_deadline(st);
	}
	mm_vk_unref(st);
}

const mm_store_vtable_t mm_store_valkey_vtable = {
	.name = "valkey",
	.options = vk_options,
	.caps = MM_STORE_CAP_ATOMIC | MM_STORE_CAP_COUNT_HLL | MM_STORE_CAP_CACHE,
	.open = vk_open,
	.start = vk_start,
	.apply = mm_vk_apply,
	.get_many = mm_vk_get_many,
	.get_position = vk_get_position,
	.take_position = vk_take_position,
	.positions_taken = vk_positions_taken,
	.get_meta = vk_get_meta,
	.put_meta = vk_put_meta,
	.list_meta = vk_list_meta,
	.close = vk_close,
	.claim = mm_vk_claim,
	.renew = mm_vk_renew,
	.release = mm_vk_release,
	.count_hll = mm_vk_count_hll,
	.op_stats = vk_op_stats,
};