/*
 * registry.c: the list of source backends. Lua opens a source by name
 * (`file`, `stdin`, `kafka`, `kinesis`, `lambda`); adding a backend means defining its vtable in its own
 * file and listing it here once.
 */
#include <string.h>

#include "source.h"

extern const mm_source_vtable_t mm_source_file_vtable;
extern const mm_source_vtable_t mm_source_stdin_vtable;
extern const mm_source_vtable_t mm_source_kafka_vtable;
extern const mm_source_vtable_t mm_source_kinesis_vtable;
extern const mm_source_vtable_t mm_source_lambda_vtable;

const mm_source_vtable_t *const mm_source_registry[] = {
	&mm_source_file_vtable,
	&mm_source_stdin_vtable,
	&mm_source_kafka_vtable,
	&mm_source_kinesis_vtable,
	&mm_source_lambda_vtable,
	NULL,
};

const mm_source_vtable_t *mm_source_find(const char *name)
{
	size_t i;

	if (name == NULL)
		return NULL;
	for (i = 0; mm_source_registry[i] != NULL; i++)
		if (strcmp(mm_source_registry[i]->name, name) == 0)
			return mm_source_registry[i];
	return NULL;
}
