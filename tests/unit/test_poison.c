/*
 * test_poison.c: the poison list reader (mm_poison_load, core/progress.c).
 *
 * Checked: lines as the supervisor writes them are found again, including a
 * source id with a quote and a backslash (JSON-escaped in the file; the old
 * reader cut the id at the escaped quote, so that record was never
 * recognised and crashed the worker again) and a line longer than 1 KiB
 * (the old reader split it and could take its tail for a line); lines that
 * are not entries (bad JSON, a negative, fractional or missing offset, a
 * source that is not a string) are skipped; a missing file is empty.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/progress.h"
#include "unit.h"

static char dir[64];

static int has(const char *source, uint64_t offset)
{
	mm_record_t r = {0};

	r.offset = offset;
	return mm_poison_has(source, &r);
}

TEST(round_trip)
{
	char path[128], longid[200];
	FILE *f;

	memset(longid, 'x', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = '\0';
	snprintf(path, sizeof(path), "%s/poison.jsonl", dir);
	f = fopen(path, "w");
	REQUIRE(f != NULL);
	fprintf(f, "{\"source\":\"file:/tmp/in.jsonl\",\"offset\":42,\"reason\":\"stalled twice\"}\n");
	fprintf(f, "{\"source\":\"file:/tmp/a\\\"b\\\\c.jsonl\",\"offset\":7,\"reason\":\"x\"}\n");
	fprintf(f, "{\"source\":\"%s\",\"offset\":9,\"reason\":\"", longid);
	for (int i = 0; i < 300; i++)
		fputs("\\\"\\\"", f); /* a long reason: the line is > 1 KiB */
	fprintf(f, "\"}\n");
	fprintf(f, "not json \"source\":\"evil\",\"offset\":1\n");
	fprintf(f, "{\"source\":\"neg\",\"offset\":-1}\n");
	fprintf(f, "{\"source\":\"frac\",\"offset\":1.5}\n");
	fprintf(f, "{\"source\":5,\"offset\":1}\n");
	fprintf(f, "{\"source\":\"nooffset\"}\n");
	fprintf(f, "{\"offset\":3,\"source\":\"reordered\"}");
	fclose(f);

	mm_poison_clear();
	CHECK_EQ_INT(mm_poison_load(path), 0);
	CHECK_EQ_INT(mm_poison_count(), 4);
	CHECK(has("file:/tmp/in.jsonl", 42));
	CHECK(!has("file:/tmp/in.jsonl", 43));
	CHECK(has("file:/tmp/a\"b\\c.jsonl", 7));
	CHECK(has(longid, 9));
	CHECK(has("reordered", 3));
	CHECK(!has("evil", 1));
	CHECK(!has("neg", 0));
	mm_poison_clear();
	CHECK_EQ_INT(mm_poison_count(), 0);

	snprintf(path, sizeof(path), "%s/none.jsonl", dir);
	CHECK_EQ_INT(mm_poison_load(path), 0);
	CHECK_EQ_INT(mm_poison_count(), 0);
}

int main(void)
{
	char cmd[96];

	snprintf(dir, sizeof(dir), "/tmp/mm_test_poison_XXXXXX");
	if (mkdtemp(dir) == NULL)
		return 1;
	RUN(round_trip);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		return 1;
	UNIT_DONE();
}
