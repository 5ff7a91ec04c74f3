/*
 * heap.c: glibc malloc's thresholds and the heap's huge pages (heap.h says
 * which and why).
 */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "error.h"
#include "heap.h"

/* glibc's own top pad (what the heap grows by beyond a request), put back
 * once the reserve is made. */
#define HEAP_TOP_PAD ((size_t)128 << 10)
/* A block larger than the heap's top at start-up, below the mmap
 * threshold: its malloc makes the heap grow, by it and the pad. */
#define HEAP_GROW_BLOCK ((size_t)1 << 20)

/*
 * Grows the heap once by MM_HEAP_HUGE_RESERVE (address space only: no page
 * of it is touched) and marks what it grew by MADV_HUGEPAGE. The growth is
 * found by the break before and after the malloc that forces it; a heap
 * that cannot grow by brk (glibc then maps its memory elsewhere), or a
 * malloc that is not glibc's, leaves the break where it was and nothing is
 * marked. A failed madvise (no transparent huge pages in this kernel) only
 * leaves small pages.
 */
static void heap_reserve_huge(void)
{
	void *volatile block;
	uintptr_t lo, hi;

	mallopt(M_TOP_PAD, (int)MM_HEAP_HUGE_RESERVE);
	lo = (uintptr_t)sbrk(0);
	block = malloc(HEAP_GROW_BLOCK);
	hi = (uintptr_t)sbrk(0);
	free(block);
	mallopt(M_TOP_PAD, (int)HEAP_TOP_PAD);
	if (lo == (uintptr_t)-1 || hi == (uintptr_t)-1 || hi <= lo)
		return;
	lo = (lo + 4095) & ~(uintptr_t)4095;
	if (hi > lo)
		(void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
}

int mm_heap_tune(const char *setting, const char *tunables, int run, char *err, size_t errlen)
{
	int huge = setting != NULL && strcmp(setting, "hugepages") == 0;

	if (setting != NULL && strcmp(setting, "default") == 0)
		return 0;
	if (setting != NULL && *setting != '\0' && !huge) {
		snprintf(err, errlen,
			 "MURMUR_MALLOC=%s is not a setting: unset it for murmur's thresholds, "
			 "'hugepages' adds huge pages, 'default' keeps glibc's",
			 setting);
		return MM_EINVAL;
	}
	if (tunables != NULL && strstr(tunables, "glibc.malloc.") != NULL)
		return 0;
	/* mallopt fails only for values out of its range, which these are not;
	 * a libc without it would not have linked. */
	mallopt(M_MMAP_THRESHOLD, (int)MM_HEAP_MMAP_THRESHOLD);
	mallopt(M_TRIM_THRESHOLD, (int)MM_HEAP_TRIM_THRESHOLD);
	mallopt(M_ARENA_MAX, 1);
	if (huge && run)
		heap_reserve_huge();
	return 1;
}
