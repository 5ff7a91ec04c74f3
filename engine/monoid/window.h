/*
 * window.h: tumbling-window bucket arithmetic (time stamps, durations and
 * the clocks are in engine/lib/time.h, included here).
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

#include "../lib/time.h"

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

#endif
