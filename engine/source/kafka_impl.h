/*
 * kafka_impl.h: what the pieces of the Kafka source share; private to
 * engine/source/kafka*.c. kafka.c is the source (loop integration, records,
 * flow control, status, shutdown, the vtable), kafka_partitions.c its
 * partition table and positions, kafka_rebalance.c its rebalance and commit
 * machinery (assign, revoke, the committed-offset fetch, commit results, the
 * rebalance queue).
 *
 * Ownership: the source owns its partitions (topic names included), the
 * queued rebalances and their partition lists, its handles and the
 * librdkafka handle. Everything runs on the loop thread unless a function
 * says otherwise.
 */
#ifndef MM_KAFKA_IMPL_H
#define MM_KAFKA_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../lib/buf.h"
#include "kafka_lib.h"
#include "position.h"
#include "source.h"

struct mm_ksrc_cfg {
	const char *brokers;
	const char *topics;
	const char *group;
	const char *start;
	int64_t batch;
	int64_t drain;
	int64_t pause_after_ms;
	int eof;
};

enum mm_kpart_state {
	MM_KP_IDLE,     /* known (read before, or in the stored position), not ours */
	MM_KP_ACTIVE,   /* assigned: its records are delivered */
	MM_KP_REVOKING, /* being revoked: paused, its records are dropped */
};

/* One partition this worker has read or been assigned. */
typedef struct mm_kpart {
	char *topic;           /* owned */
	int32_t partition;
	int state;             /* enum mm_kpart_state */
	int fetch_paused;      /* paused in librdkafka by us */
	int at_eof;            /* read to its end (with the eof option) */
	const rd_kafka_topic_t *rkt; /* last seen topic handle, for fast lookup */
	int64_t next;          /* next offset to deliver, -1 unknown */
	int64_t stored;        /* offset in our store when we started, -1 none */
	int64_t acked;         /* durable in our store (ack), -1 none */
	int64_t committed;     /* confirmed by the group coordinator, -1 unknown */
	int64_t stored_sent;   /* last offset handed to rd_kafka_offsets_store */
	uint64_t records;      /* delivered */
	uint64_t rate_records; /* records at rate_ms */
	int64_t rate_ms;       /* start of the current rate window */
	double rate;           /* records/s over the last complete window */
} mm_kpart_t;

enum mm_krebal_kind { MM_KR_ASSIGN, MM_KR_REVOKE, MM_KR_RESET };

/* A rebalance librdkafka reported, handled in order. */
typedef struct mm_krebal {
	int kind;                                /* enum mm_krebal_kind */
	int lost;                                /* revoke: the assignment was lost */
	rd_kafka_topic_partition_list_t *parts;  /* owned copy */
	rd_kafka_resp_err_t werr;                /* committed-offset fetch result */
	int attempts;
	int read_next;        /* assign: next partition whose stored part to read */
	int reading;          /* assign: the committed offsets are in, parts being read */
	mm_buf_t key, buf;    /* assign: the part's key and its position read */
	struct mm_krebal *next;
} mm_krebal_t;

typedef struct mm_ksrc mm_ksrc_t;

/* The argument of a sink->flush issued for a revoke. It outlives the source
 * if the engine calls back after close (owner is then NULL). */
typedef struct mm_kflush {
	mm_ksrc_t *owner;
} mm_kflush_t;

enum mm_ksrc_phase {
	MM_KS_INIT,    /* opened, not started */
	MM_KS_RUN,     /* subscribed, delivering */
	MM_KS_STOP,    /* stop(): no more deliveries, rebalances still served */
	MM_KS_CLOSE,   /* close(): leaving the group */
	MM_KS_DESTROY, /* the handle is being destroyed, handles closing */
};

struct mm_ksrc {
	mm_source_t base; /* first: what the engine sees */

	rd_kafka_t *rk;
	rd_kafka_queue_t *rkqu;  /* the consumer queue, everything forwarded to it */
	rd_kafka_topic_partition_list_t *topics;
	char *group;
	int fds[2];              /* io-event pipe: librdkafka writes, the loop reads */
	int phase;               /* enum mm_ksrc_phase */
	int paused;              /* pause() by the engine */
	int fetch_stopped;       /* ... escalated to rd_kafka_pause_partitions */
	int64_t pause_after_ms;
	int cooperative;         /* the group uses the cooperative protocol */
	int ever_assigned;       /* the group gave us an assignment once */
	int eof;                 /* signal eof when every partition is read */
	const char *start;       /* "earliest" or "latest" (static) */
	int eof_sent;
	int64_t poll_interval_ms; /* max.poll.interval.ms */
	int64_t session_ms;      /* session.timeout.ms */

	size_t batch_max, drain_max;
	rd_kafka_message_t **msgs;  /* batch_max */
	mm_record_t *recs;          /* batch_max */
	mm_buf_t ids;               /* "topic:partition:offset" of each record */
	mm_buf_t pos;               /* the end position of the batch */
	rd_kafka_message_t **held;  /* served while paused, delivered on resume */
	size_t nheld, capheld;

	mm_kpart_t *parts;
	size_t nparts, capparts;
	size_t last_part;           /* lookup cache */

	/* Rebalances: the one being handled is the head. */
	mm_krebal_t *rebal, **rebal_tail;
	int rebal_busy;             /* a step of the head is in progress */
	mm_kflush_t *flush_wait;    /* the revoke's flush not yet done */
	uv_work_t work;             /* committed-offset fetch */
	int work_busy;              /* it, or a read of a partition's stored position */

	/* Statistics for status(). */
	uint64_t commits, commit_failures, rebalances, errors;

	/* Shutdown. */
	int close_started;          /* rd_kafka_consumer_close_queue was called */
	int close_waiting;          /* waiting for the first assignment */
	int close_waited;           /* ... and gave up */
	unsigned closes;
	void (*done)(void *arg);
	void *done_arg;

	uv_poll_t poll;
	uv_idle_t idle;
	uv_timer_t rebal_timer;     /* rebalance retries, close wait bound */
	uv_timer_t alive_timer;     /* serves the queue every max.poll.interval.ms / 3 */
	uv_timer_t pause_timer;     /* escalates a pause after pause_after */
};

/* ---- kafka.c ---- */

/* The wall clock in milliseconds, 0 if it cannot be read. */
int64_t mm_ksrc_now_ms(void);
/* Reports a fatal error; the engine stops the source and closes it. */
void mm_ksrc_fail(mm_ksrc_t *ks, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* With the eof option, signals eof once every assigned partition is read. */
void mm_ksrc_check_eof(mm_ksrc_t *ks);
/* Takes the next step of close() (called again as each wait ends). */
void mm_ksrc_close_step(mm_ksrc_t *ks);

/* ---- kafka_partitions.c ---- */

/* The partition topic[partition], NULL if this worker never saw it. */
mm_kpart_t *mm_ksrc_part_find(mm_ksrc_t *ks, const char *topic, int32_t partition);
/* Finds or adds a partition; NULL when out of memory. */
mm_kpart_t *mm_ksrc_part_get(mm_ksrc_t *ks, const char *topic, int32_t partition);
/* The partition of a message, NULL if it is not in the table. */
mm_kpart_t *mm_ksrc_part_of(mm_ksrc_t *ks, const rd_kafka_message_t *m);
/* The durable offset of a partition in our store, -1 if none. */
int64_t mm_ksrc_part_durable(const mm_kpart_t *kp);
/* Updates a partition's read rate once a window has passed since the last. */
void mm_ksrc_rate(mm_kpart_t *kp, int64_t now);
/* A new list of the partitions in the given state (enum mm_kpart_state);
 * the caller destroys it. */
rd_kafka_topic_partition_list_t *mm_ksrc_list(mm_ksrc_t *ks, int state);
/* Pauses (or resumes) fetching the partitions of l in librdkafka; l stays
 * the caller's. */
void mm_ksrc_fetch_pause(mm_ksrc_t *ks, rd_kafka_topic_partition_list_t *l, int pause);
/* Encodes the next offset of every partition that has one into ks->pos;
 * 0 or MM_ENOMEM. */
int mm_ksrc_pos_encode(mm_ksrc_t *ks);
typedef void (*mm_ksrc_pos_fn)(mm_ksrc_t *ks, mm_kpart_t *kp, int64_t offset);
/* Applies fn to each partition of a position (adding the partitions it
 * names), only if all of it is valid; 0, MM_ECORRUPT or MM_ENOMEM. */
int mm_ksrc_pos_decode(mm_ksrc_t *ks, const uint8_t *p, size_t len, mm_ksrc_pos_fn fn);
/* The vtable's pos_parts: fn for each partition this member owns and moved,
 * with its part name "<topic>/<partition>" and a position of it alone. */
int mm_ksrc_pos_parts(mm_source_t *src, const uint8_t *pos, size_t len,
		      int (*fn)(void *ud, const char *part, const uint8_t *p, size_t n),
		      void *ud);
/* mm_ksrc_pos_fn for start(): the stored offset, where reading resumes. */
void mm_ksrc_pos_stored(mm_ksrc_t *ks, mm_kpart_t *kp, int64_t offset);
/* mm_ksrc_pos_fn for ack(): the offset is durable. */
void mm_ksrc_pos_acked(mm_ksrc_t *ks, mm_kpart_t *kp, int64_t offset);

/* ---- kafka_rebalance.c ---- */

/* librdkafka's rebalance callback: queues the rebalance (copying parts) and
 * starts it if none is in progress. */
void mm_ksrc_on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
			  rd_kafka_topic_partition_list_t *parts, void *opaque);
/* librdkafka's offset-commit callback: results of the auto-commits. */
void mm_ksrc_on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
		       rd_kafka_topic_partition_list_t *offsets, void *opaque);
/* Hands the durable offsets of the assigned partitions that moved to
 * librdkafka, which commits them. */
void mm_ksrc_store(mm_ksrc_t *ks);
/* Commits the durable offsets of the head rebalance's revoked partitions,
 * then unassigns them. */
void mm_ksrc_revoke_commit(mm_ksrc_t *ks);
/* The rebal_timer's callback: retries the head rebalance's step, or ends
 * close()'s wait for the first assignment. */
void mm_ksrc_on_rebal_timer(uv_timer_t *h);
/* Frees a queued rebalance and its partition list. */
void mm_ksrc_rebal_free(mm_krebal_t *op);

#endif
