/*
 * admin.c: the routes of admin.h. Each handler builds its whole answer at
 * once from structs on the loop thread (metrics.h, core/admin.h): no I/O but
 * the dead-letter tail's read of at most 64 KiB of a local file.
 */
#include "admin.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../core/admin.h"
#include "../core/metrics.h"
#include "../lib/error.h"
#include "../lib/expo.h"
#include "rpc.h"
#include "server.h"

static struct {
	mm_server_t *srv;
	const mm_rpc_t *rpc;
	mm_store_t *stores[16]; /* added to the metrics, removed when routes go */
	size_t nstores;
} net;

/* The query server's families (metrics.h's render_more hook): requests by
 * method and code, their latency in the rpc layer's own buckets, and the
 * connection counters. */
static void render_server(void *arg, mm_expo_t *w)
{
	static const char *const le[] = {"0.0001", "0.00025", "0.0005", "0.001", "0.0025",
					  "0.01",   "0.05",    "0.25",   "+Inf"};
	mm_server_stats_t s;
	const mm_rpc_method_stats_t *ms;
	const char *name;

	mm_expo_family(w, "murmur_query_requests", MM_EXPO_COUNTER,
		       "Query service calls, by method and result code.");
	for (unsigned i = 0; net.rpc && (ms = mm_rpc_stats(net.rpc, i, &name)) != NULL; i++)
		for (int c = 0; c < MM_RPC_NCODES; c++) {
			const char *const l[] = {"method", name, "code", mm_rpc_code_name(c), NULL};

			if (ms->codes[c] > 0 || c == MM_RPC_OK)
				mm_expo_value(w, l, (double)ms->codes[c]);
		}
	mm_expo_family(w, "murmur_query_request_duration_seconds", MM_EXPO_HISTOGRAM,
		       "Query service call latency, from the decoded request to the encoded answer.");
	for (unsigned i = 0; net.rpc && (ms = mm_rpc_stats(net.rpc, i, &name)) != NULL; i++) {
		const char *const l[] = {"method", name, NULL};
		uint64_t cum[9];

		for (int b = 0; b < 8; b++)
			cum[b] = ms->latency_le[b];
		cum[8] = ms->calls;
		mm_expo_histogram_le(w, l, 9, le, cum, (double)ms->ns_total / 1e9, ms->calls);
	}
	mm_server_get_stats(net.srv, &s);
	mm_expo_family(w, "murmur_query_connections", MM_EXPO_COUNTER, "Connections the server accepted.");
	mm_expo_value(w, NULL, (double)s.accepted);
	mm_expo_family(w, "murmur_query_connections_open", MM_EXPO_GAUGE, "Connections open now.");
	mm_expo_value(w, NULL, (double)s.open);
	mm_expo_family(w, "murmur_query_http_requests", MM_EXPO_COUNTER,
		       "HTTP requests answered, every route and protocol.");
	mm_expo_value(w, NULL, (double)s.requests);
	mm_expo_family(w, "murmur_query_refused", MM_EXPO_COUNTER,
		       "Connections or requests refused, by reason.");
	{
		const struct {
			const char *reason;
			uint64_t n;
		} rows[] = {{"max_connections", s.refused},
			    {"bad_request", s.bad_requests},
			    {"timeout", s.timeouts},
			    {"unauthorized", s.unauthorized}};

		for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
			const char *const l[] = {"reason", rows[i].reason, NULL};

			mm_expo_value(w, l, (double)rows[i].n);
		}
	}
}

static int on_metrics(void *arg, const mm_net_req_t *req, mm_net_res_t *res)
{
	int om = mm_expo_wants_openmetrics(mm_net_header(req, "accept", NULL));

	mm_net_res_type(res, mm_expo_content_type(om));
	return mm_metrics_render(mm_metrics_global(), om, &res->body);
}

static int on_healthz(void *arg, const mm_net_req_t *req, mm_net_res_t *res)
{
	mm_net_res_type(res, "text/plain; charset=utf-8");
	return mm_buf_printf(&res->body, "ok\n");
}

static int on_readyz(void *arg, const mm_net_req_t *req, mm_net_res_t *res)
{
	const char *why = mm_admin_not_ready();

	mm_net_res_type(res, "text/plain; charset=utf-8");
	if (why == NULL)
		return mm_buf_printf(&res->body, "ready\n");
	res->status = 503;
	return mm_buf_printf(&res->body, "not ready: %s\n", why);
}

static int on_page(void *arg, const mm_net_req_t *req, mm_net_res_t *res)
{
	mm_net_res_type(res, "text/html; charset=utf-8");
	/* The page has no data to leak, but must not be framed (clickjacking)
	 * nor load anything from elsewhere. */
	if (mm_net_res_header(res, "content-security-policy",
			      "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
			      "img-src data:; connect-src 'self'; frame-ancestors 'none'") != 0)
		return MM_ENOMEM;
	return mm_buf_append(&res->body, mm_admin_page_index, strlen(mm_admin_page_index));
}

static int json_reply(mm_net_res_t *res)
{
	mm_net_res_type(res, "application/json");
	return mm_net_res_header(res, "cache-control", "no-store");
}

/* Appends the query server's own live counters as the status document's
 * "server" member (doc/metrics.md): what the page shows in both modes, and
 * the only live counters of `murmur serve`, which runs no pipelines. */
static int server_json(mm_buf_t *out)
{
	mm_server_stats_t s;
	const mm_rpc_method_stats_t *ms;
	const char *name;
	uint64_t reads = 0, read_errors = 0, read_ns = 0;
	int rc;

	mm_server_get_stats(net.srv, &s);
	for (size_t i = 0; i < net.nstores; i++) {
		reads += net.stores[i]->stats.ops[MM_STORE_OP_GET_MANY];
		read_errors += net.stores[i]->stats.errors[MM_STORE_OP_GET_MANY];
		read_ns += net.stores[i]->stats.ns_total[MM_STORE_OP_GET_MANY];
	}
	rc = mm_buf_printf(out,
			   ",\"server\":{\"connections_open\":%" PRIu64 ",\"connections\":%" PRIu64
			   ",\"http_requests\":%" PRIu64 ",\"refused\":{\"max_connections\":%" PRIu64
			   ",\"bad_request\":%" PRIu64 ",\"timeout\":%" PRIu64 ",\"unauthorized\":%" PRIu64
			   "},\"store_reads\":%" PRIu64 ",\"store_read_errors\":%" PRIu64
			   ",\"store_read_ns\":%" PRIu64 ",\"methods\":{",
			   s.open, s.accepted, s.requests, s.refused, s.bad_requests, s.timeouts,
			   s.unauthorized, reads, read_errors, read_ns);
	for (unsigned i = 0; rc == 0 && net.rpc && (ms = mm_rpc_stats(net.rpc, i, &name)) != NULL; i++)
		rc = mm_buf_printf(out, "%s\"%s\":{\"calls\":%" PRIu64 ",\"errors\":%" PRIu64
					",\"ns_total\":%" PRIu64 "}",
				   i ? "," : "", name, ms->calls, ms->calls - ms->codes[MM_RPC_OK],
				   ms->ns_total);
	return rc ? rc : mm_buf_printf(out, "}}");
}

static int on_status(void *arg, const mm_net_req_t *req, mm_net_res_t *res)
{
	int rc = json_reply(res);

	if (rc == 0)
		rc = mm_admin_status_json(&res->body);
	if (rc)
		return rc;
	/* The core's document is one object: the server's member goes before
	 * its closing brace. */
	res->body.len--;
	rc = server_json(&res->body);
	return rc ? rc : mm_buf_printf(&res->body, "}");
}

/* The value of parameter name in a query string, percent-decoded into out
 * (size n); 1 if present. */
static int query_param(const char *q, const char *name, char *out, size_t n)
{
	size_t len = strlen(name);

	while (q && *q) {
		const char *amp = strchr(q, '&');
		const char *end = amp ? amp : q + strlen(q);

		if ((size_t)(end - q) > len && strncmp(q, name, len) == 0 && q[len] == '=') {
			size_t o = 0;

			for (const char *p = q + len + 1; p < end && o + 1 < n; p++) {
				if (*p == '%' && end - p > 2) {
					char hex[3] = {p[1], p[2], 0};

					out[o++] = (char)strtol(hex, NULL, 16);
					p += 2;
				} else {
					out[o++] = *p == '+' ? ' ' : *p;
				}
			}
			out[o] = '\0';
			return 1;
		}
		q = amp ? amp + 1 : NULL;
	}
	return 0;
}

static int on_dead_letters(void *arg, const mm_net_req_t *req, mm_net_res_t *res)
{
	char pipeline[256], lines[16];
	long n = 20;
	int rc = json_reply(res);

	if (rc)
		return rc;
	if (!query_param(req->query, "pipeline", pipeline, sizeof(pipeline))) {
		res->status = 400;
		return mm_buf_printf(&res->body, "{\"code\":\"invalid_argument\",\"message\":"
						 "\"the pipeline parameter is required\"}");
	}
	if (query_param(req->query, "lines", lines, sizeof(lines)))
		n = strtol(lines, NULL, 10);
	if (n < 1 || n > 1000)
		n = n < 1 ? 1 : 1000;
	rc = mm_admin_dead_letter_tail(pipeline, (size_t)n, &res->body);
	if (rc == MM_ENOTFOUND) {
		res->status = 404;
		res->body.len = 0;
		rc = mm_buf_printf(&res->body, "{\"code\":\"not_found\",\"message\":\"no pipeline by that "
					       "name writes dead letters to a file, or from this process\"}");
	}
	return rc;
}

int mm_admin_routes(mm_server_t *srv, const mm_rpc_t *rpc, mm_store_t *const *stores, size_t n)
{
	static const struct {
		const char *path;
		unsigned flags;
		mm_route_fn fn;
	} routes[] = {
		{"/metrics", 0, on_metrics},
		{"/healthz", MM_ROUTE_PUBLIC, on_healthz},
		{"/readyz", 0, on_readyz},
		{"/", MM_ROUTE_PUBLIC, on_page},
		{"/api/status", 0, on_status},
		{"/api/dead-letters", 0, on_dead_letters},
	};
	int rc;

	mm_metrics_t *m = mm_metrics_global();

	for (size_t i = 0; i < net.nstores; i++)
		mm_metrics_remove_store(m, net.stores[i]);
	net.nstores = 0;
	net.srv = srv;
	net.rpc = rpc;
	m->render_more = srv ? render_server : NULL;
	m->render_more_arg = NULL;
	for (size_t i = 0; i < n && i < sizeof(net.stores) / sizeof(net.stores[0]); i++) {
		if ((rc = mm_metrics_add_store(m, stores[i])))
			return rc;
		net.stores[net.nstores++] = stores[i];
	}
	for (size_t i = 0; srv != NULL && i < sizeof(routes) / sizeof(routes[0]); i++)
		if ((rc = mm_server_route(srv, routes[i].path, routes[i].flags, routes[i].fn, NULL)))
			return rc;
	return 0;
}
