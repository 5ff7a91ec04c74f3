/*
 * valkey_claim.c: claims one dedup id in Valkey through the "valkey" store,
 * for the spec that races 16 processes for one id.
 *
 *   valkey_claim URL PREFIX NS ID START_FILE
 *
 * Opens the store (backing: memory, dedup = valkey), connects, then waits
 * until START_FILE exists, so that every racer claims at the same moment,
 * claims ID in namespace NS through mm_store_claim and prints "won" or
 * "lost" (another racer holds it). Exit 0, or 1 with a message on stderr
 * when the claim could not be decided.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "lib/error.h"
#include "lib/time.h"
#include "store/valkey.h"
#include "../unit/store_done.h"

/* Runs the loop until the predicate holds or 10 s passed. */
static int spin(uv_loop_t *loop, int (*pred)(void *), void *arg)
{
	int64_t end = mm_now_ms() + 10000;

	while (!pred(arg)) {
		if (mm_now_ms() > end)
			return -1;
		if (uv_run(loop, UV_RUN_NOWAIT) == 0)
			usleep(500);
	}
	return 0;
}

static int is_connected(void *arg)
{
	mm_valkey_stats_t s;

	return mm_valkey_stats(arg, &s) == 0 && s.connected;
}

static int file_exists(void *arg)
{
	return access(arg, F_OK) == 0;
}

static int is_done(void *arg)
{
	return ((done_t *)arg)->calls > 0;
}

int main(int argc, char **argv)
{
	mm_kv_t kv[4];
	mm_monoid_t m;
	mm_ns_t ns;
	mm_claim_t id;
	mm_store_t *st = NULL;
	uv_loop_t loop;
	done_t d = {0};
	int rc = 1;

	if (argc != 6) {
		fprintf(stderr, "usage: valkey_claim URL PREFIX NS ID START_FILE\n");
		return 2;
	}
	kv[0] = (mm_kv_t){"backing", "memory"};
	kv[1] = (mm_kv_t){"url", argv[1]};
	kv[2] = (mm_kv_t){"prefix", argv[2]};
	kv[3] = (mm_kv_t){"dedup", "valkey"};
	uv_loop_init(&loop);
	if (mm_store_open("valkey", &loop, kv, 4, 0, &st) != 0) {
		fprintf(stderr, "valkey_claim: %s\n", mm_diag_msg());
		return 1;
	}
	mm_monoid_init(&m, "count", &(mm_monoid_params_t){0});
	ns = (mm_ns_t){argv[3], &m};
	id = (mm_claim_t){.id = argv[4], .len = strlen(argv[4])};
	if (spin(&loop, is_connected, st) != 0 || spin(&loop, file_exists, argv[5]) != 0) {
		fprintf(stderr, "valkey_claim: not connected or never started\n");
		goto out;
	}
	if (mm_store_claim(st, &ns, &id, 1, 60000, on_done, &d) != 0) {
		fprintf(stderr, "valkey_claim: %s\n", mm_diag_msg());
		goto out;
	}
	if (spin(&loop, is_done, &d) != 0 || d.status != 0) {
		fprintf(stderr, "valkey_claim: %s\n", d.calls ? d.detail : "no answer");
		goto out;
	}
	if (id.result != MM_CLAIM_WON && id.result != MM_CLAIM_BUSY) {
		fprintf(stderr, "valkey_claim: unexpected result %d\n", id.result);
		goto out;
	}
	printf("%s\n", id.result == MM_CLAIM_WON ? "won" : "lost");
	rc = 0;
out:
	mm_store_close(st);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	return rc;
}
