/*
 * kafka_lib.h: librdkafka, loaded on first use.
 *
 * murmur does not link librdkafka: every librdkafka function it calls is
 * reached through one table of function pointers, mm_rdk, which
 * mm_rdk_load() fills with dlopen(MM_RDK_SONAME) and dlsym the first time
 * something needs Kafka (the Kafka source's and the Kafka dead-letter
 * destination's open). A process that never touches Kafka (the Lambda
 * runtime, `murmur query`, the query server, `murmur version`...) then never
 * maps librdkafka and its lz4, zstd, sasl2 and zlib dependencies, whose
 * loading and relocation were about 70 page faults and 2 to 4 ms of every
 * start (doc/performance-journal.md, "Start-up: librdkafka loaded on first use").
 *
 * The types, constants and macros still come from librdkafka's own header,
 * and each pointer has the type of the function it stands for
 * (__typeof__), so a call through the table is checked as a direct call
 * would be. Code that calls librdkafka writes mm_rdk.NAME(...) for
 * rd_kafka_NAME(...) and adds NAME to MM_RDK_FUNCS; the link of the murmur
 * binary, which has no -lrdkafka, fails on any direct call left.
 *
 * Threads: mm_rdk_load() may be called from any thread (pthread_once); the
 * table is written once, before the first librdkafka handle exists, and
 * only read afterwards, so librdkafka's own threads and the thread pool
 * (rd_kafka_committed, rd_kafka_destroy) read it without a lock.
 */
#ifndef MM_KAFKA_LIB_H
#define MM_KAFKA_LIB_H

#include <librdkafka/rdkafka.h>

/* The library loaded: librdkafka's soname since 1.0 (Debian librdkafka1). */
#define MM_RDK_SONAME "librdkafka.so.1"

/* Every librdkafka function murmur calls, without its rd_kafka_ prefix. */
#define MM_RDK_FUNCS(X)                                                                 \
	X(assign) X(assignment_lost) X(commit_queue) X(committed) X(conf)               \
	X(conf_destroy) X(conf_get) X(conf_new) X(conf_set) X(conf_set_dr_msg_cb)       \
	X(conf_set_error_cb) X(conf_set_log_cb) X(conf_set_offset_commit_cb)            \
	X(conf_set_opaque) X(conf_set_rebalance_cb) X(consume_batch_queue)              \
	X(consumer_close_queue) X(consumer_closed) X(destroy) X(err2name) X(err2str)    \
	X(error_destroy) X(error_string) X(fatal_error) X(flush)                        \
	X(get_watermark_offsets) X(header_add) X(headers_copy) X(headers_destroy)       \
	X(headers_new) X(incremental_assign) X(incremental_unassign) X(last_error)      \
	X(message_destroy) X(message_errstr) X(message_headers) X(message_timestamp)    \
	X(name) X(new) X(offsets_store) X(outq_len) X(pause_partitions) X(poll)         \
	X(poll_set_consumer) X(producev) X(queue_destroy) X(queue_get_consumer)         \
	X(queue_io_event_enable) X(rebalance_protocol) X(resume_partitions)             \
	X(subscribe) X(topic_name) X(topic_partition_list_add)                          \
	X(topic_partition_list_copy) X(topic_partition_list_destroy)                    \
	X(topic_partition_list_new)

typedef struct mm_rdk {
#define MM_RDK_MEMBER(n) __typeof__(rd_kafka_##n) *n;
	MM_RDK_FUNCS(MM_RDK_MEMBER)
#undef MM_RDK_MEMBER
} mm_rdk_t;

/* The table the Kafka code calls through: all NULL until mm_rdk_load()
 * has returned 0, which every user of librdkafka calls first. */
extern mm_rdk_t mm_rdk;

/* Loads MM_RDK_SONAME into mm_rdk, once per process; later calls return the
 * first call's result. 0, or MM_ENOTSUP when the library or one of its
 * functions is missing (the diagnostics name which and the package to
 * install; set again on every failing call). Any thread. */
int mm_rdk_load(void);

/* The loader itself: dlopen(soname) and every function of MM_RDK_FUNCS
 * into *t. 0, or MM_ENOTSUP with the diagnostics set and *t zeroed (the
 * library is closed again). On success the library stays loaded for the
 * life of the process. mm_rdk_load() calls it with MM_RDK_SONAME; tests
 * call it with other names to check its failures. Any thread. */
int mm_rdk_open(const char *soname, mm_rdk_t *t);

#endif
