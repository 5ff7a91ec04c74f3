/* file.c: replacing a small file atomically (see file.h). */
#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"

static int file_fail(const char *path, const char *what, int err)
{
	int code = err == ENOSPC || err == EDQUOT || err == EFBIG ? MM_ENOSPC : MM_EIO;

	return mm_diag_set(code, "cannot write %s: %s: %s", path, what, strerror(err));
}

#ifdef MM_ERRINJ
/* How many bytes a write may take: all, or half while the flag file exists. */
static size_t errinj_cap(size_t len)
{
	const char *flag = getenv("MURMUR_ERRINJ_WRITE_ATOMIC");

	if (flag == NULL || *flag == '\0' || access(flag, F_OK) != 0)
		return len;
	return len / 2;
}

/* MURMUR_ERRINJ_WRITE_ATOMIC_SLOW_MS=N: every call takes N ms longer, as on
 * a disk whose journal is busy with other writers' fsyncs. */
static void errinj_slow(void)
{
	const char *ms = getenv("MURMUR_ERRINJ_WRITE_ATOMIC_SLOW_MS");

	if (ms != NULL && *ms != '\0')
		usleep((useconds_t)strtoul(ms, NULL, 10) * 1000);
}
#else
#define errinj_cap(len) (len)
#define errinj_slow() ((void)0)
#endif

int mm_file_write_atomic(const char *path, const void *p, size_t len)
{
	char tmp[PATH_MAX];
	const char *at = p;
	size_t left = len, cap = errinj_cap(len);
	int fd, rc = 0;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return mm_diag_set(MM_EINVAL, "cannot write %s: path too long", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0666);
	if (fd < 0)
		return file_fail(tmp, "open", errno);
	while (left > 0) {
		ssize_t n;

		if (len - left >= cap) {
			rc = file_fail(tmp, "write", ENOSPC);
			break;
		}
		n = write(fd, at, left < cap - (len - left) ? left : cap - (len - left));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = file_fail(tmp, "write", n < 0 ? errno : ENOSPC);
			break;
		}
		at += n;
		left -= (size_t)n;
	}
	errinj_slow();
	if (rc == 0 && fsync(fd) != 0)
		rc = file_fail(tmp, "fsync", errno);
	/* close() reports delayed write errors (NFS) too. */
	if (close(fd) != 0 && rc == 0)
		rc = file_fail(tmp, "close", errno);
	if (rc == 0 && rename(tmp, path) != 0)
		rc = file_fail(path, "rename", errno);
	if (rc)
		unlink(tmp);
	return rc;
}
