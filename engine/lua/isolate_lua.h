/* isolate_lua.h: murmur.core's probe, heartbeat, lua_memory and errinj
 * (see isolate_lua.c). Adds them to the module table on top of the stack. */
#ifndef MM_ISOLATE_LUA_H
#define MM_ISOLATE_LUA_H

#include <lua.h>
#include <uv.h>

void mm_lua_isolate_register(lua_State *L);

/* engine:probe(argv, set_env, unset_env, limits, fn): core.probe's child on
 * loop's thread pool; the arguments are at stack index 2..6 of L shifted to
 * 1..5 by the caller. Returns the count of values pushed (true, or nil, err). */
int mm_lua_probe_async(lua_State *L, uv_loop_t *loop);

#endif
