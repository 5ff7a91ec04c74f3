/*
 * fuzz_options.c: arbitrary key/value text into the option rows parser
 * (mm_options_apply) and the reference generator (mm_options_doc).
 *
 * The input is split at NUL bytes into key, value, key, value... (at most
 * 16 pairs) and applied to rows of every type. Checked on every input:
 *   - the result is 0 or MM_EINVAL with a message that starts with what
 *     was being configured;
 *   - on success every field holds what applying its last value alone
 *     gives, integers print and parse back to themselves, booleans are 0
 *     or 1, doubles are finite, durations and sizes are what the same text
 *     gives again;
 *   - the Markdown reference of rows whose description is the input is
 *     one table row per option (no unescaped '|' or newline breaks a cell).
 */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/error.h"
#include "lib/options.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct cfg {
	const char *s;
	int64_t i;
	uint64_t z;
	int b;
	int64_t d;
	double f;
} cfg_t;

static const mm_option_t rows[] = {
	{MM_OPT_STRING, "s", "dflt", offsetof(cfg_t, s), "a string"},
	{MM_OPT_INT, "i", "-5", offsetof(cfg_t, i), "an integer"},
	{MM_OPT_SIZE, "z", "1m", offsetof(cfg_t, z), "a size"},
	{MM_OPT_BOOL, "b", "yes", offsetof(cfg_t, b), "a boolean"},
	{MM_OPT_DURATION_MS, "d", "1s", offsetof(cfg_t, d), "a duration"},
	{MM_OPT_DOUBLE, "f", "0.5", offsetof(cfg_t, f), "a double"},
	{0},
};

#define PAIRS 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1), *tok[2 * PAIRS];
	mm_kv_t kv[PAIRS];
	size_t ntok = 0, n, at = 0;
	cfg_t cfg, one;
	int rc;

	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	while (at <= size && ntok < 2 * PAIRS) {
		tok[ntok++] = text + at;
		at += strlen(text + at) + 1;
	}
	n = ntok / 2;
	for (size_t k = 0; k < n; k++) {
		kv[k].key = tok[2 * k];
		kv[k].value = tok[2 * k + 1];
	}

	memset(&cfg, 0xa5, sizeof(cfg));
	rc = mm_options_apply(rows, "fuzz", kv, n, &cfg);
	if (rc != 0) {
		if (rc != MM_EINVAL || strncmp(mm_diag_msg(), "fuzz: ", 6) != 0)
			abort();
		goto out;
	}
	if (cfg.b != 0 && cfg.b != 1)
		abort();
	if (!isfinite(cfg.f))
		abort();
	for (size_t k = 0; k < n; k++) {
		char buf[32];

		/* A later pair of the same key overrides this one. */
		int last = 1;

		for (size_t l = k + 1; l < n; l++)
			if (strcmp(kv[l].key, kv[k].key) == 0)
				last = 0;
		if (!last)
			continue;
		if (mm_options_apply(rows, "fuzz", &kv[k], 1, &one) != 0)
			abort();
		switch (kv[k].key[0]) {
		case 's':
			if (cfg.s != kv[k].value)
				abort();
			break;
		case 'i':
			snprintf(buf, sizeof(buf), "%" PRId64, cfg.i);
			if (one.i != cfg.i)
				abort();
			{
				mm_kv_t back = {"i", buf};

				if (mm_options_apply(rows, "fuzz", &back, 1, &one) != 0 ||
				    one.i != cfg.i)
					abort();
			}
			break;
		case 'z':
			if (one.z != cfg.z)
				abort();
			break;
		case 'b':
			if (one.b != cfg.b)
				abort();
			break;
		case 'd':
			if (one.d != cfg.d)
				abort();
			break;
		case 'f':
			if (memcmp(&one.f, &cfg.f, sizeof(double)) != 0)
				abort();
			break;
		default:
			abort(); /* an unknown key was accepted */
		}
	}
out:
	{
		/* The reference: one row per option, whatever the description. */
		mm_option_t doc[3] = {
			{MM_OPT_STRING, "x", NULL, 0, text},
			{MM_OPT_INT, "y", "7", 0, "plain"},
			{0},
		};
		mm_buf_t out = {0};
		size_t lines = 0;

		if (mm_options_doc(doc, &out) != 0)
			abort();
		for (size_t k = 0; k < out.len; k++)
			lines += out.p[k] == '\n';
		if (lines != 4) /* header, separator, two rows */
			abort();
		mm_buf_free(&out);
	}
	free(text);
	return 0;
}
