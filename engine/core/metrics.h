/*
 * metrics.h: what /metrics shows, rendered from the counters and histograms
 * the engine, the stores, the sources and the query server already keep.
 *
 * Nothing here counts on a hot path: the renderer reads the live structs at
 * scrape time, so a scrape costs the work of one text page and nothing
 * between scrapes. Names follow the Prometheus conventions: the murmur_
 * prefix, base units (_seconds, _bytes), _total on counters; the process_*
 * families keep the names of the Prometheus client libraries' process
 * collector, which dashboards expect. doc/metrics.md lists every family.
 *
 * One mm_metrics_t per process describes where the numbers are: the running
 * engine (murmur run) and/or the stores the query server reads, the reload
 * counters the Lua side keeps up to date, and a hook for the server's own. The
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
#include "../lib/expo.h"
#include "../lib/histogram.h"
#include "../store/store.h"
#include "engine.h"

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
	/* Families an upper layer renders (the query server's, engine/net/
	 * admin.c), written last; NULL for none. */
	void (*render_more)(void *arg, mm_expo_t *w);
	void *render_more_arg;
	mm_reload_metrics_t reload;
	int has_reload;             /* 1 once the reload counters were set */
	uint64_t (*lua_errors)(void); /* the Lua funnel's error count, or NULL */
	int64_t start_ms;           /* process start (wall clock) */
	char supervisor_json[512];  /* a supervised worker: DATA/supervisor.json, else "" */
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
