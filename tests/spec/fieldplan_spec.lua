-- fieldplan_spec.lua: the Lua path's field plans (lua/murmur/fieldplan.lua).
-- Which functions get one (their event parameter only read by constant
-- names), that a plan's table holds what json_decode gives for those names,
-- and that a planned pipeline and its unplanned twin give the same counts,
-- rejections and dead letters on the same records, hostile ones included.
local S = require("spec.support")
local core = require("murmur.core")
local query = require("murmur.query")
local fieldplan = require("murmur.fieldplan")

local function sorted(t)
  table.sort(t)
  return t
end

describe("#fieldplan which functions read only named members", function()
  it("finds the names read by constant from the event", function()
    assert.are.same({ "page_id" }, fieldplan.reads(function(ev) return ev.page_id end))
    assert.are.same({ "a", "b" }, sorted(fieldplan.reads(function(ev)
      if ev.a == nil then return ev["b"] end
      return ev.a .. ":" .. tostring(ev.b)
    end)))
    assert.are.same({}, fieldplan.reads(function() return "x" end))
    assert.are.same({ "x" }, fieldplan.reads(function(ev, unused)
      local s = ev.x
      if not s then return end
      return s:upper()
    end))
  end)

  it("refuses a function that could see or keep the table itself", function()
    local kept
    local refused = {
      function(ev) return ev end,
      function(ev) local e = ev return e.a end,
      function(ev) for k in pairs(ev) do return k end end,
      function(ev) return ev[1] end,
      function(ev) local k = "a" return ev[k] end,
      function(ev) return tostring(ev) end,
      function(ev) kept = ev end,
      function(ev) ev.a = 1 return ev.a end,
      function(ev) ev = { a = 1 } return ev.a end,
      function(ev) return function() return ev.a end end,
      function(ev) return ev and ev.a end,
      function(ev) return #ev end,
      function(...) return (...).a end,
    }
    for i, fn in ipairs(refused) do
      assert.is_nil(fieldplan.reads(fn), "function " .. i)
    end
    assert.is_nil(kept)
    assert.is_nil(fieldplan.reads(print)) -- a C function
  end)
end)

describe("#fieldplan a plan's table", function()
  local spec = {
    key_kind = "lua", key_fn = function(ev) return ev.k end,
    value_kind = "field", value_field = "v",
    time_kind = "none", id_kind = "lua",
    id_fn = function(ev) return ev.id end,
  }

  it("holds what json_decode gives for the planned names, or asks for the full decode", function()
    local plan = assert(fieldplan.of(spec))
    assert.are.same({ "id", "k", "v" }, sorted({ unpack(plan.names) }))
    local flat = {
      '{"k":"p1","v":"u1","id":"e1","other":"x"}',
      '{"k":12,"v":-1.5,"id":null,"t":true,"f":false}',
      '{"k":9007199254740993,"v":0,"zz":"long enough"}',
      '{"k":-9007199254740993,"v":1.0,"id":"\xc3\xa9t\xc3\xa9"}',
      ' {"v":true,"id":false,"x":"padding........"} ',
      '{"k":"\\u00e9","v":1,"x":"an escaped key value"}', -- escaped: full decode
      '{"k":"p1","v":"u1","o":{"nested":1}}',           -- nested: full decode
      '{"k":"p1","v":"u1","x":1,"x":2,"pad":"...."}',    -- duplicate: full decode
      '{"k":"p1","v":"u1","x":1e999,"pad":"....."}',     -- overflow: full decode
      '{"k":"p1"}',                                      -- short: full decode
    }
    local full = { [6] = true, [7] = true, [8] = true, [9] = true, [10] = true }
    for i, rec in ipairs(flat) do
      local ev = plan.fill(rec, #rec)
      if full[i] then
        assert.is_nil(ev, rec)
      else
        assert.is_table(ev, rec)
        local want = core.json_decode(rec)
        for _, name in ipairs(plan.names) do
          assert.are.equal(type(want[name]), type(ev[name]), rec .. " " .. name)
          assert.is_true(want[name] == ev[name], rec .. " " .. name)
        end
      end
    end
    -- int64 beyond 2^53 stays exact, as json_decode gives it.
    local big = '{"k":9007199254740993,"v":0,"zz":"long enough"}'
    assert.are.equal("9007199254740993LL", tostring(plan.fill(big, #big).k))
  end)

  it("is not made when any function of the pipeline could see the whole table", function()
    local s = setmetatable({ value_kind = "lua", value_fn = function(ev) return #ev end }, { __index = spec })
    assert.is_false(fieldplan.of(s))
  end)
end)

describe("#fieldplan a planned pipeline and its unplanned twin", function()
  local dir

  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  it("count, reject and dead-letter the same records the same way", function()
    local lines = {
      '{"page_id":"p1","user_id":"u1","source":"kafka"}',
      '{"page_id":"p2","user_id":"u2","source":"kafka"}',
      '{"page_id":"p1","user_id":"u3","source":"kinesis"}',
      '{"page_id":12,"user_id":"u1","n":1.5,"ok":true}',
      '{"page_id":12.0,"user_id":"u1","n":null,"ok":false}',
      '{"page_id":"p\\u0031","user_id":"u1","escaped":"yes"}',
      '{"page_id":"p1","user_id":"u1","o":{"page_id":"p9"}}',
      '{"page_id":"p1","user_id":"u1","x":1,"x":2}',
      '{"page_id":"p1","user_id":"u1","big":1e999}',
      '{"page_id":"p1","page_id":"p2","user_id":"u1"}',
      '{"user_id":"u1","no":"page id here"}',
      '{"page_id":true,"user_id":"u1","pad":"..."}',
      '{"page_id":"","user_id":"u1","pad":"....."}',
      '{"page_id":"p\xff","user_id":"u1","pad":"..."}',
      '["page_id","p1","user_id","u1","pad"]',
      '{"page_id":"p1","user_id":"u1",}',
      '{"page_id":9007199254740993,"user_id":"u1","a":1}',
    }
    local input = dir .. "/in.jsonl"
    S.write_file(input, table.concat(lines, "\n") .. "\n")
    local script = dir .. "/p.lua"
    S.write_file(script, [[
      local murmur = require("murmur")
      murmur.pipeline { name = "planned", key = function(ev) return ev.page_id end,
        value = "user_id", monoid = murmur.set { max_size = 100 } }
      murmur.pipeline { name = "unplanned", key = function(ev) local e = ev return e.page_id end,
        value = "user_id", monoid = murmur.set { max_size = 100 } }
    ]])
    local code, out, err = S.murmur_run({ "run", "--once", "--stats", "--data", dir .. "/d", "--input", input, script })
    assert.are.equal(0, code, err:sub(-1000))
    local stats = core.json_decode(out)
    local a, b = stats.pipelines.planned, stats.pipelines.unplanned
    assert.are.equal(8, a.accepted)
    assert.are.equal(b.accepted, a.accepted)
    assert.are.same(b.rejected, a.rejected)
    for _, entity in ipairs({ "p1", "p2", "12", "9007199254740993" }) do
      local ra = assert(query.run("planned", entity, { data = { dir .. "/d" } }))
      local rb = assert(query.run("unplanned", entity, { data = { dir .. "/d" } }))
      assert.are.same(rb.found and rb.result.value, ra.found and ra.result.value, entity)
    end
    local la = S.dead_letters(dir .. "/d", "planned", "planned")
    assert.are.equal(#lines - 8, #la)
    assert.are.same(S.dead_letters(dir .. "/d", "unplanned", "planned"), la)
  end)
end)
