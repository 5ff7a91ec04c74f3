-- Files murmur creates are private, and murmur writes only files that are
-- its own.
--
--   (a) modes: the data directory, the dead-letter and store directories
--       are created 0700, the dead-letter file, the LMDB files, status.json,
--       supervisor.json and murmur.pid 0600, whatever the umask murmur was
--       started with (it sets 077 itself); MURMUR_UMASK=027 relaxes that to
--       0750/0640, and a value that is not an octal umask is refused;
--   (b) the dead-letter file a script names: a symbolic link is not
--       followed, and an existing file that is not a murmur dead-letter file
--       (a binary, a text file) is neither written nor truncated; the run
--       says why, naming the file, and counts the rest as usual;
--   (c) status.json is replaced only by a complete file: while writes fail
--       (MURMUR_ERRINJ_WRITE_ATOMIC, compiled into test builds, makes every
--       atomic write stop half way like a full disk) the previous file stays,
--       whole, with one warning in the log, and writing resumes afterwards.
local S = require("spec.support")
local core = require("murmur.core")

local dir

local function mode(path)
  local code, out = S.exec("stat -c %a " .. S.quote(path))
  assert.are.equal(0, code, "no file " .. path)
  return out:match("%d+")
end

local SCRIPT = [[
local murmur = require("murmur")
murmur.pipeline { name = "c", key = "k", monoid = murmur.count(), dead_letter = DEAD_LETTER }
]]

local function script(dead_letter)
  local path = dir .. "/p.lua"
  S.write_file(path, (SCRIPT:gsub("DEAD_LETTER", dead_letter and ("%q"):format(dead_letter) or "nil")))
  return path
end

local function input()
  S.write_file(dir .. "/in.jsonl", '{"k":"a"}\nnot json\n{"k":"b"}\n')
  return dir .. "/in.jsonl"
end

-- Runs `murmur run --once` under a permissive umask, with extra environment.
local function run_once(data, env, dead_letter)
  local cmd = ("umask 022; %s %s run --once --data %s --input %s %s"):format(env or "",
    S.quote(S.murmur), S.quote(data), S.quote(input()), S.quote(script(dead_letter)))
  return S.exec(cmd)
end

local function count(data, entity)
  local code, out = S.murmur_run({ "query", "c", entity, "--json", "--data", data })
  if code ~= 0 then return 0 end
  return core.json_decode(out).result.value
end

local function wait_for(pred, seconds, what)
  for _ = 1, (seconds or 10) * 20 do
    if pred() then return end
    S.sleep(0.05)
  end
  error("timed out waiting for " .. what, 2)
end

describe("#filemodes files murmur creates", function()
  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  it("are private by default: directories 0700, files 0600", function()
    local data = dir .. "/d"
    local code, _, err = run_once(data)
    assert.are.equal(0, code, err)
    assert.are.equal(1, count(data, "a"))
    for _, d in ipairs({ data, data .. "/dead-letter", data .. "/store" }) do
      assert.are.equal("700", mode(d), d)
    end
    for _, f in ipairs({ "/dead-letter/c.jsonl", "/store/data.mdb", "/store/lock.mdb",
      "/status.json", "/supervisor.json" }) do
      assert.are.equal("600", mode(data .. f), f)
    end
  end)

  it("murmur.pid and status.json of a running instance are 0600", function()
    local data = dir .. "/d"
    input()
    local log = dir .. "/log"
    local h = S.spawn(("sh -c %s"):format(S.quote(("umask 022; exec %s run --follow --data %s --input %s %s")
      :format(S.quote(S.murmur), S.quote(data), S.quote(dir .. "/in.jsonl"), S.quote(script())))), log)
    local ok, e = pcall(function()
      S.wait_status(data, function(st) return st.engine and st.engine.pipelines.c end, 20, "status.json")
      assert.are.equal("600", mode(data .. "/murmur.pid"))
      assert.are.equal("600", mode(data .. "/status.json"))
    end)
    S.kill(h, "TERM")
    assert.are.equal(0, S.wait_exit(h, 20), S.read_file(log))
    assert(ok, e)
  end)

  it("MURMUR_UMASK relaxes the modes; a bad value is refused", function()
    local data = dir .. "/d"
    local code, _, err = run_once(data, "MURMUR_UMASK=027")
    assert.are.equal(0, code, err)
    assert.are.equal("750", mode(data))
    assert.are.equal("750", mode(data .. "/dead-letter"))
    assert.are.equal("640", mode(data .. "/dead-letter/c.jsonl"))
    assert.are.equal("640", mode(data .. "/store/data.mdb"))
    assert.are.equal("640", mode(data .. "/status.json"))

    code, _, err = run_once(dir .. "/bad", "MURMUR_UMASK=0o27")
    assert.are.equal(2, code)
    assert.matches("MURMUR_UMASK=0o27 is not an octal umask", err, 1, true)
    assert.is_nil(S.read_file(dir .. "/bad/status.json"))
  end)
end)

describe("#filemodes #deadletter the dead-letter file a script names", function()
  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  it("is not followed when it is a symbolic link", function()
    local target = dir .. "/target"
    local before = "precious\ncontent without a final newline"
    S.write_file(target, before)
    assert.are.equal(0, (S.exec(("ln -s %s %s"):format(S.quote(target), S.quote(dir .. "/dl.jsonl")))))
    local code, _, err = run_once(dir .. "/d", nil, dir .. "/dl.jsonl")
    assert.are.equal(0, code, err)
    assert.are.equal(before, S.read_file(target))
    assert.matches("dead-letter file " .. dir .. "/dl.jsonl is a symbolic link; refusing to follow it", err, 1, true)
    assert.are.equal(1, count(dir .. "/d", "a"))
    assert.are.equal(1, count(dir .. "/d", "b"))
  end)

  it("that exists and is not a murmur dead-letter file is never modified", function()
    -- A binary with no final newline: the old code cut it back to its last
    -- '\n' before appending.
    local binary = dir .. "/tool"
    assert.are.equal(0, (S.exec(("cp %s %s"):format(S.quote(S.murmur), S.quote(binary)))))
    local before = S.read_file(binary)
    local text = dir .. "/notes.txt"
    S.write_file(text, '{"time":"not a dead letter"}\nsecond line, torn')
    for i, path in ipairs({ binary, text }) do
      local want = S.read_file(path)
      local code, _, err = run_once(dir .. "/d" .. i, nil, path)
      assert.are.equal(0, code, err)
      assert.are.equal(want, S.read_file(path))
      assert.matches("dead-letter file " .. path .. " exists and is not a murmur dead-letter file", err, 1, true)
      -- The events were counted all the same.
      assert.are.equal(1, count(dir .. "/d" .. i, "a"))
    end
    assert.are.equal(#before, #S.read_file(binary))
  end)

  it("of murmur's own is appended to, a torn last entry cut first", function()
    local path = dir .. "/dl.jsonl"
    local code, _, err = run_once(dir .. "/d", nil, path)
    assert.are.equal(0, code, err)
    local one = S.read_file(path)
    assert.matches('^{"time":"', one)
    S.write_file(path, one .. '{"time":"2026-1')
    code, _, err = run_once(dir .. "/d2", nil, path)
    assert.are.equal(0, code, err)
    local lines = S.lines(path)
    assert.are.equal(2, #lines)
    for _, l in ipairs(lines) do assert.are.equal("c", core.json_decode(l).pipeline) end
  end)
end)

describe("#filemodes #diskfull status.json", function()
  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  it("is kept whole when writing it fails, with one warning, and written again after", function()
    local data, log, flag = dir .. "/d", dir .. "/log", dir .. "/full"
    input()
    local h = S.spawn(("env MURMUR_ERRINJ_WRITE_ATOMIC=%s %s run --follow --data %s --input %s %s")
      :format(S.quote(flag), S.quote(S.murmur), S.quote(data), S.quote(dir .. "/in.jsonl"), S.quote(script())), log)
    local ok, e = pcall(function()
      S.wait_status(data, function(st) return st.engine and st.engine.pipelines.c end, 20, "status.json")
      S.write_file(flag, "")
      -- A write that began before the flag existed has finished by now.
      S.sleep(1.5)
      local kept = S.read_file(data .. "/status.json")
      S.sleep(2.5)
      assert.are.equal(kept, S.read_file(data .. "/status.json"))
      assert.is_table(core.json_decode(kept))
      assert.is_nil(S.read_file(data .. "/status.json.tmp"))
      local text = S.read_file(log)
      local _, warnings = text:gsub("cannot write status", "")
      assert.are.equal(1, warnings, text)
      assert.matches("status.json.tmp: write: No space left on device", text, 1, true)
      os.remove(flag)
      wait_for(function() return S.read_file(data .. "/status.json") ~= kept end, 10, "a new status.json")
      assert.is_table(core.json_decode(S.read_file(data .. "/status.json")))
      wait_for(function() return S.read_file(log):find("status.json is written again", 1, true) end, 5,
        "the recovery in the log")
    end)
    os.remove(flag)
    S.kill(h, "TERM")
    assert.are.equal(0, S.wait_exit(h, 20), S.read_file(log))
    assert(ok, e)
  end)
end)
