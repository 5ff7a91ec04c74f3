/*
 * test_monoid_laws.c: the monoid laws of monoid.h, checked for every vtable
 * in mm_monoid_registry (algebird's BaseProperties, in C).
 *
 * For each case of the table below, a fixed-seed generator fills a pool of
 * values, and states are built by adding random picks from the pool: 50
 * small states (0..20 adds) and a few large ones (3000 adds from a pool of
 * 4096 mostly distinct strings, enough to turn an HLL dense and to overflow
 * a set) so that sketches also leave their small representations. A state's list of picks
 * is kept, so it can be rebuilt from scratch ("replayed") whenever a law
 * needs a private copy to merge into; replaying uses only init and add, not
 * the merge or codec under test. The laws:
 *
 *   identity        merge(init, x) == x == merge(x, init)
 *   commutativity   merge(a, b) == merge(b, a), over all pairs; and merge
 *                   leaves its source unchanged
 *   associativity   merge(merge(a, b), c) == merge(a, merge(b, c))
 *   fold            for lists of 8 states, the left fold of merges == a
 *                   balanced tree of merges == one state that was given
 *                   every value directly (a batch delta)
 *   round trip      decode(encode(x)) encodes to the same bytes and
 *                   compares equal to x
 *   singleton       add(x, v) == merge(x, add(init, v))
 *   identity flag   is_identity(init), the identity survives a round
 *                   trip, and !is_identity(add(init, v)) for every v
 *   split add       for a monoid with add_start/add_finish: each state
 *                   rebuilt by them, its bytes moved to another place
 *                   and the old ones scribbled over between the halves
 *                   of every add, == the state built by add (and a
 *                   value add refuses is refused alike, nothing pending)
 *
 * "==" is per case: the canonical encodings are compared byte for byte,
 * except HLL, compared by registers (mm_hll_registers), as monoid.h allows.
 * Everything a monoid's owner may need to tune (parameters, generator,
 * comparison, restrictions) is in the `cases` table.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "lib/error.h"
#include "monoid/hll.h"
#include "monoid/monoid.h"
#include "unit.h"

#define POOL_MAX   4096
#define STR_MAX	   48
#define N_SMALL	   50
#define N_BIG	   3
#define N_STATES   (N_SMALL + N_BIG)
#define SMALL_ADDS 20
#define BIG_ADDS   3000
#define N_TRIPLES  2000
#define N_LISTS	   200
#define LIST_LEN   8

enum cmp_mode {
	CMP_BYTES,	   /* canonical encodings byte for byte */
	CMP_HLL_REGISTERS, /* the 16384 registers via mm_hll_registers */
};

/* Laws that a case may restrict with max_distinct. */
enum {
	LAW_ASSOC = 1,
	LAW_FOLD = 2,
	LAW_SINGLETON = 4,
};

typedef struct law_case {
	const char *name; /* registry name */
	mm_monoid_params_t params;
	void (*gen)(mm_value_t *v, char *buf); /* one random value; strings in buf[STR_MAX] */
	size_t pool; /* distinct pool entries to draw from (<= POOL_MAX) */
	int cmp;     /* enum cmp_mode */
	/* The laws in `limited` are checked only when their operands together
	 * were built from at most max_distinct pool entries (0: no limit). */
	size_t max_distinct;
	unsigned limited;
} law_case_t;

static uint64_t rng;

static size_t rnd(size_t n)
{
	return (size_t)(unit_xorshift64(&rng) % n);
}

/* Integers, never zero (adding zero would leave the identity), some sent as
 * integral doubles. */
static void gen_int(mm_value_t *v, char *buf)
{
	int64_t i = (int64_t)rnd(2000) - 1000;

	i = i ? i : 1001;
	if (rnd(4) == 0)
		*v = (mm_value_t){.type = MM_VAL_DOUBLE, .d = (double)i};
	else
		*v = (mm_value_t){.type = MM_VAL_INT, .i = i};
}

/* Multiples of 1/8 below 1000 in magnitude, never zero: every sum the test
 * forms is exact in binary, so float addition is associative here. */
static void gen_exact_double(mm_value_t *v, char *buf)
{
	int64_t k = (int64_t)rnd(16000) - 8000;

	k = k ? k : 8001;
	if (k % 8 == 0 && rnd(2))
		*v = (mm_value_t){.type = MM_VAL_INT, .i = k / 8};
	else
		*v = (mm_value_t){.type = MM_VAL_DOUBLE, .d = (double)k / 8};
}

/* Any finite number, including both zeros and repeated values. */
static void gen_number(mm_value_t *v, char *buf)
{
	switch (rnd(6)) {
	case 0:
		*v = (mm_value_t){.type = MM_VAL_INT, .i = (int64_t)rnd(200) - 100};
		break;
	case 1:
		*v = (mm_value_t){.type = MM_VAL_DOUBLE, .d = rnd(2) ? 0.0 : -0.0};
		break;
	default:
		*v = (mm_value_t){.type = MM_VAL_DOUBLE,
				  .d = ((double)rnd(1u << 30) - (1u << 29)) / 977.0};
		break;
	}
}

static void gen_none(mm_value_t *v, char *buf)
{
	*v = (mm_value_t){.type = MM_VAL_NONE};
}

/* Strings over a small alphabet: 1..3 bytes in a third of the cases (so
 * values repeat), otherwise up to STR_MAX - 1 (so most are distinct). */
static size_t gen_chars(char *buf, const char *alphabet)
{
	size_t len = rnd(3) == 0 ? 1 + rnd(3) : 4 + rnd(STR_MAX - 4);
	size_t na = strlen(alphabet);

	for (size_t i = 0; i < len; i++)
		buf[i] = alphabet[rnd(na)];
	return len;
}

static void gen_string(mm_value_t *v, char *buf)
{
	size_t len = gen_chars(buf, "abcd");

	*v = (mm_value_t){.type = MM_VAL_STRING, .s = buf, .len = len};
}

/* Scalars of every type with times from a small range, so ties are common. */
static void gen_timed(mm_value_t *v, char *buf)
{
	int64_t ts = (int64_t)rnd(8) - 4;

	switch (rnd(3)) {
	case 0:
		*v = (mm_value_t){.type = MM_VAL_INT, .i = (int64_t)rnd(10) - 5};
		break;
	case 1:
		*v = (mm_value_t){.type = MM_VAL_DOUBLE, .d = rnd(4) ? (double)rnd(10) / 4 : -0.0};
		break;
	default:
		*v = (mm_value_t){.type = MM_VAL_STRING, .s = buf, .len = gen_chars(buf, "ab")};
		break;
	}
	v->ts_ms = ts;
	/* Arrival stamps tie often too (0 = unstamped, as decoded from v1). */
	v->seq = rnd(3);
}

static const law_case_t cases[] = {
	{"sum", {.is_float = 0}, gen_int, 64, CMP_BYTES, 0, 0},
	{"sum", {.is_float = 1}, gen_exact_double, 64, CMP_BYTES, 0, 0},
	{"count", {0}, gen_none, 1, CMP_BYTES, 0, 0},
	{"min", {0}, gen_number, 64, CMP_BYTES, 0, 0},
	{"max", {0}, gen_number, 64, CMP_BYTES, 0, 0},
	{"first", {0}, gen_timed, 64, CMP_BYTES, 0, 0},
	{"last", {0}, gen_timed, 64, CMP_BYTES, 0, 0},
	{"set", {.max_size = 16}, gen_string, 4096, CMP_BYTES, 0, 0},
	{"hll", {0}, gen_string, 4096, CMP_HLL_REGISTERS, 0, 0},
	/* topk.c: merges are exactly associative while the operands hold at
	 * most T = max(8K, 1024) distinct items; past that only its error
	 * bounds hold (checked in its own tests). */
	{"topk", {.k = 8}, gen_string, 48, CMP_BYTES, 1024, LAW_ASSOC | LAW_FOLD | LAW_SINGLETON},
	{"bloom", {.capacity = 1000, .fpr = 0.01}, gen_string, 4096, CMP_BYTES, 0, 0},
};

typedef union {
	max_align_t align;
	uint8_t b[MM_STATE_MAX];
} state_t;

/* A built state and the pool indices it was built from. */
typedef struct built {
	state_t st;
	size_t *picks;
	size_t n;
} built_t;

typedef struct ctx {
	const law_case_t *c;
	mm_monoid_t m;
	mm_value_t pool[POOL_MAX];
	char strs[POOL_MAX][STR_MAX];
	built_t s[N_STATES];
	unsigned char seen[POOL_MAX];
	size_t skipped; /* law instances skipped by max_distinct */
	int failures;	/* mismatches reported so far (printing stops at a few) */
} ctx_t;

static void report(ctx_t *x, const char *law)
{
	if (x->failures++ < 5)
		printf("#   %s: law '%s' violated (%s)\n", x->c->name, law, mm_diag_msg());
	unit_cur_failed++;
}

/* Adds pool entries to st; any error is a test failure. */
static void add_picks(ctx_t *x, void *st, const size_t *picks, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int rc = x->m.vt->add(&x->m, st, &x->pool[picks[i]]);

		if (rc) {
			printf("#   %s: add failed: %s %s\n", x->c->name, mm_err_name(rc),
			       mm_diag_msg());
			unit_cur_failed++;
			return;
		}
	}
}

/* Makes st a fresh copy of built state b by replaying its values. */
static void replay(ctx_t *x, void *st, const built_t *b)
{
	x->m.vt->init(&x->m, st);
	add_picks(x, st, b->picks, b->n);
}

static void merge_ok(ctx_t *x, void *dst, const void *src)
{
	int rc = x->m.vt->merge(&x->m, dst, src);

	if (rc) {
		printf("#   %s: merge failed: %s %s\n", x->c->name, mm_err_name(rc), mm_diag_msg());
		unit_cur_failed++;
	}
}

static void encode_ok(ctx_t *x, const void *st, mm_buf_t *out)
{
	out->len = 0;
	if (x->m.vt->encode(&x->m, st, out) != 0) {
		printf("#   %s: encode failed: %s\n", x->c->name, mm_diag_msg());
		unit_cur_failed++;
	}
}

/* 1 if a and b are equal under the case's comparison. */
static int same(ctx_t *x, const void *a, const void *b)
{
	static uint8_t ra[MM_HLL_REGISTERS], rb[MM_HLL_REGISTERS];
	mm_buf_t ea = {0}, eb = {0};
	int eq;

	if (x->c->cmp == CMP_HLL_REGISTERS)
		return mm_hll_registers(&x->m, a, ra) == 0 && mm_hll_registers(&x->m, b, rb) == 0 &&
		       memcmp(ra, rb, sizeof(ra)) == 0;
	encode_ok(x, a, &ea);
	encode_ok(x, b, &eb);
	eq = ea.len == eb.len && (ea.len == 0 || memcmp(ea.p, eb.p, ea.len) == 0);
	mm_buf_free(&ea);
	mm_buf_free(&eb);
	return eq;
}

/* 1 if the law applies to states built from these lists under max_distinct. */
static int within_limit(ctx_t *x, unsigned law, const built_t *const *b, size_t nb, size_t extra)
{
	size_t distinct = 0;

	if (x->c->max_distinct == 0 || !(x->c->limited & law))
		return 1;
	memset(x->seen, 0, sizeof(x->seen));
	for (size_t i = 0; i < nb; i++)
		for (size_t j = 0; j < b[i]->n; j++)
			if (!x->seen[b[i]->picks[j]]++)
				distinct++;
	if (distinct + extra <= x->c->max_distinct)
		return 1;
	x->skipped++;
	return 0;
}

static void build(ctx_t *x)
{
	for (size_t i = 0; i < x->c->pool; i++)
		x->c->gen(&x->pool[i], x->strs[i]);
	for (size_t i = 0; i < N_STATES; i++) {
		built_t *b = &x->s[i];

		b->n = i < N_SMALL ? rnd(SMALL_ADDS + 1) : BIG_ADDS;
		b->picks = malloc((b->n ? b->n : 1) * sizeof(size_t));
		for (size_t j = 0; j < b->n; j++)
			b->picks[j] = rnd(x->c->pool);
		replay(x, &b->st, b);
	}
}

static void teardown(ctx_t *x)
{
	for (size_t i = 0; i < N_STATES; i++) {
		x->m.vt->destroy(&x->m, &x->s[i].st);
		free(x->s[i].picks);
	}
}

static void law_identity(ctx_t *x)
{
	const mm_monoid_vtable_t *vt = x->m.vt;
	state_t e, y, id;
	mm_buf_t b = {0};

	vt->init(&x->m, &id);
	if (!vt->is_identity(&x->m, &id))
		report(x, "is_identity(init)");
	/* The identity survives a round trip. */
	encode_ok(x, &id, &b);
	vt->init(&x->m, &e);
	if (vt->decode(&x->m, &e, b.p, b.len) != 0 || !vt->is_identity(&x->m, &e) ||
	    !same(x, &e, &id))
		report(x, "decode(encode(init)) is the identity");
	vt->destroy(&x->m, &e);
	mm_buf_free(&b);

	for (size_t i = 0; i < N_STATES; i++) {
		const built_t *s = &x->s[i];

		vt->init(&x->m, &e);
		merge_ok(x, &e, &s->st);
		if (!same(x, &e, &s->st))
			report(x, "merge(init, x) == x");
		vt->destroy(&x->m, &e);
		replay(x, &y, s);
		merge_ok(x, &y, &id);
		if (!same(x, &y, &s->st))
			report(x, "merge(x, init) == x");
		vt->destroy(&x->m, &y);
	}
	vt->destroy(&x->m, &id);
}

static void law_identity_flag(ctx_t *x)
{
	state_t s;

	for (size_t i = 0; i < x->c->pool; i++) {
		x->m.vt->init(&x->m, &s);
		add_picks(x, &s, &i, 1);
		if (x->m.vt->is_identity(&x->m, &s))
			report(x, "!is_identity(add(init, v))");
		x->m.vt->destroy(&x->m, &s);
	}
}

static void law_commute(ctx_t *x)
{
	const mm_monoid_vtable_t *vt = x->m.vt;
	state_t ab, ba, before;

	for (size_t i = 0; i < N_STATES; i++) {
		for (size_t j = 0; j < N_STATES; j++) {
			replay(x, &ab, &x->s[i]);
			merge_ok(x, &ab, &x->s[j].st);
			replay(x, &ba, &x->s[j]);
			merge_ok(x, &ba, &x->s[i].st);
			if (!same(x, &ab, &ba))
				report(x, "merge(a, b) == merge(b, a)");
			vt->destroy(&x->m, &ab);
			vt->destroy(&x->m, &ba);
		}
		/* The source of every merge above is untouched. */
		replay(x, &before, &x->s[i]);
		if (!same(x, &before, &x->s[i].st))
			report(x, "merge leaves src unchanged");
		vt->destroy(&x->m, &before);
	}
}

static void law_assoc(ctx_t *x)
{
	const mm_monoid_vtable_t *vt = x->m.vt;
	state_t left, right, bc;

	for (size_t t = 0; t < N_TRIPLES; t++) {
		const built_t *a = &x->s[rnd(N_STATES)], *b = &x->s[rnd(N_STATES)],
			      *c = &x->s[rnd(N_STATES)];
		const built_t *ops[3] = {a, b, c};

		if (!within_limit(x, LAW_ASSOC, ops, 3, 0))
			continue;
		replay(x, &left, a);
		merge_ok(x, &left, &b->st);
		merge_ok(x, &left, &c->st);
		replay(x, &bc, b);
		merge_ok(x, &bc, &c->st);
		replay(x, &right, a);
		merge_ok(x, &right, &bc);
		if (!same(x, &left, &right))
			report(x, "merge(merge(a, b), c) == merge(a, merge(b, c))");
		vt->destroy(&x->m, &left);
		vt->destroy(&x->m, &right);
		vt->destroy(&x->m, &bc);
	}
}

static void law_fold(ctx_t *x)
{
	const mm_monoid_vtable_t *vt = x->m.vt;
	state_t fold, batch, tree[LIST_LEN];

	for (size_t l = 0; l < N_LISTS; l++) {
		const built_t *list[LIST_LEN];

		for (size_t i = 0; i < LIST_LEN; i++)
			list[i] = &x->s[rnd(N_STATES)];
		if (!within_limit(x, LAW_FOLD, list, LIST_LEN, 0))
			continue;
		vt->init(&x->m, &fold);
		vt->init(&x->m, &batch);
		for (size_t i = 0; i < LIST_LEN; i++) {
			merge_ok(x, &fold, &list[i]->st);
			add_picks(x, &batch, list[i]->picks, list[i]->n);
			replay(x, &tree[i], list[i]);
		}
		/* Balanced tree: 8 -> 4 -> 2 -> 1, merging neighbours. */
		for (size_t w = 1; w < LIST_LEN; w *= 2)
			for (size_t i = 0; i + w < LIST_LEN; i += 2 * w)
				merge_ok(x, &tree[i], &tree[i + w]);
		if (!same(x, &fold, &batch))
			report(x, "left fold of merges == one batch of adds");
		if (!same(x, &fold, &tree[0]))
			report(x, "left fold of merges == tree of merges");
		vt->destroy(&x->m, &fold);
		vt->destroy(&x->m, &batch);
		for (size_t i = 0; i < LIST_LEN; i++)
			vt->destroy(&x->m, &tree[i]);
	}
}

static void law_round_trip(ctx_t *x)
{
	const mm_monoid_vtable_t *vt = x->m.vt;
	mm_buf_t e1 = {0}, e2 = {0};
	state_t d;

	for (size_t i = 0; i < N_STATES; i++) {
		encode_ok(x, &x->s[i].st, &e1);
		vt->init(&x->m, &d);
		if (vt->decode(&x->m, &d, e1.p, e1.len) != 0) {
			report(x, "decode(encode(x)) succeeds");
		} else {
			encode_ok(x, &d, &e2);
			if (e1.len != e2.len || memcmp(e1.p, e2.p, e1.len) != 0)
				report(x, "encode(decode(encode(x))) == encode(x)");
			if (!same(x, &d, &x->s[i].st))
				report(x, "decode(encode(x)) == x");
		}
		vt->destroy(&x->m, &d);
	}
	mm_buf_free(&e1);
	mm_buf_free(&e2);
}

static void law_singleton(ctx_t *x)
{
	const mm_monoid_vtable_t *vt = x->m.vt;
	state_t a, b, one;

	for (size_t i = 0; i < N_STATES; i++) {
		for (int k = 0; k < 5; k++) {
			size_t v = rnd(x->c->pool);
			const built_t *ops[1] = {&x->s[i]};

			if (!within_limit(x, LAW_SINGLETON, ops, 1, 1))
				continue;
			replay(x, &a, &x->s[i]);
			add_picks(x, &a, &v, 1);
			replay(x, &b, &x->s[i]);
			vt->init(&x->m, &one);
			add_picks(x, &one, &v, 1);
			merge_ok(x, &b, &one);
			if (!same(x, &a, &b))
				report(x, "add(x, v) == merge(x, add(init, v))");
			vt->destroy(&x->m, &a);
			vt->destroy(&x->m, &b);
			vt->destroy(&x->m, &one);
		}
	}
}

/* Rebuilds each built state with add_start/add_finish, the state moved
 * (copied elsewhere, the old bytes scribbled over) between the halves, as
 * the record loop's table may move its entries. */
static void law_split_add(ctx_t *x)
{
	const mm_monoid_vtable_t *vt = x->m.vt;
	state_t moved[2], *st;
	mm_value_t bad = {.type = MM_VAL_NONE};
	mm_add_later_t later;
	size_t pending = 0;

	if ((vt->add_start == NULL) != (vt->add_finish == NULL))
		report(x, "add_start and add_finish come together");
	if (vt->add_start == NULL)
		return;
	for (size_t i = 0; i < N_STATES; i++) {
		const built_t *b = &x->s[i];
		int at = 0;

		vt->init(&x->m, &moved[0]);
		for (size_t j = 0; j < b->n; j++) {
			st = &moved[at];
			memset(&later, 0xa5, sizeof(later));
			if (vt->add_start(&x->m, st, &x->pool[b->picks[j]], &later) != 0) {
				report(x, "add_start succeeds where add does");
				break;
			}
			if (later.pending != 0 && later.pending != 1) {
				report(x, "add_start sets later->pending to 0 or 1");
				break;
			}
			if (later.pending) {
				pending++;
				memcpy(&moved[!at], st, sizeof(*st));
				memset(st, 0x5a, sizeof(*st));
				at = !at;
				vt->add_finish(&x->m, &moved[at], &later);
			}
		}
		if (!same(x, &moved[at], &b->st))
			report(x, "add_start + add_finish, the state moved between them == add");
		/* A value add refuses: the same code, nothing left pending. */
		later.pending = 1;
		if (vt->add_start(&x->m, &moved[at], &bad, &later) !=
			    vt->add(&x->m, &moved[at], &bad) ||
		    later.pending != 0)
			report(x, "add_start refuses what add refuses, nothing pending");
		vt->destroy(&x->m, &moved[at]);
	}
	/* The big states go dense, where the store is left for later. */
	if (pending == 0)
		report(x, "add_start leaves some store for add_finish");
	printf("#   %s: split adds, %zu stores left for add_finish\n", x->c->name, pending);
}

static void run_case(const law_case_t *c)
{
	ctx_t *x = calloc(1, sizeof(*x));

	if (x == NULL) {
		unit_cur_failed++;
		return;
	}
	x->c = c;
	rng = 0x2545f4914f6cdd1dULL; /* each case gets the same fixed seed */
	if (mm_monoid_init(&x->m, c->name, &c->params) != 0) {
		printf("#   %s: init failed: %s\n", c->name, mm_diag_msg());
		unit_cur_failed++;
		free(x);
		return;
	}
	build(x);
	law_identity(x);
	law_identity_flag(x);
	law_commute(x);
	law_assoc(x);
	law_fold(x);
	law_round_trip(x);
	law_singleton(x);
	law_split_add(x);
	if (x->skipped)
		printf("#   %s: %zu law instances skipped by max_distinct\n", c->name, x->skipped);
	teardown(x);
	free(x);
}

/* Every registered monoid has at least one case. */
TEST(registry_covered)
{
	for (size_t i = 0; mm_monoid_registry[i] != NULL; i++) {
		size_t n = 0;

		for (size_t j = 0; j < sizeof(cases) / sizeof(cases[0]); j++)
			n += strcmp(cases[j].name, mm_monoid_registry[i]->name) == 0;
		if (n == 0) {
			printf("#   no law case for '%s'\n", mm_monoid_registry[i]->name);
			CHECK(0);
		}
	}
}

int main(void)
{
	RUN(registry_covered);
	/* One TAP line per case, in registry order; this is RUN() with a
	 * name computed at run time. */
	for (size_t i = 0; mm_monoid_registry[i] != NULL; i++) {
		for (size_t j = 0; j < sizeof(cases) / sizeof(cases[0]); j++) {
			mm_buf_t d = {0};
			mm_monoid_t m;

			if (strcmp(cases[j].name, mm_monoid_registry[i]->name) != 0)
				continue;
			unit_cur_failed = 0;
			run_case(&cases[j]);
			unit_test_no++;
			if (unit_cur_failed)
				unit_failed_tests++;
			if (mm_monoid_init(&m, cases[j].name, &cases[j].params) != 0 ||
			    mm_monoid_describe(&m, &d) != 0)
				mm_buf_printf(&d, "%s", cases[j].name);
			printf("%sok %d - laws %.*s\n", unit_cur_failed ? "not " : "", unit_test_no,
			       (int)d.len, (const char *)d.p);
			fflush(stdout);
			mm_buf_free(&d);
		}
	}
	UNIT_DONE();
}
