-- DynamoDB benchmark (make bench, when node and tests/node are installed):
-- `murmur run --once` from the generated Zipf files into dynalite, one fresh
-- table per case, flushing by interval with large batches as a production
-- deployment would. Prints events/s (wall), store requests per event, the
-- apply (flush) latency p50/p99 measured by the store, and how the CPU time
-- splits between murmur and the emulator: when dynalite is busy and murmur
-- is not, the emulator is the limit. Then the query service's GetMany of 100
-- entities: store requests per call; and the instructions per DynamoDB
-- request, counted by callgrind (when valgrind is installed).
--
-- usage: murmur lua tests/bench/dynamodb.lua DIR EVENTS
-- DIR holds events.jsonl (no ids) and events-with-ids.jsonl from run.sh; the
-- dedup case reads the first 50 000 events with ids (one claim per event:
-- the emulator's request rate decides its duration).
local core = require("murmur.core")
io.stdout:setvbuf("line") -- run.sh reads the output through a pipe: a line at a time

local dir = arg[1]
local murmur = os.getenv("MURMUR") or "build/murmur"
local input = dir .. "/events.jsonl"

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- CPU seconds (user + system) a process has used so far, from /proc.
local function cpu_of(pid)
  local stat = read("/proc/" .. pid .. "/stat")
  if not stat then return 0 end
  local fields = {}
  for x in stat:gsub("^.-%) ", ""):gmatch("%S+") do fields[#fields + 1] = x end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100 -- utime, stime (clock ticks)
end

-- The port a starting process writes into its log (the first capture of
-- pattern), waiting up to 10 s.
local function port_in(log, pattern, what)
  for _ = 1, 200 do
    local port = (read(log) or ""):match(pattern)
    if port then return port end
    os.execute("sleep 0.05")
  end
  error(what .. " did not start: " .. (read(log) or ""))
end

-- dynalite on a free port, in memory.
local dlog = dir .. "/dynalite.log"
os.remove(dlog)
os.execute(("node tests/node/dynalite_server.js > %s 2>&1 & echo $! > %s/dynalite.pid"):format(dlog, dir))
local dpid = tonumber(read(dir .. "/dynalite.pid"))
local port = port_in(dlog, "listening (%d+)", "dynalite")

local env = ("AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench MURMUR_DYNAMODB_ENDPOINT=http://127.0.0.1:%s")
  :format(port)
local cases = 0

-- murmur's CPU seconds (user and system, from --stats) for the script on
-- the input with the memory store: the same parsing, aggregation and flush
-- work without any request.
local function memory_cpu(script, case_input, tag)
  local out = sh(("%s run --once --no-supervisor --stats --store memory --log-level warn --data %s/data-mem-%s --input %s %s")
    :format(murmur, dir, tag, case_input, script))
  local stats = assert(core.json_decode(out), out)
  return stats.cpu_user_s, stats.cpu_sys_s
end

-- The largest blocked loop lag (looplag.h: the probe timer's lateness less
-- the loop thread's waits for a CPU) over the cases: issue 9, item 1 asks
-- that nothing blocks the loop for 50 ms while the store works.
local loop_block_max = 0

-- per_request: also measure murmur's CPU per DynamoDB request, the
-- difference between this run and the same run on the memory store over the
-- requests (issue 14, item 5: signing, request building, connection
-- handling), returned as { us, user, sys } after the requests, the records
-- and the table's name.
local function run_case(name, pipeline, body, case_input, per_request)
  case_input = case_input or input
  cases = cases + 1
  local table_name = "bench_" .. cases
  local script = ("%s/%s.lua"):format(dir, table_name)
  local f = assert(io.open(script, "w"))
  f:write('local murmur = require("murmur")\nmurmur.pipeline {\n  name = "', pipeline, '",\n', body, "\n}\n")
  f:close()
  sh(("env %s MURMUR_DYNAMODB_TABLE=%s %s ddb create-table 2>&1"):format(env, table_name, murmur))
  local errlog = dir .. "/" .. table_name .. ".log"
  local cmd = ("env %s MURMUR_DYNAMODB_TABLE=%s %s run --once --no-supervisor --stats --store dynamodb "
    .. "--log-level info --data %s/data-%s --input %s %s 2>%s"):format(env, table_name, murmur, dir,
    table_name, case_input, script, errlog)
  local d0, t0 = cpu_of(dpid), core.now_ms()
  local out = sh(cmd)
  local wall = (core.now_ms() - t0) / 1000
  local dcpu = cpu_of(dpid) - d0
  local stats = core.json_decode(out)
  local log = read(errlog) or ""
  if not stats then error("bench case " .. name .. " failed: " .. out .. log) end
  local requests = tonumber(log:match("%[dynamodb%] (%d+) requests")) or 0
  local p50, p99 = log:match("p50 ([%d.]+) ms, p99 ([%d.]+) ms")
  local mcpu = stats.cpu_user_s + stats.cpu_sys_s
  print(("%-34s %9.0f events/s  %.6f requests/event (%d)  %3d flushes  flush p50 %s ms p99 %s ms  "
    .. "cpu: murmur %.1f s, dynalite %.1f s (murmur %.0f%% of the pair), wall %.1f s  "
    .. "loop lag max %.1f ms (blocked %.1f ms)")
    :format(name, stats.records / wall, requests / stats.records, requests, stats.flushes, p50 or "-",
      p99 or "-", mcpu, dcpu, 100 * mcpu / math.max(mcpu + dcpu, 1e-9), wall, stats.loop_lag_ms_max,
      stats.loop_block_ms_max))
  if stats.loop_block_ms_max > loop_block_max then loop_block_max = stats.loop_block_ms_max end
  local pr
  if per_request and requests > 0 then
    local bu, bs = memory_cpu(script, case_input, table_name)
    pr = { us = (mcpu - bu - bs) * 1e6 / requests, user = (stats.cpu_user_s - bu) * 1e6 / requests,
      sys = (stats.cpu_sys_s - bs) * 1e6 / requests }
    print(("%-34s %.1f us ((%.2f s - %.2f s on the memory store) / %d requests; user %.1f us, system %.1f us)")
      :format("  murmur CPU per request", pr.us, mcpu, bu + bs, requests, pr.user, pr.sys))
  end
  return requests, stats.records, table_name, pr
end

-- Issue 14, item 5 on a case run reps times, each into a table of its own:
-- the target on the median run's CPU per request, with the range, since a
-- run's figure moves with the shared host by a few us (dynalite's node
-- process keeps the other core busy meanwhile). Right after each run, the
-- floor: the same number of requests of the same shape into the same table
-- from a minimal client (tests/bench/dynamodb_floor.c: one writev and one
-- read each, no signing), whose system time is the kernel's share that no
-- client can avoid. murmur's own share is what it spends above the floor,
-- in user space (signing, building, parsing) and in the kernel (any system
-- call the floor does not make), taken within each pair of runs and
-- reported as the median of the pairs, as the ratios against B0 are: the
-- host's speed moves both sides of a pair together. The kernel splits CPU
-- time between user and system by sampling at each tick, so each half
-- wanders by a few us from run to run; their sum does not.
local function median(xs)
  local s = {}
  for i, x in ipairs(xs) do s[i] = x end
  table.sort(s)
  return s[math.floor((#s + 1) / 2)]
end

local function per_request_case(reps, name, pipeline, body)
  local floor = ("%s/bench/dynamodb_floor"):format(os.getenv("BUILD") or "build")
  local has_floor = sh(("test -x %s && echo yes"):format(floor)):match("yes")
  local runs, floors, above, above_user, above_sys = {}, {}, {}, {}, {}
  for _ = 1, reps do
    local requests, _, table_name, pr = run_case(name, pipeline, body, nil, true)
    if pr then
      runs[#runs + 1] = pr
      if has_floor then
        local line = (sh(("%s %s %s %d 32"):format(floor, port, table_name, requests)):gsub("\n$", ""))
        print(("%-34s %s"):format("  floor (tests/bench/dynamodb_floor)", line))
        local fu, fs = line:match("user ([%d.]+) us, system ([%d.]+) us")
        if fu then
          fu, fs = tonumber(fu), tonumber(fs)
          floors[#floors + 1] = fu + fs
          above[#above + 1], above_user[#above_user + 1], above_sys[#above_sys + 1] =
            pr.us - fu - fs, pr.user - fu, pr.sys - fs
        end
      end
    end
  end
  if #runs == 0 then return end
  table.sort(runs, function(a, b) return a.us < b.us end)
  local m = runs[math.floor((#runs + 1) / 2)]
  print(("%s  %-58s %.1f us (median of %d runs, %.1f to %.1f; user %.1f us, system %.1f us)")
    :format(m.us <= 20 and "PASS" or "MISS", "murmur CPU per DynamoDB request <= 20 us", m.us, #runs, runs[1].us,
      runs[#runs].us, m.user, m.sys))
  if #above > 0 then
    table.sort(floors)
    print(("%-34s %.1f us per request (median of %d runs, %.1f to %.1f)")
      :format("floor (tests/bench/dynamodb_floor)", median(floors), #floors, floors[1], floors[#floors]))
    print(("%-34s %.1f us per request (median of %d pairs; user %+.1f us, system %+.1f us)")
      :format("murmur above the floor", median(above), #above, median(above_user), median(above_sys)))
  end
end

print(("dynamodb bench: dynalite 4.0.0 (in memory) on 127.0.0.1:%s, max_inflight 32, one flush per 30 s or 10M events (so one per file)")
  :format(port))
run_case("recently_interacted (Top-K, 1 key)", "recently_interacted", [[
  key = murmur.literal("global"), value = "entity_id", monoid = murmur.topk { k = 32 },
  window = murmur.daily { retention = "30d" },
  flush = { events = 10000000, keys = 10000000, interval = "30s" },]])
per_request_case(tonumber(os.getenv("BENCH_DDB_REPS") or "") or 3, "page_views (sum per page)", "page_views", [[
  key = "page_id", monoid = murmur.sum {}, value = 1, window = murmur.daily { retention = "90d" },
  flush = { events = 10000000, keys = 10000000, interval = "30s" },]])
run_case("unique_visitors (HLL per page)", "unique_visitors", [[
  key = "page_id", value = "user_id", monoid = murmur.hll {}, window = murmur.daily { retention = "90d" },
  flush = { events = 10000000, keys = 10000000, interval = "30s" },]])
-- The query service's GetMany of 100 entities over this store: the store
-- requests each call costs, counted by the server's own /metrics
-- (murmur_dynamodb_requests_total by operation), and its latency there
-- (murmur_query_request_duration_seconds, decode to encode). The issue's
-- contract: one BatchGetItem per 100 keys.
local function serve_get_many()
  local ENTITIES, CALLS = 1000, 50
  local table_name = "bench_serve"
  local script = dir .. "/bench_serve.lua"
  local ev = {}
  for i = 1, 5 * ENTITIES do ev[i] = ('{"page":"p%d","n":%d}'):format(i % ENTITIES, i) end
  local f = assert(io.open(dir .. "/serve_events.jsonl", "w"))
  f:write(table.concat(ev, "\n"), "\n")
  f:close()
  f = assert(io.open(script, "w"))
  f:write('local murmur = require("murmur")\n'
    .. 'murmur.pipeline { name = "page_totals", key = "page", monoid = murmur.sum {}, value = "n" }\n')
  f:close()
  local tenv = ("env %s MURMUR_DYNAMODB_TABLE=%s"):format(env, table_name)
  sh(("%s %s ddb create-table 2>&1"):format(tenv, murmur))
  sh(("%s %s run --once --no-supervisor --store dynamodb --log-level warn --data %s/data-serve --input %s/serve_events.jsonl %s 2>&1")
    :format(tenv, murmur, dir, dir, script))
  local log = dir .. "/serve_dynamodb.log"
  local pid = sh(("%s %s serve %s --store dynamodb --listen 127.0.0.1:0 > %s 2>&1 & echo $!")
    :format(tenv, murmur, script, log)):match("%d+")
  local sport = port_in(log, "listening on http://[^\n]-:(%d+)", "murmur serve")
  local function metrics()
    local m, text = {}, sh(("curl -s http://127.0.0.1:%s/metrics"):format(sport))
    for op, v in text:gmatch('murmur_dynamodb_requests_total{operation="(%w+)"} ([%d.e+]+)') do m[op] = tonumber(v) end
    m.ns = tonumber(text:match('murmur_query_request_duration_seconds_sum{method="GetMany"} ([%d.e+-]+)')) or 0
    return m
  end
  local function call(c)
    local ents = {}
    for k = 1, 100 do ents[k] = '"p' .. ((c * 100 + k) % ENTITIES) .. '"' end
    local out = sh(("curl -s -X POST -H 'content-type: application/json' -d '{\"pipeline\":\"page_totals\",\"entities\":[%s]}' http://127.0.0.1:%s/murmur.v1.QueryService/GetMany")
      :format(table.concat(ents, ","), sport))
    local _, found = out:gsub('"found":true', "")
    assert(found == 100, "GetMany: " .. out:sub(1, 300))
  end
  call(0) -- reads the pipeline's descriptor once
  local m0 = metrics()
  for c = 1, CALLS do call(c) end
  local m1 = metrics()
  os.execute("kill -TERM " .. pid)
  local batch, other = (m1.BatchGetItem or 0) - (m0.BatchGetItem or 0), 0
  for op, v in pairs(m1) do
    if op ~= "BatchGetItem" and op ~= "ns" then other = other + v - (m0[op] or 0) end
  end
  print(("%-34s %.2f BatchGetItem + %.2f other requests per call (%d calls), %.2f ms per call in the server")
    :format("serve GetMany (100 entities)", batch / CALLS, other / CALLS, CALLS, (m1.ns - m0.ns) * 1e3 / CALLS))
  print(("%s  %-58s %.2f"):format(batch == CALLS and other == 0 and "PASS" or "MISS",
    "store requests per GetMany of 100 keys = 1 BatchGetItem", (batch + other) / CALLS))
end
serve_get_many()

-- Instructions per DynamoDB request, counted by callgrind: stable where the
-- CPU seconds above wander with the machine's load. tests/bench/perfgate_run.lua
-- (the engine as `murmur run --once` builds it, without the probe child
-- whose counts callgrind would add to the profile) runs page_views over the first 4 000 and the
-- first 8 000 events, each into a fresh table and on the memory store: the
-- difference between the two sizes leaves out the fixed costs (the HTTP
-- client's and OpenSSL's start-up, the table check), the memory store's difference
-- leaves out parsing and aggregation, and the rest is divided by the extra
-- requests (the calls of mm_http_request in the profiles). Valgrind's CPU has
-- no SHA extensions, so SHA-256 runs the portable code here: signing counts
-- more instructions than on the machine.
local function instr_per_request()
  if not sh("command -v valgrind 2>/dev/null"):match("%S") then
    print("instructions per DynamoDB request: skipped (valgrind missing: make deps)")
    return
  end
  local script = dir .. "/bench_instr.lua"
  local f = assert(io.open(script, "w"))
  f:write('local murmur = require("murmur")\nmurmur.pipeline {\n  name = "page_views",\n'
    .. '  key = "page_id", monoid = murmur.sum {}, value = 1, window = murmur.daily { retention = "90d" },\n}\n')
  f:close()
  -- Total instructions of a run over the first n events and its calls of
  -- mm_http_request.
  local function count(store, n)
    local tag = store .. "-" .. n
    local events, out, log = ("%s/events-%d.jsonl"):format(dir, n), ("%s/callgrind-%s.out"):format(dir, tag),
      ("%s/callgrind-%s.log"):format(dir, tag)
    local tenv = ("env %s MURMUR_DYNAMODB_TABLE=bench_instr_%d"):format(env, n)
    os.execute(("head -n %d %s > %s"):format(n, input, events))
    if store == "dynamodb" then sh(("%s %s ddb create-table 2>&1"):format(tenv, murmur)) end
    local ok = os.execute(("%s MURMUR_STORE=%s valgrind --tool=callgrind --compress-strings=no "
      .. "--callgrind-out-file=%s %s lua tests/bench/perfgate_run.lua %s/data-instr-%s %s %s >%s 2>&1")
      :format(tenv, store, out, murmur, dir, tag, events, script, log))
    local text = read(out)
    if (ok ~= true and ok ~= 0) or not text then error("callgrind run on " .. tag .. " failed: " .. (read(log) or "")) end
    local calls, total = 0, tonumber(text:match("\nsummary: (%d+)") or text:match("\ntotals: (%d+)"))
    for c in text:gmatch("\ncfn=[^\n]*mm_http_request\ncalls=(%d+)") do calls = calls + tonumber(c) end
    return total, calls
  end
  local d1, r1 = count("dynamodb", 4000)
  local d2, r2 = count("dynamodb", 8000)
  local m1, m2 = count("memory", 4000), count("memory", 8000)
  if r2 <= r1 then error("callgrind: no more requests counted at 8 000 events than at 4 000") end
  print(("%-34s %.0f instructions per request (((%.0f - %.0f) - (%.0f - %.0f) on the memory store) / (%d - %d) requests; "
    .. "callgrind, portable SHA-256)"):format("page_views, 8 000 - 4 000 events", ((d2 - d1) - (m2 - m1)) / (r2 - r1),
    d2, d1, m2, m1, r2, r1))
end
instr_per_request()
local ids = dir .. "/events-50k-ids.jsonl"
os.execute(("head -n 50000 %s/events-with-ids.jsonl > %s"):format(dir, ids))
local requests, events = run_case("recently_interacted + dedup (50k ids)", "recently_interacted_dedup", [[
  key = murmur.literal("global"), value = "entity_id", monoid = murmur.topk { k = 32 },
  window = murmur.daily { retention = "30d" }, dedup = { id = "event_id", ttl = "2d" },
  flush = { events = 10000000, keys = 10000000, interval = "30s" },]], ids)
-- Every event_id of the generated input is new, so requests per event are
-- requests per new id: issue 9 asks for under 0.1 (the claim floor below,
-- tests/bench/dynamodb_claim_floor.js, shows what that would take).
print(("%s  %-58s %.4f"):format(requests / events < 0.1 and "PASS" or "MISS",
  "store requests per new event id < 0.1 (issue 9)", requests / events))
print(("%s  %-58s %.1f ms"):format(loop_block_max < 50 and "PASS" or "MISS",
  "blocked loop lag into DynamoDB < 50 ms (issue 9)", loop_block_max))
os.execute("kill " .. dpid)
