/* metrics_lua.h: murmur.core's side of /metrics (see metrics_lua.c). Adds
 * core.metrics and core.metrics_reload to the module table on top of the
 * stack, and fills the process-wide mm_metrics_t's version and Lua error
 * counter. */
#ifndef MM_METRICS_LUA_H
#define MM_METRICS_LUA_H

#include <lua.h>

void mm_lua_metrics_register(lua_State *L, const char *version);

#endif
