/*
 * metrics_lua.c: the Lua side of the process-wide metrics (core/metrics.h).
 *
 * core.metrics([openmetrics]) renders the page /metrics serves, so the CLI
 * and the specs can read it without a server: text, content type.
 * core.metrics_reload(stats) copies murmur.reload's counters into C, where
 * the server renders them without calling Lua on a scrape; the reloader calls
 * it after every attempt.
 */
#include "metrics_lua.h"

#include <lauxlib.h>

#include "../core/metrics.h"
#include "../lib/expo.h"
#include "core_lua.h"
#include "funnel.h"

static int l_metrics(lua_State *L)
{
	int om = lua_toboolean(L, 1);
	mm_buf_t b = {0};
	int rc = mm_metrics_render(mm_metrics_global(), om, &b);

	if (rc) {
		mm_buf_free(&b);
		return mm_lua_push_diag(L, rc);
	}
	lua_pushlstring(L, (const char *)b.p, b.len);
	lua_pushstring(L, mm_expo_content_type(om));
	mm_buf_free(&b);
	return 2;
}

static double field_num(lua_State *L, int t, const char *name)
{
	double v;

	lua_getfield(L, t, name);
	v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 0;
	lua_pop(L, 1);
	return v;
}

/* core.metrics_reload({ok=, failed=, unchanged=, last_ok_ms=,
 * last_error_ms=, last_error=}): failing is whether last_error is set. */
static int l_metrics_reload(lua_State *L)
{
	mm_metrics_t *m = mm_metrics_global();

	luaL_checktype(L, 1, LUA_TTABLE);
	m->reload.ok = (uint64_t)field_num(L, 1, "ok");
	m->reload.failed = (uint64_t)field_num(L, 1, "failed");
	m->reload.unchanged = (uint64_t)field_num(L, 1, "unchanged");
	m->reload.last_ok_ms = (int64_t)field_num(L, 1, "last_ok_ms");
	m->reload.last_error_ms = (int64_t)field_num(L, 1, "last_error_ms");
	lua_getfield(L, 1, "last_error");
	m->reload.failing = !lua_isnil(L, -1);
	lua_pop(L, 1);
	m->has_reload = 1;
	return 0;
}

/* core.metrics_wants_openmetrics(accept): the server's content negotiation,
 * for the specs. */
static int l_metrics_wants_openmetrics(lua_State *L)
{
	lua_pushboolean(L, mm_expo_wants_openmetrics(luaL_optstring(L, 1, "")));
	return 1;
}

void mm_lua_metrics_register(lua_State *L, const char *version)
{
	mm_metrics_t *m = mm_metrics_global();

	m->version = version;
	m->lua_errors = mm_lua_errors;
	lua_pushcfunction(L, l_metrics);
	lua_setfield(L, -2, "metrics");
	lua_pushcfunction(L, l_metrics_reload);
	lua_setfield(L, -2, "metrics_reload");
	lua_pushcfunction(L, l_metrics_wants_openmetrics);
	lua_setfield(L, -2, "metrics_wants_openmetrics");
}
