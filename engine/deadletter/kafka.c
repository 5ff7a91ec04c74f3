/*
 * kafka.c: the "kafka" dead-letter destination: every rejected record is
 * produced to a Kafka topic.
 *
 * Message. The value is the record as it came (its first MM_REC_PREFIX bytes
 * when it was truncated), or with format=json the JSON object the file
 * destination writes. The key is the record's identity in its source
 * ("topic:partition:offset" for Kafka records), so replays of one record land
 * in one partition. Headers, all text:
 *   murmur.pipeline, murmur.reason ("json", "too_big", ...), murmur.code
 *   ("EJSON", ...), murmur.error (the detail), murmur.source (source id),
 *   murmur.source.topic and murmur.source.partition (when the record's
 *   identity names them), murmur.source.offset, murmur.time (RFC 3339, when
 *   it was rejected), and murmur.size plus murmur.truncated = "true" for a
 *   truncated record.
 *
 * Durability. write() only enqueues (librdkafka copies the bytes). sync(),
 * which the engine calls before a flush commits, waits for every delivery
 * report (rd_kafka_flush, at most `timeout`) with acks=all and an idempotent
 * producer, so librdkafka's retries cannot duplicate a dead letter. A message
 * whose delivery failed is kept and produced again by the next sync(), and
 * sync() fails while any is undelivered: the engine then retries the flush,
 * so a source position never moves past a record whose dead letter is not in
 * the topic. sync() blocks the loop thread while it waits; it has work only
 * when records were rejected, and the flush could not commit earlier anyway.
 *
 * librdkafka's functions are called through mm_rdk (source/kafka_lib.h),
 * which open() loads first.
 *
 * Threads: loop thread only; delivery reports are served by rd_kafka_poll and
 * rd_kafka_flush on that thread.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "../lib/log.h"
#include "../lib/time.h"
#include "../source/kafka_lib.h"
#include "deadletter.h"

#define MM_KDLQ_PREFIX "rdkafka."

extern const mm_dead_letter_vtable_t mm_dead_letter_kafka_vtable;

typedef struct mm_kdlq_config {
	const char *brokers;
	const char *topic;
	const char *format;
	int64_t timeout_ms;
} mm_kdlq_config_t;

/* A dead letter whose delivery failed, kept for the next sync(). */
typedef struct mm_kdlq_retry {
	void *value, *key;
	size_t len, klen;
	rd_kafka_headers_t *headers;
	struct mm_kdlq_retry *next;
} mm_kdlq_retry_t;

typedef struct mm_kdlq {
	mm_dead_letter_t base;
	rd_kafka_t *rk;
	char *topic;
	int json;
	int64_t timeout_ms;
	mm_buf_t value;
	mm_kdlq_retry_t *retry, **retry_tail;
	uint64_t failed; /* delivery failures since the last sync */
	char last_error[256];
} mm_kdlq_t;

static const mm_option_t mm_kdlq_options[] = {
	{MM_OPT_STRING, "brokers", NULL, offsetof(mm_kdlq_config_t, brokers),
	 "Bootstrap brokers, host:port[,host:port...] (required unless "
	 "rdkafka.bootstrap.servers is given)."},
	{MM_OPT_STRING, "topic", NULL, offsetof(mm_kdlq_config_t, topic),
	 "Topic the rejected records are produced to (required)."},
	{MM_OPT_STRING, "format", "raw", offsetof(mm_kdlq_config_t, format),
	 "Message value: raw (the record's bytes) or json (the dead-letter file's JSON object)."},
	{MM_OPT_DURATION_MS, "timeout", "10s", offsetof(mm_kdlq_config_t, timeout_ms),
	 "How long sync() waits for delivery reports before failing the flush (it is retried)."},
	{0},
};

static void mm_kdlq_retry_free(mm_kdlq_retry_t *r)
{
	free(r->value);
	free(r->key);
	if (r->headers)
		mm_rdk.headers_destroy(r->headers);
	free(r);
}

/* Delivery report, served by rd_kafka_poll/rd_kafka_flush on the loop. */
static void mm_kdlq_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	mm_kdlq_t *d = opaque;
	rd_kafka_headers_t *hdrs = NULL;
	mm_kdlq_retry_t *r;

	if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
		return;
	d->failed++;
	snprintf(d->last_error, sizeof(d->last_error), "%s", mm_rdk.err2str(m->err));
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		goto lost;
	r->len = m->len;
	r->klen = m->key_len;
	r->value = malloc(m->len ? m->len : 1);
	r->key = malloc(m->key_len ? m->key_len : 1);
	if (r->value == NULL || r->key == NULL) {
		mm_kdlq_retry_free(r);
		goto lost;
	}
	memcpy(r->value, m->payload, m->len);
	if (m->key_len)
		memcpy(r->key, m->key, m->key_len);
	if (mm_rdk.message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR)
		r->headers = mm_rdk.headers_copy(hdrs);
	*d->retry_tail = r;
	d->retry_tail = &r->next;
	return;
lost:
	mm_log(MM_LOG_ERROR, "dead-letter", "out of memory keeping an undelivered dead letter for "
	       "topic %s", d->topic);
}

/* Enqueues one message; takes the headers on success. */
static int mm_kdlq_produce(mm_kdlq_t *d, const void *value, size_t len, const void *key,
			   size_t klen, rd_kafka_headers_t *hdrs)
{
	rd_kafka_resp_err_t err;

	for (int tries = 0;; tries++) {
		err = mm_rdk.producev(d->rk, RD_KAFKA_V_TOPIC(d->topic),
				      RD_KAFKA_V_VALUE((void *)value, len),
				      RD_KAFKA_V_KEY((void *)key, klen), RD_KAFKA_V_HEADERS(hdrs),
				      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || tries == 1)
			break;
		/* The local queue is full: wait for deliveries to drain it. */
		mm_rdk.flush(d->rk, (int)d->timeout_ms);
	}
	if (err)
		return mm_diag_set(MM_EIO, "dead letter to Kafka topic %s: %s", d->topic,
				   mm_rdk.err2str(err));
	return 0;
}

static int mm_kdlq_header(rd_kafka_headers_t *h, const char *name, const char *v, size_t n)
{
	return mm_rdk.header_add(h, name, -1, v, (ssize_t)n) ? -1 : 0;
}

static int mm_kdlq_write(mm_dead_letter_t *base, const mm_dead_letter_entry_t *e)
{
	mm_kdlq_t *d = (mm_kdlq_t *)base;
	rd_kafka_headers_t *h = mm_rdk.headers_new(12);
	char num[32], ts[32];
	const char *value = e->record;
	size_t len = e->len;
	int rc = 0;

	rc |= mm_kdlq_header(h, "murmur.pipeline", e->pipeline, strlen(e->pipeline));
	rc |= mm_kdlq_header(h, "murmur.reason", e->reason, strlen(e->reason));
	rc |= mm_kdlq_header(h, "murmur.code", e->code, strlen(e->code));
	rc |= mm_kdlq_header(h, "murmur.error", e->error, strlen(e->error));
	if (e->source)
		rc |= mm_kdlq_header(h, "murmur.source", e->source, strlen(e->source));
	if (e->record_id) {
		/* "topic:partition:offset": topic names cannot hold ':'. */
		const char *id = e->record_id, *end = id + e->record_id_len;
		const char *c1 = memchr(id, ':', e->record_id_len);
		const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(end - c1 - 1)) : NULL;

		if (c2) {
			rc |= mm_kdlq_header(h, "murmur.source.topic", id, (size_t)(c1 - id));
			rc |= mm_kdlq_header(h, "murmur.source.partition", c1 + 1,
					     (size_t)(c2 - c1 - 1));
		}
	}
	snprintf(num, sizeof(num), "%" PRIu64, e->offset);
	rc |= mm_kdlq_header(h, "murmur.source.offset", num, strlen(num));
	mm_time_format(e->time_ms, ts);
	rc |= mm_kdlq_header(h, "murmur.time", ts, strlen(ts));
	if (e->truncated) {
		snprintf(num, sizeof(num), "%" PRIu64, e->orig_len);
		rc |= mm_kdlq_header(h, "murmur.size", num, strlen(num));
		rc |= mm_kdlq_header(h, "murmur.truncated", "true", 4);
	}
	if (rc == 0 && d->json) {
		d->value.len = 0;
		rc = mm_dead_letter_json(e, &d->value);
		value = (const char *)d->value.p;
		len = d->value.len;
	}
	if (rc) {
		mm_rdk.headers_destroy(h);
		return mm_diag_set(MM_ENOMEM, "dead letter to Kafka topic %s: out of memory",
				   d->topic);
	}
	rc = mm_kdlq_produce(d, value, len, e->record_id, e->record_id ? e->record_id_len : 0, h);
	if (rc)
		mm_rdk.headers_destroy(h);
	/* Serve delivery reports that are due; never blocks. */
	mm_rdk.poll(d->rk, 0);
	return rc;
}

static int mm_kdlq_sync(mm_dead_letter_t *base)
{
	mm_kdlq_t *d = (mm_kdlq_t *)base;
	mm_kdlq_retry_t *r;
	rd_kafka_resp_err_t err;

	/* Produce again what failed before, oldest first. */
	while ((r = d->retry) != NULL) {
		int rc = mm_kdlq_produce(d, r->value, r->len, r->klen ? r->key : NULL, r->klen,
					 r->headers);

		if (rc)
			return rc;
		r->headers = NULL; /* taken by the producer */
		d->retry = r->next;
		if (d->retry == NULL)
			d->retry_tail = &d->retry;
		mm_kdlq_retry_free(r);
	}
	if (mm_rdk.outq_len(d->rk) == 0 && d->failed == 0)
		return 0;
	d->failed = 0;
	err = mm_rdk.flush(d->rk, (int)d->timeout_ms);
	if (err)
		return mm_diag_set(MM_ETIMEDOUT, "dead letters to Kafka topic %s not delivered "
				   "within %" PRId64 " ms", d->topic, d->timeout_ms);
	if (d->failed || d->retry)
		return mm_diag_set(MM_EIO, "%" PRIu64 " dead letter(s) to Kafka topic %s failed: %s",
				   d->failed, d->topic, d->last_error);
	return 0;
}

static void mm_kdlq_close(mm_dead_letter_t *base)
{
	mm_kdlq_t *d = (mm_kdlq_t *)base;
	mm_kdlq_retry_t *r, *next;

	if (mm_rdk.flush(d->rk, (int)d->timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR || d->retry)
		mm_log(MM_LOG_WARN, "dead-letter", "closing with undelivered dead letters for "
		       "Kafka topic %s", d->topic);
	for (r = d->retry; r; r = next) {
		next = r->next;
		mm_kdlq_retry_free(r);
	}
	mm_rdk.destroy(d->rk);
	mm_buf_free(&d->value);
	free(d->topic);
	free(d);
}

static int mm_kdlq_set(rd_kafka_conf_t *conf, const char *key, const char *value)
{
	char errstr[512];

	if (mm_rdk.conf_set(conf, key, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
		return mm_diag_set(MM_EINVAL, "dead letter kafka: librdkafka property '%s': %s", key,
				   errstr);
	return 0;
}

static void mm_kdlq_on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	mm_log(level <= 3 ? MM_LOG_ERROR : level == 4 ? MM_LOG_WARN : MM_LOG_DEBUG, "dead-letter",
	       "%s: %s: %s", mm_rdk.name(rk), fac, buf);
}

static int mm_kdlq_open(uv_loop_t *loop, const mm_kv_t *kv, size_t nkv, mm_dead_letter_t **out)
{
	size_t plen = strlen(MM_KDLQ_PREFIX), nours = 0;
	mm_kdlq_config_t cfg;
	rd_kafka_conf_t *conf = NULL;
	mm_kv_t *ours;
	mm_kdlq_t *d = NULL;
	char errstr[512];
	int has_bootstrap = 0, rc;

	/* First, so that every later step (and the cleanup) may call it. */
	rc = mm_rdk_load();
	if (rc)
		return rc;
	ours = calloc(nkv + 1, sizeof(*ours));
	if (ours == NULL)
		return mm_diag_set(MM_ENOMEM, "dead letter kafka: out of memory");
	for (size_t i = 0; i < nkv; i++)
		if (strncmp(kv[i].key, MM_KDLQ_PREFIX, plen) != 0)
			ours[nours++] = kv[i];
	rc = mm_options_apply(mm_kdlq_options, "dead letter kafka", ours, nours, &cfg);
	if (rc)
		goto fail;
	if (cfg.topic == NULL || cfg.topic[0] == '\0') {
		rc = mm_diag_set(MM_EINVAL, "dead letter kafka: 'topic' is required");
		goto fail;
	}
	if (strcmp(cfg.format, "raw") != 0 && strcmp(cfg.format, "json") != 0) {
		rc = mm_diag_set(MM_EINVAL, "dead letter kafka: 'format' must be raw or json, got '%s'",
				 cfg.format);
		goto fail;
	}
	if (cfg.timeout_ms < 1 || cfg.timeout_ms > INT32_MAX) {
		rc = mm_diag_set(MM_EINVAL, "dead letter kafka: 'timeout' out of range");
		goto fail;
	}
	d = calloc(1, sizeof(*d));
	if (d == NULL || (d->topic = strdup(cfg.topic)) == NULL) {
		rc = mm_diag_set(MM_ENOMEM, "dead letter kafka: out of memory");
		goto fail;
	}
	d->json = strcmp(cfg.format, "json") == 0;
	d->timeout_ms = cfg.timeout_ms;
	d->retry_tail = &d->retry;
	conf = mm_rdk.conf_new();
	rc = mm_kdlq_set(conf, "client.id", "murmur-dead-letter");
	/* Every dead letter must reach all in-sync replicas, once. */
	rc = rc ? rc : mm_kdlq_set(conf, "enable.idempotence", "true");
	rc = rc ? rc : mm_kdlq_set(conf, "acks", "all");
	rc = rc ? rc : mm_kdlq_set(conf, "linger.ms", "5");
	if (rc == 0 && cfg.brokers && cfg.brokers[0]) {
		rc = mm_kdlq_set(conf, "bootstrap.servers", cfg.brokers);
		has_bootstrap = 1;
	}
	for (size_t i = 0; rc == 0 && i < nkv; i++) {
		const char *key = kv[i].key + plen;

		if (strncmp(kv[i].key, MM_KDLQ_PREFIX, plen) != 0)
			continue;
		has_bootstrap |= strcmp(key, "bootstrap.servers") == 0 ||
				 strcmp(key, "metadata.broker.list") == 0 ||
				 strcmp(key, "test.mock.num.brokers") == 0;
		rc = mm_kdlq_set(conf, key, kv[i].value);
	}
	if (rc == 0 && !has_bootstrap)
		rc = mm_diag_set(MM_EINVAL, "dead letter kafka: 'brokers' is required");
	if (rc)
		goto fail;
	mm_rdk.conf_set_opaque(conf, d);
	mm_rdk.conf_set_dr_msg_cb(conf, mm_kdlq_on_delivery);
	mm_rdk.conf_set_log_cb(conf, mm_kdlq_on_log);
	d->rk = mm_rdk.new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (d->rk == NULL) {
		rc = mm_diag_set(MM_EINVAL, "dead letter kafka: %s", errstr);
		goto fail;
	}
	d->base.vt = &mm_dead_letter_kafka_vtable;
	snprintf(d->base.target, sizeof(d->base.target), "kafka topic %s", d->topic);
	free(ours);
	*out = &d->base;
	return 0;
fail:
	if (conf)
		mm_rdk.conf_destroy(conf);
	if (d)
		free(d->topic);
	free(d);
	free(ours);
	return rc;
}

const mm_dead_letter_vtable_t mm_dead_letter_kafka_vtable = {
	.name = "kafka",
	.options = mm_kdlq_options,
	.open = mm_kdlq_open,
	.write = mm_kdlq_write,
	.sync = mm_kdlq_sync,
	.close = mm_kdlq_close,
};
