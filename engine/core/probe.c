/* probe.c: a child process under CPU, memory and wall-clock limits (see probe.h). */
#define _GNU_SOURCE
#include "probe.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../lib/error.h"

#define PROBE_OUT_MAX (1u << 20)

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* AddressSanitizer reserves terabytes of address space for its shadow memory
 * at start, so a sanitized child under an address-space limit dies before
 * main(): sanitized test builds (make check) probe without RLIMIT_AS. */
#if defined(__SANITIZE_ADDRESS__)
#define MM_PROBE_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MM_PROBE_SANITIZED 1
#endif
#endif
#ifndef MM_PROBE_SANITIZED
#define MM_PROBE_SANITIZED 0
#endif

/* In the child after fork: the limits, a process group of its own, fd 3 to
 * the caller and nothing else inherited. Async-signal-safe calls only (the
 * parent of an exec'd child may have other threads, e.g. librdkafka's).
 * Returns 0, or -1 when the child must give up (_exit(127)). */
static int child_setup(const mm_probe_limits_t *lim, int wfd)
{
	struct rlimit rl;
	int null_fd;

	if (lim->cpu_s > 0) {
		rl.rlim_cur = (rlim_t)lim->cpu_s;
		rl.rlim_max = (rlim_t)lim->cpu_s + 1;
		setrlimit(RLIMIT_CPU, &rl);
	}
	if (lim->as_bytes > 0 && !MM_PROBE_SANITIZED) {
		rl.rlim_cur = rl.rlim_max = (rlim_t)lim->as_bytes;
		setrlimit(RLIMIT_AS, &rl);
	}
	rl.rlim_cur = rl.rlim_max = 0;
	setrlimit(RLIMIT_CORE, &rl);
	/* Its own process group: Ctrl-C at start-up reaches the caller, which
	 * decides, not the probe (whose death by SIGINT would read as a script
	 * that crashed the VM). It dies with the caller. */
	setpgid(0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* Default dispositions: the parent's ignored signals stay ignored
	 * across exec (and its handlers across fork), and SIGXCPU must be able
	 * to kill. A crash must end the child by its signal, which the caller
	 * reports as one, even where a handler was installed (a sanitized
	 * build's, for a forked copy). */
	signal(SIGXCPU, SIG_DFL);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGSEGV, SIG_DFL);
	signal(SIGBUS, SIG_DFL);
	if (wfd != 3) {
		if (dup2(wfd, 3) < 0)
			return -1;
	} else if (fcntl(3, F_SETFD, 0) < 0) {
		return -1;
	}
	null_fd = open("/dev/null", O_RDWR);
	if (null_fd < 0)
		return -1;
	for (int fd = 0; fd < 3; fd++)
		if (null_fd != fd)
			dup2(null_fd, fd);
	/* Nothing else is inherited: no store, socket or lock file. */
#ifdef SYS_close_range
	if (syscall(SYS_close_range, 4u, ~0u, 0u) != 0)
#endif
	{
		long max = sysconf(_SC_OPEN_MAX);

		for (long fd = 4; fd < (max > 0 && max < 65536 ? max : 65536); fd++)
			close((int)fd);
	}
	return 0;
}

/*
 * Waits up to ms for the child (which closed its output) to exit, without
 * sleeping a fixed slice: hot reload runs the probe on the loop thread, and
 * a child exits within a millisecond of closing its output. A pidfd becomes
 * readable when the process exits; without pidfd_open (Linux < 5.3) a poll
 * on nothing waits 5 ms between checks.
 */
static void wait_exit(pid_t pid, int64_t ms)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);
	struct pollfd pfd = {.fd = fd, .events = POLLIN};

	if (ms > 100)
		ms = 100;
	if (fd < 0) {
		poll(NULL, 0, ms < 5 ? (int)ms : 5);
		return;
	}
	poll(&pfd, 1, (int)ms);
	close(fd);
}

/* Waits for the child pid writing on rfd (closed here) and fills res. */
static void probe_wait(pid_t pid, int rfd, const mm_probe_limits_t *lim, int (*tick)(void *arg),
		       void *arg, mm_probe_result_t *res)
{
	int wstatus = 0, eof = 0, killed = 0, cancelled = 0;
	int64_t deadline = lim->wall_ms > 0 ? mono_ms() + lim->wall_ms : INT64_MAX;
	struct rusage ru = {0};

	for (;;) {
		int64_t now = mono_ms();
		struct pollfd pfd = {.fd = rfd, .events = POLLIN};
		pid_t w;

		if (tick && tick(arg) != 0 && !killed) {
			kill(pid, SIGKILL);
			killed = cancelled = 1;
		}
		if (now >= deadline && !killed) {
			kill(pid, SIGKILL);
			killed = 1;
		}
		if (eof || killed) {
			/* Reap; after SIGKILL this returns at once. */
			w = wait4(pid, &wstatus, killed ? 0 : WNOHANG, &ru);
			if (w == pid)
				break;
			if (w < 0 && errno != EINTR)
				break;
			if (!killed)
				wait_exit(pid, deadline - now);
			continue;
		}
		if (poll(&pfd, 1, (int)(deadline - now < 100 ? deadline - now : 100)) > 0) {
			char buf[4096];
			ssize_t n = read(rfd, buf, sizeof(buf));

			if (n > 0 && res->out.len + (size_t)n <= PROBE_OUT_MAX)
				mm_buf_append(&res->out, buf, (size_t)n);
			else if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
				eof = 1;
		}
	}
	close(rfd);
	if (cancelled && !WIFEXITED(wstatus)) {
		res->status = MM_PROBE_CANCELLED;
		res->signal = SIGKILL;
	} else if (killed && !(WIFEXITED(wstatus))) {
		res->status = MM_PROBE_TIMEOUT;
		res->signal = SIGKILL;
	} else if (WIFSIGNALED(wstatus)) {
		res->status = MM_PROBE_SIGNALED;
		res->signal = WTERMSIG(wstatus);
	} else {
		res->status = MM_PROBE_EXITED;
		res->code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 1;
	}
	res->cpu_ms = (int64_t)ru.ru_utime.tv_sec * 1000 + ru.ru_utime.tv_usec / 1000 +
			      (int64_t)ru.ru_stime.tv_sec * 1000 + ru.ru_stime.tv_usec / 1000;
}

/* Forks with a close-on-exec pipe; in the child, after child_setup, runs
 * argv (execve) when child is NULL, else child(carg) and exits with what it
 * returns. The parent waits (probe_wait). */
static int probe_start(char *const argv[], char *const envp[], int (*child)(void *carg),
		       void *carg, const mm_probe_limits_t *lim, int (*tick)(void *arg),
		       void *arg, mm_probe_result_t *res)
{
	int fds[2];
	pid_t pid;

	memset(res, 0, sizeof(*res));
	if (pipe2(fds, O_CLOEXEC) != 0)
		return mm_diag_set(MM_EIO, "cannot create a pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return mm_diag_set(MM_EIO, "cannot start a child process: %s", strerror(errno));
	}
	if (pid == 0) {
		if (child_setup(lim, fds[1]) != 0)
			_exit(127);
		if (child == NULL) {
			execve(argv[0], argv, envp);
			_exit(127);
		}
		_exit(child(carg));
	}
	close(fds[1]);
	probe_wait(pid, fds[0], lim, tick, arg, res);
	return 0;
}

int mm_probe_run(char *const argv[], char *const envp[], const mm_probe_limits_t *lim,
		 int (*tick)(void *arg), void *arg, mm_probe_result_t *res)
{
	return probe_start(argv, envp, NULL, NULL, lim, tick, arg, res);
}

/* Field 20 of /proc/self/stat. The command name (field 2) may hold spaces
 * and parentheses: field 3 starts after its last ')' and one space. */
int mm_probe_thread_count(void)
{
	char buf[1024], *p;
	int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC), field = 2;
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	if ((p = strrchr(buf, ')')) == NULL)
		return -1;
	for (p++; *p != '\0' && field < 20; p++)
		if (*p == ' ' && p[1] != ' ')
			field++;
	return field == 20 ? atoi(p) : -1;
}

int mm_probe_fork(int (*child)(void *carg), void *carg, const mm_probe_limits_t *lim,
		  int (*tick)(void *arg), void *arg, mm_probe_result_t *res)
{
	memset(res, 0, sizeof(*res));
	if (mm_probe_thread_count() != 1)
		return mm_diag_set(MM_EAGAIN, "this process has other threads: a copy of it could "
					       "inherit locks they hold");
	return probe_start(NULL, NULL, child, carg, lim, tick, arg, res);
}
