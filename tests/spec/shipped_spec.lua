-- Shipped pipelines by name: run, check and query find pipelines/NAME.lua
-- (the Lua module murmur.pipelines.NAME) from any directory, a file of that
-- name in the current directory wins, and an unknown name lists the shipped
-- ones.
local S = require("spec.support")
local core = require("murmur.core")

describe("#shipped pipelines by name", function()
  local dir

  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  local function murmur(args)
    local parts = { "cd", S.quote(dir), "&&", S.quote(S.murmur) }
    for _, a in ipairs(args) do parts[#parts + 1] = S.quote(a) end
    return S.exec(table.concat(parts, " "))
  end

  it("runs, checks and queries recently_interacted from an empty directory", function()
    S.write_file(dir .. "/in.jsonl", '{"entity_id":"x","event_id":"1"}\n{"entity_id":"x","event_id":"2"}\n'
      .. '{"entity_id":"y","event_id":"3"}\n{"entity_id":"x","event_id":"1"}\n')
    local code, out, err = murmur({ "check", "recently_interacted" })
    assert.are.equal(0, code, err)
    assert.matches("pipelines/recently_interacted%.lua:%d+: ok: pipeline 'recently_interacted'", out)
    code, out, err = murmur({ "check", "page_views.lua", "unique_visitors" })
    assert.are.equal(0, code, err)
    assert.matches("pipeline 'page_views'", out)
    assert.matches("pipeline 'unique_visitors'", out)
    code, _, err = murmur({ "run", "--once", "--no-supervisor", "--data", "d", "--input", "in.jsonl", "recently_interacted" })
    assert.are.equal(0, code, err)
    code, out, err = murmur({ "query", "recently_interacted", "global", "--data", "d", "--json" })
    assert.are.equal(0, code, err)
    local items = core.json_decode(out).result.items
    assert.are.equal("x", items[1].item)
    assert.are.equal(2, items[1].count)
  end)

  it("prefers a file of that name in the current directory", function()
    S.write_file(dir .. "/recently_interacted", [[
local murmur = require("murmur")
murmur.pipeline { name = "local_one", key = "k", monoid = murmur.count() }
]])
    local code, out, err = murmur({ "check", "recently_interacted" })
    assert.are.equal(0, code, err)
    assert.matches("pipeline 'local_one'", out)
  end)

  it("names the shipped pipelines when a name is unknown (exit 3)", function()
    local code, _, err = murmur({ "run", "--once", "--no-supervisor", "--data", "d", "--input", "/dev/null", "recently" })
    assert.are.equal(3, code)
    assert.matches("recently: no such file, and no shipped pipeline of that name "
      .. "(shipped: page_views, recently_interacted, unique_visitors)", err, 1, true)
    code, _, err = murmur({ "check", "nosuch.lua" })
    assert.are.equal(3, code)
    assert.matches("shipped: page_views, recently_interacted, unique_visitors", err, 1, true)
    -- A path is a path: no lookup.
    code, _, err = murmur({ "check", "./recently_interacted.lua" })
    assert.are.equal(3, code)
    assert.matches("cannot read the script", err, 1, true)
  end)
end)
