/*
 * progress.h: what a worker tells its supervisor without a system call.
 *
 * The supervisor (supervisor.c) maps a small file shared with the worker it
 * runs. The worker's loop thread stamps a heartbeat a few times a second and
 * records which record it is processing (source id and offset) around every
 * record; the supervisor reads the page. A worker stuck in a user function
 * (JIT-compiled loops cannot be interrupted from inside) stops stamping, and
 * the page then names the record to blame. A record that stalls or crashes
 * the worker twice is put on the poison list (a JSON Lines file the worker
 * reads at start) and rejected as a dead letter on the next run.
 *
 * A worker whose failure a restart cannot cure (a source that fails before
 * any record arrived: a missing input file, a refused path) sets `fatal`
 * before it exits, and the supervisor ends the run with the worker's status
 * instead of restarting it forever.
 *
 * Layout: fixed, versioned; single writer (the worker), single reader.
 * Plain stores are enough: the reader tolerates a torn source id, which at
 * worst blames the right offset of a garbled id and is never acted on alone.
 *
 * Offsets are per partition in a Kafka source, so for records that carry
 * an identity ("topic:partition:offset") the page's source names the
 * partition too: "<source id>#<topic:partition>". A poison entry then names
 * exactly one record, not the same offset in every partition.
 */
#ifndef MM_PROGRESS_H
#define MM_PROGRESS_H

#include <stdint.h>

#include "../source/source.h"

#define MM_PROGRESS_MAGIC 0x4d4d5047u /* "MMPG" */

typedef struct mm_progress {
	uint32_t magic;
	uint32_t version;                /* 1 */
	volatile int64_t heartbeat_ms;   /* last loop-thread stamp, 0 before the first */
	volatile int32_t in_record;      /* 1 while a record is being processed */
	volatile int32_t fatal;          /* 1: a restart would fail the same way */
	volatile uint64_t offset;        /* the record's offset in its source */
	volatile uint64_t records;       /* records started so far */
	char source[256];                /* id of the source of the current batch */
	volatile int64_t alive_ms;       /* last sign of life while starting (loading,
	                                  * waiting for a probe), before heartbeats */
	volatile int64_t stop_ms;        /* when a stop signal reached the worker, 0
	                                  * before: the supervisor does not forward
	                                  * its own copy of a process-group signal */
} mm_progress_t;

/* The worker's page, or NULL when not supervised. Loop thread only. */
extern mm_progress_t *mm_progress;

/* Maps the page named by $MURMUR_PROGRESS (set by the supervisor). 0 when
 * unsupervised or mapped; MM_EIO if the file cannot be mapped. */
int mm_progress_attach(void);

/* Marks the start of a batch from source_id. */
void mm_progress_batch(const char *source_id);

/* Names the partition of a record with an identity on the page (see above). */
void mm_progress_partition(const char *source_id, const mm_record_t *r);

/* Marks record r of source_id (the current batch's) as being processed. */
static inline void mm_progress_record(const char *source_id, const mm_record_t *r)
{
	if (mm_progress) {
		if (r->flags & MM_REC_ID)
			mm_progress_partition(source_id, r);
		mm_progress->offset = r->offset;
		mm_progress->records++;
		mm_progress->in_record = 1;
	}
}

/* Names record r (marked by mm_progress_record already) on the page again,
 * without counting it: the record loop reads a record ahead of the one it
 * processes (pipeline.c), so the page names each record while it is read
 * and while it is processed. */
static inline void mm_progress_resume(const char *source_id, const mm_record_t *r)
{
	if (mm_progress) {
		if (r->flags & MM_REC_ID)
			mm_progress_partition(source_id, r);
		mm_progress->offset = r->offset;
	}
}

/* Tells the supervisor that a stop signal reached the worker at now_ms. */
static inline void mm_progress_stopping(int64_t now_ms)
{
	if (mm_progress)
		mm_progress->stop_ms = now_ms;
}

/* Tells the supervisor not to restart this worker when it exits. */
static inline void mm_progress_fatal(void)
{
	if (mm_progress)
		mm_progress->fatal = 1;
}

static inline void mm_progress_idle(void)
{
	if (mm_progress)
		mm_progress->in_record = 0;
}

/* Poison list: records that stalled or crashed a worker twice. */
int mm_poison_load(const char *path);
/* 1 if record r of source_id is on the poison list. */
int mm_poison_has(const char *source_id, const mm_record_t *r);
/* Number of entries loaded. */
int mm_poison_count(void);
/* Forgets every entry (tests and fuzzing). */
void mm_poison_clear(void);

#endif
