/*
 * test_expo.c: the exposition writer (both formats' HELP/TYPE naming, label
 * escaping, non-UTF-8 label values, numbers, cumulative histogram buckets),
 * the histogram's bucket choice at the bounds, and the Accept negotiation
 * with the header Prometheus sends.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "lib/expo.h"
#include "lib/histogram.h"
#include "unit.h"

static const char *text(mm_buf_t *b)
{
	mm_buf_append(b, "", 1);
	b->len--;
	return (const char *)b->p;
}

TEST(counter_names_per_format)
{
	mm_buf_t b = {0};
	mm_expo_t w;

	mm_expo_begin(&w, &b, 0);
	mm_expo_family(&w, "murmur_x", MM_EXPO_COUNTER, "Things.");
	mm_expo_value(&w, NULL, 3);
	CHECK_EQ_INT(mm_expo_end(&w), 0);
	CHECK(strcmp(text(&b), "# HELP murmur_x_total Things.\n# TYPE murmur_x_total counter\n"
			       "murmur_x_total 3\n") == 0);
	b.len = 0;
	mm_expo_begin(&w, &b, 1);
	mm_expo_family(&w, "murmur_x", MM_EXPO_COUNTER, "Things.");
	mm_expo_value(&w, NULL, 3);
	CHECK_EQ_INT(mm_expo_end(&w), 0);
	CHECK(strcmp(text(&b), "# HELP murmur_x Things.\n# TYPE murmur_x counter\n"
			       "murmur_x_total 3\n# EOF\n") == 0);
	mm_buf_free(&b);
}

TEST(labels_escaped)
{
	mm_buf_t b = {0};
	mm_expo_t w;
	const char *const l[] = {"source", "a\\b\"c\nd", "x", "\xff\xfe" "ok", NULL};
	const char *const u[] = {"source", "caf\xc3\xa9", NULL};

	mm_expo_begin(&w, &b, 0);
	mm_expo_family(&w, "murmur_g", MM_EXPO_GAUGE, "G.");
	mm_expo_value(&w, l, 1.5);
	mm_expo_value(&w, u, NAN);
	mm_expo_value(&w, NULL, INFINITY);
	mm_expo_value(&w, NULL, -INFINITY);
	mm_expo_value(&w, NULL, 1e20);
	mm_expo_end(&w);
	CHECK(strstr(text(&b), "murmur_g{source=\"a\\\\b\\\"c\\nd\",x=\"??ok\"} 1.5\n") != NULL);
	CHECK(strstr(text(&b), "murmur_g{source=\"caf\xc3\xa9\"} NaN\n") != NULL);
	CHECK(strstr(text(&b), "murmur_g +Inf\nmurmur_g -Inf\nmurmur_g 1e+20\n") != NULL);
	mm_buf_free(&b);
}

TEST(histogram_buckets)
{
	mm_histo_t h = {0}, h2 = {0};
	mm_buf_t b = {0};
	mm_expo_t w;
	const char *const l[] = {"op", "store_get", NULL};

	/* On a bound counts in that bucket (le is "less or equal"). */
	mm_histo_observe(&h, 25000);
	mm_histo_observe(&h, 25001);
	mm_histo_observe(&h, 1000000000);
	mm_histo_observe(&h, 20000000000ull);
	CHECK_EQ_INT(h.counts[0], 1);
	CHECK_EQ_INT(h.counts[1], 1);
	CHECK_EQ_INT(h.counts[14], 1);
	CHECK_EQ_INT(h.counts[MM_HISTO_BOUNDS], 1);
	CHECK_EQ_INT(h.count, 4);
	mm_histo_add(&h2, &h);
	mm_histo_add(&h2, &h);
	CHECK_EQ_INT(h2.count, 8);
	CHECK_EQ_INT(h2.counts[1], 2);
	CHECK(mm_histo_bound_ns(MM_HISTO_BOUNDS) == UINT64_MAX);
	mm_expo_begin(&w, &b, 0);
	mm_expo_family(&w, "murmur_d_seconds", MM_EXPO_HISTOGRAM, "D.");
	mm_expo_histogram(&w, l, &h);
	mm_expo_end(&w);
	CHECK(strstr(text(&b), "murmur_d_seconds_bucket{op=\"store_get\",le=\"0.000025\"} 1\n") != NULL);
	CHECK(strstr(text(&b), "murmur_d_seconds_bucket{op=\"store_get\",le=\"0.00005\"} 2\n") != NULL);
	CHECK(strstr(text(&b), "murmur_d_seconds_bucket{op=\"store_get\",le=\"0.5\"} 2\n") != NULL);
	CHECK(strstr(text(&b), "murmur_d_seconds_bucket{op=\"store_get\",le=\"1.0\"} 3\n") != NULL);
	CHECK(strstr(text(&b), "murmur_d_seconds_bucket{op=\"store_get\",le=\"+Inf\"} 4\n") != NULL);
	CHECK(strstr(text(&b), "murmur_d_seconds_sum{op=\"store_get\"} 21.000050001\n") != NULL);
	CHECK(strstr(text(&b), "murmur_d_seconds_count{op=\"store_get\"} 4\n") != NULL);
	mm_buf_free(&b);
}

TEST(accept_negotiation)
{
	/* What Prometheus 2.42 sends. */
	CHECK(mm_expo_wants_openmetrics("application/openmetrics-text;version=1.0.0,"
					"application/openmetrics-text;version=0.0.1;q=0.75,"
					"text/plain;version=0.0.4;q=0.5,*/*;q=0.1"));
	CHECK(mm_expo_wants_openmetrics("application/openmetrics-text"));
	CHECK(!mm_expo_wants_openmetrics(NULL));
	CHECK(!mm_expo_wants_openmetrics(""));
	CHECK(!mm_expo_wants_openmetrics("*/*"));
	CHECK(!mm_expo_wants_openmetrics("text/plain"));
	/* A version we do not write, or a lower q, loses. */
	CHECK(!mm_expo_wants_openmetrics("application/openmetrics-text; version=0.0.1, text/plain;q=0.5"));
	CHECK(!mm_expo_wants_openmetrics("application/openmetrics-text;q=0.2, text/plain;q=0.9"));
	CHECK(!mm_expo_wants_openmetrics("application/openmetrics-text;q=0"));
	CHECK(mm_expo_wants_openmetrics(" text/plain;q=0.3 , Application/OpenMetrics-Text ; q=0.4"));
	CHECK(strstr(mm_expo_content_type(1), "application/openmetrics-text; version=1.0.0") != NULL);
	CHECK(strstr(mm_expo_content_type(0), "text/plain; version=0.0.4") != NULL);
}

int main(void)
{
	RUN(counter_names_per_format);
	RUN(labels_escaped);
	RUN(histogram_buckets);
	RUN(accept_negotiation);
	UNIT_DONE();
}
