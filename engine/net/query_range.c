/*
 * query_range.c: the bucket range of a query job (see query_impl.h), by the
 * rules of `murmur query` (lua/murmur/query.lua buckets_for).
 *
 * Get reads every bucket the pipeline keeps, GetWindow the buckets of a
 * duration ending at `at` (default now), GetRange the buckets from `from`
 * to `to`; both ends are RFC 3339 times or dates. An all-time pipeline has
 * one bucket and no range; a range is clipped to the retention and refused
 * when it ends before it, is reversed, or spans more than MAX_BUCKETS.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "../lib/time.h"
#include "../monoid/window.h"
#include "query_impl.h"

static int parse_when(const char *s, int64_t *ms)
{
	char tmp[40];
	size_t n = strlen(s);

	if (n == 10 && s[4] == '-' && s[7] == '-') {
		snprintf(tmp, sizeof(tmp), "%sT00:00:00Z", s);
		return mm_time_parse_rfc3339(tmp, strlen(tmp), ms);
	}
	return mm_time_parse_rfc3339(s, n, ms);
}

static void fmt_span(int64_t ms, char *out, size_t cap)
{
	if (ms % MM_DAY_MS == 0)
		snprintf(out, cap, "%" PRId64 "d", (int64_t)(ms / MM_DAY_MS));
	else if (ms % MM_HOUR_MS == 0)
		snprintf(out, cap, "%" PRId64 "h", (int64_t)(ms / MM_HOUR_MS));
	else
		snprintf(out, cap, "%" PRId64 "ms", ms);
}

/* Fills j->lo/hi/nb; returns 0 or an MM_RPC code with j->detail. */
int mm_query_plan_range(job_t *j, int mode, const char *window, const char *at, const char *from,
			       const char *to)
{
	const pipe_meta_t *pm = j->pm;
	int64_t gran = pm->gran, ret = pm->ret, now = mm_now_ms(), lo, hi, d;

#define FAIL(code, ...) (snprintf(j->detail, sizeof(j->detail), __VA_ARGS__), (code))
	if (gran == 0) {
		if (mode != RANGE_ALL)
			return FAIL(MM_RPC_FAILED_PRECONDITION,
				    "pipeline '%s' has no window (it keeps all-time values): use Get",
				    pm->name);
		j->lo = j->hi = 0;
		j->nb = 1;
		return 0;
	}
	if (at && at[0] && parse_when(at, &now) != 0)
		return FAIL(MM_RPC_INVALID_ARGUMENT, "at: %s", mm_diag_msg());
	if (mode == RANGE_WINDOW) {
		if (window == NULL || window[0] == '\0' ||
		    mm_duration_parse(window, strlen(window), &d) != 0 || d <= 0)
			return FAIL(MM_RPC_INVALID_ARGUMENT,
				    "window: expected a duration such as 30d or 12h, got '%s'",
				    window ? window : "");
		hi = mm_window_bucket(gran, now);
		lo = hi - (d + gran - 1) / gran + 1;
		if (lo > hi)
			lo = hi;
	} else if (mode == RANGE_FROM_TO) {
		int64_t f, t;

		if (!from || !from[0] || !to || !to[0])
			return FAIL(MM_RPC_INVALID_ARGUMENT, "from and to are both required");
		if (parse_when(from, &f) != 0)
			return FAIL(MM_RPC_INVALID_ARGUMENT, "from: %s", mm_diag_msg());
		if (parse_when(to, &t) != 0)
			return FAIL(MM_RPC_INVALID_ARGUMENT, "to: %s", mm_diag_msg());
		if (f > t)
			return FAIL(MM_RPC_INVALID_ARGUMENT,
				    "from %s is after to %s: give the earlier time first", from, to);
		lo = mm_window_bucket(gran, f);
		hi = mm_window_bucket(gran, t);
	} else {
		if (ret == 0)
			return FAIL(MM_RPC_FAILED_PRECONDITION,
				    "pipeline '%s' keeps every bucket: use GetWindow or GetRange",
				    pm->name);
		hi = mm_window_bucket(gran, now);
		lo = mm_window_oldest_kept(gran, ret, now);
	}
	if (ret > 0) {
		int64_t oldest = mm_window_oldest_kept(gran, ret, now);

		if (hi < oldest) {
			char when[32], span[32];

			mm_time_format(mm_window_bucket_start_ms(gran, oldest), when);
			fmt_span(ret, span, sizeof(span));
			return FAIL(MM_RPC_INVALID_ARGUMENT,
				    "the range ends before %s, the oldest time this pipeline keeps "
				    "(retention %s): nothing there to read",
				    when, span);
		}
		if (lo < oldest)
			lo = oldest;
	}
	if (lo < 1)
		lo = 1;
	if (hi < lo || hi - lo + 1 > MAX_BUCKETS)
		return FAIL(MM_RPC_INVALID_ARGUMENT, "the range spans more than %d buckets", MAX_BUCKETS);
	j->lo = lo;
	j->hi = hi;
	j->nb = (size_t)(hi - lo + 1);
	return 0;
#undef FAIL
}
