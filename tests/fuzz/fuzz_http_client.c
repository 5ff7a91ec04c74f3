/*
 * fuzz_http_client.c: murmur's HTTP client (engine/http) reading answers
 * made of the fuzzer's bytes from a server on a real loopback connection:
 * libhttp-parser driven in place across reads, header and body capture,
 * interim 1xx answers, keep-alive, the connection pool, and the retry of a
 * request whose reused connection the server closed.
 *
 * fuzz-link: engine/http/http.c engine/http/http_conn.c engine/http/http_head.c engine/http/tls.c engine/http/url.c -luv -lhttp_parser -lssl -lcrypto
 *
 * The server runs on the client's loop. It answers each complete request
 * head with the next answer of the input, written in up to four pieces,
 * one per loop turn, so the client parses each piece from its own read.
 *
 * The client reads a simple answer whose head comes whole in its first
 * read with its own fast path (engine/http/http_head.c) and everything else
 * with libhttp-parser. In both modes, wherever the fast path takes the
 * answer's head, its reading (code, header block, length, keep-alive) must
 * equal libhttp-parser's (tests/unit/http_ref.h).
 *
 * Byte 0 picks the mode:
 *  - raw (bit 0 clear): the rest of the input is the answer, split at
 *    offsets taken from bytes 1 and 2, then the server half-closes.
 *    Checked: the callback runs exactly once, within a bound; a response
 *    has a code of three digits, an error has a message and no code; the
 *    header lookup reads only inside the captured header block (ASan).
 *  - built (bit 0 set): the input's bytes drive a well-formed answer
 *    (an optional interim 1xx, a final code, headers of random case, a
 *    repeated header, a body framed by Content-Length, by chunks with
 *    extensions and trailers, or by the end of the connection). Checked:
 *    the code, the body byte for byte, and the first value of a header.
 *    When the answer allows keep-alive, a second request must reuse the
 *    connection; with bit 1 set the server closes that connection when the
 *    second request arrives, and the request must succeed once more on a
 *    new connection. A final answer framed by Content-Length with no
 *    interim one before it must be one the fast path takes.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <uv.h>

#include "../unit/http_ref.h"
#include "http/http.h"
#include "lib/time.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ANSWER_MAX 8192
#define PIECES 4

typedef struct answer {
	char bytes[ANSWER_MAX];
	size_t len;
	size_t cut[PIECES - 1]; /* piece boundaries, ascending, within len */
	int hangup;             /* close instead of answering */
} answer_t;

/* One accepted connection; the server keeps only the newest. */
typedef struct peer {
	uv_tcp_t tcp;
	char head[4];           /* the last bytes read, to find a head's end */
	int open;
} peer_t;

static uv_loop_t loop;
static uv_tcp_t listener;
static uv_idle_t ticker;
static char url[64];

static answer_t answers[2];
static int nanswers, served; /* answers given, and requests seen */
static int fin_after;        /* half-close after the last answer */
static peer_t *peer;
static const answer_t *writing; /* the answer being written, one piece a turn */
static int piece;

/* What the callback saw. */
static struct {
	int calls, status;
	long code;
	size_t len;
	char body[ANSWER_MAX];
	char hdr[64];
	int has_hdr;
	char error[256];
} got;
static const char *lookup_name;

/* ---- the server ---- */

static void on_peer_closed(uv_handle_t *hd)
{
	free(hd->data);
}

/* Closes with a reset, so that neither side keeps the connection in
 * TIME_WAIT: tens of thousands of inputs would use up the loopback's ports. */
static void peer_close(peer_t *p)
{
	uv_os_fd_t fd;

	if (p == NULL || !p->open)
		return;
	p->open = 0;
	if (uv_fileno((uv_handle_t *)&p->tcp, &fd) == 0)
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &(struct linger){1, 0}, sizeof(struct linger));
	uv_close((uv_handle_t *)&p->tcp, on_peer_closed);
	if (peer == p)
		peer = NULL;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	free(req);
}

static void on_piece_written(uv_write_t *w, int status)
{
	free(w);
}

static void write_piece(void)
{
	size_t from = piece == 0 ? 0 : writing->cut[piece - 1];
	size_t to = piece == PIECES - 1 ? writing->len : writing->cut[piece];
	uv_write_t *w;
	uv_buf_t b;

	if (peer && to > from && (w = malloc(sizeof(*w))) != NULL) {
		b = uv_buf_init((char *)writing->bytes + from, (unsigned)(to - from));
		if (uv_write(w, (uv_stream_t *)&peer->tcp, &b, 1, on_piece_written) != 0)
			free(w);
	}
	if (++piece < PIECES)
		return;
	writing = NULL;
	uv_idle_stop(&ticker);
	if (peer && fin_after && served == nanswers) {
		uv_shutdown_t *s = malloc(sizeof(*s));

		if (s && uv_shutdown(s, (uv_stream_t *)&peer->tcp, on_shutdown) != 0)
			free(s);
	}
}

static void on_tick(uv_idle_t *t)
{
	if (writing)
		write_piece();
}

static void on_request_head(void)
{
	answer_t *a;

	if (served >= nanswers) {
		peer_close(peer); /* a request the input has no answer for */
		return;
	}
	a = &answers[served];
	if (a->hangup) { /* once: the request comes again on a new connection */
		a->hangup = 0;
		peer_close(peer);
		return;
	}
	served++;
	writing = a;
	piece = 0;
	uv_idle_start(&ticker, on_tick);
}

static void on_alloc(uv_handle_t *hd, size_t hint, uv_buf_t *b)
{
	static char rbuf[65536];

	*b = uv_buf_init(rbuf, sizeof(rbuf));
}

static void on_peer_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	peer_t *p = s->data;

	if (n < 0) {
		peer_close(p);
		return;
	}
	/* The client sends no body, so a head ends at an empty line. */
	for (ssize_t i = 0; i < n; i++) {
		memmove(p->head, p->head + 1, 3);
		p->head[3] = b->base[i];
		if (memcmp(p->head, "\r\n\r\n", 4) == 0 && p == peer)
			on_request_head();
	}
}

static void on_connection(uv_stream_t *server, int status)
{
	peer_t *p;

	if (status != 0 || (p = calloc(1, sizeof(*p))) == NULL)
		abort();
	uv_tcp_init(&loop, &p->tcp);
	p->tcp.data = p;
	p->open = 1;
	if (uv_accept(server, (uv_stream_t *)&p->tcp) != 0) {
		fprintf(stderr, "fuzz_http_client: accept failed\n");
		abort();
	}
	peer_close(peer);
	peer = p;
	/* Pieces go out at once: with Nagle's algorithm each would wait for
	 * the client's delayed acknowledgement of the one before. */
	uv_tcp_nodelay(&p->tcp, 1);
	uv_read_start((uv_stream_t *)&p->tcp, on_alloc, on_peer_read);
}

static void start(void)
{
	struct sockaddr_in sa;
	struct sockaddr_storage bound;
	int len = sizeof(bound);

	uv_loop_init(&loop);
	uv_idle_init(&loop, &ticker);
	uv_tcp_init(&loop, &listener);
	uv_ip4_addr("127.0.0.1", 0, &sa);
	if (uv_tcp_bind(&listener, (struct sockaddr *)&sa, 0) != 0 ||
	    uv_listen((uv_stream_t *)&listener, 64, on_connection) != 0 ||
	    uv_tcp_getsockname(&listener, (struct sockaddr *)&bound, &len) != 0)
		abort();
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/x",
		 ntohs(((struct sockaddr_in *)&bound)->sin_port));
}

/* ---- the client ---- */

static void on_response(void *arg, const mm_http_response_t *res)
{
	static const char *const probes[] = {"content-length", "x", "", "transfer-encoding"};
	const char *v;

	got.calls++;
	got.status = res->status;
	got.code = res->code;
	got.len = res->len;
	if (res->len)
		memcpy(got.body, res->body, res->len < sizeof(got.body) ? res->len : sizeof(got.body));
	snprintf(got.error, sizeof(got.error), "%s", res->error ? res->error : "(null)");
	/* Every lookup walks the whole header block when the name is absent. */
	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++)
		if ((v = mm_http_response_header(res, probes[i])) != NULL)
			(void)strlen(v);
	got.has_hdr = 0;
	if (lookup_name && (v = mm_http_response_header(res, lookup_name)) != NULL) {
		got.has_hdr = 1;
		snprintf(got.hdr, sizeof(got.hdr), "%s", v);
	}
}

/* One request on h; returns when its callback has run. */
static void request(mm_http_t *h)
{
	mm_http_request_t req = {.method = "GET", .url = url, .timeout_ms = 4000};
	int64_t until = mm_now_ms() + 8000;

	memset(&got, 0, sizeof(got));
	if (mm_http_request(h, &req, on_response, NULL) != 0)
		abort();
	while (got.calls == 0) {
		uv_run(&loop, UV_RUN_ONCE);
		if (mm_now_ms() > until) {
			fprintf(stderr, "fuzz_http_client: the request never completed\n");
			abort();
		}
	}
	/* A second call would show on the next turns. */
	uv_run(&loop, UV_RUN_NOWAIT);
	if (got.calls != 1) {
		fprintf(stderr, "fuzz_http_client: %d callbacks for one request\n", got.calls);
		abort();
	}
}

static void fail(const char *what)
{
	fprintf(stderr, "fuzz_http_client: %s (status %d, code %ld, %zu body bytes, error \"%s\")\n",
		what, got.status, got.code, got.len, got.error);
	abort();
}

/* ---- building answers from the input ---- */

typedef struct reader {
	const uint8_t *p, *end;
} reader_t;

static unsigned take(reader_t *r)
{
	return r->p < r->end ? *r->p++ : 0;
}

static void put(answer_t *a, const char *s, size_t n)
{
	if (a->len + n <= ANSWER_MAX) {
		memcpy(a->bytes + a->len, s, n);
		a->len += n;
	}
}

static void puts_(answer_t *a, const char *s)
{
	put(a, s, strlen(s));
}

static void cut(answer_t *a, reader_t *r)
{
	size_t at = 0;

	for (int i = 0; i < PIECES - 1; i++) {
		at += a->len ? (take(r) * 256u + take(r)) % (a->len - at + 1) : 0;
		a->cut[i] = at;
	}
}

/* A token of 1-8 bytes, in random case. */
static void token(reader_t *r, char *out, size_t cap, const char *prefix)
{
	static const char chars[] = "abcdefghijklmnopqrstuvwxyz0123456789-!#$%&'*+.^_`|~";
	size_t n = strlen(prefix), len = n + take(r) % 8;

	memcpy(out, prefix, n);
	for (; n < len && n + 1 < cap; n++)
		out[n] = chars[take(r) % (sizeof(chars) - 1)];
	out[n] = '\0';
	for (char *c = out; *c; c++)
		if (take(r) & 1)
			*c = (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
}

/* A header value of 1-16 visible bytes, no space at either end. */
static void value(reader_t *r, char *out, size_t cap)
{
	size_t n = 1 + take(r) % 16;

	if (n >= cap)
		n = cap - 1;
	for (size_t i = 0; i < n; i++) {
		out[i] = (char)(0x21 + take(r) % 94);
		if (i > 0 && i + 1 < n && (take(r) & 7) == 0)
			out[i] = ' ';
	}
	out[n] = '\0';
}

typedef struct expect {
	long code;
	char body[ANSWER_MAX];
	size_t len;
	char name[16], value[32];
	int keep;   /* the answer allows the connection to be reused */
	int simple; /* Content-Length framing, no interim answer: the fast path's */
} expect_t;

static void build(answer_t *a, expect_t *e, reader_t *r)
{
	static const int interim[] = {100, 102, 103};
	unsigned flags = take(r), framing = take(r) % 3, nheaders = take(r) % 4;
	char line[128], other[32];

	a->len = 0;
	if (flags & 1) {
		snprintf(line, sizeof(line), "HTTP/1.1 %d Wait\r\n%s\r\n", interim[take(r) % 3],
			 flags & 2 ? "Link: </a>\r\n" : "");
		puts_(a, line);
	}
	e->code = 200 + (long)(take(r) % 400);
	if (e->code == 204 || e->code == 304)
		e->code = 200;
	snprintf(line, sizeof(line), "HTTP/1.1 %ld %s\r\n", e->code, flags & 4 ? "" : "Some Reason");
	puts_(a, line);
	token(r, e->name, sizeof(e->name), "x-f");
	value(r, e->value, sizeof(e->value));
	for (unsigned i = 0; i < nheaders; i++) {
		token(r, line, 16, "y-");
		value(r, other, sizeof(other));
		puts_(a, line), puts_(a, ": "), puts_(a, other), puts_(a, "\r\n");
	}
	puts_(a, e->name), puts_(a, flags & 8 ? ":" : ":  "), puts_(a, e->value), puts_(a, "\r\n");
	if (flags & 16) { /* repeated: the lookup gives the first */
		value(r, other, sizeof(other));
		puts_(a, e->name), puts_(a, ": "), puts_(a, other), puts_(a, "\r\n");
	}
	e->keep = framing != 2 && !(flags & 32);
	e->simple = framing == 0 && !(flags & 1);
	if (flags & 32)
		puts_(a, "Connection: close\r\n");
	e->len = take(r) % 600;
	for (size_t i = 0; i < e->len; i++)
		e->body[i] = (char)take(r);
	if (framing == 0) {
		snprintf(line, sizeof(line), "Content-Length: %zu\r\n\r\n", e->len);
		puts_(a, line);
		put(a, e->body, e->len);
	} else if (framing == 1) {
		puts_(a, "Transfer-Encoding: chunked\r\n\r\n");
		for (size_t at = 0, n; at < e->len; at += n) {
			n = 1 + take(r) % (e->len - at);
			snprintf(line, sizeof(line), take(r) & 1 ? "%zx%s\r\n" : "%zX%s\r\n", n,
				 flags & 64 ? ";ext=1" : "");
			puts_(a, line);
			put(a, e->body + at, n);
			puts_(a, "\r\n");
		}
		puts_(a, "0\r\n");
		if (flags & 128) /* a trailer is not a header of the answer */
			puts_(a, "X-Trailer: t\r\n");
		puts_(a, "\r\n");
	} else {
		puts_(a, "\r\n");
		put(a, e->body, e->len);
	}
	cut(a, r);
}

/* The fast path's reading of the answer a, where it takes it, against
 * libhttp-parser's; want_taken: it must take it. */
static void check_fast(const answer_t *a, int want_taken)
{
	char why[200];
	int taken = 0;

	if (http_ref_compare(a->bytes, a->len, &taken, why, sizeof(why)) != NULL) {
		fprintf(stderr, "fuzz_http_client: the fast path and libhttp-parser differ: %s\n", why);
		abort();
	}
	if (want_taken && !taken) {
		fprintf(stderr, "fuzz_http_client: the fast path left a simple answer alone\n");
		abort();
	}
}

static void check_built(const expect_t *e, const char *name)
{
	if (got.status != 0)
		fail("a well-formed answer failed");
	if (got.code != e->code)
		fail("wrong code");
	if (got.len != e->len || memcmp(got.body, e->body, e->len) != 0)
		fail("wrong body");
	if (name && (!got.has_hdr || strcmp(got.hdr, e->value) != 0)) {
		fprintf(stderr, "fuzz_http_client: header %s: want \"%s\", got %s\"%s\"\n", name,
			e->value, got.has_hdr ? "" : "none ", got.hdr);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int started;
	static expect_t e;
	reader_t r = {data, data + size};
	mm_http_stats_t st;
	mm_http_t *h;
	unsigned mode = take(&r);
	int hangup = 0;
	char lower[16];

	if (!started) {
		start();
		started = 1;
	}
	if (size > ANSWER_MAX)
		return 0;
	memset(answers, 0, sizeof(answers));
	served = 0;
	lookup_name = NULL;
	if (mode & 1) {
		build(&answers[0], &e, &r);
		/* Asked in lower case: the lookup ignores case. */
		for (size_t i = 0; i <= strlen(e.name); i++)
			lower[i] = (char)(e.name[i] >= 'A' && e.name[i] <= 'Z' ? e.name[i] + 32 : e.name[i]);
		lookup_name = lower;
		hangup = answers[1].hangup = e.keep && (mode & 2);
		puts_(&answers[1], "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
		cut(&answers[1], &r);
		nanswers = e.keep ? 2 : 1;
		fin_after = !e.keep;
	} else {
		unsigned a = take(&r), b = take(&r);
		size_t rest = (size_t)(r.end - r.p);

		if (rest)
			memcpy(answers[0].bytes, r.p, rest);
		answers[0].len = rest;
		answers[0].cut[0] = answers[0].cut[1] = rest * a / 256;
		answers[0].cut[2] = answers[0].cut[0] + (rest - answers[0].cut[0]) * b / 256;
		nanswers = 1;
		fin_after = 1;
	}
	if (mm_http_open(&loop, NULL, &h) != 0)
		abort();
	request(h);
	check_fast(&answers[0], (mode & 1) && e.simple);
	if (mode & 1) {
		check_built(&e, lower);
		if (e.keep) {
			lookup_name = NULL;
			request(h);
			if (got.status != 0 || got.code != 200 || got.len != 2 || memcmp(got.body, "ok", 2) != 0)
				fail(hangup ? "no retry after the server closed a reused connection"
							: "the second answer on a kept connection was misread");
			mm_http_get_stats(h, &st);
			if (st.connects != (hangup ? 2u : 1u))
				fail("a kept-alive connection was not reused");
		}
	} else if (got.status == 0 ? got.code < 100 || got.code > 999 || got.error[0] != '\0'
				   : got.code != 0 || got.error[0] == '\0') {
		fail("an outcome that contradicts itself");
	}
	writing = NULL;
	uv_idle_stop(&ticker);
	peer_close(peer);
	mm_http_close(h);
	/* The client and the peer are freed from their close callbacks. */
	for (int i = 0; i < 4; i++)
		uv_run(&loop, UV_RUN_NOWAIT);
	return 0;
}
