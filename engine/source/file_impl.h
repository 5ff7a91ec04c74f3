/*
 * file_impl.h: what the files of the "file" and "stdin" sources share
 * (private to engine/source/file*.c; the sources are reached through
 * mm_source_file_vtable and mm_source_stdin_vtable).
 *
 * The source is one struct (mm_fsrc_t); each file owns one seam of it:
 *   file.c        the vtables: options, open, start (positions), pause,
 *                 resume, stop, close, status; the source's errors
 *   file_lines.c  the read buffer: lines cut into records, oversized lines,
 *                 a batch's delivery with its position
 *   file_read.c   the input: opening, reading (thread pool or stream),
 *                 following a file through rotation and truncation, the
 *                 drain loop between reads, closing the handles
 *
 * Threads: the loop thread (the thread pool only runs uv_fs requests).
 */
#ifndef MM_SOURCE_FILE_IMPL_H
#define MM_SOURCE_FILE_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "position.h"
#include "source.h"

#define MM_FSRC_FILE_POS_LEN MM_FILE_POS_LEN
#define MM_FSRC_STDIN_POS_LEN 8
#define MM_FSRC_BATCH_MAX (1 << 20)
#define MM_FSRC_DRAIN_MAX 1024
#define MM_FSRC_READ_MAX (1ULL << 30)
#define MM_FSRC_MAX_RECORD_DEFAULT (1ULL << 20)

struct mm_fsrc_cfg {
	const char *path;
	const char *consumer;
	int follow;
	int nofollow;
	int64_t batch;
	int64_t drain;
	uint64_t read_size;
};

/* What the source is doing; the flags in struct mm_fsrc modify it. */
enum mm_fsrc_phase {
	MM_FSRC_INIT,  /* opened, not started */
	MM_FSRC_OPEN,  /* uv_fs_open in flight */
	MM_FSRC_READ,  /* uv_fs_read in flight, or the stream is being read */
	MM_FSRC_STAT,  /* uv_fs_stat of the path in flight (following, at EOF) */
	MM_FSRC_DRAIN, /* the buffer holds lines to deliver; runs unless paused */
	MM_FSRC_READY, /* the buffer is drained; the next read waits for resume */
	MM_FSRC_WAIT,  /* following at EOF or without a file: waits for an event */
	MM_FSRC_DONE,  /* stopped, failed or at EOF: nothing more happens */
};

/* What follows a drain that ended with the unterminated last line. */
enum mm_fsrc_then {
	MM_FSRC_THEN_EOF,    /* end of input: sink->eof */
	MM_FSRC_THEN_REOPEN, /* rotated: open the path anew */
	MM_FSRC_THEN_REWIND, /* truncated: read the same file from 0 */
};

enum mm_fsrc_input {
	MM_FSRC_IN_FILE,   /* uv_fs_read on the thread pool */
	MM_FSRC_IN_STREAM, /* a uv_pipe_t or uv_tty_t on fd 0 */
};

typedef struct mm_fsrc {
	mm_source_t base; /* first: what the engine sees */

	/* Configuration, fixed once started. */
	char *path;       /* absolute path, owned; NULL for stdin */
	const char *name; /* the last component of path, for event filtering */
	char *dir;        /* the directory watched when following, owned */
	int follow;
	int nofollow; /* a script named the path: no symlink as its last component */
	int is_stdin;
	size_t batch_max;
	size_t drain_max; /* batches delivered per turn of the loop */
	size_t read_size;
	size_t keep_max; /* longer partial lines are skipped (see above) */

	/* Input. */
	int input;           /* enum mm_fsrc_input */
	uv_file fd;          /* -1 when closed; 0 for stdin, never closed */
	uint64_t dev, ino;   /* identity of the open file */
	uint64_t read_off;   /* input offset of the next byte to read */
	int want;            /* start() gave a position for the first open */
	uint64_t want_dev, want_ino, want_off;

	/* buf[0, len) holds the input from offset buf_off; lines before head
	 * are consumed; [head, scanned) is known to hold no '\n'. */
	uint8_t *buf;
	size_t cap, len, head, scanned;
	uint64_t buf_off;

	/* The oversized line being skipped: its offset, length so far, whether
	 * its last byte so far is '\r', and its first bytes. */
	int skipping;
	int skip_cr;
	uint64_t skip_off, skip_len;
	uint8_t prefix[MM_REC_PREFIX];

	mm_record_t *recs; /* batch_max entries */
	uint8_t end_pos[MM_FSRC_FILE_POS_LEN];

	int phase;   /* enum mm_fsrc_phase */
	int then;    /* enum mm_fsrc_then, when final is set */
	int final;   /* deliver the unterminated last line, then do `then` */
	int paused;
	int dirty;   /* an event arrived since the last read or open was issued */
	int rotated; /* the path names another file: reading the old one's rest */
	int busy;    /* req is in flight */
	int reading; /* uv_read_start is active on the stream */
	int closing;
	int stream_init;
	unsigned closes; /* handle close callbacks still to come */
	void (*done)(void *arg);
	void *done_arg;

	uv_fs_t req;
	uv_idle_t idle;        /* continues on the next loop iteration (resume, drain) */
	uv_fs_event_t watch;   /* initialised when following */
	union {
		uv_stream_t stream;
		uv_pipe_t pipe;
		uv_tty_t tty;
	} in;
} mm_fsrc_t;

/* file.c */

/* The MM_E* code of a libuv error. */
int mm_fsrc_err_from_uv(int uverr);
/* What the source reads, for messages: its path, or "stdin". */
const char *mm_fsrc_what(const mm_fsrc_t *fs);
/* Stops every activity; the handles stay open for close(). */
void mm_fsrc_halt(mm_fsrc_t *fs);
/* Halts the source and reports a fatal error; detail is printf-style. */
void mm_fsrc_fail(mm_fsrc_t *fs, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* mm_fsrc_fail for a libuv error of operation op. */
void mm_fsrc_fail_uv(mm_fsrc_t *fs, const char *op, int uverr);

/* file_lines.c */

/* Empties the buffer and sets the next input offset. */
void mm_fsrc_reset(mm_fsrc_t *fs, uint64_t off);
/* Makes room for read_size more bytes; 0 or MM_ENOMEM. */
int mm_fsrc_reserve(mm_fsrc_t *fs);
/* Fills recs with the next complete lines, at most batch_max, and consumes
 * them; with fs->final the unterminated rest counts as a line. Returns the
 * number of records. */
size_t mm_fsrc_collect(mm_fsrc_t *fs);
/* Delivers recs[0, n) with the position after them. */
void mm_fsrc_deliver(mm_fsrc_t *fs, size_t n);
/* Moves the partial last line to the front of the buffer before the next
 * read; past keep_max bytes it becomes an oversized line to skip. */
void mm_fsrc_compact(mm_fsrc_t *fs);

/* file_read.c */

/* Delivers the buffered lines until none is left or the source is paused
 * or stopped, then moves on (the next read, or what a final drain is for).
 * After drain_max batches it lets the loop turn and goes on from the idle
 * handle. */
void mm_fsrc_drain(mm_fsrc_t *fs);
/* Issues the next read, unless paused (resume will). */
void mm_fsrc_read(mm_fsrc_t *fs);
/* Issues the open of the path. Returns 0 or a libuv error. */
int mm_fsrc_open_path(mm_fsrc_t *fs);
/* Closes the file and the handles; no request is in flight. */
void mm_fsrc_close_now(mm_fsrc_t *fs);
/* The watch's callback (following): an event for the file's name. */
void mm_fsrc_on_event(uv_fs_event_t *h, const char *filename, int events, int status);
/* The idle handle's callback: continues what a pause held back. */
void mm_fsrc_on_idle(uv_idle_t *h);

#endif
