-- Positions belong to their reader (issue 9, item 5): a file source's
-- position is keyed by the file and by the consumer reading it (option
-- `consumer` of murmur.file, flag --consumer, default: the data directory),
-- so that on a table shared by several pipelines one pipeline's position
-- never makes another skip the file. dynalite is started here on 127.0.0.1
-- and stopped at the end (pending without node); the LMDB case needs nothing.
local S = require("spec.support")
local core = require("murmur.core")
local ffi = require("ffi")

ffi.cdef [[ int setenv(const char *name, const char *value, int overwrite); ]]

local SECRET = "spec-secret"

-- A pipeline counting every record of its input under one key.
local function count_script(dir, name, source, store)
  local path = dir .. "/" .. name .. ".lua"
  S.write_file(path, ('local murmur = require("murmur")\nmurmur.pipeline {\n  name = "%s",\n'
    .. '  source = %s,\n  key = murmur.literal("all"), monoid = murmur.count(),\n%s}\n')
    :format(name, source or "murmur.input()", store and ("  store = " .. store .. ",\n") or ""))
  return path
end

local function stats_of(out)
  return core.json_decode(assert(("\n" .. out):match("\n({\"batches\"[^\n]*)"), "no --stats output: " .. out))
end

local function append_lines(path, from, n)
  local f = assert(io.open(path, "a"))
  for i = from, from + n - 1 do f:write(('{"event_id":"e%d","page_id":"p%d"}\n'):format(i, i % 7)) end
  f:close()
end

local d = S.have_dynalite and describe or pending

d("#dynamodb #positions file positions on a shared DynamoDB table", function()
  local dir, dyn, port

  setup(function()
    dir = S.tmpdir()
    dyn, port = S.start_dynalite(dir, dir .. "/dynalite-db")
    -- This process reads positions back through murmur.core.
    ffi.C.setenv("AWS_ACCESS_KEY_ID", "AKIDSPEC", 1)
    ffi.C.setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1)
  end)

  teardown(function()
    if dyn then S.kill(dyn, "TERM") S.wait_exit(dyn, 5) end
    S.rm_rf(dir)
  end)

  local function mm(table_name, args)
    local parts = { ("env AWS_ACCESS_KEY_ID=AKIDSPEC AWS_SECRET_ACCESS_KEY=%s MURMUR_DYNAMODB_TABLE=%s "
      .. "MURMUR_DYNAMODB_ENDPOINT=http://127.0.0.1:%d"):format(SECRET, table_name, port), S.quote(S.murmur) }
    for _, a in ipairs(args) do parts[#parts + 1] = S.quote(a) end
    return S.exec(table.concat(parts, " "))
  end

  local tables = 0
  local function new_table()
    tables = tables + 1
    local name = ("pos_%d_%d"):format(os.time() % 100000, tables)
    local code, _, err = mm(name, { "ddb", "create-table" })
    assert.are.equal(0, code, err)
    return name
  end

  -- Runs one pipeline once on input; returns its accepted count.
  local function run(t, data, input, script, extra)
    local args = { "run", "--once", "--stats", "--store", "dynamodb", "--data", data, "--input", input }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    args[#args + 1] = script
    local code, out, err = mm(t, args)
    assert.are.equal(0, code, err)
    local s = stats_of(out).pipelines
    local _, p = next(s)
    return p.accepted
  end

  it("lets a second pipeline with its own data directory read a file another pipeline has read", function()
    local t = new_table()
    local input = dir .. "/shared.jsonl"
    append_lines(input, 1, 500)
    local a, b = count_script(dir, "reader_a"), count_script(dir, "reader_b")
    assert.are.equal(500, run(t, dir .. "/da", input, a))
    -- Observed in issue 9: "accepted 0, exit 0, and no data".
    assert.are.equal(500, run(t, dir .. "/db", input, b))
    -- Each resumes its own position: nothing new, then only what was appended.
    assert.are.equal(0, run(t, dir .. "/da", input, a))
    append_lines(input, 501, 40)
    assert.are.equal(40, run(t, dir .. "/db", input, b))
    assert.are.equal(40, run(t, dir .. "/da", input, a))
  end)

  it("shares a position between data directories that name the same consumer", function()
    local t = new_table()
    local input = dir .. "/named.jsonl"
    append_lines(input, 1, 300)
    local flag = count_script(dir, "by_flag")
    assert.are.equal(300, run(t, dir .. "/f1", input, flag, { "--consumer", "nightly" }))
    -- Another worker (data directory) of the same consumer resumes where it ended.
    assert.are.equal(0, run(t, dir .. "/f2", input, flag, { "--consumer", "nightly" }))
    -- The script's own consumer name does the same.
    local named = count_script(dir, "by_option", ('murmur.file { path = %q, consumer = "hourly" }'):format(input))
    assert.are.equal(300, run(t, dir .. "/o1", input, named))
    append_lines(input, 301, 25)
    assert.are.equal(25, run(t, dir .. "/o2", input, named))
    local st = assert(core.store_open("dynamodb", { table = t, endpoint = ("http://127.0.0.1:%d"):format(port) }, true))
    assert.truthy(st:position("file:" .. input .. "#hourly"))
    assert.truthy(st:position("file:" .. input .. "#nightly"))
    st:close()
  end)

  it("refuses a consumer name that could be confused with another key", function()
    local input = dir .. "/bad.jsonl"
    append_lines(input, 1, 3)
    local code, _, err = S.murmur_run({ "run", "--once", "--store", "memory", "--data", dir .. "/bad",
      "--input", input, "--consumer", "a#b", count_script(dir, "bad_consumer") })
    assert.are_not.equal(0, code)
    assert.truthy(err:find("consumer", 1, true), err)
  end)
end)

describe("#positions file positions on the embedded store", function()
  local dir

  setup(function() dir = S.tmpdir() end)
  teardown(function() S.rm_rf(dir) end)

  local function run(data, input, script, extra)
    local args = { "run", "--once", "--stats", "--data", data, "--input", input }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    args[#args + 1] = script
    local code, out, err = S.murmur_run(args)
    assert.are.equal(0, code, err)
    local _, p = next(stats_of(out).pipelines)
    return p.accepted
  end

  it("resumes from a position stored before positions had consumers, then keeps it under the new key", function()
    local input = dir .. "/old.jsonl"
    append_lines(input, 1, 200)
    local script = count_script(dir, "legacy")
    local data = dir .. "/d"
    -- An empty consumer keys the position by the file alone, as releases
    -- before consumers did: this writes a position in the old form.
    assert.are.equal(200, run(data, input, script, { "--consumer", "" }))
    local st = assert(core.store_open("lmdb", { path = data .. "/store" }, true))
    assert.truthy(st:position("file:" .. input))
    st:close()
    append_lines(input, 201, 30)
    -- The default consumer finds no position of its own and reads the old one.
    assert.are.equal(30, run(data, input, script))
    assert.are.equal(0, run(data, input, script))
    st = assert(core.store_open("lmdb", { path = data .. "/store" }, true))
    assert.truthy(st:position("file:" .. input .. "#" .. core.realpath(data)))
    st:close()
  end)
end)
