/*
 * file.c: the "file" and "stdin" sources. Both read newline-delimited
 * records (JSON Lines): "file" from a regular file, optionally followed like
 * `tail -F`; "stdin" from file descriptor 0, whatever it is connected to.
 *
 * Reading. Bytes are read into one buffer, read_size bytes at a time, without
 * blocking the loop: regular files with uv_fs_read on the thread pool (at an
 * explicit offset), pipes and terminals as libuv streams. A stream can be
 * closed while nothing is written to it, whereas a thread-pool read() on an
 * idle pipe would hold close() hostage until the writer produced something.
 * After each read the complete lines are delivered in batches of at most
 * `batch` records that point into the buffer; the partial last line is moved
 * to the front and completed by the next read.
 *
 * Lines. A line ends at '\n'; one trailing '\r' is removed. Empty lines are
 * not delivered but still advance the position. At the end of input (not
 * following), and when a followed file is rotated or truncated, a last line
 * without '\n' is delivered as it is.
 *
 * Oversized lines. A line longer than src->max_record is delivered with
 * MM_REC_TOOBIG, its first MM_REC_PREFIX bytes and its true length. Such a
 * line is never buffered whole: once the partial line exceeds
 * max(max_record, MM_REC_PREFIX) + 1 bytes (the +1 leaves room for a '\r'
 * that would not count), its prefix is copied aside and the rest is counted
 * and dropped until the '\n'. The buffer therefore never holds more than
 * max(max_record, MM_REC_PREFIX) + 1 + read_size bytes.
 *
 * Positions (batch->end_pos, start()). The position after the last line of a
 * batch, little-endian:
 *   file:  u64 st_dev, u64 st_ino, u64 byte offset   (24 bytes)
 *   stdin: u64 byte offset                           (8 bytes)
 * start() on a file resumes at the offset only when the path still names the
 * same device and inode and the file is at least that long; otherwise (the
 * file was rotated or truncated while we were down) it reads the current file
 * from offset 0, so the unread tail of a rotated file is lost. start() on
 * stdin ignores the position: a restarted process reads new input.
 *
 * Following (follow=true). At end of file the source waits for inotify events
 * (uv_fs_event) on the file's directory that name the file; it never polls.
 * On an event it reads the file to its end again, then stats the path. When
 * the path names another inode (rotation by rename, or delete and create),
 * it reads the old descriptor to its end once more (the writer may have added
 * lines between that end of file and the rename), delivers the old file's
 * unterminated last line, opens the path anew and reads it from offset 0.
 * When the path names the same inode but the size is below the read offset
 * (copytruncate), it delivers the unterminated last line and rereads from
 * offset 0. A path that does not exist yet is waited for. Limitations, shared
 * with tail -F: data appended to the old file after that last read is not
 * read; a truncated file that regrows past the read offset before the source
 * looks is not seen as truncated; when path is a symlink into another
 * directory, writes to the target produce no event in the watched directory,
 * so they are noticed only with the next event for the name.
 *
 * Flow control. pause() stops further reads (a read already in flight
 * completes and its data is held) and deliveries, including from inside
 * deliver(): the delivery loop checks the flag after every batch. resume()
 * continues from the loop on its next iteration (an idle handle), never from
 * inside the caller, so a resume() issued within deliver() cannot re-enter it.
 *
 * Shutdown. stop() halts deliveries at once. close() waits for the fs request
 * in flight (each source has at most one), closes the file and the handles,
 * and frees the source in the last close callback before calling done(arg).
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../lib/error.h"
#include "position.h"
#include "source.h"

#define MM_FSRC_FILE_POS_LEN MM_FILE_POS_LEN
#define MM_FSRC_STDIN_POS_LEN 8
#define MM_FSRC_BATCH_MAX (1 << 20)
#define MM_FSRC_READ_MAX (1ULL << 30)
#define MM_FSRC_MAX_RECORD_DEFAULT (1ULL << 20)

extern const mm_source_vtable_t mm_source_file_vtable;
extern const mm_source_vtable_t mm_source_stdin_vtable;

struct mm_fsrc_cfg {
	const char *path;
	const char *consumer;
	int follow;
	int nofollow;
	int64_t batch;
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
	uv_idle_t idle;        /* runs resume() on the next loop iteration */
	uv_fs_event_t watch;   /* initialised when following */
	union {
		uv_stream_t stream;
		uv_pipe_t pipe;
		uv_tty_t tty;
	} in;
} mm_fsrc_t;

static void mm_fsrc_read(mm_fsrc_t *fs);
static void mm_fsrc_reopen(mm_fsrc_t *fs);

static int mm_fsrc_err_from_uv(int uverr)
{
	switch (uverr) {
	case UV_ENOENT:
	case UV_ENOTDIR:
		return MM_ENOTFOUND;
	case UV_ENOMEM:
		return MM_ENOMEM;
	case UV_ENOSPC:
		return MM_ENOSPC;
	case UV_EISDIR:
	case UV_EINVAL:
		return MM_EINVAL;
	default:
		return MM_EIO;
	}
}

static const char *mm_fsrc_what(const mm_fsrc_t *fs)
{
	return fs->is_stdin ? "stdin" : fs->path;
}

/* Stops every activity; the handles stay open for close(). */
static void mm_fsrc_halt(mm_fsrc_t *fs)
{
	fs->phase = MM_FSRC_DONE;
	if (fs->follow)
		uv_fs_event_stop(&fs->watch);
	if (fs->reading) {
		uv_read_stop(&fs->in.stream);
		fs->reading = 0;
	}
	uv_idle_stop(&fs->idle);
}

/* Halts the source and reports a fatal error; detail is printf-style. */
static void mm_fsrc_fail(mm_fsrc_t *fs, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void mm_fsrc_fail(mm_fsrc_t *fs, int err, const char *fmt, ...)
{
	char what[256], detail[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(detail, sizeof(detail), "%s source %s: %s", fs->base.vt->name, mm_fsrc_what(fs),
		 what);
	mm_fsrc_halt(fs);
	mm_diag_set(err, "%s", detail);
	fs->base.sink.error(fs->base.sink.ctx, &fs->base, err, detail);
}

static void mm_fsrc_fail_uv(mm_fsrc_t *fs, const char *op, int uverr)
{
	mm_fsrc_fail(fs, mm_fsrc_err_from_uv(uverr), "%s: %s", op, uv_strerror(uverr));
}

static int64_t mm_fsrc_now_ms(void)
{
	uv_timeval64_t tv;

	if (uv_gettimeofday(&tv) != 0)
		return 0;
	return tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Empties the buffer and sets the next input offset. */
static void mm_fsrc_reset(mm_fsrc_t *fs, uint64_t off)
{
	fs->len = fs->head = fs->scanned = 0;
	fs->skipping = 0;
	fs->buf_off = fs->read_off = off;
}

/* Makes room for read_size more bytes. The capacity doubles (so a long
 * partial line is not copied once per read) but never beyond the most a
 * partial line plus one read can need. */
static int mm_fsrc_reserve(mm_fsrc_t *fs)
{
	size_t need = fs->len + fs->read_size;
	size_t most = fs->keep_max + fs->read_size;
	size_t cap;
	uint8_t *p;

	if (need <= fs->cap)
		return 0;
	cap = fs->cap * 2 > need ? fs->cap * 2 : need;
	if (cap > most)
		cap = most > need ? most : need;
	p = realloc(fs->buf, cap);
	if (p == NULL)
		return MM_ENOMEM;
	fs->buf = p;
	fs->cap = cap;
	return 0;
}

/* Counts n bytes of the oversized line being skipped. */
static void mm_fsrc_skip(mm_fsrc_t *fs, const uint8_t *p, size_t n)
{
	fs->skip_len += n;
	if (n)
		fs->skip_cr = p[n - 1] == '\r';
}

static void mm_fsrc_put(mm_fsrc_t *fs, size_t i, const uint8_t *p, uint64_t len, uint64_t off)
{
	mm_record_t *r = &fs->recs[i];

	r->p = (const char *)p;
	r->flags = 0;
	r->orig_len = len;
	r->offset = off;
	r->ts_ms = 0;
	if (len > fs->base.max_record) {
		r->flags = MM_REC_TOOBIG;
		len = len < MM_REC_PREFIX ? len : MM_REC_PREFIX;
	}
	r->len = (uint32_t)len;
	fs->base.bytes += r->orig_len;
}

/* Fills recs with the next complete lines, at most batch_max, and consumes
 * them (and any empty lines among them). With fs->final set the unterminated
 * rest of the input counts as a line. Returns the number of records. */
static size_t mm_fsrc_collect(mm_fsrc_t *fs)
{
	size_t n = 0;

	if (fs->skipping) {
		const uint8_t *p = fs->buf + fs->head;
		size_t avail = fs->len - fs->head;
		const uint8_t *nl = memchr(p, '\n', avail);
		size_t k;

		if (nl == NULL && !fs->final)
			return 0;
		k = nl ? (size_t)(nl - p) : avail;
		mm_fsrc_skip(fs, p, k);
		fs->head += nl ? k + 1 : k;
		fs->skipping = 0;
		/* Longer than keep_max, so mm_fsrc_put marks it TOOBIG and takes
		 * MM_REC_PREFIX bytes: exactly what the prefix holds. */
		mm_fsrc_put(fs, n++, fs->prefix, fs->skip_len - (uint64_t)fs->skip_cr, fs->skip_off);
	}
	while (n < fs->batch_max && fs->head < fs->len) {
		const uint8_t *p = fs->buf + fs->head;
		size_t avail = fs->len - fs->head;
		size_t from = fs->scanned > fs->head ? fs->scanned - fs->head : 0;
		const uint8_t *nl = memchr(p + from, '\n', avail - from);
		size_t k, used;

		if (nl == NULL) {
			fs->scanned = fs->len;
			if (!fs->final)
				break;
			k = used = avail;
		} else {
			k = (size_t)(nl - p);
			used = k + 1;
		}
		if (k > 0 && p[k - 1] == '\r')
			k--;
		if (k > 0)
			mm_fsrc_put(fs, n++, p, k, fs->buf_off + fs->head);
		fs->head += used;
	}
	return n;
}

static void mm_fsrc_deliver(mm_fsrc_t *fs, size_t n)
{
	uint64_t end = fs->buf_off + fs->head;
	mm_batch_t b;

	b.src = &fs->base;
	b.recs = fs->recs;
	b.n = n;
	b.end_pos = fs->end_pos;
	if (fs->is_stdin) {
		mm_set_u64le(fs->end_pos, end);
		b.end_pos_len = MM_FSRC_STDIN_POS_LEN;
	} else {
		mm_set_u64le(fs->end_pos, fs->dev);
		mm_set_u64le(fs->end_pos + 8, fs->ino);
		mm_set_u64le(fs->end_pos + 16, end);
		b.end_pos_len = MM_FSRC_FILE_POS_LEN;
	}
	b.now_ms = mm_fsrc_now_ms();
	fs->base.records += n;
	fs->base.sink.deliver(fs->base.sink.ctx, &b);
}

/* Moves the partial last line to the front of the buffer before the next
 * read; past keep_max bytes it becomes an oversized line to skip. */
static void mm_fsrc_compact(mm_fsrc_t *fs)
{
	size_t rest = fs->len - fs->head;

	if (fs->skipping) {
		mm_fsrc_skip(fs, fs->buf + fs->head, rest);
		fs->buf_off += fs->len;
		fs->len = fs->head = fs->scanned = 0;
		return;
	}
	if (fs->head > 0) {
		memmove(fs->buf, fs->buf + fs->head, rest);
		fs->buf_off += fs->head;
		fs->scanned = fs->scanned > fs->head ? fs->scanned - fs->head : 0;
		fs->len = rest;
		fs->head = 0;
	}
	if (fs->len > fs->keep_max) {
		fs->skipping = 1;
		fs->skip_off = fs->buf_off;
		fs->skip_len = 0;
		memcpy(fs->prefix, fs->buf, MM_REC_PREFIX);
		mm_fsrc_skip(fs, fs->buf, fs->len);
		fs->buf_off += fs->len;
		fs->len = fs->scanned = 0;
	}
}

/* Delivers the buffered lines batch by batch until the buffer holds none or
 * the source is paused or stopped (possibly by deliver() itself), then moves
 * on: the next read, or what a final drain was for. */
static void mm_fsrc_drain(mm_fsrc_t *fs)
{
	uv_fs_t req;
	size_t n;

	while (!fs->paused && fs->phase == MM_FSRC_DRAIN) {
		n = mm_fsrc_collect(fs);
		if (n == 0)
			break;
		mm_fsrc_deliver(fs, n);
	}
	if (fs->paused || fs->phase != MM_FSRC_DRAIN)
		return;
	if (!fs->final) {
		mm_fsrc_compact(fs);
		mm_fsrc_read(fs);
		return;
	}
	fs->final = 0;
	switch (fs->then) {
	case MM_FSRC_THEN_EOF:
		mm_fsrc_halt(fs);
		fs->base.sink.eof(fs->base.sink.ctx, &fs->base);
		break;
	case MM_FSRC_THEN_REOPEN:
		/* Closing a regular file opened for reading does not block. */
		uv_fs_close(fs->base.loop, &req, fs->fd, NULL);
		uv_fs_req_cleanup(&req);
		fs->fd = -1;
		mm_fsrc_reopen(fs);
		break;
	case MM_FSRC_THEN_REWIND:
		mm_fsrc_reset(fs, 0);
		mm_fsrc_read(fs);
		break;
	}
}

/* Delivers the unterminated last line (if any) of what was read, then does
 * `then`. */
static void mm_fsrc_finish(mm_fsrc_t *fs, int then)
{
	fs->final = 1;
	fs->then = then;
	fs->phase = MM_FSRC_DRAIN;
	mm_fsrc_drain(fs);
}

static void mm_fsrc_got(mm_fsrc_t *fs, size_t n)
{
	fs->len += n;
	fs->read_off += n;
	fs->phase = MM_FSRC_DRAIN;
	mm_fsrc_drain(fs);
}

/* Continues whatever a pause or an idle wait held back. */
static void mm_fsrc_continue(mm_fsrc_t *fs)
{
	if (fs->paused)
		return;
	switch (fs->phase) {
	case MM_FSRC_DRAIN:
		mm_fsrc_drain(fs);
		break;
	case MM_FSRC_READY:
		mm_fsrc_read(fs);
		break;
	case MM_FSRC_WAIT:
		if (!fs->dirty)
			break;
		if (fs->fd < 0)
			mm_fsrc_reopen(fs);
		else
			mm_fsrc_read(fs);
		break;
	default:
		break;
	}
}

/* Following: nothing more to read for now. */
static void mm_fsrc_wait(mm_fsrc_t *fs)
{
	fs->phase = MM_FSRC_WAIT;
	mm_fsrc_continue(fs);
}

static void mm_fsrc_on_closed(uv_handle_t *h)
{
	mm_fsrc_t *fs = h->data;
	void (*done)(void *arg) = fs->done;
	void *arg = fs->done_arg;

	if (--fs->closes > 0)
		return;
	free(fs->recs);
	free(fs->buf);
	free(fs->path);
	free(fs->dir);
	free(fs);
	if (done)
		done(arg);
}

/* Closes the file and the handles; no request is in flight. */
static void mm_fsrc_close_now(mm_fsrc_t *fs)
{
	uv_fs_t req;

	if (fs->fd >= 0 && !fs->is_stdin) {
		uv_fs_close(fs->base.loop, &req, fs->fd, NULL);
		uv_fs_req_cleanup(&req);
		fs->fd = -1;
	}
	fs->closes = 1;
	uv_close((uv_handle_t *)&fs->idle, mm_fsrc_on_closed);
	if (fs->follow) {
		fs->closes++;
		uv_close((uv_handle_t *)&fs->watch, mm_fsrc_on_closed);
	}
	if (fs->stream_init) {
		/* libuv never closes descriptors 0-2, so fd 0 stays open. */
		fs->closes++;
		uv_close((uv_handle_t *)&fs->in.stream, mm_fsrc_on_closed);
	}
}

/* Every fs request callback starts here, after uv_fs_req_cleanup: it returns
 * 1 when the source no longer wants the result, finishing a close() that
 * waited for the request. */
static int mm_fsrc_req_done(mm_fsrc_t *fs)
{
	fs->busy = 0;
	if (fs->closing) {
		mm_fsrc_close_now(fs);
		return 1;
	}
	return fs->phase == MM_FSRC_DONE;
}

/* The path names another file. The end of file seen before the stat may
 * predate the writer's last lines and the rename, so read the old file to its
 * end once more before switching. */
static void mm_fsrc_rotated(mm_fsrc_t *fs)
{
	fs->rotated = 1;
	mm_fsrc_read(fs);
}

static void mm_fsrc_on_stat(uv_fs_t *req)
{
	mm_fsrc_t *fs = req->data;
	int rc = (int)req->result;
	uv_stat_t st = req->statbuf;

	uv_fs_req_cleanup(req);
	if (mm_fsrc_req_done(fs))
		return;
	if (rc == UV_ENOENT || rc == UV_ENOTDIR)
		mm_fsrc_wait(fs); /* renamed away; the new file is not there yet */
	else if (rc < 0)
		mm_fsrc_fail_uv(fs, "stat", rc);
	else if (st.st_dev != fs->dev || st.st_ino != fs->ino)
		mm_fsrc_rotated(fs);
	else if (st.st_size < fs->read_off)
		mm_fsrc_finish(fs, MM_FSRC_THEN_REWIND);
	else
		mm_fsrc_wait(fs);
}

/* The file is read to its end: see whether the path still names it. Once it
 * names another file, this end is the old file's last. */
static void mm_fsrc_at_eof(mm_fsrc_t *fs)
{
	int rc;

	if (!fs->follow) {
		mm_fsrc_finish(fs, MM_FSRC_THEN_EOF);
		return;
	}
	if (fs->rotated) {
		fs->rotated = 0;
		mm_fsrc_finish(fs, MM_FSRC_THEN_REOPEN);
		return;
	}
	fs->req.data = fs;
	rc = uv_fs_stat(fs->base.loop, &fs->req, fs->path, mm_fsrc_on_stat);
	if (rc < 0) {
		mm_fsrc_fail_uv(fs, "stat", rc);
		return;
	}
	fs->busy = 1;
	fs->phase = MM_FSRC_STAT;
}

static void mm_fsrc_on_read(uv_fs_t *req)
{
	mm_fsrc_t *fs = req->data;
	ssize_t n = req->result;

	uv_fs_req_cleanup(req);
	if (mm_fsrc_req_done(fs))
		return;
	if (n < 0)
		mm_fsrc_fail_uv(fs, "read", (int)n);
	else if (n == 0)
		mm_fsrc_at_eof(fs);
	else
		mm_fsrc_got(fs, (size_t)n);
}

static void mm_fsrc_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	mm_fsrc_t *fs = h->data;

	/* mm_fsrc_read reserved read_size bytes before starting the stream. */
	*b = uv_buf_init((char *)fs->buf + fs->len, (unsigned)fs->read_size);
}

static void mm_fsrc_on_stream_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	mm_fsrc_t *fs = s->data;

	if (n == 0)
		return;
	if (n == UV_EOF) {
		uv_read_stop(s);
		fs->reading = 0;
		mm_fsrc_finish(fs, MM_FSRC_THEN_EOF);
	} else if (n < 0) {
		mm_fsrc_fail_uv(fs, "read", (int)n);
	} else {
		mm_fsrc_got(fs, (size_t)n);
	}
}

/* Issues the next read, unless paused (resume will). */
static void mm_fsrc_read(mm_fsrc_t *fs)
{
	uv_buf_t b;
	int rc;

	if (fs->paused) {
		fs->phase = MM_FSRC_READY;
		return;
	}
	if (mm_fsrc_reserve(fs) != 0) {
		mm_fsrc_fail(fs, MM_ENOMEM, "cannot grow the read buffer to %zu bytes",
			     fs->len + fs->read_size);
		return;
	}
	fs->dirty = 0;
	fs->phase = MM_FSRC_READ;
	if (fs->input == MM_FSRC_IN_STREAM) {
		if (fs->reading)
			return;
		rc = uv_read_start(&fs->in.stream, mm_fsrc_on_alloc, mm_fsrc_on_stream_read);
		if (rc < 0) {
			mm_fsrc_fail_uv(fs, "read", rc);
			return;
		}
		fs->reading = 1;
		return;
	}
	b = uv_buf_init((char *)fs->buf + fs->len, (unsigned)fs->read_size);
	fs->req.data = fs;
	/* stdin may be a character device: read where it stands. */
	rc = uv_fs_read(fs->base.loop, &fs->req, fs->fd, &b, 1,
			fs->is_stdin ? -1 : (int64_t)fs->read_off, mm_fsrc_on_read);
	if (rc < 0) {
		mm_fsrc_fail_uv(fs, "read", rc);
		return;
	}
	fs->busy = 1;
}

static void mm_fsrc_on_open(uv_fs_t *req)
{
	mm_fsrc_t *fs = req->data;
	int rc = (int)req->result;
	uint64_t off = 0;
	uv_fs_t sreq;

	uv_fs_req_cleanup(req);
	if (rc >= 0)
		fs->fd = rc; /* from here on close() closes it */
	if (mm_fsrc_req_done(fs))
		return;
	if (rc == UV_ENOENT && fs->follow) {
		mm_fsrc_wait(fs);
		return;
	}
	if (rc == UV_ELOOP && fs->nofollow) {
		mm_fsrc_fail(fs, MM_EINVAL, "open: is a symbolic link (a path a script names must "
			     "be a regular file, not a link)");
		return;
	}
	if (rc < 0) {
		mm_fsrc_fail_uv(fs, "open", rc);
		return;
	}
	/* fstat of an open descriptor does not block: do it here. */
	rc = uv_fs_fstat(fs->base.loop, &sreq, fs->fd, NULL);
	if (rc < 0) {
		uv_fs_req_cleanup(&sreq);
		mm_fsrc_fail_uv(fs, "fstat", rc);
		return;
	}
	uv_fs_req_cleanup(&sreq);
	if (S_ISDIR(sreq.statbuf.st_mode)) {
		mm_fsrc_fail(fs, MM_EINVAL, "is a directory");
		return;
	}
	if (!S_ISREG(sreq.statbuf.st_mode)) {
		mm_fsrc_fail(fs, MM_EINVAL,
			     "not a regular file (read pipes and devices with the stdin source)");
		return;
	}
	fs->dev = sreq.statbuf.st_dev;
	fs->ino = sreq.statbuf.st_ino;
	if (fs->want && fs->want_dev == fs->dev && fs->want_ino == fs->ino &&
	    fs->want_off <= sreq.statbuf.st_size)
		off = fs->want_off;
	fs->want = 0;
	mm_fsrc_reset(fs, off);
	mm_fsrc_read(fs);
}

/* Issues the open of the path. Returns 0 or a libuv error (the request
 * could not be queued). */
static int mm_fsrc_open_path(mm_fsrc_t *fs)
{
	int rc;

	fs->dirty = 0;
	fs->req.data = fs;
	/* O_NONBLOCK keeps the open from hanging on a FIFO, which the type
	 * check then rejects; it does not affect reads of regular files. */
	rc = uv_fs_open(fs->base.loop, &fs->req, fs->path,
			O_RDONLY | O_CLOEXEC | O_NONBLOCK | (fs->nofollow ? O_NOFOLLOW : 0), 0,
			mm_fsrc_on_open);
	if (rc < 0)
		return rc;
	fs->busy = 1;
	fs->phase = MM_FSRC_OPEN;
	return 0;
}

static void mm_fsrc_reopen(mm_fsrc_t *fs)
{
	int rc = mm_fsrc_open_path(fs);

	if (rc < 0)
		mm_fsrc_fail_uv(fs, "open", rc);
}

static void mm_fsrc_on_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
	mm_fsrc_t *fs = h->data;

	if (fs->phase == MM_FSRC_DONE)
		return;
	if (status < 0) {
		mm_fsrc_fail_uv(fs, "watch", status);
		return;
	}
	if (filename != NULL && strcmp(filename, fs->name) != 0)
		return;
	fs->dirty = 1;
	if (fs->phase == MM_FSRC_WAIT)
		mm_fsrc_continue(fs);
}

static void mm_fsrc_on_idle(uv_idle_t *h)
{
	mm_fsrc_t *fs = h->data;

	uv_idle_stop(h);
	mm_fsrc_continue(fs);
}

/* ---- vtable ---- */

/*
 * Keys the position by the consumer reading the file: "<id>#<consumer>".
 * A consumer name holds no '#' (the key stays unambiguous: the consumer is
 * what follows the last '#') and no control character; none or an empty
 * one leaves the id as the key.
 */
static int mm_fsrc_consumer(mm_fsrc_t *fs, const char *consumer)
{
	size_t i, n = consumer ? strlen(consumer) : 0;

	if (n == 0)
		return 0;
	for (i = 0; i < n; i++)
		if (consumer[i] == '#' || (unsigned char)consumer[i] < 0x20)
			return mm_diag_set(MM_EINVAL, "file: consumer '%s' may not contain '#' or "
						      "control characters", consumer);
	if (n > 200)
		return mm_diag_set(MM_EINVAL, "file: consumer names are at most 200 bytes");
	snprintf(fs->base.pos_id, sizeof(fs->base.pos_id), "%s#%s", fs->base.id, consumer);
	return 0;
}

static int mm_fsrc_create(uv_loop_t *loop, const mm_source_vtable_t *vt, const mm_kv_t *kv,
			  size_t nkv, const mm_source_sink_t *sink, mm_source_t **out)
{
	struct mm_fsrc_cfg cfg;
	mm_fsrc_t *fs = NULL;
	char cwd[4096];
	size_t cwd_len = sizeof(cwd);
	char *slash;
	size_t n;
	int rc;

	memset(&cfg, 0, sizeof(cfg));
	rc = mm_options_apply(vt->options, vt->name, kv, nkv, &cfg);
	if (rc)
		return rc;
	if (cfg.batch < 1 || cfg.batch > MM_FSRC_BATCH_MAX)
		return mm_diag_set(MM_EINVAL, "%s: option 'batch': must be between 1 and %d",
				   vt->name, MM_FSRC_BATCH_MAX);
	if (cfg.read_size < 1 || cfg.read_size > MM_FSRC_READ_MAX)
		return mm_diag_set(MM_EINVAL, "%s: option 'read_size': must be between 1 and 1g",
				   vt->name);
	fs = calloc(1, sizeof(*fs));
	if (fs == NULL)
		return mm_diag_set(MM_ENOMEM, "%s: out of memory", vt->name);
	fs->is_stdin = vt == &mm_source_stdin_vtable;
	fs->fd = fs->is_stdin ? 0 : -1;
	fs->follow = cfg.follow;
	fs->nofollow = cfg.nofollow;
	fs->batch_max = (size_t)cfg.batch;
	fs->read_size = (size_t)cfg.read_size;
	fs->recs = malloc(fs->batch_max * sizeof(*fs->recs));
	if (fs->recs == NULL) {
		rc = mm_diag_set(MM_ENOMEM, "%s: out of memory", vt->name);
		goto fail;
	}
	if (fs->is_stdin) {
		snprintf(fs->base.id, sizeof(fs->base.id), "stdin");
	} else {
		if (cfg.path == NULL || cfg.path[0] == '\0') {
			rc = mm_diag_set(MM_EINVAL, "file: option 'path' is required");
			goto fail;
		}
		if (cfg.path[0] == '/') {
			cwd[0] = '\0';
			cwd_len = 0;
		} else if (uv_cwd(cwd, &cwd_len) != 0) {
			rc = mm_diag_set(MM_EIO, "file: cannot resolve relative path '%s'", cfg.path);
			goto fail;
		}
		n = cwd_len + 1 + strlen(cfg.path) + 1;
		fs->path = malloc(n);
		if (fs->path == NULL) {
			rc = mm_diag_set(MM_ENOMEM, "file: out of memory");
			goto fail;
		}
		snprintf(fs->path, n, "%s%s%s", cwd, cwd_len ? "/" : "", cfg.path);
		n = (size_t)snprintf(fs->base.id, sizeof(fs->base.id), "file:%s", fs->path);
		if (n >= sizeof(fs->base.id)) {
			rc = mm_diag_set(MM_EINVAL, "file: path '%s' is too long", fs->path);
			goto fail;
		}
		if ((rc = mm_fsrc_consumer(fs, cfg.consumer)))
			goto fail;
		slash = strrchr(fs->path, '/');
		fs->name = slash + 1;
		fs->dir = slash == fs->path ? strdup("/") : strndup(fs->path, (size_t)(slash - fs->path));
		if (fs->dir == NULL) {
			rc = mm_diag_set(MM_ENOMEM, "file: out of memory");
			goto fail;
		}
	}
	fs->base.vt = vt;
	fs->base.loop = loop;
	fs->base.sink = *sink;
	fs->base.max_record = MM_FSRC_MAX_RECORD_DEFAULT;
	fs->phase = MM_FSRC_INIT;
	/* Handle initialisation cannot fail on Unix; nothing after it may. */
	uv_idle_init(loop, &fs->idle);
	fs->idle.data = fs;
	if (fs->follow) {
		uv_fs_event_init(loop, &fs->watch);
		fs->watch.data = fs;
	}
	*out = &fs->base;
	return 0;

fail:
	free(fs->recs);
	free(fs->path);
	free(fs->dir);
	free(fs);
	return rc;
}

static int mm_fsrc_file_open(uv_loop_t *loop, const mm_kv_t *kv, size_t nkv,
			     const mm_source_sink_t *sink, mm_source_t **out)
{
	return mm_fsrc_create(loop, &mm_source_file_vtable, kv, nkv, sink, out);
}

static int mm_fsrc_stdin_open(uv_loop_t *loop, const mm_kv_t *kv, size_t nkv,
			      const mm_source_sink_t *sink, mm_source_t **out)
{
	return mm_fsrc_create(loop, &mm_source_stdin_vtable, kv, nkv, sink, out);
}

/* Fixes the record size limit the engine may have set after open(). */
static void mm_fsrc_limits(mm_fsrc_t *fs)
{
	uint64_t keep;

	if (fs->base.max_record > UINT32_MAX)
		fs->base.max_record = UINT32_MAX; /* mm_record_t.len is 32 bits */
	keep = fs->base.max_record > MM_REC_PREFIX ? fs->base.max_record : MM_REC_PREFIX;
	fs->keep_max = (size_t)keep + 1;
}

static int mm_fsrc_file_start(mm_source_t *src, const uint8_t *pos, size_t len)
{
	mm_fsrc_t *fs = (mm_fsrc_t *)src;
	int rc;

	if (fs->phase != MM_FSRC_INIT)
		return mm_diag_set(MM_EINVAL, "%s: already started", src->id);
	if (pos != NULL && len != 0) {
		rc = mm_file_pos_decode(src->id, pos, len, &fs->want_dev, &fs->want_ino,
					&fs->want_off);
		if (rc)
			return rc;
		fs->want = 1;
	}
	mm_fsrc_limits(fs);
	if (fs->follow) {
		rc = uv_fs_event_start(&fs->watch, mm_fsrc_on_event, fs->dir, 0);
		if (rc < 0)
			return mm_diag_set(mm_fsrc_err_from_uv(rc), "%s: cannot watch directory %s: %s",
					   src->id, fs->dir, uv_strerror(rc));
	}
	rc = mm_fsrc_open_path(fs);
	if (rc < 0) {
		if (fs->follow)
			uv_fs_event_stop(&fs->watch);
		return mm_diag_set(mm_fsrc_err_from_uv(rc), "%s: open: %s", src->id,
				   uv_strerror(rc));
	}
	return 0;
}

static int mm_fsrc_stdin_start(mm_source_t *src, const uint8_t *pos, size_t len)
{
	mm_fsrc_t *fs = (mm_fsrc_t *)src;
	int rc;

	if (fs->phase != MM_FSRC_INIT)
		return mm_diag_set(MM_EINVAL, "stdin: already started");
	mm_fsrc_limits(fs);
	switch (uv_guess_handle(0)) {
	case UV_FILE:
		fs->input = MM_FSRC_IN_FILE;
		break;
	case UV_NAMED_PIPE:
		uv_pipe_init(src->loop, &fs->in.pipe, 0);
		fs->stream_init = 1;
		fs->in.stream.data = fs;
		rc = uv_pipe_open(&fs->in.pipe, 0);
		if (rc < 0)
			return mm_diag_set(mm_fsrc_err_from_uv(rc), "stdin: %s", uv_strerror(rc));
		fs->input = MM_FSRC_IN_STREAM;
		break;
	case UV_TTY:
		rc = uv_tty_init(src->loop, &fs->in.tty, 0, 1);
		if (rc < 0)
			return mm_diag_set(mm_fsrc_err_from_uv(rc), "stdin: %s", uv_strerror(rc));
		fs->stream_init = 1;
		fs->in.stream.data = fs;
		fs->input = MM_FSRC_IN_STREAM;
		break;
	default:
		return mm_diag_set(MM_ENOTSUP,
				   "stdin: descriptor 0 is closed or of an unsupported kind "
				   "(expected a file, pipe or terminal)");
	}
	mm_fsrc_reset(fs, 0);
	mm_fsrc_read(fs);
	return 0;
}

static void mm_fsrc_pause(mm_source_t *src)
{
	mm_fsrc_t *fs = (mm_fsrc_t *)src;

	fs->paused = 1;
	if (fs->reading) {
		uv_read_stop(&fs->in.stream);
		fs->reading = 0;
		if (fs->phase == MM_FSRC_READ)
			fs->phase = MM_FSRC_READY;
	}
}

static void mm_fsrc_resume(mm_source_t *src)
{
	mm_fsrc_t *fs = (mm_fsrc_t *)src;

	if (!fs->paused)
		return;
	fs->paused = 0;
	if (fs->phase == MM_FSRC_DRAIN || fs->phase == MM_FSRC_READY ||
	    (fs->phase == MM_FSRC_WAIT && fs->dirty))
		uv_idle_start(&fs->idle, mm_fsrc_on_idle);
}

/* Positions need no acknowledgement: the file is there to be re-read. */
static void mm_fsrc_ack(mm_source_t *src, const uint8_t *pos, size_t len)
{
}

static void mm_fsrc_stop(mm_source_t *src)
{
	mm_fsrc_halt((mm_fsrc_t *)src);
}

static void mm_fsrc_close(mm_source_t *src, void (*done)(void *arg), void *arg)
{
	mm_fsrc_t *fs = (mm_fsrc_t *)src;

	mm_fsrc_halt(fs);
	fs->done = done;
	fs->done_arg = arg;
	fs->closing = 1;
	if (!fs->busy)
		mm_fsrc_close_now(fs);
}

static int mm_fsrc_describe(mm_source_t *src, const mm_record_t *r, mm_buf_t *out)
{
	mm_fsrc_t *fs = (mm_fsrc_t *)src;

	return mm_buf_printf(out, "line at byte offset %" PRIu64 " of %s", r->offset,
			     mm_fsrc_what(fs));
}

/* status(): where the file source is, for progress and `murmur status`:
 * {"offset":N,"size":N,"waiting":false}. offset is the input offset of the
 * next line to deliver (a restart resumes near it), size the open file's size
 * now (absent while no file is open), and waiting is true while following a
 * path that does not exist yet. fstat of an open descriptor does not block. */
static int mm_fsrc_status(mm_source_t *src, mm_buf_t *out)
{
	mm_fsrc_t *fs = (mm_fsrc_t *)src;
	uv_fs_t sreq;
	int rc;

	rc = mm_buf_printf(out, "{\"offset\":%" PRIu64, fs->buf_off + fs->head);
	if (rc == 0 && fs->fd >= 0 && !fs->is_stdin) {
		if (uv_fs_fstat(fs->base.loop, &sreq, fs->fd, NULL) == 0)
			rc = mm_buf_printf(out, ",\"size\":%" PRIu64, (uint64_t)sreq.statbuf.st_size);
		uv_fs_req_cleanup(&sreq);
	}
	if (rc == 0)
		rc = mm_buf_printf(out, ",\"waiting\":%s}",
				   fs->fd < 0 && fs->phase == MM_FSRC_WAIT ? "true" : "false");
	return rc;
}

/* lag(): the bytes of the open file not yet delivered (its size now minus
 * the offset of the next line), which is what a follower has to catch up. */
static int mm_fsrc_lag(mm_source_t *src, mm_source_lag_fn fn, void *ud)
{
	mm_fsrc_t *fs = (mm_fsrc_t *)src;
	uv_fs_t sreq;
	uint64_t off = fs->buf_off + fs->head;

	if (fs->fd < 0 || fs->is_stdin)
		return 0;
	if (uv_fs_fstat(fs->base.loop, &sreq, fs->fd, NULL) == 0)
		fn(ud, "", "bytes",
		   sreq.statbuf.st_size > off ? (int64_t)(sreq.statbuf.st_size - off) : 0);
	uv_fs_req_cleanup(&sreq);
	return 0;
}

static const mm_option_t mm_fsrc_file_options[] = {
	{MM_OPT_STRING, "path", NULL, offsetof(struct mm_fsrc_cfg, path),
	 "File to read, one JSON record per line (required)."},
	{MM_OPT_STRING, "consumer", NULL, offsetof(struct mm_fsrc_cfg, consumer),
	 "Who reads the file: its position is stored per (file, consumer), so readers "
	 "with other names read the file for themselves, and workers with the same name "
	 "share one position. Empty: the position is keyed by the file alone (releases "
	 "before consumers)."},
	{MM_OPT_BOOL, "follow", "false", offsetof(struct mm_fsrc_cfg, follow),
	 "Keep reading appended lines and reopen the path after rotation, like tail -F; "
	 "when false, end of file ends the input."},
	{MM_OPT_BOOL, "nofollow", "false", offsetof(struct mm_fsrc_cfg, nofollow),
	 "Refuse a symbolic link as the path's last component (O_NOFOLLOW). Set for the "
	 "paths pipeline scripts name, which the sandbox resolves and checks at load "
	 "(doc/security.md)."},
	{MM_OPT_INT, "batch", "4096", offsetof(struct mm_fsrc_cfg, batch),
	 "Maximum records per batch."},
	{MM_OPT_SIZE, "read_size", "1m", offsetof(struct mm_fsrc_cfg, read_size),
	 "Bytes per read."},
	{0},
};

static const mm_option_t mm_fsrc_stdin_options[] = {
	{MM_OPT_INT, "batch", "4096", offsetof(struct mm_fsrc_cfg, batch),
	 "Maximum records per batch."},
	{MM_OPT_SIZE, "read_size", "1m", offsetof(struct mm_fsrc_cfg, read_size),
	 "Bytes per read."},
	{0},
};

const mm_source_vtable_t mm_source_file_vtable = {
	.name = "file",
	.options = mm_fsrc_file_options,
	.open = mm_fsrc_file_open,
	.start = mm_fsrc_file_start,
	.pause = mm_fsrc_pause,
	.resume = mm_fsrc_resume,
	.ack = mm_fsrc_ack,
	.stop = mm_fsrc_stop,
	.close = mm_fsrc_close,
	.describe = mm_fsrc_describe,
	.status = mm_fsrc_status,
	.lag = mm_fsrc_lag,
};

const mm_source_vtable_t mm_source_stdin_vtable = {
	.name = "stdin",
	.options = mm_fsrc_stdin_options,
	.open = mm_fsrc_stdin_open,
	.start = mm_fsrc_stdin_start,
	.pause = mm_fsrc_pause,
	.resume = mm_fsrc_resume,
	.ack = mm_fsrc_ack,
	.stop = mm_fsrc_stop,
	.close = mm_fsrc_close,
	.describe = mm_fsrc_describe,
};
