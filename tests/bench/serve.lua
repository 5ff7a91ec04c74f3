-- The query service under load: wrk against Get and GetWindow (30 daily
-- buckets) at 64 connections, the server pinned to one core and wrk to the
-- other, and the per-query cost against the `murmur query` command measured
-- in the same run. Run by tests/bench/run.sh when wrk is installed:
--
--   murmur lua tests/bench/serve.lua DIR
--
-- Data: two pipelines over 200 000 events on 1 000 entities spread over the
-- last 30 days, written by `murmur run --once` into a fresh LMDB store. wrk
-- rotates over the 1 000 entities (tests/bench/wrk_rotate.lua). Figures:
-- requests/s and p99 per method; the server's CPU per request
-- (1 / requests/s of its one core, and its user + system time per request
-- from /proc); the wall and CPU time of a whole `murmur query` process for
-- the same Get (start-up included: what an application paid before the
-- server existed, CPU from tests/bench/cpu's wait4), and the ratios; then
-- PASS/MISS against the issue's targets (>= 50 000 Get/s, p99 <= 2 ms, at
-- least 100 times cheaper per query than `murmur query`).
local core = require("murmur.core")
io.stdout:setvbuf("line") -- run.sh reads the output through a pipe: a line at a time
local ffi = require("ffi")

ffi.cdef [[ uint64_t uv_hrtime(void); ]]

local dir = arg[1]
local murmur = os.getenv("MURMUR") or "build/murmur"
local SECONDS = tonumber(os.getenv("BENCH_SERVE_SECONDS") or "10")
local ENTITIES, EVENTS, DAY = 1000, 200000, 86400

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end

local function hr() return tonumber(ffi.C.uv_hrtime()) end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

write(dir .. "/serve_bench.lua", [[
local murmur = require("murmur")
murmur.pipeline { name = "lookups", key = "user", monoid = murmur.sum {}, value = "n" }
murmur.pipeline { name = "daily", key = "user", monoid = murmur.count {}, time = "ts",
  window = murmur.daily { retention = "30d" } }
]])
do
  local now, f = os.time(), assert(io.open(dir .. "/serve_events.jsonl", "wb"))
  for i = 1, EVENTS do
    f:write(('{"user":"u%d","n":%d,"ts":%d}\n'):format(i % ENTITIES, i % 97, now - (i % 30) * DAY))
  end
  f:close()
end
local data = dir .. "/serve_data"
assert(os.execute(("%s run --once --data %s --input %s %s/serve_bench.lua 2>/dev/null")
  :format(murmur, data, dir .. "/serve_events.jsonl", dir)) == 0, "murmur run failed")

local cores = tonumber(sh("nproc")) or 1
local pin_server = cores >= 2 and "taskset -c 0 " or ""
local pin_wrk = cores >= 2 and "taskset -c 1 " or ""
local log = dir .. "/serve.log"
local pid = sh(("%s%s serve --data %s --listen 127.0.0.1:0 > %s 2>&1 & echo $!"):format(pin_server, murmur, data, log)):match("%d+")
local port
for _ = 1, 200 do
  local f = io.open(log)
  port = f and f:read("*a"):match("listening on http://[^\n]-:(%d+)")
  if f then f:close() end
  if port then break end
  os.execute("sleep 0.05")
end
assert(port, "murmur serve did not start")

local function p99_ms(out)
  local v, unit = out:match("\n%s+99%%%s+([%d%.]+)(%a+)")
  if not v then return nil end
  return tonumber(v) * ({ us = 0.001, ms = 1, s = 1000 })[unit]
end

-- The server's user + system CPU time so far, in seconds (fields 14 and 15
-- of /proc/PID/stat, in clock ticks).
local TICK = tonumber(sh("getconf CLK_TCK")) or 100
local function server_cpu()
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local stat = f:read("*a")
  f:close()
  local fields = {}
  for w in stat:gsub("^.*%) ", ""):gmatch("%S+") do fields[#fields + 1] = w end
  -- After the ") " that ends the command name, utime and stime are the
  -- 12th and 13th fields.
  return (tonumber(fields[12]) + tonumber(fields[13])) / TICK
end

local function run_wrk(method, body)
  local cpu0 = server_cpu()
  local out = sh(("BODY=%s %swrk -t1 -c64 -d%ds --latency -s tests/bench/wrk_rotate.lua http://127.0.0.1:%s/murmur.v1.QueryService/%s 2>&1")
    :format(("'%s'"):format(body), pin_wrk, SECONDS, port, method))
  local rps = tonumber(out:match("Requests/sec:%s+([%d%.]+)"))
  local errors = out:match("Non%-2xx or 3xx responses: (%d+)")
  assert(rps and not errors, "wrk: " .. out)
  local n, cpu1 = tonumber(out:match("(%d+) requests in")), server_cpu()
  return rps, p99_ms(out), cpu0 and cpu1 and n and (cpu1 - cpu0) * 1e6 / n
end

-- Warm the page cache and the descriptor cache first.
run_wrk("Get", '{"pipeline":"lookups","entity":"uENTITY"}')
local get_rps, get_p99, get_cpu_us = run_wrk("Get", '{"pipeline":"lookups","entity":"uENTITY"}')
local win_rps, win_p99 = run_wrk("GetWindow", '{"pipeline":"daily","entity":"uENTITY","window":"30d"}')
os.execute("kill -TERM " .. pid)

-- The same Get as a `murmur query` process, timed whole; its CPU from
-- wait4 when the bench's cpu tool is built.
local N = 20
local cpu_tool = (os.getenv("BUILD") or "build") .. "/bench/cpu"
local report = dir .. "/serve_query_cpu.txt"
local have_cpu_tool = os.execute(("test -x %s"):format(cpu_tool)) == 0
os.remove(report)
local t0 = hr()
for i = 1, N do
  sh(("%s%s query lookups u%d --data %s --json"):format(have_cpu_tool and (cpu_tool .. " " .. report .. " ") or "",
    murmur, i, data))
end
local query_us = (hr() - t0) / 1e3 / N
local query_cpu_us
if have_cpu_tool then
  local f, total, n = io.open(report), 0, 0
  for line in f:lines() do
    local u, sy = line:match("^(%S+) (%S+)")
    total, n = total + tonumber(u) + tonumber(sy), n + 1
  end
  f:close()
  query_cpu_us = n == N and total * 1e6 / n or nil
end

print(("serve: Get        %8.0f req/s  p99 %6.2f ms  (64 connections, server on %s, wrk on %s)")
  :format(get_rps, get_p99 or -1, cores >= 2 and "core 0" or "the only core", cores >= 2 and "core 1" or "it too"))
print(("serve: GetWindow  %8.0f req/s  p99 %6.2f ms  (30 daily buckets merged per request)"):format(win_rps, win_p99 or -1))
local per_get = 1e6 / get_rps
print(("serve: per query: %.1f us of the server's core for a Get, %.0f us for a murmur query process: %.0fx cheaper")
  :format(per_get, query_us, query_us / per_get))
if get_cpu_us then
  -- 1 / requests/s counts the time the server waited for a busy core too;
  -- this is the CPU it used, and the ceiling that implies for one core.
  print(("serve: server CPU per Get: %.1f us (user + system), a ceiling of %.0f Get/s on one core")
    :format(get_cpu_us, 1e6 / get_cpu_us))
end
if get_cpu_us and query_cpu_us then
  print(("serve: CPU per query: %.1f us per Get in the server, %.0f us per murmur query process: %.0fx cheaper")
    :format(get_cpu_us, query_cpu_us, query_cpu_us / get_cpu_us))
end
local function verdict(ok, what, value)
  print(("%s  %-58s %s"):format(ok and "PASS" or "MISS", what, value))
end
verdict(get_rps >= 50000, "Get >= 50 000 requests/s (64 connections, one core)", ("%.0f/s"):format(get_rps))
verdict(get_p99 ~= nil and get_p99 <= 2, "Get p99 <= 2 ms", ("%.2f ms"):format(get_p99 or -1))
verdict(query_us / per_get >= 100, "Get >= 100x cheaper than murmur query (core time, wall)",
  ("%.0fx"):format(query_us / per_get))
if get_cpu_us and query_cpu_us then
  verdict(query_cpu_us / get_cpu_us >= 100, "Get >= 100x cheaper than murmur query (CPU)",
    ("%.0fx"):format(query_cpu_us / get_cpu_us))
end
