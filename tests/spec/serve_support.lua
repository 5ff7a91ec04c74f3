-- Shared by the murmur serve specs: a script with one pipeline per kind of
-- result, its data, starting and stopping `murmur serve`, and reading the
-- same entity back with `murmur query` for comparison.
local S = require("spec.support")
local core = require("murmur.core")

local M = {}

M.NOW = os.time()
M.DAY = 86400

M.SCRIPT = [[
local murmur = require("murmur")
murmur.pipeline { name = "views", key = "page", monoid = murmur.sum {}, value = "n" }
murmur.pipeline { name = "ratio", key = "page", monoid = murmur.sum { float = true }, value = "r" }
murmur.pipeline { name = "daily", key = "page", monoid = murmur.count {}, time = "ts",
  window = murmur.daily { retention = "30d" } }
murmur.pipeline { name = "top", key = "user", monoid = murmur.topk { k = 4 }, value = "page" }
murmur.pipeline { name = "uniq", key = "page", monoid = murmur.hll {}, value = "user" }
murmur.pipeline { name = "members", key = "page", monoid = murmur.set {}, value = "user" }
murmur.pipeline { name = "seen", key = "page", monoid = murmur.bloom {}, value = "user" }
murmur.pipeline { name = "latest", key = "page", monoid = murmur.last {}, value = "user", time = "ts",
  window = murmur.daily { retention = "30d" } }
murmur.pipeline { name = "big", key = "page", monoid = murmur.sum {}, value = "big" }
]]

-- Writes the script and runs it over 61 events into dir/data; returns the
-- script path and the data directory.
function M.make_data(dir)
  local data = dir .. "/data"
  S.write_file(dir .. "/p.lua", M.SCRIPT)
  local ev = {}
  for i = 1, 60 do
    ev[#ev + 1] = core.json_encode({ page = "p" .. (i % 3), user = "u" .. (i % 7), n = i, r = i / 4,
      ts = M.NOW - (i % 5) * M.DAY, big = 0 })
  end
  -- Written by hand: a Lua number cannot hold 2^53 + 1.
  ev[#ev + 1] = ('{"page":"p1","user":"u1","n":0,"r":0,"ts":%d,"big":9007199254740993}'):format(M.NOW)
  S.write_file(dir .. "/ev.jsonl", table.concat(ev, "\n") .. "\n")
  local code, _, err = S.murmur_run({ "run", dir .. "/p.lua", "--data", data, "--input", dir .. "/ev.jsonl", "--once" })
  assert(code == 0, err)
  return dir .. "/p.lua", data
end

-- Starts `murmur serve ARGS` (env: a prefix such as "env X=1"); returns its
-- handle and the port it reports.
function M.start(args, log, env)
  local parts = { S.quote(S.murmur), "serve" }
  for _, a in ipairs(args) do parts[#parts + 1] = S.quote(a) end
  local h = S.spawn((env or "") .. " " .. table.concat(parts, " "), log)
  for _ = 1, 200 do
    local s = S.read_file(log) or ""
    local port = s:match("listening on http://[^\n]-:(%d+)")
    if port then return h, tonumber(port) end
    if S.read_file(h.rcfile) then error("murmur serve exited: " .. s) end
    S.sleep(0.05)
  end
  error("murmur serve did not start: " .. (S.read_file(log) or ""))
end

-- SIGTERM; returns the exit code.
function M.stop(h)
  S.kill(h, "TERM")
  return S.wait_exit(h, 10)
end

function M.murmur_query(data, pipeline, entity, extra)
  local args = { "query", pipeline, entity, "--data", data, "--json" }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  local _, out = S.murmur_run(args)
  return core.json_decode(out)
end

-- A number the CLI printed (possibly int64 cdata) as a proto3 JSON string.
function M.digits(v)
  return (tostring(v):gsub("U?LL$", ""))
end

return M
