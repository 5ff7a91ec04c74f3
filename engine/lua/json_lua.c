/*
 * json_lua.c: the JSON codec seen from Lua (json_decode, json_encode).
 *
 * Decoding drives mm_json_parse_buf with a visitor that builds the value on
 * the Lua stack: each open container holds its table and, inside objects, the
 * pending key; a finished value is stored into the container below it. The
 * depth limit of the scanner (64) bounds the stack to a few slots per level,
 * checked with lua_checkstack as containers open.
 *
 * Both directions need C memory (unescaped strings, the output text), and
 * Lua may raise out of any API call (out of memory), unwinding through our C
 * frames. So that nothing leaks, the buffers live in a full userdata with a
 * __gc metamethod. One such scratch is kept in the registry between calls;
 * a call takes it out (leaving nil) and puts it back when done. A call that
 * Lua aborts simply never puts it back and the collector frees it, and a
 * nested call (a __gc finalizer running json_decode mid-decode) finds the
 * slot empty and makes its own.
 *
 * Encoding recurses on the C stack, at most MM_JSON_MAX_DEPTH deep, and
 * remembers the tables on the current path to report cycles precisely.
 */
#include "json_lua.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../codec/json.h"
#include "../lib/buf.h"
#include "../lib/error.h"

#define SCRATCH_MT "murmur.json.scratch_mt"

/* The upvalues of json_decode and json_encode (mm_lua_json_register): the
 * array metatable, and the idle scratch buffer (nil while a call holds it).
 * Upvalues rather than registry fields: a registry lookup hashes its key
 * string on every call, and decode runs once per record on the Lua path. */
#define UV_ARRAY_MT lua_upvalueindex(1)
#define UV_SCRATCH lua_upvalueindex(2)

/* A scratch that grew past this is freed rather than kept for the next call,
 * so one huge document does not pin its memory for the life of the state. */
#define SCRATCH_KEEP (1u << 20)

static int fail(lua_State *L, int rc)
{
	lua_pushnil(L);
	lua_pushfstring(L, "%s: %s", mm_err_name(rc), mm_diag_msg());
	lua_pushstring(L, mm_err_name(rc));
	return 3;
}

static int scratch_gc(lua_State *L)
{
	mm_buf_free(lua_touserdata(L, 1));
	return 0;
}

/* Pushes the idle scratch (or a new one) and returns it, emptied. */
static mm_buf_t *scratch_take(lua_State *L)
{
	mm_buf_t *b;

	lua_pushvalue(L, UV_SCRATCH);
	if (lua_isuserdata(L, -1)) {
		lua_pushnil(L);
		lua_replace(L, UV_SCRATCH);
		b = lua_touserdata(L, -1);
		b->len = 0;
		return b;
	}
	lua_pop(L, 1);
	b = lua_newuserdata(L, sizeof(*b));
	memset(b, 0, sizeof(*b));
	if (luaL_newmetatable(L, SCRATCH_MT)) {
		lua_pushcfunction(L, scratch_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_setmetatable(L, -2);
	return b;
}

/* Makes the scratch at idx the idle one again. */
static void scratch_give(lua_State *L, int idx, mm_buf_t *b)
{
	if (b->cap > SCRATCH_KEEP)
		mm_buf_free(b);
	lua_pushvalue(L, idx);
	lua_replace(L, UV_SCRATCH);
}

/* Pushes the array metatable, creating it on first use. */
static void push_array_mt(lua_State *L)
{
	if (luaL_newmetatable(L, MM_LUA_JSON_ARRAY_MT)) {
		lua_pushliteral(L, "json array");
		lua_setfield(L, -2, "__name");
	}
}

void mm_lua_json_push_null(lua_State *L)
{
	lua_pushlightuserdata(L, NULL);
}

/* Decoding. */

struct dec {
	lua_State *L;
	const char *doc; /* for error offsets */
	int mt;          /* stack index of the array metatable */
	int depth;
	/* Per open container: -1 for an object, else the array's length so far. */
	int len[MM_JSON_MAX_DEPTH + 1];
};

/* Stores the value at the top into the container below it (tables of the
 * top level stay where they are: they are the result). */
static int dec_store(struct dec *d)
{
	int *n = &d->len[d->depth];

	if (d->depth == 0)
		return 0;
	if (*n < 0)
		lua_rawset(d->L, -3); /* container, key, value */
	else
		lua_rawseti(d->L, -2, ++*n);
	return 0;
}

static int dec_null(void *ud)
{
	struct dec *d = ud;

	mm_lua_json_push_null(d->L);
	return dec_store(d);
}

static int dec_bool(void *ud, int v)
{
	struct dec *d = ud;

	lua_pushboolean(d->L, v);
	return dec_store(d);
}

/*
 * Integers beyond +-2^53 have no exact Lua number: they decode to LuaJIT
 * int64_t cdata, so that keys and ids keep every digit (9007199254740993 is
 * not 9007199254740992). The C API cannot make cdata, so two small Lua
 * functions do it (and print it back for the encoder), made once and kept in
 * the registry. Pushes the function registered under which (1 = make,
 * 2 = text).
 */
#define INT64_KEY "murmur.json.int64"
static void push_int64_fn(lua_State *L, int which)
{
	lua_getfield(L, LUA_REGISTRYINDEX, INT64_KEY);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		if (luaL_loadstring(L, "local ffi = require('ffi') local t = ffi.typeof('int64_t') "
				       "return { function(hi, lo) return t(hi) * 4294967296LL + lo end, "
				       "function(v) if ffi.istype('int64_t', v) or ffi.istype('uint64_t', v) "
				       "then return (tostring(v):gsub('U?LL$', '')) end end }") != 0)
			lua_error(L);
		lua_call(L, 0, 1);
		lua_pushvalue(L, -1);
		lua_setfield(L, LUA_REGISTRYINDEX, INT64_KEY);
	}
	lua_rawgeti(L, -1, which);
	lua_remove(L, -2);
}

static void push_int64(lua_State *L, int64_t i)
{
	luaL_checkstack(L, 4, "json: decoding an int64");
	push_int64_fn(L, 1);
	lua_pushnumber(L, (lua_Number)(int32_t)(uint32_t)((uint64_t)i >> 32));
	lua_pushnumber(L, (lua_Number)(uint32_t)i);
	lua_call(L, 2, 1);
}

#define EXACT_INT 9007199254740992LL /* 2^53 */

static int dec_number(void *ud, const char *raw, size_t len)
{
	struct dec *d = ud;
	int is_int, rc;
	int64_t i;
	double v;

	rc = mm_json_number(raw, len, &is_int, &i, &v);
	if (rc == MM_ERANGE)
		return mm_diag_set(MM_ERANGE, "json: number %.*s at offset %zu overflows a double",
				   (int)(len < 32 ? len : 32), raw, (size_t)(raw - d->doc));
	if (rc)
		return rc;
	if (is_int && (i > EXACT_INT || i < -EXACT_INT))
		push_int64(d->L, i);
	else
		lua_pushnumber(d->L, v);
	return dec_store(d);
}

static int dec_string(void *ud, const char *s, size_t len)
{
	struct dec *d = ud;

	lua_pushlstring(d->L, s, len);
	return dec_store(d);
}

/* Duplicate member names are refused, as the C fast path refuses a duplicated
 * field it reads: otherwise one record could mean two things depending on
 * whether a pipeline reads it in C or in Lua. */
static int dec_key(void *ud, const char *s, size_t len)
{
	struct dec *d = ud;

	lua_pushlstring(d->L, s, len);
	lua_pushvalue(d->L, -1);
	lua_rawget(d->L, -3);
	if (!lua_isnil(d->L, -1)) {
		lua_pop(d->L, 1);
		return mm_diag_set(MM_EJSON, "json: duplicate key \"%.*s\"", (int)(len < 64 ? len : 64), s);
	}
	lua_pop(d->L, 1);
	return 0;
}

static int dec_begin(void *ud, int is_object)
{
	struct dec *d = ud;

	/* The table, a key and a value, plus room for the API's own needs. */
	if (!lua_checkstack(d->L, 4))
		return mm_diag_set(MM_ENOMEM, "json: Lua stack exhausted at depth %d", d->depth);
	/* Room for a few members up front saves the rehashes (0, 1, 2, 4)
	 * that small event objects would otherwise go through. */
	if (is_object)
		lua_createtable(d->L, 0, 4);
	else
		lua_createtable(d->L, 4, 0);
	if (!is_object) {
		lua_pushvalue(d->L, d->mt);
		lua_setmetatable(d->L, -2);
	}
	d->len[++d->depth] = is_object ? -1 : 0;
	return 0;
}

static int dec_end(void *ud, int is_object)
{
	struct dec *d = ud;

	d->depth--;
	return dec_store(d);
}

static const mm_json_visitor_t dec_visitor = {
	.on_null = dec_null,
	.on_bool = dec_bool,
	.on_number = dec_number,
	.on_string = dec_string,
	.on_key = dec_key,
	.on_begin = dec_begin,
	.on_end = dec_end,
};

int mm_lua_json_decode(lua_State *L)
{
	struct dec d;
	mm_buf_t *scratch;
	size_t n;
	int rc;

	d.doc = luaL_checklstring(L, 1, &n);
	lua_settop(L, 1);
	scratch = scratch_take(L);     /* 2 */
	lua_pushvalue(L, UV_ARRAY_MT); /* 3 */
	d.L = L;
	d.mt = 3;
	d.depth = 0;
	rc = mm_json_parse_buf(d.doc, n, &dec_visitor, &d, scratch);
	scratch_give(L, 2, scratch);
	if (rc) {
		lua_settop(L, 0);
		return fail(L, rc);
	}
	return 1;
}

/* Encoding. */

struct enc {
	lua_State *L;
	mm_buf_t *out;
	int mt; /* stack index of the array metatable */
	int depth;
	const void *path[MM_JSON_MAX_DEPTH]; /* tables being encoded, outermost first */
};

/* An object key, sortable in C. Number keys are formatted into num (and s
 * is left NULL: qsort moves the entries, so it could not point into one). */
struct enc_key {
	const char *s;
	size_t len;
	lua_Number n;
	int is_num;
	char num[32];
};

/* Objects with at most this many keys sort them in a C array on the stack
 * (ENC_SMALL * 64 bytes per nesting level, at most 64 levels). */
#define ENC_SMALL 8

static const char *key_text(const struct enc_key *k)
{
	return k->is_num ? k->num : k->s;
}

/*
 * Formats a finite number as JSON into buf (at least 32 bytes): integral
 * values below 2^63 exactly, others with 17 significant digits, which read
 * back to the same double. Returns the length, or -1 for NaN and infinities.
 */
static int fmt_number(lua_Number v, char *buf)
{
	int len, i;

	if (!isfinite(v))
		return -1;
	if (v == floor(v) && v >= -9223372036854775808.0 && v < 9223372036854775808.0) {
		if (v == 0 && signbit(v)) {
			memcpy(buf, "-0", 3);
			return 2;
		}
		return snprintf(buf, 32, "%lld", (long long)v);
	}
	len = snprintf(buf, 32, "%.17g", v);
	/* printf follows the current locale's decimal point (a comma in many
	 * locales, after os.setlocale); JSON's is always a dot. */
	for (i = 0; i < len; i++)
		if (buf[i] == ',')
			buf[i] = '.';
	return len;
}

static int enc_value(struct enc *e, int idx);

static int enc_key_cmp(const void *a, const void *b)
{
	const struct enc_key *x = a, *y = b;
	int c = memcmp(key_text(x), key_text(y), x->len < y->len ? x->len : y->len);

	if (c)
		return c;
	return (x->len > y->len) - (x->len < y->len);
}

static int enc_array(struct enc *e, int idx, lua_Number n)
{
	lua_State *L = e->L;
	int i, rc;

	if ((rc = mm_buf_append(e->out, "[", 1)) != 0)
		return rc;
	for (i = 1; i <= (int)n; i++) {
		if (i > 1 && (rc = mm_buf_append(e->out, ",", 1)) != 0)
			return rc;
		lua_rawgeti(L, idx, i);
		rc = lua_isnil(L, -1) ? mm_buf_append(e->out, "null", 4) : enc_value(e, lua_gettop(L));
		lua_pop(L, 1);
		if (rc)
			return rc;
	}
	return mm_buf_append(e->out, "]", 1);
}

static int enc_object(struct enc *e, int idx, size_t count)
{
	lua_State *L = e->L;
	struct enc_key small[ENC_SMALL], *keys = small;
	size_t i = 0;
	int rc, len;

	/* Small objects sort on the C stack; larger ones in a userdata, so
	 * that a raise cannot leak the array. Either way one slot is pushed. */
	if (count > ENC_SMALL)
		keys = lua_newuserdata(L, count * sizeof(*keys));
	else
		lua_pushnil(L);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		struct enc_key *k = &keys[i++];

		lua_pop(L, 1);
		k->is_num = lua_type(L, -1) == LUA_TNUMBER;
		if (k->is_num) {
			k->n = lua_tonumber(L, -1);
			if ((len = fmt_number(k->n, k->num)) < 0) {
				lua_pop(L, 2);
				return mm_diag_set(MM_ERANGE, "json: cannot encode a key of NaN or infinity");
			}
			k->s = NULL;
			k->len = (size_t)len;
		} else if (lua_type(L, -1) == LUA_TSTRING) {
			/* The string stays alive: the table holds it as a key. */
			k->s = lua_tolstring(L, -1, &k->len);
		} else {
			rc = mm_diag_set(MM_ETYPE, "json: cannot encode a key of type %s",
					 luaL_typename(L, -1));
			lua_pop(L, 2);
			return rc;
		}
	}
	qsort(keys, count, sizeof(*keys), enc_key_cmp);
	if ((rc = mm_buf_append(e->out, "{", 1)) != 0)
		goto out;
	for (i = 0; i < count; i++) {
		const struct enc_key *k = &keys[i];

		if (i > 0 && enc_key_cmp(k, k - 1) == 0) {
			rc = mm_diag_set(MM_EINVAL, "json: key \"%.*s\" is both a number and a string",
					 (int)k->len, key_text(k));
			goto out;
		}
		if ((i > 0 && (rc = mm_buf_append(e->out, ",", 1)) != 0) ||
		    (rc = mm_json_quote(key_text(k), k->len, e->out)) != 0 ||
		    (rc = mm_buf_append(e->out, ":", 1)) != 0)
			goto out;
		if (k->is_num)
			lua_pushnumber(L, k->n);
		else
			lua_pushlstring(L, k->s, k->len);
		lua_rawget(L, idx);
		rc = enc_value(e, lua_gettop(L));
		lua_pop(L, 1);
		if (rc)
			goto out;
	}
	rc = mm_buf_append(e->out, "}", 1);
out:
	lua_pop(L, 1); /* the keys' userdata or its placeholder */
	return rc;
}

static int enc_table(struct enc *e, int idx)
{
	lua_State *L = e->L;
	const void *self = lua_topointer(L, idx);
	lua_Number key, max = 0;
	size_t count = 0;
	int i, is_array = 0, all_index = 1, rc;

	for (i = 0; i < e->depth; i++)
		if (e->path[i] == self)
			return mm_diag_set(MM_EINVAL, "json: cannot encode a table that contains itself");
	if (e->depth == MM_JSON_MAX_DEPTH)
		return mm_diag_set(MM_EJSON, "json: nesting deeper than %d", MM_JSON_MAX_DEPTH);
	if (!lua_checkstack(L, 8))
		return mm_diag_set(MM_ENOMEM, "json: Lua stack exhausted");
	if (lua_getmetatable(L, idx)) {
		is_array = lua_rawequal(L, -1, e->mt);
		lua_pop(L, 1);
	}
	/* One pass to count the keys and see whether they are 1..n. */
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		count++;
		if (lua_type(L, -1) == LUA_TNUMBER && (key = lua_tonumber(L, -1)) >= 1 &&
		    key == floor(key) && key <= 2147483647.0) {
			if (key > max)
				max = key;
		} else {
			all_index = 0;
		}
	}
	if (is_array && !all_index)
		return mm_diag_set(MM_EINVAL, "json: an array has a key that is not an index");
	/* Holes in a marked array become nulls, within reason. */
	if (is_array && max > 2.0 * (double)count + 16)
		return mm_diag_set(MM_EINVAL, "json: array too sparse (%zu elements, last index %.0f)",
				   count, max);
	e->path[e->depth++] = self;
	if (is_array || (all_index && count > 0 && max == (lua_Number)count))
		rc = enc_array(e, idx, max);
	else
		rc = enc_object(e, idx, count);
	e->depth--;
	return rc;
}

static int enc_value(struct enc *e, int idx)
{
	lua_State *L = e->L;
	const char *s;
	char num[32];
	size_t len;
	int n;

	switch (lua_type(L, idx)) {
	case LUA_TNIL:
		return mm_buf_append(e->out, "null", 4);
	case LUA_TBOOLEAN:
		return lua_toboolean(L, idx) ? mm_buf_append(e->out, "true", 4)
					     : mm_buf_append(e->out, "false", 5);
	case LUA_TNUMBER:
		if ((n = fmt_number(lua_tonumber(L, idx), num)) < 0)
			return mm_diag_set(MM_ERANGE, "json: cannot encode NaN or infinity");
		return mm_buf_append(e->out, num, (size_t)n);
	case LUA_TSTRING:
		s = lua_tolstring(L, idx, &len);
		return mm_json_quote(s, len, e->out);
	case LUA_TTABLE:
		return enc_table(e, idx);
	case LUA_TLIGHTUSERDATA:
		if (lua_touserdata(L, idx) == NULL)
			return mm_buf_append(e->out, "null", 4);
		return mm_diag_set(MM_ETYPE, "json: cannot encode a value of type %s",
				   luaL_typename(L, idx));
	case 10: /* LuaJIT's cdata (LUA_TCDATA is not in lua.h): 64-bit integers */
		luaL_checkstack(L, 3, "json: encoding an int64");
		push_int64_fn(L, 2);
		lua_pushvalue(L, idx);
		lua_call(L, 1, 1);
		s = lua_tolstring(L, -1, &len);
		n = s != NULL ? mm_buf_append(e->out, s, len) : 1;
		lua_pop(L, 1);
		if (n != 1)
			return n;
		/* fall through */
	default:
		return mm_diag_set(MM_ETYPE, "json: cannot encode a value of type %s",
				   luaL_typename(L, idx));
	}
}

int mm_lua_json_encode(lua_State *L)
{
	struct enc e;
	mm_buf_t *out;
	int rc;

	luaL_checkany(L, 1);
	lua_settop(L, 1);
	out = scratch_take(L);         /* 2 */
	lua_pushvalue(L, UV_ARRAY_MT); /* 3 */
	e.L = L;
	e.out = out;
	e.mt = 3;
	e.depth = 0;
	rc = enc_value(&e, 1);
	if (rc == 0)
		lua_pushlstring(L, (const char *)out->p, out->len);
	scratch_give(L, 2, out);
	if (rc) {
		lua_settop(L, 0);
		return fail(L, rc);
	}
	return 1;
}

void mm_lua_json_register(lua_State *L)
{
	push_array_mt(L);
	lua_pushnil(L);
	lua_pushcclosure(L, mm_lua_json_decode, 2);
	lua_setfield(L, -2, "json_decode");
	push_array_mt(L);
	lua_pushnil(L);
	lua_pushcclosure(L, mm_lua_json_encode, 2);
	lua_setfield(L, -2, "json_encode");
	mm_lua_json_push_null(L);
	lua_setfield(L, -2, "null");
	push_array_mt(L);
	lua_setfield(L, -2, "array_mt");
}
