/*
 * time.c: wall and monotonic clocks, RFC 3339 time stamps, epoch numbers
 * and durations (see time.h).
 *
 * Civil time. Dates are proleptic Gregorian in UTC, years 0000..9999 (all
 * RFC 3339 can write). Day numbers are computed from the count of leap years
 * before a year rather than with timegm(): timegm is not standard C, and
 * the libc time functions consult TZ and locale, which a pure layer must not.
 * Counting year 0 as a leap year (it is one in the proleptic calendar), the
 * leap years in [0, y) number ceil(y/4) - ceil(y/100) + ceil(y/400).
 *
 * The parsers and the formatter are pure and saturate instead of
 * overflowing int64; the clock reads the system's.
 */
#include "time.h"

#include <math.h>
#include <string.h>
#include <sys/time.h>

#include "error.h"

/* Days from 0000-01-01 to 1970-01-01. */
#define EPOCH_DAY0 719528LL

/* The range mm_time_format can write: 0000-01-01T00:00:00.000Z to
 * 9999-12-31T23:59:59.999Z. */
#define MIN_FORMAT_MS (-EPOCH_DAY0 * MM_DAY_MS)
#define MAX_FORMAT_MS (253402300800000LL - 1)

/* Days before the first of each month, for common and leap years. */
static const int month_start[2][13] = {
	{0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365},
	{0, 31, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335, 366},
};

static int is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days from 0000-01-01 to y-01-01, for y >= 0. */
static int64_t days_before_year(int64_t y)
{
	return 365 * y + (y + 3) / 4 - (y + 99) / 100 + (y + 399) / 400;
}

/* Days since 1970-01-01 of a valid date (month 1..12, day checked by caller). */
static int64_t days_from_civil(int y, int m, int d)
{
	return days_before_year(y) - EPOCH_DAY0 + month_start[is_leap(y)][m - 1] + d - 1;
}

/* Inverse of days_from_civil for day numbers within years 0000..9999. */
static void civil_from_days(int64_t days, int *y, int *m, int *d)
{
	int64_t z = days + EPOCH_DAY0; /* days since 0000-01-01 */
	int64_t yy = z * 400 / 146097; /* 146097 days per 400 years: off by at most one */
	int leap, mm = 1;

	while (days_before_year(yy + 1) <= z)
		yy++;
	while (days_before_year(yy) > z)
		yy--;
	z -= days_before_year(yy);
	leap = is_leap(yy);
	while (month_start[leap][mm] <= z)
		mm++;
	*y = (int)yy;
	*m = mm;
	*d = (int)(z - month_start[leap][mm - 1]) + 1;
}

int64_t mm_now_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Reads exactly n decimal digits at s[*pos]. */
static int get_digits(const char *s, size_t len, size_t *pos, int n, int *out)
{
	int v = 0;

	if (len - *pos < (size_t)n)
		return -1;
	for (int i = 0; i < n; i++) {
		char c = s[*pos + i];

		if (c < '0' || c > '9')
			return -1;
		v = v * 10 + (c - '0');
	}
	*pos += (size_t)n;
	*out = v;
	return 0;
}

static int get_char(const char *s, size_t len, size_t *pos, const char *accept)
{
	if (*pos >= len || s[*pos] == '\0' || strchr(accept, s[*pos]) == NULL)
		return -1;
	return s[(*pos)++];
}

int mm_time_parse_rfc3339(const char *s, size_t len, int64_t *out_ms)
{
	size_t pos = 0;
	int y, mo, d, h, mi, sec, ms = 0, off = 0, oh, om, sign;
	const char *why;
	int64_t days;

	why = "expected YYYY-MM-DD";
	if (get_digits(s, len, &pos, 4, &y) || get_char(s, len, &pos, "-") < 0 ||
	    get_digits(s, len, &pos, 2, &mo) || get_char(s, len, &pos, "-") < 0 ||
	    get_digits(s, len, &pos, 2, &d))
		goto bad;
	why = "month out of range";
	if (mo < 1 || mo > 12)
		goto bad;
	why = "day out of range for the month";
	if (d < 1 || d > month_start[is_leap(y)][mo] - month_start[is_leap(y)][mo - 1])
		goto bad;
	why = "expected 'T' and hh:mm:ss";
	if (get_char(s, len, &pos, "Tt ") < 0 || get_digits(s, len, &pos, 2, &h) ||
	    get_char(s, len, &pos, ":") < 0 || get_digits(s, len, &pos, 2, &mi) ||
	    get_char(s, len, &pos, ":") < 0 || get_digits(s, len, &pos, 2, &sec))
		goto bad;
	why = "time of day out of range";
	if (h > 23 || mi > 59 || sec > 60)
		goto bad;
	if (get_char(s, len, &pos, ".") >= 0) {
		/* Any number of fraction digits; milliseconds are kept, the rest truncated. */
		size_t start = pos;

		why = "expected digits after '.'";
		while (pos < len && s[pos] >= '0' && s[pos] <= '9') {
			if (pos - start < 3)
				ms = ms * 10 + (s[pos] - '0');
			pos++;
		}
		if (pos == start)
			goto bad;
		for (size_t i = pos - start; i < 3; i++)
			ms *= 10;
	}
	why = "expected 'Z' or a +hh:mm offset";
	sign = get_char(s, len, &pos, "Zz+-");
	if (sign < 0)
		goto bad;
	if (sign == '+' || sign == '-') {
		if (get_digits(s, len, &pos, 2, &oh) || get_char(s, len, &pos, ":") < 0 ||
		    get_digits(s, len, &pos, 2, &om))
			goto bad;
		why = "offset out of range";
		if (oh > 23 || om > 59)
			goto bad;
		off = (oh * 60 + om) * (sign == '-' ? -1 : 1);
	}
	why = "trailing characters";
	if (pos != len)
		goto bad;
	if (sec == 60) {
		/* A leap second has no epoch number of its own: hold the last
		 * millisecond of the minute so that order is preserved. */
		sec = 59;
		ms = 999;
	}
	days = days_from_civil(y, mo, d);
	*out_ms = ((days * 24 + h) * 60 + mi - off) * MM_MINUTE_MS + sec * 1000LL + ms;
	return 0;
bad:
	return mm_diag_set(MM_EINVAL, "bad RFC 3339 time '%.*s': %s", len > 64 ? 64 : (int)len, s,
			   why);
}

int mm_time_from_epoch(double v, char unit, int64_t *out_ms)
{
	double ms;

	if (!isfinite(v))
		return mm_diag_set(MM_ERANGE, "epoch time is not a finite number");
	switch (unit) {
	case 's':
		ms = v * 1000.0;
		break;
	case 'm':
		ms = v;
		break;
	case 'a':
		ms = fabs(v) >= 1e11 ? v : v * 1000.0;
		break;
	default:
		return mm_diag_set(MM_EINVAL, "epoch unit '%c': expected 's', 'm' or 'a'", unit);
	}
	/* Round rather than truncate: 1700000000.123 s is 1700000000122.99998 ms
	 * after the multiplication. */
	ms = round(ms);
	if (!(ms >= -9223372036854775808.0 && ms < 9223372036854775808.0))
		return mm_diag_set(MM_ERANGE, "epoch time %g out of range", v);
	*out_ms = (int64_t)ms;
	return 0;
}

int mm_duration_parse(const char *s, size_t len, int64_t *out_ms)
{
	int64_t total = 0;
	size_t pos = 0;

	if (len == 0)
		goto bad;
	while (pos < len) {
		int64_t n = 0, unit;
		size_t start = pos;

		while (pos < len && s[pos] >= '0' && s[pos] <= '9') {
			if (__builtin_mul_overflow(n, 10, &n) ||
			    __builtin_add_overflow(n, s[pos] - '0', &n))
				goto bad;
			pos++;
		}
		if (pos == start || pos == len)
			goto bad;
		switch (s[pos++]) {
		case 'w':
			unit = 7 * MM_DAY_MS;
			break;
		case 'd':
			unit = MM_DAY_MS;
			break;
		case 'h':
			unit = MM_HOUR_MS;
			break;
		case 'm':
			if (pos < len && s[pos] == 's') {
				pos++;
				unit = 1;
			} else {
				unit = MM_MINUTE_MS;
			}
			break;
		case 's':
			unit = 1000;
			break;
		default:
			goto bad;
		}
		if (__builtin_mul_overflow(n, unit, &n) || __builtin_add_overflow(total, n, &total))
			goto bad;
	}
	*out_ms = total;
	return 0;
bad:
	return mm_diag_set(
		MM_EINVAL,
		"bad duration '%.*s' (expected e.g. 30d, 12h, 90m, 45s, 500ms, 2w, 1d12h)",
		len > 64 ? 64 : (int)len, s);
}

static char *put_digits(char *p, int v, int n)
{
	for (int i = n - 1; i >= 0; i--) {
		p[i] = (char)('0' + v % 10);
		v /= 10;
	}
	return p + n;
}

size_t mm_time_format(int64_t ms, char *out)
{
	int64_t days, rem;
	int y, mo, d;
	char *p = out;

	/* RFC 3339 has four-digit years; clamp rather than write something no
	 * parser accepts. */
	if (ms < MIN_FORMAT_MS)
		ms = MIN_FORMAT_MS;
	if (ms > MAX_FORMAT_MS)
		ms = MAX_FORMAT_MS;
	days = ms / MM_DAY_MS;
	rem = ms % MM_DAY_MS;
	if (rem < 0) {
		days--;
		rem += MM_DAY_MS;
	}
	civil_from_days(days, &y, &mo, &d);
	p = put_digits(p, y, 4);
	*p++ = '-';
	p = put_digits(p, mo, 2);
	*p++ = '-';
	p = put_digits(p, d, 2);
	*p++ = 'T';
	p = put_digits(p, (int)(rem / MM_HOUR_MS), 2);
	*p++ = ':';
	p = put_digits(p, (int)(rem / MM_MINUTE_MS % 60), 2);
	*p++ = ':';
	p = put_digits(p, (int)(rem / 1000 % 60), 2);
	*p++ = '.';
	p = put_digits(p, (int)(rem % 1000), 3);
	*p++ = 'Z';
	*p = '\0';
	return (size_t)(p - out);
}
