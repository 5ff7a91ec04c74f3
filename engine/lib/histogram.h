/*
 * histogram.h: a fixed-bucket latency histogram, the shape Prometheus
 * scrapes (cumulative buckets, a sum and a count).
 *
 * Every histogram in murmur has the same bucket bounds, from 25 us to 10 s
 * in 1-2.5-5 steps: store and cache calls live in the microseconds to
 * milliseconds, flushes and remote stores in the milliseconds to seconds, and
 * one shared layout lets histograms of the same operation from several stores
 * be summed bucket by bucket (mm_histo_add). Observing is a short scan and
 * three additions, with no allocation: it runs on the hot paths of the store
 * wrappers and the query server.
 *
 * A zeroed mm_histo_t is an empty histogram. Not thread-safe: each histogram
 * is written and read on the thread that owns the counters beside it.
 */
#ifndef MM_HISTOGRAM_H
#define MM_HISTOGRAM_H

#include <stdint.h>

/* Finite upper bounds; one more bucket (+Inf) holds what lies above. */
#define MM_HISTO_BOUNDS 18

typedef struct mm_histo {
	uint64_t counts[MM_HISTO_BOUNDS + 1]; /* per bucket, not cumulative */
	uint64_t count;
	uint64_t sum_ns;
} mm_histo_t;

/* Records one duration in nanoseconds. */
void mm_histo_observe(mm_histo_t *h, uint64_t ns);

/* Adds every bucket, the count and the sum of src into dst. */
void mm_histo_add(mm_histo_t *dst, const mm_histo_t *src);

/* The upper bound of bucket i (0 <= i < MM_HISTO_BOUNDS) in nanoseconds, and
 * the same bound as the text of an `le` label in seconds ("0.000025", "1.0");
 * i == MM_HISTO_BOUNDS gives UINT64_MAX and "+Inf". */
uint64_t mm_histo_bound_ns(int i);
const char *mm_histo_bound_label(int i);

#endif
