-- murmur.hooks: on_merge hooks under a time budget, with a journal of the
-- calls not yet made, so that none is lost without a trace.
--
-- After a flush is durable the engine hands each hooked pipeline's merged
-- (entity, bucket, delta) list to the handler below, which:
--
--  1. writes the whole list to DATA/on_merge.journal (one write), with a
--     fixed-size header line saying which call is next and whether it runs;
--  2. calls the hooks one by one, the JIT off and an instruction-count hook
--     raising once a call has used MURMUR_HOOK_TIMEOUT seconds of CPU time
--     (default 1; the hook keeps raising, so a pcall in the hook cannot
--     swallow it), updating the header before each call and stamping the
--     supervisor's heartbeat after it;
--  3. removes the journal when the list is done.
--
-- A call that raises, or runs past its budget, is logged, counted and
-- appended to DATA/on_merge.failed.jsonl; the remaining calls go on. A call
-- stuck where the instruction hook cannot reach (inside one C call, or in a
-- loop compiled before the hooks ran) stops the heartbeat: the supervisor
-- kills the worker, and the next worker (M.recover, once its loop runs)
-- records the call that was running as failed ("interrupted") and makes the
-- calls that were never made. So every merged delta's hook is called at most
-- once, and a call that did not complete is in on_merge.failed.jsonl.
-- Not covered: a machine crash between the flush's commit and the journal
-- write (the journal is not fsync'd).
local core = require("murmur.core")

local M = {}

M.TIMEOUT = tonumber(os.getenv("MURMUR_HOOK_TIMEOUT") or "") or 1
M.JOURNAL = "on_merge.journal" -- also named in murmur.runner
M.FAILED = "on_merge.failed.jsonl"

local HEADER_LEN = 40

local function header(next_i, running)
  local h = ("next=%d running=%d"):format(next_i, running and 1 or 0)
  return h .. (" "):rep(HEADER_LEN - 1 - #h) .. "\n"
end

local function record_failure(data, name, entity, bucket, delta_json, reason, err)
  local f = io.open(data .. "/" .. M.FAILED, "a")
  if not f then
    core.log("error", name, ("cannot record a failed on_merge call in %s/%s"):format(data, M.FAILED))
    return
  end
  f:write(core.json_encode({
    time = core.format_time(core.now_ms()), pipeline = name, entity = entity, bucket = bucket,
    delta = delta_json and core.json_decode(delta_json) or nil, reason = reason, error = err,
  }), "\n")
  f:close()
end

-- Calls fn(...) with at most M.TIMEOUT s of CPU time. Returns pcall's results.
local function call_limited(fn, ...)
  local deadline = os.clock() + M.TIMEOUT
  debug.sethook(function()
    if os.clock() > deadline then
      error(("on_merge hook ran longer than %gs of CPU time; stopped (MURMUR_HOOK_TIMEOUT)"):format(M.TIMEOUT), 2)
    end
  end, "", 1000)
  local ok, err = pcall(fn, ...)
  debug.sethook()
  return ok, err
end

-- Runs items = { {entity, bucket, delta_json}, ... } for spec, journaled.
-- Returns the number of failed calls, and true if the run must stop
-- (on_merge_errors = "fail"; the rest stays in the journal for the next
-- worker).
local function run_items(state, spec, items)
  local data = state.data
  local path = data .. "/" .. M.JOURNAL
  local j = io.open(path, "w")
  if j then
    local lines = { header(1, false) }
    for _, it in ipairs(items) do
      lines[#lines + 1] = core.json_encode({ p = spec.name, e = it[1], b = it[2], d = it[3] }) .. "\n"
    end
    j:write(table.concat(lines))
    j:flush()
  else
    core.log("warn", spec.name, ("cannot write %s: on_merge calls are not journaled"):format(path))
  end
  local failed, stop = 0, false
  local jit_on = jit and jit.status()
  if jit then jit.off() end
  for i, it in ipairs(items) do
    if j then
      j:seek("set", 0)
      j:write(header(i, true))
      j:flush()
    end
    local delta = it[3] and core.json_decode(it[3])
    local ok, err = call_limited(spec.on_merge, it[1], delta, it[2])
    core.heartbeat()
    if not ok then
      failed = failed + 1
      state.errors = state.errors + 1
      local timeout = tostring(err):find("MURMUR_HOOK_TIMEOUT", 1, true) ~= nil
      core.log("error", spec.name, ("on_merge hook failed for '%s' (bucket %d): %s"):format(it[1], it[2], tostring(err)))
      record_failure(data, spec.name, it[1], it[2], it[3], timeout and "timeout" or "error", tostring(err))
      if spec.on_merge_errors == "fail" then
        if j then
          j:seek("set", 0)
          j:write(header(i + 1, false))
          j:close()
          j = nil
        end
        stop = true
        break
      end
    end
  end
  if jit_on then jit.on() end
  if j then
    j:close()
    os.remove(path)
  end
  return failed, stop
end

-- The engine's on-merged handler. Returns handler, errors() like
-- runner.merged_handler.
function M.handler(engine, hook_specs, data)
  local state = { data = data, errors = 0 }
  return function(ptr, items)
    local spec = hook_specs[ptr]
    if not spec then return end
    local _, stop = run_items(state, spec, items)
    if stop then engine:stop(1) end
  end, function() return state.errors end, state
end

-- Reads a journal left by a worker that died during its hooks. Returns
-- next (the first call not completed), running (it had started), and the
-- items { p, e, b, d }, or nil when there is none.
function M.read_journal(data)
  local f = io.open(data .. "/" .. M.JOURNAL, "rb")
  if not f then return nil end
  local h = f:read("*l") or ""
  local items = {}
  for line in f:lines() do
    local ok, it = pcall(core.json_decode, line)
    if ok and type(it) == "table" then items[#items + 1] = it end
  end
  f:close()
  local next_i, running = h:match("^next=(%d+) running=(%d)")
  return tonumber(next_i) or 1, running == "1", items
end

-- Finishes what a dead worker's journal left: the call that was running is
-- recorded as failed ("interrupted"), the calls never made are made now.
function M.recover(engine, hook_specs, data, state)
  local next_i, running, items = M.read_journal(data)
  if not next_i then return end
  os.remove(data .. "/" .. M.JOURNAL)
  local by_name = {}
  for _, s in pairs(hook_specs) do by_name[s.name] = s end
  local pending, lost = {}, 0
  for i, it in ipairs(items) do
    if i == next_i and running then
      lost = lost + 1
      record_failure(data, it.p, it.e, it.b, it.d, "interrupted",
        "the worker stopped during this call (a stall, a crash or a kill); it is not called again")
    elseif i >= next_i then
      local spec = by_name[it.p]
      if spec then
        pending[spec] = pending[spec] or {}
        table.insert(pending[spec], { it.e, it.b, it.d })
      else
        lost = lost + 1
        record_failure(data, it.p, it.e, it.b, it.d, "skipped", "the pipeline no longer has an on_merge hook")
      end
    end
  end
  local n = 0
  for _, list in pairs(pending) do n = n + #list end
  core.log(lost > 0 and "warn" or "info", "engine",
    ("on_merge journal of the previous worker: %d call(s) made now, %d recorded in %s/%s"):format(n, lost, data, M.FAILED))
  state = state or { data = data, errors = 0 }
  for spec, list in pairs(pending) do
    local _, stop = run_items(state, spec, list)
    if stop then engine:stop(1) return end
  end
end

return M
