/*
 * registry.c: the one list of store backends. A backend is added by defining
 * its const vtable in its own file and naming it here; mm_store_open finds it
 * by name, and the docs list its option rows from here.
 */
#include "store.h"

/* Defined in lmdb.c, memory.c, dynamodb.c and valkey.c; only this file needs to
 * name them. */
extern const mm_store_vtable_t mm_store_lmdb_vtable;
extern const mm_store_vtable_t mm_store_memory_vtable;
extern const mm_store_vtable_t mm_store_dynamodb_vtable;
extern const mm_store_vtable_t mm_store_valkey_vtable;

const mm_store_vtable_t *const mm_store_registry[] = {
	&mm_store_lmdb_vtable,
	&mm_store_memory_vtable,
	&mm_store_dynamodb_vtable,
	&mm_store_valkey_vtable,
	NULL,
};
