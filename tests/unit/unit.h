/*
 * unit.h: the tiny C unit-test runner. Each tests/unit/test_*.c is one
 * executable: it defines tests with TEST(name) and lists them in main() with
 * RUN(name); output is TAP ("ok 3 - name" / "not ok 4 - name"), the exit code
 * is the number of failed tests (capped at 1 by UNIT_DONE()).
 *
 * CHECK(cond) records a failure with file:line and continues the test;
 * REQUIRE(cond) also returns from the test.
 */
#ifndef MM_UNIT_H
#define MM_UNIT_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int unit_failed_tests, unit_test_no, unit_cur_failed;

#define TEST(name) static void test_##name(void)

#define CHECK(cond)                                                                 \
	do {                                                                        \
		if (!(cond)) {                                                      \
			unit_cur_failed++;                                          \
			printf("#   %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
		}                                                                   \
	} while (0)

#define REQUIRE(cond)                                                               \
	do {                                                                        \
		if (!(cond)) {                                                      \
			unit_cur_failed++;                                          \
			printf("#   %s:%d: required: %s\n", __FILE__, __LINE__, #cond); \
			return;                                                     \
		}                                                                   \
	} while (0)

#define CHECK_EQ_INT(a, b)                                                          \
	do {                                                                        \
		long long unit_a_ = (long long)(a), unit_b_ = (long long)(b);       \
		if (unit_a_ != unit_b_) {                                           \
			unit_cur_failed++;                                          \
			printf("#   %s:%d: %s == %lld, expected %s == %lld\n", __FILE__, \
			       __LINE__, #a, unit_a_, #b, unit_b_);                 \
		}                                                                   \
	} while (0)

#define RUN(name)                                                                   \
	do {                                                                        \
		unit_cur_failed = 0;                                                \
		test_##name();                                                      \
		unit_test_no++;                                                     \
		if (unit_cur_failed)                                                \
			unit_failed_tests++;                                        \
		printf("%sok %d - %s\n", unit_cur_failed ? "not " : "", unit_test_no, #name); \
		fflush(stdout);                                                     \
	} while (0)

#define UNIT_DONE()                                                                 \
	do {                                                                        \
		printf("1..%d\n", unit_test_no);                                    \
		return unit_failed_tests ? 1 : 0;                                   \
	} while (0)

/* xorshift64, the fixed-seed generator of the random tests: the next value
 * of the caller's state (never 0), so that each test file keeps its own
 * sequence and may reseed it. */
static inline uint64_t unit_xorshift64(uint64_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 7;
	*state ^= *state << 17;
	return *state;
}

#endif
