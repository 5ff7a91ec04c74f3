/*
 * json.h: a strict, allocation-free JSON scanner for the event hot path.
 *
 * mm_json_scan validates a whole document against RFC 8259 (no trailing
 * commas, no comments, no leading zeros, no control characters in strings,
 * UTF-8 checked including overlongs/surrogates, \u escapes checked, lone
 * surrogate escapes rejected, nesting depth limited) and, in the same pass,
 * records where the requested top-level members are. Nothing is copied or
 * allocated; spans point into the input. This is the C fast path: the runtime
 * extracts key/value/time/id fields without building any Lua table.
 *
 * mm_json_parse walks a document and reports tokens to callbacks, for the
 * binding layer that turns events into Lua tables (the slow path).
 *
 * Pure C, no global state: any thread.
 */
#ifndef MM_JSON_H
#define MM_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "../lib/buf.h"

enum mm_json_type {
	MM_JSON_ABSENT = 0,
	MM_JSON_NULL,
	MM_JSON_FALSE,
	MM_JSON_TRUE,
	MM_JSON_NUMBER,
	MM_JSON_STRING,
	MM_JSON_ARRAY,
	MM_JSON_OBJECT,
};

#define MM_JSON_MAX_DEPTH 64

/* A top-level member the caller wants located. */
typedef struct mm_json_field {
	const char *name;    /* in: member name (unescaped form) */
	size_t name_len;     /* in */
	int type;            /* out: enum mm_json_type, ABSENT if not present */
	const char *p;       /* out: for STRING the bytes between the quotes (still
	                      * escaped if `escaped`); otherwise the raw token */
	size_t len;          /* out */
	int escaped;         /* out: STRING contains backslash escapes */
} mm_json_field_t;

/*
 * Validates p[0..n) as one JSON object (surrounding whitespace allowed) and
 * fills `fields`. Returns 0, MM_ENOTOBJ when the document is valid JSON but
 * not an object, MM_EUTF8 for invalid UTF-8, MM_EJSON for anything else
 * (syntax, depth over MM_JSON_MAX_DEPTH, a requested member present twice);
 * the diag detail names the byte offset.
 */
int mm_json_scan(const char *p, size_t n, mm_json_field_t *fields, int nfields);

/*
 * What mm_json_scan works out from the requested names before it looks at a
 * document, worked out once for scans that all ask for the same fields (the
 * record loop: every record of a batch). Filled by mm_json_plan; plain data,
 * no pointer into the fields.
 *
 * For each of the first MM_JSON_PLAN_NAMES names it keeps the eight bytes
 * the scanner loads at a key's start and at its end, as they are when the
 * key is that name, so that a key is matched by two loads and two compares
 * (json.c, key_loads). A scan asking for more fields does without (the
 * per-string path). The record loop asks for at most MM_MAX_KEYS + 3.
 */
#define MM_JSON_PLAN_NAMES 24

typedef struct mm_json_plan_name {
	uint64_t head; /* the load at the key's start */
	uint64_t tail; /* the load that ends with the key */
	uint64_t mask; /* the bytes that are the key's, or its quotes and colon */
	size_t len;
} mm_json_plan_name_t;

/* lua/murmur/cdef.lua declares these two as well (the Lua path's field
 * plans keep one): a change here bumps MM_FFI_ABI (engine/lua/core_lua.c). */
typedef struct mm_json_plan {
	uint64_t lens;   /* bit L % 64 set for each requested name length L */
	int nfields;
	int same_names;  /* two requested fields have the same name */
	int wide;        /* the scan may use AVX2 (the CPU has it); a caller
	                  * may clear it to have the baseline's code */
	mm_json_plan_name_t names[MM_JSON_PLAN_NAMES]; /* [0..nfields) */
} mm_json_plan_t;

/* Makes the plan for fields[0..nfields), of which it reads only the names
 * and name lengths (fields may be NULL when nfields is 0). */
void mm_json_plan(mm_json_plan_t *plan, const mm_json_field_t *fields, int nfields);

/* mm_json_scan(p, n, fields, plan->nfields) for fields with the names the
 * plan was made from: the same contract and the same results. */
int mm_json_scan_planned(const mm_json_plan_t *plan, const char *p, size_t n,
			 mm_json_field_t *fields);

/* mm_json_scan without its fast path for flat objects (json.c): the same
 * contract and results, for the tests and fuzzers that compare the two. */
int mm_json_scan_reference(const char *p, size_t n, mm_json_field_t *fields, int nfields);

/*
 * The Lua path's shortcut (lua/murmur/runtime.lua, through the FFI): returns
 * 1 when p[0..n) is one object of at most 32 members, each a string, number
 * or literal, with distinct unescaped names and no number that could
 * overflow a double, and fills `fields` as mm_json_scan does:
 * mm_lua_json_decode would then succeed and build exactly these members.
 * Returns 0 for anything else, valid or not (nested values, escaped keys,
 * short documents, every error), setting no diag and leaving `fields`
 * meaningless: the caller then decodes the document in full, which decides
 * and words any rejection. A requested STRING may still be `escaped`.
 */
int mm_json_scan_flat(const char *p, size_t n, mm_json_field_t *fields, int nfields);

/* mm_json_scan_flat for fields with the names plan was made from
 * (mm_json_plan): the Lua path's plans ask for the same names record after
 * record, as the record loop does. */
int mm_json_scan_flat_planned(const mm_json_plan_t *plan, const char *p, size_t n,
			      mm_json_field_t *fields);

/* Appends the unescaped UTF-8 of a STRING span (as returned by scan) to out.
 * Returns 0, MM_EJSON on a bad escape, MM_ENOMEM. */
int mm_json_unescape(const char *p, size_t len, mm_buf_t *out);

/* Parses a NUMBER token. Sets *is_int and *i when it is an integer that fits
 * in int64; always sets *d. Returns 0 or MM_ERANGE when the value overflows a
 * double (1e999). */
int mm_json_number(const char *p, size_t len, int *is_int, int64_t *i, double *d);

/*
 * The canonical text of a JSON number used as a key, element or event id,
 * so that numbers equal as the engine reads them name one entity whatever
 * their spelling, on the C path and the Lua path (runtime.lua as_string
 * implements the same rules):
 *   - an integer token that fits int64 prints as that integer, exactly
 *     ("-0" -> "0", "9007199254740993" stays);
 *   - any other token is read as the nearest double; an integral double in
 *     [-2^63, 2^63) prints as an integer ("1.0", "1e0", "10E-1" -> "1",
 *     "1e18" -> "1000000000000000000", underflow "1e-400" -> "0");
 *   - other doubles print in the shortest of %.15g, %.16g, %.17g that reads
 *     back to the same double ("0.1", "1.2345678901234568e+29" for
 *     123456789012345678901234567890: digits beyond a double are dropped);
 *   - a number that overflows a double ("1e400") is MM_ERANGE.
 * Writes at most MM_JSON_KEY_MAX bytes (no NUL) to out and sets *outlen.
 */
#define MM_JSON_KEY_MAX 32
int mm_json_number_key(const char *p, size_t len, char *out, size_t *outlen);

/* The canonical text (as above) of a finite double. Returns its length. */
size_t mm_json_double_key(double d, char *out);

/* Appends s as a JSON string literal (with quotes), escaping as needed.
 * Invalid UTF-8 bytes are emitted as \ufffd. */
int mm_json_quote(const char *s, size_t len, mm_buf_t *out);

/* SAX-style walk used by the Lua binding. Every callback returns 0 to go on or
 * a negative code to abort (returned by mm_json_parse). Strings and keys are
 * delivered unescaped in a scratch buffer valid only during the callback. */
typedef struct mm_json_visitor {
	int (*on_null)(void *ud);
	int (*on_bool)(void *ud, int v);
	int (*on_number)(void *ud, const char *raw, size_t len);
	int (*on_string)(void *ud, const char *s, size_t len);
	int (*on_key)(void *ud, const char *s, size_t len);
	int (*on_begin)(void *ud, int is_object);
	int (*on_end)(void *ud, int is_object);
} mm_json_visitor_t;

/* Validates and walks any JSON value (not only objects). Same errors as scan. */
int mm_json_parse(const char *p, size_t n, const mm_json_visitor_t *v, void *ud);

/* As mm_json_parse, but unescapes into the caller's scratch buffer (its
 * contents are overwritten, its capacity kept) instead of a private one. For
 * callers whose callbacks may longjmp (the Lua binding: lua_pushlstring raises
 * on out-of-memory), so that every allocation has an owner that survives the
 * jump, and so that a reused scratch saves a malloc per document. */
int mm_json_parse_buf(const char *p, size_t n, const mm_json_visitor_t *v, void *ud,
		      mm_buf_t *scratch);

#endif
