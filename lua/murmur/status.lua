-- murmur.status: the running instance's state, as a file in its data
-- directory (status.json, replaced atomically once a second and after every
-- reload) and as `murmur status` output. A file, not a socket: it needs no
-- port, survives the process for post-mortems, and `murmur status` works with
-- nothing but read access to the data directory.
local core = require("murmur.core")

local M = {}

function M.path(data) return data .. "/status.json" end
function M.pid_path(data) return data .. "/murmur.pid" end

local function write_atomic(path, s)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  f:write(s)
  f:close()
  return os.rename(tmp, path)
end
M.write_atomic = write_atomic

-- Builds the status table of a running instance.
function M.collect(inst, reloader)
  local stats = inst.engine:stats()
  for _, src in pairs(stats.sources) do
    if src.status_json then
      src.status = core.json_decode(src.status_json)
      src.status_json = nil
    end
  end
  local scripts = {}
  for _, p in ipairs(inst.paths) do scripts[#scripts + 1] = p end
  return {
    pid = core.getpid(),
    supervisor_pid = tonumber(os.getenv("MURMUR_SUPERVISOR_PID") or ""),
    updated = core.format_time(core.now_ms()),
    started = inst.started,
    scripts = scripts,
    reload = reloader and reloader.stats or nil,
    engine = stats,
  }
end

function M.write(inst, reloader)
  local ok, err = write_atomic(M.path(inst.data), core.json_encode(M.collect(inst, reloader)))
  if not ok then core.log("warn", "status", "cannot write status: " .. tostring(err)) end
end

-- Human-readable text for `murmur status`.
function M.format(st)
  local out = {}
  local function line(...) out[#out + 1] = table.concat({ ... }) end
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
    if r.last_pause_ms then line(("last reload held sources %d ms (max %d ms)"):format(r.last_pause_ms, r.max_pause_ms)) end
  end
  local e = st.engine or {}
  line(("engine: %d records in %d batches, %d flushes (%d failed), %d store writes, %d lua errors")
    :format(e.records or 0, e.batches or 0, e.flushes or 0, e.flush_failures or 0, e.store_writes or 0, e.lua_errors or 0))
  local names = {}
  for name in pairs(e.pipelines or {}) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local p = e.pipelines[name]
    local rej = {}
    for reason, n in pairs(p.rejected) do if n > 0 then rej[#rej + 1] = reason .. "=" .. n end end
    table.sort(rej)
    line(("pipeline %s: %d records, %d accepted, %d duplicates, %d dead letters%s")
      :format(name, p.records, p.accepted, p.duplicates, p.dead_letters,
        #rej > 0 and (" (rejected: " .. table.concat(rej, ", ") .. ")") or ""))
  end
  for id, s in pairs(e.sources or {}) do
    line(("source %s: %d records, %d bytes%s"):format(id, s.records, s.bytes, s.closed and " (closed)" or ""))
    if s.status then line("  ", core.json_encode(s.status)) end
  end
  return table.concat(out, "\n") .. "\n"
end

return M
