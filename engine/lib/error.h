/*
 * error.h: murmur's error codes and the per-thread diagnostics slot.
 *
 * Every function in the engine returns 0 on success or a negative MM_E*
 * code from the single list below (the libuv UV_ERRNO_MAP pattern). The
 * code says what kind of failure happened; the human-readable detail, with
 * the C file and line that produced it, goes to a thread-local slot that the
 * caller may read with mm_diag_msg() (tarantool's diag_set). Callers that
 * only propagate an error never touch the slot, so the innermost detail wins.
 *
 * Thread safety: the slot is thread-local; every function here may be called
 * from any thread.
 */
#ifndef MM_ERROR_H
#define MM_ERROR_H

#include <stdarg.h>

/* X(name, retriable, message) */
#define MM_ERRNO_MAP(X)                                                     \
	X(EINVAL, 0, "invalid argument")                                    \
	X(ENOMEM, 0, "out of memory")                                       \
	X(ECORRUPT, 0, "corrupt or truncated encoding")                     \
	X(ETYPE, 0, "value has the wrong type")                             \
	X(ERANGE, 0, "value out of range")                                  \
	X(ETOOBIG, 0, "record exceeds the size limit")                      \
	X(EJSON, 0, "malformed JSON")                                       \
	X(EUTF8, 0, "invalid UTF-8")                                        \
	X(ENOTOBJ, 0, "JSON value is not an object")                        \
	X(EMISSING, 0, "required field missing")                            \
	X(EINCOMPAT, 0, "incompatible with existing state")                 \
	X(ENOTSUP, 0, "operation not supported")                            \
	X(ENOTFOUND, 0, "not found")                                        \
	X(EEXIST, 0, "already exists")                                      \
	X(ELUA, 0, "error in Lua code")                                     \
	X(ECLOSED, 0, "handle is closed")                                   \
	X(EFENCED, 0, "fenced off: another worker owns it now")             \
	X(EIO, 1, "input/output error")                                     \
	X(ENOSPC, 1, "no space left on device")                             \
	X(EAGAIN, 1, "resource temporarily unavailable")                    \
	X(ESTORE, 1, "store operation failed")                              \
	X(ETIMEDOUT, 1, "operation timed out")

enum {
	MM__ERR_BASE = -1000,
#define MM__ERR_ENUM(name, retriable, msg) MM_##name,
	MM_ERRNO_MAP(MM__ERR_ENUM)
#undef MM__ERR_ENUM
	MM__ERR_END
};

/* Returns the symbolic name ("EINVAL") of an error code, or "UNKNOWN". */
const char *mm_err_name(int err);

/* Returns the fixed English description of an error code. */
const char *mm_strerror(int err);

/* Returns 1 when an operation that failed with err may succeed if retried
 * (I/O, space, store and timeout failures), 0 otherwise. */
int mm_err_retriable(int err);

/*
 * Records err and a printf-style detail in the calling thread's slot and
 * returns err, so that `return mm_diag_set(MM_ECORRUPT, "...")` reads well.
 */
#define mm_diag_set(err, ...) mm_diag_set_at(__FILE__, __LINE__, (err), __VA_ARGS__)
int mm_diag_set_at(const char *file, int line, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* The detail of the last mm_diag_set on this thread ("" if none). The string
 * stays valid until the next mm_diag_set on the same thread. */
const char *mm_diag_msg(void);

/* "file.c:123" of the last mm_diag_set on this thread ("" if none). */
const char *mm_diag_where(void);

/* The code of the last mm_diag_set on this thread (0 if none). */
int mm_diag_code(void);

/* Forgets the last error on this thread. */
void mm_diag_clear(void);

#endif
