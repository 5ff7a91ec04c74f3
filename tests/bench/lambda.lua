-- `murmur lambda` as deployed: the zip tools/lambda_zip.sh builds, unpacked
-- and run through its bootstrap by the Runtime API emulator
-- (tests/node/lambda_emulator.js), fed Kinesis batches by the event source
-- mapping's stand-in (tests/node/kinesis_lambda_feed.mjs: records put into
-- kinesalite with AWS's SDK and read back, so sequence numbers are real),
-- into dynalite behind tests/node/fault_proxy.js (no faults: it counts the
-- requests by operation).
--
-- For batches of 100 and of 1 000 records of one shard, recently_interacted
-- (unchanged, with event ids) into a fresh table:
--   invocation time p50/p99: from the emulator handing the event to the
--     runtime (the answer to its /next) to the runtime's /response;
--   DynamoDB requests per invocation, by operation.
-- Then the cold start: from the emulator starting bootstrap to the runtime's
-- first /next (loaded script, opened store, ready to be invoked), for the
-- first start and for restarts after SIGKILL; target <= 50 ms. Beside it, the
-- CPU time the runtime's threads used until then and the time they waited
-- for a CPU (the emulator reads both from /proc), which tell the process's
-- own cost from the machine's load.
--
-- usage: murmur lua tests/bench/lambda.lua DIR EVENTS_FILE
-- BENCH_LAMBDA_INVOCATIONS (default 100 batches of 100 records, and 30% as
-- many batches of 1 000) and BENCH_LAMBDA_COLD (restarts, default 10) size it.
local core = require("murmur.core")
io.stdout:setvbuf("line") -- run.sh reads the output through a pipe: a line at a time
package.path = "tests/bench/?.lua;" .. package.path
local U = require("benchutil")
local read, sh, quantile = U.read, U.sh, U.quantile

local dir, events = arg[1], arg[2]
local murmur = os.getenv("MURMUR") or "build/murmur"
local INVOCATIONS = tonumber(os.getenv("BENCH_LAMBDA_INVOCATIONS") or "100")
local COLD = tonumber(os.getenv("BENCH_LAMBDA_COLD") or "10")
local CREDS = "NODE_NO_WARNINGS=1 AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_SESSION_TOKEN=bench"

local function sleep(s) os.execute("sleep " .. s) end

-- Starts a Node service in the background; returns its pid and the port its
-- log announces ("listening <port>").
local function service(name, cmd)
  local log = ("%s/%s.log"):format(dir, name)
  local pid = tonumber(sh(("%s > %s 2>&1 & echo $!"):format(cmd, log)))
  for _ = 1, 400 do
    local port = (read(log) or ""):match("listening (%d+)")
    if port then return pid, tonumber(port) end
    sleep(0.05)
  end
  error(name .. " did not start: " .. (read(log) or ""))
end

local function http(method, port, path)
  return core.json_decode(sh(("curl -s -X %s http://127.0.0.1:%d%s"):format(method, port, path)))
end

local function total(requests)
  local n = 0
  for op, c in pairs(requests) do
    if op ~= "creds" then n = n + c end
  end
  return n
end

local pids = {}
local ok, err = pcall(function()
  -- The zip as make lambda lays it out, from the binary under test.
  local task = dir .. "/task"
  sh(("sh tools/lambda_zip.sh %s %s/murmur-lambda.zip && mkdir -p %s && cd %s && unzip -q %s/murmur-lambda.zip")
    :format(murmur, dir, task, task, dir))

  local ddb_pid, ddb = service("lambda-dynalite", "node tests/node/dynalite_server.js")
  pids[#pids + 1] = ddb_pid
  local proxy_pid, proxy = service("lambda-proxy", ("node tests/node/fault_proxy.js --target %d"):format(ddb))
  pids[#pids + 1] = proxy_pid
  local endpoint = ("http://127.0.0.1:%d"):format(proxy)
  print(("lambda: the zip's bootstrap under the Runtime API emulator, Kinesis batches of one shard from kinesalite, "
    .. "recently_interacted with event ids into dynalite (in memory) through a counting proxy"))

  local ready = { wall = {}, cpu = {}, wait = {}, faults = {} }
  for _, batch in ipairs({ 100, 1000 }) do
    local invocations = batch == 100 and INVOCATIONS or math.max(10, math.floor(INVOCATIONS * 0.3))
    local tbl = "lambda_" .. batch
    sh(("env %s MURMUR_DYNAMODB_ENDPOINT=%s MURMUR_DYNAMODB_TABLE=%s %s ddb create-table 2>&1"):format(CREDS,
      endpoint, tbl, murmur))
    local input = ("%s/lambda-%d.jsonl"):format(dir, batch)
    sh(("head -n %d %s > %s"):format(batch * invocations, events, input))
    local emu_pid, emu = service("lambda-emulator-" .. batch, ("env %s MURMUR_STORE=dynamodb "
      .. "MURMUR_DYNAMODB_ENDPOINT=%s MURMUR_DYNAMODB_TABLE=%s MURMUR_DATA=%s/lambda-data-%d "
      .. "node tests/node/lambda_emulator.js --handler pipelines/recently_interacted.lua --task-root %s -- %s/bootstrap")
      :format(CREDS, endpoint, tbl, dir, batch, task, task))
    pids[#pids + 1] = emu_pid
    local before = http("GET", proxy, "/__stats").requests
    local feed = core.json_decode(sh(("NODE_NO_WARNINGS=1 node tests/node/kinesis_lambda_feed.mjs --emulator %d --input %s --shards 1 "
      .. "--batch %d --timeout-ms 60000"):format(emu, input, batch)))
    local after = http("GET", proxy, "/__stats").requests
    if not feed or feed.invocations ~= invocations or feed.responses ~= invocations or feed.failures_reported ~= 0 then
      error(("batches of %d: the feed did not end with %d clean invocations: %s"):format(batch, invocations,
        core.json_encode(feed or {})))
    end
    local ms = feed.durations_ms
    local ops = {}
    for op, c in pairs(after) do
      local d = c - (before[op] or 0)
      if op ~= "creds" and d > 0 then ops[#ops + 1] = ("%s %.2f"):format(op, d / invocations) end
    end
    table.sort(ops)
    print(("%-44s p50 %6.1f ms  p99 %6.1f ms  %5.1f DynamoDB requests/invocation (%s); %d invocations")
      :format(("kinesis batch of %d records"):format(batch), quantile(ms, 0.5), quantile(ms, 0.99),
        (total(after) - total(before)) / invocations, table.concat(ops, ", "), invocations))

    -- Cold starts: the first start, then restarts after SIGKILL.
    local st = http("GET", emu, "/test/state")
    local function keep(i)
      ready.wall[#ready.wall + 1] = st.ready_ms[i]
      ready.cpu[#ready.cpu + 1] = st.ready_cpu_ms[i]
      ready.wait[#ready.wait + 1] = st.ready_wait_ms[i]
      ready.faults[#ready.faults + 1] = st.ready_faults[i]
    end
    keep(1)
    if batch == 1000 then
      for k = 1, COLD do
        http("POST", emu, "/test/kill")
        for _ = 1, 200 do
          st = http("GET", emu, "/test/state")
          if #st.ready_ms > k then break end
          sleep(0.05)
        end
        if #st.ready_ms <= k then error("the runtime did not come back after a kill") end
        keep(#st.ready_ms)
      end
    end
    http("POST", emu, "/test/stop")
    sleep(0.3)
  end
  local p50 = quantile(ready.wall, 0.5)
  print(("%s  %-58s p50 %.1f ms, max %.1f ms over %d starts (process start to its first /next)")
    :format(p50 <= 50 and "PASS" or "MISS", "lambda cold start <= 50 ms", p50, ready.wall[#ready.wall], #ready.wall))
  if #ready.cpu == #ready.wall then
    print(("%-44s CPU p50 %.1f ms (max %.1f), waiting for a CPU p50 %.1f ms (max %.1f)"):format(
      "  of which, in the runtime's threads", quantile(ready.cpu, 0.5), ready.cpu[#ready.cpu],
      quantile(ready.wait, 0.5), ready.wait[#ready.wait]))
  end
  if #ready.faults == #ready.wall then
    print(("%-44s p50 %d (max %d)"):format("  page faults of the runtime's process",
      quantile(ready.faults, 0.5), ready.faults[#ready.faults]))
  end
end)
for _, pid in ipairs(pids) do os.execute(("kill %d 2>/dev/null"):format(pid)) end
if not ok then error(err) end
