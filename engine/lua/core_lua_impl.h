/*
 * core_lua_impl.h: what the files of murmur.core's engine class share
 * (private to core_lua.c, handle_lua.c and stats_lua.c; Lua reaches them
 * through the engine's methods, which luaopen_murmur_core registers).
 *
 * The engine userdata is one struct (lua_engine_t); each file owns a seam:
 *   core_lua.c    the engine: open, pipelines, sources, run, stop, flush,
 *                 meta, listen, close, and the module's registration
 *   handle_lua.c  the libuv handles whose callbacks are Lua functions
 *                 (timers, directory watchers, signals) that the engine owns
 *   stats_lua.c   e:stats(): the engine's, store's, pipelines' and sources'
 *                 counters as a Lua table
 *
 * Threads: the loop thread, like every murmur.core function.
 */
#ifndef MM_CORE_LUA_IMPL_H
#define MM_CORE_LUA_IMPL_H

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "../core/engine.h"
#include "../core/filewriter.h"
#include "../net/serve.h"

#define ENGINE_MT "murmur.engine"

typedef struct lua_handle lua_handle_t;

typedef struct lua_engine {
	mm_engine_t *ctx;
	uv_loop_t *loop;
	lua_State *L;
	int batch_ref;
	int merged_ref;
	lua_handle_t *handles; /* timers, watchers, signals owned by Lua callbacks */
	mm_serve_t *serve;     /* the query server of run --listen, or NULL */
	mm_fwriter_t *status;  /* status.json's writer (e:write_status), or NULL */
} lua_engine_t;

/*
 * A libuv handle whose callback is a Lua function (kept in the registry).
 * Handles live in a list on the engine; all are closed when the engine stops
 * (or when Lua calls h:close()), and freed in their close callback. The Lua
 * object is anchored in the registry while the handle is open and cleared
 * when it closes, so h:close() after the engine stopped is a no-op instead
 * of a use of freed memory.
 */
struct lua_handle {
	union {
		uv_handle_t h;
		uv_timer_t timer;
		uv_fs_event_t fs;
		uv_signal_t sig;
	} u;
	lua_engine_t *e;
	int ref;              /* the callback */
	int ud_ref;           /* the Lua object, anchored while open */
	lua_handle_t **ud;    /* its pointer to this handle */
	int closing;
	lua_handle_t *next;
};

/* The engine at index 1; raises when it is not one or is closed. */
static inline lua_engine_t *check_engine(lua_State *L)
{
	lua_engine_t *e = luaL_checkudata(L, 1, ENGINE_MT);

	if (e->ctx == NULL)
		luaL_error(L, "engine is closed");
	return e;
}

/* handle_lua.c */

/* Closes every handle of e, and its query server (the engine's on_stop,
 * and its close). */
void mm_lua_engine_close_handles(void *ud);
/* e:timer(ms, repeat_ms, fn), e:watch(dir, fn), e:signal(name, fn): each
 * returns a handle with a close() method. */
int mm_lua_engine_timer(lua_State *L);
int mm_lua_engine_watch(lua_State *L);
int mm_lua_engine_signal(lua_State *L);
/* Registers the handles' metatable. */
void mm_lua_handle_register(lua_State *L);

/* stats_lua.c */

/* e:stats() -> a table of counters. */
int mm_lua_engine_stats(lua_State *L);

#endif
