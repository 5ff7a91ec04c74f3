/*
 * expo.c: the exposition writer of expo.h.
 *
 * Numbers: integral values below 2^53 print as integers ("42"), others with
 * 17 significant digits, which round-trips every double; NaN and the
 * infinities use the spellings both formats define ("NaN", "+Inf", "-Inf").
 */
#include "expo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "text.h"

void mm_expo_begin(mm_expo_t *w, mm_buf_t *out, int openmetrics)
{
	memset(w, 0, sizeof(*w));
	w->out = out;
	w->openmetrics = openmetrics;
}

static void put(mm_expo_t *w, const char *s, size_t n)
{
	if (w->rc == 0 && mm_buf_append(w->out, s, n) != 0)
		w->rc = MM_ENOMEM;
}

static void puts_(mm_expo_t *w, const char *s)
{
	put(w, s, strlen(s));
}

static void put_number(mm_expo_t *w, double v)
{
	char num[40];

	if (isnan(v))
		snprintf(num, sizeof(num), "NaN");
	else if (isinf(v))
		snprintf(num, sizeof(num), v > 0 ? "+Inf" : "-Inf");
	else if (v == floor(v) && fabs(v) < 9007199254740992.0)
		snprintf(num, sizeof(num), "%.0f", v);
	else
		snprintf(num, sizeof(num), "%.17g", v);
	puts_(w, num);
}

void mm_expo_family(mm_expo_t *w, const char *name, enum mm_expo_type type, const char *help)
{
	static const char *const types[] = {"counter", "gauge", "histogram"};
	/* 0.0.4 names the counter's sample, OpenMetrics its family. */
	const char *suffix = type == MM_EXPO_COUNTER && !w->openmetrics ? "_total" : "";

	w->name = name;
	w->type = type;
	puts_(w, "# HELP ");
	puts_(w, name);
	puts_(w, suffix);
	puts_(w, " ");
	puts_(w, help);
	puts_(w, "\n# TYPE ");
	puts_(w, name);
	puts_(w, suffix);
	puts_(w, " ");
	puts_(w, types[type]);
	puts_(w, "\n");
}

static void put_label_value(mm_expo_t *w, const char *v)
{
	size_t n = strlen(v);
	int valid = mm_utf8_valid(v, n);

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];

		if (c == '\\')
			put(w, "\\\\", 2);
		else if (c == '"')
			put(w, "\\\"", 2);
		else if (c == '\n')
			put(w, "\\n", 2);
		else if (c >= 0x80 && !valid)
			put(w, "?", 1);
		else
			put(w, v + i, 1);
	}
}

/* Writes name+suffix{labels[,le="..."]} and a space. */
static void put_series(mm_expo_t *w, const char *suffix, const char *const *labels, const char *le)
{
	int first = 1;

	puts_(w, w->name);
	puts_(w, suffix);
	if ((labels == NULL || labels[0] == NULL) && le == NULL) {
		puts_(w, " ");
		return;
	}
	puts_(w, "{");
	for (size_t i = 0; labels && labels[i] != NULL && labels[i + 1] != NULL; i += 2) {
		puts_(w, first ? "" : ",");
		puts_(w, labels[i]);
		puts_(w, "=\"");
		put_label_value(w, labels[i + 1]);
		puts_(w, "\"");
		first = 0;
	}
	if (le != NULL) {
		puts_(w, first ? "le=\"" : ",le=\"");
		puts_(w, le);
		puts_(w, "\"");
	}
	puts_(w, "} ");
}

void mm_expo_value(mm_expo_t *w, const char *const *labels, double v)
{
	put_series(w, w->type == MM_EXPO_COUNTER ? "_total" : "", labels, NULL);
	put_number(w, v);
	puts_(w, "\n");
}

/* Writes the buckets, then _sum (already formatted) and _count. */
static void put_histogram(mm_expo_t *w, const char *const *labels, size_t n, const char *const *le,
			  const uint64_t *cum, const char *sum, uint64_t count)
{
	for (size_t i = 0; i < n; i++) {
		put_series(w, "_bucket", labels, le[i]);
		put_number(w, (double)cum[i]);
		puts_(w, "\n");
	}
	put_series(w, "_sum", labels, NULL);
	puts_(w, sum);
	puts_(w, "\n");
	put_series(w, "_count", labels, NULL);
	put_number(w, (double)count);
	puts_(w, "\n");
}

void mm_expo_histogram(mm_expo_t *w, const char *const *labels, const mm_histo_t *h)
{
	const char *le[MM_HISTO_BOUNDS + 1];
	uint64_t cum[MM_HISTO_BOUNDS + 1], acc = 0;
	char sum[40];

	for (int i = 0; i <= MM_HISTO_BOUNDS; i++) {
		acc += h->counts[i];
		cum[i] = acc;
		le[i] = mm_histo_bound_label(i);
	}
	/* Nanoseconds as seconds with nine decimals: exact, whatever the sum. */
	snprintf(sum, sizeof(sum), "%llu.%09llu", (unsigned long long)(h->sum_ns / 1000000000u),
		 (unsigned long long)(h->sum_ns % 1000000000u));
	put_histogram(w, labels, MM_HISTO_BOUNDS + 1, le, cum, sum, h->count);
}

void mm_expo_histogram_le(mm_expo_t *w, const char *const *labels, size_t n,
			  const char *const *le, const uint64_t *cum, double sum_s, uint64_t count)
{
	char sum[40];

	snprintf(sum, sizeof(sum), "%.9f", sum_s);
	put_histogram(w, labels, n, le, cum, sum, count);
}

int mm_expo_end(mm_expo_t *w)
{
	if (w->openmetrics)
		puts_(w, "# EOF\n");
	return w->rc;
}

/* The q value of one media range's parameters ("; version=1.0.0; q=0.5"),
 * or -1 when a version parameter names a version we do not write. */
static double media_q(const char *params, size_t n, const char *version)
{
	double q = 1;
	size_t i = 0;

	while (i < n) {
		size_t start, end;
		const char *eq;

		while (i < n && (params[i] == ';' || params[i] == ' ' || params[i] == '\t'))
			i++;
		start = i;
		while (i < n && params[i] != ';')
			i++;
		end = i;
		while (end > start && (params[end - 1] == ' ' || params[end - 1] == '\t'))
			end--;
		eq = memchr(params + start, '=', end - start);
		if (eq == NULL)
			continue;
		if ((size_t)(eq - params - start) == 1 && (params[start] == 'q' || params[start] == 'Q')) {
			char tmp[16];
			size_t len = end - (size_t)(eq + 1 - params);

			if (len >= sizeof(tmp))
				len = sizeof(tmp) - 1;
			memcpy(tmp, eq + 1, len);
			tmp[len] = '\0';
			q = strtod(tmp, NULL);
		} else if ((size_t)(eq - params - start) == 7 &&
			   strncasecmp(params + start, "version", 7) == 0 && version != NULL) {
			size_t len = end - (size_t)(eq + 1 - params);

			if (len != strlen(version) || memcmp(eq + 1, version, len) != 0)
				return -1;
		}
	}
	return q;
}

int mm_expo_wants_openmetrics(const char *accept)
{
	double om = 0, text = 0;
	const char *p = accept;

	while (p != NULL && *p != '\0') {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		const char *semi = memchr(p, ';', n);
		size_t tlen = semi ? (size_t)(semi - p) : n;
		const char *params = p + tlen;
		size_t plen = n - tlen;

		while (tlen > 0 && (*p == ' ' || *p == '\t')) {
			p++;
			tlen--;
		}
		while (tlen > 0 && (p[tlen - 1] == ' ' || p[tlen - 1] == '\t'))
			tlen--;
		if (tlen == 28 && strncasecmp(p, "application/openmetrics-text", 28) == 0) {
			double q = media_q(params, plen, "1.0.0");

			if (q > om)
				om = q;
		} else if ((tlen == 10 && strncasecmp(p, "text/plain", 10) == 0) ||
			   (tlen == 3 && memcmp(p, "*/*", 3) == 0)) {
			double q = media_q(params, plen, NULL);

			if (q > text)
				text = q;
		}
		p = comma ? comma + 1 : NULL;
	}
	return om > 0 && om >= text;
}

const char *mm_expo_content_type(int openmetrics)
{
	return openmetrics ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
			   : "text/plain; version=0.0.4; charset=utf-8";
}
