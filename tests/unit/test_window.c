/*
 * test_window.c: bucket arithmetic, retention, RFC 3339 parsing and
 * formatting, epoch conversion and durations, with known values. The civil
 * date arithmetic is also checked against glibc's timegm() over random
 * dates (the engine itself does not use timegm; here it is an independent
 * oracle).
 */
#include <math.h>
#include <time.h>

#include "lib/error.h"
#include "monoid/window.h"
#include "unit.h"

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static int parse(const char *s, int64_t *ms)
{
	return mm_time_parse_rfc3339(s, strlen(s), ms);
}

static int dur(const char *s, int64_t *ms)
{
	return mm_duration_parse(s, strlen(s), ms);
}

/* 2026-05-07T12:00:00Z */
#define T0 1778155200000LL

TEST(granularity)
{
	CHECK_EQ_INT(mm_window_granularity_ms("minute"), 60000);
	CHECK_EQ_INT(mm_window_granularity_ms("hour"), 3600000);
	CHECK_EQ_INT(mm_window_granularity_ms("day"), 86400000);
	CHECK_EQ_INT(mm_window_granularity_ms("week"), 0);
	CHECK_EQ_INT(mm_window_granularity_ms("Day"), 0);
	CHECK_EQ_INT(mm_window_granularity_ms(NULL), 0);
}

TEST(buckets)
{
	int64_t ms;

	REQUIRE(parse("2026-05-07T12:00:00Z", &ms) == 0);
	CHECK_EQ_INT(ms, T0);
	CHECK_EQ_INT(mm_window_bucket(MM_DAY_MS, ms), 20580);
	CHECK_EQ_INT(mm_window_bucket(MM_HOUR_MS, ms), 493932);
	CHECK_EQ_INT(mm_window_bucket(MM_MINUTE_MS, ms), 29635920);
	CHECK_EQ_INT(mm_window_bucket_start_ms(MM_DAY_MS, 20580), T0 - 12 * MM_HOUR_MS);
	CHECK_EQ_INT(mm_window_bucket_start_ms(MM_HOUR_MS, 493932), T0);

	/* Floor division: the millisecond before the epoch is in bucket -1. */
	CHECK_EQ_INT(mm_window_bucket(MM_MINUTE_MS, 0), 0);
	CHECK_EQ_INT(mm_window_bucket(MM_MINUTE_MS, 59999), 0);
	CHECK_EQ_INT(mm_window_bucket(MM_MINUTE_MS, 60000), 1);
	CHECK_EQ_INT(mm_window_bucket(MM_MINUTE_MS, -1), -1);
	CHECK_EQ_INT(mm_window_bucket(MM_MINUTE_MS, -60000), -1);
	CHECK_EQ_INT(mm_window_bucket(MM_MINUTE_MS, -60001), -2);
	CHECK_EQ_INT(mm_window_bucket(MM_DAY_MS, INT64_MIN), -106751991168LL);
	CHECK_EQ_INT(mm_window_bucket(MM_DAY_MS, INT64_MAX), 106751991167LL);
	CHECK_EQ_INT(mm_window_bucket(0, T0), 0);
	CHECK_EQ_INT(mm_window_bucket(-5, T0), 0);
	CHECK_EQ_INT(mm_window_bucket_start_ms(MM_MINUTE_MS, -2), -120000);
	CHECK_EQ_INT(mm_window_bucket_start_ms(0, 7), 0);
	/* Starts that do not fit in int64 saturate. */
	CHECK_EQ_INT(mm_window_bucket_start_ms(MM_DAY_MS, -106751991168LL), INT64_MIN);
	CHECK_EQ_INT(mm_window_bucket_start_ms(MM_DAY_MS, INT64_MAX), INT64_MAX);

	/* Every timestamp lies in [start(b), start(b+1)) of its bucket. */
	for (int i = 0; i < 100000; i++) {
		static const int64_t grans[] = {MM_MINUTE_MS, MM_HOUR_MS, MM_DAY_MS, 7};
		int64_t g = grans[i % 4];
		int64_t t = (int64_t)(unit_xorshift64(&rng) % 20000000000000ULL) - 10000000000000LL;
		int64_t b = mm_window_bucket(g, t);

		if (!(mm_window_bucket_start_ms(g, b) <= t &&
		      t < mm_window_bucket_start_ms(g, b + 1))) {
			printf("#   g=%lld t=%lld b=%lld\n", (long long)g, (long long)t,
			       (long long)b);
			CHECK(0);
			break;
		}
	}
}

TEST(last_n)
{
	int64_t lo, hi;

	mm_window_last_n(MM_DAY_MS, T0, 7, &lo, &hi);
	CHECK_EQ_INT(hi, 20580);
	CHECK_EQ_INT(lo, 20574);
	mm_window_last_n(MM_HOUR_MS, T0, 1, &lo, &hi);
	CHECK_EQ_INT(lo, 493932);
	CHECK_EQ_INT(hi, 493932);
	mm_window_last_n(MM_MINUTE_MS, -1, 3, &lo, &hi);
	CHECK_EQ_INT(hi, -1);
	CHECK_EQ_INT(lo, -3);
	mm_window_last_n(MM_MINUTE_MS, 0, INT64_MAX, &lo, &hi);
	CHECK_EQ_INT(hi, 0);
	CHECK_EQ_INT(lo, -INT64_MAX + 1);
	mm_window_last_n(MM_MINUTE_MS, -120000, INT64_MAX, &lo, &hi);
	CHECK_EQ_INT(lo, INT64_MIN); /* exactly representable */
	mm_window_last_n(MM_MINUTE_MS, -180000, INT64_MAX, &lo, &hi);
	CHECK_EQ_INT(hi, -3);
	CHECK_EQ_INT(lo, INT64_MIN); /* saturated */
}

TEST(retention)
{
	int64_t d0;

	/* Daily buckets, 7 days, now = D 12:00: D-7 ends at D-6 00:00, later
	 * than D-7 12:00, so it is kept; D-8 has expired. */
	CHECK_EQ_INT(mm_window_oldest_kept(MM_DAY_MS, 7 * MM_DAY_MS, T0), 20580 - 7);
	/* At exactly D 00:00, D-7 still ends after now - 7d; D-8 ends at it. */
	d0 = T0 - 12 * MM_HOUR_MS;
	CHECK_EQ_INT(mm_window_oldest_kept(MM_DAY_MS, 7 * MM_DAY_MS, d0), 20580 - 7);
	CHECK_EQ_INT(mm_window_oldest_kept(MM_DAY_MS, 7 * MM_DAY_MS, d0 - 1), 20580 - 8);
	/* Retention shorter than a bucket keeps the current and maybe the previous one. */
	CHECK_EQ_INT(mm_window_oldest_kept(MM_HOUR_MS, 30 * MM_MINUTE_MS, T0 + 10 * MM_MINUTE_MS),
		     493931);
	CHECK_EQ_INT(mm_window_oldest_kept(MM_HOUR_MS, 30 * MM_MINUTE_MS, T0 + 40 * MM_MINUTE_MS),
		     493932);
	/* Forever. */
	CHECK_EQ_INT(mm_window_oldest_kept(MM_DAY_MS, 0, T0), INT64_MIN);
	CHECK_EQ_INT(mm_window_oldest_kept(MM_DAY_MS, -1, T0), INT64_MIN);
	CHECK_EQ_INT(mm_window_oldest_kept(0, MM_DAY_MS, T0), INT64_MIN);
	/* now - retention below INT64_MIN saturates instead of wrapping. */
	CHECK_EQ_INT(mm_window_oldest_kept(MM_DAY_MS, INT64_MAX, -MM_DAY_MS),
		     mm_window_bucket(MM_DAY_MS, INT64_MIN));

	/* The definition, checked directly: b is kept iff its end > now - retention. */
	for (int i = 0; i < 20000; i++) {
		int64_t now = (int64_t)(unit_xorshift64(&rng) % 4000000000000ULL);
		int64_t ret = (int64_t)(unit_xorshift64(&rng) % (40 * MM_DAY_MS)) + 1;
		int64_t g = i % 2 ? MM_HOUR_MS : MM_DAY_MS;
		int64_t k = mm_window_oldest_kept(g, ret, now);

		if (!(mm_window_bucket_start_ms(g, k + 1) > now - ret &&
		      mm_window_bucket_start_ms(g, k) <= now - ret)) {
			CHECK(0);
			break;
		}
	}
}

TEST(rfc3339_valid)
{
	static const struct {
		const char *s;
		int64_t ms;
	} v[] = {
		{"1970-01-01T00:00:00Z", 0},
		{"1969-12-31T23:59:59.999Z", -1},
		{"2000-01-01T00:00:00Z", 946684800000LL},
		{"2024-02-29T00:00:00Z", 1709164800000LL},
		{"2024-03-01T00:00:00Z", 1709251200000LL},
		{"2000-02-29T12:30:45Z", 951827445000LL},
		{"2026-05-07T12:00:00.123Z", T0 + 123},
		{"2026-05-07T12:00:00.1Z", T0 + 100},
		{"2026-05-07T12:00:00.12Z", T0 + 120},
		{"2026-05-07T12:00:00.123999999999Z", T0 + 123}, /* truncated, not rounded */
		{"2026-05-07T14:00:00+02:00", T0},
		{"2026-05-07T06:30:00-05:30", T0},
		{"2026-05-07T12:00:00-00:00", T0},
		{"2026-05-08T11:59:00+23:59", T0},
		{"2026-05-07t12:00:00z", T0},
		{"2026-05-07 12:00:00Z", T0},
		{"2026-05-07T11:59:60Z", T0 - 1}, /* leap second: 11:59:59.999 */
		{"2026-05-07T11:59:60.5Z", T0 - 1},
		{"2016-12-31T23:59:60Z", 1483228799999LL},
		{"0000-01-01T00:00:00Z", -62167219200000LL},
		{"9999-12-31T23:59:59.999Z", 253402300799999LL},
		{"1900-03-01T00:00:00Z", -2203891200000LL},
	};
	int64_t ms;

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		ms = 0;
		if (parse(v[i].s, &ms) != 0 || ms != v[i].ms) {
			printf("#   %s -> %lld (%s), expected %lld\n", v[i].s, (long long)ms,
			       mm_diag_msg(), (long long)v[i].ms);
			CHECK(0);
		}
	}
	/* The length bounds the parse; the text need not be NUL-terminated. */
	CHECK(mm_time_parse_rfc3339("2026-05-07T12:00:00Zjunk", 20, &ms) == 0 && ms == T0);
}

TEST(rfc3339_invalid)
{
	static const char *const bad[] = {
		"",
		"2026",
		"2026-05-07",
		"2026-05-07T12:00Z",
		"2026-05-07T12:00:00",	  /* no zone */
		"2026-05-07T12:00:00+02", /* offset without minutes */
		"2026-05-07T12:00:00+0200",
		"2026-05-07T12:00:00+24:00",
		"2026-05-07T12:00:00+02:60",
		"2026-05-07T12:00:00.Z", /* empty fraction */
		"2026-05-07T12:00:00ZZ",
		"2026-05-07T12:00:00Z ",
		" 2026-05-07T12:00:00Z",
		"2026-5-07T12:00:00Z",
		"26-05-07T12:00:00Z",
		"+2026-05-07T12:00:00Z",
		"20260-05-07T12:00:00Z",
		"2026-00-07T12:00:00Z",
		"2026-13-07T12:00:00Z",
		"2026-05-00T12:00:00Z",
		"2026-05-32T12:00:00Z",
		"2026-04-31T12:00:00Z",
		"2023-02-29T12:00:00Z", /* not a leap year */
		"1900-02-29T12:00:00Z", /* divisible by 100 */
		"2026-05-07T24:00:00Z",
		"2026-05-07T12:60:00Z",
		"2026-05-07T12:00:61Z",
		"2026-05-07X12:00:00Z",
		"2026-05-07T1a:00:00Z",
		"2026/05/07T12:00:00Z",
		"2026-05-07T12:00:00.12a3Z",
		"2026-05-07T12:00:00,5Z",
	};
	int64_t ms = 42;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse(bad[i], &ms) != MM_EINVAL) {
			printf("#   accepted '%s'\n", bad[i]);
			CHECK(0);
		}
	}
	CHECK_EQ_INT(ms, 42); /* untouched on failure */
	CHECK(parse("2026-02-30T00:00:00Z", &ms) == MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "2026-02-30") != NULL);
	CHECK(strstr(mm_diag_msg(), "day") != NULL);
	/* A NUL inside the given length is not a separator. */
	CHECK(mm_time_parse_rfc3339("2026-05-07T12:00:00\0", 20, &ms) == MM_EINVAL);
	/* Truncated at every length. */
	for (size_t n = 0; n < 20; n++)
		CHECK(mm_time_parse_rfc3339("2026-05-07T12:00:00Z", n, &ms) == MM_EINVAL);
}

TEST(format)
{
	char out[32];

	CHECK_EQ_INT(mm_time_format(0, out), 24);
	CHECK(strcmp(out, "1970-01-01T00:00:00.000Z") == 0);
	mm_time_format(T0 + 123, out);
	CHECK(strcmp(out, "2026-05-07T12:00:00.123Z") == 0);
	mm_time_format(-1, out);
	CHECK(strcmp(out, "1969-12-31T23:59:59.999Z") == 0);
	mm_time_format(1709164800000LL + 86399999, out);
	CHECK(strcmp(out, "2024-02-29T23:59:59.999Z") == 0);
	mm_time_format(951782400000LL, out);
	CHECK(strcmp(out, "2000-02-29T00:00:00.000Z") == 0);
	/* Out of the four-digit-year range: clamped, still 24 characters. */
	CHECK_EQ_INT(mm_time_format(INT64_MAX, out), 24);
	CHECK(strcmp(out, "9999-12-31T23:59:59.999Z") == 0);
	CHECK_EQ_INT(mm_time_format(INT64_MIN, out), 24);
	CHECK(strcmp(out, "0000-01-01T00:00:00.000Z") == 0);
}

/* Civil arithmetic against timegm() and format/parse round trips. */
TEST(oracle)
{
	static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	char s[48], back[32];
	int64_t ms;

	for (int i = 0; i < 200000; i++) {
		struct tm tm = {0};
		int y = (int)(unit_xorshift64(&rng) % 10000), mo = (int)(unit_xorshift64(&rng) % 12);
		int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
		int d = 1 + (int)(unit_xorshift64(&rng) % (uint64_t)(mdays[mo] + (mo == 1 && leap)));
		int h = (int)(unit_xorshift64(&rng) % 24), mi = (int)(unit_xorshift64(&rng) % 60);
		int sec = (int)(unit_xorshift64(&rng) % 60), frac = (int)(unit_xorshift64(&rng) % 1000);
		int64_t want;

		tm.tm_year = y - 1900;
		tm.tm_mon = mo;
		tm.tm_mday = d;
		tm.tm_hour = h;
		tm.tm_min = mi;
		tm.tm_sec = sec;
		want = (int64_t)timegm(&tm) * 1000 + frac;
		snprintf(s, sizeof(s), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", y, mo + 1, d, h, mi,
			 sec, frac);
		if (parse(s, &ms) != 0 || ms != want) {
			printf("#   %s -> %lld, timegm says %lld\n", s, (long long)ms,
			       (long long)want);
			CHECK(0);
			break;
		}
		mm_time_format(ms, back);
		if (strcmp(s, back) != 0) {
			printf("#   %s formats back as %s\n", s, back);
			CHECK(0);
			break;
		}
	}
}

TEST(epoch)
{
	int64_t ms = 0;

	CHECK(mm_time_from_epoch(1778155200.0, 's', &ms) == 0 && ms == T0);
	CHECK(mm_time_from_epoch(1778155200000.0, 'm', &ms) == 0 && ms == T0);
	CHECK(mm_time_from_epoch(1778155200.0, 'a', &ms) == 0 && ms == T0);
	CHECK(mm_time_from_epoch(1778155200000.0, 'a', &ms) == 0 && ms == T0);
	/* Rounded to the nearest millisecond, not truncated. */
	CHECK(mm_time_from_epoch(1700000000.123, 's', &ms) == 0 && ms == 1700000000123LL);
	CHECK(mm_time_from_epoch(1.5, 'm', &ms) == 0 && ms == 2);
	/* The auto threshold: |v| >= 1e11 is milliseconds. */
	CHECK(mm_time_from_epoch(99999999999.0, 'a', &ms) == 0 && ms == 99999999999000LL);
	CHECK(mm_time_from_epoch(100000000000.0, 'a', &ms) == 0 && ms == 100000000000LL);
	CHECK(mm_time_from_epoch(-100000000000.0, 'a', &ms) == 0 && ms == -100000000000LL);
	CHECK(mm_time_from_epoch(-86400.0, 'a', &ms) == 0 && ms == -MM_DAY_MS);
	ms = 7;
	CHECK_EQ_INT(mm_time_from_epoch(NAN, 'a', &ms), MM_ERANGE);
	CHECK_EQ_INT(mm_time_from_epoch(INFINITY, 's', &ms), MM_ERANGE);
	CHECK_EQ_INT(mm_time_from_epoch(1e19, 'm', &ms), MM_ERANGE);
	CHECK_EQ_INT(mm_time_from_epoch(9.3e15, 's', &ms), MM_ERANGE);
	CHECK_EQ_INT(mm_time_from_epoch(9223372036854775808.0, 'm', &ms), MM_ERANGE);
	CHECK_EQ_INT(mm_time_from_epoch(1.0, 'x', &ms), MM_EINVAL);
	CHECK_EQ_INT(ms, 7);
	CHECK(mm_time_from_epoch(-9223372036854775808.0, 'm', &ms) == 0 && ms == INT64_MIN);
}

TEST(durations)
{
	static const struct {
		const char *s;
		int64_t ms;
	} ok[] = {
		{"30d", 30 * MM_DAY_MS},
		{"12h", 12 * MM_HOUR_MS},
		{"90m", 90 * MM_MINUTE_MS},
		{"45s", 45000},
		{"500ms", 500},
		{"2w", 14 * MM_DAY_MS},
		{"1d12h", 36 * MM_HOUR_MS},
		{"1h30m15s", 5415000},
		{"1m500ms", 60500},
		{"0s", 0},
		{"007s", 7000},
		{"9223372036854775807ms", INT64_MAX},
	};
	static const char *const bad[] = {
		"",
		"30",
		"d",
		"30x",
		"30D",
		"-5s",
		"+5s",
		" 5s",
		"5s ",
		"5 s",
		"1.5h",
		"5mss",
		"h1",
		"5msx",
		"9223372036854775808ms",
		"15250284452472w",
		"9223372036854775807ms1ms",
	};
	int64_t ms;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		ms = -1;
		if (dur(ok[i].s, &ms) != 0 || ms != ok[i].ms) {
			printf("#   %s -> %lld\n", ok[i].s, (long long)ms);
			CHECK(0);
		}
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ms = 42;
		if (dur(bad[i], &ms) != MM_EINVAL || ms != 42) {
			printf("#   accepted '%s'\n", bad[i]);
			CHECK(0);
		}
	}
	CHECK(dur("7q", &ms) == MM_EINVAL && strstr(mm_diag_msg(), "'7q'") != NULL);
	CHECK(mm_duration_parse("5msXX", 3, &ms) == 0 && ms == 5);
	CHECK(mm_duration_parse("5msXX", 2, &ms) == 0 && ms == 5 * MM_MINUTE_MS);
}

int main(void)
{
	RUN(granularity);
	RUN(buckets);
	RUN(last_n);
	RUN(retention);
	RUN(rfc3339_valid);
	RUN(rfc3339_invalid);
	RUN(format);
	RUN(oracle);
	RUN(epoch);
	RUN(durations);
	UNIT_DONE();
}
