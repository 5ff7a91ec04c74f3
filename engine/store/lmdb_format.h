/*
 * lmdb_format.h: decoding the records of the LMDB store (layout in lmdb.c),
 * internal to engine/store and exposed so that it is fuzzed on its own.
 * Stored bytes may be anything (a damaged file, another program's
 * database), so every length is checked and a bad record is MM_ECORRUPT,
 * never a read past its end. Pure C: any thread.
 */
#ifndef MM_LMDB_FORMAT_H
#define MM_LMDB_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "../monoid/monoid.h"

#define MM_LMDB_KEY_MAX 511 /* MDB_MAXKEYSIZE of Debian's build */

/* Parses the state key p[0..n) whose namespace prefix has nsl bytes: the
 * length of its (namespace, identifier) prefix and its bucket. Returns 0 or
 * MM_ECORRUPT ("lmdb: malformed state key of N bytes"). */
int mm_lmdb_state_key_parse(const uint8_t *p, size_t n, size_t nsl, size_t *plen,
			    int64_t *bucket);

/* Finds the monoid encoding in the state value p[0..n) (idlen as below):
 * returns 1 with *body and *len set, 0 if the state has expired at now_ms,
 * or MM_ECORRUPT ("value shorter than its header"). */
int mm_lmdb_state_body(const uint8_t *p, size_t n, size_t idlen, int64_t now_ms,
		       const uint8_t **body, size_t *len);

/* Decodes the state value p[0..n) into state (init()ed by the caller). idlen
 * is the identifier's length when the key is hashed (the value then holds
 * the identifier after expire_ms), else 0. Returns 1 if decoded, 0 if it has
 * expired at now_ms (state stays the identity), or an error from the header
 * check ("value shorter than its header", MM_ECORRUPT) or from the monoid's
 * decode, with the diagnostics set. */
int mm_lmdb_state_decode(const uint8_t *p, size_t n, size_t idlen, int64_t now_ms,
			 const mm_monoid_t *m, void *state);

#endif
