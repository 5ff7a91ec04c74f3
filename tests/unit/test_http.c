/*
 * test_http.c: murmur's HTTP client on libuv against a small HTTP/1.1
 * server that runs on its own thread and loop in this process.
 *
 * The server keeps connections open (keep-alive) and counts them, so the
 * tests can check that many concurrent requests share a bounded number of
 * connections and that later requests reuse them. Paths:
 *   /echo         200, the request body back, X-Seen-Target echoes X-Amz-Target
 *   /status/NNN   that status, body "status NNN"
 *   /slow         answers after 1.5 s
 *   /drop         closes the connection without answering
 *   /bye          200 "bye", then closes the connection without saying so
 *                 (no "Connection: close"), as a server ends idle ones
 *   /chunked      200, a chunked body in three chunks, each written apart,
 *                 and an X-Chunks header
 *   /trailer      200, a chunked body "ok" ending with an X-Trailer field
 *   /two-digits   "HTTP/1.1 20 OK": a status code of two digits
 *   /close        200 "closing" with "Connection: close", then closes
 *   /reset        (a POST) resets the connection as soon as the head came,
 *                 while the client still writes the body
 *   /fresh        200 "fresh" as the first request of a connection; on a
 *                 reused one, closes it without answering (as a server does
 *                 that ended an idle connection just as the request came)
 *   /split/K      dynalite's answer to an UpdateItem (SPLIT_ANSWER), its
 *                 first K bytes at once and the rest 1 ms later, so the
 *                 client reads them apart
 *   /plain/N      200 with a Content-Length and the Nth of PLAIN_HEADS, heads
 *                 that libhttp-parser reads and the fast path leaves to it
 * Every test ends with uv_loop_close() == 0, so a leaked handle fails.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "http/http.h"
#include "lib/error.h"
#include "http_result.h"
#include "unit.h"

/* ---- the server ---- */

typedef struct srv {
	uv_loop_t loop;
	uv_tcp_t listener;
	uv_async_t stop;
	pthread_t thread;
	int port;
	int connections;     /* accepted so far (read by tests after requests finish) */
	pthread_mutex_t mu;
	uv_sem_t ready;
} srv_t;

/* An answer of dynalite's shape (a status line, seven header lines, a
 * Content-Length), which the client's fast path reads (http_head.c). */
static const char SPLIT_ANSWER[] =
	"HTTP/1.1 200 OK\r\nx-amzn-RequestId: 0RE32GLEDJGAGCSU1DDKWMCHBKWFTLL1P343750D99BMOJSMJAQX\r\n"
	"x-amz-crc32: 2745614147\r\nContent-Type: application/x-amz-json-1.0\r\n"
	"Content-Length: 16\r\nDate: Sat, 05 Dec 2026 03:22:37 GMT\r\nConnection: keep-alive\r\n"
	"Keep-Alive: timeout=5\r\n\r\n{\"Attributes\":1}";

/* Answers with a Content-Length that the fast path leaves to libhttp-parser,
 * each with a body "body" and an X-Pad header whose value starts with "a":
 * a length with a space after it, a folded line, a bare LF, HTTP/1.0 kept
 * alive, a Connection header of two tokens. */
static const char *const PLAIN_HEADS[] = {
	"HTTP/1.1 200 OK\r\nX-Pad: a\r\nContent-Length: 4 \r\n\r\nbody",
	"HTTP/1.1 200 OK\r\nX-Pad: a\r\n b\r\nContent-Length: 4\r\n\r\nbody",
	"HTTP/1.1 200 OK\nX-Pad: a\nContent-Length: 4\n\nbody",
	"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nX-Pad: a\r\nContent-Length: 4\r\n\r\nbody",
	"HTTP/1.1 200 OK\r\nConnection: keep-alive, x\r\nX-Pad: a\r\nContent-Length: 4\r\n\r\nbody",
};

typedef struct conn {
	uv_tcp_t tcp;
	srv_t *s;
	char *in;
	size_t len, cap;
	size_t split;  /* /split/K: the bytes of SPLIT_ANSWER already sent */
	uv_timer_t slow;
	uv_shutdown_t bye;
	int handles;   /* open libuv handles: the tcp and the timer */
	int served;    /* requests answered on this connection */
} conn_t;

typedef struct wreq {
	uv_write_t w;
	char *data;
} wreq_t;

static void on_written(uv_write_t *w, int status)
{
	wreq_t *r = (wreq_t *)w;

	free(r->data);
	free(r);
}

static void conn_send(conn_t *c, int status, const char *extra, const char *body, size_t blen)
{
	wreq_t *r = malloc(sizeof(*r));
	size_t cap = 256 + blen + (extra ? strlen(extra) : 0);
	int n;
	uv_buf_t b;

	r->data = malloc(cap);
	n = snprintf(r->data, cap, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s\r\n", status, blen,
		     extra ? extra : "");
	memcpy(r->data + n, body, blen);
	b = uv_buf_init(r->data, (unsigned)(n + (int)blen));
	uv_write(&r->w, (uv_stream_t *)&c->tcp, &b, 1, on_written);
}

/* Writes raw bytes (a copy). */
static void conn_raw(conn_t *c, const char *p)
{
	wreq_t *r = malloc(sizeof(*r));
	uv_buf_t b;

	r->data = strdup(p);
	b = uv_buf_init(r->data, (unsigned)strlen(p));
	uv_write(&r->w, (uv_stream_t *)&c->tcp, &b, 1, on_written);
}

static void on_conn_closed(uv_handle_t *h)
{
	conn_t *c = h->data;

	if (--c->handles == 0) {
		free(c->in);
		free(c);
	}
}

static void conn_close(conn_t *c)
{
	if (uv_is_closing((uv_handle_t *)&c->tcp))
		return;
	uv_close((uv_handle_t *)&c->slow, on_conn_closed);
	uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_bye(uv_shutdown_t *sd, int status)
{
	conn_close(sd->data);
}

static void on_slow(uv_timer_t *t)
{
	conn_t *c = t->data;

	conn_send(c, 200, NULL, "slow", 4);
}

static void on_split_rest(uv_timer_t *t)
{
	conn_t *c = t->data;

	conn_raw(c, SPLIT_ANSWER + c->split);
}

/* Sends a FIN, then closes with a reset (SO_LINGER 0): a socket that got
 * a FIN and then a reset fails its next write with EPIPE, which raises
 * SIGPIPE unless the process ignores it. */
static void conn_reset(conn_t *c)
{
	struct linger lg = {1, 0};
	uv_os_fd_t fd;

	if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
		shutdown(fd, SHUT_WR);
		usleep(50000);
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	conn_close(c);
}

/* Handles every complete request in the input buffer. */
static void conn_process(conn_t *c)
{
	for (;;) {
		char *end = memmem(c->in, c->len, "\r\n\r\n", 4), *cl, *tgt, path[128] = "";
		char extra[300] = "";
		size_t head, body = 0, total;

		if (end == NULL)
			return;
		head = (size_t)(end - c->in) + 4;
		c->in[head - 2] = '\0';
		cl = strcasestr(c->in, "\r\ncontent-length:");
		if (cl)
			body = strtoul(cl + 17, NULL, 10);
		total = head + body;
		if (strncmp(c->in, "POST /reset ", 12) == 0) {
			conn_reset(c);
			return;
		}
		if (c->len < total) {
			c->in[head - 2] = '\r';
			return;
		}
		sscanf(c->in, "%*s %127s", path);
		tgt = strcasestr(c->in, "\r\nx-amz-target:");
		if (tgt) {
			char v[200] = "";

			sscanf(tgt + 15, " %199[^\r]", v);
			snprintf(extra, sizeof(extra), "X-Seen-Target: %s\r\n", v);
		}
		if (strcmp(path, "/echo") == 0) {
			conn_send(c, 200, extra, c->in + head, body);
		} else if (strncmp(path, "/status/", 8) == 0) {
			char msg[32];
			int st = atoi(path + 8);

			snprintf(msg, sizeof(msg), "status %d", st);
			conn_send(c, st, NULL, msg, strlen(msg));
		} else if (strcmp(path, "/slow") == 0) {
			uv_timer_start(&c->slow, on_slow, 1500, 0);
		} else if (strcmp(path, "/bye") == 0) {
			conn_send(c, 200, NULL, "bye", 3);
			c->bye.data = c;
			if (uv_shutdown(&c->bye, (uv_stream_t *)&c->tcp, on_bye) != 0)
				conn_close(c);
			return;
		} else if (strcmp(path, "/chunked") == 0) {
			conn_raw(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
				    "X-Chunks: three\r\n\r\n5\r\nhello\r\n");
			conn_raw(c, "1\r\n \r\n");
			conn_raw(c, "5\r\nworld\r\n0\r\n\r\n");
		} else if (strcmp(path, "/trailer") == 0) {
			conn_raw(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Chunks: one\r\n\r\n"
				    "2\r\nok\r\n0\r\nX-Trailer: t\r\n\r\n");
		} else if (strcmp(path, "/two-digits") == 0) {
			conn_raw(c, "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n");
		} else if (strcmp(path, "/close") == 0) {
			conn_send(c, 200, "Connection: close\r\n", "closing", 7);
			c->bye.data = c;
			if (uv_shutdown(&c->bye, (uv_stream_t *)&c->tcp, on_bye) != 0)
				conn_close(c);
			return;
		} else if (strcmp(path, "/fresh") == 0) {
			if (c->served > 0) {
				conn_close(c);
				return;
			}
			conn_send(c, 200, NULL, "fresh", 5);
		} else if (strncmp(path, "/split/", 7) == 0) {
			char first[sizeof(SPLIT_ANSWER)];

			/* The rest must not wait for the acknowledgement of the first
			 * piece (Nagle's algorithm against a delayed ACK: 40 ms). */
			uv_tcp_nodelay(&c->tcp, 1);
			c->split = strtoul(path + 7, NULL, 10);
			snprintf(first, sizeof(first), "%.*s", (int)c->split, SPLIT_ANSWER);
			if (c->split > 0)
				conn_raw(c, first);
			uv_timer_start(&c->slow, on_split_rest, 1, 0);
		} else if (strncmp(path, "/plain/", 7) == 0) {
			conn_raw(c, PLAIN_HEADS[atoi(path + 7)]);
		} else if (strcmp(path, "/drop") == 0) {
			conn_close(c);
			return;
		} else {
			conn_send(c, 404, NULL, "", 0);
		}
		c->served++;
		memmove(c->in, c->in + total, c->len - total);
		c->len -= total;
	}
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	conn_t *c = h->data;

	if (c->cap - c->len < 65536) {
		c->cap = c->cap * 2 + 65536;
		c->in = realloc(c->in, c->cap);
	}
	*buf = uv_buf_init(c->in + c->len, (unsigned)(c->cap - c->len));
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	conn_t *c = st->data;

	if (n < 0) {
		conn_close(c);
		return;
	}
	c->len += (size_t)n;
	conn_process(c);
}

static void on_connection(uv_stream_t *server, int status)
{
	srv_t *s = server->data;
	conn_t *c = calloc(1, sizeof(*c));

	c->s = s;
	c->handles = 2;
	uv_tcp_init(&s->loop, &c->tcp);
	uv_timer_init(&s->loop, &c->slow);
	c->tcp.data = c->slow.data = c;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
		conn_close(c);
		return;
	}
	pthread_mutex_lock(&s->mu);
	s->connections++;
	pthread_mutex_unlock(&s->mu);
	uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void close_any(uv_handle_t *h, void *arg)
{
	if (uv_is_closing(h))
		return;
	if (h->type == UV_TCP && h->data != arg && h->data != NULL)
		conn_close(h->data);
	else if (h->type != UV_TIMER)
		uv_close(h, NULL);
}

static void on_stop(uv_async_t *a)
{
	srv_t *s = a->data;

	uv_walk(&s->loop, close_any, s);
}

static void *srv_main(void *arg)
{
	srv_t *s = arg;
	struct sockaddr_in addr;
	struct sockaddr_storage got;
	int len = sizeof(got);

	uv_loop_init(&s->loop);
	uv_tcp_init(&s->loop, &s->listener);
	s->listener.data = s;
	uv_async_init(&s->loop, &s->stop, on_stop);
	s->stop.data = s;
	uv_ip4_addr("127.0.0.1", 0, &addr);
	uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0);
	uv_listen((uv_stream_t *)&s->listener, 256, on_connection);
	uv_tcp_getsockname(&s->listener, (struct sockaddr *)&got, &len);
	s->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
	uv_sem_post(&s->ready);
	uv_run(&s->loop, UV_RUN_DEFAULT);
	uv_loop_close(&s->loop);
	return NULL;
}

static void srv_start(srv_t *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->mu, NULL);
	uv_sem_init(&s->ready, 0);
	pthread_create(&s->thread, NULL, srv_main, s);
	uv_sem_wait(&s->ready);
}

static void srv_stop(srv_t *s)
{
	uv_async_send(&s->stop);
	pthread_join(s->thread, NULL);
	uv_sem_destroy(&s->ready);
	pthread_mutex_destroy(&s->mu);
}

static int srv_connections(srv_t *s)
{
	int n;

	pthread_mutex_lock(&s->mu);
	n = s->connections;
	pthread_mutex_unlock(&s->mu);
	return n;
}

/* ---- the tests ---- */

static char url[128];

/* Starts the server and a client on a new loop; returns mm_http_open's code. */
static int client_start(srv_t *s, uv_loop_t *loop, const mm_http_options_t *opt, mm_http_t **h)
{
	srv_start(s);
	uv_loop_init(loop);
	return mm_http_open(loop, opt, h);
}

/* Closes the client, runs the loop empty (every handle closed: the loop
 * closes) and stops the server. */
static void client_done(mm_http_t *h, uv_loop_t *loop, srv_t *s)
{
	mm_http_close(h);
	uv_run(loop, UV_RUN_DEFAULT);
	CHECK(uv_loop_close(loop) == 0);
	srv_stop(s);
}

static void set_url(srv_t *s, const char *path)
{
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", s->port, path);
}

TEST(concurrent_requests_share_connections)
{
	enum { N = 200 };
	static result_t res[N];
	static char bodies[N][32];
	const char *hdrs[] = {"X-Amz-Target: DynamoDB_20120810.GetItem",
			      "Content-Type: application/x-amz-json-1.0"};
	mm_http_options_t opt = {.max_connections = 8};
	mm_http_stats_t st;
	mm_http_t *h;
	srv_t s;
	uv_loop_t loop;
	int inside = 0, ok = 1, before;

	srv_start(&s);
	set_url(&s, "/echo");
	uv_loop_init(&loop);
	REQUIRE(mm_http_open(&loop, &opt, &h) == 0);
	for (int i = 0; i < N; i++) {
		mm_http_request_t req = {.method = "POST", .url = url, .headers = hdrs,
					 .nheaders = 2, .timeout_ms = 5000};

		snprintf(bodies[i], sizeof(bodies[i]), "{\"i\":%d}", i);
		req.body = bodies[i];
		req.body_len = strlen(bodies[i]);
		memset(&res[i], 0, sizeof(res[i]));
		res[i].inside = &inside;
		inside = 1;
		CHECK(mm_http_request(h, &req, on_result, &res[i]) == 0);
		inside = 0;
	}
	CHECK_EQ_INT(mm_http_inflight(h), N);
	uv_run(&loop, UV_RUN_DEFAULT);
	for (int i = 0; i < N; i++) {
		ok &= res[i].done == 1 && res[i].status == 0 && res[i].code == 200 &&
		      strcmp(res[i].body, bodies[i]) == 0 && !res[i].reentered;
	}
	CHECK(ok);
	CHECK_EQ_INT(mm_http_inflight(h), 0);
	before = srv_connections(&s);
	CHECK(before >= 1 && before <= 8);
	/* A second wave, one at a time, reuses the open connections. */
	for (int i = 0; i < 50; i++) {
		mm_http_request_t req = {.method = "POST", .url = url, .body = "x", .body_len = 1};

		memset(&res[0], 0, sizeof(res[0]));
		REQUIRE(mm_http_request(h, &req, on_result, &res[0]) == 0);
		uv_run(&loop, UV_RUN_DEFAULT);
		CHECK(res[0].done == 1 && strcmp(res[0].body, "x") == 0);
	}
	CHECK_EQ_INT(srv_connections(&s), before);
	mm_http_get_stats(h, &st);
	CHECK_EQ_INT(st.requests, N + 50);
	CHECK_EQ_INT(st.connects, before);
	CHECK_EQ_INT(st.failures, 0);
	client_done(h, &loop, &s);
}

TEST(status_codes_and_transport_errors)
{
	mm_http_t *h;
	srv_t s;
	uv_loop_t loop;
	result_t r503 = {0}, rdrop = {0}, rslow = {0}, rrefused = {0};
	mm_http_request_t req = {.method = "GET", .url = url};
	char refused[64];

	REQUIRE(client_start(&s, &loop, NULL, &h) == 0);
	set_url(&s, "/status/503");
	REQUIRE(mm_http_request(h, &req, on_result, &r503) == 0);
	set_url(&s, "/drop");
	REQUIRE(mm_http_request(h, &req, on_result, &rdrop) == 0);
	set_url(&s, "/slow");
	req.timeout_ms = 200;
	REQUIRE(mm_http_request(h, &req, on_result, &rslow) == 0);
	/* Port 1 on loopback: nothing listens there. */
	snprintf(refused, sizeof(refused), "http://127.0.0.1:1/");
	req.url = refused;
	req.timeout_ms = 0;
	REQUIRE(mm_http_request(h, &req, on_result, &rrefused) == 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(r503.done == 1 && r503.status == 0 && r503.code == 503);
	CHECK(strcmp(r503.body, "status 503") == 0);
	CHECK(rdrop.done == 1 && rdrop.status == MM_EIO);
	CHECK(rslow.done == 1 && rslow.status == MM_ETIMEDOUT);
	CHECK(rrefused.done == 1 && rrefused.status == MM_EIO && rrefused.code == 0);
	client_done(h, &loop, &s);
}

/* Counts the turns of the loop while nothing is in flight. */
static void on_turn(uv_check_t *c)
{
	(*(int *)c->data)++;
}

static void on_pause(uv_timer_t *t)
{
}

/*
 * Connections the server closes while idle: the client keeps reading an
 * idle connection, so it must notice the close, stop reading (a closed
 * socket is always readable: the loop would spin), and connect again for
 * the next request.
 */
TEST(server_closes_idle_connections)
{
	mm_http_stats_t st;
	mm_http_t *h;
	srv_t s;
	uv_loop_t loop;
	uv_timer_t pause;
	uv_check_t turns;
	int n = 0;
	mm_http_request_t req = {.method = "GET", .url = url, .timeout_ms = 5000};

	srv_start(&s);
	set_url(&s, "/bye");
	uv_loop_init(&loop);
	uv_timer_init(&loop, &pause);
	uv_check_init(&loop, &turns);
	uv_unref((uv_handle_t *)&turns); /* the pause alone keeps the loop running */
	turns.data = &n;
	REQUIRE(mm_http_open(&loop, NULL, &h) == 0);
	for (int i = 0; i < 5; i++) {
		result_t r = {0};

		REQUIRE(mm_http_request(h, &req, on_result, &r) == 0);
		uv_run(&loop, UV_RUN_DEFAULT);
		CHECK(r.done == 1 && r.status == 0 && r.code == 200 && strcmp(r.body, "bye") == 0);
		/* 100 ms with the closed connection idle: a few turns of the
		 * loop, not the hundreds of thousands of a spinning one. */
		n = 0;
		uv_check_start(&turns, on_turn);
		uv_timer_start(&pause, on_pause, 100, 0);
		uv_run(&loop, UV_RUN_DEFAULT);
		uv_check_stop(&turns);
		CHECK(n < 50);
	}
	mm_http_get_stats(h, &st);
	CHECK_EQ_INT(st.requests, 5);
	CHECK_EQ_INT(st.failures, 0);
	CHECK_EQ_INT(st.connects, 5);
	CHECK_EQ_INT(srv_connections(&s), 5);
	mm_http_close(h);
	uv_close((uv_handle_t *)&pause, NULL);
	uv_close((uv_handle_t *)&turns, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(uv_loop_close(&loop) == 0);
	srv_stop(&s);
}

/* A callback that chains the next request, then closes the client from the
 * last callback while another request is still in flight. */
typedef struct chain {
	mm_http_t *h;
	int n, limit;
	result_t slow;
} chain_t;

static void on_chain(void *arg, const mm_http_response_t *res)
{
	chain_t *c = arg;
	mm_http_request_t req = {.method = "POST", .url = url, .body = "c", .body_len = 1};

	if (res->status != 0 || res->code != 200)
		return;
	if (++c->n < c->limit) {
		if (mm_http_request(c->h, &req, on_chain, c) != 0)
			c->n = -1000;
		return;
	}
	mm_http_close(c->h); /* the /slow request is abandoned: no callback */
}

TEST(chaining_and_close_from_callback)
{
	static char slow_url[128];
	chain_t c = {.limit = 20};
	srv_t s;
	uv_loop_t loop;
	mm_http_request_t req = {.method = "POST", .url = url, .body = "c", .body_len = 1};
	mm_http_request_t slow = {.method = "GET", .url = slow_url};

	REQUIRE(client_start(&s, &loop, NULL, &c.h) == 0);
	snprintf(slow_url, sizeof(slow_url), "http://127.0.0.1:%d/slow", s.port);
	set_url(&s, "/echo");
	REQUIRE(mm_http_request(c.h, &slow, on_result, &c.slow) == 0);
	REQUIRE(mm_http_request(c.h, &req, on_chain, &c) == 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_EQ_INT(c.n, 20);
	CHECK_EQ_INT(c.slow.done, 0);
	CHECK(uv_loop_close(&loop) == 0);
	srv_stop(&s);
}

/* Keeps one response header of the answer for the test to check. */
typedef struct hdr_result {
	result_t r;
	const char *name;
	char value[64];
} hdr_result_t;

static void on_hdr_result(void *arg, const mm_http_response_t *res)
{
	hdr_result_t *hr = arg;
	/* The first lookup splits a head that the fast path kept whole; the
	 * next ones read the lines it split. */
	const char *absent = mm_http_response_header(res, "X-Absent");
	const char *v = mm_http_response_header(res, hr->name);
	const char *again = mm_http_response_header(res, hr->name);

	snprintf(hr->value, sizeof(hr->value), "%s",
		 absent || again != v ? "(lookups disagree)" : v ? v : "(none)");
	on_result(&hr->r, res);
}

/* Runs one request to path on h and the loop until it is done. */
static void run_one(uv_loop_t *loop, mm_http_t *h, srv_t *s, const char *path, result_t *r)
{
	mm_http_request_t req = {.method = "GET", .url = url, .timeout_ms = 5000};

	set_url(s, path);
	memset(r, 0, sizeof(*r));
	if (mm_http_request(h, &req, on_result, r) == 0)
		uv_run(loop, UV_RUN_DEFAULT);
}

TEST(chunked_bodies_headers_and_connection_close)
{
	const char *hdrs[] = {"X-Amz-Target: DynamoDB_20120810.PutItem"};
	mm_http_request_t req = {.method = "POST", .url = url, .headers = hdrs, .nheaders = 1,
				 .body = "{}", .body_len = 2};
	hdr_result_t hc = {.name = "x-chunks"}, he = {.name = "X-Seen-Target"};
	mm_http_stats_t st;
	mm_http_t *h;
	srv_t s;
	uv_loop_t loop;
	result_t r;

	REQUIRE(client_start(&s, &loop, NULL, &h) == 0);
	set_url(&s, "/chunked");
	REQUIRE(mm_http_request(h, &req, on_hdr_result, &hc) == 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(hc.r.done == 1 && hc.r.status == 0 && hc.r.code == 200);
	CHECK(strcmp(hc.r.body, "hello world") == 0);
	CHECK(strcmp(hc.value, "three") == 0);
	set_url(&s, "/echo");
	REQUIRE(mm_http_request(h, &req, on_hdr_result, &he) == 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(strcmp(he.r.body, "{}") == 0);
	CHECK(strcmp(he.value, "DynamoDB_20120810.PutItem") == 0);
	/* The chunked answer kept its connection; "Connection: close" does
	 * not, so each /close needs a new one. */
	run_one(&loop, h, &s, "/close", &r);
	CHECK(r.done == 1 && r.code == 200 && strcmp(r.body, "closing") == 0);
	run_one(&loop, h, &s, "/close", &r);
	CHECK(r.done == 1 && r.code == 200);
	run_one(&loop, h, &s, "/echo", &r);
	CHECK(r.done == 1 && r.code == 200);
	mm_http_get_stats(h, &st);
	CHECK_EQ_INT(st.requests, 5);
	CHECK_EQ_INT(st.failures, 0);
	CHECK_EQ_INT(st.connects, 3);
	CHECK_EQ_INT(srv_connections(&s), 3);
	client_done(h, &loop, &s);
}

/* A chunked answer's trailer fields are not among its headers (and the
 * header block stays whole for lookups), and a status code must have
 * three digits. */
TEST(trailers_and_short_status_codes)
{
	mm_http_request_t req = {.method = "GET", .url = url, .timeout_ms = 5000};
	hdr_result_t ht = {.name = "x-trailer"}, hc = {.name = "X-CHUNKS"};
	mm_http_t *h;
	srv_t s;
	uv_loop_t loop;
	result_t r;

	REQUIRE(client_start(&s, &loop, NULL, &h) == 0);
	set_url(&s, "/trailer");
	REQUIRE(mm_http_request(h, &req, on_hdr_result, &ht) == 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(ht.r.done == 1 && ht.r.status == 0 && ht.r.code == 200);
	CHECK(strcmp(ht.r.body, "ok") == 0);
	CHECK(strcmp(ht.value, "(none)") == 0);
	REQUIRE(mm_http_request(h, &req, on_hdr_result, &hc) == 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(strcmp(hc.value, "one") == 0);
	run_one(&loop, h, &s, "/two-digits", &r);
	CHECK(r.done == 1 && r.status == MM_EIO && r.code == 0);
	CHECK(strstr(r.error, "status code not of three digits") != NULL);
	client_done(h, &loop, &s);
}

/* A kept-alive connection the server closes when the next request comes,
 * before answering it: the request is sent again on a new connection,
 * once; a request on a new connection that is dropped fails. */
TEST(reused_connection_closed_before_the_answer)
{
	mm_http_options_t opt = {.max_connections = 1};
	mm_http_stats_t st;
	mm_http_t *h;
	srv_t s;
	uv_loop_t loop;
	result_t r;

	REQUIRE(client_start(&s, &loop, &opt, &h) == 0);
	run_one(&loop, h, &s, "/echo", &r);
	CHECK(r.done == 1 && r.code == 200);
	run_one(&loop, h, &s, "/fresh", &r);
	CHECK(r.done == 1 && r.status == 0 && r.code == 200 && strcmp(r.body, "fresh") == 0);
	run_one(&loop, h, &s, "/fresh", &r);
	CHECK(r.done == 1 && r.status == 0 && r.code == 200);
	mm_http_get_stats(h, &st);
	CHECK_EQ_INT(st.connects, 3);
	CHECK_EQ_INT(st.failures, 0);
	run_one(&loop, h, &s, "/drop", &r); /* first on its (reused) connection: retried, */
	CHECK(r.done == 1 && r.status == MM_EIO); /* and dropped again on the new one */
	mm_http_get_stats(h, &st);
	CHECK_EQ_INT(st.connects, 4);
	CHECK_EQ_INT(st.failures, 1);
	client_done(h, &loop, &s);
}

/* The fast path for simple answers (http_head.c) and its hand-over to
 * libhttp-parser: dynalite's answer cut at every byte, the head whole or
 * not in the first read, the body's rest read after it, all on one kept
 * connection; then heads that the fast path leaves to libhttp-parser, which
 * must read them as before. */
/* GETs /PREFIX/I on h and runs the loop until the answer came: 1 when it
 * is a 200 with body `body` and a header `name` starting with `value`. */
static int get_checked(uv_loop_t *loop, mm_http_t *h, srv_t *s, const char *prefix, size_t i,
		       const char *name, const char *value, const char *body)
{
	mm_http_request_t req = {.method = "GET", .url = url, .timeout_ms = 5000};
	hdr_result_t hr = {.name = name};
	char path[32];

	snprintf(path, sizeof(path), "/%s/%zu", prefix, i);
	set_url(s, path);
	if (mm_http_request(h, &req, on_hdr_result, &hr) != 0)
		return 0;
	uv_run(loop, UV_RUN_DEFAULT);
	if (hr.r.done == 1 && hr.r.status == 0 && hr.r.code == 200 && strcmp(hr.r.body, body) == 0 &&
	    strncmp(hr.value, value, strlen(value)) == 0)
		return 1;
	printf("#   %s: %d %d %ld \"%s\" %s: \"%s\"\n", path, hr.r.done, hr.r.status, hr.r.code,
	       hr.r.body, name, hr.value);
	return 0;
}

TEST(answers_split_at_every_byte)
{
	mm_http_stats_t st;
	mm_http_t *h;
	srv_t s;
	uv_loop_t loop;

	REQUIRE(client_start(&s, &loop, NULL, &h) == 0);
	for (size_t k = 0; k <= strlen(SPLIT_ANSWER); k++)
		CHECK(get_checked(&loop, h, &s, "split", k, "X-AMZ-CRC32", "2745614147",
				  "{\"Attributes\":1}"));
	for (size_t i = 0; i < sizeof(PLAIN_HEADS) / sizeof(PLAIN_HEADS[0]); i++)
		CHECK(get_checked(&loop, h, &s, "plain", i, "x-pad", "a", "body"));
	mm_http_get_stats(h, &st);
	CHECK_EQ_INT(st.failures, 0);
	CHECK_EQ_INT(st.connects, 1);
	client_done(h, &loop, &s);
}

/* With one connection per host, a request waiting behind a slow one times
 * out in the queue; the slow one still completes. */
TEST(queued_request_times_out)
{
	static char slow_url[128];
	mm_http_options_t opt = {.max_connections = 1};
	mm_http_t *h;
	srv_t s;
	uv_loop_t loop;
	result_t rslow = {0}, rq = {0};
	mm_http_request_t slow = {.method = "GET", .url = slow_url};
	mm_http_request_t q = {.method = "GET", .url = url, .timeout_ms = 200};

	REQUIRE(client_start(&s, &loop, &opt, &h) == 0);
	snprintf(slow_url, sizeof(slow_url), "http://127.0.0.1:%d/slow", s.port);
	set_url(&s, "/echo");
	REQUIRE(mm_http_request(h, &slow, on_result, &rslow) == 0);
	REQUIRE(mm_http_request(h, &q, on_result, &rq) == 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(rq.done == 1 && rq.status == MM_ETIMEDOUT);
	CHECK(rslow.done == 1 && rslow.status == 0 && rslow.code == 200);
	client_done(h, &loop, &s);
}

static void on_stop_loop(uv_timer_t *t)
{
	uv_stop(t->loop);
}

/* Closing with requests in every state (resolving a name, connecting,
 * waiting for the answer, queued): no callback, no leak (ASan), no handle
 * left open. */
TEST(close_with_requests_in_flight)
{
	static char named[128];
	mm_http_options_t opt = {.max_connections = 2};
	mm_http_t *h;
	srv_t s;
	uv_loop_t loop;
	uv_timer_t t;
	result_t r[6] = {{0}};
	mm_http_request_t req = {.method = "POST", .url = url, .body = "x", .body_len = 1};

	srv_start(&s);
	uv_loop_init(&loop);
	uv_timer_init(&loop, &t);
	snprintf(named, sizeof(named), "http://localhost:%d/slow", s.port);
	for (int round = 0; round < 2; round++) {
		REQUIRE(mm_http_open(&loop, &opt, &h) == 0);
		set_url(&s, "/slow");
		for (int i = 0; i < 5; i++)
			REQUIRE(mm_http_request(h, &req, on_result, &r[i]) == 0);
		req.url = named;
		REQUIRE(mm_http_request(h, &req, on_result, &r[5]) == 0);
		req.url = url;
		if (round == 1) { /* let them connect and send first */
			uv_timer_start(&t, on_stop_loop, 100, 0);
			uv_run(&loop, UV_RUN_DEFAULT);
		}
		CHECK_EQ_INT(mm_http_inflight(h), 6);
		mm_http_close(h);
		uv_run(&loop, UV_RUN_DEFAULT);
	}
	for (int i = 0; i < 6; i++)
		CHECK_EQ_INT(r[i].done, 0);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(uv_loop_close(&loop) == 0);
	srv_stop(&s);
}

/* A server that sends a FIN and then resets the connection while a large
 * body is still being written: the request fails with MM_EIO and the
 * process lives (murmur does not ignore SIGPIPE, and a write after the FIN
 * and the reset would raise it; the client closes the connection as soon
 * as its read side sees the FIN, before writing again). */
TEST(reset_while_writing_the_body)
{
	size_t len = (size_t)32 << 20;
	char *big = calloc(1, len);
	mm_http_request_t req = {.method = "POST", .url = url, .body = big, .body_len = len,
				 .timeout_ms = 10000};
	mm_http_t *h;
	srv_t s;
	uv_loop_t loop;
	result_t r = {0};

	REQUIRE(big != NULL);
	REQUIRE(client_start(&s, &loop, NULL, &h) == 0);
	set_url(&s, "/reset");
	REQUIRE(mm_http_request(h, &req, on_result, &r) == 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(r.done == 1 && r.status == MM_EIO);
	free(big);
	client_done(h, &loop, &s);
}

TEST(bad_arguments_never_call_back)
{
	mm_http_t *h;
	uv_loop_t loop;
	result_t r = {0};
	mm_http_request_t req = {.method = "GET", .url = NULL};

	uv_loop_init(&loop);
	REQUIRE(mm_http_open(&loop, NULL, &h) == 0);
	CHECK(mm_http_request(h, &req, on_result, &r) == MM_EINVAL);
	req.url = "http://127.0.0.1:1/";
	req.timeout_ms = -1;
	CHECK(mm_http_request(h, &req, on_result, &r) == MM_EINVAL);
	CHECK(mm_http_request(h, NULL, on_result, &r) == MM_EINVAL);
	/* Nothing a caller passes may add lines to the request head. */
	req.timeout_ms = 0;
	req.url = "http://127.0.0.1:1/x HTTP/1.1\r\nX-Injected: 1\r\n\r\nGET /";
	CHECK(mm_http_request(h, &req, on_result, &r) == MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "control characters") != NULL);
	req.url = "http://127.0.0.1:1/a b";
	CHECK(mm_http_request(h, &req, on_result, &r) == MM_EINVAL);
	req.url = "http://127.0.0.1:1/";
	req.method = "GET / HTTP/1.1\r\nX-Injected: 1\r\n\r\nGET";
	CHECK(mm_http_request(h, &req, on_result, &r) == MM_EINVAL);
	req.method = "get";
	CHECK(mm_http_request(h, &req, on_result, &r) == MM_EINVAL);
	req.method = "GET";
	for (int i = 0; i < 4; i++) {
		static const char *const lines[] = {"X-A: 1\r\nX-Injected: 1", "X-A: 1\nX-B: 2",
						    "X-A: 1\r", NULL};
		const char *hdrs[] = {"Host: example", lines[i]};

		req.headers = hdrs;
		req.nheaders = 2;
		CHECK(mm_http_request(h, &req, on_result, &r) == MM_EINVAL);
		CHECK(strstr(mm_diag_msg(), "bad header line") != NULL);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_EQ_INT(r.done, 0);
	mm_http_close(h);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(uv_loop_close(&loop) == 0);
}

TEST(blocking_fetch)
{
	srv_t s;
	mm_buf_t body = {0};
	long code = 0;
	const char *hdrs[] = {"X-Amz-Target: T.Op"};
	mm_http_request_t req = {.method = "POST", .url = url, .headers = hdrs, .nheaders = 1,
				 .body = "hello", .body_len = 5, .timeout_ms = 2000};

	srv_start(&s);
	set_url(&s, "/echo");
	CHECK(mm_http_fetch(&req, &code, &body) == 0);
	CHECK(code == 200 && body.len == 5 && memcmp(body.p, "hello", 5) == 0);
	body.len = 0;
	set_url(&s, "/slow");
	req.timeout_ms = 100;
	CHECK(mm_http_fetch(&req, &code, &body) == MM_ETIMEDOUT);
	mm_buf_free(&body);
	srv_stop(&s);
}

int main(void)
{
	RUN(concurrent_requests_share_connections);
	RUN(status_codes_and_transport_errors);
	RUN(server_closes_idle_connections);
	RUN(chaining_and_close_from_callback);
	RUN(chunked_bodies_headers_and_connection_close);
	RUN(trailers_and_short_status_codes);
	RUN(reused_connection_closed_before_the_answer);
	RUN(answers_split_at_every_byte);
	RUN(queued_request_times_out);
	RUN(close_with_requests_in_flight);
	RUN(reset_while_writing_the_body);
	RUN(bad_arguments_never_call_back);
	RUN(blocking_fetch);
	UNIT_DONE();
}
