/*
 * serve_lua.c: core.serve(cfg), the body of `murmur serve` once its Lua
 * side (lua/murmur/serve.lua) has read the options and chosen the stores.
 *
 * It owns everything it runs: a private libuv loop, the stores opened
 * read-only on it (LMDB beside a writer, DynamoDB, Valkey read-through), the
 * server, and SIGINT/SIGTERM handlers that stop it gracefully: no new
 * connections, reads in flight complete, stores closed, the loop run empty
 * and closed. It blocks until then; the loop thread is Lua's, and no Lua
 * runs while it serves (queries are answered in C, see engine/net/query.h).
 *
 *   core.serve{ listen = "127.0.0.1:8080", token = "...", cors = {"https://x"},
 *               request_timeout_ms = 10000, idle_timeout_ms = 60000,
 *               max_connections = 1024, max_body = 4194304,
 *               stores = { { kind = "lmdb", options = { path = ".../store" } }, ... } }
 *   -> true | nil, "ENAME: message", "ENAME"
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>

#include "../lib/error.h"
#include "../net/serve.h"
#include "core_lua.h"
#include "serve_lua.h"

#define MAX_STORES 64
#define MAX_CORS 32

typedef struct serve_run {
	uv_signal_t sig[2];
	mm_serve_t *s;
	int stopping;
	int signum;
} serve_run_t;

static void on_signal(uv_signal_t *h, int signum)
{
	serve_run_t *r = h->data;

	if (r->stopping)
		return;
	r->stopping = 1;
	r->signum = signum;
	fprintf(stderr, "murmur serve: %s: stopping\n", signum == SIGINT ? "SIGINT" : "SIGTERM");
	for (int i = 0; i < 2; i++)
		uv_close((uv_handle_t *)&r->sig[i], NULL);
	mm_serve_stop(r->s, NULL, NULL);
}

static uint64_t opt_u64(lua_State *L, int t, const char *key)
{
	uint64_t v;

	lua_getfield(L, t, key);
	v = lua_isnumber(L, -1) ? (uint64_t)lua_tonumber(L, -1) : 0;
	lua_pop(L, 1);
	return v;
}

static const char *opt_str(lua_State *L, int t, const char *key)
{
	const char *v;

	lua_getfield(L, t, key);
	v = lua_tostring(L, -1); /* kept alive by the table */
	lua_pop(L, 1);
	return v;
}

void mm_lua_serve_options(lua_State *L, int t, mm_server_options_t *opt, const char **cors,
			  size_t max_cors)
{
	memset(opt, 0, sizeof(*opt));
	opt->listen = opt_str(L, t, "listen");
	opt->token = opt_str(L, t, "token");
	opt->request_timeout_ms = opt_u64(L, t, "request_timeout_ms");
	opt->idle_timeout_ms = opt_u64(L, t, "idle_timeout_ms");
	opt->max_connections = (size_t)opt_u64(L, t, "max_connections");
	opt->max_body_bytes = (size_t)opt_u64(L, t, "max_body");
	lua_getfield(L, t, "cors");
	if (lua_istable(L, -1))
		for (size_t i = 1; i <= lua_objlen(L, -1) && opt->ncors < max_cors; i++) {
			lua_rawgeti(L, -1, (int)i);
			cors[opt->ncors++] = luaL_checkstring(L, -1);
			lua_pop(L, 1);
		}
	lua_pop(L, 1);
	opt->cors_origins = cors;
}

uint64_t mm_lua_serve_cache_ms(lua_State *L, int t)
{
	return opt_u64(L, t, "result_cache_ms");
}

static int l_serve(lua_State *L)
{
	mm_server_options_t opt;
	const char *cors[MAX_CORS], *kinds[MAX_STORES];
	mm_kv_t kv[MAX_STORES][32];
	size_t nkv[MAX_STORES], nstores, nopen = 0;
	mm_store_t *stores[MAX_STORES];
	serve_run_t run = {0};
	uv_loop_t loop;
	char addr[80];
	int rc, nret;

	luaL_checktype(L, 1, LUA_TTABLE);
	mm_lua_serve_options(L, 1, &opt, cors, MAX_CORS);
	/* Every option is read (and may raise) before the loop exists. */
	lua_getfield(L, 1, "stores");
	luaL_checktype(L, -1, LUA_TTABLE);
	nstores = lua_objlen(L, -1);
	if (nstores == 0 || nstores > MAX_STORES)
		return luaL_error(L, "serve: 1 to %d stores", MAX_STORES);
	for (size_t i = 0; i < nstores; i++) {
		lua_rawgeti(L, -1, (int)i + 1);
		luaL_checktype(L, -1, LUA_TTABLE);
		kinds[i] = opt_str(L, lua_gettop(L), "kind");
		if (kinds[i] == NULL)
			return luaL_error(L, "serve: a store without kind");
		lua_getfield(L, -1, "options");
		mm_lua_read_kv(L, lua_gettop(L), kv[i], 32, &nkv[i]);
		lua_pop(L, 2);
	}
	if (uv_loop_init(&loop) != 0)
		return mm_lua_push_diag(L, mm_diag_set(MM_ENOMEM, "cannot create the event loop"));
	for (; nopen < nstores; nopen++) {
		rc = mm_store_open(kinds[nopen], &loop, kv[nopen], nkv[nopen], 1, &stores[nopen]);
		if (rc)
			goto fail;
	}
	/* The stores' start-up checks run on this loop, which has nothing else
	 * to do until they pass: the server listens only then. */
	for (size_t i = 0; i < nstores; i++)
		if ((rc = mm_store_start_wait(stores[i])) != 0)
			goto fail;
	rc = mm_serve_start(&loop, &opt, stores, nstores, &run.s);
	if (rc == 0 && (rc = mm_query_cache(run.s->query, mm_lua_serve_cache_ms(L, 1))) != 0)
		mm_serve_stop(run.s, NULL, NULL);
	if (rc)
		goto fail;
	if (mm_server_address(run.s->srv, addr, sizeof(addr)) == 0)
		fprintf(stderr, "murmur serve: listening on http://%s (%zu store%s)\n", addr, nstores,
			nstores == 1 ? "" : "s");
	for (int i = 0; i < 2; i++) {
		uv_signal_init(&loop, &run.sig[i]);
		run.sig[i].data = &run;
		uv_signal_start(&run.sig[i], on_signal, i == 0 ? SIGINT : SIGTERM);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	rc = 0;
fail:
	nret = rc ? mm_lua_push_diag(L, rc) : 0;
	for (size_t i = 0; i < nopen; i++)
		mm_store_close(stores[i]);
	uv_run(&loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&loop) != 0)
		fprintf(stderr, "murmur serve: a handle was left open at exit\n");
	if (nret)
		return nret;
	lua_pushboolean(L, 1);
	return 1;
}

void mm_lua_serve_register(lua_State *L)
{
	lua_pushcfunction(L, l_serve);
	lua_setfield(L, -2, "serve");
}
