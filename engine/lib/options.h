/*
 * options.h: declarative option rows for backends (fluent-bit config_map).
 *
 * A backend lists its options once as rows (type, name, default, offset,
 * description). mm_options_apply fills the backend's config struct from
 * string key/value pairs, rejecting unknown keys and bad values with a message
 * that names the key; mm_options_doc prints the same rows as reference text.
 * Pure C: any thread.
 */
#ifndef MM_OPTIONS_H
#define MM_OPTIONS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

enum mm_opt_type {
	MM_OPT_STRING, /* const char * (borrowed from the kv array; copy if kept) */
	MM_OPT_INT,    /* int64_t */
	MM_OPT_SIZE,   /* uint64_t; accepts suffixes k, m, g (KiB, MiB, GiB) */
	MM_OPT_BOOL,   /* int; true/false/1/0/yes/no */
	MM_OPT_DURATION_MS, /* int64_t; "500ms", "1s", "30d" */
	MM_OPT_DOUBLE, /* double */
};

typedef struct mm_option {
	int type;          /* enum mm_opt_type */
	const char *name;
	const char *def;   /* default as text, NULL = none (zero) */
	size_t offset;     /* offsetof(config struct, field) */
	const char *desc;
} mm_option_t;

typedef struct mm_kv {
	const char *key;
	const char *value;
} mm_kv_t;

/* Fills cfg from defaults, then from kv[0..n). rows ends with a {0} row
 * (name == NULL). Returns 0 or MM_EINVAL ("<what>: unknown option 'x'
 * (expected one of: a, b)" or "<what>: option 'x': bad value 'y'"). */
int mm_options_apply(const mm_option_t *rows, const char *what, const mm_kv_t *kv, size_t n,
		     void *cfg);

/* Appends a Markdown table of the rows to out. */
int mm_options_doc(const mm_option_t *rows, mm_buf_t *out);

#endif
