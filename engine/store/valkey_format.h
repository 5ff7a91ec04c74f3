/*
 * valkey_format.h: reading what a Valkey server hands back to the cache
 * (valkey.c), internal to engine/store and exposed so that it is fuzzed on
 * its own. A cache is never trusted: any value may be missing, stale or
 * written by something else, so a value that is not what the namespace
 * caches is MM_ECORRUPT (the caller then refills it from the store). Pure
 * C: any thread.
 */
#ifndef MM_VALKEY_FORMAT_H
#define MM_VALKEY_FORMAT_H

#include <stddef.h>

#include <hiredis/read.h>

#include "../monoid/monoid.h"

/* The longest array reply murmur accepts. Replies murmur asks for are at
 * most one MGET chunk or one script's per-key answers (thousands). */
#define MM_VALKEY_MAX_ELEMENTS (1 << 20)

/* Bounds what reader r allocates for an array reply's header: hiredis 0.14
 * allocates the element table when it reads "*N", before any element
 * arrives, so a peer announcing N = 2^31 - 1 would make murmur allocate
 * 16 GiB. An array longer than MM_VALKEY_MAX_ELEMENTS becomes a protocol
 * error on the reader (the connection then fails and reconnects, as for any
 * other protocol error). Call before the first byte is fed; loop thread, or
 * any thread for a reader of its own. */
void mm_valkey_reader_bound(redisReader *r);

/* 1 if m's states are cached as a decimal integer (count, integer sum),
 * which INCRBY updates in place. */
int mm_valkey_int_cached(const mm_monoid_t *m);

/* Decodes the cached value p[0..n) of monoid m into state (init()ed by the
 * caller): the decimal integer for int-cached monoids (no sign for a count,
 * at most 19 digits, within int64), else the monoid's own encoding.
 * Returns 0, MM_ECORRUPT or the monoid decode's error; on error state is
 * the identity. */
int mm_valkey_cache_decode(const mm_monoid_t *m, const char *p, size_t n, void *state);

/* Finds "run_id:" followed by 40 lowercase hex digits in the NUL-terminated
 * reply to INFO server and copies the digits, NUL-terminated, to out.
 * Returns 0, or -1 when there is none. */
int mm_valkey_run_id(const char *info, char out[41]);

#endif
