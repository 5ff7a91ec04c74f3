/*
 * kafka.c: the "kafka" source, a consumer-group member on librdkafka: its
 * loop integration, records, flow control, status and shutdown. The
 * rebalance and commit machinery is in kafka_rebalance.c, the partition table
 * and the positions (their format, whole and in parts) in
 * kafka_partitions.c; kafka_impl.h holds what the three share.
 *
 * Loop integration. librdkafka runs its own threads; the loop thread only
 * serves the consumer queue. Every client queue (logs, errors, commit results,
 * rebalances) is forwarded to that one queue, and rd_kafka_queue_io_event_enable
 * makes librdkafka write a byte to a pipe whenever the queue goes from empty
 * to non-empty. A uv_poll on the pipe's read end wakes the loop; the handler
 * first empties the pipe, then serves the queue in bounded chunks of
 * `batch` messages (rd_kafka_consume_batch_queue, which also runs the
 * rebalance and commit callbacks). After `drain` chunks it yields to the loop
 * with a uv_idle handle and continues on the next iteration, until the queue
 * is empty: the pipe only signals the empty -> non-empty edge, so a drain
 * that stops early must reschedule itself. Reading the pipe before serving
 * the queue means a wake-up is never lost. No timer polls for data.
 *
 * Records. Each message becomes one record: its value (a NULL value is an
 * empty record), offset, timestamp (ts_ms, 0 when the broker has none) and
 * its identity "topic:partition:offset" (MM_REC_ID), an event id for dedup
 * that needs no field, which also names the record in dead letters. A value
 * longer than
 * max_record is delivered as MM_REC_TOOBIG with its first MM_REC_PREFIX bytes,
 * like the file source.
 *
 * librdkafka 2.0.2 aborts in rd_kafka_destroy when a cooperative-sticky
 * consumer joined a group but never received its first assignment
 * (confluentinc/librdkafka#4312). close() therefore waits for that first
 * assignment (at most session.timeout.ms + 5 s) before leaving the group,
 * and if it still has none, keeps the handle instead of destroying it.
 *
 * Flow control. pause() first only stops serving the queue: librdkafka keeps
 * prefetching up to its own bounds (queued.max.messages.kbytes), and a short
 * pause (a flush that falls a little behind) costs nothing when it ends. A
 * pause that lasts `pause_after` escalates: every assigned partition is
 * paused in librdkafka (rd_kafka_pause_partitions: fetching stops, queued
 * messages are dropped and fetched again after resume() from the last one
 * delivered; doing that for every short pause would stall each resume for a
 * fetch round trip), and the queue is served again for rebalances and commit
 * results. A message served while paused is held and delivered first on
 * resume.
 *
 * Liveness. librdkafka evicts a member whose application has not polled for
 * max.poll.interval.ms (it takes that as a stuck application). An idle queue
 * never signals the pipe, so a timer serves the queue every
 * max.poll.interval.ms / 3 as well: it only proves the loop is alive; data
 * never waits for it.
 *
 * Shutdown. stop() drops further messages and pauses fetching. close() waits
 * for the rebalance step in progress (a pending flush counts as done: the
 * engine closes sources after its last flush), then
 * rd_kafka_consumer_close_queue: librdkafka revokes the assignment through
 * the rebalance callback (which commits the durable offsets) and leaves the
 * group. Once rd_kafka_consumer_closed() the handle is destroyed on the
 * thread pool, the handles are closed and done() runs.
 *
 * librdkafka is not linked: its functions are called through mm_rdk
 * (kafka_lib.h), which open() loads first, so a process that never opens a
 * Kafka source or dead-letter topic never maps it.
 *
 * Threads: the loop thread, except rd_kafka_committed and rd_kafka_destroy
 * (thread pool) and the log callback (librdkafka threads; mm_log is
 * thread-safe).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../codec/json.h"
#include "../lib/log.h"
#include "../lib/error.h"
#include "kafka_impl.h"

#define MM_KSRC_BATCH_MAX 65536
#define MM_KSRC_MAX_RECORD_DEFAULT (1ULL << 20)
#define MM_KSRC_PREFIX "rdkafka."

extern const mm_source_vtable_t mm_source_kafka_vtable;

int64_t mm_ksrc_now_ms(void)
{
	uv_timeval64_t tv;

	if (uv_gettimeofday(&tv) != 0)
		return 0;
	return tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Reports a fatal error; the engine stops the source and closes it. */
void mm_ksrc_fail(mm_ksrc_t *ks, int err, const char *fmt, ...)
{
	char what[512], detail[1040];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	snprintf(detail, sizeof(detail), "%s: %s", ks->base.id, what);
	mm_diag_set(err, "%s", detail);
	if (ks->phase == MM_KS_RUN)
		ks->base.sink.error(ks->base.sink.ctx, &ks->base, err, detail);
	else
		mm_log(MM_LOG_ERROR, "kafka", "%s", detail);
}

/* ---- delivery ---- */

static size_t mm_ksrc_utoa(char *out, uint64_t v)
{
	char tmp[24];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	return n;
}

/* With the eof option: every assigned partition was read to its end (as the
 * broker last reported it), so the input ends here, like `kcat -e`. */
void mm_ksrc_check_eof(mm_ksrc_t *ks)
{
	size_t active = 0;

	if (!ks->eof || ks->eof_sent || ks->phase != MM_KS_RUN || ks->rebal != NULL)
		return;
	for (size_t i = 0; i < ks->nparts; i++) {
		if (ks->parts[i].state != MM_KP_ACTIVE)
			continue;
		if (!ks->parts[i].at_eof)
			return;
		active++;
	}
	if (active == 0)
		return;
	ks->eof_sent = 1;
	ks->base.sink.eof(ks->base.sink.ctx, &ks->base);
}

/* Handles a message carrying an error instead of a record. */
static void mm_ksrc_msg_error(mm_ksrc_t *ks, const rd_kafka_message_t *m)
{
	char fatal[512];
	mm_kpart_t *kp;

	if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
		kp = mm_ksrc_part_of(ks, m);
		if (kp && kp->state == MM_KP_ACTIVE && (kp->next < 0 || m->offset >= kp->next))
			kp->at_eof = 1;
		return;
	}
	ks->errors++;
	if (mm_rdk.fatal_error(ks->rk, fatal, sizeof(fatal)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
		mm_ksrc_fail(ks, MM_EIO, "fatal consumer error: %s", fatal);
		return;
	}
	mm_log(MM_LOG_WARN, "kafka", "%s: consumer error on %s[%d]: %s", ks->base.id,
	       m->rkt ? mm_rdk.topic_name(m->rkt) : "-", (int)m->partition,
	       mm_rdk.message_errstr(m));
}

/* Turns messages into records and delivers them as one batch. The messages
 * are not destroyed here. */
static void mm_ksrc_deliver(mm_ksrc_t *ks, rd_kafka_message_t **msgs, size_t n)
{
	int64_t now = mm_ksrc_now_ms();
	size_t nrec = 0;
	mm_batch_t b;

	ks->ids.len = 0;
	for (size_t i = 0; i < n; i++) {
		const rd_kafka_message_t *m = msgs[i];
		rd_kafka_timestamp_type_t tstype;
		mm_record_t *r;
		mm_kpart_t *kp;
		const char *topic;
		size_t tlen, at;
		int64_t ts;
		char *w;

		if (m->err) {
			mm_ksrc_msg_error(ks, m);
			continue;
		}
		kp = mm_ksrc_part_of(ks, m);
		/* Records of a partition being revoked (or not ours) belong to
		 * whoever gets it next: drop them. */
		if (kp == NULL || kp->state != MM_KP_ACTIVE)
			continue;
		topic = mm_rdk.topic_name(m->rkt);
		tlen = strlen(topic);
		at = ks->ids.len;
		if (mm_buf_reserve(&ks->ids, tlen + 2 + 11 + 20) != 0) {
			mm_ksrc_fail(ks, MM_ENOMEM, "out of memory building record ids");
			return;
		}
		w = (char *)ks->ids.p + at;
		memcpy(w, topic, tlen);
		w += tlen;
		*w++ = ':';
		w += mm_ksrc_utoa(w, (uint64_t)m->partition);
		*w++ = ':';
		w += mm_ksrc_utoa(w, (uint64_t)m->offset);
		ks->ids.len = (size_t)(w - (char *)ks->ids.p);

		r = &ks->recs[nrec++];
		r->p = m->payload ? (const char *)m->payload : "";
		r->orig_len = m->len;
		r->flags = MM_REC_ID;
		if (m->len > ks->base.max_record) {
			r->flags |= MM_REC_TOOBIG;
			r->len = m->len < MM_REC_PREFIX ? (uint32_t)m->len : MM_REC_PREFIX;
		} else {
			r->len = (uint32_t)m->len;
		}
		r->offset = (uint64_t)m->offset;
		ts = mm_rdk.message_timestamp(m, &tstype);
		r->ts_ms = tstype == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE || ts < 0 ? 0 : ts;
		/* The buffer may still move: keep the offset, fix up below. */
		r->id = (const char *)(uintptr_t)at;
		r->id_len = (uint32_t)(ks->ids.len - at);
		kp->next = m->offset + 1;
		kp->at_eof = 0;
		kp->records++;
		ks->base.bytes += m->len;
	}
	if (nrec == 0) {
		mm_ksrc_check_eof(ks);
		return;
	}
	for (size_t i = 0; i < nrec; i++)
		ks->recs[i].id = (const char *)ks->ids.p + (uintptr_t)ks->recs[i].id;
	if (mm_ksrc_pos_encode(ks) != 0) {
		mm_ksrc_fail(ks, MM_ENOMEM, "out of memory encoding the position");
		return;
	}
	for (size_t i = 0; i < ks->nparts; i++)
		if (ks->parts[i].state == MM_KP_ACTIVE)
			mm_ksrc_rate(&ks->parts[i], now);
	b.src = &ks->base;
	b.recs = ks->recs;
	b.n = nrec;
	b.end_pos = ks->pos.p;
	b.end_pos_len = ks->pos.len;
	b.now_ms = now;
	ks->base.records += nrec;
	ks->base.sink.deliver(ks->base.sink.ctx, &b);
	mm_ksrc_check_eof(ks);
}

static void mm_ksrc_destroy_msgs(rd_kafka_message_t **msgs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mm_rdk.message_destroy(msgs[i]);
}

/* Keeps messages served while paused, to deliver them first on resume. */
static int mm_ksrc_hold(mm_ksrc_t *ks, rd_kafka_message_t **msgs, size_t n)
{
	if (ks->nheld + n > ks->capheld) {
		size_t cap = ks->capheld ? ks->capheld : ks->batch_max;
		rd_kafka_message_t **grown;

		while (cap < ks->nheld + n)
			cap *= 2;
		grown = realloc(ks->held, cap * sizeof(*grown));
		if (grown == NULL)
			return MM_ENOMEM;
		ks->held = grown;
		ks->capheld = cap;
	}
	memcpy(ks->held + ks->nheld, msgs, n * sizeof(*msgs));
	ks->nheld += n;
	return 0;
}

/* Delivers what was held while paused, batch by batch, unless paused again. */
static void mm_ksrc_deliver_held(mm_ksrc_t *ks)
{
	size_t done = 0;

	while (done < ks->nheld && ks->phase == MM_KS_RUN && !ks->paused) {
		size_t n = ks->nheld - done < ks->batch_max ? ks->nheld - done : ks->batch_max;

		mm_ksrc_deliver(ks, ks->held + done, n);
		mm_ksrc_destroy_msgs(ks->held + done, n);
		done += n;
	}
	if (ks->phase != MM_KS_RUN) {
		mm_ksrc_destroy_msgs(ks->held + done, ks->nheld - done);
		done = ks->nheld;
	}
	memmove(ks->held, ks->held + done, (ks->nheld - done) * sizeof(*ks->held));
	ks->nheld -= done;
}

static void mm_ksrc_on_idle(uv_idle_t *h);

/* Serves the queue: up to drain_max chunks, then yields to the loop. */
static void mm_ksrc_drain(mm_ksrc_t *ks)
{
	size_t budget = ks->drain_max;

	uv_idle_stop(&ks->idle);
	if (ks->phase >= MM_KS_DESTROY)
		return;
	if (ks->nheld && ks->phase == MM_KS_RUN && !ks->paused)
		mm_ksrc_deliver_held(ks);
	while (budget-- > 0 && ks->phase < MM_KS_DESTROY) {
		ssize_t n;

		/* A short pause leaves everything queued in librdkafka. */
		if (ks->phase == MM_KS_RUN && ks->paused && !ks->fetch_stopped)
			break;
		n = mm_rdk.consume_batch_queue(ks->rkqu, 0, ks->msgs, ks->batch_max);
		if (n < 0) {
			mm_ksrc_fail(ks, MM_EIO, "cannot read the consumer queue: %s",
				     mm_rdk.err2str(mm_rdk.last_error()));
			return;
		}
		if (n == 0)
			break;
		if (ks->phase == MM_KS_RUN && !ks->paused && ks->nheld == 0) {
			mm_ksrc_deliver(ks, ks->msgs, (size_t)n);
		} else if (ks->phase == MM_KS_RUN && mm_ksrc_hold(ks, ks->msgs, (size_t)n) == 0) {
			continue; /* held: not destroyed */
		}
		mm_ksrc_destroy_msgs(ks->msgs, (size_t)n);
		if (budget == 0) {
			/* The queue may hold more: continue on the next iteration. */
			uv_idle_start(&ks->idle, mm_ksrc_on_idle);
			break;
		}
	}
	if (ks->phase == MM_KS_CLOSE)
		mm_ksrc_close_step(ks);
}

static void mm_ksrc_on_idle(uv_idle_t *h)
{
	mm_ksrc_drain(h->data);
}

static void mm_ksrc_on_poll(uv_poll_t *h, int status, int events)
{
	mm_ksrc_t *ks = h->data;
	char buf[256];

	/* Empty the pipe first: an enqueue after this point writes again. */
	while (read(ks->fds[0], buf, sizeof(buf)) > 0)
		;
	mm_ksrc_drain(ks);
}

static void mm_ksrc_on_alive(uv_timer_t *h)
{
	mm_ksrc_drain(h->data);
}

/* The pause lasted pause_after: stop fetching, and serve the queue again. */
static void mm_ksrc_on_pause_timer(uv_timer_t *h)
{
	mm_ksrc_t *ks = h->data;
	rd_kafka_topic_partition_list_t *l;

	if (ks->fetch_stopped || !ks->paused || ks->phase != MM_KS_RUN)
		return;
	ks->fetch_stopped = 1;
	l = mm_ksrc_list(ks, MM_KP_ACTIVE);
	mm_log(MM_LOG_INFO, "kafka", "%s: paused for %" PRId64 " ms: pausing %d partition(s)",
	       ks->base.id, ks->pause_after_ms, l->cnt);
	mm_ksrc_fetch_pause(ks, l, 1);
	mm_rdk.topic_partition_list_destroy(l);
	mm_ksrc_drain(ks);
}

/* ---- librdkafka callbacks ---- */

static void mm_ksrc_on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	int ours = level <= 3 ? MM_LOG_ERROR : level == 4 ? MM_LOG_WARN
				   : level <= 6 ? MM_LOG_INFO : MM_LOG_DEBUG;

	mm_log(ours, "kafka", "%s: %s: %s", mm_rdk.name(rk), fac, buf);
}

static void mm_ksrc_on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	mm_ksrc_t *ks = opaque;
	char fatal[512];

	ks->errors++;
	if (err == RD_KAFKA_RESP_ERR__FATAL) {
		mm_rdk.fatal_error(rk, fatal, sizeof(fatal));
		mm_ksrc_fail(ks, MM_EIO, "fatal error: %s", fatal);
		return;
	}
	mm_log(MM_LOG_WARN, "kafka", "%s: %s: %s", ks->base.id,
	       mm_rdk.err2name((rd_kafka_resp_err_t)err), reason);
}

/* ---- shutdown ---- */

static void mm_ksrc_free(mm_ksrc_t *ks)
{
	mm_krebal_t *op, *next;

	for (op = ks->rebal; op; op = next) {
		next = op->next;
		mm_ksrc_rebal_free(op);
	}
	for (size_t i = 0; i < ks->nparts; i++)
		free(ks->parts[i].topic);
	if (ks->topics)
		mm_rdk.topic_partition_list_destroy(ks->topics);
	free(ks->parts);
	free(ks->held);
	free(ks->msgs);
	free(ks->recs);
	free(ks->group);
	mm_buf_free(&ks->ids);
	mm_buf_free(&ks->pos);
	free(ks);
}

static void mm_ksrc_on_closed(uv_handle_t *h)
{
	mm_ksrc_t *ks = h->data;
	void (*done)(void *) = ks->done;
	void *arg = ks->done_arg;

	if (--ks->closes > 0)
		return;
	if (ks->fds[0] >= 0)
		close(ks->fds[0]);
	if (ks->fds[1] >= 0)
		close(ks->fds[1]);
	mm_ksrc_free(ks);
	if (done)
		done(arg);
}

static void mm_ksrc_close_handles(mm_ksrc_t *ks)
{
	ks->closes = 5;
	uv_close((uv_handle_t *)&ks->poll, mm_ksrc_on_closed);
	uv_close((uv_handle_t *)&ks->idle, mm_ksrc_on_closed);
	uv_close((uv_handle_t *)&ks->rebal_timer, mm_ksrc_on_closed);
	uv_close((uv_handle_t *)&ks->alive_timer, mm_ksrc_on_closed);
	uv_close((uv_handle_t *)&ks->pause_timer, mm_ksrc_on_closed);
}

static void mm_ksrc_destroy_work(uv_work_t *req)
{
	mm_ksrc_t *ks = req->data;

	mm_rdk.destroy(ks->rk);
}

static void mm_ksrc_destroy_done(uv_work_t *req, int status)
{
	mm_ksrc_t *ks = req->data;

	ks->rk = NULL;
	mm_ksrc_close_handles(ks);
}

/* The consumer has left the group: release librdkafka, then the handles. */
static void mm_ksrc_destroy(mm_ksrc_t *ks)
{
	const char *proto;

	ks->phase = MM_KS_DESTROY;
	uv_poll_stop(&ks->poll);
	uv_idle_stop(&ks->idle);
	uv_timer_stop(&ks->rebal_timer);
	uv_timer_stop(&ks->alive_timer);
	uv_timer_stop(&ks->pause_timer);
	mm_ksrc_destroy_msgs(ks->held, ks->nheld);
	ks->nheld = 0;
	mm_rdk.queue_io_event_enable(ks->rkqu, -1, NULL, 0);
	mm_rdk.queue_destroy(ks->rkqu);
	ks->rkqu = NULL;
	proto = mm_rdk.rebalance_protocol(ks->rk);
	if (proto && strcmp(proto, "COOPERATIVE") == 0 && !ks->ever_assigned) {
		/* librdkafka 2.0.2 asserts in rd_kafka_destroy here (#4312). */
		mm_log(MM_LOG_WARN, "kafka", "%s: left the group before its first assignment; "
		       "keeping the librdkafka handle (destroying it would abort)", ks->base.id);
		ks->rk = NULL;
		mm_ksrc_close_handles(ks);
		return;
	}
	ks->work.data = ks;
	if (uv_queue_work(ks->base.loop, &ks->work, mm_ksrc_destroy_work, mm_ksrc_destroy_done) < 0) {
		mm_rdk.destroy(ks->rk);
		ks->rk = NULL;
		mm_ksrc_close_handles(ks);
	}
}

/* Advances close() as far as the state allows; called again by every event
 * that may unblock it. */
void mm_ksrc_close_step(mm_ksrc_t *ks)
{
	const char *proto;
	rd_kafka_error_t *error;

	if (ks->phase != MM_KS_CLOSE)
		return;
	if (!ks->close_started) {
		if (ks->work_busy)
			return; /* its callback calls back here */
		if (ks->rebal && ks->rebal_busy && ks->flush_wait) {
			/* The engine will not flush again: this revoke's flush is
			 * the last one, already done. */
			ks->flush_wait->owner = NULL;
			ks->flush_wait = NULL;
			mm_ksrc_revoke_commit(ks);
			return;
		}
		if (ks->rebal)
			return;
		proto = mm_rdk.rebalance_protocol(ks->rk);
		if (proto && strcmp(proto, "COOPERATIVE") == 0 && !ks->ever_assigned &&
		    !ks->close_waited) {
			/* Wait for the first assignment (see the top). */
			if (!ks->close_waiting) {
				ks->close_waiting = 1;
				uv_timer_start(&ks->rebal_timer, mm_ksrc_on_rebal_timer,
					       (uint64_t)ks->session_ms + 5000, 0);
				mm_log(MM_LOG_INFO, "kafka", "%s: waiting for the first assignment "
				       "before leaving the group", ks->base.id);
			}
			return;
		}
		uv_timer_stop(&ks->rebal_timer);
		ks->close_waiting = 0;
		ks->close_started = 1;
		error = mm_rdk.consumer_close_queue(ks->rk, ks->rkqu);
		if (error) {
			mm_log(MM_LOG_WARN, "kafka", "%s: close: %s", ks->base.id,
			       mm_rdk.error_string(error));
			mm_rdk.error_destroy(error);
		}
		/* The close's events arrive on the queue; serve what is there. */
		uv_idle_start(&ks->idle, mm_ksrc_on_idle);
		return;
	}
	if (ks->rebal == NULL && !ks->work_busy && mm_rdk.consumer_closed(ks->rk))
		mm_ksrc_destroy(ks);
}

/* ---- vtable ---- */

/* Sets one librdkafka property, with the error text in the diag slot. */
static int mm_ksrc_conf(rd_kafka_conf_t *conf, const char *id, const char *key, const char *value)
{
	char errstr[512];

	if (mm_rdk.conf_set(conf, key, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
		return mm_diag_set(MM_EINVAL, "%s: librdkafka property '%s': %s", id, key, errstr);
	return 0;
}

static int64_t mm_ksrc_conf_int(rd_kafka_t *rk, const char *key, int64_t def)
{
	char buf[64];
	size_t n = sizeof(buf);

	if (mm_rdk.conf_get(mm_rdk.conf(rk), key, buf, &n) != RD_KAFKA_CONF_OK)
		return def;
	return strtoll(buf, NULL, 10);
}

static int mm_ksrc_open(uv_loop_t *loop, const mm_kv_t *kv, size_t nkv,
			const mm_source_sink_t *sink, mm_source_t **out)
{
	struct mm_ksrc_cfg cfg;
	rd_kafka_conf_t *conf = NULL;
	mm_kv_t *ours = NULL;
	mm_ksrc_t *ks = NULL;
	char errstr[512], *topics = NULL, *save = NULL, *tok;
	size_t nours = 0, plen = strlen(MM_KSRC_PREFIX);
	int has_bootstrap = 0, has_strategy = 0, rc;

	/* First, so that every later step (and the cleanup) may call it. */
	rc = mm_rdk_load();
	if (rc)
		return rc;
	ours = calloc(nkv + 1, sizeof(*ours));
	if (ours == NULL)
		return mm_diag_set(MM_ENOMEM, "kafka: out of memory");
	for (size_t i = 0; i < nkv; i++)
		if (strncmp(kv[i].key, MM_KSRC_PREFIX, plen) != 0)
			ours[nours++] = kv[i];
	memset(&cfg, 0, sizeof(cfg));
	rc = mm_options_apply(mm_source_kafka_vtable.options, "kafka", ours, nours, &cfg);
	if (rc)
		goto fail;
	if (cfg.topics == NULL || cfg.topics[0] == '\0' || cfg.group == NULL || cfg.group[0] == '\0') {
		rc = mm_diag_set(MM_EINVAL, "kafka: options 'topics' and 'group' are required");
		goto fail;
	}
	if (strcmp(cfg.start, "earliest") != 0 && strcmp(cfg.start, "latest") != 0) {
		rc = mm_diag_set(MM_EINVAL, "kafka: option 'start': expected earliest or latest, got '%s'",
				 cfg.start);
		goto fail;
	}
	if (cfg.batch < 1 || cfg.batch > MM_KSRC_BATCH_MAX || cfg.drain < 1 || cfg.drain > 1024 ||
	    cfg.pause_after_ms < 0) {
		rc = mm_diag_set(MM_EINVAL, "kafka: 'batch' must be 1..%d, 'drain' 1..1024 and "
				 "'pause_after' not negative", MM_KSRC_BATCH_MAX);
		goto fail;
	}
	ks = calloc(1, sizeof(*ks));
	if (ks == NULL) {
		rc = mm_diag_set(MM_ENOMEM, "kafka: out of memory");
		goto fail;
	}
	ks->fds[0] = ks->fds[1] = -1;
	ks->rebal_tail = &ks->rebal;
	ks->batch_max = (size_t)cfg.batch;
	ks->drain_max = (size_t)cfg.drain;
	ks->pause_after_ms = cfg.pause_after_ms;
	ks->eof = cfg.eof;
	ks->start = strcmp(cfg.start, "latest") == 0 ? "latest" : "earliest";
	if ((size_t)snprintf(ks->base.id, sizeof(ks->base.id), "kafka:%s/%s", cfg.group,
			     cfg.topics) >= sizeof(ks->base.id)) {
		rc = mm_diag_set(MM_EINVAL, "kafka: group and topic names are too long");
		goto fail;
	}
	ks->group = strdup(cfg.group);
	topics = strdup(cfg.topics);
	ks->msgs = malloc(ks->batch_max * sizeof(*ks->msgs));
	ks->recs = malloc(ks->batch_max * sizeof(*ks->recs));
	ks->topics = mm_rdk.topic_partition_list_new(4);
	if (ks->group == NULL || topics == NULL || ks->msgs == NULL || ks->recs == NULL) {
		rc = mm_diag_set(MM_ENOMEM, "kafka: out of memory");
		goto fail;
	}
	for (tok = strtok_r(topics, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save))
		mm_rdk.topic_partition_list_add(ks->topics, tok, RD_KAFKA_PARTITION_UA);
	if (ks->topics->cnt == 0) {
		rc = mm_diag_set(MM_EINVAL, "kafka: option 'topics' names no topic");
		goto fail;
	}

	conf = mm_rdk.conf_new();
	rc = mm_ksrc_conf(conf, ks->base.id, "client.id", "murmur");
	/* librdkafka must never store an offset on its own: only durable
	 * offsets are stored, by ack(), and auto-committed (see the top). */
	rc = rc ? rc : mm_ksrc_conf(conf, ks->base.id, "enable.auto.commit", "true");
	rc = rc ? rc : mm_ksrc_conf(conf, ks->base.id, "auto.commit.interval.ms", "200");
	rc = rc ? rc : mm_ksrc_conf(conf, ks->base.id, "enable.auto.offset.store", "false");
	rc = rc ? rc : mm_ksrc_conf(conf, ks->base.id, "group.id", cfg.group);
	rc = rc ? rc : mm_ksrc_conf(conf, ks->base.id, "auto.offset.reset", cfg.start);
	rc = rc ? rc : mm_ksrc_conf(conf, ks->base.id, "enable.partition.eof",
				    cfg.eof ? "true" : "false");
	if (rc == 0 && cfg.brokers && cfg.brokers[0]) {
		rc = mm_ksrc_conf(conf, ks->base.id, "bootstrap.servers", cfg.brokers);
		has_bootstrap = 1;
	}
	for (size_t i = 0; rc == 0 && i < nkv; i++) {
		const char *key = kv[i].key + plen;

		if (strncmp(kv[i].key, MM_KSRC_PREFIX, plen) != 0)
			continue;
		if (strcmp(key, "enable.auto.commit") == 0 ||
		    strcmp(key, "enable.auto.offset.store") == 0 || strcmp(key, "group.id") == 0 ||
		    strcmp(key, "auto.offset.reset") == 0 || strcmp(key, "enable.partition.eof") == 0) {
			rc = mm_diag_set(MM_EINVAL, "kafka: librdkafka property '%s' is set by murmur "
					 "(use the group, start and eof options)", key);
			break;
		}
		has_bootstrap |= strcmp(key, "bootstrap.servers") == 0 ||
				 strcmp(key, "metadata.broker.list") == 0 ||
				 strcmp(key, "test.mock.num.brokers") == 0;
		has_strategy |= strcmp(key, "partition.assignment.strategy") == 0;
		rc = mm_ksrc_conf(conf, ks->base.id, key, kv[i].value);
	}
	if (rc == 0 && !has_strategy)
		rc = mm_ksrc_conf(conf, ks->base.id, "partition.assignment.strategy",
				  "cooperative-sticky");
	if (rc == 0 && !has_bootstrap)
		rc = mm_diag_set(MM_EINVAL, "kafka: option 'brokers' is required");
	if (rc)
		goto fail;
	mm_rdk.conf_set_opaque(conf, ks);
	mm_rdk.conf_set_rebalance_cb(conf, mm_ksrc_on_rebalance);
	mm_rdk.conf_set_error_cb(conf, mm_ksrc_on_error);
	mm_rdk.conf_set_offset_commit_cb(conf, mm_ksrc_on_commit);
	mm_rdk.conf_set_log_cb(conf, mm_ksrc_on_log);
	ks->rk = mm_rdk.new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (ks->rk == NULL) {
		rc = mm_diag_set(MM_EINVAL, "%s: %s", ks->base.id, errstr);
		goto fail;
	}
	conf = NULL; /* owned by rk now */
	ks->poll_interval_ms = mm_ksrc_conf_int(ks->rk, "max.poll.interval.ms", 300000);
	ks->session_ms = mm_ksrc_conf_int(ks->rk, "session.timeout.ms", 45000);
	/* A soft pause serves nothing: keep it well inside the poll interval. */
	if (ks->pause_after_ms > ks->poll_interval_ms / 3)
		ks->pause_after_ms = ks->poll_interval_ms / 3;
	/* Logs, errors and commit results all arrive on the consumer queue. */
	mm_rdk.poll_set_consumer(ks->rk);
	ks->rkqu = mm_rdk.queue_get_consumer(ks->rk);
	if (pipe2(ks->fds, O_NONBLOCK | O_CLOEXEC) != 0) {
		rc = mm_diag_set(MM_EIO, "%s: pipe: %s", ks->base.id, strerror(errno));
		goto fail;
	}
	rc = uv_poll_init(loop, &ks->poll, ks->fds[0]);
	if (rc < 0) {
		rc = mm_diag_set(MM_EIO, "%s: uv_poll_init: %s", ks->base.id, uv_strerror(rc));
		goto fail;
	}
	/* Nothing below may fail: the handles must be closed from here on. */
	uv_idle_init(loop, &ks->idle);
	uv_timer_init(loop, &ks->rebal_timer);
	uv_timer_init(loop, &ks->alive_timer);
	uv_timer_init(loop, &ks->pause_timer);
	ks->poll.data = ks->idle.data = ks;
	ks->rebal_timer.data = ks->alive_timer.data = ks->pause_timer.data = ks;
	ks->base.vt = &mm_source_kafka_vtable;
	ks->base.loop = loop;
	ks->base.sink = *sink;
	ks->base.max_record = MM_KSRC_MAX_RECORD_DEFAULT;
	ks->phase = MM_KS_INIT;
	free(topics);
	free(ours);
	*out = &ks->base;
	return 0;

fail:
	if (conf)
		mm_rdk.conf_destroy(conf);
	if (ks) {
		if (ks->rkqu)
			mm_rdk.queue_destroy(ks->rkqu);
		if (ks->rk)
			mm_rdk.destroy(ks->rk);
		if (ks->fds[0] >= 0) {
			close(ks->fds[0]);
			close(ks->fds[1]);
		}
		mm_ksrc_free(ks);
	}
	free(topics);
	free(ours);
	return rc;
}

static int mm_ksrc_start(mm_source_t *src, const uint8_t *pos, size_t len)
{
	mm_ksrc_t *ks = (mm_ksrc_t *)src;
	rd_kafka_resp_err_t err;
	uint64_t every;
	int rc;

	if (ks->phase != MM_KS_INIT)
		return mm_diag_set(MM_EINVAL, "%s: already started", src->id);
	if (pos != NULL && len != 0) {
		rc = mm_ksrc_pos_decode(ks, pos, len, mm_ksrc_pos_stored);
		if (rc)
			return rc;
	}
	if (src->max_record > UINT32_MAX)
		src->max_record = UINT32_MAX; /* mm_record_t.len is 32 bits */
	rc = uv_poll_start(&ks->poll, UV_READABLE, mm_ksrc_on_poll);
	if (rc < 0)
		return mm_diag_set(MM_EIO, "%s: uv_poll_start: %s", src->id, uv_strerror(rc));
	/* Enabled before subscribing, so the first event already signals. */
	mm_rdk.queue_io_event_enable(ks->rkqu, ks->fds[1], "1", 1);
	err = mm_rdk.subscribe(ks->rk, ks->topics);
	if (err) {
		mm_rdk.queue_io_event_enable(ks->rkqu, -1, NULL, 0);
		uv_poll_stop(&ks->poll);
		return mm_diag_set(MM_EINVAL, "%s: subscribe: %s", src->id, mm_rdk.err2str(err));
	}
	ks->phase = MM_KS_RUN;
	every = ks->poll_interval_ms > 3 ? (uint64_t)ks->poll_interval_ms / 3 : 1;
	uv_timer_start(&ks->alive_timer, mm_ksrc_on_alive, every, every);
	mm_log(MM_LOG_INFO, "kafka", "%s: joining group %s", src->id, ks->group);
	/* Anything queued before the pipe was attached is served now. */
	uv_idle_start(&ks->idle, mm_ksrc_on_idle);
	return 0;
}

static void mm_ksrc_pause(mm_source_t *src)
{
	mm_ksrc_t *ks = (mm_ksrc_t *)src;

	if (ks->paused || ks->phase != MM_KS_RUN)
		return;
	ks->paused = 1;
	uv_timer_start(&ks->pause_timer, mm_ksrc_on_pause_timer, (uint64_t)ks->pause_after_ms, 0);
}

static void mm_ksrc_resume(mm_source_t *src)
{
	mm_ksrc_t *ks = (mm_ksrc_t *)src;
	rd_kafka_topic_partition_list_t *l;

	if (!ks->paused || ks->phase != MM_KS_RUN)
		return;
	ks->paused = 0;
	uv_timer_stop(&ks->pause_timer);
	if (ks->fetch_stopped) {
		ks->fetch_stopped = 0;
		l = mm_ksrc_list(ks, MM_KP_ACTIVE);
		mm_ksrc_fetch_pause(ks, l, 0);
		mm_rdk.topic_partition_list_destroy(l);
	}
	/* Never deliver from inside the caller: continue on the loop. */
	uv_idle_start(&ks->idle, mm_ksrc_on_idle);
}

static void mm_ksrc_ack(mm_source_t *src, const uint8_t *pos, size_t len)
{
	mm_ksrc_t *ks = (mm_ksrc_t *)src;

	if (mm_ksrc_pos_decode(ks, pos, len, mm_ksrc_pos_acked) != 0) {
		mm_log(MM_LOG_ERROR, "kafka", "%s: ack: %s", src->id, mm_diag_msg());
		return;
	}
	mm_ksrc_store(ks);
}

static void mm_ksrc_stop(mm_source_t *src)
{
	mm_ksrc_t *ks = (mm_ksrc_t *)src;
	rd_kafka_topic_partition_list_t *l;

	if (ks->phase != MM_KS_RUN)
		return;
	ks->phase = MM_KS_STOP;
	uv_timer_stop(&ks->pause_timer);
	l = mm_ksrc_list(ks, MM_KP_ACTIVE);
	mm_ksrc_fetch_pause(ks, l, 1);
	mm_rdk.topic_partition_list_destroy(l);
	mm_ksrc_destroy_msgs(ks->held, ks->nheld);
	ks->nheld = 0;
}

static void mm_ksrc_close(mm_source_t *src, void (*done)(void *arg), void *arg)
{
	mm_ksrc_t *ks = (mm_ksrc_t *)src;

	mm_ksrc_stop(src);
	ks->done = done;
	ks->done_arg = arg;
	ks->phase = MM_KS_CLOSE;
	if (uv_is_active((uv_handle_t *)&ks->poll) == 0)
		uv_poll_start(&ks->poll, UV_READABLE, mm_ksrc_on_poll);
	mm_rdk.queue_io_event_enable(ks->rkqu, ks->fds[1], "1", 1);
	mm_ksrc_close_step(ks);
}

static int mm_ksrc_describe(mm_source_t *src, const mm_record_t *r, mm_buf_t *out)
{
	if (r->flags & MM_REC_ID)
		return mm_buf_printf(out, "record %.*s (topic:partition:offset) of %s", (int)r->id_len,
				     r->id, src->id);
	return mm_buf_printf(out, "offset %" PRIu64 " of %s", r->offset, src->id);
}

/* A partition's lag: its high watermark (cached by librdkafka, so this
 * never blocks; -1 if unknown or rk is NULL) minus the next offset to read,
 * or -1 when unknown. Nothing read since the assignment: known only for an
 * empty partition. */
static int64_t mm_ksrc_part_lag(rd_kafka_t *rk, const mm_kpart_t *kp, int64_t *hi)
{
	int64_t lo = -1;

	*hi = -1;
	if (rk)
		mm_rdk.get_watermark_offsets(rk, kp->topic, kp->partition, &lo, hi);
	return *hi < 0 ? -1 : kp->next >= 0 ? *hi - kp->next : *hi == 0 ? 0 : -1;
}

static int mm_ksrc_status(mm_source_t *src, mm_buf_t *out)
{
	mm_ksrc_t *ks = (mm_ksrc_t *)src;
	static const char *const states[] = {"idle", "assigned", "revoking"};
	int64_t now = mm_ksrc_now_ms();
	/* From MM_KS_DESTROY on, rd_kafka_destroy may be running on the thread
	 * pool: the handle must not be touched while it is torn down. */
	rd_kafka_t *rk = ks->phase >= MM_KS_DESTROY ? NULL : ks->rk;
	const char *proto = rk ? mm_rdk.rebalance_protocol(rk) : NULL;
	int rc, first = 1;

	rc = mm_buf_printf(out, "{\"group\":");
	rc |= mm_json_quote(ks->group, strlen(ks->group), out);
	rc |= mm_buf_printf(out, ",\"protocol\":\"%s\",\"paused\":%s,\"fetch_paused\":%s,"
			    "\"rebalances\":%" PRIu64 ",\"commits\":%" PRIu64
			    ",\"commit_failures\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"partitions\":[",
			    proto ? proto : "NONE", ks->paused ? "true" : "false",
			    ks->fetch_stopped ? "true" : "false", ks->rebalances, ks->commits,
			    ks->commit_failures, ks->errors);
	for (size_t i = 0; i < ks->nparts && rc == 0; i++) {
		mm_kpart_t *kp = &ks->parts[i];
		int64_t hi = -1, lag;
		char name[300];
		int own;

		if (kp->state == MM_KP_IDLE && kp->records == 0)
			continue;
		/* Closes the window of a partition that has gone quiet. */
		mm_ksrc_rate(kp, now);
		lag = mm_ksrc_part_lag(rk, kp, &hi);
		snprintf(name, sizeof(name), "%s/%d", kp->topic, (int)kp->partition);
		own = kp->state == MM_KP_IDLE || ks->base.sink.own == NULL
			      ? -1
			      : ks->base.sink.own(ks->base.sink.ctx, &ks->base, name);
		rc |= mm_buf_printf(out, "%s{\"topic\":", first ? "" : ",");
		rc |= mm_json_quote(kp->topic, strlen(kp->topic), out);
		rc |= mm_buf_printf(out, ",\"partition\":%d,\"state\":\"%s\","
				    "\"fetch_paused\":%s,\"position\":%" PRId64 ",\"high_watermark\":%" PRId64
				    ",\"lag\":%" PRId64 ",\"committed\":%" PRId64
				    ",\"durable\":%" PRId64 ",\"records\":%" PRIu64
				    ",\"records_per_s\":%.1f,\"own\":%s}",
				    (int)kp->partition, states[kp->state],
				    kp->fetch_paused ? "true" : "false", kp->next, hi, lag,
				    kp->committed, mm_ksrc_part_durable(kp), kp->records, kp->rate,
				    own < 0 ? "null" : own ? "true" : "false");
		first = 0;
	}
	rc |= mm_buf_printf(out, "]}");
	return rc ? MM_ENOMEM : 0;
}

/* lag(): per assigned partition, as status() reports it; partitions whose
 * lag is unknown (no watermark yet, nothing read since the assignment) are
 * left out. */
static int mm_ksrc_lag(mm_source_t *src, mm_source_lag_fn fn, void *ud)
{
	mm_ksrc_t *ks = (mm_ksrc_t *)src;
	rd_kafka_t *rk = ks->phase >= MM_KS_DESTROY ? NULL : ks->rk;

	for (size_t i = 0; i < ks->nparts && rk != NULL; i++) {
		mm_kpart_t *kp = &ks->parts[i];
		int64_t hi, lag;
		char name[320];

		if (kp->state == MM_KP_IDLE)
			continue;
		lag = mm_ksrc_part_lag(rk, kp, &hi);
		if (lag < 0)
			continue;
		snprintf(name, sizeof(name), "%s:%d", kp->topic, (int)kp->partition);
		fn(ud, name, "records", lag);
	}
	return 0;
}

static const mm_option_t mm_ksrc_options[] = {
	{MM_OPT_STRING, "brokers", NULL, offsetof(struct mm_ksrc_cfg, brokers),
	 "Bootstrap brokers, host:port[,host:port...] (librdkafka bootstrap.servers); required "
	 "unless rdkafka.bootstrap.servers is given."},
	{MM_OPT_STRING, "topics", NULL, offsetof(struct mm_ksrc_cfg, topics),
	 "Topics to subscribe to, comma-separated; a name starting with ^ is a regular "
	 "expression (required)."},
	{MM_OPT_STRING, "group", NULL, offsetof(struct mm_ksrc_cfg, group),
	 "Consumer group id (required). Workers with the same group split the partitions."},
	{MM_OPT_STRING, "start", "earliest", offsetof(struct mm_ksrc_cfg, start),
	 "Where a partition starts when neither this store nor the group has an offset for it: "
	 "earliest or latest."},
	{MM_OPT_INT, "batch", "4096", offsetof(struct mm_ksrc_cfg, batch),
	 "Maximum records per batch."},
	{MM_OPT_INT, "drain", "8", offsetof(struct mm_ksrc_cfg, drain),
	 "Batches delivered per loop iteration before other events run."},
	{MM_OPT_DURATION_MS, "pause_after", "1s", offsetof(struct mm_ksrc_cfg, pause_after_ms),
	 "How long the engine's backpressure may pause the source before its partitions are "
	 "paused in librdkafka (shorter pauses only stop reading the local queue)."},
	{MM_OPT_BOOL, "eof", "false", offsetof(struct mm_ksrc_cfg, eof),
	 "End the input once every assigned partition has been read to its end, like kcat -e "
	 "(murmur run --once sets it)."},
	{0},
};

const mm_source_vtable_t mm_source_kafka_vtable = {
	.name = "kafka",
	.options = mm_ksrc_options,
	.open = mm_ksrc_open,
	.start = mm_ksrc_start,
	.pause = mm_ksrc_pause,
	.resume = mm_ksrc_resume,
	.ack = mm_ksrc_ack,
	.stop = mm_ksrc_stop,
	.close = mm_ksrc_close,
	.describe = mm_ksrc_describe,
	.status = mm_ksrc_status,
	.lag = mm_ksrc_lag,
	.pos_parts = mm_ksrc_pos_parts,
};
