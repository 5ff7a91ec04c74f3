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

-- Checks the new specs against the running ones and the stored state.
function Reloader:validate(specs)
  local engine = self.inst.engine
  for _, s in ipairs(specs) do
    local old = self.by_name[s.name]
    if old then
      if old.compat ~= s.compat then
        return nil, ("%s: pipeline '%s' is incompatible with its existing state: it was %s, the new definition is %s (use a new pipeline name to start fresh state)")
          :format(s.where, s.name, old.compat, s.compat)
      end
    else
      local meta = engine:meta(s.name)
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
  local specs, err, modules = nil, nil, {}
  do
    local all = {}
    for _, path in ipairs(paths) do
      local c, lerr = loader.load(path)
      if not c then err = lerr break end
      for _, p in ipairs(c.modules) do modules[#modules + 1] = p end
      for _, s in ipairs(c.pipelines) do
        s.script = path
        all[#all + 1] = s
      end
    end
    if not err then
      local seen = {}
      for _, s in ipairs(all) do
        if seen[s.name] then
          err = ("%s: pipeline '%s' is already defined at %s"):format(s.where, s.name, seen[s.name].where)
          break
        end
        seen[s.name] = s
      end
      specs = all
    end
  end
  if err then return self:fail(err) end
  local ok, verr = self:validate(specs)
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
    self.modules = modules
    self.stats.version = version
    if problems then
      self:fail(problems)
    else
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

-- Applies validated specs to the engine (sources are held, nothing pending).
function Reloader:apply(specs)
  local inst, engine = self.inst, self.inst.engine
  local new_by_name, errors = {}, {}
  for _, s in ipairs(specs) do new_by_name[s.name] = s end
  for name, old in pairs(self.by_name) do
    if not new_by_name[name] then
      local ok, err = engine:remove_pipeline(old.ptr)
      if ok then
        inst.lua_specs[old.ptr] = nil
        inst.hook_specs[old.ptr] = nil
        self:log("info", "pipeline '%s' removed (its stored state is kept)", name)
      else
        errors[#errors + 1] = err
        new_by_name[name] = old -- still running
      end
    end
  end
  for _, s in ipairs(specs) do
    local old = self.by_name[s.name]
    local cfg = runner.cfg_of(s, inst.data, inst.opts)
    local ok, err
    if old then
      ok, err = engine:update_pipeline(old.ptr, cfg)
      if ok then
        s.ptr = old.ptr
        inst.lua_specs[old.ptr] = nil
      end
    else
      s.ptr, err = engine:add_pipeline(cfg)
      ok = s.ptr ~= nil
      if ok then self:log("info", "pipeline '%s' added", s.name) end
    end
    if ok then
      if runner.uses_lua(s) then inst.lua_specs[s.ptr] = s end
      inst.hook_specs[s.ptr] = s.on_merge and s or nil
      local aok, aerr = runner.attach(engine, s, inst.opts)
      if not aok then errors[#errors + 1] = aerr end
    else
      errors[#errors + 1] = ("%s: %s"):format(s.where, err)
      if old then new_by_name[s.name] = old else new_by_name[s.name] = nil end
    end
  end
  self.by_name = new_by_name
  inst.specs = {}
  for _, s in pairs(new_by_name) do inst.specs[#inst.specs + 1] = s end
  if #errors > 0 then return table.concat(errors, "; ") end
  return nil
end

return Reloader
