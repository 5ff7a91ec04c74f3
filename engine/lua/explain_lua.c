/*
 * explain_lua.c: the murmur.core binding of engine/core/explain.h, the dry
 * run behind `murmur check --input` (lua/murmur/check.lua):
 *
 *   core.explainer(def) -> explainer
 *       def is the table runner.cfg_of builds, without a dead-letter
 *       destination (a dry run writes nothing).
 *   ex:record(line [, now_ms]) -> what the C path did with the record
 *   ex:begin(line [, now_ms]) / ex:finish() -> the same around a Lua-path
 *       batch (runtime.lua processes it through ex:ptr())
 *   ex:ptr() -> the pipeline, for the Lua path's FFI calls
 *   ex:close()
 */
#include <lauxlib.h>
#include <lua.h>

#include "../core/engine.h"
#include "../core/explain.h"
#include "../lib/error.h"
#include "../lib/time.h"
#include "core_lua.h"

#define EXPLAINER_MT "murmur.explainer"

typedef struct lua_explainer {
	mm_explainer_t *ex;
} lua_explainer_t;

static lua_explainer_t *check_explainer(lua_State *L)
{
	lua_explainer_t *u = luaL_checkudata(L, 1, EXPLAINER_MT);

	if (u->ex == NULL)
		luaL_error(L, "explainer is closed");
	return u;
}

/* core.explainer(def): def is the table runner.cfg_of builds, without a
 * dead-letter destination (a dry run writes nothing). */
static int l_explainer_open(lua_State *L)
{
	mm_pipeline_config_t cfg;
	lua_explainer_t *u;
	int rc, n;

	luaL_checktype(L, 1, LUA_TTABLE);
	lua_getfield(L, 1, "dead_letter_type");
	if (!lua_isnil(L, -1))
		return luaL_argerror(L, 1, "a dry run takes no dead_letter_type");
	lua_pop(L, 1);
	/* read_pipeline_config reads the table at index 2 (after the engine). */
	lua_settop(L, 1);
	lua_pushnil(L);
	lua_insert(L, 1);
	n = mm_lua_read_pipeline_config(L, &cfg);
	if (n)
		return n;
	u = lua_newuserdata(L, sizeof(*u));
	u->ex = NULL;
	luaL_getmetatable(L, EXPLAINER_MT);
	lua_setmetatable(L, -2);
	rc = mm_explainer_open(&cfg, &u->ex);
	if (rc)
		return mm_lua_push_diag(L, rc);
	return 1;
}

static void push_explain(lua_State *L, const mm_explain_t *x)
{
	static const char *const outcomes[] = {"none", "accepted", "duplicate", "rejected"};
	static const char *const vtypes[] = {"none", "int", "double", "string"};

	lua_createtable(L, 0, 12);
	lua_pushstring(L, outcomes[x->outcome]);
	lua_setfield(L, -2, "outcome");
	if (x->outcome == MM_EXPLAIN_REJECTED) {
		lua_pushstring(L, mm_reject_reason_name(x->reason));
		lua_setfield(L, -2, "reason");
		lua_pushstring(L, mm_err_name(x->code));
		lua_setfield(L, -2, "code");
		lua_pushlstring(L, mm_explain_str(x, x->detail_off), x->detail_len);
		lua_setfield(L, -2, "error");
	}
	lua_createtable(L, x->nkeys, 0);
	for (int k = 0; k < x->nkeys; k++) {
		lua_pushlstring(L, mm_explain_str(x, x->key_off[k]), x->key_len[k]);
		lua_rawseti(L, -2, k + 1);
	}
	lua_setfield(L, -2, "keys");
	if (x->have_time) {
		lua_pushstring(L, vtypes[x->value.type & 3]);
		lua_setfield(L, -2, "value_type");
		if (x->value.type == MM_VAL_INT)
			lua_pushnumber(L, (lua_Number)x->value.i);
		else if (x->value.type == MM_VAL_DOUBLE)
			lua_pushnumber(L, x->value.d);
		else if (x->value.type == MM_VAL_STRING)
			lua_pushlstring(L, mm_explain_str(x, x->value_off), x->value.len);
		else
			lua_pushnil(L);
		lua_setfield(L, -2, "value");
		lua_pushnumber(L, (lua_Number)x->ts_ms);
		lua_setfield(L, -2, "time_ms");
		lua_pushnumber(L, (lua_Number)x->bucket);
		lua_setfield(L, -2, "bucket");
	}
	if (x->have_id) {
		lua_pushlstring(L, mm_explain_str(x, x->id_off), x->id_len);
		lua_setfield(L, -2, "id");
	}
}

/* ex:record(line [, now_ms]): the C path; returns the explanation table. */
static int l_explainer_record(lua_State *L)
{
	lua_explainer_t *u = check_explainer(L);
	size_t len;
	const char *rec = luaL_checklstring(L, 2, &len);
	int64_t now = lua_isnoneornil(L, 3) ? mm_now_ms() : (int64_t)luaL_checknumber(L, 3);
	const mm_explain_t *x;
	int rc = mm_explainer_record(u->ex, rec, len, now, &x);

	if (rc)
		return mm_lua_push_diag(L, rc);
	push_explain(L, x);
	return 1;
}

/* ex:begin(line [, now_ms]) ... runtime handler(1, ex:ptr()) ... ex:finish():
 * the Lua path. */
static int l_explainer_begin(lua_State *L)
{
	lua_explainer_t *u = check_explainer(L);
	size_t len;
	const char *rec = luaL_checklstring(L, 2, &len);
	int64_t now = lua_isnoneornil(L, 3) ? mm_now_ms() : (int64_t)luaL_checknumber(L, 3);
	int rc = mm_explainer_begin(u->ex, rec, len, now);

	if (rc)
		return mm_lua_push_diag(L, rc);
	lua_pushboolean(L, 1);
	return 1;
}

static int l_explainer_finish(lua_State *L)
{
	lua_explainer_t *u = check_explainer(L);

	push_explain(L, mm_explainer_end(u->ex));
	return 1;
}

static int l_explainer_ptr(lua_State *L)
{
	lua_pushlightuserdata(L, mm_explainer_pipeline(check_explainer(L)->ex));
	return 1;
}

static int l_explainer_close(lua_State *L)
{
	lua_explainer_t *u = luaL_checkudata(L, 1, EXPLAINER_MT);

	mm_explainer_close(u->ex);
	u->ex = NULL;
	return 0;
}

void mm_lua_explain_register(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{"record", l_explainer_record},
		{"begin", l_explainer_begin},
		{"finish", l_explainer_finish},
		{"ptr", l_explainer_ptr},
		{"close", l_explainer_close},
		{NULL, NULL},
	};

	mm_lua_new_class(L, EXPLAINER_MT, methods, l_explainer_close);
	lua_pushcfunction(L, l_explainer_open);
	lua_setfield(L, -2, "explainer");
}
