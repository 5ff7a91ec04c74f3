/*
 * supervisor.c: runs and watches the worker process (see supervisor.h).
 *
 * Everything happens on a private libuv loop: uv_signal for forwarding (see
 * on_signal) and for SIGCHLD (the worker's exit), one uv_timer that checks
 * the heartbeat every quarter of the watchdog deadline (it reads a shared
 * page; there is nothing else to wait on), and a timer for restart backoff.
 * Bookkeeping is written to DATA/supervisor.json (restarts, crashes, stalls,
 * poison records) and the poison list to DATA/poison.jsonl, both read by
 * `murmur status` and the worker.
 *
 * The worker is a forked copy of the supervisor, not a second start of the
 * binary (see start_worker): the supervisor has loaded no script and started
 * no thread, so the copy is safe and already linked and initialised. The copy
 * sheds the supervisor's loop, signal handlers and page, takes the worker's
 * environment markers and signal state, and returns from mm_supervise into
 * the caller's worker path, which loads the scripts afresh (a restart runs
 * their newest version). The fork happens outside uv_run, so the copy leaves
 * no libuv callback half-run.
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
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "../codec/json.h"
#include "../lib/buf.h"
#include "../lib/error.h"
#include "../lib/file.h"
#include "../lib/log.h"
#include "../lib/time.h"
#include "engine.h"
#include "probe.h"
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
	pid_t pid;               /* the worker's, while running */
	uv_timer_t watchdog, backoff, forward;
	uv_signal_t sigs[4];     /* SIGINT, SIGTERM, SIGHUP, SIGCHLD */
	mm_progress_t *page;
	char page_path[PATH_MAX];
	char poison_path[PATH_MAX];
	int running, stopping, exit_code, done;
	int start_pending;       /* start a worker once uv_run returns */
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
			  (int)getpid(), sv->running ? (int)sv->pid : 0,
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

	if (!sv->stopping) {
		sv->start_pending = 1;
		uv_stop(&sv->loop);
	}
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

static void on_worker_exit(supervisor_t *sv, int64_t status, int term_signal)
{
	int started = sv->page->heartbeat_ms != 0;
	int64_t lived = mm_now_ms() - sv->started_ms;

	sv->running = 0;
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
			       (int)sv->pid, (long long)(mm_now_ms() - since), (long long)limit);
			sv->startup_stalled = 1;
			sv->worker_stalled = 1;
			kill(sv->pid, SIGKILL);
		}
		return;
	}
	if (mm_now_ms() - hb > sv->cfg->watchdog_ms) {
		mm_log(MM_LOG_ERROR, "supervisor", "worker %d stalled: no heartbeat for %lld ms; killing it",
		       (int)sv->pid, (long long)(mm_now_ms() - hb));
		blame(sv, "stalled");
		sv->worker_stalled = 1;
		kill(sv->pid, SIGKILL);
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
		kill(sv->pid, sv->forward_sig);
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
			kill(sv->pid, signum);
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

/* SIGCHLD: reaps the worker, the supervisor's only child. */
static void on_sigchld(uv_signal_t *h, int signum)
{
	supervisor_t *sv = h->data;
	int wstatus;
	pid_t w;

	(void)signum;
	if (!sv->running)
		return;
	do
		w = waitpid(sv->pid, &wstatus, WNOHANG);
	while (w < 0 && errno == EINTR);
	if (w != sv->pid)
		return;
	on_worker_exit(sv, WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 0,
		       WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0);
}

static void close_walk(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/*
 * In the forked worker, with every signal blocked: gives up the supervisor's
 * loop (its epoll, signal pipe and eventfd are the supervisor's own until
 * uv_loop_fork replaces them, so closing the handles cannot disturb the
 * supervisor; closing the signal handles restores the default action of
 * SIGINT, SIGTERM, SIGHUP and SIGCHLD), then sets up what a worker started
 * as a new program had (uv_spawn and main()): the environment markers
 * (cli.lua, core.worker_init), the default action for every signal the
 * supervisor ignores (the only handlers left are a sanitizer runtime's,
 * which a new program installs again), the early stop handler main()
 * installs for `run` (engine.h), and an empty signal mask. Returns 0 or -1.
 */
static int become_worker(supervisor_t *sv, pid_t supervisor)
{
	char pid[32];
	struct sigaction sa;
	sigset_t none;

	if (uv_loop_fork(&sv->loop) != 0)
		return -1;
	uv_walk(&sv->loop, close_walk, NULL);
	uv_run(&sv->loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&sv->loop) != 0)
		return -1;
	munmap(sv->page, sizeof(mm_progress_t));
	snprintf(pid, sizeof(pid), "%d", (int)supervisor);
	if (setenv("MURMUR_PROGRESS", sv->page_path, 1) != 0 ||
	    setenv("MURMUR_SUPERVISOR_PID", pid, 1) != 0 || setenv("MURMUR_WORKER", "1", 1) != 0)
		return -1;
	for (int s = 1; s < NSIG; s++)
		if (sigaction(s, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
			signal(s, SIG_DFL);
	mm_engine_catch_early_signals();
	sigemptyset(&none);
	return sigprocmask(SIG_SETMASK, &none, NULL);
}

/*
 * Starts a worker: a forked copy of this process (the top of this file).
 * Signals stay blocked from before the fork until the copy has its own
 * handlers, so a Ctrl-C at that moment is a graceful stop of the worker,
 * never a kill of a worker without handlers. Returns 1 in the worker, 0 in
 * the supervisor (with the worker running, or the run ended when none could
 * start).
 */
static int start_worker(supervisor_t *sv)
{
	pid_t supervisor = getpid(), pid;
	sigset_t all, old;
	int threads = mm_probe_thread_count();

	if (threads != 1) {
		/* Nothing in `murmur run` starts a thread before the worker: a
		 * copy of a process with threads could inherit a lock one of them
		 * held, so this is refused rather than risked. */
		mm_log(MM_LOG_ERROR, "supervisor",
		       "cannot start the worker: the supervisor forks it only while it has one "
		       "thread, and it has %d (-1: /proc/self/stat is unreadable)",
		       threads);
		sv->exit_code = 1;
		sv->done = 1;
		return 0;
	}
	memset(sv->page, 0, sizeof(*sv->page));
	sv->page->magic = MM_PROGRESS_MAGIC;
	sv->page->version = 1;
	/* Output still buffered would be written by both processes. */
	fflush(NULL);
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	pid = fork();
	if (pid == 0) {
		if (become_worker(sv, supervisor) != 0) {
			mm_log(MM_LOG_ERROR, "supervisor",
			       "the worker could not leave the supervisor's loop: %s", strerror(errno));
			_exit(1);
		}
		return 1;
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (pid < 0) {
		mm_log(MM_LOG_ERROR, "supervisor", "cannot start the worker: %s", strerror(errno));
		sv->exit_code = 1;
		sv->done = 1;
		return 0;
	}
	sv->pid = pid;
	sv->running = 1;
	sv->started_ms = mm_now_ms();
	write_state(sv);
	return 0;
}

int mm_supervise(const mm_supervisor_config_t *cfg, int *worker)
{
	static const int signums[4] = {SIGINT, SIGTERM, SIGHUP, SIGCHLD};
	supervisor_t *sv = calloc(1, sizeof(*sv));
	int fd, code, sig;

	*worker = 0;
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
	for (int i = 0; i < 4; i++) {
		uv_signal_init(&sv->loop, &sv->sigs[i]);
		sv->sigs[i].data = sv;
		uv_signal_start(&sv->sigs[i], signums[i] == SIGCHLD ? on_sigchld : on_signal,
				signums[i]);
	}
	uv_timer_start(&sv->watchdog, on_watchdog, (uint64_t)(cfg->watchdog_ms / 4 + 1),
		       (uint64_t)(cfg->watchdog_ms / 4 + 1));
	if ((sig = mm_engine_early_signal()) != 0) {
		/* Stopped before anything ran: there is nothing to flush. */
		log_early_stop(sig);
		sv->done = 1;
	} else {
		sv->start_pending = 1;
	}
	/* Workers start here, outside uv_run (on_backoff stops the loop to ask
	 * for one), so the forked copy returns from no libuv callback. */
	for (;;) {
		if (sv->start_pending && !sv->done) {
			sv->start_pending = 0;
			if (start_worker(sv)) {
				free(sv);
				*worker = 1;
				return 0;
			}
		}
		if (sv->done)
			break;
		uv_run(&sv->loop, UV_RUN_DEFAULT);
	}
	write_state(sv);
	uv_walk(&sv->loop, close_walk, NULL);
	uv_run(&sv->loop, UV_RUN_DEFAULT);
	uv_loop_close(&sv->loop);
	munmap(sv->page, sizeof(mm_progress_t));
	code = sv->exit_code;
	free(sv);
	return code;
}
