/*
 * dynamodb_impl.h: what the pieces of the DynamoDB store share; private to
 * engine/store/dynamodb*.c (the public surface is dynamodb.h).
 *
 * The store is one mm_ddb_t (the struct below) and is split by concern:
 *   dynamodb.c         the vtable, options, open and close
 *   dynamodb_start.c   start(): credentials and the table, on the loop
 *   dynamodb_client.c  the request client: slots, signing, error
 *                      classification, retry with backoff, the job
 *                      scheduler, answer dispatch, blocking calls, statistics
 *   dynamodb_item.c    the item codec: keys, request heads, monoid values as
 *                      attributes, attribute readers
 *   dynamodb_apply.c   apply(): deltas, commit record, marks, positions
 *   dynamodb_intent.c  write-ahead flush intents and their roll-forward
 *   dynamodb_read.c    get_many, positions and metadata (asynchronous)
 *   dynamodb_claims.c  the claim protocol of shared dedup
 *   dynamodb_admin.c   `murmur ddb` (mm_ddb_admin)
 * Credentials are engine/aws/credentials.c.
 *
 * Work is a queue of jobs (an apply, a get_many, a claim round); the
 * scheduler hands each free request slot the next item of the first job that
 * has one, and the item's kind-specific starter (mm_ddb_start_*_item) builds
 * and sends its request; answers come back through mm_ddb_*_answer. Everything
 * here runs on the loop thread, start-up checks (dynamodb_start.c) and
 * `murmur ddb` included: nothing blocks or sleeps.
 */
#ifndef MM_DYNAMODB_IMPL_H
#define MM_DYNAMODB_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "../aws/awsjson.h"
#include "../aws/credentials.h"
#include "../aws/sigv4.h"
#include "../http/http.h"
#include "../lib/buf.h"
#include "dynamodb.h"

#define DDB_BATCH_MAX 100       /* keys per BatchGetItem */
#define DDB_CAS_MAX 64          /* lost races per delta before the apply fails */
#define DDB_PRUNE_MAX 16        /* stale tokens removed per request */
#define DDB_PRUNE_EVERY 8       /* one ADD in 8 asks for the item, to prune */
#define DDB_TREE_KEEP (1 << 20) /* answer trees kept per slot between requests */
#define DDB_SK_MARK (-1)
#define DDB_SK_META (-2)
#define DDB_SK_POS (-3)
#define DDB_SK_COMMIT (-4)
#define DDB_SK_OWNER (-5)
#define DDB_INTENT_CHUNK 300000 /* intent bytes per item: 400 KB less base64's growth
                                 * in the request, less the other attributes */
#define DDB_PUMP_BYTES (256 << 10) /* request bytes one turn of the pump builds before it
                                    * lets the loop turn (dynamodb_client.c, ddb_pump) */
#define DDB_HIST 128            /* latency histogram: bucket k covers 2^(k/4) us */
#define DDB_ERR_MAX 96          /* an exception name ("ResourceNotFoundException") */
#define DDB_STATUS_MAX 32       /* a table status ("ACTIVE") */

/* mm_ddb_t.start_state; a failed start holds its negative MM_E* code. */
enum { DDB_UNSTARTED, DDB_STARTING, DDB_READY };

extern const mm_store_vtable_t mm_store_dynamodb_vtable;

/* The store options (rows in dynamodb.c). */
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
	K_LEASE,      /* renew this owner's lease item */
	K_OWNER_GET,  /* is the owner of an expired claim still renewing its lease? */
	K_INTENT,     /* a chunk of a flush intent PutItem */
	K_PENDING,    /* a position's pointer to its flush intent */
	K_ARM,        /* arming the intent once every pointer is set */
};

/* J_CALL: one to DDB_CALL_MAX independent requests of start-up (a position
 * or metadata read, a metadata write and its registry entry). */
enum ddb_job_kind { J_APPLY, J_GET, J_CLAIM, J_CONFIRM, J_RELEASE, J_RENEW, J_LEASE, J_CALL };

#define DDB_CALL_MAX 2

enum ddb_mkind { M_ADD_INT, M_ADD_UINT, M_ADD_FLOAT, M_MIN, M_MAX, M_BYTES };

/* An apply runs in phases, each starting when the previous one is durable:
 * the flush's intent and the positions' pointers to it before any delta (so
 * a flush cut short can be finished by whoever reads the position next), a
 * mark (a confirmed dedup id) never durable without its effect, and a
 * position never before the records it covers. */
enum ddb_phase { P_START, P_INTENT, P_PENDING, P_ARM, P_DELTAS, P_COMMIT, P_MARKS, P_POSITIONS,
		 P_DONE };

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
	size_t delta_items;     /* the deltas phase's nitems */
	/* The flush intent (dynamodb_intent.c): its encoding and chunks, whether
	 * this apply writes it, and whether it is durable (written by this
	 * apply, or by the failed attempt this one retries). */
	mm_buf_t intent;
	size_t nchunks;
	int want_intent, intent_durable;
	/* The intent is encoded on the thread pool (its bytes grow with the
	 * flush: 90 ms of the loop for 82 000 sketches), while the job waits
	 * (mm_ddb_job_wait). A close meanwhile leaves the job to the work's
	 * completion, which frees it. */
	uv_work_t encode;
	int encoding;
	int encode_rc;
	char encode_detail[128];
	/* Whose flush this apply writes: this store's writer, or for a
	 * roll-forward (rf) the intent's writer, whose replay tokens, commit
	 * record and position condition it reproduces. A roll-forward writes no
	 * intent of its own and takes its commit record from the intent. */
	char writer_attr[24];   /* "w_<16 hex>" */
	uint64_t commit_seq;
	int rf, rf_has_commit;
	int64_t rf_commit_until;
	/* get_many */
	const mm_ns_t *ns;
	const mm_key_t *keys;
	void *states;
	uint8_t *found;
	size_t *idx;            /* key indices sorted by key */
	size_t *grp;            /* ngrp + 1 offsets into idx: runs of equal keys */
	size_t ngrp;
	/* a call: its requests, built when queued; a GetItem's v (B) is
	 * decoded into call_out (owned by the caller) */
	const char *call_target[DDB_CALL_MAX];
	mm_buf_t call_body[DDB_CALL_MAX];
	mm_buf_t *call_out;
	const char *call_attr;  /* the attribute decoded: "v", or "d" of an intent */
	int call_list;          /* list_meta: call_out gets the registry's names */
	int call_raw;           /* call_out gets the answer as sent (`murmur ddb get`) */
	int call_start;         /* a start-up check: runs while other jobs wait */
	char *call_err;         /* a failure's exception name (DDB_ERR_MAX bytes) */
	char *call_status;      /* DescribeTable: Table.TableStatus (DDB_STATUS_MAX bytes) */
	int call_cond_ok;       /* ConditionalCheckFailed is an answer, not an error */
	int *call_cond_failed;  /* set to 1 when it was that answer (may be NULL) */
	mm_buf_t call_pk;       /* a position read: its key, for rolling forward */
	int call_take;          /* the read takes the position (own = this writer) */
	int call_rounds;        /* intents rolled forward by this read */
	struct ddb_rf *call_rf; /* the roll-forward this read waits for, owned */
	/* claims */
	mm_claim_t *claims;
	size_t nclaims;
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
	mm_buf_t hdr;           /* header lines to send, NUL-separated */
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
	size_t encoding;        /* intents being encoded or decoded on the thread pool */
	char *table, *region, *url, *host, *owner;
	char *table_json;       /* the table name as a JSON string */
	char writer_attr[24];   /* "w_<16 hex>" */
	mm_aws_creds_t creds;
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
	int retry_intent_durable;
	uint64_t errinj_deltas; /* deltas written, for MURMUR_ERRINJ_DDB_KILL_AFTER_DELTAS */
	uint64_t errinj_kill_after; /* that variable's N (0: none), read at the first delta */
	int errinj_read;
	/* scheduling */
	ddb_slot_t *slots;
	size_t nslots;
	ddb_slot_t *free_slots;
	ddb_job_t *jobs;
	uv_timer_t kick;
	size_t pump_bytes;      /* request bytes built since the kick last fired */
	int created;            /* start() created the table */
	const char *ttl_state;  /* what enabling TTL did: "enabled", "unsupported", ... */
	/* start(): DDB_UNSTARTED (no checks asked for: jobs run), DDB_STARTING
	 * (only the checks' jobs run), DDB_READY, or the failure's MM_E* code
	 * (every job fails with start_detail) */
	int start_state;
	int creds_pending;      /* the container credentials are fetched by start() */
	int start_polls;        /* DescribeTable rounds waiting for ACTIVE */
	mm_store_cb start_cb;
	void *start_arg;
	uv_timer_t start_timer; /* the pause between those rounds */
	char start_err[DDB_ERR_MAX], start_status[DDB_STATUS_MAX];
	char start_detail[400];
	mm_ddb_stats_t stats;
	uint64_t hist[DDB_HIST];
	/* Positions this writer took (take_position), each with own = 0 once a
	 * write of it was refused by the fence since: for status (vtable
	 * positions_taken). A few per partition or shard ever assigned. */
	struct ddb_taken {
		char *source;
		int own;
	} *taken;
	size_t ntaken, taken_cap;
};

/* ---- dynamodb.c ---- */

/* st as a DynamoDB store, or NULL when it is another backend. */
mm_ddb_t *mm_ddb_of(const mm_store_t *st);
/* One of the things a closing store waits for is gone (a handle, an
 * intent's encoding); the last one frees st. */
void mm_ddb_handle_gone(mm_ddb_t *st);

/* ---- dynamodb_start.c ---- */

int mm_ddb_start(mm_store_t *base, mm_store_cb cb, void *arg);

/* ---- dynamodb_item.c: keys, request heads, values ---- */

#define PUT(b, lit) mm_buf_append((b), (lit), sizeof(lit) - 1)

/* Windowed buckets expire; all-time ones (expire_ms 0) carry no ttl. */
static inline int has_ttl(int64_t expire_ms)
{
	return expire_ms > 0;
}

/* Epoch seconds of an expiry: rounded up, so an item never expires early. */
static inline int64_t ttl_of(int64_t expire_ms)
{
	return (expire_ms + 999) / 1000;
}

int mm_ddb_put_str(mm_buf_t *b, const char *s);
int mm_ddb_put_n(mm_buf_t *b, int64_t v);
int mm_ddb_make_pk(mm_buf_t *b, const char *ns, const char *p, size_t n);
int mm_ddb_put_key(mm_buf_t *b, const mm_buf_t *pk, int64_t sk);
int mm_ddb_put_table(mm_ddb_t *st, mm_buf_t *b);
int mm_ddb_put_head(mm_ddb_t *st, mm_buf_t *b, const mm_buf_t *pk, int64_t sk);
int mm_ddb_put_item_start(mm_ddb_t *st, mm_buf_t *b, const mm_buf_t *pk, int64_t sk);
int mm_ddb_build_get(mm_ddb_t *st, ddb_slot_t *sl, const mm_buf_t *pk, int64_t sk);
int mm_ddb_mkind(const mm_monoid_t *m);
int mm_ddb_state_number(const mm_monoid_t *m, const void *state, mm_buf_t *tmp, char *out,
			size_t cap);
int mm_ddb_item_state(const mm_monoid_t *m, const mm_jnode_t *item, void *state, mm_buf_t *tmp);
int64_t mm_ddb_attr_i64(const mm_jnode_t *item, const char *name, int *ok);
const mm_jnode_t *mm_ddb_attr_s(const mm_jnode_t *item, const char *name);
int mm_ddb_item_expired(const mm_jnode_t *item, int64_t now_ms);

/* ---- dynamodb_client.c: requests and the scheduler ---- */

int64_t mm_ddb_now_ms(void);
void mm_ddb_enqueue(mm_ddb_t *st, ddb_job_t *job);
/* A job waits for other jobs (a position read for its roll-forward): it
 * holds no slot and is not completed until mm_ddb_job_resume, which fails it
 * when rc is not 0. */
void mm_ddb_job_wait(ddb_job_t *job);
void mm_ddb_job_resume(mm_ddb_t *st, ddb_job_t *job, int rc, const char *detail);
void mm_ddb_job_free(ddb_job_t *job);
/* Runs the scheduler on the next loop iteration (start() is done). */
void mm_ddb_kick(mm_ddb_t *st);
int mm_ddb_slot_send(ddb_slot_t *sl);
void mm_ddb_slot_send_later(ddb_slot_t *sl, uint64_t delay_ms);
void mm_ddb_slot_retry(ddb_slot_t *sl, const char *detail);
void mm_ddb_slot_finish(ddb_slot_t *sl, int rc, const char *detail);
uint64_t mm_ddb_backoff_ms(mm_ddb_t *st, int n);
void mm_ddb_hist_add(mm_ddb_t *st, uint64_t ns);

/* ---- dynamodb_apply.c ---- */

int mm_ddb_apply(mm_store_t *base, mm_flush_t *f, mm_store_cb cb, void *arg);
/* Queues the apply of another writer's flush f (a decoded intent): writer
 * is its 16 hex digits, seq its sequence number, commit_seq the number of
 * its commit record, written when has_commit, with the lifetime until. */
int mm_ddb_apply_rf(mm_ddb_t *st, mm_flush_t *f, const char *writer, uint64_t seq,
		    uint64_t commit_seq, int has_commit, int64_t commit_until, mm_store_cb cb,
		    void *arg);
int mm_ddb_start_apply_item(ddb_slot_t *sl);
void mm_ddb_apply_answer(ddb_slot_t *sl, int cond);
int mm_ddb_apply_item_done(const ddb_job_t *job, size_t i);
int mm_ddb_apply_next_phase(mm_ddb_t *st, ddb_job_t *job);
void mm_ddb_apply_done(mm_ddb_t *st, ddb_job_t *job, uint64_t ns);

/* ---- dynamodb_intent.c ---- */

int64_t mm_ddb_commit_until(const mm_flush_t *f);
/* Plans an apply's intent; when it writes one, starts its encoding on the
 * thread pool and makes the job wait for it. */
int mm_ddb_intent_plan(mm_ddb_t *st, ddb_job_t *job);
int mm_ddb_start_intent_item(ddb_slot_t *sl);
void mm_ddb_intent_fenced(ddb_slot_t *sl);
void mm_ddb_errinj_delta(mm_ddb_t *st, const ddb_job_t *job);
/* Starts finishing the flush named tag ("<writer>#<seq>#<chunks>", n bytes)
 * that the position item pos_pk points to, through jobs of st on the loop;
 * cb(arg, rc, detail) once it is done (0 also when the intent was too old or
 * gone and the pointer was removed). On success *out is the roll-forward,
 * owned by the caller, who frees it with mm_ddb_rf_free once cb ran or when
 * the store closes (then cb never runs). On error cb is never called. */
int mm_ddb_rf_start(mm_ddb_t *st, const mm_buf_t *pos_pk, const char *tag, size_t n,
		    mm_store_cb cb, void *arg, struct ddb_rf **out);
void mm_ddb_rf_free(struct ddb_rf *rf);
mm_ddb_t *mm_ddb_rf_store(const struct ddb_rf *rf);

/* ---- dynamodb_read.c ---- */

int mm_ddb_get_many(mm_store_t *base, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
		    void *states, uint8_t *found, mm_store_cb cb, void *arg);
int mm_ddb_start_get_item(ddb_slot_t *sl);
void mm_ddb_get_answer(ddb_slot_t *sl);
int mm_ddb_get_position(mm_store_t *base, const char *source, mm_buf_t *out, mm_store_cb cb,
			void *arg);
int mm_ddb_take_position(mm_store_t *base, const char *source, mm_buf_t *out, mm_store_cb cb,
			 void *arg);
/* Notes whether this writer owns the position item pk ("#pos#<source>",
 * n bytes): 1 when its take succeeded, 0 when the fence refused a write of
 * it (vtable positions_taken). Out of memory only loses the note. */
void mm_ddb_taken_note(mm_ddb_t *st, const char *pk, size_t n, int own);
void mm_ddb_positions_taken(const mm_store_t *base,
			    void (*fn)(void *ud, const char *source, int own), void *ud);
void mm_ddb_taken_free(mm_ddb_t *st);
int mm_ddb_get_meta(mm_store_t *base, const char *ns_name, mm_buf_t *out, mm_store_cb cb,
		    void *arg);
int mm_ddb_put_meta(mm_store_t *base, const char *ns_name, const uint8_t *p, size_t n,
		    mm_store_cb cb, void *arg);
/* Queues a consistent GetItem of (pk, sk) whose attribute attr (B) is
 * appended to out (MM_ENOTFOUND when absent); attr NULL: the answer as
 * DynamoDB sent it ({"Item":{...}} or {}). */
int mm_ddb_call_get(mm_ddb_t *st, const mm_buf_t *pk, int64_t sk, const char *attr,
		    mm_buf_t *out, mm_store_cb cb, void *arg);
/* Queues one request of target with body (taken over: *body is left
 * empty) whose answer is not read; a failed condition counts as done, and
 * sets *cond_failed (when not NULL) to 1. */
int mm_ddb_call_write(mm_ddb_t *st, const char *target, mm_buf_t *body, int *cond_failed,
		      mm_store_cb cb, void *arg);
/* Queues one request of start() (run while other jobs wait), body taken
 * over: a failure's exception name goes to st->start_err, a DescribeTable's
 * TableStatus to st->start_status. */
int mm_ddb_call_check(mm_ddb_t *st, const char *target, mm_buf_t *body, mm_store_cb cb,
		      void *arg);
int mm_ddb_start_call_item(ddb_slot_t *sl);
void mm_ddb_call_answer(ddb_slot_t *sl);
int mm_ddb_list_meta(mm_store_t *base, mm_buf_t *out, mm_store_cb cb, void *arg);

/* ---- dynamodb_claims.c ---- */

int mm_ddb_start_claim_item(ddb_slot_t *sl);
void mm_ddb_claim_answer(ddb_slot_t *sl, int cond);
int mm_ddb_tag_of(const mm_ddb_t *st, char *tag, size_t n);
int mm_ddb_commit_pk(mm_buf_t *pk, const char *tag, size_t n);
int mm_ddb_vt_claim(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		    int64_t ttl_ms, mm_store_cb cb, void *arg);
int mm_ddb_vt_renew(mm_store_t *st, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		    mm_store_cb cb, void *arg);

#endif
