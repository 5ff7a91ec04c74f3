/*
 * supervisor.h: `murmur run` as a supervisor of one worker process.
 *
 * With the JIT on, a user function that never returns cannot be interrupted
 * from inside the worker (count hooks do not fire in compiled traces), so
 * murmur runs its pipelines in a child process and watches it from outside:
 * the supervisor restarts the worker when it crashes or when its heartbeat
 * (progress.h) is older than the watchdog deadline, and a record blamed twice
 * goes on the poison list, which the next worker sends to the dead-letter
 * destination instead of processing. Restarts resume from the last checkpoint,
 * so nothing accepted is lost; the first is immediate, and only workers that
 * keep dying young are restarted after a growing delay (supervisor.c). Signals: SIGINT/SIGTERM/SIGHUP are forwarded;
 * the supervisor exits with the worker's exit code once the worker exits
 * cleanly, or fails before its event loop runs (not retried: a script
 * error or a store that cannot be opened would fail the same way again).
 */
#ifndef MM_SUPERVISOR_H
#define MM_SUPERVISOR_H

#include <stdint.h>

typedef struct mm_supervisor_config {
	const char *data_dir;     /* progress page, poison list, pid and status files */
	int64_t watchdog_ms;      /* heartbeat age that counts as a stall */
} mm_supervisor_config_t;

/*
 * Runs the supervisor until the worker is done; returns the exit code with
 * *worker = 0. Each worker is a forked copy of the calling process (main
 * thread, no other thread running), in which mm_supervise returns 0 with
 * *worker = 1: the caller then runs the worker's path, with MURMUR_WORKER,
 * MURMUR_PROGRESS and MURMUR_SUPERVISOR_PID set, the default action for every
 * signal but SIGINT and SIGTERM (the early stop handler, engine.h) and no
 * signal blocked. cfg is not used after mm_supervise returns.
 */
int mm_supervise(const mm_supervisor_config_t *cfg, int *worker);

#endif
