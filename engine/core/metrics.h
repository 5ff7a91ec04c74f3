/*
 * metrics.h: what /metrics shows, rendered from the counters and histograms
 * the engine, the stores, the sources and the query server already keep.
 *
 * Nothing here counts on the hot path except mm_req_metrics_observe (the
 * query server's per-request call); the renderer reads the live structs at
 * scrape time, so a scrape costs the work of one text page and nothing
 * between scrapes. Names follow the Prometheus conventions: the murmur_
 * prefix, base units (_seconds, _bytes), _total on counters; the process_*
 * families keep the names of the Prometheus client libraries' process
 * collector, which dashboards expect. doc/metrics.md lists every family.
 *
 * One mm_metrics_t per process describes where the numbers are: the running
 * engine (murmur run) and/or the stores the query server reads, the server's
 * request counters, the reload counters the Lua side keeps up to date. The
 * pointers are borrowed: whoever sets one clears it before freeing what it
 * points to.
 *
 * Threads: loop thread only, like the counters it reads.
 */
#ifndef MM_METRICS_H
#define MM_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "../lib/buf.h"
#include "../lib/histogram.h"
#include "../store/store.h"
#include "engine.h"

/* Label values longer than this are cut (methods and codes are short names). */
#define MM_METRICS_NAME_MAX 48
#define MM_METRICS_REQ_ROWS 96
#define MM_METRICS_REQ_METHODS 24

/* The query server's own counters: requests by method and result code, and
 * their latency by method. method and code must come from small fixed sets
 * (RPC method names, Connect or gRPC code names, HTTP statuses): they become
 * label values. Past the table's room, new pairs count under "other". */
typedef struct mm_req_metrics {
	struct mm_req_count {
		char method[MM_METRICS_NAME_MAX];
		char code[MM_METRICS_NAME_MAX];
		uint64_t n;
	} counts[MM_METRICS_REQ_ROWS];
	size_t ncounts;
	struct mm_req_latency {
		char method[MM_METRICS_NAME_MAX];
		mm_histo_t hist;
	} latency[MM_METRICS_REQ_METHODS];
	size_t nlatency;
	uint64_t connections;      /* accepted since start */
	uint64_t connections_open; /* open now */
	uint64_t refused;          /* connections or requests refused by a limit */
} mm_req_metrics_t;

/* Counts one finished request: method, its result code, ns from the first
 * byte read to the last byte queued. */
void mm_req_metrics_observe(mm_req_metrics_t *m, const char *method, const char *code, uint64_t ns);

/* Hot reloads, kept by the Lua side (murmur.reload) through the binding. */
typedef struct mm_reload_metrics {
	uint64_t ok, failed, unchanged;
	int64_t last_ok_ms;    /* 0: none yet */
	int64_t last_error_ms; /* 0: none yet */
	int failing;           /* 1 while the last attempt failed */
	char last_error[1024]; /* the failure's message (file:line first), "" if none */
} mm_reload_metrics_t;

typedef struct mm_metrics {
	mm_engine_t *engine;        /* murmur run's engine, or NULL */
	mm_store_t *stores[16];     /* other stores read by the query server */
	size_t nstores;
	mm_req_metrics_t *server;   /* NULL without a query server */
	mm_reload_metrics_t reload;
	int has_reload;             /* 1 once the reload counters were set */
	uint64_t (*lua_errors)(void); /* the Lua funnel's error count, or NULL */
	int64_t loop_lag_ns;        /* -1: not measured */
	int64_t start_ms;           /* process start (wall clock) */
	const char *version;        /* static string */
} mm_metrics_t;

/* A process-wide instance, zeroed with start_ms = now on first use. */
mm_metrics_t *mm_metrics_global(void);

/* Adds a store the query server reads (not the engine's own: that one is
 * rendered through the engine); returns MM_ENOSPC past 16. Remove it before
 * closing it. */
int mm_metrics_add_store(mm_metrics_t *m, mm_store_t *st);
void mm_metrics_remove_store(mm_metrics_t *m, mm_store_t *st);

/* The process's resident set size in bytes (/proc/self/statm), 0 if unknown. */
uint64_t mm_metrics_rss_bytes(void);

/* Appends the exposition of everything m points to: the text format 0.0.4,
 * or OpenMetrics 1.0 when openmetrics is 1. Returns 0 or MM_ENOMEM. */
int mm_metrics_render(const mm_metrics_t *m, int openmetrics, mm_buf_t *out);

#endif
