/*
 * store.h: the store interface. Every backend (lmdb.c, memory.c, later
 * dynamodb.c) implements one const mm_store_vtable_t, listed once in
 * registry.c; the runtime and the CLI only use the mm_store_* wrappers below,
 * which validate arguments and time and count every operation (stats).
 *
 * Data model. A store holds, per namespace (one pipeline), monoid states keyed
 * by (entity, bucket); bucket 0 is all-time. Beside the states it keeps
 * source positions (opaque bytes per source id), dedup marks (ids with an
 * expiry) and namespace metadata (opaque bytes per namespace, the pipeline's
 * descriptor).
 *
 * Asynchrony. Every call that may touch I/O (apply, get_many, positions,
 * metadata and their list, claims) completes through a callback that always
 * runs later on the loop thread, never inside the call (libuv's contract); a
 * call that returns an error never calls the callback. Backends with
 * blocking I/O (LMDB) run the work on the libuv thread pool; network
 * backends (DynamoDB, Valkey) run it on the loop through the HTTP client/hiredis; the
 * memory store answers from memory and completes on the next loop
 * iteration. open() sends no request: what a store must ask a service
 * before it serves (DynamoDB: container credentials, its table) is start(),
 * asynchronous like the rest, and its owner waits for start's callback
 * before it relies on the store. Nothing waits on the network or sleeps on
 * the loop thread. At most
 * one apply() is in flight per store: the runtime serialises flushes so that
 * positions only move forward.
 *
 * Capabilities. What a backend can do is one explicit set, `caps` in its
 * vtable (enum mm_store_cap): whether apply() is atomic, whether other
 * workers share the store (dedup then goes through claims), which native
 * operations it offers (a multi-bucket HLL count), whether it is a cache
 * layered over another store. The runtime asks mm_store_caps() instead of
 * testing backend names or getting MM_ENOTSUP at run time.
 *
 * Atomicity. An apply() is one unit: either every delta, mark, purge and
 * position in it becomes durable, or none does (LMDB: one write transaction).
 * Backends that cannot promise that (DynamoDB) lack MM_STORE_CAP_ATOMIC,
 * and the runtime then acknowledges a source position only after every key
 * the records touched is durable.
 *
 * Threads: all mm_store_* functions are called on the loop thread. The monoid
 * states handed to apply() are owned by the caller and must stay untouched
 * until the callback runs; apply() may reorder f->deltas and f->marks (an
 * ordered store sorts them into key order) but does not change the items.
 */
#ifndef MM_STORE_H
#define MM_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../lib/buf.h"
#include "../lib/hash.h"
#include "../lib/histogram.h"
#include "../lib/options.h"
#include "../monoid/monoid.h"

typedef struct mm_store mm_store_t;

/* One pipeline's namespace in a store. Owned by the runtime, outlives every
 * operation that names it. */
typedef struct mm_ns {
	const char *name;       /* pipeline name, [A-Za-z0-9_.-]{1,128} */
	const mm_monoid_t *m;   /* the monoid of its states */
} mm_ns_t;

typedef struct mm_key {
	const char *entity;     /* bytes, not NUL-terminated, 1..1024 bytes */
	size_t len;
	int64_t bucket;         /* 0 = all-time, else a window bucket id */
} mm_key_t;

/* One pre-aggregated delta to merge into the stored state. */
typedef struct mm_delta {
	const mm_ns_t *ns;
	mm_key_t key;
	int64_t expire_ms;      /* when the bucket leaves retention (ms since epoch); 0 = never */
	void *state;            /* MM_STATE_MAX bytes holding a state of ns->m */
} mm_delta_t;

/* A source's position, stored with the states it produced. */
typedef struct mm_position {
	const char *source;     /* source id, NUL-terminated */
	const uint8_t *pos;
	size_t len;
} mm_position_t;

/* A dedup mark: id seen in namespace ns, forgotten after expire_ms. */
typedef struct mm_mark {
	const mm_ns_t *ns;
	const char *id;         /* NULL where hash is given and the store has
	                         * MM_STORE_CAP_MARKED (its marks are the hashes) */
	size_t len;
	int64_t expire_ms;
	int claimed;            /* won through claim() for this flush: a store that
	                         * takes claims confirms it with the flush (DynamoDB:
	                         * the flush's commit record), not one by one */
	mm_idhash_t hash;       /* mm_id_hash of id in ns, or all zero: not given
	                         * (the embedded store, whose marks are these
	                         * hashes, then computes it) */
} mm_mark_t;

/*
 * Dedup claims: the one way the runtime asks a store whether event ids were
 * counted, once per flush for all the flush's new ids (engine/core/claims.c).
 * On a store shared by several workers (MM_STORE_CAP_SHARED: DynamoDB, Valkey
 * with dedup = valkey) an id is claimed (pending, owned by this store, with a
 * lease) before its effect is aggregated, and confirmed by the flush that
 * carries the effect (apply() writes the flush's marks as confirmed after its
 * deltas); a pending claim whose lease ran out (its owner died) may be taken
 * over. So an id is never skipped as a duplicate unless its effect is
 * durable. A store only this worker writes (LMDB, memory) answers from its
 * marks, WON or DUPLICATE: the marks apply() writes with the states settle
 * the ids, and renew()/release() have nothing to do. One that keeps every
 * committed mark in memory (MM_STORE_CAP_MARKED) also answers a single id
 * at once, without a claim: marked().
 */
enum mm_claim_result {
	MM_CLAIM_WON = 1,     /* claim: the id was free; the caller owns it, pending */
	MM_CLAIM_STOLEN,      /* claim: taken over from an owner whose lease ran out */
	MM_CLAIM_DUPLICATE,   /* claim: already confirmed, i.e. counted: skip it */
	MM_CLAIM_BUSY,        /* claim: pending under another owner's live lease;
	                       * ask again after lease_until_ms */
	MM_CLAIM_CONFIRMED,   /* confirm: the id is marked seen until its ttl */
	MM_CLAIM_RELEASED,    /* release: the pending claim was deleted */
	MM_CLAIM_RENEWED,     /* renew: the lease was extended */
	MM_CLAIM_NOT_OWNER,   /* confirm/release/renew: the id is not (or no longer)
	                       * ours, or not pending */
};

/* One id of a claim call; negative results are MM_E* codes for ids whose
 * request failed after its retries. */
typedef struct mm_claim {
	const char *id;         /* in: 1..1024 bytes, owned by the caller */
	size_t len;
	int result;             /* out: enum mm_claim_result or a negative MM_E* */
	int64_t lease_until_ms; /* out, BUSY: when the holder's lease ends */
	mm_idhash_t hash;       /* in: as mm_mark_t.hash (all zero: not given) */
} mm_claim_t;

/* Remove every state of ns whose bucket is in [1, before_bucket). */
typedef struct mm_purge {
	const mm_ns_t *ns;
	int64_t before_bucket;
} mm_purge_t;

/* Everything one flush makes durable, as one unit. */
typedef struct mm_flush {
	mm_delta_t *deltas;
	size_t ndeltas;
	mm_mark_t *marks;
	size_t nmarks;
	/* The marks of pipelines whose ids' hashes a store with
	 * MM_STORE_CAP_MARKED keeps as its marks: the hash (which is of the
	 * namespace and the id) and the expiry, 24 bytes a mark where an
	 * mm_mark_t is 56, written by the loop and read by the store once each
	 * a flush (doc/performance-journal.md). A store without that capability never
	 * gets any (mm_store_apply refuses them), and these have no completion
	 * flags: such a store is atomic. Marks expired by now_ms may be among
	 * them. */
	mm_markhash_t *hashed;
	size_t nhashed;
	mm_purge_t *purges;
	size_t npurges;
	mm_position_t *positions;
	size_t npositions;
	int64_t now_ms;         /* wall clock of the flush; expired marks may be dropped */
	/* Per-item completion flags (ndeltas and nmarks bytes), zeroed by the
	 * engine when the flush is built and kept across retries of the same
	 * flush. Stores that are not atomic (no MM_STORE_CAP_ATOMIC) set a flag once
	 * that item is durable and skip flagged items when the flush is retried,
	 * so a retry never applies an item twice. Atomic stores may ignore them. */
	uint8_t *delta_done;
	uint8_t *mark_done;
	/* A delta that can never be merged (MM_ERANGE: the monoid refuses the
	 * combination, e.g. an int64 sum that would overflow) is not retried:
	 * the store sets delta_done[i] = MM_DELTA_REJECTED, writes nothing for
	 * it, counts it here and keeps the first reason; the flush succeeds and
	 * the engine sends the rejected deltas to their pipeline's dead letters. */
	size_t rejected;
	char reject_detail[256];
	/* Filled by the backend: */
	size_t writes;          /* state records written (for "store writes per event"); LMDB
	                         * does not count (nor write) a merge that left the
	                         * stored bytes as they were */
	size_t purged;          /* states removed by purges */
} mm_flush_t;

#define MM_DELTA_DONE 1
#define MM_DELTA_REJECTED 2

/* Completion: status is 0 or a negative MM_E* code (mm_err_retriable tells
 * whether a retry may succeed); the diag detail was copied to `detail`. */
typedef void (*mm_store_cb)(void *arg, int status, const char *detail);

enum {
	MM_STORE_OP_APPLY,
	MM_STORE_OP_GET_MANY,
	MM_STORE_OP_POSITION,
	MM_STORE_OP_CLAIM,      /* claim() calls */
	MM_STORE_OP_RENEW,      /* renew() and release() calls */
	MM_STORE_OP_META,       /* get_meta(), put_meta() and list_meta() calls */
	MM_STORE_NOPS
};

/* The latency histograms split get_many by size: this slot holds the calls
 * for one key (the contract's store_get), the MM_STORE_OP_GET_MANY slot the
 * calls for several (store_get_many). */
#define MM_STORE_HIST_GET MM_STORE_NOPS

typedef struct mm_store_stats {
	uint64_t ops[MM_STORE_NOPS];        /* one slot per MM_STORE_OP_* */
	uint64_t errors[MM_STORE_NOPS];
	uint64_t ns_total[MM_STORE_NOPS];   /* summed latency */
	uint64_t ns_max[MM_STORE_NOPS];
	mm_histo_t hist[MM_STORE_NOPS + 1]; /* latency, for /metrics */
	uint64_t hist_errors[MM_STORE_NOPS + 1];
} mm_store_stats_t;

/* The capability set of a store (mm_store_vtable_t.caps). */
enum mm_store_cap {
	/* apply() is all-or-nothing (else: per-item done flags, see mm_flush_t). */
	MM_STORE_CAP_ATOMIC = 1u << 0,
	/* Other workers write the same state: a claim may find an id busy at
	 * one of them (pending under its lease), leases are renewed while a
	 * flush runs (st->lease_ms), and records wait for their claims. */
	MM_STORE_CAP_SHARED = 1u << 1,
	/* Native operation for hll: count_hll() answers the cardinality of a
	 * union of buckets without moving the sketches (a Valkey PFCOUNT). */
	MM_STORE_CAP_COUNT_HLL = 1u << 2,
	/* A cache layered over a backing store that stays the truth; it has
	 * per-command counters (op_stats). */
	MM_STORE_CAP_CACHE = 1u << 3,
	/* Only this worker writes the marks, and the store keeps every committed
	 * one in memory: marked() answers a record's claim at once on the loop
	 * thread, so the record needs no claim at the flush (claims.h). */
	MM_STORE_CAP_MARKED = 1u << 4,
};

/* Per-command counters of a store beyond the mm_store_* ones (a cache's
 * commands: "cache_get", ...). */
typedef struct mm_store_op_stats {
	const char *name;       /* static */
	uint64_t ops, errors, ns_total, ns_max;
} mm_store_op_stats_t;

typedef struct mm_store_vtable {
	const char *name;               /* "lmdb", "memory" */
	const mm_option_t *options;     /* option rows, for open() and docs */
	unsigned caps;                  /* enum mm_store_cap bits */
	/* Opens a store. kv are the user's options (validated against `options`).
	 * read_only: open for queries beside a running writer. */
	int (*open)(uv_loop_t *loop, const mm_kv_t *kv, size_t nkv, int read_only,
		    mm_store_t **out);
	/* Optional start-up checks, once, right after open(): cb runs with 0
	 * once the store may serve, or with the failure that makes it useless
	 * (the message says what to do: create the table...). Calls made
	 * meanwhile wait for the checks; after a failure they fail with it.
	 * NULL: nothing to check (the wrapper still completes later). */
	int (*start)(mm_store_t *st, mm_store_cb cb, void *arg);
	int (*apply)(mm_store_t *st, mm_flush_t *f, mm_store_cb cb, void *arg);
	/* For each key i: decodes the stored state into states + i*MM_STATE_MAX
	 * (which the caller has init()ed with ns->m) and sets found[i] = 1, or
	 * leaves the identity and found[i] = 0. Expired buckets (expire_ms <= now)
	 * are reported as absent. */
	int (*get_many)(mm_store_t *st, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
			void *states, uint8_t *found, mm_store_cb cb, void *arg);
	/* Start-up reads and writes, asynchronous like apply(): out (appended
	 * to) and p must stay valid until cb runs. cb's status is 0, MM_ENOTFOUND
	 * (no such position or metadata) or a failure. get_position answers
	 * MM_ENOTFOUND too where the store keeps no positions. */
	int (*get_position)(mm_store_t *st, const char *source, mm_buf_t *out, mm_store_cb cb,
			    void *arg);
	/* Optional: get_position by a reader that owns the position from now on
	 * (a Kafka partition at its assignment): a shared store fences off the
	 * flushes of its previous owner (doc/dynamodb.md, "Kafka partitions").
	 * NULL: get_position. */
	int (*take_position)(mm_store_t *st, const char *source, mm_buf_t *out, mm_store_cb cb,
			     void *arg);
	int (*get_meta)(mm_store_t *st, const char *ns_name, mm_buf_t *out, mm_store_cb cb,
			void *arg);
	int (*put_meta)(mm_store_t *st, const char *ns_name, const uint8_t *p, size_t n,
			mm_store_cb cb, void *arg);
	/* Lists the namespaces that have metadata, asynchronously like
	 * get_meta: appends "name\0name\0..." to out (valid until cb runs);
	 * a store without any answers 0 and appends nothing. */
	int (*list_meta)(mm_store_t *st, mm_buf_t *out, mm_store_cb cb, void *arg);
	/* Closes the store; no operation may be in flight. Frees st. */
	void (*close)(mm_store_t *st);
	/*
	 * Dedup claims (see mm_claim_t): claim() for every store, renew() and
	 * release() for MM_STORE_CAP_SHARED ones (NULL for the others, which
	 * keep no pending claims: the wrappers answer RENEWED/RELEASED). claim()
	 * claims every id of ns with the store's lease and a mark lifetime of
	 * ttl_ms; renew() extends our pending claims' leases (a flush being
	 * retried); release() deletes our pending claims (effects abandoned).
	 * cb runs once every id has its result, with 0 or the first failure; the
	 * array must stay valid until then.
	 */
	int (*claim)(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n, int64_t ttl_ms,
		     mm_store_cb cb, void *arg);
	int (*renew)(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n, mm_store_cb cb,
		     void *arg);
	int (*release)(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		       mm_store_cb cb, void *arg);
	/*
	 * MM_STORE_CAP_COUNT_HLL: the cardinality of the union of the hll states
	 * of keys. On completion (status 0) *cached is 1 with *count and
	 * *nonempty (keys holding a non-empty sketch) set, or 0 when the store
	 * could not answer natively (the caller then reads the keys with
	 * get_many and merges them). The outputs must stay valid until cb runs.
	 */
	int (*count_hll)(mm_store_t *st, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
			 uint64_t *count, uint64_t *nonempty, int *cached, mm_store_cb cb,
			 void *arg);
	/* MM_STORE_CAP_CACHE: copies up to max per-command counters into out and
	 * returns how many there are. */
	size_t (*op_stats)(const mm_store_t *st, mm_store_op_stats_t *out, size_t max);
	/* Optional, with take_position (NULL: the store has no fence): calls
	 * fn(ud, source, own) for every position this writer took, with own 1
	 * while no write of it was refused since the take and 0 once one was
	 * (another reader took it after: this writer lost that partition or
	 * shard and is a fenced zombie). What the store knows from its own
	 * requests: it asks nothing for this. Loop thread; no I/O. */
	void (*positions_taken)(const mm_store_t *st,
				void (*fn)(void *ud, const char *source, int own), void *ud);
	/* MM_STORE_CAP_MARKED: whether the id whose mm_id_hash in its namespace
	 * is h has a committed mark live at now_ms, from memory: 1 it has (the
	 * id was counted), 0 it has not (a claim would be won), or MM_EAGAIN,
	 * without detail, while the marks are not in memory (not read from the
	 * disk yet: the id then waits for the flush's claim). The marks the
	 * apply in flight writes may or may not be there yet: the caller knows
	 * those ids itself. ahead, if not NULL, is the hash the caller will
	 * likely ask about next: the store may start fetching where it looks
	 * (a large set of marks does not fit in the cache). Loop thread; no
	 * I/O, it may wait for a pool thread updating the marks. */
	int (*marked)(mm_store_t *st, const mm_idhash_t *h, const mm_idhash_t *ahead,
		      int64_t now_ms);
	/* MM_STORE_CAP_MARKED, optional (NULL: nothing to hold): hold 1 before
	 * a run of marked() calls (a batch's records), hold 0 after it; the
	 * store may take once for the run what each call would take and give
	 * back (LMDB: the lock its pool threads change the marks under). Calls
	 * pair up and do not nest; between them the caller asks marked() and
	 * nothing else of the store, and waits for no pool work. Loop thread. */
	void (*marked_hold)(mm_store_t *st, int hold);
} mm_store_vtable_t;

/* Common head of every backend's store struct (embed as the first member). */
struct mm_store {
	const mm_store_vtable_t *vt;
	uv_loop_t *loop;
	mm_store_stats_t stats;
	int64_t lease_ms;       /* the lease of a claim (MM_STORE_CAP_SHARED only) */
};

/* The capability set of st (enum mm_store_cap bits). */
static inline unsigned mm_store_caps(const mm_store_t *st)
{
	return st->vt->caps;
}

/* "atomic", "shared", "count_hll", "cache", "marked" for one capability bit; NULL
 * if unknown. */
const char *mm_store_cap_name(unsigned cap);

/* The registry: NULL-terminated, in registry.c. */
extern const mm_store_vtable_t *const mm_store_registry[];
const mm_store_vtable_t *mm_store_find(const char *name);

/* Wrappers: validate, time, count, then call the backend. Same contracts. */
int mm_store_open(const char *backend, uv_loop_t *loop, const mm_kv_t *kv, size_t nkv,
		  int read_only, mm_store_t **out);
/* The start-up checks (see the vtable); every owner of a store calls it
 * once after mm_store_open. */
int mm_store_start(mm_store_t *st, mm_store_cb cb, void *arg);
int mm_store_apply(mm_store_t *st, mm_flush_t *f, mm_store_cb cb, void *arg);
int mm_store_get_many(mm_store_t *st, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
		      void *states, uint8_t *found, mm_store_cb cb, void *arg);
int mm_store_get_position(mm_store_t *st, const char *source, mm_buf_t *out, mm_store_cb cb,
			  void *arg);
int mm_store_take_position(mm_store_t *st, const char *source, mm_buf_t *out, mm_store_cb cb,
			   void *arg);
int mm_store_get_meta(mm_store_t *st, const char *ns_name, mm_buf_t *out, mm_store_cb cb,
		      void *arg);
int mm_store_put_meta(mm_store_t *st, const char *ns_name, const uint8_t *p, size_t n,
		      mm_store_cb cb, void *arg);
int mm_store_list_meta(mm_store_t *st, mm_buf_t *out, mm_store_cb cb, void *arg);
/* Whether this writer owns the position stored under source (vtable
 * positions_taken): 1 it took it and no write of it was refused since, 0 a
 * write of it was refused (another reader took it), -1 unknown (it never
 * took it, or the store has no fence). Loop thread; no I/O. */
int mm_store_position_own(const mm_store_t *st, const char *source);
/* Calls fn for every position this writer took (vtable positions_taken);
 * nothing where the store has no fence. */
void mm_store_positions_taken(const mm_store_t *st,
			      void (*fn)(void *ud, const char *source, int own), void *ud);
/*
 * Blocking forms of start and the four calls above, for a caller that owns st's loop
 * and is not inside one of its callbacks (unit tests, the CLI's store
 * objects, which run a private loop): start the call, then run the loop
 * until it completes. Never from a loop callback (uv_run is not reentrant).
 */
int mm_store_start_wait(mm_store_t *st);
int mm_store_get_position_wait(mm_store_t *st, const char *source, mm_buf_t *out);
int mm_store_get_meta_wait(mm_store_t *st, const char *ns_name, mm_buf_t *out);
int mm_store_put_meta_wait(mm_store_t *st, const char *ns_name, const uint8_t *p, size_t n);
int mm_store_list_meta_wait(mm_store_t *st, mm_buf_t *out);
/* Runs cb(arg, status, detail) on the next loop iteration, for backends that
 * answer from memory but must still complete later (the contract). */
int mm_store_complete_later(mm_store_t *st, mm_store_cb cb, void *arg, int status,
			    const char *detail);
/* Claims (see the vtable). */
/* The vtable's marked(), MM_STORE_CAP_MARKED only. Called per record: not
 * timed or counted (the pipeline counts its answers as claims). */
static inline int mm_store_marked(mm_store_t *st, const mm_idhash_t *h, const mm_idhash_t *ahead,
				  int64_t now_ms)
{
	return st->vt->marked(st, h, ahead, now_ms);
}
/* The vtable's marked_hold(), if the store has one (MM_STORE_CAP_MARKED). */
static inline void mm_store_marked_hold(mm_store_t *st, int hold)
{
	if (st->vt->marked_hold != NULL)
		st->vt->marked_hold(st, hold);
}
int mm_store_claim(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n, int64_t ttl_ms,
		   mm_store_cb cb, void *arg);
int mm_store_renew(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n, mm_store_cb cb,
		   void *arg);
int mm_store_release(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		     mm_store_cb cb, void *arg);
/* The native HLL count (see the vtable); MM_ENOTSUP without
 * MM_STORE_CAP_COUNT_HLL, MM_EINVAL unless ns is an hll namespace. */
int mm_store_count_hll(mm_store_t *st, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
		       uint64_t *count, uint64_t *nonempty, int *cached, mm_store_cb cb, void *arg);
/* The cache's per-command counters; 0 without MM_STORE_CAP_CACHE. */
size_t mm_store_op_stats(const mm_store_t *st, mm_store_op_stats_t *out, size_t max);
void mm_store_close(mm_store_t *st);

#endif
