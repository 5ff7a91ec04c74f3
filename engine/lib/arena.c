/*
 * arena.c: chunked bump allocation (see arena.h). A chunk is at least
 * the arena's chunk size (ARENA_CHUNK unless set); a larger request gets a chunk of its own size, so one
 * big allocation does not waste the rest of a normal chunk.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"

#define ARENA_CHUNK 8192
#define ARENA_ALIGN MM_ARENA_ALIGN

void *mm_arena_alloc_slow(mm_arena_t *a, size_t n)
{
	mm_arena_chunk_t *c = a->chunks;
	size_t need = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
	void *p;

	if (need < n)
		return NULL;
	if (c == NULL || c->cap - c->used < need) {
		size_t least = a->chunk ? a->chunk : ARENA_CHUNK;
		size_t cap = need > least ? need : least;

		if (cap > SIZE_MAX - sizeof(*c))
			return NULL;
		if (cap == least && a->spare != NULL) {
			c = a->spare;
			a->spare = c->next;
		} else if ((c = malloc(sizeof(*c) + cap)) == NULL) {
			return NULL;
		}
		c->used = 0;
		c->cap = cap;
		/* A big private chunk goes behind the current one, which may
		 * still have room for the small allocations that follow. */
		if (cap > least && a->chunks != NULL) {
			c->next = a->chunks->next;
			a->chunks->next = c;
		} else {
			c->next = a->chunks;
			a->chunks = c;
		}
	}
	p = c->data + c->used;
	c->used += need;
	return p;
}

void *mm_arena_calloc(mm_arena_t *a, size_t n)
{
	void *p = mm_arena_alloc(a, n);

	if (p != NULL)
		memset(p, 0, n);
	return p;
}

char *mm_arena_strndup(mm_arena_t *a, const char *p, size_t n)
{
	char *s = n < SIZE_MAX ? mm_arena_alloc(a, n + 1) : NULL;

	if (s != NULL) {
		if (n)
			memcpy(s, p, n);
		s[n] = '\0';
	}
	return s;
}

void mm_arena_reset(mm_arena_t *a)
{
	mm_arena_chunk_t *keep = NULL, *c = a->chunks, *next;
	size_t least = a->chunk ? a->chunk : ARENA_CHUNK;

	for (; c != NULL; c = next) {
		next = c->next;
		if (keep == NULL && c->cap == least) {
			keep = c;
			continue;
		}
		if (a->keep && c->cap == least) {
			c->next = a->spare;
			a->spare = c;
			continue;
		}
		free(c);
	}
	if (keep != NULL) {
		keep->used = 0;
		keep->next = NULL;
	}
	a->chunks = keep;
}

void mm_arena_free(mm_arena_t *a)
{
	mm_arena_chunk_t *c = a->chunks, *next;

	for (; c != NULL; c = next) {
		next = c->next;
		free(c);
	}
	for (c = a->spare; c != NULL; c = next) {
		next = c->next;
		free(c);
	}
	a->chunks = a->spare = NULL;
}
