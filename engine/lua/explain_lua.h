/* explain_lua.h: murmur.core's explainer, the dry run behind
 * `murmur check --input` (see explain_lua.c). Adds core.explainer to the
 * module table on top of the stack. */
#ifndef MM_EXPLAIN_LUA_H
#define MM_EXPLAIN_LUA_H

#include <lua.h>

void mm_lua_explain_register(lua_State *L);

#endif
