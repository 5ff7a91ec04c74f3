-- Isolation of the process from the scripts it runs: a script version is
-- loaded first by a child under CPU, memory and wall-clock limits (one C call
-- that runs for ever, a crash of the Lua VM); a worker that never starts is
-- killed; --lua-memory holds inside one call; on_merge hooks run under a
-- time budget and a journal; a reload that fails half-way is rolled back.
local S = require("spec.support")
local core = require("murmur.core")

local dir, h

-- Runs for hours inside one call to the pattern matcher.
local SLOW_FIND = [[string.find(string.rep("a", 28), string.rep("a*", 28) .. "b")]]
-- Overflows the C stack through gsub: a segfault of the Lua VM.
local SEGV = [[local function g(s) return (s:gsub(".", function(c) return g(c) end)) end g("ab")]]

local function script(top, name)
  local path = dir .. "/" .. (name or "p.lua")
  S.write_file(path, ([[
local murmur = require("murmur")
%s
murmur.pipeline { name = "c", monoid = murmur.count(), key = "k", flush = { interval = "100ms" } }
]]):format(top or ""))
  return path
end

local function count(name, entity)
  local code, out = S.murmur_run({ "query", name, entity, "--json", "--data", dir .. "/d" })
  if code ~= 0 then return 0 end
  return core.json_decode(out).result.value
end

local function timed(args, limit_s)
  local t0 = core.now_ms()
  local parts = { "timeout", tostring(limit_s), S.quote(S.murmur) }
  for _, a in ipairs(args) do parts[#parts + 1] = S.quote(a) end
  local code, out, err = S.exec(table.concat(parts, " "))
  return code, out, err, (core.now_ms() - t0) / 1000
end

local function dead_letters(name)
  local out = {}
  for _, l in ipairs(S.lines(dir .. "/d/dead-letter/" .. name .. ".jsonl")) do out[#out + 1] = core.json_decode(l) end
  return out
end

local function supervisor_state()
  return core.json_decode(S.read_file(dir .. "/d/supervisor.json"))
end

local function status() return S.status(dir .. "/d") end
-- On a timeout the worker's log and last status go into the message: a
-- wait that fails only on a loaded CI machine must say what the worker did.
local function wait_for(pred, seconds, what)
  local ok, st = pcall(S.wait_status, dir .. "/d", pred, seconds, what)
  if ok then return st end
  error(("%s\n-- worker log:\n%s\n-- status.json:\n%s"):format(tostring(st), S.read_file(dir .. "/log") or "",
    S.read_file(dir .. "/d/status.json") or ""), 2)
end

-- The watchdog is far above any stall a loaded machine causes: a worker
-- restarted by it would load the script's newest version from scratch, and
-- the reload cases below would see that version instead of the rollback.
local function start(p, extra_env)
  h = S.spawn(("%s %s run --follow --watchdog 20s --data %s --input %s %s"):format(extra_env or "", S.murmur,
    dir .. "/d", dir .. "/in.jsonl", p), dir .. "/log")
  wait_for(function(st) return st.engine ~= nil end, 20, "start-up")
end

local function append(lines)
  local f = assert(io.open(dir .. "/in.jsonl", "ab"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
end

describe("#isolation", function()
  before_each(function()
    dir = S.tmpdir()
    S.write_file(dir .. "/in.jsonl", "")
  end)
  after_each(function()
    if h then S.kill(h, "KILL") S.wait_exit(h, 5) h = nil end
    S.rm_rf(dir)
  end)

  describe("load-time limits that hold for C calls", function()
    it("check stops a script whose top level spends its time in one C call, exit 3", function()
      local code, _, err, secs = timed({ "check", script(SLOW_FIND) }, 40)
      assert.are.equal(3, code, err)
      assert.is_true(secs < 25, "took " .. secs .. " s")
      assert.matches("p.lua: loading", err)
      assert.matches("not loaded", err)
    end)

    it("query of a script loads it the same way: a hanging top level is stopped, exit 3", function()
      local code, _, err, secs = timed({ "query", script(SLOW_FIND), "a", "--data", dir .. "/d" }, 40)
      assert.are.equal(3, code, err)
      assert.is_true(secs < 25, "took " .. secs .. " s")
      assert.matches("not loaded", err)
    end)

    it("run fails at start-up with a clear message and exit 3 when loading crashes the Lua VM", function()
      S.write_file(dir .. "/in.jsonl", '{"k":"a"}\n')
      local code, _, err = timed({ "run", "--once", "--data", dir .. "/d", "--input", dir .. "/in.jsonl", script(SEGV) }, 40)
      assert.are.equal(3, code, err)
      assert.matches("crashed the Lua VM %(signal 11, SIGSEGV%)", err)
      assert.is_nil(err:find("restarting", 1, true), err)
      assert.are.equal(0, supervisor_state().restarts)
    end)

    it("run fails at start-up with exit 3 when loading hangs in a C call", function()
      S.write_file(dir .. "/in.jsonl", '{"k":"a"}\n')
      local code, _, err, secs = timed({ "run", "--once", "--data", dir .. "/d", "--input", dir .. "/in.jsonl", script(SLOW_FIND) }, 60)
      assert.are.equal(3, code, err)
      assert.is_true(secs < 30, "took " .. secs .. " s")
      assert.matches("p.lua: loading", err)
    end)

    it("a reload to a crashing or hanging version keeps the old one running in the same worker", function()
      local p = script()
      append({ '{"k":"a"}' })
      start(p)
      wait_for(function(st) return st.engine.records == 1 end, 10, "the first record")
      local worker = status().pid
      for i, top in ipairs({ SEGV, SLOW_FIND }) do
        script(top)
        local st = wait_for(function(s) return s.reload.failed == i end, 40, "refused reload " .. i)
        assert.matches("p.lua: loading", st.reload.last_error)
      end
      append({ '{"k":"a"}', '{"k":"b"}' })
      local st = wait_for(function(s) return s.engine.records == 3 end, 10, "records after the refused reloads")
      assert.are.equal(worker, st.pid)
      assert.are.equal(0, supervisor_state().restarts)
      S.kill(h, "TERM")
      assert.are.equal(0, S.wait_exit(h, 15))
      h = nil
      assert.are.equal(2, count("c", "a"))
      assert.are.equal(1, count("c", "b"))
    end)
  end)

  describe("supervisor", function()
    it("kills and reports a worker that never sends a heartbeat at start-up", function()
      if not core.errinj then return end
      S.write_file(dir .. "/in.jsonl", '{"k":"a"}\n')
      local code, _, err, secs = S.exec(("MURMUR_ERRINJ_STARTUP_HANG=1 timeout 60 %s run --once --watchdog 1s --data %s --input %s %s")
        :format(S.murmur, dir .. "/d", dir .. "/in.jsonl", script()))
      secs = nil
      assert.are.equal(1, code, err)
      assert.matches("did not start: no heartbeat", err)
      assert.matches("hung while starting", err)
      assert.are.equal(1, supervisor_state().stalls)
      assert.is_nil(secs)
    end)
  end)

  describe("--lua-memory", function()
    it("is enforced inside one call: the record is dead-lettered as lua_memory and the worker lives", function()
      local p = dir .. "/m.lua"
      S.write_file(p, [[
local murmur = require("murmur")
murmur.pipeline { name = "m", monoid = murmur.count(), key = function(ev)
  if ev.k == "big" then local s = string.rep("x", 300 * 1024 * 1024) return #s .. "" end
  return ev.k
end }
]])
      S.write_file(dir .. "/in.jsonl", '{"k":"a"}\n{"k":"big"}\n{"k":"b"}\n')
      local code, _, err = S.murmur_run({ "run", "--once", "--lua-memory", "48m", "--data", dir .. "/d",
        "--input", dir .. "/in.jsonl", p })
      assert.are.equal(0, code, err)
      assert.are.equal(1, count("m", "a"))
      assert.are.equal(1, count("m", "b"))
      local dl = dead_letters("m")
      assert.are.equal(1, #dl)
      assert.are.equal("lua_memory", dl[1].reason)
      assert.are.equal('{"k":"big"}', dl[1].record)
      local st = supervisor_state()
      assert.are.equal(0, st.restarts)
      assert.are.equal(0, st.crashes)
    end)
  end)

  describe("on_merge hooks", function()
    local function hook_script(bad)
      local p = dir .. "/h.lua"
      S.write_file(p, ([[
local murmur = require("murmur")
murmur.pipeline { name = "h", monoid = murmur.count(), key = "k",
  flush = { interval = "1h", events = 1000000 },
  on_merge = function(entity, delta, bucket)
    if entity == "bad" then %s end
    print("hook " .. entity)
  end }
]]):format(bad))
      local lines = {}
      for i = 1, 48 do lines[#lines + 1] = ('{"k":"k%d"}'):format(i) end
      lines[#lines + 1] = '{"k":"bad"}'
      S.write_file(dir .. "/in.jsonl", table.concat(lines, "\n") .. "\n")
      return p
    end

    local function called(out)
      local seen, n = {}, 0
      for k in out:gmatch("hook (k%d+)") do
        assert.is_nil(seen[k], k .. " called twice")
        seen[k] = true
        n = n + 1
      end
      return n
    end

    local function failed_calls()
      local out = {}
      for _, l in ipairs(S.lines(dir .. "/d/on_merge.failed.jsonl")) do out[#out + 1] = core.json_decode(l) end
      return out
    end

    it("a hook looping for ever on one key is stopped by its time budget; the other 48 are called", function()
      local p = hook_script("while true do end")
      local code, out, err = S.exec(("MURMUR_HOOK_TIMEOUT=0.5 timeout 60 %s run --once --data %s --input %s %s")
        :format(S.murmur, dir .. "/d", dir .. "/in.jsonl", p))
      assert.are.equal(0, code, err)
      assert.are.equal(48, called(out))
      local f = failed_calls()
      assert.are.equal(1, #f)
      assert.are.equal("bad", f[1].entity)
      assert.are.equal("timeout", f[1].reason)
      assert.are.equal(1, f[1].delta.value)
    end)

    it("a hook that crashes the worker: the next worker records it and makes the calls not made", function()
      local p = hook_script(SEGV)
      -- Line-buffered stdout (stdbuf, inherited by the worker): the crash
      -- must not take the lines of the calls made before it. (stdbuf works
      -- by LD_PRELOAD, which a sanitized build must be told to accept.)
      local code, out, err = S.exec(("ASAN_OPTIONS=$ASAN_OPTIONS:verify_asan_link_order=0 timeout 60 stdbuf -oL %s run --once --data %s --input %s %s")
        :format(S.murmur, dir .. "/d", dir .. "/in.jsonl", p))
      assert.are.equal(0, code, err)
      assert.are.equal(48, called(out))
      local f = failed_calls()
      assert.are.equal(1, #f, S.read_file(dir .. "/d/on_merge.failed.jsonl"))
      assert.are.equal("bad", f[1].entity)
      assert.are.equal("interrupted", f[1].reason)
      assert.are.equal(1, supervisor_state().restarts)
      assert.is_nil(io.open(dir .. "/d/on_merge.journal"))
    end)
  end)

  describe("reload is all or nothing", function()
    local V1 = [[
local murmur = require("murmur")
murmur.pipeline { name = "a", monoid = murmur.count(), key = "k", flush = { interval = "100ms" } }
murmur.pipeline { name = "b", monoid = murmur.count(), key = "k", flush = { interval = "100ms" } }
]]
    -- a is updated (1: update, 2: attach), c added (3: add, 4: attach), b removed (5).
    local V2 = [[
local murmur = require("murmur")
murmur.pipeline { name = "a", monoid = murmur.count(), key = "k", flush = { interval = "200ms" } }
murmur.pipeline { name = "c", monoid = murmur.count(), key = "k", flush = { interval = "100ms" } }
]]
    for _, n in ipairs({ 3, 5 }) do
      it(("a swap failing at operation %d is rolled back: the old pipelines run, the new one is gone"):format(n), function()
        if not core.errinj then return end
        local p = dir .. "/r.lua"
        S.write_file(p, V1)
        append({ '{"k":"x"}' })
        start(p, "env MURMUR_ERRINJ_RELOAD_APPLY=" .. n)
        wait_for(function(st) return st.engine.pipelines.b and st.engine.pipelines.b.records == 1 end, 10, "the first record")
        S.write_file(p, V2)
        local st = wait_for(function(s) return s.reload.failed == 1 end, 30, "the failed reload")
        assert.matches("injected failure", st.reload.last_error)
        assert.matches("rolled back", st.reload.last_error)
        append({ '{"k":"x"}' })
        st = wait_for(function(s) return s.engine.pipelines.b and s.engine.pipelines.b.records == 2 end, 10,
          "b after the rollback")
        assert.are.equal(0, supervisor_state().restarts)
        assert.is_nil(st.engine.pipelines.c)
        assert.are.equal(2, st.engine.pipelines.a.records)
        S.kill(h, "TERM")
        assert.are.equal(0, S.wait_exit(h, 15))
        h = nil
        assert.are.equal(2, count("a", "x"))
        assert.are.equal(2, count("b", "x"))
        assert.are.equal(0, count("c", "x"))
      end)
    end
  end)
end)
