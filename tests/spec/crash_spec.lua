-- Crash safety on the embedded store: `kill -9` at random points, many of
-- them while a flush is being written, followed by a restart each time, must
-- neither lose nor double-count an event.
--
-- 1. recently_interacted and page_views (copies with small flush limits, so
--    that most of the run time has a flush in flight) on a generated file,
--    run with --once and killed at seeded random instants until at least
--    MIN_KILLS kills landed; the final results equal exact answers computed
--    here (page_views for every page; recently_interacted's n, and its
--    Misra-Gries bounds against the true counts). The input also holds
--    malformed lines: each is dead-lettered at least once, and every line of
--    the dead-letter files is whole JSON.
-- 2. The same while following a file that a writer appends to and rotates
--    (rename, then a new file at the same path), murmur being killed and
--    restarted throughout.
-- 3. What the file source does not promise, asserted as documented: lines
--    appended to a file after the last checkpoint and rotated away while
--    murmur is down are not read (a restart reads the file now at the path
--    from its start).
--
-- Seeds: MURMUR_CRASH_SEED overrides the default; the seed is printed.
-- Under `make check` (an ASan build) the inputs and kill counts are smaller.
local S = require("spec.support")
local core = require("murmur.core")
local query = require("murmur.query")

local ASAN = S.build:find("asan", 1, true) ~= nil
local SEED = tonumber(os.getenv("MURMUR_CRASH_SEED") or "") or 20261122

-- Copies a shipped pipeline with its flush limits replaced.
local function copy_pipeline(name, dir, flush)
  local text = assert(S.read_file(S.root .. "/pipelines/" .. name .. ".lua"))
  local out, n = text:gsub("\n  window = ", "\n  flush = " .. flush .. ",\n  window = ", 1)
  assert(n == 1, "pipelines/" .. name .. ".lua has no window line to put flush limits before")
  local path = dir .. "/" .. name .. ".lua"
  S.write_file(path, out)
  return path
end

-- The stored result, or nil while there is none (no store, no pipeline or
-- no such entity yet).
local function result(data, pipeline, entity)
  local r, err, code = query.run(pipeline, entity, { data = { data } })
  if not r and (code == 4 or tostring(err):find("ENOTFOUND", 1, true)) then return nil end
  assert(r, err)
  return r.found and r.result or nil
end

local function value(data, pipeline, entity)
  local r = result(data, pipeline, entity)
  return r and r.value or 0
end

local function now_s()
  return core.now_ms() / 1000
end

-- Polls until the committed value of (pipeline, entity) is `want`; it must
-- never exceed it. Returns the seconds waited.
local function wait_committed(data, pipeline, entity, want, h, log)
  local t0 = now_s()
  local got
  repeat
    got = value(data, pipeline, entity)
    assert.is_true(got <= want, ("%s %s: %d committed, only %d written"):format(pipeline, entity, got, want))
    if got == want then return now_s() - t0 end
    if h then
      assert.is_nil(S.read_file(h.rcfile), "murmur exited: " .. (S.read_file(log) or ""):sub(-2000))
    end
    S.sleep(0.05)
  until now_s() - t0 > (ASAN and 120 or 60)
  error(("%s %s: %d committed after 60 s, want %d"):format(pipeline, entity, got, want))
end

-- SIGTERM is handled (flush, checkpoint, exit 0) once the engine runs; a
-- process still loading its scripts dies of it. Waits for the start-up log
-- line (the log is removed before each start), then a little more.
local function wait_running(log)
  for _ = 1, 200 do
    if (S.read_file(log) or ""):find("running %d+ pipeline") then break end
    S.sleep(0.05)
  end
  S.sleep(0.1)
end

describe("#crash kill -9", function()
  local dir

  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  it("at random points, during flushes too, loses and double-counts nothing (--once)", function()
    local N = ASAN and 300000 or 1000000
    local MIN_KILLS = ASAN and 8 or 20
    local K = 32
    local input = dir .. "/events.jsonl"
    S.gen_events(dir .. "/valid.jsonl", N, 5000, 1.1, SEED % 1000)
    -- One malformed line after every 5000th event: its dead letters must
    -- survive the kills too (at least once, every line whole).
    assert(S.exec(("awk '{ print } NR %% 5000 == 0 { print \"{junk \" NR }' %s > %s")
      :format(S.quote(dir .. "/valid.jsonl"), S.quote(input))) == 0)
    os.remove(dir .. "/valid.jsonl")
    local truth, pages, junk, offset, njunk = {}, {}, {}, 0, 0
    for line in io.lines(input) do
      local p = line:match('"page_id":"([^"]+)"')
      if p then
        if not truth[p] then pages[#pages + 1] = p end
        truth[p] = (truth[p] or 0) + 1
      else
        junk[offset] = true
        njunk = njunk + 1
      end
      offset = offset + #line + 1
    end
    assert.are.equal(N / 5000, njunk)
    local flush = "{ events = 5000 }"
    local scripts = copy_pipeline("page_views", dir, flush) .. " " .. copy_pipeline("recently_interacted", dir, flush)
    local data = dir .. "/data"
    local cmd = ("%s run --once --data %s --input %s %s"):format(S.murmur, data, input, scripts)
    local log = dir .. "/log"

    math.randomseed(SEED)
    print(("# crash: seed %d, %d events, at least %d kills"):format(SEED, N, MIN_KILLS))
    -- Kill delays are drawn from [lo, hi): from about start-up (10-30 ms)
    -- to at most HI, and shortened as the input runs low (from the
    -- committed progress per second so far) so that MIN_KILLS land before it
    -- ends. The floors are the host's start-up, not more: on a VM whose
    -- cores ran murmur at twice the speed of the last, delays of at least
    -- 30 ms (50 ms on average) let 600 000 events run out after 14 kills.
    local lo, HI = 0.015, 0.3
    local hi, ran = HI, 0
    local kills, committed, runs = 0, 0, 0
    while kills < MIN_KILLS do
      runs = runs + 1
      assert.is_true(runs <= MIN_KILLS * 3, "the input ran out before enough kills landed: use more events")
      local h = S.spawn(cmd, log)
      local delay = lo + math.random() * (hi - lo)
      S.sleep(("%.3f"):format(delay))
      ran = ran + delay
      S.kill(h, "KILL")
      local rc = S.wait_exit(h, 30)
      if rc == 0 then break end -- finished before the kill: nothing left to do
      assert.are.equal(128 + 9, rc, (S.read_file(log) or ""):sub(-2000))
      kills = kills + 1
      -- Committed progress is monotonic and never beyond the input.
      local top = result(data, "recently_interacted", "global")
      local n = top and top.n or 0
      assert.is_true(n >= committed and n <= N, ("committed n went from %d to %d"):format(committed, n))
      committed = n
      if committed > 0 then
        local per_run = (N - committed) / (MIN_KILLS - kills + 2)
        hi = math.max(lo + 0.015, math.min(HI, lo + per_run / (committed / ran)))
      end
    end
    assert.is_true(kills >= MIN_KILLS, ("only %d kills landed before the input was done"):format(kills))

    local t0 = now_s()
    local code, out, err = S.murmur_run({ "run", "--once", "--stats", "--data", data, "--input", input,
      dir .. "/page_views.lua", dir .. "/recently_interacted.lua" })
    local wall = now_s() - t0
    assert.are.equal(0, code, err:sub(-2000))
    local stats = core.json_decode(out)
    print(("# crash: %d kills in %d runs; %d of %d events were committed before the last restart; "
      .. "recovery run %.2f s, %d flushes, a flush in flight %.0f%% of its time")
      :format(kills, runs, committed, N, wall, stats.flushes, 100 * stats.flush_ms_total / 1000 / wall))

    local top = result(data, "recently_interacted", "global")
    assert.are.equal(N, top.n)
    assert.are.equal(K, top.k)
    assert.is_true(top.error <= N / (K + 1))
    local present = {}
    for _, it in ipairs(top.items) do
      local t = truth[it.item]
      present[it.item] = true
      assert.is_true(t ~= nil and it.lower <= t and t <= it.upper,
        ("%s: true count %s not in [%d, %d]"):format(it.item, tostring(t), it.lower, it.upper))
    end
    for p, t in pairs(truth) do
      if t > N / (K + 1) then assert.is_true(present[p], p .. " is above N/(K+1) but missing") end
    end
    for _, p in ipairs(pages) do
      assert.are.equal(truth[p], value(data, "page_views", p), "page_views " .. p)
    end
    local again = 0
    for _, name in ipairs({ "page_views", "recently_interacted" }) do
      local seen = {}
      for _, l in ipairs(S.lines(data .. "/dead-letter/" .. name .. ".jsonl")) do
        local e = core.json_decode(l)
        assert.is_table(e, name .. ": a dead-letter line that is not whole JSON: " .. l:sub(1, 100))
        assert.is_true(junk[e.offset], name .. ": a dead letter for a valid line at " .. tostring(e.offset))
        if seen[e.offset] then again = again + 1 end
        seen[e.offset] = true
      end
      for off in pairs(junk) do assert.is_true(seen[off], name .. ": no dead letter for the bad line at " .. off) end
    end
    print(("# crash: %d bad lines, each dead-lettered (%d written again after a kill)"):format(njunk, again))
  end)

  describe("while following a file that is appended to and rotated", function()
    local COUNT = [[
local murmur = require("murmur")
murmur.pipeline {
  name = "lines_total", key = murmur.literal("all"), monoid = murmur.count(),
  flush = { events = 500, interval = "100ms" },
}
]]

    local function start(cmd, log)
      os.remove(log)
      return S.spawn(cmd, log)
    end

    it("counts every line of every file exactly once across kills and rotations", function()
      -- Guarantee under test: the position (device, inode, offset) commits
      -- with the state, so a restart resumes exactly where the last commit
      -- left the file now at the path; a rotation noticed while running is
      -- followed (the old file is read to its end, then the new one from its
      -- start); a restart that finds another file at the path reads it from
      -- its start. Hence nothing is lost or counted twice as long as a file is
      -- not rotated away with lines that were never committed while murmur is
      -- down (test 3 shows what happens then). The writer respects that: it
      -- rotates only after murmur committed the whole file, and kills land
      -- anywhere else: mid-append, mid-flush, right after a rotation, and
      -- while murmur is down a rotation may happen.
      local NFILES, BATCHES, PER_BATCH = ASAN and 3 or 6, 6, ASAN and 500 or 2000
      local MIN_KILLS = ASAN and 6 or 20
      local path = dir .. "/in/events.jsonl"
      S.exec("mkdir -p " .. S.quote(dir .. "/in"))
      local scripts = copy_pipeline("page_views", dir, '{ events = 500, interval = "100ms" }')
      S.write_file(dir .. "/lines_total.lua", COUNT)
      local data, log = dir .. "/data", dir .. "/log"
      local cmd = ("%s run --follow --data %s --input %s %s %s"):format(S.murmur, data, path, scripts,
        dir .. "/lines_total.lua")
      math.randomseed(SEED + 1)
      print(("# crash/follow: seed %d, %d files of %d lines"):format(SEED + 1, NFILES, BATCHES * PER_BATCH))

      local truth, written, seq, kills, rotations_down = {}, 0, 0, 0, 0
      local function append_batch()
        local f = assert(io.open(path, "ab"))
        for c = 1, 4 do
          local parts = {}
          for _ = 1, PER_BATCH / 4 do
            seq = seq + 1
            local page = "p" .. math.random(1, 200)
            truth[page] = (truth[page] or 0) + 1
            parts[#parts + 1] = ('{"page_id":"%s","seq":%d}\n'):format(page, seq)
          end
          f:write(table.concat(parts))
          f:flush()
          written = written + PER_BATCH / 4
          if c < 4 then S.sleep(("%.3f"):format(math.random() * 0.02)) end
        end
        f:close()
      end
      local function kill(h)
        S.kill(h, "KILL")
        assert.are.equal(128 + 9, S.wait_exit(h, 30), (S.read_file(log) or ""):sub(-2000))
        kills = kills + 1
      end

      local h = start(cmd, log) -- before the file exists: the source waits for it
      local kill_p = MIN_KILLS / (NFILES * BATCHES) * 1.3
      for file = 1, NFILES do
        for _ = 1, BATCHES do
          append_batch()
          if math.random() < kill_p then
            S.sleep(("%.3f"):format(math.random() * 0.15))
            kill(h)
            if math.random() < 0.5 then append_batch() end -- the writer goes on while murmur is down
            h = start(cmd, log)
          end
        end
        -- Rotate once everything written to this file is committed.
        wait_committed(data, "lines_total", "all", written, h, log)
        local down = math.random() < 0.4
        if down then
          kill(h)
          rotations_down = rotations_down + 1
        end
        assert(os.rename(path, path .. "." .. file))
        if down then
          append_batch()
          h = start(cmd, log)
        end
      end
      -- Top up the kill count if the dice were stingy, then catch up.
      while kills < MIN_KILLS do
        append_batch()
        S.sleep(("%.3f"):format(math.random() * 0.15))
        kill(h)
        h = start(cmd, log)
      end
      local lag = wait_committed(data, "lines_total", "all", written, h, log)
      wait_running(log)
      S.kill(h, "TERM")
      assert.are.equal(0, S.wait_exit(h, 30), (S.read_file(log) or ""):sub(-2000))
      local nfiles = NFILES + (S.read_file(path) and 1 or 0)
      print(("# crash/follow: %d lines in %d files, %d kills (%d rotations while down), caught up %.2f s after the last write")
        :format(written, nfiles, kills, rotations_down, lag))

      assert.is_true(kills >= MIN_KILLS)
      assert.are.equal(written, value(data, "lines_total", "all"))
      for page, n in pairs(truth) do
        assert.are.equal(n, value(data, "page_views", page), "page_views " .. page)
      end
      assert.are.same({}, S.lines(data .. "/dead-letter/page_views.jsonl"))
    end)

    it("does not read lines rotated away unread while murmur was down (documented)", function()
      local path = dir .. "/events.jsonl"
      S.write_file(dir .. "/lines_total.lua", COUNT)
      local data, log = dir .. "/data", dir .. "/log"
      local cmd = ("%s run --follow --data %s --input %s %s"):format(S.murmur, data, path, dir .. "/lines_total.lua")
      local function lines(n, tag)
        local t = {}
        for i = 1, n do t[i] = ('{"tag":"%s","i":%d}\n'):format(tag, i) end
        return table.concat(t)
      end
      S.write_file(path, lines(1000, "a"))
      local h = start(cmd, log)
      wait_committed(data, "lines_total", "all", 1000, h, log)
      wait_running(log)
      S.kill(h, "TERM")
      assert.are.equal(0, S.wait_exit(h, 30))
      -- While murmur is down: 500 more lines, then rotation and a new file.
      local f = assert(io.open(path, "ab"))
      f:write(lines(500, "b"))
      f:close()
      assert(os.rename(path, path .. ".1"))
      S.write_file(path, lines(700, "c"))
      h = start(cmd, log)
      wait_committed(data, "lines_total", "all", 1700, h, log)
      S.sleep(0.3) -- nothing else arrives
      wait_running(log)
      S.kill(h, "TERM")
      assert.are.equal(0, S.wait_exit(h, 30))
      assert.are.equal(1000 + 700, value(data, "lines_total", "all"))
    end)
  end)
end)
