/*
 * keyset.h: folding repeated keys of one read into one.
 *
 * The query server reads the keys of every request of a loop turn as one
 * get_many; several requests often ask for the same entity (a popular
 * item), and each copy would cost a store lookup and a state decode.
 */
#ifndef MM_KEYSET_H
#define MM_KEYSET_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Moves the distinct keys of keys[0..n) to its front, in first-seen order,
 * and sets map[i] to the index of key i's copy there. Returns the number of
 * distinct keys, or MM_ENOMEM (keys untouched). The caller owns both
 * arrays; map holds n entries. */
int64_t mm_keyset_fold(mm_key_t *keys, size_t n, uint32_t *map);

#endif
