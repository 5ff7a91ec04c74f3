-- benchutil: what the Kinesis and Lambda benches share (tests/bench/kinesis.lua,
-- tests/bench/lambda.lua): reading a file, running a shell command for its
-- output, and quantiles. They run from the checkout's root, as make bench
-- does, and find this file with package.path = "tests/bench/?.lua;...".
local M = {}

-- The whole file, or nil when it cannot be read.
function M.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- Runs a shell command; returns its stdout, or raises with it if it failed.
function M.sh(cmd)
  local p = assert(io.popen("(" .. cmd .. "); echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  local rc = tonumber(out:match("__rc=(%d+)%s*$"))
  out = out:gsub("__rc=%d+%s*$", "")
  if rc ~= 0 then error("bench: command failed: " .. cmd .. "\n" .. out) end
  return out
end

-- The q-quantile of a list (nearest rank); sorts the list.
function M.quantile(t, q)
  table.sort(t)
  return t[math.max(1, math.ceil(q * #t))]
end

return M
