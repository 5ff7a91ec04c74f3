/*
 * test_deadletter.c: the JSON Lines dead-letter file backend.
 *
 * Checked: the file is created on the first entry only; each entry is one
 * whole JSON line with the raw record (base64 when it is not UTF-8, a prefix
 * with its true size when truncated); a partly written last line left by a
 * crash is removed before appending; a short or failed write (a file size
 * limit stands in for a full disk) makes sync() fail with a retriable error
 * and keeps the unwritten bytes, so the sync after space returns completes
 * the cut line and loses nothing; /dev/full reports ENOSPC; a path that
 * cannot be opened refuses the entry instead of holding up flushes.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "codec/json.h"
#include "deadletter/deadletter.h"
#include "lib/error.h"
#include "unit.h"

static char dir[64];

static mm_dead_letter_t *dlq_open(const char *path)
{
	const mm_dead_letter_vtable_t *vt = mm_dead_letter_find("file");
	mm_kv_t kv = {"path", path};
	mm_dead_letter_t *d = NULL;

	if (vt == NULL || vt->open(NULL, &kv, 1, &d) != 0)
		return NULL;
	return d;
}

static mm_dead_letter_entry_t entry(const char *record, size_t len)
{
	mm_dead_letter_entry_t e = {
		.pipeline = "p",
		.reason = "json",
		.code = "EJSON",
		.error = "json: unexpected end of input",
		.source = "file:/in.jsonl",
		.offset = 42,
		.record = record,
		.len = len,
		.orig_len = len,
		.time_ms = 1795000000000,
	};
	return e;
}

/* Reads a whole file into a NUL-terminated malloc'ed string (or NULL). */
static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *s = NULL;
	long n;

	if (f == NULL)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (s = malloc((size_t)n + 1)) != NULL) {
		*len = fread(s, 1, (size_t)n, f);
		s[*len] = '\0';
	}
	fclose(f);
	return s;
}

static void spit(const char *path, const char *s)
{
	FILE *f = fopen(path, "wb");

	if (f) {
		fputs(s, f);
		fclose(f);
	}
}

/* Counts the lines of s, each of which must be a JSON object. */
static int json_lines(const char *s, size_t len)
{
	int n = 0;

	for (size_t at = 0; at < len;) {
		const char *nl = memchr(s + at, '\n', len - at);

		if (nl == NULL || mm_json_scan(s + at, (size_t)(nl - s - at), NULL, 0) != 0)
			return -1;
		at = (size_t)(nl - s) + 1;
		n++;
	}
	return n;
}

TEST(lazy_whole_lines)
{
	char path[128], *s;
	mm_dead_letter_t *d;
	mm_dead_letter_entry_t e;
	size_t len = 0;

	snprintf(path, sizeof(path), "%s/lazy.jsonl", dir);
	d = dlq_open(path);
	REQUIRE(d != NULL);
	CHECK_EQ_INT(d->vt->sync(d), 0);
	CHECK(access(path, F_OK) != 0); /* nothing rejected, no file */

	e = entry("{\"a\":", 5);
	CHECK_EQ_INT(d->vt->write(d, &e), 0);
	e = entry("\xff\xfe", 2);
	CHECK_EQ_INT(d->vt->write(d, &e), 0);
	e = entry("{\"pad\":\"xxxx", 12);
	e.reason = "too_big";
	e.code = "ETOOBIG";
	e.truncated = 1;
	e.orig_len = 5000000;
	CHECK_EQ_INT(d->vt->write(d, &e), 0);
	CHECK_EQ_INT(d->vt->sync(d), 0);
	d->vt->close(d);

	s = slurp(path, &len);
	REQUIRE(s != NULL);
	CHECK_EQ_INT(json_lines(s, len), 3);
	CHECK(strstr(s, "\"record\":\"{\\\"a\\\":\"") != NULL);
	CHECK(strstr(s, "\"record_base64\":\"//4=\"") != NULL);
	CHECK(strstr(s, "\"size\":5000000,\"truncated\":true") != NULL);
	CHECK(strstr(s, "\"time\":\"2026-11-18T") != NULL);
	free(s);
}

TEST(torn_tail_trimmed)
{
	static const char *const before[] = {"{\"old\":1}\n{\"cut\":", "{\"cut_everyth", "{\"old\":2}\n"};
	static const size_t kept[] = {10, 0, 10};
	char path[128], *s;
	mm_dead_letter_entry_t e = entry("x", 1);

	for (int i = 0; i < 3; i++) {
		mm_dead_letter_t *d;
		size_t len = 0;

		snprintf(path, sizeof(path), "%s/torn%d.jsonl", dir, i);
		spit(path, before[i]);
		d = dlq_open(path);
		REQUIRE(d != NULL);
		CHECK_EQ_INT(d->vt->write(d, &e), 0);
		CHECK_EQ_INT(d->vt->sync(d), 0);
		d->vt->close(d);
		s = slurp(path, &len);
		REQUIRE(s != NULL);
		CHECK(strncmp(s, before[i], kept[i]) == 0);
		CHECK(strncmp(s + kept[i], "{\"time\"", 7) == 0);
		CHECK_EQ_INT(json_lines(s, len), kept[i] ? 2 : 1);
		free(s);
	}
}

TEST(short_write_is_completed_by_the_next_sync)
{
	struct rlimit old, lim;
	char path[128], rec[300], *s;
	mm_dead_letter_t *d;
	mm_dead_letter_entry_t e;
	size_t len = 0, one;
	int rc;

	memset(rec, 'r', sizeof(rec));
	snprintf(path, sizeof(path), "%s/short.jsonl", dir);
	d = dlq_open(path);
	REQUIRE(d != NULL);
	e = entry(rec, sizeof(rec));
	CHECK_EQ_INT(d->vt->write(d, &e), 0);
	CHECK_EQ_INT(d->vt->sync(d), 0);
	s = slurp(path, &one);
	free(s);

	/* The file may grow by half a line only: the write is cut short, then
	 * fails with EFBIG (a full disk fails the same way with ENOSPC). */
	REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
	lim = old;
	lim.rlim_cur = one + one / 2;
	REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
	CHECK_EQ_INT(d->vt->write(d, &e), 0);
	CHECK_EQ_INT(d->vt->write(d, &e), 0);
	rc = d->vt->sync(d);
	CHECK_EQ_INT(rc, MM_ENOSPC);
	CHECK(mm_err_retriable(rc));
	CHECK_EQ_INT(d->vt->sync(d), MM_ENOSPC);
	s = slurp(path, &len);
	CHECK_EQ_INT(len, one + one / 2);
	free(s);

	REQUIRE(setrlimit(RLIMIT_FSIZE, &old) == 0);
	CHECK_EQ_INT(d->vt->sync(d), 0);
	d->vt->close(d);
	s = slurp(path, &len);
	REQUIRE(s != NULL);
	CHECK_EQ_INT(len, 3 * one);
	CHECK_EQ_INT(json_lines(s, len), 3);
	free(s);
}

TEST(full_device)
{
	mm_dead_letter_t *d = dlq_open("/dev/full");
	mm_dead_letter_entry_t e = entry("x", 1);

	REQUIRE(d != NULL);
	CHECK_EQ_INT(d->vt->write(d, &e), 0);
	CHECK_EQ_INT(d->vt->sync(d), MM_ENOSPC);
	CHECK(strstr(mm_diag_msg(), "/dev/full") != NULL);
	CHECK_EQ_INT(d->vt->sync(d), MM_ENOSPC);
	d->vt->close(d);
}

TEST(unopenable_path_refuses_entries)
{
	char path[128];
	mm_dead_letter_t *d;
	mm_dead_letter_entry_t e = entry("x", 1);

	snprintf(path, sizeof(path), "%s/no/such/dir.jsonl", dir);
	d = dlq_open(path);
	REQUIRE(d != NULL);
	CHECK_EQ_INT(d->vt->write(d, &e), MM_EIO);
	CHECK_EQ_INT(d->vt->sync(d), 0);
	d->vt->close(d);
}

int main(void)
{
	char cmd[96];

	/* Going past RLIMIT_FSIZE raises SIGXFSZ; ignored, write() fails with EFBIG. */
	signal(SIGXFSZ, SIG_IGN);
	snprintf(dir, sizeof(dir), "/tmp/mm_test_dlq_XXXXXX");
	if (mkdtemp(dir) == NULL)
		return 1;
	RUN(lazy_whole_lines);
	RUN(torn_tail_trimmed);
	RUN(short_write_is_completed_by_the_next_sync);
	RUN(full_device);
	RUN(unopenable_path_refuses_entries);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		return 1;
	UNIT_DONE();
}
