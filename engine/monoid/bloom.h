/*
 * bloom.h: membership queries on "bloom" monoid states.
 *
 * The monoid itself is reached through mm_monoid_bloom_vtable (monoid.h);
 * this header adds the one operation a Bloom filter exists for. Pure C, no
 * allocation: it may be called from any thread on a state no one is writing,
 * and it is meant for FFI (pointers and lengths in, a status out).
 */
#ifndef MM_BLOOM_H
#define MM_BLOOM_H

#include <stddef.h>

#include "monoid.h"

/*
 * Tests whether s[0..len) may have been added to st, a state of the bloom
 * monoid m. Returns 1 ("probably present": false positives happen at about
 * the configured rate while fewer than `capacity` distinct strings were
 * added), 0 (definitely absent), or MM_EINVAL when m is not a bloom monoid
 * or an argument is NULL. The state and the string are only read.
 */
int mm_bloom_contains(const mm_monoid_t *m, const void *st, const char *s, size_t len);

#endif
