/* error.c: names and messages for MM_E* codes and the diagnostics slot. */
#include "error.h"

#include <stdio.h>
#include <string.h>

struct mm_diag {
	int code;
	char where[96];
	char msg[512];
};

static _Thread_local struct mm_diag diag;

#define MM__ERR_INDEX(err) ((err) - MM__ERR_BASE - 1)
#define MM__ERR_VALID(err) ((err) > MM__ERR_BASE && (err) < MM__ERR_END)

static const char *const err_names[] = {
#define MM__ERR_NAME(name, retriable, msg) #name,
	MM_ERRNO_MAP(MM__ERR_NAME)
#undef MM__ERR_NAME
};

static const char *const err_msgs[] = {
#define MM__ERR_MSG(name, retriable, msg) msg,
	MM_ERRNO_MAP(MM__ERR_MSG)
#undef MM__ERR_MSG
};

static const unsigned char err_retriable[] = {
#define MM__ERR_RETRY(name, retriable, msg) retriable,
	MM_ERRNO_MAP(MM__ERR_RETRY)
#undef MM__ERR_RETRY
};

const char *mm_err_name(int err)
{
	return MM__ERR_VALID(err) ? err_names[MM__ERR_INDEX(err)] : "UNKNOWN";
}

const char *mm_strerror(int err)
{
	if (err == 0)
		return "success";
	return MM__ERR_VALID(err) ? err_msgs[MM__ERR_INDEX(err)] : "unknown error";
}

int mm_err_retriable(int err)
{
	return MM__ERR_VALID(err) ? err_retriable[MM__ERR_INDEX(err)] : 0;
}

int mm_diag_set_at(const char *file, int line, int err, const char *fmt, ...)
{
	const char *base = strrchr(file, '/');
	va_list ap;

	diag.code = err;
	snprintf(diag.where, sizeof(diag.where), "%s:%d", base ? base + 1 : file, line);
	va_start(ap, fmt);
	vsnprintf(diag.msg, sizeof(diag.msg), fmt, ap);
	va_end(ap);
	return err;
}

const char *mm_diag_msg(void)
{
	return diag.msg;
}

const char *mm_diag_where(void)
{
	return diag.where;
}

int mm_diag_code(void)
{
	return diag.code;
}

void mm_diag_clear(void)
{
	diag.code = 0;
	diag.where[0] = '\0';
	diag.msg[0] = '\0';
}
