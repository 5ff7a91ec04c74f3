/*
 * funnel.h: the one way C calls Lua (luv's luv_cfpcall, minus its exit).
 *
 * mm_lua_call runs the function below its nargs arguments under pcall with a
 * traceback handler. On error it logs "<what>: <message>\n<traceback>" with the
 * script's file:line, counts the error, pops everything it pushed and returns
 * MM_ELUA; it never exits the process and always leaves the stack as it was
 * minus the function and arguments (plus nresults on success).
 * Loop thread only (the thread that owns the lua_State).
 */
#ifndef MM_FUNNEL_H
#define MM_FUNNEL_H

#include <lua.h>
#include <stdint.h>

int mm_lua_call(lua_State *L, int nargs, int nresults, const char *what);

/* Errors counted by mm_lua_call since start-up. */
uint64_t mm_lua_errors(void);

/* The message of the last error caught by mm_lua_call (without traceback). */
const char *mm_lua_last_error(void);

#endif
