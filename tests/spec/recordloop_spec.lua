-- recordloop_spec.lua: the record loop's two copies (engine/core/pipeline.c,
-- record_loop). A literal key over a string monoid with processing time
-- runs the copy specialised for it; the same pipeline with its key read from
-- a field runs the general one. Both must count, reject and dead-letter the
-- same records the same way, ids and hostile values included.
local S = require("spec.support")
local core = require("murmur.core")
local query = require("murmur.query")

describe("#recordloop the literal-key loop and the general loop", function()
  local dir

  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  it("count, reject and dead-letter the same records the same way", function()
    local lines = {
      '{"k":"global","v":"e1"}',
      '{"k":"global","v":"e2","id":"a"}',
      '{"k":"global","v":"e2","id":"a"}',
      '{"k":"global","v":"e3","id":""}',
      '{"k":"global","v":12,"id":7}',
      '{"k":"global","v":12.0}',
      '{"k":"global","v":"e\\u0031","id":"b\\u0032"}',
      '{"k":"global","v":"e1","id":"b2"}',
      '{"k":"global","no":"value"}',
      '{"k":"global","v":true}',
      '{"k":"global","v":null,"id":"c"}',
      '{"k":"global","v":{"x":1}}',
      '{"k":"global","v":"e\xff"}',
      '{"k":"global","v":"e1",}',
      '["k","global","v","e1"]',
      '{"k":"global","v":"' .. string.rep("x", 300) .. '","id":"d"}',
      '{"k":"global","v":"e4","id":"' .. string.rep("i", 1025) .. '"}',
      '{"k":"global","v":"e1","id":"a"}',
    }
    local input = dir .. "/in.jsonl"
    S.write_file(input, table.concat(lines, "\n") .. "\n")
    local script = dir .. "/p.lua"
    S.write_file(script, [[
      local murmur = require("murmur")
      murmur.pipeline { name = "lit", key = murmur.literal("global"), value = "v",
        monoid = murmur.topk { k = 32 }, dedup = { id = "id", ttl = "2d" } }
      murmur.pipeline { name = "fld", key = "k", value = "v",
        monoid = murmur.topk { k = 32 }, dedup = { id = "id", ttl = "2d" } }
    ]])
    local code, out, err = S.murmur_run({ "run", "--once", "--stats", "--data", dir .. "/d", "--input", input, script })
    assert.are.equal(0, code, err:sub(-1000))
    local stats = core.json_decode(out)
    local a, b = stats.pipelines.lit, stats.pipelines.fld
    assert.is_true(a.accepted > 0)
    assert.is_true(a.duplicates > 0)
    for _, field in ipairs({ "records", "accepted", "duplicates", "dedup_skipped" }) do
      assert.are.equal(b[field], a[field], field)
    end
    assert.are.same(b.rejected, a.rejected)
    local ra = assert(query.run("lit", "global", { data = { dir .. "/d" } }))
    local rb = assert(query.run("fld", "global", { data = { dir .. "/d" } }))
    assert.is_true(ra.found)
    assert.are.same(rb.result.value, ra.result.value)
    local la = S.dead_letters(dir .. "/d", "lit", "lit")
    assert.is_true(#la > 0)
    assert.are.same(S.dead_letters(dir .. "/d", "fld", "lit"), la)
  end)
end)
