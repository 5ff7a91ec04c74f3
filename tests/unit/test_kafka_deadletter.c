/*
 * test_kafka_deadletter.c: the "kafka" dead-letter destination against
 * librdkafka's mock cluster (in this process, over TCP on 127.0.0.1).
 *
 * Dead letters are written through the registry's vtable, made durable with
 * sync(), then read back with a plain librdkafka consumer and checked field
 * by field: value, key and headers. A broker that is down makes sync() fail;
 * the undelivered dead letters are produced again by the following syncs
 * (the engine retries a failed flush) until it is back, and each arrives once.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "deadletter/deadletter.h"
#include "lib/error.h"
#include "unit.h"

static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *cluster;
static const char *bootstraps;

typedef struct got {
	char value[8192];
	size_t len;
	char key[64];
	char hdr[16][2][256];
	int nhdr;
} got_t;

static const char *hdr(const got_t *g, const char *name)
{
	for (int i = 0; i < g->nhdr; i++)
		if (strcmp(g->hdr[i][0], name) == 0)
			return g->hdr[i][1];
	return NULL;
}

/* Reads every message of partition 0 of topic from the beginning. */
static int consume_all(const char *topic, got_t *out, int max)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
	char errstr[256];
	rd_kafka_t *rk;
	int n = 0, idle = 0;

	rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, errstr, sizeof(errstr));
	rd_kafka_conf_set(conf, "group.id", "reader", errstr, sizeof(errstr));
	rd_kafka_conf_set(conf, "enable.partition.eof", "true", errstr, sizeof(errstr));
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	rd_kafka_topic_partition_list_add(l, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
	rd_kafka_assign(rk, l);
	while (idle < 50) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
		rd_kafka_headers_t *hs;
		const char *name;
		const void *v;
		size_t vlen;

		if (m == NULL) {
			idle++;
			continue;
		}
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
			rd_kafka_message_destroy(m);
			break;
		}
		if (m->err == 0 && n < max) {
			got_t *g = &out[n++];

			memset(g, 0, sizeof(*g));
			g->len = m->len < sizeof(g->value) ? m->len : sizeof(g->value) - 1;
			memcpy(g->value, m->payload, g->len);
			snprintf(g->key, sizeof(g->key), "%.*s", (int)m->key_len, (const char *)m->key);
			if (rd_kafka_message_headers(m, &hs) == 0)
				for (size_t i = 0; g->nhdr < 16 &&
						   rd_kafka_header_get_all(hs, i, &name, &v, &vlen) == 0;
				     i++, g->nhdr++) {
					snprintf(g->hdr[g->nhdr][0], 256, "%s", name);
					snprintf(g->hdr[g->nhdr][1], 256, "%.*s", (int)vlen, (const char *)v);
				}
		}
		rd_kafka_message_destroy(m);
	}
	rd_kafka_topic_partition_list_destroy(l);
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	return n;
}

static int dlq_open(const char *topic, const char *format, const char *extra_key,
		    const char *extra_value, mm_dead_letter_t **out)
{
	const mm_dead_letter_vtable_t *vt = mm_dead_letter_find("kafka");
	mm_kv_t kv[5] = {
	    {"brokers", bootstraps},
	    {"topic", topic},
	    {"format", format},
	    {"rdkafka.log_level", "0"},
	    {extra_key, extra_value},
	};

	if (vt == NULL)
		return MM_ENOTFOUND;
	return vt->open(NULL, kv, extra_key ? 5 : 4, out);
}

static mm_dead_letter_entry_t entry(const char *record, const char *id, int64_t offset)
{
	mm_dead_letter_entry_t e = {
	    .pipeline = "pages",
	    .reason = "json",
	    .code = "EJSON",
	    .error = "json: unexpected character 'n' at offset 0",
	    .source = "kafka:g/events",
	    .offset = (uint64_t)offset,
	    .record = record,
	    .len = strlen(record),
	    .orig_len = strlen(record),
	    .time_ms = 1795000000123LL,
	    .record_id = id,
	    .record_id_len = id ? strlen(id) : 0,
	};

	return e;
}

TEST(raw_value_key_and_headers)
{
	static got_t got[8];
	mm_dead_letter_t *d = NULL;
	mm_dead_letter_entry_t e = entry("not json", "events:3:41", 41);
	char big[6000];

	rd_kafka_mock_topic_create(cluster, "dlq1", 1, 1);
	REQUIRE(dlq_open("dlq1", "raw", NULL, NULL, &d) == 0);
	CHECK(strcmp(d->target, "kafka topic dlq1") == 0);
	REQUIRE(d->vt->write(d, &e) == 0);
	/* A truncated record: its first 4 KiB and its true size. */
	memset(big, 'x', sizeof(big));
	e = entry("", NULL, 7);
	e.record = big;
	e.len = 4096;
	e.orig_len = sizeof(big);
	e.truncated = 1;
	e.reason = "too_big";
	REQUIRE(d->vt->write(d, &e) == 0);
	CHECK_EQ_INT(d->vt->sync(d), 0);
	/* Nothing new: sync returns at once. */
	CHECK_EQ_INT(d->vt->sync(d), 0);
	d->vt->close(d);
	REQUIRE(consume_all("dlq1", got, 8) == 2);
	CHECK(got[0].len == 8 && memcmp(got[0].value, "not json", 8) == 0);
	CHECK(strcmp(got[0].key, "events:3:41") == 0);
	CHECK(strcmp(hdr(&got[0], "murmur.pipeline"), "pages") == 0);
	CHECK(strcmp(hdr(&got[0], "murmur.reason"), "json") == 0);
	CHECK(strcmp(hdr(&got[0], "murmur.code"), "EJSON") == 0);
	CHECK(strstr(hdr(&got[0], "murmur.error"), "unexpected character") != NULL);
	CHECK(strcmp(hdr(&got[0], "murmur.source"), "kafka:g/events") == 0);
	CHECK(strcmp(hdr(&got[0], "murmur.source.topic"), "events") == 0);
	CHECK(strcmp(hdr(&got[0], "murmur.source.partition"), "3") == 0);
	CHECK(strcmp(hdr(&got[0], "murmur.source.offset"), "41") == 0);
	CHECK(strcmp(hdr(&got[0], "murmur.time"), "2026-11-18T11:06:40.123Z") == 0);
	CHECK(hdr(&got[0], "murmur.truncated") == NULL);
	CHECK_EQ_INT(got[1].len, 4096);
	CHECK(got[1].key[0] == '\0');
	CHECK(hdr(&got[1], "murmur.source.topic") == NULL);
	CHECK(strcmp(hdr(&got[1], "murmur.source.offset"), "7") == 0);
	CHECK(strcmp(hdr(&got[1], "murmur.truncated"), "true") == 0);
	CHECK(strcmp(hdr(&got[1], "murmur.size"), "6000") == 0);
	CHECK(strcmp(hdr(&got[1], "murmur.reason"), "too_big") == 0);
}

TEST(json_format)
{
	static got_t got[2];
	mm_dead_letter_t *d = NULL;
	mm_dead_letter_entry_t e = entry("{\"a\":", "events:0:5", 5);

	rd_kafka_mock_topic_create(cluster, "dlq2", 1, 1);
	REQUIRE(dlq_open("dlq2", "json", NULL, NULL, &d) == 0);
	REQUIRE(d->vt->write(d, &e) == 0);
	CHECK_EQ_INT(d->vt->sync(d), 0);
	d->vt->close(d);
	REQUIRE(consume_all("dlq2", got, 2) == 1);
	CHECK(strstr(got[0].value, "\"pipeline\":\"pages\"") != NULL);
	CHECK(strstr(got[0].value, "\"record\":\"{\\\"a\\\":\"") != NULL);
	CHECK(strstr(got[0].value, "\"offset\":5") != NULL);
	CHECK(strcmp(hdr(&got[0], "murmur.source.partition"), "0") == 0);
}

/* Undelivered dead letters fail sync() and are produced again by the next
 * one: every record arrives, once. */
TEST(failed_delivery_is_retried)
{
	static got_t got[16];
	mm_dead_letter_t *d = NULL;
	char rec[32], id[32];
	int seen[10] = {0}, rc;

	rd_kafka_mock_topic_create(cluster, "dlq3", 1, 1);
	REQUIRE(dlq_open("dlq3", "raw", "rdkafka.message.timeout.ms", "300", &d) == 0);
	for (int b = 1; b <= 3; b++)
		rd_kafka_mock_broker_set_down(cluster, b);
	for (int i = 0; i < 5; i++) {
		mm_dead_letter_entry_t e;

		snprintf(rec, sizeof(rec), "bad %d", i);
		snprintf(id, sizeof(id), "events:0:%d", i);
		e = entry(rec, id, i);
		REQUIRE(d->vt->write(d, &e) == 0);
	}
	CHECK(d->vt->sync(d) != 0);
	for (int b = 1; b <= 3; b++)
		rd_kafka_mock_broker_set_up(cluster, b);
	for (int i = 5; i < 10; i++) {
		mm_dead_letter_entry_t e;

		snprintf(rec, sizeof(rec), "bad %d", i);
		snprintf(id, sizeof(id), "events:0:%d", i);
		e = entry(rec, id, i);
		REQUIRE(d->vt->write(d, &e) == 0);
	}
	/* The engine retries a failed flush; so does this test, while the
	 * producer reconnects. */
	for (int tries = 0; (rc = d->vt->sync(d)) != 0 && tries < 50; tries++)
		usleep(200000);
	CHECK_EQ_INT(rc, 0);
	d->vt->close(d);
	REQUIRE(consume_all("dlq3", got, 16) == 10);
	for (int i = 0; i < 10; i++) {
		int k = -1;

		CHECK(sscanf(got[i].value, "bad %d", &k) == 1);
		if (k >= 0 && k < 10)
			seen[k]++;
	}
	for (int k = 0; k < 10; k++)
		CHECK_EQ_INT(seen[k], 1);
}

TEST(bad_options)
{
	const mm_dead_letter_vtable_t *vt = mm_dead_letter_find("kafka");
	mm_kv_t no_topic[] = {{"brokers", "127.0.0.1:1"}};
	mm_kv_t no_brokers[] = {{"topic", "x"}};
	mm_kv_t bad_format[] = {{"brokers", "127.0.0.1:1"}, {"topic", "x"}, {"format", "xml"}};
	mm_kv_t bad_prop[] = {{"brokers", "127.0.0.1:1"}, {"topic", "x"}, {"rdkafka.acks", "lots"}};
	mm_dead_letter_t *d = NULL;

	REQUIRE(vt != NULL);
	CHECK_EQ_INT(vt->open(NULL, no_topic, 1, &d), MM_EINVAL);
	CHECK_EQ_INT(vt->open(NULL, no_brokers, 1, &d), MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "brokers") != NULL);
	CHECK_EQ_INT(vt->open(NULL, bad_format, 3, &d), MM_EINVAL);
	CHECK_EQ_INT(vt->open(NULL, bad_prop, 3, &d), MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "acks") != NULL);
}

int main(void)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char errstr[256];

	rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr));
	mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	cluster = rd_kafka_mock_cluster_new(mock_rk, 3);
	bootstraps = rd_kafka_mock_cluster_bootstraps(cluster);
	RUN(bad_options);
	RUN(raw_value_key_and_headers);
	RUN(json_format);
	RUN(failed_delivery_is_retried);
	rd_kafka_mock_cluster_destroy(cluster);
	rd_kafka_destroy(mock_rk);
	UNIT_DONE();
}
