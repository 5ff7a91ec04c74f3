/*
 * time.h: the wall clock, RFC 3339 time stamps, epoch numbers and durations.
 *
 * The parsers and the formatter are pure functions; the clocks read the
 * system's. Any thread. Errors are MM_E* codes with the diagnostics slot
 * set (error.h).
 */
#ifndef MM_TIME_H
#define MM_TIME_H

#include <stddef.h>
#include <stdint.h>

#define MM_MINUTE_MS 60000LL
#define MM_HOUR_MS 3600000LL
#define MM_DAY_MS 86400000LL

/* Wall clock in ms since the epoch. */
int64_t mm_now_ms(void);

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
