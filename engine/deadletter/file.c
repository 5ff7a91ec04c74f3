/*
 * file.c: the JSON Lines dead-letter file, one object per rejected record:
 *   {"time":..,"pipeline":..,"reason":..,"code":..,"error":..,"source":..,
 *    "offset":N,["size":N,"truncated":true,]"record":"<raw>"|"record_base64":".."}
 *
 * Writing. write() formats the line into a pending buffer owned here, not a
 * stdio one: stdio drops its buffer when a write fails, so a full disk would
 * silently lose the lines of that moment (and a line split across two
 * buffer flushes could be cut by a crash). sync(), which the engine calls
 * before each flush commits, appends the pending bytes with write(2) and
 * fdatasyncs them. A failed or short write keeps whatever was not written,
 * and sync() returns MM_ENOSPC or MM_EIO (retriable): the engine then
 * retries the flush, so source positions never move past a dead letter that
 * is not durable, and a retry finishes the very line a short write cut.
 * Pending bytes are written early (not synced) past PENDING_HIGH_WATER, to
 * bound memory; the engine pauses its sources while flushes fail, so the
 * buffer does not grow without limit meanwhile.
 *
 * Torn tails. A crash or power loss during a write can leave the file ending
 * in part of a line. Every such line belongs to a record whose position was
 * not committed (sync precedes the commit), so the record is read and
 * rejected again after the restart. The file is therefore opened (lazily:
 * no file for a pipeline that rejects nothing) in append mode, and a last
 * line without its '\n' is truncated away first, so that the file always
 * holds whole JSON lines.
 *
 * Only our own files. The path comes from a pipeline script, which is not
 * trusted with the host, so the file is opened with O_NOFOLLOW (a symbolic
 * link is refused), must be a regular file, and an existing non-empty file
 * is used (and possibly trimmed) only if it is a dead-letter file this
 * backend wrote: its first line starts with the fixed beginning of every
 * entry, {"time":"<RFC 3339 time>","pipeline":", and, when that line is
 * within the first TAIL_CHUNK * 16 bytes, is a JSON object whose time,
 * pipeline, reason and code are strings. A file holding nothing but a torn
 * beginning of that first line (a crash during the very first write) is
 * ours too. Anything else is refused with an error naming the file, and is
 * neither written nor truncated. A new file is created 0666 minus the
 * umask, which murmur sets to 077 unless the operator relaxes it
 * (MURMUR_UMASK), so it is private by default.
 *
 * Delivery is at least once: a record rejected after the last commit and
 * before a crash is written again when it is read again.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../codec/json.h"
#include "../lib/error.h"
#include "../lib/text.h"
#include "../lib/time.h"
#include "deadletter.h"

#define PENDING_HIGH_WATER (1u << 20)
#define TAIL_CHUNK 4096

typedef struct file_dlq {
	mm_dead_letter_t base;
	int fd;            /* -1 until the first write() */
	mm_buf_t pending;  /* whole lines not yet handed to the kernel... */
	size_t done;       /* ...except its first `done` bytes (a short write) */
	int unsynced;      /* written since the last fdatasync */
	char *path;
	char *refused;     /* why the file is not ours (see the design comment) */
} file_dlq_t;

extern const mm_dead_letter_vtable_t mm_dead_letter_file_vtable;

typedef struct file_dlq_config {
	const char *path;
} file_dlq_config_t;

static const mm_option_t file_options[] = {
	{MM_OPT_STRING, "path", NULL, offsetof(file_dlq_config_t, path),
	 "JSON Lines file the rejected records are appended to"},
	{0},
};

int mm_dead_letter_json(const mm_dead_letter_entry_t *e, mm_buf_t *b)
{
	char ts[32];
	int rc = 0;

	mm_time_format(e->time_ms, ts);
	rc |= mm_buf_printf(b, "{\"time\":\"%s\",\"pipeline\":", ts);
	rc |= mm_json_quote(e->pipeline, strlen(e->pipeline), b);
	rc |= mm_buf_printf(b, ",\"reason\":\"%s\",\"code\":\"%s\",\"error\":", e->reason, e->code);
	rc |= mm_json_quote(e->error, strlen(e->error), b);
	rc |= mm_buf_printf(b, ",\"source\":");
	rc |= e->source ? mm_json_quote(e->source, strlen(e->source), b) : mm_buf_printf(b, "null");
	rc |= mm_buf_printf(b, ",\"offset\":%llu", (unsigned long long)e->offset);
	if (e->truncated)
		rc |= mm_buf_printf(b, ",\"size\":%llu,\"truncated\":true",
				    (unsigned long long)e->orig_len);
	if (mm_utf8_valid(e->record, e->len)) {
		rc |= mm_buf_printf(b, ",\"record\":");
		rc |= mm_json_quote(e->record, e->len, b);
	} else {
		rc |= mm_buf_printf(b, ",\"record_base64\":\"");
		rc |= mm_base64_encode(e->record, e->len, b);
		rc |= mm_buf_printf(b, "\"");
	}
	rc |= mm_buf_printf(b, "}");
	return rc ? MM_ENOMEM : 0;
}

/* A failed write or sync: full disks are told apart from other I/O errors;
 * both are retriable. */
static int file_io_error(const file_dlq_t *d, const char *what, int err)
{
	int code = err == ENOSPC || err == EDQUOT || err == EFBIG ? MM_ENOSPC : MM_EIO;

	return mm_diag_set(code, "dead-letter file %s: %s: %s", d->path, what, strerror(err));
}

/* Finds where the last line of the file's first `end` bytes ends: just
 * after its last '\n', or 0 if there is none. */
static int file_whole_lines_end(file_dlq_t *d, off_t end, off_t *out)
{
	char chunk[TAIL_CHUNK];
	off_t at = end;

	while (at > 0) {
		size_t want = at < TAIL_CHUNK ? (size_t)at : TAIL_CHUNK;
		ssize_t n = pread(d->fd, chunk, want, at - (off_t)want);

		if (n != (ssize_t)want)
			return file_io_error(d, "read", n < 0 ? errno : EIO);
		at -= (off_t)want;
		for (size_t i = want; i > 0; i--)
			if (chunk[i - 1] == '\n') {
				*out = at + (off_t)i;
				return 0;
			}
	}
	*out = 0;
	return 0;
}

/* The fixed beginning of every entry: {"time":"<time>","pipeline":" with
 * up to 40 characters of [0-9:.TZ+-] as the time. Returns 1 when all of
 * p[0..n) matches and the beginning is complete, 0 when p[0..n) matches
 * but ends before the beginning does, -1 when it does not match. */
static int file_signature(const char *p, size_t n)
{
	static const char head[] = "{\"time\":\"", tail[] = "\",\"pipeline\":\"";
	size_t i = 0, t = 0;

	for (; i < sizeof(head) - 1; i++)
		if (i == n)
			return 0;
		else if (p[i] != head[i])
			return -1;
	while (i < n && t <= 40 && p[i] != '"') {
		if (strchr("0123456789:.TZ+-", p[i]) == NULL || p[i] == '\0')
			return -1;
		i++;
		t++;
	}
	if (t > 40 || (i < n && t == 0))
		return -1;
	for (size_t j = 0; j < sizeof(tail) - 1; j++, i++)
		if (i == n)
			return 0;
		else if (p[i] != tail[j])
			return -1;
	return 1;
}

int mm_dead_letter_file_recognise(const char *head, size_t n, int whole)
{
	mm_json_field_t f[4] = {
		{.name = "time", .name_len = 4},
		{.name = "pipeline", .name_len = 8},
		{.name = "reason", .name_len = 6},
		{.name = "code", .name_len = 4},
	};
	const char *nl = memchr(head, '\n', n);
	size_t line = nl ? (size_t)(nl - head) : n;
	int sig;

	if (n == 0)
		return whole;
	sig = file_signature(head, line);
	if (sig < 0)
		return 0;
	if (sig == 0)
		/* Only a torn first line, and nothing after it, is ours. */
		return nl == NULL && whole;
	if (nl == NULL)
		return 1; /* a first line longer than what was read, or torn */
	if (mm_json_scan(head, line, f, 4) != 0)
		return 0;
	for (int i = 0; i < 4; i++)
		if (f[i].type != MM_JSON_STRING)
			return 0;
	return 1;
}

/* Reads the first bytes of the file (at most size) into buf. */
static int file_read_head(int fd, const char *path, char *buf, size_t cap, off_t size,
			  size_t *got)
{
	size_t want = (off_t)cap < size ? cap : (size_t)size;

	*got = 0;
	while (*got < want) {
		ssize_t n = pread(fd, buf + *got, want - *got, (off_t)*got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return mm_diag_set(MM_EIO, "dead-letter file %s: read: %s", path,
					   n < 0 ? strerror(errno) : "unexpected end of file");
		*got += (size_t)n;
	}
	return 0;
}

int mm_dead_letter_file_adopt(int fd, const char *path)
{
	file_dlq_t d = {.fd = fd, .path = (char *)path};
	char head[TAIL_CHUNK * 16];
	struct stat st;
	size_t got;
	off_t keep;
	int rc;

	if (fstat(fd, &st) != 0)
		return file_io_error(&d, "fstat", errno);
	if (!S_ISREG(st.st_mode))
		return mm_diag_set(MM_EINVAL,
				   "dead-letter file %s is not a regular file; refusing to use it",
				   path);
	if (st.st_size == 0)
		return 0;
	if ((rc = file_read_head(fd, path, head, sizeof(head), st.st_size, &got)))
		return rc;
	if (!mm_dead_letter_file_recognise(head, got, (off_t)got == st.st_size))
		return mm_diag_set(MM_EINVAL,
				   "dead-letter file %s exists and is not a murmur dead-letter "
				   "file (its first line is not a dead-letter entry); refusing "
				   "to write to or truncate it",
				   path);
	/* Truncates a last line that lacks its '\n' (see the design comment).
	 * keep starts as the whole file: the profile-guided build's inlining
	 * hides from GCC that the walk sets it whenever it returns 0. */
	keep = st.st_size;
	rc = file_whole_lines_end(&d, st.st_size, &keep);
	if (rc == 0 && keep != st.st_size && ftruncate(fd, keep) != 0)
		rc = file_io_error(&d, "truncate a partly written last line", errno);
	return rc;
}

/* Hands the pending bytes to the kernel. Returns 0 or a retriable error,
 * keeping what was not written. */
static int file_drain(file_dlq_t *d)
{
	while (d->done < d->pending.len) {
		ssize_t n = write(d->fd, d->pending.p + d->done, d->pending.len - d->done);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return file_io_error(d, "write", errno);
		}
		d->done += (size_t)n;
		d->unsynced = 1;
	}
	d->pending.len = 0;
	d->done = 0;
	return 0;
}

static int file_open(uv_loop_t *loop, const mm_kv_t *kv, size_t nkv, mm_dead_letter_t **out)
{
	file_dlq_config_t cfg;
	file_dlq_t *d;
	int rc = mm_options_apply(file_options, "dead letter file", kv, nkv, &cfg);

	if (rc)
		return rc;
	if (cfg.path == NULL || *cfg.path == '\0')
		return mm_diag_set(MM_EINVAL, "dead letter file: 'path' is required");
	d = calloc(1, sizeof(*d));
	if (d == NULL || (d->path = strdup(cfg.path)) == NULL) {
		free(d);
		return mm_diag_set(MM_ENOMEM, "dead letter file: out of memory");
	}
	d->fd = -1;
	d->base.vt = &mm_dead_letter_file_vtable;
	snprintf(d->base.target, sizeof(d->base.target), "%s", cfg.path);
	*out = &d->base;
	return 0;
}

/* Remembers the diagnostic just set as the reason the file is refused. */
static int file_refuse(file_dlq_t *d)
{
	if (d->refused == NULL)
		d->refused = strdup(mm_diag_msg());
	return MM_EINVAL;
}

static int file_write(mm_dead_letter_t *base, const mm_dead_letter_entry_t *e)
{
	file_dlq_t *d = (file_dlq_t *)base;
	size_t mark = d->pending.len;
	int rc;

	/* A file that cannot be opened (a missing directory, no permission)
	 * is a configuration error, not a full disk: the entry is refused, and
	 * the pipeline counts and logs it, rather than holding up flushes. */
	/* A refused file stays refused: it is not checked again per entry. */
	if (d->refused)
		return mm_diag_set(MM_EINVAL, "%s", d->refused);
	if (d->fd < 0) {
		d->fd = open(d->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0666);
		if (d->fd < 0 && errno == ELOOP) {
			mm_diag_set(MM_EINVAL,
				    "dead-letter file %s is a symbolic link; refusing to follow it",
				    d->path);
			return file_refuse(d);
		}
		if (d->fd < 0)
			return mm_diag_set(MM_EIO, "cannot open dead-letter file %s: %s", d->path,
					   strerror(errno));
		rc = mm_dead_letter_file_adopt(d->fd, d->path);
		if (rc) {
			close(d->fd);
			d->fd = -1;
			return rc == MM_EINVAL ? file_refuse(d) : rc;
		}
	}
	rc = mm_dead_letter_json(e, &d->pending);
	if (rc == 0)
		rc = mm_buf_append(&d->pending, "\n", 1);
	if (rc) {
		d->pending.len = mark; /* never leave part of a line pending */
		return rc;
	}
	/* An error here is reported by the next sync(), which retries. */
	if (d->pending.len - d->done >= PENDING_HIGH_WATER)
		(void)file_drain(d);
	return 0;
}

static int file_sync(mm_dead_letter_t *base)
{
	file_dlq_t *d = (file_dlq_t *)base;
	int rc;

	if (d->fd < 0)
		return 0;
	rc = file_drain(d);
	if (rc)
		return rc;
	if (d->unsynced) {
		if (fdatasync(d->fd) != 0)
			return file_io_error(d, "fdatasync", errno);
		d->unsynced = 0;
	}
	return 0;
}

static void file_close(mm_dead_letter_t *base)
{
	file_dlq_t *d = (file_dlq_t *)base;

	if (d->fd >= 0) {
		/* The engine syncs before it closes; this only matters when it
		 * could not, and then a last attempt costs nothing. */
		(void)file_drain(d);
		close(d->fd);
	}
	mm_buf_free(&d->pending);
	free(d->refused);
	free(d->path);
	free(d);
}

const mm_dead_letter_vtable_t mm_dead_letter_file_vtable = {
	.name = "file",
	.options = file_options,
	.open = file_open,
	.write = file_write,
	.sync = file_sync,
	.close = file_close,
};
