/*
 * pbjson.h: the proto3 JSON mapping for protobuf-c messages, driven by the
 * generated descriptors, so every message of the query service (and any
 * future one) is read and written without per-message code.
 *
 * Writing follows the canonical mapping: lowerCamelCase member names, fields
 * at their default value omitted (a oneof member and a proto3 `optional`
 * field are written whenever set), 64-bit integers as decimal strings (exact
 * beyond 2^53), bytes as padded standard base64, enums by name, NaN and
 * infinities as "NaN", "Infinity", "-Infinity".
 *
 * Reading accepts what the mapping allows: the JSON name or the proto field
 * name, integers as numbers or strings (exponent forms that are integral
 * too), bytes in standard or URL-safe base64 with or without padding, enums
 * by name or number, null for "default". Unknown members, wrong types,
 * out-of-range integers and a second member of one oneof are errors with a
 * detail that names the field.
 *
 * Memory: a decoded message and everything it points to come from the
 * caller's arena (mm_pb_allocator does the same for protobuf-c's binary
 * unpacker), so nothing is freed one by one.
 *
 * Pure C: any thread.
 */
#ifndef MM_NET_PBJSON_H
#define MM_NET_PBJSON_H

#include <protobuf-c/protobuf-c.h>

#include "../lib/arena.h"
#include "../lib/buf.h"

/* Appends msg as JSON. Returns 0 or MM_ENOMEM. */
int mm_pbjson_encode(const ProtobufCMessage *msg, mm_buf_t *out);

/* Decodes the JSON object p[0..n) as a message of desc into *out (allocated
 * in arena). Returns 0, MM_EJSON (malformed JSON), MM_EINVAL (valid JSON
 * that does not fit the message; detail names the field) or MM_ENOMEM. */
int mm_pbjson_decode(const ProtobufCMessageDescriptor *desc, const char *p, size_t n,
		     mm_arena_t *arena, ProtobufCMessage **out);

/* A protobuf-c allocator over arena (free is a no-op). */
ProtobufCAllocator mm_pb_allocator(mm_arena_t *arena);

#endif
