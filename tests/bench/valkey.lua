-- The Valkey cache: read latency of the queries `murmur query` runs, through
-- the cache and from the store alone, and what keeping the cache costs the
-- writer. Run by tests/bench/run.sh when redis-server is installed:
--
--   murmur lua tests/bench/valkey.lua DIR EVENTS_FILE
--
-- A private redis-server runs on a random 127.0.0.1 port without
-- persistence. The shipped pipelines run once without and once with
-- `--cache`; then, in this process, each query shape is timed call by call
-- (st:get as `murmur query` issues it, st:count for HLL windows) against the
-- LMDB store and against the cache over the same LMDB store, warm. Whole
-- `murmur query` processes are timed too (they include start-up).
local core = require("murmur.core")
io.stdout:setvbuf("line") -- run.sh reads the output through a pipe: a line at a time
local ffi = require("ffi")

ffi.cdef [[ uint64_t uv_hrtime(void); ]]

local dir, input = arg[1], arg[2]
local murmur = os.getenv("MURMUR") or "build/murmur"
local ITER = tonumber(os.getenv("BENCH_VALKEY_ITER") or "2000")

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end

local function hr() return tonumber(ffi.C.uv_hrtime()) end

-- The server.
local port
local function start_server()
  for _ = 1, 10 do
    port = 20000 + math.floor((hr() / 1000) % 20000)
    local pid = sh(("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --dir %s > %s/redis.log 2>&1 & echo $!")
      :format(port, dir, dir)):match("%d+")
    for _ = 1, 100 do
      if sh(("redis-cli -p %d PING 2>/dev/null"):format(port)):match("PONG") then return pid end
      os.execute("sleep 0.05")
    end
    os.execute("kill -9 " .. pid .. " 2>/dev/null")
  end
  error("could not start redis-server")
end

local pid = start_server()
local url = ("redis://127.0.0.1:%d"):format(port)
local ok, err = pcall(function()
  -- The writer, without and with the cache.
  local scripts = "pipelines/page_views.lua pipelines/unique_visitors.lua pipelines/recently_interacted.lua"
  local function run(data, extra)
    local t0 = hr()
    local out = sh(("%s run --once --no-supervisor --stats --log-level warn --data %s --input %s %s %s")
      :format(murmur, data, input, extra, scripts))
    local s = assert(core.json_decode(out), out)
    return s.records / ((hr() - t0) / 1e9)
  end
  local plain = run(dir .. "/vk-plain", "")
  local cached = run(dir .. "/vk-data", "--cache " .. url)
  print(("valkey: writer, three pipelines: %.0f events/s on LMDB alone, %.0f events/s keeping the cache (%.1f%%)")
    :format(plain, cached, (cached / plain - 1) * 100))
  os.execute("rm -rf '" .. dir .. "/vk-plain'")

  -- Query shapes: the hottest pages and a spread of others.
  local data = dir .. "/vk-data"
  local day = core.bucket(86400000, core.now_ms())
  local function buckets(n)
    local t = {}
    for b = day - n + 1, day do t[#t + 1] = b end
    return t
  end
  -- The 16 hottest pages of the input (dense HLLs) and 48 others.
  local seen, n = {}, 0
  for line in io.lines(input) do
    local p = line:match('"page_id":"([^"]+)"')
    seen[p] = (seen[p] or 0) + 1
    n = n + 1
    if n == 500000 then break end
  end
  local hot = {}
  for p in pairs(seen) do hot[#hot + 1] = p end
  table.sort(hot, function(a, b) return seen[a] > seen[b] or (seen[a] == seen[b] and a < b) end)
  local pages = {}
  for i = 1, 16 do pages[i] = hot[i] end
  for i = 1, 48 do pages[16 + i] = "p" .. ((i * 7919) % 100000) end
  local hot16 = { unpack(pages, 1, 16) }
  local shapes = {
    { "page_views (sum, 90 daily buckets)", "page_views", pages, buckets(91), "get" },
    { "unique_visitors (hll, 30 days, merged)", "unique_visitors", pages, buckets(30), "get" },
    { "unique_visitors (hll, 30 days, PFCOUNT)", "unique_visitors", pages, buckets(30), "count" },
    { "unique_visitors hot pages (dense, merged)", "unique_visitors", hot16, buckets(30), "get" },
    { "unique_visitors hot pages (dense, PFCOUNT)", "unique_visitors", hot16, buckets(30), "count" },
    { "recently_interacted (top-k, 31 buckets)", "recently_interacted", { "global" }, buckets(31), "get" },
  }

  local function pct(t, p) return t[math.max(1, math.ceil(#t * p))] end

  local function time_shapes(st, label)
    local res = {}
    for _, s in ipairs(shapes) do
      local name, ns, entities, bs, how = s[1], s[2], s[3], s[4], s[5]
      local meta = core.json_decode(st:meta(ns):match("\n(.*)$"))
      local lat = {}
      for i = 1, ITER do
        local e = entities[(i - 1) % #entities + 1]
        local t0 = hr()
        if how == "count" then
          local c = st:count(ns, meta.monoid, e, bs)
          if not c then st:get(ns, meta.monoid, e, bs) end
        else
          assert(st:get(ns, meta.monoid, e, bs) ~= false)
        end
        lat[#lat + 1] = (hr() - t0) / 1000
      end
      table.sort(lat)
      res[name] = { pct(lat, 0.5), pct(lat, 0.99) }
      if label then
        print(("valkey: %-42s %-12s p50 %7.1f us  p99 %7.1f us"):format(name, label, pct(lat, 0.5), pct(lat, 0.99)))
      end
    end
    return res
  end

  local st = assert(core.store_open("lmdb", { path = data .. "/store" }, true))
  time_shapes(st) -- warm the page cache
  time_shapes(st, "LMDB")
  st:close()
  st = assert(core.store_open("valkey", { backing = "lmdb", ["backing.path"] = data .. "/store", url = url }, true))
  time_shapes(st) -- fill
  time_shapes(st, "via Valkey")
  st:close()

  -- Whole processes, as a user runs them.
  local function proc(extra, n)
    local t0 = hr()
    for i = 1, n do
      sh(("%s query unique_visitors %s --data %s --window 30d %s"):format(murmur, pages[(i - 1) % #pages + 1], data, extra))
    end
    return (hr() - t0) / n / 1e6
  end
  print(("valkey: murmur query unique_visitors --window 30d (whole process, mean of 50): %.1f ms LMDB, %.1f ms via Valkey")
    :format(proc("", 50), proc("--cache " .. url, 50)))
end)
os.execute("kill -9 " .. pid .. " 2>/dev/null")
os.execute("rm -rf '" .. dir .. "/vk-data'")
if not ok then error(err, 0) end
