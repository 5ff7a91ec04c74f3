-- The supervisor: a worker stuck in a user function that never returns, one
-- that crashes, or one whose Lua heap grows past its limit is restarted from
-- the last checkpoint; a record that does it twice goes to the dead-letter
-- file and the pipeline moves on with every other record counted exactly.
local S = require("spec.support")
local core = require("murmur.core")

local dir

local function script(body)
  local path = dir .. "/p.lua"
  S.write_file(path, body)
  return path
end

-- watchdog: 1s unless given; a case about crashes gives a long one, because a
-- sanitized build on a loaded machine can take over a second to start, and a
-- start the watchdog kills counts as a stall, not as the crash under test.
local function run(p, lines, extra, watchdog)
  S.write_file(dir .. "/in.jsonl", table.concat(lines, "\n") .. "\n")
  local args = { "run", "--once", "--watchdog", watchdog or "1s", "--data", dir .. "/d", "--input", dir .. "/in.jsonl" }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  args[#args + 1] = p
  return S.murmur_run(args)
end

local function count(entity)
  local code, out = S.murmur_run({ "query", "c", entity, "--json", "--data", dir .. "/d" })
  if code ~= 0 then return 0 end
  return core.json_decode(out).result.value
end

local function dead_letters()
  local out = {}
  for _, l in ipairs(S.lines(dir .. "/d/dead-letter/c.jsonl")) do out[#out + 1] = core.json_decode(l) end
  return out
end

local function supervisor_state()
  return core.json_decode(S.read_file(dir .. "/d/supervisor.json"))
end

describe("#supervisor murmur run", function()
  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  it("restarts a stalled worker and dead-letters the record that stalls it twice", function()
    local p = script([[
      local murmur = require("murmur")
      murmur.pipeline { name = "c", monoid = murmur.count(), key = function(ev)
        if ev.k == "hang" then while true do end end
        return ev.k
      end }
    ]])
    local code, _, err = run(p, { '{"k":"a"}', '{"k":"hang"}', '{"k":"a"}', '{"k":"b"}' })
    assert.are.equal(0, code, err)
    assert.are.equal(2, count("a"))
    assert.are.equal(1, count("b"))
    local dl = dead_letters()
    assert.are.equal(1, #dl)
    assert.are.equal("poison", dl[1].reason)
    assert.are.equal('{"k":"hang"}', dl[1].record)
    local st = supervisor_state()
    assert.are.equal(2, st.stalls)
    assert.are.equal(1, st.poison)
    assert.matches("stalled the worker twice", err)
  end)

  it("restarts a crashed worker and dead-letters the record that crashes it twice", function()
    local p = script([[
      local murmur = require("murmur")
      murmur.allow("os")
      murmur.pipeline { name = "c", monoid = murmur.count(), key = function(ev)
        if ev.k == "crash" then os.exit(9) end
        return ev.k
      end }
    ]])
    -- os.exit needs the operator's grant (doc/security.md).
    local code, _, err = run(p, { '{"k":"a"}', '{"k":"crash"}', '{"k":"b"}' }, { "--allow", "os" }, "30s")
    assert.are.equal(0, code, err)
    assert.are.equal(1, count("a"))
    assert.are.equal(1, count("b"))
    local dl = dead_letters()
    assert.are.equal(1, #dl)
    assert.are.equal('{"k":"crash"}', dl[1].record)
    assert.are.equal(2, supervisor_state().crashes)
  end)

  it("stops a script whose Lua heap grows past --lua-memory", function()
    local p = script([[
      local murmur = require("murmur")
      local hoard = {}
      murmur.pipeline { name = "c", monoid = murmur.count(), key = function(ev)
        if ev.k == "grow" then
          for i = 1, 100 do hoard[#hoard + 1] = ("x"):rep(1000000) .. i end
        end
        return ev.k
      end }
    ]])
    local code, _, err = run(p, { '{"k":"a"}', '{"k":"grow"}', '{"k":"b"}' }, { "--lua-memory", "48m" })
    assert.are.equal(0, code, err)
    assert.matches("Lua heap exceeds its limit", err)
    assert.are.equal(1, count("a"))
    assert.are.equal(1, count("b"))
    assert.are.equal('{"k":"grow"}', dead_letters()[1].record)
  end)

  it("forwards SIGTERM to the worker, which flushes and exits 0", function()
    local p = script([[
      local murmur = require("murmur")
      murmur.pipeline { name = "c", monoid = murmur.count(), key = "k", flush = { interval = "1h", events = 1000000 } }
    ]])
    S.write_file(dir .. "/in.jsonl", string.rep('{"k":"a"}\n', 500))
    local h = S.spawn(("%s run --follow --data %s --input %s %s"):format(S.murmur, dir .. "/d", dir .. "/in.jsonl", p), dir .. "/log")
    for _ = 1, 100 do
      local st = S.read_file(dir .. "/d/status.json")
      if st and core.json_decode(st).engine.records == 500 then break end
      S.sleep(0.05)
    end
    S.kill(h, "TERM")
    assert.are.equal(0, S.wait_exit(h, 10))
    assert.are.equal(500, count("a"))
  end)

  it("a worker dies with its supervisor (kill -9), and a restart resumes exactly", function()
    local p = script([[
      local murmur = require("murmur")
      murmur.pipeline { name = "c", monoid = murmur.count(), key = "k" }
    ]])
    S.write_file(dir .. "/in.jsonl", string.rep('{"k":"a"}\n', 300))
    local h = S.spawn(("%s run --follow --data %s --input %s %s"):format(S.murmur, dir .. "/d", dir .. "/in.jsonl", p), dir .. "/log")
    S.sleep(1)
    local sup = supervisor_state()
    S.kill(h, "KILL")
    S.wait_exit(h, 5)
    local gone = false
    for _ = 1, 40 do
      if not core.kill(sup.worker_pid, "zero") then gone = true break end
      S.sleep(0.05)
    end
    assert.is_true(gone, "the worker outlived its supervisor")
    local code = S.murmur_run({ "run", "--once", "--data", dir .. "/d", "--input", dir .. "/in.jsonl", p })
    assert.are.equal(0, code)
    assert.are.equal(300, count("a"))
  end)

  it("restarts a killed worker at once, and backs off only while workers keep dying young", function()
    local p = script([[
      local murmur = require("murmur")
      murmur.pipeline { name = "c", monoid = murmur.count(), key = "k" }
    ]])
    local data = dir .. "/d"
    S.write_file(dir .. "/in.jsonl", string.rep('{"k":"a"}\n', 200))
    local h = S.spawn(("%s run --follow --data %s --input %s %s"):format(S.murmur, data, dir .. "/in.jsonl", p), dir .. "/log")
    S.wait_status(data, function(st) return st.engine.records == 200 end, 20, "the first worker reading")
    -- Kills the running worker and waits for the supervisor to have started
    -- the next one and for that one to be running its pipelines; returns
    -- the supervisor's state after the restart.
    local function kill_worker(restarts)
      local old = supervisor_state().worker_pid
      assert.is_true(core.kill(old, "kill"))
      local st
      for _ = 1, 400 do
        st = supervisor_state()
        if st and st.restarts == restarts and st.worker_pid ~= 0 and st.worker_pid ~= old then break end
        S.sleep(0.05)
      end
      assert.are.equal(restarts, st.restarts)
      S.wait_status(data, function(s) return s.pid == st.worker_pid end, 20, "the restarted worker running")
      return st
    end
    -- A first death costs no delay; each further one within 10 s of its
    -- worker's start doubles it from 100 ms.
    local first = kill_worker(1)
    assert.are.equal(0, first.restart_delay_ms)
    assert.are.equal(1, first.young_deaths)
    local second = kill_worker(2)
    assert.are.equal(100, second.restart_delay_ms)
    assert.are.equal(2, second.young_deaths)
    local third = kill_worker(3)
    assert.are.equal(200, third.restart_delay_ms)
    assert.are.equal(3, third.crashes)
    S.kill(h, "TERM")
    assert.are.equal(0, S.wait_exit(h, 20))
    local log = S.read_file(dir .. "/log")
    assert.matches("restarting the worker from its last checkpoint now", log, 1, true)
    assert.matches("in 100 ms (2 workers in a row died within 10 s of starting)", log, 1, true)
    assert.matches("in 200 ms (3 workers in a row", log, 1, true)
    -- Every record once: each worker resumed from the last checkpoint.
    assert.are.equal(200, count("a"))
  end)

  it("starts every worker, the first and a restarted one, in the signal state and environment of a fresh process", function()
    -- A worker is a forked copy of its supervisor (engine/core/supervisor.c),
    -- which ignores what its shell ignored, handles SIGINT, SIGTERM, SIGHUP
    -- and SIGCHLD on its loop, and here was given a stray MURMUR_PROGRESS.
    local p = script([[
      local murmur = require("murmur")
      murmur.pipeline { name = "c", monoid = murmur.count(), key = "k" }
    ]])
    local bit = require("bit")
    local data = dir .. "/d"
    S.write_file(dir .. "/in.jsonl", string.rep('{"k":"a"}\n', 100))
    local h = S.spawn(("sh -c 'trap \"\" QUIT PIPE; MURMUR_PROGRESS=%s/elsewhere exec %s run --follow --data %s --input %s %s'")
      :format(dir, S.murmur, data, dir .. "/in.jsonl", p), dir .. "/log")
    local function signal_state(pid)
      local status = assert(S.read_file("/proc/" .. pid .. "/status"))
      local function mask(name) return tonumber(status:match(name .. ":%s+(%x+)"):sub(-8), 16) end
      return { ign = mask("SigIgn"), blk = mask("SigBlk"), cgt = mask("SigCgt") }
    end
    -- SIGINT is 2, SIGQUIT 3, SIGPIPE 13, SIGTERM 15, SIGCHLD 17: bit n - 1.
    local INT, QUIT, PIPE, TERM, CHLD = 2, 4, 4096, 16384, 65536
    local function check_worker(what, old)
      local st = S.wait_status(data, function(s)
        local sv = supervisor_state()
        return (old or s.engine.records == 100) and s.pid == sv.worker_pid and s.pid ~= old
      end, 20, what)
      local w = signal_state(st.pid)
      -- Signals 32 and 33 are glibc's own: a process cannot change them,
      -- and this test runner ignores 32. Only the low 31 are compared.
      assert.are.equal(0, bit.band(w.ign, 0x7fffffff), what .. ": no signal ignored")
      assert.are.equal(0, w.blk, what .. ": no signal blocked")
      assert.are.equal(INT + TERM, bit.band(w.cgt, INT + TERM), what .. ": its early stop handler (or its loop's) catches SIGINT and SIGTERM")
      assert.are.equal(0, bit.band(w.cgt, CHLD), what .. ": SIGCHLD has its default action")
      return st.pid
    end
    local first = check_worker("the first worker")
    local sup = signal_state(supervisor_state().pid)
    assert.are.equal(QUIT + PIPE, bit.band(sup.ign, QUIT + PIPE), "the supervisor ignores SIGQUIT and SIGPIPE")
    assert.are.equal(CHLD, bit.band(sup.cgt, CHLD), "the supervisor handles SIGCHLD")
    assert.is_true(core.kill(first, "kill"))
    local second = check_worker("the restarted worker", first)
    assert.are_not.equal(first, second)
    S.kill(h, "TERM")
    assert.are.equal(0, S.wait_exit(h, 20))
    assert.are.equal(100, count("a"))
  end)
end)
