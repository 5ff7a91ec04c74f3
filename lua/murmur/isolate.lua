-- murmur.isolate: a script version is loaded by a child process under
-- limits before the process that will run it (or check it) touches it.
--
-- The loader's instruction hook (loader.lua) stops Lua code that runs too
-- long, but not one C call: `string.find(("a"):rep(28), ("a*"):rep(28) .. "b")`
-- at a script's top level runs for hours inside the pattern matcher, a
-- string.rep can allocate without bound, and some recursions crash the Lua VM
-- (a segfault). None of those can be stopped or survived from inside the
-- process, so `murmur check`, `murmur run` (every worker start) and every hot
-- reload first load the scripts in a probe child (engine/core/probe.h) that
-- only loads them. At start-up, while the process has one thread, the child
-- is a forked copy of it (core.probe_fork): already linked and initialised,
-- so the probe costs a fork instead of a second start of the binary. Where
-- other threads run (a hot reload: the thread pool, librdkafka's) a copy
-- could inherit their locks, so the child runs the same command line again
-- instead (MURMUR_LOAD_PROBE=1). Either way, in its own address space:
--
--   CPU       RLIMIT_CPU of MURMUR_LOAD_TIMEOUT (default 2 s) + 1 s: SIGXCPU
--   memory    RLIMIT_AS of the Lua heap limit (--lua-memory, default 1 GiB)
--             + 256 MiB (MURMUR_LOAD_MEMORY overrides, in MiB)
--   wall      max(10 s, 3 x the CPU limit): SIGKILL (a loaded machine gives
--             the child less CPU than wall-clock time)
--   crash     only the child dies
--
-- The child reports every file it read with a hash of its bytes. The caller
-- then reads those files once and checks the hashes (a file saved again in
-- between is probed again), and loads from these bytes only (loader.snapshot),
-- so what runs is exactly what was validated. On any failure nothing is
-- loaded: `check` and a starting `run` exit 3 with the reason, a reload keeps
-- the running version.
--
-- The probe blocks the caller (a reload holds the loop for the probe's few
-- tens of ms, up to the wall limit for a runaway script) and stamps the
-- supervisor's page while it waits, so the watchdog does not count it as a
-- stall.
local core = require("murmur.core")
local loader = require("murmur.loader")

local M = {}

M.PROBE_ENV = "MURMUR_LOAD_PROBE"

-- load_all's error when a stop signal (Ctrl-C) arrived while a starting
-- process waited for its probe child: the child was killed and nothing was
-- loaded; the caller stops cleanly instead of reporting a script failure.
M.STOPPED = "stopped by a signal while the scripts were being validated"

local SIGXCPU, SIGKILL = 24, 9

-- The limits for a probe, from the loader's time limit and the Lua heap limit.
function M.limits()
  local t = loader.LOAD_TIMEOUT
  local cpu_s = math.ceil(t) + 1
  local _, heap = core.lua_memory()
  local heap_mb = heap > 0 and heap / 1048576 or 1024
  return {
    cpu_s = cpu_s,
    as_mb = tonumber(os.getenv("MURMUR_LOAD_MEMORY") or "") or math.ceil(heap_mb + 256),
    wall_ms = math.max(10000, 3 * cpu_s * 1000),
  }
end

-- In the probe child: load, report on fd 3, exit. Never returns.
local function child_main(paths)
  local out = io.open("/proc/self/fd/3", "w")
  if not out then core.probe_exit(70) end
  local files = {}
  loader.on_read = function(path, bytes)
    -- Named before it runs: if loading it kills this process, the parent
    -- knows which file did.
    out:write("reading ", path, "\n")
    out:flush()
    files[#files + 1] = { path = path, hash = core.hash64(bytes) }
  end
  local specs, err = loader.load_all(paths)
  loader.on_read = nil
  out:write(core.json_encode({ ok = specs ~= nil, error = err, files = files }), "\n")
  out:close()
  core.probe_exit(0)
end

local function failure_text(res, file, lim)
  local what = file or "the script"
  if res.status == "timeout" then
    return ("%s: loading did not finish within %gs of wall-clock time; it was stopped in a child process and not loaded (a library call the time limit cannot interrupt?)")
      :format(what, lim.wall_ms / 1000)
  elseif res.status == "signaled" then
    if res.signal == SIGXCPU or (res.signal == SIGKILL and res.cpu_ms >= lim.cpu_s * 1000 - 50) then
      return ("%s: loading used more than %ds of CPU time inside one library call (e.g. a pathological string.find pattern at the top level), which the time limit cannot interrupt; it was stopped in a child process and not loaded")
        :format(what, lim.cpu_s)
    end
    return ("%s: loading crashed the Lua VM (signal %d, SIG%s) in a child process; the script was not loaded (deep recursion through a library call such as gsub?)")
      :format(what, res.signal, res.signame or "?")
  end
  return ("%s: loading exited with status %d in a child process without a result (out of memory under the %d MiB limit?); the script was not loaded")
    :format(what, res.code, lim.as_mb)
end

-- The probe child's command, environment and limits.
local function probe_args()
  local argv = { "/proc/self/exe" }
  for i = 1, #_G.arg do argv[#argv + 1] = _G.arg[i] end
  -- A sanitized build (make check) would turn the child's fatal signal into
  -- a report and exit 1; the signal itself says what happened.
  local asan = "ASAN_OPTIONS=" .. (os.getenv("ASAN_OPTIONS") or "") .. ":handle_segv=0:handle_sigbus=0"
  return argv, { M.PROBE_ENV .. "=1", "MURMUR_WORKER=1", asan },
    { "MURMUR_PROGRESS", "MURMUR_SUPERVISOR_PID" }, M.limits()
end

-- What one probe run says: the snapshot (path -> bytes), or nil, message,
-- or false when the scripts changed while the child loaded them.
local function probe_result(res, perr, lim)
  if not res then return nil, "cannot validate the scripts in a child process: " .. perr end
  if res.status == "cancelled" then return nil, M.STOPPED end
  local last_file, result
  for line in res.output:gmatch("[^\n]+") do
    local f = line:match("^reading (.*)$")
    if f then last_file = f elseif line:sub(1, 1) == "{" then result = core.json_decode(line) end
  end
  if res.status ~= "exited" or res.code ~= 0 or type(result) ~= "table" then
    return nil, failure_text(res, last_file, lim)
  end
  if not result.ok then return nil, result.error end
  local snapshot, changed = {}, false
  for _, f in ipairs(result.files or {}) do
    local h = io.open(f.path, "rb")
    local bytes = h and h:read("*a")
    if h then h:close() end
    if not bytes or core.hash64(bytes) ~= f.hash then
      changed = true
      break
    end
    snapshot[f.path] = bytes
  end
  if not changed then return snapshot end
  -- Saved again while the child loaded it: validate the newer bytes.
  return false
end

local KEPT_CHANGING = "the scripts kept changing while they were being validated; not loaded"

-- One probe child for paths, blocking: a forked copy of this process, or,
-- when it has other threads, the command line again.
local function probe_once(paths)
  local lim = M.limits()
  local res, perr, code = core.probe_fork(function() child_main(paths) end, lim)
  if not res and code == "EAGAIN" then
    local argv, set, unset
    argv, set, unset, lim = probe_args()
    res, perr = core.probe(argv, set, unset, lim)
  end
  return probe_result(res, perr, lim)
end

-- Runs the probe child for paths. Returns the table of files (path -> bytes)
-- to load from, or nil, message.
function M.probe(paths)
  for _ = 1, 3 do
    local snapshot, err = probe_once(paths)
    if snapshot ~= false then return snapshot, err end
  end
  return nil, KEPT_CHANGING
end

local started = false

-- Loads the snapshot the probe validated (loader.load_all on its bytes).
local function load_snapshot(paths, snapshot)
  loader.snapshot = snapshot
  local ok, specs, lerr, modules = pcall(loader.load_all, paths)
  loader.snapshot = nil
  if not ok then return nil, tostring(specs) end
  return specs, lerr, modules
end

-- load_all for a running engine (hot reload): the probe child runs on the
-- engine's thread pool, so the loop keeps turning while it loads; done gets
-- what load_all returns.
function M.load_all_async(engine, paths, done)
  local tries = 0
  local function try()
    tries = tries + 1
    local argv, set, unset, lim = probe_args()
    local ok, qerr = engine:probe(argv, set, unset, lim, function(res, perr)
      local snapshot, err = probe_result(res, perr, lim)
      if snapshot == false then
        if tries < 3 then return try() end
        return done(nil, KEPT_CHANGING)
      end
      if not snapshot then return done(nil, err) end
      done(load_snapshot(paths, snapshot))
    end)
    if not ok then done(nil, "cannot validate the scripts in a child process: " .. tostring(qerr)) end
  end
  try()
end

-- loader.load_all in this process, without a probe child: for the Lambda
-- runtime only (murmur.lambda), whose sandbox already is what the probe gives
-- a long-running process. A runtime that hangs in one C call or crashes while
-- loading fails its init phase, which Lambda bounds in time and memory and
-- reports, and there is no running version to keep. The fork cost the
-- runtime about a tenth of its cold start's CPU and the child 5 to 11 ms of
-- its own (doc/performance-journal.md, "Lambda cold start"). The loader's own limits
-- (the instruction hook, the sandbox) apply as in the probe child. Returns
-- what load_all returns.
function M.load_in_process(paths)
  started = true
  return load_snapshot(paths, nil)
end

-- loader.load_all, after a probe child loaded the same files under limits.
-- Returns specs, nil, modules or nil, message. In the probe child itself,
-- loads, reports and exits.
function M.load_all(paths)
  if os.getenv(M.PROBE_ENV) then child_main(paths) end
  -- Error injection (test builds): a supervised worker that hangs while
  -- starting, before any heartbeat (the supervisor's start-up deadline).
  if not started and core.errinj and os.getenv("MURMUR_ERRINJ_STARTUP_HANG") and os.getenv("MURMUR_PROGRESS") then
    while true do end
  end
  started = true
  local snapshot, err = M.probe(paths)
  if not snapshot then return nil, err end
  return load_snapshot(paths, snapshot)
end

return M
