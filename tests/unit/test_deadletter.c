/*
 * test_deadletter.c: the JSON Lines dead-letter file backend.
 *
 * Checked: the file is created on the first entry only; each entry is one
 * whole JSON line with the raw record (base64 when it is not UTF-8, a prefix
 * with its true size when truncated); a partly written last line left by a
 * crash is removed before appending; a short or failed write (a file size
 * limit stands in for a full disk) makes sync() fail with a retriable error
 * and keeps the unwritten bytes, so the sync after space returns completes
 * the cut line and loses nothing; a path that cannot be opened refuses the
 * entry instead of holding up flushes. Only murmur's own files are used: a
 * symbolic link, a device (/dev/full) or an existing file whose first line
 * is not a dead-letter entry is refused and left byte for byte as it was
 * (a dead letter pointed at a binary once truncated it), while a file
 * holding only a torn first entry is trimmed.
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

/* An entry line as the backend writes it (without its newline). */
#define OLD "{\"time\":\"2026-11-18T07:06:40.000Z\",\"pipeline\":\"p\",\"reason\":\"json\"," \
	    "\"code\":\"EJSON\",\"error\":\"e\",\"source\":null,\"offset\":1,\"record\":\"{\"}"

TEST(torn_tail_trimmed)
{
	static const char *const before[] = {OLD "\n{\"time\":\"2026-1", "{\"time\":\"2026-11-18T0",
					     OLD "\n"};
	static const size_t kept[] = {sizeof(OLD), 0, sizeof(OLD)};
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

TEST(device_refused)
{
	mm_dead_letter_t *d = dlq_open("/dev/full");
	mm_dead_letter_entry_t e = entry("x", 1);

	REQUIRE(d != NULL);
	CHECK_EQ_INT(d->vt->write(d, &e), MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "/dev/full is not a regular file") != NULL);
	CHECK_EQ_INT(d->vt->sync(d), 0);
	d->vt->close(d);
}

/* Files that are not ours are refused, every time, and left as they were. */
TEST(foreign_files_untouched)
{
	static const char *const foreign[] = {
		"\x7f" "ELF\x02\x01\x01\0\0\0binary without a newline",
		"{\"old\":1}\n{\"cut\":",
		"root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534",
		"{\"time\":\"2026\",\"pipeline\":\"p\"}\npartial", /* no reason/code */
		"{\"time\":\"2026-1", /* a torn entry... */
	};
	char path[128], *s;
	mm_dead_letter_entry_t e = entry("x", 1);

	for (int i = 0; i < 5; i++) {
		mm_dead_letter_t *d;
		size_t len = 0;

		snprintf(path, sizeof(path), "%s/foreign%d", dir, i);
		spit(path, foreign[i]);
		if (i == 4) { /* ...followed by more than a torn line is not ours */
			FILE *f = fopen(path, "ab");

			REQUIRE(f != NULL);
			fputs("\n\x7f" "ELF", f);
			fclose(f);
		}
		d = dlq_open(path);
		REQUIRE(d != NULL);
		CHECK_EQ_INT(d->vt->write(d, &e), MM_EINVAL);
		CHECK(strstr(mm_diag_msg(), path) != NULL);
		CHECK(strstr(mm_diag_msg(), "not a murmur dead-letter file") != NULL);
		CHECK_EQ_INT(d->vt->write(d, &e), MM_EINVAL);
		CHECK_EQ_INT(d->vt->sync(d), 0);
		d->vt->close(d);
		s = slurp(path, &len);
		REQUIRE(s != NULL);
		if (i < 4) {
			CHECK_EQ_INT(len, strlen(foreign[i]));
			CHECK(memcmp(s, foreign[i], len) == 0);
		} else {
			CHECK_EQ_INT(len, strlen(foreign[i]) + 5);
		}
		free(s);
	}
}

TEST(symlink_refused)
{
	char path[128], target[128], *s;
	mm_dead_letter_t *d;
	mm_dead_letter_entry_t e = entry("x", 1);
	size_t len = 0;

	snprintf(target, sizeof(target), "%s/target.jsonl", dir);
	snprintf(path, sizeof(path), "%s/link.jsonl", dir);
	spit(target, OLD "\n");
	REQUIRE(symlink(target, path) == 0);
	d = dlq_open(path);
	REQUIRE(d != NULL);
	CHECK_EQ_INT(d->vt->write(d, &e), MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "symbolic link") != NULL);
	d->vt->close(d);
	s = slurp(target, &len);
	REQUIRE(s != NULL);
	CHECK_EQ_INT(len, sizeof(OLD));
	free(s);
}

TEST(recognise)
{
	/* NUL inside the text: the length the case is read with. */
	static const char with_nul[] = "{\"time\":\"2026\0\",\"pipeline\":\"";
	static const struct {
		const char *head;
		int whole, want;
	} cases[] = {
		{"", 1, 1},
		{OLD "\n", 1, 1},
		{OLD "\n" OLD, 1, 1},
		{OLD, 0, 1},                    /* a first line longer than the head */
		{"{\"time\":\"2026-11", 1, 1}, /* torn first entry */
		{"{\"time\":\"2026-11", 0, 0},
		{"{\"time\":\"\",\"pipeline\":\"p\"}\n", 1, 0},
		{with_nul, 1, 0},
		{"{\"time\":\"2026-11-18T07:06:40.000Z\",\"pipeline\":\"p\",\"reason\":1,"
		 "\"code\":\"E\"}\n", 1, 0},
		{"{\"time\":\"0123456789012345678901234567890123456789X", 1, 0},
		{"#!/bin/sh\n", 1, 0},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = cases[i].head == with_nul ? sizeof(with_nul) - 1 : strlen(cases[i].head);

		CHECK_EQ_INT(mm_dead_letter_file_recognise(cases[i].head, n, cases[i].whole),
			     cases[i].want);
	}
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
	RUN(device_refused);
	RUN(foreign_files_untouched);
	RUN(symlink_refused);
	RUN(recognise);
	RUN(unopenable_path_refuses_entries);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		return 1;
	UNIT_DONE();
}
