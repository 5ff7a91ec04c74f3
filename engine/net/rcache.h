/*
 * rcache.h: the query service's short result cache (serve --result-cache).
 *
 * Maps a read (pipeline, entity, first and last bucket) to the encoding of
 * its merged state and how many buckets held data, for ttl_ms. A request
 * with fresh_read skips it (and refreshes it). The table holds at most
 * max_entries; when full it is emptied at once, which bounds memory without
 * an eviction order to maintain (a burst of misses only costs reads).
 *
 * Pure C: one thread at a time (the loop thread).
 */
#ifndef MM_NET_RCACHE_H
#define MM_NET_RCACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct mm_rcache mm_rcache_t;

int mm_rcache_open(uint64_t ttl_ms, size_t max_entries, mm_rcache_t **out);
void mm_rcache_close(mm_rcache_t *c);

/* 1 and the entry (valid until the next put) when key is cached and younger
 * than the TTL at now_ms, else 0. */
int mm_rcache_get(mm_rcache_t *c, const void *key, size_t klen, int64_t now_ms,
		  const uint8_t **val, size_t *vlen, int *found);

/* Stores a copy. Returns 0 or MM_ENOMEM (the cache is then unchanged). */
int mm_rcache_put(mm_rcache_t *c, const void *key, size_t klen, int64_t now_ms,
		  const uint8_t *val, size_t vlen, int found);

#endif
