-- murmur.cdef: every FFI declaration murmur's Lua side uses, in one place.
--
-- It mirrors the FFI section of engine/core/pipeline.h (the mm_pipe_*
-- functions the Lua path calls once per record) and the two scanner calls of
-- engine/codec/json.h that fill a field plan (fieldplan.lua). The murmur binary exports
-- these symbols (it is linked with -rdynamic), so they resolve through ffi.C.
-- ABI_VERSION must change whenever a declaration below changes; the engine
-- reports its own through murmur.core.abi_version and load fails on a mismatch
-- instead of calling a function with the wrong signature.
local ffi = require("ffi")
local core = require("murmur.core")

local ABI_VERSION = 4

if core.abi_version ~= ABI_VERSION then
  error(("murmur.cdef: ABI mismatch: Lua side %d, engine %s"):format(ABI_VERSION,
    tostring(core.abi_version)), 2)
end

ffi.cdef [[
typedef struct mm_pipeline mm_pipeline_t;

int mm_pipe_record(mm_pipeline_t *p, int i, const char **data, uint32_t *len, uint32_t *flags,
                   int64_t *ts_ms);
int mm_pipe_seen(mm_pipeline_t *p, const char *id, size_t len);
int mm_pipe_add(mm_pipeline_t *p, int i, const char *key, size_t klen, int64_t ts_ms, int vtype,
                double num, const char *s, size_t slen);
int mm_pipe_stage(mm_pipeline_t *p, int i, const char *key, size_t klen, int64_t ts_ms,
                  int vtype, double num, const char *s, size_t slen);
int mm_pipe_unstage(mm_pipeline_t *p);
int mm_pipe_accept(mm_pipeline_t *p, int i, const char *id, size_t len);
void mm_pipe_reject(mm_pipeline_t *p, int i, int reason, int code, const char *detail);
void mm_pipe_duplicate(mm_pipeline_t *p, int i);
const char *mm_pipe_last_error(void);

/* engine/codec/json.h: a record's members for a field plan. */
typedef struct mm_json_field {
  const char *name;
  size_t name_len;
  int type;
  const char *p;
  size_t len;
  int escaped;
} mm_json_field_t;
typedef struct mm_json_plan_name {
  uint64_t head;
  uint64_t tail;
  uint64_t mask;
  size_t len;
} mm_json_plan_name_t;
typedef struct mm_json_plan {
  uint64_t lens;
  int nfields;
  int same_names;
  int wide;
  mm_json_plan_name_t names[24];
} mm_json_plan_t;
void mm_json_plan(mm_json_plan_t *plan, const mm_json_field_t *fields, int nfields);
int mm_json_scan_flat_planned(const mm_json_plan_t *plan, const char *p, size_t n,
                              mm_json_field_t *fields);
int mm_json_number(const char *p, size_t len, int *is_int, int64_t *i, double *d);

/* engine/lua/alloc.h: the Lua heap's counters, read in place around each
   record on the Lua path (volatile: the allocator changes them under a trace). */
typedef struct mm_lua_mem {
  volatile uint64_t used;
  volatile uint64_t limit;
  volatile uint64_t refusals;
} mm_lua_mem_t;
const mm_lua_mem_t *mm_lua_mem(void);
]]

return {
  ABI_VERSION = ABI_VERSION,
  C = ffi.C,
  -- enum mm_value_type
  VAL_NONE = 0, VAL_INT = 1, VAL_DOUBLE = 2, VAL_STRING = 3,
  -- enum mm_reject_reason
  REJ_JSON = 0, REJ_UTF8 = 1, REJ_NOTOBJ = 2, REJ_MISSING = 3, REJ_TYPE = 4,
  REJ_TOOBIG = 5, REJ_RANGE = 6, REJ_LUA = 7, REJ_POISON = 8, REJ_MERGE = 9, REJ_MEMORY = 10,
}
