/*
 * file.c: the JSON Lines dead-letter file, one object per rejected record:
 *   {"time":..,"pipeline":..,"reason":..,"code":..,"error":..,"source":..,
 *    "offset":N,["size":N,"truncated":true,]"record":"<raw>"|"record_base64":".."}
 * The file is opened lazily (no file for a pipeline that rejects nothing),
 * in append mode, and fdatasync'd by sync() before each flush commits.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../codec/json.h"
#include "../lib/error.h"
#include "../lib/text.h"
#include "../monoid/window.h"
#include "deadletter.h"

typedef struct file_dlq {
	mm_dead_letter_t base;
	FILE *f;
	int dirty;
	mm_buf_t line;
	char *path;
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
	d->base.vt = &mm_dead_letter_file_vtable;
	snprintf(d->base.target, sizeof(d->base.target), "%s", cfg.path);
	*out = &d->base;
	return 0;
}

static int file_write(mm_dead_letter_t *base, const mm_dead_letter_entry_t *e)
{
	file_dlq_t *d = (file_dlq_t *)base;
	int rc;

	if (d->f == NULL) {
		d->f = fopen(d->path, "a");
		if (d->f == NULL)
			return mm_diag_set(MM_EIO, "cannot open dead-letter file %s: %s", d->path,
					   strerror(errno));
	}
	d->line.len = 0;
	rc = mm_dead_letter_json(e, &d->line);
	if (rc == 0)
		rc = mm_buf_append(&d->line, "\n", 1);
	if (rc)
		return rc;
	if (fwrite(d->line.p, 1, d->line.len, d->f) != d->line.len)
		return mm_diag_set(MM_EIO, "dead-letter write to %s failed: %s", d->path,
				   strerror(errno));
	d->dirty = 1;
	return 0;
}

static int file_sync(mm_dead_letter_t *base)
{
	file_dlq_t *d = (file_dlq_t *)base;

	if (!d->dirty)
		return 0;
	if (fflush(d->f) != 0 || fdatasync(fileno(d->f)) != 0)
		return mm_diag_set(MM_EIO, "cannot sync dead-letter file %s: %s", d->path,
				   strerror(errno));
	d->dirty = 0;
	return 0;
}

static void file_close(mm_dead_letter_t *base)
{
	file_dlq_t *d = (file_dlq_t *)base;

	if (d->f)
		fclose(d->f);
	mm_buf_free(&d->line);
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
