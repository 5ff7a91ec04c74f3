-- murmur.reload: hot reload of running pipeline scripts.
--
-- Triggers: a save of a script or of a module it requires (watched through
-- inotify on their directories, so in-place writes and editors' rename-over
-- saves both count; events are debounced), SIGHUP, and `murmur reload`.
--
-- A reload loads the new version beside the old one, in a fresh sandbox and
-- under the loader's time limit, then validates it against the running state:
-- a pipeline that keeps its name must keep its monoid, parameters and window
-- (the "compat" string), and a new name must match any state already stored
-- under it. Any error keeps the old version running and is logged with the
-- script's file:line. A valid version is swapped in at a batch boundary:
-- sources are held, everything the old version accepted is flushed, then
-- pipelines are updated in place, added or removed, sources that are still
-- used keep running (no reconnect, no rewind), unused ones are closed, and the
-- sources are released. Every outcome is counted and reported in status.
local core = require("murmur.core")
local loader = require("murmur.loader")
local runner = require("murmur.runner")

local Reloader = {}
Reloader.__index = Reloader

local DEBOUNCE_MS = 150

local function basename(path) return path:match("([^/]+)$") or path end
local function dirname(path) return path:match("^(.*)/[^/]*$") or "." end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- Hash of everything a load depends on: scripts and the modules they required.
local function version_of(paths, modules)
  local parts = {}
  for _, p in ipairs(paths) do parts[#parts + 1] = p .. "\0" .. (read(p) or "") end
  for _, p in ipairs(modules or {}) do parts[#parts + 1] = p .. "\0" .. (read(p) or "") end
  return core.hash64(table.concat(parts, "\0\0"))
end

-- inst: { engine, lua_specs, specs, paths, opts, data }
function Reloader.new(inst)
  local self = setmetatable({
    inst = inst,
    by_name = {},
    stats = { ok = 0, failed = 0, unchanged = 0, last_error = nil, last_ok_ms = nil,
              previous_error = nil, fixed_ms = nil,
              last_pause_ms = nil, max_pause_ms = 0, version = nil, loaded_ms = core.now_ms() },
    watches = {},
    busy = false,
    again = false,
  }, Reloader)
  for _, s in ipairs(inst.specs) do self.by_name[s.name] = s end
  self.modules = inst.modules or {}
  self.stats.version = version_of(inst.paths, self.modules)
  return self
end

function Reloader:log(level, fmt, ...)
  core.log(level, "reload", fmt:format(...))
end

-- Watches the directories of the scripts and of their modules.
function Reloader:watch()
  local engine = self.inst.engine
  for _, h in pairs(self.watches) do h:close() end
  self.watches = {}
  local wanted = {}
  for _, p in ipairs(self.inst.paths) do wanted[p] = true end
  for _, p in ipairs(self.modules) do wanted[p] = true end
  local by_dir = {}
  for p in pairs(wanted) do
    local d = dirname(p)
    by_dir[d] = by_dir[d] or {}
    by_dir[d][basename(p)] = true
  end
  for dir, names in pairs(by_dir) do
    local h, err = engine:watch(dir, function(filename)
      if names[filename] then self:schedule("file " .. dir .. "/" .. filename .. " changed") end
    end)
    if h then
      self.watches[dir] = h
    else
      self:log("warn", "cannot watch %s (%s); reload with SIGHUP or `murmur reload`", dir, err)
    end
  end
  self.signal = engine:signal("hup", function() self:schedule("SIGHUP") end)
end

-- Debounces triggers: an editor's save is several events.
function Reloader:schedule(why)
  self.why = why
  if self.timer then self.timer:close() end
  self.timer = self.inst.engine:timer(DEBOUNCE_MS, 0, function()
    self.timer = nil
    self:reload(self.why)
  end)
end

function Reloader:fail(msg)
  self.stats.failed = self.stats.failed + 1
  self.stats.last_error = msg
  self.stats.last_error_ms = core.now_ms()
  self:log("error", "reload refused, the running version keeps running: %s", msg)
end

-- A good reload after a failed one: status shows the error as the previous
-- one, fixed at this time, not as the current state.
function Reloader:fixed()
  if self.stats.last_error then
    self.stats.previous_error = self.stats.last_error
    self.stats.fixed_ms = core.now_ms()
    self.stats.last_error = nil
  end
end

-- Reads the stored descriptors of the pipelines the running version does
-- not have, through the store's callbacks (the loop keeps running while the
-- store answers), then calls done(metas) with name -> descriptor (absent:
-- none stored), or done(nil, err).
function Reloader:stored_metas(specs, done)
  local engine, metas, left, failed = self.inst.engine, {}, 1, nil
  local function one_done()
    left = left - 1
    if left == 0 then
      if failed then done(nil, failed) else done(metas) end
    end
  end
  for _, s in ipairs(specs) do
    if not self.by_name[s.name] then
      left = left + 1
      local ok, err = engine:meta(s.name, function(bytes, merr)
        if merr then
          failed = failed or ("%s: reading the stored state of pipeline '%s': %s"):format(s.where, s.name, merr)
        end
        metas[s.name] = bytes
        one_done()
      end)
      if not ok then
        failed = failed or ("%s: %s"):format(s.where, tostring(err))
        left = left - 1
      end
    end
  end
  one_done()
end

-- Checks the new specs against the running ones and the stored state
-- (metas: from stored_metas).
function Reloader:validate(specs, metas)
  for _, s in ipairs(specs) do
    local old = self.by_name[s.name]
    if old then
      if old.compat ~= s.compat then
        return nil, ("%s: pipeline '%s' is incompatible with its existing state: it was %s, the new definition is %s (use a new pipeline name to start fresh state)")
          :format(s.where, s.name, old.compat, s.compat)
      end
    else
      local meta = metas[s.name]
      local stored = meta and meta:match("^([^\n]*)")
      if stored and stored ~= s.compat then
        return nil, ("%s: pipeline '%s' already has state as %s; the new definition is %s")
          :format(s.where, s.name, stored, s.compat)
      end
    end
  end
  return true
end

function Reloader:reload(why)
  if self.busy then
    self.again = true
    return
  end
  local paths = self.inst.paths
  self:log("info", "reloading (%s)", why or "requested")
  -- A probe child loads the new version under CPU, memory and wall-clock
  -- limits first; this process then loads exactly the bytes it validated
  -- (murmur.isolate). A crash or hang while loading kills only the child.
  -- The child runs on the engine's thread pool and the stored descriptors
  -- are read through callbacks: the loop keeps turning meanwhile.
  self.busy = true
  local function finish()
    if not self.busy and self.again then
      self.again = false
      self:schedule("changed during the previous reload")
    end
  end
  require("murmur.isolate").load_all_async(self.inst.engine, paths, function(specs, err, modules)
    modules = modules or {}
    if err then
      self.busy = false
      self:fail(err)
      return finish()
    end
    self:stored_metas(specs, function(metas, merr)
      self.busy = false
      if metas then self:checked(paths, specs, modules, metas) else self:fail(merr) end
      finish()
    end)
  end)
end

-- The stored descriptors are read: validates, then swaps.
function Reloader:checked(paths, specs, modules, metas)
  local ok, verr = self:validate(specs, metas)
  if not ok then return self:fail(verr) end
  local version = version_of(paths, modules)
  if version == self.stats.version then
    self.stats.unchanged = self.stats.unchanged + 1
    self:log("info", "scripts unchanged (version %s); nothing to do", version)
    -- Back to the running version (e.g. a bad edit undone): that fixes it too.
    self:fixed()
    if self.on_reload then self.on_reload() end
    return
  end
  self:swap(specs, modules, version)
end

-- Holds the sources, flushes what the old version accepted, then swaps.
function Reloader:swap(specs, modules, version)
  local inst, engine = self.inst, self.inst.engine
  self.busy = true
  local t0 = core.now_ms()
  engine:hold(true)
  local ok, err = engine:flush(function(status)
    if status ~= 0 then
      engine:hold(false)
      self.busy = false
      return self:fail(("the flush before the swap failed (%s); the old version keeps running"):format(core.strerror(status)))
    end
    local problems = self:apply(specs)
    engine:close_idle_sources()
    engine:hold(false)
    self.busy = false
    local pause = core.now_ms() - t0
    self.stats.last_pause_ms = pause
    if pause > self.stats.max_pause_ms then self.stats.max_pause_ms = pause end
    if problems then
      self:fail(problems)
    else
      self.modules = modules
      self.stats.version = version
      self.stats.ok = self.stats.ok + 1
      self.stats.last_ok_ms = core.now_ms()
      self:fixed()
      self:log("info", "reloaded: version %s, %d pipeline(s), sources held %d ms", version, #specs, pause)
    end
    self:watch()
    if self.on_reload then self.on_reload() end
    if self.again then
      self.again = false
      self:schedule("changed during the previous reload")
    end
  end)
  if not ok then
    engine:hold(false)
    self.busy = false
    self:fail(err)
  end
end

-- Error injection (test builds): MURMUR_ERRINJ_RELOAD_APPLY=N makes the Nth
-- engine operation of the next swap fail (each update, add, remove and
-- attach counts one), to test the rollback.
local function errinj_step()
  if not core.errinj then return false end
  local n = tonumber(os.getenv("MURMUR_ERRINJ_RELOAD_APPLY") or "")
  if not n then return false end
  Reloader.errinj_ops = (Reloader.errinj_ops or 0) + 1
  return Reloader.errinj_ops == n
end

-- Runs one engine operation, returns true or nil, message.
local function step(what, fn, ...)
  if errinj_step() then return nil, ("%s: injected failure (MURMUR_ERRINJ_RELOAD_APPLY)"):format(what) end
  local ok, a, b = pcall(fn, ...)
  if not ok then return nil, ("%s: %s"):format(what, tostring(a)) end
  if a == nil then return nil, ("%s: %s"):format(what, tostring(b)) end
  return a
end

-- Re-points the tables the engine's Lua handlers read (in place: the batch
-- and on-merge handlers hold them) at the running specs.
local function refresh_handlers(inst, running)
  for k in pairs(inst.lua_specs) do inst.lua_specs[k] = nil end
  for k in pairs(inst.hook_specs) do inst.hook_specs[k] = nil end
  for _, s in pairs(running) do
    if runner.uses_lua(s) then inst.lua_specs[s.ptr] = s end
    if s.on_merge then inst.hook_specs[s.ptr] = s end
  end
end

-- Applies validated specs to the engine (sources are held, nothing pending),
-- all or nothing: every change is done with its undo recorded, and the first
-- failure undoes the changes already made in reverse order, so the old
-- version runs exactly as before (sources still attached to it were never
-- closed: they keep their positions). Returns nil, or the error (and that of
-- the rollback, if even that failed).
function Reloader:apply(specs)
  local inst, engine = self.inst, self.inst.engine
  local data, opts = inst.data, inst.opts
  local new_by_name, undo = {}, {}
  for _, s in ipairs(specs) do new_by_name[s.name] = s end
  Reloader.errinj_ops = 0

  -- Puts an old spec back on its pipeline (after an update or removal).
  local function restore(old, ptr)
    if ptr then
      local ok, err = step(("%s: restoring pipeline '%s'"):format(old.where, old.name),
        engine.update_pipeline, engine, ptr, runner.cfg_of(old, data, opts))
      if not ok then return nil, err end
    else
      local p, err = step(("%s: restoring pipeline '%s'"):format(old.where, old.name),
        engine.add_pipeline, engine, runner.cfg_of(old, data, opts))
      if not p then return nil, err end
      old.ptr = p
    end
    return runner.attach(engine, old, opts)
  end

  local function rollback(err)
    local rerrs = {}
    Reloader.errinj_ops = -math.huge -- nothing is injected into the rollback
    for i = #undo, 1, -1 do
      local ok, rerr = undo[i]()
      if not ok then rerrs[#rerrs + 1] = rerr end
    end
    refresh_handlers(inst, self.by_name)
    if #rerrs > 0 then
      self:log("error", "rollback incomplete: %s", table.concat(rerrs, "; "))
      return ("%s; rolling back also failed, the pipelines named here may not run: %s"):format(err, table.concat(rerrs, "; "))
    end
    return ("%s; the swap was rolled back, the old version runs unchanged"):format(err)
  end

  -- 1. Changed pipelines are updated in place (same state, same pointer).
  for _, s in ipairs(specs) do
    local old = self.by_name[s.name]
    if old then
      local ok, err = step(s.where, engine.update_pipeline, engine, old.ptr, runner.cfg_of(s, data, opts))
      if not ok then return rollback(err) end
      s.ptr = old.ptr
      undo[#undo + 1] = function() return restore(old, old.ptr) end
      ok, err = step(s.where .. ": source", runner.attach, engine, s, opts)
      if not ok then return rollback(err) end
    end
  end
  -- 2. New pipelines are added.
  for _, s in ipairs(specs) do
    if not self.by_name[s.name] then
      local p, err = step(s.where, engine.add_pipeline, engine, runner.cfg_of(s, data, opts))
      if not p then return rollback(err) end
      s.ptr = p
      undo[#undo + 1] = function()
        return step(("removing pipeline '%s'"):format(s.name), engine.remove_pipeline, engine, p)
      end
      local ok
      ok, err = step(s.where .. ": source", runner.attach, engine, s, opts)
      if not ok then return rollback(err) end
    end
  end
  -- 3. Pipelines the new version no longer defines are removed.
  local removed = {}
  for name, old in pairs(self.by_name) do
    if not new_by_name[name] then
      local ok, err = step(("removing pipeline '%s'"):format(name), engine.remove_pipeline, engine, old.ptr)
      if not ok then return rollback(err) end
      undo[#undo + 1] = function() return restore(old, nil) end
      removed[#removed + 1] = name
    end
  end
  -- Committed.
  for _, s in ipairs(specs) do
    if not self.by_name[s.name] then self:log("info", "pipeline '%s' added", s.name) end
  end
  for _, name in ipairs(removed) do self:log("info", "pipeline '%s' removed (its stored state is kept)", name) end
  self.by_name = new_by_name
  refresh_handlers(inst, new_by_name)
  inst.specs = {}
  for _, s in ipairs(specs) do inst.specs[#inst.specs + 1] = s end
  return nil
end

return Reloader
