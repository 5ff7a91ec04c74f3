/*
 * test_filewriter.c: replacing a file on the thread pool (core/filewriter.c).
 *
 * With every write slowed down (MURMUR_ERRINJ_WRITE_ATOMIC_SLOW_MS), checked:
 * contents handed over while a write is in flight collapse into the newest
 * one; a synchronous write after an asynchronous one is the one that stays,
 * whether the pool job was still queued or already writing; closing the
 * writer while its job runs frees it when the job ends (ASan would see a
 * leak or a use after free); and a write that fails is the result reported,
 * with the file's name, until one succeeds.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "core/filewriter.h"
#include "lib/error.h"
#include "unit.h"

static char dir[] = "/tmp/mm_test_filewriter_XXXXXX";

static char *slurp(const char *path)
{
	static char buf[256];
	FILE *f = fopen(path, "rb");
	size_t n;

	if (f == NULL)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return buf;
}

static void path_of(char *out, size_t cap, const char *name)
{
	snprintf(out, cap, "%s/%s", dir, name);
}

TEST(newest_content_wins)
{
	uv_loop_t loop;
	mm_fwriter_t *w;
	char path[256], detail[256];
	const char *got;

	path_of(path, sizeof(path), "newest");
	uv_loop_init(&loop);
	REQUIRE(mm_fwriter_new(&loop, path, &w) == 0);
	setenv("MURMUR_ERRINJ_WRITE_ATOMIC_SLOW_MS", "100", 1);
	CHECK_EQ_INT(mm_fwriter_put(w, "first", 5), 0);
	CHECK_EQ_INT(mm_fwriter_put(w, "second", 6), 0);
	CHECK_EQ_INT(mm_fwriter_put(w, "third", 5), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	unsetenv("MURMUR_ERRINJ_WRITE_ATOMIC_SLOW_MS");
	got = slurp(path);
	REQUIRE(got != NULL);
	CHECK(strcmp(got, "third") == 0);
	CHECK_EQ_INT(mm_fwriter_result(w, detail, sizeof(detail)), 0);
	mm_fwriter_close(w);
	CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

TEST(sync_write_stays)
{
	uv_loop_t loop;
	mm_fwriter_t *w;
	char path[256];
	const char *got;

	path_of(path, sizeof(path), "sync");
	uv_loop_init(&loop);
	REQUIRE(mm_fwriter_new(&loop, path, &w) == 0);
	setenv("MURMUR_ERRINJ_WRITE_ATOMIC_SLOW_MS", "100", 1);
	/* The first job may be writing, the pending one is dropped. */
	CHECK_EQ_INT(mm_fwriter_put(w, "running", 7), 0);
	CHECK_EQ_INT(mm_fwriter_put(w, "pending", 7), 0);
	usleep(20000);
	CHECK_EQ_INT(mm_fwriter_put_sync(w, "final", 5), 0);
	got = slurp(path);
	REQUIRE(got != NULL);
	CHECK(strcmp(got, "final") == 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	got = slurp(path);
	CHECK(got != NULL && strcmp(got, "final") == 0);
	/* A job queued before the synchronous write, started after it. */
	CHECK_EQ_INT(mm_fwriter_put(w, "stale", 5), 0);
	CHECK_EQ_INT(mm_fwriter_put_sync(w, "last", 4), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	unsetenv("MURMUR_ERRINJ_WRITE_ATOMIC_SLOW_MS");
	got = slurp(path);
	CHECK(got != NULL && strcmp(got, "last") == 0);
	mm_fwriter_close(w);
	CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

TEST(close_while_writing)
{
	uv_loop_t loop;
	mm_fwriter_t *w;
	char path[256];
	const char *got;

	path_of(path, sizeof(path), "closed");
	uv_loop_init(&loop);
	REQUIRE(mm_fwriter_new(&loop, path, &w) == 0);
	setenv("MURMUR_ERRINJ_WRITE_ATOMIC_SLOW_MS", "50", 1);
	CHECK_EQ_INT(mm_fwriter_put(w, "written", 7), 0);
	CHECK_EQ_INT(mm_fwriter_put(w, "dropped", 7), 0);
	mm_fwriter_close(w);
	uv_run(&loop, UV_RUN_DEFAULT);
	unsetenv("MURMUR_ERRINJ_WRITE_ATOMIC_SLOW_MS");
	got = slurp(path);
	CHECK(got != NULL && strcmp(got, "written") == 0);
	CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

TEST(failure_is_the_result)
{
	uv_loop_t loop;
	mm_fwriter_t *w;
	char path[256], detail[256];

	path_of(path, sizeof(path), "missing/dir/status.json");
	uv_loop_init(&loop);
	REQUIRE(mm_fwriter_new(&loop, path, &w) == 0);
	CHECK_EQ_INT(mm_fwriter_put(w, "x", 1), 0);
	/* Nothing has finished yet: no failure to report. */
	CHECK_EQ_INT(mm_fwriter_result(w, detail, sizeof(detail)), 0);
	uv_run(&loop, UV_RUN_DEFAULT);
	CHECK_EQ_INT(mm_fwriter_result(w, detail, sizeof(detail)), MM_EIO);
	CHECK(strstr(detail, "missing/dir/status.json.tmp: open") != NULL);
	CHECK_EQ_INT(mm_fwriter_put_sync(w, "y", 1), MM_EIO);
	mm_fwriter_close(w);
	CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

int main(void)
{
	char cmd[300];

	if (mkdtemp(dir) == NULL)
		return 1;
	RUN(newest_content_wins);
	RUN(sync_write_stays);
	RUN(close_while_writing);
	RUN(failure_is_the_result);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		return 1;
	UNIT_DONE();
}
