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

-- Hot reload under load: a worker follows a file that a writer keeps
-- appending to (10 chunks of the input, 0.2 s apart) while a changed script
-- is saved; the sources are held from the swap's flush to its end.
local function reload_case()
  local data = dir .. "/data-reload"
  local script = dir .. "/page_views_reload.lua"
  local follow = dir .. "/follow.jsonl"
  local src = assert(io.open("pipelines/page_views.lua")):read("*a")
  local f = assert(io.open(script, "w"))
  f:write(src)
  f:close()
  assert(io.open(follow, "w")):close()
  local total = tonumber(arg[2])
  local chunk = math.floor(total / 10)
  os.execute(("%s run --follow --log-level warn --data %s --input %s %s & echo $! > %s/reload.pid")
    :format(murmur, data, follow, script, dir))
  os.execute(("(for i in 0 1 2 3 4 5 6 7 8 9; do tail -n +$((i * %d + 1)) %s | head -n %d >> %s; sleep 0.2; done) &")
    :format(chunk, input, chunk, follow))
  local function status()
    local sf = io.open(data .. "/status.json")
    if not sf then return nil end
    local st = core.json_decode(sf:read("*a"))
    sf:close()
    return st
  end
  local st
  repeat
    os.execute("sleep 0.05")
    st = status()
  until st and st.engine.records >= 2 * chunk
  f = assert(io.open(script, "w"))
  f:write(src .. "\n-- edited while running\n")
  f:close()
  repeat
    os.execute("sleep 0.05")
    st = status()
  until st and st.reload.ok >= 1
  local at = st.engine.records
  repeat
    os.execute("sleep 0.1")
    st = status()
  until st.engine.records >= chunk * 10
  os.execute("kill $(cat " .. data .. "/murmur.pid) 2>/dev/null; sleep 1")
  print(("%-44s sources held %d ms by the swap (flush interval 1000 ms); %d of %d records read at the reload")
    :format("hot reload under load (page_views)", st.reload.last_pause_ms, at, chunk * 10))
  os.execute("rm -rf '" .. data .. "'")
end

reload_case()
