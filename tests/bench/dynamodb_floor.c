/*
 * dynamodb_floor.c: the least CPU a client can spend per DynamoDB request
 * over loopback, to set murmur's figure against (doc/performance-journal.md,
 * "DynamoDB requests: system calls, signing and the floor").
 *
 *   dynamodb_floor PORT TABLE [REQUESTS [CONNECTIONS]]
 *
 * Sends REQUESTS (default 41 000) UpdateItem requests shaped like the
 * page_views flush's (an ADD to one of 100 000 keys with the writer
 * condition, about 400 bytes of head and 330 of body) to the DynamoDB
 * emulator on 127.0.0.1:PORT, over CONNECTIONS (default 32) kept-alive
 * connections, one request at a time on each, as murmur's HTTP client does:
 * one writev per request (head and body), one read per response, one
 * level-triggered epoll registration per connection made once, and
 * epoll_wait for whatever is ready. Nothing is signed (the emulator does not
 * check signatures) and each head is formatted with snprintf, so its user
 * time is small; its system time is what the kernel's TCP over loopback and
 * the event loop cost per request with no extra system call. The table
 * must exist (`murmur ddb create-table` with MURMUR_DYNAMODB_TABLE=TABLE).
 *
 * Prints one line: requests, user and system CPU per request (getrusage),
 * system calls per request, and responses that were not 200.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAXCONN 256

typedef struct conn {
	int fd;
	char in[65536];
	size_t got;
} conn_t;

static long sent, answered, not_ok, target, syscalls, seq0;
static int port;
static const char *table;

static double secs(struct timeval tv)
{
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* Sends the next request on c. Returns 0 or -1. */
static int send_one(conn_t *c)
{
	char head[600], body[600];
	struct iovec iov[2];
	int hl, bl;

	bl = snprintf(body, sizeof(body),
		      "{\"TableName\":\"%s\",\"Key\":{\"pk\":{\"S\":\"page_views\\u0000p%ld\"},"
		      "\"sk\":{\"N\":\"20427\"}},\"UpdateExpression\":\"ADD #v :d SET #w = :s, #t = :t\","
		      "\"ConditionExpression\":\"attribute_not_exists(#w) OR #w < :s\","
		      "\"ExpressionAttributeNames\":{\"#v\":\"v\",\"#w\":\"w_0123456789abcdef\",\"#t\":\"ttl\"},"
		      "\"ExpressionAttributeValues\":{\":d\":{\"N\":\"3\"},\":s\":{\"N\":\"%ld\"},"
		      "\":t\":{\"N\":\"1800000000\"}}}",
		      table, sent % 100000, seq0 + sent);
	hl = snprintf(head, sizeof(head),
		      "POST / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
		      "Content-Type: application/x-amz-json-1.0\r\n"
		      "X-Amz-Target: DynamoDB_20120810.UpdateItem\r\nX-Amz-Date: 20261205T001343Z\r\n"
		      "Authorization: AWS4-HMAC-SHA256 Credential=bench/20261205/us-east-1/dynamodb/"
		      "aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, "
		      "Signature=6e79f53db3c711c577cb8e22fd4ac0d282dab4247c8840027b73a1846b1f66f9\r\n"
		      "Content-Length: %d\r\n\r\n",
		      port, bl);
	iov[0] = (struct iovec){head, (size_t)hl};
	iov[1] = (struct iovec){body, (size_t)bl};
	sent++;
	syscalls++;
	/* Small requests on an idle connection: the socket takes them whole. */
	return writev(c->fd, iov, 2) == hl + bl ? 0 : -1;
}

/* 1 when c->in holds a whole response (Content-Length framing). */
static int complete(conn_t *c)
{
	char *end, *cl;

	c->in[c->got] = '\0';
	if ((end = strstr(c->in, "\r\n\r\n")) == NULL)
		return 0;
	for (cl = c->in; (cl = strchr(cl, '\n')) != NULL && cl < end;)
		if (strncasecmp(++cl, "Content-Length:", 15) == 0)
			return c->got >= (size_t)(end + 4 - c->in) + strtoul(cl + 15, NULL, 10);
	return 1;
}

int main(int argc, char **argv)
{
	static conn_t conns[MAXCONN];
	struct epoll_event ev, evs[64];
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct rusage ru0, ru1;
	int nconn, ep, i, one = 1;

	if (argc < 3) {
		fprintf(stderr, "usage: dynamodb_floor PORT TABLE [REQUESTS [CONNECTIONS]]\n");
		return 2;
	}
	port = atoi(argv[1]);
	table = argv[2];
	target = argc > 3 ? atol(argv[3]) : 41000;
	nconn = argc > 4 ? atoi(argv[4]) : 32;
	if (nconn < 1 || nconn > MAXCONN || target < nconn) {
		fprintf(stderr, "dynamodb_floor: 1..%d connections, at least as many requests\n", MAXCONN);
		return 2;
	}
	/* The writer condition needs a sequence above any earlier run's. */
	seq0 = (long)time(NULL) * 100000;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((ep = epoll_create1(0)) < 0) {
		perror("epoll_create1");
		return 1;
	}
	for (i = 0; i < nconn; i++) {
		conn_t *c = &conns[i];

		c->fd = socket(AF_INET, SOCK_STREAM, 0);
		if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
			perror("connect");
			return 1;
		}
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = c};
		epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
	}
	getrusage(RUSAGE_SELF, &ru0);
	for (i = 0; i < nconn; i++)
		if (send_one(&conns[i])) {
			perror("writev");
			return 1;
		}
	while (answered < target) {
		int n = epoll_wait(ep, evs, 64, 10000);

		syscalls++;
		if (n <= 0) {
			fprintf(stderr, "dynamodb_floor: no answer for 10 s\n");
			return 1;
		}
		for (i = 0; i < n; i++) {
			conn_t *c = evs[i].data.ptr;
			ssize_t r = read(c->fd, c->in + c->got, sizeof(c->in) - 1 - c->got);

			syscalls++;
			if (r <= 0) {
				fprintf(stderr, "dynamodb_floor: the server closed a connection\n");
				return 1;
			}
			c->got += (size_t)r;
			if (!complete(c))
				continue;
			if (strncmp(c->in, "HTTP/1.1 200", 12) != 0)
				not_ok++;
			c->got = 0;
			answered++;
			if (sent < target && send_one(c)) {
				perror("writev");
				return 1;
			}
		}
	}
	getrusage(RUSAGE_SELF, &ru1);
	printf("%ld requests over %d connections: user %.1f us, system %.1f us per request; "
	       "%.2f system calls per request; %ld answers not 200\n",
	       answered, nconn, (secs(ru1.ru_utime) - secs(ru0.ru_utime)) * 1e6 / (double)answered,
	       (secs(ru1.ru_stime) - secs(ru0.ru_stime)) * 1e6 / (double)answered,
	       (double)syscalls / (double)answered, not_ok);
	return 0;
}
