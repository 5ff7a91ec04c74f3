/*
 * sys_lua.c: murmur.core's plain functions: time parsing and window bucket
 * math, logging, files (mkdir_p, write_atomic, realpath), hashing, processes
 * (getpid, kill, isatty, the supervisor and its workers), a blocking HTTP
 * POST and error names.
 *
 * Failures are returned as `nil, "ENAME: message", "ENAME"`; raising is kept
 * for programmer errors (wrong argument types).
 */
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/progress.h"
#include "../core/supervisor.h"
#include "../http/http.h"
#include "../lib/error.h"
#include "../lib/file.h"
#include "../lib/hash.h"
#include "../lib/log.h"
#include "../monoid/window.h"
#include "core_lua.h"

static int l_parse_time(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	int64_t ms;
	int rc = mm_time_parse_rfc3339(s, n, &ms);

	if (rc)
		return mm_lua_push_diag(L, rc);
	lua_pushnumber(L, (lua_Number)ms);
	return 1;
}

static int l_parse_duration(lua_State *L)
{
	size_t n;
	const char *s = luaL_checklstring(L, 1, &n);
	int64_t ms;
	int rc = mm_duration_parse(s, n, &ms);

	if (rc)
		return mm_lua_push_diag(L, rc);
	lua_pushnumber(L, (lua_Number)ms);
	return 1;
}

static int l_format_time(lua_State *L)
{
	char buf[40];
	size_t n = mm_time_format((int64_t)luaL_checknumber(L, 1), buf);

	lua_pushlstring(L, buf, n);
	return 1;
}

static int l_bucket(lua_State *L)
{
	lua_pushnumber(L, (lua_Number)mm_window_bucket((int64_t)luaL_checknumber(L, 1),
						       (int64_t)luaL_checknumber(L, 2)));
	return 1;
}

static int l_bucket_start(lua_State *L)
{
	lua_pushnumber(L, (lua_Number)mm_window_bucket_start_ms((int64_t)luaL_checknumber(L, 1),
								(int64_t)luaL_checknumber(L, 2)));
	return 1;
}

static int l_oldest_kept(lua_State *L)
{
	int64_t b = mm_window_oldest_kept((int64_t)luaL_checknumber(L, 1),
					  (int64_t)luaL_checknumber(L, 2),
					  (int64_t)luaL_checknumber(L, 3));

	lua_pushnumber(L, b == INT64_MIN ? -1 : (lua_Number)b);
	return 1;
}

static int l_now_ms(lua_State *L)
{
	lua_pushnumber(L, (lua_Number)mm_now_ms());
	return 1;
}

static int l_log(lua_State *L)
{
	static const char *const levels[] = {"error", "warn", "info", "debug", NULL};
	int level = luaL_checkoption(L, 1, "info", levels);

	mm_log(level, luaL_optstring(L, 2, NULL), "%s", luaL_checkstring(L, 3));
	return 0;
}

static int l_set_log_level(lua_State *L)
{
	int level = mm_log_parse_level(luaL_checkstring(L, 1));

	if (level < 0)
		return mm_lua_push_fail(L, MM_EINVAL, "log level must be error, warn, info or debug");
	mm_log_set_level(level);
	lua_pushboolean(L, 1);
	return 1;
}

/* core.mkdir_p(path) -> true | nil, err, code: creates path and its parents. */
static int l_mkdir_p(lua_State *L)
{
	size_t n;
	const char *path = luaL_checklstring(L, 1, &n);
	char buf[4096];

	if (n == 0 || n >= sizeof(buf))
		return mm_lua_push_fail(L, MM_EINVAL, "bad directory path");
	memcpy(buf, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		/* 0777 minus the umask: murmur's umask (077 unless MURMUR_UMASK
		 * relaxes it, main.c) makes the directories private. */
		if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
			/* Name the directory that could not be made: with a deep
			 * --data path, "Permission denied" alone says nothing. */
			lua_pushfstring(L, "cannot create directory '%s': %s", buf, strerror(errno));
			return mm_lua_push_fail(L, MM_EIO, lua_tostring(L, -1));
		}
		buf[i] = path[i];
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* core.write_atomic(path, s) -> true | nil, err, code: replaces the file
 * with s, never leaving a partial one (mm_file_write_atomic). */
static int l_write_atomic(lua_State *L)
{
	size_t n;
	const char *path = luaL_checkstring(L, 1);
	const char *s = luaL_checklstring(L, 2, &n);
	int rc = mm_file_write_atomic(path, s, n);

	if (rc)
		return mm_lua_push_diag(L, rc);
	lua_pushboolean(L, 1);
	return 1;
}

/* core.realpath(path) -> the absolute path with every symbolic link, "." and
 * ".." resolved | nil, err, code. The sandbox checks script-named paths with
 * it (lua/murmur/grants.lua): a link inside an allowed directory that points
 * outside it resolves to where it points. */
static int l_realpath(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	char *res = realpath(path, NULL);

	if (res == NULL) {
		int code = errno == ENOENT || errno == ENOTDIR ? MM_ENOTFOUND : MM_EIO;

		lua_pushfstring(L, "%s: %s", path, strerror(errno));
		return mm_lua_push_fail(L, code, lua_tostring(L, -1));
	}
	lua_pushstring(L, res);
	free(res);
	return 1;
}

/* core.hash64(s) -> 16 hex digits of MurmurHash64A (script versions in status). */
static int l_hash64(lua_State *L)
{
	size_t n;
	const char *str = luaL_checklstring(L, 1, &n);
	char hex[17];

	snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)mm_hash64(str, n, 0));
	lua_pushstring(L, hex);
	return 1;
}

static int l_getpid(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)getpid());
	return 1;
}

/* core.http_post(url, body[, header]) -> HTTP code, body | nil, err, code.
 * Blocking: for a runtime's start-up report (the Lambda Runtime API's
 * /init/error) before any loop runs. */
static int l_http_post(lua_State *L)
{
	size_t n;
	const char *url = luaL_checkstring(L, 1), *body = luaL_checklstring(L, 2, &n);
	const char *hdrs[2] = {"Content-Type: application/json", luaL_optstring(L, 3, NULL)};
	mm_http_request_t req = {.method = "POST", .url = url, .headers = hdrs,
				 .nheaders = hdrs[1] ? 2 : 1, .body = body, .body_len = n,
				 .timeout_ms = 10000};
	mm_buf_t out = {0};
	long code = 0;
	int rc = mm_http_fetch(&req, &code, &out);

	if (rc) {
		mm_buf_free(&out);
		return mm_lua_push_diag(L, rc);
	}
	lua_pushinteger(L, (lua_Integer)code);
	lua_pushlstring(L, out.len ? (const char *)out.p : "", out.len);
	mm_buf_free(&out);
	return 2;
}

/* core.isatty(fd) -> true if the descriptor is a terminal (progress output
 * redraws one line in place there, and logs lines elsewhere). */
static int l_isatty(lua_State *L)
{
	lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)) == 1);
	return 1;
}

/* core.kill(pid, "hup"|"term"|"int"|"kill"|0) -> true | nil, err, code */
static int l_kill(lua_State *L)
{
	static const char *const names[] = {"hup", "term", "int", "kill", "zero", NULL};
	static const int nums[] = {SIGHUP, SIGTERM, SIGINT, SIGKILL, 0};
	pid_t pid = (pid_t)luaL_checkinteger(L, 1);
	int sig = nums[luaL_checkoption(L, 2, "zero", names)];

	if (pid <= 0)
		return mm_lua_push_fail(L, MM_EINVAL, "bad pid");
	if (kill(pid, sig) != 0)
		return mm_lua_push_fail(L, errno == ESRCH ? MM_ENOTFOUND : MM_EIO, strerror(errno));
	lua_pushboolean(L, 1);
	return 1;
}

/* core.supervise(data_dir, watchdog_ms) -> exit code, in the supervisor once
 * the run is over | "worker", in each forked worker (supervisor.h). */
static int l_supervise(lua_State *L)
{
	mm_supervisor_config_t cfg;
	int code, worker;

	cfg.data_dir = luaL_checkstring(L, 1);
	cfg.watchdog_ms = (int64_t)luaL_checknumber(L, 2);
	code = mm_supervise(&cfg, &worker);
	if (worker)
		lua_pushliteral(L, "worker");
	else
		lua_pushinteger(L, code);
	return 1;
}

/* core.worker_init(data_dir) -> number of poison records | nil, err, code.
 * Maps the supervisor's progress page, dies with the supervisor, loads the
 * poison list. A no-op outside a supervised worker. */
static int l_worker_init(lua_State *L)
{
	char path[4096];
	int rc;

	if (getenv("MURMUR_PROGRESS") == NULL) {
		lua_pushinteger(L, 0);
		return 1;
	}
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() == 1)
		return mm_lua_push_fail(L, MM_ECLOSED, "the supervisor is gone");
	rc = mm_progress_attach();
	if (rc == 0) {
		snprintf(path, sizeof(path), "%s/poison.jsonl", luaL_checkstring(L, 1));
		rc = mm_poison_load(path);
	}
	if (rc)
		return mm_lua_push_diag(L, rc);
	lua_pushinteger(L, mm_poison_count());
	return 1;
}

static int l_strerror(lua_State *L)
{
	int err = (int)luaL_checkinteger(L, 1);

	lua_pushstring(L, mm_err_name(err));
	lua_pushstring(L, mm_strerror(err));
	return 2;
}

/* Adds the functions above to the module on top. */
void mm_lua_sys_register(lua_State *L)
{
	static const luaL_Reg funcs[] = {
		{"parse_time", l_parse_time},
		{"parse_duration", l_parse_duration},
		{"format_time", l_format_time},
		{"bucket", l_bucket},
		{"bucket_start", l_bucket_start},
		{"oldest_kept", l_oldest_kept},
		{"now_ms", l_now_ms},
		{"log", l_log},
		{"set_log_level", l_set_log_level},
		{"strerror", l_strerror},
		{"mkdir_p", l_mkdir_p},
		{"realpath", l_realpath},
		{"write_atomic", l_write_atomic},
		{"hash64", l_hash64},
		{"getpid", l_getpid},
		{"supervise", l_supervise},
		{"worker_init", l_worker_init},
		{"kill", l_kill},
		{"isatty", l_isatty},
		{"http_post", l_http_post},
		{NULL, NULL},
	};

	luaL_register(L, NULL, funcs);
}
