/*
 * fuzz_poison.c: arbitrary bytes as the poison list DATA/poison.jsonl
 * (mm_poison_load, engine/core/progress.c), which the supervisor appends
 * to and every worker reads at start-up.
 *
 * fuzz-link: engine/core/progress.c
 *
 * The bytes go into a memory file, read through /proc/self/fd. Checked on
 * every input: loading succeeds; it yields at most one entry per line;
 * a line as the supervisor writes it (source id quoted as JSON, which the
 * fuzzer's bytes become) appended after the input is always found again
 * by mm_poison_has, unless the input's last line is unfinished (then the
 * two are one line).
 */
#define _GNU_SOURCE /* memfd_create */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "codec/json.h"
#include "core/progress.h"
#include "lib/buf.h"
#include "lib/error.h"
#include "lib/text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fd = -1;
static char path[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mm_buf_t b = {0};
	mm_record_t r = {0};
	char id[256];
	size_t lines = 1, idlen;
	int ours;

	if (fd < 0) {
		if ((fd = memfd_create("fuzz_poison", MFD_CLOEXEC)) < 0)
			abort();
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	}
	for (size_t i = 0; i < size; i++)
		lines += data[i] == '\n';
	/* The source id: the input's first bytes that make a valid id (UTF-8,
	 * no NUL, at most 255 bytes). */
	idlen = size < sizeof(id) - 1 ? size : sizeof(id) - 1;
	while (idlen > 0 && (!mm_utf8_valid((const char *)data, idlen) ||
			     memchr(data, '\0', idlen) != NULL))
		idlen--;
	memcpy(id, data, idlen);
	id[idlen] = '\0';

	if (mm_buf_append(&b, data, size) || mm_buf_printf(&b, "{\"source\":") ||
	    mm_json_quote(id, idlen, &b) || mm_buf_printf(&b, ",\"offset\":%llu,\"reason\":\"x\"}\n",
							  (unsigned long long)size))
		abort();
	ours = size == 0 || data[size - 1] == '\n';
	if (ftruncate(fd, 0) != 0 || pwrite(fd, b.p, b.len, 0) != (ssize_t)b.len)
		abort();
	mm_poison_clear();
	if (mm_poison_load(path) != 0)
		abort();
	if (mm_poison_count() > (int)lines)
		abort();
	r.offset = size;
	if (ours && !mm_poison_has(id, &r))
		abort();
	r.offset = size + 1;
	(void)mm_poison_has(id, &r);
	mm_buf_free(&b);
	return 0;
}
