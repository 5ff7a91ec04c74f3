/*
 * isolate_lua.c: the murmur.core functions that keep a script from harming
 * the process that runs it (lua/murmur/isolate.lua, runtime.lua, hooks.lua):
 *
 *   core.probe(argv, set_env, unset_env, limits) -> result table
 *       runs argv in a child under CPU, memory and wall-clock limits
 *       (engine/core/probe.h) and returns { status = "exited" | "signaled" |
 *       "timeout" | "cancelled", code, signal, signame, cpu_ms, output = what
 *       it wrote on fd 3 }, or nil, err, code when it could not start;
 *       "cancelled" when a stop signal arrived while this process started. set_env is a list
 *       of "NAME=value" added to this process's environment, unset_env a list
 *       of names removed; limits = { cpu_s, as_mb, wall_ms }.
 *   core.probe_fork(fn, limits) -> result table
 *       the same with fn() run in a forked copy of this process instead of
 *       a fresh program, the copy exiting with fn's number (70 when fn
 *       raised an error); nil, err, "EAGAIN" when this process has other
 *       threads and so cannot be copied safely (use core.probe).
 *   engine:probe(argv, set_env, unset_env, limits, fn(result | nil, err))
 *       the same on the libuv thread pool, so the loop keeps turning while
 *       the child runs (hot reload); fn runs on the loop with the result
 *       (core_lua.c binds it, mm_lua_probe_async).
 *   core.heartbeat()
 *       tells the supervisor this worker is alive while it waits or runs
 *       bounded work outside the loop's heartbeat timer.
 *   core.lua_memory([limit_bytes]) -> used, limit, refusals
 *       the Lua allocator's counters (engine/lua/alloc.h); sets the limit
 *       first when given (0: none).
 *   core.probe_exit(code)
 *       ends a probe child at once (_exit): it has reported on fd 3 and owns
 *       nothing to flush, and a normal exit would run exit-time checks
 *       (LeakSanitizer in sanitized builds) over a Lua state left open.
 *   core.errinj
 *       true in builds with error-injection points (tests).
 */
#define _GNU_SOURCE
#include <lauxlib.h>
#include <lua.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/engine.h"
#include "../core/probe.h"
#include "../core/progress.h"
#include "../lib/error.h"
#include "../lib/time.h"
#include "alloc.h"
#include "funnel.h"
#include "isolate_lua.h"

extern char **environ;

static void stamp_alive(void *arg)
{
	(void)arg;
	if (mm_progress) {
		int64_t now = mm_now_ms();

		mm_progress->alive_ms = now;
		if (mm_progress->heartbeat_ms != 0)
			mm_progress->heartbeat_ms = now;
	}
}

/* The blocking probes' tick: keeps the supervisor's watchdog informed, and
 * ends the wait once a stop signal arrived while this process starts (the
 * early signal of engine.h, which its loop then acts on): the child's load
 * is not waited out for a run that is stopping. */
static int probe_tick(void *arg)
{
	stamp_alive(arg);
	return mm_engine_stop_pending() != 0;
}

static int l_heartbeat(lua_State *L)
{
	(void)L;
	stamp_alive(NULL);
	return 0;
}

/* Strings at t[1..n] into a NULL-terminated array of at most max entries
 * (the strings stay owned by the Lua table). */
static int read_list(lua_State *L, int t, const char **out, int max)
{
	int n = 0;

	if (lua_isnoneornil(L, t))
		return 0;
	luaL_checktype(L, t, LUA_TTABLE);
	for (int i = 1; n < max; i++) {
		lua_rawgeti(L, t, i);
		if (lua_isnil(L, -1)) {
			lua_pop(L, 1);
			break;
		}
		out[n++] = luaL_checkstring(L, -1);
		lua_pop(L, 1); /* still referenced by the table */
	}
	return n;
}

static int env_unset(const char *entry, const char **unset, int nunset, const char **set, int nset)
{
	size_t len = strcspn(entry, "=");

	for (int i = 0; i < nunset; i++)
		if (strlen(unset[i]) == len && strncmp(entry, unset[i], len) == 0)
			return 1;
	for (int i = 0; i < nset; i++)
		if (strncmp(entry, set[i], len) == 0 && set[i][len] == '=')
			return 1;
	return 0;
}

/* One probe: its command and environment (copies, so that a pool thread
 * can run it), limits, result, and for an asynchronous run the Lua
 * function to call. */
typedef struct probe_job {
	uv_work_t req;
	lua_State *L;
	int fn_ref;
	char **argv, **envp;    /* NULL-terminated; strings owned here */
	mm_probe_limits_t lim;
	mm_probe_result_t res;
	int rc;
	char detail[256];
} probe_job_t;

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

static void probe_job_free(probe_job_t *j)
{
	strv_free(j->argv);
	strv_free(j->envp);
	mm_buf_free(&j->res.out);
	free(j);
}

/* Reads a limits table { cpu_s, as_mb, wall_ms } at index t (absent: none). */
static void read_limits(lua_State *L, int t, mm_probe_limits_t *lim)
{
	if (!lua_istable(L, t))
		return;
	lua_getfield(L, t, "cpu_s");
	lim->cpu_s = (int)luaL_optinteger(L, -1, 0);
	lua_getfield(L, t, "as_mb");
	lim->as_bytes = (uint64_t)luaL_optnumber(L, -1, 0) * 1024 * 1024;
	lua_getfield(L, t, "wall_ms");
	lim->wall_ms = (int64_t)luaL_optnumber(L, -1, 0);
	lua_pop(L, 3);
}

/* Reads (argv, set_env, unset_env, limits) at stack index 1..4 into a job;
 * NULL when out of memory. */
static probe_job_t *probe_job_new(lua_State *L)
{
	const char *argv[256], *set[32], *unset[32];
	int nargv, nset, nunset, ok = 1;
	size_t nenv = 0, k = 0;
	probe_job_t *j;

	nargv = read_list(L, 1, argv, 255);
	nset = read_list(L, 2, set, 32);
	nunset = read_list(L, 3, unset, 32);
	luaL_argcheck(L, nargv > 0, 1, "no command");
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return NULL;
	read_limits(L, 4, &j->lim);
	while (environ[nenv])
		nenv++;
	j->argv = calloc((size_t)nargv + 1, sizeof(*j->argv));
	j->envp = calloc(nenv + (size_t)nset + 1, sizeof(*j->envp));
	ok = j->argv != NULL && j->envp != NULL;
	for (int i = 0; ok && i < nargv; i++)
		ok = (j->argv[i] = strdup(argv[i])) != NULL;
	for (size_t i = 0; ok && i < nenv; i++)
		if (!env_unset(environ[i], unset, nunset, set, nset))
			ok = (j->envp[k++] = strdup(environ[i])) != NULL;
	for (int i = 0; ok && i < nset; i++)
		ok = (j->envp[k++] = strdup(set[i])) != NULL;
	if (!ok) {
		probe_job_free(j);
		return NULL;
	}
	return j;
}

/* Pushes the result table, or nil, err, code; returns the count. */
static int probe_push(lua_State *L, probe_job_t *j)
{
	mm_probe_result_t *res = &j->res;

	if (j->rc) {
		lua_pushnil(L);
		lua_pushfstring(L, "%s: %s", mm_err_name(j->rc), j->detail);
		lua_pushstring(L, mm_err_name(j->rc));
		return 3;
	}
	lua_createtable(L, 0, 6);
	lua_pushstring(L, res->status == MM_PROBE_EXITED      ? "exited"
			  : res->status == MM_PROBE_SIGNALED  ? "signaled"
			  : res->status == MM_PROBE_CANCELLED ? "cancelled"
							      : "timeout");
	lua_setfield(L, -2, "status");
	lua_pushinteger(L, res->code);
	lua_setfield(L, -2, "code");
	lua_pushinteger(L, res->signal);
	lua_setfield(L, -2, "signal");
	if (res->signal) {
		lua_pushstring(L, sigabbrev_np(res->signal) ? sigabbrev_np(res->signal) : "?");
		lua_setfield(L, -2, "signame");
	}
	lua_pushnumber(L, (lua_Number)res->cpu_ms);
	lua_setfield(L, -2, "cpu_ms");
	lua_pushlstring(L, res->out.p ? (const char *)res->out.p : "", res->out.len);
	lua_setfield(L, -2, "output");
	return 1;
}

static void probe_job_run(probe_job_t *j, int (*tick)(void *))
{
	j->rc = mm_probe_run(j->argv, j->envp, &j->lim, tick, NULL, &j->res);
	if (j->rc)
		snprintf(j->detail, sizeof(j->detail), "%s", mm_diag_msg());
}

static int l_probe(lua_State *L)
{
	probe_job_t *j = probe_job_new(L);
	int n;

	if (j == NULL)
		return luaL_error(L, "out of memory");
	probe_job_run(j, probe_tick);
	n = probe_push(L, j);
	probe_job_free(j);
	return n;
}

/* In the forked copy: calls the function at index 1 of the copied stack
 * and exits with its number (70 when it raised an error: the copy must
 * never unwind into its caller's frames, which would go on running the
 * caller's code in the copy). */
static int fork_child(void *carg)
{
	lua_State *L = carg;

	/* The caller stamps the supervisor's page while it waits; the copy
	 * writes nothing shared. */
	mm_progress = NULL;
	lua_pushvalue(L, 1);
	if (lua_pcall(L, 0, 1, 0) != 0)
		return 70;
	return lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : 0;
}

static int l_probe_fork(lua_State *L)
{
	probe_job_t *j;
	int n;

	luaL_checktype(L, 1, LUA_TFUNCTION);
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return luaL_error(L, "out of memory");
	read_limits(L, 2, &j->lim);
	j->rc = mm_probe_fork(fork_child, L, &j->lim, probe_tick, NULL, &j->res);
	if (j->rc)
		snprintf(j->detail, sizeof(j->detail), "%s", mm_diag_msg());
	n = probe_push(L, j);
	probe_job_free(j);
	return n;
}

/* Pool thread: the child runs while the loop keeps turning (the loop's own
 * heartbeat timer tells the supervisor this worker is alive). */
static void probe_work(uv_work_t *req)
{
	probe_job_run((probe_job_t *)req, NULL);
}

static void probe_after(uv_work_t *req, int status)
{
	probe_job_t *j = (probe_job_t *)req;
	lua_State *L = j->L;
	int n;

	lua_rawgeti(L, LUA_REGISTRYINDEX, j->fn_ref);
	luaL_unref(L, LUA_REGISTRYINDEX, j->fn_ref);
	if (status != 0) {
		j->rc = MM_ECLOSED;
		snprintf(j->detail, sizeof(j->detail), "the probe was cancelled");
	}
	n = probe_push(L, j);
	probe_job_free(j);
	mm_lua_call(L, n, 0, "probe callback");
}

int mm_lua_probe_async(lua_State *L, uv_loop_t *loop)
{
	probe_job_t *j;
	int rc;

	luaL_checktype(L, 5, LUA_TFUNCTION);
	if ((j = probe_job_new(L)) == NULL)
		return luaL_error(L, "out of memory");
	j->L = L;
	lua_pushvalue(L, 5);
	j->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	if ((rc = uv_queue_work(loop, &j->req, probe_work, probe_after)) != 0) {
		luaL_unref(L, LUA_REGISTRYINDEX, j->fn_ref);
		probe_job_free(j);
		lua_pushnil(L);
		lua_pushfstring(L, "EIO: cannot queue the probe: %s", uv_strerror(rc));
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

static int l_probe_exit(lua_State *L)
{
	_exit((int)luaL_checkinteger(L, 1));
	return 0;
}

static int l_lua_memory(lua_State *L)
{
	if (!lua_isnoneornil(L, 1))
		mm_lua_mem_set_limit((uint64_t)luaL_checknumber(L, 1));
	lua_pushnumber(L, (lua_Number)mm_lua_mem()->used);
	lua_pushnumber(L, (lua_Number)mm_lua_mem()->limit);
	lua_pushnumber(L, (lua_Number)mm_lua_mem()->refusals);
	return 3;
}

void mm_lua_isolate_register(lua_State *L)
{
	lua_pushcfunction(L, l_probe);
	lua_setfield(L, -2, "probe");
	lua_pushcfunction(L, l_probe_fork);
	lua_setfield(L, -2, "probe_fork");
	lua_pushcfunction(L, l_heartbeat);
	lua_setfield(L, -2, "heartbeat");
	lua_pushcfunction(L, l_probe_exit);
	lua_setfield(L, -2, "probe_exit");
	lua_pushcfunction(L, l_lua_memory);
	lua_setfield(L, -2, "lua_memory");
#ifdef MM_ERRINJ
	lua_pushboolean(L, 1);
#else
	lua_pushboolean(L, 0);
#endif
	lua_setfield(L, -2, "errinj");
}
