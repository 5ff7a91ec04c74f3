/*
 * supervisor.c: runs and watches the worker process (see supervisor.h).
 *
 * Everything happens on a private libuv loop: uv_spawn for the worker,
 * uv_signal for forwarding (see on_signal), one uv_timer that checks the heartbeat every
 * quarter of the watchdog deadline (it reads a shared page; there is nothing
 * else to wait on), and a timer for restart backoff. Bookkeeping is written
 * to DATA/supervisor.json (restarts, crashes, stalls, poison records) and the
 * poison list to DATA/poison.jsonl, both read by `murmur status` and the
 * worker.
 */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <uv.h>

#include "../codec/json.h"
#include "../lib/buf.h"
#include "../lib/error.h"
#include "../lib/file.h"
#include "../lib/log.h"
#include "../lib/time.h"
#include "engine.h"
#include "progress.h"

#define SUSPECTS_MAX 64
/* Restart policy: a worker that dies is restarted at once, from its last
 * checkpoint, because one crash (a bad record, an OOM kill, an operator's
 * kill -9) says nothing about the next worker and every millisecond of the
 * restart is a millisecond nothing is read. Only a worker that keeps dying
 * young (each one lived less than YOUNG_MS) is restarted after a delay, from
 * BACKOFF_MIN_MS doubling to BACKOFF_MAX_MS, so a crash loop does not burn
 * the machine; one worker that lives YOUNG_MS ends the streak. */
#define YOUNG_MS 10000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 10000

typedef struct suspect {
	char source[256];
	uint64_t offset;
	int count;
} suspect_t;

typedef struct supervisor {
	const mm_supervisor_config_t *cfg;
	uv_loop_t loop;
	uv_process_t proc;
	uv_timer_t watchdog, backoff, forward;
	uv_signal_t sigs[3];
	mm_progress_t *page;
	char page_path[PATH_MAX];
	char poison_path[PATH_MAX];
	int running, stopping, exit_code, done;
	int64_t started_ms, backoff_ms;
	int young_deaths;        /* consecutive deaths of workers that died young */
	uint64_t restarts, crashes, stalls, poisoned;
	int worker_stalled;
	int startup_stalled;     /* killed for never sending a heartbeat */
	int forward_sig;         /* the stop signal on_forward passes on */
	int startup_crashes;     /* consecutive deaths by signal before a heartbeat */
	suspect_t suspects[SUSPECTS_MAX];
	int nsuspects;
} supervisor_t;

static void spawn_worker(supervisor_t *sv);

/* Replaces supervisor.json; a failure (a full disk) keeps the previous one. */
static void write_state(supervisor_t *sv)
{
	char path[PATH_MAX];
	mm_buf_t b = {0};

	snprintf(path, sizeof(path), "%s/supervisor.json", sv->cfg->data_dir);
	if (mm_buf_printf(&b,
			  "{\"pid\":%d,\"worker_pid\":%d,\"restarts\":%llu,\"crashes\":%llu,"
			  "\"stalls\":%llu,\"poison\":%llu,\"watchdog_ms\":%lld,"
			  "\"restart_delay_ms\":%lld,\"young_deaths\":%d}\n",
			  (int)getpid(), sv->running ? sv->proc.pid : 0,
			  (unsigned long long)sv->restarts, (unsigned long long)sv->crashes,
			  (unsigned long long)sv->stalls, (unsigned long long)sv->poisoned,
			  (long long)sv->cfg->watchdog_ms, (long long)sv->backoff_ms,
			  sv->young_deaths) == 0 &&
	    mm_file_write_atomic(path, b.p, b.len) != 0)
		mm_log(MM_LOG_WARN, "supervisor", "%s", mm_diag_msg());
	mm_buf_free(&b);
}

/* Blames the record the worker was processing; twice blamed = poison. */
static void blame(supervisor_t *sv, const char *why)
{
	suspect_t *s = NULL;
	mm_buf_t line = {0};
	FILE *f;

	if (!sv->page->in_record || sv->page->source[0] == '\0') {
		mm_log(MM_LOG_WARN, "supervisor", "worker %s outside any record", why);
		return;
	}
	for (int i = 0; i < sv->nsuspects; i++)
		if (sv->suspects[i].offset == sv->page->offset &&
		    strncmp(sv->suspects[i].source, sv->page->source, sizeof(s->source)) == 0)
			s = &sv->suspects[i];
	if (s == NULL) {
		s = &sv->suspects[sv->nsuspects < SUSPECTS_MAX ? sv->nsuspects++ : SUSPECTS_MAX - 1];
		memcpy(s->source, sv->page->source, sizeof(s->source));
		s->source[sizeof(s->source) - 1] = '\0';
		s->offset = sv->page->offset;
		s->count = 0;
	}
	s->count++;
	mm_log(MM_LOG_WARN, "supervisor", "worker %s on the record at offset %llu of %s (%d time%s)",
	       why, (unsigned long long)s->offset, s->source, s->count, s->count > 1 ? "s" : "");
	if (s->count != 2)
		return;
	mm_buf_printf(&line, "{\"source\":");
	mm_json_quote(s->source, strlen(s->source), &line);
	mm_buf_printf(&line, ",\"offset\":%llu,\"reason\":\"%s twice\"}\n",
		      (unsigned long long)s->offset, why);
	f = fopen(sv->poison_path, "a");
	if (f) {
		fwrite(line.p, 1, line.len, f);
		fflush(f);
		fdatasync(fileno(f));
		fclose(f);
		sv->poisoned++;
		mm_log(MM_LOG_ERROR, "supervisor",
		       "the record at offset %llu of %s %s the worker twice: it goes to the "
		       "dead-letter destination and the pipeline moves on",
		       (unsigned long long)s->offset, s->source, why);
	}
	mm_buf_free(&line);
}

static void on_backoff(uv_timer_t *t)
{
	supervisor_t *sv = t->data;

	if (!sv->stopping)
		spawn_worker(sv);
}

/* The delay before restarting a worker that died after living `lived` ms
 * (the policy atop this file); counts the streak of young deaths. */
static int64_t restart_delay(supervisor_t *sv, int64_t lived)
{
	int64_t ms = 0;

	if (lived >= YOUNG_MS)
		sv->young_deaths = 0;
	if (sv->young_deaths > 0) {
		ms = BACKOFF_MIN_MS;
		for (int i = 1; i < sv->young_deaths && ms < BACKOFF_MAX_MS; i++)
			ms *= 2;
		if (ms > BACKOFF_MAX_MS)
			ms = BACKOFF_MAX_MS;
	}
	if (lived < YOUNG_MS)
		sv->young_deaths++;
	return ms;
}

static void on_proc_closed(uv_handle_t *h)
{
	(void)h;
}

/* A stop before the worker's loop ran: its sources start with the loop, so
 * nothing was read and the stop is complete; said in the words of the
 * worker's own stop. */
static void log_early_stop(int signum)
{
	mm_log(MM_LOG_INFO, "supervisor",
	       "signal %d before the worker started: stopping (flush, checkpoint, exit); nothing was "
	       "read yet, so there is nothing to flush",
	       signum);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int term_signal)
{
	supervisor_t *sv = p->data;
	int started = sv->page->heartbeat_ms != 0;
	int64_t lived = mm_now_ms() - sv->started_ms;

	sv->running = 0;
	uv_close((uv_handle_t *)p, on_proc_closed);
	if (sv->stopping && !started && (term_signal == SIGINT || term_signal == SIGTERM)) {
		/* A stop signal to the process group (Ctrl-C) that reached the
		 * worker between its exec and main(), where uv_spawn had reset the
		 * default action and the early handler (engine.h) was not yet
		 * installed. Its sources start with its loop, so nothing was read:
		 * the stop is complete, not a crash. */
		log_early_stop(term_signal);
		sv->exit_code = 0;
		sv->done = 1;
		uv_stop(&sv->loop);
		return;
	}
	if (sv->stopping || (term_signal == 0 && status == 0)) {
		/* The poison list names records by source id and offset, which a
		 * later run (a rotated file, new stdin) may reuse: it lives for one
		 * supervised run and goes once the worker finished cleanly. */
		if (term_signal == 0 && status == 0)
			unlink(sv->poison_path);
		sv->exit_code = term_signal ? 128 + term_signal : (int)status;
		sv->done = 1;
		uv_stop(&sv->loop);
		return;
	}
	if (sv->startup_stalled) {
		/* Nothing was read yet and a restart would hang the same way. */
		mm_log(MM_LOG_ERROR, "supervisor",
		       "the worker hung while starting (before its event loop ran); a restart "
		       "would hang the same way, so the run ends with status 1");
		sv->stalls++;
		sv->exit_code = 1;
		sv->done = 1;
		uv_stop(&sv->loop);
		return;
	}
	if (sv->page->fatal && term_signal == 0) {
		mm_log(MM_LOG_ERROR, "supervisor",
		       "the worker stopped with status %lld on an error a restart would hit again "
		       "(its message is above), so the run ends",
		       (long long)status);
		sv->exit_code = status ? (int)status : 1;
		sv->done = 1;
		uv_stop(&sv->loop);
		return;
	}
	if (!started && (term_signal == 0 || ++sv->startup_crashes >= 5)) {
		/* The worker failed before its loop ran (a script error, a store
		 * that cannot be opened, ...): restarting would fail the same way. */
		sv->exit_code = term_signal ? 1 : (int)status;
		sv->done = 1;
		uv_stop(&sv->loop);
		return;
	}
	if (started)
		sv->startup_crashes = 0;
	if (sv->worker_stalled) {
		sv->stalls++;
		sv->worker_stalled = 0;
	} else {
		sv->crashes++;
		if (term_signal)
			mm_log(MM_LOG_ERROR, "supervisor", "worker died from signal %d", term_signal);
		else
			mm_log(MM_LOG_ERROR, "supervisor", "worker exited with status %lld",
			       (long long)status);
		blame(sv, "crashed");
	}
	sv->restarts++;
	sv->backoff_ms = restart_delay(sv, lived);
	if (sv->backoff_ms == 0)
		mm_log(MM_LOG_INFO, "supervisor", "restarting the worker from its last checkpoint now");
	else
		mm_log(MM_LOG_WARN, "supervisor",
		       "restarting the worker from its last checkpoint in %lld ms (%d workers in a row "
		       "died within %d s of starting)",
		       (long long)sv->backoff_ms, sv->young_deaths, YOUNG_MS / 1000);
	write_state(sv);
	uv_timer_start(&sv->backoff, on_backoff, (uint64_t)sv->backoff_ms, 0);
}

/* How long a starting worker may go without a sign of life: the watchdog
 * deadline, twice over, and never less than 5 s (a start-up opens the store
 * and connects sources, which a loaded machine makes slow). */
static int64_t startup_deadline_ms(const supervisor_t *sv)
{
	int64_t ms = sv->cfg->watchdog_ms * 2;

	return ms < 5000 ? 5000 : ms;
}

static void on_watchdog(uv_timer_t *t)
{
	supervisor_t *sv = t->data;
	int64_t hb = sv->page->heartbeat_ms;

	if (!sv->running || sv->worker_stalled)
		return;
	if (hb == 0) {
		/* Starting: loading scripts (each in a probe child with its own
		 * limits, which stamps alive_ms while it waits), opening the store
		 * and the sources. A worker that shows no sign of life for the
		 * start-up deadline is stuck before its loop ever ran. */
		int64_t since = sv->page->alive_ms > sv->started_ms ? sv->page->alive_ms : sv->started_ms;
		int64_t limit = startup_deadline_ms(sv);

		if (mm_now_ms() - since > limit) {
			mm_log(MM_LOG_ERROR, "supervisor",
			       "worker %d did not start: no heartbeat and no sign of life for %lld ms "
			       "(start-up deadline %lld ms); killing it",
			       sv->proc.pid, (long long)(mm_now_ms() - since), (long long)limit);
			sv->startup_stalled = 1;
			sv->worker_stalled = 1;
			uv_process_kill(&sv->proc, SIGKILL);
		}
		return;
	}
	if (mm_now_ms() - hb > sv->cfg->watchdog_ms) {
		mm_log(MM_LOG_ERROR, "supervisor", "worker %d stalled: no heartbeat for %lld ms; killing it",
		       sv->proc.pid, (long long)(mm_now_ms() - hb));
		blame(sv, "stalled");
		sv->worker_stalled = 1;
		uv_process_kill(&sv->proc, SIGKILL);
	}
}

/* How long a stop signal's forward waits for the worker to say it has the
 * signal itself, and how long after the worker's stop a copy still counts as
 * the same request. */
#define SV_FORWARD_GRACE_MS 100
#define SV_SAME_STOP_MS 250

static void on_forward(uv_timer_t *t)
{
	supervisor_t *sv = t->data;

	/* The signal reached the supervisor alone (kill PID, not the group). */
	if (sv->running && sv->page->stop_ms == 0)
		uv_process_kill(&sv->proc, sv->forward_sig);
}

/*
 * A stop signal sent to the process group (Ctrl-C, systemd's KillMode)
 * reaches the worker directly. Forwarding the supervisor's copy as well
 * made the worker see the request twice, and a copy landing while the
 * worker closed its signal handles (libuv restores the default action
 * there) killed it after its final flush. So a stop signal is forwarded
 * only when the worker does not say, within SV_FORWARD_GRACE_MS, that it
 * has it; a signal after the worker's stop has begun is a second request and
 * goes through at once. SIGHUP (reload) is always forwarded.
 */
static void on_signal(uv_signal_t *h, int signum)
{
	supervisor_t *sv = h->data;
	int64_t stop;

	if (signum != SIGHUP)
		sv->stopping = 1;
	if (sv->running) {
		stop = sv->page->stop_ms;
		if (signum == SIGHUP || (stop != 0 && mm_now_ms() - stop >= SV_SAME_STOP_MS)) {
			uv_process_kill(&sv->proc, signum);
		} else if (stop == 0) {
			sv->forward_sig = signum;
			uv_timer_start(&sv->forward, on_forward, SV_FORWARD_GRACE_MS, 0);
		}
	} else if (sv->stopping) {
		/* Between restarts: nothing runs, so there is nothing to flush;
		 * the run ends with the failure that caused the restart. */
		mm_log(MM_LOG_INFO, "supervisor",
		       "stopped while waiting to restart a failed worker; exiting with status 1");
		sv->exit_code = 1;
		uv_timer_stop(&sv->backoff);
		sv->done = 1;
		uv_stop(&sv->loop);
	}
}

static void spawn_worker(supervisor_t *sv)
{
	static char env_progress[PATH_MAX + 32], env_sup[64];
	uv_process_options_t o;
	uv_stdio_container_t stdio[3];
	extern char **environ;
	char **env;
	size_t n = 0;
	int rc;

	while (environ[n])
		n++;
	env = calloc(n + 4, sizeof(*env));
	if (env == NULL)
		return;
	memcpy(env, environ, n * sizeof(*env));
	snprintf(env_progress, sizeof(env_progress), "MURMUR_PROGRESS=%s", sv->page_path);
	snprintf(env_sup, sizeof(env_sup), "MURMUR_SUPERVISOR_PID=%d", (int)getpid());
	env[n++] = env_progress;
	env[n++] = env_sup;
	env[n++] = "MURMUR_WORKER=1";
	memset(sv->page, 0, sizeof(*sv->page));
	sv->page->magic = MM_PROGRESS_MAGIC;
	sv->page->version = 1;
	memset(&o, 0, sizeof(o));
	for (int i = 0; i < 3; i++) {
		stdio[i].flags = UV_INHERIT_FD;
		stdio[i].data.fd = i;
	}
	o.file = "/proc/self/exe";
	o.args = sv->cfg->argv;
	o.env = env;
	o.stdio = stdio;
	o.stdio_count = 3;
	o.exit_cb = on_exit_cb;
	sv->proc.data = sv;
	rc = uv_spawn(&sv->loop, &sv->proc, &o);
	free(env);
	if (rc) {
		mm_log(MM_LOG_ERROR, "supervisor", "cannot start the worker: %s", uv_strerror(rc));
		sv->exit_code = 1;
		sv->done = 1;
		uv_close((uv_handle_t *)&sv->proc, on_proc_closed);
		uv_stop(&sv->loop);
		return;
	}
	sv->running = 1;
	sv->started_ms = mm_now_ms();
	write_state(sv);
}

static void close_walk(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

int mm_supervise(const mm_supervisor_config_t *cfg)
{
	static const int signums[3] = {SIGINT, SIGTERM, SIGHUP};
	supervisor_t *sv = calloc(1, sizeof(*sv));
	int fd, code, sig;

	if (sv == NULL)
		return 1;
	sv->cfg = cfg;
	snprintf(sv->page_path, sizeof(sv->page_path), "%s/worker.progress", cfg->data_dir);
	snprintf(sv->poison_path, sizeof(sv->poison_path), "%s/poison.jsonl", cfg->data_dir);
	fd = open(sv->page_path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
	if (fd < 0 || ftruncate(fd, sizeof(mm_progress_t)) != 0) {
		mm_log(MM_LOG_ERROR, "supervisor", "cannot create %s: %s", sv->page_path, strerror(errno));
		if (fd >= 0)
			close(fd);
		free(sv);
		return 1;
	}
	sv->page = mmap(NULL, sizeof(mm_progress_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (sv->page == MAP_FAILED) {
		free(sv);
		return 1;
	}
	uv_loop_init(&sv->loop);
	uv_timer_init(&sv->loop, &sv->watchdog);
	uv_timer_init(&sv->loop, &sv->backoff);
	uv_timer_init(&sv->loop, &sv->forward);
	sv->watchdog.data = sv->backoff.data = sv->forward.data = sv;
	for (int i = 0; i < 3; i++) {
		uv_signal_init(&sv->loop, &sv->sigs[i]);
		sv->sigs[i].data = sv;
		uv_signal_start(&sv->sigs[i], on_signal, signums[i]);
	}
	uv_timer_start(&sv->watchdog, on_watchdog, (uint64_t)(cfg->watchdog_ms / 4 + 1),
		       (uint64_t)(cfg->watchdog_ms / 4 + 1));
	if ((sig = mm_engine_early_signal()) != 0) {
		/* Stopped before anything ran: there is nothing to flush. */
		log_early_stop(sig);
		sv->done = 1;
	} else {
		spawn_worker(sv);
	}
	while (!sv->done)
		uv_run(&sv->loop, UV_RUN_DEFAULT);
	write_state(sv);
	uv_walk(&sv->loop, close_walk, NULL);
	uv_run(&sv->loop, UV_RUN_DEFAULT);
	uv_loop_close(&sv->loop);
	munmap(sv->page, sizeof(mm_progress_t));
	code = sv->exit_code;
	free(sv);
	return code;
}
