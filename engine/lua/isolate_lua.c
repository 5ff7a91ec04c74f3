/*
 * isolate_lua.c: the murmur.core functions that keep a script from harming
 * the process that runs it (lua/murmur/isolate.lua, runtime.lua, hooks.lua):
 *
 *   core.probe(argv, set_env, unset_env, limits) -> result table
 *       runs argv in a child under CPU, memory and wall-clock limits
 *       (engine/core/probe.h) and returns { status = "exited" | "signaled" |
 *       "timeout", code, signal, signame, cpu_ms, output = what it wrote on
 *       fd 3 }, or nil, err, code when it could not start. set_env is a list
 *       of "NAME=value" added to this process's environment, unset_env a list
 *       of names removed; limits = { cpu_s, as_mb, wall_ms }.
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

static int l_probe(lua_State *L)
{
	const char *argv[256], *set[32], *unset[32];
	char **argvp, **envp;
	int nargv, nset, nunset, rc;
	size_t nenv = 0, k = 0;
	mm_probe_limits_t lim = {0};
	mm_probe_result_t res;

	nargv = read_list(L, 1, argv, 255);
	nset = read_list(L, 2, set, 32);
	nunset = read_list(L, 3, unset, 32);
	luaL_argcheck(L, nargv > 0, 1, "no command");
	if (lua_istable(L, 4)) {
		lua_getfield(L, 4, "cpu_s");
		lim.cpu_s = (int)luaL_optinteger(L, -1, 0);
		lua_getfield(L, 4, "as_mb");
		lim.as_bytes = (uint64_t)luaL_optnumber(L, -1, 0) * 1024 * 1024;
		lua_getfield(L, 4, "wall_ms");
		lim.wall_ms = (int64_t)luaL_optnumber(L, -1, 0);
		lua_pop(L, 3);
	}
	while (environ[nenv])
		nenv++;
	argvp = calloc((size_t)nargv + 1, sizeof(*argvp));
	envp = calloc(nenv + (size_t)nset + 1, sizeof(*envp));
	if (argvp == NULL || envp == NULL) {
		free(argvp);
		free(envp);
		return luaL_error(L, "out of memory");
	}
	for (int i = 0; i < nargv; i++)
		argvp[i] = (char *)argv[i];
	for (size_t i = 0; i < nenv; i++)
		if (!env_unset(environ[i], unset, nunset, set, nset))
			envp[k++] = environ[i];
	for (int i = 0; i < nset; i++)
		envp[k++] = (char *)set[i];
	rc = mm_probe_run(argvp, envp, &lim, stamp_alive, NULL, &res);
	free(argvp);
	free(envp);
	if (rc) {
		mm_buf_free(&res.out);
		lua_pushnil(L);
		lua_pushfstring(L, "%s: %s", mm_err_name(rc), mm_diag_msg());
		lua_pushstring(L, mm_err_name(rc));
		return 3;
	}
	lua_createtable(L, 0, 6);
	lua_pushstring(L, res.status == MM_PROBE_EXITED     ? "exited"
			  : res.status == MM_PROBE_SIGNALED ? "signaled"
							    : "timeout");
	lua_setfield(L, -2, "status");
	lua_pushinteger(L, res.code);
	lua_setfield(L, -2, "code");
	lua_pushinteger(L, res.signal);
	lua_setfield(L, -2, "signal");
	if (res.signal) {
		lua_pushstring(L, sigabbrev_np(res.signal) ? sigabbrev_np(res.signal) : "?");
		lua_setfield(L, -2, "signame");
	}
	lua_pushnumber(L, (lua_Number)res.cpu_ms);
	lua_setfield(L, -2, "cpu_ms");
	lua_pushlstring(L, res.out.p ? (const char *)res.out.p : "", res.out.len);
	lua_setfield(L, -2, "output");
	mm_buf_free(&res.out);
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
	lua_pushnumber(L, (lua_Number)mm_lua_mem_used());
	lua_pushnumber(L, (lua_Number)mm_lua_mem_limit());
	lua_pushnumber(L, (lua_Number)mm_lua_mem_refusals());
	return 3;
}

void mm_lua_isolate_register(lua_State *L)
{
	lua_pushcfunction(L, l_probe);
	lua_setfield(L, -2, "probe");
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
