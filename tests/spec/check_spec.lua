-- murmur check --input: dry runs of sample lines through the pipelines, on
-- the C path and the Lua path, compared with what `murmur run --once` does
-- with the same lines (accepted counts, duplicates, dead-letter reasons).
local S = require("spec.support")
local core = require("murmur.core")
local query = require("murmur.query")

local dir

local function write(name, body)
  local path = dir .. "/" .. name
  S.write_file(path, body)
  return path
end

local function today(hms)
  return os.date("!%Y-%m-%d", os.time()) .. "T" .. (hms or "00:30:00") .. "Z"
end

local function check(args, stdin)
  local a = { "check" }
  for _, v in ipairs(args) do a[#a + 1] = v end
  return S.murmur_run(a, stdin)
end

local function json_lines(s)
  local out = {}
  for l in s:gmatch("[^\n]+") do out[#out + 1] = assert(core.json_decode(l), l) end
  return out
end

-- A C-path pipeline and a Lua-path pipeline with the same parts: daily
-- buckets kept 7 days, dedup on event_id, max_record 200 bytes.
local PIPELINES = [[
local murmur = require("murmur")
murmur.pipeline {
  name = "fast", key = "page_id", value = "n", monoid = murmur.sum {},
  time = "ts", window = murmur.daily { retention = "7d" }, dedup = "event_id", max_record = 200,
}
murmur.pipeline {
  name = "slow",
  key = function(e)
    if e.page_id == "boom" then error("boom") end
    return e.page_id
  end,
  value = "n", monoid = murmur.sum {},
  time = "ts", window = murmur.daily { retention = "7d" }, dedup = "event_id", max_record = 200,
}
]]

-- Every kind of line: accepted, duplicate, and each rejection reason.
local function mixed_lines()
  return {
    ('{"page_id":"a","n":2,"ts":"%s","event_id":"e1"}'):format(today()),
    ('{"page_id":"b","n":3,"ts":"%s","event_id":"e2"}'):format(today("01:00:00")),
    ('{"page_id":"a","n":2,"ts":"%s","event_id":"e1"}'):format(today()), -- duplicate
    '{"page_id":"a",', -- json
    '{"page_id":"\255\254","n":1,"ts":"' .. today() .. '"}', -- utf8
    "[1,2,3]", -- not_object
    ('{"n":1,"ts":"%s"}'):format(today()), -- missing_field
    ('{"page_id":"a","n":"many","ts":"%s"}'):format(today()), -- wrong_type
    ('{"page_id":"a","n":1,"ts":"%s","pad":"%s"}'):format(today(), ("x"):rep(300)), -- too_big
    '{"page_id":"a","n":1,"ts":"2020-01-01T00:00:00Z"}', -- out_of_range (retention)
    ('{"page_id":"boom","n":1,"ts":"%s"}'):format(today()), -- lua_error on the Lua path
    "",
    ('{"page_id":7,"n":5,"ts":"%s"}'):format(today()),
  }
end

describe("murmur check --input #check", function()
  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  it("makes a key typo obvious: every line missing_field, a summary with a hint, exit 1", function()
    local src = assert(S.read_file(S.root .. "/pipelines/page_views.lua"))
    local typo = write("page_views.lua", (src:gsub('key = "page_id"', 'key = "pgae_id"')))
    local lines = {}
    for i = 1, 12 do lines[i] = ('{"page_id":"p%d","ts":"%s"}'):format(i, today()) end
    local input = write("in.jsonl", table.concat(lines, "\n") .. "\n")
    local code, out, err = check({ typo, "--input", input })
    assert.are.equal(1, code, err)
    local n = 0
    for _ in out:gmatch("page_views: rejected  missing_field: missing key field 'pgae_id'\n") do n = n + 1 end
    assert.are.equal(10, n, out)
    assert.matches("page_views: 10 of 10 lines rejected %(missing_field 10%); check the field names in the script", out)
  end)

  it("shows keys, value, event time, daily bucket and dedup id on the C and Lua paths", function()
    local p = write("p.lua", PIPELINES)
    local input = write("in.jsonl", table.concat(mixed_lines(), "\n") .. "\n")
    local code, out, err = check({ p, "--input", input, "--lines", "2" })
    assert.are.equal(0, code, err)
    for _, name in ipairs({ "fast", "slow" }) do
      assert.matches(("  %s: accepted  key \"a\"  value 2  time %s  bucket day %s  id \"e1\"\n")
        :format(name, today("00:30:00.000"), os.date("!%Y-%m-%d")):gsub("%-", "%%-"), out)
      assert.matches(("%s: 2 of 2 lines accepted\n"):format(name), out)
    end
    assert.matches('line 2  {"page_id":"b"', out, 1, true)
  end)

  it("--json: one object per line and pipeline, every rejection reason, same on both paths", function()
    local p = write("p.lua", PIPELINES)
    local input = write("in.jsonl", table.concat(mixed_lines(), "\n") .. "\n")
    local code, out, err = check({ p, "--input", input, "--json", "--lines", "100" })
    assert.are.equal(1, code, err)
    local rs = json_lines(out)
    assert.are.equal(24, #rs) -- 12 non-empty lines x 2 pipelines
    local by = { fast = {}, slow = {} }
    for _, r in ipairs(rs) do table.insert(by[r.pipeline], r) end
    local expect = { "accepted", "accepted", "duplicate", "json", "utf8", "not_object", "missing_field",
      "wrong_type", "too_big", "out_of_range", "lua_error", "accepted" }
    for _, name in ipairs({ "fast", "slow" }) do
      for i, r in ipairs(by[name]) do
        local want = expect[i]
        -- The Lua key function returns nil for a missing page_id: wrong_type.
        if name == "fast" and want == "lua_error" then want = "accepted" end
        if name == "slow" and want == "missing_field" then want = "wrong_type" end
        assert.are.equal(want, r.reason or r.outcome, name .. " line " .. r.line .. ": " .. core.json_encode(r))
      end
      local a = by[name][1]
      assert.are.same({ "a" }, a.keys)
      assert.are.equal(2, a.value)
      assert.are.equal("int", a.value_type)
      assert.are.equal(today("00:30:00.000"), a.time)
      assert.are.equal("day", a.window)
      assert.are.equal(os.date("!%Y-%m-%d"), a.bucket_label)
      assert.are.equal(core.bucket(86400000, a.time_ms), a.bucket)
      assert.are.equal("e1", a.id)
      assert.are.equal("e1", by[name][3].id)
      assert.are.equal(13, by[name][12].line) -- file line numbers (an empty line is skipped)
      assert.are.same({ "7" }, by[name][12].keys) -- a number key as written
      assert.are.equal(5, by[name][12].value)
      assert.matches("older than the retention", by[name][10].error)
    end
    assert.are.equal("EMISSING", by.fast[7].code)
    assert.are.equal("missing key field 'page_id'", by.fast[7].error)
    assert.are.equal("key function returned a nil", by.slow[7].error)
    assert.matches("p.lua:%d+: boom", by.slow[11].error)
    assert.matches("fast: 7 of 12 lines rejected (json 1, utf8 1, not_object 1, missing_field 1, wrong_type 1, too_big 1, out_of_range 1); the input is not JSON Lines", err, 1, true)
    assert.matches("slow: %d+ of 12 lines rejected %(json 1, utf8 1, not_object 1, wrong_type 2, too_big 1, out_of_range 1, lua_error 1%)", err)
  end)

  it("accepts exactly what run --once accepts, with the same dead-letter reasons and messages", function()
    local p = write("p.lua", PIPELINES)
    local input = write("in.jsonl", table.concat(mixed_lines(), "\n") .. "\n")
    local _, out = check({ p, "--input", input, "--json", "--lines", "1000" })
    local checked = { fast = { accepted = 0, duplicate = 0, dead = {} }, slow = { accepted = 0, duplicate = 0, dead = {} } }
    for _, r in ipairs(json_lines(out)) do
      local c = checked[r.pipeline]
      if r.outcome == "rejected" then c.dead[#c.dead + 1] = r.reason .. " " .. r.error
      else c[r.outcome] = c[r.outcome] + 1 end
    end
    local data = dir .. "/data"
    local code, stats_out, err = S.murmur_run({ "run", "--once", "--no-supervisor", "--stats", "--data", data,
      "--input", input, p })
    assert.are.equal(0, code, err)
    local stats = assert(core.json_decode(stats_out:match("[^\n]+$") or stats_out), stats_out)
    for _, name in ipairs({ "fast", "slow" }) do
      local st = stats.pipelines[name]
      assert.are.equal(st.accepted, checked[name].accepted, name)
      assert.are.equal(st.duplicates, checked[name].duplicate, name)
      local dead = {}
      for _, l in ipairs(S.lines(data .. "/dead-letter/" .. name .. ".jsonl")) do
        local e = core.json_decode(l)
        dead[#dead + 1] = e.reason .. " " .. e.error
      end
      assert.is_true(#dead >= 7, name)
      assert.are.same(dead, checked[name].dead)
    end
  end)

  -- Without dedup ids the Lua path adds a record's keys once the next
  -- record's functions have run (runtime.lua): every add-time refusal (a
  -- time past the retention, a value the monoid refuses) must still land on
  -- its own record, in the records' order, and every value on its key.
  it("without ids, the Lua path accepts, rejects and stores what the C path does, in order", function()
    local p = write("p.lua", [[
      local murmur = require("murmur")
      local w = murmur.daily { retention = "7d" }
      murmur.pipeline { name = "c_sum", key = "page_id", value = "n", time = "ts", window = w,
        monoid = murmur.sum {} }
      murmur.pipeline { name = "lua_sum", key = function(e) return e.page_id end, value = "n",
        time = "ts", window = w, monoid = murmur.sum {} }
      murmur.pipeline { name = "c_last", key = "page_id", value = "n", monoid = murmur.last {} }
      murmur.pipeline { name = "lua_last", key = function(e) return { e.page_id, "all" } end,
        value = "n", monoid = murmur.last {} }
      -- A key no event holds, made by the function and dropped by it: only
      -- the handler keeps it until its add, past the collections that the
      -- garbage of the next records' calls brings (without that, the
      -- sanitizer build reports the add's read of a freed string).
      local junk, made = {}, 0
      murmur.pipeline { name = "lua_made", key = function(e)
          made = made + 1
          for k = 1, 64 do junk[k] = (e.page_id .. made .. k):rep(512) end
          return string.upper(e.page_id)
        end, value = "n", time = "ts", window = w, monoid = murmur.sum {} }
    ]])
    local lines = {}
    for i = 1, 600 do
      local page, n, ts = "p" .. (i % 7), tostring(i), '"' .. today() .. '"'
      if i % 11 == 0 then ts = '"2020-01-01T00:00:00Z"' end -- past the retention: the add refuses it
      if i % 13 == 0 then n = '"many"' end -- a string into a sum: the add refuses it
      if i % 17 == 0 then lines[#lines + 1] = '{"page_id":' end -- not JSON: refused before any function
      lines[#lines + 1] = ('{"page_id":"%s","n":%s,"ts":%s}'):format(page, n, ts)
    end
    local input = write("in.jsonl", table.concat(lines, "\n") .. "\n")
    local data = dir .. "/data"
    local code, out, err = S.murmur_run({ "run", "--once", "--no-supervisor", "--stats", "--data", data,
      "--input", input, p })
    assert.are.equal(0, code, err)
    local st = assert(core.json_decode(out:match("[^\n]+$") or out), out).pipelines
    assert.is_true(st.c_sum.accepted > 400)
    for _, f in ipairs({ "records", "accepted" }) do
      assert.are.equal(st.c_sum[f], st.lua_sum[f], f)
      assert.are.equal(st.c_last[f], st.lua_last[f], f)
    end
    assert.are.same(st.c_sum.rejected, st.lua_sum.rejected)
    -- Offset, reason and code (the two paths word a refused value apart).
    local function refused(name)
      local out = {}
      for k, l in ipairs(S.dead_letters(data, name, name)) do out[k] = l:match("^%S+ %S+ %S+") end
      return out
    end
    local dead = refused("lua_sum")
    assert.is_true(#dead > 90, #dead)
    assert.are.same(refused("c_sum"), dead)
    for i = 0, 6 do
      local page = "p" .. i
      local a = assert(query.run("c_sum", page, { data = { data } }))
      local b = assert(query.run("lua_sum", page, { data = { data } }))
      assert.are.same(a.result.value, b.result.value, page)
      -- The last value of each page, and of all pages, is the last record's.
      local la = assert(query.run("c_last", page, { data = { data } }))
      local lb = assert(query.run("lua_last", page, { data = { data } }))
      assert.are.same(la.result.value, lb.result.value, page)
      local m = assert(query.run("lua_made", page:upper(), { data = { data } }))
      assert.are.same(a.result.value, m.result.value, page)
    end
    local all = assert(query.run("lua_last", "all", { data = { data } }))
    assert.are.equal(600, all.result.value)
  end)

  it("runs a Lua-path pipeline with a Lua value and time; hourly buckets; all-time; count", function()
    local p = write("p.lua", [[
      local murmur = require("murmur")
      murmur.pipeline {
        name = "hourly", key = "u", monoid = murmur.hll {}, value = function(e) return e.item .. "!" end,
        time = function(e) return e.at end, window = murmur.hourly { retention = "2d" },
      }
      murmur.pipeline { name = "total", key = "u", monoid = murmur.count {} }
    ]])
    local input = write("in.jsonl", ('{"u":"x","item":"i1","at":"%s"}\n'):format(today("01:30:00")))
    local code, out, err = check({ p, "--input", input, "--json" })
    assert.are.equal(0, code, err)
    local rs = json_lines(out)
    assert.are.equal(2, #rs)
    assert.are.equal("i1!", rs[1].value)
    assert.are.equal("string", rs[1].value_type)
    assert.are.equal("hour", rs[1].window)
    assert.are.equal(today("01:00"), rs[1].bucket_label)
    assert.are.equal("all-time", rs[2].window)
    assert.are.equal(0, rs[2].bucket)
    assert.are.equal("none", rs[2].value_type)
    code, out = check({ p, "--input", input })
    assert.are.equal(0, code)
    assert.matches("bucket hour " .. today("01:00"):gsub("%-", "%%-"), out)
    assert.matches("total: accepted  key \"x\"  value none %(counted once%)  time [^ ]+ %(processing time%)  bucket all%-time", out)
  end)

  it("reads stdin with --input -, honours --lines, writes nothing", function()
    local p = write("p.lua", PIPELINES)
    local lines = {}
    for i = 1, 30 do lines[i] = ('{"page_id":"p%d","n":1,"ts":"%s"}'):format(i, today()) end
    local input = write("in.jsonl", table.concat(lines, "\n") .. "\n")
    local data = dir .. "/data"
    local cmd = ("cd %s && MURMUR_DATA=%s %s check %s --input - --lines 25 < %s"):format(S.quote(dir),
      S.quote(data), S.quote(S.murmur), S.quote(p), S.quote(input))
    local code, out, err = S.exec(cmd)
    assert.are.equal(0, code, err)
    assert.matches("fast: 25 of 25 lines accepted", out, 1, true)
    assert.matches("slow: 25 of 25 lines accepted", out, 1, true)
    assert.is_nil(S.read_file(data)) -- no data directory
    assert.are.equal(0, (S.exec(("test ! -e %s && test ! -e %s/murmur-data"):format(S.quote(data), S.quote(dir)))))
    code, out = check({ p, "--input", input })
    assert.are.equal(0, code)
    assert.matches("fast: 10 of 10 lines accepted", out, 1, true)
  end)

  it("usage errors exit 2 and say what to do; an invalid script exits 3", function()
    local p = write("p.lua", PIPELINES)
    local code, _, err = check({ p, "--input", dir .. "/missing.jsonl" })
    assert.are.equal(2, code)
    assert.matches("cannot read --input " .. dir .. "/missing.jsonl: No such file or directory", err, 1, true)
    assert.matches("give a JSON Lines file, or - for stdin", err, 1, true)
    code, _, err = check({ p, "--input", p, "--lines", "0" })
    assert.are.equal(2, code)
    assert.matches("--lines must be a positive whole number", err, 1, true)
    code, _, err = check({ p, "--json" })
    assert.are.equal(2, code)
    assert.matches("need --input FILE", err, 1, true)
    local bad = write("bad.lua", 'local murmur = require("murmur")\nmurmur.pipeline { name = "x", key = "k", monoid = murmur.nope {} }\n')
    code = check({ bad, "--input", p })
    assert.are.equal(3, code)
  end)
end)
