/*
 * alloc.h: the Lua state's allocator, which counts and limits the Lua heap.
 *
 * main.c creates the process's one lua_State with lua_newstate(mm_lua_alloc,
 * NULL) (LuaJIT accepts a custom allocator in its GC64 builds, which Debian's
 * x86_64 LuaJIT 2.1 is). Every Lua object and string buffer goes through it,
 * also those a C library function makes (string.rep, table.concat), so a
 * limit holds inside one call: an allocation that would take the heap past the
 * limit fails and Lua raises "not enough memory" in the code that asked for
 * it. The refusal is counted, so the Lua path can tell a record that ran out
 * of memory from one whose function raised that text itself, even when a
 * pcall in the user's function swallowed the error.
 *
 * Loop thread only (the thread that owns the lua_State). The FFI functions
 * below are declared in lua/murmur/cdef.lua.
 */
#ifndef MM_LUA_ALLOC_H
#define MM_LUA_ALLOC_H

#include <stddef.h>
#include <stdint.h>

/* The lua_Alloc function; ud is unused. */
void *mm_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

/* Sets the Lua heap limit in bytes (0: no limit, the default). */
void mm_lua_mem_set_limit(uint64_t bytes);

/* The limit (0: none), the bytes the Lua heap holds now, and the number of
 * allocations refused at the limit since start-up. */
uint64_t mm_lua_mem_limit(void);
uint64_t mm_lua_mem_used(void);
uint64_t mm_lua_mem_refusals(void);

#endif
