/*
 * monoid_impl.h: helpers shared by the monoid implementations in
 * engine/monoid/. Not part of the public interface; nothing outside this
 * directory includes it. Pure functions: any thread.
 */
#ifndef MM_MONOID_IMPL_H
#define MM_MONOID_IMPL_H

#include "../lib/buf.h"

/*
 * Appends d as a JSON number: the shortest of %.15g, %.16g and %.17g that
 * reads back as exactly d, so 0.1 prints as "0.1" and nothing is lost.
 * JSON cannot write NaN or infinities; those append "null" (monoids refuse
 * such values, so this is a safety net, not a code path). Implemented in
 * monoid.c. Returns 0 or MM_ENOMEM.
 */
int mm_monoid_put_double(mm_buf_t *out, double d);

#endif
