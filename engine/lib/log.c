/* log.c: timestamped, levelled log lines on stderr (see log.h). */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "time.h"

static int log_level = MM_LOG_INFO;

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

void mm_log_set_level(int level)
{
	log_level = level;
}

int mm_log_get_level(void)
{
	return log_level;
}

int mm_log_parse_level(const char *s)
{
	static const char *const names[] = {"error", "warn", "info", "debug"};

	for (int i = 0; i < 4; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

void mm_log(int level, const char *scope, const char *fmt, ...)
{
	char line[2048];
	size_t n;
	va_list ap;
	int w;

	if (level > log_level)
		return;
	n = mm_time_format(mm_now_ms(), line);
	w = snprintf(line + n, sizeof(line) - n, " %-5s [%s] ", level_names[level],
		     scope ? scope : "murmur");
	if (w > 0)
		n += (size_t)w < sizeof(line) - n ? (size_t)w : sizeof(line) - n - 1;
	va_start(ap, fmt);
	w = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	if (w > 0)
		n += (size_t)w < sizeof(line) - n ? (size_t)w : sizeof(line) - n - 1;
	if (n >= sizeof(line) - 1)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, n) < 0)
		return;
}
