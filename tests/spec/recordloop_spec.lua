-- recordloop_spec.lua: the record loop's three copies (engine/core/pipeline.c,
-- record_loop and enum loop_mode). A literal key over a string monoid with
-- processing time runs the copy specialised for it (LOOP_LITERAL); the same
-- pipeline with its key read from a field runs the field-key copy
-- (LOOP_FIELD), and with `dedup = murmur.record_id`, which a file's records
-- never carry, the general one. Every copy must count, reject and
-- dead-letter the same records the same way, ids and hostile values
-- included.
local S = require("spec.support")
local core = require("murmur.core")
local query = require("murmur.query")

describe("#recordloop the literal-key, field-key and general loops", function()
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

  -- The loop reads records several ahead of the one it processes (its
  -- ring, record_loop): a repeated id within that distance, batches
  -- shorter than the ring, and rejected records inside it must count as
  -- they would one record at a time.
  it("count ids repeated within the read-ahead the same for every batch size", function()
    local lines, valid, rejected = {}, 0, 0
    local function add(line, ok)
      lines[#lines + 1] = line
      if ok then valid = valid + 1 else rejected = rejected + 1 end
    end
    -- Id dD comes again D records later (D = 1..9), then once more at the end.
    for d = 1, 9 do
      add(('{"k":"global","v":"e%d","id":"d%d"}'):format(d % 4, d), true)
      for j = 1, d - 1 do
        if j == 2 then
          add('{"k":"global","v":"e1","id":"bad"', false)
        else
          add(('{"k":"global","v":"e%d","id":"f%d_%d"}'):format(j % 3, d, j), true)
        end
      end
      add(('{"k":"global","v":"e%d","id":"d%d"}'):format(d % 3, d), true)
    end
    for d = 1, 9 do add(('{"k":"global","v":"e0","id":"d%d"}'):format(d), true) end
    local duplicates = 18
    local input = dir .. "/in.jsonl"
    S.write_file(input, table.concat(lines, "\n") .. "\n")
    local first
    for _, batch in ipairs({ 1, 2, 3, 4, 5, 7, 4096 }) do
      local script = ("%s/p%d.lua"):format(dir, batch)
      S.write_file(script, ([[
        local murmur = require("murmur")
        local src = murmur.input { batch = %d }
        murmur.pipeline { name = "lit", key = murmur.literal("global"), value = "v", source = src,
          monoid = murmur.topk { k = 8 }, dedup = { id = "id", ttl = "2d" } }
        murmur.pipeline { name = "fld", key = "k", value = "v", source = src,
          monoid = murmur.topk { k = 8 }, dedup = { id = "id", ttl = "2d" } }
      ]]):format(batch))
      local data = ("%s/d%d"):format(dir, batch)
      local code, out, err = S.murmur_run({ "run", "--once", "--stats", "--data", data, "--input", input, script })
      assert.are.equal(0, code, err:sub(-1000))
      local stats = core.json_decode(out)
      for _, name in ipairs({ "lit", "fld" }) do
        local st = stats.pipelines[name]
        assert.are.equal(valid + rejected, st.records, name .. " batch " .. batch)
        assert.are.equal(duplicates, st.duplicates, name .. " batch " .. batch)
        assert.are.equal(valid - duplicates, st.accepted, name .. " batch " .. batch)
        assert.are.equal(rejected, st.rejected.json, name .. " batch " .. batch)
        local r = assert(query.run(name, "global", { data = { data } }))
        assert.is_true(r.found)
        first = first or r.result.value
        assert.are.same(first, r.result.value, name .. " batch " .. batch)
      end
    end
  end)
  -- A key from a field runs LOOP_FIELD; the same pipeline deduplicated by
  -- the source's record id runs the general copy, and a file's records carry
  -- none, so the two must agree on every record: one pair per value path
  -- (a string monoid's field, a constant, a number's field, HyperLogLog).
  it("count, reject and dead-letter alike in the field-key copy and the general one", function()
    local lines = {
      '{"k":"a","v":"e1","n":2}',
      '{"k":"a","v":"e2","n":3.5}',
      '{"k":"b","v":"e1","n":-1}',
      '{"k":"\\u0061","v":"e\\u0033","n":1}',
      '{"k":1,"v":"e4","n":1}',
      '{"k":1.0,"v":"e4","n":1e0}',
      '{"k":"","v":"e1","n":1}',
      '{"k":"' .. string.rep("k", 1025) .. '","v":"e1","n":1}',
      '{"k":true,"v":"e1","n":1}',
      '{"k":{"x":1},"v":"e1","n":1}',
      '{"nok":"a","v":"e1","n":1}',
      '{"k":"a","nov":1}',
      '{"k":"a","v":true,"n":"2"}',
      '{"k":"a","v":null,"n":null}',
      '{"k":"c","v":"e\xff","n":1}',
      '{"k":"a","v":"e1",}',
      '["k","a"]',
      '{"k":"a","k":"b","v":"e1","n":1}',
      '{"k":"d","v":12,"n":1e400}',
    }
    local input = dir .. "/in.jsonl"
    S.write_file(input, table.concat(lines, "\n") .. "\n")
    local script = dir .. "/p.lua"
    local pairs_ = {
      top = 'value = "v", monoid = murmur.topk { k = 8 }',
      one = "value = 1, monoid = murmur.sum()",
      num = 'value = "n", monoid = murmur.sum()',
      hll = 'value = "v", monoid = murmur.hll()',
    }
    local body = { 'local murmur = require("murmur")' }
    for name, spec in pairs(pairs_) do
      body[#body + 1] = ('murmur.pipeline { name = "f%s", key = "k", %s }'):format(name, spec)
      body[#body + 1] = ('murmur.pipeline { name = "g%s", key = "k", %s, dedup = murmur.record_id }')
        :format(name, spec)
    end
    S.write_file(script, table.concat(body, "\n") .. "\n")
    local code, out, err = S.murmur_run({ "run", "--once", "--stats", "--data", dir .. "/d", "--input", input, script })
    assert.are.equal(0, code, err:sub(-1000))
    local stats = core.json_decode(out)
    for name in pairs(pairs_) do
      local f, g = stats.pipelines["f" .. name], stats.pipelines["g" .. name]
      assert.is_true(f.accepted > 0, name)
      assert.is_true(f.records > f.accepted, name)
      for _, field in ipairs({ "records", "accepted", "duplicates", "dedup_skipped" }) do
        assert.are.equal(g[field], f[field], name .. " " .. field)
      end
      assert.are.same(g.rejected, f.rejected, name)
      for _, key in ipairs({ "a", "b", "1", "c", "d" }) do
        local rf = assert(query.run("f" .. name, key, { data = { dir .. "/d" } }))
        local rg = assert(query.run("g" .. name, key, { data = { dir .. "/d" } }))
        assert.are.equal(rg.found, rf.found, name .. " " .. key)
        if rf.found then assert.are.same(rg.result.value, rf.result.value, name .. " " .. key) end
      end
      local lf = S.dead_letters(dir .. "/d", "f" .. name, "p")
      assert.is_true(#lf > 0, name)
      assert.are.same(S.dead_letters(dir .. "/d", "g" .. name, "p"), lf, name)
    end
  end)
end)
