-- Kinesis polling source -> recently_interacted -> embedded store, from
-- kinesalite (tests/node/kinesalite_server.js, its own process on 127.0.0.1),
-- against kinesalite's own read ceiling measured in the same run.
--
-- One stream of one shard holds N records put beforehand with AWS's SDK
-- (tests/node/kinesis_tool.mjs put). Each repetition, interleaved so a slow
-- phase of the machine hits both:
--   ceiling: the SDK reads the shard from TRIM_HORIZON with back-to-back
--     GetRecords of 10 000 records, unpaced (kinesis_tool.mjs read);
--   murmur: `murmur run --once` of recently_interacted with
--     murmur.kinesis{} from TRIM_HORIZON into a fresh LMDB store; records/s
--     over the time from its "reading through" line to the end of its input
--     (start-up left out), and murmur's CPU per record (whole process,
--     start-up included).
-- Medians over the repetitions are printed, with the rate Kinesis's own
-- per-shard read limits (5 calls/s, 2 MB/s) would allow for these records.
--
-- usage: murmur lua tests/bench/kinesis.lua DIR EVENTS_FILE
-- BENCH_KINESIS_RECORDS (default 50 000) and BENCH_REPS (default 3) size it.
local core = require("murmur.core")
io.stdout:setvbuf("line") -- run.sh reads the output through a pipe: a line at a time
package.path = "tests/bench/?.lua;" .. package.path
local U = require("benchutil")
local read, sh_out = U.read, U.sh

local function median(t) return U.quantile(t, 0.5) end

local dir, events = arg[1], arg[2]
local murmur = os.getenv("MURMUR") or "build/murmur"
local N = tonumber(os.getenv("BENCH_KINESIS_RECORDS") or "50000")
local REPS = tonumber(os.getenv("BENCH_REPS") or "3")
local CREDS = "AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench"

local log = dir .. "/kinesalite.log"
os.execute(("node tests/node/kinesalite_server.js > %s 2>&1 & echo $! > %s/kinesalite.pid"):format(log, dir))
local port
for _ = 1, 200 do
  port = (read(log) or ""):match("listening (%d+)")
  if port then break end
  os.execute("sleep 0.05")
end
if not port then error("kinesalite did not start: " .. (read(log) or "")) end
local endpoint = "http://127.0.0.1:" .. port

local function tool(...)
  return sh_out(("env NODE_NO_WARNINGS=1 %s node tests/node/kinesis_tool.mjs --endpoint %s %s"):format(CREDS,
    endpoint, table.concat({ ... }, " ")))
end

local ok, err = pcall(function()
  local input = dir .. "/kinesis.jsonl"
  os.execute(("head -n %d %s > %s"):format(N, events, input))
  tool("create", "bench", "1")
  local t0 = core.now_ms()
  tool("put", "bench", input)
  local put_s = (core.now_ms() - t0) / 1000

  local script = dir .. "/kinesis_ri.lua"
  local f = assert(io.open(script, "w"))
  f:write([[
local murmur = require("murmur")
-- recently_interacted (pipelines/recently_interacted.lua) with a Kinesis source.
murmur.pipeline {
  name = "recently_interacted",
  source = murmur.kinesis { stream = "bench" },
  key = murmur.literal("global"),
  value = "entity_id",
  monoid = murmur.topk { k = 32 },
  window = murmur.daily { retention = "30d" },
  dedup = { id = "event_id", ttl = "2d" },
}
]])
  f:close()

  local ceiling, rate, cpu, bytes = {}, {}, {}, 0
  for rep = 1, REPS do
    local r = core.json_decode(tool("read", "bench"))
    if r.records ~= N then error(("the SDK read %d records of %d"):format(r.records, N)) end
    ceiling[#ceiling + 1] = r.records / r.seconds
    bytes = r.bytes

    local data, mlog = ("%s/kdata-%d"):format(dir, rep), ("%s/kinesis-%d.log"):format(dir, rep)
    local stats = core.json_decode(sh_out(("env %s %s run --once --no-supervisor --stats --data %s "
      .. "--kinesis-endpoint %s %s 2>%s"):format(CREDS, murmur, data, endpoint, script, mlog)))
    if not stats or stats.records ~= N then
      error(("murmur read %s records of %d: %s"):format(stats and stats.records or "no", N, read(mlog) or ""))
    end
    local t_start, t_end
    for line in io.lines(mlog) do
      if line:find("reading through", 1, true) then t_start = core.parse_time(line:match("^(%S+)")) end
      if line:find("reached the end of its input", 1, true) then t_end = core.parse_time(line:match("^(%S+)")) end
    end
    rate[#rate + 1] = N / ((t_end - t_start) / 1000)
    cpu[#cpu + 1] = (stats.cpu_user_s + stats.cpu_sys_s) * 1e9 / N
  end

  local per_record = bytes / N
  local limit = math.min(5 * 10000, 2 * 1024 * 1024 / per_record)
  print(("kinesis: 1 shard, %d records of %.0f bytes put with the SDK in %.1f s (%.0f records/s); %d repetitions, medians")
    :format(N, per_record, put_s, N / put_s, REPS))
  print(("%-44s %10.0f records/s  (the SDK's unpaced GetRecords loop)"):format("kinesalite read ceiling", median(ceiling)))
  print(("%-44s %10.0f records/s  %5.2fx the ceiling  %7.0f ns CPU/record (start-up included)")
    :format("murmur kinesis -> recently_interacted", median(rate), median(rate) / median(ceiling), median(cpu)))
  print(("%-44s %10.0f records/s  (5 GetRecords/s, 2 MB/s per shard, for records of this size)")
    :format("Kinesis's per-shard read limit", limit))
end)
os.execute(("kill $(cat %s/kinesalite.pid) 2>/dev/null"):format(dir))
if not ok then error(err) end
