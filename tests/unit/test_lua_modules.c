/*
 * test_lua_modules.c: the searcher of embedded module bytecode
 * (lua/modules.c).
 *
 * Each test builds its own table: the bytecode of one text (dumped here
 * with lua_dump, as tools/lua_bytecode.c does) recorded with the size and
 * hash of another text, the one written to the module's file. The two
 * return different strings, so what require returns shows which was
 * loaded. Checked: a file holding the recorded source runs the bytecode,
 * under the file's path as its chunk name (an error's file:line); a file
 * that differs (in size, or only in content) is parsed instead; a dump the
 * library refuses falls back to the file; names not in the table and
 * modules found nowhere go to LuaJIT's own searchers and messages; a
 * syntax error in an edited file is reported as require reports it.
 */
#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/hash.h"
#include "lua/modules.h"
#include "unit.h"

static char dir[64];

typedef struct blob {
	unsigned char *p;
	size_t len;
} blob_t;

static int writer(lua_State *L, const void *p, size_t sz, void *ud)
{
	blob_t *b = ud;
	unsigned char *np = realloc(b->p, b->len + sz);

	(void)L;
	if (np == NULL)
		return 1;
	memcpy(np + b->len, p, sz);
	b->p = np;
	b->len += sz;
	return 0;
}

static void unlink_file(const char *name)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	unlink(path);
}

static void write_file(const char *name, const char *text)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (f != NULL) {
		fputs(text, f);
		fclose(f);
	}
}

/* A table row for module `name` whose bytecode is compiled from bc_src and
 * whose recorded source is file_src. The dump is in *b (freed by the test). */
static mm_lua_module_t row(const char *name, const char *bc_src, const char *file_src, blob_t *b)
{
	lua_State *L = luaL_newstate();
	mm_lua_module_t m = {.name = name};
	size_t pos = 5, nlen = 0;
	int shift = 0;

	b->p = NULL;
	b->len = 0;
	if (luaL_loadbuffer(L, bc_src, strlen(bc_src), "@build-name.lua") == 0)
		lua_dump(L, writer, b);
	lua_close(L);
	do {
		nlen |= (size_t)(b->p[pos] & 0x7f) << shift;
		shift += 7;
	} while (b->p[pos++] & 0x80);
	m.bc = b->p;
	m.bc_len = b->len;
	m.body = pos + nlen;
	m.src_len = strlen(file_src);
	m.src_hash = mm_hash64(file_src, m.src_len, MM_LUA_MODULE_SEED);
	return m;
}

static lua_State *state(const mm_lua_module_t *mods, size_t n)
{
	lua_State *L = luaL_newstate();

	luaL_openlibs(L);
	lua_getglobal(L, "package");
	lua_pushfstring(L, "%s/?.lua", dir);
	lua_setfield(L, -2, "path");
	lua_pop(L, 1);
	mm_lua_modules_install(L, mods, n);
	return L;
}

/* require(name) in L: the string it returns, or the error message. */
static const char *require(lua_State *L, const char *name)
{
	lua_settop(L, 0);
	lua_getglobal(L, "require");
	lua_pushstring(L, name);
	lua_pcall(L, 1, 1, 0);
	return lua_tostring(L, -1);
}

static const char *FILE_SRC = "return 'from the file'\n";

TEST(matching_file_runs_the_bytecode)
{
	blob_t b;
	mm_lua_module_t m = row("mtmod", "return 'from the bytecode'\n", FILE_SRC, &b);
	lua_State *L = state(&m, 1);

	write_file("mtmod.lua", FILE_SRC);
	CHECK(strcmp(require(L, "mtmod"), "from the bytecode") == 0);
	lua_close(L);
	free(b.p);
}

/* The bytecode's functions carry the found file's path, not the build's. */
TEST(bytecode_errors_name_the_file)
{
	blob_t b;
	mm_lua_module_t m = row("mterr", "\n\nerror('boom')\n", FILE_SRC, &b);
	lua_State *L = state(&m, 1);
	char want[128];

	write_file("mterr.lua", FILE_SRC);
	snprintf(want, sizeof(want), "%s/mterr.lua:3: boom", dir);
	CHECK(strcmp(require(L, "mterr"), want) == 0);
	lua_close(L);
	free(b.p);
}

/* An edited module runs as edited: longer, or of the same size. */
TEST(differing_file_is_parsed)
{
	blob_t b;
	mm_lua_module_t m = row("mtedit", "return 'from the bytecode'\n", FILE_SRC, &b);
	lua_State *L = state(&m, 1);

	write_file("mtedit.lua", "return 'from the edited file'\n");
	CHECK(strcmp(require(L, "mtedit"), "from the edited file") == 0);
	lua_close(L);
	L = state(&m, 1);
	write_file("mtedit.lua", "return 'FROM the file'\n");
	CHECK(strcmp(require(L, "mtedit"), "FROM the file") == 0);
	lua_close(L);
	free(b.p);
}

TEST(syntax_error_in_edited_file)
{
	blob_t b;
	mm_lua_module_t m = row("mtbad", "return 1\n", FILE_SRC, &b);
	lua_State *L = state(&m, 1);
	char want[160];

	write_file("mtbad.lua", "return (\n");
	snprintf(want, sizeof(want), "error loading module 'mtbad' from file '%s/mtbad.lua':", dir);
	CHECK(strncmp(require(L, "mtbad"), want, strlen(want)) == 0);
	lua_close(L);
	free(b.p);
}

/* A dump this library refuses (here: a version byte it does not know) is
 * not fatal: the file is parsed as without bytecode. */
TEST(refused_dump_falls_back_to_the_file)
{
	blob_t b;
	mm_lua_module_t m = row("mtver", "return 'from the bytecode'\n", FILE_SRC, &b);
	lua_State *L;

	b.p[3] = 0x7f;
	L = state(&m, 1);
	write_file("mtver.lua", FILE_SRC);
	CHECK(strcmp(require(L, "mtver"), "from the file") == 0);
	lua_close(L);
	free(b.p);
}

TEST(other_names_go_to_luajit)
{
	blob_t b;
	mm_lua_module_t m = row("mtmod", "return 'from the bytecode'\n", FILE_SRC, &b);
	lua_State *L = state(&m, 1);
	const char *got;

	write_file("mtplain.lua", "return 'plain'\n");
	CHECK(strcmp(require(L, "mtplain"), "plain") == 0);
	/* Preloaded and built-in modules are untouched. */
	require(L, "string");
	CHECK(lua_istable(L, -1));
	got = require(L, "mtnowhere");
	CHECK(got != NULL && strstr(got, "module 'mtnowhere' not found") != NULL);
	CHECK(got != NULL && strstr(got, "mtnowhere.lua") != NULL);
	lua_close(L);
	/* An embedded name with no file on the path: LuaJIT's message. */
	L = state(&m, 1);
	unlink_file("mtmod.lua");
	got = require(L, "mtmod");
	CHECK(got != NULL && strstr(got, "module 'mtmod' not found") != NULL);
	lua_close(L);
	free(b.p);
}

int main(void)
{
	const char *files[] = {"mtmod.lua", "mterr.lua", "mtedit.lua", "mtbad.lua", "mtver.lua", "mtplain.lua"};

	snprintf(dir, sizeof(dir), "/tmp/test_lua_modules.XXXXXX");
	if (mkdtemp(dir) == NULL)
		return 1;
	RUN(matching_file_runs_the_bytecode);
	RUN(bytecode_errors_name_the_file);
	RUN(differing_file_is_parsed);
	RUN(syntax_error_in_edited_file);
	RUN(refused_dump_falls_back_to_the_file);
	RUN(other_names_go_to_luajit);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		unlink_file(files[i]);
	rmdir(dir);
	UNIT_DONE();
}
