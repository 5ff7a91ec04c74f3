/*
 * looplag.c: the loop-lag probe (see looplag.h).
 *
 * Each firing compares uv_hrtime() with when it was due (the previous
 * firing plus the interval) and records the difference. libuv schedules a
 * repeating timer from the loop's cached time at the previous firing,
 * which is never later than the hrtime read there, so the measure never
 * exceeds the real delay by more than the poll timeout's rounding (a
 * millisecond). The recent window is a ring of per-second maxima: a slot
 * is reset when its second comes round again, so reading it needs no
 * timer of its own.
 */
#include "looplag.h"

#include <string.h>

#define NS_PER_S 1000000000ull
#define NS_PER_MS 1000000ull

static void lag_note(mm_loop_lag_t *lag, uint64_t now, uint64_t ns)
{
	uint64_t sec = now / NS_PER_S, s;

	/* Seconds skipped since the newest slot had no firing: they are 0. */
	for (s = lag->slot_sec + 1; s <= sec && s <= lag->slot_sec + MM_LOOP_LAG_WINDOW_S; s++)
		lag->slot_ns[s % MM_LOOP_LAG_WINDOW_S] = 0;
	if (sec > lag->slot_sec)
		lag->slot_sec = sec;
	if (ns > lag->slot_ns[sec % MM_LOOP_LAG_WINDOW_S])
		lag->slot_ns[sec % MM_LOOP_LAG_WINDOW_S] = ns;
	if (ns > lag->max_ns)
		lag->max_ns = ns;
}

static void on_lag_timer(uv_timer_t *t)
{
	mm_loop_lag_t *lag = t->data;
	uint64_t now = uv_hrtime();

	lag_note(lag, now, now > lag->due_ns ? now - lag->due_ns : 0);
	lag->due_ns = now + MM_LOOP_LAG_INTERVAL_MS * NS_PER_MS;
}

void mm_loop_lag_start(mm_loop_lag_t *lag, uv_loop_t *loop)
{
	memset(lag, 0, sizeof(*lag));
	uv_timer_init(loop, &lag->timer);
	lag->timer.data = lag;
	lag->slot_sec = uv_hrtime() / NS_PER_S;
	lag->due_ns = uv_hrtime() + MM_LOOP_LAG_INTERVAL_MS * NS_PER_MS;
	uv_timer_start(&lag->timer, on_lag_timer, MM_LOOP_LAG_INTERVAL_MS, MM_LOOP_LAG_INTERVAL_MS);
	/* Measuring must not keep a loop alive that has nothing else to do. */
	uv_unref((uv_handle_t *)&lag->timer);
}

void mm_loop_lag_close(mm_loop_lag_t *lag, uv_close_cb close_cb)
{
	if (!uv_is_closing((uv_handle_t *)&lag->timer))
		uv_close((uv_handle_t *)&lag->timer, close_cb);
}

uint64_t mm_loop_lag_max_ns(const mm_loop_lag_t *lag)
{
	return lag->max_ns;
}

uint64_t mm_loop_lag_recent_ns(const mm_loop_lag_t *lag, uint64_t now_ns)
{
	uint64_t sec = now_ns / NS_PER_S, max = 0;
	int i;

	for (i = 0; i < MM_LOOP_LAG_WINDOW_S; i++) {
		/* Slots of seconds older than the window hold stale maxima. */
		uint64_t s = lag->slot_sec - (uint64_t)i;

		if (lag->slot_sec < (uint64_t)i || s + MM_LOOP_LAG_WINDOW_S <= sec)
			continue;
		if (lag->slot_ns[s % MM_LOOP_LAG_WINDOW_S] > max)
			max = lag->slot_ns[s % MM_LOOP_LAG_WINDOW_S];
	}
	return max;
}
