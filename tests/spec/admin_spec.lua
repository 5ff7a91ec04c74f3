-- The admin page's data and the health checks: readiness as pipelines load
-- and sources start, the /api/status document, the dead-letter tail; and
-- (with the query server) the page itself in headless Chromium.
local S = require("spec.support")
local core = require("murmur.core")

describe("#admin status and readiness", function()
  local dir
  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  local function build()
    S.write_file(dir .. "/p.lua", [[
local murmur = require("murmur")
murmur.pipeline { name = "views", monoid = murmur.count(), key = "page", time = "ts",
                  window = murmur.daily { retention = "30d" } }
murmur.pipeline { name = "top", monoid = murmur.topk { k = 5 }, key = "user", value = "page" }
]])
    local now = math.floor(core.now_ms() / 1000)
    S.write_file(dir .. "/in.jsonl", ('{"page":"a","user":"u1","ts":%d}\n{bad\n{"page":"b","user":"u1","ts":12}\n')
      :format(now))
    local specs = assert(require("murmur.loader").load_all({ dir .. "/p.lua" }))
    local opts = { data = dir .. "/d", input = dir .. "/in.jsonl" }
    local engine, err = require("murmur.runner").build(specs, opts)
    assert(engine, err)
    return engine, specs, opts
  end

  it("is not ready until the pipelines are published and the sources run, and says why", function()
    local engine, specs, opts = build()
    core.admin_publish("[]", {}) -- a previous spec's publication
    core.admin_state("run", "loading scripts")
    local ok, why = core.admin_ready()
    assert.is_false(ok)
    assert.are.equal("loading scripts", why)
    assert(require("murmur.admin").publish(specs, opts, opts.data, "run"))
    ok, why = core.admin_ready()
    assert.is_false(ok)
    assert.are.equal("the sources have not started yet", why)
    local seen
    engine:timer(0, 0, function() seen = { core.admin_ready() } end)
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
