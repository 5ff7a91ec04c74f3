/*
 * modules.c: the package.loaders searcher for murmur's embedded bytecode
 * (modules.h says when the bytecode is used and why).
 *
 * LuaJIT keeps a non-stripped dump's chunk name in its header (ESC 'L' 'J',
 * the version byte, the flags as a uleb128, then the name's length as a
 * uleb128 and its bytes) and names every function of the chunk after it,
 * ignoring the name given to lua_load. The build's name is not the path a
 * module is found at, so the searcher copies the dump with the found path
 * in place of the build's name before loading it.
 */
#include "modules.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lib/hash.h"

/* The dump's fixed bytes before its chunk name: the signature, the
 * version and the flags (one byte: tools/lua_bytecode.c checks it). */
#define BC_HEAD 5

static const mm_lua_module_t *find(const mm_lua_module_t *mods, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(mods[i].name, name) == 0)
			return &mods[i];
	return NULL;
}

/* 1 when the file at path holds exactly the source m was compiled from,
 * 0 when it holds something else or cannot be read (the Lua file loader
 * then reads it, and reports what it finds). */
static int source_matches(const mm_lua_module_t *m, const char *path)
{
	struct stat sb;
	char *src = NULL;
	size_t got = 0;
	int fd, same = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (fstat(fd, &sb) != 0 || (size_t)sb.st_size != m->src_len)
		goto done;
	src = malloc(m->src_len + 1);
	if (src == NULL)
		goto done;
	while (got < m->src_len) {
		ssize_t r = read(fd, src + got, m->src_len - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			goto done;
		got += (size_t)r;
	}
	same = mm_hash64(src, m->src_len, MM_LUA_MODULE_SEED) == m->src_hash;
done:
	free(src);
	close(fd);
	return same;
}

/* Loads m's bytecode as the chunk "@path": pushes the function and returns
 * 0, or pushes the message and returns LuaJIT's error status. */
static int load_bytecode(lua_State *L, const mm_lua_module_t *m, const char *path)
{
	size_t plen = strlen(path), nlen = plen + 1, len;
	unsigned char *bc, *p;
	int status;

	bc = malloc(BC_HEAD + 10 + nlen + (m->bc_len - m->body));
	if (bc == NULL) {
		lua_pushliteral(L, "not enough memory");
		return LUA_ERRMEM;
	}
	memcpy(bc, m->bc, BC_HEAD);
	p = bc + BC_HEAD;
	for (size_t v = nlen; ; v >>= 7) {
		*p++ = (unsigned char)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
		if (v < 0x80)
			break;
	}
	*p++ = '@';
	memcpy(p, path, plen);
	p += plen;
	memcpy(p, m->bc + m->body, m->bc_len - m->body);
	len = (size_t)(p - bc) + (m->bc_len - m->body);
	lua_pushfstring(L, "@%s", path);
	status = luaL_loadbuffer(L, (const char *)bc, len, lua_tostring(L, -1));
	lua_remove(L, -2);
	free(bc);
	return status;
}

/* searcher(name): nothing for a name not embedded, or when no source of it
 * is on package.path (the Lua file searcher then says where it looked);
 * else the loaded chunk, from bytecode or from the file. */
static int searcher(lua_State *L)
{
	const mm_lua_module_t *mods = lua_touserdata(L, lua_upvalueindex(1));
	size_t n = (size_t)lua_tointeger(L, lua_upvalueindex(2));
	const char *name = luaL_checkstring(L, 1);
	const mm_lua_module_t *m = find(mods, n, name);
	const char *path;
	int status;

	if (m == NULL)
		return 0;
	lua_getfield(L, lua_upvalueindex(3), "searchpath");
	lua_pushvalue(L, 1);
	lua_getfield(L, lua_upvalueindex(3), "path");
	lua_call(L, 2, 1);
	path = lua_tostring(L, -1);
	if (path == NULL)
		return 0;
	status = -1;
	if (source_matches(m, path)) {
		status = load_bytecode(L, m, path);
		/* A libluajit other than the one the build compiled with may
		 * refuse the dump: the source is then parsed as without it. */
		if (status != 0)
			lua_pop(L, 1);
	}
	if (status != 0)
		status = luaL_loadfile(L, path);
	if (status != 0)
		return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name, path,
				  lua_tostring(L, -1));
	return 1;
}

void mm_lua_modules_install(lua_State *L, const mm_lua_module_t *mods, size_t n)
{
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "loaders");
	/* Shift the searchers from position 2 on up by one. */
	for (int i = (int)lua_objlen(L, -1); i >= 2; i--) {
		lua_rawgeti(L, -1, i);
		lua_rawseti(L, -2, i + 1);
	}
	lua_pushlightuserdata(L, (void *)mods);
	lua_pushinteger(L, (lua_Integer)n);
	lua_pushvalue(L, -4);
	lua_pushcclosure(L, searcher, 3);
	lua_rawseti(L, -2, 2);
	lua_pop(L, 2);
}
