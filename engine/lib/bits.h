/*
 * bits.h: a bit of a 64-bit word set at a position computed at run time,
 * for the dedup filters' masks (core/idset.h, store/markset.h), which set
 * three and six such bits for every id a record carries and every mark a
 * flush adds.
 *
 * `m | 1 << (i & 63)` compiles on x86-64 (without BMI2, which the build
 * does not assume) to a constant load, a move of the position into %cl
 * and a shift: a six-bit mask took 28 instructions. BTS sets the bit in
 * one, and takes the position modulo 64 itself: the same mask is 16
 * (doc/performance-journal.md, "Dedup ids: where the cost beyond the no-id run
 * goes"). Other targets get the C expression.
 */
#ifndef MM_BITS_H
#define MM_BITS_H

#include <stdint.h>

/* m with bit i % 64 set. */
static inline uint64_t mm_bit_or(uint64_t m, uint64_t i)
{
#if defined(__x86_64__) && defined(__GNUC__)
	__asm__("btsq %1, %0" : "+r"(m) : "r"(i) : "cc");
	return m;
#else
	return m | (uint64_t)1 << (i & 63);
#endif
}

#endif
