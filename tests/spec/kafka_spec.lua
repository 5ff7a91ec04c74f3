-- The Kafka source and dead-letter topic against a real broker process:
-- librdkafka's mock cluster started by build/helpers/kafka_mock on
-- 127.0.0.1, fed by kcat (an independent client). murmur workers run as
-- separate processes (--no-supervisor, so kill -9 hits the worker itself)
-- and every answer is compared with exact counts computed here from the
-- produced files.
--
-- The mock keeps only the last 5 MB of each partition, so the 1M-event topic
-- is produced zstd-compressed and keyed (about 2 MB per partition) and the
-- others are small. KAFKA_SPEC_KEEP=1 keeps the temporary directory (worker
-- logs, stores, status files) for a post-mortem.
local S = require("spec.support")
local core = require("murmur.core")

-- librdkafka's mock cluster (2.0.2) holds a rebalance of a group that has
-- members for the session timeout less 1 s before it answers the joins, and
-- a member killed with kill -9 leaves once its session times out: at 3 s
-- instead of 6 s every rebalance and takeover here waits 3 s less.
-- Heartbeats (every 500 ms, from librdkafka's own thread) keep a live
-- member well inside it.
local TIMEOUTS = { "-X", "session.timeout.ms=3000", "-X", "heartbeat.interval.ms=500",
  "-X", "max.poll.interval.ms=10000" }

-- The records of the kill -9 and rejoin cases. Under `make check` (a
-- sanitized build, several times slower per record) a fifth of them take
-- the same paths: the rebalances and the takeover wait as long either way.
local ASAN = S.build:find("asan", 1, true) ~= nil
local MID = ASAN and 60000 or 300000

local dir, mock
local workers = {} -- spawned and not yet stopped, killed after each spec

-- ---- the broker ----------------------------------------------------------

local status_of -- defined below; named in timeout messages

local function wait_for(what, seconds, pred, datas)
  return S.wait_for(what, seconds, pred, function()
    local diag = {}
    for _, d in ipairs(datas or {}) do diag[#diag + 1] = d .. ": " .. core.json_encode(status_of(d) or {}) end
    return table.concat(diag, "\n")
  end)
end

local function mock_start(nbrokers)
  return S.kafka_mock_start(dir, nbrokers)
end

local function mock_cmd(cmd)
  S.kafka_mock_cmd(mock, cmd)
end

local function mock_stop()
  if not mock then return end
  S.kafka_mock_stop(mock)
  mock = nil
end

-- Produces a JSON Lines file to a topic with kcat, zstd-compressed, keyed
-- by line number so the partitions fill evenly (unkeyed batches go to one
-- partition at a time, and an overfull one loses its oldest records in the
-- mock).
local function produce(topic, file)
  local code, _, err = S.exec(("awk '{print NR \"\\t\" $0}' %s | kcat -P -b %s -t %s -K '\\t' "
    .. "-X compression.codec=zstd -X linger.ms=20"):format(S.quote(file), mock.bs, topic))
  assert.are.equal(0, code, err)
end

-- The topic holds all n records, from offset 0 (the mock dropped nothing).
local function assert_retained(topic, nparts, n)
  local function offsets(ts) -- -2: beginning, -1: end (kcat takes each partition once)
    local q = {}
    for p = 0, nparts - 1 do q[#q + 1] = ("-t %s:%d:%d"):format(topic, p, ts) end
    local code, out, err = S.exec(("kcat -Q -b %s %s"):format(mock.bs, table.concat(q, " ")))
    assert.are.equal(0, code, err)
    local sum, lines = 0, 0
    for off in out:gmatch("offset (%d+)") do
      sum, lines = sum + tonumber(off), lines + 1
    end
    assert.are.equal(nparts, lines, out)
    return sum
  end
  assert.are.equal(0, offsets(-2))
  assert.are.equal(n, offsets(-1))
end

-- ---- inputs and exact answers ----------------------------------------------

-- Generates n events (gen_events, seed) into path, and counts them per page.
local function events(path, n, seed)
  S.gen_events(path, n, 100000, 1.1, seed)
  local pages, total = {}, 0
  for line in io.lines(path) do
    local p = line:match('"page_id":"([^"]+)"')
    pages[p] = (pages[p] or 0) + 1
    total = total + 1
  end
  local ranked = {}
  for p, c in pairs(pages) do ranked[#ranked + 1] = { item = p, count = c } end
  table.sort(ranked, function(a, b) return a.count > b.count or (a.count == b.count and a.item < b.item) end)
  return { path = path, n = total, pages = pages, ranked = ranked }
end

-- Splits an events file into k files of consecutive lines.
local function split(ev, k)
  local files, outs, i = {}, {}, 0
  for j = 1, k do
    files[j] = ("%s.%d"):format(ev.path, j)
    outs[j] = assert(io.open(files[j], "wb"))
  end
  local per = math.ceil(ev.n / k)
  for line in io.lines(ev.path) do
    outs[math.floor(i / per) + 1]:write(line, "\n")
    i = i + 1
  end
  for j = 1, k do outs[j]:close() end
  return files
end

-- A script with two exact counters (all-time): every event, and per page.
local function count_script(extra)
  local path = dir .. "/counts.lua"
  S.write_file(path, ([[
local murmur = require("murmur")
murmur.pipeline { name = "k_total", key = murmur.literal("all"), monoid = murmur.count(),
  flush = { events = 20000, interval = "500ms" } %s }
murmur.pipeline { name = "k_pages", key = "page_id", monoid = murmur.count(),
  flush = { events = 20000, interval = "500ms" } }
]]):format(extra or ""))
  return path
end

-- ---- workers ---------------------------------------------------------------

local function worker_args(data, topic, group, scripts, extra)
  local args = { "run", "--no-supervisor", "--data", data, "--kafka-brokers", mock.bs,
    "--kafka-topic", topic, "--kafka-group", group }
  for _, a in ipairs(TIMEOUTS) do args[#args + 1] = a end
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  for _, s in ipairs(scripts) do args[#args + 1] = s end
  return args
end

-- Starts a long-running worker; returns its handle (pid, log).
local function start_worker(data, topic, group, scripts, extra, env)
  local parts = { S.quote(S.murmur) }
  for _, a in ipairs(worker_args(data, topic, group, scripts, extra)) do parts[#parts + 1] = S.quote(a) end
  local cmd = table.concat(parts, " ")
  if env then cmd = "env " .. env .. " " .. cmd end
  local log = data .. ".log." .. tostring(os.time()) .. math.random(1000000)
  local h = S.spawn(cmd, log)
  h.log, h.data = log, data
  workers[h] = true
  return h
end

-- A graceful stop (TERM) waits for the worker to catch it first: a worker
-- restarted a moment ago may not have reached main yet.
local function stop_worker(h, sig)
  if not sig then S.wait_catching(h, 15, 30) end
  S.kill(h, sig or "TERM")
  local code = S.wait_exit(h, 60)
  workers[h] = nil
  assert.is_not_nil(code, "worker did not exit: " .. (S.read_file(h.log) or ""))
  return code
end

-- The Kafka source's status (status.json, rewritten every second), or nil.
local function kafka_status(data)
  local s = S.read_file(data .. "/status.json")
  local st = s and core.json_decode(s)
  if not st or not st.engine or not st.engine.sources then return nil end
  for id, src in pairs(st.engine.sources) do
    if id:match("^kafka:") and src.status then return src.status end
  end
end
status_of = kafka_status

-- True when the workers' assigned partitions together were read up to
-- `total` records and every one of them is committed there.
local function caught_up(datas, total)
  local sum = 0
  for _, d in ipairs(datas) do
    local st = kafka_status(d)
    if not st then return false end
    for _, p in ipairs(st.partitions) do
      if p.state == "assigned" then
        if p.lag ~= 0 then return false end
        -- Position -1: nothing read since the assignment, an empty partition.
        if p.position >= 0 then
          if p.committed ~= p.position then return false end
          sum = sum + p.position
        end
      end
    end
  end
  return sum == total
end

-- True when the worker in data has read a record (kcat's partitioner fills
-- some partitions and leaves others empty).
local function reads(data)
  local st = kafka_status(data)
  for _, p in ipairs(st and st.partitions or {}) do if p.records > 0 then return true end end
  return false
end

-- True when two workers own all 6 partitions between them, both some.
local function split_between(d1, d2)
  local n = {}
  for i, d in ipairs({ d1, d2 }) do
    local st = kafka_status(d)
    n[i] = 0
    for _, p in ipairs(st and st.partitions or {}) do if p.state == "assigned" then n[i] = n[i] + 1 end end
  end
  return n[1] > 0 and n[2] > 0 and n[1] + n[2] == 6
end

local function query(args)
  local full = { "query" }
  for _, a in ipairs(args) do full[#full + 1] = a end
  full[#full + 1] = "--json"
  local code, out, err = S.murmur_run(full)
  assert.are.equal(0, code, err)
  return core.json_decode(out).result
end

-- Total and a few pages' counts, merged over the workers' stores.
local function counts(datas, ev)
  local data_args = {}
  for _, d in ipairs(datas) do
    data_args[#data_args + 1] = "--data"
    data_args[#data_args + 1] = d
  end
  local function q(pipeline, entity)
    local a = { pipeline, entity }
    for _, x in ipairs(data_args) do a[#a + 1] = x end
    return query(a).value
  end
  local pages = {}
  for _, i in ipairs({ 1, 2, 3, 10, 100, 1000 }) do
    local p = ev.ranked[i].item
    pages[#pages + 1] = { page = p, got = q("k_pages", p), want = ev.pages[p] }
  end
  return q("k_total", "all"), pages
end

local function assert_exact(datas, ev)
  local total, pages = counts(datas, ev)
  assert.are.equal(ev.n, total)
  for _, p in ipairs(pages) do assert.are.equal(p.want, p.got, p.page) end
end

-- ---- specs -----------------------------------------------------------------

-- A failed spec leaves its workers running: stop them before the next.
local function kill_workers()
  for h in pairs(workers) do
    S.kill(h, "KILL")
    S.wait_exit(h, 5)
  end
  workers = {}
end

local function finish()
  mock_stop()
  if os.getenv("KAFKA_SPEC_KEEP") then print("# kept " .. dir) else S.rm_rf(dir) end
end

describe("#kafka source", function()
  local big

  setup(function()
    dir = S.tmpdir()
    mock = mock_start(3)
    mock_cmd("topic events 6")
    big = events(dir .. "/events.jsonl", 1000000, 7)
    produce("events", big.path)
    assert_retained("events", 6, big.n)
  end)

  after_each(kill_workers)
  teardown(finish)

  it("reads 1M events with one worker: exact Top-K bounds and page_views sums", function()
    local data = dir .. "/one"
    local code, _, err = S.murmur_run(worker_args(data, "events", "one", {
      "pipelines/recently_interacted.lua", "pipelines/page_views.lua" }, { "--once" }))
    assert.are.equal(0, code, err)
    local N, K = big.n, 32
    local res = query({ "pipelines/recently_interacted.lua", "global", "--window", "1d", "--data", data })
    assert.are.equal(N, res.n)
    assert.is_true(res.error <= N / (K + 1))
    for i = 1, 10 do
      local item, truth = res.items[i], big.ranked[i].count
      assert.are.equal(big.ranked[i].item, item.item, "rank " .. i)
      assert.is_true(item.lower <= truth and truth <= item.upper,
        ("%s: %d not in [%d, %d]"):format(item.item, truth, item.lower, item.upper))
    end
    for _, i in ipairs({ 1, 2, 3, 10, 100, 1000 }) do
      local p = big.ranked[i]
      assert.are.equal(p.count, query({ "page_views", p.item, "--data", data }).value, p.item)
    end
    -- The worker committed every partition at its end before leaving: a
    -- kcat consumer in the same group finds nothing left to read.
    local kcode, out, kerr = S.exec(("kcat -b %s -G one -e -q -f '%%p %%o\\n' -X session.timeout.ms=3000 events")
      :format(mock.bs))
    assert.are.equal(0, kcode, kerr)
    assert.are.equal("", out)
  end)

  it("resumes a single worker killed with kill -9 from its store: exact", function()
    local ev = events(dir .. "/b.jsonl", MID, 11)
    local chunks = split(ev, 6)
    mock_cmd("topic b 6")
    local data, script = dir .. "/b", count_script()
    local w = start_worker(data, "b", "gb", { script })
    produce("b", chunks[1])
    wait_for("the worker to read", 60, function() return reads(data) end)
    -- Killed while records keep coming.
    produce("b", chunks[2])
    produce("b", chunks[3])
    stop_worker(w, "KILL")
    for i = 4, 6 do produce("b", chunks[i]) end
    local code, _, err = S.murmur_run(worker_args(data, "b", "gb", { script }, { "--once" }))
    assert.are.equal(0, code, err)
    -- Each partition resumes from its own position in the store.
    assert.is_truthy(err:find("%(this store: %d"), err)
    assert_exact({ data }, ev)
  end)

  -- librdkafka's mock cluster refuses commits while a group is joining
  -- (Apache Kafka accepts them), and a worker revoking partitions for a
  -- newcomer commits just as the newcomer rejoins for its second round. So
  -- the specs let a worker join while the stream is idle and everything read
  -- is committed; leaving, and the records flowing around it, need no care.
  it("keeps merged results exact when one of two workers leaves cleanly and rejoins", function()
    local ev = events(dir .. "/c.jsonl", MID, 13)
    local chunks, per = split(ev, 6), ev.n / 6
    mock_cmd("topic c 6")
    local d1, d2, script = dir .. "/c1", dir .. "/c2", count_script()
    local w1 = start_worker(d1, "c", "gc", { script })
    local w2 = start_worker(d2, "c", "gc", { script })
    wait_for("both workers to be assigned", 60, function() return split_between(d1, d2) end)
    produce("c", chunks[1])
    produce("c", chunks[2])
    wait_for("both workers to read", 60, function() return reads(d1) and reads(d2) end)
    -- Leave while records keep coming.
    S.kill(w2, "TERM")
    produce("c", chunks[3])
    assert.are.equal(0, stop_worker(w2))
    produce("c", chunks[4])
    wait_for("the remaining worker to catch up", 90, function() return caught_up({ d1 }, 4 * per) end, { d1 })
    w2 = start_worker(d2, "c", "gc", { script })
    wait_for("the worker to rejoin", 60, function() return split_between(d1, d2) end)
    produce("c", chunks[5])
    produce("c", chunks[6])
    wait_for("both workers to catch up", 90, function() return caught_up({ d1, d2 }, ev.n) end, { d1, d2 })
    assert.are.equal(0, stop_worker(w1))
    assert.are.equal(0, stop_worker(w2))
    assert_exact({ d1, d2 }, ev)
  end)

  it("loses nothing when one of two workers is killed with kill -9 and restarted", function()
    local ev = events(dir .. "/d.jsonl", MID, 17)
    local chunks, per = split(ev, 6), ev.n / 6
    mock_cmd("topic d 6")
    local d1, d2, script = dir .. "/d1", dir .. "/d2", count_script()
    local w1 = start_worker(d1, "d", "gd", { script })
    local w2 = start_worker(d2, "d", "gd", { script })
    wait_for("both workers to be assigned", 60, function() return split_between(d1, d2) end)
    produce("d", chunks[1])
    produce("d", chunks[2])
    produce("d", chunks[3])
    -- Killed while it reads chunk 3.
    stop_worker(w2, "KILL")
    -- The survivor takes the dead worker's partitions over from their last
    -- committed offsets once its session times out.
    wait_for("the survivor to own every partition", 60, function()
      local st, n = kafka_status(d1), 0
      for _, p in ipairs(st and st.partitions or {}) do if p.state == "assigned" then n = n + 1 end end
      return n == 6
    end, { d1 })
    produce("d", chunks[4])
    wait_for("the survivor to catch up", 90, function() return caught_up({ d1 }, 4 * per) end, { d1 })
    w2 = start_worker(d2, "d", "gd", { script })
    wait_for("the worker to rejoin", 60, function() return split_between(d1, d2) end)
    produce("d", chunks[5])
    produce("d", chunks[6])
    wait_for("both workers to catch up", 120, function() return caught_up({ d1, d2 }, ev.n) end, { d1, d2 })
    assert.are.equal(0, stop_worker(w1))
    assert.are.equal(0, stop_worker(w2))
    local total, pages = counts({ d1, d2 }, ev)
    -- At-least-once: what the killed worker made durable after its last
    -- successful commit is counted again by its partitions' next owner. That
    -- is usually nothing or one flush (auto-commit every 200 ms), but commits
    -- that lag or are refused widen it (62 000 seen): the hard bound is what
    -- the killed worker can have been delivered, the three chunks produced
    -- before the kill. The shared store with dedup removes the excess
    -- entirely (the #dynamodb spec below).
    local bound = 3 * per
    print(("# kafka kill -9 of one of two workers: %d records counted for %d produced, excess %d (bound %d)")
      :format(total, ev.n, total - ev.n, bound))
    assert.is_true(total >= ev.n, "records lost")
    assert.is_true(total - ev.n <= bound)
    for _, p in ipairs(pages) do assert.is_true(p.got >= p.want, p.page) end
  end)

  it("recovers from fetch and commit errors and a coordinator move: exact", function()
    local ev = events(dir .. "/e.jsonl", 200000, 19)
    local chunks = split(ev, 4)
    mock_cmd("topic e 6")
    mock_cmd("coordinator group ge 1")
    -- The committed-offset fetch on assignment fails twice first.
    mock_cmd("errors OffsetFetch NOT_COORDINATOR COORDINATOR_LOAD_IN_PROGRESS")
    local data, script = dir .. "/e", count_script()
    local w = start_worker(data, "e", "ge", { script })
    produce("e", chunks[1])
    wait_for("the worker to read", 60, function() return reads(data) end)
    mock_cmd("errors Fetch NOT_LEADER_FOR_PARTITION _TRANSPORT UNKNOWN_TOPIC_OR_PART _TRANSPORT")
    produce("e", chunks[2])
    -- The first commit fails for good and reaches the source, which retries
    -- it with the next auto-commit; librdkafka retries the coordinator errors
    -- after it itself. The permanent error comes first because the mock
    -- closes the connection on _TRANSPORT after reading any request queued
    -- behind it: an error popped by such a request is lost with its answer.
    mock_cmd("errors OffsetCommit OFFSET_METADATA_TOO_LARGE NOT_COORDINATOR REQUEST_TIMED_OUT _TRANSPORT")
    -- In pieces, so that enough flushes (and commits) meet the errors.
    for _, piece in ipairs(split({ path = chunks[3], n = 50000 }, 5)) do
      produce("e", piece)
      S.sleep(0.7)
    end
    mock_cmd("coordinator group ge 2")
    produce("e", chunks[4])
    wait_for("the worker to catch up", 90, function() return caught_up({ data }, ev.n) end, { data })
    -- Commits overlap: a newer one can succeed (and the partitions read as
    -- caught up) while an older one still waits out its retries for the
    -- error that fails it, so the failure may arrive after the catch-up.
    S.wait_for("a commit failure to reach the source", 20, function()
      local st = kafka_status(data)
      return st and st.commit_failures > 0
    end, function()
      local lines = {}
      for l in (S.read_file(w.log) or ""):gmatch("[^\n]*%[kafka%][^\n]*") do lines[#lines + 1] = l end
      return core.json_encode(kafka_status(data) or {}) .. "\n" .. table.concat(lines, "\n", math.max(1, #lines - 40))
    end)
    assert.are.equal(0, stop_worker(w))
    assert.is_truthy(S.read_file(w.log):find("commit failed", 1, true))
    assert_exact({ data }, ev)
  end)

  it("sends poison records to a dead-letter topic with their origin in headers", function()
    mock_cmd("topic f 2")
    mock_cmd("topic f_dlq 1")
    local good = {}
    for i = 1, 50 do good[#good + 1] = ('{"page_id":"p%d"}'):format(i % 5) end
    local bad = { "not json", '{"page_id": true}', '{"page_id":"x"', '[1,2]' }
    local lines = {}
    for i, l in ipairs(good) do
      lines[#lines + 1] = l
      if i % 12 == 0 then lines[#lines + 1] = bad[i / 12] end
    end
    local input = dir .. "/f.jsonl"
    S.write_file(input, table.concat(lines, "\n") .. "\n")
    produce("f", input)
    -- The source is the script's own; only the brokers come from the flags.
    local script = dir .. "/dlq.lua"
    S.write_file(script, [[
local murmur = require("murmur")
murmur.pipeline { name = "f_pages", key = "page_id", monoid = murmur.count(),
  source = murmur.kafka { topic = "f", group = "gf", brokers = "127.0.0.1:1" },
  dead_letter = murmur.kafka_topic { topic = "f_dlq" } }
]])
    local data = dir .. "/f"
    local args = { "run", "--no-supervisor", "--once", "--data", data, "--kafka-brokers", mock.bs }
    for _, a in ipairs(TIMEOUTS) do args[#args + 1] = a end
    args[#args + 1] = script
    local code, _, err = S.murmur_run(args)
    assert.are.equal(0, code, err)
    assert.are.equal(10, query({ "f_pages", "p1", "--data", data }).value)
    -- Read the dead-letter topic back with kcat, one JSON envelope a line.
    local kcode, out, kerr = S.exec(("kcat -C -b %s -t f_dlq -e -q -J"):format(mock.bs))
    assert.are.equal(0, kcode, kerr)
    local got, n = {}, 0
    for line in out:gmatch("[^\n]+") do
      local m, h = core.json_decode(line), {}
      -- kcat lists headers as name, value, name, value...
      for i = 1, #m.headers, 2 do h[m.headers[i]] = m.headers[i + 1] end
      got[m.payload] = { key = m.key, h = h }
      n = n + 1
    end
    assert.are.equal(#bad, n)
    for _, b in ipairs(bad) do
      local g = got[b]
      assert.is_not_nil(g, "missing dead letter for " .. b)
      assert.are.equal("f_pages", g.h["murmur.pipeline"])
      assert.are.equal("f", g.h["murmur.source.topic"])
      assert.is_truthy(tonumber(g.h["murmur.source.partition"]))
      assert.is_truthy(tonumber(g.h["murmur.source.offset"]))
      assert.are.equal(("f:%s:%s"):format(g.h["murmur.source.partition"], g.h["murmur.source.offset"]), g.key)
      assert.is_truthy(g.h["murmur.reason"])
      assert.is_truthy(g.h["murmur.error"])
    end
    assert.are.equal("json", got["not json"].h["murmur.reason"])
    assert.are.equal("wrong_type", got['{"page_id": true}'].h["murmur.reason"])
    assert.are.equal("not_object", got["[1,2]"].h["murmur.reason"])
    -- The record itself is at that offset of the source topic.
    local g = got["not json"]
    local _, rec = S.exec(("kcat -C -b %s -t f -p %s -o %s -c 1 -e -q -f '%%s'"):format(mock.bs,
      g.h["murmur.source.partition"], g.h["murmur.source.offset"]))
    assert.are.equal("not json", rec)
  end)

  it("pauses its partitions while the store fails, then resumes: exact", function()
    local ev = events(dir .. "/g.jsonl", 200000, 23)
    mock_cmd("topic g 6")
    produce("g", ev.path)
    local data, script = dir .. "/g", count_script()
    -- Five failed flushes: about 3 s of retries (100 ms doubling), longer
    -- than pause_after (1 s), so the partitions are paused in librdkafka.
    local code, _, err = S.exec(("env MURMUR_ERRINJ_STORE_APPLY=5 %s"):format(table.concat((function()
      local q = { S.quote(S.murmur) }
      for _, a in ipairs(worker_args(data, "g", "gg", { script }, { "--once" })) do q[#q + 1] = S.quote(a) end
      return q
    end)(), " ")))
    assert.are.equal(0, code, err)
    assert.is_truthy(err:find("injected failure", 1, true))
    assert.is_truthy(err:find("pausing 6 partition(s)", 1, true))
    assert_exact({ data }, ev)
  end)

  it("leaves a group cleanly before its first cooperative-sticky assignment (librdkafka 2.0.2 #4312)", function()
    mock_cmd("topic h 2")
    mock_cmd("coordinator group gh 1")
    local d1, d2, script = dir .. "/h1", dir .. "/h2", count_script()
    local w1 = start_worker(d1, "h", "gh", { script })
    wait_for("the first worker's assignment", 60, function()
      local st = kafka_status(d1)
      return st and #st.partitions > 0
    end)
    -- The next two SyncGroup responses (both members') take 5 s: the second
    -- worker has joined (its protocol is chosen after the 2 s rebalance
    -- delay) but has no assignment yet when it is told to stop, 5 s after
    -- it started. Destroying it then aborts librdkafka 2.0.2. The delay
    -- stays under librdkafka's timeout for the request (the session
    -- timeout + 3 s = 6 s): with 7 s the request timed out, and a loaded
    -- run once aborted in librdkafka's rejoin that followed, before any
    -- destroy, in 1 of 3 runs at load 3.
    mock_cmd("broker_errors 1 SyncGroup NO_ERROR 5000 NO_ERROR 5000")
    local w2 = start_worker(d2, "h", "gh", { script })
    S.sleep(5)
    local code = stop_worker(w2)
    local log = S.read_file(w2.log)
    assert.are.equal(0, code, log)
    assert.is_falsy(log:find("Assertion", 1, true))
    assert.is_truthy(log:find("waiting for the first assignment", 1, true), log)
    assert.are.equal(0, stop_worker(w1))
  end)
end)

describe("#kafka configuration", function()
  local cdir

  before_each(function() cdir = S.tmpdir() end)
  after_each(function() S.rm_rf(cdir) end)

  local function check(body)
    local path = cdir .. "/p.lua"
    S.write_file(path, "local murmur = require('murmur')\n" .. body)
    return S.murmur_run({ "check", path })
  end

  it("validates murmur.kafka{} and murmur.kafka_topic{} where they are written", function()
    local code, out, err = check([[murmur.pipeline { name = "a", key = "k", monoid = murmur.count(),
      source = murmur.kafka { topic = "a,b" } }]])
    assert.are.equal(3, code)
    assert.is_truthy((out .. err):find("p.lua:3: murmur.kafka: bad topic a,b", 1, true), out .. err)
    code, out, err = check([[murmur.pipeline { name = "a", key = "k", monoid = murmur.count(),
      source = murmur.kafka { topic = "a", start = "middle" } }]])
    assert.are.equal(3, code)
    assert.is_truthy((out .. err):find("start must be", 1, true))
    code, out, err = check([[murmur.pipeline { name = "a", key = "k", monoid = murmur.count(),
      source = murmur.kafka { topics = { "a", "b" }, propertys = {} } }]])
    assert.are.equal(3, code)
    assert.is_truthy((out .. err):find("unknown option 'propertys'", 1, true))
    code, out, err = check([[murmur.pipeline { name = "a", key = "k", monoid = murmur.count(),
      dead_letter = murmur.kafka_topic { format = "raw" } }]])
    assert.are.equal(3, code)
    assert.is_truthy((out .. err):find("murmur.kafka_topic needs a topic", 1, true))
    code, out, err = check([[murmur.pipeline { name = "a", key = "k", monoid = murmur.count(),
      dead_letter = 5 }]])
    assert.are.equal(3, code)
    assert.is_truthy((out .. err):find("murmur.kafka_topic", 1, true))
    code = check([[murmur.pipeline { name = "a", key = "k", monoid = murmur.count(),
      source = murmur.kafka { topics = { "a", "^b.*" }, group = "g", batch = 1024, drain = 2,
        properties = { ["fetch.wait.max.ms"] = 10 } },
      dead_letter = murmur.kafka_topic { topic = "a-dlq", format = "json", timeout = "5s" } }]])
    assert.are.equal(0, code)
  end)

  it("refuses conflicting or incomplete Kafka settings before connecting", function()
    local path = cdir .. "/p.lua"
    S.write_file(path, [[local murmur = require("murmur")
murmur.pipeline { name = "a", key = "k", monoid = murmur.count() }]])
    local function run(args, env)
      local parts = { env or "", S.quote(S.murmur), "run", "--no-supervisor", "--data", S.quote(cdir .. "/d") }
      for _, a in ipairs(args) do parts[#parts + 1] = S.quote(a) end
      parts[#parts + 1] = S.quote(path)
      return S.exec(table.concat(parts, " "))
    end
    local code, _, err = run({ "--kafka-brokers", "127.0.0.1:1", "--input", path })
    assert.are.equal(1, code)
    assert.is_truthy(err:find("both --input and --kafka-brokers", 1, true), err)
    code, _, err = run({ "--kafka-brokers", "127.0.0.1:1" })
    assert.are.equal(1, code)
    assert.is_truthy(err:find("Kafka needs a topic", 1, true), err)
    code, _, err = run({ "--kafka-topic", "t" }, "MURMUR_KAFKA_BROKERS=127.0.0.1:1 MURMUR_KAFKA_START=soon")
    assert.are.equal(1, code)
    assert.is_truthy(err:find("Kafka start must be earliest or latest", 1, true), err)
    code, _, err = run({ "--kafka-brokers", "127.0.0.1:1", "--kafka-topic", "t", "-X", "novalue" })
    assert.are.equal(1, code)
    assert.is_truthy(err:find("'novalue' is not key=value", 1, true), err)
    code, _, err = run({ "--kafka-brokers", "127.0.0.1:1", "--kafka-topic", "t", "-Xno.such.property=1" })
    assert.are.equal(1, code)
    assert.is_truthy(err:find("librdkafka property 'no.such.property'", 1, true), err)
    code, _, err = run({ "--kafka-brokers", "127.0.0.1:1", "--kafka-topic", "t", "-X", "enable.auto.commit=false" })
    assert.are.equal(1, code)
    assert.is_truthy(err:find("is set by murmur", 1, true), err)
  end)

  -- murmur does not link librdkafka (engine/source/kafka_lib.h): a process
  -- maps it when something first needs Kafka. MURMUR_ERRINJ_RDKAFKA_MISSING
  -- makes the load look for a library no system has, as on a machine
  -- without librdkafka1.
  it("loads librdkafka on first use only, and names the package when it is missing", function()
    local probe = cdir .. "/maps.lua"
    S.write_rdk_probe(probe)
    local code, out, err = S.murmur_run({ "lua", probe })
    assert.are.equal(0, code, err)
    assert.matches("^none\t0\t/%S*librdkafka%S*\n$", out)
    code, out, err = S.exec(("MURMUR_ERRINJ_RDKAFKA_MISSING=1 %s lua %s"):format(S.quote(S.murmur), S.quote(probe)))
    assert.are.equal(0, code, err)
    assert.matches("^none\t%-%d+\tnone\n$", out)

    local script, events = cdir .. "/p.lua", cdir .. "/ev.jsonl"
    S.write_file(events, '{"k":"x"}\n')
    S.write_file(script, [[local murmur = require("murmur")
murmur.pipeline { name = "a", key = "k", monoid = murmur.count() }]])
    local function run(args)
      local parts = { "MURMUR_ERRINJ_RDKAFKA_MISSING=1 MURMUR_KAFKA_BROKERS=127.0.0.1:1",
        S.quote(S.murmur), "run", "--no-supervisor", "--data", S.quote(cdir .. "/d") }
      for _, a in ipairs(args) do parts[#parts + 1] = S.quote(a) end
      return S.exec(table.concat(parts, " "))
    end
    local want = "could not be loaded .*apt%-get install librdkafka1"
    code, _, err = run({ "--kafka-topic", "t", script })
    assert.are.equal(1, code, err)
    assert.matches("source: ENOTSUP: librdkafka%-errinj%-missing%.so%.1 " .. want, err)
    -- A Kafka dead-letter topic of a pipeline that reads a file.
    S.write_file(script, [[local murmur = require("murmur")
murmur.pipeline { name = "a", key = "k", monoid = murmur.count(),
  dead_letter = murmur.kafka_topic { topic = "dlq" } }]])
    code, _, err = run({ "--once", "--input", events, script })
    assert.are.equal(1, code, err)
    assert.matches("ENOTSUP: librdkafka%-errinj%-missing%.so%.1 " .. want, err)
  end)
end)

-- Item 14 of the DynamoDB issue: the flagship pipeline fed by two workers of
-- one consumer group into the shared store, with dedup, one worker killed
-- with kill -9 mid-stream and restarted. The events name 30 entities, fewer
-- than K = 32, so the Misra-Gries summary is exact and every stored count
-- must equal the true count: nothing lost, nothing counted twice.
local dd = S.have_dynalite and describe or pending

-- Starts the mock cluster and dynalite with the table, for a describe block:
-- returns the dynalite handle, its port and the workers' environment.
local function ddb_setup(table_name)
  dir = S.tmpdir()
  mock = mock_start(3)
  local dyn, port = S.start_dynalite(dir, dir .. "/dynalite-db")
  local env = ("AWS_ACCESS_KEY_ID=AKIDSPEC AWS_SECRET_ACCESS_KEY=spec MURMUR_STORE=dynamodb "
    .. "MURMUR_DYNAMODB_TABLE=%s MURMUR_DYNAMODB_ENDPOINT=http://127.0.0.1:%d"):format(table_name, port)
  local code, _, err = S.exec(("env %s %s ddb create-table"):format(env, S.quote(S.murmur)))
  assert.are.equal(0, code, err)
  -- S.ddb_read_values reads the table from this process.
  local ffi = require("ffi")
  pcall(ffi.cdef, [[ int setenv(const char *name, const char *value, int overwrite); ]])
  ffi.C.setenv("AWS_ACCESS_KEY_ID", "AKIDSPEC", 1)
  ffi.C.setenv("AWS_SECRET_ACCESS_KEY", "spec", 1)
  return dyn, port, env
end

-- Reads the position of each of the nparts partitions of `source` with a
-- writable store, which rolls forward a flush its worker left unfinished
-- (what the partition's next owner does first); returns the sum of the
-- counts of `entities` in `pipeline` it added.
local function roll_forward(port, table_name, source, nparts, pipeline, entities)
  local endpoint = ("http://127.0.0.1:%d"):format(port)
  local function sum()
    local s = 0
    for _, v in pairs(S.ddb_read_values(endpoint, table_name, pipeline, entities)) do s = s + (v and v.value or 0) end
    return s
  end
  local before = sum()
  local st = assert(core.store_open("dynamodb", { table = table_name, endpoint = endpoint }))
  for p = 0, nparts - 1 do
    local pos, err = st:position(("%s#%s/%d"):format(source, source:match("/(.*)$"), p))
    assert(pos or not err, err)
  end
  st:close()
  return sum() - before
end

local function ddb_teardown(dyn)
  if dyn then S.kill(dyn, "TERM") S.wait_exit(dyn, 5) end
  finish()
end

dd("#kafka #dynamodb recently_interacted from Kafka into DynamoDB", function()
  local dyn, env

  setup(function()
    local _
    dyn, _, env = ddb_setup("kafka_spec")
  end)

  after_each(kill_workers)
  teardown(function() ddb_teardown(dyn) end)

  it("keeps the Top-K exact when one of two workers is killed with kill -9 and restarted", function()
    local path = dir .. "/ri.jsonl"
    S.gen_events(path, 30000, 30, 1.1, 23)
    local truth, n = {}, 0
    for line in io.lines(path) do
      local e = line:match('"entity_id":"([^"]+)"')
      truth[e] = (truth[e] or 0) + 1
      n = n + 1
    end
    local chunks, per = split({ path = path, n = n }, 6), n / 6
    mock_cmd("topic ri 6")
    local script = S.root .. "/pipelines/recently_interacted.lua"
    -- The shipped pipeline runs unchanged; a second script's pipeline sets
    -- the store's claim lease to 10 s instead of 30 s (one store per
    -- process takes the options of every pipeline), so the survivor waits
    -- 20 s less for the dead worker's claims. A live worker renews every
    -- third of the lease while a flush holds claims.
    local lease = dir .. "/lease.lua"
    S.write_file(lease, [[
local murmur = require("murmur")
murmur.pipeline { name = "ri_lease", key = murmur.literal("all"), monoid = murmur.count(),
  store = murmur.store("dynamodb", { lease = "10s" }) }
]])
    local d1, d2 = dir .. "/w1", dir .. "/w2"
    local w1 = start_worker(d1, "ri", "gri", { script, lease }, nil, env)
    local w2 = start_worker(d2, "ri", "gri", { script, lease }, nil, env)
    wait_for("both workers to be assigned", 60, function() return split_between(d1, d2) end)
    produce("ri", chunks[1])
    produce("ri", chunks[2])
    produce("ri", chunks[3])
    wait_for("the second worker to read", 30, function() return reads(d2) end, { d2 })
    stop_worker(w2, "KILL")
    wait_for("the survivor to own every partition", 60, function()
      local st, k = kafka_status(d1), 0
      for _, p in ipairs(st and st.partitions or {}) do if p.state == "assigned" then k = k + 1 end end
      return k == 6
    end, { d1 })
    produce("ri", chunks[4])
    -- The dead worker's claims block their records until its lease (10 s) ends.
    wait_for("the survivor to catch up", 150, function() return caught_up({ d1 }, 4 * per) end, { d1 })
    w2 = start_worker(d2, "ri", "gri", { script, lease }, nil, env)
    wait_for("the worker to rejoin", 60, function() return split_between(d1, d2) end)
    produce("ri", chunks[5])
    produce("ri", chunks[6])
    wait_for("both workers to catch up", 150, function() return caught_up({ d1, d2 }, n) end, { d1, d2 })
    assert.are.equal(0, stop_worker(w1))
    assert.are.equal(0, stop_worker(w2))
    local code, out, err = S.exec(("env %s %s query %s global --window 30d --json"):format(env,
      S.quote(S.murmur), S.quote(script)))
    assert.are.equal(0, code, err)
    local res = core.json_decode(out).result
    local bad, items = {}, 0
    for _, it in ipairs(res.items) do
      items = items + 1
      if it.lower ~= truth[it.item] or it.upper ~= truth[it.item] then
        bad[#bad + 1] = ("%s: [%d, %d], true count %d"):format(it.item, it.lower, it.upper, truth[it.item] or 0)
      end
    end
    local distinct = 0
    for _ in pairs(truth) do distinct = distinct + 1 end
    local taken, dups = 0, 0
    for _, d in ipairs({ d1, d2 }) do
      local st = core.json_decode(S.read_file(d .. "/status.json") or "{}")
      local c = st.engine and st.engine.instrumentation and st.engine.instrumentation["recently_interacted:store_claim"]
      if c then taken, dups = taken + c.stolen, dups + c.duplicates end
    end
    print(("# kafka x2 -> dynamodb, kill -9 of one worker: %d events, %d items, stored n %d; "
      .. "%d claims taken over from the dead worker, %d replays found counted"):format(n, items, res.n, taken, dups))
    assert.are.same({}, bad)
    assert.are.equal(distinct, items)
    assert.are.equal(n, res.n)
  end)

  it("deduplicates replayed records by their Kafka identity (murmur.record_id), C and Lua paths", function()
    local ev = events(dir .. "/rid.jsonl", 2000, 24)
    mock_cmd("topic rid 3")
    produce("rid", ev.path)
    local script = dir .. "/rid.lua"
    S.write_file(script, [[
local murmur = require("murmur")
murmur.pipeline { name = "rid_c", key = murmur.literal("all"), monoid = murmur.count(),
  dedup = murmur.record_id, flush = { events = 1000, interval = "200ms" } }
murmur.pipeline { name = "rid_lua", key = function(ev) return "all" end, monoid = murmur.count(),
  dedup = { id = murmur.record_id, ttl = "1d" }, flush = { events = 1000, interval = "200ms" } }
]])
    local function once(group)
      local parts = { "env", env, S.quote(S.murmur) }
      for _, a in ipairs(worker_args(dir .. "/rid-" .. group, "rid", group, { script }, { "--once", "--stats" })) do
        parts[#parts + 1] = S.quote(a)
      end
      local code, out, err = S.exec(table.concat(parts, " "))
      assert.are.equal(0, code, err)
      return core.json_decode(out).pipelines
    end
    local function stored(name)
      local code, out, err = S.exec(("env %s %s query %s all --json"):format(env, S.quote(S.murmur), name))
      assert.are.equal(0, code, err)
      return core.json_decode(out).result.value
    end
    local first = once("rid1")
    assert.are.equal(ev.n, first.rid_c.accepted)
    assert.are.equal(ev.n, first.rid_lua.accepted)
    -- A new group reads every offset again: a replay of the same records.
    local again = once("rid2")
    assert.are.equal(ev.n, again.rid_c.duplicates)
    assert.are.equal(ev.n, again.rid_lua.duplicates)
    assert.are.equal(ev.n, stored("rid_c"))
    assert.are.equal(ev.n, stored("rid_lua"))
  end)
end)

-- Issue 9, item 4: two workers of one consumer group into DynamoDB WITHOUT
-- event ids, with rebalances (a third worker joining and leaving) and
-- repeated kill -9, from outside at random moments and from inside between
-- two deltas of a flush (MURMUR_ERRINJ_DDB_KILL_AFTER_DELTAS, test builds).
-- Positions are stored per partition, each with its own flush-intent
-- pointer, and read (rolling a dead member's unfinished flush forward) when
-- the partition is assigned: every stored count must equal the truth.
dd("#kafka_ddb Kafka workers into DynamoDB without event ids", function()
  local dyn, port, env
  local TABLE, PAGES, CHUNKS, PER = "kafka_ddb", 400, 12, 5000

  setup(function()
    dyn, port, env = ddb_setup(TABLE)
  end)

  after_each(kill_workers)
  teardown(function() ddb_teardown(dyn) end)

  -- What the case below must wait for at its end, made certain: a worker
  -- killed between the deltas of its flush leaves the total written (the
  -- first delta) and pages missing until the partition's position is read.
  it("leaves a flush killed between its deltas to the next reader of its position", function()
    local script, data = dir .. "/k1.lua", dir .. "/k1"
    S.write_file(script, [[
local murmur = require("murmur")
murmur.pipeline { name = "k1_total", key = murmur.literal("all"), monoid = murmur.count(),
  flush = { events = 100000, interval = "2s" } }
murmur.pipeline { name = "k1_pages", key = "page_id", monoid = murmur.count(),
  flush = { events = 100000, interval = "2s" } }
]])
    local input, names = dir .. "/k1.jsonl", {}
    local f = assert(io.open(input, "wb"))
    for i = 1, 3000 do f:write(('{"page_id":"q%d"}\n'):format(i % 300)) end
    f:close()
    for i = 0, 299 do names[#names + 1] = "q" .. i end
    mock_cmd("topic k1 1")
    produce("k1", input)
    -- The flush holds the total and 300 pages; the kill comes after 150.
    local h = start_worker(data, "k1", "gk1", { script }, { "--log-level", "info" },
      env .. " MURMUR_ERRINJ_DDB_KILL_AFTER_DELTAS=150")
    local code = S.wait_exit(h, 120)
    workers[h] = nil
    assert.are.equal(137, code, S.read_file(h.log))
    local endpoint = ("http://127.0.0.1:%d"):format(port)
    local total = S.ddb_read_values(endpoint, TABLE, "k1_total", { "all" }).all.value
    local function pages()
      local sum = 0
      for _, v in pairs(S.ddb_read_values(endpoint, TABLE, "k1_pages", names)) do sum = sum + (v and v.value or 0) end
      return sum
    end
    local before = pages()
    assert.is_true(before < total, ("pages %d, total %d"):format(before, total))
    assert.are.equal(total - before, roll_forward(port, TABLE, "kafka:gk1/k1", 1, "k1_pages", names))
    assert.are.equal(total, pages())
  end)

  it("counts every page exactly across rebalances and kill -9, also between deltas", function()
    math.randomseed(9)
    local script = dir .. "/kd.lua"
    S.write_file(script, [[
local murmur = require("murmur")
murmur.pipeline { name = "kd_total", key = murmur.literal("all"), monoid = murmur.count(),
  flush = { events = 1500, interval = "300ms" } }
murmur.pipeline { name = "kd_pages", key = "page_id", monoid = murmur.count(),
  flush = { events = 1500, interval = "300ms" } }
]])
    local chunks, truth, n = {}, {}, CHUNKS * PER
    for c = 1, CHUNKS do
      chunks[c] = ("%s/kd.%d.jsonl"):format(dir, c)
      local f = assert(io.open(chunks[c], "wb"))
      for i = 1, PER do
        local p = "p" .. ((c * 7919 + i * 104729 + (i * i) % 97) % PAGES)
        truth[p] = (truth[p] or 0) + 1
        f:write(('{"page_id":"%s"}\n'):format(p))
      end
      f:close()
    end
    mock_cmd("topic kd 6")
    local live, logs, kills, inside, joins = {}, {}, 0, 0, 0
    local function launch(name, errinj)
      local e = env
      if errinj then e = e .. " MURMUR_ERRINJ_DDB_KILL_AFTER_DELTAS=" .. errinj end
      local h = start_worker(dir .. "/" .. name, "kd", "gkd", { script }, { "--log-level", "info" }, e)
      h.errinj = errinj
      live[name], logs[#logs + 1] = h, h.log
    end
    -- Restarts the workers that died: killed from inside between deltas
    -- (137), or fenced (status 1, EFENCED: a worker that stalled past the
    -- session timeout on this loaded machine lost its partitions to a
    -- rebalance, and its next flush was refused, doc/dynamodb.md).
    local fenced = 0
    local function reap(errinj_ok)
      for name, h in pairs(live) do
        local code = S.wait_exit(h, 0.05)
        if code ~= nil then
          workers[h] = nil
          local log = S.read_file(h.log) or ""
          if code == 1 and log:find("EFENCED", 1, true) then
            fenced = fenced + 1
          else
            assert.are.equal(137, code, log)
            kills, inside = kills + 1, inside + 1
          end
          launch(name, errinj_ok and math.random() < 0.5 and math.random(20, 700) or nil)
        end
      end
    end
    -- A worker started with the kill between deltas can reach its count in
    -- the flush its stop makes: that is the injected kill (its flush is
    -- rolled forward like any other), not a failed stop.
    local function stop_live(h)
      local code = stop_worker(h)
      if code == 137 and h.errinj then
        kills, inside = kills + 1, inside + 1
        return
      end
      assert.are.equal(0, code, S.read_file(h.log))
    end
    local function read_values(pipeline, entities)
      return S.ddb_read_values(("http://127.0.0.1:%d"):format(port), TABLE, pipeline, entities)
    end
    launch("w1", math.random(20, 700))
    launch("w2")
    for c = 1, CHUNKS do
      produce("kd", chunks[c])
      S.sleep(("%.2f"):format(0.2 + math.random() * 1.5))
      local action = c % 4
      if action == 1 or action == 3 then
        -- kill -9 from outside, at whatever moment this is.
        local name = math.random() < 0.5 and "w1" or "w2"
        local h = live[name]
        S.kill(h, "KILL")
        local code = S.wait_exit(h, 10)
        workers[h] = nil
        if code == 137 then kills = kills + 1 end
        launch(name, math.random() < 0.5 and math.random(20, 700) or nil)
      elseif action == 2 and not live.w3 then
        launch("w3")
        joins = joins + 1
      elseif action == 0 and live.w3 then
        -- Leaves once it owns partitions (a member leaving before its first
        -- assignment is another case, kafka_spec's #4312 one).
        wait_for("the third worker to be assigned", 60, function()
          local st = kafka_status(dir .. "/w3")
          for _, p in ipairs(st and st.partitions or {}) do if p.state == "assigned" then return true end end
          return false
        end, { dir .. "/w3" })
        local h = live.w3
        live.w3 = nil
        stop_live(h)
      end
      reap(true)
    end
    local total
    wait_for("every record to be counted", 240, function()
      reap(false)
      local v = read_values("kd_total", { "all" }).all
      total = v and v.value or 0
      return total >= n
    end)
    for name, h in pairs(live) do
      live[name] = nil
      stop_live(h)
    end
    -- The total can reach n while a flush killed between its deltas (its
    -- total written, some pages not) waits for its partition's next owner
    -- to roll it forward: the kill came so late that the workers were
    -- stopped before a rebalance gave that partition to anybody. Read every
    -- partition's position, as a next owner would: that finishes the flush.
    local names = {}
    for p in pairs(truth) do names[#names + 1] = p end
    local late = roll_forward(port, TABLE, "kafka:gkd/kd", 6, "kd_pages", names)
    local got, bad = read_values("kd_pages", names), {}
    for p, want in pairs(truth) do
      local v = got[p]
      if not v or v.value ~= want then bad[#bad + 1] = ("%s: %s ~= %d"):format(p, v and tostring(v.value) or "absent", want) end
    end
    table.sort(bad)
    while #bad > 10 do table.remove(bad) end
    local rolled = 0
    for _, l in ipairs(logs) do
      for _ in (S.read_file(l) or ""):gmatch("rolled forward the flush") do rolled = rolled + 1 end
    end
    total = read_values("kd_total", { "all" }).all.value
    print(("# kafka x2(+1) -> dynamodb without ids: %d records, %d kill -9 (%d between deltas), %d fenced, %d joins, "
      .. "%d flushes rolled forward by a partition's next owner, %s, total %d"):format(n, kills, inside, fenced, joins, rolled,
      late > 0 and ("the last one by the final position reads (%d page counts)"):format(late)
        or "none left for the final position reads", total))
    assert.are.same({}, bad)
    assert.are.equal(n, total)
    assert.is_true(inside > 0, "no worker was killed between deltas")
    assert.is_true(rolled > 0, "no kill left a flush to roll forward")
  end)
end)

-- A zombie (doc/dynamodb.md, "Kafka partitions"): a worker stopped with
-- SIGSTOP past the session timeout loses its partitions to the other
-- worker, which counts their records from the stored positions; when the
-- stopped worker resumes it still holds those records, unflushed, and
-- flushes them (its lost revoke's flush). Without the fence they were
-- counted twice; with it the zombie's flush is refused at its first
-- pointer (the partition's item was taken by the new owner's read) or at
-- its arming, the zombie stops without writing a delta, and a restart
-- counts nothing twice. The zombie's script never flushes by itself (an
-- hour's interval), so it holds its records until the revoke.
dd("#kafka_ddb #zombie a Kafka worker that lost its partitions while stopped", function()
  local dyn, port, env
  local TABLE, PAGES, N = "kafka_zombie", 50, 3000

  setup(function()
    dyn, port, env = ddb_setup(TABLE)
  end)

  after_each(kill_workers)
  teardown(function() ddb_teardown(dyn) end)

  it("counts nothing twice after SIGSTOP past the session timeout and SIGCONT", function()
    local function script(name, interval)
      local path = ("%s/%s.lua"):format(dir, name)
      S.write_file(path, ([[
local murmur = require("murmur")
murmur.pipeline { name = "kz_total", key = murmur.literal("all"), monoid = murmur.count(),
  flush = { events = 1000000, interval = "%s" } }
murmur.pipeline { name = "kz_pages", key = "page_id", monoid = murmur.count(),
  flush = { events = 1000000, interval = "%s" } }
]]):format(interval, interval))
      return path
    end
    local zombie, live = script("zombie", "1h"), script("live", "300ms")
    local truth = {}
    local function chunk(c)
      local path = ("%s/kz.%d.jsonl"):format(dir, c)
      local f = assert(io.open(path, "wb"))
      for i = 1, N do
        local p = "p" .. ((c * 31 + i * 7) % PAGES)
        truth[p] = (truth[p] or 0) + 1
        f:write(('{"page_id":"%s"}\n'):format(p))
      end
      f:close()
      return path
    end
    local function read_values(pipeline, entities)
      return S.ddb_read_values(("http://127.0.0.1:%d"):format(port), TABLE, pipeline, entities)
    end
    local function total() local v = read_values("kz_total", { "all" }).all return v and v.value or 0 end
    mock_cmd("topic kz 6")
    local d1, d2 = dir .. "/z1", dir .. "/z2"
    local w1 = start_worker(d1, "kz", "gkz", { zombie }, { "--log-level", "info" }, env)
    local w2 = start_worker(d2, "kz", "gkz", { live }, { "--log-level", "info" }, env)
    wait_for("both workers to be assigned", 60, function() return split_between(d1, d2) end, { d1, d2 })
    produce("kz", chunk(1))
    -- The zombie has read its share (and holds it: it never flushes by
    -- itself); the other one has counted its own.
    wait_for("the first chunk to be read", 60, function()
      local st1, st2 = kafka_status(d1), kafka_status(d2)
      if not st1 or not st2 then return false end
      local n = 0
      for _, st in ipairs({ st1, st2 }) do
        for _, p in ipairs(st.partitions) do if p.state == "assigned" then n = n + p.records end end
      end
      return n == N and reads(d1) and total() > 0
    end, { d1, d2 })
    -- Each worker took the stored position of every partition assigned to
    -- it (`own` in its status).
    wait_for("every assigned partition's position owned", 30, function()
      for _, d in ipairs({ d1, d2 }) do
        for _, p in ipairs(kafka_status(d).partitions) do
          if p.state == "assigned" and p.own ~= true then return false end
        end
      end
      return true
    end, { d1, d2 })
    S.kill(w1, "STOP")
    -- The session times out (3 s): the live worker takes every partition,
    -- reads their positions and counts the zombie's share again.
    wait_for("the live worker to count every record", 120, function() return total() >= N end, { d2 })
    assert.are.equal(N, total())
    S.kill(w1, "CONT")
    -- The zombie learns of the loss and flushes what it held: with the
    -- fence that flush is refused and the zombie stops.
    local code
    wait_for("the zombie to stop", 60, function()
      code = S.wait_exit(w1, 0.05)
      return code ~= nil or total() > N
    end, { d1, d2 })
    S.sleep(1)
    assert.are.equal(N, total(), "the zombie's flush was counted: " .. (S.read_file(w1.log) or ""))
    workers[w1] = nil
    assert.are.equal(1, code, S.read_file(w1.log))
    assert.is_truthy((S.read_file(w1.log) or ""):find("fenced"), S.read_file(w1.log))
    local names = {}
    for p in pairs(truth) do names[#names + 1] = p end
    local got, bad = read_values("kz_pages", names), {}
    for p, want in pairs(truth) do
      local v = got[p]
      if not v or v.value ~= want then bad[#bad + 1] = ("%s: %s ~= %d"):format(p, v and tostring(v.value) or "absent", want) end
    end
    table.sort(bad)
    assert.are.same({}, bad)
    -- Restarted, it reads on from the stored positions: a second chunk
    -- shared by both is counted once, i.e. the total ends equal to the
    -- records the topic holds (the sum of its partitions' high watermarks).
    w1 = start_worker(d1, "kz", "gkz", { live }, { "--log-level", "info" }, env)
    wait_for("both workers to be assigned again", 60, function() return split_between(d1, d2) end, { d1, d2 })
    produce("kz", chunk(2))
    local held
    -- The high watermarks come from status.json (rewritten every second):
    -- one taken before the last fetch is stale, so the sum must hold still
    -- for two seconds before it is the topic's total.
    local last_hw, since = -1, 0
    wait_for("the second chunk to be counted", 120, function()
      local hw, n = 0, 0
      for _, d in ipairs({ d1, d2 }) do
        local st = kafka_status(d)
        for _, p in ipairs(st and st.partitions or {}) do
          if p.state == "assigned" then
            if p.lag ~= 0 then return false end
            hw, n = hw + p.high_watermark, n + 1
          end
        end
      end
      held = hw
      if hw ~= last_hw then last_hw, since = hw, core.now_ms() end
      return n == 6 and hw > N and total() == hw and core.now_ms() - since >= 2000
    end, { d1, d2 })
    S.sleep(1)
    for _, h in ipairs({ w1, w2 }) do assert.are.equal(0, stop_worker(h), S.read_file(h.log)) end
    print(("# zombie: %d records counted once with the fence; then %d in the topic, %d counted"):format(N, held, total()))
    assert.are.equal(held, total())
  end)
end)
