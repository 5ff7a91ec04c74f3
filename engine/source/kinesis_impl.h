/*
 * kinesis_impl.h: what the pieces of the Kinesis source share; private to
 * engine/source/kinesis*.c. kinesis_api.c is the signed JSON client,
 * kinesis.c the source (the shard list, positions, the vtable),
 * kinesis_read.c the reading of each shard (GetShardIterator, GetRecords,
 * pacing, delivery, the end of a shard, the shard state machine),
 * kinesis_lease.c the lease manager that shares the shards between workers
 * through a DynamoDB table in the KCL's schema, kinesis_parts.c the
 * positions per shard that workers sharing a lease table store (one part
 * per shard, read when its lease is taken) and the hand-over of a lease
 * between live workers.
 *
 * Ownership: the source owns its shards (each allocated alone, so pointers
 * to them stay valid while the array grows), their timers and buffers, and
 * its API client. Everything runs on the loop thread.
 */
#ifndef MM_KINESIS_IMPL_H
#define MM_KINESIS_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../lib/buf.h"
#include "kinesis_api.h"
#include "position.h"
#include "source.h"

typedef struct mm_kin_cfg {
	const char *stream;
	const char *start;
	const char *endpoint;
	const char *region;
	const char *consumer;
	int64_t limit;
	int64_t idle_ms;
	int64_t shard_sync_ms;
	int eof;
	/* leases (kinesis_lease.c) */
	const char *lease_table;
	const char *lease_endpoint;
	const char *worker;
	int64_t lease_ms;
} mm_kin_cfg_t;

enum mm_kshard_state {
	MM_KSH_NEW,  /* listed; waits until its parents ended */
	MM_KSH_ITER, /* needs an iterator */
	MM_KSH_READ, /* reading with GetRecords */
	MM_KSH_END,  /* read to SHARD_END */
};

/* A record of a GetRecords answer, decoded and held until delivered. */
typedef struct mm_kheld {
	size_t off, len;      /* the data in the shard's data buffer */
	size_t id_off;        /* "<shard>:<sequence>" in the shard's ids buffer */
	uint32_t id_len;
	int64_t ts_ms;
	char seq[MM_KINESIS_SEQ_MAX + 1];
} mm_kheld_t;

typedef struct mm_kin mm_kin_t;

typedef struct mm_kshard {
	mm_kin_t *ks;
	char id[MM_KINESIS_SHARD_MAX + 1];
	char parent[MM_KINESIS_SHARD_MAX + 1];   /* "" when none */
	char adjacent[MM_KINESIS_SHARD_MAX + 1]; /* a merge's second parent */
	int state;                  /* enum mm_kshard_state */
	int owned;                  /* this worker reads it */
	int listed;                 /* named by the last complete ListShards */
	uint64_t seen_list;         /* the listing that last named it */
	int inflight, waiting;      /* a request or a timer is pending */
	int has_held;               /* an answer waits for resume() */
	int end_pending;            /* the held answer ends the shard */
	int end_read, end_durable;  /* SHARD_END delivered / durable */
	int caught_up;              /* last answer: nothing more to read now */
	int failures;               /* consecutive failed calls */
	uint64_t call_at;           /* loop time the last GetRecords started */
	uint64_t next_at;           /* loop time the next GetRecords may start */
	char *iter;                 /* current shard iterator (owned) */
	char seq[MM_KINESIS_SEQ_MAX + 1];     /* last record delivered, "" none */
	char durable[MM_KINESIS_SEQ_MAX + 1]; /* last record durable (acked) */
	uv_timer_t timer;           /* pacing, backoff */
	mm_kheld_t *held;
	size_t nheld, held_cap;
	mm_buf_t data, ids;
	/* counters */
	uint64_t records, calls, throttles, renewals, errors;
	int64_t behind_ms;          /* MillisBehindLatest of the last answer, -1 unknown */
	/* Positions per shard (kinesis_parts.c), with a lease table only. */
	int part_wait;              /* lease taken: its stored part is read first */
	int handoff;                /* handing the lease over: no more reads */
	int release_wanted;         /* the hand-over's flush is done: release */
	/* Its lease was lost without a hand-over while records of it that this
	 * worker delivered were not durable yet: its part is still named in the
	 * flushes (the zombie fence decides whether they may count them) until
	 * they are, and the lease is not taken again before. */
	int lost;
	/* Its lease, as this worker last saw it (kinesis_lease.c). */
	int l_exists;               /* the lease table has an item */
	int l_busy;                 /* a write of ours is in flight */
	int l_ended;                /* its checkpoint is SHARD_END */
	int64_t l_counter;          /* leaseCounter last read or written */
	int64_t l_changed_ms;       /* local time the counter last changed */
	int64_t l_renewed_ms;       /* our last successful write, when owned */
	int64_t l_handed_ms;        /* local time we handed it over, 0 never */
	char l_owner[128];          /* leaseOwner, "" when none */
	char l_checkpoint[MM_KINESIS_SEQ_MAX + 1]; /* a sequence number or sentinel */
	char l_handoff[128];        /* handoffTo: a worker asking for it, "" none */
	uint64_t lease_takes, lease_losses;
} mm_kshard_t;

enum mm_kin_phase { MM_KIN_INIT, MM_KIN_RUN, MM_KIN_STOP, MM_KIN_CLOSING, MM_KIN_CLOSED };
enum mm_kin_start { MM_KIN_TRIM, MM_KIN_LATEST, MM_KIN_AT };

typedef struct mm_klease mm_klease_t;

/* A shard's end or a hand-over waiting for the engine's flush
 * (mm_kin_flush_shard). */
typedef struct kin_end {
	mm_kin_t *ks; /* NULL once the source is gone */
	char shard[MM_KINESIS_SHARD_MAX + 1];
	int handoff;  /* a hand-over's flush, not a shard's end */
	struct kin_end *next;
} kin_end_t;

struct mm_kin {
	mm_source_t base; /* first: what the engine sees */
	mm_kin_cfg_t cfg;
	char *stream, *endpoint, *region;   /* owned copies of the options */
	int start_kind;                     /* enum mm_kin_start */
	int64_t start_ms;
	mm_kapi_t *api;
	mm_klease_t *leases;                /* NULL: this worker reads every shard */
	int phase;                          /* enum mm_kin_phase */
	int paused, eof_sent, listing;
	mm_kshard_t **shards;
	size_t nshards, cap;
	struct kin_end *ends;               /* shard ends waiting to be durable */
	uv_timer_t list_timer;
	uint64_t lists, list_failures, bad_data;
	mm_record_t *recs;
	size_t recs_cap;
	mm_buf_t pos, body, list_body;
	/* The part being read (kinesis_parts.c): one read at a time. */
	mm_kshard_t *part_sh;               /* its shard, NULL when none */
	mm_buf_t part_key, part_buf;
	uint64_t rng;
	size_t open_handles;
	void (*done)(void *arg);
	void *done_arg;
};

int64_t mm_kin_now_ms(void);

/* Compares two decimal sequence numbers (-1, 0, 1). */
int mm_kin_seq_cmp(const char *a, const char *b);

mm_kshard_t *mm_kin_shard_find(mm_kin_t *ks, const char *id);

/* Full-jitter delay for the n-th consecutive failure (1-based). */
uint64_t mm_kin_backoff_ms(mm_kin_t *ks, int n);

/* Appends one shard's entry of a position (layout in kinesis.c). */
int mm_kin_pos_put(mm_buf_t *b, const char *shard, int ended, const char *seq);

/* Encodes every shard read so far into ks->pos (layout in kinesis.c). */
int mm_kin_pos_encode(mm_kin_t *ks);

/* Reads the shard list again (unless a listing is running). */
void mm_kin_list_shards(mm_kin_t *ks);

/* The source's last reference is gone (a handle closed, a read answered):
 * frees it once nothing is left. */
void mm_kin_handle_gone(mm_kin_t *ks);

/* ---- kinesis_read.c ---- */

/* Runs every shard's next step (after an ownership or parent change). */
void mm_kin_kick(mm_kin_t *ks);

/* 1 if records of sh were delivered (to the engine) and are not durable yet. */
int mm_kin_undurable(const mm_kshard_t *sh);

/* This worker stops reading sh (its lease went to another worker); when
 * records of it are delivered and not durable, sh is marked lost. */
void mm_kin_drop(mm_kin_t *ks, mm_kshard_t *sh);

/* Runs the shard's next step after delay_ms. */
void mm_kin_later(mm_kshard_t *sh, uint64_t delay_ms);

/* Asks the engine to make everything delivered durable, then calls
 * mm_kin_part_handed (handoff) or marks sh's end durable. */
void mm_kin_flush_shard(mm_kin_t *ks, mm_kshard_t *sh, int handoff);

/* Delivers what the shard holds and schedules its next read at
 * sh->next_at (loop time); a shard read to its end is flushed instead. */
void mm_kin_after_answer(mm_kin_t *ks, mm_kshard_t *sh);

/* ---- kinesis_parts.c ---- */

/* The vtable's pos_parts (with a lease table): one part per shard. */
int mm_kin_pos_parts(mm_source_t *src, const uint8_t *pos, size_t len,
		     int (*fn)(void *ud, const char *part, const uint8_t *p, size_t n), void *ud);
/* Reads the stored part of the next shard whose lease was just taken
 * (part_wait), unless a read is in flight; kin_step calls it too. */
void mm_kin_part_read(mm_kin_t *ks);
/* Another worker asked for sh's lease: stop reading it, flush, release. */
void mm_kin_handoff(mm_kin_t *ks, mm_kshard_t *sh);
/* The hand-over's flush is done (status 0: sh's part is stored). */
void mm_kin_part_handed(mm_kin_t *ks, mm_kshard_t *sh, int status);

/* ---- kinesis_lease.c ---- */

/* The option rows of the lease manager, spliced into the source's. */
#define MM_KLEASE_OPTIONS                                                              \
	{MM_OPT_STRING, "lease_table", NULL, offsetof(mm_kin_cfg_t, lease_table),          \
	 "DynamoDB table of shard leases in the KCL's schema, shared by the workers of "    \
	 "one application (created when missing). Unset: this worker reads every shard."}, \
	{MM_OPT_STRING, "lease_endpoint", NULL, offsetof(mm_kin_cfg_t, lease_endpoint),    \
	 "DynamoDB endpoint of the lease table. Default $MURMUR_DYNAMODB_ENDPOINT, else "   \
	 "AWS's for the region."},                                                         \
	{MM_OPT_STRING, "worker", NULL, offsetof(mm_kin_cfg_t, worker),                    \
	 "This worker's leaseOwner. Default <host>:<pid>:<random>, new at every start."},  \
	{MM_OPT_DURATION_MS, "lease_time", "10s", offsetof(mm_kin_cfg_t, lease_ms),        \
	 "A lease whose leaseCounter has not moved for this long is taken over (the KCL's " \
	 "failoverTimeMillis); leases are renewed every third of it."}

/* Opens the lease manager of ks (its options are in ks->cfg). */
int mm_klease_open(mm_kin_t *ks, mm_klease_t **out);
/* Checks or creates the table, then renews, scans and takes on a timer. */
void mm_klease_start(mm_klease_t *lm);
/* The shard list is complete: creates the leases of new shards. */
void mm_klease_sync(mm_klease_t *lm);
/* sh's durable position moved (or its end is durable): checkpoint it. */
void mm_klease_durable(mm_klease_t *lm, mm_kshard_t *sh);
/* sh was handed over and everything read of it is durable: release its
 * lease (checkpoint, REMOVE leaseOwner) so that the asker takes it. */
void mm_klease_release(mm_klease_t *lm, mm_kshard_t *sh);
/* 1 if the lease of shard id says it was read to its end. */
int mm_klease_parent_ended(mm_klease_t *lm, const char *id);
/* 1 if sh, not ours, needs nothing from us for `eof` (ended, or read by a
 * live worker). */
int mm_klease_settled(mm_klease_t *lm, const mm_kshard_t *sh);
/* Appends ",\"leases\":{...}" to a status object. */
int mm_klease_status(mm_klease_t *lm, mm_buf_t *out);
/* Checkpoints and releases the leases held (everything delivered is durable
 * when the engine closes its sources), then frees lm and calls done(arg). */
void mm_klease_close(mm_klease_t *lm, void (*done)(void *arg), void *arg);

#endif
