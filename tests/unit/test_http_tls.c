/*
 * test_http_tls.c: the HTTP client over TLS against `openssl s_server`
 * on 127.0.0.1, with a self-signed certificate for "localhost" that the
 * test makes and names in SSL_CERT_FILE (OpenSSL's default verify paths
 * read it; the client has no CA option of its own). s_server -www answers
 * every GET with an HTTP/1.0 page and closes the connection, so the body
 * ends with the connection (no Content-Length). The certificate names
 * only DNS:localhost, so the same server reached as 127.0.0.1 must fail
 * verification. Skipped (with a TAP skip line) when the openssl command
 * is missing.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "http/http.h"
#include "lib/error.h"
#include "http_result.h"
#include "unit.h"

static char dir[] = "/tmp/mm_tls_XXXXXX";
static int port;
static pid_t server;

/* A free port on loopback: bind to 0, read it, let it go. */
static int free_port(void)
{
	uv_loop_t loop;
	uv_tcp_t t;
	struct sockaddr_in a;
	struct sockaddr_storage got;
	int len = sizeof(got), p;

	uv_loop_init(&loop);
	uv_tcp_init(&loop, &t);
	uv_ip4_addr("127.0.0.1", 0, &a);
	uv_tcp_bind(&t, (const struct sockaddr *)&a, 0);
	uv_tcp_getsockname(&t, (struct sockaddr *)&got, &len);
	p = ntohs(((struct sockaddr_in *)&got)->sin_port);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	return p;
}

/* Makes the certificate and starts s_server; 0 when it accepts TLS. */
static int server_start(void)
{
	char cmd[1024], cert[256], key[256], accept[64];

	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	snprintf(cmd, sizeof(cmd),
		 "openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 2 "
		 "-subj /CN=localhost -addext subjectAltName=DNS:localhost >/dev/null 2>&1",
		 key, cert);
	if (system(cmd) != 0)
		return -1;
	setenv("SSL_CERT_FILE", cert, 1);
	port = free_port();
	snprintf(accept, sizeof(accept), "127.0.0.1:%d", port);
	server = fork();
	if (server == 0) {
		freopen("/dev/null", "w", stdout);
		freopen("/dev/null", "w", stderr);
		execlp("openssl", "openssl", "s_server", "-accept", accept, "-cert", cert, "-key", key,
		       "-www", "-quiet", (char *)NULL);
		_exit(127);
	}
	/* Ready when a TLS client gets through. */
	snprintf(cmd, sizeof(cmd),
		 "echo | openssl s_client -connect %s -CAfile %s -verify_return_error "
		 ">/dev/null 2>&1", accept, cert);
	for (int i = 0; i < 50; i++) {
		if (system(cmd) == 0)
			return 0;
		usleep(100000);
	}
	return -1;
}

static void server_stop(void)
{
	char cmd[300];

	if (server > 0) {
		kill(server, SIGTERM);
		waitpid(server, NULL, 0);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", dir);
}

TEST(verified_requests_and_a_name_mismatch)
{
	char good[128], bad[128];
	mm_http_request_t req = {.method = "GET", .url = good, .timeout_ms = 5000};
	static result_t r1, r2, rbad;
	mm_http_stats_t st;
	mm_http_t *h;
	uv_loop_t loop;

	snprintf(good, sizeof(good), "https://localhost:%d/", port);
	snprintf(bad, sizeof(bad), "https://127.0.0.1:%d/", port);
	uv_loop_init(&loop);
	REQUIRE(mm_http_open(&loop, NULL, &h) == 0);
	REQUIRE(mm_http_request(h, &req, on_result, &r1) == 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(r1.done == 1 && r1.status == 0 && r1.code == 200);
	CHECK(strstr(r1.body, "s_server") != NULL);
	REQUIRE(mm_http_request(h, &req, on_result, &r2) == 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(r2.done == 1 && r2.status == 0 && r2.code == 200);
	req.url = bad;
	REQUIRE(mm_http_request(h, &req, on_result, &rbad) == 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(rbad.done == 1 && rbad.status == MM_EIO && rbad.code == 0);
	CHECK(strstr(rbad.error, "certificate") != NULL);
	if (strstr(rbad.error, "certificate") == NULL)
		printf("# error: %s\n", rbad.error);
	mm_http_get_stats(h, &st);
	/* HTTP/1.0 answers close their connection: one each. */
	CHECK_EQ_INT(st.connects, 3);
	CHECK_EQ_INT(st.failures, 1);
	mm_http_close(h);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK(uv_loop_close(&loop) == 0);
}

TEST(blocking_fetch_over_tls)
{
	char good[128];
	mm_http_request_t req = {.method = "GET", .url = good, .timeout_ms = 5000};
	mm_buf_t body = {0};
	long code = 0;

	snprintf(good, sizeof(good), "https://localhost:%d/", port);
	CHECK(mm_http_fetch(&req, &code, &body) == 0);
	CHECK(code == 200 && body.len > 0);
	mm_buf_free(&body);
}

int main(void)
{
	if (system("command -v openssl >/dev/null 2>&1") != 0) {
		printf("1..0 # skip: no openssl command\n");
		return 0;
	}
	if (server_start() != 0) {
		printf("not ok 1 - openssl s_server did not start\n1..1\n");
		server_stop();
		return 1;
	}
	RUN(verified_requests_and_a_name_mismatch);
	RUN(blocking_fetch_over_tls);
	server_stop();
	UNIT_DONE();
}
