/*
 * window.c: tumbling-window bucket arithmetic (time stamps and durations
 * are engine/lib/time.c's).
 *
 * Buckets. Bucket b of granularity g covers [b*g, (b+1)*g) milliseconds of
 * UTC epoch time, so bucket(t) = floor(t / g). C's division truncates toward
 * zero, which would put t = -1 into bucket 0 together with t = 0..g-1; we
 * step down by one when the remainder is negative.
 *
 * Retention. A bucket is kept while its END, (b+1)*g, is later than
 * c = now - retention, i.e. while any part of it lies inside the retention
 * period. For an integer b, (b+1)*g > c holds exactly when b >= floor(c/g),
 * so the oldest kept bucket is bucket(now - retention). Example: daily
 * buckets, 7d retention, now = day D 12:00. c = D-7 12:00; bucket D-7 ends
 * at D-6 00:00, later than c, so it is kept; bucket D-8 ends at D-7 00:00,
 * not later than c, so it has expired. Every event younger than the
 * retention is therefore still stored, at the cost of one partial bucket.
 *
 * All functions are pure and saturate instead of overflowing int64.
 */
#include "window.h"

#include <string.h>

static int64_t sat_sub(int64_t a, int64_t b)
{
	int64_t r;

	if (__builtin_sub_overflow(a, b, &r))
		return b > 0 ? INT64_MIN : INT64_MAX;
	return r;
}

int64_t mm_window_granularity_ms(const char *name)
{
	if (name == NULL)
		return 0;
	if (strcmp(name, "minute") == 0)
		return MM_MINUTE_MS;
	if (strcmp(name, "hour") == 0)
		return MM_HOUR_MS;
	if (strcmp(name, "day") == 0)
		return MM_DAY_MS;
	return 0;
}

int64_t mm_window_bucket(int64_t gran_ms, int64_t ts_ms)
{
	int64_t q;

	if (gran_ms <= 0)
		return 0;
	q = ts_ms / gran_ms;
	if (ts_ms % gran_ms < 0)
		q--;
	return q;
}

int64_t mm_window_bucket_start_ms(int64_t gran_ms, int64_t bucket)
{
	int64_t r;

	if (gran_ms <= 0)
		return 0;
	if (__builtin_mul_overflow(bucket, gran_ms, &r))
		return bucket < 0 ? INT64_MIN : INT64_MAX;
	return r;
}

void mm_window_last_n(int64_t gran_ms, int64_t now_ms, int64_t n, int64_t *lo, int64_t *hi)
{
	*hi = mm_window_bucket(gran_ms, now_ms);
	*lo = sat_sub(*hi, n > 1 ? n - 1 : 0);
}

int64_t mm_window_oldest_kept(int64_t gran_ms, int64_t retention_ms, int64_t now_ms)
{
	/* Non-windowed state (bucket 0, gran 0) never expires by age. */
	if (retention_ms <= 0 || gran_ms <= 0)
		return INT64_MIN;
	return mm_window_bucket(gran_ms, sat_sub(now_ms, retention_ms));
}
