/* isolate_lua.h: murmur.core's probe, heartbeat, lua_memory and errinj
 * (see isolate_lua.c). Adds them to the module table on top of the stack. */
#ifndef MM_ISOLATE_LUA_H
#define MM_ISOLATE_LUA_H

#include <lua.h>

void mm_lua_isolate_register(lua_State *L);

#endif
