/*
 * heap.h: glibc malloc's thresholds for a long-running aggregation process.
 *
 * By default glibc maps every allocation above 128 KiB on its own and
 * gives it back at free, raising that threshold as mapped chunks are freed
 * (up to 32 MiB), and returns the top of the heap to the kernel once 128
 * KiB of it are free. A worker's flushes allocate and free the same
 * megabytes every 100 000 events (sort arrays, LMDB's dirty pages, the
 * merge's sketches), so each flush first-touches fresh pages again: a page
 * fault each, several microseconds on a virtual machine
 * (doc/performance-journal.md, "glibc's thresholds set by mallopt").
 *
 * mm_heap_tune sets a fixed mmap threshold of 4 MiB (what is smaller comes
 * from the heap and is reused) and a trim threshold of 64 MiB (the heap
 * keeps up to 64 MiB of free top). Both were measured: larger mmap
 * thresholds keep freed flush buffers in the heap and raise the peak RSS
 * past the memory target; either parameter alone turns glibc's dynamic
 * threshold off and costs more faults than it saves.
 *
 * It also keeps every thread on the one main arena (M_ARENA_MAX 1). By
 * default each thread that allocates gets an arena of its own, and the
 * flush runs on whichever of the pool's threads is free: each of their
 * arenas first-touches the same megabytes (LMDB's dirty pages, the marks'
 * runs), and holds them apart from the others. With one arena the pages
 * one flush freed serve the next whatever thread runs it: 1 000 to 8 000
 * fewer faults per 2 million events and a lower peak RSS (127-131 MB
 * against 141-146 MB for page_views at 950 034 keys). Small allocations
 * stay in each thread's tcache without the arena's lock; the loop thread
 * and the pool's threads rarely allocate large blocks at once.
 *
 * On request (MURMUR_MALLOC=hugepages) it also puts `murmur run`'s heap
 * on transparent huge pages, as glibc's tunable glibc.malloc.hugetlb=1
 * would (a tunable is read only when a process is exec'd, and the worker
 * is forked): the heap is grown once at start by MM_HEAP_HUGE_RESERVE of
 * address space, which the pad makes glibc take in one brk, and that range
 * is marked MADV_HUGEPAGE (the kernel's default mode, "madvise", gives
 * huge pages only where asked). The heap then faults 2 MiB at a time
 * instead of 4 KiB: 3 000 faults where unique_visitors made 8 000, and
 * about 10% less CPU (doc/performance-journal.md, "the heap on huge pages"). The
 * reserve stays below the trim threshold, so a free never gives it back.
 *
 * It is not the default because each of those faults clears 2 MiB at
 * once, on the loop thread that touched it. On a virtual machine whose
 * memory the host backs on first touch (Firecracker, as CI's machines;
 * any overcommitted host) that is 4-10 ms a fault, measured here, against
 * 13 us for a small page, whatever little of the 2 MiB the heap uses: a
 * CI run saw the loop blocked 78.7 ms (dynamodb_looplag_spec, bound 50
 * ms), where small pages never passed 16 ms. It cost `murmur lambda`'s
 * cold start 5-8 ms of CPU too, so only `murmur run` takes it even when
 * asked. On a host with resident memory and a throughput-bound worker,
 * the operator may choose it.
 *
 * The operator keeps glibc's own behaviour with MURMUR_MALLOC=default.
 * An operator who tunes malloc through GLIBC_TUNABLES (any glibc.malloc.
 * tunable, e.g. glibc.malloc.hugetlb=1) is in charge of it too: mallopt
 * would override those tunables, so nothing is set then. Called once,
 * first thing in main, before any thread exists.
 */
#ifndef MM_HEAP_H
#define MM_HEAP_H

#include <stddef.h>

#define MM_HEAP_MMAP_THRESHOLD ((size_t)4 << 20)
#define MM_HEAP_TRIM_THRESHOLD ((size_t)64 << 20)
#define MM_HEAP_HUGE_RESERVE ((size_t)48 << 20)

_Static_assert(MM_HEAP_HUGE_RESERVE < MM_HEAP_TRIM_THRESHOLD,
	       "the huge reserve must stay below the trim threshold, or a free trims it");

/* setting is MURMUR_MALLOC's value, tunables GLIBC_TUNABLES' (either may
 * be NULL): NULL or "" sets murmur's thresholds unless tunables names a
 * glibc.malloc. tunable; "hugepages" sets them too, and reserves the heap's
 * huge pages when run is non-zero (the process is `murmur run`); "default"
 * leaves glibc's. Returns 1 when the thresholds were set, 0 when glibc's
 * were left, or MM_EINVAL for any other setting with a message for the
 * operator in err. */
int mm_heap_tune(const char *setting, const char *tunables, int run, char *err, size_t errlen);

#endif
