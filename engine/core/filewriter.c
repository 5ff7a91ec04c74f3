/* filewriter.c: replacing a small file on the thread pool (see filewriter.h). */
#include "filewriter.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "../lib/file.h"

#define DETAIL_CAP 256

struct mm_fwriter {
	uv_work_t req;
	uv_loop_t *loop;
	char *path;
	uv_mutex_t lock;           /* one write at a time; guards written_seq */
	uint64_t seq;              /* the last number handed out (loop thread) */
	uint64_t written_seq;      /* the newest content written or attempted */
	/* The job in flight (busy): its content, number and outcome. The pool
	 * thread sets job_rc: 0, a negative code, or 1 when skipped because a
	 * newer content was written first. */
	int busy;
	char *job_p;
	size_t job_len;
	uint64_t job_seq;
	int job_rc;
	char job_detail[DETAIL_CAP];
	/* The pending content, written when the job in flight ends. */
	char *next_p;
	size_t next_len;
	int closing;
	/* The result of the last finished write. */
	int rc;
	char detail[DETAIL_CAP];
};

static void fw_free(mm_fwriter_t *w)
{
	uv_mutex_destroy(&w->lock);
	free(w->next_p);
	free(w->job_p);
	free(w->path);
	free(w);
}

/* Writes content number seq unless a newer one was written first; returns
 * 1 when skipped, else mm_file_write_atomic's result. Any thread. */
static int fw_write(mm_fwriter_t *w, const void *p, size_t len, uint64_t seq)
{
	int rc = 1;

	uv_mutex_lock(&w->lock);
	if (seq > w->written_seq) {
		rc = mm_file_write_atomic(w->path, p, len);
		w->written_seq = seq;
	}
	uv_mutex_unlock(&w->lock);
	return rc;
}

static void fw_work(uv_work_t *req)
{
	mm_fwriter_t *w = (mm_fwriter_t *)req;

	w->job_rc = fw_write(w, w->job_p, w->job_len, w->job_seq);
	if (w->job_rc < 0)
		snprintf(w->job_detail, sizeof(w->job_detail), "%s", mm_diag_msg());
}

static void fw_after(uv_work_t *req, int status);

/* Starts the job for p (owned from here on); 0 or MM_EIO. */
static int fw_start(mm_fwriter_t *w, char *p, size_t len)
{
	int rc;

	w->job_p = p;
	w->job_len = len;
	w->job_seq = ++w->seq;
	w->busy = 1;
	if ((rc = uv_queue_work(w->loop, &w->req, fw_work, fw_after)) != 0) {
		w->busy = 0;
		free(w->job_p);
		w->job_p = NULL;
		return mm_diag_set(MM_EIO, "cannot queue the write of %s: %s", w->path, uv_strerror(rc));
	}
	return 0;
}

static void fw_after(uv_work_t *req, int status)
{
	mm_fwriter_t *w = (mm_fwriter_t *)req;
	char *next = w->next_p;

	w->busy = 0;
	free(w->job_p);
	w->job_p = NULL;
	if (status == 0 && w->job_rc <= 0) {
		w->rc = w->job_rc;
		snprintf(w->detail, sizeof(w->detail), "%s", w->job_rc ? w->job_detail : "");
	}
	if (w->closing) {
		fw_free(w);
		return;
	}
	if (next == NULL)
		return;
	w->next_p = NULL;
	if (fw_start(w, next, w->next_len) != 0) {
		w->rc = MM_EIO;
		snprintf(w->detail, sizeof(w->detail), "%s", mm_diag_msg());
	}
}

int mm_fwriter_new(uv_loop_t *loop, const char *path, mm_fwriter_t **out)
{
	mm_fwriter_t *w = calloc(1, sizeof(*w));

	if (w == NULL || (w->path = strdup(path)) == NULL) {
		free(w);
		return mm_diag_set(MM_ENOMEM, "cannot allocate the writer of %s", path);
	}
	if (uv_mutex_init(&w->lock) != 0) {
		free(w->path);
		free(w);
		return mm_diag_set(MM_ENOMEM, "cannot create the lock of the writer of %s", path);
	}
	w->loop = loop;
	*out = w;
	return 0;
}

const char *mm_fwriter_path(const mm_fwriter_t *w)
{
	return w->path;
}

int mm_fwriter_put(mm_fwriter_t *w, const void *p, size_t len)
{
	char *copy = malloc(len ? len : 1);

	if (copy == NULL)
		return mm_diag_set(MM_ENOMEM, "cannot copy the %zu bytes of %s", len, w->path);
	memcpy(copy, p, len);
	if (w->busy) {
		free(w->next_p);
		w->next_p = copy;
		w->next_len = len;
		return 0;
	}
	return fw_start(w, copy, len);
}

int mm_fwriter_put_sync(mm_fwriter_t *w, const void *p, size_t len)
{
	int rc;

	free(w->next_p);
	w->next_p = NULL;
	rc = fw_write(w, p, len, ++w->seq);
	w->rc = rc;
	snprintf(w->detail, sizeof(w->detail), "%s", rc ? mm_diag_msg() : "");
	return rc;
}

int mm_fwriter_result(const mm_fwriter_t *w, char *detail, size_t cap)
{
	if (cap > 0)
		snprintf(detail, cap, "%s", w->detail);
	return w->rc;
}

void mm_fwriter_close(mm_fwriter_t *w)
{
	if (w == NULL)
		return;
	free(w->next_p);
	w->next_p = NULL;
	if (w->busy)
		w->closing = 1;
	else
		fw_free(w);
}
