/*
 * store_lua.c: stores opened for queries (`core.store_open`), the
 * `murmur.store` userdata of murmur.core. Each store gets a private event
 * loop that its methods run until their read completes, so queries block
 * the caller (the CLI, scripts, specs) and never touch a running engine's
 * loop.
 *
 * Failures are returned as `nil, "ENAME: message", "ENAME"`; raising is kept
 * for programmer errors (wrong argument types).
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/error.h"
#include "../store/store.h"
#include "core_lua.h"

#define STORE_MT "murmur.store"

/* Pushes the bytes a synchronous store read produced: the string, nil when
 * absent (MM_ENOTFOUND), or the failure triple. Frees b. */
static int push_store_bytes(lua_State *L, int rc, mm_buf_t *b)
{
	if (rc) {
		mm_buf_free(b);
		if (rc != MM_ENOTFOUND)
			return mm_lua_push_diag(L, rc);
		lua_pushnil(L);
		return 1;
	}
	lua_pushlstring(L, (const char *)b->p, b->len);
	mm_buf_free(b);
	return 1;
}

typedef struct lua_store {
	mm_store_t *st;
	uv_loop_t loop;
	int loop_ok;
} lua_store_t;

static lua_store_t *check_store(lua_State *L)
{
	lua_store_t *s = luaL_checkudata(L, 1, STORE_MT);

	if (s->st == NULL)
		luaL_error(L, "store is closed");
	return s;
}

static int l_store_open(lua_State *L)
{
	const char *backend = luaL_checkstring(L, 1);
	int ro = lua_toboolean(L, 3);
	mm_kv_t kv[32];
	size_t nkv;
	lua_store_t *s;
	int rc;

	mm_lua_read_kv(L, 2, kv, 32, &nkv);
	s = lua_newuserdata(L, sizeof(*s));
	memset(s, 0, sizeof(*s));
	luaL_getmetatable(L, STORE_MT);
	lua_setmetatable(L, -2);
	if (uv_loop_init(&s->loop) != 0)
		return mm_lua_push_fail(L, MM_ENOMEM, "cannot create the event loop");
	s->loop_ok = 1;
	rc = mm_store_open(backend, &s->loop, kv, nkv, ro, &s->st);
	if (rc == 0)
		rc = mm_store_start_wait(s->st);
	if (rc)
		return mm_lua_push_diag(L, rc);
	return 1;
}

struct get_wait {
	int done, status;
	char detail[512];
};

static void on_get_done(void *arg, int status, const char *detail)
{
	struct get_wait *w = arg;

	w->done = 1;
	w->status = status;
	snprintf(w->detail, sizeof(w->detail), "%s", detail ? detail : "");
}

/* st:get(ns_name, spec, entity, {bucket, ...}) -> merged encoding or nil, nfound */
static int l_store_get(lua_State *L)
{
	lua_store_t *s = check_store(L);
	mm_ns_t ns;
	mm_monoid_t m;
	size_t elen, n;
	const char *entity;
	mm_key_t *keys = NULL;
	unsigned char *states = NULL, acc[MM_STATE_MAX] __attribute__((aligned(16)));
	uint8_t *found = NULL;
	struct get_wait w = {0};
	mm_buf_t out = {0};
	int rc, nfound = 0, nret;

	ns.name = luaL_checkstring(L, 2);
	rc = mm_lua_read_monoid(L, 3, &m);
	if (rc)
		return mm_lua_push_diag(L, rc);
	ns.m = &m;
	entity = luaL_checklstring(L, 4, &elen);
	luaL_checktype(L, 5, LUA_TTABLE);
	n = lua_objlen(L, 5);
	if (n == 0)
		return luaL_error(L, "get: no buckets");
	keys = calloc(n, sizeof(*keys));
	states = aligned_alloc(16, n * MM_STATE_MAX);
	found = calloc(n, 1);
	if (!keys || !states || !found) {
		nret = mm_lua_push_fail(L, MM_ENOMEM, "get: out of memory");
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, 5, (int)i + 1);
		keys[i] = (mm_key_t){entity, elen, (int64_t)luaL_checknumber(L, -1)};
		lua_pop(L, 1);
		m.vt->init(&m, states + i * MM_STATE_MAX);
	}
	rc = mm_store_get_many(s->st, &ns, keys, n, states, found, on_get_done, &w);
	while (rc == 0 && !w.done)
		uv_run(&s->loop, UV_RUN_ONCE);
	if (rc == 0 && w.status) {
		nret = mm_lua_push_fail(L, w.status, w.detail);
		goto done_states;
	}
	if (rc) {
		nret = mm_lua_push_diag(L, rc);
		goto done_states;
	}
	m.vt->init(&m, acc);
	for (size_t i = 0; i < n && rc == 0; i++)
		if (found[i]) {
			nfound++;
			rc = m.vt->merge(&m, acc, states + i * MM_STATE_MAX);
		}
	if (rc == 0)
		rc = m.vt->encode(&m, acc, &out);
	m.vt->destroy(&m, acc);
	if (rc) {
		nret = mm_lua_push_diag(L, rc);
		goto done_states;
	}
	if (nfound)
		lua_pushlstring(L, (const char *)out.p, out.len);
	else
		lua_pushnil(L);
	lua_pushinteger(L, nfound);
	nret = 2;
done_states:
	for (size_t i = 0; i < n; i++)
		m.vt->destroy(&m, states + i * MM_STATE_MAX);
done:
	mm_buf_free(&out);
	free(keys);
	free(states);
	free(found);
	return nret;
}

/*
 * st:count(ns_name, spec, entity, {bucket, ...}) -> cardinality, nonempty
 * when the store counts hll buckets natively (MM_STORE_CAP_COUNT_HLL: a
 * Valkey cache holding every bucket answers with one PFCOUNT; nonempty =
 * buckets with data), else nil: the caller then reads with st:get, which
 * also fills a cache.
 */
static int l_store_count(lua_State *L)
{
	lua_store_t *s = check_store(L);
	uint64_t count = 0, nonempty = 0;
	struct get_wait w = {0};
	mm_key_t *keys;
	mm_monoid_t m;
	mm_ns_t ns;
	const char *entity;
	size_t elen, n;
	int rc, cached = 0;

	ns.name = luaL_checkstring(L, 2);
	if ((rc = mm_lua_read_monoid(L, 3, &m)))
		return mm_lua_push_diag(L, rc);
	ns.m = &m;
	entity = luaL_checklstring(L, 4, &elen);
	luaL_checktype(L, 5, LUA_TTABLE);
	n = lua_objlen(L, 5);
	if (n == 0 || !(mm_store_caps(s->st) & MM_STORE_CAP_COUNT_HLL) ||
	    m.vt != &mm_monoid_hll_vtable) {
		lua_pushnil(L);
		return 1;
	}
	keys = calloc(n, sizeof(*keys));
	if (keys == NULL)
		return mm_lua_push_fail(L, MM_ENOMEM, "count: out of memory");
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, 5, (int)i + 1);
		keys[i] = (mm_key_t){entity, elen, (int64_t)luaL_checknumber(L, -1)};
		lua_pop(L, 1);
	}
	rc = mm_store_count_hll(s->st, &ns, keys, n, &count, &nonempty, &cached, on_get_done, &w);
	free(keys);
	while (rc == 0 && !w.done)
		uv_run(&s->loop, UV_RUN_ONCE);
	if (rc)
		return mm_lua_push_diag(L, rc);
	if (w.status)
		return mm_lua_push_fail(L, w.status, w.detail);
	if (!cached) {
		lua_pushnil(L);
		return 1;
	}
	lua_pushnumber(L, (lua_Number)count);
	lua_pushnumber(L, (lua_Number)nonempty);
	return 2;
}

static int l_store_meta(lua_State *L)
{
	lua_store_t *s = check_store(L);
	mm_buf_t b = {0};
	int rc = mm_store_get_meta_wait(s->st, luaL_checkstring(L, 2), &b);

	return push_store_bytes(L, rc, &b);
}

static int l_store_list(lua_State *L)
{
	lua_store_t *s = check_store(L);
	mm_buf_t b = {0};
	int rc = mm_store_list_meta_wait(s->st, &b), n = 0;

	if (rc)
		return mm_lua_push_diag(L, rc);
	lua_newtable(L);
	for (size_t i = 0; i < b.len;) {
		size_t l = strnlen((const char *)b.p + i, b.len - i);

		lua_pushlstring(L, (const char *)b.p + i, l);
		lua_rawseti(L, -2, ++n);
		i += l + 1;
	}
	mm_buf_free(&b);
	return 1;
}

static int l_store_position(lua_State *L)
{
	lua_store_t *s = check_store(L);
	mm_buf_t b = {0};
	int rc = mm_store_get_position_wait(s->st, luaL_checkstring(L, 2), &b);

	return push_store_bytes(L, rc, &b);
}

/* st:stats() -> { get_many = {ops, errors, ms_total, ms_max}, cache_* = ... } */
static int l_store_stats(lua_State *L)
{
	lua_store_t *s = check_store(L);
	const mm_store_stats_t *ss = &s->st->stats;

	lua_newtable(L);
	lua_newtable(L);
	MM_LUA_SET_NUM("ops", ss->ops[MM_STORE_OP_GET_MANY]);
	MM_LUA_SET_NUM("errors", ss->errors[MM_STORE_OP_GET_MANY]);
	MM_LUA_SET_NUM("ms_total", ss->ns_total[MM_STORE_OP_GET_MANY] / 1e6);
	MM_LUA_SET_NUM("ms_max", ss->ns_max[MM_STORE_OP_GET_MANY] / 1e6);
	lua_setfield(L, -2, "get_many");
	mm_lua_push_cache_stats(L, s->st);
	return 1;
}

static int l_store_close(lua_State *L)
{
	lua_store_t *s = luaL_checkudata(L, 1, STORE_MT);

	if (s->st) {
		mm_store_close(s->st);
		s->st = NULL;
	}
	if (s->loop_ok) {
		uv_run(&s->loop, UV_RUN_DEFAULT);
		uv_loop_close(&s->loop);
		s->loop_ok = 0;
	}
	return 0;
}

/* Adds core.store_open and the murmur.store class to the module on top. */
void mm_lua_store_register(lua_State *L)
{
	static const luaL_Reg store_methods[] = {
		{"get", l_store_get},
		{"count", l_store_count},
		{"meta", l_store_meta},
		{"list", l_store_list},
		{"position", l_store_position},
		{"stats", l_store_stats},
		{"close", l_store_close},
		{NULL, NULL},
	};

	mm_lua_new_class(L, STORE_MT, store_methods, l_store_close);
	lua_pushcfunction(L, l_store_open);
	lua_setfield(L, -2, "store_open");
}
