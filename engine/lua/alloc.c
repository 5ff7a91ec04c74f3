/* alloc.c: the counting, limited Lua allocator (see alloc.h). */
#include "alloc.h"

#include <stdlib.h>

static mm_lua_mem_t mem;

void *mm_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	void *q;

	(void)ud;
	if (ptr == NULL)
		osize = 0;
	if (nsize == 0) {
		free(ptr);
		mem.used -= osize;
		return NULL;
	}
	/* Shrinking never fails (Lua relies on it). */
	if (mem.limit && nsize > osize && mem.used + (nsize - osize) > mem.limit) {
		mem.refusals++;
		return NULL;
	}
	q = realloc(ptr, nsize);
	if (q == NULL) {
		if (nsize > osize)
			mem.refusals++;
		return nsize <= osize ? ptr : NULL;
	}
	mem.used = mem.used - osize + nsize;
	return q;
}

void mm_lua_mem_set_limit(uint64_t bytes)
{
	mem.limit = bytes;
}

const mm_lua_mem_t *mm_lua_mem(void)
{
	return &mem;
}
