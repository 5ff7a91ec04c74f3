/*
 * admin.h: the plain GET routes of the query server that are not the query
 * service: /metrics (metrics.h's exposition, the format chosen by Accept),
 * /healthz, /readyz, the admin page at / and its two JSON endpoints,
 * /api/status and /api/dead-letters (admin.h in engine/core).
 *
 * /healthz answers 200 whenever the loop runs (it is served by the loop) and
 * needs no token, like a liveness probe must. / is public too: the page is a
 * static asset with no data in it; everything it shows comes from the other
 * routes, which need the bearer token when one is set (the page asks for it).
 *
 * Threads: loop thread.
 */
#ifndef MM_NET_ADMIN_H
#define MM_NET_ADMIN_H

#include <stddef.h>

/* server.h's server and rpc.h's layer (repeated typedefs are allowed in C11). */
typedef struct mm_server mm_server_t;
typedef struct mm_rpc mm_rpc_t;
typedef struct mm_store mm_store_t;

/* The admin page, NUL-terminated: generated at build time from
 * engine/net/admin/index.html by tools/embed.sh. */
extern const char mm_admin_page_index[];

/* Registers the routes above on srv, and makes /metrics render srv's
 * connection counters, rpc's per-method counters and the operations of the
 * stores it reads (all borrowed: call mm_admin_routes(NULL, NULL, NULL, 0)
 * before closing them). Returns 0, or the first mm_server_route or
 * mm_metrics_add_store error. */
int mm_admin_routes(mm_server_t *srv, const mm_rpc_t *rpc, mm_store_t *const *stores, size_t n);

#endif
