-- The pipeline DSL: valid declarations produce specs; every mistake is
-- reported before anything runs, with the script's file:line.
local S = require("spec.support")
local loader = require("murmur.loader")

local dir

local function script(name, body)
  local path = dir .. "/" .. name
  S.write_file(path, body)
  return path
end

local function load_error(body)
  local path = script("bad.lua", body)
  local c, err = loader.load(path)
  assert.is_nil(c)
  return err, path
end

describe("#dsl pipeline DSL", function()
  setup(function() dir = S.tmpdir() end)
  teardown(function() S.rm_rf(dir) end)

  it("loads the shipped pipelines", function()
    for _, name in ipairs({ "recently_interacted", "page_views", "unique_visitors" }) do
      local c = assert(loader.load("pipelines/" .. name .. ".lua"))
      assert.are.equal(1, #c.pipelines)
      assert.are.equal(name, c.pipelines[1].name)
    end
    local ri = loader.load("pipelines/recently_interacted.lua").pipelines[1]
    assert.are.equal("const", ri.key_kind)
    assert.are.same({ "global" }, ri.keys)
    assert.are.equal("topk(k=32)", ri.monoid.describe)
    assert.are.equal(86400000, ri.granularity_ms)
    assert.are.equal(30 * 86400000, ri.retention_ms)
    assert.are.equal("event_id", ri.id_field)
  end)

  it("takes a dedup id from a field, a function or the record's source identity", function()
    local c = assert(loader.load(script("ids.lua", [[
local murmur = require("murmur")
murmur.pipeline { name = "f", key = "k", monoid = murmur.count(), dedup = "event_id" }
murmur.pipeline { name = "l", key = "k", monoid = murmur.count(), dedup = function(ev) return ev.id end }
murmur.pipeline { name = "r", key = "k", monoid = murmur.count(), dedup = murmur.record_id }
murmur.pipeline { name = "t", key = "k", monoid = murmur.count(), dedup = { id = murmur.record_id, ttl = "1h" } }
]])))
    assert.are.same({ "field", "lua", "source", "source" },
      { c.by_name.f.id_kind, c.by_name.l.id_kind, c.by_name.r.id_kind, c.by_name.t.id_kind })
    assert.are.equal(3600000, c.by_name.t.dedup_ttl_ms)
    local err, path = load_error([[
local murmur = require("murmur")
murmur.pipeline { name = "x", key = "k", monoid = murmur.count(), dedup = 42 }
]])
    assert.truthy(err:find(path .. ":2:", 1, true), err)
    assert.truthy(err:find("murmur.record_id", 1, true), err)
  end)

  it("accepts several pipelines per script, key lists and Lua functions", function()
    local c = assert(loader.load(script("multi.lua", [[
      local murmur = require("murmur")
      murmur.pipeline { name = "a", key = { "country", "city" }, monoid = murmur.count() }
      murmur.pipeline { name = "b", key = function(ev) return ev.k end, value = "v",
                        monoid = murmur.sum { float = true }, window = murmur.hourly { retention = "2d" },
                        time = "ts", flush = { events = 10, interval = "250ms" } }
    ]])))
    assert.are.equal(2, #c.pipelines)
    assert.are.same({ "country", "city" }, c.pipelines[1].keys)
    assert.are.equal("lua", c.pipelines[2].key_kind)
    assert.are.equal(250, c.pipelines[2].flush_interval_ms)
    assert.are.equal(3600000, c.pipelines[2].granularity_ms)
  end)

  it("names file:line and the expected options for an unknown option", function()
    local err, path = load_error([[
      local murmur = require("murmur")

      murmur.pipeline { name = "x", key = "k", monoid = murmur.count(), windw = 1 }
    ]])
    assert.matches(path:gsub("%p", "%%%0") .. ":3: pipeline: unknown option 'windw' %(expected one of: ", err)
  end)

  it("reports a missing key, a bad monoid and bad parameters", function()
    assert.matches("bad.lua:2: pipeline 'x': 'key' is required",
      (load_error("local m = require('murmur')\nm.pipeline { name = 'x', monoid = m.count() }")))
    assert.matches("bad.lua:2: pipeline 'x': 'monoid' must be one of",
      (load_error("local m = require('murmur')\nm.pipeline { name = 'x', key = 'k', monoid = 'topk' }")))
    assert.matches("bad.lua:1: murmur.topk: unknown parameter 'kk'",
      (load_error("local m = require('murmur') m.pipeline { name = 'x', key = 'k', monoid = m.topk { kk = 3 } }")))
    assert.matches("bad.lua:1: murmur.topk: ",
      (load_error("local m = require('murmur') m.pipeline { name = 'x', key = 'k', value = 'v', monoid = m.topk { k = 0.5 } }")))
    assert.matches("bad.lua:1: window retention: ",
      (load_error("local m = require('murmur') m.pipeline { name = 'x', key = 'k', monoid = m.count(), window = m.daily { retention = '3 days' } }")))
  end)

  it("reports syntax and runtime errors in the script with file:line", function()
    assert.matches("bad.lua:2:", (load_error("local x =\nlocal y = = 2")))
    assert.matches("bad.lua:4: attempt to call", (load_error("local murmur = require('murmur')\n\nlocal f = nil\nf()")))
    assert.matches("bad.lua:3: murmur.nothing does not exist %(monoids: ",
      (load_error("local murmur = require('murmur')\n\nmurmur.nothing()")))
  end)

  it("refuses duplicate pipeline names", function()
    assert.matches("already defined at .*bad.lua:2", (load_error([[
local m = require("murmur")
m.pipeline { name = "x", key = "k", monoid = m.count() }
m.pipeline { name = "x", key = "k", monoid = m.count() }]])))
  end)

  it("sandboxes scripts: no io, os.exit or os.execute unless allowed", function()
    assert.matches("attempt to index global 'io'", (load_error("io.open('/etc/passwd')")))
    assert.matches("attempt to call field 'exit'", (load_error("os.exit(3)")))
    assert.matches("attempt to call field 'execute'", (load_error("os.execute('true')")))
    assert.matches("loadfile", (load_error("loadfile('/etc/passwd')")))
    local allowed = script("allowed.lua", [[
      local murmur = require("murmur")
      murmur.allow("io")
      local f = io.open("/dev/null")
      f:close()
      murmur.pipeline { name = "ok", key = "k", monoid = murmur.count() }
    ]])
    -- The script only asks; the operator grants (--allow io).
    assert.matches("needs the operator's grant: run with %-%-allow io", (select(2, loader.load(allowed))))
    local grants = require("murmur.grants")
    assert(grants.set({ "io" }))
    local c, err = loader.load(allowed)
    assert(grants.set({}))
    assert.is_truthy(c, err)
    assert.are.equal(1, #c.pipelines)
  end)

  it("requires modules next to the script", function()
    S.write_file(dir .. "/helpers_mod.lua", "return { field = 'page' }")
    local c = assert(loader.load(script("uses.lua", [[
      local murmur = require("murmur")
      local h = require("helpers_mod")
      murmur.pipeline { name = "p", key = h.field, monoid = murmur.count() }
    ]])))
    assert.are.same({ "page" }, c.pipelines[1].keys)
    assert.matches("module 'nope' not found", (load_error("require('nope')")))
  end)

  it("murmur check reports the same errors and exits 3", function()
    local path = script("broken.lua", "local m = require('murmur')\nm.pipeline { name = 'x', key = 'k', monoid = m.count(), value = 'v' }")
    local code, _, err = S.murmur_run({ "check", path })
    assert.are.equal(3, code)
    assert.matches("broken.lua:2: pipeline 'x': murmur.count%(%) takes no 'value'", err)
    code = S.murmur_run({ "check", "pipelines/recently_interacted.lua" })
    assert.are.equal(0, code)
  end)
end)
