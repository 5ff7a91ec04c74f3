/*
 * looplag.h: the loop-lag probe. A repeating timer on the loop notes how
 * much later than due it fires: with nothing blocking the loop that is
 * about a millisecond; a callback that blocks (synchronous I/O, a sleep, a
 * long user function) delays every timer by as long as it runs. The probe
 * keeps the largest lag since start and the largest of the recent window
 * (per-second maxima over the last MM_LOOP_LAG_WINDOW_S seconds), for
 * `murmur status` and the engine's counters.
 *
 * The lag also counts time the loop thread was ready to run but had no
 * CPU (a loaded machine). The "blocked" figures subtract that: each firing
 * reads how long the thread waited on a run queue since the previous one
 * (the kernel's per-thread schedstat run_delay) and removes it from the
 * lag. What remains is time the loop spent in callbacks or blocked off the
 * CPU (a sleep, a blocking read): the measure of "nothing blocks the loop"
 * that does not depend on the machine's load. Where schedstat cannot be
 * read the blocked figures equal the lag.
 *
 * The blocked figure is also never more than the time the loop spent out
 * of its poll since the previous firing (libuv's idle-time metric, which
 * the probe turns on). A timer can fire late while the loop sleeps in
 * epoll_wait with nothing to do: on a virtual machine whose host takes
 * the CPU away (steal time), an idle epoll_wait(50 ms) was seen returning
 * 16.6 ms late with no run-queue wait at all, and a CI run measured 71 ms.
 * Such lateness is the host's, not a callback's, so it is not counted.
 *
 * The probe is embedded in its owner; its timer does not keep the loop
 * alive. Loop thread only.
 */
#ifndef MM_LOOPLAG_H
#define MM_LOOPLAG_H

#include <stdint.h>
#include <uv.h>

#define MM_LOOP_LAG_INTERVAL_MS 50
#define MM_LOOP_LAG_WINDOW_S 10

/* The largest values of one measure: since start and per second (a ring). */
typedef struct mm_loop_lag_series {
	uint64_t max_ns;
	uint64_t slot_ns[MM_LOOP_LAG_WINDOW_S];
	uint64_t slot_sec;                      /* the second of the newest slot */
} mm_loop_lag_series_t;

typedef struct mm_loop_lag {
	uv_timer_t timer;
	uint64_t due_ns;                        /* when the next firing is due */
	mm_loop_lag_series_t lag;               /* lateness of the firings */
	mm_loop_lag_series_t block;             /* the same minus run-queue waits */
	int sched_fd;                           /* the loop thread's schedstat, or -1 */
	uint64_t run_delay_ns;                  /* its run_delay at the last firing */
	int idle_metric;                        /* libuv measures the loop's idle time */
	uint64_t fired_ns;                      /* when the last firing ran */
	uint64_t idle_ns;                       /* the loop's idle time then */
} mm_loop_lag_t;

/* Starts measuring on loop, from the loop thread (cannot fail: without
 * schedstat the blocked figures are the lag). */
void mm_loop_lag_start(mm_loop_lag_t *lag, uv_loop_t *loop);

/* Closes the timer; close_cb (may be NULL) runs from the loop. The counters
 * stay readable. */
void mm_loop_lag_close(mm_loop_lag_t *lag, uv_close_cb close_cb);

/* The largest lag since start, and over the last MM_LOOP_LAG_WINDOW_S
 * seconds before now_ns (uv_hrtime()), in ns. */
uint64_t mm_loop_lag_max_ns(const mm_loop_lag_t *lag);
uint64_t mm_loop_lag_recent_ns(const mm_loop_lag_t *lag, uint64_t now_ns);

/* The same for the blocked figures (lag minus run-queue waits, at most the
 * time out of the poll). */
uint64_t mm_loop_block_max_ns(const mm_loop_lag_t *lag);
uint64_t mm_loop_block_recent_ns(const mm_loop_lag_t *lag, uint64_t now_ns);

#endif
