/*
 * handle_lua.c: libuv handles whose callbacks are Lua functions, owned by a
 * murmur.core engine (see core_lua_impl.h): the timers, directory watchers
 * and SIGHUP/SIGUSR handlers that hot reload and the runner use.
 *
 * Each callback goes through the Lua funnel (mm_lua_call), so an error in it
 * is logged and counted, never fatal. Handles live in a list on the engine
 * and are all closed when the engine stops or closes, or one by one with
 * h:close(); struct lua_handle says how a closed handle's Lua object stays
 * safe to use.
 */
#include <lauxlib.h>
#include <lua.h>
#include <signal.h>
#include <stdlib.h>

#include "../lib/error.h"
#include "core_lua.h"
#include "core_lua_impl.h"
#include "funnel.h"

#define HANDLE_MT "murmur.handle"

static void handle_closed(uv_handle_t *h)
{
	free(h->data);
}

static void handle_close(lua_handle_t *lh)
{
	lua_engine_t *e = lh->e;
	lua_handle_t **pp;

	if (lh->closing)
		return;
	lh->closing = 1;
	for (pp = &e->handles; *pp; pp = &(*pp)->next)
		if (*pp == lh) {
			*pp = lh->next;
			break;
		}
	luaL_unref(e->L, LUA_REGISTRYINDEX, lh->ref);
	lh->ref = LUA_NOREF;
	*lh->ud = NULL;
	luaL_unref(e->L, LUA_REGISTRYINDEX, lh->ud_ref);
	lh->ud_ref = LUA_NOREF;
	uv_close(&lh->u.h, handle_closed);
}

void mm_lua_engine_close_handles(void *ud)
{
	lua_engine_t *e = ud;

	while (e->handles)
		handle_close(e->handles);
	/* Reads in flight finish before the loop empties and the store closes. */
	if (e->serve)
		mm_serve_stop(e->serve, NULL, NULL);
	e->serve = NULL;
}

static lua_handle_t *handle_new(lua_State *L, lua_engine_t *e, int fn_index)
{
	lua_handle_t *lh = calloc(1, sizeof(*lh));
	lua_handle_t **ud;

	if (lh == NULL) {
		luaL_error(L, "out of memory");
		return NULL;
	}
	luaL_checktype(L, fn_index, LUA_TFUNCTION);
	lua_pushvalue(L, fn_index);
	lh->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lh->e = e;
	lh->u.h.data = lh;
	lh->next = e->handles;
	e->handles = lh;
	ud = lua_newuserdata(L, sizeof(*ud));
	*ud = lh;
	luaL_getmetatable(L, HANDLE_MT);
	lua_setmetatable(L, -2);
	lua_pushvalue(L, -1);
	lh->ud_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	lh->ud = ud;
	return lh;
}

/* Calls the handle's Lua function with nargs arguments already pushed. */
static void handle_call(lua_handle_t *lh, int nargs, const char *what)
{
	lua_State *L = lh->e->L;

	lua_rawgeti(L, LUA_REGISTRYINDEX, lh->ref);
	lua_insert(L, -1 - nargs);
	mm_lua_call(L, nargs, 0, what);
}

static void on_lua_timer(uv_timer_t *t)
{
	lua_handle_t *lh = t->data;

	handle_call(lh, 0, "timer callback");
}

/* e:timer(ms, repeat_ms, fn) -> handle; repeat_ms 0 = once. */
int mm_lua_engine_timer(lua_State *L)
{
	lua_engine_t *e = check_engine(L);
	uint64_t ms = (uint64_t)luaL_checknumber(L, 2), rep = (uint64_t)luaL_checknumber(L, 3);
	lua_handle_t *lh = handle_new(L, e, 4);

	uv_timer_init(e->loop, &lh->u.timer);
	uv_timer_start(&lh->u.timer, on_lua_timer, ms, rep);
	return 1;
}

static void on_lua_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
	lua_handle_t *lh = h->data;
	lua_State *L = lh->e->L;

	lua_pushstring(L, filename ? filename : "");
	lua_pushinteger(L, status);
	handle_call(lh, 2, "file watch callback");
}

/* e:watch(dir, fn(filename, status)) -> handle (inotify on a directory, so
 * editors' write-then-rename saves are seen too). */
int mm_lua_engine_watch(lua_State *L)
{
	lua_engine_t *e = check_engine(L);
	const char *dir = luaL_checkstring(L, 2);
	lua_handle_t *lh = handle_new(L, e, 3);
	int rc;

	uv_fs_event_init(e->loop, &lh->u.fs);
	rc = uv_fs_event_start(&lh->u.fs, on_lua_fs_event, dir, 0);
	if (rc) {
		handle_close(lh);
		return mm_lua_push_fail(L, MM_EIO, uv_strerror(rc));
	}
	return 1;
}

static void on_lua_signal(uv_signal_t *h, int signum)
{
	lua_handle_t *lh = h->data;

	lua_pushinteger(lh->e->L, signum);
	handle_call(lh, 1, "signal callback");
}

/* e:signal("hup", fn(signum)) -> handle */
int mm_lua_engine_signal(lua_State *L)
{
	static const char *const names[] = {"hup", "usr1", "usr2", NULL};
	static const int nums[] = {SIGHUP, SIGUSR1, SIGUSR2};
	lua_engine_t *e = check_engine(L);
	int which = luaL_checkoption(L, 2, NULL, names);
	lua_handle_t *lh = handle_new(L, e, 3);

	uv_signal_init(e->loop, &lh->u.sig);
	uv_signal_start(&lh->u.sig, on_lua_signal, nums[which]);
	return 1;
}

static int l_handle_close(lua_State *L)
{
	lua_handle_t **ud = luaL_checkudata(L, 1, HANDLE_MT);

	if (*ud)
		handle_close(*ud);
	return 0;
}

void mm_lua_handle_register(lua_State *L)
{
	static const luaL_Reg handle_methods[] = {
		{"close", l_handle_close},
		{NULL, NULL},
	};

	luaL_newmetatable(L, HANDLE_MT);
	lua_newtable(L);
	luaL_register(L, NULL, handle_methods);
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
}
