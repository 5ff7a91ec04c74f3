/*
 * modules.h: murmur's own Lua modules, precompiled to LuaJIT bytecode at
 * build time and embedded in the binary.
 *
 * Parsing the modules in lua/murmur was most of a start's instructions (doc/
 * performance-journal.md, "murmur's modules as embedded bytecode"). The build
 * (tools/lua_bytecode.c) compiles each module with the LuaJIT library the
 * binary links, keeping its debug information (line numbers, local names),
 * and records the size and mm_hash64 of the source it compiled. The
 * searcher that mm_lua_modules_install puts in front of LuaJIT's Lua file
 * searcher still finds a module's source on package.path exactly as before
 * ($MURMUR_LUA_DIR, the checkout, the installed tree), reads it, and loads
 * the embedded bytecode only when that file's bytes are the ones the
 * bytecode was compiled from; otherwise (an edited module, a source tree
 * other than the one built) it loads the source, as without bytecode. So a
 * stale copy is never run in place of a newer source, and what runs is
 * always what the file on the path says. The bytecode is loaded under the
 * chunk name "@<path of that file>", the name parsing it gives, so error
 * messages and tracebacks read file:line as before.
 *
 * Only the names in the table are served this way: pipeline scripts and
 * their modules are loaded by murmur.loader, which refuses bytecode, and
 * never through package.loaders.
 */
#ifndef MM_LUA_MODULES_H
#define MM_LUA_MODULES_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

/* The seed of mm_hash64 over a module's source. */
#define MM_LUA_MODULE_SEED 0x6d6f64756c6573ULL

/* One embedded module. bc is the output of lua_dump, chunk name included;
 * body is the offset in bc just past that chunk name, where the rest of the
 * header and the prototypes start. Static data: no owner. */
typedef struct mm_lua_module {
	const char *name; /* "murmur.cli" */
	const unsigned char *bc;
	size_t bc_len;
	size_t body;
	size_t src_len;
	uint64_t src_hash; /* mm_hash64(source, src_len, MM_LUA_MODULE_SEED) */
} mm_lua_module_t;

/* The modules of this build (build/gen/lua_modules.c). */
extern const mm_lua_module_t mm_lua_modules[];
extern const size_t mm_lua_modules_count;

/* Inserts the searcher for the n modules of mods (which must outlive L) at
 * position 2 of package.loaders, after package.preload and before the Lua
 * file searcher. Loop thread, at start-up. */
void mm_lua_modules_install(lua_State *L, const mm_lua_module_t *mods, size_t n);

#endif
