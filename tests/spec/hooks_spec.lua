-- On-merge hooks run after a flush is durable, once per merged key; an error
-- is logged (or, with on_merge_errors = "fail", stops the run with status 1)
-- and never rolls the merge back.
local S = require("spec.support")
local core = require("murmur.core")

describe("#hooks on_merge hooks", function()
  local dir
  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  local function run(mode)
    local p = dir .. "/p.lua"
    S.write_file(p, ([[
local murmur = require("murmur")
murmur.allow("io")
murmur.pipeline { name = "c", key = "k", monoid = murmur.count(), on_merge_errors = %q,
  on_merge = function(entity, delta, bucket)
    if entity == "bad" then error("hook says no") end
    local f = io.open(%q, "a")
    f:write(entity, "=", delta.value, "@", bucket, "\n")
    f:close()
  end }
]]):format(mode, dir .. "/hook.log"))
    S.write_file(dir .. "/in.jsonl", '{"k":"a"}\n{"k":"a"}\n{"k":"bad"}\n{"k":"b"}\n')
    -- The hook writes a file: io needs the operator's grant (doc/security.md).
    return S.murmur_run({ "run", "--once", "--no-supervisor", "--allow", "io", "--data", dir .. "/d", "--input", dir .. "/in.jsonl", p })
  end

  local function value(entity)
    local _, out = S.murmur_run({ "query", "c", entity, "--json", "--data", dir .. "/d" })
    return core.json_decode(out).result.value
  end

  it("calls the hook with each durable delta and logs hook errors", function()
    local code, _, err = run("log")
    assert.are.equal(0, code, err)
    local lines = S.lines(dir .. "/hook.log")
    table.sort(lines)
    assert.are.same({ "a=2@0", "b=1@0" }, lines)
    assert.matches("on_merge hook failed for 'bad' %(bucket 0%): .*p.lua:5: hook says no", err)
    assert.are.equal(1, value("bad"))
  end)

  it("propagates a hook error as a failure without rolling the merge back", function()
    local code, _, err = run("fail")
    assert.are.equal(1, code, err)
    assert.are.equal(1, value("bad"))
    assert.are.equal(2, value("a"))
  end)

  it("loads murmur.hooks only for a pipeline that has a hook", function()
    package.loaded["murmur.hooks"] = nil
    S.write_file(dir .. "/p.lua", [[
local murmur = require("murmur")
murmur.pipeline { name = "c", key = "k", monoid = murmur.count() }
]])
    S.write_file(dir .. "/in.jsonl", '{"k":"a"}\n')
    local specs = assert(require("murmur.loader").load_all({ dir .. "/p.lua" }))
    local engine = assert(require("murmur.runner").build(specs, { data = dir .. "/d", input = dir .. "/in.jsonl" }))
    assert.are.equal(0, engine:run(true))
    engine:close()
    assert.is_nil(package.loaded["murmur.hooks"])
    local code, _, err = run("log")
    assert.are.equal(0, code, err)
    assert.are.equal(2, #S.lines(dir .. "/hook.log"))
  end)

  it("refuses a hook that is not a function", function()
    S.write_file(dir .. "/x.lua", "local m = require('murmur')\nm.pipeline { name = 'x', key = 'k', monoid = m.count(), on_merge = 3 }\n")
    local code, _, err = S.murmur_run({ "check", dir .. "/x.lua" })
    assert.are.equal(3, code)
    assert.matches("x.lua:2: on_merge must be a function", err)
  end)
end)
