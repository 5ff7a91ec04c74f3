/*
 * core_lua.h: what the other murmur.core files (store_lua.c, state_lua.c,
 * sys_lua.c, explain_lua.c, ...) share with core_lua.c. Loop thread only, like every murmur.core function.
 */
#ifndef MM_CORE_LUA_H
#define MM_CORE_LUA_H

#include <lauxlib.h>
#include <lua.h>

#include "../core/pipeline.h"
#include "../lib/options.h"
#include "../monoid/monoid.h"
#include "../store/store.h"

/* Pushes nil, "ENAME: message", "ENAME" for err (the diagnostics slot's
 * message when it holds err) and returns 3. */
int mm_lua_push_diag(lua_State *L, int err);

/* Reads a pipeline definition table (runner.cfg_of's) at index 2 into c,
 * without an engine. Returns 0, or pushes the failure triple and returns its
 * count (c is then freed). The caller owns c on success. */
int mm_lua_read_pipeline_config(lua_State *L, mm_pipeline_config_t *c);

/* Reads the string-keyed options table at index t into kv[0..max) (values
 * as strings, kept alive by the table); raises on a malformed table. */
int mm_lua_read_kv(lua_State *L, int t, mm_kv_t *kv, size_t max, size_t *n);

/* Pushes nil, "ENAME: message", "ENAME" (detail, or err's text when detail
 * is NULL or empty) and returns 3. */
int mm_lua_push_fail(lua_State *L, int err, const char *detail);

/* Reads a monoid spec {name=..., k=..., capacity=..., fpr=..., max_size=...,
 * float=...} at index t into m. Returns 0 or a negative MM_E* code (details
 * in the diagnostics slot); raises when t is not a table. */
int mm_lua_read_monoid(lua_State *L, int t, mm_monoid_t *m);

/* Sets the per-command counters of a cache (cache_get, ...) into the table
 * on top; nothing for a store without MM_STORE_CAP_CACHE. */
void mm_lua_push_cache_stats(lua_State *L, const mm_store_t *st);

/* Sets field name of the table on top of L to the number v. */
#define MM_LUA_SET_NUM(name, v)                      \
	do {                                         \
		lua_pushnumber(L, (lua_Number)(v));  \
		lua_setfield(L, -2, name);           \
	} while (0)

/* Each adds its part of murmur.core (functions, and the classes they
 * create) to the module table on top: store_lua.c, state_lua.c, sys_lua.c. */
void mm_lua_store_register(lua_State *L);
void mm_lua_state_register(lua_State *L);
void mm_lua_sys_register(lua_State *L);

/* Registers metatable `name` with methods as __index and gc as __gc. */
void mm_lua_new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc);

#endif
