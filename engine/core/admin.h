/*
 * admin.h: what the admin page and the health checks read: readiness, a
 * live status document (/api/status) and the tail of a pipeline's
 * dead-letter file (/api/dead-letters).
 *
 * The live parts come from the structs metrics.h points to (the engine, its
 * pipelines and sources, the reload counters), read at request time; what
 * only the Lua side knows (the pipelines' definitions as the scripts wrote
 * them, where dead letters go) is published here by the Lua side whenever
 * pipelines load or reload, so no request calls Lua.
 *
 * Threads: loop thread only.
 */
#ifndef MM_ADMIN_H
#define MM_ADMIN_H

#include <stddef.h>

#include "../lib/buf.h"

/* Replaces the published definitions: json is a JSON array (copied, not
 * checked here: the Lua side encodes it), and the dead-letter files of the
 * pipelines that write to files, as n (name, path) pairs (copied). Returns 0
 * or MM_ENOMEM (the previous publication is then kept). */
int mm_admin_publish(const char *json, size_t len, const char *const *names,
		     const char *const *paths, size_t n);

/* Sets the process's mode for /api/status ("run" or "serve", static) and a
 * reason it is not ready yet (copied; NULL once it is, as far as the caller
 * knows: "loading scripts", "opening the store"). */
void mm_admin_set_mode(const char *mode);
void mm_admin_set_not_ready(const char *reason);

/* NULL when ready: the pipelines are published (and, with an engine, it runs
 * and every source started), else why not, in a sentence for /readyz. */
const char *mm_admin_not_ready(void);

/* Appends the status document (a JSON object, doc/metrics.md). Returns 0
 * or MM_ENOMEM. */
int mm_admin_status_json(mm_buf_t *out);

/* Appends {"pipeline":..,"destination":"file","path":..,"size":N,
 * "lines":[...]} with up to max_lines last lines of the pipeline's
 * dead-letter file (at most the last 64 KiB are read; lines are returned as
 * text, not parsed). For a pipeline of this process's engine writing
 * elsewhere (a Kafka topic, which is not read back: the server would need
 * a consumer, read rights on the topic and blocking reads), the lines are
 * the last it wrote since it started (pipeline.h's dl_recent):
 * {"pipeline":..,"destination":"kafka","target":TOPIC,"written":N,
 * "lines":[...]}. Returns 0, MM_ENOTFOUND (no such pipeline, or neither
 * case holds: `murmur serve` has no engine), or MM_ENOMEM. A file not
 * created yet gives no lines. */
int mm_admin_dead_letter_tail(const char *pipeline, size_t max_lines, mm_buf_t *out);

#endif
