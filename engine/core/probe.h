/*
 * probe.h: runs a command in a child process under CPU, memory and
 * wall-clock limits, and collects what it writes on its fd 3.
 *
 * Used to load pipeline scripts before the process that will run them does
 * (lua/murmur/isolate.lua): a script's top level can spend unbounded CPU in
 * one C call (a pathological string.find), allocate without bound from C, or
 * crash the Lua VM, none of which an instruction hook inside the process can
 * stop. In a child the kernel stops it: RLIMIT_CPU (SIGXCPU, then SIGKILL at
 * the hard limit), RLIMIT_AS (allocations fail), the wall-clock deadline
 * (SIGKILL), and a crash kills only the child.
 *
 * The child's stdin, stdout and stderr are /dev/null (a script's print at
 * load time is not shown twice); fd 3 is a pipe to the caller; every other
 * descriptor is closed before exec, and core dumps are off.
 *
 * Two ways to start it. mm_probe_run executes a fresh program (a second
 * start of the whole binary: dynamic linking, LuaJIT, murmur's modules).
 * mm_probe_fork runs a function in a forked copy of the caller instead,
 * which is already linked and initialised: the same limits and the same
 * separate address space, so a crash or runaway still ends only the copy,
 * at the cost of a fork instead of an exec. A copy of a process with other
 * threads may hold locks those threads held at the fork (malloc's aside),
 * so mm_probe_fork refuses when the caller is not single-threaded; the
 * caller then falls back to mm_probe_run.
 *
 * mm_probe_run blocks its caller until the child is gone; it calls tick(arg)
 * about every 100 ms while it waits, so a supervised worker can keep its
 * watchdog informed. A tick that returns non-zero ends the wait: the child
 * is killed and the status is MM_PROBE_CANCELLED (Ctrl-C while a starting
 * worker's scripts load stops it at once, not after a slow load). Any
 * thread; not async-signal-safe.
 */
#ifndef MM_PROBE_H
#define MM_PROBE_H

#include <stdint.h>

#include "../lib/buf.h"

typedef struct mm_probe_limits {
	int cpu_s;          /* RLIMIT_CPU soft limit in seconds (hard = soft + 1); 0 = none */
	uint64_t as_bytes;  /* RLIMIT_AS; 0 = none */
	int64_t wall_ms;    /* killed with SIGKILL after this long; 0 = none */
} mm_probe_limits_t;

enum mm_probe_status {
	MM_PROBE_EXITED,    /* exited by itself: code is its exit status */
	MM_PROBE_SIGNALED,  /* killed by a signal (a crash, or SIGXCPU/SIGKILL at the CPU limit) */
	MM_PROBE_TIMEOUT,   /* still running at the wall-clock deadline: killed */
	MM_PROBE_CANCELLED, /* killed because the caller's tick asked to stop waiting */
};

typedef struct mm_probe_result {
	int status;         /* enum mm_probe_status */
	int code;           /* exit status (MM_PROBE_EXITED) */
	int signal;         /* terminating signal (MM_PROBE_SIGNALED) */
	int64_t cpu_ms;     /* the child's user + system CPU time */
	mm_buf_t out;       /* what the child wrote on fd 3 (caller frees) */
} mm_probe_result_t;

/*
 * Runs argv[0] (a path; no PATH search) with argv and envp under lim.
 * Returns 0 with *res filled (whatever the child did), or MM_EIO when the
 * child could not be started (diagnostics set). res->out must be freed with
 * mm_buf_free in both cases.
 */
int mm_probe_run(char *const argv[], char *const envp[], const mm_probe_limits_t *lim,
		 int (*tick)(void *arg), void *arg, mm_probe_result_t *res);

/*
 * Runs child(carg) in a forked copy of this process under lim; the copy
 * exits with child's return value (child may also _exit itself, and must
 * never unwind into the caller's frames). Returns 0 with *res filled,
 * MM_EAGAIN when this process has more than one thread (nothing was
 * started; use mm_probe_run), or MM_EIO when the copy could not be started
 * (diagnostics set in both). res->out must be freed with mm_buf_free.
 */
int mm_probe_fork(int (*child)(void *carg), void *carg, const mm_probe_limits_t *lim,
		  int (*tick)(void *arg), void *arg, mm_probe_result_t *res);

/* The number of threads of this process (from /proc/self/stat), -1 when
 * it cannot be read. Any thread. The supervisor asks it before forking a
 * worker. */
int mm_probe_thread_count(void);

#endif
