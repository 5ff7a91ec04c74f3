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
 * mm_probe_run blocks its caller until the child is gone; it calls tick(arg)
 * about every 100 ms while it waits, so a supervised worker can keep its
 * watchdog informed. Any thread; not async-signal-safe.
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
		 void (*tick)(void *arg), void *arg, mm_probe_result_t *res);

#endif
