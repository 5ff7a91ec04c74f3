/*
 * file.h: small files murmur replaces whole (status.json, supervisor.json,
 * murmur.pid).
 *
 * mm_file_write_atomic writes the bytes to PATH.tmp (opened with O_NOFOLLOW,
 * created 0666 minus the umask), checks every write, fsyncs and closes it,
 * and only then renames it over PATH. On any failure the temporary file is
 * removed and PATH is left as it was, so a reader sees the old file or the
 * new one, never a partial one (a full disk once emptied status.json).
 *
 * Error injection (builds with MM_ERRINJ): while the file named by
 * MURMUR_ERRINJ_WRITE_ATOMIC exists, every call writes half of its bytes and
 * then fails as a full disk does; MURMUR_ERRINJ_WRITE_ATOMIC_SLOW_MS=N makes
 * every call take N ms longer (a slow disk).
 *
 * Any thread; sets the diagnostics slot on failure.
 */
#ifndef MM_FILE_H
#define MM_FILE_H

#include <stddef.h>

/* Returns 0, MM_ENOSPC (full disk or quota), MM_EIO or MM_EINVAL (a path too
 * long), naming the file and the step that failed. */
int mm_file_write_atomic(const char *path, const void *p, size_t len);

#endif
