/* funnel.c: the pcall funnel (see funnel.h). */
#include "funnel.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "../lib/log.h"
#include "../lib/error.h"

static uint64_t lua_errors;
static char last_error[1024];

static int traceback(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);

	if (msg == NULL) {
		if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
			return 1;
		msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
	}
	luaL_traceback(L, L, msg, 1);
	return 1;
}

int mm_lua_call(lua_State *L, int nargs, int nresults, const char *what)
{
	int base = lua_gettop(L) - nargs; /* index of the function */
	int rc;

	lua_pushcfunction(L, traceback);
	lua_insert(L, base);
	rc = lua_pcall(L, nargs, nresults, base);
	lua_remove(L, base);
	if (rc == 0)
		return 0;
	lua_errors++;
	{
		const char *msg = lua_tostring(L, -1);
		const char *nl;

		if (msg == NULL)
			msg = "(no message)";
		nl = strchr(msg, '\n');
		snprintf(last_error, sizeof(last_error), "%.*s", nl ? (int)(nl - msg) : (int)strlen(msg),
			 msg);
		mm_log(MM_LOG_ERROR, "lua", "%s: %s", what, msg);
	}
	lua_pop(L, 1);
	return mm_diag_set(MM_ELUA, "%s", last_error);
}

uint64_t mm_lua_errors(void)
{
	return lua_errors;
}

const char *mm_lua_last_error(void)
{
	return last_error;
}
