/*
 * arena.h: a bump allocator for data that dies together, such as everything
 * one query-server request decodes and builds (the request message, the
 * response message, their strings and arrays).
 *
 * Allocations come from chunks owned by the arena and are never freed one by
 * one; mm_arena_reset keeps the first chunk for the next use and frees the
 * rest, mm_arena_free frees everything. A zeroed struct is an empty arena.
 *
 * Pure C: any thread, one thread at a time per arena.
 */
#ifndef MM_ARENA_H
#define MM_ARENA_H

#include <stddef.h>

typedef struct mm_arena_chunk mm_arena_chunk_t;

typedef struct mm_arena {
	mm_arena_chunk_t *chunks; /* newest first */
	size_t chunk;             /* a chunk's least size; 0: 8 KiB. For an
	                           * arena taking many small allocations
	                           * between resets (the pending dedup ids) */
	int keep;                 /* reset keeps every chunk of the least size
	                           * for the allocations after it: set by an
	                           * arena that fills about as much between
	                           * each reset (the pending dedup ids), whose
	                           * freed chunks were faulted in again */
	mm_arena_chunk_t *spare;  /* those kept chunks, empty */
} mm_arena_t;

#define MM_ARENA_ALIGN 16

struct mm_arena_chunk {
	mm_arena_chunk_t *next;
	size_t used, cap;
	_Alignas(MM_ARENA_ALIGN) unsigned char data[];
};

/* mm_arena_alloc when the newest chunk has no room (or any request). */
void *mm_arena_alloc_slow(mm_arena_t *a, size_t n);

/* n bytes aligned for any type, or NULL when out of memory (n may be 0).
 * Inline while the newest chunk has room: the pending dedup ids take one
 * allocation a record. */
static inline void *mm_arena_alloc(mm_arena_t *a, size_t n)
{
	mm_arena_chunk_t *c = a->chunks;
	size_t need = (n + MM_ARENA_ALIGN - 1) & ~(size_t)(MM_ARENA_ALIGN - 1);
	void *p;

	if (c == NULL || need < n || c->cap - c->used < need)
		return mm_arena_alloc_slow(a, n);
	p = c->data + c->used;
	c->used += need;
	return p;
}

/* As mm_arena_alloc, zero-filled. */
void *mm_arena_calloc(mm_arena_t *a, size_t n);

/* A NUL-terminated copy of p[0..n), or NULL. */
char *mm_arena_strndup(mm_arena_t *a, const char *p, size_t n);

/* Forgets every allocation; keeps one chunk for reuse, or with keep set,
 * every chunk of the least size. */
void mm_arena_reset(mm_arena_t *a);

/* Frees every chunk. */
void mm_arena_free(mm_arena_t *a);

#endif
