/*
 * source.h: the source interface. Every backend (file.c now; kafka.c,
 * kinesis.c, lambda.c later) implements one const mm_source_vtable_t listed
 * in registry.c. A source reads records and hands them to its sink in
 * batches on the loop thread; the sink (the engine) processes a batch fully
 * before deliver() returns, so the source may reuse the batch memory after.
 *
 * Positions. Every batch carries the opaque position just after its last
 * record (file: inode + byte offset; Kafka: partition offsets). The engine
 * stores positions in the same store transaction as the states they produced
 * and later calls ack() with a position once everything before it is durable
 * (Kafka commits there). On start the engine passes the last durable
 * position, or NULL to start from the beginning / the configured start.
 *
 * Flow control. pause()/resume() may be called at any time on the loop
 * thread; a paused source delivers nothing until resumed (a batch already
 * being delivered completes).
 *
 * Rebalances. A source about to give up part of its input (Kafka partitions
 * revoked) calls sink->flush and waits for done(): everything it delivered
 * before the call is then durable in the store, its positions were acked,
 * and it may commit and release. Time: a record's ts_ms (Kafka's record
 * timestamp) is the event time of pipelines that name no time field.
 *
 * Threads: every function and callback runs on the loop thread. Sources that
 * use threads (librdkafka, the libuv thread pool) signal the loop and deliver
 * from it.
 */
#ifndef MM_SOURCE_H
#define MM_SOURCE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../lib/buf.h"
#include "../lib/options.h"

typedef struct mm_source mm_source_t;

enum {
	MM_REC_TOOBIG = 1, /* longer than max_record: p/len hold only the first
	                    * MM_REC_PREFIX bytes, orig_len the true length */
	MM_REC_POISON = 2, /* set by the engine: this record stalled or crashed
	                    * a worker twice and goes to the dead-letter destination */
	MM_REC_ID = 4,     /* id/id_len hold the record's identity in its source */
	MM_REC_UNDECODABLE = 8, /* the source could not decode the record's payload
	                         * (Lambda: kinesis.data that is not base64): p/len
	                         * hold the raw text, and the pipelines send it to the
	                         * dead-letter destination as malformed (reason json) */
};

#define MM_REC_UNDECODABLE_MSG "the source could not decode the record (invalid base64 or DynamoDB JSON)"

#define MM_REC_PREFIX 4096

typedef struct mm_record {
	const char *p;       /* record bytes (no trailing newline), borrowed */
	uint32_t len;
	uint32_t flags;      /* MM_REC_* */
	uint64_t orig_len;   /* true length (== len unless TOOBIG) */
	uint64_t offset;     /* source-specific position of the record, for dead letters
	                      * (file: byte offset of the line; Kafka: offset) */
	int64_t ts_ms;       /* source timestamp (Kafka record time), 0 if none */
	/* Valid only with MM_REC_ID (sources that never set the flag leave these
	 * untouched): the record's identity in its source, borrowed like p
	 * (Kafka: "topic:partition:offset"): an event id for dedup that needs no
	 * field, and the record's origin in dead letters. */
	const char *id;
	uint32_t id_len;
	/* Arrival stamp, set by the engine when the batch is delivered (sources
	 * leave it alone): strictly increasing in delivery order, also across a
	 * restart; first/last break ties of event time with it. */
	uint64_t seq;
} mm_record_t;

typedef struct mm_batch {
	mm_source_t *src;
	mm_record_t *recs;
	size_t n;
	const uint8_t *end_pos; /* position after the last record, borrowed */
	size_t end_pos_len;
	int64_t now_ms;         /* processing time of the batch */
} mm_batch_t;

/* What a source calls on its consumer (the engine). */
typedef struct mm_source_sink {
	void *ctx;
	/* A batch of records; processed fully before returning. */
	void (*deliver)(void *ctx, mm_batch_t *b);
	/* No more records will come (end of input with follow off). */
	void (*eof)(void *ctx, mm_source_t *src);
	/* The source failed and stopped; err is an MM_E* code, detail is text. */
	void (*error)(void *ctx, mm_source_t *src, int err, const char *detail);
	/* Makes everything delivered so far durable, then calls done(arg, status)
	 * on the loop thread (never inside this call). status is 0, or an MM_E*
	 * code if the engine is stopping before the flush could succeed. */
	void (*flush)(void *ctx, mm_source_t *src, void (*done)(void *arg, int status), void *arg);
	/* Reads the position stored under key, or when key is NULL under the
	 * source's current position key (mm_source_pos_key), into out (appended
	 * to; out and the key must stay unchanged until done runs). For a
	 * source whose key changes while it runs (the Lambda runtime: one key
	 * per Kinesis shard, switched only when nothing of the source is
	 * waiting for a flush), and for one whose position is in parts
	 * (pos_parts below: Kafka reads a partition's part, mm_source_part_key,
	 * when the partition is assigned to it). On a shared store the read
	 * first finishes a flush its last writer left unfinished
	 * (doc/dynamodb.md, "Flush intents"). done(arg, status, detail) runs
	 * later on the loop: status 0, MM_ENOTFOUND or a failure. Returns 0, or
	 * an error and then never calls done. */
	int (*position)(void *ctx, mm_source_t *src, const char *key, mm_buf_t *out,
			void (*done)(void *arg, int status, const char *detail), void *arg);
	/* Records delivered and still waiting for a later flush: on a shared
	 * store, those whose event ids another live writer holds (deferred by
	 * the claim round, doc/dynamodb.md). A flush whose done() reported 0
	 * made everything else durable; these are not yet. */
	size_t (*pending)(void *ctx, mm_source_t *src);
	/* For status, may be NULL: whether this reader owns the stored position
	 * of its part `part` (pos_parts) as far as the store knows, without
	 * asking it: 1 it took the position when it became the part's owner
	 * and no write of it was refused since, 0 one was (another reader took
	 * it: this one is a fenced zombie and stops), -1 unknown (not taken
	 * yet, or a store without a fence: LMDB, memory). No I/O. */
	int (*own)(void *ctx, mm_source_t *src, const char *part);
} mm_source_sink_t;

/* One partition's lag for the lag() call below: partition names it within
 * the source, unit is "records" or "bytes"; both valid during the call. */
typedef void (*mm_source_lag_fn)(void *ud, const char *partition, const char *unit, int64_t lag);

typedef struct mm_source_vtable {
	const char *name;            /* "file", "stdin" */
	const mm_option_t *options;  /* rows for open() and docs */
	/* Creates a source; kv are user options checked against `options`.
	 * The id (for positions) is derived from the options, e.g. "file:/abs/path". */
	int (*open)(uv_loop_t *loop, const mm_kv_t *kv, size_t nkv, const mm_source_sink_t *sink,
		    mm_source_t **out);
	/* Starts reading after pos (NULL: from the beginning). */
	int (*start)(mm_source_t *src, const uint8_t *pos, size_t len);
	void (*pause)(mm_source_t *src);
	void (*resume)(mm_source_t *src);
	/* Everything up to and including pos is durable. */
	void (*ack)(mm_source_t *src, const uint8_t *pos, size_t len);
	/* Stops reading: no deliver() after this returns. Idempotent. */
	void (*stop)(mm_source_t *src);
	/* Closes handles and frees src; done(arg) runs on the loop when it is gone. */
	void (*close)(mm_source_t *src, void (*done)(void *arg), void *arg);
	/* Appends a human-readable description of a record position ("offset 123"). */
	int (*describe)(mm_source_t *src, const mm_record_t *r, mm_buf_t *out);
	/* Optional (may be NULL): appends a JSON object with the source's own
	 * metrics (Kafka: per-partition lag, rate, committed offset) for status. */
	int (*status)(mm_source_t *src, mm_buf_t *out);
	/* Optional (may be NULL): how far the source is behind its input, for
	 * /metrics. Calls fn once per partition whose lag is known (Kafka: per
	 * "topic:partition", in "records"; file: the open file, in "bytes";
	 * Kinesis: per shard, in "ms" behind the latest record) and returns 0.
	 * Never blocks; loop thread. */
	int (*lag)(mm_source_t *src, mm_source_lag_fn fn, void *ud);
	/* Optional (may be NULL): for a source whose position is the union of
	 * parts that different readers own at different times (Kafka: one part
	 * per partition, owned by the group member it is assigned to). The
	 * engine then stores no position under the source's key but each part
	 * under its own, mm_source_part_key(src, part): pos_parts calls fn once
	 * per part of pos that this reader owns now and that moved since its
	 * last ack, with the part's name and its position p[0..n) (valid during
	 * the call), which ack() accepts like a whole one. So a reader never
	 * writes the position of a part another reader owns, and reads a part's
	 * position (sink->position) when it becomes its owner. Returns 0 or
	 * fn's error. Loop thread. */
	int (*pos_parts)(mm_source_t *src, const uint8_t *pos, size_t len,
			 int (*fn)(void *ud, const char *part, const uint8_t *p, size_t n), void *ud);
} mm_source_vtable_t;

/* Common head of every backend's source struct (embed as the first member). */
struct mm_source {
	const mm_source_vtable_t *vt;
	uv_loop_t *loop;
	mm_source_sink_t sink;
	char id[512];          /* stable id of the input (logs, status, sharing) */
	/* The key of its position in the store when the id does not name the
	 * reader: "<id>#<consumer>" for a file read by a named consumer; empty
	 * when the id is the key (Kafka's names its group). */
	char pos_id[768];
	uint64_t max_record;   /* records longer than this are delivered TOOBIG */
	uint64_t records;      /* delivered so far (stats) */
	uint64_t bytes;
};

/* The key of src's position in the store: whose reading it records. */
static inline const char *mm_source_pos_key(const mm_source_t *src)
{
	return src->pos_id[0] ? src->pos_id : src->id;
}

/* The key of one part of src's position (vtable pos_parts): "<pos key>#<part>",
 * written into out (replacing its contents; mm_buf_printf leaves it
 * NUL-terminated). 0 or MM_ENOMEM. */
static inline int mm_source_part_key(const mm_source_t *src, const char *part, mm_buf_t *out)
{
	out->len = 0;
	return mm_buf_printf(out, "%s#%s", mm_source_pos_key(src), part);
}

extern const mm_source_vtable_t *const mm_source_registry[];
const mm_source_vtable_t *mm_source_find(const char *name);

#endif
