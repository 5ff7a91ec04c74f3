/*
 * test_kafka_source.c: the "kafka" source against librdkafka's mock cluster
 * (started in this process, reached over TCP on 127.0.0.1), on a real libuv
 * loop with a test sink.
 *
 * The sink copies every record, can pause the source from inside deliver()
 * and resume it from a timer, and acknowledges positions the way the engine
 * does after a flush. The group's committed offsets are checked with a
 * separate librdkafka client, independently of the source's own view. Every
 * test closes the source and asserts uv_loop_close() == 0.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "lib/error.h"
#include "source/source.h"
#include "unit.h"

static rd_kafka_t *mock_rk, *producer;
static rd_kafka_mock_cluster_t *cluster;
static const char *bootstraps;

#define NPART 4

/* ---- the test sink ---- */

typedef struct krec {
	int32_t partition;
	int64_t offset;
	uint32_t flags, len;
	uint64_t orig_len;
	int64_t ts_ms;
	char id[64];
	char value[32];
} krec_t;

typedef struct tk {
	uv_loop_t loop;
	uv_timer_t deadline, resumer;
	int timed_out;
	const mm_source_vtable_t *vt;
	mm_source_t *src;
	krec_t *recs;
	size_t nrec, caprec, nbatch;
	uint8_t pos[4096];
	size_t pos_len;
	int err, closed, paused, pauses, bad, pause_every;
	size_t long_pause_at;   /* this batch's pause lasts 400 ms */
	int long_paused, saw_fetch_paused;
	char detail[512];
} tk_t;

static void tk_resume_cb(uv_timer_t *h)
{
	tk_t *t = h->data;
	mm_buf_t st = {0};

	if (t->long_paused) {
		/* Past pause_after: the partitions are paused in librdkafka. */
		t->long_paused = 0;
		if (t->vt->status(t->src, &st) == 0 && mm_buf_append(&st, "", 1) == 0)
			t->saw_fetch_paused = strstr((char *)st.p, "\"fetch_paused\":true") != NULL;
		mm_buf_free(&st);
	}
	t->paused = 0;
	t->vt->resume(t->src);
}

static int32_t id_partition(const char *id)
{
	const char *c = strchr(id, ':');

	return c ? (int32_t)atoi(c + 1) : -1;
}

static void tk_deliver(void *ctx, mm_batch_t *b)
{
	tk_t *t = ctx;

	if (t->paused || b->src != t->src || b->n == 0)
		t->bad++;
	for (size_t i = 0; i < b->n; i++) {
		const mm_record_t *r = &b->recs[i];
		krec_t *x;

		if (t->nrec == t->caprec) {
			t->caprec = t->caprec ? t->caprec * 2 : 1024;
			t->recs = realloc(t->recs, t->caprec * sizeof(*t->recs));
		}
		x = &t->recs[t->nrec++];
		memset(x, 0, sizeof(*x));
		x->offset = (int64_t)r->offset;
		x->flags = r->flags;
		x->len = r->len;
		x->orig_len = r->orig_len;
		x->ts_ms = r->ts_ms;
		if (r->flags & MM_REC_ID)
			snprintf(x->id, sizeof(x->id), "%.*s", (int)r->id_len, r->id);
		x->partition = id_partition(x->id);
		snprintf(x->value, sizeof(x->value), "%.*s", (int)(r->len < 31 ? r->len : 31), r->p);
	}
	t->nbatch++;
	if (b->end_pos_len <= sizeof(t->pos)) {
		memcpy(t->pos, b->end_pos, b->end_pos_len);
		t->pos_len = b->end_pos_len;
	}
	if (t->pause_every && t->nbatch % (size_t)t->pause_every == 0) {
		t->vt->pause(t->src);
		t->paused = 1;
		t->pauses++;
		t->long_paused = t->nbatch == t->long_pause_at;
		uv_timer_start(&t->resumer, tk_resume_cb, t->long_paused ? 400 : 5, 0);
	}
}

static void tk_eof(void *ctx, mm_source_t *src)
{
}

static void tk_error(void *ctx, mm_source_t *src, int err, const char *detail)
{
	tk_t *t = ctx;

	t->err = err;
	snprintf(t->detail, sizeof(t->detail), "%s", detail);
}

/* The engine's flush: everything delivered is durable; ack it, then done. */
static void tk_flush(void *ctx, mm_source_t *src, void (*done)(void *, int), void *arg)
{
	tk_t *t = ctx;

	if (t->pos_len)
		t->vt->ack(t->src, t->pos, t->pos_len);
	done(arg, 0);
}

static void tk_init(tk_t *t)
{
	memset(t, 0, sizeof(*t));
	uv_loop_init(&t->loop);
	uv_timer_init(&t->loop, &t->deadline);
	uv_timer_init(&t->loop, &t->resumer);
	t->deadline.data = t->resumer.data = t;
	t->vt = mm_source_find("kafka");
}

/* Opens the source with the test group timeouts plus "key=value" options. */
static int tk_open(tk_t *t, const char *const *opts)
{
	mm_source_sink_t sink = {t, tk_deliver, tk_eof, tk_error, tk_flush, NULL, NULL, NULL};
	static const char *const base[] = {
	    "rdkafka.session.timeout.ms=6000", "rdkafka.heartbeat.interval.ms=500",
	    "rdkafka.max.poll.interval.ms=10000", "rdkafka.log_level=3",
	};
	static char keys[24][64];
	mm_kv_t kv[24];
	size_t n = 0;

	for (size_t i = 0; i < sizeof(base) / sizeof(base[0]) + 8; i++) {
		const char *o = i < 4 ? base[i] : opts ? opts[i - 4] : NULL;
		const char *eq;

		if (o == NULL)
			break;
		eq = strchr(o, '=');
		snprintf(keys[n], sizeof(keys[n]), "%.*s", (int)(eq - o), o);
		kv[n].key = keys[n];
		kv[n].value = eq + 1;
		n++;
	}
	return t->vt->open(&t->loop, kv, n, &sink, &t->src);
}

static void tk_deadline_cb(uv_timer_t *h)
{
	tk_t *t = h->data;

	t->timed_out = 1;
}

static int tk_run(tk_t *t, int (*pred)(tk_t *t, size_t arg), size_t arg, int ms)
{
	t->timed_out = 0;
	uv_timer_start(&t->deadline, tk_deadline_cb, (uint64_t)ms, 0);
	while (!pred(t, arg) && !t->timed_out)
		uv_run(&t->loop, UV_RUN_ONCE);
	uv_timer_stop(&t->deadline);
	return pred(t, arg);
}

static int p_recs(tk_t *t, size_t n)
{
	return t->nrec >= n || t->err;
}

static int p_never(tk_t *t, size_t n)
{
	return 0;
}

static void tk_closed_cb(void *arg)
{
	tk_t *t = arg;

	t->closed++;
}

static int tk_finish(tk_t *t)
{
	if (t->src)
		t->vt->close(t->src, tk_closed_cb, t);
	uv_close((uv_handle_t *)&t->deadline, NULL);
	uv_close((uv_handle_t *)&t->resumer, NULL);
	uv_run(&t->loop, UV_RUN_DEFAULT);
	free(t->recs);
	if (t->src && t->closed != 1)
		return -12345;
	return uv_loop_close(&t->loop);
}

/* ---- the cluster ---- */

static void produce(const char *topic, int32_t partition, const void *v, size_t len)
{
	rd_kafka_resp_err_t err;

	do {
		err = rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic),
					RD_KAFKA_V_PARTITION(partition),
					RD_KAFKA_V_VALUE((void *)v, len),
					RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
		if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
			rd_kafka_poll(producer, 10);
	} while (err == RD_KAFKA_RESP_ERR__QUEUE_FULL);
}

/* The group's committed offsets of topic's partitions, read by a client that
 * does not join the group. */
static void committed_of(const char *group, const char *topic, int64_t *out)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(NPART);
	char errstr[256];
	rd_kafka_t *rk;

	rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, errstr, sizeof(errstr));
	rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr));
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	for (int p = 0; p < NPART; p++)
		rd_kafka_topic_partition_list_add(l, topic, p);
	if (rd_kafka_committed(rk, l, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
		for (int p = 0; p < NPART; p++)
			l->elems[p].offset = -2;
	for (int p = 0; p < NPART; p++)
		out[p] = l->elems[p].offset;
	rd_kafka_topic_partition_list_destroy(l);
	rd_kafka_destroy(rk);
}

/* Commits offsets for a group nobody has joined yet. */
static void commit_for(const char *group, const char *topic, const int64_t *offs)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(NPART);
	char errstr[256];
	rd_kafka_t *rk;

	rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, errstr, sizeof(errstr));
	rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr));
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	for (int p = 0; p < NPART; p++)
		if (offs[p] >= 0)
			rd_kafka_topic_partition_list_add(l, topic, p)->offset = offs[p];
	CHECK_EQ_INT(rd_kafka_commit(rk, l, 0), RD_KAFKA_RESP_ERR_NO_ERROR);
	rd_kafka_topic_partition_list_destroy(l);
	rd_kafka_destroy(rk);
}

/* Position bytes naming (topic, partition, next offset) triples. */
static size_t make_pos(uint8_t *out, const char *topic, const int64_t *offs)
{
	mm_buf_t b = {0};
	uint32_t n = 0;
	size_t len;

	mm_buf_put_u32le(&b, 0x31504b4du);
	mm_buf_put_u32le(&b, 0);
	for (int p = 0; p < NPART; p++) {
		if (offs[p] < 0)
			continue;
		mm_buf_put_u16le(&b, (uint16_t)strlen(topic));
		mm_buf_append(&b, topic, strlen(topic));
		mm_buf_put_u32le(&b, (uint32_t)p);
		mm_buf_put_u64le(&b, (uint64_t)offs[p]);
		n++;
	}
	mm_set_u32le(b.p + 4, n);
	memcpy(out, b.p, b.len);
	len = b.len;
	mm_buf_free(&b);
	return len;
}

#define PER_PART 5000

/* Topic "t1": PER_PART records per partition; record i of partition p is
 * {"p":p,"i":i}. Partition 1's record 10 is 5000 bytes, partition 2's
 * record 20 has no value. */
static void fill_t1(void)
{
	char v[64], *big = malloc(5000);

	memset(big, 'x', 5000);
	rd_kafka_mock_topic_create(cluster, "t1", NPART, 1);
	for (int p = 0; p < NPART; p++)
		for (int i = 0; i < PER_PART; i++) {
			int n = snprintf(v, sizeof(v), "{\"p\":%d,\"i\":%d}", p, i);

			if (p == 1 && i == 10)
				produce("t1", p, big, 5000);
			else if (p == 2 && i == 20)
				produce("t1", p, NULL, 0);
			else
				produce("t1", p, v, (size_t)n);
		}
	CHECK_EQ_INT(rd_kafka_flush(producer, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
	free(big);
}

/* ---- tests ---- */

/* Every record once, in order per partition, with its identity, time and
 * size handling; short pauses and one long enough to pause the partitions in
 * librdkafka, from inside deliver(); ack commits. */
/* What a source's lag() reported: partitions, summed lag, "t1:3" seen in
 * records. */
struct lag_seen {
	int n, part3;
	int64_t sum;
};

static void on_lag(void *ud, const char *partition, const char *unit, int64_t lag)
{
	struct lag_seen *s = ud;

	s->n++;
	s->sum += lag;
	if (strcmp(partition, "t1:3") == 0 && strcmp(unit, "records") == 0)
		s->part3 = 1;
}

TEST(consume_pause_ack_commit)
{
	static const char *const opts[] = {"brokers=", "topics=t1", "group=g1", "batch=500",
					   "pause_after=100ms", NULL};
	char brokers[256];
	const char *o[6];
	int64_t next[NPART], committed[NPART];
	size_t total = (size_t)NPART * PER_PART;
	mm_buf_t status = {0};
	tk_t t;

	snprintf(brokers, sizeof(brokers), "brokers=%s", bootstraps);
	memcpy(o, opts, sizeof(o));
	o[0] = brokers;
	tk_init(&t);
	t.pause_every = 3;
	t.long_pause_at = 9;
	REQUIRE(tk_open(&t, o) == 0);
	t.src->max_record = 1000;
	REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
	CHECK(tk_run(&t, p_recs, total, 20000));
	CHECK_EQ_INT(t.err, 0);
	CHECK_EQ_INT(t.nrec, total);
	CHECK_EQ_INT(t.bad, 0);
	CHECK(t.pauses > 3);
	CHECK(t.saw_fetch_paused);
	for (int p = 0; p < NPART; p++)
		next[p] = 0;
	for (size_t i = 0; i < t.nrec; i++) {
		const krec_t *r = &t.recs[i];
		char want[64];
		int p = r->partition;

		REQUIRE(p >= 0 && p < NPART);
		/* In order per partition, no gap, no repeat. */
		CHECK_EQ_INT(r->offset, next[p]);
		next[p] = r->offset + 1;
		snprintf(want, sizeof(want), "t1:%d:%lld", p, (long long)r->offset);
		CHECK(strcmp(r->id, want) == 0);
		CHECK(r->ts_ms > 1600000000000LL);
		if (p == 1 && r->offset == 10) {
			CHECK_EQ_INT(r->flags, MM_REC_ID | MM_REC_TOOBIG);
			CHECK_EQ_INT(r->len, 4096);
			CHECK_EQ_INT(r->orig_len, 5000);
		} else if (p == 2 && r->offset == 20) {
			CHECK_EQ_INT(r->len, 0);
		} else {
			char v[32];

			snprintf(v, sizeof(v), "{\"p\":%d,\"i\":%lld}", p, (long long)r->offset);
			CHECK(strcmp(r->value, v) == 0);
			CHECK_EQ_INT(r->flags, MM_REC_ID);
		}
	}
	/* The group has nothing committed until positions are acknowledged. */
	committed_of("g1", "t1", committed);
	for (int p = 0; p < NPART; p++)
		CHECK(committed[p] < 0);
	t.vt->ack(t.src, t.pos, t.pos_len);
	tk_run(&t, p_never, 0, 500);
	committed_of("g1", "t1", committed);
	for (int p = 0; p < NPART; p++)
		CHECK_EQ_INT(committed[p], PER_PART);
	REQUIRE(t.vt->status(t.src, &status) == 0);
	REQUIRE(mm_buf_append(&status, "", 1) == 0);
	CHECK(strstr((char *)status.p, "\"topic\":\"t1\",\"partition\":3,\"state\":\"assigned\","
				       "\"fetch_paused\":false,\"position\":5000,"
				       "\"high_watermark\":5000,\"lag\":0,\"committed\":5000") != NULL);
	mm_buf_free(&status);
	/* /metrics' view of the same: every partition read to its end. */
	{
		struct lag_seen seen = {0};

		REQUIRE(t.vt->lag(t.src, on_lag, &seen) == 0);
		CHECK_EQ_INT(seen.n, NPART);
		CHECK_EQ_INT(seen.sum, 0);
		CHECK(seen.part3);
	}
	CHECK_EQ_INT(tk_finish(&t), 0);
}

/* Each partition starts at max(offset in our store, group's committed). */
TEST(start_offsets)
{
	int64_t committed[NPART] = {100, 300, -1, 50}, stored[NPART] = {200, 150, -1, -1};
	int64_t first[NPART], count[NPART];
	static const char *opts[] = {NULL, "topics=t1", "group=g2", NULL};
	char brokers[256];
	uint8_t pos[256];
	size_t pos_len, want = 0;
	tk_t t;

	commit_for("g2", "t1", committed);
	pos_len = make_pos(pos, "t1", stored);
	snprintf(brokers, sizeof(brokers), "brokers=%s", bootstraps);
	opts[0] = brokers;
	tk_init(&t);
	REQUIRE(tk_open(&t, opts) == 0);
	REQUIRE(t.vt->start(t.src, pos, pos_len) == 0);
	/* Expected starts: 200 (store), 300 (group), 0 (neither), 50 (group). */
	want = (PER_PART - 200) + (PER_PART - 300) + PER_PART + (PER_PART - 50);
	CHECK(tk_run(&t, p_recs, want, 20000));
	tk_run(&t, p_never, 0, 200);
	CHECK_EQ_INT(t.nrec, want);
	for (int p = 0; p < NPART; p++)
		first[p] = -1, count[p] = 0;
	for (size_t i = 0; i < t.nrec; i++) {
		int p = t.recs[i].partition;

		REQUIRE(p >= 0 && p < NPART);
		if (first[p] < 0)
			first[p] = t.recs[i].offset;
		count[p]++;
	}
	CHECK_EQ_INT(first[0], 200);
	CHECK_EQ_INT(first[1], 300);
	CHECK_EQ_INT(first[2], 0);
	CHECK_EQ_INT(first[3], 50);
	CHECK_EQ_INT(count[0], PER_PART - 200);
	CHECK_EQ_INT(tk_finish(&t), 0);
}

TEST(bad_positions_and_options)
{
	static const char *const missing[] = {"topics=t1", NULL};
	static const char *const auto_commit[] = {"brokers=x:1", "topics=t1", "group=g",
						  "rdkafka.enable.auto.commit=true", NULL};
	static const char *const bad_prop[] = {"brokers=x:1", "topics=t1", "group=g",
					       "rdkafka.no.such.property=1", NULL};
	static const char *const unknown[] = {"brokers=x:1", "topics=t1", "group=g", "tpoic=x",
					      NULL};
	static const char *const start[] = {"brokers=x:1", "topics=t1", "group=g",
					    "start=middle", NULL};
	static const char *const ok[] = {"brokers=127.0.0.1:1", "topics=a,b", "group=g", NULL};
	uint8_t junk[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
	uint8_t pos[256];
	int64_t offs[NPART] = {1, 2, 3, 4};
	size_t len = make_pos(pos, "t1", offs);
	tk_t t;

	tk_init(&t);
	CHECK_EQ_INT(tk_open(&t, missing), MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "'topics' and 'group' are required") != NULL);
	CHECK_EQ_INT(tk_open(&t, auto_commit), MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "enable.auto.commit") != NULL);
	CHECK_EQ_INT(tk_open(&t, bad_prop), MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "no.such.property") != NULL);
	CHECK_EQ_INT(tk_open(&t, unknown), MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "tpoic") != NULL);
	CHECK_EQ_INT(tk_open(&t, start), MM_EINVAL);
	t.src = NULL;
	REQUIRE(tk_open(&t, ok) == 0);
	CHECK(strcmp(t.src->id, "kafka:g/a,b") == 0);
	CHECK_EQ_INT(t.vt->start(t.src, junk, sizeof(junk)), MM_ECORRUPT);
	/* Truncated by one byte, or with a byte too many. */
	CHECK_EQ_INT(t.vt->start(t.src, pos, len - 1), MM_ECORRUPT);
	pos[len] = 0;
	CHECK_EQ_INT(t.vt->start(t.src, pos, len + 1), MM_ECORRUPT);
	/* A source closed without ever starting leaves no handle behind. */
	CHECK_EQ_INT(tk_finish(&t), 0);
}

int main(void)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char errstr[256];

	/* One client owns the cluster; the producer reaches it over TCP. */
	rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr));
	mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	cluster = rd_kafka_mock_cluster_new(mock_rk, 3);
	bootstraps = rd_kafka_mock_cluster_bootstraps(cluster);
	conf = rd_kafka_conf_new();
	rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, errstr, sizeof(errstr));
	rd_kafka_conf_set(conf, "linger.ms", "5", errstr, sizeof(errstr));
	producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	fill_t1();
	RUN(bad_positions_and_options);
	RUN(consume_pause_ack_commit);
	RUN(start_offsets);
	rd_kafka_destroy(producer);
	rd_kafka_mock_cluster_destroy(cluster);
	rd_kafka_destroy(mock_rk);
	UNIT_DONE();
}
