/*
 * hugemap.h: zeroed memory for large arrays: on transparent huge pages for
 * arrays read at random, on small pages for arrays read in order and for
 * indexes within the TLB's reach.
 *
 * From 1 MiB on, an array read at random (the aggregation table's index)
 * is mapped on a 2 MiB boundary, in whole huge pages, with huge pages asked
 * for (madvise MADV_HUGEPAGE, which the kernel may refuse: small pages are
 * still correct): on small pages each of its reads also missed the TLB, and
 * one huge page takes one fault for 512 small ones. Smaller arrays come
 * from calloc.
 *
 * A fresh huge page is not always cheap, though. On the VMs this project
 * is measured on, the guest hands free memory of 2 MiB and more back to the
 * host (virtio-balloon free page reporting, about two seconds after it is
 * freed), and a huge page is always such a block: touched first, it took
 * 5.3 ms a page (the host backing it anew), against 0.19 ms for one freed
 * moments before and 0.9 ms for 2 MiB of small pages, which mostly come
 * from smaller free blocks that are never handed back (doc/performance-journal.md,
 * "Dedup ids: arrays read in order on small pages"). So an array written
 * and read in order, whose reads the TLB does not limit, is on small pages
 * (mm_small_grow). So too is an index read at random that fits the TLB's
 * reach on small pages (1 500 to 3 000 entries of 4 KiB: mm_index_renew
 * below MM_HUGE_INDEX): the pending ids' slots and the marks' filter, 2
 * and 4 MiB in the bench, cost no measurable time on small pages in runs
 * back to back, where after an idle pause their huge pages' first touch
 * cost 25 to 69 ms of a 440 to 520 ms run with ids (doc/performance-journal.md,
 * "Dedup ids: indexes within the TLB's reach on small pages").
 *
 * An array that grows (mm_huge_grow, mm_small_grow) is a mapping moved by
 * mremap: the kernel moves its pages, huge ones whole, instead of copying
 * them, where a realloc'd array took a fault per 4 KiB when first written.
 *
 * Ownership: the caller frees with mm_huge_free and the same size (a
 * growable array with mm_huge_drop). Any thread.
 */
#ifndef MM_HUGEMAP_H
#define MM_HUGEMAP_H

#include <stddef.h>

#define MM_HUGE_PAGE ((size_t)2 << 20)
#define MM_HUGE_MIN (MM_HUGE_PAGE / 2) /* mm_huge_alloc maps from this size on */
#define MM_HUGE_INDEX ((size_t)8 << 20) /* mm_index_renew asks for huge pages from this size on */

/* bytes of zeroed memory (aligned to 2 MiB from MM_HUGE_MIN on), or NULL. */
void *mm_huge_alloc(size_t bytes);

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

/* mm_huge_grow for an array written and read in order (a flush's marks and
 * deltas, pending entries): the same, on small pages. Free it with
 * mm_huge_drop. */
void *mm_small_grow(void *p, size_t old, size_t bytes);

/* Resizes p, which mm_index_renew(.., old) returned (or NULL with old 0),
 * to bytes >= old of zeroes: the contents are not kept. For an index read
 * at random that its set rebuilds as it grows (pending ids' slots, the
 * marks' Bloom filter): on small pages below MM_HUGE_INDEX, on huge pages
 * from there (the top of this file says why). The pages it has are kept
 * (moved by mremap when it must grow), and only the part past them is new
 * memory, where a fresh mapping at every doubling touched new pages twice
 * the index's final size. Returns the array, which may have moved, or NULL
 * (p is then left as it was). Free it with mm_huge_drop(.., bytes). */
void *mm_index_renew(void *p, size_t old, size_t bytes);

/* Releases p (NULL is a no-op), which mm_huge_grow, mm_small_grow or
 * mm_index_renew(.., bytes) returned. */
void mm_huge_drop(void *p, size_t bytes);

/* Releases p (NULL is a no-op), which mm_huge_alloc(bytes) returned. */
void mm_huge_free(void *p, size_t bytes);

#endif
