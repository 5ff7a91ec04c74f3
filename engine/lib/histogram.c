/*
 * histogram.c: the fixed bounds and the two operations of histogram.h.
 *
 * The labels are written out rather than formatted from the bounds so that
 * they are exact decimal strings, the same in every scrape, and valid
 * numbers in both the Prometheus text format and OpenMetrics (which wants a
 * decimal point in "1.0").
 */
#include "histogram.h"

static const uint64_t bounds_ns[MM_HISTO_BOUNDS] = {
	25000,      50000,       100000,      250000,     500000,     1000000,
	2500000,    5000000,     10000000,    25000000,   50000000,   100000000,
	250000000,  500000000,   1000000000,  2500000000, 5000000000, 10000000000,
};

static const char *const bound_labels[MM_HISTO_BOUNDS + 1] = {
	"0.000025", "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025",
	"0.005",    "0.01",    "0.025",  "0.05",    "0.1",    "0.25",  "0.5",
	"1.0",      "2.5",     "5.0",    "10.0",    "+Inf",
};

void mm_histo_observe(mm_histo_t *h, uint64_t ns)
{
	int i = 0;

	while (i < MM_HISTO_BOUNDS && ns > bounds_ns[i])
		i++;
	h->counts[i]++;
	h->count++;
	h->sum_ns += ns;
}

void mm_histo_add(mm_histo_t *dst, const mm_histo_t *src)
{
	for (int i = 0; i <= MM_HISTO_BOUNDS; i++)
		dst->counts[i] += src->counts[i];
	dst->count += src->count;
	dst->sum_ns += src->sum_ns;
}

uint64_t mm_histo_bound_ns(int i)
{
	return i >= 0 && i < MM_HISTO_BOUNDS ? bounds_ns[i] : UINT64_MAX;
}

const char *mm_histo_bound_label(int i)
{
	return i >= 0 && i < MM_HISTO_BOUNDS ? bound_labels[i] : bound_labels[MM_HISTO_BOUNDS];
}
