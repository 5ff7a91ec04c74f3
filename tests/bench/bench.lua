-- Runs each benchmark case as a separate `murmur run --once --stats` process
-- (fresh data directory, durable LMDB commits) and prints its figures.
local core = require("murmur.core")

local dir = arg[1]
local murmur = os.getenv("MURMUR") or "build/murmur"
local input = dir .. "/events.jsonl"

local function now() return core.now_ms() / 1000 end

local function run_case(name, scripts, file)
  local data = dir .. "/data"
  local cmd = ("%s run --once --stats --log-level warn --data %s --input %s %s"):format(
    murmur, data, file or input, table.concat(scripts, " "))
  local t0 = now()
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  local wall = now() - t0
  local stats = core.json_decode(out)
  if not stats then error("bench case " .. name .. " failed: " .. out) end
  local events = stats.records
  local cpu = stats.cpu_user_s + stats.cpu_sys_s
  print(("%-44s %10.0f events/s  %7.0f ns/event  %6.2f cpu-s  %.4f store writes/event  %4d flushes  peak RSS %d MiB")
    :format(name, events / wall, wall * 1e9 / events, cpu, stats.store_writes / events,
      stats.flushes, stats.max_rss_kb / 1024))
  os.execute("rm -rf '" .. data .. "'")
end

run_case("recently_interacted", { "pipelines/recently_interacted.lua" })
run_case("recently_interacted, dedup on every event", { "pipelines/recently_interacted.lua" },
  dir .. "/events-with-ids.jsonl")
run_case("page_views", { "pipelines/page_views.lua" })
run_case("unique_visitors", { "pipelines/unique_visitors.lua" })
run_case("all three (one input)", { "pipelines/recently_interacted.lua", "pipelines/page_views.lua",
  "pipelines/unique_visitors.lua" })
