/*
 * serve.c: assembly and orderly shutdown of the query server (serve.h).
 *
 * Stopping closes the listener and the connections first; store reads
 * already started still complete (their exchanges are orphaned and dropped),
 * so the service is freed only when its in-flight count reaches zero, which
 * an idle handle watches on each loop iteration until then.
 */
#include <stdlib.h>

#include "murmur/v1/query.pb-c.h"

#include "../lib/error.h"
#include "admin.h"
#include "serve.h"

int mm_serve_start(uv_loop_t *loop, const mm_server_options_t *opt, mm_store_t *const *stores,
		   size_t n, mm_serve_t **out)
{
	mm_serve_t *s = calloc(1, sizeof(*s));
	int rc;

	*out = NULL;
	if (s == NULL)
		return mm_diag_set(MM_ENOMEM, "serve: out of memory");
	s->loop = loop;
	rc = mm_query_open(loop, stores, n, &s->query);
	if (rc == 0)
		rc = mm_server_open(loop, opt, &s->srv);
	if (rc == 0)
		rc = mm_rpc_open(s->srv, &murmur__v1__query_service__descriptor, mm_query_call,
				 s->query, &s->rpc);
	/* /metrics, /healthz, /readyz, the admin page and its JSON. */
	if (rc == 0)
		rc = mm_admin_routes(s->srv, s->rpc, stores, n);
	if (rc) {
		mm_admin_routes(NULL, NULL, NULL, 0);
		if (s->srv)
			mm_server_close(s->srv, NULL, NULL);
		mm_query_close(s->query);
		free(s);
		return rc;
	}
	*out = s;
	return 0;
}

static void on_drain_closed(uv_handle_t *h)
{
	mm_serve_t *s = h->data;
	void (*done)(void *) = s->done;
	void *arg = s->done_arg;

	mm_admin_routes(NULL, NULL, NULL, 0);
	mm_rpc_close(s->rpc);
	mm_query_close(s->query);
	free(s);
	if (done)
		done(arg);
}

/* An idle handle, not a check handle: it keeps the loop polling without
 * blocking, and shutdown waits only for reads already on the thread pool. */
static void on_drain(uv_idle_t *h)
{
	mm_serve_t *s = h->data;

	if (mm_query_inflight(s->query) > 0 || s->srv != NULL)
		return;
	uv_idle_stop(h);
	uv_close((uv_handle_t *)h, on_drain_closed);
}

static void on_server_closed(void *arg)
{
	mm_serve_t *s = arg;

	s->srv = NULL;
}

void mm_serve_stop(mm_serve_t *s, void (*done)(void *), void *arg)
{
	s->done = done;
	s->done_arg = arg;
	mm_server_close(s->srv, on_server_closed, s);
	uv_idle_init(s->loop, &s->drain);
	s->drain.data = s;
	uv_idle_start(&s->drain, on_drain);
}
