/*
 * baseline.c: "B0", the speed-of-light program `make bench` measures murmur
 * against (doc/performance.md).
 *
 *   baseline MODE FIELD INPUT DATADIR [FLUSH_EVENTS]
 *
 * (for hll, FIELD is KEY:VALUE, e.g. page_id:user_id)
 *
 * MODE is one of
 *   exact FIELD   exact counts per value of FIELD (page_views' work)
 *   mg FIELD      one Misra-Gries Top-32 summary of FIELD (recently_interacted):
 *                 exact counts per batch, merged into the stored summary
 *   dedup FIELD   mg, but an event whose "event_id" was seen before (in this
 *                 batch, or marked in LMDB by an earlier one) is skipped, and
 *                 every new id is marked in LMDB in the batch's transaction
 *   hll KEY:VALUE one HyperLogLog of VALUE per value of KEY (unique_visitors'
 *                 work): the batch's raised registers per key, merged into
 *                 the key's stored registers
 *
 * It does the least work that gives the same durable answer as murmur on
 * the same JSON Lines input: the file is read in 1 MiB blocks, a hand scanner
 * finds the one field per line (no escapes, no validation), values are
 * pre-aggregated in an open-addressing hash table, and every FLUSH_EVENTS
 * events (default 100 000) one fsync'd LMDB write transaction adds the
 * batch's deltas to the stored values (keys sorted first, so the B-tree is
 * walked in order), merges the Top-K summary and records the byte offset
 * read so far.
 *
 * hll's registers are those of murmur's HyperLogLog (16384 of them, the low
 * 14 bits of a 64-bit hash of the value choosing one, the rank one more than
 * the trailing zeros of the other 50), with this file's own hash, so the
 * estimates are alike but not equal to murmur's. Both fields are found in
 * one pass over the line. In the batch, a key's raised registers are an
 * unsorted list while it is short (HLL_LIST_MAX), then a byte per register;
 * at the flush the list is sorted and merged into the key's stored value:
 * its non-zero registers as 3-byte entries (u16 LE register, u8 rank) in
 * register order, or all 16384 registers a byte each once that is shorter.
 * A key none of whose registers rose is not written. It is the least work
 * that keeps a mergeable distinct count per key and day, without murmur's
 * compatibility with Valkey's bytes.
 *
 * Keys carry the day of processing time, as murmur's daily windows do.
 * Nothing here is shared with the engine on purpose: it is the yardstick,
 * not a second implementation.
 *
 * On exit it prints one JSON object on stdout: records, flushes, store
 * writes, duplicates skipped and the summary's top item with its count (for
 * hll, the key with the largest estimate and that estimate), so a bench run
 * can check both programs agree before comparing their costs.
 */
#define _GNU_SOURCE /* qsort_r */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TOPK 32
#define BLOCK (1 << 20)

enum { MODE_EXACT, MODE_MG, MODE_DEDUP, MODE_HLL };

#define HLL_REGS 16384
/* A stored value is dense (a byte per register) once 3-byte entries would
 * not be shorter. */
#define HLL_SPARSE_MAX (HLL_REGS / 3)

/* A key's registers that a batch raised grow as a list of (register << 8 |
 * rank), unsorted, up to this many, then as a byte per register. */
#define HLL_LIST_MAX 64

/* hll: the registers one key raised in the batch. */
typedef struct regset {
	uint32_t *list;
	uint32_t n, cap;
	uint8_t *dense;
} regset_t;

/* One open-addressing table of byte strings with an int64 each; the strings
 * live in an arena that is emptied with the table. */
typedef struct slot {
	uint64_t hash;
	uint32_t off, len; /* len 0: empty slot */
	int64_t count;
} slot_t;

typedef struct table {
	slot_t *slots;
	size_t cap, used;
	char *arena;
	size_t arena_len, arena_cap;
} table_t;

typedef struct run {
	int mode;
	const char *field;
	size_t field_len;
	long flush_events;
	MDB_env *env;
	MDB_dbi dbi;
	MDB_txn *reader; /* dedup: the read transaction marks are looked up in */
	table_t batch;   /* the batch's exact counts per value */
	table_t seen;    /* dedup: ids first seen in this batch */
	char mark[600];  /* dedup: the key of the mark looked up, "d/0/" + id */
	size_t mark_head;
	const char *value;  /* hll: the field counted distinct */
	size_t value_len;
	regset_t *sets;     /* hll: the batch's registers by key number */
	size_t nkeys, keys_cap;
	uint64_t offset;
	long records, in_batch, flushes, writes, duplicates;
	char top[256];
	int64_t top_count;
} run_t;

static void die(const char *what, int rc)
{
	fprintf(stderr, "baseline: %s: %s\n", what, rc > 0 ? mdb_strerror(rc) : strerror(errno));
	exit(1);
}

static uint64_t hash_bytes(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return h;
}

static void table_init(table_t *t, size_t cap)
{
	t->slots = calloc(cap, sizeof(*t->slots));
	t->cap = cap;
	t->used = 0;
	t->arena_cap = 1 << 20;
	t->arena = malloc(t->arena_cap);
	t->arena_len = 0;
	if (t->slots == NULL || t->arena == NULL)
		die("out of memory", 0);
}

static void table_clear(table_t *t)
{
	memset(t->slots, 0, t->cap * sizeof(*t->slots));
	t->used = 0;
	t->arena_len = 0;
}

static slot_t *table_probe(slot_t *slots, size_t cap, uint64_t h, const char *arena, const char *k,
			   size_t n)
{
	size_t i = h & (cap - 1);

	while (slots[i].len != 0 &&
	       !(slots[i].hash == h && slots[i].len == n && memcmp(arena + slots[i].off, k, n) == 0))
		i = (i + 1) & (cap - 1);
	return &slots[i];
}

static void table_grow(table_t *t)
{
	size_t cap = t->cap * 2;
	slot_t *s = calloc(cap, sizeof(*s));

	if (s == NULL)
		die("out of memory", 0);
	for (size_t i = 0; i < t->cap; i++)
		if (t->slots[i].len != 0)
			*table_probe(s, cap, t->slots[i].hash, NULL, NULL, 0) = t->slots[i];
	free(t->slots);
	t->slots = s;
	t->cap = cap;
}

/* The slot of key k, inserted with count 0 when absent if insert is set
 * (NULL when absent and not inserted). */
static slot_t *table_get(table_t *t, const char *k, size_t n, int insert)
{
	uint64_t h = hash_bytes(k, n);
	slot_t *s = table_probe(t->slots, t->cap, h, t->arena, k, n);

	if (s->len != 0 || !insert)
		return s->len != 0 ? s : NULL;
	if (t->arena_len + n > t->arena_cap) {
		while (t->arena_len + n > t->arena_cap)
			t->arena_cap *= 2;
		t->arena = realloc(t->arena, t->arena_cap);
		if (t->arena == NULL)
			die("out of memory", 0);
	}
	memcpy(t->arena + t->arena_len, k, n);
	s->hash = h;
	s->off = (uint32_t)t->arena_len;
	s->len = (uint32_t)n;
	s->count = 0;
	t->arena_len += n;
	if (++t->used * 2 > t->cap) {
		table_grow(t);
		s = table_probe(t->slots, t->cap, h, t->arena, k, n);
	}
	return s;
}

/* The value of "FIELD":"..." on one line (no escapes inside); 0 if absent. */
static size_t scan_field(const char *p, const char *end, const char *field, size_t flen,
			 const char **out)
{
	while ((p = memchr(p, '"', (size_t)(end - p))) != NULL) {
		p++;
		if ((size_t)(end - p) > flen + 1 && memcmp(p, field, flen) == 0 && p[flen] == '"') {
			const char *v = p + flen + 1, *q;

			while (v < end && (*v == ':' || *v == ' '))
				v++;
			if (v >= end || *v != '"')
				return 0;
			v++;
			q = memchr(v, '"', (size_t)(end - v));
			if (q == NULL)
				return 0;
			*out = v;
			return (size_t)(q - v);
		}
		p = memchr(p, '"', (size_t)(end - p)); /* skip the rest of this string */
		if (p == NULL)
			return 0;
		p++;
	}
	return 0;
}

/* hll: the values of "KEY":"..." and "VALUE":"..." in one pass over the
 * line, as scan_field finds one; 0 unless both are there. */
static int scan_fields(const char *p, const char *end, const run_t *r, const char **k, size_t *kn,
		       const char **v, size_t *vn)
{
	*kn = *vn = 0;
	while ((p = memchr(p, '"', (size_t)(end - p))) != NULL) {
		const char *name = ++p, *q;
		size_t nlen;

		if ((p = memchr(p, '"', (size_t)(end - p))) == NULL)
			return 0;
		nlen = (size_t)(p - name);
		for (p++; p < end && (*p == ':' || *p == ' '); p++)
			;
		if (p >= end || *p != '"')
			continue; /* the string was a value, or its value is no string */
		p++;
		q = memchr(p, '"', (size_t)(end - p));
		if (q == NULL)
			return 0;
		if (nlen == r->field_len && memcmp(name, r->field, nlen) == 0) {
			*k = p;
			*kn = (size_t)(q - p);
		} else if (nlen == r->value_len && memcmp(name, r->value, nlen) == 0) {
			*v = p;
			*vn = (size_t)(q - p);
		}
		if (*kn != 0 && *vn != 0)
			return 1;
		p = q + 1;
	}
	return 0;
}

static int cmp_slot_keys(const void *a, const void *b, void *arena)
{
	const slot_t *x = *(slot_t *const *)a, *y = *(slot_t *const *)b;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp((char *)arena + x->off, (char *)arena + y->off, n);

	return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* The occupied slots of t, sorted by key. */
static slot_t **sorted_slots(table_t *t)
{
	slot_t **v = malloc((t->used + 1) * sizeof(*v));
	size_t n = 0;

	if (v == NULL)
		die("out of memory", 0);
	for (size_t i = 0; i < t->cap; i++)
		if (t->slots[i].len != 0)
			v[n++] = &t->slots[i];
	qsort_r(v, n, sizeof(*v), cmp_slot_keys, t->arena);
	return v;
}

/* A store key is PREFIX/DAY/NAME. The PREFIX/DAY/ part is written once
 * into the key buffer (key_head, at a flush or at start) and each name is
 * copied after it (key_name): formatting the day per key would be printf's
 * work on every key of every flush. */
static size_t key_head(char *buf, size_t cap, const char *prefix, long day)
{
	int h = snprintf(buf, cap, "%s/%ld/", prefix, day);

	return h < 0 || (size_t)h >= cap ? 0 : (size_t)h;
}

static size_t key_name(char *buf, size_t cap, size_t head, const char *k, size_t n)
{
	if (head == 0 || head + n > cap)
		return 0;
	memcpy(buf + head, k, n);
	return head + n;
}

/* Merges the batch's Misra-Gries counters into the stored summary (the
 * mergeable-summaries rule: add, then subtract the (K+1)-th largest count
 * and keep what stays positive) and writes it back. The stored form is a
 * list of (u16 length, bytes, i64 count). */
static void merge_topk(run_t *r, MDB_txn *txn, long day)
{
	table_t sum;
	char key[64];
	MDB_val k = {0}, v;
	int64_t top[TOPK + 1], cut = 0;
	size_t nc = 0, len = 0;
	char *out;
	int rc;

	table_init(&sum, 1 << 16);
	k.mv_size = (size_t)snprintf(key, sizeof(key), "topk/%ld/global", day);
	k.mv_data = key;
	rc = mdb_get(txn, r->dbi, &k, &v);
	if (rc == 0) {
		const unsigned char *p = v.mv_data, *e = p + v.mv_size;

		while (p + 2 <= e) {
			uint16_t n;
			int64_t c;

			memcpy(&n, p, 2);
			memcpy(&c, p + 2 + n, 8);
			table_get(&sum, (const char *)p + 2, n, 1)->count += c;
			p += 2 + n + 8;
		}
	} else if (rc != MDB_NOTFOUND) {
		die("mdb_get", rc);
	}
	for (size_t i = 0; i < r->batch.cap; i++)
		if (r->batch.slots[i].len != 0)
			table_get(&sum, r->batch.arena + r->batch.slots[i].off, r->batch.slots[i].len, 1)
				->count += r->batch.slots[i].count;
	/* The (K+1)-th largest count: the K+1 largest kept in descending
	 * order; on a skewed input most counts fail the first comparison. */
	for (size_t i = 0; i < sum.cap; i++) {
		int64_t c = sum.slots[i].count;
		size_t j;

		if (sum.slots[i].len == 0 || (nc == TOPK + 1 && c <= top[TOPK]))
			continue;
		j = nc < TOPK + 1 ? nc++ : TOPK;
		for (; j > 0 && top[j - 1] < c; j--)
			top[j] = top[j - 1];
		top[j] = c;
	}
	if (nc == TOPK + 1)
		cut = top[TOPK];
	out = malloc(sum.arena_len + sum.used * 10 + 1);
	if (out == NULL)
		die("out of memory", 0);
	r->top_count = 0;
	for (size_t i = 0; i < sum.cap; i++) {
		slot_t *s = &sum.slots[i];
		uint16_t n = (uint16_t)s->len;
		int64_t c = s->count - cut;

		if (s->len == 0 || c <= 0)
			continue;
		memcpy(out + len, &n, 2);
		memcpy(out + len + 2, sum.arena + s->off, n);
		memcpy(out + len + 2 + n, &c, 8);
		len += 2 + n + 8;
		if (c > r->top_count && n < sizeof(r->top)) {
			r->top_count = c;
			memcpy(r->top, sum.arena + s->off, n);
			r->top[n] = '\0';
		}
	}
	v.mv_data = out;
	v.mv_size = len;
	if ((rc = mdb_put(txn, r->dbi, &k, &v, 0)) != 0)
		die("mdb_put", rc);
	r->writes++;
	free(out);
	free(sum.slots);
	free(sum.arena);
}

/* hll: raises register reg of set to rank. */
static void regset_raise(regset_t *set, uint32_t reg, uint8_t rank)
{
	if (set->dense == NULL) {
		for (uint32_t i = 0; i < set->n; i++) {
			if (set->list[i] >> 8 == reg) {
				if ((set->list[i] & 0xff) < rank)
					set->list[i] = reg << 8 | rank;
				return;
			}
		}
		if (set->n < HLL_LIST_MAX) {
			if (set->n == set->cap) {
				set->cap = set->cap ? 2 * set->cap : 4;
				set->list = realloc(set->list, set->cap * sizeof(*set->list));
				if (set->list == NULL)
					die("out of memory", 0);
			}
			set->list[set->n++] = reg << 8 | rank;
			return;
		}
		set->dense = calloc(HLL_REGS, 1);
		if (set->dense == NULL)
			die("out of memory", 0);
		for (uint32_t i = 0; i < set->n; i++)
			set->dense[set->list[i] >> 8] = (uint8_t)set->list[i];
	}
	if (set->dense[reg] < rank)
		set->dense[reg] = rank;
}

/* hll: the batch number of the key in slot s (table_get's count, which is
 * the number plus one once given). */
static uint32_t key_number(run_t *r, slot_t *s)
{
	if (s->count == 0) {
		if (r->nkeys == r->keys_cap) {
			size_t cap = r->keys_cap ? 2 * r->keys_cap : 1 << 16;

			r->sets = realloc(r->sets, cap * sizeof(*r->sets));
			if (r->sets == NULL)
				die("out of memory", 0);
			memset(r->sets + r->keys_cap, 0, (cap - r->keys_cap) * sizeof(*r->sets));
			r->keys_cap = cap;
		}
		s->count = (int64_t)++r->nkeys;
	}
	return (uint32_t)(s->count - 1);
}

/* hll: sorts a key's list (at most HLL_LIST_MAX entries) by register, in
 * place: an insertion sort, where qsort would call a comparison for each
 * step. */
static void sort_list(uint32_t *list, uint32_t n)
{
	for (uint32_t i = 1; i < n; i++) {
		uint32_t x = list[i], j = i;

		for (; j > 0 && list[j - 1] > x; j--)
			list[j] = list[j - 1];
		list[j] = x;
	}
}

/* hll: merges the registers g[0..n) (register << 8 | rank, in register
 * order) into the stored value old (NULL: none) and writes the result to
 * out; returns its length, or 0 when no register rose. */
static size_t hll_merge(const uint8_t *old, size_t olen, const uint32_t *g, size_t n, uint8_t *out)
{
	size_t i = 0, j = 0, k = 0;
	int rose = 0;

	if (old != NULL && olen == HLL_REGS) {
		memcpy(out, old, HLL_REGS);
		for (i = 0; i < n; i++) {
			uint32_t reg = g[i] >> 8;
			uint8_t rank = (uint8_t)g[i];

			if (out[reg] < rank) {
				out[reg] = rank;
				rose = 1;
			}
		}
		return rose ? HLL_REGS : 0;
	}
	olen = old != NULL ? olen / 3 : 0;
	while (i < olen || j < n) {
		uint32_t oreg = i < olen ? (uint32_t)(old[3 * i] | old[3 * i + 1] << 8) : HLL_REGS;
		uint32_t greg = j < n ? g[j] >> 8 : HLL_REGS;
		uint8_t rank;

		if (oreg < greg) {
			rank = old[3 * i + 2];
			i++;
		} else {
			rank = (uint8_t)g[j++];
			if (oreg == greg) {
				rose |= rank > old[3 * i + 2];
				rank = rank > old[3 * i + 2] ? rank : old[3 * i + 2];
				i++;
			} else {
				rose = 1;
			}
		}
		out[3 * k] = (uint8_t)(oreg < greg ? oreg : greg);
		out[3 * k + 1] = (uint8_t)((oreg < greg ? oreg : greg) >> 8);
		out[3 * k + 2] = rank;
		k++;
	}
	if (!rose)
		return 0;
	if (k <= HLL_SPARSE_MAX)
		return 3 * k;
	/* Dense from here on: a byte per register. */
	uint8_t regs[HLL_REGS] = {0};

	for (i = 0; i < k; i++)
		regs[out[3 * i] | out[3 * i + 1] << 8] = out[3 * i + 2];
	memcpy(out, regs, HLL_REGS);
	return HLL_REGS;
}

/* hll: the batch's registers merged into each key's stored value, keys in
 * order on one cursor. */
static void flush_hll(run_t *r, MDB_txn *txn, long day)
{
	slot_t **keys = sorted_slots(&r->batch);
	uint32_t *g = malloc(HLL_REGS * sizeof(*g));
	uint8_t *out = malloc(3 * (size_t)HLL_REGS + 3);
	char key[600];
	size_t head = key_head(key, sizeof(key), "h", day);
	MDB_cursor *cur;
	MDB_val k, val;
	int rc;

	if (g == NULL || out == NULL)
		die("out of memory", 0);
	if ((rc = mdb_cursor_open(txn, r->dbi, &cur)) != 0)
		die("mdb_cursor_open", rc);
	for (size_t i = 0; i < r->batch.used; i++) {
		slot_t *s = keys[i];
		regset_t *set = &r->sets[s->count - 1];
		const uint32_t *list = set->list;
		size_t n = set->n, len;
		unsigned flags = 0;

		if (set->dense != NULL) {
			n = 0;
			for (uint32_t reg = 0; reg < HLL_REGS; reg += 8) {
				uint64_t w;

				memcpy(&w, set->dense + reg, 8);
				for (uint32_t b = 0; w != 0 && b < 8; b++, w >>= 8)
					if (w & 0xff)
						g[n++] = (reg + b) << 8 | (uint32_t)(w & 0xff);
			}
			list = g;
			free(set->dense);
			set->dense = NULL;
		} else {
			sort_list(set->list, (uint32_t)n);
		}
		set->n = 0;
		k.mv_data = key;
		k.mv_size = key_name(key, sizeof(key), head, r->batch.arena + s->off, s->len);
		if (k.mv_size == 0)
			continue;
		rc = mdb_cursor_get(cur, &k, &val, MDB_SET_KEY);
		if (rc == 0)
			flags = MDB_CURRENT;
		else if (rc != MDB_NOTFOUND)
			die("mdb_cursor_get", rc);
		len = hll_merge(rc == 0 ? val.mv_data : NULL, rc == 0 ? val.mv_size : 0, list, n, out);
		if (len == 0)
			continue;
		k.mv_data = key;
		val.mv_data = out;
		val.mv_size = len;
		if ((rc = mdb_cursor_put(cur, &k, &val, flags)) != 0)
			die("mdb_cursor_put", rc);
		r->writes++;
	}
	mdb_cursor_close(cur);
	r->nkeys = 0;
	free(out);
	free(g);
	free(keys);
}

/* hll: the estimate of a stored value's registers (Flajolet's raw estimate,
 * linear counting while it is below 2.5 m and registers are zero); inv[r]
 * is 2^-r. */
static double hll_estimate(const uint8_t *v, size_t len, const double inv[256])
{
	double sum = 0, m = HLL_REGS, e;
	size_t zeros = HLL_REGS;

	if (len == HLL_REGS) {
		zeros = 0;
		for (size_t i = 0; i < HLL_REGS; i++) {
			sum += inv[v[i]];
			zeros += v[i] == 0;
		}
	} else {
		zeros -= len / 3;
		for (size_t i = 0; i < len / 3; i++)
			sum += inv[v[3 * i + 2]];
		sum += (double)zeros;
	}
	e = 0.7213 / (1 + 1.079 / m) * m * m / sum;
	if (e <= 2.5 * m && zeros > 0)
		e = m * log(m / (double)zeros);
	return e;
}

/* hll: the key whose stored registers estimate the most distinct values,
 * and that estimate, for the bench to check against murmur's. */
static void hll_top(run_t *r)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k = {2, "h/"}, v;
	double best = -1, inv[256];
	int rc;

	/* 2^-rank from a table (inv[rank]): this reads every stored register
	 * once, at the end of a measured run, and must cost next to nothing. */
	for (int i = 0; i < 256; i++)
		inv[i] = ldexp(1.0, -i);
	if ((rc = mdb_txn_begin(r->env, NULL, MDB_RDONLY, &txn)) != 0 ||
	    (rc = mdb_cursor_open(txn, r->dbi, &cur)) != 0)
		die("mdb_txn_begin", rc);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		const char *key = k.mv_data, *name;
		double e;

		if (k.mv_size < 2 || memcmp(key, "h/", 2) != 0)
			break;
		e = hll_estimate(v.mv_data, v.mv_size, inv);
		/* The key is h/DAY/NAME: the name is after the second '/'. */
		name = memchr(key + 2, '/', k.mv_size - 2);
		if (e > best && name != NULL && (size_t)(key + k.mv_size - name - 1) < sizeof(r->top)) {
			best = e;
			memcpy(r->top, name + 1, (size_t)(key + k.mv_size - name - 1));
			r->top[key + k.mv_size - name - 1] = '\0';
			r->top_count = llround(e);
		}
	}
	if (rc != 0 && rc != MDB_NOTFOUND)
		die("mdb_cursor_get", rc);
	mdb_txn_abort(txn);
}

static void flush(run_t *r)
{
	MDB_txn *txn;
	MDB_val k, v;
	char key[600];
	long day = (long)(time(NULL) / 86400);
	int rc;

	if (r->reader)
		mdb_txn_reset(r->reader);
	if ((rc = mdb_txn_begin(r->env, NULL, 0, &txn)) != 0)
		die("mdb_txn_begin", rc);
	if (r->mode == MODE_EXACT) {
		slot_t **v_slots = sorted_slots(&r->batch);
		size_t head = key_head(key, sizeof(key), "c", day);
		MDB_cursor *cur;

		/* One cursor walks the sorted keys: a present key is updated
		 * where the lookup left the cursor, without a second descent. */
		if ((rc = mdb_cursor_open(txn, r->dbi, &cur)) != 0)
			die("mdb_cursor_open", rc);
		for (size_t i = 0; i < r->batch.used; i++) {
			slot_t *s = v_slots[i];
			int64_t sum = s->count;
			unsigned flags = 0;

			k.mv_data = key;
			k.mv_size = key_name(key, sizeof(key), head, r->batch.arena + s->off, s->len);
			if (k.mv_size == 0)
				continue;
			rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
			if (rc == 0 && v.mv_size == 8) {
				int64_t old;

				memcpy(&old, v.mv_data, 8);
				sum += old;
				flags = MDB_CURRENT;
			} else if (rc != 0 && rc != MDB_NOTFOUND) {
				die("mdb_cursor_get", rc);
			}
			k.mv_data = key; /* MDB_SET_KEY pointed it into the map */
			v.mv_data = &sum;
			v.mv_size = 8;
			if ((rc = mdb_cursor_put(cur, &k, &v, flags)) != 0)
				die("mdb_cursor_put", rc);
			r->writes++;
		}
		mdb_cursor_close(cur);
		free(v_slots);
	} else if (r->mode == MODE_HLL) {
		flush_hll(r, txn, day);
	} else {
		if (r->mode == MODE_DEDUP) {
			slot_t **ids = sorted_slots(&r->seen);
			size_t head = key_head(key, sizeof(key), "d", 0);
			int64_t expires = (int64_t)time(NULL) + 2 * 86400;

			for (size_t i = 0; i < r->seen.used; i++) {
				k.mv_data = key;
				k.mv_size = key_name(key, sizeof(key), head, r->seen.arena + ids[i]->off,
						     ids[i]->len);
				if (k.mv_size == 0)
					continue;
				v.mv_data = &expires;
				v.mv_size = 8;
				if ((rc = mdb_put(txn, r->dbi, &k, &v, 0)) != 0)
					die("mdb_put", rc);
				r->writes++;
			}
			free(ids);
			table_clear(&r->seen);
		}
		merge_topk(r, txn, day);
	}
	k.mv_data = "@offset";
	k.mv_size = 7;
	v.mv_data = &r->offset;
	v.mv_size = 8;
	if ((rc = mdb_put(txn, r->dbi, &k, &v, 0)) != 0)
		die("mdb_put", rc);
	if ((rc = mdb_txn_commit(txn)) != 0)
		die("mdb_txn_commit", rc);
	if (r->reader && (rc = mdb_txn_renew(r->reader)) != 0)
		die("mdb_txn_renew", rc);
	table_clear(&r->batch);
	r->flushes++;
	r->in_batch = 0;
}

/* dedup: whether this event's id was seen (then it is skipped), marking it
 * in the batch's set when it was not. */
static int seen_before(run_t *r, const char *id, size_t n)
{
	MDB_val k, v;
	int rc;

	if (table_get(&r->seen, id, n, 0) != NULL)
		return 1;
	k.mv_data = r->mark;
	k.mv_size = key_name(r->mark, sizeof(r->mark), r->mark_head, id, n);
	rc = mdb_get(r->reader, r->dbi, &k, &v);
	if (rc == 0)
		return 1;
	if (rc != MDB_NOTFOUND)
		die("mdb_get", rc);
	table_get(&r->seen, id, n, 1);
	return 0;
}

static void event(run_t *r, const char *p, const char *end)
{
	const char *val, *id;
	size_t n, idn;

	r->records++;
	if (r->mode == MODE_HLL) {
		if (scan_fields(p, end, r, &val, &n, &id, &idn)) {
			uint64_t h = hash_bytes(id, idn);
			uint32_t kid = key_number(r, table_get(&r->batch, val, n, 1));

			regset_raise(&r->sets[kid], (uint32_t)(h & (HLL_REGS - 1)),
				     (uint8_t)(__builtin_ctzll(h >> 14 | 1ULL << 50) + 1));
		}
	} else if ((n = scan_field(p, end, r->field, r->field_len, &val)) != 0) {
		if (r->mode == MODE_DEDUP &&
		    (idn = scan_field(p, end, "event_id", 8, &id)) != 0 && seen_before(r, id, idn))
			r->duplicates++;
		else
			table_get(&r->batch, val, n, 1)->count++;
	}
	if (++r->in_batch >= r->flush_events)
		flush(r);
}

int main(int argc, char **argv)
{
	static const char *modes[] = {"exact", "mg", "dedup", "hll"};
	run_t r = {0};
	char *buf;
	size_t have = 0;
	ssize_t got;
	int fd, rc;

	r.mode = -1;
	for (int i = 0; argc > 1 && i < 4; i++)
		if (strcmp(argv[1], modes[i]) == 0)
			r.mode = i;
	if (argc < 5 || r.mode < 0) {
		fprintf(stderr, "usage: baseline exact|mg|dedup FIELD INPUT DATADIR [FLUSH_EVENTS]\n"
				"       baseline hll KEY:VALUE INPUT DATADIR [FLUSH_EVENTS]\n");
		return 2;
	}
	r.field = argv[2];
	r.field_len = strlen(r.field);
	if (r.mode == MODE_HLL) {
		const char *colon = strchr(r.field, ':');

		if (colon == NULL || colon == r.field || colon[1] == '\0') {
			fprintf(stderr, "baseline: hll takes KEY:VALUE, e.g. page_id:user_id\n");
			return 2;
		}
		r.field_len = (size_t)(colon - r.field);
		r.value = colon + 1;
		r.value_len = strlen(r.value);
	}
	r.flush_events = argc > 5 ? atol(argv[5]) : 100000;
	if (r.flush_events < 1)
		r.flush_events = 100000;
	if ((fd = open(argv[3], O_RDONLY)) < 0)
		die(argv[3], 0);
	if (mkdir(argv[4], 0700) != 0 && errno != EEXIST)
		die(argv[4], 0);
	if ((rc = mdb_env_create(&r.env)) != 0 || (rc = mdb_env_set_mapsize(r.env, 4ULL << 30)) != 0 ||
	    (rc = mdb_env_open(r.env, argv[4], MDB_NOTLS, 0600)) != 0)
		die("mdb_env_open", rc);
	{
		MDB_txn *txn;

		if ((rc = mdb_txn_begin(r.env, NULL, 0, &txn)) != 0 ||
		    (rc = mdb_dbi_open(txn, NULL, 0, &r.dbi)) != 0 || (rc = mdb_txn_commit(txn)) != 0)
			die("mdb_dbi_open", rc);
	}
	if (r.mode == MODE_DEDUP) {
		if ((rc = mdb_txn_begin(r.env, NULL, MDB_RDONLY, &r.reader)) != 0)
			die("mdb_txn_begin", rc);
		table_init(&r.seen, 1 << 18);
		r.mark_head = key_head(r.mark, sizeof(r.mark), "d", 0);
	}
	table_init(&r.batch, 1 << 16);
	buf = malloc(BLOCK);
	if (buf == NULL)
		die("out of memory", 0);
	while ((got = read(fd, buf + have, BLOCK - have)) > 0) {
		char *p = buf, *end = buf + have + (size_t)got, *nl;

		while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
			r.offset += (uint64_t)(nl + 1 - p);
			event(&r, p, nl);
			p = nl + 1;
		}
		have = (size_t)(end - p);
		if (have == BLOCK) {
			fprintf(stderr, "baseline: a line longer than %d bytes\n", BLOCK);
			return 1;
		}
		memmove(buf, p, have);
	}
	if (got < 0)
		die("read", 0);
	if (r.in_batch > 0)
		flush(&r);
	if (r.mode == MODE_HLL)
		hll_top(&r);
	if (r.reader)
		mdb_txn_abort(r.reader);
	mdb_env_close(r.env);
	printf("{\"records\":%ld,\"flushes\":%ld,\"store_writes\":%ld,\"duplicates\":%ld,"
	       "\"top\":\"%s\",\"top_count\":%lld}\n",
	       r.records, r.flushes, r.writes, r.duplicates, r.top, (long long)r.top_count);
	free(buf);
	close(fd);
	return 0;
}
