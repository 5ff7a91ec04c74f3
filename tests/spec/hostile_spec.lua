-- Hostile input: a corpus of bad lines (malformed JSON, non-objects, missing
-- and mistyped fields, values the monoid refuses, oversized records, invalid
-- and truncated UTF-8, NUL bytes, deep nesting, huge numbers, duplicate keys,
-- errors raised by user functions, 2 MB and 10 MB lines) mixed into a stream
-- of valid events and fed to three pipelines at once: one on the C fast path,
-- one on the Lua path, one with a small max_record and its own dead-letter
-- file. Checked: the valid events are counted exactly (query results), every
-- bad line is in each pipeline's dead-letter file once, at its offset, with
-- its reason, code, error and raw bytes, the --stats counters agree, and the
-- process exits 0 (under `make check` that also means no sanitizer report and
-- no leak).
--
-- The cases at the end each showed a defect found while writing this spec
-- (how it went wrong is told in each), and keep it from coming back.
local S = require("spec.support")
local core = require("murmur.core")
local query = require("murmur.query")

local NOW = os.time()
local DAY = 86400

-- Reason -> the MM_E* code name the dead letter carries.
local CODE = {
  json = "EJSON", utf8 = "EUTF8", not_object = "ENOTOBJ", missing_field = "EMISSING",
  wrong_type = "ETYPE", too_big = "ETOOBIG", out_of_range = "ERANGE", lua_error = "ELUA",
}

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64decode(s)
  local map = {}
  for i = 1, 64 do map[B64:sub(i, i)] = i - 1 end
  local out, bits, nbits = {}, 0, 0
  for c in s:gmatch("[^=]") do
    bits = bits * 64 + assert(map[c], "bad base64")
    nbits = nbits + 6
    if nbits >= 8 then
      nbits = nbits - 8
      local b = math.floor(bits / 2 ^ nbits)
      out[#out + 1] = string.char(b)
      bits = bits - b * 2 ^ nbits
    end
  end
  return table.concat(out)
end

-- Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF).
local function utf8_valid(s)
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local len, min
    if c < 0x80 then len, min = 1, 0
    elseif c >= 0xC2 and c <= 0xDF then len, min = 2, 0x80
    elseif c >= 0xE0 and c <= 0xEF then len, min = 3, 0x800
    elseif c >= 0xF0 and c <= 0xF4 then len, min = 4, 0x10000
    else return false end
    if i + len - 1 > n then return false end
    local cp = len == 1 and c or c % (2 ^ (7 - len))
    for j = i + 1, i + len - 1 do
      local cc = s:byte(j)
      if cc < 0x80 or cc > 0xBF then return false end
      cp = cp * 64 + cc % 64
    end
    if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return false end
    i = i + len
  end
  return true
end

-- The pipelines under test. h_lua's value function raises on purpose; the
-- spec finds the lines of those raises to check the file:line in dead letters.
local SCRIPT = [[
local murmur = require("murmur")

murmur.pipeline {
  name = "h_fast", key = "page_id", value = "n", monoid = murmur.sum {},
  time = "ts", window = murmur.daily { retention = "7d" },
}

murmur.pipeline {
  name = "h_lua", monoid = murmur.sum {},
  time = "ts", window = murmur.daily { retention = "7d" },
  key = function(ev) return ev.page_id end,
  value = function(ev)
    if ev.boom then error("boom " .. tostring(ev.boom)) end
    if ev.crash then return ev.nothing.here end
    return ev.n
  end,
}

murmur.pipeline {
  name = "h_small", key = "page_id", monoid = murmur.count(), max_record = "2k",
  dead_letter = DEAD_LETTER_PATH,
}
]]

local function line_of(text, needle)
  local n = 0
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if l:find(needle, 1, true) then return n end
  end
  error("not in script: " .. needle)
end

local PIPES = { "h_fast", "h_lua", "h_small" }

-- One hostile case: the raw line and what each pipeline must do with it:
-- "ok" (counted: page/n), a reason, or a set of acceptable outcomes where
-- the paths legitimately differ or a known defect is shown separately below.
local function ev(fields)
  local parts = {}
  for _, kv in ipairs(fields) do parts[#parts + 1] = ('"%s":%s'):format(kv[1], kv[2]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function hostile_cases()
  local T = tostring(NOW - 120)
  local C = {}
  local function add(name, line, f, l, s, page, n)
    C[#C + 1] = { name = name, line = line, expect = { h_fast = f, h_lua = l, h_small = s },
                  page = page, n = n or 1 }
  end
  local ALL = function(r) return r, r, r end
  -- Malformed JSON and non-objects.
  add("truncated json", '{"page_id":"p1","n":', ALL("json"))
  add("missing comma", '{"page_id":"p1" "n":1,"ts":' .. T .. '}', ALL("json"))
  add("trailing garbage", ev({ { "page_id", '"p1"' }, { "n", 1 }, { "ts", T } }) .. " x", ALL("json"))
  add("bare word", "hello", ALL("json"))
  add("whitespace only", "   ", ALL("json"))
  add("byte order mark", "\239\187\191" .. ev({ { "page_id", '"p9"' }, { "n", 1 }, { "ts", T } }), ALL("json"))
  add("array", "[1,2,3]", ALL("not_object"))
  add("string", '"just a string"', ALL("not_object"))
  add("number", "42", ALL("not_object"))
  add("null", "null", ALL("not_object"))
  add("true", "true", ALL("not_object"))
  -- Missing or mistyped key. On the Lua path the key is whatever the user's
  -- function returns, so "missing" shows up as a nil (wrong type) key.
  add("empty object", "{}", ALL("missing_field"))
  add("missing key", ev({ { "n", 1 }, { "ts", T } }), "missing_field", "wrong_type", "missing_field")
  add("boolean key", ev({ { "page_id", "true" }, { "n", 1 }, { "ts", T } }), ALL("wrong_type"))
  add("null key", ev({ { "page_id", "null" }, { "n", 1 }, { "ts", T } }), ALL("wrong_type"))
  add("object key", ev({ { "page_id", '{"a":1}' }, { "n", 1 }, { "ts", T } }),
    "wrong_type", { missing_field = true, wrong_type = true }, "wrong_type")
  add("empty key", ev({ { "page_id", '""' }, { "n", 1 }, { "ts", T } }), ALL("out_of_range"))
  add("1500-byte key", ev({ { "page_id", '"' .. ("k"):rep(1500) .. '"' }, { "n", 1 }, { "ts", T } }),
    "out_of_range", "out_of_range", "out_of_range")
  -- Missing or mistyped value; values sum cannot take. h_small counts them.
  add("missing value", ev({ { "page_id", '"p2"' }, { "ts", T } }),
    "missing_field", { missing_field = true, wrong_type = true }, "ok", "p2")
  add("string value", ev({ { "page_id", '"p2"' }, { "n", '"seven"' }, { "ts", T } }), "wrong_type", "wrong_type", "ok", "p2")
  add("boolean value", ev({ { "page_id", '"p2"' }, { "n", "false" }, { "ts", T } }), "wrong_type", "wrong_type", "ok", "p2")
  add("null value", ev({ { "page_id", '"p2"' }, { "n", "null" }, { "ts", T } }), "wrong_type", "wrong_type", "ok", "p2")
  add("object value", ev({ { "page_id", '"p2"' }, { "n", '{"x":1}' }, { "ts", T } }), "wrong_type", "wrong_type", "ok", "p2")
  add("fractional value", ev({ { "page_id", '"p2"' }, { "n", "1.5" }, { "ts", T } }), "wrong_type", "wrong_type", "ok", "p2")
  add("1e400", ev({ { "page_id", '"p2"' }, { "n", "1e400" }, { "ts", T } }), "out_of_range", "out_of_range", "ok", "p2")
  add("1e308", ev({ { "page_id", '"p2"' }, { "n", "1e308" }, { "ts", T } }), "out_of_range", "out_of_range", "ok", "p2")
  add("2^70", ev({ { "page_id", '"p2"' }, { "n", "1180591620717411303424" }, { "ts", T } }),
    "out_of_range", "out_of_range", "ok", "p2")
  add("-2^70", ev({ { "page_id", '"p2"' }, { "n", "-1180591620717411303424" }, { "ts", T } }),
    "out_of_range", "out_of_range", "ok", "p2")
  -- Event time.
  add("missing time", ev({ { "page_id", '"p3"' }, { "n", 1 } }), "missing_field", "missing_field", "ok", "p3")
  add("boolean time", ev({ { "page_id", '"p3"' }, { "n", 1 }, { "ts", "true" } }), "wrong_type", "wrong_type", "ok", "p3")
  add("text time", ev({ { "page_id", '"p3"' }, { "n", 1 }, { "ts", '"yesterday"' } }), "wrong_type", "wrong_type", "ok", "p3")
  add("time past retention", ev({ { "page_id", '"p3"' }, { "n", 1 }, { "ts", NOW - 30 * DAY } }),
    "out_of_range", "out_of_range", "ok", "p3")
  add("time 1e400", ev({ { "page_id", '"p3"' }, { "n", 1 }, { "ts", "1e400" } }), "out_of_range", "out_of_range", "ok", "p3")
  -- Duplicate keys: the fast path rejects a requested member given twice;
  -- the Lua path cannot know which members a function reads, so it rejects
  -- any duplicated member.
  add("duplicate key", ev({ { "page_id", '"p4"' }, { "n", 1 }, { "ts", T }, { "page_id", '"p4"' } }),
    "json", "json", "json", "p4")
  add("duplicate unused member", ev({ { "page_id", '"p4"' }, { "n", 2 }, { "ts", T }, { "x", 1 }, { "x", 2 } }),
    "ok", "json", "ok", "p4", 2)
  -- NUL bytes: raw ones are control characters (JSON forbids them), an
  -- escaped one is an ordinary key byte.
  add("raw NUL in a string", '{"page_id":"p5\0x","n":1,"ts":' .. T .. "}", ALL("json"))
  add("raw NUL between members", '{"page_id":"p5",\0"n":1,"ts":' .. T .. "}", ALL("json"))
  add("only NULs", "\0\0\0", ALL("json"))
  add("escaped NUL key", ev({ { "page_id", '"nul\\u0000key"' }, { "n", 7 }, { "ts", T } }), "ok", "ok", "ok", "nul\0key", 7)
  -- UTF-8.
  add("invalid UTF-8", ev({ { "page_id", '"\255\254"' }, { "n", 1 }, { "ts", T } }), ALL("utf8"))
  add("truncated UTF-8", ev({ { "page_id", '"p\226\130"' }, { "n", 1 }, { "ts", T } }), ALL("utf8"))
  add("overlong UTF-8", ev({ { "page_id", '"p\192\175"' }, { "n", 1 }, { "ts", T } }), ALL("utf8"))
  add("UTF-8 surrogate", ev({ { "page_id", '"p\237\160\128"' }, { "n", 1 }, { "ts", T } }), ALL("utf8"))
  add("Latin-1 in an unused member", ev({ { "page_id", '"p6"' }, { "n", 1 }, { "ts", T }, { "x", '"caf\233"' } }), ALL("utf8"))
  add("truncated UTF-8 at end of line", ev({ { "page_id", '"p6"' }, { "n", 1 }, { "ts", T } }) .. "\226\130", ALL("json"))
  add("lone surrogate escape", ev({ { "page_id", '"\\ud800"' }, { "n", 1 }, { "ts", T } }), ALL("json"))
  -- Nesting.
  add("nesting 40 deep", ev({ { "page_id", '"p7"' }, { "n", 3 }, { "ts", T }, { "d", ("["):rep(40) .. ("]"):rep(40) } }),
    "ok", "ok", "ok", "p7", 3)
  add("nesting 65 deep", ev({ { "page_id", '"p7"' }, { "n", 1 }, { "ts", T }, { "d", ("["):rep(65) .. ("]"):rep(65) } }),
    ALL("json"))
  add("nesting 100000 deep", ev({ { "page_id", '"p7"' }, { "n", 1 }, { "ts", T }, { "d", ("["):rep(100000) .. ("]"):rep(100000) } }),
    "json", "json", "too_big")
  add("unclosed nesting", '{"page_id":"p7","d":' .. ('{"a":'):rep(5000), "json", "json", "too_big")
  -- Sizes: max_record is 1 MiB by default (h_fast, h_lua) and 2 KiB for h_small.
  -- A valid event of exactly `total` bytes.
  local function padded(page, total)
    local head = ev({ { "page_id", '"' .. page .. '"' }, { "n", 1 }, { "ts", T } }):sub(1, -2) .. ',"pad":"'
    return head .. ("x"):rep(total - #head - 2) .. '"}'
  end
  add("3 KiB record", padded("p8", 3000), "ok", "ok", "too_big", "p8")
  add("100 KiB record", padded("p8", 100 * 1024), "ok", "ok", "too_big", "p8")
  add("exactly 1 MiB", padded("p8", 1048576), "ok", "ok", "too_big", "p8")
  add("1 MiB + 1", padded("p8", 1048577), ALL("too_big"))
  add("2 MB record", padded("p8", 2000000), ALL("too_big"))
  add("10 MB record", padded("p8", 10 * 1000 * 1000), ALL("too_big"))
  -- Errors raised by user functions (h_lua only).
  add("error() in a user function", ev({ { "page_id", '"p9"' }, { "n", 1 }, { "ts", T }, { "boom", '"bang"' } }),
    "ok", "lua_error", "ok", "p9")
  add("runtime error in a user function", ev({ { "page_id", '"p9"' }, { "n", 1 }, { "ts", T }, { "crash", "true" } }),
    "ok", "lua_error", "ok", "p9")
  -- Valid but unusual: every pipeline counts these.
  add("CRLF", ev({ { "page_id", '"p10"' }, { "n", 4 }, { "ts", T } }) .. "\r", "ok", "ok", "ok", "p10", 4)
  add("escaped key", ev({ { "page_id", '"p\\u00311"' }, { "n", 5 }, { "ts", T } }), "ok", "ok", "ok", "p11", 5)
  add("non-ASCII key", ev({ { "page_id", '"p\195\169"' }, { "n", 6 }, { "ts", T } }), "ok", "ok", "ok", "p\195\169", 6)
  add("integral float", ev({ { "page_id", '"p12"' }, { "n", "2.0" }, { "ts", T } }), "ok", "ok", "ok", "p12", 2)
  add("exponent", ev({ { "page_id", '"p12"' }, { "n", "3e1" }, { "ts", T } }), "ok", "ok", "ok", "p12", 30)
  add("negative", ev({ { "page_id", '"p12"' }, { "n", "-8" }, { "ts", T } }), "ok", "ok", "ok", "p12", -8)
  add("RFC 3339 time", ev({ { "page_id", '"p13"' }, { "n", 1 }, { "ts", '"' .. os.date("!%Y-%m-%dT%H:%M:%SZ", NOW - 60) .. '"' } }),
    "ok", "ok", "ok", "p13")
  add("millisecond time", ev({ { "page_id", '"p13"' }, { "n", 1 }, { "ts", (NOW - 60) * 1000 } }), "ok", "ok", "ok", "p13")
  add("whitespace around", "  " .. ev({ { "page_id", '"p13"' }, { "n", 1 }, { "ts", T } }) .. "\t ", "ok", "ok", "ok", "p13")
  return C
end

-- Builds the input: valid events with the hostile cases scattered among them
-- (seeded). Returns lines (each { bytes, offset, case }) and the raw bytes.
local function build_input(seed, nvalid)
  math.randomseed(seed)
  local cases = hostile_cases()
  local lines = {}
  for i = 1, nvalid do
    local page = "p" .. (math.random(0, 19))
    local n = math.random(-20, 100)
    local ts = NOW - math.random(0, 7200)
    lines[i] = { case = { name = "valid", expect = { h_fast = "ok", h_lua = "ok", h_small = "ok" }, page = page, n = n },
                 bytes = ev({ { "page_id", '"' .. page .. '"' }, { "n", n }, { "ts", ts } }) }
  end
  for _, c in ipairs(cases) do
    table.insert(lines, math.random(1, #lines + 1), { case = c, bytes = c.line })
  end
  local off, parts = 0, {}
  for i, l in ipairs(lines) do
    l.offset = off
    parts[i] = l.bytes
    off = off + #l.bytes + 1
  end
  return lines, table.concat(parts, "\n") .. "\n", #cases
end

local function read_dead_letters(path)
  local by_offset, n = {}, 0
  for _, l in ipairs(S.lines(path)) do
    local e = core.json_decode(l)
    assert.is_table(e, "dead-letter line is not JSON: " .. l:sub(1, 200))
    assert.is_nil(by_offset[e.offset], "two dead letters at offset " .. tostring(e.offset))
    by_offset[e.offset] = e
    n = n + 1
  end
  return by_offset, n
end

local function query_value(data, pipeline, entity)
  local r, err = query.run(pipeline, entity, { data = { data } })
  assert(r, err)
  return r.found and r.result.value or 0
end

-- Checks one dead letter against the line it stands for.
local function check_dead_letter(e, line, pipe, reason, source, script_lines)
  local where = ("%s, %s at offset %d"):format(pipe, line.case.name, line.offset)
  assert.are.equal(pipe, e.pipeline, where)
  assert.are.equal(reason, e.reason, where)
  assert.are.equal(CODE[reason], e.code, where)
  assert.are.equal(source, e.source, where)
  assert.is_truthy(tostring(e.time):match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"), where)
  assert.is_true(type(e.error) == "string" and #e.error > 0, where)
  if reason == "lua_error" then
    local ln = line.case.name:match("^error") and script_lines.boom or script_lines.crash
    assert.is_truthy(e.error:find("hostile.lua:" .. ln .. ":", 1, true), where .. ": " .. e.error)
  end
  local raw = line.bytes
  if e.truncated then
    assert.are.equal(#raw, e.size, where)
    raw = raw:sub(1, 4096)
  else
    assert.is_nil(e.size, where)
    -- Records refused for their size keep only their first 4 KiB.
    assert.is_true(reason ~= "too_big" or #raw <= 4096, where .. ": oversized record not truncated")
  end
  if utf8_valid(raw) then
    assert.is_nil(e.record_base64, where)
    assert.are.equal(raw, e.record, where)
  else
    assert.is_nil(e.record, where)
    assert.are.equal(raw, b64decode(e.record_base64), where)
  end
end

describe("#hostile input", function()
  local dir

  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  it("counts valid events exactly and dead-letters every hostile line with its reason", function()
    local seed = tonumber(os.getenv("MURMUR_HOSTILE_SEED") or "") or 9
    print(("# hostile: seed %d"):format(seed))
    local lines, bytes, ncases = build_input(seed, 1500)
    local input = dir .. "/in.jsonl"
    local small_dlq = dir .. "/small-dead-letters.jsonl"
    S.write_file(input, bytes)
    local script = SCRIPT:gsub("DEAD_LETTER_PATH", ("%q"):format(small_dlq))
    local script_path = dir .. "/hostile.lua"
    S.write_file(script_path, script)
    local script_lines = { boom = line_of(script, 'error("boom "'), crash = line_of(script, "ev.nothing.here") }

    local data = dir .. "/data"
    local code, out, err = S.murmur_run({ "run", "--once", "--stats", "--data", data, "--input", input, script_path })
    assert.are.equal(0, code, err:sub(-2000))
    local stats = core.json_decode(out)
    assert.is_table(stats, "no --stats JSON on stdout: " .. out:sub(1, 200))

    local dlq_path = { h_fast = data .. "/dead-letter/h_fast.jsonl", h_lua = data .. "/dead-letter/h_lua.jsonl",
                       h_small = small_dlq }
    local source = "file:" .. input
    for _, pipe in ipairs(PIPES) do
      local dead, ndead = read_dead_letters(dlq_path[pipe])
      local accepted, rejected, sums = 0, {}, {}
      for r in pairs(CODE) do rejected[r] = 0 end
      for _, l in ipairs(lines) do
        local want = l.case.expect[pipe]
        local e = dead[l.offset]
        local outcome = e and e.reason or "ok"
        if type(want) == "table" then
          assert.is_true(want[outcome] == true,
            ("%s, %s: outcome %s not among the acceptable ones"):format(pipe, l.case.name, outcome))
        else
          assert.are.equal(want, outcome, ("%s, %s at offset %d (%s)"):format(pipe, l.case.name, l.offset,
            e and e.error or "accepted"))
        end
        if outcome == "ok" then
          accepted = accepted + 1
          sums[l.case.page] = (sums[l.case.page] or 0) + (pipe == "h_small" and 1 or l.case.n)
        else
          rejected[outcome] = rejected[outcome] + 1
          check_dead_letter(e, l, pipe, outcome, source, script_lines)
        end
      end
      local nrej = 0
      for _, c in pairs(rejected) do nrej = nrej + c end
      assert.are.equal(nrej, ndead, pipe .. ": dead letters that match no hostile line")
      -- Counters.
      local ps = stats.pipelines[pipe]
      assert.are.equal(#lines, ps.records, pipe)
      assert.are.equal(accepted, ps.accepted, pipe)
      assert.are.equal(nrej, ps.dead_letters, pipe)
      assert.are.equal(0, ps.dead_letter_errors, pipe)
      for r, c in pairs(rejected) do assert.are.equal(c, ps.rejected[r], pipe .. " rejected." .. r) end
      -- Results.
      for page, want in pairs(sums) do
        assert.are.equal(want, query_value(data, pipe, page), pipe .. " " .. page)
      end
    end
    print(("# hostile: %d lines (%d hostile cases), %d bytes"):format(#lines, ncases, #bytes))
  end)

  it("keeps running while hostile lines arrive on a followed file", function()
    local input = dir .. "/in.jsonl"
    local script_path = dir .. "/hostile.lua"
    S.write_file(script_path, SCRIPT:gsub("DEAD_LETTER_PATH", ("%q"):format(dir .. "/small.jsonl")))
    S.write_file(input, "")
    local data = dir .. "/data"
    local h = S.spawn(("%s run --follow --data %s --input %s %s"):format(S.murmur, data, input, script_path),
      dir .. "/log")
    local cases, valid = hostile_cases(), 0
    local f = assert(io.open(input, "ab"))
    for i, c in ipairs(cases) do
      f:write(c.line, "\n", ev({ { "page_id", '"pf"' }, { "n", i }, { "ts", NOW - 10 } }), "\n")
      valid = valid + i
      if i % 10 == 0 then f:flush() S.sleep(0.05) end
    end
    f:close()
    -- On a loaded machine the worker may not have registered its pipelines
    -- in the store yet when the first query comes: that is "not yet", not
    -- a failure.
    local got
    for _ = 1, 200 do
      local r = query.run("h_fast", "pf", { data = { data } })
      got = r and (r.found and r.result.value or 0)
      if got == valid then break end
      S.sleep(0.1)
    end
    assert.are.equal(valid, got)
    assert.is_nil(S.read_file(h.rcfile), "murmur exited while following: " .. (S.read_file(dir .. "/log") or ""))
    S.kill(h, "TERM")
    assert.are.equal(0, S.wait_exit(h, 30), S.read_file(dir .. "/log"))
    assert.are.equal(valid, query_value(data, "h_lua", "pf"))
  end)

  describe("edge cases", function()
    local function run_script(body, input_lines)
      local p = dir .. "/k.lua"
      S.write_file(p, body)
      S.write_file(dir .. "/k.jsonl", table.concat(input_lines, "\n") .. "\n")
      local code, out, err = S.murmur_run({ "run", "--once", "--stats", "--data", dir .. "/d", "--input",
        dir .. "/k.jsonl", p })
      return code, out ~= "" and core.json_decode(out) or nil, err
    end

    it("a user function raising a non-string error is dead-lettered, not a crash", function()
      -- runtime.lua once took table errors for its own { code, msg }
      -- errors: error({}) reached mm_pipe_reject with a NULL detail
      -- (strlen(NULL) in the dead-letter writer: SIGSEGV), and a non-string
      -- msg made the batch handler itself fail, after which core_lua.c
      -- rejected every record of the batch, also those already counted.
      local code, stats, err = run_script([[
        local murmur = require("murmur")
        murmur.pipeline { name = "k", monoid = murmur.count(),
          key = function(ev)
            if ev.kind == "table" then error({}) end
            if ev.kind == "msg" then error({ code = "EMISSING", msg = 42 }) end
            return ev.page
          end }
      ]], { '{"page":"a"}', '{"page":"a","kind":"table"}', '{"page":"a","kind":"msg"}', '{"page":"a"}' })
      assert.are.equal(0, code, err:sub(-1000))
      assert.are.equal(2, stats.pipelines.k.accepted)
      assert.are.equal(2, stats.pipelines.k.rejected.lua_error)
      assert.are.equal(2, #S.lines(dir .. "/d/dead-letter/k.jsonl"))
      assert.are.equal(2, query_value(dir .. "/d", "k", "a"))
    end)

    it("the Lua path rejects a duplicated member like the fast path", function()
      -- json_lua.c's decoder used to keep the last of two equal keys, so
      -- the same record was refused by a field-name pipeline and counted
      -- under the second key by a function pipeline.
      local code, stats, err = run_script([[
        local murmur = require("murmur")
        murmur.pipeline { name = "k", monoid = murmur.count(), key = function(ev) return ev.page end }
      ]], { '{"page":"a","page":"b"}' })
      assert.are.equal(0, code, err)
      assert.are.equal(1, stats.pipelines.k.rejected.json)
      assert.are.equal(0, query_value(dir .. "/d", "k", "b"))
    end)

    it("an event time at or before the epoch is out of range on the Lua path too", function()
      -- mm_pipe_add takes ts_ms < 0 to mean processing time, and
      -- runtime.lua's get_time returned field times unchecked: ts = -5 or
      -- 1e300 were counted now instead of rejected like on the fast path.
      local code, stats, err = run_script([[
        local murmur = require("murmur")
        murmur.pipeline { name = "k", monoid = murmur.count(), time = "ts",
          window = murmur.daily { retention = "7d" }, key = function(ev) return ev.page end }
      ]], { '{"page":"a","ts":-5}', '{"page":"a","ts":1e300}', '{"page":"a","ts":-1e300}' })
      assert.are.equal(0, code, err)
      assert.are.equal(0, stats.pipelines.k.accepted)
      assert.are.equal(3, stats.pipelines.k.rejected.out_of_range)
    end)

    it("a record rejected for one of several keys adds nothing for the others", function()
      -- pipeline.c process_record used to add the delta of each key as it
      -- read it, so a record whose second key was missing or mistyped was
      -- dead-lettered and yet counted under its first key.
      local code, stats, err = run_script([[
        local murmur = require("murmur")
        murmur.pipeline { name = "k", key = { "country", "city" }, monoid = murmur.count() }
      ]], { '{"country":"fr","city":"paris"}', '{"country":"fr"}', '{"country":"fr","city":{"x":1}}' })
      assert.are.equal(0, code, err)
      assert.are.equal(1, stats.pipelines.k.accepted)
      assert.are.equal(1, query_value(dir .. "/d", "k", "fr"))
    end)

    it("a sum that overflows only when merged with the stored state does not stall the engine", function()
      -- Each value fits and so does each flush's delta, so nothing is
      -- rejected on the way in; the overflow appears in the store's merge
      -- (lmdb.c apply_delta -> sum merge: ERANGE). engine.c on_flush_done
      -- retries every failed flush, retriable or not (mm_err_retriable is
      -- never asked), so this one fails forever: sources stay paused, and
      -- --once never ends (nor does SIGTERM, which waits for the flush).
      local p = dir .. "/k.lua"
      S.write_file(p, [[
        local murmur = require("murmur")
        murmur.pipeline { name = "k", key = "k", value = "n", monoid = murmur.sum {} }
      ]])
      local big = '{"k":"a","n":9000000000000000000}\n'
      S.write_file(dir .. "/1.jsonl", big)
      S.write_file(dir .. "/2.jsonl", big .. '{"k":"b","n":1}\n')
      assert.are.equal(0, (S.murmur_run({ "run", "--once", "--data", dir .. "/d", "--input", dir .. "/1.jsonl", p })))
      local h = S.spawn(("%s run --once --data %s --input %s %s"):format(S.murmur, dir .. "/d", dir .. "/2.jsonl", p),
        dir .. "/log")
      local rc = S.wait_exit(h, 10)
      if rc == nil then
        S.kill(h, "KILL")
        S.wait_exit(h, 10)
      end
      assert.are.equal(0, rc, "still retrying after 10 s:\n" .. (S.read_file(dir .. "/log") or ""):sub(-600))
      assert.are.equal(1, query_value(dir .. "/d", "k", "b"))
    end)

    it("a pipeline with a smaller max_record keeps only the first 4 KiB of an oversized record", function()
      -- The source truncates at the largest max_record of the pipelines
      -- sharing it; pipeline.c's check against a smaller limit used to
      -- write the whole record, without "truncated" and "size".
      local big = '{"page":"a","pad":"' .. ("x"):rep(100000) .. '"}'
      local code, _, err = run_script([[
        local murmur = require("murmur")
        murmur.pipeline { name = "k", key = "page", monoid = murmur.count(), max_record = "2k" }
        murmur.pipeline { name = "k2", key = "page", monoid = murmur.count() }
      ]], { big })
      assert.are.equal(0, code, err)
      local e = core.json_decode(S.lines(dir .. "/d/dead-letter/k.jsonl")[1])
      assert.are.equal("too_big", e.reason)
      assert.are.equal(true, e.truncated)
      assert.are.equal(#big, e.size)
      assert.are.equal(big:sub(1, 4096), e.record)
    end)
  end)
end)
