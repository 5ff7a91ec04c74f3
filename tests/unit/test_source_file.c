/*
 * test_source_file.c: the "file" and "stdin" sources on a real libuv loop,
 * against temporary files under /tmp, pipes and a pseudo-terminal.
 *
 * Each test builds a loop, opens a source through the registry with a test
 * sink that copies every record, drives the loop until a condition holds (with
 * a deadline), closes the source and asserts uv_loop_close() == 0, so a
 * leaked handle or request fails the test.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "lib/error.h"
#include "source/source.h"
#include "unit.h"

static char tmpdir[64];

/* ---- the test sink ---- */

typedef struct trec {
	char *p;
	uint32_t len;
	uint32_t flags;
	uint64_t orig_len;
	uint64_t offset;
} trec_t;

typedef struct tsrc tsrc_t;

struct tsrc {
	uv_loop_t loop;
	uv_timer_t deadline;
	uv_timer_t resumer;
	int timed_out;
	const mm_source_vtable_t *vt;
	mm_source_t *src;

	trec_t *recs;
	size_t nrec, caprec;
	size_t nbatch, max_batch;
	/* Loop iterations t_run has run, and the most batches one delivered. */
	size_t iter, iter_seen, iter_batches, max_iter_batches;
	uint8_t pos[32];
	size_t pos_len;
	int eof, err, closed;
	char detail[512];

	/* Behaviour injected into deliver(). */
	size_t stop_after;  /* stop() from deliver once this many records came */
	int pause_every;    /* pause() from deliver every N batches, resume 1 ms later */
	int paused;
	int pauses;
	int bad;            /* deliveries while paused, stopped or after eof */
	int stopped;
	long rss_max_kb;    /* largest resident set seen in deliver(), if measured */
	int measure_rss;
};

static long rss_kb(void)
{
	long pages = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f == NULL)
		return 0;
	if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
		resident = 0;
	fclose(f);
	return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void t_resume_cb(uv_timer_t *h)
{
	tsrc_t *t = h->data;

	t->paused = 0;
	t->vt->resume(t->src);
}

static void t_deliver(void *ctx, mm_batch_t *b)
{
	tsrc_t *t = ctx;
	size_t i;

	if (t->paused || t->stopped || t->eof || t->err || b->src != t->src || b->n == 0)
		t->bad++;
	for (i = 0; i < b->n; i++) {
		const mm_record_t *r = &b->recs[i];
		trec_t *x;

		if (t->nrec == t->caprec) {
			t->caprec = t->caprec ? t->caprec * 2 : 64;
			t->recs = realloc(t->recs, t->caprec * sizeof(*t->recs));
		}
		x = &t->recs[t->nrec++];
		x->p = malloc(r->len + 1);
		memcpy(x->p, r->p, r->len);
		x->p[r->len] = '\0';
		x->len = r->len;
		x->flags = r->flags;
		x->orig_len = r->orig_len;
		x->offset = r->offset;
	}
	t->nbatch++;
	if (b->n > t->max_batch)
		t->max_batch = b->n;
	if (t->iter_seen != t->iter) {
		t->iter_seen = t->iter;
		t->iter_batches = 0;
	}
	if (++t->iter_batches > t->max_iter_batches)
		t->max_iter_batches = t->iter_batches;
	if (b->end_pos_len <= sizeof(t->pos)) {
		memcpy(t->pos, b->end_pos, b->end_pos_len);
		t->pos_len = b->end_pos_len;
	}
	if (t->measure_rss) {
		long kb = rss_kb();

		if (kb > t->rss_max_kb)
			t->rss_max_kb = kb;
	}
	if (t->stop_after && t->nrec >= t->stop_after && !t->stopped) {
		t->vt->stop(t->src);
		t->stopped = 1;
	}
	if (t->pause_every && t->nbatch % (size_t)t->pause_every == 0 && !t->stopped) {
		t->vt->pause(t->src);
		t->paused = 1;
		t->pauses++;
		uv_timer_start(&t->resumer, t_resume_cb, 1, 0);
	}
}

static void t_eof(void *ctx, mm_source_t *src)
{
	tsrc_t *t = ctx;

	t->eof++;
}

static void t_error(void *ctx, mm_source_t *src, int err, const char *detail)
{
	tsrc_t *t = ctx;

	t->err = err;
	snprintf(t->detail, sizeof(t->detail), "%s", detail);
}

static void t_init(tsrc_t *t)
{
	memset(t, 0, sizeof(*t));
	uv_loop_init(&t->loop);
	uv_timer_init(&t->loop, &t->deadline);
	uv_timer_init(&t->loop, &t->resumer);
	t->deadline.data = t;
	t->resumer.data = t;
}

/* Opens a source by name with "key=value" options. */
static int t_open(tsrc_t *t, const char *name, const char *const *opts)
{
	mm_source_sink_t sink = {t, t_deliver, t_eof, t_error, NULL, NULL, NULL, NULL};
	mm_kv_t kv[8];
	size_t n = 0;
	static char keys[8][32];

	t->vt = mm_source_find(name);
	if (t->vt == NULL)
		return MM_ENOTFOUND;
	for (; opts && opts[n]; n++) {
		const char *eq = strchr(opts[n], '=');

		snprintf(keys[n], sizeof(keys[n]), "%.*s", (int)(eq - opts[n]), opts[n]);
		kv[n].key = keys[n];
		kv[n].value = eq + 1;
	}
	return t->vt->open(&t->loop, kv, n, &sink, &t->src);
}

static void t_deadline_cb(uv_timer_t *h)
{
	tsrc_t *t = h->data;

	t->timed_out = 1;
}

/* Runs the loop until pred holds or ms pass; returns pred. */
static int t_run(tsrc_t *t, int (*pred)(tsrc_t *t, size_t arg), size_t arg, int ms)
{
	t->timed_out = 0;
	uv_timer_start(&t->deadline, t_deadline_cb, (uint64_t)ms, 0);
	while (!pred(t, arg) && !t->timed_out) {
		t->iter++;
		uv_run(&t->loop, UV_RUN_ONCE);
	}
	uv_timer_stop(&t->deadline);
	return pred(t, arg);
}

static int p_recs(tsrc_t *t, size_t n)
{
	return t->nrec >= n || t->err;
}

static int p_eof(tsrc_t *t, size_t unused)
{
	return t->eof || t->err;
}

static int p_err(tsrc_t *t, size_t unused)
{
	return t->err != 0;
}

static int p_never(tsrc_t *t, size_t unused)
{
	return 0;
}

static void t_sleep(tsrc_t *t, int ms)
{
	t_run(t, p_never, 0, ms);
}

static void t_closed_cb(void *arg)
{
	tsrc_t *t = arg;

	t->closed++;
}

/* Closes the source and the loop; returns uv_loop_close(). */
static int t_finish(tsrc_t *t)
{
	size_t i;
	int rc;

	if (t->src)
		t->vt->close(t->src, t_closed_cb, t);
	uv_close((uv_handle_t *)&t->deadline, NULL);
	uv_close((uv_handle_t *)&t->resumer, NULL);
	uv_run(&t->loop, UV_RUN_DEFAULT);
	if (t->src && t->closed != 1)
		return -12345;
	rc = uv_loop_close(&t->loop);
	for (i = 0; i < t->nrec; i++)
		free(t->recs[i].p);
	free(t->recs);
	return rc;
}

/* ---- files ---- */

static void path_of(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", tmpdir, name);
}

static void write_file(const char *path, const char *data, size_t len, int flags)
{
	int fd = open(path, O_WRONLY | O_CREAT | flags, 0644);
	size_t off = 0;

	while (off < len) {
		ssize_t w = write(fd, data + off, len - off);

		if (w <= 0)
			break;
		off += (size_t)w;
	}
	close(fd);
}

static void put_file(const char *path, const char *s)
{
	write_file(path, s, strlen(s), O_TRUNC);
}

static void append_file(const char *path, const char *s)
{
	write_file(path, s, strlen(s), O_APPEND);
}

static uint64_t inode_of(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (uint64_t)st.st_ino : 0;
}

/* Builds "<prefix><i>\n" for i in [0, n). */
static char *numbered_lines(const char *prefix, int n, size_t *len)
{
	mm_buf_t b = {0};
	int i;

	for (i = 0; i < n; i++)
		mm_buf_printf(&b, "%s%d\n", prefix, i);
	mm_buf_put_u8(&b, 0);
	*len = b.len - 1;
	return (char *)b.p;
}

/* Checks that the records are exactly "<prefix><first>" .. "<prefix><first+n-1>". */
static int check_numbered(const tsrc_t *t, size_t from, const char *prefix, int first, int n)
{
	char want[64];
	int i;

	if (t->nrec - from != (size_t)n) {
		printf("#   got %zu records, expected %d\n", t->nrec - from, n);
		return 0;
	}
	for (i = 0; i < n; i++) {
		snprintf(want, sizeof(want), "%s%d", prefix, first + i);
		if (strcmp(t->recs[from + (size_t)i].p, want) != 0) {
			printf("#   record %d is '%s', expected '%s'\n", i, t->recs[from + (size_t)i].p,
			       want);
			return 0;
		}
	}
	return 1;
}

/* ---- tests ---- */

TEST(registry)
{
	CHECK(mm_source_find("file") != NULL);
	CHECK(mm_source_find("stdin") != NULL);
	CHECK(mm_source_find("kafka-not-yet") == NULL);
	CHECK(mm_source_find(NULL) == NULL);
	CHECK(strcmp(mm_source_registry[0]->name, "file") == 0);
}

TEST(options_rejected)
{
	tsrc_t t;
	const char *unknown[] = {"path=/x", "colour=red", NULL};
	const char *nopath[] = {"follow=true", NULL};
	const char *zero[] = {"path=/x", "batch=0", NULL};
	const char *badsize[] = {"path=/x", "read_size=0", NULL};
	const char *nodrain[] = {"path=/x", "drain=0", NULL};
	const char *bigdrain[] = {"drain=1025", NULL};
	const char *stdin_path[] = {"path=/x", NULL};

	t_init(&t);
	CHECK_EQ_INT(t_open(&t, "file", unknown), MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "colour") != NULL);
	CHECK_EQ_INT(t_open(&t, "file", nopath), MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "path") != NULL);
	CHECK_EQ_INT(t_open(&t, "file", zero), MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "batch") != NULL);
	CHECK_EQ_INT(t_open(&t, "file", badsize), MM_EINVAL);
	CHECK_EQ_INT(t_open(&t, "file", nodrain), MM_EINVAL);
	CHECK(strstr(mm_diag_msg(), "'drain': must be between 1 and 1024") != NULL);
	CHECK_EQ_INT(t_open(&t, "stdin", bigdrain), MM_EINVAL);
	CHECK_EQ_INT(t_open(&t, "stdin", stdin_path), MM_EINVAL);
	t.src = NULL;
	CHECK_EQ_INT(t_finish(&t), 0);
}

/* Lines split across reads of every small size, CRLF, empty lines and an
 * unterminated last line, with exact offsets and the final position. */
TEST(lines_across_small_reads)
{
	static const char text[] = "alpha\nbe\n\nthe quick brown fox\r\n\r\n\r\nsolo\n"
				   "cr\r\r\n\n\nlast-no-newline";
	static const char *const want[] = {"alpha", "be", "the quick brown fox", "solo", "cr\r",
					   "last-no-newline"};
	static const char *const sizes[] = {"read_size=1", "read_size=2", "read_size=3",
					    "read_size=7", "read_size=64", "read_size=1m"};
	char path[128], popt[160];
	size_t s, i;

	path_of(path, sizeof(path), "small.jsonl");
	put_file(path, text);
	snprintf(popt, sizeof(popt), "path=%s", path);
	for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		const char *opts[] = {popt, sizes[s], NULL};
		tsrc_t t;

		t_init(&t);
		REQUIRE(t_open(&t, "file", opts) == 0);
		REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
		CHECK(t_run(&t, p_eof, 0, 5000));
		CHECK_EQ_INT(t.err, 0);
		CHECK_EQ_INT(t.eof, 1);
		CHECK_EQ_INT(t.bad, 0);
		CHECK_EQ_INT(t.nrec, 6);
		for (i = 0; i < t.nrec && i < 6; i++) {
			CHECK(strcmp(t.recs[i].p, want[i]) == 0);
			CHECK_EQ_INT(t.recs[i].offset, strstr(text, want[i]) - text);
			CHECK_EQ_INT(t.recs[i].orig_len, strlen(want[i]));
			CHECK_EQ_INT(t.recs[i].flags, 0);
		}
		CHECK_EQ_INT(t.pos_len, 24);
		CHECK_EQ_INT(mm_get_u64le(t.pos + 8), inode_of(path));
		CHECK_EQ_INT(mm_get_u64le(t.pos + 16), strlen(text));
		CHECK_EQ_INT(t.src->records, 6);
		CHECK_EQ_INT(t_finish(&t), 0);
	}
}

/* Lines of every length from 0 to 150 bytes (some CRLF, some empty), so
 * that line ends fall at every place of the line split's 64-byte newline
 * windows and of its memchr tail, read in sizes around a window and in
 * batches that stop inside one: the records, their offsets and the bytes
 * counted are those of the text. Each way is read twice: on the loop thread
 * (RWF_NOWAIT, the file being in the page cache) and with those reads
 * refused (error injection), on the thread pool. */
TEST(lines_across_newline_windows)
{
	static const char *const sizes[] = {"read_size=1", "read_size=63", "read_size=64",
					    "read_size=65", "read_size=100", "read_size=1m"};
	static const char *const batches[] = {"batch=1", "batch=3", "batch=4096"};
	mm_buf_t text = {0};
	size_t want_off[151], want_len[151], nwant = 0, want_bytes = 0;
	char path[128], popt[160];
	size_t s, b, i, j;

	for (i = 0; i <= 150; i++) {
		size_t off = text.len;

		for (j = 0; j < i; j++)
			mm_buf_put_u8(&text, (uint8_t)('a' + (i + j) % 26));
		if (i % 5 == 1)
			mm_buf_put_u8(&text, '\r');
		mm_buf_put_u8(&text, '\n');
		if (i > 0) {
			want_off[nwant] = off;
			want_len[nwant++] = i;
			want_bytes += i;
		}
	}
	path_of(path, sizeof(path), "windows.jsonl");
	write_file(path, (char *)text.p, text.len, O_TRUNC);
	snprintf(popt, sizeof(popt), "path=%s", path);
	for (s = 0; s < 2 * sizeof(sizes) / sizeof(sizes[0]); s++) {
		for (b = 0; b < sizeof(batches) / sizeof(batches[0]); b++) {
			const char *opts[] = {popt, sizes[s / 2], batches[b], NULL};
			tsrc_t t;

			if (s % 2)
				setenv("MURMUR_ERRINJ_FSRC_NOWAIT_REFUSED", "1", 1);
			else
				unsetenv("MURMUR_ERRINJ_FSRC_NOWAIT_REFUSED");
			t_init(&t);
			REQUIRE(t_open(&t, "file", opts) == 0);
			REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
			CHECK(t_run(&t, p_eof, 0, 5000));
			CHECK_EQ_INT(t.err, 0);
			CHECK_EQ_INT(t.bad, 0);
			CHECK_EQ_INT(t.nrec, nwant);
			for (i = 0; i < t.nrec && i < nwant; i++) {
				CHECK_EQ_INT(t.recs[i].offset, want_off[i]);
				CHECK_EQ_INT(t.recs[i].len, want_len[i]);
				CHECK(memcmp(t.recs[i].p, text.p + want_off[i], want_len[i]) == 0);
			}
			CHECK_EQ_INT(t.src->bytes, want_bytes);
			CHECK_EQ_INT(mm_get_u64le(t.pos + 16), text.len);
			CHECK_EQ_INT(t_finish(&t), 0);
		}
	}
	unsetenv("MURMUR_ERRINJ_FSRC_NOWAIT_REFUSED");
	mm_buf_free(&text);
}

TEST(describe)
{
	char path[128], popt[160], want[4200];
	const char *opts[] = {popt, NULL};
	mm_buf_t out = {0};
	tsrc_t t;

	path_of(path, sizeof(path), "describe.jsonl");
	put_file(path, "a\nbb\n");
	snprintf(popt, sizeof(popt), "path=%s", path);
	t_init(&t);
	REQUIRE(t_open(&t, "file", opts) == 0);
	CHECK(strncmp(t.src->id, "file:", 5) == 0 && strcmp(t.src->id + 5, path) == 0);
	REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
	CHECK(t_run(&t, p_eof, 0, 5000));
	REQUIRE(t.nrec == 2);
	{
		mm_record_t r = {.offset = t.recs[1].offset};

		CHECK_EQ_INT(t.vt->describe(t.src, &r, &out), 0);
	}
	snprintf(want, sizeof(want), "line at byte offset 2 of %s", path);
	mm_buf_put_u8(&out, 0);
	CHECK(strcmp((char *)out.p, want) == 0);
	mm_buf_free(&out);
	CHECK_EQ_INT(t_finish(&t), 0);

	/* A relative path is made absolute against the working directory. */
	{
		const char *rel[] = {"path=rel.jsonl", NULL};
		char cwd[4096];

		REQUIRE(getcwd(cwd, sizeof(cwd)) != NULL);
		snprintf(want, sizeof(want), "file:%s/rel.jsonl", cwd);
		t_init(&t);
		REQUIRE(t_open(&t, "file", rel) == 0);
		CHECK(strcmp(t.src->id, want) == 0);
		CHECK_EQ_INT(t_finish(&t), 0);
	}
}

/* Oversized lines at every boundary: exactly max_record (kept), one byte over
 * (TOOBIG, shorter than the prefix), over the prefix, inside one read and
 * skipped across reads, CRLF, and an unterminated oversized last line. */
TEST(oversized_lines_edges)
{
	static const char *const sizes[] = {"read_size=7", "read_size=1000", "read_size=64k"};
	struct {
		char c;
		size_t len;
		const char *end;
	} lines[] = {
		{'a', 1024, "\n"}, {'b', 1025, "\n"}, {'c', 5000, "\r\n"}, {'d', 3, "\n"},
		{'e', 4097, "\n"}, {'f', 4098, "\n"}, {'g', 20000, "\n"},  {'h', 6000, ""},
	};
	size_t nl = sizeof(lines) / sizeof(lines[0]);
	char path[128], popt[160];
	uint64_t offs[8];
	mm_buf_t text = {0};
	size_t s, i, j;

	for (i = 0; i < nl; i++) {
		offs[i] = text.len;
		for (j = 0; j < lines[i].len; j++)
			mm_buf_put_u8(&text, j % 10 == 9 ? (uint8_t)lines[i].c : (uint8_t)('0' + j % 10));
		mm_buf_append(&text, lines[i].end, strlen(lines[i].end));
	}
	path_of(path, sizeof(path), "edges.jsonl");
	write_file(path, (char *)text.p, text.len, O_TRUNC);
	snprintf(popt, sizeof(popt), "path=%s", path);
	for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		const char *opts[] = {popt, sizes[s], "batch=3", NULL};
		tsrc_t t;

		t_init(&t);
		REQUIRE(t_open(&t, "file", opts) == 0);
		t.src->max_record = 1024;
		REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
		CHECK(t_run(&t, p_eof, 0, 10000));
		CHECK_EQ_INT(t.err, 0);
		CHECK_EQ_INT(t.nrec, nl);
		for (i = 0; i < t.nrec && i < nl; i++) {
			const trec_t *r = &t.recs[i];
			size_t want_len = lines[i].len > 1024 && lines[i].len > MM_REC_PREFIX
						  ? MM_REC_PREFIX
						  : lines[i].len;

			CHECK_EQ_INT(r->orig_len, lines[i].len);
			CHECK_EQ_INT(r->flags, lines[i].len > 1024 ? MM_REC_TOOBIG : 0);
			CHECK_EQ_INT(r->len, want_len);
			CHECK_EQ_INT(r->offset, offs[i]);
			CHECK(memcmp(r->p, text.p + offs[i], want_len) == 0);
		}
		CHECK_EQ_INT(mm_get_u64le(t.pos + 16), text.len);
		CHECK_EQ_INT(t_finish(&t), 0);
	}
	mm_buf_free(&text);
}

/* A 10 MiB line with max_record 1 KiB: delivered TOOBIG with its exact length
 * while the resident set grows by far less than the line. */
TEST(oversized_line_not_buffered)
{
	static char chunk[65536];
	const uint64_t big = 10ULL << 20;
	char path[128], popt[160];
	const char *opts[] = {popt, "read_size=64k", NULL};
	uint64_t off;
	long base_kb;
	tsrc_t t;
	int fd;

	path_of(path, sizeof(path), "big.jsonl");
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	REQUIRE(fd >= 0);
	CHECK(write(fd, "{\"small\":1}\n", 12) == 12);
	memset(chunk, 'q', sizeof(chunk));
	for (off = 0; off < big; off += sizeof(chunk))
		CHECK(write(fd, chunk, sizeof(chunk)) == (ssize_t)sizeof(chunk));
	CHECK(write(fd, "\r\nafter\n", 8) == 8);
	close(fd);

	snprintf(popt, sizeof(popt), "path=%s", path);
	t_init(&t);
	REQUIRE(t_open(&t, "file", opts) == 0);
	t.src->max_record = 1024;
	t.measure_rss = 1;
	base_kb = rss_kb();
	REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
	CHECK(t_run(&t, p_eof, 0, 10000));
	CHECK_EQ_INT(t.err, 0);
	REQUIRE(t.nrec == 3);
	CHECK(strcmp(t.recs[0].p, "{\"small\":1}") == 0);
	CHECK_EQ_INT(t.recs[1].flags, MM_REC_TOOBIG);
	CHECK_EQ_INT(t.recs[1].orig_len, big);
	CHECK_EQ_INT(t.recs[1].len, MM_REC_PREFIX);
	CHECK_EQ_INT(t.recs[1].offset, 12);
	CHECK(t.recs[1].p[0] == 'q' && t.recs[1].p[MM_REC_PREFIX - 1] == 'q');
	CHECK(strcmp(t.recs[2].p, "after") == 0);
	CHECK_EQ_INT(t.recs[2].offset, 12 + big + 2);
	printf("# resident set growth while reading a 10 MiB line: %ld KiB\n",
	       t.rss_max_kb - base_kb);
	CHECK(t.rss_max_kb - base_kb < 4096);
	CHECK_EQ_INT(t_finish(&t), 0);
}

/* 10 000 lines in batches of at most `batch` records. A read of all of
 * them (read_size 1m) in batches of 100 is 100 batches: with drain=3 no turn
 * of the loop delivers more than 3, with drain=1 one, by default 8. Every
 * line arrives once, in order. */
TEST(batch_and_drain_caps)
{
	static const struct {
		const char *opt[3];
		size_t batch, per_turn; /* per_turn 0: as many as 64 KiB reads hold */
	} cases[] = {
		{{"batch=1", "read_size=64k"}, 1, 0},
		{{"batch=100", "read_size=64k"}, 100, 0},
		{{"batch=4096", "read_size=64k"}, 4096, 0},
		{{"batch=100", "read_size=1m", "drain=3"}, 100, 3},
		{{"batch=100", "read_size=1m", "drain=1"}, 100, 1},
		{{"batch=100", "read_size=1m"}, 100, 8},
	};
	char path[128], popt[160];
	size_t len, s;
	char *text = numbered_lines("n", 10000, &len);

	path_of(path, sizeof(path), "batch.jsonl");
	write_file(path, text, len, O_TRUNC);
	free(text);
	snprintf(popt, sizeof(popt), "path=%s", path);
	for (s = 0; s < sizeof(cases) / sizeof(cases[0]); s++) {
		const char *opts[] = {popt, cases[s].opt[0], cases[s].opt[1], cases[s].opt[2], NULL};
		tsrc_t t;

		t_init(&t);
		REQUIRE(t_open(&t, "file", opts) == 0);
		REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
		CHECK(t_run(&t, p_eof, 0, 10000));
		CHECK(check_numbered(&t, 0, "n", 0, 10000));
		CHECK_EQ_INT(t.max_batch, cases[s].batch);
		CHECK(t.nbatch >= 10000 / cases[s].batch);
		if (cases[s].per_turn)
			CHECK_EQ_INT(t.max_iter_batches, cases[s].per_turn);
		CHECK_EQ_INT(t_finish(&t), 0);
	}
}

/* Consume about half, stop from inside deliver, restart from the last
 * position: the rest arrives exactly once. */
TEST(restart_from_position)
{
	char path[128], popt[160];
	const char *opts[] = {popt, "batch=16", "read_size=1000", NULL};
	uint8_t pos[24];
	size_t len, first;
	char *text = numbered_lines("r", 2000, &len);
	tsrc_t t;

	path_of(path, sizeof(path), "restart.jsonl");
	write_file(path, text, len, O_TRUNC);
	free(text);
	snprintf(popt, sizeof(popt), "path=%s", path);

	t_init(&t);
	REQUIRE(t_open(&t, "file", opts) == 0);
	t.stop_after = 1000;
	REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
	CHECK(t_run(&t, p_recs, 1000, 5000));
	t_sleep(&t, 20);
	CHECK_EQ_INT(t.bad, 0);
	CHECK_EQ_INT(t.eof, 0);
	first = t.nrec;
	CHECK(first >= 1000 && first < 1016);
	CHECK(check_numbered(&t, 0, "r", 0, (int)first));
	REQUIRE(t.pos_len == 24);
	memcpy(pos, t.pos, 24);
	CHECK_EQ_INT(t_finish(&t), 0);

	/* Same inode: resume after the position. */
	t_init(&t);
	REQUIRE(t_open(&t, "file", opts) == 0);
	REQUIRE(t.vt->start(t.src, pos, 24) == 0);
	CHECK(t_run(&t, p_eof, 0, 5000));
	CHECK(check_numbered(&t, 0, "r", (int)first, 2000 - (int)first));
	CHECK_EQ_INT(t.recs[0].offset, mm_get_u64le(pos + 16));
	CHECK_EQ_INT(t_finish(&t), 0);

	/* Another inode (rotated while down): from the beginning. */
	t_init(&t);
	mm_set_u64le(pos + 8, inode_of(path) + 1);
	REQUIRE(t_open(&t, "file", opts) == 0);
	REQUIRE(t.vt->start(t.src, pos, 24) == 0);
	CHECK(t_run(&t, p_eof, 0, 5000));
	CHECK(check_numbered(&t, 0, "r", 0, 2000));
	CHECK_EQ_INT(t_finish(&t), 0);

	/* Same inode but shorter than the offset (truncated): from the beginning. */
	t_init(&t);
	mm_set_u64le(pos + 8, inode_of(path));
	mm_set_u64le(pos + 16, len + 1);
	REQUIRE(t_open(&t, "file", opts) == 0);
	REQUIRE(t.vt->start(t.src, pos, 24) == 0);
	CHECK(t_run(&t, p_eof, 0, 5000));
	CHECK(check_numbered(&t, 0, "r", 0, 2000));
	CHECK_EQ_INT(t_finish(&t), 0);

	/* A position of the wrong size is refused without side effects. */
	t_init(&t);
	REQUIRE(t_open(&t, "file", opts) == 0);
	CHECK_EQ_INT(t.vt->start(t.src, pos, 23), MM_ECORRUPT);
	CHECK_EQ_INT(t_finish(&t), 0);
	CHECK_EQ_INT(t.nrec, 0);
}

/* pause() from inside deliver, resume() from a timer: nothing is delivered
 * while paused and every line arrives once, in order. */
TEST(pause_inside_deliver)
{
	char path[128], popt[160];
	const char *opts[] = {popt, "batch=50", "read_size=4096", NULL};
	size_t len;
	char *text = numbered_lines("p", 5000, &len);
	tsrc_t t;

	path_of(path, sizeof(path), "pause.jsonl");
	write_file(path, text, len, O_TRUNC);
	free(text);
	snprintf(popt, sizeof(popt), "path=%s", path);
	t_init(&t);
	REQUIRE(t_open(&t, "file", opts) == 0);
	t.pause_every = 3;
	REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
	CHECK(t_run(&t, p_eof, 0, 10000));
	CHECK_EQ_INT(t.bad, 0);
	CHECK(t.pauses > 10);
	CHECK(check_numbered(&t, 0, "p", 0, 5000));
	CHECK_EQ_INT(t_finish(&t), 0);
}

/* pause() right after start(), while the open and first read are in flight. */
TEST(pause_before_first_batch)
{
	char path[128], popt[160];
	const char *opts[] = {popt, NULL};
	tsrc_t t;

	path_of(path, sizeof(path), "pause2.jsonl");
	put_file(path, "one\ntwo\n");
	snprintf(popt, sizeof(popt), "path=%s", path);
	t_init(&t);
	REQUIRE(t_open(&t, "file", opts) == 0);
	REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
	t.vt->pause(t.src);
	t_sleep(&t, 50);
	CHECK_EQ_INT(t.nrec, 0);
	CHECK_EQ_INT(t.eof, 0);
	t.vt->resume(t.src);
	CHECK_EQ_INT(t.nrec, 0); /* resume() does not deliver from its caller */
	CHECK(t_run(&t, p_eof, 0, 5000));
	CHECK_EQ_INT(t.nrec, 2);
	CHECK_EQ_INT(t_finish(&t), 0);
}

TEST(close_with_request_in_flight)
{
	char path[128], popt[160];
	const char *opts[] = {popt, NULL};
	const char *fopts[] = {popt, "follow=true", NULL};
	tsrc_t t;

	path_of(path, sizeof(path), "inflight.jsonl");
	put_file(path, "one\ntwo\n");
	snprintf(popt, sizeof(popt), "path=%s", path);

	t_init(&t); /* closed before start */
	REQUIRE(t_open(&t, "file", fopts) == 0);
	CHECK_EQ_INT(t_finish(&t), 0);

	t_init(&t); /* closed while the open is in flight */
	REQUIRE(t_open(&t, "file", opts) == 0);
	REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
	CHECK_EQ_INT(t_finish(&t), 0);
	CHECK_EQ_INT(t.nrec, 0);

	t_init(&t); /* stopped, then closed while following */
	REQUIRE(t_open(&t, "file", fopts) == 0);
	REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
	CHECK(t_run(&t, p_recs, 2, 5000));
	t.vt->stop(t.src);
	t.vt->stop(t.src);
	append_file(path, "three\n");
	t_sleep(&t, 30);
	CHECK_EQ_INT(t.nrec, 2);
	CHECK_EQ_INT(t_finish(&t), 0);
}

TEST(errors)
{
	char path[128], popt[160];
	const char *opts[] = {popt, NULL};
	const char *fopts[] = {popt, "follow=true", NULL};
	tsrc_t t;

	/* A directory. */
	snprintf(popt, sizeof(popt), "path=%s", tmpdir);
	t_init(&t);
	REQUIRE(t_open(&t, "file", opts) == 0);
	REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
	CHECK(t_run(&t, p_err, 0, 5000));
	CHECK_EQ_INT(t.err, MM_EINVAL);
	CHECK(strstr(t.detail, "is a directory") != NULL);
	CHECK(strstr(t.detail, tmpdir) != NULL);
	CHECK_EQ_INT(t_finish(&t), 0);

	/* Missing, not following. */
	path_of(path, sizeof(path), "missing.jsonl");
	snprintf(popt, sizeof(popt), "path=%s", path);
	t_init(&t);
	REQUIRE(t_open(&t, "file", opts) == 0);
	REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
	CHECK(t_run(&t, p_err, 0, 5000));
	CHECK_EQ_INT(t.err, MM_ENOTFOUND);
	CHECK(strstr(t.detail, "no such file") != NULL);
	CHECK_EQ_INT(t_finish(&t), 0);

	/* Following in a directory that does not exist: start() fails. */
	path_of(path, sizeof(path), "nodir/x.jsonl");
	snprintf(popt, sizeof(popt), "path=%s", path);
	t_init(&t);
	REQUIRE(t_open(&t, "file", fopts) == 0);
	CHECK_EQ_INT(t.vt->start(t.src, NULL, 0), MM_ENOTFOUND);
	CHECK(strstr(mm_diag_msg(), "nodir") != NULL);
	CHECK_EQ_INT(t_finish(&t), 0);

	/* A FIFO is refused instead of blocking. */
	path_of(path, sizeof(path), "fifo");
	REQUIRE(mkfifo(path, 0644) == 0);
	snprintf(popt, sizeof(popt), "path=%s", path);
	t_init(&t);
	REQUIRE(t_open(&t, "file", opts) == 0);
	REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
	CHECK(t_run(&t, p_err, 0, 5000));
	CHECK_EQ_INT(t.err, MM_EINVAL);
	CHECK(strstr(t.detail, "not a regular file") != NULL);
	CHECK_EQ_INT(t_finish(&t), 0);
	unlink(path);

	/* Permission denied (root reads anything, so only as another user). */
	if (geteuid() != 0) {
		path_of(path, sizeof(path), "secret.jsonl");
		put_file(path, "x\n");
		chmod(path, 0);
		snprintf(popt, sizeof(popt), "path=%s", path);
		t_init(&t);
		REQUIRE(t_open(&t, "file", opts) == 0);
		REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
		CHECK(t_run(&t, p_err, 0, 5000));
		CHECK_EQ_INT(t.err, MM_EIO);
		CHECK(strstr(t.detail, "permission denied") != NULL);
		CHECK_EQ_INT(t_finish(&t), 0);
	}
}

TEST(follow_append)
{
	char path[128], popt[160];
	const char *opts[] = {popt, "follow=true", NULL};
	tsrc_t t;

	path_of(path, sizeof(path), "follow.jsonl");
	put_file(path, "a\nb\n");
	snprintf(popt, sizeof(popt), "path=%s", path);
	t_init(&t);
	REQUIRE(t_open(&t, "file", opts) == 0);
	REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
	CHECK(t_run(&t, p_recs, 2, 5000));
	append_file(path, "c\npart");
	CHECK(t_run(&t, p_recs, 3, 5000));
	t_sleep(&t, 50);
	CHECK_EQ_INT(t.nrec, 3); /* the unterminated line waits for its newline */
	CHECK_EQ_INT(t.eof, 0);
	append_file(path, "ial\n\nd\n");
	CHECK(t_run(&t, p_recs, 5, 5000));
	REQUIRE(t.nrec == 5);
	CHECK(strcmp(t.recs[2].p, "c") == 0);
	CHECK(strcmp(t.recs[3].p, "partial") == 0);
	CHECK_EQ_INT(t.recs[3].offset, 6);
	CHECK(strcmp(t.recs[4].p, "d") == 0);
	CHECK_EQ_INT(mm_get_u64le(t.pos + 16), 17);
	CHECK_EQ_INT(t.err, 0);
	CHECK_EQ_INT(t_finish(&t), 0);
}

/* Rotation by rename: lines appended to the old file just before the rename
 * (and its unterminated last line) come before the new file's lines, each
 * once; later positions name the new inode. Then a rotation whose new file
 * appears only later, with a late write to the renamed file in between. */
TEST(follow_rename_rotation)
{
	char path[128], old1[128], old2[128], popt[160];
	const char *opts[] = {popt, "follow=true", "read_size=5", NULL};
	static const char *const want[] = {"old-1", "old-2", "old-3", "old-4", "new-1",
					   "new-2", "late-1", "newer-1"};
	size_t i;
	tsrc_t t;

	path_of(path, sizeof(path), "rot.jsonl");
	path_of(old1, sizeof(old1), "rot.jsonl.1");
	path_of(old2, sizeof(old2), "rot.jsonl.2");
	put_file(path, "old-1\nold-2\n");
	snprintf(popt, sizeof(popt), "path=%s", path);
	t_init(&t);
	REQUIRE(t_open(&t, "file", opts) == 0);
	REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
	CHECK(t_run(&t, p_recs, 2, 5000));

	append_file(path, "old-3\nold-4");
	REQUIRE(rename(path, old1) == 0);
	put_file(path, "new-1\nnew-2\n");
	CHECK(t_run(&t, p_recs, 6, 5000));
	CHECK_EQ_INT(mm_get_u64le(t.pos + 8), inode_of(path));
	CHECK_EQ_INT(mm_get_u64le(t.pos + 16), 12);

	REQUIRE(rename(path, old2) == 0);
	t_sleep(&t, 50);
	append_file(old2, "late-1\n");
	t_sleep(&t, 20);
	put_file(path, "newer-1\n");
	CHECK(t_run(&t, p_recs, 8, 5000));
	t_sleep(&t, 30);
	CHECK_EQ_INT(t.nrec, 8);
	for (i = 0; i < t.nrec && i < 8; i++)
		CHECK(strcmp(t.recs[i].p, want[i]) == 0);
	CHECK_EQ_INT(t.recs[4].offset, 0);
	CHECK_EQ_INT(t.recs[7].offset, 0);
	CHECK_EQ_INT(mm_get_u64le(t.pos + 8), inode_of(path));
	CHECK_EQ_INT(t.err, 0);
	CHECK_EQ_INT(t_finish(&t), 0);
	unlink(old1);
	unlink(old2);
}

/* copytruncate: the file is truncated in place and refilled. */
TEST(follow_copytruncate)
{
	char path[128], popt[160];
	const char *opts[] = {popt, "follow=true", NULL};
	tsrc_t t;

	path_of(path, sizeof(path), "trunc.jsonl");
	put_file(path, "aaaa-1\naaaa-2\naaaa-3\n");
	snprintf(popt, sizeof(popt), "path=%s", path);
	t_init(&t);
	REQUIRE(t_open(&t, "file", opts) == 0);
	REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
	CHECK(t_run(&t, p_recs, 3, 5000));
	put_file(path, "b1\nb2\n");
	CHECK(t_run(&t, p_recs, 5, 5000));
	t_sleep(&t, 30);
	REQUIRE(t.nrec == 5);
	CHECK(strcmp(t.recs[3].p, "b1") == 0);
	CHECK_EQ_INT(t.recs[3].offset, 0);
	CHECK(strcmp(t.recs[4].p, "b2") == 0);
	CHECK_EQ_INT(mm_get_u64le(t.pos + 16), 6);
	append_file(path, "b3\n");
	CHECK(t_run(&t, p_recs, 6, 5000));
	CHECK(t.nrec == 6 && strcmp(t.recs[5].p, "b3") == 0);
	CHECK_EQ_INT(t_finish(&t), 0);
}

TEST(follow_file_appears_later)
{
	char path[128], popt[160];
	const char *opts[] = {popt, "follow=true", NULL};
	tsrc_t t;

	path_of(path, sizeof(path), "later.jsonl");
	unlink(path);
	snprintf(popt, sizeof(popt), "path=%s", path);
	t_init(&t);
	REQUIRE(t_open(&t, "file", opts) == 0);
	REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
	t_sleep(&t, 50);
	CHECK_EQ_INT(t.err, 0);
	CHECK_EQ_INT(t.nrec, 0);
	put_file(path, "x1\n");
	CHECK(t_run(&t, p_recs, 1, 5000));
	append_file(path, "x2\n");
	CHECK(t_run(&t, p_recs, 2, 5000));
	CHECK(t.nrec == 2 && strcmp(t.recs[1].p, "x2") == 0);
	CHECK_EQ_INT(t_finish(&t), 0);
}

/* Replaces fd 0 with fd for the length of a test. */
static int stdin_swap(int fd)
{
	int saved = dup(0);

	dup2(fd, 0);
	close(fd);
	return saved;
}

static void stdin_restore(int saved)
{
	dup2(saved, 0);
	close(saved);
}

/* 20 000 lines through a pipe on fd 0, written 1 000 bytes at a time by a
 * child; with pause_every, deliver() pauses the source every that many
 * batches. Checks every line once and in order, and sets *most to the most
 * batches a turn of the loop delivered. */
static void stdin_pipe_run(const char *const *opts, int pause_every, size_t *most)
{
	int fds[2], saved, status;
	size_t len;
	char *text = numbered_lines("s", 20000, &len);
	pid_t pid;
	tsrc_t t;

	REQUIRE(pipe(fds) == 0);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		size_t off = 0;

		close(fds[0]);
		while (off < len) {
			size_t n = len - off < 1000 ? len - off : 1000;
			ssize_t w = write(fds[1], text + off, n);

			if (w <= 0)
				_exit(1);
			off += (size_t)w;
		}
		_exit(0);
	}
	close(fds[1]);
	saved = stdin_swap(fds[0]);
	t_init(&t);
	REQUIRE(t_open(&t, "stdin", opts) == 0);
	CHECK(strcmp(t.src->id, "stdin") == 0);
	t.pause_every = pause_every;
	REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
	CHECK(t_run(&t, p_eof, 0, 10000));
	CHECK_EQ_INT(t.err, 0);
	CHECK_EQ_INT(t.bad, 0);
	CHECK(pause_every == 0 || t.pauses > 10);
	CHECK(check_numbered(&t, 0, "s", 0, 20000));
	CHECK_EQ_INT(t.recs[1].offset, 3);
	CHECK_EQ_INT(t.pos_len, 8);
	CHECK_EQ_INT(mm_get_u64le(t.pos), len);
	*most = t.max_iter_batches;
	CHECK_EQ_INT(t_finish(&t), 0);
	stdin_restore(saved);
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	free(text);
}

TEST(stdin_pipe)
{
	const char *opts[] = {"batch=100", "read_size=4096", NULL};
	size_t most;

	stdin_pipe_run(opts, 7, &most);
}

/* Batches of 10 from reads of up to 1 MiB, one batch a turn: the stream
 * stops reading while a read's lines are left, and nothing is lost. */
TEST(stdin_pipe_drain)
{
	const char *opts[] = {"batch=10", "read_size=1m", "drain=1", NULL};
	size_t most = 0;

	stdin_pipe_run(opts, 0, &most);
	CHECK_EQ_INT(most, 1);
}

/* A pipe whose writer stays open and silent must not hold close() up. */
TEST(stdin_idle_pipe_closes)
{
	int fds[2], saved;
	tsrc_t t;

	REQUIRE(pipe(fds) == 0);
	saved = stdin_swap(fds[0]);
	t_init(&t);
	REQUIRE(t_open(&t, "stdin", NULL) == 0);
	REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
	CHECK(write(fds[1], "one\ntw", 6) == 6);
	CHECK(t_run(&t, p_recs, 1, 5000));
	t_sleep(&t, 20);
	CHECK_EQ_INT(t.nrec, 1);
	CHECK_EQ_INT(t_finish(&t), 0);
	close(fds[1]);
	stdin_restore(saved);
}

TEST(stdin_regular_file)
{
	char path[128];
	int fd, saved;
	tsrc_t t;

	path_of(path, sizeof(path), "stdin.jsonl");
	put_file(path, "f1\r\nf2\n\nf3");
	fd = open(path, O_RDONLY);
	REQUIRE(fd >= 0);
	saved = stdin_swap(fd);
	t_init(&t);
	REQUIRE(t_open(&t, "stdin", NULL) == 0);
	/* stdin ignores positions: a restarted process reads new input. */
	REQUIRE(t.vt->start(t.src, (const uint8_t *)"\x05\0\0\0\0\0\0\0", 8) == 0);
	CHECK(t_run(&t, p_eof, 0, 5000));
	CHECK(check_numbered(&t, 0, "f", 1, 3));
	CHECK_EQ_INT(t.recs[2].offset, 8);
	CHECK_EQ_INT(mm_get_u64le(t.pos), 10);
	CHECK_EQ_INT(t_finish(&t), 0);
	stdin_restore(saved);
}

TEST(stdin_tty)
{
	int master, slave, saved;
	tsrc_t t;

	master = posix_openpt(O_RDWR | O_NOCTTY);
	REQUIRE(master >= 0);
	REQUIRE(grantpt(master) == 0 && unlockpt(master) == 0);
	slave = open(ptsname(master), O_RDWR | O_NOCTTY);
	REQUIRE(slave >= 0);
	saved = stdin_swap(slave);
	t_init(&t);
	REQUIRE(t_open(&t, "stdin", NULL) == 0);
	REQUIRE(t.vt->start(t.src, NULL, 0) == 0);
	CHECK(write(master, "t1\nt2\n", 6) == 6);
	CHECK(t_run(&t, p_recs, 2, 5000));
	CHECK(write(master, "t3\n\x04", 4) == 4); /* VEOF at a line start ends input */
	CHECK(t_run(&t, p_eof, 0, 5000));
	CHECK_EQ_INT(t.err, 0);
	CHECK(check_numbered(&t, 0, "t", 1, 3));
	CHECK_EQ_INT(t_finish(&t), 0);
	stdin_restore(saved);
	close(master);
}

int main(void)
{
	char cmd[128];

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/mm_source_file.XXXXXX");
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	RUN(registry);
	RUN(oversized_line_not_buffered);
	RUN(options_rejected);
	RUN(lines_across_small_reads);
	RUN(lines_across_newline_windows);
	RUN(describe);
	RUN(oversized_lines_edges);
	RUN(batch_and_drain_caps);
	RUN(restart_from_position);
	RUN(pause_inside_deliver);
	RUN(pause_before_first_batch);
	RUN(close_with_request_in_flight);
	RUN(errors);
	RUN(follow_append);
	RUN(follow_rename_rotation);
	RUN(follow_copytruncate);
	RUN(follow_file_appears_later);
	RUN(stdin_pipe);
	RUN(stdin_pipe_drain);
	RUN(stdin_idle_pipe_closes);
	RUN(stdin_regular_file);
	RUN(stdin_tty);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", tmpdir);
	UNIT_DONE();
}
