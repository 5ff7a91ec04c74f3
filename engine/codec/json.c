/*
 * json.c: the strict JSON scanner, the SAX walk and the string/number helpers.
 *
 * Design. One validating state machine (walk) serves both mm_json_scan and
 * mm_json_parse: it is always inlined, and scan calls it with no visitor so
 * the compiler drops every callback branch from the hot path. The machine is
 * iterative: containers are pushed on a 64-bit stack (bit d set = the
 * container at depth d+1 is an object), which is why MM_JSON_MAX_DEPTH may not
 * exceed 64 and why deep hostile documents cost no C stack.
 *
 * Strings (the block-at-a-time body scan, UTF-8 and escapes) are lexed by
 * json_string.h, included below so that its functions stay in this
 * translation unit.
 *
 * Requested fields are matched on top-level keys only: by length and memcmp
 * when the key has no backslash, otherwise by decoding its escapes on the fly
 * against the wanted name, so nothing is ever allocated during a scan. A
 * requested member seen twice is an error: the event would be ambiguous.
 *
 * mm_json_scan first tries a fast path for flat objects (scan_flat, below),
 * which hands anything it does not handle, every error included, to the
 * walk. In front of it, the C path (mm_json_scan_planned) takes members of
 * the shape events have, `"key":"value"`, a whole member from one mask of a
 * 32-byte window (json_flat.h, compiled twice: for the baseline's SSE2 and
 * for AVX2, which the plan chooses when the CPU has it), and hands the rest
 * of the document to scan_flat at the first member it does not take. What the fast path works out from the requested names alone (a
 * bitmap of their lengths, whether two are the same name, and each name's
 * bytes placed as the window loads a key's, key_loads) is a plan
 * (mm_json_plan), which the record loop makes once per batch and
 * mm_json_scan once per call; mm_json_scan_reference is the walk alone, for the tests and fuzzers
 * that compare the two. Numbers are converted in json_number.c.
 *
 * Errors carry the byte offset of the offending byte in the diag detail, e.g.
 * "json: unexpected character 'x' at offset 17".
 */
#include "json.h"

#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "../lib/hash.h"
#include "json_lex.h"
#include "json_string.h"

_Static_assert(MM_JSON_MAX_DEPTH <= 64, "the container stack is one uint64_t");

/* Delivers a string body to a visitor callback, unescaped. */
static int deliver(int (*cb)(void *, const char *, size_t), void *ud, const unsigned char *s,
		   size_t len, int escaped, mm_buf_t *scratch)
{
	int rc;

	if (!escaped)
		return cb(ud, (const char *)s, len);
	scratch->len = 0;
	rc = mm_json_unescape((const char *)s, len, scratch);
	if (rc)
		return rc;
	return cb(ud, (const char *)scratch->p, scratch->len);
}

static inline enum mm_json_type token_type(unsigned char c)
{
	switch (c) {
	case '{':
		return MM_JSON_OBJECT;
	case '[':
		return MM_JSON_ARRAY;
	case '"':
		return MM_JSON_STRING;
	case 't':
		return MM_JSON_TRUE;
	case 'f':
		return MM_JSON_FALSE;
	case 'n':
		return MM_JSON_NULL;
	default:
		return MM_JSON_NUMBER;
	}
}

#define EMIT(cb, ...)                                  \
	do {                                           \
		if (v != NULL && v->cb != NULL) {      \
			rc = v->cb(__VA_ARGS__);       \
			if (rc)                        \
				return rc;             \
		}                                      \
	} while (0)

/*
 * The state machine. With v == NULL it only validates and fills fields (scan);
 * with a visitor it reports every token (parse). *first is set to the first
 * byte of the top-level value so that scan can tell objects from the rest.
 */
static inline __attribute__((always_inline)) int
walk(const char *doc, size_t n, mm_json_field_t *fields, int nfields,
     const mm_json_visitor_t *v, void *ud, mm_buf_t *scratch, unsigned char *first)
{
	const unsigned char *p = (const unsigned char *)doc, *end = p + n;
	const unsigned char *tok, *bad = NULL, *vstart = NULL;
	uint64_t stack = 0;
	int depth = 0, in_obj = 0, escaped = 0, cur = -1, rc, i;

	p = skip_ws(p, end);
	*first = p < end ? *p : 0;

	/* Every jump to value or key has skipped whitespace already. */
value:
	if (p == end)
		return fail_at(doc, p, end);
	if (depth == 1)
		vstart = p;
	switch (*p) {
	case '{':
	case '[':
		if (depth == MM_JSON_MAX_DEPTH)
			return mm_diag_set(MM_EJSON, "json: nesting deeper than %d at offset %zu",
					   MM_JSON_MAX_DEPTH, (size_t)((const char *)p - doc));
		in_obj = *p == '{';
		stack = (stack & ~(1ULL << depth)) | ((uint64_t)in_obj << depth);
		depth++;
		EMIT(on_begin, ud, in_obj);
		p = skip_ws(p + 1, end);
		if (p < end && *p == (in_obj ? '}' : ']'))
			goto close;
		if (in_obj)
			goto key;
		goto value;
	case '"':
		tok = ++p;
		escaped = 0;
		rc = scan_string(doc, &p, end, &escaped);
		if (rc)
			return rc;
		if (v != NULL && v->on_string != NULL) {
			rc = deliver(v->on_string, ud, tok, (size_t)(p - tok), escaped, scratch);
			if (rc)
				return rc;
		}
		p++;
		goto next;
	case 't':
		if ((p = scan_literal(p, end, "true", 4, &bad)) == NULL)
			return fail_at(doc, bad, end);
		EMIT(on_bool, ud, 1);
		goto next;
	case 'f':
		if ((p = scan_literal(p, end, "false", 5, &bad)) == NULL)
			return fail_at(doc, bad, end);
		EMIT(on_bool, ud, 0);
		goto next;
	case 'n':
		if ((p = scan_literal(p, end, "null", 4, &bad)) == NULL)
			return fail_at(doc, bad, end);
		EMIT(on_null, ud);
		goto next;
	case '-':
	case '0' ... '9':
		tok = p;
		if ((p = scan_number(tok, end, &bad)) == NULL)
			return fail_at(doc, bad, end);
		EMIT(on_number, ud, (const char *)tok, (size_t)(p - tok));
		goto next;
	default:
		return fail_at(doc, p, end);
	}

close:
	depth--;
	EMIT(on_end, ud, in_obj);
	in_obj = depth > 0 && (stack >> (depth - 1) & 1);
	p++;
	/* fall through to next */

next:
	/* A value just ended; a top-level member's value ends at depth 1. */
	if (depth == 1 && cur >= 0) {
		mm_json_field_t *f = &fields[cur];

		f->type = token_type(*vstart);
		if (f->type == MM_JSON_STRING) {
			f->p = (const char *)vstart + 1;
			f->len = (size_t)(p - vstart) - 2;
			f->escaped = escaped;
		} else {
			f->p = (const char *)vstart;
			f->len = (size_t)(p - vstart);
		}
		/* The caller may have asked for the same name twice. */
		for (i = cur + 1; i < nfields; i++)
			if (fields[i].name_len == f->name_len &&
			    mm_key_eq(fields[i].name, f->name, f->name_len)) {
				fields[i].type = f->type;
				fields[i].p = f->p;
				fields[i].len = f->len;
				fields[i].escaped = f->escaped;
			}
		cur = -1;
	}
	if (depth == 0)
		goto done;
	p = skip_ws(p, end);
	if (p < end && *p == ',') {
		p = skip_ws(p + 1, end);
		if (in_obj)
			goto key;
		goto value;
	}
	if (p < end && *p == (in_obj ? '}' : ']'))
		goto close;
	return fail_at(doc, p, end);

key:
	if (p == end || *p != '"')
		return fail_at(doc, p, end);
	tok = ++p;
	escaped = 0;
	rc = scan_string(doc, &p, end, &escaped);
	if (rc)
		return rc;
	if (v != NULL && v->on_key != NULL) {
		rc = deliver(v->on_key, ud, tok, (size_t)(p - tok), escaped, scratch);
		if (rc)
			return rc;
	}
	if (depth == 1) {
		size_t klen = (size_t)(p - tok);

		for (i = 0; i < nfields; i++) {
			if (escaped ? !key_equal_escaped(tok, klen, fields[i].name, fields[i].name_len)
				    : fields[i].name_len != klen || !mm_key_eq(fields[i].name, tok, klen))
				continue;
			if (fields[i].type != MM_JSON_ABSENT)
				return mm_diag_set(MM_EJSON,
						   "json: duplicate key \"%.*s\" at offset %zu",
						   (int)(klen < 64 ? klen : 64), (const char *)tok,
						   (size_t)((const char *)tok - doc) - 1);
			cur = i;
			break;
		}
	}
	p = skip_ws(p + 1, end);
	if (p == end || *p != ':')
		return fail_at(doc, p, end);
	p = skip_ws(p + 1, end);
	goto value;

done:
	p = skip_ws(p, end);
	if (p != end)
		return fail_at(doc, p, end);
	return 0;
}

/*
 * The flat fast path. Most events are one object whose members are strings,
 * numbers or literals; for those, the general walk spends more on its
 * dispatch (container stack, depth, visitor, end checks) than on the bytes.
 * scan_flat walks exactly that shape: key, colon, scalar value, comma or
 * closing brace, with string bodies skipped a block at a time by the same
 * scan_string as the walk (so strings are validated by the same code). It
 * first finds the document's last non-blank byte and requires it to be the
 * closing brace, so every byte it reads before consuming that brace lies
 * inside the document: no end check per byte. It returns 1 when it has
 * validated the whole document and filled the fields, 0 for anything else
 * (a nested value, a requested member seen twice, any error): the general
 * walk then decides and words the error, so the fast path never rejects a
 * document by itself.
 */
#define FLAT_MIN BLOCK /* tail_mask re-reads the last block */
/* Two bytes as memcpy reads them into a uint16_t. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define FLAT_PAIR(a, b) (uint16_t)((a) | (b) << 8)
#else
#define FLAT_PAIR(a, b) (uint16_t)((a) << 8 | (b))
#endif
/* The offset of the byte a window mask's lowest bit stands for. */
#define WIN_AT(m) ((size_t)__builtin_ctzll(m) >> MASK_SHIFT)

/*
 * The two loads that match a key against the plan's names: b is the key's
 * first byte, inside a member of the window's shape (`"key":"value"` and a
 * ',' or '}', so b[klen + 4] is at most the last byte), klen its length.
 * For a key of eight bytes or more they are the eight bytes from b and the
 * eight that end with the key. A shorter key's are both the eight bytes
 * from b - 1, the key's quote, the key and the `":"` after it, which are
 * all known bytes from four on; below four they start at b - 2 (the '{' or
 * ',' before the quote: inside the document, and the load ends at b[5]),
 * and the plan's mask keeps only the key's bytes. The empty key (its mask
 * is zero) has its load moved back from the document's end. A key longer
 * than 16 has a middle that the loads do not hold. plan_key puts a name's
 * bytes where these loads find a key's.
 */
#define KEY_HEAD_OFF(klen) ((klen) >= 8 ? 0 : (klen) >= 4 ? -1 : -2)
#define KEY_TAIL_OFF(klen) ((klen) >= 8 ? (ptrdiff_t)(klen) - 8 : KEY_HEAD_OFF(klen))

static inline __attribute__((always_inline)) void
key_loads(const unsigned char *b, size_t klen, const unsigned char *end, uint64_t *h, uint64_t *t)
{
	const unsigned char *hp = b + KEY_HEAD_OFF(klen);

	if (hp > end - 8)
		hp = end - 8;
	memcpy(h, hp, 8);
	memcpy(t, klen >= 8 ? b + klen - 8 : hp, 8);
}

/* skip_ws where a non-blank byte is known to lie ahead (no end check). */
static inline const unsigned char *skip_ws_to(const unsigned char *p)
{
	while (*p <= ' ' && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
		p++;
	return p;
}

/* Skips a string body starting at p (after its opening quote) and returns
 * its closing quote, or NULL (diag set) when it is invalid. The common short
 * plain string is settled by one block test; anything else goes through
 * scan_string. */
/* flat_string's slow path: the general string scan. Returns the closing
 * quote or NULL, and sets *escaped. */
static __attribute__((noinline)) const unsigned char *
flat_string_rest(const char *base, const unsigned char *p, const unsigned char *end, int *escaped)
{
	int esc = 0;

	if (scan_string(base, &p, end, &esc) != 0)
		return NULL;
	*escaped = esc;
	return p;
}

/* safe is end - BLOCK: a block can be loaded at any p <= safe. */
static inline __attribute__((always_inline)) const unsigned char *
flat_string(const char *base, const unsigned char *p, const unsigned char *safe,
	    const unsigned char *end, int *escaped)
{
	uint64_t m, quotes;
	const unsigned char *q;

	/* scan_flat runs on documents of at least a block, so the tail mask
	 * needs no padded copy. */
	int esc;

	m = __builtin_expect(p <= safe, 1) ? any_special(p) : tail_mask(base, p, end, &quotes);
	if (m) {
		q = p + ((unsigned)__builtin_ctzll(m) >> MASK_SHIFT);
		if (*q == '"') {
			*escaped = 0;
			return q;
		}
	}
	/* esc, not *escaped, has its address taken, so that the caller's flag
	 * can stay in a register. */
	q = flat_string_rest(base, p, end, &esc);
	*escaped = esc;
	return q;
}

/* The requested field named by the key k[0..klen) (escaped or not), or -1. */
static inline __attribute__((always_inline)) int
flat_field(const mm_json_field_t *fields, int nfields, const unsigned char *k, size_t klen, int escaped)
{
	int i;

	if (__builtin_expect(escaped, 0)) {
		for (i = 0; i < nfields; i++)
			if (key_equal_escaped(k, klen, fields[i].name, fields[i].name_len))
				return i;
		return -1;
	}
	for (i = 0; i < nfields; i++) {
		/* Names of one length usually differ in their first byte. */
		if (fields[i].name_len != klen || (klen && (unsigned char)fields[i].name[0] != k[0]))
			continue;
		if (mm_key_eq(fields[i].name, k, klen))
			return i;
	}
	return -1;
}

/* The caller may have asked for the same name twice: a later field gets
 * what the first of its name found (as the walk does). */
static inline __attribute__((always_inline)) void flat_same_names(mm_json_field_t *fields, int nfields)
{
	for (int i = 1; i < nfields; i++) {
		if (fields[i].type != MM_JSON_ABSENT)
			continue;
		for (int j = 0; j < i; j++)
			if (fields[j].type != MM_JSON_ABSENT && fields[j].name_len == fields[i].name_len &&
			    mm_key_eq(fields[j].name, fields[i].name, fields[i].name_len)) {
				fields[i].type = fields[j].type;
				fields[i].p = fields[j].p;
				fields[i].len = fields[j].len;
				fields[i].escaped = fields[j].escaped;
				break;
			}
	}
}

/*
 * With `keys` (mm_json_scan_flat, for the Lua path), scan_flat also gives
 * up on anything after which the Lua decoder would not build the same
 * object from the fields alone: an escaped key (whose unescaped name could
 * repeat another), a member name given twice among all the keys (the
 * decoder refuses any duplicate, the scan only a requested one), more than
 * FLAT_KEYS members, and a number that could overflow a double (the decoder
 * refuses one anywhere in the document: an exponent or a token longer than
 * any double's digits). Without them (the C path: flat_rest passes NULL)
 * the compiler drops those tests.
 */
#define FLAT_KEYS 32
#define FLAT_NUMBER_MAX 300

/* The keys a scan for the Lua path has taken so far: the AVX2 walk
 * (json_flat.h) hands them on to scan_flat_impl where it gives up. */
typedef struct flat_keys {
	const unsigned char *p[FLAT_KEYS];
	size_t len[FLAT_KEYS];
	uint64_t seen; /* a bit per (length, first and last byte) taken */
	int n;
} flat_keys_t;

static inline uint64_t flat_key_bit(const unsigned char *k, size_t len)
{
	return 1ULL << ((len * 7 + (len ? k[0] * 3u + k[len - 1] : 0)) & 63);
}

/* 1 when the key k of len bytes, whose flat_key_bit is bit, was taken:
 * the names are compared only when a bit comes back. */
static inline int flat_key_seen(const flat_keys_t *ks, const unsigned char *k, size_t len,
				uint64_t bit)
{
	if (ks->seen & bit)
		for (int i = 0; i < ks->n; i++)
			if (ks->len[i] == len && mm_key_eq(ks->p[i], k, len))
				return 1;
	return 0;
}

/* Takes the key k (room checked by the caller: ks->n < FLAT_KEYS). */
static inline void flat_key_take(flat_keys_t *ks, const unsigned char *k, size_t len, uint64_t bit)
{
	ks->seen |= bit;
	ks->p[ks->n] = k;
	ks->len[ks->n++] = len;
}

static inline __attribute__((always_inline)) int
scan_flat_impl(const char *doc, size_t n, mm_json_field_t *fields, const mm_json_plan_t *plan,
	       flat_keys_t *keys, const unsigned char *from)
{
	const unsigned char *d = (const unsigned char *)doc, *end = d + n, *last = end - 1;
	const unsigned char *safe = end - BLOCK, *p, *v, *bad;
	uint64_t lens = plan->lens;
	size_t klen;
	int cur, type, escaped, whole = keys != NULL, nfields = plan->nfields;

	while (last > d && *last <= ' ' &&
	       (*last == ' ' || *last == '\n' || *last == '\r' || *last == '\t'))
		last--;
	if (*last != '}')
		return 0;
	/* Most keys are turned away by one test of the plan's length bitmap.
	 * (An escaped key's length is not its name's: those are always looked
	 * up.) */
	if (from == NULL) {
		p = skip_ws_to(d);
		if (*p != '{' || p == last)
			return 0;
		p = skip_ws_to(p + 1);
		if (p == last)
			return 1;
	} else {
		p = from;
	}
	for (;;) {
		if (*p != '"')
			return 0;
		v = p + 1;
		if ((p = flat_string(doc, v, safe, end, &escaped)) == NULL)
			return 0;
		klen = (size_t)(p - v);
		if (whole) {
			uint64_t bit = flat_key_bit(v, klen);

			if (escaped || keys->n == FLAT_KEYS || flat_key_seen(keys, v, klen, bit))
				return 0;
			flat_key_take(keys, v, klen, bit);
		}
		cur = -1;
		if ((lens >> (klen % 64) & 1) || escaped) {
			cur = flat_field(fields, nfields, v, klen, escaped);
			if (cur >= 0 && fields[cur].type != MM_JSON_ABSENT)
				return 0;
		}
		/* p is at the closing quote, before the brace; the common
		 * `":"` is taken in one step. */
		if (p[1] == ':' && p[2] == '"') {
			p += 2;
		} else {
			p = skip_ws_to(p + 1);
			if (*p != ':')
				return 0;
			p = skip_ws_to(p + 1);
		}
		v = p;
		if (*p == '"') {
			if ((p = flat_string(doc, p + 1, safe, end, &escaped)) == NULL)
				return 0;
			p++;
			type = MM_JSON_STRING;
		} else if (*p == '-' || is_digit(*p)) {
			if ((p = scan_number(p, end, &bad)) == NULL)
				return 0;
			if (whole && (p - v > FLAT_NUMBER_MAX || memchr(v, 'e', (size_t)(p - v)) ||
				      memchr(v, 'E', (size_t)(p - v))))
				return 0;
			type = MM_JSON_NUMBER;
		} else if (*p == 't') {
			if ((p = scan_literal(p, end, "true", 4, &bad)) == NULL)
				return 0;
			type = MM_JSON_TRUE;
		} else if (*p == 'f') {
			if ((p = scan_literal(p, end, "false", 5, &bad)) == NULL)
				return 0;
			type = MM_JSON_FALSE;
		} else if (*p == 'n') {
			if ((p = scan_literal(p, end, "null", 4, &bad)) == NULL)
				return 0;
			type = MM_JSON_NULL;
		} else {
			return 0; /* nested values and errors: the walk's */
		}
		/* Here p <= last: no value takes in the closing brace. */
		if (cur >= 0) {
			mm_json_field_t *f = &fields[cur];

			f->type = type;
			f->p = (const char *)v + (type == MM_JSON_STRING);
			f->len = (size_t)(p - v) - (type == MM_JSON_STRING ? 2 : 0);
			f->escaped = type == MM_JSON_STRING && escaped;
		}
		if (*p != ',') {
			p = skip_ws_to(p);
			if (*p != ',') {
				if (p != last)
					return 0;
				if (plan->same_names)
					flat_same_names(fields, nfields);
				return 1;
			}
		}
		/* A comma is not the closing brace, so p < last. */
		if (*++p != '"')
			p = skip_ws_to(p);
	}
}

static void fields_clear(mm_json_field_t *fields, int nfields)
{
	for (int i = 0; i < nfields; i++) {
		fields[i].type = MM_JSON_ABSENT;
		fields[i].p = NULL;
		fields[i].len = 0;
		fields[i].escaped = 0;
	}
}

/* The rest of mm_json_scan_planned from the member at from (or from the
 * start when NULL): scan_flat_impl, and the walk when it gives up. */
static __attribute__((noinline)) int flat_rest(const char *doc, size_t n, mm_json_field_t *fields,
					       const mm_json_plan_t *plan, const unsigned char *from)
{
	if (scan_flat_impl(doc, n, fields, plan, NULL, from))
		return 0;
	return mm_json_scan_reference(doc, n, fields, plan->nfields);
}

/* The Lua path's flat scan (mm_json_scan_flat_planned) member by member,
 * from the member at from (or from the start when NULL), with the keys
 * taken before it. */
static __attribute__((noinline)) int flat_whole(const char *doc, size_t n, mm_json_field_t *fields,
						const mm_json_plan_t *plan, const unsigned char *from,
						flat_keys_t *keys)
{
	return scan_flat_impl(doc, n, fields, plan, keys, from);
}

/* The flat walk (json_flat.h) of the C path and of the Lua path's field
 * plans, each for the baseline and for AVX2. */
#define FLAT_NAME scan_flat
#define FLAT_TARGET
#define FLAT_WIN win_mask
#define FLAT_WHOLE 0
#include "json_flat.h"
#define FLAT_NAME scan_flat_lua
#define FLAT_TARGET
#define FLAT_WIN win_mask
#define FLAT_WHOLE 1
#include "json_flat.h"
#ifdef MM_JSON_WIDE
#define FLAT_NAME scan_flat_wide
#define FLAT_TARGET __attribute__((target(MM_JSON_WIDE)))
#define FLAT_WIN win_mask_wide
#define FLAT_WHOLE 0
#include "json_flat.h"
#define FLAT_NAME scan_flat_lua_wide
#define FLAT_TARGET __attribute__((target(MM_JSON_WIDE)))
#define FLAT_WIN win_mask_wide
#define FLAT_WHOLE 1
#include "json_flat.h"
#endif

int mm_json_scan_reference(const char *p, size_t n, mm_json_field_t *fields, int nfields)
{
	unsigned char first;
	int rc;

	if ((p == NULL && n > 0) || nfields < 0 || (fields == NULL && nfields > 0))
		return mm_diag_set(MM_EINVAL, "json: bad scan arguments");
	fields_clear(fields, nfields);
	rc = walk(p ? p : "", n, fields, nfields, NULL, NULL, NULL, &first);
	if (rc)
		return rc;
	if (first != '{')
		return mm_diag_set(MM_ENOTOBJ, "json: top-level value is not an object");
	return 0;
}

/* The names' part of a plan (the lengths asked for, and whether two fields
 * ask for one name), with the baseline's code: what the per-string path,
 * which never takes the AVX2 walk, needs once per document. */
static void plan_names(mm_json_plan_t *plan, const mm_json_field_t *fields, int nfields)
{
	plan->lens = 0;
	plan->nfields = nfields;
	plan->same_names = 0;
	plan->wide = 0;
	for (int i = 0; i < nfields && fields != NULL; i++) {
		plan->lens |= 1ULL << (fields[i].name_len % 64);
		for (int j = 0; j < i; j++)
			if (fields[j].name_len == fields[i].name_len &&
			    mm_key_eq(fields[j].name, fields[i].name, fields[i].name_len))
				plan->same_names = 1;
	}
}

/* A name's bytes where key_loads finds a key's: for a name shorter than
 * eight, its quotes and colon around it, and a mask of the bytes that are
 * not the value's or before the member's quote. */
static void plan_key(mm_json_plan_name_t *nm, const char *name, size_t len)
{
	unsigned char h[8], t[8], m[8];
	ptrdiff_t k;

	for (int j = 0; j < 8; j++) {
		k = KEY_HEAD_OFF(len) + j;
		h[j] = k >= 0 && k < (ptrdiff_t)len ? (unsigned char)name[k]
		       : k == -1 || k == (ptrdiff_t)len || k == (ptrdiff_t)len + 2 ? '"'
		       : k == (ptrdiff_t)len + 1 ? ':'
						 : 0;
		m[j] = len > 0 && k >= -1 && k < (ptrdiff_t)len + 3 ? 0xff : 0;
		k = KEY_TAIL_OFF(len) + j;
		t[j] = len >= 8 ? (unsigned char)name[k] : h[j] & m[j];
		h[j] &= m[j];
	}
	memcpy(&nm->head, h, 8);
	memcpy(&nm->tail, t, 8);
	memcpy(&nm->mask, m, 8);
	nm->len = len;
}

void mm_json_plan(mm_json_plan_t *plan, const mm_json_field_t *fields, int nfields)
{
	plan_names(plan, fields, nfields);
	for (int i = 0; i < nfields && i < MM_JSON_PLAN_NAMES && fields != NULL; i++)
		plan_key(&plan->names[i], fields[i].name, fields[i].name_len);
#ifdef MM_JSON_WIDE
	plan->wide = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi");
#endif
}

/* mm_json_scan_planned's other cases: bad arguments and short documents
 * (the walk), and more fields than the plan has names for (the per-string
 * path, which does not use them). */
static __attribute__((noinline)) int scan_unplanned(const mm_json_plan_t *plan, const char *p,
						    size_t n, mm_json_field_t *fields)
{
	int nfields = plan->nfields;

	if (p == NULL || n < FLAT_MIN || nfields < 0 || fields == NULL)
		return mm_json_scan_reference(p, n, fields, nfields);
	fields_clear(fields, nfields);
	return flat_rest(p, n, fields, plan, NULL);
}

int mm_json_scan_planned(const mm_json_plan_t *plan, const char *p, size_t n,
			 mm_json_field_t *fields)
{
	int nfields = plan->nfields;

	if (p == NULL || n < FLAT_MIN || (unsigned)nfields > MM_JSON_PLAN_NAMES ||
	    (fields == NULL && nfields > 0))
		return scan_unplanned(plan, p, n, fields);
#ifdef MM_JSON_WIDE
	if (plan->wide)
		return scan_flat_wide(p, n, fields, plan);
#endif
	return scan_flat(p, n, fields, plan);
}

int mm_json_scan(const char *p, size_t n, mm_json_field_t *fields, int nfields)
{
	mm_json_plan_t plan;

	mm_json_plan(&plan, fields, nfields);
	return mm_json_scan_planned(&plan, p, n, fields);
}

int mm_json_scan_flat_planned(const mm_json_plan_t *plan, const char *p, size_t n,
			      mm_json_field_t *fields)
{
	int nfields = plan->nfields;

	if (p == NULL || n < FLAT_MIN || nfields < 0 || (fields == NULL && nfields > 0))
		return 0;
	if (nfields > MM_JSON_PLAN_NAMES) {
		flat_keys_t keys = {.n = 0, .seen = 0};

		fields_clear(fields, nfields);
		return flat_whole(p, n, fields, plan, NULL, &keys);
	}
#ifdef MM_JSON_WIDE
	if (plan->wide)
		return scan_flat_lua_wide(p, n, fields, plan);
#endif
	return scan_flat_lua(p, n, fields, plan);
}

int mm_json_scan_flat(const char *p, size_t n, mm_json_field_t *fields, int nfields)
{
	mm_json_plan_t plan;

	if (nfields < 0 || (fields == NULL && nfields > 0))
		return 0;
	mm_json_plan(&plan, fields, nfields);
	return mm_json_scan_flat_planned(&plan, p, n, fields);
}

int mm_json_parse_buf(const char *p, size_t n, const mm_json_visitor_t *v, void *ud,
		      mm_buf_t *scratch)
{
	unsigned char first;

	if ((p == NULL && n > 0) || v == NULL || scratch == NULL)
		return mm_diag_set(MM_EINVAL, "json: bad parse arguments");
	return walk(p ? p : "", n, NULL, 0, v, ud, scratch, &first);
}

int mm_json_parse(const char *p, size_t n, const mm_json_visitor_t *v, void *ud)
{
	mm_buf_t scratch = {0};
	int rc = mm_json_parse_buf(p, n, v, ud, &scratch);

	mm_buf_free(&scratch);
	return rc;
}

int mm_json_unescape(const char *p, size_t len, mm_buf_t *out)
{
	const unsigned char *s, *end, *bs, *next;
	size_t start;
	char tmp[4];
	int r, rc;

	if ((p == NULL && len > 0) || out == NULL)
		return mm_diag_set(MM_EINVAL, "json: bad unescape arguments");
	if (len == 0)
		return 0;
	/* The result is never longer than the input, so one reserve suffices. */
	if ((rc = mm_buf_reserve(out, len)) != 0)
		return rc;
	s = (const unsigned char *)p;
	end = s + len;
	start = out->len;
	while (s < end) {
		bs = memchr(s, '\\', (size_t)(end - s));
		if (bs == NULL)
			bs = end;
		memcpy(out->p + out->len, s, (size_t)(bs - s));
		out->len += (size_t)(bs - s);
		if (bs == end)
			break;
		r = decode_escape(bs, end, tmp, &next);
		if (r < 0) {
			out->len = start; /* all or nothing */
			return fail_escape(r, p, bs);
		}
		memcpy(out->p + out->len, tmp, (size_t)r);
		out->len += (size_t)r;
		s = next;
	}
	return 0;
}

int mm_json_quote(const char *s, size_t len, mm_buf_t *out)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p, *end, *run;
	size_t elen, start;
	char esc[6];
	int r, rc;

	if ((s == NULL && len > 0) || out == NULL)
		return mm_diag_set(MM_EINVAL, "json: bad quote arguments");
	if ((rc = mm_buf_reserve(out, len + 2)) != 0)
		return rc;
	p = (const unsigned char *)(len ? s : "");
	end = p + len;
	start = out->len;
	out->p[out->len++] = '"';
	while (p < end) {
		/* Plain ASCII and well-formed UTF-8 go out in one append. */
		run = p;
		for (;;) {
			while (p < end && str_class[*p] == C_PLAIN)
				p++;
			if (p == end || str_class[*p] != C_HIGH ||
			    (r = mm_utf8_seq(p, (size_t)(end - p))) < 0)
				break;
			p += r;
		}
		if ((rc = mm_buf_append(out, run, (size_t)(p - run))) != 0)
			goto fail;
		if (p == end)
			break;
		switch (*p) {
		case '"':
		case '\\':
			esc[0] = '\\';
			esc[1] = (char)*p;
			elen = 2;
			p++;
			break;
		case '\b':
		case '\f':
		case '\n':
		case '\r':
		case '\t':
			esc[0] = '\\';
			esc[1] = *p == '\b' ? 'b' : *p == '\f' ? 'f' : *p == '\n' ? 'n' : *p == '\r' ? 'r' : 't';
			elen = 2;
			p++;
			break;
		default:
			if (*p < 0x20) {
				memcpy(esc, "\\u00", 4);
				esc[4] = hex[*p >> 4];
				esc[5] = hex[*p & 15];
				p++;
			} else {
				/* One U+FFFD per maximal ill-formed subsequence. */
				memcpy(esc, "\\ufffd", 6);
				p += -mm_utf8_seq(p, (size_t)(end - p));
			}
			elen = 6;
			break;
		}
		if ((rc = mm_buf_append(out, esc, elen)) != 0)
			goto fail;
	}
	if ((rc = mm_buf_append(out, "\"", 1)) != 0)
		goto fail;
	return 0;
fail:
	out->len = start; /* all or nothing */
	return rc;
}

