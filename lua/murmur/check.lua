-- murmur.check: the dry run of `murmur check SCRIPT... --input FILE`.
--
-- Each sampled line goes through the code `murmur run` uses, in an explainer
-- (engine/core/explain.h: a pipeline with no engine, no store and no
-- dead-letter destination): mm_pipeline_process_batch on the C path, the
-- batch handler of murmur.runtime on the Lua path. The explainer reports what
-- that code extracted (keys, value, event time, bucket, dedup id) or the
-- reason, code and message of the dead letter `run` would write, so check
-- and run cannot disagree. Nothing is written and no store is opened; dedup
-- ids are compared only among the sampled lines.
local core = require("murmur.core")
local runner = require("murmur.runner")
local runtime = require("murmur.runtime")

local M = {}

M.DEFAULT_LINES = 10

local WINDOW = { [60000] = "minute", [3600000] = "hour", [86400000] = "day" }

-- What to look at, per rejection reason: the same advice `run` gives in
-- its rejection warning.
local HINT = require("murmur.progress").HINTS
local REASON_ORDER = { "json", "utf8", "not_object", "missing_field", "wrong_type", "too_big", "out_of_range", "lua_error" }
local ORDERED = {}
for _, reason in ipairs(REASON_ORDER) do ORDERED[reason] = true end

-- Reads the first n records of path ("-": stdin) the way the file source
-- splits them: a line ends at "\n", one trailing "\r" is removed, empty
-- lines are skipped (and not counted). Returns a list of { line = number in
-- the file, text = bytes }, or nil, message.
function M.sample(path, n)
  local f, err = io.stdin, nil
  if path ~= "-" then
    f, err = io.open(path, "rb")
    if not f then return nil, err end
  end
  local out, lineno = {}, 0
  while #out < n do
    local l = f:read("*l")
    if l == nil then break end
    lineno = lineno + 1
    if l:sub(-1) == "\r" then l = l:sub(1, -2) end
    if #l > 0 then out[#out + 1] = { line = lineno, text = l } end
  end
  if f ~= io.stdin then f:close() end
  return out
end

-- An explainer per spec, with the runtime's batch handler for Lua-path ones.
local function explainer(spec, opts)
  local cfg = runner.cfg_of(spec, runner.data_dir(opts), opts)
  cfg.dead_letter_type, cfg.dead_letter_options = nil, nil
  local ex, err = core.explainer(cfg)
  if not ex then return nil, ("%s: %s"):format(spec.where, err) end
  local e = { spec = spec, ex = ex, counts = { accepted = 0, duplicate = 0, rejected = 0 }, reasons = {} }
  if runner.uses_lua(spec) then
    local ptr = ex:ptr()
    e.ptr = ptr
    e.handler = runtime.handler({ [ptr] = spec })
  end
  return e
end

-- Runs one line through one pipeline; returns the explanation table.
local function explain(e, text, now)
  if not e.handler then
    local r, err = e.ex:record(text, now)
    return r or { outcome = "rejected", reason = "json", code = "EIO", error = err }
  end
  local ok, err = e.ex:begin(text, now)
  if not ok then return { outcome = "rejected", reason = "json", code = "EIO", error = err } end
  local hok, herr = pcall(e.handler, 1, e.ptr)
  if not hok then
    -- As the engine does when the handler itself fails (core_lua.c).
    local cdef = require("murmur.cdef")
    local ffi = require("ffi")
    local msg = tostring(herr)
    cdef.C.mm_pipe_reject(ffi.cast("mm_pipeline_t *", e.ptr), 0, cdef.REJ_LUA, core.errors.ELUA, msg)
  end
  return e.ex:finish()
end

local function quote(s) return core.json_encode(s) end

local function value_text(r)
  if r.value_type == "none" then return "none (counted once)" end
  if r.value_type == "string" then return quote(r.value) end
  if r.value_type == "int" then return ("%d"):format(r.value) end
  return ("%.17g"):format(r.value)
end

-- Adds the time/bucket fields (RFC 3339, window, bucket label) to r.
local function decorate(r, spec)
  if not r.time_ms then return end
  r.time = core.format_time(r.time_ms)
  local g = spec.granularity_ms
  if g == 0 or r.bucket == 0 then
    r.window = "all-time"
    return
  end
  r.window = WINDOW[g] or (g .. "ms")
  local start = core.format_time(core.bucket_start(g, r.bucket))
  r.bucket_start = start
  if g == 86400000 then r.bucket_label = start:sub(1, 10)
  else r.bucket_label = start:sub(1, 16) .. "Z" end
end

local function text_of(r, spec)
  if r.outcome == "rejected" then
    return ("rejected  %s: %s"):format(r.reason, r.error)
  end
  if r.outcome == "duplicate" then
    return ("duplicate  id %s was seen on an earlier line: skipped, as run skips it"):format(quote(r.id or ""))
  end
  if r.outcome ~= "accepted" then return r.outcome end
  local keys = {}
  for i, k in ipairs(r.keys) do keys[i] = quote(k) end
  local parts = {
    "accepted",
    (#keys == 1 and "key " or "keys ") .. table.concat(keys, ", "),
    "value " .. value_text(r),
    "time " .. r.time .. (spec.time_kind == "none" and " (processing time)" or ""),
    "bucket " .. (r.window == "all-time" and "all-time" or (r.window .. " " .. r.bucket_label)),
  }
  if r.id then parts[#parts + 1] = "id " .. quote(r.id) end
  return table.concat(parts, "  ")
end

local function clip(s, n)
  if #s <= n then return s end
  return s:sub(1, n) .. "..."
end

-- The summary line of one pipeline, e.g. "page_views: 10 of 10 lines
-- rejected (missing_field 10); check the field names".
function M.summary(name, n, e)
  local c = e.counts
  if c.rejected == 0 then
    local s = ("%s: %d of %d lines accepted"):format(name, c.accepted, n)
    if c.duplicate > 0 then s = s .. (", %d duplicate%s skipped"):format(c.duplicate, c.duplicate == 1 and "" or "s") end
    return s
  end
  -- Every reason with its count; the advice for the most frequent one.
  local by, top = {}, nil
  for _, reason in ipairs(REASON_ORDER) do
    local k = e.reasons[reason]
    if k then
      by[#by + 1] = ("%s %d"):format(reason, k)
      if not top or k > e.reasons[top] then top = reason end
    end
  end
  for reason, k in pairs(e.reasons) do
    if not ORDERED[reason] then by[#by + 1] = ("%s %d"):format(reason, k) end
  end
  return ("%s: %d of %d lines rejected (%s)%s"):format(name, c.rejected, n, table.concat(by, ", "),
    top and HINT[top] and ("; " .. HINT[top]) or "")
end

-- Dry-runs specs on the sample; writes the report to out (a file) and the
-- summary to sum_out. Returns the number of rejected (line, pipeline) pairs,
-- or nil, message.
function M.run(specs, lines, opts, out, sum_out)
  local ex = {}
  for i, spec in ipairs(specs) do
    local e, err = explainer(spec, opts)
    if not e then
      for _, done in ipairs(ex) do done.ex:close() end
      return nil, err
    end
    ex[i] = e
  end
  local now = core.now_ms()
  local rejected = 0
  for _, l in ipairs(lines) do
    if not opts.json then out:write(("line %d  %s\n"):format(l.line, clip(l.text, 120))) end
    for _, e in ipairs(ex) do
      local r = explain(e, l.text, now)
      decorate(r, e.spec)
      e.counts[r.outcome] = (e.counts[r.outcome] or 0) + 1
      if r.outcome == "rejected" then
        rejected = rejected + 1
        e.reasons[r.reason] = (e.reasons[r.reason] or 0) + 1
      end
      if opts.json then
        r.line, r.pipeline = l.line, e.spec.name
        if r.keys and #r.keys == 0 then r.keys = nil end
        out:write(core.json_encode(r), "\n")
      else
        out:write(("  %s: %s\n"):format(e.spec.name, text_of(r, e.spec)))
      end
    end
  end
  if #lines == 0 then
    sum_out:write(("no lines in %s: nothing to check\n"):format(opts.input == "-" and "stdin" or opts.input))
  else
    for _, e in ipairs(ex) do sum_out:write(M.summary(e.spec.name, #lines, e), "\n") end
  end
  for _, e in ipairs(ex) do e.ex:close() end
  return rejected
end

return M
