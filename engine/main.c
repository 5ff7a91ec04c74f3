/*
 * main.c: the murmur executable. It hosts one LuaJIT state, registers the
 * `murmur.core` C module, points package.path at murmur's Lua modules and
 * hands the command line to lua/murmur/cli.lua, whose return value is the
 * exit code. Every C->Lua entry goes through the funnel (engine/lua/funnel.c).
 *
 * Lua modules are looked up, in order, in $MURMUR_LUA_DIR, next to the
 * binary in a source checkout (build/murmur or build/<variant>/murmur -> lua/),
 * and in an installed
 * tree (bin/murmur -> share/lua/5.1/), then on LuaJIT's default path. The
 * file found decides what runs: murmur's own modules are loaded from the
 * bytecode built into the binary when that file is their source as built,
 * and parsed from the file otherwise (engine/lua/modules.h).
 *
 * File modes. Everything murmur creates (data, dead-letter and store
 * directories, dead-letter and LMDB files, status.json, supervisor.json,
 * murmur.pid, poison.jsonl) is created 0666/0777 minus the umask, and the
 * umask is set here, before anything else runs, to 077: private to the
 * user murmur runs as. The operator may relax it with MURMUR_UMASK (octal,
 * e.g. 027 for group-readable files); scripts cannot change it. The worker
 * the supervisor starts inherits it.
 *
 * glibc malloc's thresholds are set here too, before any thread exists
 * (lib/heap.h; MURMUR_MALLOC=default, or malloc tunables in
 * GLIBC_TUNABLES, keep glibc's).
 */
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/engine.h"
#include "lib/heap.h"
#include "lua/alloc.h"
#include "lua/funnel.h"
#include "lua/modules.h"

int luaopen_murmur_core(lua_State *L);

static void add_path(luaL_Buffer *b, const char *dir)
{
	luaL_addstring(b, dir);
	luaL_addstring(b, "/?.lua;");
	luaL_addstring(b, dir);
	luaL_addstring(b, "/?/init.lua;");
}

static void set_package_path(lua_State *L)
{
	char exe[PATH_MAX], dir[PATH_MAX + 32];
	const char *env = getenv("MURMUR_LUA_DIR");
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	luaL_Buffer b;

	luaL_buffinit(L, &b);
	if (env && *env)
		add_path(&b, env);
	if (n > 0) {
		char *slash;

		exe[n] = '\0';
		slash = strrchr(exe, '/');
		if (slash)
			*slash = '\0';
		snprintf(dir, sizeof(dir), "%s/../lua", exe);
		add_path(&b, dir);
		snprintf(dir, sizeof(dir), "%s/../../lua", exe); /* build/asan, build/rock */
		add_path(&b, dir);
		snprintf(dir, sizeof(dir), "%s/../share/lua/5.1", exe);
		add_path(&b, dir);
	}
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "path");
	luaL_addvalue(&b);
	luaL_pushresult(&b);
	lua_setfield(L, -2, "path");
	lua_getfield(L, -1, "preload");
	lua_pushcfunction(L, luaopen_murmur_core);
	lua_setfield(L, -2, "murmur.core");
	lua_pop(L, 2);
	mm_lua_modules_install(L, mm_lua_modules, mm_lua_modules_count);
}

/* Sets the umask: MURMUR_UMASK (octal, at most 0777) or 077. */
static int set_umask(void)
{
	const char *v = getenv("MURMUR_UMASK");
	char *end;
	unsigned long mask = 077;

	if (v != NULL && *v != '\0') {
		mask = strtoul(v, &end, 8);
		if (*end != '\0' || mask > 0777 || strspn(v, "01234567") != strlen(v)) {
			fprintf(stderr,
				"murmur: MURMUR_UMASK=%s is not an octal umask (e.g. 077, the "
				"default, or 027)\n",
				v);
			return -1;
		}
	}
	umask((mode_t)mask);
	return 0;
}

/*
 * The end of `murmur run`, supervisor and worker alike: what must reach the
 * disk already has (the worker's engine closed its stores, files and
 * dead-letter destinations before cli.main returned; the supervisor holds
 * none), so the process leaves without lua_close and the libraries'
 * destructors. Freeing the Lua state object by object, with the
 * copy-on-write faults that the writes to memory shared with the forked
 * worker cost, took the supervisor 4 ms of CPU at the end of every run
 * (doc/performance-journal.md), for memory the kernel takes back at once. stdio
 * is flushed first: a script's unclosed io files are C streams too.
 * Sanitizer builds close the state as other commands do, so that their leak
 * checks still see murmur's own allocations. The release build's training
 * run (tools/release.sh) is an instrumented build, whose counters libgcov
 * writes from an exit handler that _exit skips: __gcov_dump, a weak
 * reference that only such a build defines, writes them first.
 */
extern void __gcov_dump(void) __attribute__((weak));

static void end_run(int code)
{
#if !defined(__SANITIZE_ADDRESS__)
	fflush(NULL);
	if (__gcov_dump)
		__gcov_dump();
	_exit(code);
#else
	(void)code;
#endif
}

int main(int argc, char **argv)
{
	lua_State *L;
	char err[160];
	int code = 2;

	if (set_umask() != 0)
		return 2;
	/* The heap's huge pages, when asked, for `murmur run` alone (heap.h). */
	if (mm_heap_tune(getenv("MURMUR_MALLOC"), getenv("GLIBC_TUNABLES"),
			 argc > 1 && strcmp(argv[1], "run") == 0, err, sizeof(err)) < 0) {
		fprintf(stderr, "murmur: %s\n", err);
		return 2;
	}
	/* `murmur run` (supervisor and worker alike) is in the terminal's or
	 * systemd's process group: a stop signal can arrive before its loop
	 * installs handlers. From here on it is a graceful stop, not a kill
	 * that skips the final flush (engine.h). */
	if (argc > 1 && strcmp(argv[1], "run") == 0)
		mm_engine_catch_early_signals();
	/* The counting allocator enforces --lua-memory inside any one call
	 * (engine/lua/alloc.h). */
	L = lua_newstate(mm_lua_alloc, NULL);
	if (L == NULL) {
		fprintf(stderr, "murmur: cannot create a Lua state\n");
		return 2;
	}
	luaL_openlibs(L);
	set_package_path(L);
	lua_createtable(L, argc, 1);
	for (int i = 0; i < argc; i++) {
		lua_pushstring(L, argv[i]);
		lua_rawseti(L, -2, i);
	}
	lua_setglobal(L, "arg");
	lua_getglobal(L, "require");
	lua_pushliteral(L, "murmur.cli");
	if (mm_lua_call(L, 1, 1, "loading murmur.cli") == 0) {
		lua_getfield(L, -1, "main");
		lua_remove(L, -2);
		for (int i = 1; i < argc; i++)
			lua_pushstring(L, argv[i]);
		if (mm_lua_call(L, argc - 1, 1, "murmur") == 0) {
			code = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : 0;
			lua_pop(L, 1);
		}
	}
	if (argc > 1 && strcmp(argv[1], "run") == 0)
		end_run(code);
	lua_close(L);
	return code;
}
