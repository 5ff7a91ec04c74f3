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
 *
 * The blocked figure: /proc/thread-self/schedstat holds three numbers, the
 * thread's time on a CPU, its time waiting on a run queue (run_delay) and
 * its time slices. The file is opened once on the loop thread (the
 * descriptor keeps naming that thread) and read with one pread per firing,
 * every 50 ms: a few microseconds.
 *
 * The bound by the time out of the poll: libuv's UV_METRICS_IDLE_TIME
 * accumulates the time its poll slept, measured before any event's
 * callback runs. The interval between two firings less the idle time
 * accrued in it is the time the loop thread spent out of the poll (in
 * callbacks, blocking calls or waiting for a CPU between them); a firing
 * cannot have been delayed by callbacks for longer than that. The metric
 * costs libuv one epoll_wait(0) before a poll that would sleep, and two
 * clock reads; a loop busy with events polls with a zero timeout and pays
 * nothing. Where the metric cannot be turned on, only run_delay is
 * subtracted.
 */
#include "looplag.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NS_PER_S 1000000000ull
#define NS_PER_MS 1000000ull

static void lag_note(mm_loop_lag_series_t *sr, uint64_t now, uint64_t ns)
{
	uint64_t sec = now / NS_PER_S, s;

	/* Seconds skipped since the newest slot had no firing: they are 0. */
	for (s = sr->slot_sec + 1; s <= sec && s <= sr->slot_sec + MM_LOOP_LAG_WINDOW_S; s++)
		sr->slot_ns[s % MM_LOOP_LAG_WINDOW_S] = 0;
	if (sec > sr->slot_sec)
		sr->slot_sec = sec;
	if (ns > sr->slot_ns[sec % MM_LOOP_LAG_WINDOW_S])
		sr->slot_ns[sec % MM_LOOP_LAG_WINDOW_S] = ns;
	if (ns > sr->max_ns)
		sr->max_ns = ns;
}

/* The loop thread's run_delay in ns, or 0 when it cannot be read. */
static uint64_t run_delay(int fd)
{
	char buf[96], *p;
	ssize_t n;

	if (fd < 0 || (n = pread(fd, buf, sizeof(buf) - 1, 0)) <= 0)
		return 0;
	buf[n] = '\0';
	p = strchr(buf, ' ');
	return p ? strtoull(p + 1, NULL, 10) : 0;
}

static void on_lag_timer(uv_timer_t *t)
{
	mm_loop_lag_t *lag = t->data;
	uint64_t now = uv_hrtime(), late = now > lag->due_ns ? now - lag->due_ns : 0;
	uint64_t rd = run_delay(lag->sched_fd), waited = rd > lag->run_delay_ns ? rd - lag->run_delay_ns : 0;
	uint64_t block = late > waited ? late - waited : 0;

	if (lag->idle_metric) {
		uint64_t idle = uv_metrics_idle_time(t->loop), idled = idle - lag->idle_ns;
		uint64_t busy = now - lag->fired_ns > idled ? now - lag->fired_ns - idled : 0;

		if (block > busy)
			block = busy;
		lag->idle_ns = idle;
	}
	lag->fired_ns = now;
	lag->run_delay_ns = rd;
	lag_note(&lag->lag, now, late);
	lag_note(&lag->block, now, block);
	lag->due_ns = now + MM_LOOP_LAG_INTERVAL_MS * NS_PER_MS;
}

void mm_loop_lag_start(mm_loop_lag_t *lag, uv_loop_t *loop)
{
	memset(lag, 0, sizeof(*lag));
	uv_timer_init(loop, &lag->timer);
	lag->timer.data = lag;
	lag->lag.slot_sec = lag->block.slot_sec = uv_hrtime() / NS_PER_S;
	lag->sched_fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
	lag->run_delay_ns = run_delay(lag->sched_fd);
	lag->idle_metric = uv_loop_configure(loop, UV_METRICS_IDLE_TIME) == 0;
	lag->idle_ns = lag->idle_metric ? uv_metrics_idle_time(loop) : 0;
	lag->fired_ns = uv_hrtime();
	lag->due_ns = lag->fired_ns + MM_LOOP_LAG_INTERVAL_MS * NS_PER_MS;
	uv_timer_start(&lag->timer, on_lag_timer, MM_LOOP_LAG_INTERVAL_MS, MM_LOOP_LAG_INTERVAL_MS);
	/* Measuring must not keep a loop alive that has nothing else to do. */
	uv_unref((uv_handle_t *)&lag->timer);
}

void mm_loop_lag_close(mm_loop_lag_t *lag, uv_close_cb close_cb)
{
	if (!uv_is_closing((uv_handle_t *)&lag->timer))
		uv_close((uv_handle_t *)&lag->timer, close_cb);
	if (lag->sched_fd >= 0)
		close(lag->sched_fd);
	lag->sched_fd = -1;
}

static uint64_t series_recent(const mm_loop_lag_series_t *sr, uint64_t now_ns)
{
	uint64_t sec = now_ns / NS_PER_S, max = 0;
	int i;

	for (i = 0; i < MM_LOOP_LAG_WINDOW_S; i++) {
		/* Slots of seconds older than the window hold stale maxima. */
		uint64_t s = sr->slot_sec - (uint64_t)i;

		if (sr->slot_sec < (uint64_t)i || s + MM_LOOP_LAG_WINDOW_S <= sec)
			continue;
		if (sr->slot_ns[s % MM_LOOP_LAG_WINDOW_S] > max)
			max = sr->slot_ns[s % MM_LOOP_LAG_WINDOW_S];
	}
	return max;
}

uint64_t mm_loop_lag_max_ns(const mm_loop_lag_t *lag)
{
	return lag->lag.max_ns;
}

uint64_t mm_loop_lag_recent_ns(const mm_loop_lag_t *lag, uint64_t now_ns)
{
	return series_recent(&lag->lag, now_ns);
}

uint64_t mm_loop_block_max_ns(const mm_loop_lag_t *lag)
{
	return lag->block.max_ns;
}

uint64_t mm_loop_block_recent_ns(const mm_loop_lag_t *lag, uint64_t now_ns)
{
	return series_recent(&lag->block, now_ns);
}
