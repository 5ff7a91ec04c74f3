/*
 * deadletter.h: where rejected records go. Every backend (file.c now; a
 * Kafka topic later) implements one const mm_dead_letter_vtable_t listed in
 * registry.c. A pipeline owns one dead-letter destination.
 *
 * Delivery: write() may buffer; sync() makes everything written so far
 * durable and is called by the engine before each flush commits, so a
 * rejected record is recorded before the source position that skips it.
 * Failures are returned (and counted by the pipeline), never fatal.
 *
 * Threads: loop thread only.
 */
#ifndef MM_DEADLETTER_H
#define MM_DEADLETTER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../lib/buf.h"
#include "../lib/options.h"

typedef struct mm_dead_letter mm_dead_letter_t;

/* One rejected record; every pointer is borrowed for the duration of write(). */
typedef struct mm_dead_letter_entry {
	const char *pipeline;
	const char *reason;     /* "json", "too_big", ... */
	const char *code;       /* "EJSON", ... */
	const char *error;      /* human-readable detail */
	const char *source;     /* source id, or NULL */
	uint64_t offset;        /* position of the record in its source */
	const char *record;     /* raw bytes (a prefix when truncated) */
	size_t len;
	uint64_t orig_len;      /* true size */
	int truncated;
	int64_t time_ms;        /* when it was rejected */
	/* The record's identity in its source (mm_record_t.id with MM_REC_ID,
	 * Kafka: "topic:partition:offset"), or NULL. */
	const char *record_id;
	size_t record_id_len;
} mm_dead_letter_entry_t;

typedef struct mm_dead_letter_vtable {
	const char *name;
	const mm_option_t *options;
	int (*open)(uv_loop_t *loop, const mm_kv_t *kv, size_t nkv, mm_dead_letter_t **out);
	int (*write)(mm_dead_letter_t *d, const mm_dead_letter_entry_t *e);
	int (*sync)(mm_dead_letter_t *d);
	void (*close)(mm_dead_letter_t *d);
} mm_dead_letter_vtable_t;

struct mm_dead_letter {
	const mm_dead_letter_vtable_t *vt;
	char target[512];   /* for messages: the path or topic */
};

extern const mm_dead_letter_vtable_t *const mm_dead_letter_registry[];
const mm_dead_letter_vtable_t *mm_dead_letter_find(const char *name);

/* Appends the JSON Lines form of e (without the newline) to out: the file
 * backend's line and the Kafka backend's fallback value. */
int mm_dead_letter_json(const mm_dead_letter_entry_t *e, mm_buf_t *out);

/* The file backend's check of an existing file (file.c, exposed for tests
 * and fuzzing). mm_dead_letter_file_recognise: 1 if head[0..n), the first
 * bytes of a file (whole: all of it), is the beginning of a dead-letter
 * file the backend wrote, else 0. mm_dead_letter_file_adopt: for the file
 * open on fd (path names it in messages), MM_EINVAL if it is not a regular
 * file or not recognised (the file is left untouched), else cuts a torn
 * last line and returns 0 or MM_EIO/MM_ENOSPC. Any thread. */
int mm_dead_letter_file_recognise(const char *head, size_t n, int whole);
int mm_dead_letter_file_adopt(int fd, const char *path);

#endif
