/*
 * looplag.h: the loop-lag probe. A repeating timer on the loop notes how
 * much later than due it fires: with nothing blocking the loop that is
 * about a millisecond; a callback that blocks (synchronous I/O, a sleep, a
 * long user function) delays every timer by as long as it runs. The probe
 * keeps the largest lag since start and the largest of the recent window
 * (per-second maxima over the last MM_LOOP_LAG_WINDOW_S seconds), for
 * `murmur status` and the engine's counters.
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

typedef struct mm_loop_lag {
	uv_timer_t timer;
	uint64_t due_ns;                        /* when the next firing is due */
	uint64_t max_ns;                        /* largest lag since start */
	uint64_t slot_ns[MM_LOOP_LAG_WINDOW_S]; /* largest lag per second, a ring */
	uint64_t slot_sec;                      /* the second of the newest slot */
} mm_loop_lag_t;

/* Starts measuring on loop (cannot fail: a timer needs no resources). */
void mm_loop_lag_start(mm_loop_lag_t *lag, uv_loop_t *loop);

/* Closes the timer; close_cb (may be NULL) runs from the loop. The counters
 * stay readable. */
void mm_loop_lag_close(mm_loop_lag_t *lag, uv_close_cb close_cb);

/* The largest lag since start, and over the last MM_LOOP_LAG_WINDOW_S
 * seconds before now_ns (uv_hrtime()), in ns. */
uint64_t mm_loop_lag_max_ns(const mm_loop_lag_t *lag);
uint64_t mm_loop_lag_recent_ns(const mm_loop_lag_t *lag, uint64_t now_ns);

#endif
