/*
 * core_lua.c: the `murmur.core` module, murmur's classic Lua/C API tier.
 *
 * Lifecycle and asynchronous objects live here as userdata with metatables
 * (luv style): the engine (loop + store + pipelines + sources), stores opened
 * for queries, and monoid states for scripts and specs. The per-record calls
 * of the Lua path do not come through here: lua/murmur/runtime.lua reaches
 * the mm_pipe_* functions through the FFI (see lua/murmur/cdef.lua).
 *
 * Failures are returned as `nil, "ENAME: message", "ENAME"`; raising is kept
 * for programmer errors (wrong argument types).
 */
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/engine.h"
#include "../core/metrics.h"
#include "../core/progress.h"
#include "../core/supervisor.h"
#include "../http/http.h"
#include "../lib/error.h"
#include "../lib/file.h"
#include "../lib/hash.h"
#include "../lib/log.h"
#include "../monoid/window.h"
#include "core_lua.h"
#include "explain_lua.h"
#include "metrics_lua.h"
#include "serve_lua.h"
#include "../net/serve.h"
#include "funnel.h"
#include "isolate_lua.h"
#include "json_lua.h"

#define MM_VERSION "0.1.0"
/* Version of the FFI declarations in lua/murmur/cdef.lua (bump together). */
#define MM_FFI_ABI 1
#define ENGINE_MT "murmur.engine"
#define STORE_MT "murmur.store"
#define STATE_MT "murmur.state"

static int push_fail(lua_State *L, int err, const char *detail)
{
	lua_pushnil(L);
	lua_pushfstring(L, "%s: %s", mm_err_name(err), detail && *detail ? detail : mm_strerror(err));
	lua_pushstring(L, mm_err_name(err));
	return 3;
}

int mm_lua_push_diag(lua_State *L, int err)
{
	return push_fail(L, err, mm_diag_code() == err ? mm_diag_msg() : mm_strerror(err));
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
static int read_monoid(lua_State *L, int t, mm_monoid_t *m)
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

typedef struct lua_handle lua_handle_t;

typedef struct lua_engine {
	mm_engine_t *ctx;
	uv_loop_t *loop;
	lua_State *L;
	int batch_ref;
	int merged_ref;
	lua_handle_t *handles; /* timers, watchers, signals owned by Lua callbacks */
	mm_serve_t *serve;     /* the query server of run --listen, or NULL */
} lua_engine_t;

/*
 * A libuv handle whose callback is a Lua function (kept in the registry).
 * Handles live in a list on the engine; all are closed when the engine stops
 * (or when Lua calls h:close()), and freed in their close callback. The Lua
 * object is anchored in the registry while the handle is open and cleared
 * when it closes, so h:close() after the engine stopped is a no-op instead
 * of a use of freed memory.
 */
struct lua_handle {
	union {
		uv_handle_t h;
		uv_timer_t timer;
		uv_fs_event_t fs;
		uv_signal_t sig;
	} u;
	lua_engine_t *e;
	int ref;              /* the callback */
	int ud_ref;           /* the Lua object, anchored while open */
	lua_handle_t **ud;    /* its pointer to this handle */
	int closing;
	lua_handle_t *next;
};

/* Pushes the bytes a synchronous store read produced: the string, nil when
 * absent (MM_ENOTFOUND), or the failure triple. Frees b. */
static int push_store_bytes(lua_State *L, int rc, mm_buf_t *b)
{
	if (rc) {
		mm_buf_free(b);
		if (rc != MM_ENOTFOUND)
			return mm_lua_push_diag(L, rc);
		lua_pushnil(L);
		return 1;
	}
	lua_pushlstring(L, (const char *)b->p, b->len);
	mm_buf_free(b);
	return 1;
}

static void engine_close_handles(void *ud);

static lua_engine_t *check_engine(lua_State *L)
{
	lua_engine_t *e = luaL_checkudata(L, 1, ENGINE_MT);

	if (e->ctx == NULL)
		luaL_error(L, "engine is closed");
	return e;
}

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
		return push_fail(L, MM_ENOMEM, "cannot create the event loop");
	}
	rc = mm_store_open(backend, e->loop, kv, nkv, 0, &st);
	if (rc == 0)
		rc = mm_engine_new(st, e->loop, &e->ctx);
	if (rc == 0) {
		mm_engine_on_stop(e->ctx, engine_close_handles, e);
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
	rc = read_monoid(L, lua_gettop(L), &cfg.monoid);
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
		 * per record): reject every record so none is silently lost. */
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


/* ---- Lua-driven handles (hot reload: watchers, debounce timers, SIGHUP) ---- */

#define HANDLE_MT "murmur.handle"

static void handle_closed(uv_handle_t *h)
{
	free(h->data);
}

static void handle_close(lua_handle_t *lh)
{
	lua_engine_t *e = lh->e;
	lua_handle_t **pp;

	if (lh->closing)
		return;
	lh->closing = 1;
	for (pp = &e->handles; *pp; pp = &(*pp)->next)
		if (*pp == lh) {
			*pp = lh->next;
			break;
		}
	luaL_unref(e->L, LUA_REGISTRYINDEX, lh->ref);
	lh->ref = LUA_NOREF;
	*lh->ud = NULL;
	luaL_unref(e->L, LUA_REGISTRYINDEX, lh->ud_ref);
	lh->ud_ref = LUA_NOREF;
	uv_close(&lh->u.h, handle_closed);
}

static void engine_close_handles(void *ud)
{
	lua_engine_t *e = ud;

	while (e->handles)
		handle_close(e->handles);
	/* Reads in flight finish before the loop empties and the store closes. */
	if (e->serve)
		mm_serve_stop(e->serve, NULL, NULL);
	e->serve = NULL;
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

static lua_handle_t *handle_new(lua_State *L, lua_engine_t *e, int fn_index)
{
	lua_handle_t *lh = calloc(1, sizeof(*lh));
	lua_handle_t **ud;

	if (lh == NULL) {
		luaL_error(L, "out of memory");
		return NULL;
	}
	luaL_checktype(L, fn_index, LUA_TFUNCTION);
	lua_pushvalue(L, fn_index);
	lh->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lh->e = e;
	lh->u.h.data = lh;
	lh->next = e->handles;
	e->handles = lh;
	ud = lua_newuserdata(L, sizeof(*ud));
	*ud = lh;
	luaL_getmetatable(L, HANDLE_MT);
	lua_setmetatable(L, -2);
	lua_pushvalue(L, -1);
	lh->ud_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lh->ud = ud;
	return lh;
}

/* Calls the handle's Lua function with nargs arguments already pushed. */
static void handle_call(lua_handle_t *lh, int nargs, const char *what)
{
	lua_State *L = lh->e->L;

	lua_rawgeti(L, LUA_REGISTRYINDEX, lh->ref);
	lua_insert(L, -1 - nargs);
	mm_lua_call(L, nargs, 0, what);
}

static void on_lua_timer(uv_timer_t *t)
{
	lua_handle_t *lh = t->data;

	handle_call(lh, 0, "timer callback");
}

/* e:timer(ms, repeat_ms, fn) -> handle; repeat_ms 0 = once. */
static int l_engine_timer(lua_State *L)
{
	lua_engine_t *e = check_engine(L);
	uint64_t ms = (uint64_t)luaL_checknumber(L, 2), rep = (uint64_t)luaL_checknumber(L, 3);
	lua_handle_t *lh = handle_new(L, e, 4);

	uv_timer_init(e->loop, &lh->u.timer);
	uv_timer_start(&lh->u.timer, on_lua_timer, ms, rep);
	return 1;
}

static void on_lua_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
	lua_handle_t *lh = h->data;
	lua_State *L = lh->e->L;

	lua_pushstring(L, filename ? filename : "");
	lua_pushinteger(L, status);
	handle_call(lh, 2, "file watch callback");
}

/* e:watch(dir, fn(filename, status)) -> handle (inotify on a directory, so
 * editors' write-then-rename saves are seen too). */
static int l_engine_watch(lua_State *L)
{
	lua_engine_t *e = check_engine(L);
	const char *dir = luaL_checkstring(L, 2);
	lua_handle_t *lh = handle_new(L, e, 3);
	int rc;

	uv_fs_event_init(e->loop, &lh->u.fs);
	rc = uv_fs_event_start(&lh->u.fs, on_lua_fs_event, dir, 0);
	if (rc) {
		handle_close(lh);
		return push_fail(L, MM_EIO, uv_strerror(rc));
	}
	return 1;
}

static void on_lua_signal(uv_signal_t *h, int signum)
{
	lua_handle_t *lh = h->data;

	lua_pushinteger(lh->e->L, signum);
	handle_call(lh, 1, "signal callback");
}

/* e:signal("hup", fn(signum)) -> handle */
static int l_engine_signal(lua_State *L)
{
	static const char *const names[] = {"hup", "usr1", "usr2", NULL};
	static const int nums[] = {SIGHUP, SIGUSR1, SIGUSR2};
	lua_engine_t *e = check_engine(L);
	int which = luaL_checkoption(L, 2, NULL, names);
	lua_handle_t *lh = handle_new(L, e, 3);

	uv_signal_init(e->loop, &lh->u.sig);
	uv_signal_start(&lh->u.sig, on_lua_signal, nums[which]);
	return 1;
}

static int l_handle_close(lua_State *L)
{
	lua_handle_t **ud = luaL_checkudata(L, 1, HANDLE_MT);

	if (*ud)
		handle_close(*ud);
	return 0;
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
		return push_fail(L, MM_ENOMEM, "out of memory");
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
		return push_fail(L, MM_ENOMEM, "out of memory");
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

static int l_engine_close_idle_sources(lua_State *L)
{
	mm_engine_close_idle_sources(check_engine(L)->ctx);
	return 0;
}

#define SET_NUM(name, v)                                  \
	do {                                              \
		lua_pushnumber(L, (lua_Number)(v));       \
		lua_setfield(L, -2, name);                \
	} while (0)

/* Sets the per-command counters of a cache (cache_get, ...) into the table
 * on top; nothing for a store without MM_STORE_CAP_CACHE. */
static void push_cache_stats(lua_State *L, const mm_store_t *st)
{
	mm_store_op_stats_t os[32];
	size_t n = mm_store_op_stats(st, os, 32);

	for (size_t i = 0; i < n && i < 32; i++) {
		lua_newtable(L);
		SET_NUM("ops", os[i].ops);
		SET_NUM("errors", os[i].errors);
		SET_NUM("ms_total", os[i].ns_total / 1e6);
		SET_NUM("ms_max", os[i].ns_max / 1e6);
		lua_setfield(L, -2, os[i].name);
	}
}

/* Sets t.caps = {"atomic", ...}: the store's capability set by name. */
static void push_store_caps(lua_State *L, const mm_store_t *st)
{
	unsigned caps = mm_store_caps(st);
	int n = 0;

	lua_newtable(L);
	for (unsigned bit = 1; bit != 0 && bit <= caps; bit <<= 1)
		if ((caps & bit) && mm_store_cap_name(bit) != NULL) {
			lua_pushstring(L, mm_store_cap_name(bit));
			lua_rawseti(L, -2, ++n);
		}
	lua_setfield(L, -2, "caps");
}

static int l_engine_stats(lua_State *L)
{
	lua_engine_t *e = check_engine(L);
	mm_engine_t *ctx = e->ctx;
	const char *ops[MM_STORE_NOPS] = {"apply", "get_many", "position", "seen", "claim", "renew",
					  "meta"};

	lua_newtable(L);
	SET_NUM("batches", ctx->stats.batches);
	SET_NUM("records", ctx->stats.records);
	SET_NUM("flushes", ctx->stats.flushes);
	SET_NUM("flush_failures", ctx->stats.flush_failures);
	SET_NUM("store_writes", ctx->stats.store_writes);
	SET_NUM("pauses", ctx->stats.pauses);
	SET_NUM("purged", ctx->stats.purged);
	SET_NUM("flush_ms_max", ctx->stats.flush_ns_max / 1e6);
	SET_NUM("flush_ms_total", ctx->stats.flush_ns_total / 1e6);
	/* How late the loop ran its callbacks (looplag.h): the largest lag
	 * since start and over the recent window. */
	SET_NUM("loop_lag_ms_max", mm_loop_lag_max_ns(&ctx->lag) / 1e6);
	SET_NUM("loop_lag_ms_recent", mm_loop_lag_recent_ns(&ctx->lag, uv_hrtime()) / 1e6);
	/* The same without the time the loop thread waited for a CPU: what
	 * callbacks and blocking calls cost the loop (looplag.h). */
	SET_NUM("loop_block_ms_max", mm_loop_block_max_ns(&ctx->lag) / 1e6);
	SET_NUM("loop_block_ms_recent", mm_loop_block_recent_ns(&ctx->lag, uv_hrtime()) / 1e6);
	SET_NUM("lua_errors", mm_lua_errors());
	{
		struct rusage ru;

		getrusage(RUSAGE_SELF, &ru);
		SET_NUM("max_rss_kb", ru.ru_maxrss);
		SET_NUM("cpu_user_s", ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6);
		SET_NUM("cpu_sys_s", ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
	}
	lua_newtable(L);
	for (int i = 0; i < MM_STORE_NOPS; i++) {
		lua_newtable(L);
		SET_NUM("ops", ctx->st->stats.ops[i]);
		SET_NUM("errors", ctx->st->stats.errors[i]);
		SET_NUM("ms_total", ctx->st->stats.ns_total[i] / 1e6);
		SET_NUM("ms_max", ctx->st->stats.ns_max[i] / 1e6);
		lua_setfield(L, -2, ops[i]);
	}
	push_store_caps(L, ctx->st);
	lua_setfield(L, -2, "store");
	/* The contract's instrumentation names: store operations by pipeline
	 * (one merge_update per flushed delta, timed as part of its flush) and,
	 * with a cache, every cache_* command kind. */
	lua_newtable(L);
	for (int i = 0; i < ctx->npipes; i++) {
		mm_pipeline_t *p = ctx->pipes[i];
		char name[160];

		snprintf(name, sizeof(name), "%s:store_merge_update", p->cfg.name);
		lua_newtable(L);
		SET_NUM("ops", p->stats.deltas_flushed);
		SET_NUM("errors", p->stats.rejected[MM_REJ_MERGE]);
		SET_NUM("flushes_ms_total", ctx->st->stats.ns_total[MM_STORE_OP_APPLY] / 1e6);
		lua_setfield(L, -2, name);
		snprintf(name, sizeof(name), "%s:store_seen", p->cfg.name);
		lua_newtable(L);
		SET_NUM("ops", ctx->st->stats.ops[MM_STORE_OP_SEEN]);
		SET_NUM("errors", ctx->st->stats.errors[MM_STORE_OP_SEEN]);
		lua_setfield(L, -2, name);
		snprintf(name, sizeof(name), "%s:store_claim", p->cfg.name);
		lua_newtable(L);
		SET_NUM("ops", p->stats.claims);
		SET_NUM("duplicates", p->stats.claim_duplicates);
		SET_NUM("busy", p->stats.claim_busy);
		SET_NUM("deferred", p->stats.claim_deferred);
		SET_NUM("stolen", p->stats.claim_stolen);
		SET_NUM("renewals", p->stats.claim_renewals);
		SET_NUM("lost", p->stats.claim_lost);
		lua_setfield(L, -2, name);
	}
	push_cache_stats(L, ctx->st);
	lua_setfield(L, -2, "instrumentation");
	lua_newtable(L);
	for (int i = 0; i < ctx->npipes; i++) {
		mm_pipeline_t *p = ctx->pipes[i];

		lua_newtable(L);
		SET_NUM("records", p->stats.records);
		SET_NUM("accepted", p->stats.accepted);
		SET_NUM("duplicates", p->stats.duplicates);
		SET_NUM("dedup_skipped", p->stats.dedup_skipped);
		SET_NUM("held", p->stats.held);
		SET_NUM("deltas_flushed", p->stats.deltas_flushed);
		SET_NUM("dead_letters", p->stats.dead_letters);
		SET_NUM("dead_letter_errors", p->stats.dead_letter_errors);
		lua_newtable(L);
		for (int r = 0; r < MM_REJ__COUNT; r++)
			SET_NUM(mm_reject_reason_name(r), p->stats.rejected[r]);
		lua_setfield(L, -2, "rejected");
		lua_setfield(L, -2, p->cfg.name);
	}
	lua_setfield(L, -2, "pipelines");
	lua_newtable(L);
	for (int i = 0; i < ctx->nsrcs; i++) {
		mm_engine_source_t *es = &ctx->srcs[i];

		lua_newtable(L);
		SET_NUM("records", es->src ? es->src->records : es->records);
		SET_NUM("bytes", es->src ? es->src->bytes : es->bytes);
		lua_pushboolean(L, es->src == NULL);
		lua_setfield(L, -2, "closed");
		if (es->src && es->src->vt->status) {
			mm_buf_t b = {0};

			if (es->src->vt->status(es->src, &b) == 0) {
				lua_pushlstring(L, (const char *)b.p, b.len);
				lua_setfield(L, -2, "status_json");
			}
			mm_buf_free(&b);
		}
		lua_setfield(L, -2, es->src ? es->src->id : es->id);
	}
	lua_setfield(L, -2, "sources");
	return 1;
}

static int l_engine_close(lua_State *L)
{
	lua_engine_t *e = luaL_checkudata(L, 1, ENGINE_MT);

	engine_close_handles(e);
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

/* ---- stores for queries ---- */

typedef struct lua_store {
	mm_store_t *st;
	uv_loop_t loop;
	int loop_ok;
} lua_store_t;

static lua_store_t *check_store(lua_State *L)
{
	lua_store_t *s = luaL_checkudata(L, 1, STORE_MT);

	if (s->st == NULL)
		luaL_error(L, "store is closed");
	return s;
}

static int l_store_open(lua_State *L)
{
	const char *backend = luaL_checkstring(L, 1);
	int ro = lua_toboolean(L, 3);
	mm_kv_t kv[32];
	size_t nkv;
	lua_store_t *s;
	int rc;

	mm_lua_read_kv(L, 2, kv, 32, &nkv);
	s = lua_newuserdata(L, sizeof(*s));
	memset(s, 0, sizeof(*s));
	luaL_getmetatable(L, STORE_MT);
	lua_setmetatable(L, -2);
	if (uv_loop_init(&s->loop) != 0)
		return push_fail(L, MM_ENOMEM, "cannot create the event loop");
	s->loop_ok = 1;
	rc = mm_store_open(backend, &s->loop, kv, nkv, ro, &s->st);
	if (rc)
		return mm_lua_push_diag(L, rc);
	return 1;
}

struct get_wait {
	int done, status;
	char detail[512];
};

static void on_get_done(void *arg, int status, const char *detail)
{
	struct get_wait *w = arg;

	w->done = 1;
	w->status = status;
	snprintf(w->detail, sizeof(w->detail), "%s", detail ? detail : "");
}

/* st:get(ns_name, spec, entity, {bucket, ...}) -> merged encoding or nil, nfound */
static int l_store_get(lua_State *L)
{
	lua_store_t *s = check_store(L);
	mm_ns_t ns;
	mm_monoid_t m;
	size_t elen, n;
	const char *entity;
	mm_key_t *keys = NULL;
	unsigned char *states = NULL, acc[MM_STATE_MAX] __attribute__((aligned(16)));
	uint8_t *found = NULL;
	struct get_wait w = {0};
	mm_buf_t out = {0};
	int rc, nfound = 0, nret;

	ns.name = luaL_checkstring(L, 2);
	rc = read_monoid(L, 3, &m);
	if (rc)
		return mm_lua_push_diag(L, rc);
	ns.m = &m;
	entity = luaL_checklstring(L, 4, &elen);
	luaL_checktype(L, 5, LUA_TTABLE);
	n = lua_objlen(L, 5);
	if (n == 0)
		return luaL_error(L, "get: no buckets");
	keys = calloc(n, sizeof(*keys));
	states = aligned_alloc(16, n * MM_STATE_MAX);
	found = calloc(n, 1);
	if (!keys || !states || !found) {
		nret = push_fail(L, MM_ENOMEM, "get: out of memory");
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, 5, (int)i + 1);
		keys[i] = (mm_key_t){entity, elen, (int64_t)luaL_checknumber(L, -1)};
		lua_pop(L, 1);
		m.vt->init(&m, states + i * MM_STATE_MAX);
	}
	rc = mm_store_get_many(s->st, &ns, keys, n, states, found, on_get_done, &w);
	while (rc == 0 && !w.done)
		uv_run(&s->loop, UV_RUN_ONCE);
	if (rc == 0 && w.status) {
		nret = push_fail(L, w.status, w.detail);
		goto done_states;
	}
	if (rc) {
		nret = mm_lua_push_diag(L, rc);
		goto done_states;
	}
	m.vt->init(&m, acc);
	for (size_t i = 0; i < n && rc == 0; i++)
		if (found[i]) {
			nfound++;
			rc = m.vt->merge(&m, acc, states + i * MM_STATE_MAX);
		}
	if (rc == 0)
		rc = m.vt->encode(&m, acc, &out);
	m.vt->destroy(&m, acc);
	if (rc) {
		nret = mm_lua_push_diag(L, rc);
		goto done_states;
	}
	if (nfound)
		lua_pushlstring(L, (const char *)out.p, out.len);
	else
		lua_pushnil(L);
	lua_pushinteger(L, nfound);
	nret = 2;
done_states:
	for (size_t i = 0; i < n; i++)
		m.vt->destroy(&m, states + i * MM_STATE_MAX);
done:
	mm_buf_free(&out);
	free(keys);
	free(states);
	free(found);
	return nret;
}

/*
 * st:count(ns_name, spec, entity, {bucket, ...}) -> cardinality, nonempty
 * when the store counts hll buckets natively (MM_STORE_CAP_COUNT_HLL: a
 * Valkey cache holding every bucket answers with one PFCOUNT; nonempty =
 * buckets with data), else nil: the caller then reads with st:get, which
 * also fills a cache.
 */
static int l_store_count(lua_State *L)
{
	lua_store_t *s = check_store(L);
	uint64_t count = 0, nonempty = 0;
	struct get_wait w = {0};
	mm_key_t *keys;
	mm_monoid_t m;
	mm_ns_t ns;
	const char *entity;
	size_t elen, n;
	int rc, cached = 0;

	ns.name = luaL_checkstring(L, 2);
	if ((rc = read_monoid(L, 3, &m)))
		return mm_lua_push_diag(L, rc);
	ns.m = &m;
	entity = luaL_checklstring(L, 4, &elen);
	luaL_checktype(L, 5, LUA_TTABLE);
	n = lua_objlen(L, 5);
	if (n == 0 || !(mm_store_caps(s->st) & MM_STORE_CAP_COUNT_HLL) ||
	    m.vt != &mm_monoid_hll_vtable) {
		lua_pushnil(L);
		return 1;
	}
	keys = calloc(n, sizeof(*keys));
	if (keys == NULL)
		return push_fail(L, MM_ENOMEM, "count: out of memory");
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, 5, (int)i + 1);
		keys[i] = (mm_key_t){entity, elen, (int64_t)luaL_checknumber(L, -1)};
		lua_pop(L, 1);
	}
	rc = mm_store_count_hll(s->st, &ns, keys, n, &count, &nonempty, &cached, on_get_done, &w);
	free(keys);
	while (rc == 0 && !w.done)
		uv_run(&s->loop, UV_RUN_ONCE);
	if (rc)
		return mm_lua_push_diag(L, rc);
	if (w.status)
		return push_fail(L, w.status, w.detail);
	if (!cached) {
		lua_pushnil(L);
		return 1;
	}
	lua_pushnumber(L, (lua_Number)count);
	lua_pushnumber(L, (lua_Number)nonempty);
	return 2;
}

static int l_store_meta(lua_State *L)
{
	lua_store_t *s = check_store(L);
	mm_buf_t b = {0};
	int rc = mm_store_get_meta_wait(s->st, luaL_checkstring(L, 2), &b);

	return push_store_bytes(L, rc, &b);
}

static int l_store_list(lua_State *L)
{
	lua_store_t *s = check_store(L);
	mm_buf_t b = {0};
	int rc = mm_store_list_meta(s->st, &b), n = 0;

	if (rc)
		return mm_lua_push_diag(L, rc);
	lua_newtable(L);
	for (size_t i = 0; i < b.len;) {
		size_t l = strnlen((const char *)b.p + i, b.len - i);

		lua_pushlstring(L, (const char *)b.p + i, l);
		lua_rawseti(L, -2, ++n);
		i += l + 1;
	}
	mm_buf_free(&b);
	return 1;
}

static int l_store_position(lua_State *L)
{
	lua_store_t *s = check_store(L);
	mm_buf_t b = {0};
	int rc = mm_store_get_position_wait(s->st, luaL_checkstring(L, 2), &b);

	return push_store_bytes(L, rc, &b);
}

/* st:stats() -> { get_many = {ops, errors, ms_total, ms_max}, cache_* = ... } */
static int l_store_stats(lua_State *L)
{
	lua_store_t *s = check_store(L);
	const mm_store_stats_t *ss = &s->st->stats;

	lua_newtable(L);
	lua_newtable(L);
	SET_NUM("ops", ss->ops[MM_STORE_OP_GET_MANY]);
	SET_NUM("errors", ss->errors[MM_STORE_OP_GET_MANY]);
	SET_NUM("ms_total", ss->ns_total[MM_STORE_OP_GET_MANY] / 1e6);
	SET_NUM("ms_max", ss->ns_max[MM_STORE_OP_GET_MANY] / 1e6);
	lua_setfield(L, -2, "get_many");
	push_cache_stats(L, s->st);
	return 1;
}

static int l_store_close(lua_State *L)
{
	lua_store_t *s = luaL_checkudata(L, 1, STORE_MT);

	if (s->st) {
		mm_store_close(s->st);
		s->st = NULL;
	}
	if (s->loop_ok) {
		uv_run(&s->loop, UV_RUN_DEFAULT);
		uv_loop_close(&s->loop);
		s->loop_ok = 0;
	}
	return 0;
}

/* ---- monoid states ---- */

typedef struct lua_state {
	mm_monoid_t m;
	unsigned char st[MM_STATE_MAX] __attribute__((aligned(8))); /* Lua userdata is 8-byte aligned */
	int live;
} lua_state_t;

static lua_state_t *check_state(lua_State *L, int i)
{
	return luaL_checkudata(L, i, STATE_MT);
}

/* core.state(spec [, bytes]) -> a fresh identity state, or decoded bytes. */
static int l_state_new(lua_State *L)
{
	size_t n = 0;
	const char *bytes = luaL_optlstring(L, 2, NULL, &n);
	lua_state_t *s;
	int rc;

	luaL_checktype(L, 1, LUA_TTABLE);
	s = lua_newuserdata(L, sizeof(*s));
	memset(s, 0, sizeof(*s));
	luaL_getmetatable(L, STATE_MT);
	lua_setmetatable(L, -2);
	rc = read_monoid(L, 1, &s->m);
	if (rc)
		return mm_lua_push_diag(L, rc);
	s->m.vt->init(&s->m, s->st);
	s->live = 1;
	if (bytes) {
		rc = s->m.vt->decode(&s->m, s->st, (const uint8_t *)bytes, n);
		if (rc)
			return mm_lua_push_diag(L, rc);
	}
	return 1;
}

/* s:add(value [, ts_ms]) -> true | nil, err, code */
static int l_state_add(lua_State *L)
{
	lua_state_t *s = check_state(L, 1);
	mm_value_t v = {0};
	int rc;

	v.ts_ms = (int64_t)luaL_optnumber(L, 3, 0);
	switch (lua_type(L, 2)) {
	case LUA_TNUMBER:
		v.d = lua_tonumber(L, 2);
		v.type = MM_VAL_DOUBLE;
		if (v.d == (double)(int64_t)v.d && v.d >= -9.2e18 && v.d <= 9.2e18) {
			v.type = MM_VAL_INT;
			v.i = (int64_t)v.d;
		}
		break;
	case LUA_TSTRING:
		v.type = MM_VAL_STRING;
		v.s = lua_tolstring(L, 2, &v.len);
		break;
	case LUA_TNONE:
	case LUA_TNIL:
		break;
	default:
		return push_fail(L, MM_ETYPE, "value must be a number, a string or nil");
	}
	rc = s->m.vt->add(&s->m, s->st, &v);
	if (rc)
		return mm_lua_push_diag(L, rc);
	lua_pushboolean(L, 1);
	return 1;
}

static int l_state_merge(lua_State *L)
{
	lua_state_t *a = check_state(L, 1), *b = check_state(L, 2);
	int rc;

	if (a->m.vt != b->m.vt)
		return push_fail(L, MM_EINVAL, "cannot merge states of different monoids");
	rc = a->m.vt->merge(&a->m, a->st, b->st);
	if (rc)
		return mm_lua_push_diag(L, rc);
	lua_pushboolean(L, 1);
	return 1;
}

static int push_buf_result(lua_State *L, int rc, mm_buf_t *b)
{
	if (rc) {
		mm_buf_free(b);
		return mm_lua_push_diag(L, rc);
	}
	lua_pushlstring(L, (const char *)b->p, b->len);
	mm_buf_free(b);
	return 1;
}

static int l_state_encode(lua_State *L)
{
	lua_state_t *s = check_state(L, 1);
	mm_buf_t b = {0};

	return push_buf_result(L, s->m.vt->encode(&s->m, s->st, &b), &b);
}

static int l_state_json(lua_State *L)
{
	lua_state_t *s = check_state(L, 1);
	mm_buf_t b = {0};

	return push_buf_result(L, s->m.vt->to_json(&s->m, s->st, &b), &b);
}

static int l_state_is_identity(lua_State *L)
{
	lua_state_t *s = check_state(L, 1);

	lua_pushboolean(L, s->m.vt->is_identity(&s->m, s->st));
	return 1;
}

static int l_state_gc(lua_State *L)
{
	lua_state_t *s = check_state(L, 1);

	if (s->live) {
		s->m.vt->destroy(&s->m, s->st);
		s->live = 0;
	}
	return 0;
}

/* core.describe_monoid(spec) -> "topk(k=32)" */
static int l_describe_monoid(lua_State *L)
{
	mm_monoid_t m;
	mm_buf_t b = {0};
	int rc = read_monoid(L, 1, &m);

	if (rc)
		return mm_lua_push_diag(L, rc);
	return push_buf_result(L, mm_monoid_describe(&m, &b), &b);
}

/* ---- time and misc ---- */

static int l_parse_time(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	int64_t ms;
	int rc = mm_time_parse_rfc3339(s, n, &ms);

	if (rc)
		return mm_lua_push_diag(L, rc);
	lua_pushnumber(L, (lua_Number)ms);
	return 1;
}

static int l_parse_duration(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	int64_t ms;
	int rc = mm_duration_parse(s, n, &ms);

	if (rc)
		return mm_lua_push_diag(L, rc);
	lua_pushnumber(L, (lua_Number)ms);
	return 1;
}

static int l_format_time(lua_State *L)
{
	char buf[40];
	size_t n = mm_time_format((int64_t)luaL_checknumber(L, 1), buf);

	lua_pushlstring(L, buf, n);
	return 1;
}

static int l_bucket(lua_State *L)
{
	lua_pushnumber(L, (lua_Number)mm_window_bucket((int64_t)luaL_checknumber(L, 1),
						       (int64_t)luaL_checknumber(L, 2)));
	return 1;
}

static int l_bucket_start(lua_State *L)
{
	lua_pushnumber(L, (lua_Number)mm_window_bucket_start_ms((int64_t)luaL_checknumber(L, 1),
								(int64_t)luaL_checknumber(L, 2)));
	return 1;
}

static int l_oldest_kept(lua_State *L)
{
	int64_t b = mm_window_oldest_kept((int64_t)luaL_checknumber(L, 1),
					  (int64_t)luaL_checknumber(L, 2),
					  (int64_t)luaL_checknumber(L, 3));

	lua_pushnumber(L, b == INT64_MIN ? -1 : (lua_Number)b);
	return 1;
}

static int l_now_ms(lua_State *L)
{
	lua_pushnumber(L, (lua_Number)mm_now_ms());
	return 1;
}

static int l_log(lua_State *L)
{
	static const char *const levels[] = {"error", "warn", "info", "debug", NULL};
	int level = luaL_checkoption(L, 1, "info", levels);

	mm_log(level, luaL_optstring(L, 2, NULL), "%s", luaL_checkstring(L, 3));
	return 0;
}

static int l_set_log_level(lua_State *L)
{
	int level = mm_log_parse_level(luaL_checkstring(L, 1));

	if (level < 0)
		return push_fail(L, MM_EINVAL, "log level must be error, warn, info or debug");
	mm_log_set_level(level);
	lua_pushboolean(L, 1);
	return 1;
}

/* core.mkdir_p(path) -> true | nil, err, code: creates path and its parents. */
static int l_mkdir_p(lua_State *L)
{
	size_t n;
	const char *path = luaL_checklstring(L, 1, &n);
	char buf[4096];

	if (n == 0 || n >= sizeof(buf))
		return push_fail(L, MM_EINVAL, "bad directory path");
	memcpy(buf, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		/* 0777 minus the umask: murmur's umask (077 unless MURMUR_UMASK
		 * relaxes it, main.c) makes the directories private. */
		if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
			/* Name the directory that could not be made: with a deep
			 * --data path, "Permission denied" alone says nothing. */
			lua_pushfstring(L, "cannot create directory '%s': %s", buf, strerror(errno));
			return push_fail(L, MM_EIO, lua_tostring(L, -1));
		}
		buf[i] = path[i];
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* core.write_atomic(path, s) -> true | nil, err, code: replaces the file
 * with s, never leaving a partial one (mm_file_write_atomic). */
static int l_write_atomic(lua_State *L)
{
	size_t n;
	const char *path = luaL_checkstring(L, 1);
	const char *s = luaL_checklstring(L, 2, &n);
	int rc = mm_file_write_atomic(path, s, n);

	if (rc)
		return mm_lua_push_diag(L, rc);
	lua_pushboolean(L, 1);
	return 1;
}

/* core.realpath(path) -> the absolute path with every symbolic link, "." and
 * ".." resolved | nil, err, code. The sandbox checks script-named paths with
 * it (lua/murmur/grants.lua): a link inside an allowed directory that points
 * outside it resolves to where it points. */
static int l_realpath(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	char *res = realpath(path, NULL);

	if (res == NULL) {
		int code = errno == ENOENT || errno == ENOTDIR ? MM_ENOTFOUND : MM_EIO;

		lua_pushfstring(L, "%s: %s", path, strerror(errno));
		return push_fail(L, code, lua_tostring(L, -1));
	}
	lua_pushstring(L, res);
	free(res);
	return 1;
}

/* core.hash64(s) -> 16 hex digits of MurmurHash64A (script versions in status). */
static int l_hash64(lua_State *L)
{
	size_t n;
	const char *str = luaL_checklstring(L, 1, &n);
	char hex[17];

	snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)mm_hash64(str, n, 0));
	lua_pushstring(L, hex);
	return 1;
}

static int l_getpid(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)getpid());
	return 1;
}

/* core.http_post(url, body[, header]) -> HTTP code, body | nil, err, code.
 * Blocking: for a runtime's start-up report (the Lambda Runtime API's
 * /init/error) before any loop runs. */
static int l_http_post(lua_State *L)
{
	size_t n;
	const char *url = luaL_checkstring(L, 1), *body = luaL_checklstring(L, 2, &n);
	const char *hdrs[2] = {"Content-Type: application/json", luaL_optstring(L, 3, NULL)};
	mm_http_request_t req = {.method = "POST", .url = url, .headers = hdrs,
				 .nheaders = hdrs[1] ? 2 : 1, .body = body, .body_len = n,
				 .timeout_ms = 10000};
	mm_buf_t out = {0};
	long code = 0;
	int rc = mm_http_fetch(&req, &code, &out);

	if (rc) {
		mm_buf_free(&out);
		return mm_lua_push_diag(L, rc);
	}
	lua_pushinteger(L, (lua_Integer)code);
	lua_pushlstring(L, out.len ? (const char *)out.p : "", out.len);
	mm_buf_free(&out);
	return 2;
}

/* core.isatty(fd) -> true if the descriptor is a terminal (progress output
 * redraws one line in place there, and logs lines elsewhere). */
static int l_isatty(lua_State *L)
{
	lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)) == 1);
	return 1;
}

/* core.kill(pid, "hup"|"term"|"int"|"kill"|0) -> true | nil, err, code */
static int l_kill(lua_State *L)
{
	static const char *const names[] = {"hup", "term", "int", "kill", "zero", NULL};
	static const int nums[] = {SIGHUP, SIGTERM, SIGINT, SIGKILL, 0};
	pid_t pid = (pid_t)luaL_checkinteger(L, 1);
	int sig = nums[luaL_checkoption(L, 2, "zero", names)];

	if (pid <= 0)
		return push_fail(L, MM_EINVAL, "bad pid");
	if (kill(pid, sig) != 0)
		return push_fail(L, errno == ESRCH ? MM_ENOTFOUND : MM_EIO, strerror(errno));
	lua_pushboolean(L, 1);
	return 1;
}

/* core.supervise(argv_table, data_dir, watchdog_ms) -> exit code */
static int l_supervise(lua_State *L)
{
	mm_supervisor_config_t cfg;
	int n, code;
	char **argv;

	luaL_checktype(L, 1, LUA_TTABLE);
	n = (int)lua_objlen(L, 1);
	argv = calloc((size_t)n + 2, sizeof(*argv));
	if (argv == NULL)
		return luaL_error(L, "out of memory");
	for (int i = 0; i <= n; i++) {
		lua_rawgeti(L, 1, i);
		argv[i] = (char *)lua_tostring(L, -1);
		lua_pop(L, 1);
		if (argv[i] == NULL) {
			free(argv);
			return luaL_error(L, "supervise: argument %d is not a string", i);
		}
	}
	cfg.argv = argv;
	cfg.data_dir = luaL_checkstring(L, 2);
	cfg.watchdog_ms = (int64_t)luaL_checknumber(L, 3);
	code = mm_supervise(&cfg);
	free(argv);
	lua_pushinteger(L, code);
	return 1;
}

/* core.worker_init(data_dir) -> number of poison records | nil, err, code.
 * Maps the supervisor's progress page, dies with the supervisor, loads the
 * poison list. A no-op outside a supervised worker. */
static int l_worker_init(lua_State *L)
{
	char path[4096];
	int rc;

	if (getenv("MURMUR_PROGRESS") == NULL) {
		lua_pushinteger(L, 0);
		return 1;
	}
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() == 1)
		return push_fail(L, MM_ECLOSED, "the supervisor is gone");
	rc = mm_progress_attach();
	if (rc == 0) {
		snprintf(path, sizeof(path), "%s/poison.jsonl", luaL_checkstring(L, 1));
		rc = mm_poison_load(path);
	}
	if (rc)
		return mm_lua_push_diag(L, rc);
	lua_pushinteger(L, mm_poison_count());
	return 1;
}

static int l_strerror(lua_State *L)
{
	int err = (int)luaL_checkinteger(L, 1);

	lua_pushstring(L, mm_err_name(err));
	lua_pushstring(L, mm_strerror(err));
	return 2;
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
		{"stop", l_engine_stop},
		{"on_merged", l_engine_on_merged},
		{"stats", l_engine_stats},
		{"close", l_engine_close},
		{"timer", l_engine_timer},
		{"watch", l_engine_watch},
		{"signal", l_engine_signal},
		{"flush", l_engine_flush},
		{"hold", l_engine_hold},
		{"update_pipeline", l_engine_update_pipeline},
		{"remove_pipeline", l_engine_remove_pipeline},
		{"close_idle_sources", l_engine_close_idle_sources},
		{"meta", l_engine_meta},
		{"probe", l_engine_probe},
		{"listen", l_engine_listen},
		{NULL, NULL},
	};
	static const luaL_Reg handle_methods[] = {
		{"close", l_handle_close},
		{NULL, NULL},
	};
	static const luaL_Reg store_methods[] = {
		{"get", l_store_get},
		{"count", l_store_count},
		{"meta", l_store_meta},
		{"list", l_store_list},
		{"position", l_store_position},
		{"stats", l_store_stats},
		{"close", l_store_close},
		{NULL, NULL},
	};
	static const luaL_Reg state_methods[] = {
		{"add", l_state_add},
		{"merge", l_state_merge},
		{"encode", l_state_encode},
		{"json", l_state_json},
		{"is_identity", l_state_is_identity},
		{NULL, NULL},
	};
	static const luaL_Reg funcs[] = {
		{"engine_open", l_engine_open},
		{"store_open", l_store_open},
		{"state", l_state_new},
		{"describe_monoid", l_describe_monoid},
		{"parse_time", l_parse_time},
		{"parse_duration", l_parse_duration},
		{"format_time", l_format_time},
		{"bucket", l_bucket},
		{"bucket_start", l_bucket_start},
		{"oldest_kept", l_oldest_kept},
		{"now_ms", l_now_ms},
		{"log", l_log},
		{"set_log_level", l_set_log_level},
		{"strerror", l_strerror},
		{"mkdir_p", l_mkdir_p},
		{"realpath", l_realpath},
		{"write_atomic", l_write_atomic},
		{"hash64", l_hash64},
		{"getpid", l_getpid},
		{"supervise", l_supervise},
		{"worker_init", l_worker_init},
		{"kill", l_kill},
		{"isatty", l_isatty},
		{"http_post", l_http_post},
		{NULL, NULL},
	};

	mm_lua_new_class(L, ENGINE_MT, engine_methods, l_engine_close);
	mm_lua_new_class(L, STORE_MT, store_methods, l_store_close);
	mm_lua_new_class(L, STATE_MT, state_methods, l_state_gc);
	luaL_newmetatable(L, HANDLE_MT);
	lua_newtable(L);
	luaL_register(L, NULL, handle_methods);
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
	lua_newtable(L);
	luaL_register(L, NULL, funcs);
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
