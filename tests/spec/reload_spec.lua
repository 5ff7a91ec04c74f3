-- Hot reload while events stream in: saves (in place and rename-over),
-- SIGHUP and `murmur reload` swap versions at a batch boundary; invalid or
-- incompatible versions are refused with file:line and the old one keeps
-- running; no event is lost or counted twice.
local S = require("spec.support")
local core = require("murmur.core")

local dir, h

local function status() return S.status(dir .. "/d") end

local function wait_for(pred, seconds, what) return S.wait_status(dir .. "/d", pred, seconds, what) end

local function query(name, entity)
  local code, out = S.murmur_run({ "query", name, entity, "--json", "--data", dir .. "/d" })
  if code ~= 0 then return 0 end
  return core.json_decode(out).result.value
end

-- A version of the script: both pipelines read the version V, one counts
-- events per version, the other sums V per event, so the final sum must be
-- exactly sum over versions of (events it processed * V).
local function version(v)
  return ([[
local murmur = require("murmur")
local V = %d
murmur.pipeline { name = "per_version", monoid = murmur.count(), key = function(ev) return "v" .. V end,
                  flush = { interval = "100ms" } }
murmur.pipeline { name = "weighted", monoid = murmur.sum {}, key = "k", value = function(ev) return V end,
                  flush = { interval = "100ms" } }
]]):format(v)
end

local function save(path, body, rename)
  if rename then
    S.write_file(path .. ".swp", body)
    assert(os.rename(path .. ".swp", path))
  else
    S.write_file(path, body)
  end
end

local function start(script_path, input)
  h = S.spawn(("%s run --follow --data %s --input %s %s"):format(S.murmur, dir .. "/d", input, script_path),
    dir .. "/log")
  wait_for(function(st) return st.engine ~= nil end, 10, "start-up")
end

local function stop()
  S.kill(h, "TERM")
  return S.wait_exit(h, 15)
end

describe("#reload hot reload", function()
  before_each(function()
    dir = S.tmpdir()
    S.write_file(dir .. "/in.jsonl", "")
  end)
  after_each(function()
    if h then S.kill(h, "KILL") S.wait_exit(h, 5) h = nil end
    S.rm_rf(dir)
  end)

  it("swaps versions many times under a continuous stream with exact results", function()
    local p = dir .. "/p.lua"
    save(p, version(1))
    local input = dir .. "/in.jsonl"
    start(p, input)
    -- A writer appends events continuously in the background.
    S.write_file(dir .. "/writer.sh", ("for i in $(seq 1 60); do for j in $(seq 1 50); do echo '{\"k\":\"x\"}'; done >> %s; sleep 0.05; done\n")
      :format(S.quote(input)))
    local writer = S.spawn("sh " .. S.quote(dir .. "/writer.sh"))
    local expected_ok, expected_failed = 0, 0
    for i = 2, 9 do
      local before = status().reload
      if i % 2 == 1 then
        save(p, "local murmur = require('murmur')\nmurmur.pipeline { name = = 'broken' }\n", i % 3 == 0)
        expected_failed = expected_failed + 1
        local st = wait_for(function(s) return s.reload.failed > before.failed end, 10, "a refused reload")
        assert.matches("p.lua:2:", st.reload.last_error)
      else
        save(p, version(i), i % 4 == 0)
        expected_ok = expected_ok + 1
        wait_for(function(s) return s.reload.ok > before.ok end, 10, "reload " .. i)
      end
      S.sleep(0.2)
    end
    assert.are.equal(0, S.wait_exit(writer, 30))
    wait_for(function(s) return s.engine.records == 3000 end, 20, "all 3000 events")
    local st = status()
    assert.are.equal(expected_ok, st.reload.ok)
    assert.are.equal(expected_failed, st.reload.failed)
    assert.are.equal(0, stop())
    local total, weighted = 0, 0
    for v = 1, 9 do
      local n = query("per_version", "v" .. v)
      total = total + n
      weighted = weighted + n * v
    end
    assert.are.equal(3000, total)
    assert.are.equal(weighted, query("weighted", "x"))
    assert.is_true(query("per_version", "v8") > 0 or query("per_version", "v6") > 0)
  end)

  it("refuses an incompatible change with a clear message and keeps the old version", function()
    local p = dir .. "/t.lua"
    save(p, "local m = require('murmur')\nm.pipeline { name = 't', key = 'k', value = 'v', monoid = m.topk { k = 32 } }\n")
    start(p, dir .. "/in.jsonl")
    save(p, "local m = require('murmur')\n\nm.pipeline { name = 't', key = 'k', value = 'v', monoid = m.topk { k = 10 } }\n")
    local st = wait_for(function(s) return s.reload.failed == 1 end, 10, "the refusal")
    assert.matches("t.lua:3: pipeline 't' is incompatible with its existing state: it was topk%(k=32%);window=0, the new definition is topk%(k=10%);window=0", st.reload.last_error)
    S.write_file(dir .. "/in.jsonl", '{"k":"g","v":"a"}\n{"k":"g","v":"a"}\n')
    wait_for(function(s) return s.engine.records == 2 end, 10, "records")
    assert.are.equal(0, stop())
    local _, out = S.murmur_run({ "query", "t", "g", "--json", "--data", dir .. "/d" })
    local r = core.json_decode(out).result
    assert.are.equal(32, r.k)
    assert.are.equal(2, r.items[1].count)
  end)

  it("adds and removes pipelines, reloads on SIGHUP and `murmur reload`, and follows required modules", function()
    local p = dir .. "/p.lua"
    S.write_file(dir .. "/fields.lua", "return { key = 'a' }\n")
    save(p, [[
local murmur = require("murmur")
local f = require("fields")
murmur.pipeline { name = "one", monoid = murmur.count(), key = f.key, flush = { interval = "100ms" } }
]])
    start(p, dir .. "/in.jsonl")
    local f = io.open(dir .. "/in.jsonl", "ab")
    f:write('{"a":"x","b":"y"}\n')
    f:close()
    wait_for(function(s) return s.engine.records == 1 end)
    -- Changing only the module reloads: key now reads field b.
    S.write_file(dir .. "/fields.lua", "return { key = 'b' }\n")
    wait_for(function(s) return s.reload.ok == 1 end, 10, "the module reload")
    -- Add a pipeline.
    save(p, [[
local murmur = require("murmur")
local f = require("fields")
murmur.pipeline { name = "one", monoid = murmur.count(), key = f.key, flush = { interval = "100ms" } }
murmur.pipeline { name = "two", monoid = murmur.count(), key = "a", flush = { interval = "100ms" } }
]])
    wait_for(function(s) return s.reload.ok == 2 and s.engine.pipelines.two ~= nil end, 10, "pipeline two")
    f = io.open(dir .. "/in.jsonl", "ab")
    f:write('{"a":"x","b":"y"}\n')
    f:close()
    wait_for(function(s) return s.engine.records == 2 end)
    -- Remove pipeline one; SIGHUP with unchanged files is a no-op.
    save(p, [[
local murmur = require("murmur")
murmur.pipeline { name = "two", monoid = murmur.count(), key = "a", flush = { interval = "100ms" } }
]])
    wait_for(function(s) return s.reload.ok == 3 and s.engine.pipelines.one == nil end, 10, "removal")
    local code = S.murmur_run({ "reload", "--data", dir .. "/d" })
    assert.are.equal(0, code)
    wait_for(function(s) return s.reload.unchanged >= 1 end, 10, "the no-op reload")
    S.kill({ pid = status().supervisor_pid }, "HUP")
    wait_for(function(s) return s.reload.unchanged >= 2 end, 10, "SIGHUP")
    f = io.open(dir .. "/in.jsonl", "ab")
    f:write('{"a":"x","b":"y"}\n')
    f:close()
    wait_for(function(s) return s.engine.records == 3 end)
    assert.are.equal(0, stop())
    assert.are.equal(1, query("one", "x"))
    assert.are.equal(1, query("one", "y"))
    assert.are.equal(2, query("two", "x"))
    -- The same source kept running across every reload: read once, no rewind.
    local st = status()
    for _, src in pairs(st.engine.sources) do
      if not src.closed then assert.are.equal(3, src.records) end
    end
  end)
end)
