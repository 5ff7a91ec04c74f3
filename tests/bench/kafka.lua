-- Kafka -> recently_interacted -> embedded store, from librdkafka's mock
-- cluster (build/helpers/kafka_mock, its own process on 127.0.0.1) fed by
-- kcat. Two measurements:
--
--   throughput: N events produced beforehand into 6 partitions, one worker
--     with --once; records/s over the wall time from its assignment to the end
--     of the input (the group join, about 3 s in the mock, is left out),
--     records per CPU-second of the worker, and commits/s;
--   end-to-end lag: the worker running, events produced in chunks; for each
--     chunk the time from kcat returning to the commit that covers it.
--
-- Times come from the worker's log lines (--log-level debug: one line per
-- commit with the sum of the committed offsets). Usage:
--   murmur lua tests/bench/kafka.lua DIR EVENTS_FILE
local core = require("murmur.core")
io.stdout:setvbuf("line") -- run.sh reads the output through a pipe: a line at a time

local dir, events = arg[1], arg[2]
local murmur = os.getenv("MURMUR") or "build/murmur"
local build = os.getenv("BUILD") or "build"
local N = tonumber(os.getenv("BENCH_KAFKA_EVENTS") or "1000000")
local CHUNKS, CHUNK = 10, 20000
local TIMEOUTS = "-X session.timeout.ms=6000 -X heartbeat.interval.ms=500 -X max.poll.interval.ms=10000"

local function sh(cmd)
  local ok = os.execute(cmd)
  if ok ~= 0 and ok ~= true then error("bench: command failed: " .. cmd) end
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function sleep(s) os.execute("sleep " .. s) end

local function wait_for(what, seconds, pred)
  for _ = 1, seconds * 20 do
    local v = pred()
    if v then return v end
    sleep(0.05)
  end
  error("bench: timed out waiting for " .. what)
end

-- The broker: a FIFO on its stdin carries commands, its stdout answers.
local ctl, out = dir .. "/kafka.ctl", dir .. "/kafka.out"
sh(("mkfifo %s"):format(ctl))
sh(("%s/helpers/kafka_mock 1 < %s > %s 2>&1 & echo $! > %s/kafka.pid"):format(build, ctl, out, dir))
local w = assert(io.open(ctl, "w"))
local bs = wait_for("the mock cluster", 10, function() return (read(out) or ""):match("^([%d%.:,]+)\n") end)
local seq = 0
local function mock(cmd)
  seq = seq + 1
  w:write(cmd, "\n")
  w:flush()
  wait_for(cmd, 10, function() return (read(out) or ""):find("\nok " .. seq .. "\n", 1, true) end)
end

local function stop_mock()
  w:close()
  os.execute(("kill -9 $(cat %s/kafka.pid) 2>/dev/null"):format(dir))
end

-- Keyed by line number: the partitions fill evenly (the mock keeps only the
-- last 5 MB of each).
local function produce(topic, file)
  sh(("awk '{print NR \"\\t\" $0}' %s | kcat -P -b %s -t %s -K '\\t' -X compression.codec=zstd -X linger.ms=20")
    :format(file, bs, topic))
end

local function log_ms(line)
  local ts = line:match("^(%S+)")
  return ts and core.parse_time(ts)
end

local function worker(topic, group, data, once, log)
  return ("%s run --no-supervisor --log-level debug --stats %s --data %s --kafka-brokers %s "
    .. "--kafka-topic %s --kafka-group %s %s pipelines/recently_interacted.lua 2>%s")
    :format(murmur, once and "--once" or "", data, bs, topic, group, TIMEOUTS, log)
end

local ok, err = pcall(function()
  -- Throughput.
  local input = dir .. "/kafka.jsonl"
  sh(("head -n %d %s > %s"):format(N, events, input))
  mock("topic bench 6")
  produce("bench", input)
  local log = dir .. "/kafka-throughput.log"
  local p = assert(io.popen(worker("bench", "bench", dir .. "/kdata", true, log)))
  local stats = core.json_decode(p:read("*a"))
  p:close()
  if not stats then error("the worker failed: " .. (read(log) or "")) end
  local t_assign, t_eof, commits
  for line in io.lines(log) do
    if not t_assign and line:find("assigned bench%[") then t_assign = log_ms(line) end
    if line:find("reached the end of its input", 1, true) then t_eof = log_ms(line) end
    if t_assign and not t_eof and line:find("committed offsets sum to", 1, true) then
      commits = (commits or 0) + 1
    end
  end
  local secs = (t_eof - t_assign) / 1000
  local cpu = stats.cpu_user_s + stats.cpu_sys_s
  print(("%-44s %10.0f records/s  %7.0f ns/record  %10.0f records/cpu-s  %5.1f commits/s  %4d flushes  peak RSS %d MiB")
    :format("kafka -> recently_interacted (6 partitions)", stats.records / secs, secs * 1e9 / stats.records,
      stats.records / cpu, (commits or 0) / secs, stats.flushes, stats.max_rss_kb / 1024))
  if stats.records ~= N then error(("read %d records of %d"):format(stats.records, N)) end

  -- End-to-end lag.
  mock("topic lag 6")
  local lagdata, laglog = dir .. "/klag", dir .. "/kafka-lag.log"
  sh(worker("lag", "lag", lagdata, false, laglog) .. (" >/dev/null & echo $! > %s/worker.pid"):format(dir))
  wait_for("the lag worker's assignment", 30, function() return (read(laglog) or ""):find("assigned lag%[") end)
  local ends, total = {}, 0
  for i = 1, CHUNKS do
    local chunk = dir .. "/chunk.jsonl"
    sh(("sed -n '%d,%dp' %s > %s"):format((i - 1) * CHUNK + 1, i * CHUNK, events, chunk))
    produce("lag", chunk)
    total = total + CHUNK
    ends[i] = { at = core.now_ms(), upto = total }
    sleep(0.2)
  end
  wait_for("the last commit", 30, function()
    local s = read(laglog) or ""
    for sum in s:gmatch("committed offsets sum to (%d+)") do
      if tonumber(sum) >= total then return true end
    end
  end)
  os.execute(("kill -TERM $(cat %s/worker.pid)"):format(dir))
  local commits_seen = {}
  for line in io.lines(laglog) do
    local sum = line:match("committed offsets sum to (%d+)")
    if sum then commits_seen[#commits_seen + 1] = { at = log_ms(line), sum = tonumber(sum) } end
  end
  local lags = {}
  for _, e in ipairs(ends) do
    for _, c in ipairs(commits_seen) do
      if c.sum >= e.upto then
        -- kcat returns after its delivery reports: the worker may already
        -- have committed the chunk by then.
        lags[#lags + 1] = math.max(0, c.at - e.at)
        break
      end
    end
  end
  table.sort(lags)
  print(("%-44s p50 %d ms, max %d ms (%d chunks of %d records, produce -> commit)")
    :format("kafka end-to-end lag", lags[math.ceil(#lags / 2)], lags[#lags], CHUNKS, CHUNK))
  sleep(1)
end)
stop_mock()
if not ok then error(err) end
