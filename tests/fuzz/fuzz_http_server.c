/*
 * fuzz_http_server.c: arbitrary bytes sent to the query server over a real
 * loopback connection: the whole request path (engine/net: connection
 * buffering, protocol detection, HTTP/1.1 through http-parser, HTTP/2
 * through nghttp2, limits, routing, Connect and gRPC framing, proto3 JSON
 * and protobuf decoding, the query service over a memory store, response
 * encoding).
 *
 * fuzz-link: engine/net/server.c engine/net/http1.c engine/net/h2.c engine/net/connect.c engine/net/grpc.c engine/net/rpc.c engine/net/pbjson.c engine/net/query.c engine/net/query_meta.c engine/net/query_range.c engine/net/query_value.c engine/net/rcache.c engine/store/store.c engine/store/keyset.c engine/store/memory.c gen/murmur/v1/query.pb-c.c -luv -lnghttp2 -lhttp_parser -lprotobuf-c
 *
 * One server (with four pipelines of different monoids seeded in the memory
 * store) serves every input. Per input: connect, write the bytes, half-close,
 * and run the loop until the server closes the connection. Checked on every
 * input: the server closes the connection within a bounded number of loop
 * turns (no request can wedge a connection open after the client is done);
 * an HTTP/1.1 answer starts with a status line; and the server keeps
 * answering (the next input is served by the same server).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "murmur/v1/query.pb-c.h"

#include "lib/error.h"
#include "lib/time.h"
#include "monoid/monoid.h"
#include "net/query.h"
#include "net/rpc.h"
#include "net/server.h"
#include "store/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

extern const mm_store_vtable_t mm_store_memory_vtable;
/* store.c looks backends up by name; the memory store is the only one here. */
const mm_store_vtable_t *const mm_store_registry[] = {&mm_store_memory_vtable, NULL};

static uv_loop_t loop;
static struct sockaddr_in addr;

static void on_applied(void *arg, int status, const char *detail)
{
	if (status) {
		fprintf(stderr, "fuzz_http_server: seeding failed: %s\n", detail);
		abort();
	}
	*(int *)arg = 1;
}

/* Four pipelines: an all-time sum, a daily count, a Top-K and a Bloom
 * filter, each with one entity "e". */
static void seed(mm_store_t *st)
{
	static const struct {
		const char *name, *monoid, *meta;
		int64_t bucket;
	} p[] = {
		{"views", "sum", "sum\n{\"monoid\":{\"name\":\"sum\"},\"granularity_ms\":0,\"retention_ms\":0}", 0},
		{"daily", "count", "count\n{\"monoid\":{\"name\":\"count\"},\"granularity_ms\":86400000,\"retention_ms\":2592000000}", 1},
		{"top", "topk", "topk\n{\"monoid\":{\"name\":\"topk\",\"k\":4},\"granularity_ms\":0,\"retention_ms\":0}", 0},
		{"seen", "bloom", "bloom\n{\"monoid\":{\"name\":\"bloom\"},\"granularity_ms\":0,\"retention_ms\":0}", 0},
	};
	static mm_monoid_t m[4];
	static mm_ns_t ns[4];
	static _Alignas(16) unsigned char states[4][MM_STATE_MAX];
	mm_delta_t d[4];
	uint8_t done_flags[4] = {0};
	mm_flush_t f = {0};
	mm_monoid_params_t params = {0};
	int done = 0;

	for (int i = 0; i < 4; i++) {
		mm_value_t v = {.type = MM_VAL_STRING, .s = "x", .len = 1, .i = 3};

		params.k = i == 2 ? 4 : 0;
		if (mm_monoid_init(&m[i], p[i].monoid, &params) != 0 ||
		    mm_store_put_meta_wait(st, p[i].name, (const uint8_t *)p[i].meta, strlen(p[i].meta)) != 0)
			abort();
		ns[i] = (mm_ns_t){p[i].name, &m[i]};
		m[i].vt->init(&m[i], states[i]);
		if (i == 0)
			v.type = MM_VAL_INT;
		m[i].vt->add(&m[i], states[i], &v);
		d[i] = (mm_delta_t){&ns[i], {"e", 1, p[i].bucket ? mm_now_ms() / 86400000 : 0}, 0, states[i]};
	}
	f.deltas = d;
	f.ndeltas = 4;
	f.delta_done = done_flags;
	f.now_ms = mm_now_ms();
	if (mm_store_apply(st, &f, on_applied, &done) != 0)
		abort();
	while (!done)
		uv_run(&loop, UV_RUN_ONCE);
}

static void start(void)
{
	static mm_store_t *st;
	static mm_server_t *srv;
	static mm_query_t *q;
	static mm_rpc_t *rpc;
	mm_server_options_t opt = {.listen = "127.0.0.1:0", .request_timeout_ms = 2000,
				   .max_body_bytes = 1 << 16, .max_header_bytes = 8192};
	char where[80];

	uv_loop_init(&loop);
	if (mm_store_open("memory", &loop, NULL, 0, 0, &st) != 0)
		abort();
	seed(st);
	if (mm_query_open(&loop, &st, 1, &q) != 0 || mm_server_open(&loop, &opt, &srv) != 0 ||
	    mm_rpc_open(srv, &murmur__v1__query_service__descriptor, mm_query_call, q, &rpc) != 0 ||
	    mm_server_address(srv, where, sizeof(where)) != 0)
		abort();
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)atoi(strrchr(where, ':') + 1));
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int started;
	char buf[65536];
	size_t off = 0, got = 0;
	int fd, eof = 0;
	char head[16] = {0};

	if (!started) {
		start();
		started = 1;
	}
	if (size > (1 << 16))
		return 0;
	/* Connected without blocking: libFuzzer's SIGALRM (its -timeout
	 * watchdog) interrupts a blocking connect(), which then reports EINTR
	 * while the handshake goes on. The server's loop must turn anyway for
	 * the handshake to be accepted, so poll() waits for it, bounded. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || fcntl(fd, F_SETFL, O_NONBLOCK) != 0)
		abort();
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 && errno != EINPROGRESS) {
		fprintf(stderr, "fuzz_http_server: connect: %s\n", strerror(errno));
		abort();
	}
	for (int64_t until = mm_now_ms() + 8000;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};
		int err = 0;
		socklen_t len = sizeof(err);

		uv_run(&loop, UV_RUN_NOWAIT);
		if (poll(&pfd, 1, 1) == 1) {
			if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
				fprintf(stderr, "fuzz_http_server: connect: %s\n", strerror(err ? err : errno));
				abort();
			}
			break;
		}
		if (mm_now_ms() > until) {
			fprintf(stderr, "fuzz_http_server: connect did not complete\n");
			abort();
		}
	}
	/* Closed with a reset, so no side keeps the connection in TIME_WAIT:
	 * tens of thousands of inputs would otherwise use up the loopback's
	 * ephemeral ports and a later connect would fail. */
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &(struct linger){1, 0}, sizeof(struct linger));
	/* An empty input is a client that connects and half-closes at once. */
	if (size == 0)
		shutdown(fd, SHUT_WR);
	/* The loop turns while we write, so a server that answers early (a
	 * refused request) or reads slowly never deadlocks the writer. The
	 * bound is time, not turns: the server's request timeout (2 s) closes
	 * any connection it still holds well before it. */
	for (int64_t until = mm_now_ms() + 8000; !eof;) {
		ssize_t n;

		if (mm_now_ms() > until) {
			fprintf(stderr, "fuzz_http_server: the connection was not closed\n");
			abort();
		}
		if (off < size) {
			n = write(fd, data + off, size - off);
			if (n > 0)
				off += (size_t)n;
			else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
				off = size; /* the server closed on us: fine */
			if (off == size)
				shutdown(fd, SHUT_WR);
		}
		uv_run(&loop, UV_RUN_NOWAIT);
		n = read(fd, buf, sizeof(buf));
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
			eof = 1;
		} else if (n > 0) {
			if (got < sizeof(head) - 1)
				memcpy(head + got, buf, (size_t)n < sizeof(head) - 1 - got ? (size_t)n : sizeof(head) - 1 - got);
			got += (size_t)n;
		}
	}
	close(fd);
	/* Anything not HTTP/2 is answered in HTTP/1.1, or not at all. */
	if (got > 0 && !(size >= 3 && memcmp(data, "PRI", 3) == 0) && strncmp(head, "HTTP/1.1 ", 9) != 0) {
		fprintf(stderr, "fuzz_http_server: answer without a status line: %.15s\n", head);
		abort();
	}
	return 0;
}
