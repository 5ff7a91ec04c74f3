/*
 * options.c: fills a backend's config struct from declarative option rows.
 *
 * Values are parsed strictly: the whole string must be consumed, with no
 * surrounding whitespace, no '+' sign and no silent clamping, because a
 * typo in a config file should stop the pipeline at load rather than run
 * it with a value nobody asked for. Fields are written with memcpy at the
 * row's offset, so rows impose no alignment beyond the struct's own.
 *
 * Defaults are applied to every row first (a NULL default zeroes the field),
 * then the pairs in order; a key given twice takes its last value. A bad
 * default is a bug in the backend's rows and is reported like a bad value.
 */
#include "options.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "time.h"

static const char *const type_names[] = {
	[MM_OPT_STRING] = "string",
	[MM_OPT_INT] = "int",
	[MM_OPT_SIZE] = "size",
	[MM_OPT_BOOL] = "bool",
	[MM_OPT_DURATION_MS] = "duration",
	[MM_OPT_DOUBLE] = "double",
};

/* What a value of each type looks like, for error messages. */
static const char *const type_hints[] = {
	[MM_OPT_STRING] = "a string",
	[MM_OPT_INT] = "an integer",
	[MM_OPT_SIZE] = "a size such as 4096, 64k, 16m or 1g",
	[MM_OPT_BOOL] = "true, false, yes, no, 1 or 0",
	[MM_OPT_DURATION_MS] = "a duration such as 500ms, 30s, 5m, 12h or 7d",
	[MM_OPT_DOUBLE] = "a finite number",
};

static int valid_type(int type)
{
	return type >= MM_OPT_STRING && type <= MM_OPT_DOUBLE;
}

/* Unsigned decimal digits, the whole of s[0..n); -1 if empty, not digits or over max. */
static int parse_digits(const char *s, size_t n, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned d = (unsigned)(s[i] - '0');

		if (d > 9 || v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

static int parse_int(const char *s, int64_t *out)
{
	int neg = s[0] == '-';
	uint64_t u;

	/* The magnitude of INT64_MIN is INT64_MAX + 1. */
	if (parse_digits(s + neg, strlen(s + neg), (uint64_t)INT64_MAX + neg, &u))
		return -1;
	*out = neg ? (int64_t)(0 - u) : (int64_t)u;
	return 0;
}

static int parse_size(const char *s, uint64_t *out)
{
	size_t n = strlen(s);
	unsigned shift = 0;
	uint64_t v;

	if (n > 0) {
		switch (tolower((unsigned char)s[n - 1])) {
		case 'k':
			shift = 10;
			break;
		case 'm':
			shift = 20;
			break;
		case 'g':
			shift = 30;
			break;
		}
	}
	if (shift)
		n--;
	if (parse_digits(s, n, UINT64_MAX >> shift, &v))
		return -1;
	*out = v << shift;
	return 0;
}

static int parse_bool(const char *s, int *out)
{
	static const char *const yes[] = {"true", "yes", "1"}, *const no[] = {"false", "no", "0"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

static int parse_double(const char *s, double *out)
{
	char *end;
	double d;

	/* strtod skips leading spaces and reads "nan"/"inf"; refuse both. */
	if (s[0] == '\0' || isspace((unsigned char)s[0]))
		return -1;
	d = strtod(s, &end);
	if (*end != '\0' || !isfinite(d))
		return -1;
	*out = d;
	return 0;
}

/* Parses s per the row and stores it into cfg; -1 if s is not a valid value. */
static int set_field(const mm_option_t *o, const char *s, void *cfg)
{
	void *field = (char *)cfg + o->offset;
	int64_t i;
	uint64_t u;
	double d;
	int b;

	switch (o->type) {
	case MM_OPT_STRING:
		memcpy(field, &s, sizeof(s));
		return 0;
	case MM_OPT_INT:
		if (parse_int(s, &i))
			return -1;
		memcpy(field, &i, sizeof(i));
		return 0;
	case MM_OPT_SIZE:
		if (parse_size(s, &u))
			return -1;
		memcpy(field, &u, sizeof(u));
		return 0;
	case MM_OPT_BOOL:
		if (parse_bool(s, &b))
			return -1;
		memcpy(field, &b, sizeof(b));
		return 0;
	case MM_OPT_DURATION_MS:
		/* The parser's own diagnostic is replaced by ours, which names the key. */
		if (mm_duration_parse(s, strlen(s), &i))
			return -1;
		memcpy(field, &i, sizeof(i));
		return 0;
	default:
		if (parse_double(s, &d))
			return -1;
		memcpy(field, &d, sizeof(d));
		return 0;
	}
}

static void zero_field(const mm_option_t *o, void *cfg)
{
	static const size_t sizes[] = {
		[MM_OPT_STRING] = sizeof(const char *), [MM_OPT_INT] = sizeof(int64_t),
		[MM_OPT_SIZE] = sizeof(uint64_t),	[MM_OPT_BOOL] = sizeof(int),
		[MM_OPT_DURATION_MS] = sizeof(int64_t), [MM_OPT_DOUBLE] = sizeof(double),
	};
	const char *null = NULL;

	if (o->type == MM_OPT_STRING)
		memcpy((char *)cfg + o->offset, &null, sizeof(null));
	else
		memset((char *)cfg + o->offset, 0, sizes[o->type]);
}

static int unknown_key(const mm_option_t *rows, const char *what, const char *key)
{
	char names[400];
	size_t len = 0;

	names[0] = '\0';
	for (const mm_option_t *o = rows; o->name != NULL && len < sizeof(names); o++) {
		int n = snprintf(names + len, sizeof(names) - len, "%s%s", o == rows ? "" : ", ",
				 o->name);

		len += n > 0 ? (size_t)n : 0;
	}
	return mm_diag_set(MM_EINVAL, "%s: unknown option '%s' (expected one of: %s)", what, key,
			   names);
}

int mm_options_apply(const mm_option_t *rows, const char *what, const mm_kv_t *kv, size_t n,
		     void *cfg)
{
	const mm_option_t *o;

	if (what == NULL)
		what = "options";
	for (o = rows; o->name != NULL; o++) {
		if (!valid_type(o->type))
			return mm_diag_set(MM_EINVAL, "%s: option '%s' has unknown type %d", what,
					   o->name, o->type);
		zero_field(o, cfg);
		if (o->def != NULL && set_field(o, o->def, cfg))
			return mm_diag_set(MM_EINVAL, "%s: option '%s': bad default '%s'", what,
					   o->name, o->def);
	}
	for (size_t i = 0; i < n; i++) {
		const char *key = kv[i].key ? kv[i].key : "(null)";

		for (o = rows; o->name != NULL && strcmp(o->name, key) != 0; o++)
			;
		if (o->name == NULL)
			return unknown_key(rows, what, key);
		if (kv[i].value == NULL || set_field(o, kv[i].value, cfg))
			return mm_diag_set(
				MM_EINVAL, "%s: option '%s': bad value '%s' (expected %s)", what,
				key, kv[i].value ? kv[i].value : "(null)", type_hints[o->type]);
	}
	return 0;
}

/* Appends s with the characters that would break a Markdown table cell escaped. */
static int put_cell(mm_buf_t *out, const char *s)
{
	int rc = 0;

	for (; *s != '\0' && rc == 0; s++) {
		if (*s == '|')
			rc = mm_buf_append(out, "\\|", 2);
		else if (*s == '\n')
			rc = mm_buf_put_u8(out, ' ');
		else
			rc = mm_buf_put_u8(out, (uint8_t)*s);
	}
	return rc;
}

int mm_options_doc(const mm_option_t *rows, mm_buf_t *out)
{
	int rc = mm_buf_printf(out, "| Option | Type | Default | Description |\n"
				    "| --- | --- | --- | --- |\n");

	for (const mm_option_t *o = rows; rc == 0 && o->name != NULL; o++) {
		rc = mm_buf_printf(out, "| `%s` | %s | ", o->name,
				   valid_type(o->type) ? type_names[o->type] : "?");
		if (rc == 0)
			rc = o->def ? mm_buf_printf(out, "`%s`", o->def)
				    : mm_buf_append(out, "-", 1);
		if (rc == 0)
			rc = mm_buf_append(out, " | ", 3);
		if (rc == 0)
			rc = put_cell(out, o->desc ? o->desc : "");
		if (rc == 0)
			rc = mm_buf_append(out, " |\n", 3);
	}
	return rc;
}
