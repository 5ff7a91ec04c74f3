-- /metrics: the exposition murmur renders (text 0.0.4 and OpenMetrics 1.0),
-- checked by promtool (Debian prometheus), by a parser here for what
-- promtool does not check (contiguous families, cumulative buckets ending in
-- +Inf = _count, no duplicate series), and against the engine's counters.
local S = require("spec.support")
local core = require("murmur.core")

local M = require("spec.scrape")
local http_get, start_serve, start_run = M.http_get, M.start_serve, M.start_run

-- Writes a script counting records per "k" (store: more fields for its
-- pipeline) and an input of records in dir, and builds an engine over them
-- with opts (data and input are set here).
local function count_engine(dir, records, opts, store)
  S.write_file(dir .. "/p.lua", ('local murmur = require("murmur")\n'
    .. 'murmur.pipeline { name = "c", monoid = murmur.count(), key = "k"%s }\n'):format(store or ""))
  S.write_file(dir .. "/in.jsonl", records)
  local specs = assert(require("murmur.loader").load_all({ dir .. "/p.lua" }))
  opts.data, opts.input = dir .. "/d", dir .. "/in.jsonl"
  return assert(require("murmur.runner").build(specs, opts))
end

describe("#metrics exposition", function()
  local dir
  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  -- Runs two pipelines in this process over a file with a malformed line.
  local function run_engine()
    local now = math.floor(core.now_ms() / 1000)
    local engine = M.build(dir, ('{"page":"a","user":"u1","ts":%d}\n{bad\n{"page":"b","user":"u1","ts":%d}\n')
      :format(now, now))
    assert.are.equal(0, engine:run(true))
    return engine
  end

  it("renders the engine's counters, store operations and flush histogram; promtool finds no problem", function()
    local engine = run_engine()
    core.metrics_reload({ ok = 2, failed = 1, unchanged = 0, last_ok_ms = 1700000000000,
      last_error_ms = 1700000001000, last_error = "p.lua:2: boom" })
    local text, ctype = core.metrics()
    local om = core.metrics(true)
    engine:close()
    assert.are.equal("text/plain; version=0.0.4; charset=utf-8", ctype)
    local p = M.checked(dir, text)
    assert.are.equal(3, M.value(p, "murmur_records_total"))
    assert.are.equal(3, M.value(p, "murmur_pipeline_records_total", { pipeline = "views" }))
    assert.are.equal(2, M.value(p, "murmur_pipeline_accepted_total", { pipeline = "views" }))
    assert.are.equal(1, M.value(p, "murmur_pipeline_rejected_total", { pipeline = "top", reason = "json" }))
    assert.are.equal(1, M.value(p, "murmur_pipeline_dead_letters_total", { pipeline = "top" }))
    assert.are.equal(2, M.value(p, "murmur_pipeline_deltas_flushed_total", { pipeline = "views" }))
    assert.is_true(M.value(p, "murmur_flushes_total") >= 1)
    assert.are.equal(M.value(p, "murmur_flushes_total"), M.value(p, "murmur_flush_duration_seconds_count"))
    assert.is_true(M.value(p, "murmur_store_operations_total", { op = "store_merge_update" }) >= 1)
    assert.are.equal(M.value(p, "murmur_store_operations_total", { op = "store_merge_update" }),
      M.value(p, "murmur_store_operation_duration_seconds_count", { op = "store_merge_update" }))
    assert.are.equal(0, M.value(p, "murmur_store_operation_errors_total", { op = "store_merge_update" }))
    assert.is_true(M.value(p, "process_resident_memory_bytes") > 1e6)
    -- The loop-lag probe's figures (looplag_spec checks what they measure).
    assert.is_true(M.value(p, "murmur_event_loop_lag_seconds") >= 0)
    assert.is_true(M.value(p, "murmur_event_loop_lag_max_seconds") >= M.value(p, "murmur_event_loop_lag_seconds"))
    assert.are.equal(1, M.value(p, "murmur_build_info", { version = core.version }))
    assert.are.equal(2, M.value(p, "murmur_reloads_total", { result = "ok" }))
    assert.are.equal(1, M.value(p, "murmur_reloads_total", { result = "failed" }))
    assert.are.equal(1, M.value(p, "murmur_reload_failing"))
    assert.are.equal(1700000000, M.value(p, "murmur_reload_last_success_timestamp_seconds"))
    assert.are.equal("counter", p.families["murmur_records_total"].type)
    -- OpenMetrics: families named without _total, "# EOF" last.
    local po = M.checked(dir, om, true)
    assert.is_true(po.eof)
    assert.are.equal("# EOF\n", om:sub(-6))
    assert.are.equal("counter", po.families["murmur_records"].type)
    assert.is_nil(po.families["murmur_records_total"])
    assert.are.equal(3, M.value(po, "murmur_records_total"))
  end)

  it("documents every family it renders in doc/metrics.md, and renders every family documented", function()
    local engine = run_engine()
    core.metrics_reload({ ok = 0, failed = 0, unchanged = 0 })
    local p = M.parse((core.metrics()))
    engine:close()
    local doc = S.read_file(S.root .. "/doc/metrics.md")
    local src = S.read_file(S.root .. "/engine/core/metrics.c") .. (S.read_file(S.root .. "/engine/net/admin.c") or "")
    for _, name in ipairs(p.order) do
      assert.is_truthy(doc:find("`" .. name .. "`", 1, true), name .. " is not in doc/metrics.md")
    end
    for name in doc:gmatch("| `([%w_]+)` |") do
      local base = name:gsub("_total$", "")
      assert.is_truthy(src:find('"' .. base .. '"', 1, true), name .. " is documented but never rendered")
    end
  end)

  it("reports a followed file's unread bytes as source lag", function()
    local engine = count_engine(dir, '{"k":"a"}\n{"k":"b"}\n', { follow = true })
    local before, after
    local appended = '{"k":"c"}\n{"k":"d"}\n{"k":"e"}\n'
    engine:timer(10, 10, function()
      if before or engine:stats().records < 2 then return end
      before = M.parse((core.metrics()))
      -- Appended and rendered in one callback: the source cannot have read it.
      local f = assert(io.open(dir .. "/in.jsonl", "ab"))
      f:write(appended)
      f:close()
      after = M.parse((core.metrics()))
      engine:stop()
    end)
    engine:run(false)
    engine:close()
    local src = { source = "file:" .. dir .. "/in.jsonl" }
    assert.are.equal(0, M.value(before, "murmur_source_lag_bytes", src))
    assert.are.equal(#appended, M.value(after, "murmur_source_lag_bytes", src))
    assert.are.equal(2, M.value(after, "murmur_source_records_total", src))
  end)

  it("chooses OpenMetrics only when the Accept header prefers it", function()
    assert.is_true(core.metrics_wants_openmetrics(
      "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"))
    assert.is_false(core.metrics_wants_openmetrics("text/plain;version=0.0.4"))
    assert.is_false(core.metrics_wants_openmetrics("*/*"))
    assert.is_false(core.metrics_wants_openmetrics(nil))
  end)
end)


describe("#metrics served by murmur serve", function()
  local dir, h, port
  local set_up, tear_down = M.server_hooks(start_serve, function(d, hh, p) dir, h, port = d, hh, p end,
    function() return dir, h end)
  before_each(set_up)
  after_each(tear_down)

  it("serves /metrics that promtool accepts, OpenMetrics when asked, /healthz and /readyz", function()
    local base = ("http://127.0.0.1:%d"):format(port)
    -- Two reads: a one-key Get (store_get), a 30-day window (store_get_many).
    assert.are.equal(0, S.exec(("curl -sf -H 'Content-Type: application/json' -d '%s' %s/murmur.v1.QueryService/Get >/dev/null")
      :format('{"pipeline":"top","entity":"u1"}', base)))
    assert.are.equal(0, S.exec(("curl -sf -H 'Content-Type: application/json' -d '%s' %s/murmur.v1.QueryService/GetWindow >/dev/null")
      :format('{"pipeline":"views","entity":"p1","window":"30d"}', base)))
    S.exec(("curl -s -H 'Content-Type: application/json' -d '%s' %s/murmur.v1.QueryService/Get >/dev/null")
      :format('{"pipeline":"nope","entity":"u1"}', base))
    local code, body, headers = http_get(base .. "/metrics")
    assert.are.equal(200, code)
    assert.matches("text/plain; version=0.0.4", headers["content-type"], 1, true)
    local p = M.checked(dir, body)
    assert.are.equal(1, M.value(p, "murmur_store_operations_total", { op = "store_get" }))
    assert.are.equal(1, M.value(p, "murmur_store_operations_total", { op = "store_get_many" }))
    assert.are.equal(1, M.value(p, "murmur_store_operation_duration_seconds_count", { op = "store_get" }))
    assert.are.equal(1, M.value(p, "murmur_query_requests_total", { method = "Get", code = "ok" }))
    assert.are.equal(1, M.value(p, "murmur_query_requests_total", { method = "Get", code = "not_found" }))
    assert.are.equal(1, M.value(p, "murmur_query_requests_total", { method = "GetWindow", code = "ok" }))
    assert.are.equal(2, M.value(p, "murmur_query_request_duration_seconds_count", { method = "Get" }))
    assert.is_true(M.value(p, "murmur_query_connections_total") >= 3)
    -- No engine in murmur serve: its families are left out, not zeros.
    assert.is_nil(p.families["murmur_records_total"])
    code, body, headers = http_get(base .. "/metrics",
      "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    assert.are.equal(200, code)
    assert.matches("application/openmetrics-text; version=1.0.0", headers["content-type"], 1, true)
    assert.are.equal("# EOF\n", body:sub(-6))
    M.checked(dir, body, true)
    code, body = http_get(base .. "/healthz")
    assert.are.equal(200, code)
    assert.are.equal("ok\n", body)
    code, body = http_get(base .. "/readyz")
    assert.are.equal(200, code)
    assert.are.equal("ready\n", body)
  end)

  it("is scraped by a real Prometheus server whose HTTP API returns murmur's series", function()
    if S.exec("command -v prometheus >/dev/null") ~= 0 then
      pending("prometheus is not installed (make deps)")
      return
    end
    local pport = S.free_port()
    S.write_file(dir .. "/prometheus.yml", ([[
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: murmur
    static_configs:
      - targets: ["127.0.0.1:%d"]
]]):format(port))
    local ph = S.spawn(("prometheus --config.file=%s --storage.tsdb.path=%s --web.listen-address=127.0.0.1:%d")
      :format(S.quote(dir .. "/prometheus.yml"), S.quote(dir .. "/tsdb"), pport), dir .. "/prometheus.log")
    local ok, err = pcall(function()
      local api = ("http://127.0.0.1:%d/api/v1/query?query="):format(pport)
      local function query(q)
        local code, body = http_get(api .. q)
        if code ~= 200 then return nil end
        local r = core.json_decode(body)
        return r and r.status == "success" and r.data.result or nil
      end
      local result
      -- Three calls the scrape must then show.
      for _ = 1, 3 do
        S.exec(("curl -sf -H 'Content-Type: application/json' -d '%s' http://127.0.0.1:%d/murmur.v1.QueryService/Get >/dev/null")
          :format('{"pipeline":"top","entity":"u1"}', port))
      end
      for _ = 1, 600 do
        result = query("murmur_query_requests_total%7Bmethod%3D%22Get%22%7D")
        if result and #result == 1 and tonumber(result[1].value[2]) == 3 then break end
        S.sleep(0.1)
      end
      assert(result and #result == 1, "Prometheus never returned murmur's series:\n" ..
        (S.read_file(dir .. "/prometheus.log") or ""):sub(-2000))
      assert.are.equal(3, tonumber(result[1].value[2]))
      assert.are.equal("murmur", result[1].metric.job)
      assert.are.equal("ok", result[1].metric.code)
      local up = query("up%7Bjob%3D%22murmur%22%7D")
      assert.are.equal(1, tonumber(up[1].value[2]))
      local h2 = query("murmur_store_operation_duration_seconds_count%7Bop%3D%22store_get%22%7D")
      assert.are.equal(3, tonumber(h2[1].value[2]))
      -- A histogram quantile over the scraped buckets: a number, not NaN.
      local q = query("histogram_quantile(0.5%2C%20murmur_query_request_duration_seconds_bucket%7Bmethod%3D%22Get%22%7D)")
      assert.is_number(tonumber(q[1].value[2]))
      assert.is_true(tonumber(q[1].value[2]) > 0)
    end)
    S.kill(ph, "TERM")
    S.wait_exit(ph, 20)
    assert(ok, err)
  end)
end)

describe("#metrics served by murmur run --listen", function()
  local dir, h, port
  local set_up, tear_down = M.server_hooks(start_run, function(d, hh, p) dir, h, port = d, hh, p end,
    function() return dir, h end)
  before_each(set_up)
  after_each(tear_down)

  it("serves the engine's counters, flush and store histograms and loop lag; promtool accepts them", function()
    M.feed(dir, 10)
    local base = ("http://127.0.0.1:%d"):format(port)
    local code, body = http_get(base .. "/metrics")
    assert.are.equal(200, code)
    local p = M.checked(dir, body)
    assert.are.equal(10, M.value(p, "murmur_pipeline_records_total", { pipeline = "top" }))
    assert.are.equal(8, M.value(p, "murmur_pipeline_accepted_total", { pipeline = "top" }))
    assert.are.equal(2, M.value(p, "murmur_pipeline_rejected_total", { pipeline = "top", reason = "json" }))
    assert.are.equal(2, M.value(p, "murmur_pipeline_dead_letters_total", { pipeline = "top" }))
    assert.is_true(M.value(p, "murmur_flush_duration_seconds_count") >= 1)
    assert.is_true(M.value(p, "murmur_store_operations_total", { op = "store_merge_update" }) >= 1)
    assert.is_number(M.value(p, "murmur_event_loop_lag_seconds"))
    assert.are.equal(0, M.value(p, "murmur_reloads_total", { result = "failed" }))
    assert.are.equal(0, M.value(p, "murmur_source_lag_bytes"))
    assert.is_true(M.value(p, "murmur_query_connections_total") >= 1)
    code, body = http_get(base .. "/readyz")
    assert.are.equal(200, code)
    assert.are.equal("ready\n", body)
  end)
end)

describe("#metrics #supervisor served by a supervised worker", function()
  local dir, h
  after_each(function()
    if h then S.kill(h, "TERM") S.wait_exit(h, 20) h = nil end
    S.rm_rf(dir)
  end)

  it("shows the supervisor's restarts after the worker is killed", function()
    dir = S.tmpdir()
    M.prepare(dir)
    local port
    h, port = start_run(dir, nil, S.free_port())
    local base = ("http://127.0.0.1:%d"):format(port)
    local p = M.parse(select(2, http_get(base .. "/metrics")))
    assert.are.equal(0, M.value(p, "murmur_worker_restarts_total"))
    local worker = S.status(dir .. "/d").pid
    assert.are.equal(0, S.exec("kill -KILL " .. worker))
    S.wait_status(dir .. "/d", function(st) return st.pid ~= worker and st.engine ~= nil end, 30, "a new worker")
    local code, body
    for _ = 1, 100 do
      code, body = http_get(base .. "/metrics")
      if code == 200 then break end
      S.sleep(0.1)
    end
    assert.are.equal(200, code)
    p = M.checked(dir, body)
    assert.are.equal(1, M.value(p, "murmur_worker_restarts_total"))
    assert.are.equal(1, M.value(p, "murmur_worker_deaths_total", { cause = "crash" }))
    assert.are.equal(0, M.value(p, "murmur_worker_deaths_total", { cause = "stall" }))
    assert.are.equal(0, M.value(p, "murmur_poison_records_total"))
  end)
end)

describe("#metrics #valkey with a Valkey cache", function()
  local dir, pid
  after_each(function()
    if pid then S.exec("kill " .. pid) end
    S.rm_rf(dir)
  end)

  it("renders every cache command kind as an op, and the cache's counters", function()
    if S.exec("command -v redis-server >/dev/null") ~= 0 then
      pending("redis-server is not installed (make deps)")
      return
    end
    dir = S.tmpdir()
    local port = S.free_port()
    local _, out = S.exec(("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --dir %s > %s 2>&1 & echo $!")
      :format(port, S.quote(dir), S.quote(dir .. "/redis.log")))
    pid = tonumber(out:match("%d+"))
    for _ = 1, 100 do
      if S.exec(("redis-cli -p %d PING 2>/dev/null | grep -q PONG"):format(port)) == 0 then break end
      S.sleep(0.05)
    end
    local engine = count_engine(dir, '{"k":"a"}\n{"k":"b"}\n{"k":"a"}\n',
      { cache = ("redis://127.0.0.1:%d"):format(port) })
    assert.are.equal(0, engine:run(true))
    local text = core.metrics()
    local instr = engine:stats().instrumentation
    engine:close()
    local p = M.checked(dir, text)
    for _, op in ipairs({ "cache_get", "cache_fill", "cache_lease", "cache_update", "cache_invalidate",
      "cache_count", "cache_claim", "cache_mark", "cache_check" }) do
      -- The same counts as the engine's own instrumentation (--stats).
      assert.are.equal(instr[op].ops, M.value(p, "murmur_store_operations_total", { op = op }), op)
      assert.are.equal(instr[op].errors, M.value(p, "murmur_store_operation_errors_total", { op = op }), op)
      assert.are.equal(instr[op].ops, M.value(p, "murmur_store_operation_duration_seconds_count", { op = op }), op)
    end
    -- The handshake checks the server; the flush touches the cached entries.
    assert.is_true(M.value(p, "murmur_store_operations_total", { op = "cache_check" }) >= 1)
    assert.is_true(M.value(p, "murmur_store_operations_total", { op = "cache_invalidate" })
      + M.value(p, "murmur_store_operations_total", { op = "cache_update" }) >= 1)
    assert.are.equal(1, M.value(p, "murmur_cache_connects_total"))
    assert.is_number(M.value(p, "murmur_cache_connected"))
  end)
end)

describe("#metrics #dynamodb with a DynamoDB store", function()
  local dir, dyn
  after_each(function()
    if dyn then S.kill(dyn, "TERM") S.wait_exit(dyn, 5) dyn = nil end
    S.rm_rf(dir)
  end)

  it("renders DynamoDB requests by operation with their latency, beside the store operations", function()
    if not S.have_dynalite then
      pending("node and tests/node/node_modules are not installed (make deps)")
      return
    end
    dir = S.tmpdir()
    local port
    dyn, port = S.start_dynalite(dir, dir .. "/db")
    local endpoint = ("http://127.0.0.1:%d"):format(port)
    local ffi = require("ffi")
    pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite);")
    pcall(ffi.cdef, "int unsetenv(const char *name);")
    ffi.C.setenv("AWS_ACCESS_KEY_ID", "AKIDSPEC", 1)
    ffi.C.setenv("AWS_SECRET_ACCESS_KEY", "spec-secret", 1)
    -- The operator's endpoint: the script may name it (murmur.grants).
    ffi.C.setenv("MURMUR_DYNAMODB_ENDPOINT", endpoint, 1)
    finally(function() ffi.C.unsetenv("MURMUR_DYNAMODB_ENDPOINT") end)
    local code, out = S.exec(("env MURMUR_DYNAMODB_TABLE=metrics MURMUR_DYNAMODB_ENDPOINT=%s %s ddb create-table")
      :format(endpoint, S.quote(S.murmur)))
    assert.are.equal(0, code, out)
    local engine = count_engine(dir, '{"k":"a"}\n{"k":"b"}\n{"k":"a"}\n', {},
      (', store = murmur.store("dynamodb", { table = "metrics", endpoint = "%s" })'):format(endpoint))
    assert.are.equal(0, engine:run(true))
    local text = core.metrics()
    engine:close()
    local p = M.checked(dir, text)
    local total = 0
    for _, op in ipairs({ "GetItem", "PutItem", "UpdateItem", "DeleteItem", "BatchGetItem", "other" }) do
      local n = M.value(p, "murmur_dynamodb_requests_total", { operation = op })
      assert.are.equal(n, M.value(p, "murmur_dynamodb_request_duration_seconds_count", { operation = op }), op)
      total = total + n
    end
    -- Two entities merged by one flush: at least one write each.
    assert.is_true(M.value(p, "murmur_dynamodb_requests_total", { operation = "UpdateItem" })
      + M.value(p, "murmur_dynamodb_requests_total", { operation = "PutItem" }) >= 2)
    assert.is_true(total >= 2)
    assert.are.equal(1, M.value(p, "murmur_store_operations_total", { op = "store_merge_update" }))
    assert.are.equal(0, M.value(p, "murmur_dynamodb_throttled_total"))
  end)
end)
