/* progress.c: the worker side of the supervisor's shared page, and the
 * poison list (see progress.h). */
#include "progress.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../codec/json.h"
#include "../lib/buf.h"
#include "../lib/error.h"

mm_progress_t *mm_progress;

typedef struct poison {
	char *source;
	uint64_t offset;
} poison_t;

static poison_t *poisons;
static int npoisons;

int mm_progress_attach(void)
{
	const char *path = getenv("MURMUR_PROGRESS");
	void *p;
	int fd;

	if (path == NULL || *path == '\0')
		return 0;
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return mm_diag_set(MM_EIO, "cannot open progress page %s: %s", path, strerror(errno));
	p = mmap(NULL, sizeof(mm_progress_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return mm_diag_set(MM_EIO, "cannot map progress page %s: %s", path, strerror(errno));
	mm_progress = p;
	return 0;
}

/* The page's source for a record: the source id, and for records with an
 * identity the partition part of it (up to its last ':'). */
static int record_key(const char *source_id, const mm_record_t *r, char *out, size_t n)
{
	size_t plen = 0;

	if (r->flags & MM_REC_ID) {
		for (size_t i = 0; i < r->id_len; i++)
			if (r->id[i] == ':')
				plen = i;
	}
	if (plen == 0)
		return snprintf(out, n, "%s", source_id);
	return snprintf(out, n, "%s#%.*s", source_id, (int)plen, r->id);
}

/* What the page's source says now, to rewrite it only on a change. */
static char page_key[256];

void mm_progress_batch(const char *source_id)
{
	if (mm_progress) {
		snprintf(page_key, sizeof(page_key), "%s", source_id);
		memcpy(mm_progress->source, page_key, sizeof(page_key));
	}
}

void mm_progress_partition(const char *source_id, const mm_record_t *r)
{
	char key[256];

	record_key(source_id, r, key, sizeof(key));
	if (strcmp(key, page_key) != 0) {
		memcpy(page_key, key, sizeof(key));
		memcpy(mm_progress->source, key, sizeof(key));
	}
}

/* Reads lines {"source":"...","offset":N,...} as the supervisor writes them
 * (the source is a JSON string: a source id may hold quotes or
 * backslashes); any other line is skipped. A line is read whole however
 * long it is. */
int mm_poison_load(const char *path)
{
	FILE *f = fopen(path, "re");
	char *line = NULL;
	size_t cap = 0;
	mm_buf_t src = {0};
	ssize_t n;

	if (f == NULL)
		return errno == ENOENT ? 0 : mm_diag_set(MM_EIO, "cannot read %s: %s", path, strerror(errno));
	while ((n = getline(&line, &cap, f)) > 0) {
		mm_json_field_t fl[2] = {
			{.name = "source", .name_len = 6},
			{.name = "offset", .name_len = 6},
		};
		int is_int;
		int64_t off;
		double d;
		poison_t *grown;

		if (line[n - 1] == '\n')
			n--;
		if (mm_json_scan(line, (size_t)n, fl, 2) != 0 || fl[0].type != MM_JSON_STRING ||
		    fl[1].type != MM_JSON_NUMBER)
			continue;
		src.len = 0;
		if (mm_json_unescape(fl[0].p, fl[0].len, &src) != 0 ||
		    (src.len && memchr(src.p, '\0', src.len) != NULL))
			continue;
		if (mm_json_number(fl[1].p, fl[1].len, &is_int, &off, &d) != 0 || !is_int || off < 0)
			continue;
		grown = realloc(poisons, sizeof(*poisons) * (size_t)(npoisons + 1));
		if (grown == NULL)
			break;
		poisons = grown;
		poisons[npoisons].source = strndup(src.len ? (const char *)src.p : "", src.len);
		poisons[npoisons].offset = (uint64_t)off;
		if (poisons[npoisons].source)
			npoisons++;
	}
	free(line);
	mm_buf_free(&src);
	fclose(f);
	return 0;
}

void mm_poison_clear(void)
{
	for (int i = 0; i < npoisons; i++)
		free(poisons[i].source);
	free(poisons);
	poisons = NULL;
	npoisons = 0;
}

int mm_poison_has(const char *source_id, const mm_record_t *r)
{
	char key[256];

	record_key(source_id, r, key, sizeof(key));
	for (int i = 0; i < npoisons; i++)
		if (poisons[i].offset == r->offset && strcmp(poisons[i].source, key) == 0)
			return 1;
	return 0;
}

int mm_poison_count(void)
{
	return npoisons;
}
