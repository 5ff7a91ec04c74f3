-- The admin page's data and the health checks: readiness as pipelines load
-- and sources start, the /api/status document, the dead-letter tail; and
-- (with the query server) the page itself in headless Chromium.
local S = require("spec.support")
local core = require("murmur.core")
local scrape = require("spec.scrape")

describe("#admin status and readiness", function()
  local dir
  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  local function build(follow)
    local now = math.floor(core.now_ms() / 1000)
    return scrape.build(dir, ('{"page":"a","user":"u1","ts":%d}\n{bad\n{"page":"b","user":"u1","ts":12}\n')
      :format(now), follow)
  end

  it("is not ready until the pipelines are published and the sources run, and says why", function()
    local engine, specs, opts = build(true)
    core.admin_publish("[]", {}) -- a previous spec's publication
    core.admin_state("run", "loading scripts")
    local ok, why = core.admin_ready()
    assert.is_false(ok)
    assert.are.equal("loading scripts", why)
    assert(require("murmur.admin").publish(specs, opts, opts.data, "run"))
    ok, why = core.admin_ready()
    assert.is_false(ok)
    assert.are.equal("the sources have not started yet", why)
    -- Sources start once their positions are read (through the store's
    -- callbacks); the input is followed, so the engine runs until the
    -- readiness is seen and stops it.
    local seen
    engine:timer(0, 1, function()
      local r = { core.admin_ready() }
      if r[1] and not seen then
        seen = r
        engine:stop()
      end
    end)
    engine:run(true)
    assert.are.same({ true }, seen)
    ok, why = core.admin_ready()
    assert.is_false(ok)
    assert.are.equal("stopping", why)
    engine:close()
  end)

  it("describes definitions, live counters and sources, and tails dead letters", function()
    local engine, specs, opts = build()
    assert(require("murmur.admin").publish(specs, opts, opts.data, "run"))
    core.metrics_reload({ ok = 1, failed = 1, unchanged = 0, last_ok_ms = 5, last_error_ms = 6,
      last_error = dir .. "/p.lua:3: pipeline 'x': boom" })
    engine:run(true)
    local st = core.json_decode(core.admin_status())
    engine:close()
    assert.are.equal("run", st.mode)
    assert.are.equal(2, #st.definitions)
    local views = st.definitions[1]
    assert.are.equal("views", views.name)
    assert.are.equal("count", views.monoid)
    assert.are.equal("page", views.key)
    assert.are.equal("ts", views.time)
    assert.are.equal(86400000, views.granularity_ms)
    assert.are.equal(30 * 86400000, views.retention_ms)
    assert.are.equal("file", views.sources[1].type)
    assert.are.equal(dir .. "/in.jsonl", views.sources[1].options.path)
    assert.are.equal(dir .. "/p.lua:2", views.where)
    assert.are.equal("topk(k=5)", st.definitions[2].monoid)
    assert.are.equal(3, st.pipelines.views.records)
    assert.are.equal(1, st.pipelines.views.accepted)
    assert.are.equal(1, st.pipelines.views.rejected.json)
    assert.are.equal(1, st.pipelines.views.rejected.out_of_range)
    assert.are.equal("lmdb", st.engine.store)
    assert.are.equal(3, st.sources[1].records)
    assert.matches("p.lua:3: pipeline 'x': boom", st.reload.last_error, 1, true)
    local tail = core.json_decode(core.admin_dead_letters("views", 1))
    assert.are.equal(1, #tail.lines)
    assert.are.equal("out_of_range", core.json_decode(tail.lines[1]).reason)
    tail = core.json_decode(core.admin_dead_letters("views", 10))
    assert.are.equal(2, #tail.lines)
    assert.are.equal("json", core.json_decode(tail.lines[1]).reason)
    local _, err, code = core.admin_dead_letters("nope")
    assert.are.equal("ENOTFOUND", code)
    assert.matches("nope", err)
  end)

  it("tails the dead letters it wrote to a Kafka topic, the last 64 KiB of them", function()
    -- librdkafka's in-process mock cluster stands for the brokers.
    local grants = require("murmur.grants")
    assert(grants.set({ "kafka:test.mock.num.brokers", "net:127.0.0.1:9" }, dir .. "/d"))
    finally(function() grants.set({}) end)
    S.write_file(dir .. "/p.lua", [[
local murmur = require("murmur")
murmur.pipeline { name = "views", monoid = murmur.count(), key = "page",
  dead_letter = murmur.kafka_topic { topic = "views_dlq", brokers = "127.0.0.1:9",
    properties = { ["test.mock.num.brokers"] = 1 } } }
]])
    local lines = { '{"page":"a"}' }
    for i = 1, 2000 do lines[#lines + 1] = ('{"page":true,"n":%d,"pad":"%s"}'):format(i, ("x"):rep(40)) end
    S.write_file(dir .. "/in.jsonl", table.concat(lines, "\n") .. "\n")
    local specs = assert(require("murmur.loader").load_all({ dir .. "/p.lua" }))
    local opts = { data = dir .. "/d", input = dir .. "/in.jsonl" }
    local engine = assert(require("murmur.runner").build(specs, opts))
    assert(require("murmur.admin").publish(specs, opts, opts.data, "run"))
    assert.are.equal(0, engine:run(true))
    local tail = core.json_decode(core.admin_dead_letters("views", 1000))
    local one = core.json_decode(core.admin_dead_letters("views", 1))
    engine:close()
    assert.are.equal("kafka", tail.destination)
    assert.matches("views_dlq", tail.target, 1, true)
    assert.are.equal(2000, tail.written)
    -- Whole lines only, the newest last, within 64 KiB.
    local bytes = 0
    for _, l in ipairs(tail.lines) do bytes = bytes + #l + 1 end
    assert.is_true(#tail.lines > 100 and #tail.lines < 2000 and bytes <= 65536, #tail.lines .. " lines")
    for i, l in ipairs(tail.lines) do
      local dl = core.json_decode(l)
      assert.are.equal("wrong_type", dl.reason)
      assert.are.equal(2000 - #tail.lines + i, core.json_decode(dl.record).n)
    end
    assert.are.same({ tail.lines[#tail.lines] }, one.lines)
  end)

  it("tails a dead-letter file larger than the window it reads without a cut line", function()
    local path = dir .. "/dl.jsonl"
    local lines = {}
    for i = 1, 3000 do lines[i] = ('{"n":%d,"pad":"%s"}'):format(i, ("x"):rep(40)) end
    S.write_file(path, table.concat(lines, "\n") .. "\n")
    assert(core.admin_publish('[{"name":"big"}]', { big = path }))
    local tail = core.json_decode(core.admin_dead_letters("big", 5000))
    assert.is_true(#tail.lines > 100 and #tail.lines < 3000)
    for _, l in ipairs(tail.lines) do assert.is_table(core.json_decode(l)) end
    assert.are.equal(3000, core.json_decode(tail.lines[#tail.lines]).n)
    assert.are.equal(3000 - #tail.lines + 1, core.json_decode(tail.lines[1]).n)
    -- A pipeline whose file does not exist yet has no lines, not an error.
    assert(core.admin_publish('[]', { none = dir .. "/missing.jsonl" }))
    assert.are.same({}, core.json_decode(core.admin_dead_letters("none", 5)).lines)
  end)
end)

-- One chromium (tests/node/admin_browser.js) serves every page a describe
-- block drives, each in a new browser context: a chromium start-up took
-- 2-5 s, once per page before. Started at the first page, stopped by
-- stop_browser in the block's teardown.
local browser

local function ws_endpoint()
  if not browser then
    local bdir = S.tmpdir()
    local log = bdir .. "/browser.log"
    browser = { dir = bdir, h = S.spawn(("node %s/tests/node/admin_browser.js"):format(S.quote(S.root)), log) }
    browser.ws = S.wait_for("chromium's endpoint", 30, function() return (S.read_file(log) or ""):match("(ws://%S+)\n") end,
      function() return S.read_file(log) or "" end)
  end
  return browser.ws
end

local function stop_browser()
  if not browser then return end
  S.kill(browser.h, "TERM")
  S.wait_exit(browser.h, 10)
  S.rm_rf(browser.dir)
  browser = nil
end

-- Runs tests/node/admin_page.js on the shared chromium; returns its decoded
-- output.
local function drive_page(port, pipeline, entity, extra)
  local code, out = S.exec(("node %s/tests/node/admin_page.js --ws %s --url http://127.0.0.1:%d/ --pipeline %s --entity %s %s 2>&1")
    :format(S.quote(S.root), S.quote(ws_endpoint()), port, S.quote(pipeline), S.quote(entity), extra or ""))
  assert.are.equal(0, code, out)
  return core.json_decode(out:match("([^\n]+)\n?$"))
end

describe("#admin page served by murmur serve", function()
  local dir, h, port
  local set_up, tear_down = scrape.server_hooks(scrape.start_serve, function(d, hh, p) dir, h, port = d, hh, p end,
    function() return dir, h end)
  before_each(set_up)
  after_each(tear_down)
  teardown(stop_browser)

  it("answers /, /api/status and /api/dead-letters", function()
    local base = ("http://127.0.0.1:%d"):format(port)
    local code, body, headers = scrape.http_get(base .. "/")
    assert.are.equal(200, code)
    assert.matches("text/html", headers["content-type"], 1, true)
    assert.matches("frame-ancestors 'none'", headers["content-security-policy"], 1, true)
    -- Self-contained: no external script, style sheet, image or font.
    assert.is_nil(body:find("<script[^>]+src=") or body:find("<link[^>]+href=") or body:find("@import")
      or body:find("https?://[%w.]+/[%w/]*%.[jc]ss?"))
    code, body = scrape.http_get(base .. "/api/status")
    assert.are.equal(200, code)
    local st = core.json_decode(body)
    assert.is_true(st.ready)
    assert.are.equal("serve", st.mode)
    assert.are.equal("views", st.definitions[1].name)
    assert.are.equal("topk(k=5)", st.definitions[2].monoid)
    assert.is_nil(st.engine)
    -- The query server's own counters, live in both modes.
    scrape.http_get(base .. "/murmur.v1.QueryService/Get?encoding=json&message=" .. '%7B%22pipeline%22%3A%22top%22%2C%22entity%22%3A%22u1%22%7D')
    st = core.json_decode(select(2, scrape.http_get(base .. "/api/status")))
    assert.are.equal(1, st.server.methods.Get.calls)
    assert.are.equal(0, st.server.methods.Get.errors)
    assert.is_true(st.server.methods.Get.ns_total > 0)
    assert.is_true(st.server.http_requests >= 2 and st.server.connections >= 2)
    assert.is_true(st.server.store_reads >= 1)
    assert.are.equal(0, st.server.refused.timeout)
    code, body = scrape.http_get(base .. "/api/dead-letters?pipeline=top&lines=5")
    assert.are.equal(200, code)
    local dl = core.json_decode(body)
    assert.are.equal(1, #dl.lines)
    assert.are.equal("json", core.json_decode(dl.lines[1]).reason)
    code = scrape.http_get(base .. "/api/dead-letters?pipeline=nope")
    assert.are.equal(404, code)
    code = scrape.http_get(base .. "/api/dead-letters")
    assert.are.equal(400, code)
  end)

  it("loads in headless Chromium without console errors, lists the pipelines, draws a lookup's Top-K", function()
    if S.exec("test -x /usr/bin/chromium") ~= 0 then
      pending("chromium is not installed (make deps)")
      return
    end
    local _, q = S.murmur_run({ "query", "top", "u1", "--json", "--data", dir .. "/d" })
    local expected = core.json_decode(q).result.items
    local out = drive_page(port, "top", "u1")
    assert.are.same({}, out.console_errors)
    assert.are.same({ "views", "top" }, out.pipelines)
    assert.are.same({}, out.unlabelled)
    assert.is_true(out.tab_reached_lookup)
    assert.matches("^ready", out.ready)
    assert.are.equal(#expected, #out.bars)
    for i, item in ipairs(expected) do
      assert.are.equal(item.item, out.bars[i].item)
      assert.are.equal(item.count, out.bars[i].count)
    end
    -- Bars are drawn to scale: the first (largest) is the widest.
    for i = 2, #out.bars do assert.is_true(out.bars[i].width <= out.bars[1].width) end
    -- The query service's live counters: the lookups above are Get calls,
    -- shown with their rate and latency on a later poll.
    out = drive_page(port, "top", "u1", "--method Get")
    assert.are.same({}, out.console_errors)
    local get = out.methods.Get
    assert.is_true(tonumber((get[1]:gsub(",", ""))) >= 2, get[1])
    assert.are.equal("0", get[2])
    assert.is_true(tonumber(get[3]) ~= nil and tonumber(get[4]) > 0, table.concat(get, " | "))
    assert.matches("connection%(s%) open", out.server)
    assert.matches("store reads [1-9]", out.server)
    -- A windowed pipeline's lookup draws the buckets as a time series.
    out = drive_page(port, "views", "p1", "--series 1")
    assert.are.same({}, out.console_errors)
    assert.are.equal(14, out.series_points)
  end)

  it("needs the bearer token for everything but /healthz and the page once one is set", function()
    S.kill(h, "TERM")
    S.wait_exit(h, 20)
    S.write_file(dir .. "/token", "s3cret\n")
    h, port = scrape.start_serve(dir, "--token-file " .. S.quote(dir .. "/token"))
    local base = ("http://127.0.0.1:%d"):format(port)
    assert.are.equal(200, (scrape.http_get(base .. "/healthz")))
    assert.are.equal(200, (scrape.http_get(base .. "/")))
    for _, path in ipairs({ "/metrics", "/readyz", "/api/status", "/api/dead-letters?pipeline=top" }) do
      assert.are.equal(401, (scrape.http_get(base .. path)), path)
      assert.are.equal(200, (scrape.http_get(base .. path, nil, "s3cret")), path)
    end
    if S.exec("test -x /usr/bin/chromium") == 0 then
      local out = drive_page(port, "top", "u1", "--token s3cret")
      assert.are.same({}, out.console_errors)
      assert.are.same({ "views", "top" }, out.pipelines)
      assert.is_true(#out.bars > 0)
    end
  end)
end)

describe("#admin page served by murmur run --listen", function()
  local dir, h, port
  local set_up, tear_down = scrape.server_hooks(scrape.start_run, function(d, hh, p) dir, h, port = d, hh, p end,
    function() return dir, h end)
  before_each(set_up)
  after_each(tear_down)
  teardown(stop_browser)

  it("shows live counters, sources and a failed reload's error with its file:line", function()
    if S.exec("test -x /usr/bin/chromium") ~= 0 then
      pending("chromium is not installed (make deps)")
      return
    end
    scrape.feed(dir, 10)
    local out = drive_page(port, "top", "u1", "--records 10")
    assert.are.same({}, out.console_errors)
    assert.are.same({ "views", "top" }, out.pipelines)
    -- Records, accepted, rejected, duplicates, dead letters after the
    -- nine definition cells (monoid ... store).
    local top = out.rows.top
    assert.are.same({ "10", "8", "2", "0", "2" }, { top[10], top[11], top[12], top[13], top[14] })
    assert.are.equal("topk(k=5)", top[1])
    assert.matches("in.jsonl", top[8], 1, true)
    assert.matches("loop lag", out.engine, 1, true)
    assert.matches("in.jsonl", out.sources, 1, true)
    assert.matches("ready", out.ready)
    assert.matches("The running version is the scripts' latest", out.reload_text, 1, true)
    -- The same counts as murmur query: the Top-K drawn is the stored one.
    local _, q = S.murmur_run({ "query", "top", "u1", "--json", "--data", dir .. "/d" })
    local expected = core.json_decode(q).result.items
    assert.are.equal(#expected, #out.bars)
    for i, item in ipairs(expected) do assert.are.equal(item.count, out.bars[i].count) end
    -- The dead-letter file's tail: the two malformed lines of the feed.
    out = drive_page(port, "top", "u1", "--dead-letters top")
    assert.are.same({}, out.console_errors)
    assert.matches("line%(s%) from .*top%.jsonl", out.dl_status)
    assert.are.equal("json", core.json_decode(out.dl_lines[#out.dl_lines]).reason)
    -- A broken edit: the reload fails, the old version keeps running.
    S.write_file(dir .. "/p.lua", S.read_file(dir .. "/p.lua") .. "murmur.pipeline { name = 'broken', monoid = 42 }\n")
    S.wait_status(dir .. "/d", function(st) return st.reload and st.reload.failed >= 1 end, 20, "a failed reload")
    out = drive_page(port, "top", "u1")
    assert.are.same({}, out.console_errors)
    assert.matches("Last reload failed", out.reload_text, 1, true)
    assert.matches("p.lua:5 pipeline 'broken'", out.reload_text, 1, true)
    assert.matches("previous version keeps running", out.reload_text, 1, true)
  end)

  it("shows the dead letters the worker produced to a Kafka topic", function()
    if S.exec("test -x /usr/bin/chromium") ~= 0 then
      pending("chromium is not installed (make deps)")
      return
    end
    S.kill(h, "TERM")
    S.wait_exit(h, 20)
    -- librdkafka's in-process mock cluster stands for the brokers.
    S.write_file(dir .. "/p.lua", (S.read_file(dir .. "/p.lua"):gsub('value = "page" }', 'value = "page",\n'
      .. '  dead_letter = murmur.kafka_topic { topic = "top_dlq", brokers = "127.0.0.1:9",\n'
      .. '    properties = { ["test.mock.num.brokers"] = 1 } } }')))
    h, port = scrape.start_run(dir, "--allow kafka:test.mock.num.brokers,net:127.0.0.1:9")
    scrape.feed(dir, 10)
    local out = drive_page(port, "top", "u1", "--dead-letters top")
    assert.are.same({}, out.console_errors)
    assert.matches("2 of the 2 dead letter%(s%) this process wrote to kafka topic top_dlq", out.dl_status)
    assert.are.equal(2, #out.dl_lines)
    for _, l in ipairs(out.dl_lines) do assert.are.equal("json", core.json_decode(l).reason) end
  end)
end)
