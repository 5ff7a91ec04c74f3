-- tests/run, the runner behind `make test`: results stream as they finish,
-- every spec file carries a busted tag, an unknown tag is a usage error and a
-- run that selects no test fails.
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
    local p = assert(io.popen(("env MURMUR_BUILD= BUILD=%s MURMUR_SPECS=%s sh tests/run spec 2>&1")
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
