/*
 * dynamodb_intent.c: write-ahead flush intents, which close the mid-delta
 * window of a non-atomic apply (doc/dynamodb.md, "Flush intents").
 *
 * Before the first delta of a flush that moves a source position, apply()
 * writes the flush's intent: every delta (namespace, entity, bucket, expiry,
 * the monoid's encoding of the state), every position, and the commit record
 * that confirms its dedup claims, as one binary blob cut into chunks of
 * DDB_INTENT_CHUNK bytes (DynamoDB's items hold at most 400 KB), each a
 * PutItem of "#intent#<writer>#<seq>" with sk = the chunk's index. Then each
 * position item gets a pointer to it, `pend = "<writer>#<seq>#<chunks>"`
 * (UpdateItem, the stored position itself is unchanged), and only then are
 * the deltas written. The flush's final position PutItem replaces the item,
 * pointer included.
 *
 * A delta is idempotent per flush already: it carries its writer's replay
 * token w_<writer> = seq, conditional on the stored token being older
 * (dynamodb_apply.c). So a flush can be finished by anybody who knows its
 * writer, sequence number and deltas, as many times as it takes: whoever
 * reads a position that carries `pend` (a worker starting or taking over the
 * source) first rolls the intent forward, applying the flush as its own
 * writer would have (its token, its sequence number: deltas already durable
 * fail their condition and are skipped), writes its commit record and its
 * positions, and only then reads the position. A worker killed anywhere in
 * its flush therefore leaves either no pointer (nothing of the flush is
 * durable, its records are read again) or a pointer whose flush is finished
 * before anybody reads on (none of its records is read again).
 *
 * The zombie fence (doc/dynamodb.md, "Kafka partitions"): a worker reads a
 * Kafka partition's position by taking it (`own`, dynamodb_read.c); a
 * pointer is set only
 * while the item is untaken or the writer's own ("<chunks>#a" marks such a
 * pointer), and the intent is armed (`arm` on chunk 0) once every pointer
 * is set. A reader cancels an unarmed intent (`cx`) instead of applying it:
 * exactly one of arming and cancelling wins, and a writer whose pointer or
 * arming fails stops with EFENCED before any delta.
 *
 * The roll-forward runs on the store's own request slots, like any job: the
 * position read that found the pointer waits (holding no slot) while the
 * intent's chunks are read and its flush is applied as an apply job with the
 * writer's identity (ddb_job_t.writer_attr), and reads the position again
 * when that is done; a failed roll-forward fails the read, which the engine
 * retries. The intent is decoded on the thread pool, as it is encoded. The
 * engine's loop is never blocked by it.
 *
 * Blob (little-endian): u32 magic "MMI1", u64 seq, u64 commit_seq, u8 has
 * commit, i64 commit until (ms); u32 namespaces { u16 name length, name,
 * u16 monoid length, monoid, u32 is_float, u32 k, u32 max_size, u64
 * capacity, u64 fpr (IEEE bits) }; u32 positions { u16 source length,
 * source, u32 length, bytes }; u32 deltas { u32 namespace index, u16 entity
 * length, entity, i64 bucket, i64 expire_ms, u32 length, state encoding }.
 * The decoder checks every length against the blob.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../codec/json.h"
#include "../lib/error.h"
#include "../lib/log.h"
#include "../lib/text.h"
#include "dynamodb_impl.h"

#define INTENT_MAGIC 0x31494d4du /* "MMI1" */

/* ---- encoding ---- */

static int put_str16(mm_buf_t *b, const char *s, size_t n)
{
	int rc = mm_buf_put_u16le(b, (uint16_t)n);

	return rc ? rc : mm_buf_append(b, s, n);
}

static int put_ns(mm_buf_t *b, const mm_ns_t *ns)
{
	const mm_monoid_params_t *p = &ns->m->p;
	uint64_t fpr;
	int rc = 0;

	memcpy(&fpr, &p->fpr, sizeof(fpr));
	rc |= put_str16(b, ns->name, strlen(ns->name));
	rc |= put_str16(b, ns->m->vt->name, strlen(ns->m->vt->name));
	rc |= mm_buf_put_u32le(b, (uint32_t)p->is_float);
	rc |= mm_buf_put_u32le(b, p->k);
	rc |= mm_buf_put_u32le(b, p->max_size);
	rc |= mm_buf_put_u64le(b, p->capacity);
	rc |= mm_buf_put_u64le(b, fpr);
	return rc ? MM_ENOMEM : 0;
}

/* The commit record's lifetime: as long as the flush's longest mark. */
int64_t mm_ddb_commit_until(const mm_flush_t *f)
{
	int64_t until = f->now_ms;

	for (size_t i = 0; i < f->nmarks; i++)
		if (f->marks[i].expire_ms > until)
			until = f->marks[i].expire_ms;
	return until;
}

/* Encodes the intent of the apply job into job->intent. Any thread: it
 * reads the flush, which nobody changes while the apply runs. */
static int intent_encode(ddb_job_t *job)
{
	const mm_flush_t *f = job->f;
	mm_buf_t *b = &job->intent, state = {0};
	const mm_ns_t **nss = NULL;
	uint32_t nns = 0;
	size_t i;
	int rc = 0;

	nss = calloc(f->ndeltas + 1, sizeof(*nss));
	if (nss == NULL)
		return MM_ENOMEM;
	b->len = 0;
	rc |= mm_buf_put_u32le(b, INTENT_MAGIC);
	rc |= mm_buf_put_u64le(b, job->seq);
	rc |= mm_buf_put_u64le(b, job->commit_seq);
	rc |= mm_buf_put_u8(b, f->nmarks > 0);
	rc |= mm_buf_put_u64le(b, (uint64_t)mm_ddb_commit_until(f));
	for (i = 0; i < f->ndeltas; i++) {
		uint32_t k;

		for (k = 0; k < nns && nss[k] != f->deltas[i].ns; k++)
			;
		if (k == nns)
			nss[nns++] = f->deltas[i].ns;
	}
	rc |= mm_buf_put_u32le(b, nns);
	for (i = 0; i < nns && rc == 0; i++)
		rc = put_ns(b, nss[i]);
	rc |= mm_buf_put_u32le(b, (uint32_t)f->npositions);
	for (i = 0; i < f->npositions && rc == 0; i++) {
		const mm_position_t *p = &f->positions[i];

		rc |= put_str16(b, p->source, strlen(p->source));
		rc |= mm_buf_put_u32le(b, (uint32_t)p->len);
		rc |= mm_buf_append(b, p->pos, p->len);
	}
	rc |= mm_buf_put_u32le(b, (uint32_t)f->ndeltas);
	for (i = 0; i < f->ndeltas && rc == 0; i++) {
		const mm_delta_t *d = &f->deltas[i];
		uint32_t k;

		for (k = 0; nss[k] != d->ns; k++)
			;
		state.len = 0;
		if ((rc = d->ns->m->vt->encode(d->ns->m, d->state, &state)))
			break;
		rc |= mm_buf_put_u32le(b, k);
		rc |= put_str16(b, d->key.entity, d->key.len);
		rc |= mm_buf_put_u64le(b, (uint64_t)d->key.bucket);
		rc |= mm_buf_put_u64le(b, (uint64_t)d->expire_ms);
		rc |= mm_buf_put_u32le(b, (uint32_t)state.len);
		rc |= mm_buf_append(b, state.p, state.len);
	}
	free(nss);
	mm_buf_free(&state);
	return rc ? mm_diag_set(MM_ENOMEM, "dynamodb: cannot encode a flush intent") : 0;
}

/* Builds with MM_ERRINJ: sleeps the milliseconds the environment variable
 * var names, so that a spec can tell on which thread, and how many to a
 * turn of the loop, a slow step runs. MURMUR_ERRINJ_DDB_INTENT_SLOW_MS slows
 * each encoding (a flush of many large sketches), and
 * MURMUR_ERRINJ_DDB_CHUNK_SLOW_MS building each chunk's request (its base64
 * and signature on a slower or busier machine). */
static void errinj_slow(const char *var)
{
#ifdef MM_ERRINJ
	const char *v = getenv(var);

	if (v && *v)
		usleep((useconds_t)strtoul(v, NULL, 10) * 1000);
#else
	(void)var;
#endif
}

static void encode_work(uv_work_t *w)
{
	ddb_job_t *job = (ddb_job_t *)((char *)w - offsetof(ddb_job_t, encode));

	errinj_slow("MURMUR_ERRINJ_DDB_INTENT_SLOW_MS");
	job->encode_rc = intent_encode(job);
	if (job->encode_rc)
		snprintf(job->encode_detail, sizeof(job->encode_detail), "%s", mm_diag_msg());
}

static void encode_done(uv_work_t *w, int status)
{
	ddb_job_t *job = (ddb_job_t *)((char *)w - offsetof(ddb_job_t, encode));
	mm_ddb_t *st = w->data;

	job->encoding = 0;
	st->encoding--;
	if (st->closing) {
		/* ddb_close left the job to us; the store waits for this. */
		mm_ddb_job_free(job);
		mm_ddb_handle_gone(st);
		return;
	}
	if (status != 0 && job->encode_rc == 0) {
		job->encode_rc = MM_EIO;
		snprintf(job->encode_detail, sizeof(job->encode_detail),
			 "dynamodb: the encoding of a flush intent was cancelled");
	}
	if (job->encode_rc == 0)
		job->nchunks = (job->intent.len + DDB_INTENT_CHUNK - 1) / DDB_INTENT_CHUNK;
	mm_ddb_job_resume(st, job, job->encode_rc, job->encode_detail);
}

/* Plans the intent phases of an apply: an intent when the flush moves a
 * position and has deltas (a flush of positions alone needs none), unless
 * this is the retry of a flush whose intent is durable already. The intent
 * is encoded on the thread pool (a flush of 82 000 sketches takes 90 ms to
 * encode, which on the loop would stop every source and timer that long);
 * the job waits in its first phase until the encoding is done. */
int mm_ddb_intent_plan(mm_ddb_t *st, ddb_job_t *job)
{
	const mm_flush_t *f = job->f;
	int rc;

	job->intent_durable = f == st->retry_flush && st->retry_intent_durable;
	if (!st->cfg.positions || f->npositions == 0 || f->ndeltas == 0 ||
	    job->intent_durable)
		return 0;
	job->want_intent = 1;
	job->encode.data = st;
	if ((rc = uv_queue_work(st->base.loop, &job->encode, encode_work, encode_done)) != 0)
		return mm_diag_set(MM_EIO, "dynamodb: cannot queue the encoding of a flush intent: %s",
				   uv_strerror(rc));
	job->encoding = 1;
	st->encoding++;
	mm_ddb_job_wait(job);
	return 0;
}

/* "<writer hex>#<seq>": the intent's name, also its pk after "#intent#". */
static int intent_name(const char *writer_attr, uint64_t seq, mm_buf_t *out)
{
	out->len = 0;
	return mm_buf_printf(out, "#intent#%s#%" PRIu64, writer_attr + 2, seq);
}

/* Chunk k of the intent: PutItem {pk, sk k, d, ttl}. */
static int build_chunk(mm_ddb_t *st, ddb_slot_t *sl)
{
	ddb_job_t *job = sl->job;
	size_t off = sl->item * DDB_INTENT_CHUNK, n = job->intent.len - off;
	mm_buf_t *b = &sl->body;
	int rc;

	if (n > DDB_INTENT_CHUNK)
		n = DDB_INTENT_CHUNK;
	errinj_slow("MURMUR_ERRINJ_DDB_CHUNK_SLOW_MS");
	sl->kind = K_INTENT;
	sl->target = "PutItem";
	if ((rc = intent_name(job->writer_attr, job->seq, &sl->pk)) ||
	    (rc = mm_ddb_put_item_start(st, b, &sl->pk, (int64_t)sl->item)) ||
	    (rc = PUT(b, ",\"d\":{\"B\":\"")) || (rc = mm_base64_encode(job->intent.p + off, n, b)) ||
	    (rc = PUT(b, "\"},\"ttl\":")) ||
	    (rc = mm_ddb_put_n(b, ttl_of(job->now_ms + st->cfg.token_ttl_ms))))
		return rc;
	return PUT(b, "}}");
}

/* The pointer on position k: SET pend = "<writer>#<seq>#<chunks>". */
static int build_pending(mm_ddb_t *st, ddb_slot_t *sl)
{
	ddb_job_t *job = sl->job;
	const mm_position_t *pos = &job->f->positions[sl->item];
	mm_buf_t *b = &sl->body;
	int rc;

	sl->kind = K_PENDING;
	sl->target = "UpdateItem";
	sl->pk.len = 0;
	if ((rc = PUT(&sl->pk, "#pos#")) ||
	    (rc = mm_buf_append(&sl->pk, pos->source, strlen(pos->source))) ||
	    (rc = mm_ddb_put_head(st, b, &sl->pk, DDB_SK_POS)) ||
	    (rc = PUT(b, ",\"UpdateExpression\":\"SET #pd = :pd\",\"ConditionExpression\":"
			 "\"attribute_not_exists(#o) OR #o = :me\",\"ExpressionAttributeNames\":"
			 "{\"#pd\":\"pend\",\"#o\":\"own\"},\"ExpressionAttributeValues\":{\":pd\":{\"S\":")) ||
	    (rc = mm_buf_printf(b, "\"%s#%" PRIu64 "#%zu#a\"},\":me\":{\"S\":\"%s\"", job->writer_attr + 2,
				job->seq, job->nchunks, job->writer_attr + 2)))
		return rc;
	return PUT(b, "}}}");
}

/* Arms the intent once every pointer is set: SET arm on its chunk 0 unless
 * a reader cancelled it (cx) first. */
static int build_arm(mm_ddb_t *st, ddb_slot_t *sl)
{
	ddb_job_t *job = sl->job;
	int rc;

	sl->kind = K_ARM;
	sl->target = "UpdateItem";
	if ((rc = intent_name(job->writer_attr, job->seq, &sl->pk)) ||
	    (rc = mm_ddb_put_head(st, &sl->body, &sl->pk, 0)))
		return rc;
	return PUT(&sl->body, ",\"UpdateExpression\":\"SET #a = :a\",\"ConditionExpression\":"
			      "\"attribute_exists(pk) AND attribute_not_exists(#c)\","
			      "\"ExpressionAttributeNames\":{\"#a\":\"arm\",\"#c\":\"cx\"},"
			      "\"ExpressionAttributeValues\":{\":a\":{\"N\":\"1\"}}}");
}

int mm_ddb_start_intent_item(ddb_slot_t *sl)
{
	int rc = sl->job->phase == P_INTENT    ? build_chunk(sl->st, sl)
		 : sl->job->phase == P_PENDING ? build_pending(sl->st, sl)
					       : build_arm(sl->st, sl);

	return rc ? rc : mm_ddb_slot_send(sl);
}

/* A pointer, a position written without an intent or the arming of this
 * writer's intent failed its condition: another reader took the position,
 * or cancelled the intent. */
void mm_ddb_intent_fenced(ddb_slot_t *sl)
{
	const ddb_job_t *job = sl->job;
	char detail[300];

	if (sl->kind == K_PENDING || sl->kind == K_POS) {
		mm_ddb_taken_note(sl->st, (const char *)sl->pk.p, sl->pk.len, 0);
		snprintf(detail, sizeof(detail),
			 "position '%.*s' was taken by another reader: this worker lost its source or "
			 "partition (fenced)", (int)sl->pk.len, (const char *)sl->pk.p);
	} else {
		snprintf(detail, sizeof(detail),
			 "the intent of flush %s#%" PRIu64 " was cancelled by a reader of one of its "
			 "positions: this worker lost its source or partition (fenced)",
			 job->writer_attr + 2, job->seq);
	}
	mm_ddb_slot_finish(sl, MM_EFENCED, detail);
}

/* ---- error injection ---- */

/*
 * Builds with MM_ERRINJ: MURMUR_ERRINJ_DDB_KILL_AFTER_DELTAS=N kills the
 * process with SIGKILL once N deltas of its flushes are durable, between
 * one delta and the next: the worst moment of a non-atomic flush, which the
 * kill -9 spec aims at. A roll-forward is never killed (it would kill every
 * restart at the same point). The variable is read once per store: a getenv
 * per delta written was a visible share of the CPU per request.
 */
void mm_ddb_errinj_delta(mm_ddb_t *st, const ddb_job_t *job)
{
#ifdef MM_ERRINJ
	if (!st->errinj_read) {
		const char *v = getenv("MURMUR_ERRINJ_DDB_KILL_AFTER_DELTAS");

		st->errinj_kill_after = v && *v ? strtoull(v, NULL, 10) : 0;
		st->errinj_read = 1;
	}
	if (st->errinj_kill_after && !job->rf && ++st->errinj_deltas == st->errinj_kill_after)
		raise(SIGKILL);
#else
	(void)st;
	(void)job;
#endif
}

/* ---- decoding and the roll-forward ---- */

typedef struct intent_reader {
	const uint8_t *p, *end;
	int bad;
} intent_reader_t;

static const uint8_t *take(intent_reader_t *r, size_t n)
{
	const uint8_t *p = r->p;

	if (r->bad || (size_t)(r->end - r->p) < n) {
		r->bad = 1;
		return NULL;
	}
	r->p += n;
	return p;
}

static uint64_t take_u64(intent_reader_t *r)
{
	const uint8_t *p = take(r, 8);

	return p ? mm_get_u64le(p) : 0;
}

static uint32_t take_u32(intent_reader_t *r)
{
	const uint8_t *p = take(r, 4);

	return p ? mm_get_u32le(p) : 0;
}

static const char *take_str16(intent_reader_t *r, size_t *n)
{
	const uint8_t *p = take(r, 2);

	*n = p ? mm_get_u16le(p) : 0;
	return (const char *)take(r, *n);
}

/* A decoded intent: everything points into blob or the arrays here. */
typedef struct intent {
	mm_buf_t blob;
	uint64_t seq, commit_seq;
	int has_commit;
	int64_t commit_until;
	mm_monoid_t *monoids;
	mm_ns_t *nss;
	char **names;
	uint32_t nns;
	char **srcs;            /* the positions' source names */
	mm_flush_t f;
	unsigned char *states;  /* f.ndeltas * MM_STATE_MAX, init()ed */
	size_t ninit;           /* states init()ed so far */
} intent_t;

static void intent_free(intent_t *in)
{
	for (size_t i = 0; i < in->ninit; i++)
		in->f.deltas[i].ns->m->vt->destroy(in->f.deltas[i].ns->m,
						   in->states + i * MM_STATE_MAX);
	for (uint32_t i = 0; in->names && i < in->nns; i++)
		free(in->names[i]);
	free(in->names);
	for (size_t i = 0; in->srcs && i < in->f.npositions; i++)
		free(in->srcs[i]);
	free(in->srcs);
	free(in->monoids);
	free(in->nss);
	free(in->states);
	free(in->f.deltas);
	free(in->f.delta_done);
	free(in->f.positions);
	mm_buf_free(&in->blob);
}

static int decode_ns(intent_reader_t *r, intent_t *in, uint32_t k)
{
	mm_monoid_params_t p = {0};
	char mname[32];
	size_t nl, ml;
	const char *name = take_str16(r, &nl), *mon = take_str16(r, &ml);
	uint64_t fpr;

	p.is_float = (int)take_u32(r);
	p.k = take_u32(r);
	p.max_size = take_u32(r);
	p.capacity = take_u64(r);
	fpr = take_u64(r);
	memcpy(&p.fpr, &fpr, sizeof(fpr));
	if (r->bad || ml >= sizeof(mname) || nl == 0)
		return mm_diag_set(MM_ECORRUPT, "dynamodb: flush intent: bad namespace %u", k);
	memcpy(mname, mon, ml);
	mname[ml] = '\0';
	if ((in->names[k] = strndup(name, nl)) == NULL)
		return mm_diag_set(MM_ENOMEM, "dynamodb: out of memory");
	if (mm_monoid_init(&in->monoids[k], mname, &p))
		return mm_diag_set(MM_ECORRUPT, "dynamodb: flush intent: bad monoid '%s'", mname);
	in->nss[k] = (mm_ns_t){in->names[k], &in->monoids[k]};
	return 0;
}

static int intent_decode(intent_t *in)
{
	intent_reader_t r = {in->blob.p, in->blob.p + in->blob.len, 0};
	uint32_t n;
	int rc;

	if (take_u32(&r) != INTENT_MAGIC)
		return mm_diag_set(MM_ECORRUPT, "dynamodb: flush intent: bad magic");
	in->seq = take_u64(&r);
	in->commit_seq = take_u64(&r);
	in->has_commit = (r.p < r.end && *r.p) ? 1 : 0;
	take(&r, 1);
	in->commit_until = (int64_t)take_u64(&r);
	in->nns = take_u32(&r);
	if (r.bad || in->nns > in->blob.len)
		return mm_diag_set(MM_ECORRUPT, "dynamodb: flush intent: truncated head");
	in->monoids = calloc(in->nns + 1, sizeof(*in->monoids));
	in->nss = calloc(in->nns + 1, sizeof(*in->nss));
	in->names = calloc(in->nns + 1, sizeof(*in->names));
	if (!in->monoids || !in->nss || !in->names)
		return mm_diag_set(MM_ENOMEM, "dynamodb: out of memory");
	for (uint32_t k = 0; k < in->nns; k++)
		if ((rc = decode_ns(&r, in, k)))
			return rc;
	n = take_u32(&r);
	if (r.bad || n > in->blob.len)
		return mm_diag_set(MM_ECORRUPT, "dynamodb: flush intent: bad positions");
	in->f.positions = calloc(n + 1, sizeof(*in->f.positions));
	in->srcs = calloc(n + 1, sizeof(*in->srcs));
	if (in->f.positions == NULL || in->srcs == NULL)
		return mm_diag_set(MM_ENOMEM, "dynamodb: out of memory");
	for (uint32_t i = 0; i < n; i++) {
		mm_position_t *p = &in->f.positions[i];
		size_t sl;
		const char *s = take_str16(&r, &sl);

		p->len = take_u32(&r);
		p->pos = take(&r, p->len);
		if (r.bad || sl == 0 || memchr(s, 0, sl))
			return mm_diag_set(MM_ECORRUPT, "dynamodb: flush intent: bad position %u", i);
		if ((in->srcs[i] = strndup(s, sl)) == NULL)
			return mm_diag_set(MM_ENOMEM, "dynamodb: out of memory");
		p->source = in->srcs[i];
		in->f.npositions++;
	}
	n = take_u32(&r);
	if (r.bad || n > in->blob.len)
		return mm_diag_set(MM_ECORRUPT, "dynamodb: flush intent: bad deltas");
	in->f.deltas = calloc(n + 1, sizeof(*in->f.deltas));
	in->f.delta_done = calloc(n + 1, 1);
	in->states = calloc(n + 1, MM_STATE_MAX);
	if (!in->f.deltas || !in->f.delta_done || !in->states)
		return mm_diag_set(MM_ENOMEM, "dynamodb: out of memory");
	for (uint32_t i = 0; i < n; i++) {
		mm_delta_t *d = &in->f.deltas[i];
		uint32_t k = take_u32(&r), len;
		const uint8_t *enc;

		d->key.entity = take_str16(&r, &d->key.len);
		d->key.bucket = (int64_t)take_u64(&r);
		d->expire_ms = (int64_t)take_u64(&r);
		len = take_u32(&r);
		enc = take(&r, len);
		if (r.bad || k >= in->nns || d->key.len == 0)
			return mm_diag_set(MM_ECORRUPT, "dynamodb: flush intent: bad delta %u", i);
		d->ns = &in->nss[k];
		d->state = in->states + (size_t)i * MM_STATE_MAX;
		d->ns->m->vt->init(d->ns->m, d->state);
		in->ninit = i + 1;
		in->f.ndeltas = i + 1;
		if ((rc = d->ns->m->vt->decode(d->ns->m, d->state, enc, len)))
			return rc;
	}
	if (r.p != r.end)
		return mm_diag_set(MM_ECORRUPT, "dynamodb: flush intent: trailing bytes");
	return 0;
}

/*
 * The roll-forward of one intent, a chain of jobs on the store's own slots:
 * the chunks are read one GetItem at a time (in order, appended to the
 * blob), the intent is decoded and applied as its writer's flush
 * (mm_ddb_apply_rf), and cb runs when that apply is done. An intent older
 * than token_ttl, or one whose chunk is gone, is not applied: its pointer is
 * removed instead (an UpdateItem conditional on the pointer being unchanged)
 * and cb runs with 0.
 */
struct ddb_rf {
	mm_ddb_t *st;
	mm_buf_t pos_pk;        /* the position item that points to the intent */
	mm_buf_t tag;           /* the pointer: "<writer>#<seq>#<chunks>" */
	mm_buf_t pk;            /* "#intent#<writer>#<seq>" */
	mm_buf_t body;          /* the request that removes the pointer */
	char writer[17];
	uint64_t seq;
	size_t nchunks, chunk;
	int armed;              /* armed (or gone, or of a release without arming) */
	intent_t in;
	mm_store_cb cb;
	void *arg;
	uv_work_t decode;       /* intent_decode on the thread pool */
	int decoding;           /* that work is queued or running */
	int orphaned;           /* freed by its owner meanwhile: decode_done frees it */
	int decode_rc;
	char decode_detail[400];
};

static void rf_free_now(struct ddb_rf *rf)
{
	intent_free(&rf->in);
	mm_buf_free(&rf->pos_pk);
	mm_buf_free(&rf->tag);
	mm_buf_free(&rf->pk);
	mm_buf_free(&rf->body);
	free(rf);
}

/* While the intent is decoded on the thread pool, the work owns rf: an
 * owner freeing it then (its read job freed by a closing store) leaves it
 * to decode_done. */
void mm_ddb_rf_free(struct ddb_rf *rf)
{
	if (rf == NULL)
		return;
	if (rf->decoding) {
		rf->orphaned = 1;
		return;
	}
	rf_free_now(rf);
}

mm_ddb_t *mm_ddb_rf_store(const struct ddb_rf *rf)
{
	return rf->st;
}

/* The last thing a roll-forward does: the callback may free rf. */
static void rf_finish(struct ddb_rf *rf, int rc, const char *detail)
{
	rf->cb(rf->arg, rc, rc ? detail : "");
}

static void rf_fail(struct ddb_rf *rf, int rc)
{
	char detail[400];

	snprintf(detail, sizeof(detail), "%s", mm_diag_msg());
	rf_finish(rf, rc, detail);
}

static void on_cleared(void *arg, int status, const char *detail)
{
	rf_finish(arg, status, detail);
}

/* Removes the pointer from the position item, only if it still names this
 * intent: otherwise somebody else moved the position on meanwhile. An
 * intent that is gone (or too old) is an error in the log; a cancelled one
 * had none of its deltas written. */
static int rf_clear(struct ddb_rf *rf, int gone)
{
	mm_ddb_t *st = rf->st;
	mm_buf_t *b = &rf->body;
	int rc;

	if (gone)
		mm_log(MM_LOG_ERROR, "dynamodb",
	       "position '%.*s' names the unfinished flush %.*s, older than token_ttl or gone: "
	       "it is not rolled forward, and its deltas that were written before its worker "
	       "stopped may be counted again",
	       (int)rf->pos_pk.len, (const char *)rf->pos_pk.p, (int)rf->tag.len,
	       (const char *)rf->tag.p);
	b->len = 0;
	if ((rc = mm_ddb_put_head(st, b, &rf->pos_pk, DDB_SK_POS)) ||
	    (rc = PUT(b, ",\"UpdateExpression\":\"REMOVE #pd\",\"ConditionExpression\":\"#pd = :pd\","
			 "\"ExpressionAttributeNames\":{\"#pd\":\"pend\"},\"ExpressionAttributeValues\":"
			 "{\":pd\":{\"S\":")) ||
	    (rc = mm_json_quote((const char *)rf->tag.p, rf->tag.len, b)) || (rc = PUT(b, "}}}")))
		return rc;
	return mm_ddb_call_write(st, "UpdateItem", b, NULL, on_cleared, rf);
}

static void on_applied(void *arg, int status, const char *detail)
{
	struct ddb_rf *rf = arg;

	if (status == 0) {
		if (rf->in.f.rejected)
			mm_log(MM_LOG_ERROR, "dynamodb", "rolling a flush forward rejected %zu deltas: %s",
			       rf->in.f.rejected, rf->in.f.reject_detail);
		mm_log(MM_LOG_INFO, "dynamodb",
		       "rolled forward the flush %.*s that its worker left unfinished: %zu deltas, "
		       "%zu positions%s",
		       (int)rf->tag.len, (const char *)rf->tag.p, rf->in.f.ndeltas,
		       rf->in.f.npositions, rf->in.has_commit ? ", its commit record" : "");
	}
	rf_finish(rf, status, detail);
}

/* The intent is decoded: apply it as its writer would. */
static int rf_apply(struct ddb_rf *rf)
{
	intent_t *in = &rf->in;

	if (in->seq != rf->seq)
		return mm_diag_set(MM_ECORRUPT, "dynamodb: flush intent %.*s holds sequence %" PRIu64,
				   (int)rf->tag.len, (const char *)rf->tag.p, in->seq);
	in->f.now_ms = mm_ddb_now_ms();
	return mm_ddb_apply_rf(rf->st, &in->f, rf->writer, in->seq, in->commit_seq,
			       in->has_commit, in->commit_until, on_applied, rf);
}

static void decode_work(uv_work_t *w)
{
	struct ddb_rf *rf = (struct ddb_rf *)((char *)w - offsetof(struct ddb_rf, decode));

	errinj_slow("MURMUR_ERRINJ_DDB_RF_DECODE_SLOW_MS");
	rf->decode_rc = intent_decode(&rf->in);
	if (rf->decode_rc)
		snprintf(rf->decode_detail, sizeof(rf->decode_detail), "%s", mm_diag_msg());
}

static void decode_done(uv_work_t *w, int status)
{
	struct ddb_rf *rf = (struct ddb_rf *)((char *)w - offsetof(struct ddb_rf, decode));
	mm_ddb_t *st = rf->st;
	int rc;

	rf->decoding = 0;
	st->encoding--;
	if (rf->orphaned || st->closing) {
		/* A closing store counted this work among what it waits for. */
		if (rf->orphaned)
			rf_free_now(rf);
		if (st->closing)
			mm_ddb_handle_gone(st);
		return;
	}
	if (status != 0 && rf->decode_rc == 0) {
		rf->decode_rc = MM_EIO;
		snprintf(rf->decode_detail, sizeof(rf->decode_detail),
			 "dynamodb: the decoding of a flush intent was cancelled");
	}
	if (rf->decode_rc) {
		/* The callback may free rf, and with it decode_detail. */
		char detail[sizeof(rf->decode_detail)];

		memcpy(detail, rf->decode_detail, sizeof(detail));
		rf_finish(rf, rf->decode_rc, detail);
		return;
	}
	if ((rc = rf_apply(rf)))
		rf_fail(rf, rc);
}

/* Every chunk is read: the intent is decoded on the thread pool, as it was
 * encoded (every delta's state initialised and decoded: 86 ms of blocked
 * loop for 82 370 sketches when it ran on the loop), then applied. */
static int rf_decode(struct ddb_rf *rf)
{
	int rc;

	if ((rc = uv_queue_work(rf->st->base.loop, &rf->decode, decode_work, decode_done)) != 0)
		return mm_diag_set(MM_EIO, "dynamodb: cannot queue the decoding of a flush intent: %s",
				   uv_strerror(rc));
	rf->decoding = 1;
	rf->st->encoding++;
	return 0;
}

static void on_chunk(void *arg, int status, const char *detail);

static int rf_read_chunk(struct ddb_rf *rf)
{
	return mm_ddb_call_get(rf->st, &rf->pk, (int64_t)rf->chunk, "d", &rf->in.blob, on_chunk, rf);
}

static void on_chunk(void *arg, int status, const char *detail)
{
	struct ddb_rf *rf = arg;
	int rc;

	if (status == MM_ENOTFOUND)
		rc = rf_clear(rf, 1);
	else if (status) {
		rf_finish(rf, status, detail);
		return;
	} else if (++rf->chunk < rf->nchunks)
		rc = rf_read_chunk(rf);
	else
		rc = rf_decode(rf);
	if (rc)
		rf_fail(rf, rc);
}

static void on_cancel(void *arg, int status, const char *detail)
{
	struct ddb_rf *rf = arg;
	int rc;

	if (status) {
		rf_finish(rf, status, detail);
		return;
	}
	if (rf->armed) {
		rc = rf_read_chunk(rf);
	} else {
		mm_log(MM_LOG_WARN, "dynamodb",
		       "position '%.*s' names the flush %.*s, whose worker had not armed its intent "
		       "(it wrote no delta): cancelled; that worker's flush is fenced off",
		       (int)rf->pos_pk.len, (const char *)rf->pos_pk.p, (int)rf->tag.len,
		       (const char *)rf->tag.p);
		rc = rf_clear(rf, 0);
	}
	if (rc)
		rf_fail(rf, rc);
}

/*
 * The zombie fence's other half (doc/dynamodb.md, "Kafka partitions"): an
 * intent is applied only once its writer armed it, after every one of its
 * pointers was set. Before reading it, the reader cancels it unless it is
 * armed (SET cx on chunk 0, conditional on no arm): exactly one of arming
 * and cancelling wins, so either the writer goes on and the reader rolls
 * the flush forward, or the writer's arming fails (it stops, fenced) and
 * nobody applies the flush.
 */
static int rf_cancel(struct ddb_rf *rf)
{
	mm_buf_t *b = &rf->body;
	int rc;

	b->len = 0;
	if ((rc = mm_ddb_put_head(rf->st, b, &rf->pk, 0)) ||
	    (rc = PUT(b, ",\"UpdateExpression\":\"SET #c = :c\",\"ConditionExpression\":"
			 "\"attribute_exists(pk) AND attribute_not_exists(#a)\","
			 "\"ExpressionAttributeNames\":{\"#a\":\"arm\",\"#c\":\"cx\"},"
			 "\"ExpressionAttributeValues\":{\":c\":{\"N\":\"1\"}}}")))
		return rc;
	return mm_ddb_call_write(rf->st, "UpdateItem", b, &rf->armed, on_cancel, rf);
}

int mm_ddb_rf_start(mm_ddb_t *st, const mm_buf_t *pos_pk, const char *tag, size_t n,
		    mm_store_cb cb, void *arg, struct ddb_rf **out)
{
	const char *h1 = memchr(tag, '#', n), *h2;
	struct ddb_rf *rf;
	char num[48];
	size_t wlen;
	int rc;

	h2 = h1 ? memchr(h1 + 1, '#', (size_t)(tag + n - h1 - 1)) : NULL;
	wlen = h1 ? (size_t)(h1 - tag) : 0;
	if (h2 == NULL || wlen != 16 || (size_t)(tag + n - h2) >= sizeof(num) ||
	    (size_t)(h2 - h1) >= sizeof(num) || h2[1] < '1' || h2[1] > '9')
		return mm_diag_set(MM_ECORRUPT, "dynamodb: position '%.*s': bad pending flush '%.*s'",
				   (int)pos_pk->len, (const char *)pos_pk->p, (int)n, tag);
	if ((rf = calloc(1, sizeof(*rf))) == NULL)
		return mm_diag_set(MM_ENOMEM, "dynamodb: cannot allocate a roll-forward");
	rf->st = st;
	rf->cb = cb;
	rf->arg = arg;
	memcpy(rf->writer, tag, 16);
	snprintf(num, sizeof(num), "%.*s", (int)(h2 - h1 - 1), h1 + 1);
	rf->seq = strtoull(num, NULL, 10);
	snprintf(num, sizeof(num), "%.*s", (int)(tag + n - h2 - 1), h2 + 1);
	rf->nchunks = (size_t)strtoull(num, NULL, 10);
	/* "#a" after the chunks: an intent that its writer arms. Without it, an
	 * intent of a release before the fence: applied as it is. */
	rf->armed = memchr(h2 + 1, '#', (size_t)(tag + n - h2 - 1)) == NULL;
	if ((rc = mm_buf_append(&rf->pos_pk, pos_pk->p, pos_pk->len)) ||
	    (rc = mm_buf_append(&rf->tag, tag, n)) ||
	    (rc = mm_buf_printf(&rf->pk, "#intent#%.16s#%" PRIu64, tag, rf->seq)))
		goto fail;
	/* Replay tokens older than token_ttl may have been pruned from the
	 * items: applying so old a flush again could count its deltas twice. */
	if ((int64_t)rf->seq < mm_ddb_now_ms() - st->cfg.token_ttl_ms)
		rc = rf_clear(rf, 1);
	else if (rf->armed)
		rc = rf_read_chunk(rf);
	else
		rc = rf_cancel(rf);
	if (rc)
		goto fail;
	*out = rf;
	return 0;
fail:
	mm_ddb_rf_free(rf);
	return rc;
}
