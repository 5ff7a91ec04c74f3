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
 * Loop thread only (the thread that owns the lua_State). The FFI
 * declarations of mm_lua_mem_t and mm_lua_mem are in lua/murmur/cdef.lua.
 */
#ifndef MM_LUA_ALLOC_H
#define MM_LUA_ALLOC_H

#include <stddef.h>
#include <stdint.h>

/* The lua_Alloc function; ud is unused. */
void *mm_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

/* Sets the Lua heap limit in bytes (0: no limit, the default). */
void mm_lua_mem_set_limit(uint64_t bytes);

/* The allocator's counters. */
typedef struct mm_lua_mem {
	uint64_t used;     /* bytes the Lua heap holds now */
	uint64_t limit;    /* the limit in bytes, 0 for none */
	uint64_t refusals; /* allocations refused at the limit since start-up */
} mm_lua_mem_t;

/* The counters, updated in place by every allocation: the Lua path reads
 * them through this pointer (volatile on its side) around each record, a
 * load where a call per read would cost a compiled trace a call and its
 * register spills. Owned by alloc.c, valid for the life of the process. */
const mm_lua_mem_t *mm_lua_mem(void);

#endif
