-- murmur.progress: what `murmur run` tells the person watching it.
--
-- * At start-up, one line per distinct source saying what is read ("reading
--   file events.jsonl (12.3 MB)", "reading stdin", "reading Kafka topic T
--   from brokers B"), and, with --follow on a path that does not exist yet,
--   that the source waits for it to appear.
-- * With --once, a progress report every interval (default 5 s; --progress
--   DUR or MURMUR_PROGRESS_INTERVAL, 0 turns it off): records, bytes, percent
--   of the input and ETA when the input is a file of known size, and the
--   rate over the last interval. On a terminal it is one line redrawn in
--   place; elsewhere an INFO log line. A long-running service reports no
--   progress: `murmur status` shows its rates instead (murmur.status).
-- * In both modes, a WARN when a pipeline rejects most of what it sees (more
--   than half of at least MIN_RECORDS records, or every record by the end of
--   a --once run), once per pipeline and condition, naming the share, the top
--   reason, the error of the latest dead letter, where the dead letters went,
--   and a hint for the reason.
--
-- Everything runs from engine timers on the loop thread, from engine:stats()
-- (which includes each file source's offset and size); nothing here is on the
-- per-record path.
local core = require("murmur.core")
local runner = require("murmur.runner")

local M = {}

M.DEFAULT_INTERVAL_MS = 5000
M.CHECK_INTERVAL_MS = 1000
M.MIN_RECORDS = 100
M.MOST = 0.5
-- A warning waits this many checks for the first dead letter to reach its
-- file (lines are written with the next flush), so that it can quote it.
M.EXAMPLE_WAIT_CHECKS = 3

-- What to do about the top rejection reason.
M.HINTS = {
  missing_field = "check the field names in the script (key, value, time, id) against the input records",
  wrong_type = "a field has another type than the script expects (e.g. a string where a number is needed); check the value and time fields and the time unit",
  json = "the input is not JSON Lines (one JSON object per line); check what is fed to --input",
  utf8 = "the input is not UTF-8 text; check its encoding",
  not_object = "each line must be a JSON object, not an array or a scalar",
  too_big = "records are larger than the pipeline's max_record; raise it in the script if they are legitimate",
  out_of_range = "event times fall outside the retention; check the time field, its unit (s or ms) and the window's retention",
  lua_error = "a function in the script raised an error; the example shows it with file:line",
  poison = "these records crashed or stalled the worker; look at them in the dead-letter file",
  merge_failed = "the store refused a merge (e.g. an int64 sum that would overflow); consider a wider monoid",
  lua_memory = "a function in the script took the Lua heap past --lua-memory inside one record; raise --lua-memory or bound what the function builds",
}

-- Sizes and durations for people -------------------------------------------

function M.human_bytes(n)
  if n >= 1e9 then return ("%.1f GB"):format(n / 1e9) end
  if n >= 1e6 then return ("%.1f MB"):format(n / 1e6) end
  if n >= 1e3 then return ("%.1f kB"):format(n / 1e3) end
  return ("%d B"):format(n)
end

function M.human_duration(s)
  s = math.floor(s + 0.5)
  if s >= 3600 then return ("%dh%02dm"):format(s / 3600, (s % 3600) / 60) end
  if s >= 60 then return ("%dm%02ds"):format(s / 60, s % 60) end
  return ("%ds"):format(s)
end

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

-- A path for messages: relative to the working directory when under it.
local function shown(path)
  local cwd = os.getenv("PWD")
  if cwd and path:sub(1, #cwd + 1) == cwd .. "/" then return path:sub(#cwd + 2) end
  return path
end

-- Parses the interval: --progress, else MURMUR_PROGRESS_INTERVAL, else 5 s.
-- Returns milliseconds (0: off) or nil, message.
function M.interval_ms(opts)
  local v = opts.progress or os.getenv("MURMUR_PROGRESS_INTERVAL")
  if v == nil or v == "" then return M.DEFAULT_INTERVAL_MS end
  if v == "0" or v == "off" then return 0 end
  local ms = core.parse_duration(v)
  if not ms or ms < 100 then
    return nil, ("progress interval '%s' must be a duration of at least 100ms (or 0 for none)"):format(v)
  end
  return ms
end

-- Start-up lines ---------------------------------------------------------------

local function kafka_brokers(inst)
  local k = runner.kafka_settings(inst.opts) or {}
  if k.brokers then return k.brokers end
  for _, s in ipairs(inst.specs) do
    for _, src in ipairs(s.sources or {}) do
      if src.type == "kafka" and src.options.brokers then return src.options.brokers end
    end
  end
  return "?"
end

-- One line per distinct source of the engine.
function M.announce(inst)
  local ids = {}
  for id in pairs(inst.engine:stats().sources) do ids[#ids + 1] = id end
  table.sort(ids)
  for _, id in ipairs(ids) do
    local path = id:match("^file:(.*)$")
    if path then
      local size = file_size(path)
      if size then
        core.log("info", "engine", ("reading file %s (%s)%s"):format(shown(path), M.human_bytes(size),
          inst.opts.follow and ", then following it" or ""))
      elseif inst.opts.follow then
        core.log("info", "engine", ("waiting for file %s to appear (--follow): nothing is read until it is created")
          :format(shown(path)))
      else
        core.log("info", "engine", ("reading file %s"):format(shown(path)))
      end
    elseif id == "stdin" then
      core.log("info", "engine", "reading stdin" .. (core.isatty(0) and " (a terminal: type JSON lines, end with Ctrl-D)" or ""))
    else
      local group, topics = id:match("^kafka:([^/]*)/(.*)$")
      if group then
        core.log("info", "engine", ("reading Kafka topic %s from brokers %s (group %s)"):format(topics, kafka_brokers(inst), group))
      else
        core.log("info", "engine", "reading " .. id)
      end
    end
  end
end

-- Dead letters -------------------------------------------------------------------

local function spec_named(inst, name)
  for _, s in ipairs(inst.specs) do if s.name == name then return s end end
end

-- Where a pipeline's dead letters go: ("file", path) or (kind, description).
function M.dead_letter_where(inst, name)
  local spec = spec_named(inst, name)
  if not spec then return nil end
  local cfg = runner.cfg_of(spec, inst.data, inst.opts)
  if cfg.dead_letter_type == "file" then return "file", cfg.dead_letter_options.path end
  return cfg.dead_letter_type, ("Kafka topic %s"):format(tostring(cfg.dead_letter_options.topic))
end

-- The last complete line of a file (reads at most its last 64 KiB).
local function last_line(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local size = f:seek("end")
  local from = size > 65536 and size - 65536 or 0
  f:seek("set", from)
  local tail = f:read("*a") or ""
  f:close()
  local line
  for l in tail:gmatch("([^\n]+)\n") do line = l end
  return line
end

-- The error text of the most recent dead letter in a file, or nil.
function M.last_dead_letter(path)
  local l = last_line(path)
  local d = l and core.json_decode(l)
  return type(d) == "table" and d.error or nil
end

-- Rejection warnings ---------------------------------------------------------------

local function rejected_of(p)
  local total, top, top_n = 0, nil, 0
  for reason, n in pairs(p.rejected) do
    total = total + n
    if n > top_n or (n == top_n and top and reason < top) then top, top_n = reason, n end
  end
  return total, top, top_n
end

-- The warning for pipeline `name` with stats p, or nil, "wait" while the
-- example is not in the dead-letter file yet (and `patient`).
function M.rejection_warning(inst, name, p, patient)
  local total, top, top_n = rejected_of(p)
  local kind, where = M.dead_letter_where(inst, name)
  local example
  if kind == "file" then
    example = M.last_dead_letter(where)
    if not example and patient then return nil, "wait" end
    where = shown(where)
  end
  local parts = {
    ("rejected %d of %d records (%d%%), %s"):format(total, p.records, math.floor(100 * total / p.records + 0.5),
      top_n == total and ("all for " .. top) or ("most for %s (%d)"):format(top, top_n)),
  }
  if example then parts[#parts + 1] = ("latest error: %s"):format(example) end
  if where then parts[#parts + 1] = ("dead letters in %s"):format(where) end
  if M.HINTS[top] then parts[#parts + 1] = "hint: " .. M.HINTS[top] end
  return table.concat(parts, "; ")
end

-- The reporter ---------------------------------------------------------------------

local Reporter = {}
Reporter.__index = Reporter

-- inst: the running instance (engine, specs, opts, data). interval_ms: the
-- progress interval (used with --once only; 0 for none).
function M.new(inst, interval_ms)
  return setmetatable({
    inst = inst,
    interval_ms = interval_ms,
    tty = core.isatty(2),
    warned = {},   -- pipeline name -> { most = true, all = true }
    waited = {},   -- pipeline name -> checks spent waiting for an example
    files = {},    -- source id -> { offset, size, waiting }
    t0 = core.now_ms(),
    drawn = false,
  }, Reporter)
end

function Reporter:start()
  local engine = self.inst.engine
  -- Followed files that announce() said are waited for.
  for id in pairs(engine:stats().sources) do
    local path = id:match("^file:(.*)$")
    if path and self.inst.opts.follow and not file_size(path) then self.files[id] = { waiting = true } end
  end
  self.check_timer = engine:timer(M.CHECK_INTERVAL_MS, M.CHECK_INTERVAL_MS, function() self:check(false) end)
  if self.inst.opts.once and self.interval_ms > 0 then
    self.last = { ms = self.t0, records = 0, bytes = 0 }
    self.progress_timer = engine:timer(self.interval_ms, self.interval_ms, function() self:report() end)
  end
end

-- Checks every pipeline's rejections; at_end: the --once run is over.
function Reporter:check(at_end)
  local stats = self.inst.engine:stats()
  self:note_files(stats)
  for name, p in pairs(stats.pipelines) do
    local total = rejected_of(p)
    local w = self.warned[name] or {}
    self.warned[name] = w
    local cond
    if at_end and p.records > 0 and total == p.records then
      cond = "all"
    elseif p.records >= M.MIN_RECORDS and total > M.MOST * p.records then
      cond = "most"
    end
    -- Every record rejected is a special case of most; warn once for either.
    if cond and not w.most and not w.all then
      self.waited[name] = (self.waited[name] or 0) + 1
      local msg = M.rejection_warning(self.inst, name, p, not at_end and self.waited[name] <= M.EXAMPLE_WAIT_CHECKS)
      if msg then
        w[cond] = true
        self:clear_line()
        core.log("warn", name, msg)
      end
    end
  end
end

-- Keeps each file source's offset and size (a source read to its end in
-- --once mode is closed and reports no status any more), and logs when a
-- followed file that was waited for appears.
function Reporter:note_files(stats)
  for id, s in pairs(stats.sources) do
    local path = id:match("^file:(.*)$")
    if path then
      local f = self.files[id] or {}
      self.files[id] = f
      local st = s.status_json and core.json_decode(s.status_json)
      if st then
        if f.waiting and not st.waiting then
          core.log("info", "engine", ("file %s appeared; reading it"):format(shown(path)))
        end
        f.offset, f.size, f.waiting = st.offset, st.size or f.size, st.waiting
      elseif s.closed and f.size then
        f.offset = f.size
      end
    end
  end
end

-- The progress line.
function Reporter:line(stats, now)
  local records, bytes = 0, 0
  for _, s in pairs(stats.sources) do
    records = records + s.records
    bytes = bytes + s.bytes
  end
  local dt = math.max(now - self.last.ms, 1) / 1000
  local rate_r = (records - self.last.records) / dt
  local rate_b = (bytes - self.last.bytes) / dt
  self.last = { ms = now, records = records, bytes = bytes }
  local done, size = 0, 0
  local known = next(self.files) ~= nil
  for _, f in pairs(self.files) do
    if f.size and f.offset then
      done, size = done + f.offset, size + f.size
    else
      known = false
    end
  end
  for id in pairs(stats.sources) do
    if not id:match("^file:") then known = false end
  end
  local parts = { ("%d records, %s read"):format(records, M.human_bytes(bytes)) }
  if known and size > 0 then
    parts[1] = ("%d records, %s of %s (%.1f%%)"):format(records, M.human_bytes(done), M.human_bytes(size), 100 * done / size)
  end
  parts[#parts + 1] = ("%.0f records/s, %.1f MB/s"):format(rate_r, rate_b / 1e6)
  local elapsed = (now - self.t0) / 1000
  -- The ETA uses the average since start: steadier than the last interval.
  if known and size > 0 and bytes > 0 and elapsed > 0 then
    parts[#parts + 1] = "ETA " .. M.human_duration((size - done) / (bytes / elapsed))
  end
  return table.concat(parts, ", ")
end

function Reporter:report()
  local stats = self.inst.engine:stats()
  self:note_files(stats)
  local text = self:line(stats, core.now_ms())
  if self.tty then
    io.stderr:write("\r", text, "\27[K")
    io.stderr:flush()
    self.drawn = true
  else
    core.log("info", "progress", text)
  end
end

-- Ends a redrawn line before anything else is written on the terminal.
function Reporter:clear_line()
  if self.drawn then
    io.stderr:write("\n")
    self.drawn = false
  end
end

-- After engine:run(): stops the timers and runs the final check.
function Reporter:finish()
  if self.check_timer then self.check_timer:close() self.check_timer = nil end
  if self.progress_timer then self.progress_timer:close() self.progress_timer = nil end
  self:clear_line()
  self:check(self.inst.opts.once and true or false)
end

-- The final summary of a pipeline: its counters and where rejected records went.
function M.summary(inst, name, p)
  local rejected = rejected_of(p)
  local s = ("records %d, accepted %d, duplicates %d, rejected %d, deltas flushed %d")
    :format(p.records, p.accepted, p.duplicates, rejected, p.deltas_flushed)
  if rejected > 0 then
    local kind, where = M.dead_letter_where(inst, name)
    if where then s = s .. ("; the %d rejected are in %s"):format(rejected, kind == "file" and shown(where) or where) end
  end
  return s
end

return M
