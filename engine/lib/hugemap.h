/*
 * hugemap.h: zeroed memory for large arrays, on transparent huge pages.
 *
 * From 1 MiB on, an array is mapped on a 2 MiB boundary, in whole huge
 * pages, with huge pages asked for (madvise MADV_HUGEPAGE, which the kernel
 * may refuse: small pages are still correct). A fresh 4 KiB page costs a
 * page fault when first touched, 6 to 10 us on the bench machine, and an
 * array read at random (a hash index, a Bloom filter) also misses the TLB
 * on small pages; one huge page takes one fault for 512 small ones and was
 * zeroed in about 0.12 ms (doc/performance.md), so an array of 1 MiB or
 * more is cheaper on a huge page of which it leaves up to half unused.
 * Smaller arrays come from calloc.
 *
 * An array that grows (mm_huge_grow) is a mapping moved by mremap: the
 * kernel moves its pages, huge ones whole, instead of copying them, and
 * past 2 MiB it is on huge pages too, where a realloc'd array took a fault
 * per 4 KiB when first written.
 *
 * Ownership: the caller frees with mm_huge_free and the same size (a
 * growable array with mm_huge_drop). Any thread.
 */
#ifndef MM_HUGEMAP_H
#define MM_HUGEMAP_H

#include <stddef.h>

#define MM_HUGE_PAGE ((size_t)2 << 20)
#define MM_HUGE_MIN (MM_HUGE_PAGE / 2) /* mm_huge_alloc maps from this size on */

/* bytes of zeroed memory (aligned to 2 MiB from MM_HUGE_MIN on), or NULL. */
void *mm_huge_alloc(size_t bytes);

/* Resizes p, which mm_huge_alloc(old) returned (or NULL with old 0), to
 * bytes >= old of zeroes: the contents are not kept. A mapping (old of
 * MM_HUGE_MIN or more) keeps its pages, moved by mremap when it must grow,
 * and only the part past them is new memory; a smaller array is freed and
 * bytes allocated. For an index that a set rebuilds at each doubling: a
 * fresh mapping at every doubling made each generation's index touch new
 * pages twice its final size, and on the bench machine a first touch costs
 * more than the zeroing (doc/performance.md). Returns the array, which may
 * have moved, or NULL (p is then left as it was). Free it with
 * mm_huge_free(.., bytes). */
void *mm_huge_renew(void *p, size_t old, size_t bytes);

/* A growable array (pending entries that a set keeps from one use to the
 * next): grows p, which mm_huge_grow(.., old) returned (or NULL with old 0),
 * to bytes >= old. Such an array is always a mapping of its own, never
 * malloc'd, so that every growth is an mremap, which moves the pages
 * instead of copying them (a copy of a realloc'd block into a huge
 * mapping cost as much as the rest of the growth in `make perfgate`, which
 * counts a `rep movsb` a byte); from MM_HUGE_PAGE on it asks for huge
 * pages as mm_huge_alloc's. The first old bytes are kept, the rest is
 * zero. Returns the array, which may have moved, or NULL (p is then left
 * as it was). Free it with mm_huge_drop(p, bytes), not mm_huge_free. */
void *mm_huge_grow(void *p, size_t old, size_t bytes);

/* Releases p (NULL is a no-op), which mm_huge_grow(.., bytes) returned. */
void mm_huge_drop(void *p, size_t bytes);

/* Releases p (NULL is a no-op), which mm_huge_alloc(bytes) returned. */
void mm_huge_free(void *p, size_t bytes);

#endif
