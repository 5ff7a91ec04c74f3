/*
 * stats_lua.c: e:stats() of a murmur.core engine (see core_lua_impl.h), the
 * counters `murmur run`'s status, progress and tests read: the engine's
 * batches and flushes, loop lag, CPU and memory, the store's operations and
 * capabilities, the instrumentation names of the store contract, and each
 * pipeline's and source's counters (a source's own status as JSON).
 * mm_lua_push_cache_stats is shared with store_lua.c's stores.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <sys/resource.h>

#include "../core/engine.h"
#include "core_lua.h"
#include "core_lua_impl.h"
#include "funnel.h"

/* Sets the per-command counters of a cache (cache_get, ...) into the table
 * on top; nothing for a store without MM_STORE_CAP_CACHE. */
void mm_lua_push_cache_stats(lua_State *L, const mm_store_t *st)
{
	mm_store_op_stats_t os[32];
	size_t n = mm_store_op_stats(st, os, 32);

	for (size_t i = 0; i < n && i < 32; i++) {
		lua_newtable(L);
		MM_LUA_SET_NUM("ops", os[i].ops);
		MM_LUA_SET_NUM("errors", os[i].errors);
		MM_LUA_SET_NUM("ms_total", os[i].ns_total / 1e6);
		MM_LUA_SET_NUM("ms_max", os[i].ns_max / 1e6);
		lua_setfield(L, -2, os[i].name);
	}
}

/* Sets t.caps = {"atomic", ...}: the store's capability set by name. */
static void push_store_caps(lua_State *L, const mm_store_t *st)
{
	unsigned caps = mm_store_caps(st);
	int n = 0;

	lua_newtable(L);
	for (unsigned bit = 1; bit != 0 && bit <= caps; bit <<= 1)
		if ((caps & bit) && mm_store_cap_name(bit) != NULL) {
			lua_pushstring(L, mm_store_cap_name(bit));
			lua_rawseti(L, -2, ++n);
		}
	lua_setfield(L, -2, "caps");
}

struct fenced_list {
	lua_State *L;
	int n;
};

static void push_fenced_one(void *ud, const char *source, int own)
{
	struct fenced_list *fl = ud;

	if (own)
		return;
	lua_pushstring(fl->L, source);
	lua_rawseti(fl->L, -2, ++fl->n);
}

/* Sets t.positions_fenced = {"<position key>", ...} when a write of a
 * position this worker took was refused by the zombie fence (another
 * worker took it since): what a fenced worker's last status shows. */
static void push_store_fenced(lua_State *L, const mm_store_t *st)
{
	struct fenced_list fl = {L, 0};

	lua_newtable(L);
	mm_store_positions_taken(st, push_fenced_one, &fl);
	if (fl.n > 0)
		lua_setfield(L, -2, "positions_fenced");
	else
		lua_pop(L, 1);
}

int mm_lua_engine_stats(lua_State *L)
{
	lua_engine_t *e = check_engine(L);
	mm_engine_t *ctx = e->ctx;
	const char *ops[MM_STORE_NOPS] = {"apply", "get_many", "position", "claim", "renew",
					  "meta"};

	lua_newtable(L);
	MM_LUA_SET_NUM("batches", ctx->stats.batches);
	MM_LUA_SET_NUM("records", ctx->stats.records);
	MM_LUA_SET_NUM("flushes", ctx->stats.flushes);
	MM_LUA_SET_NUM("flush_failures", ctx->stats.flush_failures);
	MM_LUA_SET_NUM("store_writes", ctx->stats.store_writes);
	MM_LUA_SET_NUM("pauses", ctx->stats.pauses);
	MM_LUA_SET_NUM("purged", ctx->stats.purged);
	MM_LUA_SET_NUM("flush_ms_max", ctx->stats.flush_ns_max / 1e6);
	MM_LUA_SET_NUM("flush_ms_total", ctx->stats.flush_ns_total / 1e6);
	/* How late the loop ran its callbacks (looplag.h): the largest lag
	 * since start and over the recent window. */
	MM_LUA_SET_NUM("loop_lag_ms_max", mm_loop_lag_max_ns(&ctx->lag) / 1e6);
	MM_LUA_SET_NUM("loop_lag_ms_recent", mm_loop_lag_recent_ns(&ctx->lag, uv_hrtime()) / 1e6);
	/* The same without the time the loop thread waited for a CPU: what
	 * callbacks and blocking calls cost the loop (looplag.h). */
	MM_LUA_SET_NUM("loop_block_ms_max", mm_loop_block_max_ns(&ctx->lag) / 1e6);
	MM_LUA_SET_NUM("loop_block_ms_recent", mm_loop_block_recent_ns(&ctx->lag, uv_hrtime()) / 1e6);
	MM_LUA_SET_NUM("lua_errors", mm_lua_errors());
	{
		struct rusage ru;

		getrusage(RUSAGE_SELF, &ru);
		MM_LUA_SET_NUM("max_rss_kb", ru.ru_maxrss);
		MM_LUA_SET_NUM("cpu_user_s", ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6);
		MM_LUA_SET_NUM("cpu_sys_s", ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
	}
	lua_newtable(L);
	for (int i = 0; i < MM_STORE_NOPS; i++) {
		lua_newtable(L);
		MM_LUA_SET_NUM("ops", ctx->st->stats.ops[i]);
		MM_LUA_SET_NUM("errors", ctx->st->stats.errors[i]);
		MM_LUA_SET_NUM("ms_total", ctx->st->stats.ns_total[i] / 1e6);
		MM_LUA_SET_NUM("ms_max", ctx->st->stats.ns_max[i] / 1e6);
		lua_setfield(L, -2, ops[i]);
	}
	push_store_caps(L, ctx->st);
	push_store_fenced(L, ctx->st);
	lua_setfield(L, -2, "store");
	/* The contract's instrumentation names: store operations by pipeline
	 * (one merge_update per flushed delta, timed as part of its flush) and,
	 * with a cache, every cache_* command kind. */
	lua_newtable(L);
	for (int i = 0; i < ctx->npipes; i++) {
		mm_pipeline_t *p = ctx->pipes[i];
		char name[160];

		snprintf(name, sizeof(name), "%s:store_merge_update", p->cfg.name);
		lua_newtable(L);
		MM_LUA_SET_NUM("ops", p->stats.deltas_flushed);
		MM_LUA_SET_NUM("errors", p->stats.rejected[MM_REJ_MERGE]);
		MM_LUA_SET_NUM("flushes_ms_total", ctx->st->stats.ns_total[MM_STORE_OP_APPLY] / 1e6);
		lua_setfield(L, -2, name);
		snprintf(name, sizeof(name), "%s:store_claim", p->cfg.name);
		lua_newtable(L);
		MM_LUA_SET_NUM("ops", p->stats.claims);
		MM_LUA_SET_NUM("duplicates", p->stats.claim_duplicates);
		MM_LUA_SET_NUM("busy", p->stats.claim_busy);
		MM_LUA_SET_NUM("deferred", p->stats.claim_deferred);
		MM_LUA_SET_NUM("stolen", p->stats.claim_stolen);
		MM_LUA_SET_NUM("renewals", p->stats.claim_renewals);
		MM_LUA_SET_NUM("lost", p->stats.claim_lost);
		lua_setfield(L, -2, name);
	}
	mm_lua_push_cache_stats(L, ctx->st);
	lua_setfield(L, -2, "instrumentation");
	lua_newtable(L);
	for (int i = 0; i < ctx->npipes; i++) {
		mm_pipeline_t *p = ctx->pipes[i];

		lua_newtable(L);
		MM_LUA_SET_NUM("records", p->stats.records);
		MM_LUA_SET_NUM("accepted", p->stats.accepted);
		MM_LUA_SET_NUM("duplicates", p->stats.duplicates);
		MM_LUA_SET_NUM("dedup_skipped", p->stats.dedup_skipped);
		MM_LUA_SET_NUM("held", p->stats.held);
		MM_LUA_SET_NUM("deltas_flushed", p->stats.deltas_flushed);
		MM_LUA_SET_NUM("dead_letters", p->stats.dead_letters);
		MM_LUA_SET_NUM("dead_letter_errors", p->stats.dead_letter_errors);
		lua_newtable(L);
		for (int r = 0; r < MM_REJ__COUNT; r++)
			MM_LUA_SET_NUM(mm_reject_reason_name(r), p->stats.rejected[r]);
		lua_setfield(L, -2, "rejected");
		lua_setfield(L, -2, p->cfg.name);
	}
	lua_setfield(L, -2, "pipelines");
	lua_newtable(L);
	for (int i = 0; i < ctx->nsrcs; i++) {
		mm_engine_source_t *es = &ctx->srcs[i];

		lua_newtable(L);
		MM_LUA_SET_NUM("records", es->src ? es->src->records : es->records);
		MM_LUA_SET_NUM("bytes", es->src ? es->src->bytes : es->bytes);
		lua_pushboolean(L, es->src == NULL);
		lua_setfield(L, -2, "closed");
		if (es->src && es->src->vt->status) {
			mm_buf_t b = {0};

			if (es->src->vt->status(es->src, &b) == 0) {
				lua_pushlstring(L, (const char *)b.p, b.len);
				lua_setfield(L, -2, "status_json");
			}
			mm_buf_free(&b);
		}
		lua_setfield(L, -2, es->src ? es->src->id : es->id);
	}
	lua_setfield(L, -2, "sources");
	return 1;
}

