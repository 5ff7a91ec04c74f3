/* serve_lua.h: murmur.core.serve, the query server of `murmur serve`. */
#ifndef MM_SERVE_LUA_H
#define MM_SERVE_LUA_H

#include <lua.h>

void mm_lua_serve_register(lua_State *L);

#endif
