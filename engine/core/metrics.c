/*
 * metrics.c: the /metrics renderer of metrics.h.
 *
 * The page is written family by family (each family's samples together, as
 * both formats require): the process, the engine and its pipelines, the
 * sources with their lag, the stores' operations under the contract's names
 * as the `op` label, the Valkey cache and DynamoDB when present, hot reloads
 * and the query server. Store figures are summed over every store rendered
 * (the engine's and the query server's own, each once): histograms share
 * their bucket bounds, so the sum is exact.
 *
 * Families whose source is absent (no engine in `murmur serve`, no cache)
 * are left out rather than written as zeros, so a dashboard can tell "not
 * running here" from "nothing happened".
 */
#include "metrics.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../codec/json.h"
#include "../lib/error.h"
#include "../lib/expo.h"
#include "../lib/time.h"
#include "../store/dynamodb.h"
#include "../store/valkey.h"
#include "agg.h"

/* ---- the process-wide description ---- */

mm_metrics_t *mm_metrics_global(void)
{
	static mm_metrics_t m;
	static int init;

	if (!init) {
		m.start_ms = mm_now_ms();
		init = 1;
	}
	return &m;
}

int mm_metrics_add_store(mm_metrics_t *m, mm_store_t *st)
{
	for (size_t i = 0; i < m->nstores; i++)
		if (m->stores[i] == st)
			return 0;
	if (m->nstores == sizeof(m->stores) / sizeof(m->stores[0]))
		return mm_diag_set(MM_ERANGE, "metrics: more than %zu stores to render", m->nstores);
	m->stores[m->nstores++] = st;
	return 0;
}

void mm_metrics_remove_store(mm_metrics_t *m, mm_store_t *st)
{
	for (size_t i = 0; i < m->nstores; i++)
		if (m->stores[i] == st) {
			m->stores[i] = m->stores[--m->nstores];
			return;
		}
}

/* ---- rendering ---- */

static void counter(mm_expo_t *w, const char *name, const char *help, double v)
{
	mm_expo_family(w, name, MM_EXPO_COUNTER, help);
	mm_expo_value(w, NULL, v);
}

static void gauge(mm_expo_t *w, const char *name, const char *help, double v)
{
	mm_expo_family(w, name, MM_EXPO_GAUGE, help);
	mm_expo_value(w, NULL, v);
}

uint64_t mm_metrics_rss_bytes(void)
{
	unsigned long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f == NULL)
		return 0;
	if (fscanf(f, "%lu %lu", &size, &resident) != 2)
		resident = 0;
	fclose(f);
	return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void render_process(const mm_metrics_t *m, mm_expo_t *w)
{
	struct rusage ru;
	uint64_t resident = mm_metrics_rss_bytes();
	const char *const version[] = {"version", m->version ? m->version : "unknown", NULL};

	mm_expo_family(w, "murmur_build_info", MM_EXPO_GAUGE,
		       "Always 1; the version label names the running murmur.");
	mm_expo_value(w, version, 1);
	if (resident > 0)
		gauge(w, "process_resident_memory_bytes", "Resident set size in bytes.",
		      (double)resident);
	getrusage(RUSAGE_SELF, &ru);
	counter(w, "process_cpu_seconds", "User and system CPU time spent in seconds.",
		(double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
			ru.ru_stime.tv_usec / 1e6);
	gauge(w, "process_start_time_seconds", "Start time of the process since the Unix epoch in seconds.",
	      (double)m->start_ms / 1000.0);
	if (m->lua_errors != NULL)
		counter(w, "murmur_lua_errors", "Errors raised by Lua code and caught by the Lua call funnel.",
			(double)m->lua_errors());
}

/* Per-pipeline counters, as rows over mm_pipeline_stats_t. */
static const struct pipe_counter {
	const char *name;
	size_t off;
	const char *help;
} pipe_counters[] = {
	{"murmur_pipeline_records", offsetof(mm_pipeline_stats_t, records),
	 "Records the pipeline saw."},
	{"murmur_pipeline_accepted", offsetof(mm_pipeline_stats_t, accepted),
	 "Records whose deltas were aggregated."},
	{"murmur_pipeline_duplicates", offsetof(mm_pipeline_stats_t, duplicates),
	 "Records skipped by deduplication."},
	{"murmur_pipeline_dedup_skipped", offsetof(mm_pipeline_stats_t, dedup_skipped),
	 "Records counted without deduplication (empty id or id over 1024 bytes)."},
	{"murmur_pipeline_held", offsetof(mm_pipeline_stats_t, held),
	 "Records held until their ids were claimed on a shared store."},
	{"murmur_pipeline_deltas_flushed", offsetof(mm_pipeline_stats_t, deltas_flushed),
	 "Deltas (entity, bucket) written by flushes."},
	{"murmur_pipeline_dead_letters", offsetof(mm_pipeline_stats_t, dead_letters),
	 "Records written to the dead-letter destination."},
	{"murmur_pipeline_dead_letter_errors", offsetof(mm_pipeline_stats_t, dead_letter_errors),
	 "Dead letters the destination refused (counted, not recorded)."},
};

static void render_pipelines(const mm_engine_t *ctx, mm_expo_t *w)
{
	static const struct {
		const char *result;
		size_t off;
	} claims[] = {
		{"duplicate", offsetof(mm_pipeline_stats_t, claim_duplicates)},
		{"busy", offsetof(mm_pipeline_stats_t, claim_busy)},
		{"deferred", offsetof(mm_pipeline_stats_t, claim_deferred)},
		{"stolen", offsetof(mm_pipeline_stats_t, claim_stolen)},
		{"lost", offsetof(mm_pipeline_stats_t, claim_lost)},
	};

	for (size_t c = 0; c < sizeof(pipe_counters) / sizeof(pipe_counters[0]); c++) {
		mm_expo_family(w, pipe_counters[c].name, MM_EXPO_COUNTER, pipe_counters[c].help);
		for (int i = 0; i < ctx->npipes; i++) {
			const mm_pipeline_t *p = ctx->pipes[i];
			const char *const l[] = {"pipeline", p->cfg.name, NULL};

			mm_expo_value(w, l, (double)*(const uint64_t *)((const char *)&p->stats +
								  pipe_counters[c].off));
		}
	}
	mm_expo_family(w, "murmur_pipeline_rejected", MM_EXPO_COUNTER,
		       "Records rejected, by reason; each goes to the dead-letter destination.");
	for (int i = 0; i < ctx->npipes; i++)
		for (int r = 0; r < MM_REJ__COUNT; r++) {
			const mm_pipeline_t *p = ctx->pipes[i];
			const char *const l[] = {"pipeline", p->cfg.name, "reason",
						 mm_reject_reason_name(r), NULL};

			mm_expo_value(w, l, (double)p->stats.rejected[r]);
		}
	mm_expo_family(w, "murmur_pipeline_pending_deltas", MM_EXPO_GAUGE,
		       "Deltas aggregated in memory and not yet flushed.");
	for (int i = 0; i < ctx->npipes; i++) {
		const mm_pipeline_t *p = ctx->pipes[i];
		const char *const l[] = {"pipeline", p->cfg.name, NULL};

		mm_expo_value(w, l, (double)p->agg[p->cur].count);
	}
	if (ctx->st == NULL || !(mm_store_caps(ctx->st) & MM_STORE_CAP_SHARED))
		return;
	mm_expo_family(w, "murmur_pipeline_claims", MM_EXPO_COUNTER,
		       "Event ids claimed by flushes, re-asks included.");
	for (int i = 0; i < ctx->npipes; i++) {
		const char *const l[] = {"pipeline", ctx->pipes[i]->cfg.name, NULL};

		mm_expo_value(w, l, (double)ctx->pipes[i]->stats.claims);
	}
	mm_expo_family(w, "murmur_pipeline_claim_results", MM_EXPO_COUNTER,
		       "Claims answered other than won: duplicate, busy (the record deferred to the "
		       "next flush: deferred), stolen; lost: won claims taken over before their flush.");
	for (int i = 0; i < ctx->npipes; i++)
		for (size_t c = 0; c < sizeof(claims) / sizeof(claims[0]); c++) {
			const mm_pipeline_t *p = ctx->pipes[i];
			const char *const l[] = {"pipeline", p->cfg.name, "result", claims[c].result, NULL};

			mm_expo_value(w, l, (double)*(const uint64_t *)((const char *)&p->stats +
								  claims[c].off));
		}
}

/* Source lag is collected first, then written as one family per unit. */
static const struct {
	const char *unit, *family, *help;
	double scale;
} lag_units[] = {
	{"records", "murmur_source_lag_records", "Records behind the high watermark, per topic:partition.", 1},
	{"bytes", "murmur_source_lag_bytes", "Bytes of the input not yet read, per file.", 1},
	{"ms", "murmur_source_lag_seconds", "Age of the next record to read, per Kinesis shard.", 1e-3},
};

typedef struct lag_row {
	char source[512];
	char partition[320];
	size_t unit;    /* in lag_units */
	int64_t lag;
} lag_row_t;

typedef struct lag_list {
	lag_row_t *rows;
	size_t n, cap;
	const char *source;
	int failed;
} lag_list_t;

static void on_lag(void *ud, const char *partition, const char *unit, int64_t lag)
{
	lag_list_t *ll = ud;
	lag_row_t *r;
	size_t u = 0;

	/* A unit without a family here (a backend newer than this file) is
	 * left out rather than mislabelled. */
	while (u < sizeof(lag_units) / sizeof(lag_units[0]) && strcmp(lag_units[u].unit, unit) != 0)
		u++;
	if (u == sizeof(lag_units) / sizeof(lag_units[0]))
		return;

	if (ll->n == ll->cap) {
		size_t cap = ll->cap ? ll->cap * 2 : 16;
		lag_row_t *rows = realloc(ll->rows, cap * sizeof(*rows));

		if (rows == NULL) {
			ll->failed = 1;
			return;
		}
		ll->rows = rows;
		ll->cap = cap;
	}
	r = &ll->rows[ll->n++];
	snprintf(r->source, sizeof(r->source), "%s", ll->source);
	snprintf(r->partition, sizeof(r->partition), "%s", partition);
	r->unit = u;
	r->lag = lag;
}

static void render_lag_family(const lag_list_t *ll, mm_expo_t *w, size_t unit)
{
	int any = 0;

	for (size_t i = 0; i < ll->n; i++) {
		const lag_row_t *r = &ll->rows[i];
		const char *const l[] = {"source", r->source, "partition", r->partition, NULL};

		if (r->unit != unit)
			continue;
		if (!any)
			mm_expo_family(w, lag_units[unit].family, MM_EXPO_GAUGE, lag_units[unit].help);
		any = 1;
		/* A file source has one partition: its label is left out. */
		mm_expo_value(w, r->partition[0] ? l : (const char *const[]){"source", r->source, NULL},
			      (double)r->lag * lag_units[unit].scale);
	}
}

static void render_sources(const mm_engine_t *ctx, mm_expo_t *w)
{
	lag_list_t ll = {0};

	mm_expo_family(w, "murmur_source_records", MM_EXPO_COUNTER, "Records read from the source.");
	for (int i = 0; i < ctx->nsrcs; i++) {
		const mm_engine_source_t *es = &ctx->srcs[i];
		const char *const l[] = {"source", es->src ? es->src->id : es->id, NULL};

		mm_expo_value(w, l, (double)(es->src ? es->src->records : es->records));
	}
	mm_expo_family(w, "murmur_source_bytes", MM_EXPO_COUNTER, "Bytes read from the source.");
	for (int i = 0; i < ctx->nsrcs; i++) {
		const mm_engine_source_t *es = &ctx->srcs[i];
		const char *const l[] = {"source", es->src ? es->src->id : es->id, NULL};

		mm_expo_value(w, l, (double)(es->src ? es->src->bytes : es->bytes));
	}
	for (int i = 0; i < ctx->nsrcs; i++) {
		mm_source_t *src = ctx->srcs[i].src;

		if (src == NULL || ctx->srcs[i].closed || src->vt->lag == NULL)
			continue;
		ll.source = src->id;
		src->vt->lag(src, on_lag, &ll);
	}
	if (ll.failed)
		w->rc = w->rc ? w->rc : MM_ENOMEM;
	for (size_t u = 0; u < sizeof(lag_units) / sizeof(lag_units[0]); u++)
		render_lag_family(&ll, w, u);
	free(ll.rows);
}

static void render_engine(const mm_engine_t *ctx, mm_expo_t *w)
{
	const mm_engine_stats_t *s = &ctx->stats;

	gauge(w, "murmur_pipelines", "Pipelines running.", ctx->npipes);
	counter(w, "murmur_batches", "Batches delivered by the sources.", (double)s->batches);
	counter(w, "murmur_records", "Records delivered by the sources.", (double)s->records);
	counter(w, "murmur_flushes", "Flushes that completed.", (double)s->flushes);
	counter(w, "murmur_flush_failures", "Flush attempts that failed (each is retried).",
		(double)s->flush_failures);
	mm_expo_family(w, "murmur_flush_duration_seconds", MM_EXPO_HISTOGRAM,
		       "Duration of successful flushes, from submission to durable.");
	mm_expo_histogram(w, NULL, &s->flush_hist);
	counter(w, "murmur_store_writes", "State records written by flushes.", (double)s->store_writes);
	counter(w, "murmur_purged_buckets", "Expired buckets deleted by retention.", (double)s->purged);
	counter(w, "murmur_source_pauses", "Times the sources were paused (backpressure or a failing store).",
		(double)s->pauses);
	gauge(w, "murmur_sources_paused", "1 while the engine holds its sources paused.",
	      ctx->paused ? 1 : 0);
	gauge(w, "murmur_event_loop_lag_seconds",
	      "Largest delay of the loop's lag probe timer over the last 10 s.",
	      (double)mm_loop_lag_recent_ns(&ctx->lag, uv_hrtime()) / 1e9);
	gauge(w, "murmur_event_loop_lag_max_seconds",
	      "Largest delay of the loop's lag probe timer since start.",
	      (double)mm_loop_lag_max_ns(&ctx->lag) / 1e9);
	gauge(w, "murmur_event_loop_blocked_max_seconds",
	      "Largest delay of the loop's lag probe timer since start, without the time the "
	      "loop thread waited for a CPU, and at most the time the loop spent out of its poll.",
	      (double)mm_loop_block_max_ns(&ctx->lag) / 1e9);
	render_pipelines(ctx, w);
	render_sources(ctx, w);
}

/* Store figures summed over every store rendered. */
typedef struct store_sum {
	mm_histo_t hist[MM_STORE_NOPS + 1];
	uint64_t errors[MM_STORE_NOPS + 1];
	int nvalkey, nddb;
	mm_valkey_stats_t vs;
	mm_ddb_stats_t ds;
} store_sum_t;

static void sum_store(store_sum_t *sum, const mm_store_t *st)
{
	mm_valkey_stats_t vs;
	mm_ddb_stats_t ds;

	for (int op = 0; op <= MM_STORE_NOPS; op++) {
		mm_histo_add(&sum->hist[op], &st->stats.hist[op]);
		sum->errors[op] += st->stats.hist_errors[op];
	}
	if (mm_valkey_stats(st, &vs) == 0) {
		for (int op = 0; op < MM_VALKEY_OP_MAX; op++) {
			mm_histo_add(&sum->vs.hist[op], &vs.hist[op]);
			sum->vs.errors[op] += vs.errors[op];
		}
		sum->vs.hits += vs.hits;
		sum->vs.misses += vs.misses;
		sum->vs.bypassed += vs.bypassed;
		sum->vs.fills += vs.fills;
		sum->vs.fills_skipped += vs.fills_skipped;
		sum->vs.updates += vs.updates;
		sum->vs.invalidated += vs.invalidated;
		sum->vs.lost_leases += vs.lost_leases;
		sum->vs.corrupt += vs.corrupt;
		sum->vs.dirty += vs.dirty;
		sum->vs.connects += vs.connects;
		sum->vs.disconnects += vs.disconnects;
		sum->vs.data_losses += vs.data_losses;
		sum->vs.repopulated += vs.repopulated;
		sum->vs.connected += vs.connected;
		sum->nvalkey++;
	}
	mm_diag_clear();
	if (mm_ddb_get_stats(st, &ds) == 0) {
		for (int op = 0; op < MM_DDB_NOPS; op++) {
			mm_histo_add(&sum->ds.hist[op], &ds.hist[op]);
			sum->ds.requests[op] += ds.requests[op];
		}
		sum->ds.retries += ds.retries;
		sum->ds.throttled += ds.throttled;
		sum->ds.server_errors += ds.server_errors;
		sum->ds.transport_errors += ds.transport_errors;
		sum->ds.cas_conflicts += ds.cas_conflicts;
		sum->ds.unprocessed_keys += ds.unprocessed_keys;
		sum->nddb++;
	}
	mm_diag_clear();
}

/* The contract's names of the store operations, by histogram slot. */
static const char *const store_ops[MM_STORE_NOPS + 1] = {
	[MM_STORE_OP_APPLY] = "store_merge_update", [MM_STORE_OP_GET_MANY] = "store_get_many",
	[MM_STORE_OP_POSITION] = "store_get_position",
	[MM_STORE_OP_CLAIM] = "store_claim",          [MM_STORE_OP_RENEW] = "store_renew",
	[MM_STORE_OP_META] = "store_meta",            [MM_STORE_HIST_GET] = "store_get",
};

/* Writes one family over the store and cache operations: what 0 = the
 * count, 1 = the errors, 2 = the latency histogram. */
static void render_ops(const store_sum_t *sum, mm_expo_t *w, int what)
{
	for (int op = 0; op <= MM_STORE_NOPS; op++) {
		const char *const l[] = {"op", store_ops[op], NULL};

		if (what == 2)
			mm_expo_histogram(w, l, &sum->hist[op]);
		else
			mm_expo_value(w, l, what ? (double)sum->errors[op] : (double)sum->hist[op].count);
	}
	for (int op = 0; op < MM_VALKEY_OP_MAX && sum->nvalkey; op++) {
		const char *const l[] = {"op", mm_valkey_op_name(op), NULL};

		if (what == 2)
			mm_expo_histogram(w, l, &sum->vs.hist[op]);
		else
			mm_expo_value(w, l, what ? (double)sum->vs.errors[op] : (double)sum->vs.hist[op].count);
	}
}

static void render_cache(const store_sum_t *sum, mm_expo_t *w)
{
	const struct {
		const char *name;
		uint64_t v;
		const char *help;
	} rows[] = {
		{"murmur_cache_hits", sum->vs.hits, "Keys answered by the Valkey cache."},
		{"murmur_cache_misses", sum->vs.misses, "Keys read from the backing store after a miss."},
		{"murmur_cache_bypassed", sum->vs.bypassed, "Reads that went straight to the backing store."},
		{"murmur_cache_fills", sum->vs.fills, "Cache entries written from the backing store."},
		{"murmur_cache_fills_skipped", sum->vs.fills_skipped,
		 "Fills refused because a write was in progress."},
		{"murmur_cache_updates", sum->vs.updates, "Entries updated in place after a store write."},
		{"murmur_cache_invalidations", sum->vs.invalidated,
		 "Entries deleted because they could not be updated."},
		{"murmur_cache_lost_leases", sum->vs.lost_leases,
		 "Update batches whose write lease had expired."},
		{"murmur_cache_corrupt_entries", sum->vs.corrupt, "Cached values that failed to decode."},
		{"murmur_cache_connects", sum->vs.connects, "Connections that completed the handshake."},
		{"murmur_cache_disconnects", sum->vs.disconnects, "Connections lost or dropped."},
		{"murmur_cache_data_losses", sum->vs.data_losses,
		 "Restarts, FLUSHALLs or failovers of the cache detected."},
		{"murmur_cache_repopulated", sum->vs.repopulated, "Entries rebuilt by repopulate."},
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		counter(w, rows[i].name, rows[i].help, (double)rows[i].v);
	gauge(w, "murmur_cache_connected", "Caches in use (connected and checked).", sum->vs.connected);
	gauge(w, "murmur_cache_dirty_keys", "Keys waiting to be invalidated when the cache answers again.",
	      (double)sum->vs.dirty);
}

static void render_dynamodb(const store_sum_t *sum, mm_expo_t *w)
{
	static const char *const ops[MM_DDB_NOPS] = {"GetItem",    "PutItem",      "UpdateItem",
						      "DeleteItem", "BatchGetItem", "other"};
	const struct {
		const char *name;
		uint64_t v;
		const char *help;
	} rows[] = {
		{"murmur_dynamodb_retries", sum->ds.retries, "Requests re-sent after a retriable failure."},
		{"murmur_dynamodb_throttled", sum->ds.throttled, "Requests refused by throttling."},
		{"murmur_dynamodb_server_errors", sum->ds.server_errors, "HTTP 5xx answers."},
		{"murmur_dynamodb_transport_errors", sum->ds.transport_errors,
		 "Requests with no HTTP answer (refused, reset, timed out)."},
		{"murmur_dynamodb_cas_conflicts", sum->ds.cas_conflicts,
		 "Conditional writes that lost a race and re-read."},
		{"murmur_dynamodb_unprocessed_keys", sum->ds.unprocessed_keys,
		 "BatchGetItem keys returned unprocessed."},
	};

	mm_expo_family(w, "murmur_dynamodb_requests", MM_EXPO_COUNTER,
		       "HTTP requests sent to DynamoDB, retries included, by operation.");
	for (int op = 0; op < MM_DDB_NOPS; op++) {
		const char *const l[] = {"operation", ops[op], NULL};

		mm_expo_value(w, l, (double)sum->ds.requests[op]);
	}
	mm_expo_family(w, "murmur_dynamodb_request_duration_seconds", MM_EXPO_HISTOGRAM,
		       "Latency of DynamoDB requests, by operation.");
	for (int op = 0; op < MM_DDB_NOPS; op++) {
		const char *const l[] = {"operation", ops[op], NULL};

		mm_expo_histogram(w, l, &sum->ds.hist[op]);
	}
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		counter(w, rows[i].name, rows[i].help, (double)rows[i].v);
}

static void render_stores(const mm_metrics_t *m, mm_expo_t *w)
{
	store_sum_t *sum = calloc(1, sizeof(*sum));
	int n = 0;

	if (sum == NULL) {
		w->rc = w->rc ? w->rc : MM_ENOMEM;
		return;
	}
	if (m->engine != NULL && m->engine->st != NULL) {
		sum_store(sum, m->engine->st);
		n++;
	}
	for (size_t i = 0; i < m->nstores; i++)
		if (m->engine == NULL || m->stores[i] != m->engine->st) {
			sum_store(sum, m->stores[i]);
			n++;
		}
	if (n > 0) {
		mm_expo_family(w, "murmur_store_operations", MM_EXPO_COUNTER,
			       "Store and cache operations, by the contract's operation name.");
		render_ops(sum, w, 0);
		mm_expo_family(w, "murmur_store_operation_errors", MM_EXPO_COUNTER,
			       "Store and cache operations that failed, by operation.");
		render_ops(sum, w, 1);
		mm_expo_family(w, "murmur_store_operation_duration_seconds", MM_EXPO_HISTOGRAM,
			       "Latency of store and cache operations, by operation.");
		render_ops(sum, w, 2);
	}
	if (sum->nvalkey)
		render_cache(sum, w);
	if (sum->nddb)
		render_dynamodb(sum, w);
	free(sum);
}

/* A supervised worker's restarts, from the supervisor's supervisor.json (the
 * supervisor is another process: its file is the only view of its counts).
 * A file missing or unreadable leaves the families out. */
static void render_supervisor(const char *path, mm_expo_t *w)
{
	char text[1024];
	mm_json_field_t f[] = {{.name = "restarts", .name_len = 8}, {.name = "crashes", .name_len = 7},
			       {.name = "stalls", .name_len = 6}, {.name = "poison", .name_len = 6}};
	double v[4];
	FILE *fp = fopen(path, "r");
	size_t n = fp ? fread(text, 1, sizeof(text), fp) : 0;

	if (fp)
		fclose(fp);
	if (n == 0 || n == sizeof(text) || mm_json_scan(text, n, f, 4) != 0) {
		mm_diag_clear();
		return;
	}
	for (int i = 0; i < 4; i++) {
		if (f[i].type != MM_JSON_NUMBER)
			return;
		v[i] = strtod(f[i].p, NULL);
	}
	counter(w, "murmur_worker_restarts", "Times the supervisor restarted the worker.", v[0]);
	mm_expo_family(w, "murmur_worker_deaths", MM_EXPO_COUNTER,
		       "Worker deaths the supervisor saw, by cause: crash or stall (watchdog).");
	mm_expo_value(w, (const char *const[]){"cause", "crash", NULL}, v[1]);
	mm_expo_value(w, (const char *const[]){"cause", "stall", NULL}, v[2]);
	counter(w, "murmur_poison_records", "Records blamed twice for a worker's death (sent to dead letters).",
		v[3]);
}

static void render_reload(const mm_reload_metrics_t *r, mm_expo_t *w)
{
	static const char *const results[] = {"ok", "failed", "unchanged"};
	const uint64_t v[] = {r->ok, r->failed, r->unchanged};

	mm_expo_family(w, "murmur_reloads", MM_EXPO_COUNTER,
		       "Hot reloads: ok (applied), failed (the old pipelines kept running), unchanged.");
	for (int i = 0; i < 3; i++) {
		const char *const l[] = {"result", results[i], NULL};

		mm_expo_value(w, l, (double)v[i]);
	}
	gauge(w, "murmur_reload_failing", "1 while the last reload attempt failed.", r->failing ? 1 : 0);
	if (r->last_ok_ms > 0)
		gauge(w, "murmur_reload_last_success_timestamp_seconds",
		      "When the last reload was applied, since the Unix epoch.", (double)r->last_ok_ms / 1000.0);
	if (r->last_error_ms > 0)
		gauge(w, "murmur_reload_last_failure_timestamp_seconds",
		      "When the last reload failed, since the Unix epoch.", (double)r->last_error_ms / 1000.0);
}

int mm_metrics_render(const mm_metrics_t *m, int openmetrics, mm_buf_t *out)
{
	mm_expo_t w;

	mm_expo_begin(&w, out, openmetrics);
	render_process(m, &w);
	if (m->engine != NULL)
		render_engine(m->engine, &w);
	render_stores(m, &w);
	if (m->supervisor_json[0])
		render_supervisor(m->supervisor_json, &w);
	if (m->has_reload)
		render_reload(&m->reload, &w);
	if (m->render_more != NULL)
		m->render_more(m->render_more_arg, &w);
	return mm_expo_end(&w);
}
