/*
 * hll.h: HyperLogLog accessors beyond the monoid vtable.
 *
 * The monoid itself is mm_monoid_hll_vtable (declared in monoid.h); its
 * states and byte format are described atop hll.c. The functions here read
 * an HLL state for callers that need more than the vtable offers: the FFI
 * query path (the estimate as a number rather than JSON) and tests that
 * compare registers with Valkey's. They never modify or allocate, and like
 * the rest of engine/monoid they may be called from any thread on states no
 * other thread is writing.
 */
#ifndef MM_HLL_H
#define MM_HLL_H

#include <stdint.h>

#include "monoid.h"

/* Precision 14: 2^14 six-bit registers, as in Valkey/Redis. */
#define MM_HLL_P 14
#define MM_HLL_REGISTERS (1u << MM_HLL_P)

/* Valkey's default hll-sparse-max-bytes: encodings up to this many bytes
 * (header included) use the sparse format, larger ones the dense format. */
#define MM_HLL_SPARSE_MAX_BYTES 3000

/*
 * Stores in *out the cardinality estimate of st, an initialised HLL state of
 * monoid m (m may be NULL: HLL has no parameters). The value equals what
 * Valkey's PFCOUNT returns for the same registers. Returns 0, or MM_EINVAL
 * when st or out is NULL.
 */
int mm_hll_count(const mm_monoid_t *m, const void *st, uint64_t *out);

/*
 * Copies the MM_HLL_REGISTERS register values of st (each 0..51) into regs,
 * whatever the in-memory representation. Returns 0, or MM_EINVAL when st or
 * regs is NULL.
 */
int mm_hll_registers(const mm_monoid_t *m, const void *st, uint8_t *regs);

#endif
