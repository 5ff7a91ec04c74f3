/*
 * hugemap.c: see hugemap.h. A large array is mapped with one huge page to
 * spare and both ends trimmed, which leaves it on a 2 MiB boundary and
 * whole huge pages long, where the kernel can back it with huge pages.
 */
#define _GNU_SOURCE
#include "hugemap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* bytes rounded up to the system's page size, which munmap works in. */
static size_t page_round(size_t bytes)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return (bytes + page - 1) & ~(page - 1);
}

/* bytes rounded up to whole huge pages: the kernel backs only a 2 MiB
 * range that the mapping covers whole with a huge page. */
static size_t huge_round(size_t bytes)
{
	return (bytes + MM_HUGE_PAGE - 1) & ~(MM_HUGE_PAGE - 1);
}

/* The length of a growable array's mapping: a page at least, whole huge
 * pages from MM_HUGE_PAGE on (a 2 MiB range that the mapping does not
 * cover whole stays on small pages). */
static size_t grow_len(size_t bytes)
{
	return bytes < MM_HUGE_PAGE ? page_round(bytes ? bytes : 1) : huge_round(bytes);
}

void *mm_huge_alloc(size_t bytes)
{
	uintptr_t raw, start, end;
	size_t total;
	void *p;

	if (bytes < MM_HUGE_MIN)
		return calloc(1, bytes ? bytes : 1);
	if (bytes > SIZE_MAX / 2)
		return NULL;
	total = huge_round(bytes) + MM_HUGE_PAGE;
	p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	raw = (uintptr_t)p;
	start = (raw + MM_HUGE_PAGE - 1) & ~(uintptr_t)(MM_HUGE_PAGE - 1);
	end = start + huge_round(bytes);
	if (start > raw)
		munmap(p, start - raw);
	if (raw + total > end)
		munmap((void *)end, raw + total - end);
#ifdef MADV_HUGEPAGE
	(void)madvise((void *)start, end - start, MADV_HUGEPAGE);
#endif
	return (void *)start;
}

/* mm_huge_grow and mm_small_grow: huge pages asked for from MM_HUGE_PAGE on
 * when huge, refused when not. */
static void *grow(void *p, size_t old, size_t bytes, int huge)
{
	void *q;

	if (bytes > SIZE_MAX / 2)
		return NULL;
	if (p != NULL && grow_len(bytes) <= grow_len(old))
		return p;
	if (p == NULL)
		q = mmap(NULL, grow_len(bytes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			 -1, 0);
	else
		q = mremap(p, grow_len(old), grow_len(bytes), MREMAP_MAYMOVE);
	if (q == MAP_FAILED)
		return NULL;
#ifdef MADV_HUGEPAGE
	/* The kernel places a mapping of 2 MiB or more on a 2 MiB boundary
	 * (Linux 6.18 did for every growth tried: doc/performance-journal.md), and
	 * moves huge pages whole; the advice stays with the mapping. */
	if (huge && bytes >= MM_HUGE_PAGE)
		(void)madvise(q, grow_len(bytes), MADV_HUGEPAGE);
	/* Where the kernel puts every mapping on huge pages it can (THP
	 * "always"), an array read in order is kept off them. */
	if (!huge)
		(void)madvise(q, grow_len(bytes), MADV_NOHUGEPAGE);
#endif
	return q;
}

void *mm_huge_grow(void *p, size_t old, size_t bytes)
{
	return grow(p, old, bytes, 1);
}

void *mm_small_grow(void *p, size_t old, size_t bytes)
{
	return grow(p, old, bytes, 0);
}

void *mm_index_renew(void *p, size_t old, size_t bytes)
{
	void *q = grow(p, old, bytes, bytes >= MM_HUGE_INDEX);

	/* Past the first old bytes the mapping was never written. */
	if (q != NULL)
		memset(q, 0, old);
	return q;
}

void mm_huge_drop(void *p, size_t bytes)
{
	if (p != NULL)
		munmap(p, grow_len(bytes));
}

void mm_huge_free(void *p, size_t bytes)
{
	if (p == NULL)
		return;
	if (bytes < MM_HUGE_MIN)
		free(p);
	else
		munmap(p, huge_round(bytes));
}
