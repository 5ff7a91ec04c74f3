/*
 * core_lua.h: what the other murmur.core files (explain_lua.c, ...) share
 * with core_lua.c. Loop thread only, like every murmur.core function.
 */
#ifndef MM_CORE_LUA_H
#define MM_CORE_LUA_H

#include <lauxlib.h>
#include <lua.h>

#include "../core/pipeline.h"
#include "../lib/options.h"

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

/* Registers metatable `name` with methods as __index and gc as __gc. */
void mm_lua_new_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc);

#endif
