/*
 * fuzz_json_lua.c: arbitrary bytes through json_decode into Lua values and
 * back through json_encode (engine/lua/json_lua.c), on one LuaJIT state.
 *
 * fuzz-link: engine/lua/json_lua.c -lluajit-5.1
 *
 * Checked on every input:
 *   - json_decode succeeds exactly when the C scanner's SAX walk accepts
 *     the text (mm_json_parse), but for ERANGE on a number a double cannot
 *     hold and EJSON on a duplicated member name, and otherwise returns
 *     nil, a message and a code; it never
 *     raises (the call is protected: a raise is a failure);
 *   - a decoded value encodes (numbers may fail only as ERANGE, keys may
 *     collide only as EINVAL: {"1":..} next to an array-like index), and
 *     the encoding is a fixed point: decode(encode(v)) encodes to the same
 *     text;
 *   - whatever mm_json_scan_flat takes (the Lua path's field plans use it
 *     in place of json_decode: lua/murmur/fieldplan.lua), json_decode
 *     decodes into a table;
 *   - the Lua stack is balanced after every call.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/json.h"
#include "lua/json_lua.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;
static int calls;

static const mm_json_visitor_t nothing = {0};

/* The Lua heap on malloc, so that LeakSanitizer sees the pointers Lua
 * objects hold (the decoder's scratch buffer lives in a userdata); with
 * LuaJIT's own mmap'ed arena it would report them as leaks. */
static void *alloc(void *ud, void *p, size_t osize, size_t nsize)
{
	if (nsize == 0) {
		free(p);
		return NULL;
	}
	return realloc(p, nsize);
}

/* Calls json.<fn>(arg at idx) protected; leaves its results (1 or 3). */
static int call(const char *fn, int idx)
{
	int top = lua_gettop(L);

	lua_getfield(L, 1, fn);
	lua_pushvalue(L, idx);
	if (lua_pcall(L, 1, LUA_MULTRET, 0) != 0)
		abort(); /* json_decode/json_encode raised */
	return lua_gettop(L) - top;
}

/* Closes the state before LeakSanitizer's final check: GC64 LuaJIT tags the
 * pointers in its values, so objects reachable only through them would be
 * reported as leaks. */
static void close_state(void)
{
	lua_close(L);
	L = NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int n, accepted, flat, top;

	if (L == NULL) {
		if ((L = lua_newstate(alloc, NULL)) == NULL)
			abort();
		luaL_openlibs(L);
		lua_newtable(L); /* index 1: the json functions */
		mm_lua_json_register(L);
		atexit(close_state);
	}
	top = lua_gettop(L);
	accepted = mm_json_parse((const char *)data, size, &nothing, NULL) == 0;

	lua_pushlstring(L, (const char *)data, size);
	n = call("json_decode", top + 1);
	flat = mm_json_scan_flat((const char *)data, size, NULL, 0) == 1;
	if (flat && !(n == 1 && lua_istable(L, -1)))
		abort();
	if (accepted && n == 3 && lua_isnil(L, -3)) {
		/* A number a double cannot hold is refused, and so is a
		 * duplicated member name (json_lua.c, as on the C fast path). */
		const char *code = lua_tostring(L, -1), *msg = lua_tostring(L, -2);

		if (code == NULL || msg == NULL ||
		    (strcmp(code, "ERANGE") != 0 &&
		     !(strcmp(code, "EJSON") == 0 && strstr(msg, "duplicate key") != NULL)))
			abort();
	} else if (accepted != !(n == 3 && lua_isnil(L, -3))) {
		abort();
	} else if (!accepted) {
		if (!lua_isstring(L, -2) || !lua_isstring(L, -1))
			abort();
	} else {
		const char *code;
		size_t len1, len2;
		const char *s1, *s2;
		int v = lua_gettop(L);

		if (n != 1)
			abort();
		if (call("json_encode", v) == 3) {
			code = lua_tostring(L, -1);
			if (code == NULL || (strcmp(code, "ERANGE") != 0 && strcmp(code, "EINVAL") != 0))
				abort();
		} else {
			s1 = lua_tolstring(L, -1, &len1);
			if (s1 == NULL || call("json_decode", lua_gettop(L)) != 1 ||
			    call("json_encode", lua_gettop(L)) != 1)
				abort();
			s2 = lua_tolstring(L, -1, &len2);
			if (s2 == NULL || len1 != len2 || memcmp(s1, s2, len1) != 0)
				abort();
		}
	}
	lua_settop(L, top);
	if (lua_gettop(L) != 1)
		abort();
	if (++calls % 256 == 0)
		lua_gc(L, LUA_GCCOLLECT, 0);
	return 0;
}
