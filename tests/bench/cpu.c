/*
 * cpu.c: runs a command and reports what it cost, for `make bench`.
 *
 *   cpu REPORT COMMAND [ARG...]
 *
 * The command inherits stdin, stdout and stderr; when it ends, one line
 * "USER_S SYS_S MAX_RSS_KB WALL_S STATUS" is appended to the file REPORT.
 * The CPU seconds come from wait4(), so they cover the whole process: every
 * thread, and every child it waited for (murmur's supervised worker and its
 * script probes), which is what "CPU per event" means in doc/performance.md.
 * STATUS is the exit status, or 128 + the signal that ended it.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double seconds(struct timeval tv)
{
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
	struct timespec t0, t1;
	struct rusage ru;
	int status;
	pid_t pid;
	FILE *f;

	if (argc < 3) {
		fprintf(stderr, "usage: cpu REPORT COMMAND [ARG...]\n");
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid = fork();
	if (pid < 0) {
		perror("cpu: fork");
		return 1;
	}
	if (pid == 0) {
		execvp(argv[2], argv + 2);
		fprintf(stderr, "cpu: %s: %s\n", argv[2], strerror(errno));
		_exit(127);
	}
	while (wait4(pid, &status, 0, &ru) < 0)
		if (errno != EINTR) {
			perror("cpu: wait4");
			return 1;
		}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	f = fopen(argv[1], "a");
	if (f == NULL) {
		perror(argv[1]);
		return 1;
	}
	fprintf(f, "%.6f %.6f %ld %.6f %d\n", seconds(ru.ru_utime), seconds(ru.ru_stime), ru.ru_maxrss,
		(double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
		WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	fclose(f);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
