/* valkey_format.c: cached values and INFO replies (valkey_format.h). */
#include "valkey_format.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "../lib/buf.h"
#include "../lib/error.h"

int mm_valkey_int_cached(const mm_monoid_t *m)
{
	return m->vt == &mm_monoid_count_vtable ||
	       (m->vt == &mm_monoid_sum_vtable && !m->p.is_float);
}

int mm_valkey_cache_decode(const mm_monoid_t *m, const char *p, size_t n, void *state)
{
	uint8_t enc[8];
	uint64_t mag = 0;
	size_t i = 0;
	int neg = 0;

	if (!mm_valkey_int_cached(m))
		return m->vt->decode(m, state, (const uint8_t *)p, n);
	if (n > 0 && p[0] == '-' && m->vt != &mm_monoid_count_vtable)
		neg = i = 1;
	if (i == n || n - i > 19)
		return mm_diag_set(MM_ECORRUPT, "valkey: cached %s is not an integer", m->vt->name);
	for (; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return mm_diag_set(MM_ECORRUPT, "valkey: cached %s is not an integer",
					   m->vt->name);
		mag = mag * 10 + (uint64_t)(p[i] - '0');
	}
	if (mag > (uint64_t)INT64_MAX + neg)
		return mm_diag_set(MM_ECORRUPT, "valkey: cached %s is out of range", m->vt->name);
	mm_set_u64le(enc, neg ? 0 - mag : mag);
	return m->vt->decode(m, state, enc, sizeof(enc));
}

int mm_valkey_run_id(const char *info, char out[41])
{
	const char *p = strstr(info, "run_id:");

	if (p == NULL || strspn(p + 7, "0123456789abcdef") != 40)
		return -1;
	memcpy(out, p + 7, 40);
	out[40] = '\0';
	return 0;
}

/* hiredis keeps its default reply constructors private; the first reader
 * bound lends them, and the bounded table wraps only createArray. */
static redisReplyObjectFunctions vk_bounded_fns;
static void *(*vk_create_array)(const redisReadTask *, int);
static pthread_once_t vk_bounded_once = PTHREAD_ONCE_INIT;
static const redisReplyObjectFunctions *vk_default_fns;

static void *vk_bounded_array(const redisReadTask *task, int elements)
{
	/* NULL makes the reader fail with an out-of-memory protocol error. */
	if (elements > MM_VALKEY_MAX_ELEMENTS)
		return NULL;
	return vk_create_array(task, elements);
}

static void vk_bounded_init(void)
{
	vk_bounded_fns = *vk_default_fns;
	vk_create_array = vk_default_fns->createArray;
	vk_bounded_fns.createArray = vk_bounded_array;
}

void mm_valkey_reader_bound(redisReader *r)
{
	if (r->fn == NULL || r->fn == &vk_bounded_fns)
		return;
	vk_default_fns = r->fn;
	pthread_once(&vk_bounded_once, vk_bounded_init);
	r->fn = &vk_bounded_fns;
}
