/*
 * hugemap.h: zeroed memory for large arrays, on transparent huge pages.
 *
 * From 2 MiB on, an array is mapped on a 2 MiB boundary with huge pages
 * asked for (madvise MADV_HUGEPAGE, which the kernel may refuse: small
 * pages are still correct). A fresh 4 KiB page costs a page fault when
 * first touched, about 6 us on the bench machine, and an array read at
 * random (a hash index, a Bloom filter) also misses the TLB on small pages;
 * one huge page takes one fault for 512 small ones (doc/performance.md).
 * Smaller arrays come from calloc.
 *
 * Ownership: the caller frees with mm_huge_free and the same size. Any
 * thread.
 */
#ifndef MM_HUGEMAP_H
#define MM_HUGEMAP_H

#include <stddef.h>

#define MM_HUGE_PAGE ((size_t)2 << 20)

/* bytes of zeroed memory (aligned to 2 MiB from MM_HUGE_PAGE on), or NULL. */
void *mm_huge_alloc(size_t bytes);

/* Releases p (NULL is a no-op), which mm_huge_alloc(bytes) returned. */
void mm_huge_free(void *p, size_t bytes);

#endif
