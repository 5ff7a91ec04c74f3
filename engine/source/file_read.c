/*
 * file_read.c: the input of the "file" and "stdin" sources (see
 * file_impl.h): opening, reading, following, closing.
 *
 * Reading. Bytes are read into one buffer, read_size bytes at a time, without
 * blocking the loop: regular files with uv_fs_read on the thread pool (at an
 * explicit offset), pipes and terminals as libuv streams. A stream can be
 * closed while nothing is written to it, whereas a thread-pool read() on an
 * idle pipe would hold close() hostage until the writer produced something.
 * A regular file's read is first tried on the loop thread with RWF_NOWAIT
 * (Linux), which copies what the page cache holds and refuses (EAGAIN)
 * instead of waiting for the disk: a cached file is then read without the
 * thread pool's two wake-ups per read (the pool thread's and the loop's),
 * which on a virtual machine's idle CPUs cost more than the copy. Its lines
 * are drained from the idle handle on the loop's next iteration, as after a
 * resume, so the loop polls between reads and nothing re-enters. A refusal,
 * an error or the end of the file (0) takes the thread-pool read, which
 * reports them as before.
 * After each read the complete lines are delivered in batches of at most
 * `batch` records that point into the buffer; the partial last line is moved
 * to the front and completed by the next read. After `drain` batches the
 * source lets the loop turn (timers, store answers, the query service) and
 * delivers the rest from the idle handle, so that a turn's work stays within
 * drain x batch records whatever read_size is: 1 MiB of small records in one
 * turn was 6 ms, 37-74 ms under AddressSanitizer, and read_size goes to 1g.
 * A stream stops reading meanwhile: its next read lands at the buffer's end,
 * for which mm_fsrc_read reserves room again.
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
 * Every fs request callback goes through mm_fsrc_req_done first, which
 * finishes a close() that waited for the request.
 */
#define _GNU_SOURCE /* preadv2, RWF_NOWAIT */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "../lib/error.h"
#include "file_impl.h"

static void mm_fsrc_reopen(mm_fsrc_t *fs);

/* Delivers the buffered lines batch by batch until the buffer holds none or
 * the source is paused or stopped (possibly by deliver() itself), then moves
 * on: the next read, or what a final drain was for. After drain_max batches
 * it returns, and the idle handle goes on at the loop's next iteration. */
void mm_fsrc_drain(mm_fsrc_t *fs)
{
	size_t left = fs->drain_max, n;
	uv_fs_t req;

	while (!fs->paused && fs->phase == MM_FSRC_DRAIN) {
		if (left-- == 0) {
			if (fs->reading) {
				uv_read_stop(&fs->in.stream);
				fs->reading = 0;
			}
			uv_idle_start(&fs->idle, mm_fsrc_on_idle);
			return;
		}
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
void mm_fsrc_close_now(mm_fsrc_t *fs)
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

#ifdef RWF_NOWAIT
/* Builds with MM_ERRINJ: with MURMUR_ERRINJ_FSRC_NOWAIT_REFUSED set, every
 * read on the loop thread is refused, as for a file the page cache does not
 * hold, so that tests run the thread-pool read too. */
static int mm_fsrc_nowait_refused(void)
{
#ifdef MM_ERRINJ
	return getenv("MURMUR_ERRINJ_FSRC_NOWAIT_REFUSED") != NULL;
#else
	return 0;
#endif
}
#endif

/* Issues the next read, unless paused (resume will). */
void mm_fsrc_read(mm_fsrc_t *fs)
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
#ifdef RWF_NOWAIT
	if (!fs->is_stdin && !mm_fsrc_nowait_refused()) {
		struct iovec iov = {.iov_base = b.base, .iov_len = b.len};
		ssize_t n = preadv2(fs->fd, &iov, 1, (off_t)fs->read_off, RWF_NOWAIT);

		if (n > 0) {
			fs->len += (size_t)n;
			fs->read_off += (uint64_t)n;
			fs->phase = MM_FSRC_DRAIN;
			uv_idle_start(&fs->idle, mm_fsrc_on_idle);
			return;
		}
	}
#endif
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
int mm_fsrc_open_path(mm_fsrc_t *fs)
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

void mm_fsrc_on_event(uv_fs_event_t *h, const char *filename, int events, int status)
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

void mm_fsrc_on_idle(uv_idle_t *h)
{
	mm_fsrc_t *fs = h->data;

	uv_idle_stop(h);
	mm_fsrc_continue(fs);
}
