/*
 * file.c: the "file" and "stdin" sources. Both read newline-delimited
 * records (JSON Lines): "file" from a regular file, optionally followed like
 * `tail -F`; "stdin" from file descriptor 0, whatever it is connected to.
 *
 * This file holds the vtables and the positions; the read buffer and its
 * lines are file_lines.c, the input and following file_read.c (the files
 * file_impl.h lists).
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
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "file_impl.h"

extern const mm_source_vtable_t mm_source_file_vtable;
extern const mm_source_vtable_t mm_source_stdin_vtable;

int mm_fsrc_err_from_uv(int uverr)
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

const char *mm_fsrc_what(const mm_fsrc_t *fs)
{
	return fs->is_stdin ? "stdin" : fs->path;
}

/* Stops every activity; the handles stay open for close(). */
void mm_fsrc_halt(mm_fsrc_t *fs)
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

void mm_fsrc_fail(mm_fsrc_t *fs, int err, const char *fmt, ...)
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

void mm_fsrc_fail_uv(mm_fsrc_t *fs, const char *op, int uverr)
{
	mm_fsrc_fail(fs, mm_fsrc_err_from_uv(uverr), "%s: %s", op, uv_strerror(uverr));
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
	if (cfg.drain < 1 || cfg.drain > MM_FSRC_DRAIN_MAX)
		return mm_diag_set(MM_EINVAL, "%s: option 'drain': must be between 1 and %d",
				   vt->name, MM_FSRC_DRAIN_MAX);
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
	fs->drain_max = (size_t)cfg.drain;
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
	{MM_OPT_INT, "drain", "8", offsetof(struct mm_fsrc_cfg, drain),
	 "Batches delivered per loop iteration before other events run."},
	{MM_OPT_SIZE, "read_size", "1m", offsetof(struct mm_fsrc_cfg, read_size),
	 "Bytes per read."},
	{0},
};

static const mm_option_t mm_fsrc_stdin_options[] = {
	{MM_OPT_INT, "batch", "4096", offsetof(struct mm_fsrc_cfg, batch),
	 "Maximum records per batch."},
	{MM_OPT_INT, "drain", "8", offsetof(struct mm_fsrc_cfg, drain),
	 "Batches delivered per loop iteration before other events run."},
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

