/*
 * test_hugemap.c: large arrays on huge pages (engine/lib/hugemap.h). Below
 * 1 MiB an array comes from calloc; from 1 MiB on it starts on a 2 MiB
 * boundary; either way it is zeroed and every byte of it is writable and
 * keeps what is written (sizes that are not a page's multiple included),
 * and freeing it with its size releases it (ASan and the kernel would
 * catch a wrong length: munmap of a neighbour, or a leak). A growable
 * array keeps its bytes and is zero past them, below 2 MiB, across it and
 * above it, on huge pages or (mm_small_grow) on small ones, never huge. A
 * renewed array (mm_index_renew) is all zero at every size, and on small
 * pages below MM_HUGE_INDEX.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/hugemap.h"
#include "unit.h"

static void check_array(size_t bytes)
{
	unsigned char *p = mm_huge_alloc(bytes);
	size_t zero = 0, kept = 0;

	REQUIRE(p != NULL);
	if (bytes >= MM_HUGE_MIN)
		CHECK_EQ_INT((uintptr_t)p % MM_HUGE_PAGE, 0);
	for (size_t i = 0; i < bytes; i++)
		zero += p[i] == 0;
	CHECK_EQ_INT(zero, bytes);
	for (size_t i = 0; i < bytes; i++)
		p[i] = (unsigned char)(i * 31 + 7);
	for (size_t i = 0; i < bytes; i++)
		kept += p[i] == (unsigned char)(i * 31 + 7);
	CHECK_EQ_INT(kept, bytes);
	mm_huge_free(p, bytes);
}

TEST(sizes)
{
	size_t sizes[] = {0, 1, 4096, MM_HUGE_MIN - 1, MM_HUGE_MIN, MM_HUGE_PAGE - 1,
			  MM_HUGE_PAGE, MM_HUGE_PAGE + 100,
			  3 * MM_HUGE_PAGE + 4097, 8 * MM_HUGE_PAGE};

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		check_array(sizes[i]);
	mm_huge_free(NULL, MM_HUGE_PAGE);
}

/* Two arrays side by side: freeing one leaves the other whole. */
TEST(neighbours)
{
	size_t bytes = MM_HUGE_PAGE + 12345;
	unsigned char *a = mm_huge_alloc(bytes), *b = mm_huge_alloc(bytes);
	size_t kept = 0;

	REQUIRE(a && b);
	memset(a, 0xa5, bytes);
	memset(b, 0x5a, bytes);
	mm_huge_free(a, bytes);
	for (size_t i = 0; i < bytes; i++)
		kept += b[i] == 0x5a;
	CHECK_EQ_INT(kept, bytes);
	mm_huge_free(b, bytes);
}

/* Grows one array from nothing through the sizes a growing set takes,
 * writing each new part: every byte written is still there after each
 * growth, every added byte is zero, and it is freed with its last size. */
static void check_grow(void *(*grow)(void *, size_t, size_t))
{
	size_t sizes[] = {0, 100, 4096, 70000, MM_HUGE_PAGE - 8, MM_HUGE_PAGE + 4100,
			  3 * MM_HUGE_PAGE, 3 * MM_HUGE_PAGE, 7 * MM_HUGE_PAGE + 1, 16 * MM_HUGE_PAGE};
	unsigned char *p = NULL;
	size_t old = 0;

	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		size_t bytes = sizes[k], kept = 0, zero = 0;
		unsigned char *q = grow(p, old, bytes);

		REQUIRE(q != NULL);
		for (size_t i = 0; i < old; i++)
			kept += q[i] == (unsigned char)(i * 31 + 7);
		CHECK_EQ_INT(kept, old);
		for (size_t i = old; i < bytes; i++)
			zero += q[i] == 0;
		CHECK_EQ_INT(zero, bytes - old);
		for (size_t i = old; i < bytes; i++)
			q[i] = (unsigned char)(i * 31 + 7);
		p = q;
		old = bytes;
	}
	mm_huge_drop(p, old);
	mm_huge_drop(NULL, MM_HUGE_PAGE);
}

TEST(grow)
{
	check_grow(mm_huge_grow);
}

TEST(small_grow)
{
	check_grow(mm_small_grow);
}

/* The kB of huge pages backing the mapping that holds p (/proc/self/smaps),
 * or -1 when it is not found. */
static long anon_huge_kb(const void *p)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[256];
	int in = 0;
	long kb = -1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, ':') != NULL &&
		    line[strspn(line, "0123456789abcdef")] == '-')
			in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
		else if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb;
}

/* An array read in order is never on huge pages, whatever the kernel's
 * policy (MADV_NOHUGEPAGE): 8 MiB written whole, then grown by mremap. */
TEST(small_grow_small_pages)
{
	size_t bytes = 4 * MM_HUGE_PAGE;
	unsigned char *p = mm_small_grow(NULL, 0, bytes);

	REQUIRE(p != NULL);
	memset(p, 1, bytes);
	CHECK_EQ_INT(anon_huge_kb(p), 0);
	p = mm_small_grow(p, bytes, 2 * bytes);
	REQUIRE(p != NULL);
	memset(p, 1, 2 * bytes);
	CHECK_EQ_INT(anon_huge_kb(p), 0);
	mm_huge_drop(p, 2 * bytes);
}

/* Renews one array from nothing through the sizes an index takes as it
 * doubles, writing every byte each time: after each renewal the whole
 * array is zero and writable, it stays where it is when the size is the
 * same, it is on small pages below MM_HUGE_INDEX (an index within the
 * TLB's reach, hugemap.h), and it is freed with its last size. */
TEST(renew)
{
	size_t sizes[] = {0,
			  512,
			  65536,
			  MM_HUGE_MIN / 2,
			  MM_HUGE_MIN,
			  MM_HUGE_PAGE,
			  2 * MM_HUGE_PAGE,
			  2 * MM_HUGE_PAGE,
			  MM_HUGE_INDEX / 2,
			  MM_HUGE_INDEX,
			  2 * MM_HUGE_INDEX};
	unsigned char *p = NULL;
	size_t old = 0;

	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		size_t bytes = sizes[k], zero = 0, kept = 0;
		unsigned char *q = mm_index_renew(p, old, bytes);

		REQUIRE(q != NULL);
		if (p != NULL && bytes == old)
			CHECK(q == p);
		for (size_t i = 0; i < bytes; i++)
			zero += q[i] == 0;
		CHECK_EQ_INT(zero, bytes);
		for (size_t i = 0; i < bytes; i++)
			q[i] = (unsigned char)(i * 13 + k);
		for (size_t i = 0; i < bytes; i++)
			kept += q[i] == (unsigned char)(i * 13 + k);
		CHECK_EQ_INT(kept, bytes);
		if (bytes >= 2 * MM_HUGE_PAGE && bytes < MM_HUGE_INDEX)
			CHECK_EQ_INT(anon_huge_kb(q), 0);
		p = q;
		old = bytes;
	}
	mm_huge_drop(p, old);
}

/* A renewal too large is refused and leaves the array as it was. */
TEST(renew_too_large)
{
	size_t sizes[] = {4096, MM_HUGE_MIN, 3 * MM_HUGE_PAGE};

	for (size_t k = 0; k < 3; k++) {
		unsigned char *p = mm_index_renew(NULL, 0, sizes[k]);

		REQUIRE(p != NULL);
		p[sizes[k] - 1] = 42;
		CHECK(mm_index_renew(p, sizes[k], SIZE_MAX - 4096) == NULL);
		CHECK(mm_index_renew(p, sizes[k], SIZE_MAX / 2 + 1) == NULL);
		CHECK_EQ_INT(p[sizes[k] - 1], 42);
		mm_huge_drop(p, sizes[k]);
	}
}

/* A size too large to map is refused with NULL, not a crash. */
TEST(too_large)
{
	CHECK(mm_huge_alloc(SIZE_MAX - 4096) == NULL);
	CHECK(mm_huge_alloc(SIZE_MAX / 2 + 1) == NULL);
}

/* A growth too large is refused and leaves the array as it was. */
TEST(grow_too_large)
{
	size_t sizes[] = {4096, 3 * MM_HUGE_PAGE};

	for (size_t k = 0; k < 2; k++) {
		unsigned char *p = mm_huge_grow(NULL, 0, sizes[k]);

		REQUIRE(p != NULL);
		p[sizes[k] - 1] = 42;
		CHECK(mm_huge_grow(p, sizes[k], SIZE_MAX - 4096) == NULL);
		CHECK(mm_huge_grow(p, sizes[k], SIZE_MAX / 2 + 1) == NULL);
		CHECK_EQ_INT(p[sizes[k] - 1], 42);
		mm_huge_drop(p, sizes[k]);
	}
}

int main(void)
{
	RUN(sizes);
	RUN(neighbours);
	RUN(grow);
	RUN(small_grow);
	RUN(small_grow_small_pages);
	RUN(too_large);
	RUN(grow_too_large);
	RUN(renew);
	RUN(renew_too_large);
	UNIT_DONE();
}
