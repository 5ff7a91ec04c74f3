-- murmur.shipped: the pipelines that ship with murmur, found by name.
--
-- They are Lua modules `murmur.pipelines.<name>`: an installed tree has them
-- in share/lua/5.1/murmur/pipelines/ (the rockspec and `make install` put
-- them there), a source checkout through the symlink lua/murmur/pipelines ->
-- ../../pipelines, so the binary's package.path finds both. `murmur run
-- recently_interacted` therefore works from any directory: a script argument
-- that is not a file and has no '/' is looked up here.
local M = {}

local PREFIX = "murmur.pipelines."

local function is_file(path)
  local f = io.open(path, "rb")
  if not f then return false end
  -- A directory opens on Linux but cannot be read.
  local ok = f:read(0) ~= nil or f:read("*a") == ""
  f:close()
  return ok
end

-- The directories package.path maps murmur.pipelines.* to, in search order.
local function dirs()
  local list, seen = {}, {}
  for template in package.path:gmatch("[^;]+") do
    local dir = template:match("^(.*)/%?%.lua$")
    if dir then
      dir = dir .. "/murmur/pipelines"
      if not seen[dir] then
        seen[dir] = true
        list[#list + 1] = dir
      end
    end
  end
  return list
end

-- Names of the shipped pipelines (sorted, without .lua), from every
-- directory of package.path that has some.
function M.list()
  local names, seen = {}, {}
  for _, dir in ipairs(dirs()) do
    local p = io.popen("ls -1 '" .. dir:gsub("'", "'\\''") .. "' 2>/dev/null")
    if p then
      for file in p:lines() do
        local name = file:match("^([%w_.-]+)%.lua$")
        if name and not seen[name] then
          seen[name] = true
          names[#names + 1] = name
        end
      end
      p:close()
    end
  end
  table.sort(names)
  return names
end

-- "/a/bin/../share/x.lua" -> "/a/share/x.lua", so messages show short paths
-- (package.path has the binary's directory followed by ../; /proc/self/exe
-- has no symlinks).
local function normalize(path)
  local parts = {}
  for part in path:gmatch("[^/]+") do
    if part == ".." and #parts > 0 and parts[#parts] ~= ".." then
      parts[#parts] = nil
    elseif part ~= "." then
      parts[#parts + 1] = part
    end
  end
  return (path:sub(1, 1) == "/" and "/" or "") .. table.concat(parts, "/")
end

-- Returns the path a script argument names: the argument itself when it is a
-- file or has a '/', else the shipped pipeline of that name (with or without
-- .lua), else nil and a message naming the shipped pipelines.
function M.resolve(arg)
  if arg:find("/", 1, true) or is_file(arg) then return arg end
  local name = arg:gsub("%.lua$", "")
  if name:match("^[%w_-]+$") then
    local path = package.searchpath(PREFIX .. name, package.path)
    if path then
      -- Lexical ".." removal is wrong across a symlinked directory: keep the
      -- short form only when it names a file too.
      local short = normalize(path)
      return is_file(short) and short or path
    end
  end
  local names = M.list()
  return nil, ("%s: no such file, and no shipped pipeline of that name (shipped: %s)")
    :format(arg, #names > 0 and table.concat(names, ", ") or "none found on package.path")
end

return M
