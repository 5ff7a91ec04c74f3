/*
 * fuzz_file_pos.c: arbitrary bytes as a stored file source position
 * (mm_file_pos_decode, engine/source/position.c; layout in file.c).
 *
 * fuzz-link: engine/source/position.c
 *
 * Checked on every input: only 24 bytes decode, anything else is
 * MM_ECORRUPT naming the length; a decoded position re-encodes (three u64
 * little-endian) to the input bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/error.h"
#include "source/position.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t dev = 1, ino = 2, off = 3;
	uint8_t enc[MM_FILE_POS_LEN];
	char want[64];
	int rc = mm_file_pos_decode("fuzz", data, size, &dev, &ino, &off);

	if (size != MM_FILE_POS_LEN) {
		snprintf(want, sizeof(want), "position has %zu bytes", size);
		if (rc != MM_ECORRUPT || strstr(mm_diag_msg(), want) == NULL)
			abort();
		if (dev != 1 || ino != 2 || off != 3)
			abort(); /* untouched on failure */
		return 0;
	}
	if (rc != 0)
		abort();
	mm_set_u64le(enc, dev);
	mm_set_u64le(enc + 8, ino);
	mm_set_u64le(enc + 16, off);
	if (memcmp(enc, data, sizeof(enc)) != 0)
		abort();
	return 0;
}
