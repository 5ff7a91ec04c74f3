-- tests/run, the runner behind `make test`: results stream as they finish,
-- every spec file carries a busted tag, an unknown tag is a usage error, a
-- run that selects no test fails, the unit tier and each spec file end with
-- their seconds, and MURMUR_TEST_JOBS runs spec files at once, each in its
-- own slot, each file's block printed whole.
local S = require("spec.support")

local function run(env, args)
  return S.exec(("env MURMUR_BUILD= BUILD=%s %s sh tests/run %s"):format(S.quote(S.build), env or "", args))
end

describe("#testrun tests/run", function()
  local dir

  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  it("refuses a tag no spec file carries, naming the known tags (exit 2)", function()
    local code, out, err = run(nil, "spec -t nosuchtag")
    assert.are.equal(2, code, out .. err)
    assert.matches("no spec file carries the tag 'nosuchtag'", err, 1, true)
    local known = err:match("known tags: ([^)]*)")
    assert.truthy(known, err)
    for _, t in ipairs({ "cli", "dsl", "e2e", "hooks", "json", "hll", "rock", "testrun" }) do
      assert.truthy((" " .. known .. " "):find(" " .. t .. " ", 1, true), t .. " missing from: " .. known)
    end
    -- Also among several tags, and in the --tags= form.
    code = run(nil, "spec --tags=json,nosuchtag")
    assert.are.equal(2, code)
  end)

  it("finds a busted tag in every spec file", function()
    local code, out, err = run(nil, "tags")
    assert.are.equal(0, code, err)
    local tags = {}
    for file, list in out:gmatch("([^\n:]+):([^\n]*)") do tags[file] = list end
    local _, files = S.exec("ls tests/spec/*_spec.lua")
    local n = 0
    for f in files:gmatch("[^\n]+") do
      n = n + 1
      assert.truthy(tags[f], f .. " not listed by tests/run tags")
      assert.matches("%a", tags[f], nil, nil, f .. " carries no #tag in a describe name")
    end
    assert.is_true(n >= 16)
    assert.matches("testrun", tags["tests/spec/testrun_spec.lua"])
  end)

  it("prints each test's TAP line as it finishes, then N passed, N failed", function()
    -- The second test waits until this spec has read the first one's result
    -- line: with buffered output it would time out and fail.
    local go = dir .. "/go"
    S.write_file(dir .. "/stream_spec.lua", ([[
describe("#stream streaming", function()
  it("first", function() end)
  it("second", function()
    for _ = 1, 300 do
      local f = io.open(%q, "rb")
      if f then f:close() return end
      os.execute("sleep 0.1")
    end
    error("the first result line was not printed before the second test ended")
  end)
end)
]]):format(go))
    local p = assert(io.popen(("env MURMUR_BUILD= BUILD=%s MURMUR_SPECS=%s MURMUR_TEST_JOBS=1 sh tests/run spec 2>&1")
      :format(S.quote(S.build), S.quote(dir))))
    local lines = {}
    for l in p:lines() do
      lines[#lines + 1] = l
      if l:match("^ok 1 ") then S.write_file(go, "") end
    end
    p:close()
    local out = table.concat(lines, "\n")
    assert.matches("# spec: " .. dir:gsub("%p", "%%%0") .. "/stream_spec.lua", out)
    assert.matches("\nok 1 %- #stream streaming first\n", out)
    assert.matches("\nok 2 %- #stream streaming second\n", out)
    assert.are.equal("2 passed, 0 failed", lines[#lines])
    assert.matches("\n# " .. dir:gsub("%p", "%%%0") .. "/stream_spec.lua: 2 passed, 0 failed, %d+s\n", out)
  end)

  it("ends the unit tier with its counts and seconds", function()
    -- A build directory whose unit tier is two small TAP programs.
    S.exec("mkdir -p " .. S.quote(dir .. "/tests"))
    S.write_file(dir .. "/tests/test_a", "#!/bin/sh\necho 'ok 1 - a'\necho 'ok 2 - b'\n")
    S.write_file(dir .. "/tests/test_b", "#!/bin/sh\necho 'not ok 1 - c'\nexit 1\n")
    S.exec(("chmod +x %s/tests/test_a %s/tests/test_b"):format(S.quote(dir), S.quote(dir)))
    local code, out = S.exec(("env MURMUR_BUILD= BUILD=%s sh tests/run unit"):format(S.quote(dir)))
    assert.are.equal(1, code, out)
    assert.matches("\n# unit: 2 passed, 1 failed, %d+s\n2 passed, 1 failed\n$", out)
  end)

  it("runs MURMUR_TEST_JOBS spec files at once, in slots of their own, printing each file whole", function()
    -- a_spec and b_spec each wait for the other's mark: they pass only when
    -- both run at the same time. Each prints its slot and a random port.
    local function spec(me, other)
      return ([[
local S = require("spec.support")
describe("#%s waits", function()
  it("marks", function() S.write_file(%q, os.getenv("MURMUR_TEST_SLOT")) end)
  it("sees the other's mark", function()
    print("# slot " .. os.getenv("MURMUR_TEST_SLOT") .. " port " .. S.random_port())
    S.wait_for("the other file's mark", 30, function() return S.read_file(%q) end)
  end)
end)
]]):format(me, dir .. "/" .. me, dir .. "/" .. other)
    end
    S.write_file(dir .. "/a_spec.lua", spec("a", "b"))
    S.write_file(dir .. "/b_spec.lua", spec("b", "a"))
    S.write_file(dir .. "/c_spec.lua", 'describe("#c", function() it("one", function() end) it("two", function() end) end)\n')
    local code, out = S.exec(("env MURMUR_BUILD= BUILD=%s MURMUR_SPECS=%s MURMUR_TEST_JOBS=2 sh tests/run spec")
      :format(S.quote(S.build), S.quote(dir)))
    assert.are.equal(0, code, out)
    assert.matches("\n6 passed, 0 failed\n$", out)
    -- Each file's block is whole: its header, its own TAP lines, its summary.
    local slots = {}
    for _, name in ipairs({ "a", "b", "c" }) do
      local f = (dir .. "/" .. name .. "_spec.lua"):gsub("%p", "%%%0")
      local block = out:match("# spec: " .. f .. "\n(.-)\n# " .. f .. ": 2 passed, 0 failed, %d+s\n")
      assert.truthy(block, name .. "'s block is not whole:\n" .. out)
      assert.is_nil(block:find("# spec:", 1, true), out)
      local oks = 0
      for l in block:gmatch("[^\n]+") do
        if l:match("^ok ") then oks = oks + 1 end
      end
      assert.are.equal(2, oks, block)
      local slot, port = block:match("# slot (%d) port (%d+)")
      if name ~= "c" then
        slots[name] = { slot = tonumber(slot), port = tonumber(port) }
      end
    end
    -- The two files ran in different slots, whose ports come from disjoint
    -- halves of 20000 up to the kernel's ephemeral ports.
    assert.are_not.equal(slots.a.slot, slots.b.slot)
    local f = io.open("/proc/sys/net/ipv4/ip_local_port_range", "rb")
    local low = f and tonumber(f:read("*a"):match("%d+")) or 32768
    if f then f:close() end
    local half = 20000 + math.floor((low - 20000) / 2)
    for _, v in pairs(slots) do
      assert.is_true(v.port >= 20000 and v.port < low, tostring(v.port))
      assert.are.equal(v.slot == 0, v.port < half, v.slot .. " " .. v.port)
    end
  end)

  it("refuses a MURMUR_TEST_JOBS that is not a positive number (exit 2)", function()
    local code, _, err = run("MURMUR_TEST_JOBS=0", "spec -t testrun")
    assert.are.equal(2, code)
    assert.matches("MURMUR_TEST_JOBS must be a positive number", err, 1, true)
  end)

  it("leaves out the spec files carrying a tag of MURMUR_SKIP_TAGS (make check: #rock)", function()
    S.write_file(dir .. "/one_spec.lua", 'describe("#one", function() it("runs", function() end) end)\n')
    S.write_file(dir .. "/two_spec.lua", 'describe("#two #big", function() it("runs", function() end) end)\n')
    local env = "MURMUR_SPECS=" .. S.quote(dir) .. " MURMUR_SKIP_TAGS=other,big"
    local code, out = run(env, "spec")
    assert.are.equal(0, code, out)
    assert.truthy(out:find("# spec: " .. dir .. "/two_spec.lua skipped (tag big in MURMUR_SKIP_TAGS)", 1, true), out)
    assert.truthy(out:find("# spec: " .. dir .. "/one_spec.lua\n", 1, true), out)
    assert.matches("1 passed, 0 failed\n$", out)
  end)

  it("fails a run in which busted selects no test", function()
    S.write_file(dir .. "/one_spec.lua", 'describe("#one", function() it("runs", function() end) end)\n')
    local env = "MURMUR_SPECS=" .. S.quote(dir)
    local code, out = run(env, "spec -t one")
    assert.are.equal(0, code, out)
    assert.matches("1 passed, 0 failed\n$", out)
    code, out = run(env, "spec -t one --filter nothing-matches-this")
    assert.are.equal(1, code, out)
    assert.matches("busted selected no tests", out, 1, true)
    assert.matches("0 passed, 1 failed\n$", out)
  end)
end)
