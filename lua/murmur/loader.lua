-- murmur.loader: loads pipeline scripts in a sandbox and returns their specs.
--
-- Each load gets a fresh environment and a fresh collector, so loading a
-- script twice (check, then run; later hot reload) never mixes state. The
-- environment offers the pure parts of the standard library; `io`, `os.exit`,
-- `os.execute`, `io.popen`, `loadfile`, `dofile` and the debug library are
-- absent unless the script calls murmur.allow("io", "os"). `require` resolves
-- "murmur" to the DSL bound to this load and other names to modules in the
-- script's directory, loaded into the same sandbox (and re-read on every load).
local dsl = require("murmur.dsl")
local grants = require("murmur.grants")

local M = {}

-- A script's definition must finish within this many seconds of CPU time
-- (MURMUR_LOAD_TIMEOUT overrides). With the JIT on, LuaJIT's count hooks do
-- not fire inside compiled traces, so definitions run with the JIT off; the
-- hook keeps raising once the deadline has passed, so a pcall in the script
-- cannot swallow it.
M.LOAD_TIMEOUT = tonumber(os.getenv("MURMUR_LOAD_TIMEOUT") or "") or 2

local function run_limited(chunk, path)
  local deadline = os.clock() + M.LOAD_TIMEOUT
  local jit_on = jit and jit.status()
  if jit then jit.off() end
  debug.sethook(function()
    if os.clock() > deadline then
      error(("script definition took longer than %gs of CPU time (%s)"):format(M.LOAD_TIMEOUT, path), 2)
    end
  end, "", 1000)
  local ok, err = xpcall(chunk, function(e)
    if type(e) ~= "string" then e = tostring(e) end
    return e
  end)
  debug.sethook()
  if jit_on then jit.on() end
  return ok, err
end

local SAFE = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber", "tostring",
  "type", "unpack", "xpcall", "rawequal", "rawget", "rawset", "setmetatable", "getmetatable",
  "print",
}
local SAFE_LIBS = { "string", "table", "math", "bit" }
local SAFE_OS = { "time", "clock", "date", "difftime", "getenv" }

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

-- murmur.isolate sets M.snapshot (path -> bytes) so that a load in this
-- process reads exactly the bytes a probe child validated under limits, and
-- M.on_read(path, bytes) in the probe child to learn which files it read.
local function read_file(path)
  if M.snapshot then
    local s = M.snapshot[path]
    if s == nil then return nil, "not among the files the load was validated with" end
    return s
  end
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  if M.on_read then M.on_read(path, s) end
  return s
end

-- Compiles Lua source text only: LuaJIT bytecode (which starts with ESC) is
-- refused, since a crafted bytecode file escapes any sandbox.
local function load_text(src, path)
  if src:byte(1) == 27 then
    return nil, ("%s: LuaJIT bytecode is not loaded (pipeline scripts and their modules must be Lua source)"):format(path)
  end
  return loadstring(src, "@" .. path)
end

-- The sandbox's getmetatable. Strings share one metatable in the whole VM,
-- and its __index is the engine's real string table: a script sees a
-- read-only view of it instead (its own per load), so `string.format = f`
-- through the metatable changes neither another script nor the engine. The
-- DSL's metatables (monoids, sources...) are shared by every load too, and
-- are shown read-only for the same reason.
local function sandbox_getmetatable(string_view)
  local function frozen(t, what)
    return setmetatable({}, {
      __index = t,
      __newindex = function() error(what .. " is read-only in pipeline scripts", 2) end,
      __metatable = false,
    })
  end
  local string_mt = frozen({ __index = frozen(string_view, "the string library") }, "the string metatable")
  return function(v)
    if type(v) == "string" then return string_mt end
    local mt = getmetatable(v)
    if type(mt) == "table" and rawget(mt, "__murmur") ~= nil then return frozen(mt, "a murmur object's metatable") end
    return mt
  end
end

local function new_env(collector, dir, loaded)
  local env = {}
  for _, k in ipairs(SAFE) do env[k] = _G[k] end
  for _, k in ipairs(SAFE_LIBS) do env[k] = copy(_G[k]) end
  local safe_os = {}
  for _, k in ipairs(SAFE_OS) do safe_os[k] = os[k] end
  -- Secrets stay out of scripts: MURMUR_* settings and granted env:NAME only.
  safe_os.getenv = grants.getenv
  env.getmetatable = sandbox_getmetatable(env.string)
  local murmur = dsl.bind(collector)
  env.require = function(name)
    if type(name) ~= "string" then error("require expects a module name", 2) end
    if name == "murmur" then return murmur end
    if loaded[name] ~= nil then return loaded[name] end
    if not name:match("^[%w_.]+$") then error(("module name '%s' is not allowed"):format(name), 2) end
    local path = dir .. "/" .. name:gsub("%.", "/") .. ".lua"
    local src = read_file(path)
    if not src then
      error(("module '%s' not found (pipeline scripts can require murmur and modules next to them: %s)"):format(name, path), 2)
    end
    local chunk, err = load_text(src, path)
    if not chunk then error(err, 0) end
    setfenv(chunk, env)
    loaded[name] = true -- guards against require cycles
    local result = chunk(name)
    if result == nil then result = true end
    loaded[name] = result
    collector.modules[#collector.modules + 1] = path
    return result
  end
  return setmetatable(env, {
    __index = function(_, k)
      local allow = collector.allow or {}
      if k == "os" then return allow.os and os or safe_os end
      if k == "io" and allow.io then return io end
      if k == "murmur" then return murmur end
      return nil
    end,
  })
end

-- Loads one script: a file, or the name of a shipped pipeline (murmur.shipped).
-- Returns the collector { pipelines = {spec...}, modules = {path...}, path,
-- source } or nil, "file:line: message".
function M.load(path)
  local found, ferr = require("murmur.shipped").resolve(path)
  if not found then return nil, ferr end
  path = found
  local src, err = read_file(path)
  if not src then return nil, ("%s: cannot read the script: %s"):format(path, err) end
  local collector = dsl._new_collector()
  collector.modules, collector.path, collector.source = {}, path, src
  local chunk
  chunk, err = load_text(src, path)
  if not chunk then return nil, err end
  setfenv(chunk, new_env(collector, dirname(path), {}))
  -- Paths the script names are checked against its directory (murmur.grants).
  grants.begin_load(path)
  local ok, perr = run_limited(chunk, path)
  grants.end_load()
  if not ok then return nil, perr end
  if #collector.pipelines == 0 then
    return nil, ("%s: the script defines no pipeline (call murmur.pipeline{...})"):format(path)
  end
  return collector
end

-- Loads several scripts; pipeline names must be unique across them.
-- Returns specs, nil, modules (the paths of required modules) or nil, message.
function M.load_all(paths)
  local all, seen, modules = {}, {}, {}
  for _, path in ipairs(paths) do
    local c, err = M.load(path)
    if not c then return nil, err end
    for _, m in ipairs(c.modules) do modules[#modules + 1] = m end
    for _, spec in ipairs(c.pipelines) do
      if seen[spec.name] then
        return nil, ("%s: pipeline '%s' is already defined at %s"):format(spec.where, spec.name, seen[spec.name].where)
      end
      seen[spec.name] = spec
      spec.script = path
      all[#all + 1] = spec
    end
  end
  return all, nil, modules
end

return M
