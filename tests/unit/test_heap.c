/*
 * test_heap.c: glibc malloc's thresholds (engine/lib/heap.h). With
 * murmur's setting a 1 MiB block comes from the heap, not a mapping of its
 * own, the heap keeps it after free instead of trimming it, and a thread
 * allocates from the main arena instead of one of its own; with
 * MURMUR_MALLOC=default (checked in a child, before this process tunes
 * itself) the same block is a mapping of its own and the thread gets an
 * arena of its own, as glibc does by default; malloc tunables in
 * GLIBC_TUNABLES leave glibc's settings too. With MURMUR_MALLOC=hugepages
 * `murmur run`'s heap is also reserved on huge pages: a block the heap
 * serves after the tuning lies in a mapping of at least
 * MM_HEAP_HUGE_RESERVE marked MADV_HUGEPAGE ("hg" in smaps' VmFlags);
 * unset (the default), with MURMUR_MALLOC=default, or for another command
 * than `murmur run`, it is not marked (each in a child that tunes its own
 * copy of the heap). A sanitizer replaces malloc, so there only the
 * settings' parsing is checked.
 */
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/error.h"
#include "lib/heap.h"
#include "unit.h"

#if defined(__SANITIZE_ADDRESS__)
#define HEAP_REAL_MALLOC 0
#else
#define HEAP_REAL_MALLOC 1
#endif

#define BLOCK ((size_t)1 << 20)

/* Returns 1 when a fresh BLOCK is mapped on its own, 0 when the heap
 * serves it; writes it so that it is really used. */
static int block_is_mapped(void **out)
{
	size_t before = mallinfo2().hblks;
	char *p = malloc(BLOCK);

	if (p == NULL)
		return -1;
	memset(p, 1, BLOCK);
	*out = p;
	return mallinfo2().hblks > before;
}

/* A thread's allocations: with glibc's defaults they make it an arena of
 * its own. */
static void *thread_allocates(void *arg)
{
	void *blocks[64];

	(void)arg;
	for (int i = 0; i < 64; i++)
		blocks[i] = malloc(4096 + (size_t)i);
	for (int i = 0; i < 64; i++)
		free(blocks[i]);
	return NULL;
}

/* The number of arenas malloc_info reports, after a thread allocated. */
static int arenas_after_thread(void)
{
	pthread_t t;
	char *xml = NULL;
	size_t len = 0;
	FILE *f;
	int n = 0;

	if (pthread_create(&t, NULL, thread_allocates, NULL) != 0)
		return -1;
	pthread_join(t, NULL);
	f = open_memstream(&xml, &len);
	if (f == NULL)
		return -1;
	malloc_info(0, f);
	fclose(f);
	for (const char *p = xml; (p = strstr(p, "<heap nr=")) != NULL; p++)
		n++;
	free(xml);
	return n;
}

/*
 * Whether the mapping that holds addr is marked MADV_HUGEPAGE (1) or not
 * (0), and its size in *len; -1 when smaps cannot be read or does not list
 * it.
 */
static int mapping_is_huge(const void *addr, uintptr_t *len)
{
	char line[512];
	uintptr_t a = (uintptr_t)addr, lo, hi;
	int in = 0, rc = -1;
	FILE *f = fopen("/proc/self/smaps", "r");

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " ", &lo, &hi) == 2) {
			in = lo <= a && a < hi;
			if (in)
				*len = hi - lo;
			continue;
		}
		if (in && strncmp(line, "VmFlags:", 8) == 0) {
			rc = strstr(line, " hg") != NULL;
			break;
		}
	}
	fclose(f);
	return rc;
}

/* In a child: tunes the heap with setting, takes a 2 MiB block (the heap's
 * below the mmap threshold) and exits 0 when the mapping of its end is as
 * expected. Its start may lie in the heap this process had before the
 * tuning grew it (the tests before this one allocated); in murmur the
 * tuning comes first, before any heap. */
static int child_heap_huge(const char *setting, int run, int want)
{
	char err[160];
	uintptr_t len = 0;
	pid_t pid = fork();
	int status = 0;

	if (pid < 0)
		return -1;
	if (pid == 0) {
		char *p;
		int huge;

		mm_heap_tune(setting, NULL, run, err, sizeof(err));
		p = malloc((size_t)2 << 20);
		if (p == NULL)
			_exit(2);
		p[((size_t)2 << 20) - 1] = 1;
		huge = mapping_is_huge(p + ((size_t)2 << 20) - 1, &len);
		_exit(huge == want && (!want || len >= MM_HEAP_HUGE_RESERVE) ? 0 : 1);
	}
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(tuned_heap_on_huge_pages)
{
	/* A kernel without transparent huge pages refuses the advice: the
	 * heap stays on small pages, as before. */
	if (!HEAP_REAL_MALLOC || access("/sys/kernel/mm/transparent_hugepage/enabled", R_OK) != 0)
		return;
	CHECK_EQ_INT(child_heap_huge("hugepages", 1, 1), 0);
	/* Not by default (its 2 MiB first touches block the loop on a virtual
	 * machine), nor with glibc's behaviour. */
	CHECK_EQ_INT(child_heap_huge(NULL, 1, 0), 0);
	CHECK_EQ_INT(child_heap_huge("default", 1, 0), 0);
	/* Commands other than `murmur run` do not take it even when asked. */
	CHECK_EQ_INT(child_heap_huge("hugepages", 0, 0), 0);
}

TEST(default_keeps_glibc)
{
	char err[160];
	pid_t pid;
	int status = 0;

	CHECK_EQ_INT(mm_heap_tune("default", NULL, 1, err, sizeof(err)), 0);
	CHECK_EQ_INT(mm_heap_tune(NULL, "glibc.malloc.hugetlb=1", 1, err, sizeof(err)), 0);
	CHECK_EQ_INT(mm_heap_tune("", "glibc.rtld.nns=2:glibc.malloc.trim_threshold=1", 1, err,
				  sizeof(err)),
		     0);
	if (!HEAP_REAL_MALLOC)
		return;
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		void *p = NULL;

		_exit(block_is_mapped(&p) == 1 && arenas_after_thread() == 2 ? 0 : 1);
	}
	REQUIRE(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(tuned_heap_serves_and_keeps)
{
	char err[160];
	void *p = NULL;
	size_t kept;

	CHECK_EQ_INT(mm_heap_tune(NULL, NULL, 1, err, sizeof(err)), 1);
	CHECK_EQ_INT(mm_heap_tune("", "glibc.rtld.nns=2", 1, err, sizeof(err)), 1);
	CHECK_EQ_INT(mm_heap_tune("hugepages", NULL, 0, err, sizeof(err)), 1);
	CHECK_EQ_INT(mm_heap_tune("hugepages", "glibc.malloc.hugetlb=1", 1, err, sizeof(err)), 0);
	if (!HEAP_REAL_MALLOC)
		return;
	CHECK_EQ_INT(block_is_mapped(&p), 0);
	free(p);
	/* One arena: the thread allocated from the main one. */
	CHECK_EQ_INT(arenas_after_thread(), 1);
	/* The freed block is the heap's top: below the trim threshold, kept. */
	kept = mallinfo2().fordblks;
	CHECK(kept >= BLOCK);
}

TEST(bad_setting_is_refused)
{
	char err[160] = "";

	CHECK_EQ_INT(mm_heap_tune("glibc", NULL, 1, err, sizeof(err)), MM_EINVAL);
	CHECK(strstr(err, "MURMUR_MALLOC=glibc is not a setting") != NULL);
	CHECK(strstr(err, "'default'") != NULL);
	CHECK(strstr(err, "'hugepages'") != NULL);
}

int main(void)
{
	RUN(default_keeps_glibc);
	RUN(tuned_heap_on_huge_pages);
	RUN(tuned_heap_serves_and_keeps);
	RUN(bad_setting_is_refused);
	UNIT_DONE();
}
