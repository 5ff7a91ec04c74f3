-- murmur.fieldplan: which members of an event the Lua path must decode.
--
-- The Lua path hands each record to the user's functions as a table. Building
-- the whole table (every member's string interned, the table and its hash part
-- allocated, all of it collected later) costs several times the rest of the
-- record's work, and a key function such as `function(ev) return ev.page_id
-- end` reads one member. So each function is read once, as LuaJIT bytecode:
-- when its event parameter is used for nothing but reading members by
-- constant names (`ev.page_id`, `ev["user_id"]`), the function cannot see the
-- rest of the table, nor keep it (it never stores, passes, returns or
-- captures it), nor tell one table from another. Such a pipeline gets a plan:
-- the names its functions read plus the fields the spec names itself. For a
-- flat record (engine/codec/json.h mm_json_scan_flat: scalar members, distinct
-- plain names, no number that could overflow) the runtime then fills one table
-- per pipeline with just those members, reused record after record; anything
-- else (nested members, escapes, duplicates, errors) is decoded in full as
-- before. A function that does anything else with its parameter (pairs(ev),
-- ev[k], f(ev), a closure, `...`) gets no plan, and its pipeline keeps the
-- full decode.
--
-- The bytecode rule, per instruction: no operand that names a slot (as its
-- destination, a variable, or the base of a range) may name slot 0, the event,
-- except the table operand of TGETS whose destination is another slot, and
-- RET0 (whose A is 0 though it reads nothing). Functions with nested
-- functions or varargs are refused outright.
local ffi = require("ffi")
local jutil = require("jit.util")
local bit = require("bit")
local core = require("murmur.core")
local cdef = require("murmur.cdef")

local C = cdef.C
local band, rshift = bit.band, bit.rshift
local null = core.null

local M = {}

-- Opcode numbers differ between LuaJIT versions: read them off functions
-- known to start with them.
local function first_op(fn) return band(jutil.funcbc(fn, 1), 0xff) end
local OP_TGETS = first_op(function(t) return t.x end)
local OP_RET0 = first_op(function() end)

-- Operand modes (lj_bc.h BCMode) that name slots.
local SLOT_MODE = { [1] = true, [2] = true, [3] = true, [4] = true } -- dst, base, var, rbase

-- The member names fn reads from its first parameter, as a list, or nil when
-- it may do anything else with it.
function M.reads(fn)
  local info = jutil.funcinfo(fn)
  if not info or info.children or info.isvararg or info.ffid then return nil end
  local names, seen = {}, {}
  if info.params == 0 then return names end
  local pc = 1
  while true do
    local ins, m = jutil.funcbc(fn, pc)
    if not ins then break end
    local op, a = band(ins, 0xff), band(rshift(ins, 8), 0xff)
    local ma, mb, mc = band(m, 7), band(rshift(m, 3), 15), band(rshift(m, 7), 15)
    local touches_a = SLOT_MODE[ma] and a == 0
    if op == OP_TGETS then
      local b, c = rshift(ins, 24), band(rshift(ins, 16), 0xff)
      if touches_a then return nil end
      if b == 0 then
        local name = jutil.funck(fn, -c - 1)
        if not seen[name] then seen[name] = true names[#names + 1] = name end
      end
    elseif op ~= OP_RET0 then
      if touches_a then return nil end
      if mb ~= 0 then
        if (SLOT_MODE[mb] and rshift(ins, 24) == 0) or (SLOT_MODE[mc] and band(rshift(ins, 16), 0xff) == 0) then
          return nil
        end
      elseif SLOT_MODE[mc] and rshift(ins, 16) == 0 then
        return nil
      end
    end
    pc = pc + 1
  end
  return names
end

local is_int_p = ffi.new("int[1]")
local int_p = ffi.new("int64_t[1]")
local double_p = ffi.new("double[1]")
local int64_t = ffi.typeof("int64_t")
local EXACT_INT = 2 ^ 53
local T_NULL, T_FALSE, T_TRUE, T_NUMBER, T_STRING = 1, 2, 3, 4, 5

-- A member's value as json_decode gives it, or `none` when the record must be
-- decoded in full (an escaped string, a number the scanner cannot read).
local none = {}
local function value(f)
  local t = f.type
  if t == T_STRING then
    if f.escaped ~= 0 then return none end
    return ffi.string(f.p, f.len)
  elseif t == T_NUMBER then
    if C.mm_json_number(f.p, f.len, is_int_p, int_p, double_p) ~= 0 then return none end
    local i = int_p[0]
    if is_int_p[0] ~= 0 and (i > EXACT_INT or i < -EXACT_INT) then return int64_t(i) end
    return double_p[0]
  elseif t == T_TRUE then
    return true
  elseif t == T_FALSE then
    return false
  elseif t == T_NULL then
    return null
  end
  return nil
end

-- The plan's fill(data, len): its table for the record data[0..len), filled
-- with the members it names (nil for absent ones), or nil when the record
-- must be decoded in full. It is generated per plan with one statement per
-- member: a loop of a turn or two per record would keep LuaJIT from
-- compiling the record's path as one trace.
local function make_fill(names, fields, jplan, ev)
  local src = { "local scan, value, none, fields, jplan, ev, names = ...\n" }
  for k = 1, #names do src[#src + 1] = ("local name%d = names[%d]\n"):format(k, k) end
  src[#src + 1] = "return function(data, len)\n  if scan(jplan, data, len, fields) ~= 1 then return nil end\n  local v\n"
  for k = 1, #names do
    src[#src + 1] = ("  v = value(fields[%d]) if v == none then return nil end ev[name%d] = v\n"):format(k - 1, k)
  end
  src[#src + 1] = "  return ev\nend\n"
  local chunk = assert(load(table.concat(src), "=fieldplan"))
  return chunk(C.mm_json_scan_flat_planned, value, none, fields, jplan, ev, names)
end

local field_array = ffi.typeof("mm_json_field_t[?]")

-- The plan of a spec: { names, fields, fill } or false (decode in full);
-- names[k] is the member found in fields[k - 1].
function M.of(spec)
  local names, seen = {}, {}
  local function add(list)
    for _, name in ipairs(list) do
      if not seen[name] then seen[name] = true names[#names + 1] = name end
    end
  end
  for _, part in ipairs({ { "key", spec.key_fn }, { "value", spec.value_fn }, { "time", spec.time_fn },
    { "id", spec.id_fn } }) do
    if spec[part[1] .. "_kind"] == "lua" then
      local reads = M.reads(part[2])
      if not reads then return false end
      add(reads)
    end
  end
  if spec.key_kind == "field" then add(spec.keys) end
  if spec.value_kind == "field" then add({ spec.value_field }) end
  if spec.time_kind == "field" then add({ spec.time_field }) end
  if spec.id_kind == "field" then add({ spec.id_field }) end
  local fields = field_array(math.max(#names, 1))
  for k = 1, #names do
    fields[k - 1].name, fields[k - 1].name_len = names[k], #names[k]
  end
  -- The scanner's plan of the names, made once (plain data: no pointer
  -- into fields).
  local jplan = ffi.new("mm_json_plan_t")
  C.mm_json_plan(jplan, fields, #names)
  -- fields points into the name strings: the plan's names anchor them.
  return { names = names, fields = fields, fill = make_fill(names, fields, jplan, {}) }
end

return M
