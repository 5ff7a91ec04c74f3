/*
 * monoid.h: the monoid interface every aggregation in murmur goes through.
 *
 * A monoid is a const vtable plus parameters (mm_monoid_t). Its values live
 * in "states": MM_STATE_MAX bytes of inline storage that the caller owns and
 * the monoid interprets (scalars fit inline; sketches keep a heap pointer in
 * there and allocate lazily, so init() cannot fail). The runtime keeps one
 * state per (entity, bucket) as a pre-aggregated delta; stores decode the
 * stored bytes into a state, merge the delta, and encode it back.
 *
 * Laws (tested in tests/unit/test_monoid_laws.c for every monoid):
 *   identity:      merge(init, x) == x == merge(x, init)
 *   associativity: merge(merge(a,b),c) == merge(a,merge(b,c))
 *   commutativity: merge(a,b) == merge(b,a)    (all built-ins are commutative)
 *   round trip:    decode(encode(x)) == x       (compared by encode bytes)
 *   add == merge of a singleton: add(x, v) == merge(x, add(init, v))
 * Encodings are deterministic: equal values encode to equal bytes, except HLL
 * whose sparse/dense choice follows Valkey's rules and is compared by registers.
 *
 * This layer is pure C: no libuv, no Lua, no I/O, no global mutable state, so
 * every function may be called from any thread on distinct states.
 */
#ifndef MM_MONOID_H
#define MM_MONOID_H

#include <stddef.h>
#include <stdint.h>

#include "../lib/buf.h"

#define MM_STATE_MAX 32

/* What an event contributes to a monoid (the "value" of the pipeline). */
enum mm_value_type {
	MM_VAL_NONE = 0, /* no value: count, or a monoid that ignores it */
	MM_VAL_INT,      /* i */
	MM_VAL_DOUBLE,   /* d */
	MM_VAL_STRING,   /* s, len: UTF-8 bytes, not NUL-terminated */
};

typedef struct mm_value {
	int type;       /* enum mm_value_type */
	int64_t i;
	double d;
	const char *s;  /* borrowed for the duration of the add() call */
	size_t len;
	int64_t ts_ms;  /* event time in ms since the epoch (first/last use it) */
	/* Arrival stamp (first/last break ties of ts_ms with it): larger means
	 * delivered later; 0 means unknown and sorts before every stamp. The
	 * engine stamps each delivered record (engine.c, mm_engine_t.arrival). */
	uint64_t seq;
} mm_value_t;

/* Which value types a monoid accepts; add() returns MM_ETYPE for others. */
enum mm_value_kind {
	MM_VK_NONE = 0,   /* count: ignores the value */
	MM_VK_NUMBER = 1, /* sum, min, max: INT or DOUBLE */
	MM_VK_STRING = 2, /* hll, topk, bloom, set: STRING (numbers are formatted by the caller) */
	MM_VK_ANY = 3,    /* first, last: any scalar */
};

/* Parameters; each monoid reads the fields it needs and check() validates them. */
typedef struct mm_monoid_params {
	int is_float;      /* sum: 0 = int64, 1 = double */
	uint32_t k;        /* topk: number of counters (K), default 32 */
	uint32_t max_size; /* set: maximum members kept, default 1000 */
	uint64_t capacity; /* bloom: expected distinct elements, default 100000 */
	double fpr;        /* bloom: target false-positive rate, default 0.01 */
} mm_monoid_params_t;

typedef struct mm_monoid mm_monoid_t;

/* The part of an add that add_start left for add_finish (the vtable below):
 * the monoid's own words, which the caller keeps and does not read. */
typedef struct mm_add_later {
	uint32_t a, b;
	int pending;  /* 1: add_finish must run on the state before anything else */
} mm_add_later_t;

typedef struct mm_monoid_vtable {
	const char *name;  /* "sum", "count", "min", "max", "first", "last", "set", "hll", "topk", "bloom" */
	int value_kind;    /* enum mm_value_kind */
	/* Fills defaults for zero params and validates; mm_diag_set + MM_EINVAL on bad params. */
	int (*check)(mm_monoid_params_t *p);
	/* Makes st the identity. Cannot fail: sketches allocate on first add/merge/decode. */
	void (*init)(const mm_monoid_t *m, void *st);
	/* Frees what st owns; st must be init()ed again before reuse. */
	void (*destroy)(const mm_monoid_t *m, void *st);
	/* st = st ⊕ lift(v). MM_ETYPE if v has the wrong type, MM_ERANGE if unusable
	 * (NaN, overflow), MM_ENOMEM. On error st is unchanged. */
	int (*add)(const mm_monoid_t *m, void *st, const mm_value_t *v);
	/* Optional, both or neither (NULL: add). add() in two halves, for a
	 * caller with other work to do in between (the record loop reads the
	 * next record and finds its state): add_start returns what add()
	 * returns and does all of it, except that it may leave one store whose
	 * target misses the cache for later: it then hints the cache about the
	 * target, sets later->pending and returns 0. Otherwise later->pending
	 * is 0 and add_finish must not be called. While a store is pending the
	 * caller calls nothing else on st (no add, merge, encode, destroy) until
	 * add_finish(st, later), which cannot fail; st may have moved in memory
	 * in between (its bytes copied, as a growing table moves its entries),
	 * so later keeps no pointer into st. Together they equal add(). */
	int (*add_start)(const mm_monoid_t *m, void *st, const mm_value_t *v, mm_add_later_t *later);
	void (*add_finish)(const mm_monoid_t *m, void *st, const mm_add_later_t *later);
	/* dst = dst ⊕ src; src is not modified. MM_ENOMEM on allocation failure. */
	int (*merge)(const mm_monoid_t *m, void *dst, const void *src);
	/* Appends the canonical encoding of st to out. */
	int (*encode)(const mm_monoid_t *m, const void *st, mm_buf_t *out);
	/* Replaces st (which must be init()ed) with the decoded bytes. Validates
	 * every length; MM_ECORRUPT (with detail) on corrupt/truncated/mismatched
	 * input, leaving st as the identity. Never reads outside [p, p+n). */
	int (*decode)(const mm_monoid_t *m, void *st, const uint8_t *p, size_t n);
	/* Appends a JSON object describing st for queries, e.g. {"value":12},
	 * {"cardinality":1234}, {"n":..,"k":..,"error":..,"items":[{"item":"x",
	 * "count":..,"lower":..,"upper":..}]}. Identity states are valid input. */
	int (*to_json)(const mm_monoid_t *m, const void *st, mm_buf_t *out);
	/* 1 if st is the identity (nothing was added). */
	int (*is_identity)(const mm_monoid_t *m, const void *st);
	/* Optional (NULL: stores decode, merge and encode). Appends to out an
	 * encoding of decode(p[0..n)) ⊕ src, p NULL meaning the identity,
	 * without building a state from p: for a sketch whose stored form is
	 * large and whose delta is small, a pass over the bytes instead of three.
	 * decode() of the result equals the decode-merge-encode value, though
	 * the bytes may differ (see the monoid). MM_ECORRUPT (with detail) for
	 * bytes decode() rejects, MM_ENOMEM; out then holds a partial append. */
	int (*merge_encoded)(const mm_monoid_t *m, const uint8_t *p, size_t n, const void *src,
			     mm_buf_t *out);
} mm_monoid_vtable_t;

struct mm_monoid {
	const mm_monoid_vtable_t *vt;
	mm_monoid_params_t p;
};

/* The built-in vtables, registered once in monoid.c. */
extern const mm_monoid_vtable_t mm_monoid_sum_vtable;
extern const mm_monoid_vtable_t mm_monoid_count_vtable;
extern const mm_monoid_vtable_t mm_monoid_min_vtable;
extern const mm_monoid_vtable_t mm_monoid_max_vtable;
extern const mm_monoid_vtable_t mm_monoid_first_vtable;
extern const mm_monoid_vtable_t mm_monoid_last_vtable;
extern const mm_monoid_vtable_t mm_monoid_set_vtable;
extern const mm_monoid_vtable_t mm_monoid_hll_vtable;
extern const mm_monoid_vtable_t mm_monoid_topk_vtable;
extern const mm_monoid_vtable_t mm_monoid_bloom_vtable;

/* NULL-terminated list of every built-in vtable. */
extern const mm_monoid_vtable_t *const mm_monoid_registry[];

/* Looks a vtable up by name; NULL if unknown. */
const mm_monoid_vtable_t *mm_monoid_find(const char *name);

/* Initialises m from a name and parameters (defaults filled, then validated).
 * Returns 0, MM_ENOTFOUND for an unknown name, or MM_EINVAL for bad params. */
int mm_monoid_init(mm_monoid_t *m, const char *name, const mm_monoid_params_t *p);

/* Appends a canonical description "topk(k=32)" used to detect incompatible
 * redefinitions of a pipeline whose state already exists. */
int mm_monoid_describe(const mm_monoid_t *m, mm_buf_t *out);

#endif
