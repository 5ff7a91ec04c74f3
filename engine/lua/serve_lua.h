/* serve_lua.h: murmur.core.serve, the query server of `murmur serve`. */
#ifndef MM_SERVE_LUA_H
#define MM_SERVE_LUA_H

#include <lua.h>

#include "../net/server.h"

void mm_lua_serve_register(lua_State *L);

/* Reads the server options of a core.serve / e:listen table at index t into
 * opt (strings stay owned by the table; cors is filled, up to max_cors). */
void mm_lua_serve_options(lua_State *L, int t, mm_server_options_t *opt, const char **cors,
			  size_t max_cors);

/* The table's result_cache_ms (0 if absent): see mm_query_cache. */
uint64_t mm_lua_serve_cache_ms(lua_State *L, int t);

#endif
