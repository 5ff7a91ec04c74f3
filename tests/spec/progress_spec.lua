-- A newcomer's first hour (issue 13): progress on long --once runs, rates in
-- `murmur status`, status of an instance that has exited or stopped writing,
-- warnings that point at the fix when a pipeline rejects most records, the
-- start-up line naming the input, --follow on a missing file, and a reload
-- error cleared by a later good reload.
local S = require("spec.support")
local core = require("murmur.core")

local dir, h

local function status() return S.status(dir .. "/d") end

local function wait_for(pred, seconds, what) return S.wait_status(dir .. "/d", pred, seconds, what) end

local function wait_log(pattern, seconds)
  for _ = 1, (seconds or 10) * 20 do
    local s = S.read_file(dir .. "/log") or ""
    if s:find(pattern) then return s end
    S.sleep(0.05)
  end
  error("timed out waiting for log line " .. pattern .. " in:\n" .. (S.read_file(dir .. "/log") or ""), 2)
end

local function count(s, pattern)
  local n = 0
  for _ in s:gmatch(pattern) do n = n + 1 end
  return n
end

-- Events with a page_id, `bad` of them without (at the start).
local function events(path, n, bad)
  local t = {}
  for i = 1, n do
    t[i] = i <= (bad or 0) and ('{"pgae_id":"p%d"}'):format(i % 7) or ('{"page_id":"p%d"}'):format(i % 7)
  end
  S.write_file(path, table.concat(t, "\n") .. "\n")
end

local PAGE_VIEWS = [[
local murmur = require("murmur")
murmur.pipeline { name = "page_views", key = "%s", monoid = murmur.sum {}, value = 1 }
]]

-- A pipeline slow enough (a Lua key function that spins ~50 us per record)
-- that a few MB take a couple of seconds.
local SLOW = [[
local murmur = require("murmur")
murmur.pipeline {
  name = "slow", monoid = murmur.count(),
  key = function(r) local t = os.clock() + 0.00005 while os.clock() < t do end return r.page_id end,
}
]]

local function start(args)
  local parts = { S.quote(S.murmur), "run", "--data", S.quote(dir .. "/d") }
  for _, a in ipairs(args) do parts[#parts + 1] = S.quote(a) end
  h = S.spawn(table.concat(parts, " "), dir .. "/log")
end

local function stop()
  S.kill(h, "TERM")
  local code = S.wait_exit(h, 15)
  h = nil
  return code
end

describe("#progress a newcomer's first hour", function()
  before_each(function() dir = S.tmpdir() end)
  after_each(function()
    if h then S.kill(h, "KILL") S.wait_exit(h, 5) h = nil end
    S.rm_rf(dir)
  end)

  describe("progress of --once", function()
    it("logs records, percent of the file, rates and ETA every interval", function()
      S.gen_events(dir .. "/ev.jsonl", 40000, 1000)
      S.write_file(dir .. "/slow.lua", SLOW)
      local code, _, err = S.murmur_run({ "run", "--once", "--progress", "200ms", "--data", dir .. "/d",
        "--input", dir .. "/ev.jsonl", dir .. "/slow.lua" })
      assert.are.equal(0, code, err)
      local lines = {}
      for l in err:gmatch("[^\n]*%[progress%][^\n]*") do lines[#lines + 1] = l end
      assert.is_true(#lines >= 2, err)
      local pct = tonumber(lines[1]:match("%((%d+%.%d)%%%)"))
      assert.is_not_nil(pct, lines[1])
      assert.is_true(pct < 100, lines[1])
      assert.matches("%d+ records, [%d.]+ [kMG]?B of [%d.]+ MB %(", lines[1])
      assert.matches("%d+ records/s, [%d.]+ MB/s, ETA %d+[sm]", lines[1])
    end)

    it("takes the interval from MURMUR_PROGRESS_INTERVAL, and 0 turns it off", function()
      S.gen_events(dir .. "/ev.jsonl", 30000, 1000)
      S.write_file(dir .. "/slow.lua", SLOW)
      local base = ("%s run --once --data %s --input %s %s"):format(S.quote(S.murmur), S.quote(dir .. "/d"),
        S.quote(dir .. "/ev.jsonl"), S.quote(dir .. "/slow.lua"))
      local code, _, err = S.exec("MURMUR_PROGRESS_INTERVAL=200ms " .. base)
      assert.are.equal(0, code, err)
      assert.matches("%[progress%] %d+ records", err)
      S.rm_rf(dir .. "/d")
      code, _, err = S.exec("MURMUR_PROGRESS_INTERVAL=0 " .. base)
      assert.are.equal(0, code, err)
      assert.is_nil(err:find("[progress]", 1, true), err)
      code, _, err = S.exec("MURMUR_PROGRESS_INTERVAL=soon " .. base)
      assert.are.equal(2, code)
      assert.matches("progress interval 'soon'", err)
    end)

    it("redraws one line in place on a terminal", function()
      if S.exec("command -v script") ~= 0 then pending("no script(1) to make a terminal") return end
      S.gen_events(dir .. "/ev.jsonl", 40000, 1000)
      S.write_file(dir .. "/slow.lua", SLOW)
      local cmd = ("%s run --once --progress 200ms --data %s --input %s %s"):format(S.murmur, dir .. "/d",
        dir .. "/ev.jsonl", dir .. "/slow.lua")
      local code, out = S.exec(("script -qefc %s /dev/null"):format(S.quote(cmd)))
      assert.are.equal(0, code, out)
      assert.matches("\r%d+ records, [^\n]*%%%), %d+ records/s", out)
      assert.is_nil(out:find("[progress]", 1, true), out)
      -- The redrawn line is ended before the summary lines.
      assert.matches("\n[^\r\n]*INFO  %[slow%] records 40000", out)
    end)

    it("is not reported periodically by a service; status shows rates instead", function()
      S.write_file(dir .. "/in.jsonl", "")
      S.write_file(dir .. "/pv.lua", PAGE_VIEWS:format("page_id"))
      start({ "--follow", "--progress", "200ms", "--input", dir .. "/in.jsonl", dir .. "/pv.lua" })
      wait_for(function(st) return st.engine ~= nil end, 10, "start-up")
      S.write_file(dir .. "/writer.sh", ("for i in $(seq 1 30); do for j in $(seq 1 100); do echo '{\"page_id\":\"p\"}'; done >> %s; sleep 0.05; done\n")
        :format(S.quote(dir .. "/in.jsonl")))
      local writer = S.spawn("sh " .. S.quote(dir .. "/writer.sh"))
      local st = wait_for(function(s)
        return s.rates and s.rates.pipelines.page_views and s.rates.pipelines.page_views.records_per_s > 0
      end, 10, "a rate")
      local id = next(st.rates.sources)
      assert.matches("^file:", id)
      assert.is_true(st.rates.sources[id].records_per_s > 0)
      assert.is_true(st.rates.sources[id].bytes_per_s > 0)
      assert.is_true(st.rates.interval_s > 0.4 and st.rates.interval_s < 5, tostring(st.rates.interval_s))
      local code, out = S.murmur_run({ "status", "--data", dir .. "/d" })
      assert.are.equal(0, code, out)
      assert.matches("pipeline page_views: %d+ records, [^\n]*, %d+ records/s", out)
      assert.matches("source file:[^\n]*, %d+ records/s, [%d.]+ MB/s", out)
      assert.are.equal(0, S.wait_exit(writer, 20))
      assert.are.equal(0, stop())
      assert.is_nil((S.read_file(dir .. "/log")):find("[progress]", 1, true))
    end)
  end)

  describe("murmur status", function()
    it("says an exited instance is not running and exits 1", function()
      events(dir .. "/in.jsonl", 10)
      S.write_file(dir .. "/pv.lua", PAGE_VIEWS:format("page_id"))
      local code, _, err = S.murmur_run({ "run", "--once", "--data", dir .. "/d", "--input", dir .. "/in.jsonl",
        dir .. "/pv.lua" })
      assert.are.equal(0, code, err)
      local st = status()
      local out
      code, out = S.murmur_run({ "status", "--data", dir .. "/d" })
      assert.are.equal(1, code)
      local first = out:match("^[^\n]*")
      assert.are.equal(("not running: murmur pid %d exited; last status written at %s"):format(st.pid, st.updated), first)
      assert.matches("\npipeline page_views: 10 records, 10 accepted", out)
      local jcode, jout, jerr = S.murmur_run({ "status", "--json", "--data", dir .. "/d" })
      assert.are.equal(1, jcode)
      assert.are.equal(st.pid, core.json_decode(jout).pid)
      assert.matches("not running: murmur pid", jerr)
    end)

    it("says a status file no longer rewritten by a live process is stale", function()
      S.exec("mkdir -p " .. S.quote(dir .. "/d"))
      -- This process is a live murmur (the spec runs inside the binary).
      S.write_file(dir .. "/d/status.json", core.json_encode({
        pid = core.getpid(), started = "2020-01-01T00:00:00.000Z",
        updated = core.format_time(core.now_ms() - 60000), engine = { pipelines = {}, sources = {} },
      }))
      local code, out = S.murmur_run({ "status", "--data", dir .. "/d" })
      assert.are.equal(0, code, out)
      assert.matches("^stale: murmur pid %d+ is alive but last wrote its status at [^\n]*, 60 s ago", out)
      S.write_file(dir .. "/d/status.json", core.json_encode({
        pid = core.getpid(), updated = core.format_time(core.now_ms()), engine = { pipelines = {}, sources = {} },
      }))
      code, out = S.murmur_run({ "status", "--data", dir .. "/d" })
      assert.are.equal(0, code, out)
      assert.matches("^murmur pid ", out)
    end)
  end)

  describe("rejection warnings", function()
    it("name the pipeline, share, reason, latest error, dead-letter file and a hint (the key typo)", function()
      events(dir .. "/in.jsonl", 20)
      S.write_file(dir .. "/pv.lua", PAGE_VIEWS:format("pgae_id"))
      local code, _, err = S.murmur_run({ "run", "--once", "--data", dir .. "/d", "--input", dir .. "/in.jsonl",
        dir .. "/pv.lua" })
      assert.are.equal(0, code, err)
      assert.are.equal(1, count(err, "WARN  %[page_views%]"), err)
      local warn = err:match("WARN  %[page_views%] ([^\n]*)")
      assert.matches("rejected 20 of 20 records %(100%%%), all for missing_field", warn)
      assert.matches("latest error: missing key field 'pgae_id'", warn)
      assert.matches("dead letters in [^;]*d/dead%-letter/page_views%.jsonl", warn)
      assert.matches("hint: check the field names in the script", warn)
      assert.matches("INFO  %[page_views%] records 20, accepted 0, duplicates 0, rejected 20, deltas flushed 0; the 20 rejected are in [^\n]*dead%-letter/page_views%.jsonl", err)
    end)

    it("warn when most of at least 100 records are rejected, not for a few", function()
      events(dir .. "/in.jsonl", 200, 150)
      S.write_file(dir .. "/pv.lua", PAGE_VIEWS:format("page_id"))
      local code, _, err = S.murmur_run({ "run", "--once", "--data", dir .. "/d", "--input", dir .. "/in.jsonl",
        dir .. "/pv.lua" })
      assert.are.equal(0, code, err)
      assert.matches("WARN  %[page_views%] rejected 150 of 200 records %(75%%%), all for missing_field", err)
      events(dir .. "/few.jsonl", 200, 10)
      code, _, err = S.murmur_run({ "run", "--once", "--data", dir .. "/d2", "--input", dir .. "/few.jsonl",
        dir .. "/pv.lua" })
      assert.are.equal(0, code, err)
      assert.is_nil(err:find("WARN", 1, true), err)
      assert.matches("rejected 10, deltas flushed %d+; the 10 rejected are in", err)
    end)

    it("are logged once by a running service, not per batch", function()
      S.write_file(dir .. "/in.jsonl", "")
      S.write_file(dir .. "/pv.lua", PAGE_VIEWS:format("pgae_id"))
      start({ "--follow", "--input", dir .. "/in.jsonl", dir .. "/pv.lua" })
      wait_for(function(st) return st.engine ~= nil end, 10, "start-up")
      events(dir .. "/batch.jsonl", 300)
      S.exec(("cat %s >> %s"):format(S.quote(dir .. "/batch.jsonl"), S.quote(dir .. "/in.jsonl")))
      local log = wait_log("WARN  %[page_views%]", 10)
      assert.matches("latest error: missing key field 'pgae_id'", log)
      S.exec(("cat %s >> %s"):format(S.quote(dir .. "/batch.jsonl"), S.quote(dir .. "/in.jsonl")))
      wait_for(function(st) return st.engine.records == 600 end, 10, "600 records")
      S.sleep(2.2)
      assert.are.equal(0, stop())
      assert.are.equal(1, count(S.read_file(dir .. "/log"), "WARN  %[page_views%]"))
    end)
  end)

  describe("start-up", function()
    it("names the input file and its size, or stdin", function()
      events(dir .. "/in.jsonl", 10)
      S.write_file(dir .. "/pv.lua", PAGE_VIEWS:format("page_id"))
      local size = #S.read_file(dir .. "/in.jsonl")
      local code, _, err = S.exec(("cd %s && %s run --once --data d --input in.jsonl pv.lua"):format(S.quote(dir),
        S.quote(S.murmur)))
      assert.are.equal(0, code, err)
      assert.are.equal(1, count(err, "INFO  %[engine%] reading "), err)
      assert.matches("INFO  %[engine%] reading file in%.jsonl %(" .. size .. " B%)", err)
      code, _, err = S.murmur_run({ "run", "--once", "--data", dir .. "/d2", dir .. "/pv.lua" }, dir .. "/in.jsonl")
      assert.are.equal(0, code, err)
      assert.matches("INFO  %[engine%] reading stdin\n", err)
    end)

    it("names the Kafka topic and brokers", function()
      S.write_file(dir .. "/pv.lua", PAGE_VIEWS:format("page_id"))
      start({ "--no-supervisor", "--kafka-brokers", "127.0.0.1:1", "--kafka-topic", "views", dir .. "/pv.lua" })
      wait_log("reading Kafka topic views from brokers 127%.0%.0%.1:1", 10)
      stop()
    end)

    it("says --follow waits for a file that does not exist yet, and when it appears", function()
      S.write_file(dir .. "/pv.lua", PAGE_VIEWS:format("page_id"))
      start({ "--follow", "--input", dir .. "/later.jsonl", dir .. "/pv.lua" })
      wait_log("waiting for file [^\n]*later%.jsonl to appear %(%-%-follow%)", 10)
      events(dir .. "/later.jsonl", 5)
      wait_for(function(st) return st.engine and st.engine.records == 5 end, 10, "5 records")
      wait_log("file [^\n]*later%.jsonl appeared; reading it", 10)
      assert.are.equal(0, stop())
    end)
  end)

  describe("reload errors", function()
    it("are shown as fixed once a later reload succeeds", function()
      S.write_file(dir .. "/in.jsonl", "")
      local p = dir .. "/pv.lua"
      S.write_file(p, PAGE_VIEWS:format("page_id"))
      start({ "--follow", "--input", dir .. "/in.jsonl", p })
      wait_for(function(st) return st.engine ~= nil end, 10, "start-up")
      S.write_file(p, "local murmur = require('murmur')\nmurmur.pipeline { name = = 'broken' }\n")
      local st = wait_for(function(s) return s.reload.failed == 1 end, 10, "the refused reload")
      assert.matches("pv.lua:2:", st.reload.last_error)
      S.write_file(p, PAGE_VIEWS:format("page_id") .. "-- edited\n")
      st = wait_for(function(s) return s.reload.ok == 1 end, 10, "the good reload")
      assert.is_nil(st.reload.last_error)
      assert.matches("pv.lua:2:", st.reload.previous_error)
      local code, out = S.murmur_run({ "status", "--data", dir .. "/d" })
      assert.are.equal(0, code, out)
      assert.is_nil(out:find("last reload error", 1, true), out)
      assert.matches("previous reload error, fixed by the reload at %d%d%d%d%-[^:]*:%d+:[%d.]+Z: [^\n]*pv%.lua:2:", out)
      assert.are.equal(0, stop())
    end)
  end)
end)
