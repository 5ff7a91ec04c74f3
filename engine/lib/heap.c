/*
 * heap.c: glibc malloc's thresholds (heap.h says which and why).
 */
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "heap.h"

int mm_heap_tune(const char *setting, const char *tunables, char *err, size_t errlen)
{
	if (setting != NULL && strcmp(setting, "default") == 0)
		return 0;
	if (setting != NULL && *setting != '\0') {
		snprintf(err, errlen,
			 "MURMUR_MALLOC=%s is not a setting: unset it for murmur's malloc "
			 "thresholds, or set it to 'default' for glibc's",
			 setting);
		return MM_EINVAL;
	}
	if (tunables != NULL && strstr(tunables, "glibc.malloc.") != NULL)
		return 0;
	/* mallopt fails only for values out of its range, which these are not;
	 * a libc without it would not have linked. */
	mallopt(M_MMAP_THRESHOLD, (int)MM_HEAP_MMAP_THRESHOLD);
	mallopt(M_TRIM_THRESHOLD, (int)MM_HEAP_TRIM_THRESHOLD);
	mallopt(M_ARENA_MAX, 1);
	return 1;
}
