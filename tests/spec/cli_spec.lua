-- The command line: run, query, check, version, exit codes, checkpoints,
-- graceful stop and crash recovery on the embedded store.
local S = require("spec.support")
local core = require("murmur.core")

local dir

local function script(name, body)
  local path = dir .. "/" .. name
  S.write_file(path, body)
  return path
end

local function query_json(target, entity, data, extra)
  local args = { "query", target, entity, "--data", data, "--json" }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  local code, out, err = S.murmur_run(args)
  return code, out ~= "" and core.json_decode(out) or nil, err
end

local function today(h)
  return os.date("!%Y-%m-%dT", os.time()) .. (h or "12:00:00Z")
end

describe("#cli murmur CLI", function()
  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  it("prints its version and help; unknown commands exit 2", function()
    local code, out = S.murmur_run({ "version" })
    assert.are.equal(0, code)
    assert.matches("^murmur %d+%.%d+%.%d+", out)
    for _, cmd in ipairs({ "run", "query", "check", "test" }) do
      code, out = S.murmur_run({ cmd, "--help" })
      assert.are.equal(0, code)
      assert.matches("usage: murmur " .. cmd, out)
    end
    assert.are.equal(2, (S.murmur_run({ "frobnicate" })))
    assert.are.equal(2, (S.murmur_run({ "run", "--bogus", "x.lua" })))
  end)

  it("takes MURMUR_MALLOC=default and =hugepages and refuses another value", function()
    local input = script("in.jsonl", '{"page_id":"p1"}\n{"page_id":"p1"}\n')
    local code, err
    for _, setting in ipairs({ "default", "hugepages" }) do
      local data = dir .. "/d-" .. setting
      local cmd = "MURMUR_MALLOC=" .. setting .. " " .. S.quote(S.murmur) .. " run --once --data "
        .. S.quote(data) .. " --input " .. S.quote(input) .. " pipelines/page_views.lua"
      code, _, err = S.exec(cmd)
      assert.are.equal(0, code, err)
      local c2, out = query_json("page_views", "p1", data)
      assert.are.equal(0, c2)
      assert.are.equal(2, out.result.value)
    end
    code, _, err = S.exec("MURMUR_MALLOC=glibc " .. S.quote(S.murmur) .. " version")
    assert.are.equal(2, code)
    assert.matches("MURMUR_MALLOC=glibc is not a setting", err, 1, true)
    assert.matches("'default'", err, 1, true)
    assert.matches("'hugepages'", err, 1, true)
  end)

  -- The binary embeds its modules' bytecode (engine/lua/modules.h), used
  -- only for a file that is the source it was built from: an edited copy
  -- on MURMUR_LUA_DIR runs as edited, errors and all, never the build's.
  it("runs an edited copy of its modules, not the bytecode built in", function()
    local lua = dir .. "/lua"
    assert.are.equal(0, (S.exec(("mkdir -p %s && cp %s/lua/murmur/*.lua %s/"):format(
      S.quote(lua .. "/murmur"), S.quote(S.root), S.quote(lua .. "/murmur")))))
    local cli = lua .. "/murmur/cli.lua"
    local src = S.read_file(cli)
    local edited, n = src:gsub('io%.write%(%("murmur %%s', 'io.write(("edited murmur %%s')
    assert.are.equal(1, n)
    S.write_file(cli, edited)
    local env = "MURMUR_LUA_DIR=" .. S.quote(lua) .. " "
    local code, out = S.exec(env .. S.quote(S.murmur) .. " version")
    assert.are.equal(0, code, out)
    assert.matches("^edited murmur %d+%.%d+%.%d+", out)
    -- The same size as built, one byte changed: still the file's code.
    local same = src:gsub('io%.write%(%("murmur %%s', 'io.write(("Murmur %%s')
    assert.are.equal(#src, #same)
    S.write_file(cli, same)
    code, out = S.exec(env .. S.quote(S.murmur) .. " version")
    assert.are.equal(0, code, out)
    assert.matches("^Murmur %d+%.%d+%.%d+", out)
    -- A runtime error in an edited module names that file and line.
    local status = lua .. "/murmur/status.lua"
    S.write_file(status, 'error("broken on purpose")\n' .. S.read_file(status))
    code, out = S.exec(env .. S.quote(S.murmur) .. " status --data " .. S.quote(dir .. "/none") .. " 2>&1")
    assert.are_not.equal(0, code)
    assert.is_truthy(out:find(status .. ":1: broken on purpose", 1, true), out)
  end)

  it("runs a script on stdin with --once and answers queries", function()
    local input = script("in.jsonl", table.concat({
      '{"page_id":"a","n":2}', '{"page_id":"b","n":5}', '{"page_id":"a","n":3}', "",
    }, "\n"))
    local p = script("sum.lua", [[
      local murmur = require("murmur")
      murmur.pipeline { name = "n_by_page", key = "page_id", value = "n", monoid = murmur.sum {} }
    ]])
    local code, _, err = S.murmur_run({ "run", "--once", "--data", dir .. "/d", p }, input)
    assert.are.equal(0, code, err)
    local qc, r = query_json(p, "a", dir .. "/d")
    assert.are.equal(0, qc)
    assert.are.equal(5, r.result.value)
    local _, text = S.murmur_run({ "query", "n_by_page", "b", "--data", dir .. "/d" })
    assert.matches("value 5", text)
  end)

  it("resumes from its checkpoint: a second run over the same file counts nothing twice", function()
    local input = script("in.jsonl", '{"k":"x"}\n{"k":"x"}\n{"k":"y"}\n')
    local p = script("count.lua", [[
      local murmur = require("murmur")
      murmur.pipeline { name = "c", key = "k", monoid = murmur.count() }
    ]])
    for _ = 1, 2 do
      local code, _, err = S.murmur_run({ "run", "--once", "--data", dir .. "/d", "--input", input, p })
      assert.are.equal(0, code, err)
    end
    local f = io.open(input, "ab")
    f:write('{"k":"x"}\n')
    f:close()
    assert.are.equal(0, (S.murmur_run({ "run", "--once", "--data", dir .. "/d", "--input", input, p })))
    local _, r = query_json("c", "x", dir .. "/d")
    assert.are.equal(3, r.result.value)
  end)

  it("runs Lua key/value functions and hierarchical keys", function()
    local input = script("in.jsonl", table.concat({
      '{"country":"fr","city":"paris","ms":10}', '{"country":"fr","city":"lyon","ms":30}',
      '{"country":"de","city":"berlin","ms":5}', "" }, "\n"))
    local p = script("geo.lua", [[
      local murmur = require("murmur")
      murmur.pipeline {
        name = "geo", monoid = murmur.max(),
        key = function(ev) return { ev.country, ev.country .. "/" .. ev.city } end,
        value = function(ev) return ev.ms * 2 end,
      }
    ]])
    assert.are.equal(0, (S.murmur_run({ "run", "--once", "--data", dir .. "/d", "--input", input, p })))
    local _, fr = query_json("geo", "fr", dir .. "/d")
    assert.are.equal(60, fr.result.value)
    local _, lyon = query_json("geo", "fr/lyon", dir .. "/d")
    assert.are.equal(60, lyon.result.value)
    local _, de = query_json("geo", "de", dir .. "/d")
    assert.are.equal(10, de.result.value)
  end)

  it("places events in windows by event time and drops what is past retention", function()
    local now = os.time()
    local day = 86400
    local lines = {}
    for d = 0, 4 do
      for _ = 1, d + 1 do
        lines[#lines + 1] = ('{"k":"x","ts":%d}'):format(now - d * day)
      end
    end
    lines[#lines + 1] = ('{"k":"x","ts":"%s"}'):format(os.date("!%Y-%m-%dT%H:%M:%SZ", now - 10 * day))
    local input = script("in.jsonl", table.concat(lines, "\n") .. "\n")
    local p = script("w.lua", [[
      local murmur = require("murmur")
      murmur.pipeline { name = "w", key = "k", monoid = murmur.count(), time = "ts",
                        window = murmur.daily { retention = "7d" } }
    ]])
    assert.are.equal(0, (S.murmur_run({ "run", "--once", "--data", dir .. "/d", "--input", input, p })))
    local _, r1 = query_json("w", "x", dir .. "/d", { "--window", "1d" })
    assert.are.equal(1, r1.result.value)
    local _, r3 = query_json("w", "x", dir .. "/d", { "--window", "3d" })
    assert.are.equal(1 + 2 + 3, r3.result.value)
    local _, all = query_json("w", "x", dir .. "/d")
    assert.are.equal(15, all.result.value)
    local from = os.date("!%Y-%m-%d", now - 4 * day)
    local to = os.date("!%Y-%m-%d", now - 3 * day)
    local _, range = query_json("w", "x", dir .. "/d", { "--from", from, "--to", to })
    assert.are.equal(5 + 4, range.result.value)
    local dl = S.lines(dir .. "/d/dead-letter/w.jsonl")
    assert.are.equal(1, #dl)
    assert.matches('"reason":"out_of_range"', dl[1])
  end)

  it("merges several data directories in one query", function()
    local p = script("c.lua", [[
      local murmur = require("murmur")
      murmur.pipeline { name = "c", key = "k", monoid = murmur.count() }
    ]])
    local a = script("a.jsonl", '{"k":"x"}\n{"k":"x"}\n')
    local b = script("b.jsonl", '{"k":"x"}\n')
    assert.are.equal(0, (S.murmur_run({ "run", "--once", "--data", dir .. "/w1", "--input", a, p })))
    assert.are.equal(0, (S.murmur_run({ "run", "--once", "--data", dir .. "/w2", "--input", b, p })))
    local code, r = query_json("c", "x", dir .. "/w1", { "--data", dir .. "/w2" })
    assert.are.equal(0, code)
    assert.are.equal(3, r.result.value)
  end)

  it("refuses to run a script whose monoid changed for existing state", function()
    local input = script("in.jsonl", '{"k":"x","v":"a"}\n')
    local p1 = script("t1.lua", "local m = require('murmur') m.pipeline { name = 't', key = 'k', value = 'v', monoid = m.topk { k = 32 } }")
    local p2 = script("t2.lua", "local m = require('murmur')\nm.pipeline { name = 't', key = 'k', value = 'v', monoid = m.topk { k = 10 } }")
    assert.are.equal(0, (S.murmur_run({ "run", "--once", "--data", dir .. "/d", "--input", input, p1 })))
    local code, _, err = S.murmur_run({ "run", "--once", "--data", dir .. "/d", "--input", input, p2 })
    assert.are.equal(3, code)
    assert.matches("t2.lua:2: .*already has state as topk%(k=32%);window=0; this definition is topk%(k=10%)", err)
  end)

  it("exits non-zero with file:line when a script fails at start-up", function()
    local p = script("boom.lua", "local m = require('murmur')\nerror('no config here')")
    local code, _, err = S.murmur_run({ "run", "--once", "--data", dir .. "/d", p })
    assert.are.equal(3, code)
    assert.matches("boom.lua:2: no config here", err)
  end)

  it("stops gracefully on SIGTERM: flushes, checkpoints, exits 0", function()
    local input = script("in.jsonl", string.rep('{"k":"x"}\n', 1000))
    local p = script("c.lua", [[
      local murmur = require("murmur")
      murmur.pipeline { name = "c", key = "k", monoid = murmur.count(), flush = { interval = "1h", events = 1000000 } }
    ]])
    local h = S.spawn(("%s run --follow --data %s --input %s %s"):format(S.murmur, dir .. "/d", input, p), dir .. "/log")
    -- Wait until the input was read (the engine logs nothing per batch, so poll the log for start-up).
    S.sleep(1)
    S.kill(h, "TERM")
    assert.are.equal(0, S.wait_exit(h, 10))
    local _, r = query_json("c", "x", dir .. "/d")
    assert.are.equal(1000, r.result.value)
  end)

  it("survives kill -9 at random points with exact results (embedded store)", function()
    -- 1.5 M events: a whole run takes 0.3 s or more of wall time, so every
    -- kill below (15-100 ms after the start) lands inside one. With 300 000
    -- events the run got fast enough to finish before its kill, and later
    -- kills as late as 300 ms did too once dedup got faster: a first run
    -- that finishes leaves every later one nothing to do.
    local input = dir .. "/events.jsonl"
    S.gen_events(input, 1500000, 1000, 1.1, 3)
    local truth = {}
    for line in io.lines(input) do
      local e = line:match('"page_id":"([^"]+)"')
      truth[e] = (truth[e] or 0) + 1
    end
    local args = ("%s run --once --data %s --input %s pipelines/page_views.lua pipelines/recently_interacted.lua")
      :format(S.murmur, dir .. "/d", input)
    math.randomseed(11)
    local kills = 0
    for _ = 1, 8 do
      local h = S.spawn(args, dir .. "/log")
      S.sleep(("%.3f"):format(0.015 + math.random() * 0.085))
      S.kill(h, "KILL")
      local rc = S.wait_exit(h, 10)
      if rc ~= 0 then kills = kills + 1 end
    end
    local h = S.spawn(args, dir .. "/log")
    assert.are.equal(0, S.wait_exit(h, 60))
    assert.is_true(kills >= 1)
    for _, e in ipairs({ "p1", "p2", "p10", "p500" }) do
      if truth[e] then
        local _, r = query_json("page_views", e, dir .. "/d")
        assert.are.equal(truth[e], r.result.value, e)
      end
    end
    local _, top = query_json("recently_interacted", "global", dir .. "/d")
    assert.are.equal(1500000, top.result.n)
  end)
end)
