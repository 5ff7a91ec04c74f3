/* alloc.c: the counting, limited Lua allocator (see alloc.h). */
#include "alloc.h"

#include <stdlib.h>

static uint64_t mem_used, mem_limit, mem_refusals;

void *mm_lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	void *q;

	(void)ud;
	if (ptr == NULL)
		osize = 0;
	if (nsize == 0) {
		free(ptr);
		mem_used -= osize;
		return NULL;
	}
	/* Shrinking never fails (Lua relies on it). */
	if (mem_limit && nsize > osize && mem_used + (nsize - osize) > mem_limit) {
		mem_refusals++;
		return NULL;
	}
	q = realloc(ptr, nsize);
	if (q == NULL) {
		if (nsize > osize)
			mem_refusals++;
		return nsize <= osize ? ptr : NULL;
	}
	mem_used = mem_used - osize + nsize;
	return q;
}

void mm_lua_mem_set_limit(uint64_t bytes)
{
	mem_limit = bytes;
}

uint64_t mm_lua_mem_limit(void)
{
	return mem_limit;
}

uint64_t mm_lua_mem_used(void)
{
	return mem_used;
}

uint64_t mm_lua_mem_refusals(void)
{
	return mem_refusals;
}
