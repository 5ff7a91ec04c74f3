/*
 * kafka_lib.c: librdkafka loaded on first use (design in kafka_lib.h).
 *
 * The library is opened with RTLD_NOW, so a librdkafka whose own
 * dependencies are missing fails here, with dlerror's words, instead of at
 * the first call of a lazily bound function; and RTLD_LOCAL, since nothing
 * else resolves symbols against it. It is never closed once loaded:
 * librdkafka's threads may outlive any one handle's destroy.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "kafka_lib.h"

/* What to do about a missing library, in every error. */
#define MM_RDK_HINT                                                                        \
	"Kafka sources and dead letters need librdkafka 1.x: install it (Debian and "      \
	"Ubuntu: apt-get install librdkafka1; Fedora and Amazon Linux: librdkafka)"

_Static_assert(sizeof(void *) == sizeof(void (*)(void)), "dlsym's result fits a function pointer");

mm_rdk_t mm_rdk;

static const struct {
	const char *name;
	size_t offset;
} mm_rdk_syms[] = {
#define MM_RDK_SYM(n) {"rd_kafka_" #n, offsetof(mm_rdk_t, n)},
	MM_RDK_FUNCS(MM_RDK_SYM)
#undef MM_RDK_SYM
};

static pthread_once_t mm_rdk_once = PTHREAD_ONCE_INIT;
static int mm_rdk_rc;
static char mm_rdk_err[768];

int mm_rdk_open(const char *soname, mm_rdk_t *t)
{
	const char *why;
	void *lib, *fn;
	int rc;

	memset(t, 0, sizeof(*t));
	lib = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
	if (lib == NULL) {
		why = dlerror();
		return mm_diag_set(MM_ENOTSUP, "%s could not be loaded (%s). " MM_RDK_HINT, soname,
				   why ? why : "no reason given");
	}
	for (size_t i = 0; i < sizeof(mm_rdk_syms) / sizeof(mm_rdk_syms[0]); i++) {
		dlerror();
		fn = dlsym(lib, mm_rdk_syms[i].name);
		if (fn == NULL) {
			rc = mm_diag_set(MM_ENOTSUP, "%s has no function %s: it is too old or not "
					 "librdkafka. " MM_RDK_HINT, soname, mm_rdk_syms[i].name);
			goto fail;
		}
		/* POSIX makes dlsym's void * convertible to a function pointer;
		 * the copy says so without a cast C itself leaves undefined. */
		memcpy((char *)t + mm_rdk_syms[i].offset, &fn, sizeof(fn));
	}
	return 0;

fail:
	dlclose(lib);
	memset(t, 0, sizeof(*t));
	return rc;
}

/* Builds with MM_ERRINJ: with MURMUR_ERRINJ_RDKAFKA_MISSING set, the library
 * looked for is one no system has, so that tests run what a machine without
 * librdkafka does (it can only make the load fail). */
static const char *mm_rdk_soname(void)
{
#ifdef MM_ERRINJ
	if (getenv("MURMUR_ERRINJ_RDKAFKA_MISSING") != NULL)
		return "librdkafka-errinj-missing.so.1";
#endif
	return MM_RDK_SONAME;
}

static void mm_rdk_once_fn(void)
{
	mm_rdk_rc = mm_rdk_open(mm_rdk_soname(), &mm_rdk);
	if (mm_rdk_rc)
		snprintf(mm_rdk_err, sizeof(mm_rdk_err), "%s", mm_diag_msg());
}

int mm_rdk_load(void)
{
	pthread_once(&mm_rdk_once, mm_rdk_once_fn);
	if (mm_rdk_rc)
		return mm_diag_set(mm_rdk_rc, "%s", mm_rdk_err);
	return 0;
}
