/*
 * log.h: logging to stderr, one line per message:
 *   2026-11-22T10:00:00.123Z INFO  [recently_interacted] flushed 12 deltas
 * The level is process-wide (set once at start-up by the CLI). Lines are
 * written with a single write(2) so concurrent threads never interleave.
 * Any thread.
 */
#ifndef MM_LOG_H
#define MM_LOG_H

enum mm_log_level { MM_LOG_ERROR = 0, MM_LOG_WARN, MM_LOG_INFO, MM_LOG_DEBUG };

/* Sets the level; messages above it are dropped. */
void mm_log_set_level(int level);
int mm_log_get_level(void);

/* Parses "error", "warn", "info", "debug"; returns -1 if unknown. */
int mm_log_parse_level(const char *s);

/* scope is a pipeline name or subsystem ("engine"), may be NULL. */
void mm_log(int level, const char *scope, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
