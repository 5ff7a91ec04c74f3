-- murmur.runtime: the Lua path, for pipelines whose key, value, time or id is
-- a Lua function.
--
-- The engine calls the handler returned by M.handler once per batch with the
-- batch size and the pipelines that need Lua. For each record the handler
-- pulls the bytes through the FFI, decodes the JSON into a table (in C), runs
-- the user's functions under pcall and hands the results back through the FFI
-- (a pipeline without ids one record late: M.handler says why).
-- A pipeline whose functions only read members by constant names has a field
-- plan (fieldplan.lua): its flat records fill one reused table with just
-- those members, found by the C scanner, instead of being decoded in full.
-- An error raised by a user function rejects that record (dead letter with the
-- script's file:line) and the batch goes on.
local ffi = require("ffi")
local core = require("murmur.core")
local cdef = require("murmur.cdef")
local fieldplan = require("murmur.fieldplan")

local C = cdef.C
local json_decode, null = core.json_decode, core.null
local E = core.errors

local M = {}

-- The Lua heap a worker may use (KiB; --lua-memory). The Lua allocator
-- enforces it inside any one call (engine/lua/alloc.h): an allocation past it
-- fails, the user function gets "not enough memory", and the record is
-- dead-lettered with reason lua_memory while the worker goes on. If the heap
-- is still nearly full once that record's garbage is collected (the script
-- keeps what it allocated, e.g. in an upvalue), no later record could run:
-- the worker exits with EXIT_MEMORY inside the record, so its supervisor
-- blames it and restarts from the last checkpoint (twice blamed = poison).
M.memory_limit_kb = 1024 * 1024
M.EXIT_MEMORY = 70
-- Above this share of the limit the heap is collected after a record, so
-- garbage does not make a later record's allocation fail; still above it
-- after a refused allocation and a full collection, the worker restarts.
M.MEMORY_HIGH = 0.8

local data_p = ffi.new("const char *[1]")
local len_p = ffi.new("uint32_t[1]")
local flags_p = ffi.new("uint32_t[1]")
local ts_p = ffi.new("int64_t[1]")
-- The Lua heap's counters (engine/lua/alloc.h), read in place: a call per
-- read would be three calls a record in the compiled loop.
local mem = C.mm_lua_mem()

local REASON_OF = {
  EJSON = cdef.REJ_JSON, EUTF8 = cdef.REJ_UTF8, ENOTOBJ = cdef.REJ_NOTOBJ,
  EMISSING = cdef.REJ_MISSING, ETYPE = cdef.REJ_TYPE, ETOOBIG = cdef.REJ_TOOBIG,
  ERANGE = cdef.REJ_RANGE, ELUA = cdef.REJ_LUA,
}

-- Errors raised by this module carry this metatable, so a table a user
-- function raises (error({})) is never mistaken for one of ours.
local Failure = {}
local function failure(code, msg) return setmetatable({ code = code, msg = msg }, Failure) end

-- mm_pipe_add's "no event time: use processing time" (INT64_MIN).
local PROCESSING_TIME = -2 ^ 63
-- Event times outside +-2^53 ms cannot be represented exactly; none is sane.
local MAX_TIME_MS = 2 ^ 53

local function reject(p, i, code_name, msg)
  C.mm_pipe_reject(p, i, REASON_OF[code_name] or cdef.REJ_JSON, E[code_name] or E.EJSON, msg)
end

local int64_t, uint64_t = ffi.typeof("int64_t"), ffi.typeof("uint64_t")
local function is_int64(v)
  return type(v) == "cdata" and (ffi.istype(int64_t, v) or ffi.istype(uint64_t, v))
end

-- Turns a field value into the string form keys, elements and ids use: the
-- canonical text of a number that engine/codec/json.h (mm_json_number_key)
-- gives the C path. Integers beyond +-2^53 arrive as int64 cdata (exact);
-- integral doubles in [-2^63, 2^63) print as integers (-0 as 0); other
-- doubles in the shortest of %.15g..%.17g that reads back the same.
local function as_string(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return nil end
    if v == math.floor(v) and v >= -2^63 and v < 2^63 then
      if v == 0 then return "0" end
      return ("%d"):format(v)
    end
    local s
    for prec = 15, 17 do
      s = ("%." .. prec .. "g"):format(v)
      if tonumber(s) == v then break end
    end
    return s
  end
  if is_int64(v) then return (tostring(v):gsub("U?LL$", "")) end
  return nil
end

local function get_time(spec, ev, src_ts)
  local v
  if spec.time_kind == "lua" then
    v = spec.time_fn(ev)
  elseif spec.time_kind == "field" then
    v = ev[spec.time_field]
    if v == nil then error(failure("EMISSING", "missing event-time field '" .. spec.time_field .. "'")) end
  elseif src_ts > 0 then
    return src_ts -- no time field: the source's record time (Kafka), if any
  else
    return PROCESSING_TIME
  end
  if is_int64(v) then v = tonumber(v) end
  if type(v) == "number" then
    if spec.time_unit == "s" or (spec.time_unit == "a" and math.abs(v) < 1e11) then v = v * 1000 end
    if v ~= v or v <= -MAX_TIME_MS or v >= MAX_TIME_MS then
      error(failure("ERANGE", "event time " .. tostring(v) .. " ms is out of range"))
    end
    return math.floor(v)
  elseif type(v) == "string" then
    local ms, err = core.parse_time(v)
    if not ms then error(failure("ETYPE", err)) end
    return ms
  end
  error(failure("ETYPE", "event time must be RFC 3339 text or an epoch number"))
end

local function get_value(spec, ev)
  local v
  if spec.value_kind == "none" then return cdef.VAL_NONE, 0, nil end
  if spec.value_kind == "const" then v = spec.value_const
  elseif spec.value_kind == "lua" then v = spec.value_fn(ev)
  else
    v = ev[spec.value_field]
    if v == nil then error(failure("EMISSING", "missing value field '" .. spec.value_field .. "'")) end
  end
  -- Integers beyond +-2^53 (int64 cdata) reach the monoid as the nearest
  -- double, as before they were decoded exactly.
  if is_int64(v) then v = tonumber(v) end
  if type(v) == "number" then
    if v == math.floor(v) and v > -2^63 and v < 2^63 then return cdef.VAL_INT, v, nil end
    return cdef.VAL_DOUBLE, v, nil
  elseif type(v) == "string" then
    return cdef.VAL_STRING, 0, v
  end
  error(failure("ETYPE", "value must be a number or a string, got " .. (v == null and "null" or type(v))))
end

local function get_keys(spec, ev)
  if spec.key_kind == "const" then return spec.keys end
  if spec.key_kind == "field" then
    local out = {}
    for i, f in ipairs(spec.keys) do
      local v = ev[f]
      if v == nil then error(failure("EMISSING", "missing key field '" .. f .. "'")) end
      out[i] = as_string(v) or error(failure("ETYPE", "key field '" .. f .. "' must be a string or a number"))
    end
    return out
  end
  local k = spec.key_fn(ev)
  if type(k) == "table" then
    local out = {}
    for i, v in ipairs(k) do
      out[i] = as_string(v) or error(failure("ETYPE", "key function returned a " .. type(v)))
    end
    return out
  end
  local s = as_string(k)
  if s == nil then error(failure("ETYPE", "key function returned a " .. type(k))) end
  return s
end

local function get_id(spec, ev)
  -- "source": the record's own id, checked in C before Lua sees the record.
  if spec.id_kind == "none" or spec.id_kind == "source" then return nil end
  local v
  if spec.id_kind == "lua" then v = spec.id_fn(ev) else v = ev[spec.id_field] end
  if v == nil or v == null then return nil end
  return as_string(v) or error(failure("ETYPE", "event id must be a string or a number"))
end

local function key_checked(k)
  if #k == 0 or #k > 1024 then error(failure("ERANGE", ("key is %d bytes (must be 1..1024)"):format(#k))) end
  return k
end

-- Runs the user's time, value and key functions for one decoded event:
-- returns its time, value and keys (one string, or a list of them, all
-- checked: a rejected record adds nothing); raises on any problem.
local function compute(spec, ev)
  local ts = get_time(spec, ev, tonumber(ts_p[0]))
  local vtype, num, str = get_value(spec, ev)
  local keys = get_keys(spec, ev)
  -- One key needs no loop: a loop of one turn per record keeps LuaJIT from
  -- compiling the record's path as one trace.
  if type(keys) == "string" then return ts, vtype, num, str, key_checked(keys) end
  if #keys == 0 then error(failure("EMISSING", "key function returned no key")) end
  for _, k in ipairs(keys) do key_checked(k) end
  return ts, vtype, num, str, keys
end

-- Adds record i's keys and accepts it: 0, or the first add's error code
-- (the keys before it are added).
local function add(p, i, id, ts, vtype, num, str, keys)
  local slen = str and #str or 0
  if type(keys) == "string" then
    local rc = C.mm_pipe_add(p, i, keys, #keys, ts, vtype, num, str, slen)
    if rc ~= 0 then return rc end
  else
    for _, k in ipairs(keys) do
      local rc = C.mm_pipe_add(p, i, k, #k, ts, vtype, num, str, slen)
      if rc ~= 0 then return rc end
    end
  end
  C.mm_pipe_accept(p, i, id, id and #id or 0)
  return 0
end

local function add_failure(rc)
  return failure(core.strerror(rc), ffi.string(C.mm_pipe_last_error()))
end

-- Runs the user's functions for one decoded event and adds it; raises on
-- any problem.
local function process(spec, p, i, ev)
  local id = get_id(spec, ev)
  if id then
    local seen = C.mm_pipe_seen(p, id, #id)
    if seen == 1 then C.mm_pipe_duplicate(p, i) return end
    -- Held until the flush claims its id on a shared store; it comes back then.
    if seen == 2 then return end
    if seen < 0 then error(failure("EIO", ffi.string(C.mm_pipe_last_error()))) end
  end
  local rc = add(p, i, id, compute(spec, ev))
  if rc ~= 0 then error(add_failure(rc)) end
end

local function traceback(e)
  if getmetatable(e) == Failure then return e end
  if type(e) ~= "string" then
    local ok, s = pcall(tostring, e)
    e = ("a user function raised a %s value%s"):format(type(e), ok and (": " .. s) or "")
  end
  return failure("ELUA", e)
end

local function heap_kb()
  return tonumber(mem.used) / 1024
end

-- The heap after the last full collection: a heap above MEMORY_HIGH is
-- collected again only once half the headroom left then is used, so a script
-- that legitimately keeps much data is not collected after every record.
local gc_floor_kb = 0
local function maybe_collect()
  local used, limit = heap_kb(), M.memory_limit_kb
  if used > limit * M.MEMORY_HIGH and used > gc_floor_kb + (limit - gc_floor_kb) / 2 then
    collectgarbage()
    gc_floor_kb = heap_kb()
  end
end

function M.out_of_memory(spec)
  core.log("error", spec.name, ("the Lua heap exceeds its limit (%d MiB): the worker exits so its supervisor can restart it; the record being processed is blamed")
    :format(M.memory_limit_kb / 1024))
  os.exit(M.EXIT_MEMORY, false)
end

-- Rejects record i, whose add failed with rc, as process would have.
local function reject_add(p, i, rc)
  local f = add_failure(rc)
  reject(p, i, f.code, f.msg)
end

-- The strings of the record staged (mm_pipe_stage), which C reads when it
-- adds them: held here, in memory the collector reads, where a local that
-- is never read again could live in a register of a compiled trace only.
local staged_strings = {}

-- Adds the record staged (mm_pipe_stage) if li names one.
local function unstage(p, li)
  if li >= 0 then
    local rc = C.mm_pipe_unstage(p)
    if rc ~= 0 then reject_add(p, li, rc) end
  end
end

-- specs_by_ptr maps a pipeline's lightuserdata to its spec.
--
-- A pipeline without dedup ids adds a one-key record once the next
-- record's user functions have run, the cache told meanwhile where it goes
-- (mm_pipe_stage): the aggregation table is larger than the cache, and an
-- add at once waited for its slot (a third of the Lua key's cost beyond the C
-- path's). With ids, an id is remembered when its record is added, before
-- the next record's is looked up, so those add at once.
function M.handler(specs_by_ptr)
  -- The field plan of each spec (false: decode in full), made on first use.
  local plans = setmetatable({}, { __mode = "k" })
  return function(n, ...)
    for j = 1, select("#", ...) do
      local lud = select(j, ...)
      local spec = specs_by_ptr[lud]
      local p = ffi.cast("mm_pipeline_t *", lud)
      local plan = plans[spec]
      local later = spec.id_kind == "none"
      local li = -1 -- the record staged, if any
      if plan == nil then
        plan = fieldplan.of(spec)
        plans[spec] = plan
      end
      for i = 0, n - 1 do
        if C.mm_pipe_record(p, i, data_p, len_p, flags_p, ts_p) == 0 then
          local ev = plan and plan.fill(data_p[0], len_p[0])
          local err, code
          if not ev then
            ev, err, code = json_decode(ffi.string(data_p[0], len_p[0]))
          end
          -- A record rejected here waits for the add before it, so that
          -- outcomes keep the records' order (one that mm_pipe_record
          -- refused, too big or poison, is dead-lettered before it).
          if ev == nil or type(ev) ~= "table" or getmetatable(ev) == core.array_mt then
            unstage(p, li)
            li = -1
          end
          if ev == nil then
            reject(p, i, code, (err:gsub("^%u+: ", ""))) -- the code has its own field
          elseif type(ev) ~= "table" or getmetatable(ev) == core.array_mt then
            reject(p, i, "ENOTOBJ", "JSON value is not an object")
          else
            local refused = mem.refusals
            local ok, e, vtype, num, str, keys
            if later then
              ok, e, vtype, num, str, keys = xpcall(compute, traceback, spec, ev)
            else
              ok, e = xpcall(process, traceback, spec, p, i, ev)
            end
            if ok and later and type(keys) == "string" then
              local rc = C.mm_pipe_stage(p, i, keys, #keys, e, vtype, num, str, str and #str or 0)
              if rc ~= 0 then reject_add(p, li, rc) end
              li, staged_strings[1], staged_strings[2] = i, keys, str
            elseif later then
              unstage(p, li)
              li = -1
              if ok then
                local rc = add(p, i, nil, e, vtype, num, str, keys)
                if rc ~= 0 then reject_add(p, i, rc) end
              end
            end
            if mem.refusals ~= refused then
              -- Over the limit inside this record, even when a pcall in
              -- the user's function swallowed the error (the record was
              -- then accepted as that function decided: logged only).
              collectgarbage()
              gc_floor_kb = heap_kb()
              if gc_floor_kb > M.memory_limit_kb * M.MEMORY_HIGH then M.out_of_memory(spec) end
              if ok then
                core.log("warn", spec.name, "a user function swallowed a Lua heap limit error; the record was accepted")
              else
                C.mm_pipe_reject(p, i, cdef.REJ_MEMORY, E.ENOMEM,
                  ("the Lua heap limit (--lua-memory %d MiB) was reached inside this record: %s")
                    :format(M.memory_limit_kb / 1024, tostring(e.msg)))
              end
            elseif not ok then
              reject(p, i, e.code, e.msg)
            end
          end
          maybe_collect()
        end
      end
      unstage(p, li)
      staged_strings[1], staged_strings[2] = nil, nil
    end
  end
end

return M
