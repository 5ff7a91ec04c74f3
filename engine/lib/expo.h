/*
 * expo.h: a writer of the Prometheus exposition formats: the text format
 * 0.0.4 and OpenMetrics 1.0, chosen per scrape by the Accept header.
 *
 * The two formats differ in three places this writer hides from its callers:
 * a counter's HELP and TYPE lines name the sample (`x_total`) in 0.0.4 but
 * the family (`x`) in OpenMetrics; OpenMetrics ends with "# EOF"; and the
 * content types. Samples are written as they come, so a caller writes each
 * family's samples together (mm_expo_family, then its values), which both
 * formats require.
 *
 * Label values are escaped (backslash, double quote, newline); a value that
 * is not valid UTF-8 (a source path in another encoding) has its non-ASCII
 * bytes replaced by '?', because Prometheus rejects the whole scrape
 * otherwise. Names are the caller's constants and are not checked.
 *
 * Errors are sticky: the first allocation failure is kept in w->rc, later
 * calls do nothing, and mm_expo_end returns it. Ownership: the writer appends
 * to the caller's buffer and owns nothing.
 */
#ifndef MM_EXPO_H
#define MM_EXPO_H

#include "buf.h"
#include "histogram.h"

enum mm_expo_type { MM_EXPO_COUNTER, MM_EXPO_GAUGE, MM_EXPO_HISTOGRAM };

typedef struct mm_expo {
	mm_buf_t *out;
	int openmetrics;  /* 1: OpenMetrics 1.0, 0: text 0.0.4 */
	int rc;           /* 0 or the first error (MM_ENOMEM) */
	const char *name; /* the current family's name, without _total */
	int type;
} mm_expo_t;

/* Starts writing to out (appended to, not cleared). */
void mm_expo_begin(mm_expo_t *w, mm_buf_t *out, int openmetrics);

/* Writes a family's HELP and TYPE lines. name is the family's name; for a
 * counter without the "_total" its samples carry. name and help must stay
 * valid until the next call to mm_expo_family (they are constants). help must
 * not contain a backslash or a newline. */
void mm_expo_family(mm_expo_t *w, const char *name, enum mm_expo_type type, const char *help);

/* Writes one sample of the current counter or gauge family. labels is NULL or
 * an array of name, value, name, value, ..., NULL. */
void mm_expo_value(mm_expo_t *w, const char *const *labels, double v);

/* Writes the buckets, sum (in seconds) and count of a histogram in the
 * current histogram family; labels as for mm_expo_value, `le` is added. */
void mm_expo_histogram(mm_expo_t *w, const char *const *labels, const mm_histo_t *h);

/* The same for a histogram kept elsewhere with its own bounds: n buckets
 * whose `le` labels are le[0..n) (the last must be "+Inf") and cumulative
 * counts cum[0..n), the sum in seconds and the count. */
void mm_expo_histogram_le(mm_expo_t *w, const char *const *labels, size_t n,
			  const char *const *le, const uint64_t *cum, double sum_s, uint64_t count);

/* Ends the exposition ("# EOF" in OpenMetrics); returns 0 or w->rc. */
int mm_expo_end(mm_expo_t *w);

/* 1 if an HTTP Accept header value prefers OpenMetrics 1.0 to the text
 * format (by its q value, OpenMetrics winning ties); NULL or "" is 0. */
int mm_expo_wants_openmetrics(const char *accept);

/* The Content-Type of the chosen format. */
const char *mm_expo_content_type(int openmetrics);

#endif
