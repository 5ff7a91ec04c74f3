/*
 * test_probe.c: the probe child (core/probe.c), both ways of starting it.
 *
 * Checked for mm_probe_fork, the forked copy that start-up uses instead of a
 * second exec: what the copy writes on fd 3 comes back, and its return value
 * is its exit status; only fd 3 and the standard descriptors survive into it
 * (a descriptor the caller holds is closed there); a crash is reported as
 * the signal and leaves the caller running; a copy spinning on the CPU is
 * stopped by RLIMIT_CPU (SIGXCPU or SIGKILL) and one sleeping past the
 * wall-clock limit is killed (timeout), or at once when the caller's tick
 * asks to stop waiting (cancelled); an allocation past RLIMIT_AS fails
 * in the copy only; and with a second thread running it refuses with
 * MM_EAGAIN, starting nothing. For mm_probe_run (the exec'd child that a hot
 * reload uses): a program's exit status and its output on fd 3.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/probe.h"
#include "lib/error.h"
#include "unit.h"

static const mm_probe_limits_t LIM = {.cpu_s = 1, .as_bytes = 0, .wall_ms = 10000};

static int child_writes(void *arg)
{
	const char *msg = arg;

	if (write(3, msg, strlen(msg)) < 0)
		return 2;
	return 7;
}

TEST(fork_output_and_status)
{
	mm_probe_result_t res;

	REQUIRE(mm_probe_fork(child_writes, "hello from the copy", &LIM, NULL, NULL, &res) == 0);
	CHECK_EQ_INT(res.status, MM_PROBE_EXITED);
	CHECK_EQ_INT(res.code, 7);
	CHECK(res.out.len == strlen("hello from the copy"));
	CHECK(res.out.p && memcmp(res.out.p, "hello from the copy", res.out.len) == 0);
	mm_buf_free(&res.out);
}

static int held_fd = -1;

/* 0 when the caller's descriptor is closed in the copy and 0..3 are open. */
static int child_checks_fds(void *arg)
{
	(void)arg;
	if (fcntl(held_fd, F_GETFD) != -1)
		return 1;
	for (int fd = 0; fd <= 3; fd++)
		if (fcntl(fd, F_GETFD) == -1)
			return 2;
	return 0;
}

TEST(fork_inherits_only_fd3)
{
	mm_probe_result_t res;

	int fd = open("/dev/null", O_RDONLY);

	REQUIRE(fd >= 0);
	held_fd = fcntl(fd, F_DUPFD, 10); /* above fd 3, which the copy gets */
	close(fd);
	REQUIRE(held_fd >= 10);
	REQUIRE(mm_probe_fork(child_checks_fds, NULL, &LIM, NULL, NULL, &res) == 0);
	CHECK_EQ_INT(res.status, MM_PROBE_EXITED);
	CHECK_EQ_INT(res.code, 0);
	CHECK(fcntl(held_fd, F_GETFD) != -1); /* still open here */
	close(held_fd);
	mm_buf_free(&res.out);
}

static int child_crashes(void *arg)
{
	(void)arg;
	raise(SIGSEGV);
	return 0;
}

TEST(fork_crash_ends_only_the_copy)
{
	mm_probe_result_t res;

	REQUIRE(mm_probe_fork(child_crashes, NULL, &LIM, NULL, NULL, &res) == 0);
	CHECK_EQ_INT(res.status, MM_PROBE_SIGNALED);
	CHECK_EQ_INT(res.signal, SIGSEGV);
	mm_buf_free(&res.out);
}

static int child_spins(void *arg)
{
	volatile unsigned long n = 0;

	(void)arg;
	for (;;)
		n++;
	return 0;
}

TEST(fork_cpu_limit)
{
	mm_probe_result_t res;

	REQUIRE(mm_probe_fork(child_spins, NULL, &LIM, NULL, NULL, &res) == 0);
	CHECK_EQ_INT(res.status, MM_PROBE_SIGNALED);
	CHECK(res.signal == SIGXCPU || res.signal == SIGKILL);
	/* Spent on the CPU, not waiting (rusage is sampled: not exactly 1 s). */
	CHECK(res.cpu_ms > 0);
	mm_buf_free(&res.out);
}

static int child_sleeps(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

static int ticks;

static int count_tick(void *arg)
{
	(void)arg;
	ticks++;
	return 0;
}

/* Asks to stop waiting at its third call. */
static int cancel_tick(void *arg)
{
	(void)arg;
	return ++ticks >= 3;
}

/* Killed at the wall-clock limit (the caller's heartbeat ticking while it
 * waited), or at once when the tick asks to stop waiting (no tick after
 * the one that cancelled). */
TEST(fork_wall_limit_or_cancelled)
{
	static const struct {
		int (*tick)(void *arg);
		int64_t wall_ms;
		int status;
	} cases[] = {
		{count_tick, 300, MM_PROBE_TIMEOUT},
		{cancel_tick, 60000, MM_PROBE_CANCELLED},
	};
	mm_probe_result_t res;

	for (int i = 0; i < 2; i++) {
		mm_probe_limits_t lim = {.cpu_s = 1, .wall_ms = cases[i].wall_ms};

		ticks = 0;
		REQUIRE(mm_probe_fork(child_sleeps, NULL, &lim, cases[i].tick, NULL, &res) == 0);
		CHECK_EQ_INT(res.status, cases[i].status);
		CHECK_EQ_INT(res.signal, SIGKILL);
		CHECK(cases[i].status == MM_PROBE_TIMEOUT ? ticks >= 1 : ticks == 3);
		mm_buf_free(&res.out);
	}
}

/* Sanitized builds probe without RLIMIT_AS (probe.c). */
#if !defined(__SANITIZE_ADDRESS__)
/* 0 when a 256 MiB allocation fails under the 64 MiB address-space limit. */
static int child_allocates(void *arg)
{
	char *p = malloc((size_t)256 << 20);

	(void)arg;
	if (p == NULL)
		return 0;
	memset(p, 1, (size_t)256 << 20);
	return 1;
}

TEST(fork_memory_limit)
{
	mm_probe_limits_t lim = {.cpu_s = 2, .as_bytes = (uint64_t)64 << 20, .wall_ms = 10000};
	mm_probe_result_t res;
	void *here;

	REQUIRE(mm_probe_fork(child_allocates, NULL, &lim, NULL, NULL, &res) == 0);
	CHECK_EQ_INT(res.status, MM_PROBE_EXITED);
	CHECK_EQ_INT(res.code, 0);
	mm_buf_free(&res.out);
	here = malloc((size_t)256 << 20); /* the caller's own limit is untouched */
	CHECK(here != NULL);
	free(here);
}
#endif

static int stop_thread;

static void *idle_thread(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&stop_thread, __ATOMIC_ACQUIRE))
		usleep(1000);
	return NULL;
}

TEST(fork_refused_with_threads)
{
	mm_probe_result_t res;
	pthread_t t;
	int rc = MM_EAGAIN;

	REQUIRE(pthread_create(&t, NULL, idle_thread, NULL) == 0);
	CHECK_EQ_INT(mm_probe_fork(child_writes, "x", &LIM, NULL, NULL, &res), MM_EAGAIN);
	CHECK(res.out.len == 0);
	__atomic_store_n(&stop_thread, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	/* One thread again: allowed, once the kernel has counted the joined
	 * thread out (join can return a moment before). */
	for (int i = 0; i < 5000; i++) {
		rc = mm_probe_fork(child_writes, "x", &LIM, NULL, NULL, &res);
		if (rc != MM_EAGAIN)
			break;
		usleep(1000);
	}
	REQUIRE(rc == 0);
	CHECK_EQ_INT(res.code, 7);
	mm_buf_free(&res.out);
}

TEST(run_exec)
{
	char *argv[] = {"/bin/sh", "-c", "printf probe >&3; exit 5", NULL};
	char *envp[] = {NULL};
	mm_probe_result_t res;

	REQUIRE(mm_probe_run(argv, envp, &LIM, NULL, NULL, &res) == 0);
	CHECK_EQ_INT(res.status, MM_PROBE_EXITED);
	CHECK_EQ_INT(res.code, 5);
	CHECK(res.out.len == 5 && memcmp(res.out.p, "probe", 5) == 0);
	mm_buf_free(&res.out);
}

int main(void)
{
	RUN(fork_output_and_status);
	RUN(fork_inherits_only_fd3);
	RUN(fork_crash_ends_only_the_copy);
	RUN(fork_cpu_limit);
	RUN(fork_wall_limit_or_cancelled);
#if !defined(__SANITIZE_ADDRESS__)
	RUN(fork_memory_limit);
#endif
	RUN(fork_refused_with_threads);
	RUN(run_exec);
	UNIT_DONE();
}
