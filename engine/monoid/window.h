/*
 * window.h: tumbling-window bucket arithmetic and event-time parsing.
 *
 * Buckets are epoch-aligned in UTC: bucket(t) = floor(t_ms / granularity_ms).
 * Bucket 0 is reserved for "all-time" (non-windowed pipelines), so an event
 * whose windowed bucket would be 0 (the first minute/hour/day of 1970) or
 * negative is rejected by the runtime as out of range.
 * Pure functions: any thread.
 */
#ifndef MM_WINDOW_H
#define MM_WINDOW_H

#include <stddef.h>
#include <stdint.h>

#define MM_MINUTE_MS 60000LL
#define MM_HOUR_MS 3600000LL
#define MM_DAY_MS 86400000LL

/* Granularity name ("minute"/"hour"/"day") to milliseconds; 0 if unknown. */
int64_t mm_window_granularity_ms(const char *name);

/* floor(ts_ms / gran_ms), correct for negative times. gran_ms == 0 -> 0. */
int64_t mm_window_bucket(int64_t gran_ms, int64_t ts_ms);

/* First millisecond of a bucket. */
int64_t mm_window_bucket_start_ms(int64_t gran_ms, int64_t bucket);

/* Inclusive bucket range of the last n buckets ending with the bucket that
 * holds now_ms ("7d" = today and the 6 days before). n >= 1. */
void mm_window_last_n(int64_t gran_ms, int64_t now_ms, int64_t n, int64_t *lo, int64_t *hi);

/* The oldest bucket still inside a retention of retention_ms at now_ms:
 * buckets < this value are expired. retention_ms <= 0 means keep forever (returns INT64_MIN). */
int64_t mm_window_oldest_kept(int64_t gran_ms, int64_t retention_ms, int64_t now_ms);

/* Parses RFC 3339 ("2026-11-21T10:00:00Z", "...T10:00:00.123+02:00", also a
 * space instead of 'T' and lower-case t/z) into ms since the epoch.
 * Returns 0 or MM_EINVAL (with detail). */
int mm_time_parse_rfc3339(const char *s, size_t len, int64_t *out_ms);

/* Epoch number to ms. unit: 's', 'm' (milliseconds) or 'a' (auto: values with
 * absolute value >= 1e11 are milliseconds, smaller ones seconds).
 * Returns 0 or MM_ERANGE for NaN/inf/out-of-range values. */
int mm_time_from_epoch(double v, char unit, int64_t *out_ms);

/* Parses a duration "30d", "12h", "90m", "45s", "500ms", "2w" to ms.
 * Returns 0 or MM_EINVAL. */
int mm_duration_parse(const char *s, size_t len, int64_t *out_ms);

/* Formats ms since the epoch as RFC 3339 UTC with millisecond precision into
 * out (at least 25 bytes); returns the length. */
size_t mm_time_format(int64_t ms, char *out);

#endif
