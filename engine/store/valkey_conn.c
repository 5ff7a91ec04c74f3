/*
 * valkey_conn.c: the Valkey cache layer's connection: commands with
 * deadlines, connecting (with uv_getaddrinfo so the loop never blocks on
 * DNS), the handshake, and losing the connection.
 *
 * One hiredis asynchronous connection on the libuv loop (the adapter in
 * <hiredis/adapters/libuv.h>; hiredis 0.14, so no built-in timeouts: every
 * command gets a deadline here, and a late reply drops the connection). A
 * lost connection is retried after 100 ms, doubling up to `backoff_max`,
 * with jitter. The handshake authenticates, selects the database, loads the
 * scripts (valkey_lua/NAME.lua, embedded at build time) and reads the server's
 * run_id and the cache generation, which valkey_recover.c then judges. The
 * connection's poll handle does not keep the loop alive; a command in
 * flight does, through its deadline timer.
 */
#include "valkey_impl.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libuv.h>

#include "../lib/log.h"
#include "../lib/error.h"
#include "valkey_format.h"

/* The scripts, loaded with SCRIPT LOAD at each handshake and run with
 * EVALSHA. Times in them come from the server's clock (TIME) so that
 * writers on different machines agree on lease expiry. */
static const char *const vk_scripts[VK_S_MAX] = {
	[VK_S_LEASE] = mm_valkey_lua_lease,
	[VK_S_POST] = mm_valkey_lua_post,
	[VK_S_CASREAD] = mm_valkey_lua_casread,
	[VK_S_EXISTS] = mm_valkey_lua_exists,
	[VK_S_INVAL] = mm_valkey_lua_inval,
	[VK_S_FILL] = mm_valkey_lua_fill,
	[VK_S_COUNT] = mm_valkey_lua_count,
	[VK_S_MARK] = mm_valkey_lua_mark,
	[VK_S_CLAIM] = mm_valkey_lua_claim,
	[VK_S_RELEASE] = mm_valkey_lua_release,
};

/* ---- commands ---------------------------------------------------------------- */

static void vk_deadline_cb(uv_timer_t *t);

static void vk_arm_deadline(mm_valkey_t *st)
{
	uint64_t now, due;

	if (st->deadline_closed)
		return;
	if (st->cmd_head == NULL) {
		uv_timer_stop(&st->deadline);
		return;
	}
	now = uv_hrtime();
	due = st->cmd_head->wait0 + (uint64_t)st->timeout_ms * 1000000u;
	uv_timer_start(&st->deadline, vk_deadline_cb, due > now ? (due - now) / 1000000u + 1 : 0,
		       0);
}

static int vk_overdue(const mm_valkey_t *st)
{
	return st->cmd_head != NULL &&
	       uv_hrtime() - st->cmd_head->wait0 >= (uint64_t)st->timeout_ms * 1000000u;
}

/*
 * The deadline is "no reply for timeout": it runs for the oldest command in
 * flight from when it was sent or from the previous reply, whichever came
 * later, so that a deep pipeline (a flush's claims, hundreds of scripts)
 * is not dropped while the server keeps answering. libuv runs timers
 * before it polls, so after the loop was busy longer than the timeout this
 * callback can come before replies that are already in the socket: they
 * are read first (hiredis reads without blocking), and only a command still
 * unanswered then drops the connection.
 */
static void vk_deadline_cb(uv_timer_t *t)
{
	mm_valkey_t *st = t->data;
	char why[64];

	if (vk_overdue(st) && st->ac != NULL && (st->ac->c.flags & REDIS_CONNECTED))
		redisAsyncHandleRead(st->ac);
	if (st->cmd_head == NULL)
		return;
	if (vk_overdue(st)) {
		snprintf(why, sizeof(why), "no reply within %" PRId64 " ms", st->timeout_ms);
		mm_vk_drop(st, why);
		return;
	}
	vk_arm_deadline(st);
}

static void vk_cmd_unlink(mm_valkey_t *st, vk_cmd_t *cmd)
{
	if (cmd->prev)
		cmd->prev->next = cmd->next;
	else
		st->cmd_head = cmd->next;
	if (cmd->next)
		cmd->next->prev = cmd->prev;
	else
		st->cmd_tail = cmd->prev;
}

static void vk_on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	vk_cmd_t *cmd = privdata;
	mm_valkey_t *st = cmd->st;
	redisReply *r = reply;
	uint64_t ns = uv_hrtime() - cmd->t0;
	int noscript = 0;

	vk_cmd_unlink(st, cmd);
	if (st->cmd_head != NULL && st->cmd_head->wait0 < cmd->t0 + ns)
		st->cmd_head->wait0 = cmd->t0 + ns;
	st->vs.ops[cmd->op]++;
	st->vs.ns_total[cmd->op] += ns;
	mm_histo_observe(&st->vs.hist[cmd->op], ns);
	if (ns > st->vs.ns_max[cmd->op])
		st->vs.ns_max[cmd->op] = ns;
	if (r == NULL || r->type == REDIS_REPLY_ERROR)
		st->vs.errors[cmd->op]++;
	/* A NULL reply comes only while hiredis frees the context. */
	if (r == NULL)
		mm_vk_lost(st, ac, ac->errstr ? ac->errstr : "connection closed");
	else if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0)
		noscript = 1;
	cmd->fn(cmd->ctx, r);
	free(cmd);
	/* SCRIPT FLUSH on the server: reconnecting loads the scripts again. */
	if (noscript && st->ac == ac)
		mm_vk_drop(st, "the server forgot our scripts");
	vk_arm_deadline(st);
}

/* Sends one command; fn runs with its reply. MM_ECLOSED without a connection. */
static int vk_send(mm_valkey_t *st, int op, vk_reply_fn fn, void *ctx, int argc,
		   const char **argv, const size_t *argvlen)
{
	vk_cmd_t *cmd;

	if (st->ac == NULL || st->closing)
		return mm_diag_set(MM_ECLOSED, "valkey: not connected");
	cmd = malloc(sizeof(*cmd));
	if (cmd == NULL)
		return mm_diag_set(MM_ENOMEM, "valkey: cannot allocate a command");
	cmd->st = st;
	cmd->op = op;
	cmd->t0 = uv_hrtime();
	cmd->wait0 = cmd->t0;
	cmd->fn = fn;
	cmd->ctx = ctx;
	if (redisAsyncCommandArgv(st->ac, vk_on_reply, cmd, argc, argv, argvlen) != REDIS_OK) {
		free(cmd);
		/* The context is disconnecting or freeing itself. */
		mm_vk_lost(st, st->ac, "connection closing");
		return mm_diag_set(MM_ECLOSED, "valkey: connection closing");
	}
	cmd->next = NULL;
	cmd->prev = st->cmd_tail;
	if (st->cmd_tail)
		st->cmd_tail->next = cmd;
	else
		st->cmd_head = cmd;
	st->cmd_tail = cmd;
	if (cmd == st->cmd_head)
		vk_arm_deadline(st);
	return 0;
}

static int vk_argv_reserve(mm_valkey_t *st, size_t n)
{
	const char **av;
	size_t *avl, cap;

	if (n <= st->avcap)
		return 0;
	cap = n * 2;
	av = realloc(st->av, cap * sizeof(*av));
	if (av == NULL)
		return mm_diag_set(MM_ENOMEM, "valkey: cannot grow argv");
	st->av = av;
	avl = realloc(st->avl, cap * sizeof(*avl));
	if (avl == NULL)
		return mm_diag_set(MM_ENOMEM, "valkey: cannot grow argv");
	st->avl = avl;
	st->avcap = cap;
	return 0;
}

/* EVALSHA script with keys and args (either may be NULL). */
int mm_vk_eval(mm_valkey_t *st, int op, int script, const vk_list_t *keys,
		   const vk_list_t *args, vk_reply_fn fn, void *ctx)
{
	size_t nk = keys ? keys->n : 0, na = args ? args->n : 0, n = 0, i;
	char numkeys[24];
	int rc;

	if ((rc = vk_argv_reserve(st, 3 + nk + na)))
		return rc;
	st->av[n] = "EVALSHA";
	st->avl[n++] = 7;
	st->av[n] = st->sha[script];
	st->avl[n++] = 40;
	st->av[n] = numkeys;
	st->avl[n++] = (size_t)snprintf(numkeys, sizeof(numkeys), "%zu", nk);
	for (i = 0; i < nk; i++, n++)
		st->av[n] = mm_vk_list_at(keys, i, &st->avl[n]);
	for (i = 0; i < na; i++, n++)
		st->av[n] = mm_vk_list_at(args, i, &st->avl[n]);
	return vk_send(st, op, fn, ctx, (int)n, st->av, st->avl);
}

/* A plain command whose arguments are all in l. */
int mm_vk_command(mm_valkey_t *st, int op, const vk_list_t *l, vk_reply_fn fn, void *ctx)
{
	size_t i;
	int rc;

	if ((rc = vk_argv_reserve(st, l->n)))
		return rc;
	for (i = 0; i < l->n; i++)
		st->av[i] = mm_vk_list_at(l, i, &st->avl[i]);
	return vk_send(st, op, fn, ctx, (int)l->n, st->av, st->avl);
}

int mm_vk_reply_ok(const redisReply *r)
{
	return r != NULL && r->type != REDIS_REPLY_ERROR;
}

/* ---- the connection ---------------------------------------------------------- */

static void vk_retry_cb(uv_timer_t *t)
{
	mm_vk_connect(t->data);
}

static void vk_schedule_retry(mm_valkey_t *st)
{
	int64_t wait = st->backoff_ms, jitter = wait / 4;

	if (st->closing)
		return;
	if (jitter > 0)
		wait += (int64_t)(mm_vk_rand(st) % (uint64_t)(2 * jitter + 1)) - jitter;
	st->backoff_ms = st->backoff_ms * 2 > st->backoff_max_ms ? st->backoff_max_ms
								 : st->backoff_ms * 2;
	uv_timer_start(&st->retry, vk_retry_cb, (uint64_t)(wait > 0 ? wait : 0), 0);
}

/*
 * Forgets the connection ac (if it is the current one): hiredis frees it
 * itself or is being told to. Idempotent. Cache use stops until the next
 * handshake; waiting operations go on without the cache.
 */
void mm_vk_lost(mm_valkey_t *st, redisAsyncContext *ac, const char *why)
{
	if (ac == NULL || st->ac != ac)
		return;
	st->ac = NULL;
	st->state = VK_DOWN;
	st->checking = st->scanning = st->replaying = 0;
	if (st->closing) {
		/* The graceful disconnect of close() is over. */
		mm_vk_close_deadline(st);
		return;
	}
	st->vs.disconnects++;
	uv_timer_stop(&st->tick);
	mm_log(MM_LOG_WARN, VK_LOG, "%s:%d: %s; reads and writes use the store alone, "
	       "retrying in about %" PRId64 " ms", st->host, st->port, why, st->backoff_ms);
	vk_schedule_retry(st);
	mm_vk_release_waiting(st);
}

/* Drops the current connection on our own initiative (deadline, protocol). */
void mm_vk_drop(mm_valkey_t *st, const char *why)
{
	redisAsyncContext *ac = st->ac;

	if (ac == NULL)
		return;
	mm_vk_lost(st, ac, why);
	/* Inside a hiredis callback this is deferred until it returns; the
	 * pending callbacks then run with NULL replies. */
	redisAsyncFree(ac);
}

static void vk_connect_failed(mm_valkey_t *st, const char *why)
{
	st->state = VK_DOWN;
	st->vs.disconnects++;
	if (!st->closing) {
		mm_log(MM_LOG_WARN, VK_LOG, "%s:%d: %s; retrying in about %" PRId64 " ms",
		       st->host, st->port, why, st->backoff_ms);
		vk_schedule_retry(st);
	}
	mm_vk_release_waiting(st);
}

static void vk_on_connect(const redisAsyncContext *c, int status)
{
	mm_valkey_t *st = c->data;

	/* On failure hiredis frees the context right after this callback. */
	if (status != REDIS_OK)
		mm_vk_lost(st, (redisAsyncContext *)(uintptr_t)c, c->errstr ? c->errstr
								       : "cannot connect");
}

static void vk_on_disconnect(const redisAsyncContext *c, int status)
{
	mm_valkey_t *st = c->data;

	const char *why = c->errstr ? c->errstr : "disconnected";

	mm_vk_lost(st, (redisAsyncContext *)(uintptr_t)c,
		status == REDIS_OK ? "connection closed" : why);
}

static void vk_hs_step(mm_valkey_t *st)
{
	size_t rl = strlen(st->run_id);
	const char *why = NULL;

	if (--st->hs_left > 0 || st->ac == NULL)
		return;
	/* Every reply is in: can what the server holds be trusted? */
	if (!st->hs_has_gen)
		why = st->have_gen ? "the cache generation is gone (FLUSHALL, restart or eviction)"
				   : NULL;
	else if (strncmp(st->hs_gen, st->run_id, rl) != 0 || st->hs_gen[rl] != ':')
		why = "the server restarted or is another one (its run_id changed)";
	else if (st->have_gen && strcmp(st->hs_gen, st->gen) != 0)
		why = "the cache generation changed";
	if (why == NULL && st->hs_has_gen) {
		snprintf(st->gen, sizeof(st->gen), "%s", st->hs_gen);
		st->have_gen = 1;
		mm_vk_replay_dirty(st);
		return;
	}
	mm_vk_loss(st, why);
}

static void vk_hs_simple(void *ctx, redisReply *r)
{
	mm_valkey_t *st = ctx;
	char why[160];

	if (r == NULL)
		return;
	if (r->type == REDIS_REPLY_ERROR) {
		snprintf(why, sizeof(why), "handshake refused: %s", r->str);
		mm_vk_drop(st, why);
		return;
	}
	vk_hs_step(st);
}

static void vk_hs_script(void *ctx, redisReply *r)
{
	vk_hsref_t *ref = ctx;
	mm_valkey_t *st = ref->st;

	if (r == NULL)
		return;
	if (r->type != REDIS_REPLY_STRING || r->len != 40) {
		mm_vk_drop(st, r->type == REDIS_REPLY_ERROR ? r->str
							 : "SCRIPT LOAD: unexpected reply");
		return;
	}
	memcpy(st->sha[ref->script], r->str, 40);
	st->sha[ref->script][40] = '\0';
	vk_hs_step(st);
}

static void vk_hs_info(void *ctx, redisReply *r)
{
	mm_valkey_t *st = ctx;

	if (r == NULL)
		return;
	if (r->type != REDIS_REPLY_STRING || mm_valkey_run_id(r->str, st->run_id) != 0) {
		mm_vk_drop(st, "INFO server has no run_id");
		return;
	}
	vk_hs_step(st);
}

static void vk_hs_gen(void *ctx, redisReply *r)
{
	mm_valkey_t *st = ctx;

	if (r == NULL)
		return;
	st->hs_has_gen = r->type == REDIS_REPLY_STRING && r->len < sizeof(st->hs_gen) &&
			 memchr(r->str, '\0', r->len) == NULL;
	if (st->hs_has_gen) {
		memcpy(st->hs_gen, r->str, r->len);
		st->hs_gen[r->len] = '\0';
	}
	vk_hs_step(st);
}

/* Queues the handshake; hiredis sends it once the socket connects. */
static void vk_handshake(mm_valkey_t *st)
{
	vk_list_t *l = &st->sa;
	char db[16];
	int i, rc = 0;

	st->hs_left = VK_S_MAX + 2 + (st->password != NULL) + (st->db != 0);
	st->hs_has_gen = 0;
	if (st->password != NULL) {
		mm_vk_list_reset(l);
		if ((rc = mm_vk_list_str(l, "AUTH")) ||
		    (st->user && (rc = mm_vk_list_str(l, st->user))) ||
		    (rc = mm_vk_list_str(l, st->password)) ||
		    (rc = mm_vk_command(st, MM_VALKEY_OP_CHECK, l, vk_hs_simple, st)))
			goto fail;
	}
	if (st->db != 0) {
		mm_vk_list_reset(l);
		snprintf(db, sizeof(db), "%d", st->db);
		if ((rc = mm_vk_list_str(l, "SELECT")) || (rc = mm_vk_list_str(l, db)) ||
		    (rc = mm_vk_command(st, MM_VALKEY_OP_CHECK, l, vk_hs_simple, st)))
			goto fail;
	}
	for (i = 0; i < VK_S_MAX; i++) {
		mm_vk_list_reset(l);
		st->hsref[i].st = st;
		st->hsref[i].script = i;
		if ((rc = mm_vk_list_str(l, "SCRIPT")) || (rc = mm_vk_list_str(l, "LOAD")) ||
		    (rc = mm_vk_list_str(l, vk_scripts[i])) ||
		    (rc = mm_vk_command(st, MM_VALKEY_OP_CHECK, l, vk_hs_script, &st->hsref[i])))
			goto fail;
	}
	mm_vk_list_reset(l);
	if ((rc = mm_vk_list_str(l, "INFO")) || (rc = mm_vk_list_str(l, "server")) ||
	    (rc = mm_vk_command(st, MM_VALKEY_OP_CHECK, l, vk_hs_info, st)))
		goto fail;
	mm_vk_list_reset(l);
	if ((rc = mm_vk_list_str(l, "GET")) || (rc = mm_buf_printf(&l->b, "%sgen", st->prefix)) ||
	    (rc = mm_vk_list_mark(l)) || (rc = mm_vk_command(st, MM_VALKEY_OP_CHECK, l, vk_hs_gen, st)))
		goto fail;
	return;
fail:
	mm_vk_drop(st, mm_diag_msg());
}

/*
 * hiredis 0.14's libuv adapter ignores a poll error: libuv reports POLLERR
 * (a refused connect, a reset connection) as status UV_EBADF and stops the
 * handle, so hiredis would never learn of it and the failure would only
 * show when a deadline passed. These hooks wrap the adapter's and give the
 * handle a callback that passes errors on as the events hiredis waits for,
 * where its read or write fails and reports the error.
 */
static void vk_poll_cb(uv_poll_t *handle, int status, int events)
{
	redisLibuvEvents *p = handle->data;
	int ev = status ? p->events : events;

	if (p->context != NULL && (ev & UV_READABLE))
		redisAsyncHandleRead(p->context);
	if (p->context != NULL && (ev & UV_WRITABLE))
		redisAsyncHandleWrite(p->context);
}

static void vk_poll_restart(void *privdata)
{
	redisLibuvEvents *p = privdata;

	if (p->events)
		uv_poll_start(&p->handle, p->events, vk_poll_cb);
}

static void vk_add_read(void *privdata)
{
	redisLibuvAddRead(privdata);
	vk_poll_restart(privdata);
}

static void vk_del_read(void *privdata)
{
	redisLibuvDelRead(privdata);
	vk_poll_restart(privdata);
}

static void vk_add_write(void *privdata)
{
	redisLibuvAddWrite(privdata);
	vk_poll_restart(privdata);
}

static void vk_del_write(void *privdata)
{
	redisLibuvDelWrite(privdata);
	vk_poll_restart(privdata);
}

static void vk_connect_ip(mm_valkey_t *st, const char *ip)
{
	redisAsyncContext *ac = redisAsyncConnect(ip, st->port);
	char why[160];

	if (ac == NULL) {
		vk_connect_failed(st, "out of memory");
		return;
	}
	if (ac->err) {
		snprintf(why, sizeof(why), "%s", ac->errstr);
		redisAsyncFree(ac);
		vk_connect_failed(st, why);
		return;
	}
	ac->data = st;
	mm_valkey_reader_bound(ac->c.reader);
	if (redisLibuvAttach(ac, st->base.loop) != REDIS_OK) {
		redisAsyncFree(ac);
		vk_connect_failed(st, "cannot attach to the loop");
		return;
	}
	/* An idle connection must not keep the loop alive (the engine's loop
	 * ends when its own handles are closed); a command in flight does,
	 * through the deadline timer. */
	uv_unref((uv_handle_t *)&((redisLibuvEvents *)ac->ev.data)->handle);
	ac->ev.addRead = vk_add_read;
	ac->ev.delRead = vk_del_read;
	ac->ev.addWrite = vk_add_write;
	ac->ev.delWrite = vk_del_write;
	redisAsyncSetConnectCallback(ac, vk_on_connect);
	redisAsyncSetDisconnectCallback(ac, vk_on_disconnect);
	st->ac = ac;
	vk_handshake(st);
}

static void vk_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	mm_valkey_t *st = req->data;
	const void *addr = NULL;
	char why[160];

	st->resolving = 0;
	if (!st->closing && status == 0 && res != NULL) {
		if (res->ai_family == AF_INET)
			addr = &((struct sockaddr_in *)(void *)res->ai_addr)->sin_addr;
		else if (res->ai_family == AF_INET6)
			addr = &((struct sockaddr_in6 *)(void *)res->ai_addr)->sin6_addr;
	}
	if (addr != NULL && inet_ntop(res->ai_family, addr, st->ip, sizeof(st->ip)) != NULL) {
		vk_connect_ip(st, st->ip);
	} else if (!st->closing) {
		snprintf(why, sizeof(why), "cannot resolve '%s': %s", st->host,
			 status ? uv_strerror(status) : "no address");
		vk_connect_failed(st, why);
	}
	uv_freeaddrinfo(res);
	mm_vk_unref(st);
}

void mm_vk_connect(mm_valkey_t *st)
{
	struct in6_addr a6;
	struct in_addr a4;
	int rc;

	if (st->closing || st->ac != NULL)
		return;
	st->state = VK_CONNECTING;
	if (inet_pton(AF_INET, st->host, &a4) == 1 || inet_pton(AF_INET6, st->host, &a6) == 1) {
		snprintf(st->ip, sizeof(st->ip), "%s", st->host);
		vk_connect_ip(st, st->ip);
		return;
	}
	st->gai.data = st;
	rc = uv_getaddrinfo(st->base.loop, &st->gai, vk_resolved, st->host, NULL, NULL);
	if (rc) {
		vk_connect_failed(st, uv_strerror(rc));
		return;
	}
	st->resolving = 1;
	st->refs++;
}
