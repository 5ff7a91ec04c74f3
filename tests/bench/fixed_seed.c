/*
 * fixed_seed.c: an LD_PRELOAD library for `make perfgate` only.
 *
 * LuaJIT seeds its PRNG from the kernel (the getrandom system call, made
 * through libc's syscall()) when a Lua state is created, and uses it to
 * place its allocator's mappings and machine code and to seed its string
 * hash. That is right for a server and wrong for an instruction count: the
 * same run then differs by a few percent in table probes and traces. This
 * library answers getrandom with a fixed byte sequence, so two runs of the
 * gate execute the same instructions. Every other system call goes through.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/types.h>

static void fill(void *buf, size_t len)
{
	uint64_t x = 0x9E3779B97F4A7C15ULL;
	unsigned char *p = buf;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (unsigned char)x;
	}
}

ssize_t getrandom(void *buf, size_t len, unsigned flags)
{
	(void)flags;
	fill(buf, len);
	return (ssize_t)len;
}

long syscall(long number, ...)
{
	static long (*next)(long, ...);
	long a[6];
	va_list ap;

	/* Like libc's own syscall(), take six argument registers whatever the
	 * call passes: the unused ones are never read by the kernel. */
	va_start(ap, number);
	for (int i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	if (number == SYS_getrandom) {
		fill((void *)a[0], (size_t)a[1]);
		return a[1];
	}
	if (next == NULL)
		next = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
	return next(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
