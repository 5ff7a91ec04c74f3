/*
 * fuzz_deadletter.c: arbitrary bytes as an existing dead-letter file, the
 * check and tail trim the file backend does when it opens one
 * (mm_dead_letter_file_adopt, engine/deadletter/file.c).
 *
 * fuzz-link: engine/deadletter/file.c
 *
 * The bytes go into a memory file (memfd) and the backend adopts it.
 * Checked on every input:
 *   - the result is 0 or MM_EINVAL (not ours), never an I/O error;
 *   - a refused file is left byte for byte as it was;
 *   - an adopted file is the input cut just after its last '\n' (or empty
 *     when it has none), and is a file the check recognises;
 *   - a file that the backend itself wrote (an entry with the input as its
 *     record, then the input appended as a torn line) is always adopted,
 *     and only the torn line is cut.
 */
#define _GNU_SOURCE /* memfd_create */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "deadletter/deadletter.h"
#include "lib/buf.h"
#include "lib/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fd = -1;
static uint8_t *back;
static size_t back_cap;

/* Puts p[0..n) in the memory file and adopts it; the file's bytes end up in
 * back[0..*len). */
static int adopt(const void *p, size_t n, size_t *len)
{
	ssize_t got;
	off_t end;
	int rc;

	if (ftruncate(fd, 0) != 0 || pwrite(fd, p, n, 0) != (ssize_t)n)
		abort();
	rc = mm_dead_letter_file_adopt(fd, "fuzz.jsonl");
	if ((end = lseek(fd, 0, SEEK_END)) < 0)
		abort();
	if ((size_t)end > back_cap) {
		back_cap = (size_t)end;
		back = realloc(back, back_cap);
		if (back == NULL)
			abort();
	}
	got = pread(fd, back, (size_t)end, 0);
	if (got != end)
		abort();
	*len = (size_t)end;
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl;
	size_t len, keep = 0;
	mm_buf_t own = {0};
	int rc;

	if (fd < 0 && (fd = memfd_create("fuzz_deadletter", MFD_CLOEXEC)) < 0)
		abort();
	for (size_t i = size; i > 0; i--)
		if (data[i - 1] == '\n') {
			keep = i;
			break;
		}
	rc = adopt(data, size, &len);
	if (rc == MM_EINVAL) {
		if (len != size || (size && memcmp(back, data, size) != 0))
			abort();
	} else if (rc == 0) {
		if (len != keep || (keep && memcmp(back, data, keep) != 0))
			abort();
		if (keep && !mm_dead_letter_file_recognise((const char *)back, len, 1))
			abort();
	} else {
		abort();
	}

	/* The backend's own file: one entry, then the input as a torn line
	 * (its newlines removed: it stands for a partial write). */
	{
		mm_dead_letter_entry_t e = {
			.pipeline = "p\"|\n",
			.reason = "json",
			.code = "EJSON",
			.error = "fuzz",
			.record = (const char *)data,
			.len = size,
			.orig_len = size,
			.time_ms = 1795000000000,
		};
		size_t line;

		if (mm_dead_letter_json(&e, &own) != 0 || mm_buf_append(&own, "\n", 1) != 0)
			abort();
		line = own.len;
		for (size_t i = 0; i < size; i++)
			if (data[i] != '\n' && mm_buf_put_u8(&own, data[i]) != 0)
				abort();
		if (adopt(own.p, own.len, &len) != 0 || len != line ||
		    memcmp(back, own.p, line) != 0)
			abort();
		/* A torn first entry alone is ours too, and is cut away. */
		nl = memchr(own.p, ':', own.len);
		if (nl == NULL || adopt(own.p, (size_t)(nl - own.p) + 1, &len) != 0 || len != 0)
			abort();
	}
	mm_buf_free(&own);
	return 0;
}
