/*
 * json_lua.h: JSON <-> Lua values, for the murmur.core module.
 *
 * Decoding (the slow path: the runtime only builds Lua tables when a
 * pipeline's Lua code asks for the whole event) maps
 *   object -> table; array -> table whose metatable is the shared array
 *   marker (registry["murmur.json.array"], also murmur.core.array_mt), so
 *   that [] and {} survive a round trip; null -> the null sentinel (a NULL
 *   lightuserdata, murmur.core.null); number -> Lua number (a double), except
 *   integers beyond +-2^53 that fit int64, which have no exact double: those
 *   become LuaJIT int64_t cdata (9007199254740993LL), exact; string ->
 *   string with escapes decoded (\u0000 gives an embedded NUL byte).
 * Any JSON value is accepted at the top level, not only objects.
 *
 * Encoding maps tables with the array metatable, or whose keys are exactly
 * 1..n (n >= 1), to arrays; any other table to an object, whose keys (strings,
 * or numbers written as JSON would write them) are sorted bytewise so the
 * output is deterministic; an empty table without the array metatable to {}.
 * Integral numbers below 2^63 in magnitude are written exactly, others with
 * %.17g; int64_t and uint64_t cdata as their exact digits; nil and the null sentinel are written as null; strings that are not
 * UTF-8 get U+FFFD for each bad sequence.
 *
 * Failures follow luv's convention: the functions return nil, "ENAME: detail",
 * "ENAME" (e.g. nil, "EJSON: json: unexpected character 'x' at offset 17",
 * "EJSON"); they raise only for misuse (a non-string to decode, no argument
 * to encode) and for Lua's own out-of-memory error. The Lua stack is left
 * balanced either way, and no C memory is lost when Lua raises: the scratch
 * buffers belong to a garbage-collected userdata.
 *
 * All functions run on the thread that owns the lua_State.
 */
#ifndef MM_JSON_LUA_H
#define MM_JSON_LUA_H

#include <lua.h>

/* The registry key of the array metatable. */
#define MM_LUA_JSON_ARRAY_MT "murmur.json.array"

/* json_decode(s): decodes the JSON text s. Returns the value, or nil, msg,
 * code. It and json_encode are closures over the upvalues that
 * mm_lua_json_register gives them: call them through that table. */
int mm_lua_json_decode(lua_State *L);

/* json_encode(v): encodes v as JSON text. Returns the string, or nil, msg,
 * code: ETYPE for values JSON cannot hold (functions, userdata, keys that are
 * neither strings nor numbers), ERANGE for NaN and infinities, EJSON for
 * nesting deeper than MM_JSON_MAX_DEPTH, EINVAL for cycles, for tables with
 * the array metatable that have a non-index key or are overly sparse (more
 * than 2n+16 slots for n elements; holes are written as null), and for keys
 * that collide once converted to strings ([1] and ["1"]). */
int mm_lua_json_encode(lua_State *L);

/* Pushes the null sentinel (a NULL lightuserdata). */
void mm_lua_json_push_null(lua_State *L);

/* Sets json_decode, json_encode, null and array_mt in the table at the top of
 * the stack (creating the array metatable on first use). Leaves the stack as
 * it found it. */
void mm_lua_json_register(lua_State *L);

#endif
