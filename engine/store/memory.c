/*
 * memory.c: an in-memory store with the LMDB store's semantics, for tests.
 *
 * Everything lives in one open-addressing hash table (linear probing with
 * tombstones, never more than half full) from byte keys to byte values, one
 * allocation per record. A kind byte opens every key so that the four kinds
 * of record share the table:
 *
 *   'S' u8 ns_len, ns, u16 BE entity_len, entity, bucket (8 bytes BE, sign
 *       bit flipped)                    -> u64 LE expire_ms, monoid encoding
 *   'D' u8 ns_len, ns, id               -> u64 LE expire_ms
 *   'P' source id                       -> position bytes
 *   'M' namespace name                  -> metadata bytes
 *
 * Expiry, marks and purges behave as in lmdb.c; purges scan the whole table,
 * which is fine at the sizes tests use.
 *
 * apply() and get_many() are queued and run in order from a zero-timeout
 * timer on the loop, so their callbacks never run inside the call and the
 * caller's states are read when the operation runs, as with a real backend.
 * An apply is all-or-nothing like an LMDB transaction: every change to a slot
 * logs the slot's previous record, and a failure puts them back in reverse
 * order. A delta the monoid cannot merge into the stored state (MM_ERANGE,
 * e.g. an int64 sum that would overflow) is not a failure: like lmdb.c, the
 * store marks it MM_DELTA_REJECTED, leaves its state as it was and applies
 * the rest, and the engine dead-letters it (reason merge_failed). The table grows before an apply starts, never during one, so the
 * logged slot numbers stay valid.
 *
 * Error injection (tests only, compiled in when MM_ERRINJ is defined):
 * MURMUR_ERRINJ_MEMORY_APPLY=N makes the next N applies fail with
 * MM_ECORRUPT, a failure no retry can fix (lmdb.c injects a retriable one).
 *
 * close() frees the table at once and the struct in the timer's close
 * callback, so the loop must run once more before uv_loop_close().
 */
#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../lib/error.h"
#include "../lib/hash.h"
#include "store.h"

#define MEM_SEED 0x6d656d73746f7265ULL /* "memstore" */
#define MEM_MIN_CAP 16

typedef struct mem_rec {
	uint64_t hash;
	size_t klen;
	size_t vlen;
	uint8_t data[]; /* klen key bytes, then vlen value bytes */
} mem_rec_t;

/* A deleted slot: probing goes on past it, inserts may reuse it. */
static uint8_t mem_tomb_mark;
#define MEM_TOMB ((mem_rec_t *)(void *)&mem_tomb_mark)
#define MEM_LIVE(r) ((r) != NULL && (r) != MEM_TOMB)

typedef struct mem_undo {
	size_t slot;
	mem_rec_t *old;
} mem_undo_t;

enum { MEM_OP_APPLY, MEM_OP_GET };

typedef struct mem_op {
	struct mem_op *next;
	int kind;
	mm_flush_t *f;
	const mm_ns_t *ns;
	const mm_key_t *keys;
	size_t n;
	void *states;
	uint8_t *found;
	int64_t now_ms;
	mm_store_cb cb;
	void *arg;
} mem_op_t;

typedef struct mm_memory {
	mm_store_t base;
	uv_timer_t timer;
	int read_only;
	mem_rec_t **slots;
	size_t cap, used, tombs;
	int logging;            /* inside an apply: log every change */
	mem_undo_t *undo;
	size_t nundo, capundo;
	mem_op_t *head, **tail; /* queued operations, oldest first */
	mm_buf_t kb, vb;        /* scratch for keys and values */
} mm_memory_t;

static const mm_option_t mem_options[] = {
	{0},
};

/* Defined at the end of this file; open() stores it in the store's head. */
extern const mm_store_vtable_t mm_store_memory_vtable;

static int64_t mem_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Finds key: returns 1 with its slot, or 0 with the slot an insert should use. */
static int mem_find(const mm_memory_t *st, const uint8_t *key, size_t klen, uint64_t h,
		    size_t *slot)
{
	size_t mask = st->cap - 1, i = (size_t)h & mask, ins = SIZE_MAX;

	for (;; i = (i + 1) & mask) {
		const mem_rec_t *r = st->slots[i];

		if (r == NULL) {
			*slot = ins != SIZE_MAX ? ins : i;
			return 0;
		}
		if (r == MEM_TOMB) {
			if (ins == SIZE_MAX)
				ins = i;
		} else if (r->hash == h && r->klen == klen && memcmp(r->data, key, klen) == 0) {
			*slot = i;
			return 1;
		}
	}
}

/* Makes room for `extra` inserts without passing half full. */
static int mem_reserve(mm_memory_t *st, size_t extra)
{
	mem_rec_t **slots;
	size_t cap = MEM_MIN_CAP, mask, i, j;

	if ((st->used + st->tombs + extra) * 2 <= st->cap)
		return 0;
	while ((st->used + extra) * 2 > cap)
		cap *= 2;
	slots = calloc(cap, sizeof(*slots));
	if (slots == NULL)
		return mm_diag_set(MM_ENOMEM, "memory: cannot grow the table to %zu slots", cap);
	mask = cap - 1;
	for (i = 0; i < st->cap; i++) {
		if (!MEM_LIVE(st->slots[i]))
			continue;
		for (j = (size_t)st->slots[i]->hash & mask; slots[j] != NULL; j = (j + 1) & mask)
			;
		slots[j] = st->slots[i];
	}
	free(st->slots);
	st->slots = slots;
	st->cap = cap;
	st->tombs = 0;
	return 0;
}

/* Puts rec (a record, MEM_TOMB or NULL) in a slot, keeping the counts. */
static void mem_set(mm_memory_t *st, size_t slot, mem_rec_t *rec)
{
	mem_rec_t *old = st->slots[slot];

	if (MEM_LIVE(old))
		st->used--;
	else if (old == MEM_TOMB)
		st->tombs--;
	if (MEM_LIVE(rec))
		st->used++;
	else if (rec == MEM_TOMB)
		st->tombs++;
	st->slots[slot] = rec;
}

/* Replaces a slot's content (rec, or MEM_TOMB to delete). Inside an apply the
 * old record goes to the undo log; outside, a replaced record is freed. */
static int mem_change(mm_memory_t *st, size_t slot, mem_rec_t *rec)
{
	mem_rec_t *old = st->slots[slot];

	if (st->logging) {
		if (st->nundo == st->capundo) {
			size_t cap = st->capundo ? st->capundo * 2 : 64;
			mem_undo_t *undo = realloc(st->undo, cap * sizeof(*undo));

			if (undo == NULL)
				return mm_diag_set(MM_ENOMEM, "memory: cannot grow the undo log");
			st->undo = undo;
			st->capundo = cap;
		}
		st->undo[st->nundo].slot = slot;
		st->undo[st->nundo].old = old;
		st->nundo++;
	} else if (MEM_LIVE(old)) {
		free(old);
	}
	mem_set(st, slot, rec);
	return 0;
}

/* Ends an apply: on success frees the replaced records, on failure puts them
 * back, newest change first. */
static void mem_txn_end(mm_memory_t *st, int commit)
{
	size_t i;

	for (i = st->nundo; i-- > 0;) {
		mem_undo_t *u = &st->undo[i];

		if (commit) {
			if (MEM_LIVE(u->old))
				free(u->old);
		} else {
			if (MEM_LIVE(st->slots[u->slot]))
				free(st->slots[u->slot]);
			mem_set(st, u->slot, u->old);
		}
	}
	st->nundo = 0;
	st->logging = 0;
}

/* Stores key kb -> value vb (replacing any record), hash h, at slot. */
static int mem_put_at(mm_memory_t *st, size_t slot, uint64_t h)
{
	mem_rec_t *rec = malloc(sizeof(*rec) + st->kb.len + st->vb.len);
	int rc;

	if (rec == NULL)
		return mm_diag_set(MM_ENOMEM, "memory: cannot allocate a record");
	rec->hash = h;
	rec->klen = st->kb.len;
	rec->vlen = st->vb.len;
	memcpy(rec->data, st->kb.p, st->kb.len);
	if (st->vb.len)
		memcpy(rec->data + rec->klen, st->vb.p, st->vb.len);
	if ((rc = mem_change(st, slot, rec)))
		free(rec);
	return rc;
}

/* Builds the key of kind `kind` in st->kb: kind, [ns prefix,] bytes. */
static int mem_key(mm_memory_t *st, char kind, const char *ns, const void *p, size_t n)
{
	size_t nsl = ns ? strlen(ns) : 0;
	int rc;

	st->kb.len = 0;
	if ((rc = mm_buf_put_u8(&st->kb, (uint8_t)kind)))
		return rc;
	if (ns && ((rc = mm_buf_put_u8(&st->kb, (uint8_t)nsl)) ||
		   (rc = mm_buf_append(&st->kb, ns, nsl))))
		return rc;
	return mm_buf_append(&st->kb, p, n);
}

static int mem_state_key(mm_memory_t *st, const char *ns, const mm_key_t *key)
{
	uint64_t b = (uint64_t)key->bucket ^ (1ULL << 63);
	uint8_t tail[8];
	uint8_t len[2] = {(uint8_t)(key->len >> 8), (uint8_t)key->len};
	int i, rc;

	for (i = 7; i >= 0; i--, b >>= 8)
		tail[i] = (uint8_t)b;
	if ((rc = mem_key(st, 'S', ns, len, 2)) ||
	    (rc = mm_buf_append(&st->kb, key->entity, key->len)))
		return rc;
	return mm_buf_append(&st->kb, tail, 8);
}

static int64_t mem_bucket(const mem_rec_t *r)
{
	const uint8_t *p = r->data + r->klen - 8;
	uint64_t b = 0;
	int i;

	for (i = 0; i < 8; i++)
		b = b << 8 | p[i];
	return (int64_t)(b ^ (1ULL << 63));
}

/* Decodes a stored state (see lmdb.c's state_decode): 1 decoded, 0 expired,
 * or MM_ECORRUPT. */
static int mem_decode(const mem_rec_t *r, const mm_ns_t *ns, const mm_key_t *key, int64_t now_ms,
		      void *state)
{
	const uint8_t *v = r->data + r->klen;
	char why[300];
	int64_t expire;
	int rc;

	if (r->vlen < 8)
		return mm_diag_set(MM_ECORRUPT,
				   "memory: corrupt state in ns '%s' bucket %lld: value too short",
				   ns->name, (long long)key->bucket);
	expire = (int64_t)mm_get_u64le(v);
	if (expire != 0 && expire <= now_ms)
		return 0;
	rc = ns->m->vt->decode(ns->m, state, v + 8, r->vlen - 8);
	if (rc == 0)
		return 1;
	if (rc == MM_ENOMEM)
		return rc;
	snprintf(why, sizeof(why), "%s", mm_diag_msg());
	return mm_diag_set(MM_ECORRUPT,
			   "memory: corrupt state in ns '%s' (%zu-byte entity, bucket %lld): %s",
			   ns->name, key->len, (long long)key->bucket, why);
}

static int mem_apply_delta(mm_memory_t *st, const mm_delta_t *d, int64_t now_ms)
{
	const mm_monoid_t *m = d->ns->m;
	_Alignas(16) unsigned char scratch[MM_STATE_MAX];
	size_t slot;
	uint64_t h;
	int found, rc;

	if ((rc = mem_state_key(st, d->ns->name, &d->key)))
		return rc;
	h = mm_hash64(st->kb.p, st->kb.len, MEM_SEED);
	found = mem_find(st, st->kb.p, st->kb.len, h, &slot);
	m->vt->init(m, scratch);
	if (found && (rc = mem_decode(st->slots[slot], d->ns, &d->key, now_ms, scratch)) < 0)
		goto out;
	st->vb.len = 0;
	if ((rc = m->vt->merge(m, scratch, d->state)) ||
	    (rc = mm_buf_put_u64le(&st->vb, (uint64_t)d->expire_ms)) ||
	    (rc = m->vt->encode(m, scratch, &st->vb)))
		goto out;
	rc = mem_put_at(st, slot, h);
out:
	m->vt->destroy(m, scratch);
	return rc;
}

static int mem_apply_mark(mm_memory_t *st, const mm_mark_t *mk)
{
	int64_t expire = mk->expire_ms;
	size_t slot;
	uint64_t h;
	int rc;

	if ((rc = mem_key(st, 'D', mk->ns->name, mk->id, mk->len)))
		return rc;
	h = mm_hash64(st->kb.p, st->kb.len, MEM_SEED);
	if (mem_find(st, st->kb.p, st->kb.len, h, &slot)) {
		const mem_rec_t *r = st->slots[slot];

		if (r->vlen < 8)
			return mm_diag_set(MM_ECORRUPT, "memory: corrupt mark in ns '%s'",
					   mk->ns->name);
		if ((int64_t)mm_get_u64le(r->data + r->klen) > expire)
			expire = (int64_t)mm_get_u64le(r->data + r->klen);
	}
	st->vb.len = 0;
	if ((rc = mm_buf_put_u64le(&st->vb, (uint64_t)expire)))
		return rc;
	return mem_put_at(st, slot, h);
}

/* Deletes the namespace's states in [1, before) and its expired marks. */
static int mem_purge(mm_memory_t *st, const mm_purge_t *pg, int64_t now_ms, size_t *purged)
{
	size_t nsl = strlen(pg->ns->name), i;
	int rc;

	for (i = 0; i < st->cap; i++) {
		const mem_rec_t *r = st->slots[i];
		int drop;

		if (!MEM_LIVE(r) || r->klen < 2 + nsl || r->data[1] != nsl ||
		    memcmp(r->data + 2, pg->ns->name, nsl) != 0)
			continue;
		if (r->data[0] == 'S') {
			int64_t bucket = mem_bucket(r);

			drop = bucket >= 1 && bucket < pg->before_bucket;
			*purged += (size_t)drop;
		} else {
			drop = r->data[0] == 'D' && r->vlen >= 8 &&
			       (int64_t)mm_get_u64le(r->data + r->klen) <= now_ms;
		}
		if (drop && (rc = mem_change(st, i, MEM_TOMB)))
			return rc;
	}
	return 0;
}

static int mem_put_bytes(mm_memory_t *st, char kind, const char *name, const void *p, size_t n)
{
	size_t slot;
	uint64_t h;
	int rc;

	if ((rc = mem_key(st, kind, NULL, name, strlen(name))))
		return rc;
	h = mm_hash64(st->kb.p, st->kb.len, MEM_SEED);
	mem_find(st, st->kb.p, st->kb.len, h, &slot);
	st->vb.len = 0;
	if ((rc = mm_buf_append(&st->vb, p, n)))
		return rc;
	return mem_put_at(st, slot, h);
}

#ifdef MM_ERRINJ
/* Consumes one injected apply failure, if any is pending. Loop thread. */
static int mem_errinj_apply(void)
{
	const char *v = getenv("MURMUR_ERRINJ_MEMORY_APPLY");
	char left[24];
	long n;

	if (v == NULL || (n = strtol(v, NULL, 10)) <= 0)
		return 0;
	snprintf(left, sizeof(left), "%ld", n - 1);
	setenv("MURMUR_ERRINJ_MEMORY_APPLY", left, 1);
	return 1;
}
#endif

static int mem_do_apply(mm_memory_t *st, mm_flush_t *f)
{
	size_t i, purged = 0;
	int rc;

#ifdef MM_ERRINJ
	if (mem_errinj_apply())
		return mm_diag_set(MM_ECORRUPT, "memory: injected failure (MURMUR_ERRINJ_MEMORY_APPLY)");
#endif
	if ((rc = mem_reserve(st, f->ndeltas + f->nmarks + f->npositions)))
		return rc;
	st->logging = 1;
	for (i = 0; i < f->ndeltas && rc == 0; i++) {
		rc = mem_apply_delta(st, &f->deltas[i], f->now_ms);
		if (rc == MM_ERANGE && f->delta_done) {
			/* As in lmdb.c: the merge itself is impossible (a sum would
			 * overflow), no retry can help, so the delta is handed back
			 * rejected (its slot untouched) and the rest goes on. */
			f->delta_done[i] = MM_DELTA_REJECTED;
			if (f->rejected++ == 0)
				snprintf(f->reject_detail, sizeof(f->reject_detail), "%s",
					 mm_diag_msg());
			rc = 0;
		}
	}
	for (i = 0; i < f->nmarks && rc == 0; i++)
		rc = mem_apply_mark(st, &f->marks[i]);
	for (i = 0; i < f->npurges && rc == 0; i++)
		rc = mem_purge(st, &f->purges[i], f->now_ms, &purged);
	for (i = 0; i < f->npositions && rc == 0; i++)
		rc = mem_put_bytes(st, 'P', f->positions[i].source, f->positions[i].pos,
				   f->positions[i].len);
	mem_txn_end(st, rc == 0);
	if (rc == 0) {
		f->writes = f->ndeltas;
		f->purged = purged;
	}
	return rc;
}

static int mem_do_get(mm_memory_t *st, const mem_op_t *op)
{
	size_t i, slot;
	int rc;

	memset(op->found, 0, op->n);
	for (i = 0; i < op->n; i++) {
		if ((rc = mem_state_key(st, op->ns->name, &op->keys[i])))
			return rc;
		if (!mem_find(st, st->kb.p, st->kb.len, mm_hash64(st->kb.p, st->kb.len, MEM_SEED),
			      &slot))
			continue;
		rc = mem_decode(st->slots[slot], op->ns, &op->keys[i], op->now_ms,
				(char *)op->states + i * MM_STATE_MAX);
		if (rc < 0)
			return rc;
		op->found[i] = (uint8_t)rc;
	}
	return 0;
}

/* Runs the queued operations in order. Operations queued by their callbacks
 * form a new queue and re-arm the timer for the next loop iteration. */
static void mem_run(uv_timer_t *timer)
{
	mm_memory_t *st = (mm_memory_t *)((char *)timer - offsetof(mm_memory_t, timer));
	mem_op_t *op = st->head, *next;

	st->head = NULL;
	st->tail = &st->head;
	for (; op != NULL; op = next) {
		mm_store_cb cb = op->cb;
		void *arg = op->arg;
		char detail[512];
		int rc;

		next = op->next;
		rc = op->kind == MEM_OP_APPLY ? mem_do_apply(st, op->f) : mem_do_get(st, op);
		snprintf(detail, sizeof(detail), "%s", rc ? mm_diag_msg() : "");
		free(op);
		cb(arg, rc, detail);
	}
}

static int mem_enqueue(mm_memory_t *st, mem_op_t *op)
{
	int rc;

	if (st->head == NULL && (rc = uv_timer_start(&st->timer, mem_run, 0, 0))) {
		free(op);
		return mm_diag_set(MM_EINVAL, "memory: uv_timer_start: %s", uv_strerror(rc));
	}
	op->next = NULL;
	*st->tail = op;
	st->tail = &op->next;
	return 0;
}

static int mem_apply(mm_store_t *base, mm_flush_t *f, mm_store_cb cb, void *arg)
{
	mm_memory_t *st = (mm_memory_t *)base;
	mem_op_t *op;

	if (st->read_only)
		return mm_diag_set(MM_ENOTSUP, "memory: apply on a store opened read-only");
	op = calloc(1, sizeof(*op));
	if (op == NULL)
		return mm_diag_set(MM_ENOMEM, "memory: cannot allocate an apply");
	op->kind = MEM_OP_APPLY;
	op->f = f;
	op->cb = cb;
	op->arg = arg;
	return mem_enqueue(st, op);
}

static int mem_get_many(mm_store_t *base, const mm_ns_t *ns, const mm_key_t *keys, size_t n,
			void *states, uint8_t *found, mm_store_cb cb, void *arg)
{
	mm_memory_t *st = (mm_memory_t *)base;
	mem_op_t *op = calloc(1, sizeof(*op));

	if (op == NULL)
		return mm_diag_set(MM_ENOMEM, "memory: cannot allocate a get_many");
	op->kind = MEM_OP_GET;
	op->ns = ns;
	op->keys = keys;
	op->n = n;
	op->states = states;
	op->found = found;
	op->now_ms = mem_now_ms();
	op->cb = cb;
	op->arg = arg;
	return mem_enqueue(st, op);
}

/* Finds a record of kind 'P' or 'M' by name and appends its value to out. */
static int mem_get_bytes(mm_memory_t *st, char kind, const char *name, const char *what,
			 mm_buf_t *out)
{
	const mem_rec_t *r;
	size_t slot;
	int rc;

	if ((rc = mem_key(st, kind, NULL, name, strlen(name))))
		return rc;
	if (!mem_find(st, st->kb.p, st->kb.len, mm_hash64(st->kb.p, st->kb.len, MEM_SEED), &slot))
		return mm_diag_set(MM_ENOTFOUND, "memory: no %s for '%s'", what, name);
	r = st->slots[slot];
	return mm_buf_append(out, r->data + r->klen, r->vlen);
}

/* The store answers from memory at once; the contract still completes on a
 * later loop iteration. A missing record is an answer, other failures are
 * returned. */
static int mem_answer(mm_memory_t *st, int rc, mm_store_cb cb, void *arg)
{
	if (rc && rc != MM_ENOTFOUND)
		return rc;
	return mm_store_complete_later(&st->base, cb, arg, rc, rc ? mm_diag_msg() : "");
}

static int mem_get_position(mm_store_t *base, const char *source, mm_buf_t *out, mm_store_cb cb,
			    void *arg)
{
	mm_memory_t *st = (mm_memory_t *)base;

	return mem_answer(st, mem_get_bytes(st, 'P', source, "position", out), cb, arg);
}

static int mem_get_meta(mm_store_t *base, const char *ns_name, mm_buf_t *out, mm_store_cb cb,
			void *arg)
{
	mm_memory_t *st = (mm_memory_t *)base;

	return mem_answer(st, mem_get_bytes(st, 'M', ns_name, "metadata", out), cb, arg);
}

/* A mark's state: 1 live (counted), 0 absent or expired, or an error. */
static int mem_marked(mm_memory_t *st, const mm_ns_t *ns, const char *id, size_t len,
		      int64_t now_ms)
{
	const mem_rec_t *r;
	size_t slot;
	int rc;

	if ((rc = mem_key(st, 'D', ns->name, id, len)))
		return rc;
	if (!mem_find(st, st->kb.p, st->kb.len, mm_hash64(st->kb.p, st->kb.len, MEM_SEED), &slot))
		return 0;
	r = st->slots[slot];
	if (r->vlen < 8)
		return mm_diag_set(MM_ECORRUPT, "memory: corrupt mark in ns '%s'", ns->name);
	return (int64_t)mm_get_u64le(r->data + r->klen) > now_ms;
}

/* Claims as in lmdb.c: counted ids (a live mark) are DUPLICATE, the others
 * WON; nobody else writes the store, so the marks apply() writes with the
 * states settle them. Answered from memory, completed later. */
static int mem_claim(mm_store_t *base, const mm_ns_t *ns, mm_claim_t *ids, size_t n,
		     int64_t ttl_ms, mm_store_cb cb, void *arg)
{
	mm_memory_t *st = (mm_memory_t *)base;
	int64_t now = mem_now_ms();

	for (size_t i = 0; i < n; i++) {
		int rc = mem_marked(st, ns, ids[i].id, ids[i].len, now);

		if (rc < 0)
			return rc;
		ids[i].result = rc ? MM_CLAIM_DUPLICATE : MM_CLAIM_WON;
	}
	return mem_answer(st, 0, cb, arg);
}

static int mem_put_meta(mm_store_t *base, const char *ns_name, const uint8_t *p, size_t n,
			mm_store_cb cb, void *arg)
{
	mm_memory_t *st = (mm_memory_t *)base;
	int rc;

	if (st->read_only)
		return mm_diag_set(MM_ENOTSUP, "memory: put_meta on a store opened read-only");
	if ((rc = mem_reserve(st, 1)) || (rc = mem_put_bytes(st, 'M', ns_name, p, n)))
		return rc;
	return mem_answer(st, 0, cb, arg);
}

static int mem_cmp_rec(const void *a, const void *b)
{
	const mem_rec_t *x = *(const mem_rec_t *const *)a, *y = *(const mem_rec_t *const *)b;
	size_t n = x->klen < y->klen ? x->klen : y->klen;
	int c = memcmp(x->data, y->data, n);

	return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

/* Appends the names in byte order, like the LMDB store. */
static int mem_list_names(mm_memory_t *st, mm_buf_t *out)
{
	const mem_rec_t **recs;
	size_t i, n = 0;
	int rc = 0;

	recs = malloc((st->used ? st->used : 1) * sizeof(*recs));
	if (recs == NULL)
		return mm_diag_set(MM_ENOMEM, "memory: cannot list metadata");
	for (i = 0; i < st->cap; i++)
		if (MEM_LIVE(st->slots[i]) && st->slots[i]->data[0] == 'M')
			recs[n++] = st->slots[i];
	qsort(recs, n, sizeof(*recs), mem_cmp_rec);
	for (i = 0; i < n && rc == 0; i++)
		if ((rc = mm_buf_append(out, recs[i]->data + 1, recs[i]->klen - 1)) == 0)
			rc = mm_buf_put_u8(out, 0);
	free(recs);
	return rc;
}

static int mem_list_meta(mm_store_t *base, mm_buf_t *out, mm_store_cb cb, void *arg)
{
	mm_memory_t *st = (mm_memory_t *)base;

	return mem_answer(st, mem_list_names(st, out), cb, arg);
}

static int mem_open(uv_loop_t *loop, const mm_kv_t *kv, size_t nkv, int read_only,
		    mm_store_t **out)
{
	mm_memory_t *st;
	int rc, none;

	/* No options: this still rejects every key with a message naming it. */
	if ((rc = mm_options_apply(mem_options, "memory", kv, nkv, &none)))
		return rc;
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return mm_diag_set(MM_ENOMEM, "memory: cannot allocate the store");
	st->base.vt = &mm_store_memory_vtable;
	st->base.loop = loop;
	st->read_only = read_only;
	st->tail = &st->head;
	if ((rc = mem_reserve(st, MEM_MIN_CAP / 2))) {
		free(st);
		return rc;
	}
	uv_timer_init(loop, &st->timer);
	*out = &st->base;
	return 0;
}

static void mem_closed(uv_handle_t *handle)
{
	free((char *)handle - offsetof(mm_memory_t, timer));
}

static void mem_close(mm_store_t *base)
{
	mm_memory_t *st = (mm_memory_t *)base;
	size_t i;

	assert(st->head == NULL);
	for (i = 0; i < st->cap; i++)
		if (MEM_LIVE(st->slots[i]))
			free(st->slots[i]);
	free(st->slots);
	free(st->undo);
	mm_buf_free(&st->kb);
	mm_buf_free(&st->vb);
	uv_close((uv_handle_t *)&st->timer, mem_closed);
}

const mm_store_vtable_t mm_store_memory_vtable = {
	.name = "memory",
	.options = mem_options,
	.caps = MM_STORE_CAP_ATOMIC,
	.open = mem_open,
	.apply = mem_apply,
	.get_many = mem_get_many,
	.get_position = mem_get_position,
	.get_meta = mem_get_meta,
	.put_meta = mem_put_meta,
	.list_meta = mem_list_meta,
	.close = mem_close,
	.claim = mem_claim,
};
