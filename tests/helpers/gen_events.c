/*
 * gen_events: writes Zipf-distributed JSON Lines interaction events.
 *
 *   gen_events COUNT [ENTITIES [EXPONENT [SEED [noid]]]]
 *
 * entity_id/page_id follow Zipf(EXPONENT) over ENTITIES ids (rank -> id
 * through a fixed random permutation, so hot ids are not the shortest
 * strings); user_id is uniform over 1 000 000; event_id is unique. Defaults:
 * 100000 entities, exponent 1.1, seed 42. "noid" leaves event_id out (the
 * shape of measurements.md's input). xorshift64* keeps it reproducible.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state;

static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ULL;
}

static double rng_unit(void)
{
	return (double)(rng() >> 11) / 9007199254740992.0;
}

int main(int argc, char **argv)
{
	long count = argc > 1 ? atol(argv[1]) : 1000000;
	long n = argc > 2 ? atol(argv[2]) : 100000;
	double s = argc > 3 ? atof(argv[3]) : 1.1;
	uint64_t seed = argc > 4 ? strtoull(argv[4], NULL, 10) : 42;
	int with_id = !(argc > 5 && strcmp(argv[5], "noid") == 0);
	double *cdf = malloc(sizeof(double) * (size_t)n);
	long *perm = malloc(sizeof(long) * (size_t)n);
	double total = 0;
	static char out[1 << 16];

	if (count < 0 || n < 1 || cdf == NULL || perm == NULL) {
		fprintf(stderr, "usage: gen_events COUNT [ENTITIES [EXPONENT [SEED]]]\n");
		return 2;
	}
	setvbuf(stdout, out, _IOFBF, sizeof(out));
	rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
	for (long i = 0; i < n; i++) {
		total += 1.0 / pow((double)(i + 1), s);
		cdf[i] = total;
		perm[i] = i;
	}
	for (long i = n - 1; i > 0; i--) {
		long j = (long)(rng() % (uint64_t)(i + 1)), t = perm[i];

		perm[i] = perm[j];
		perm[j] = t;
	}
	for (long e = 0; e < count; e++) {
		double u = rng_unit() * total;
		long lo = 0, hi = n - 1;

		while (lo < hi) {
			long mid = (lo + hi) / 2;

			if (cdf[mid] < u)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (with_id)
			printf("{\"event_id\":\"e%ld\",", e);
		else
			putchar('{');
		printf("\"entity_id\":\"p%ld\",\"page_id\":\"p%ld\",\"user_id\":\"u%llu\","
		       "\"source\":\"kafka\"}\n",
		       perm[lo], perm[lo], (unsigned long long)(rng() % 1000000));
	}
	free(cdf);
	free(perm);
	return 0;
}
