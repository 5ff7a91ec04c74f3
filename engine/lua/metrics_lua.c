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
#include <stdio.h>
#include <string.h>

#include "../core/admin.h"
#include "../core/metrics.h"
#include "../lib/expo.h"
#include "core_lua.h"
#include "funnel.h"

/* Pushes b's bytes (rc 0) or the failure triple, and frees b. */
static int push_buf(lua_State *L, int rc, mm_buf_t *b)
{
	if (rc == 0)
		lua_pushlstring(L, (const char *)b->p, b->len);
	mm_buf_free(b);
	return rc ? mm_lua_push_diag(L, rc) : 1;
}

static int l_metrics(lua_State *L)
{
	int om = lua_toboolean(L, 1);
	mm_buf_t b = {0};
	int rc = mm_metrics_render(mm_metrics_global(), om, &b);

	if (rc)
		return push_buf(L, rc, &b);
	push_buf(L, 0, &b);
	lua_pushstring(L, mm_expo_content_type(om));
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
	snprintf(m->reload.last_error, sizeof(m->reload.last_error), "%s",
		 lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
	lua_pop(L, 1);
	m->has_reload = 1;
	return 0;
}

/* core.metrics_supervisor(path): a supervised worker's supervisor.json,
 * whose counts /metrics renders. */
static int l_metrics_supervisor(lua_State *L)
{
	mm_metrics_t *m = mm_metrics_global();

	snprintf(m->supervisor_json, sizeof(m->supervisor_json), "%s", luaL_checkstring(L, 1));
	return 0;
}

/* core.metrics_wants_openmetrics(accept): the server's content negotiation,
 * for the specs. */
static int l_metrics_wants_openmetrics(lua_State *L)
{
	lua_pushboolean(L, mm_expo_wants_openmetrics(luaL_optstring(L, 1, "")));
	return 1;
}

/* core.admin_publish(definitions_json, {pipeline = dead_letter_path}) */
static int l_admin_publish(lua_State *L)
{
	size_t len, n = 0;
	const char *json = luaL_checklstring(L, 1, &len);
	const char *names[256], *paths[256];
	int rc;

	luaL_checktype(L, 2, LUA_TTABLE);
	lua_pushnil(L);
	while (lua_next(L, 2) != 0) {
		if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING && n < 256) {
			names[n] = lua_tostring(L, -2);
			paths[n] = lua_tostring(L, -1);
			n++;
		}
		lua_pop(L, 1);
	}
	rc = mm_admin_publish(json, len, names, paths, n);
	if (rc)
		return mm_lua_push_diag(L, rc);
	lua_pushboolean(L, 1);
	return 1;
}

/* core.admin_state(mode, not_ready): mode "run" or "serve" (nil keeps it),
 * not_ready a reason or nil once ready. */
static int l_admin_state(lua_State *L)
{
	const char *mode = luaL_optstring(L, 1, NULL);

	if (mode != NULL)
		mm_admin_set_mode(strcmp(mode, "serve") == 0 ? "serve" : "run");
	mm_admin_set_not_ready(luaL_optstring(L, 2, NULL));
	return 0;
}

/* core.admin_status(): the /api/status document; core.admin_ready(): true,
 * or false and the reason; core.admin_dead_letters(pipeline, n). */
static int l_admin_status(lua_State *L)
{
	mm_buf_t b = {0};

	return push_buf(L, mm_admin_status_json(&b), &b);
}

static int l_admin_ready(lua_State *L)
{
	const char *why = mm_admin_not_ready();

	lua_pushboolean(L, why == NULL);
	if (why == NULL)
		return 1;
	lua_pushstring(L, why);
	return 2;
}

static int l_admin_dead_letters(lua_State *L)
{
	mm_buf_t b = {0};
	int rc = mm_admin_dead_letter_tail(luaL_checkstring(L, 1), (size_t)luaL_optinteger(L, 2, 20), &b);

	return push_buf(L, rc, &b);
}

void mm_lua_metrics_register(lua_State *L, const char *version)
{
	static const luaL_Reg funcs[] = {
		{"metrics", l_metrics},
		{"metrics_reload", l_metrics_reload},
		{"metrics_supervisor", l_metrics_supervisor},
		{"metrics_wants_openmetrics", l_metrics_wants_openmetrics},
		{"admin_publish", l_admin_publish},
		{"admin_state", l_admin_state},
		{"admin_status", l_admin_status},
		{"admin_ready", l_admin_ready},
		{"admin_dead_letters", l_admin_dead_letters},
		{NULL, NULL},
	};
	mm_metrics_t *m = mm_metrics_global();

	m->version = version;
	m->lua_errors = mm_lua_errors;
	luaL_register(L, NULL, funcs);
}
