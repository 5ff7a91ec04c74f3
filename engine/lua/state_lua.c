/*
 * state_lua.c: monoid states for scripts and specs (`core.state`), the
 * `murmur.state` userdata of murmur.core, and core.describe_monoid. A state
 * is held inline in its userdata and destroyed by __gc.
 *
 * Failures are returned as `nil, "ENAME: message", "ENAME"`; raising is kept
 * for programmer errors (wrong argument types).
 */
#include <lauxlib.h>
#include <lua.h>
#include <string.h>

#include "../lib/buf.h"
#include "../lib/error.h"
#include "../monoid/monoid.h"
#include "core_lua.h"

#define STATE_MT "murmur.state"

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
	rc = mm_lua_read_monoid(L, 1, &s->m);
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
		return mm_lua_push_fail(L, MM_ETYPE, "value must be a number, a string or nil");
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
		return mm_lua_push_fail(L, MM_EINVAL, "cannot merge states of different monoids");
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
	int rc = mm_lua_read_monoid(L, 1, &m);

	if (rc)
		return mm_lua_push_diag(L, rc);
	return push_buf_result(L, mm_monoid_describe(&m, &b), &b);
}

/* Adds core.state, core.describe_monoid and the murmur.state class to the
 * module on top. */
void mm_lua_state_register(lua_State *L)
{
	static const luaL_Reg state_methods[] = {
		{"add", l_state_add},
		{"merge", l_state_merge},
		{"encode", l_state_encode},
		{"json", l_state_json},
		{"is_identity", l_state_is_identity},
		{NULL, NULL},
	};

	mm_lua_new_class(L, STATE_MT, state_methods, l_state_gc);
	lua_pushcfunction(L, l_state_new);
	lua_setfield(L, -2, "state");
	lua_pushcfunction(L, l_describe_monoid);
	lua_setfield(L, -2, "describe_monoid");
}
