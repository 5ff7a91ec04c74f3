/* registry.c: the dead-letter backends, listed once. */
#include <string.h>

#include "deadletter.h"

extern const mm_dead_letter_vtable_t mm_dead_letter_file_vtable;
extern const mm_dead_letter_vtable_t mm_dead_letter_kafka_vtable;

const mm_dead_letter_vtable_t *const mm_dead_letter_registry[] = {
	&mm_dead_letter_file_vtable,
	&mm_dead_letter_kafka_vtable,
	NULL,
};

const mm_dead_letter_vtable_t *mm_dead_letter_find(const char *name)
{
	for (int i = 0; mm_dead_letter_registry[i]; i++)
		if (strcmp(mm_dead_letter_registry[i]->name, name) == 0)
			return mm_dead_letter_registry[i];
	return NULL;
}
