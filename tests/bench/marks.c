/*
 * marks.c: the embedded store's dedup marks (engine/store/markset.h) in a
 * long run, which the bench's 2 000 000 events, 20 flushes, do not reach:
 * FLUSHES flushes of FLUSH random marks, each expiring TTL flushes later
 * (0: never), then lookups of absent marks, as a record with a new id makes
 * them. It prints the CPU time of a flush's prepare (sort, merges and
 * filter) per mark, how many times a mark was copied by merges, the runs
 * a lookup past the filter reads, the CPU time of a lookup, the share of
 * absent marks the filter lets by and what one of those costs.
 *
 *   marks FLUSHES FLUSH TTL
 *
 * Thread CPU time, so that another process on the machine costs this one
 * nothing but its caches; the figures are for comparing builds on one
 * machine (doc/performance.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/markset.h"

#define LOOKUPS 2000000
#define PASSING 20000

static double cpu_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* The marks a prepare copied: its runs that are neither the set's before
 * it nor the flush's own new run are merges' outputs. */
static size_t copied(const mm_markset_t *s, const mm_markbatch_t *b)
{
	size_t n = 0;

	for (size_t i = 0; i < b->nruns; i++) {
		int old = b->runs[i].buf.mem == b->added.buf.mem;

		for (size_t j = 0; j < s->nruns && !old; j++)
			old = b->runs[i].buf.mem == s->runs[j].buf.mem;
		if (!old)
			n += b->runs[i].n;
	}
	return n;
}

int main(int argc, char **argv)
{
	mm_markset_t s;
	mm_markhash_t *m, *pass;
	size_t flushes, flush, ttl, f, i, npass = 0, passed = 0, live = 0, copies = 0, runs = 0;
	double t_prep = 0, t_look, t_pass, t0;
	char life[64];
	int64_t now;

	if (argc != 4 || (flushes = strtoul(argv[1], NULL, 10)) == 0 ||
	    (flush = strtoul(argv[2], NULL, 10)) == 0) {
		fprintf(stderr, "usage: marks FLUSHES FLUSH TTL (e.g. marks 1000 10000 300)\n");
		return 2;
	}
	ttl = strtoul(argv[3], NULL, 10);
	m = malloc(flush * sizeof(*m));
	pass = malloc(PASSING * sizeof(*pass));
	if (m == NULL || pass == NULL)
		return 1;
	memset(&s, 0, sizeof(s));
	mm_markset_start(&s, 0);
	/* A flush a second, on the set's clock. */
	for (f = 0; f < flushes; f++) {
		mm_markbatch_t b;

		now = (int64_t)f * 1000;
		for (i = 0; i < flush; i++) {
			m[i].h0 = next_rand();
			m[i].h1 = next_rand();
			m[i].expire_ms = ttl ? now + (int64_t)ttl * 1000 : INT64_MAX / 2;
		}
		t0 = cpu_ms();
		if (mm_markset_prepare(&s, &b, m, flush, now, 0) != 0) {
			fprintf(stderr, "marks: out of memory at flush %zu\n", f);
			return 1;
		}
		copies += copied(&s, &b);
		mm_markset_commit(&s, &b);
		mm_markset_batch_done(&s, &b);
		t_prep += cpu_ms() - t0;
		runs += s.nruns;
	}
	now = (int64_t)flushes * 1000;
	t0 = cpu_ms();
	for (i = 0; i < LOOKUPS; i++) {
		mm_markhash_t q = {next_rand(), next_rand(), 0};

		if (mm_markset_may_hold(&s, &q)) {
			passed++;
			live += (size_t)mm_markset_live_runs(&s, &q, now);
		}
	}
	t_look = cpu_ms() - t0;
	while (npass < PASSING) {
		mm_markhash_t q = {next_rand(), next_rand(), 0};

		if (mm_markset_may_hold(&s, &q))
			pass[npass++] = q;
	}
	t0 = cpu_ms();
	for (i = 0; i < PASSING; i++)
		live += (size_t)mm_markset_live_runs(&s, &pass[i], now);
	t_pass = cpu_ms() - t0;
	if (ttl)
		snprintf(life, sizeof(life), "expiring %zu flushes on", ttl);
	else
		snprintf(life, sizeof(life), "never expiring");
	printf("marks: %zu flushes of %zu, %s: %zu marks held in %zu runs (%.1f on average); "
	       "a prepare %.1f ns a mark, %.2f copies a mark in merges; an absent mark's lookup "
	       "%.1f ns, %.3f%% past the filter, %.0f ns each (%zu runs)%s\n",
	       flushes, flush, life, s.count, s.nruns,
	       (double)runs / (double)flushes, t_prep * 1e6 / ((double)flushes * (double)flush),
	       (double)copies / ((double)flushes * (double)flush), t_look * 1e6 / LOOKUPS,
	       100.0 * (double)passed / LOOKUPS, t_pass * 1e6 / PASSING, s.nruns,
	       live ? " (an absent mark found: a fault)" : "");
	mm_markset_free(&s);
	free(m);
	free(pass);
	return live != 0;
}
