/*
 * json_number.c: JSON numbers as the engine reads them (see json.h):
 * validation against the grammar, int64 when exact, doubles through strtod
 * in the C locale, and the canonical text of a number used as a key.
 */
#define _GNU_SOURCE /* strtod_l */
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "json.h"
#include "json_lex.h"

static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static locale_t c_locale;

static void c_locale_init(void)
{
	c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

/* strtod in the C locale, whatever setlocale() the embedding program (or a
 * Lua script through os.setlocale) chose: JSON's decimal point is always '.'. */
static double strtod_c(const char *s)
{
	pthread_once(&c_locale_once, c_locale_init);
	if (c_locale != (locale_t)0)
		return strtod_l(s, NULL, c_locale);
	return strtod(s, NULL);
}

int mm_json_number(const char *p, size_t len, int *is_int, int64_t *i, double *d)
{
	const unsigned char *s = (const unsigned char *)p, *end = s + len, *bad, *q;
	char local[128], *copy = local;
	uint64_t acc = 0;
	int neg, overflow = 0;

	if (p == NULL || is_int == NULL || i == NULL || d == NULL)
		return mm_diag_set(MM_EINVAL, "json: bad number arguments");
	*is_int = 0;
	*i = 0;
	*d = 0;
	if (len == 0 || scan_number(s, end, &bad) != end)
		return mm_diag_set(MM_EJSON, "json: invalid number \"%.*s\"",
				   (int)(len < 64 ? len : 64), p);
	neg = *s == '-';
	for (q = s + neg; q < end && is_digit(*q); q++) {
		unsigned digit = (unsigned)(*q - '0');

		if (acc > (UINT64_MAX - digit) / 10)
			overflow = 1;
		else
			acc = acc * 10 + digit;
	}
	if (q == end && !overflow && acc <= (uint64_t)INT64_MAX + neg) {
		*is_int = 1;
		*i = neg ? (int64_t)(0 - acc) : (int64_t)acc;
		*d = neg && acc == 0 ? -0.0 : (double)*i;
		return 0;
	}
	/* strtod needs a terminated string; the token is not. Tokens longer than
	 * the local buffer (hundreds of digits) are legal and rare. */
	if (len >= sizeof(local) && (copy = malloc(len + 1)) == NULL)
		return mm_diag_set(MM_ENOMEM, "json: cannot copy a %zu-byte number", len);
	memcpy(copy, p, len);
	copy[len] = '\0';
	*d = strtod_c(copy);
	if (copy != local)
		free(copy);
	if (isinf(*d))
		return mm_diag_set(MM_ERANGE, "json: number \"%.*s\" overflows a double",
				   (int)(len < 64 ? len : 64), p);
	return 0;
}

size_t mm_json_double_key(double d, char *out)
{
	char buf[40];
	int n = 0;

	if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
		n = snprintf(buf, sizeof(buf), "%lld", (long long)d); /* -0.0 -> "0" */
	} else {
		for (int prec = 15; prec <= 17; prec++) {
			n = snprintf(buf, sizeof(buf), "%.*g", prec, d);
			/* printf follows the locale's decimal point; JSON's is a dot. */
			for (int i = 0; i < n; i++)
				if (buf[i] == ',')
					buf[i] = '.';
			if (strtod_c(buf) == d)
				break;
		}
	}
	memcpy(out, buf, (size_t)n);
	return (size_t)n;
}

int mm_json_number_key(const char *p, size_t len, char *out, size_t *outlen)
{
	int is_int, rc;
	int64_t i;
	double d;

	if ((rc = mm_json_number(p, len, &is_int, &i, &d)) != 0)
		return rc;
	if (is_int) {
		char buf[24];
		int n = snprintf(buf, sizeof(buf), "%lld", (long long)i);

		memcpy(out, buf, (size_t)n);
		*outlen = (size_t)n;
		return 0;
	}
	*outlen = mm_json_double_key(d, out);
	return 0;
}
