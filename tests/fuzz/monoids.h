/*
 * monoids.h: one instance of every monoid, with small parameters, for the
 * fuzz targets that read stored states (fuzz_lmdb, fuzz_valkey): each input
 * is tried as a state of each of them.
 */
#ifndef MM_FUZZ_MONOIDS_H
#define MM_FUZZ_MONOIDS_H

#include "monoid/monoid.h"

static const mm_monoid_t monoids[] = {
	{.vt = &mm_monoid_sum_vtable, .p = {.is_float = 0}},
	{.vt = &mm_monoid_sum_vtable, .p = {.is_float = 1}},
	{.vt = &mm_monoid_count_vtable},
	{.vt = &mm_monoid_min_vtable},
	{.vt = &mm_monoid_max_vtable},
	{.vt = &mm_monoid_first_vtable},
	{.vt = &mm_monoid_last_vtable},
	{.vt = &mm_monoid_set_vtable, .p = {.max_size = 8}},
	{.vt = &mm_monoid_hll_vtable},
	{.vt = &mm_monoid_topk_vtable, .p = {.k = 4}},
	{.vt = &mm_monoid_bloom_vtable, .p = {.capacity = 100, .fpr = 0.01}},
};
#define NMONOIDS (sizeof(monoids) / sizeof(monoids[0]))

#endif
