-- A full disk or a failing store write never loses accepted data: the flush
-- fails as a whole, the engine logs it, pauses its sources, keeps its
-- checkpoints where they were and retries with backoff (100 ms doubling to
-- 30 s); when space returns the retry commits and everything is counted
-- exactly once.
--
--   (a) injected failures: MURMUR_ERRINJ_STORE_APPLY=N makes the LMDB store
--       fail the next N applies with ENOSPC (test builds define MM_ERRINJ);
--   (b) a real full filesystem: a small tmpfs (pending where mounting is not
--       permitted) filled up, then freed while murmur waits;
--   (c) a store map that is too small (map_size): a flush that cannot fit
--       keeps failing; SIGTERM then waits for a flush that never succeeds, a
--       second SIGTERM exits without it, and a restart with a larger map
--       recovers everything from the last checkpoint.
local S = require("spec.support")
local core = require("murmur.core")
local query = require("murmur.query")

local function value(data, pipeline, entity)
  local r, err, code = query.run(pipeline, entity, { data = { data } })
  if not r and (code == 4 or tostring(err):find("ENOTFOUND", 1, true)) then return 0 end
  assert(r, err)
  return r.found and r.result.value or 0
end

local function now_s() return core.now_ms() / 1000 end

-- Waits until the log matches a Lua pattern; returns the log text.
local function wait_log(log, pattern, seconds)
  local t0 = now_s()
  repeat
    local text = S.read_file(log) or ""
    if text:find(pattern) then return text end
    S.sleep(0.05)
  until now_s() - t0 > (seconds or 30)
  error(("log never matched %q:\n%s"):format(pattern, (S.read_file(log) or ""):sub(-2000)))
end

local function wait_value(data, pipeline, entity, want, h, log)
  local t0 = now_s()
  local got
  repeat
    got = value(data, pipeline, entity)
    assert.is_true(got <= want, ("%d committed, only %d written"):format(got, want))
    if got == want then return end
    assert.is_nil(S.read_file(h.rcfile), "murmur exited: " .. (S.read_file(log) or ""):sub(-2000))
    S.sleep(0.05)
  until now_s() - t0 > 60
  error(("%s %s: %d committed after 60 s, want %d"):format(pipeline, entity, got, want))
end

-- S.wait_exit, remembering the exit code (it removes the file it reads).
local function wait_exit(h, seconds)
  h.rc = h.rc or S.wait_exit(h, seconds)
  return h.rc
end

local function alive(h) return h.rc == nil and S.read_file(h.rcfile) == nil end

-- Whether this machine lets the tests mount a tmpfs (root with mount
-- permission, as in CI); returns the reason when it does not.
local function tmpfs_mountable()
  local d = S.tmpdir()
  local code, _, err = S.exec(("mount -t tmpfs -o size=64k tmpfs %s"):format(S.quote(d)))
  if code == 0 then S.exec("umount " .. S.quote(d)) end
  S.rm_rf(d)
  return code == 0, (err:gsub("%s+$", ""))
end

-- page counts: one pipeline keyed by page, one total.
local SCRIPT = [[
local murmur = require("murmur")
murmur.pipeline { name = "views", key = "page", monoid = murmur.count(), STORE
  flush = { events = FLUSH, interval = "100ms" } }
murmur.pipeline { name = "total", key = murmur.literal("all"), monoid = murmur.count(), STORE
  flush = { events = FLUSH, interval = "100ms" } }
]]

local function script(dir, flush, store)
  local path = dir .. "/count.lua"
  local text = SCRIPT:gsub("FLUSH", tostring(flush)):gsub("STORE", store or "")
  S.write_file(path, text)
  return path
end

-- Appends n lines for pages prefix0..prefix(n-1); returns their count.
local function append(path, prefix, n, from)
  local f = assert(io.open(path, "ab"))
  for i = from or 0, (from or 0) + n - 1 do f:write(('{"page":"%s%d"}\n'):format(prefix, i)) end
  f:close()
  return n
end

describe("#diskfull", function()
  local dir

  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  describe("injected store failures (MURMUR_ERRINJ_STORE_APPLY)", function()
    it("are retried with backoff, paused and counted; results are exact", function()
      local input = dir .. "/in.jsonl"
      append(input, "p", 30000)
      local p = script(dir, 5000)
      local code, out, err = S.exec(("MURMUR_ERRINJ_STORE_APPLY=3 %s run --once --stats --data %s --input %s %s")
        :format(S.quote(S.murmur), dir .. "/d", input, p))
      assert.are.equal(0, code, err:sub(-2000))
      local stats = core.json_decode(out)
      assert.are.equal(3, stats.flush_failures)
      assert.is_true(stats.pauses >= 1)
      assert.is_true(stats.flushes >= 1)
      for attempt = 1, 3 do
        assert.is_truthy(err:find(("flush of %%d+ deltas failed %%(attempt %d%%): ENOSPC: .-sources paused, retrying in %d ms")
          :format(attempt, 100 * 2 ^ (attempt - 1))), "attempt " .. attempt .. ":\n" .. err)
      end
      assert.is_truthy(err:find("flush succeeded after 4 attempts; resuming", 1, true), err)
      assert.are.equal(30000, value(dir .. "/d", "total", "all"))
      for _, i in ipairs({ 0, 1, 999, 29999 }) do assert.are.equal(1, value(dir .. "/d", "views", "p" .. i)) end
    end)

    it("hold the checkpoint, and SIGTERM waits for the retry to succeed", function()
      local input, log, data = dir .. "/in.jsonl", dir .. "/log", dir .. "/d"
      append(input, "p", 20000)
      local h = S.spawn(("env MURMUR_ERRINJ_STORE_APPLY=5 %s run --follow --data %s --input %s %s")
        :format(S.murmur, data, input, script(dir, 5000)), log)
      wait_log(log, "failed %(attempt 3%)")
      -- Nothing committed, no position stored: a crash now would re-read all.
      assert.are.equal(0, value(data, "total", "all"))
      S.kill(h, "TERM")
      S.sleep(0.5)
      assert.is_true(alive(h), "exited before its flush succeeded")
      assert.are.equal(0, value(data, "total", "all"))
      assert.are.equal(0, wait_exit(h, 30), S.read_file(log))
      local text = S.read_file(log)
      assert.is_truthy(text:find("flush succeeded after 6 attempts", 1, true), text)
      -- The stop ended reading; what was read is committed with its position,
      -- and the next run reads exactly the rest.
      local committed = value(data, "total", "all")
      assert.is_true(committed >= 5000 and committed <= 20000, committed)
      assert.are.equal(0, (S.murmur_run({ "run", "--once", "--data", data, "--input", input, dir .. "/count.lua" })))
      assert.are.equal(20000, value(data, "total", "all"))
      assert.are.equal(1, value(data, "views", "p0"))
      assert.are.equal(1, value(data, "views", "p19999"))
    end)

    it("lose nothing when the process is killed while retrying", function()
      local input, log, data = dir .. "/in.jsonl", dir .. "/log", dir .. "/d"
      append(input, "p", 10000)
      local p = script(dir, 1000)
      -- A first run commits the first part; the second fails from its start.
      assert.are.equal(0, (S.murmur_run({ "run", "--once", "--data", data, "--input", input, p })))
      append(input, "q", 10000)
      local h = S.spawn(("env MURMUR_ERRINJ_STORE_APPLY=1000 %s run --follow --data %s --input %s %s")
        :format(S.murmur, data, input, p), log)
      wait_log(log, "failed %(attempt 3%)")
      assert.are.equal(10000, value(data, "total", "all"))
      S.kill(h, "KILL")
      assert.are.equal(137, wait_exit(h, 10))
      assert.are.equal(0, (S.murmur_run({ "run", "--once", "--data", data, "--input", input, p })))
      assert.are.equal(20000, value(data, "total", "all"))
      assert.are.equal(1, value(data, "views", "p0"))
      assert.are.equal(1, value(data, "views", "q9999"))
    end)
  end)

  local FULL_FS = "a full filesystem: flushes wait for space, nothing is lost or counted twice"
  local mountable, why = tmpfs_mountable()
  if not mountable then
    pending(FULL_FS .. " (cannot mount a tmpfs here: " .. why .. ")")
  end
  local full_fs = mountable and it or function() end
  full_fs(FULL_FS, function()
    local mnt = dir .. "/mnt"
    S.exec("mkdir -p " .. S.quote(mnt))
    local code, _, err = S.exec(("mount -t tmpfs -o size=4m tmpfs %s"):format(S.quote(mnt)))
    assert.are.equal(0, code, err)
    local h
    finally(function()
      if h and alive(h) then S.kill(h, "KILL") wait_exit(h, 10) end
      S.exec("umount " .. S.quote(mnt))
    end)
    local input, log, data = dir .. "/in.jsonl", dir .. "/log", mnt .. "/data"
    local written = append(input, "a", 2000)
    h = S.spawn(("%s run --follow --data %s --input %s %s"):format(S.murmur, data, input, script(dir, 1000)), log)
    wait_value(data, "total", "all", written, h, log)

    -- Fill the filesystem, then give murmur work that needs new pages and
    -- dead letters that need file space.
    S.exec(("head -c 100M /dev/zero > %s"):format(S.quote(mnt .. "/filler")))
    local bad, offset = {}, #S.read_file(input)
    local f = assert(io.open(input, "ab"))
    for i = 0, 19999 do
      local line = ('{"page":"b%d"}\n'):format(i)
      f:write(line)
      offset = offset + #line
      if i % 1000 == 0 then
        local junk = ('{"page": broken %d %s}\n'):format(i, ("x"):rep(3000))
        bad[offset] = true
        f:write(junk)
        offset = offset + #junk
      end
    end
    f:close()
    written = written + 20000
    local text = wait_log(log, "failed %(attempt 2%)")
    assert.is_truthy(text:find("sources paused", 1, true))
    assert.are.equal(2000, value(data, "total", "all"))
    assert.is_true(alive(h))
    -- Space returns.
    os.remove(mnt .. "/filler")
    wait_value(data, "total", "all", written, h, log)
    S.sleep(0.2)
    S.kill(h, "TERM")
    assert.are.equal(0, wait_exit(h, 30), S.read_file(log))
    text = S.read_file(log)
    assert.is_truthy(text:find("flush succeeded after %d+ attempts"), text)
    for _, i in ipairs({ 0, 1999 }) do assert.are.equal(1, value(data, "views", "a" .. i)) end
    for _, i in ipairs({ 0, 1, 12345, 19999 }) do assert.are.equal(1, value(data, "views", "b" .. i)) end
    -- Every bad line has its dead letter, whole, exactly once.
    for _, name in ipairs({ "views", "total" }) do
      local seen = {}
      for _, l in ipairs(S.lines(data .. "/dead-letter/" .. name .. ".jsonl")) do
        local e = core.json_decode(l)
        assert.is_table(e, name .. ": torn dead-letter line: " .. l:sub(1, 100))
        assert.is_true(bad[e.offset] and not seen[e.offset], name .. ": unexpected dead letter at " .. e.offset)
        seen[e.offset] = true
      end
      for off in pairs(bad) do assert.is_true(seen[off], name .. ": no dead letter for offset " .. off) end
    end
  end)

  it("a full store map: retried until stopped twice, then a larger map recovers from the checkpoint", function()
    local input, log, data = dir .. "/in.jsonl", dir .. "/log", dir .. "/d"
    local N = 30000
    append(input, "p", N)
    local small = script(dir, 2000, 'store = murmur.store("lmdb", { map_size = "256k" }),')
    local h = S.spawn(("%s run --once --data %s --input %s %s"):format(S.murmur, data, input, small), log)
    local text = wait_log(log, "failed %(attempt 2%)")
    assert.is_truthy(text:find("ENOSPC: lmdb: .-MDB_MAP_FULL"), text)
    local committed = value(data, "total", "all")
    assert.is_true(committed < N)
    -- The first signal asks for a graceful stop, which needs a flush that
    -- cannot succeed: murmur keeps retrying. The second exits at once.
    S.kill(h, "TERM")
    S.sleep(0.5)
    assert.is_true(alive(h), "exited without its final flush on the first signal")
    S.kill(h, "TERM")
    local rc = wait_exit(h, 10)
    assert.is_not_nil(rc, "did not exit on the second signal")
    assert.are_not.equal(0, rc)
    assert.are.equal(committed, value(data, "total", "all"))
    -- The checkpoint still names the committed prefix: a larger map resumes there.
    local big = script(dir, 2000, 'store = murmur.store("lmdb", { map_size = "64m" }),')
    local code, _, err = S.murmur_run({ "run", "--once", "--data", data, "--input", input, big })
    assert.are.equal(0, code, err)
    assert.are.equal(N, value(data, "total", "all"))
    for _, i in ipairs({ 0, 1, 2000, 29999 }) do assert.are.equal(1, value(data, "views", "p" .. i)) end
    print(("# diskfull: map_size 256k held %d of %d events; the restart with 64m recovered the rest"):format(committed, N))
  end)
end)
