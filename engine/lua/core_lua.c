/*
 * core_lua.c: the `murmur.core` module, murmur's classic Lua/C API tier.
 *
 * Lifecycle and asynchronous objects are userdata with metatables (luv
 * style). This file holds the engine (loop + store + pipelines + sources),
 * the Lua-driven handles it owns (timers, watchers, signals) and the module's
 * registration; the Lua-driven handles are in handle_lua.c and e:stats() in
 * stats_lua.c (core_lua_impl.h is what the three share), stores opened for
 * queries are in store_lua.c, monoid states
 * in state_lua.c, the plain functions (time, logging, files, processes) in
 * sys_lua.c, and core_lua.h is what they share. The per-record calls
 * of the Lua path do not come through here: lua/murmur/runtime.lua reaches
 * the mm_pipe_* functions through the FFI (see lua/murmur/cdef.lua).
 *
 * Failures are returned as `nil, "ENAME: message", "ENAME"`; raising is kept
 * for programmer errors (wrong argument types).
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#include "../core/engine.h"
#include "../core/metrics.h"
#include "../lib/error.h"
#include "../lib/log.h"
#include "core_lua.h"
#include "core_lua_impl.h"
#include "explain_lua.h"
#include "metrics_lua.h"
#include "serve_lua.h"
#include "../net/serve.h"
#include "funnel.h"
#include "isolate_lua.h"
#include "json_lua.h"

#define MM_VERSION "0.1.0"
/* Version of the FFI declarations in lua/murmur/cdef.lua (bump together). */
#define MM_FFI_ABI 4

int mm_lua_push_fail(lua_State *L, int err, const char *detail)
{
	lua_pushnil(L);
	lua_pushfstring(L, "%s: %s", mm_err_name(err), detail && *detail ? detail : mm_strerror(err));
	lua_pushstring(L, mm_err_name(err));
	return 3;
}

int mm_lua_push_diag(lua_State *L, int err)
{
	return mm_lua_push_fail(L, err, mm_diag_code() == err ? mm_diag_msg() : mm_strerror(err));
}

/* ---- helpers reading option tables ---- */

static const char *opt_string(lua_State *L, int t, const char *k, const char *def)
{
	const char *v;

	lua_getfield(L, t, k);
	v = lua_isnil(L, -1) ? def : luaL_checkstring(L, -1);
	lua_pop(L, 1);
	return v;
}

static char *opt_strdup(lua_State *L, int t, const char *k)
{
	const char *v = opt_string(L, t, k, NULL);

	return v ? strdup(v) : NULL;
}

static double opt_number(lua_State *L, int t, const char *k, double def)
{
	double v;

	lua_getfield(L, t, k);
	v = lua_isnil(L, -1) ? def : luaL_checknumber(L, -1);
	lua_pop(L, 1);
	return v;
}

static int part_kind(const char *s)
{
	static const char *const names[] = {"none", "field", "const", "lua", "source"};

	for (int i = 0; i < 5; i++)
		if (s && strcmp(s, names[i]) == 0)
			return i;
	return MM_PART_NONE;
}

/* Reads {key = value, ...} (string keys, scalar values) into a kv array. The
 * strings are kept alive by the table, which the caller keeps on the stack. */
int mm_lua_read_kv(lua_State *L, int t, mm_kv_t *kv, size_t max, size_t *n)
{
	*n = 0;
	if (lua_isnoneornil(L, t))
		return 0;
	luaL_checktype(L, t, LUA_TTABLE);
	lua_pushnil(L);
	while (lua_next(L, t)) {
		if (lua_type(L, -2) != LUA_TSTRING || *n == max) {
			lua_pop(L, 2);
			return luaL_error(L, "options must be a table of string keys (at most %d)",
					  (int)max);
		}
		if (lua_type(L, -1) == LUA_TBOOLEAN) {
			lua_pushstring(L, lua_toboolean(L, -1) ? "true" : "false");
			lua_replace(L, -2);
			lua_pushvalue(L, -2);
			lua_pushvalue(L, -2);
			lua_settable(L, t); /* keep the string alive in the table */
		}
		kv[*n].key = lua_tostring(L, -2);
		kv[*n].value = lua_tostring(L, -1);
		if (kv[*n].value == NULL)
			return luaL_error(L, "option '%s' must be a string, number or boolean",
					  kv[*n].key);
		(*n)++;
		lua_pop(L, 1);
	}
	return 0;
}

/* Reads a monoid spec {name=..., k=..., capacity=..., fpr=..., max_size=..., float=...}. */
int mm_lua_read_monoid(lua_State *L, int t, mm_monoid_t *m)
{
	mm_monoid_params_t p = {0};
	const char *name;

	luaL_checktype(L, t, LUA_TTABLE);
	name = opt_string(L, t, "name", NULL);
	if (name == NULL)
		return mm_diag_set(MM_EINVAL, "monoid spec has no name");
	lua_getfield(L, t, "float");
	p.is_float = lua_toboolean(L, -1);
	lua_pop(L, 1);
	p.k = (uint32_t)opt_number(L, t, "k", 0);
	p.max_size = (uint32_t)opt_number(L, t, "max_size", 0);
	p.capacity = (uint64_t)opt_number(L, t, "capacity", 0);
	p.fpr = opt_number(L, t, "fpr", 0);
	return mm_monoid_init(m, name, &p);
}

/* ---- engine ---- */

static int l_engine_open(lua_State *L)
{
	const char *backend;
	mm_kv_t kv[32];
	size_t nkv;
	mm_store_t *st = NULL;
	lua_engine_t *e;
	int rc;

	luaL_checktype(L, 1, LUA_TTABLE);
	backend = opt_string(L, 1, "store", "lmdb");
	lua_getfield(L, 1, "store_options");
	mm_lua_read_kv(L, lua_gettop(L), kv, 32, &nkv);
	e = lua_newuserdata(L, sizeof(*e));
	memset(e, 0, sizeof(*e));
	e->batch_ref = LUA_NOREF;
	e->merged_ref = LUA_NOREF;
	e->L = L;
	luaL_getmetatable(L, ENGINE_MT);
	lua_setmetatable(L, -2);
	e->loop = malloc(sizeof(*e->loop));
	if (e->loop == NULL || uv_loop_init(e->loop) != 0) {
		free(e->loop);
		e->loop = NULL;
		return mm_lua_push_fail(L, MM_ENOMEM, "cannot create the event loop");
	}
	rc = mm_store_open(backend, e->loop, kv, nkv, 0, &st);
	if (rc == 0)
		rc = mm_engine_new(st, e->loop, &e->ctx);
	if (rc == 0) {
		mm_engine_on_stop(e->ctx, mm_lua_engine_close_handles, e);
		/* /metrics renders the engine this process runs. */
		mm_metrics_global()->engine = e->ctx;
	}
	if (rc) {
		if (st)
			mm_store_close(st);
		return mm_lua_push_diag(L, rc);
	}
	return 1;
}

/*
 * Reads a pipeline definition table (built by lua/murmur/runner.lua from a
 * validated spec) at index 2 into cfg. Returns 0, or pushes the luv-style
 * failure triple and returns its count (cfg is then freed).
 */
static int read_pipeline_config(lua_State *L, lua_engine_t *e, mm_pipeline_config_t *c)
{
	mm_pipeline_config_t cfg;
	int rc;

	luaL_checktype(L, 2, LUA_TTABLE);
	memset(&cfg, 0, sizeof(cfg));
	lua_getfield(L, 2, "monoid");
	rc = mm_lua_read_monoid(L, lua_gettop(L), &cfg.monoid);
	lua_pop(L, 1);
	if (rc)
		return mm_lua_push_diag(L, rc);
	cfg.name = opt_strdup(L, 2, "name");
	cfg.key_kind = part_kind(opt_string(L, 2, "key_kind", "field"));
	lua_getfield(L, 2, "keys");
	if (lua_istable(L, -1)) {
		int n = (int)lua_objlen(L, -1);

		for (int i = 1; i <= n && cfg.nkeys < MM_MAX_KEYS; i++) {
			lua_rawgeti(L, -1, i);
			cfg.keys[cfg.nkeys++] = strdup(luaL_checkstring(L, -1));
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	cfg.value_kind = part_kind(opt_string(L, 2, "value_kind", "none"));
	cfg.value_field = opt_strdup(L, 2, "value_field");
	cfg.value_const = opt_number(L, 2, "value_const", 1);
	cfg.time_kind = part_kind(opt_string(L, 2, "time_kind", "none"));
	cfg.time_field = opt_strdup(L, 2, "time_field");
	cfg.time_unit = opt_string(L, 2, "time_unit", "a")[0];
	cfg.gran_ms = (int64_t)opt_number(L, 2, "granularity_ms", 0);
	cfg.retention_ms = (int64_t)opt_number(L, 2, "retention_ms", 0);
	cfg.id_kind = part_kind(opt_string(L, 2, "id_kind", "none"));
	cfg.id_field = opt_strdup(L, 2, "id_field");
	cfg.dedup_ttl_ms = (int64_t)opt_number(L, 2, "dedup_ttl_ms", 86400000.0);
	cfg.max_record = (uint64_t)opt_number(L, 2, "max_record", 1048576);
	cfg.flush_events = (uint64_t)opt_number(L, 2, "flush_events", 100000);
	cfg.flush_keys = (uint64_t)opt_number(L, 2, "flush_keys", 50000);
	cfg.flush_interval_ms = (int64_t)opt_number(L, 2, "flush_interval_ms", 1000);
	{
		const char *backend = opt_string(L, 2, "dead_letter_type", NULL);

		if (backend) {
			const mm_dead_letter_vtable_t *dvt = mm_dead_letter_find(backend);
			mm_kv_t kv[32];
			size_t nkv;

			lua_getfield(L, 2, "dead_letter_options");
			mm_lua_read_kv(L, lua_gettop(L), kv, 32, &nkv);
			rc = dvt ? dvt->open(e->loop, kv, nkv, &cfg.dlq)
				 : mm_diag_set(MM_ENOTFOUND, "unknown dead-letter type '%s'", backend);
			lua_pop(L, 1);
			if (rc) {
				mm_pipeline_config_free(&cfg);
				return mm_lua_push_diag(L, rc);
			}
		}
	}
	lua_getfield(L, 2, "on_merge");
	cfg.on_merge = lua_toboolean(L, -1);
	lua_pop(L, 1);
	cfg.compat = opt_strdup(L, 2, "compat");
	cfg.meta = opt_strdup(L, 2, "meta");
	cfg.where = opt_strdup(L, 2, "where");
	if (cfg.name == NULL || cfg.compat == NULL || cfg.nkeys == 0) {
		mm_pipeline_config_free(&cfg);
		return luaL_error(L, "add_pipeline: name, compat and keys are required");
	}
	*c = cfg;
	return 0;
}

int mm_lua_read_pipeline_config(lua_State *L, mm_pipeline_config_t *c)
{
	return read_pipeline_config(L, NULL, c);
}

static int l_engine_add_pipeline(lua_State *L)
{
	lua_engine_t *e = check_engine(L);
	mm_pipeline_config_t cfg;
	mm_pipeline_t *p;
	int rc, n = read_pipeline_config(L, e, &cfg);

	if (n)
		return n;
	rc = mm_engine_add_pipeline(e->ctx, &cfg, &p);
	if (rc)
		return mm_lua_push_diag(L, rc);
	lua_pushlightuserdata(L, p);
	return 1;
}

static int l_engine_attach(lua_State *L)
{
	lua_engine_t *e = check_engine(L);
	mm_pipeline_t *p = lua_touserdata(L, 2);
	const char *backend = luaL_checkstring(L, 3);
	mm_kv_t kv[32];
	size_t nkv;
	int rc;

	luaL_checktype(L, 2, LUA_TLIGHTUSERDATA);
	mm_lua_read_kv(L, 4, kv, 32, &nkv);
	rc = mm_engine_attach_source(e->ctx, backend, kv, nkv, p);
	if (rc)
		return mm_lua_push_diag(L, rc);
	lua_pushboolean(L, 1);
	return 1;
}

/* The Lua batch handler: one call per batch through the funnel. */
static void engine_lua_batch(void *ud, mm_batch_t *b, mm_pipeline_t **pipes, int n)
{
	lua_engine_t *e = ud;
	lua_State *L = e->L;

	if (!lua_checkstack(L, n + 3)) {
		/* Thousands of Lua-path pipelines on one source: refuse the batch
		 * visibly rather than drop it. */
		for (int i = 0; i < n; i++)
			for (size_t r = 0; r < b->n; r++)
				mm_pipeline_reject(pipes[i], &b->recs[r], MM_REJ_LUA, MM_ENOMEM,
						   "too many Lua-path pipelines on one source for the Lua stack");
		return;
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->batch_ref);
	lua_pushinteger(L, (lua_Integer)b->n);
	for (int i = 0; i < n; i++)
		lua_pushlightuserdata(L, pipes[i]);
	if (mm_lua_call(L, n + 1, 0, "batch handler") != 0) {
		/* The handler itself failed (not a user function, those are caught
		 * per record): reject every record so none is silently lost. An
		 * add it staged (mm_pipe_stage) names a string it no longer
		 * keeps, and its record is rejected here with the others. */
		for (int i = 0; i < n; i++)
			pipes[i]->staged.on = 0;
		for (int i = 0; i < n; i++)
			for (size_t r = 0; r < b->n; r++)
				mm_pipeline_reject(pipes[i], &b->recs[r], MM_REJ_LUA, MM_ELUA,
						   mm_lua_last_error());
	}
}

static int l_engine_on_batch(lua_State *L)
{
	lua_engine_t *e = check_engine(L);

	luaL_checktype(L, 2, LUA_TFUNCTION);
	luaL_unref(L, LUA_REGISTRYINDEX, e->batch_ref);
	lua_pushvalue(L, 2);
	e->batch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	mm_engine_set_lua_batch(e->ctx, engine_lua_batch, e);
	return 0;
}

static int l_engine_run(lua_State *L)
{
	lua_engine_t *e = check_engine(L);
	int once = lua_toboolean(L, 2);

	e->L = L;
	lua_pushinteger(L, mm_engine_run(e->ctx, once));
	return 1;
}

/* e:wait_store() -> true or nil, msg, ename: runs the loop until the
 * store's start-up checks are done (mm_engine_wait_store), before run(). */
static int l_engine_wait_store(lua_State *L)
{
	lua_engine_t *e = check_engine(L);
	int rc = mm_engine_wait_store(e->ctx);

	if (rc)
		return mm_lua_push_diag(L, rc);
	lua_pushboolean(L, 1);
	return 1;
}

/* e:stop([code]): graceful stop; run() then returns code if given. */
static int l_engine_stop(lua_State *L)
{
	lua_engine_t *e = check_engine(L);

	if (lua_isnumber(L, 2))
		mm_engine_fail(e->ctx, (int)lua_tointeger(L, 2));
	else
		mm_engine_stop(e->ctx);
	return 0;
}

/* One funnel call per hooked pipeline and flush: fn(ptr, {{entity, bucket, delta_json}, ...}). */
static void engine_lua_merged(void *ud, mm_pipeline_t *p, const mm_delta_t *const *deltas, size_t n)
{
	lua_engine_t *e = ud;
	lua_State *L = e->L;
	mm_buf_t b = {0};

	if (!lua_checkstack(L, 8))
		return;
	lua_rawgeti(L, LUA_REGISTRYINDEX, e->merged_ref);
	lua_pushlightuserdata(L, p);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		const mm_delta_t *d = deltas[i];

		lua_createtable(L, 3, 0);
		lua_pushlstring(L, d->key.entity, d->key.len);
		lua_rawseti(L, -2, 1);
		lua_pushnumber(L, (lua_Number)d->key.bucket);
		lua_rawseti(L, -2, 2);
		b.len = 0;
		if (p->cfg.monoid.vt->to_json(&p->cfg.monoid, d->state, &b) == 0)
			lua_pushlstring(L, (const char *)b.p, b.len);
		else
			lua_pushnil(L);
		lua_rawseti(L, -2, 3);
		lua_rawseti(L, -2, (int)i + 1);
	}
	mm_buf_free(&b);
	mm_lua_call(L, 2, 0, "on-merge hooks");
}

static int l_engine_on_merged(lua_State *L)
{
	lua_engine_t *e = check_engine(L);

	luaL_checktype(L, 2, LUA_TFUNCTION);
	luaL_unref(L, LUA_REGISTRYINDEX, e->merged_ref);
	lua_pushvalue(L, 2);
	e->merged_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	mm_engine_set_merged(e->ctx, engine_lua_merged, e);
	return 0;
}

/* e:listen(cfg) -> "HOST:PORT" | nil, err: the query server (murmur serve's,
 * cfg as core.serve's without stores) on the engine's loop and store. */
static int l_engine_listen(lua_State *L)
{
	lua_engine_t *e = check_engine(L);
	mm_server_options_t opt;
	const char *cors[32];
	char addr[80];
	int rc;

	luaL_checktype(L, 2, LUA_TTABLE);
	if (e->serve)
		return luaL_error(L, "the engine already listens");
	mm_lua_serve_options(L, 2, &opt, cors, 32);
	rc = mm_serve_start(e->loop, &opt, &e->ctx->st, 1, &e->serve);
	if (rc == 0 && (rc = mm_query_cache(e->serve->query, mm_lua_serve_cache_ms(L, 2))) != 0) {
		mm_serve_stop(e->serve, NULL, NULL);
		e->serve = NULL;
	}
	if (rc)
		return mm_lua_push_diag(L, rc);
	if (mm_server_address(e->serve->srv, addr, sizeof(addr)) != 0)
		addr[0] = '\0';
	lua_pushstring(L, addr);
	return 1;
}

/* Keeps a reference to the engine's flush callback until it runs. Every
 * Lua callback of an engine call starts with these two members. */
typedef struct flush_wait {
	lua_engine_t *e;
	int ref;
} flush_wait_t;

/* Allocates size bytes (a struct beginning like flush_wait_t) holding a
 * reference to the function at idx; NULL when out of memory. */
static void *lua_wait_new(lua_State *L, lua_engine_t *e, int idx, size_t size)
{
	flush_wait_t *w;

	luaL_checktype(L, idx, LUA_TFUNCTION);
	if ((w = calloc(1, size)) == NULL)
		return NULL;
	w->e = e;
	lua_pushvalue(L, idx);
	w->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return w;
}

/* The call was refused (rc): drops the callback and pushes the failure. */
static int lua_wait_refused(lua_State *L, void *wait, int rc)
{
	flush_wait_t *w = wait;

	luaL_unref(L, LUA_REGISTRYINDEX, w->ref);
	free(w);
	return mm_lua_push_diag(L, rc);
}

static void on_lua_flush(void *arg, int status)
{
	flush_wait_t *w = arg;
	lua_State *L = w->e->L;

	lua_rawgeti(L, LUA_REGISTRYINDEX, w->ref);
	luaL_unref(L, LUA_REGISTRYINDEX, w->ref);
	lua_pushinteger(L, status);
	mm_lua_call(L, 1, 0, "flush callback");
	free(w);
}

/* e:flush(fn(status)): fn runs once everything accepted so far is durable. */
static int l_engine_flush(lua_State *L)
{
	lua_engine_t *e = check_engine(L);
	flush_wait_t *w = lua_wait_new(L, e, 2, sizeof(*w));
	int rc;

	if (w == NULL)
		return mm_lua_push_fail(L, MM_ENOMEM, "out of memory");
	if ((rc = mm_engine_flush(e->ctx, on_lua_flush, w)) != 0)
		return lua_wait_refused(L, w, rc);
	lua_pushboolean(L, 1);
	return 1;
}

static int l_engine_hold(lua_State *L)
{
	mm_engine_hold(check_engine(L)->ctx, lua_toboolean(L, 2));
	return 0;
}

/* e:update_pipeline(ptr, cfg) -> true | nil, err, code */
static int l_engine_update_pipeline(lua_State *L)
{
	lua_engine_t *e = check_engine(L);
	mm_pipeline_t *p = lua_touserdata(L, 2);
	mm_pipeline_config_t cfg;
	int rc, n;

	luaL_checktype(L, 2, LUA_TLIGHTUSERDATA);
	lua_remove(L, 2); /* the definition table moves to index 2 */
	n = read_pipeline_config(L, e, &cfg);
	if (n)
		return n;
	rc = mm_engine_update_pipeline(e->ctx, p, &cfg);
	if (rc)
		return mm_lua_push_diag(L, rc);
	lua_pushboolean(L, 1);
	return 1;
}

static int l_engine_remove_pipeline(lua_State *L)
{
	lua_engine_t *e = check_engine(L);
	int rc;

	luaL_checktype(L, 2, LUA_TLIGHTUSERDATA);
	rc = mm_engine_remove_pipeline(e->ctx, lua_touserdata(L, 2));
	if (rc)
		return mm_lua_push_diag(L, rc);
	lua_pushboolean(L, 1);
	return 1;
}

/* A descriptor read for Lua: the callback's reference (as flush_wait_t)
 * and the answer. */
typedef struct meta_wait {
	lua_engine_t *e;
	int ref;
	mm_buf_t out;
} meta_wait_t;

static void on_lua_meta(void *arg, int status, const char *detail)
{
	meta_wait_t *w = arg;
	lua_State *L = w->e->L;

	lua_rawgeti(L, LUA_REGISTRYINDEX, w->ref);
	luaL_unref(L, LUA_REGISTRYINDEX, w->ref);
	if (status == 0) {
		lua_pushlstring(L, (const char *)w->out.p, w->out.len);
		lua_pushnil(L);
	} else {
		lua_pushnil(L);
		if (status == MM_ENOTFOUND)
			lua_pushnil(L);
		else
			lua_pushfstring(L, "%s: %s", mm_err_name(status), detail ? detail : "");
	}
	mm_buf_free(&w->out);
	free(w);
	mm_lua_call(L, 2, 0, "meta callback");
}

/* e:meta(name, fn(bytes|nil, err|nil)): reads the stored descriptor of a
 * pipeline through the store's callback (nil, nil: none stored). */
static int l_engine_meta(lua_State *L)
{
	lua_engine_t *e = check_engine(L);
	const char *name = luaL_checkstring(L, 2);
	meta_wait_t *w = lua_wait_new(L, e, 3, sizeof(*w));
	int rc;

	if (w == NULL)
		return mm_lua_push_fail(L, MM_ENOMEM, "out of memory");
	if ((rc = mm_store_get_meta(e->ctx->st, name, &w->out, on_lua_meta, w)) != 0)
		return lua_wait_refused(L, w, rc);
	lua_pushboolean(L, 1);
	return 1;
}

/* e:probe(argv, set_env, unset_env, limits, fn): core.probe on the thread
 * pool of the engine's loop (isolate_lua.c). */
static int l_engine_probe(lua_State *L)
{
	lua_engine_t *e = check_engine(L);

	lua_remove(L, 1);
	return mm_lua_probe_async(L, e->loop);
}

/*
 * e:write_status(path, s [, sync]) -> true | nil, err, code: replaces the
 * file at path with s (status.json) on the thread pool, so that a slow disk
 * never stalls the loop (filewriter.h). The result is that of the last write
 * that finished, which the caller reports once per change; with sync, s is
 * written now and the result is its own (the last status, after run()).
 */
static int l_engine_write_status(lua_State *L)
{
	lua_engine_t *e = check_engine(L);
	const char *path = luaL_checkstring(L, 2);
	size_t n;
	const char *s = luaL_checklstring(L, 3, &n);
	char detail[256];
	int rc;

	if (e->status && strcmp(mm_fwriter_path(e->status), path) != 0) {
		mm_fwriter_close(e->status);
		e->status = NULL;
	}
	if (e->status == NULL && (rc = mm_fwriter_new(e->loop, path, &e->status)) != 0)
		return mm_lua_push_diag(L, rc);
	rc = lua_toboolean(L, 4) ? mm_fwriter_put_sync(e->status, s, n) : mm_fwriter_put(e->status, s, n);
	if (rc != 0)
		return mm_lua_push_diag(L, rc);
	if ((rc = mm_fwriter_result(e->status, detail, sizeof(detail))) != 0)
		return mm_lua_push_fail(L, rc, detail);
	lua_pushboolean(L, 1);
	return 1;
}

static int l_engine_close_idle_sources(lua_State *L)
{
	mm_engine_close_idle_sources(check_engine(L)->ctx);
	return 0;
}

static int l_engine_close(lua_State *L)
{
	lua_engine_t *e = luaL_checkudata(L, 1, ENGINE_MT);

	mm_lua_engine_close_handles(e);
	/* A write in flight frees the writer when it ends, in the run below. */
	mm_fwriter_close(e->status);
	e->status = NULL;
	if (e->ctx) {
		if (mm_metrics_global()->engine == e->ctx)
			mm_metrics_global()->engine = NULL;
		mm_engine_free(e->ctx);
		e->ctx = NULL;
	}
	if (e->loop) {
		uv_run(e->loop, UV_RUN_DEFAULT);
		if (uv_loop_close(e->loop) != 0)
			mm_log(MM_LOG_WARN, "engine", "event loop closed with handles still open");
		free(e->loop);
		e->loop = NULL;
	}
	luaL_unref(L, LUA_REGISTRYINDEX, e->batch_ref);
	luaL_unref(L, LUA_REGISTRYINDEX, e->merged_ref);
	e->batch_ref = e->merged_ref = LUA_NOREF;
	return 0;
}

void mm_lua_new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc)
{
	luaL_newmetatable(L, name);
	lua_newtable(L);
	luaL_register(L, NULL, methods);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, gc);
	lua_setfield(L, -2, "__gc");
	lua_pop(L, 1);
}

int luaopen_murmur_core(lua_State *L)
{
	static const luaL_Reg engine_methods[] = {
		{"add_pipeline", l_engine_add_pipeline},
		{"attach", l_engine_attach},
		{"on_batch", l_engine_on_batch},
		{"run", l_engine_run},
		{"wait_store", l_engine_wait_store},
		{"stop", l_engine_stop},
		{"on_merged", l_engine_on_merged},
		{"stats", mm_lua_engine_stats},
		{"close", l_engine_close},
		{"timer", mm_lua_engine_timer},
		{"watch", mm_lua_engine_watch},
		{"signal", mm_lua_engine_signal},
		{"flush", l_engine_flush},
		{"hold", l_engine_hold},
		{"update_pipeline", l_engine_update_pipeline},
		{"remove_pipeline", l_engine_remove_pipeline},
		{"close_idle_sources", l_engine_close_idle_sources},
		{"write_status", l_engine_write_status},
		{"meta", l_engine_meta},
		{"probe", l_engine_probe},
		{"listen", l_engine_listen},
		{NULL, NULL},
	};
	static const luaL_Reg funcs[] = {
		{"engine_open", l_engine_open},
		{NULL, NULL},
	};

	mm_lua_new_class(L, ENGINE_MT, engine_methods, l_engine_close);
	mm_lua_handle_register(L);
	lua_newtable(L);
	luaL_register(L, NULL, funcs);
	mm_lua_store_register(L);
	mm_lua_state_register(L);
	mm_lua_sys_register(L);
	mm_lua_json_register(L);
	mm_lua_isolate_register(L);
	mm_lua_explain_register(L);
	mm_lua_metrics_register(L, MM_VERSION);
	mm_lua_serve_register(L);
	lua_newtable(L);
#define MM__ERR_FIELD(name, retriable, msg)      \
	lua_pushinteger(L, MM_##name);            \
	lua_setfield(L, -2, #name);
	MM_ERRNO_MAP(MM__ERR_FIELD)
#undef MM__ERR_FIELD
	lua_setfield(L, -2, "errors");
	lua_pushstring(L, MM_VERSION);
	lua_setfield(L, -2, "version");
	lua_pushinteger(L, MM_FFI_ABI);
	lua_setfield(L, -2, "abi_version");
	return 1;
}

