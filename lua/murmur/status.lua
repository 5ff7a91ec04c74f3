-- murmur.status: the running instance's state, as a file in its data
-- directory (status.json, replaced atomically once a second and after every
-- reload) and as `murmur status` output. A file, not a socket: it needs no
-- port, survives the process for post-mortems, and `murmur status` works with
-- nothing but read access to the data directory.
local core = require("murmur.core")

local M = {}

function M.path(data) return data .. "/status.json" end
function M.pid_path(data) return data .. "/murmur.pid" end

-- Replaces the file at path with s: writes path.tmp, checking every write,
-- fsyncs and closes it, then renames it over path. Any failure (a full disk)
-- removes the temporary file and leaves path as it was: true | nil, err.
local function write_atomic(path, s)
  return core.write_atomic(path, s)
end
M.write_atomic = write_atomic

-- How often status.json is rewritten (cmd_run's timer); a file much older
-- than this with a live pid is stale.
M.INTERVAL_MS = 1000
M.STALE_MS = 10000
-- Rates are computed over at least this long, so that a rewrite right after
-- the timer's (after a reload) does not divide by a few milliseconds.
M.MIN_RATE_MS = 500

-- Rates over the last status interval, from the previous sample kept in
-- inst.rate_sample: records/s per pipeline, records/s and bytes/s per source.
local function rates(inst, stats, now)
  local cur = { ms = now, pipelines = {}, sources = {} }
  for name, p in pairs(stats.pipelines) do cur.pipelines[name] = { records = p.records, accepted = p.accepted } end
  for id, src in pairs(stats.sources) do cur.sources[id] = { records = src.records, bytes = src.bytes } end
  local prev = inst.rate_sample
  if prev and now - prev.ms < M.MIN_RATE_MS then return inst.rates end
  inst.rate_sample = cur
  if not prev then return nil end
  local dt = (now - prev.ms) / 1000
  local r = { interval_s = dt, pipelines = {}, sources = {} }
  for name, c in pairs(cur.pipelines) do
    local p = prev.pipelines[name] or { records = 0, accepted = 0 }
    r.pipelines[name] = { records_per_s = math.max(c.records - p.records, 0) / dt,
      accepted_per_s = math.max(c.accepted - p.accepted, 0) / dt }
  end
  for id, c in pairs(cur.sources) do
    local p = prev.sources[id] or { records = 0, bytes = 0 }
    r.sources[id] = { records_per_s = math.max(c.records - p.records, 0) / dt,
      bytes_per_s = math.max(c.bytes - p.bytes, 0) / dt }
  end
  inst.rates = r
  return r
end

-- Builds the status table of a running instance.
function M.collect(inst, reloader)
  local stats = inst.engine:stats()
  for _, src in pairs(stats.sources) do
    if src.status_json then
      src.status = core.json_decode(src.status_json)
      src.status_json = nil
    end
  end
  local now = core.now_ms()
  local scripts = {}
  for _, p in ipairs(inst.paths) do scripts[#scripts + 1] = p end
  return {
    pid = core.getpid(),
    supervisor_pid = tonumber(os.getenv("MURMUR_SUPERVISOR_PID") or ""),
    updated = core.format_time(now),
    started = inst.started,
    scripts = scripts,
    reload = reloader and reloader.stats or nil,
    engine = stats,
    rates = rates(inst, stats, now),
  }
end

-- Whether process pid runs: signal 0 reaches it (or it exists but is not
-- ours), and, where /proc tells, it is a murmur process and not an unrelated
-- one that reused the pid.
function M.alive(pid)
  if type(pid) ~= "number" or pid <= 0 then return false end
  local ok, _, code = core.kill(pid, "zero")
  if not ok and code == "ENOTFOUND" then return false end
  local f = io.open("/proc/" .. pid .. "/cmdline", "rb")
  if f then
    local cmd = f:read("*a") or ""
    f:close()
    if cmd ~= "" and not cmd:find("murmur", 1, true) then return false end
  end
  return true
end

-- The state of the instance a status file describes: "running", "stale"
-- (a live process that has not rewritten the file for a while) or "exited",
-- with a sentence for the first line of `murmur status` (nil when running).
-- data: the data directory (its murmur.pid names the supervisor).
function M.liveness(st, data, now_ms)
  local pids = { st.pid, st.supervisor_pid }
  local f = io.open(M.pid_path(data), "rb")
  if f then
    pids[#pids + 1] = tonumber(f:read("*l") or "")
    f:close()
  end
  local any = false
  for _, pid in pairs(pids) do if M.alive(pid) then any = true end end
  if not any then
    return "exited", ("not running: murmur pid %s exited; last status written at %s")
      :format(tostring(st.pid), tostring(st.updated))
  end
  local updated = st.updated and core.parse_time(st.updated)
  local age = updated and (now_ms or core.now_ms()) - updated
  if age and age > M.STALE_MS then
    return "stale", ("stale: murmur pid %s is alive but last wrote its status at %s, %.0f s ago (it is rewritten every %.0f s; the worker may be stuck or restarting)")
      :format(tostring(st.pid), tostring(st.updated), age / 1000, M.INTERVAL_MS / 1000)
  end
  if not M.alive(st.pid) then
    return "stale", ("the worker pid %s exited; supervisor pid %s is restarting it")
      :format(tostring(st.pid), tostring(st.supervisor_pid))
  end
  return "running"
end

-- Writes status.json on the thread pool (a slow disk never stalls the
-- loop; only the newest status is kept waiting behind a slow write), or now
-- with final (the last status, after the engine stopped). A failed write
-- keeps the previous status.json; it is logged once until a write succeeds
-- again (the result seen is that of the last write that finished).
function M.write(inst, reloader, final)
  -- /metrics renders the reload counters from C, without calling Lua.
  if reloader then core.metrics_reload(reloader.stats) end
  local ok, err = inst.engine:write_status(M.path(inst.data), core.json_encode(M.collect(inst, reloader)), final)
  if not ok and not inst.status_write_failed then
    inst.status_write_failed = true
    core.log("warn", "status", "cannot write status (the previous status.json is kept): " .. tostring(err))
  elseif ok and inst.status_write_failed then
    inst.status_write_failed = nil
    core.log("info", "status", "status.json is written again")
  end
end

-- Human-readable text for `murmur status`.
function M.format(st)
  local out = {}
  local function line(...) out[#out + 1] = table.concat({ ... }) end
  if st.liveness then line(st.liveness) end
  line(("murmur pid %s, started %s, status at %s"):format(tostring(st.pid), tostring(st.started), tostring(st.updated)))
  if st.supervisor then
    line(("supervisor: worker restarts %d (crashes %d, stalls %d), poison records %d")
      :format(st.supervisor.restarts or 0, st.supervisor.crashes or 0, st.supervisor.stalls or 0,
        st.supervisor.poison or 0))
  end
  for _, s in ipairs(st.scripts or {}) do line("script ", s) end
  local r = st.reload
  if r then
    line(("reloads: %d ok, %d failed, %d unchanged; version %s"):format(r.ok, r.failed, r.unchanged, tostring(r.version)))
    if r.last_error then line("last reload error: ", r.last_error) end
    if r.previous_error and not r.last_error then
      line(("previous reload error, fixed by the reload at %s: %s")
        :format(r.fixed_ms and core.format_time(r.fixed_ms) or "?", r.previous_error))
    end
    if r.last_pause_ms then line(("last reload held sources %d ms (max %d ms)"):format(r.last_pause_ms, r.max_pause_ms)) end
  end
  local e = st.engine or {}
  line(("engine: %d records in %d batches, %d flushes (%d failed), %d store writes, %d lua errors")
    :format(e.records or 0, e.batches or 0, e.flushes or 0, e.flush_failures or 0, e.store_writes or 0, e.lua_errors or 0))
  if e.loop_lag_ms_max then
    line(("loop lag: max %.1f ms, last 10 s %.1f ms"):format(e.loop_lag_ms_max, e.loop_lag_ms_recent or 0))
    if e.loop_block_ms_max then
      line(("loop blocked (lag without waits for a CPU): max %.1f ms, last 10 s %.1f ms")
        :format(e.loop_block_ms_max, e.loop_block_ms_recent or 0))
    end
  end
  if e.store and e.store.positions_fenced then
    line("store: positions another worker took, whose write this one was refused (fenced): ",
      table.concat(e.store.positions_fenced, ", "))
  end
  local names = {}
  for name in pairs(e.pipelines or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local p = e.pipelines[name]
    local rej = {}
    for reason, n in pairs(p.rejected) do if n > 0 then rej[#rej + 1] = reason .. "=" .. n end end
    table.sort(rej)
    local r = st.rates and st.rates.pipelines and st.rates.pipelines[name]
    line(("pipeline %s: %d records, %d accepted, %d duplicates, %d dead letters%s%s")
      :format(name, p.records, p.accepted, p.duplicates, p.dead_letters,
        #rej > 0 and (" (rejected: " .. table.concat(rej, ", ") .. ")") or "",
        r and (", %.0f records/s"):format(r.records_per_s) or ""))
  end
  for id, s in pairs(e.sources or {}) do
    local r = st.rates and st.rates.sources and st.rates.sources[id]
    line(("source %s: %d records, %d bytes%s%s"):format(id, s.records, s.bytes,
      r and (", %.0f records/s, %.2f MB/s"):format(r.records_per_s, r.bytes_per_s / 1e6) or "",
      s.closed and " (closed)" or ""))
    if s.status then line("  ", core.json_encode(s.status)) end
  end
  return table.concat(out, "\n") .. "\n"
end

return M
