/*
 * admin.c: readiness, the status document and dead-letter tails of admin.h.
 *
 * The status document is built at request time from the same structs
 * /metrics reads (metrics.h's process-wide mm_metrics_t), so the page and
 * Prometheus never disagree; the definitions are the Lua side's last
 * publication, copied verbatim into it.
 */
#include "admin.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../codec/json.h"
#include "../lib/error.h"
#include "../lib/time.h"
#include "metrics.h"

#define MM_ADMIN_TAIL_BYTES 65536

static struct {
	char *definitions;   /* JSON array, or NULL before the first publication */
	char **names, **paths;
	size_t n;
	const char *mode;
	char not_ready[256];
} admin = {.mode = "run"};

static void free_pairs(char **names, char **paths, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(names[i]);
		free(paths[i]);
	}
	free(names);
	free(paths);
}

int mm_admin_publish(const char *json, size_t len, const char *const *names,
		     const char *const *paths, size_t n)
{
	char *defs = malloc(len + 1);
	char **nn = calloc(n + 1, sizeof(*nn));
	char **pp = calloc(n + 1, sizeof(*pp));

	if (defs == NULL || nn == NULL || pp == NULL)
		goto fail;
	memcpy(defs, json, len);
	defs[len] = '\0';
	for (size_t i = 0; i < n; i++) {
		nn[i] = strdup(names[i]);
		pp[i] = strdup(paths[i]);
		if (nn[i] == NULL || pp[i] == NULL)
			goto fail;
	}
	free(admin.definitions);
	free_pairs(admin.names, admin.paths, admin.n);
	admin.definitions = defs;
	admin.names = nn;
	admin.paths = pp;
	admin.n = n;
	return 0;
fail:
	free(defs);
	if (nn && pp)
		free_pairs(nn, pp, n);
	else {
		free(nn);
		free(pp);
	}
	return mm_diag_set(MM_ENOMEM, "admin: cannot copy the pipelines' definitions");
}

void mm_admin_set_mode(const char *mode)
{
	admin.mode = mode;
}

void mm_admin_set_not_ready(const char *reason)
{
	snprintf(admin.not_ready, sizeof(admin.not_ready), "%s", reason ? reason : "");
}

const char *mm_admin_not_ready(void)
{
	static char why[640];
	const mm_engine_t *ctx = mm_metrics_global()->engine;

	if (admin.not_ready[0])
		return admin.not_ready;
	if (admin.definitions == NULL)
		return "no pipelines loaded yet";
	if (ctx == NULL)
		return NULL;
	if (ctx->stopping)
		return "stopping";
	if (!ctx->running)
		return "the sources have not started yet";
	for (int i = 0; i < ctx->nsrcs; i++)
		if (!ctx->srcs[i].closed && !ctx->srcs[i].started && ctx->srcs[i].src != NULL) {
			snprintf(why, sizeof(why), "source %s has not started", ctx->srcs[i].src->id);
			return why;
		}
	return NULL;
}

static int quote(mm_buf_t *out, const char *s)
{
	return mm_json_quote(s, strlen(s), out);
}

static void on_lag(void *ud, const char *partition, const char *unit, int64_t lag)
{
	mm_buf_t *out = ud;
	int first = out->p[out->len - 1] == '[';

	mm_buf_printf(out, "%s{\"partition\":", first ? "" : ",");
	quote(out, partition);
	mm_buf_printf(out, ",\"unit\":\"%s\",\"lag\":%" PRId64 "}", unit, lag);
}

static int engine_json(const mm_engine_t *ctx, mm_buf_t *out)
{
	const mm_engine_stats_t *s = &ctx->stats;
	int rc;

	rc = mm_buf_printf(out,
			   ",\"engine\":{\"store\":\"%s\",\"batches\":%" PRIu64 ",\"records\":%" PRIu64
			   ",\"flushes\":%" PRIu64 ",\"flush_failures\":%" PRIu64
			   ",\"store_writes\":%" PRIu64 ",\"paused\":%s,\"loop_lag_ms_recent\":%.3f"
			   ",\"loop_lag_ms_max\":%.3f}",
			   ctx->st ? ctx->st->vt->name : "", s->batches, s->records, s->flushes,
			   s->flush_failures, s->store_writes, ctx->paused ? "true" : "false",
			   mm_loop_lag_recent_ns(&ctx->lag, uv_hrtime()) / 1e6,
			   mm_loop_lag_max_ns(&ctx->lag) / 1e6);
	rc |= mm_buf_printf(out, ",\"pipelines\":{");
	for (int i = 0; i < ctx->npipes; i++) {
		const mm_pipeline_t *p = ctx->pipes[i];
		const mm_pipeline_stats_t *ps = &p->stats;

		rc |= mm_buf_printf(out, "%s", i ? "," : "");
		rc |= quote(out, p->cfg.name);
		rc |= mm_buf_printf(out,
				    ":{\"records\":%" PRIu64 ",\"accepted\":%" PRIu64
				    ",\"duplicates\":%" PRIu64 ",\"dead_letters\":%" PRIu64
				    ",\"dead_letter_errors\":%" PRIu64 ",\"deltas_flushed\":%" PRIu64
				    ",\"pending\":%zu,\"rejected\":{",
				    ps->records, ps->accepted, ps->duplicates, ps->dead_letters,
				    ps->dead_letter_errors, ps->deltas_flushed, p->agg[p->cur].count);
		for (int r = 0; r < MM_REJ__COUNT; r++)
			rc |= mm_buf_printf(out, "%s\"%s\":%" PRIu64, r ? "," : "",
					    mm_reject_reason_name(r), ps->rejected[r]);
		rc |= mm_buf_printf(out, "}}");
	}
	rc |= mm_buf_printf(out, "},\"sources\":[");
	for (int i = 0; i < ctx->nsrcs; i++) {
		const mm_engine_source_t *es = &ctx->srcs[i];
		mm_source_t *src = es->closed ? NULL : es->src;

		rc |= mm_buf_printf(out, "%s{\"id\":", i ? "," : "");
		rc |= quote(out, es->src ? es->src->id : es->id);
		rc |= mm_buf_printf(out, ",\"records\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"closed\":%s,\"lag\":[",
				    es->src ? es->src->records : es->records,
				    es->src ? es->src->bytes : es->bytes, src ? "false" : "true");
		if (rc == 0 && src && src->vt->lag)
			src->vt->lag(src, on_lag, out);
		rc |= mm_buf_printf(out, "]");
		if (src && src->vt->status) {
			size_t mark = out->len;

			rc |= mm_buf_printf(out, ",\"status\":");
			if (src->vt->status(src, out) != 0)
				out->len = mark;
		}
		rc |= mm_buf_printf(out, "}");
	}
	rc |= mm_buf_printf(out, "]");
	return rc ? MM_ENOMEM : 0;
}

int mm_admin_status_json(mm_buf_t *out)
{
	const mm_metrics_t *m = mm_metrics_global();
	const char *why = mm_admin_not_ready();
	int rc;

	rc = mm_buf_printf(out,
			   "{\"version\":\"%s\",\"mode\":\"%s\",\"now_ms\":%" PRId64
			   ",\"started_ms\":%" PRId64 ",\"rss_bytes\":%" PRIu64 ",\"ready\":%s,\"not_ready\":",
			   m->version ? m->version : "", admin.mode, mm_now_ms(), m->start_ms,
			   mm_metrics_rss_bytes(), why ? "false" : "true");
	rc |= why ? quote(out, why) : mm_buf_printf(out, "null");
	rc |= mm_buf_printf(out, ",\"definitions\":%s", admin.definitions ? admin.definitions : "[]");
	if (m->has_reload) {
		const mm_reload_metrics_t *r = &m->reload;

		rc |= mm_buf_printf(out,
				    ",\"reload\":{\"ok\":%" PRIu64 ",\"failed\":%" PRIu64
				    ",\"unchanged\":%" PRIu64 ",\"last_ok_ms\":%" PRId64
				    ",\"last_error_ms\":%" PRId64 ",\"last_error\":",
				    r->ok, r->failed, r->unchanged, r->last_ok_ms, r->last_error_ms);
		rc |= r->failing ? quote(out, r->last_error) : mm_buf_printf(out, "null");
		rc |= mm_buf_printf(out, "}");
	}
	if (rc == 0 && m->engine != NULL)
		rc = engine_json(m->engine, out);
	rc |= mm_buf_printf(out, "}");
	return rc ? mm_diag_set(MM_ENOMEM, "admin: cannot build the status document") : 0;
}

/* Reads the last MM_ADMIN_TAIL_BYTES of path into buf; *partial is set when
 * the read starts inside the file (its first line is then cut). */
static int read_tail(const char *path, mm_buf_t *buf, uint64_t *size, int *partial)
{
	struct stat sb;
	off_t off;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	int rc = 0;

	*size = 0;
	*partial = 0;
	if (fd < 0)
		return 0; /* not created yet: nothing went wrong so far */
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
		goto done;
	*size = (uint64_t)sb.st_size;
	off = sb.st_size > MM_ADMIN_TAIL_BYTES ? sb.st_size - MM_ADMIN_TAIL_BYTES : 0;
	*partial = off > 0;
	if ((rc = mm_buf_reserve(buf, MM_ADMIN_TAIL_BYTES)))
		goto done;
	while (buf->len < MM_ADMIN_TAIL_BYTES) {
		ssize_t n = pread(fd, buf->p + buf->len, MM_ADMIN_TAIL_BYTES - buf->len,
				  off + (off_t)buf->len);

		if (n <= 0)
			break;
		buf->len += (size_t)n;
	}
done:
	close(fd);
	return rc;
}

/* Appends "lines":[...] with the last max_lines whole lines of
 * text[begin..len), each as a JSON string. */
static int lines_json(const uint8_t *text, size_t begin, size_t len, size_t max_lines, mm_buf_t *out)
{
	size_t start = len, nlines = 0;
	int rc, first = 1;

	/* Walks back from the end over max_lines line ends. */
	while (start > begin && nlines < max_lines) {
		start--;
		while (start > begin && text[start - 1] != '\n')
			start--;
		nlines++;
	}
	rc = mm_buf_printf(out, "\"lines\":[");
	for (size_t i = start; i < len && rc == 0; i++) {
		size_t j = i;

		while (j < len && text[j] != '\n')
			j++;
		if (j > i) {
			rc |= mm_buf_printf(out, "%s", first ? "" : ",");
			rc |= mm_json_quote((const char *)text + i, j - i, out);
			first = 0;
		}
		i = j;
	}
	return rc | mm_buf_printf(out, "]");
}

/* The pipeline of the running engine named name whose dead letters go
 * somewhere other than a file, or NULL. */
static const mm_pipeline_t *recent_dead_letters(const char *name)
{
	const mm_engine_t *ctx = mm_metrics_global()->engine;

	for (int i = 0; ctx != NULL && i < ctx->npipes; i++) {
		const mm_pipeline_t *p = ctx->pipes[i];

		if (strcmp(p->cfg.name, name) == 0 && p->cfg.dlq != NULL &&
		    strcmp(p->cfg.dlq->vt->name, "file") != 0)
			return p;
	}
	return NULL;
}

int mm_admin_dead_letter_tail(const char *pipeline, size_t max_lines, mm_buf_t *out)
{
	const char *path = NULL;
	const mm_pipeline_t *p;
	mm_buf_t tail = {0};
	uint64_t size;
	int partial, rc;
	size_t begin = 0;

	for (size_t i = 0; i < admin.n && path == NULL; i++)
		if (strcmp(admin.names[i], pipeline) == 0)
			path = admin.paths[i];
	if (path == NULL && (p = recent_dead_letters(pipeline)) != NULL) {
		rc = mm_buf_printf(out, "{\"pipeline\":");
		rc |= quote(out, pipeline);
		rc |= mm_buf_printf(out, ",\"destination\":\"%s\",\"target\":", p->cfg.dlq->vt->name);
		rc |= quote(out, p->cfg.dlq->target);
		rc |= mm_buf_printf(out, ",\"written\":%" PRIu64 ",", p->stats.dead_letters);
		rc |= lines_json(p->dl_recent.p, 0, p->dl_recent.len, max_lines, out);
		rc |= mm_buf_printf(out, "}");
		return rc ? mm_diag_set(MM_ENOMEM, "admin: cannot build the dead-letter tail") : 0;
	}
	if (path == NULL)
		return mm_diag_set(MM_ENOTFOUND,
				   "no pipeline '%s' writing dead letters to a file, or elsewhere "
				   "from this process",
				   pipeline);
	if ((rc = read_tail(path, &tail, &size, &partial)))
		goto done;
	/* A read that starts inside the file cuts its first line: skip it. */
	if (partial) {
		while (begin < tail.len && tail.p[begin] != '\n')
			begin++;
		begin++;
	}
	rc = mm_buf_printf(out, "{\"pipeline\":");
	rc |= quote(out, pipeline);
	rc |= mm_buf_printf(out, ",\"destination\":\"file\",\"path\":");
	rc |= quote(out, path);
	rc |= mm_buf_printf(out, ",\"size\":%" PRIu64 ",", size);
	rc |= lines_json(tail.p, begin, tail.len, max_lines, out);
	rc |= mm_buf_printf(out, "}");
	if (rc)
		rc = mm_diag_set(MM_ENOMEM, "admin: cannot build the dead-letter tail");
done:
	mm_buf_free(&tail);
	return rc;
}
