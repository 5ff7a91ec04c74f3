-- The Kinesis polling source (doc/kinesis.md, "Polling source"): murmur run
-- reads a stream of several shards from kinesalite, resumes after its
-- checkpoint, follows a split and a merge made while it runs, and counts
-- every record exactly once. kinesalite is started here on 127.0.0.1 and
-- stopped at the end; the streams, records and resharding are made with
-- AWS's own SDK (tests/node/kinesis_tool.mjs). Pending without node.
local S = require("spec.support")
local core = require("murmur.core")

local have = S.have_dynalite and io.open(S.root .. "/tests/node/node_modules/kinesalite/package.json") ~= nil
local d = have and describe or pending

local KEYS = 7

d("#kinesis polling source over kinesalite", function()
  local dir, kin, port, streams = nil, nil, nil, 0

  setup(function()
    dir = S.tmpdir()
    local log = dir .. "/kinesalite.log"
    kin = S.spawn(("node %s/tests/node/kinesalite_server.js"):format(S.root), log)
    port = S.wait_port(log, 10)
  end)

  teardown(function()
    if kin then S.kill(kin, "TERM") S.wait_exit(kin, 5) end
    S.rm_rf(dir)
  end)

  local function endpoint() return ("http://127.0.0.1:%d"):format(port) end
  local ENV = "env NODE_NO_WARNINGS=1 AWS_ACCESS_KEY_ID=AKIDSPEC AWS_SECRET_ACCESS_KEY=spec-secret"

  local function tool(...)
    local args = { ... }
    for i, a in ipairs(args) do args[i] = S.quote(a) end
    local code, out, err = S.exec(("%s node %s/tests/node/kinesis_tool.mjs --endpoint %s %s"):format(ENV, S.root,
      endpoint(), table.concat(args, " ")))
    assert(code == 0, "kinesis_tool " .. table.concat(args, " ") .. ": " .. err)
    return out
  end

  local function new_stream(shards)
    streams = streams + 1
    local name = ("events-%d"):format(streams)
    tool("create", name, tostring(shards))
    return name
  end

  -- Puts n records (keys k0..k(KEYS-1) in turn, numbered from first) and
  -- adds them to expected.
  local function put(stream, first, n, expected)
    local path = ("%s/put-%d.jsonl"):format(dir, first)
    local f = assert(io.open(path, "w"))
    for i = first, first + n - 1 do
      local key = "k" .. (i % KEYS)
      f:write(('{"key":"%s","n":%d}\n'):format(key, i))
      expected[key] = (expected[key] or 0) + 1
    end
    f:close()
    assert.are.equal(("put %d\n"):format(n), tool("put", stream, path))
  end

  local function script(stream, extra)
    local path = ("%s/%s.lua"):format(dir, stream)
    S.write_file(path, ([[
local murmur = require("murmur")
murmur.pipeline {
  name = "counts",
  source = murmur.kinesis { stream = "%s", idle = "50ms"%s },
  key = "key", monoid = murmur.count(),
  dedup = { id = murmur.record_id },
  flush = { interval = "100ms" },
}
]]):format(stream, extra or ""))
    return path
  end

  local function run_cmd(path, data, extra)
    return ("%s %s run %s --data %s --kinesis-endpoint %s %s"):format(ENV, S.quote(S.murmur), S.quote(path),
      S.quote(data), endpoint(), extra or "")
  end

  local function counts(data)
    local got = {}
    for i = 0, KEYS - 1 do
      local code, out, err = S.murmur_run({ "query", "counts", "k" .. i, "--data", data, "--json" })
      assert.are.equal(0, code, err)
      got["k" .. i] = core.json_decode(out).result.value
    end
    return got
  end

  local function kinesis_status(data)
    local st = S.status(data)
    if not st or not st.engine or not st.engine.sources then return nil end
    for id, src in pairs(st.engine.sources) do
      if id:match("^kinesis:") and src.status then return src.status end
    end
  end

  local function total(t)
    local n = 0
    for _, v in pairs(t) do n = n + v end
    return n
  end

  it("reads every shard, then resumes after its checkpoint", function()
    local stream, expected = new_stream(4), {}
    put(stream, 0, 400, expected)
    local data, path = dir .. "/several", script(stream)
    local code, out, err = S.exec(run_cmd(path, data, "--once --stats"))
    assert.are.equal(0, code, err)
    assert.are.same(expected, counts(data))
    local stats = core.json_decode(out:match("({\"batches\".*})"))
    assert.are.equal(400, stats.sources["kinesis:" .. stream].records)
    -- More records: the next run reads only those (AFTER_SEQUENCE_NUMBER).
    put(stream, 400, 150, expected)
    code, out, err = S.exec(run_cmd(path, data, "--once --stats"))
    assert.are.equal(0, code, err)
    stats = core.json_decode(out:match("({\"batches\".*})"))
    assert.are.equal(150, stats.sources["kinesis:" .. stream].records)
    assert.are.same(expected, counts(data))
  end)

  it("follows a split and a merge made while it runs, parents before children", function()
    local stream, expected = new_stream(3), {}
    local data, path = dir .. "/reshard", script(stream)
    local h = S.spawn(run_cmd(path, data, "--no-supervisor"), dir .. "/reshard.log")
    put(stream, 0, 300, expected)
    local function read_all(n)
      return function()
        local st = kinesis_status(data)
        if not st then return false end
        local sum = 0
        for _, sh in ipairs(st.shards) do sum = sum + sh.records end
        return sum == n
      end
    end
    S.wait_status(data, read_all(300), 60, "300 records read")
    tool("split", stream, "shardId-000000000000")
    put(stream, 300, 300, expected)
    tool("merge", stream, "shardId-000000000001", "shardId-000000000002")
    put(stream, 600, 300, expected)
    S.wait_status(data, read_all(900), 60, "900 records read")
    local st = kinesis_status(data)
    S.kill(h, "TERM")
    assert.are.equal(0, S.wait_exit(h, 30), S.read_file(dir .. "/reshard.log"))
    assert.are.same(expected, counts(data))
    local by_id = {}
    for _, sh in ipairs(st.shards) do by_id[sh.shard] = sh end
    -- The parents were read to their ends; the children, which start at
    -- their beginnings, hold the rest.
    for _, p in ipairs({ "shardId-000000000000", "shardId-000000000001", "shardId-000000000002" }) do
      assert.are.equal("ended", by_id[p].state, p)
    end
    assert.are.equal("shardId-000000000000", by_id["shardId-000000000003"].parent)
    assert.are.equal("shardId-000000000001", by_id["shardId-000000000005"].parent)
    assert.are.equal("shardId-000000000002", by_id["shardId-000000000005"].adjacent_parent)
    assert.is_true(by_id["shardId-000000000003"].records + by_id["shardId-000000000004"].records
      + by_id["shardId-000000000005"].records > 0)
    assert.are.equal(900, total(counts(data)))
  end)

  it("is exact across kill -9 (positions commit with the state)", function()
    local stream, expected = new_stream(3), {}
    put(stream, 0, 3000, expected)
    -- Small reads, so that the kill lands while shards are being read.
    local data, path = dir .. "/killed", script(stream, ", limit = 50")
    local h = S.spawn(run_cmd(path, data, "--no-supervisor"), dir .. "/killed.log")
    S.wait_status(data, function()
      local st = kinesis_status(data)
      local n = 0
      for _, sh in ipairs(st and st.shards or {}) do n = n + sh.records end
      return n >= 300
    end, 60, "300 records read")
    S.kill(h, "KILL")
    S.wait_exit(h, 10)
    local code, out, err = S.exec(run_cmd(path, data, "--once --stats"))
    assert.are.equal(0, code, err)
    -- The restart had records left to read: the kill landed mid-stream.
    local stats = core.json_decode(out:match("({\"batches\".*})"))
    assert.is_true(stats.sources["kinesis:" .. stream].records > 0)
    assert.are.same(expected, counts(data))
  end)

  -- A dynalite of its own with murmur's table created: returns the
  -- environment that points murmur at it (dynalite stops at the test's end).
  local function ddb_store(name, table_name)
    local dyn, dport = S.start_dynalite(dir, dir .. "/" .. name)
    finally(function() S.kill(dyn, "TERM") S.wait_exit(dyn, 5) end)
    local denv = ("%s MURMUR_DYNAMODB_TABLE=%s MURMUR_DYNAMODB_ENDPOINT=http://127.0.0.1:%d"):format(ENV,
      table_name, dport)
    local code, _, err = S.exec(("%s %s ddb create-table"):format(denv, S.quote(S.murmur)))
    assert.are.equal(0, code, err)
    return denv, dport, dyn
  end

  -- The counts of the pipeline script at path, as the store of denv holds
  -- them (a key not stored yet is absent: query's status 4).
  local function ddb_counts(denv, path)
    local got = {}
    for i = 0, KEYS - 1 do
      local c, out, e = S.exec(("%s %s query %s k%d --store dynamodb --json"):format(denv, S.quote(S.murmur),
        S.quote(path), i))
      if c ~= 4 then
        assert.are.equal(0, c, e)
        got["k" .. i] = core.json_decode(out).result.value
      end
    end
    return got
  end

  -- Workers of the lease table <name>_leases on the DynamoDB store of denv
  -- (dyn: its dynalite), worker n with its data in <dir>/<name>-w<n> and a
  -- new log at each start. A test keeps only its last finally: this one
  -- replaces ddb_store's, so it stops dynalite too, with the workers.
  local function lease_workers(denv, dyn, name)
    local w = { handles = {}, logs = {} }
    function w.start(n, path, extra_env)
      local log = ("%s/%s-w%d-%d.log"):format(dir, name, n, #w.logs + 1)
      w.logs[#w.logs + 1] = log
      w.handles[n] = S.spawn(("%s %s %s run %s --no-supervisor --log-level info --data %s/%s-w%d --kinesis-endpoint %s "
        .. "--kinesis-lease-table %s_leases"):format(denv, extra_env or "", S.quote(S.murmur), S.quote(path), dir, name,
        n, endpoint(), name), log)
      return w.handles[n]
    end
    finally(function()
      for _, h in pairs(w.handles) do S.kill(h, "KILL") S.wait_exit(h, 5) end
      S.kill(dyn, "TERM") S.wait_exit(dyn, 5)
    end)
    function w.all_logs()
      local t = {}
      for _, l in ipairs(w.logs) do t[#t + 1] = l .. ":\n" .. (S.read_file(l) or "") end
      return table.concat(t, "\n")
    end
    function w.data(n) return ("%s/%s-w%d"):format(dir, name, n) end
    function w.status(n) return kinesis_status(w.data(n)) end
    function w.held(n) local st = w.status(n) return st and st.leases and st.leases.held or 0 end
    function w.read_by(n)
      local st, r = w.status(n), 0
      for _, sh in ipairs(st and st.shards or {}) do r = r + sh.records end
      return r
    end
    return w
  end

  it("shares the shards between two workers through a lease table, across a split, a merge and kill -9 of one", function()
    local denv, dport = ddb_store("dynalite", "kin_state")
    local stream, expected = new_stream(4), {}
    put(stream, 0, 800, expected)
    local path = dir .. "/leased.lua"
    -- The store is shared and dedups by record id, so a shard read again
    -- from its checkpoint after a worker dies counts nothing twice.
    S.write_file(path, ([[
local murmur = require("murmur")
murmur.pipeline {
  name = "counts",
  source = murmur.kinesis { stream = "%s", idle = "50ms", lease_time = "2s", limit = 100 },
  key = "key", monoid = murmur.count(),
  dedup = { id = murmur.record_id },
  flush = { interval = "100ms" },
  store = murmur.store("dynamodb", {}),
}
]]):format(stream))
    local function worker(n)
      return S.spawn(("%s %s run %s --no-supervisor --data %s/w%d --kinesis-endpoint %s --kinesis-lease-table leases")
        :format(denv, S.quote(S.murmur), S.quote(path), dir, n, endpoint()), ("%s/w%d.log"):format(dir, n))
    end
    local function leases(n)
      local st = kinesis_status(("%s/w%d"):format(dir, n))
      return st and st.leases
    end
    local function stored() return ddb_counts(denv, path) end
    local function wait_stored(what)
      for _ = 1, 600 do
        if total(stored()) >= total(expected) then break end
        S.sleep(0.2)
      end
      assert.are.same(expected, stored(), what)
    end
    local w1 = worker(1)
    S.wait_status(dir .. "/w1", function() local l = leases(1) return l and l.held == 4 end, 60, "w1 holding 4 leases")
    local w2 = worker(2)
    S.wait_status(dir .. "/w2", function()
      local l1, l2 = leases(1), leases(2)
      return l1 and l2 and l1.held == 2 and l2.held == 2
    end, 60, "2 leases each")
    put(stream, 800, 800, expected)
    wait_stored("two workers")
    -- Resharding while both run: each child starts once its parents'
    -- leases say SHARD_END, whichever worker read them.
    tool("split", stream, "shardId-000000000000")
    tool("merge", stream, "shardId-000000000001", "shardId-000000000002")
    put(stream, 1600, 800, expected)
    wait_stored("after a split and a merge")
    -- One worker dies without a word: the other takes its leases over once
    -- their counters stop moving for the lease time, and reads them on.
    put(stream, 2400, 800, expected)
    -- Balancing may have moved a lease from w2 to w1 while both lived (the
    -- KCL's steal: after the split and merge one may hold more than its
    -- share); once w1 is dead, nothing may take a lease from w2.
    local losses_before = leases(2).losses
    S.kill(w1, "KILL")
    S.wait_exit(w1, 10)
    put(stream, 3200, 800, expected)
    S.wait_status(dir .. "/w2", function() local l = leases(2) return l and l.held == 4 end, 60, "w2 holding 4 leases")
    wait_stored("after kill -9")
    local l2 = leases(2)
    assert.is_true(l2.takes >= 4 and l2.steals >= 1, core.json_encode(l2))
    -- Nothing took a lease from the worker that stayed alive.
    assert.are.equal(losses_before, l2.losses, core.json_encode(l2))
    S.kill(w2, "TERM")
    assert.are.equal(0, S.wait_exit(w2, 30), S.read_file(dir .. "/w2.log"))
    assert.are.same(expected, stored())
    -- The lease table as a KCL operator reads it (dynalite checks no
    -- signature): after the clean stop every lease is released with a
    -- checkpoint; the parents say SHARD_END and the children name them.
    local c, out = S.exec(("curl -s -H 'Content-Type: application/x-amz-json-1.0' "
      .. "-H 'X-Amz-Target: DynamoDB_20120810.Scan' -H 'X-Amz-Date: 20260101T000000Z' -H 'Authorization: "
      .. "AWS4-HMAC-SHA256 Credential=AKIDSPEC/20260101/us-east-1/dynamodb/aws4_request, "
      .. "SignedHeaders=host;x-amz-date, Signature=00' "
      .. "--data '{\"TableName\":\"leases\",\"ConsistentRead\":true}' http://127.0.0.1:%d/"):format(dport))
    assert.are.equal(0, c)
    local items = {}
    for _, it in ipairs(core.json_decode(out).Items or error(out)) do items[it.leaseKey.S] = it end
    for shard, it in pairs(items) do
      assert.is_nil(it.leaseOwner, shard .. " still owned: " .. core.json_encode(it))
      assert.matches("^%d+$", it.leaseCounter.N)
      assert.are.equal("0", it.checkpointSubSequenceNumber.N)
      assert.is_not_nil(it.ownerSwitchesSinceCheckpoint)
    end
    for _, p in ipairs({ "shardId-000000000000", "shardId-000000000001", "shardId-000000000002" }) do
      assert.are.equal("SHARD_END", items[p].checkpoint.S, p)
    end
    assert.are.same({ "shardId-000000000000" }, items["shardId-000000000004"].parentShardId.SS)
    local merged = items["shardId-000000000006"].parentShardId.SS
    table.sort(merged)
    assert.are.same({ "shardId-000000000001", "shardId-000000000002" }, merged)
    for _, ch in ipairs({ "shardId-000000000003", "shardId-000000000004", "shardId-000000000005",
      "shardId-000000000006" }) do
      -- A sequence number, or where a child starts if no key hashed to it.
      local cp = items[ch].checkpoint.S
      assert.is_true(cp:match("^%d+$") ~= nil or cp == "TRIM_HORIZON", ch .. ": " .. cp)
    end
  end)

  -- Issue 9/10: several polling workers on one DynamoDB store are exact by
  -- positions alone, as Kafka partitions are: no event ids. Each shard's
  -- position is its own item with its own flush-intent pointer, read when a
  -- worker takes the shard's lease (rolling a dead worker's unfinished flush
  -- forward) and written only by the worker holding the lease; a lease
  -- moving between live workers is handed over after its owner's flush.
  -- #long: `make check` leaves it out (the Makefile says why).
  it("#long is exact without event ids when two workers share a DynamoDB store, across kill -9 and a kill between deltas", function()
    local denv, _, dyn = ddb_store("dynalite-noid", "kin_noid")
    local stream, expected = new_stream(4), {}
    put(stream, 0, 800, expected)
    local path = dir .. "/noid.lua"
    S.write_file(path, ([[
local murmur = require("murmur")
murmur.pipeline {
  name = "counts",
  source = murmur.kinesis { stream = "%s", idle = "50ms", lease_time = "2s", limit = 50 },
  key = "key", monoid = murmur.count(),
  flush = { interval = "100ms" },
  store = murmur.store("dynamodb", {}),
}
]]):format(stream))
    local w = lease_workers(denv, dyn, "noid")
    local handles, all_logs, held, read_by = w.handles, w.all_logs, w.held, w.read_by
    local function worker(n, extra_env) return w.start(n, path, extra_env) end
    local function stored() return ddb_counts(denv, path) end
    local function wait_stored(what)
      for _ = 1, 900 do
        if total(stored()) >= total(expected) then break end
        S.sleep(0.2)
      end
      local got = stored()
      if total(got) ~= total(expected) then print(all_logs()) end
      assert.are.same(expected, got, what)
    end
    local function both_hold()
      S.wait_for("both workers holding two leases", 90, function() return held(1) == 2 and held(2) == 2 end, all_logs)
    end
    local function wait_read(n, min, what)
      S.wait_status(w.data(n), function() return read_by(n) >= min end, 90, what)
    end

    -- Two workers: the second asks for its share while the first is
    -- reading, and the first hands each lease over only after its flush
    -- (no shard is read by both).
    worker(1)
    S.wait_for("w1 holding 4 leases", 60, function() return held(1) == 4 end, all_logs)
    local before = read_by(1)
    put(stream, 800, 3000, expected)
    wait_read(1, before + 300, "w1 reading")
    worker(2)
    both_hold()
    wait_stored("two workers sharing the shards")

    -- kill -9 of a worker that is reading: its shards are taken over once
    -- their leases expire and read on from each shard's stored position.
    before = read_by(1)
    put(stream, 3800, 3000, expected)
    wait_read(1, before + 300, "w1 reading")
    S.kill(handles[1], "KILL")
    S.wait_exit(handles[1], 10)
    S.wait_for("w2 holding 4 leases", 60, function() return held(2) == 4 end, all_logs)
    wait_stored("after kill -9 of a worker")

    -- Back, as a new worker, while the other is reading: it takes its
    -- share again from a live owner.
    before = read_by(2)
    put(stream, 6800, 3000, expected)
    wait_read(2, before + 300, "w2 reading")
    worker(1)
    both_hold()
    wait_stored("after the killed worker came back")

    -- A kill between two deltas of a flush (test builds): the worker that
    -- takes its shards over finishes that flush before reading them on.
    S.kill(handles[1], "TERM")
    assert.are.equal(0, S.wait_exit(handles[1], 30), all_logs())
    S.wait_for("w2 holding 4 leases", 60, function() return held(2) == 4 end, all_logs)
    local inside = worker(1, "MURMUR_ERRINJ_DDB_KILL_AFTER_DELTAS=9")
    both_hold()
    put(stream, 9800, 3000, expected)
    assert.are.equal(137, S.wait_exit(inside, 90), all_logs())
    S.wait_for("w2 holding 4 leases", 60, function() return held(2) == 4 end, all_logs)
    wait_stored("after a kill between two deltas")
    assert.matches("rolled forward the flush", all_logs())
    worker(1)
    both_hold()
    put(stream, 12800, 400, expected)
    wait_stored("at the end")
    for n = 1, 2 do
      S.kill(handles[n], "TERM")
      assert.are.equal(0, S.wait_exit(handles[n], 30), all_logs())
    end
    assert.are.same(expected, stored())
  end)

  -- A worker stalled past lease_time (SIGSTOP) loses its leases without a
  -- hand-over: the other worker takes them once they expire, takes each
  -- shard's stored position (`own`) and counts the stalled worker's share
  -- again from it. Resumed, the stalled worker notices the loss while it
  -- still holds those records unflushed (its script never flushes by
  -- itself), and its stop flushes them. Without event ids nothing else
  -- can tell them apart: that flush must name the lost shards' positions
  -- so that the fence refuses it (EFENCED, exit 1) instead of counting
  -- them twice (doc/dynamodb.md, "Kinesis shards").
  it("counts nothing twice when a stalled worker lost its leases and flushes after noticing it", function()
    local denv, _, dyn = ddb_store("dynalite-lost", "kin_lost")
    local stream, expected, N = new_stream(4), {}, 2000
    local function pipeline(name, interval)
      local path = ("%s/%s.lua"):format(dir, name)
      S.write_file(path, ([[
local murmur = require("murmur")
murmur.pipeline {
  name = "counts",
  source = murmur.kinesis { stream = "%s", idle = "50ms", lease_time = "2s", limit = 50 },
  key = "key", monoid = murmur.count(),
  flush = { events = 1000000, interval = "%s" },
  store = murmur.store("dynamodb", {}),
}
]]):format(stream, interval))
      return path
    end
    local stalled, live = pipeline("lost-stalled", "1h"), pipeline("lost-live", "100ms")
    local w = lease_workers(denv, dyn, "lost")
    local handles, logs, all_logs, held, read_by = w.handles, w.logs, w.all_logs, w.held, w.read_by
    local worker = w.start
    local function stored() return ddb_counts(denv, live) end

    worker(1, stalled)
    S.wait_for("w1 holding 4 leases", 60, function() return held(1) == 4 end, all_logs)
    worker(2, live)
    S.wait_for("both workers holding two leases", 90, function() return held(1) == 2 and held(2) == 2 end, all_logs)
    put(stream, 0, N, expected)
    -- Every record read: w2 has counted its share, w1 holds its own.
    local share
    S.wait_for("every record read", 90, function()
      share = read_by(1)
      return share + read_by(2) == N and total(stored()) == N - share
    end, all_logs)
    assert.is_true(share > 0, "w1 read nothing")
    -- Each worker took the stored position of every shard it holds (own).
    for n = 1, 2 do
      S.wait_status(w.data(n), function()
        local owned = 0
        for _, sh in ipairs(w.status(n).shards) do
          if sh.owned then
            if sh.own ~= true then return false end
            owned = owned + 1
          end
        end
        return owned == 2
      end, 10, ("w%d's own positions"):format(n))
    end
    S.kill(handles[1], "STOP")
    S.wait_for("w2 holding 4 leases", 60, function() return held(2) == 4 end, all_logs)
    S.wait_for("w2 counting w1's share again", 60, function() return total(stored()) >= N end, all_logs)
    S.kill(handles[1], "CONT")
    S.wait_for("w1 noticing the loss of both leases", 30, function()
      local _, n = (S.read_file(logs[1]) or ""):gsub("lost the lease of", "")
      return n >= 2
    end, all_logs)
    S.kill(handles[1], "TERM")
    local code = S.wait_exit(handles[1], 30)
    S.sleep(0.5)
    assert.are.same(expected, stored(), all_logs())
    assert.are.equal(1, code, all_logs())
    assert.matches("fenced", S.read_file(logs[1]))
    -- Its last status names the position it was refused (murmur status
    -- prints it too).
    local fenced = S.status(w.data(1)).engine.store.positions_fenced
    assert.is_table(fenced, all_logs())
    for _, key in ipairs(fenced) do assert.matches("#lease:lost_leases#shardId%-", key) end
    local code_st, text = S.murmur_run({ "status", "--data", w.data(1) })
    assert.matches("fenced%): kinesis:", text, tostring(code_st))
    -- Restarted, it reads on from the stored positions: exact again.
    worker(1, live)
    S.wait_for("both workers holding two leases", 90, function() return held(1) == 2 and held(2) == 2 end, all_logs)
    put(stream, N, 400, expected)
    S.wait_for("every record counted", 90, function() return total(stored()) >= N + 400 end, all_logs)
    for n = 1, 2 do
      S.kill(handles[n], "TERM")
      assert.are.equal(0, S.wait_exit(handles[n], 30), all_logs())
    end
    print(("# lost leases: %d records, %d held by the stalled worker, counted once"):format(N, share))
    assert.are.same(expected, stored())
  end)

  it("reports each shard's lag on /metrics", function()
    local stream = new_stream(2)
    put(stream, 0, 100, {})
    local data, path, http = dir .. "/lag", script(stream), S.free_port()
    local h = S.spawn(run_cmd(path, data, "--no-supervisor --listen 127.0.0.1:" .. http), dir .. "/lag.log")
    local shards
    S.wait_status(data, function()
      local st = kinesis_status(data)
      local n = 0
      shards = {}
      for _, sh in ipairs(st and st.shards or {}) do
        n = n + sh.records
        if sh.millis_behind_latest >= 0 then shards[sh.shard] = sh.millis_behind_latest end
      end
      return n == 100 and next(shards) ~= nil
    end, 60, "the records read and the lag known")
    local _, body = S.exec(("curl -s http://127.0.0.1:%d/metrics"):format(http))
    S.kill(h, "TERM")
    assert.are.equal(0, S.wait_exit(h, 20))
    local scrape = require("spec.scrape")
    local p = scrape.checked(dir, body)
    for shard in pairs(shards) do
      local v = scrape.value(p, "murmur_source_lag_seconds", { source = "kinesis:" .. stream, partition = shard })
      assert.is_number(v, shard .. ": " .. body:match("[^\n]*lag[^\n]*") or "")
      assert.is_true(v >= 0)
    end
  end)

  -- A fault proxy in front of kinesalite (tests/node/fault_proxy.js),
  -- logging to log: returns its port and a table whose h is the murmur run
  -- the case starts through it. Both are stopped at the case's end by one
  -- finally, since busted keeps only a test's last one.
  local function fault_proxy(log)
    local run = {}
    local proxy = S.spawn(("node %s/tests/node/fault_proxy.js --target %d"):format(S.root, port), log)
    finally(function()
      if run.h then S.kill(run.h, "KILL") S.wait_exit(run.h, 5) end
      S.kill(proxy, "TERM")
      S.wait_exit(proxy, 5)
    end)
    return S.wait_port(log, 10), run
  end

  it("backs off when throttled, renews expired iterators, retries 5xx, and stays exact", function()
    local plog = dir .. "/proxy.log"
    local pport, run = fault_proxy(plog)
    local rules = core.json_encode({ rules = {
      { op = "GetRecords", action = "throttle", rate = 0.3 },
      { op = "GetRecords", action = "expired_iterator", after = 4, count = 3 },
      { op = "GetRecords", action = "error500", after = 10, count = 2 },
    } })
    local code, out = S.exec(("curl -s -X POST --data-binary %s http://127.0.0.1:%d/__faults"):format(S.quote(rules), pport))
    assert(code == 0 and out:find("ok"), out)
    local stream, expected = new_stream(2), {}
    put(stream, 0, 600, expected)
    local data, path = dir .. "/faults", script(stream, ", limit = 40")
    local h = S.spawn(("%s %s run %s --no-supervisor --data %s --kinesis-endpoint http://127.0.0.1:%d"):format(ENV,
      S.quote(S.murmur), S.quote(path), data, pport), dir .. "/faults.log")
    run.h = h
    local st
    S.wait_status(data, function()
      st = kinesis_status(data)
      local n = 0
      for _, sh in ipairs(st and st.shards or {}) do n = n + sh.records end
      return n == 600
    end, 120, "600 records read through the faults")
    S.kill(h, "TERM")
    assert.are.equal(0, S.wait_exit(h, 30), S.read_file(dir .. "/faults.log"))
    run.h = nil
    assert.are.same(expected, counts(data))
    local throttles, renewals, errors = 0, 0, 0
    for _, sh in ipairs(st.shards) do
      throttles, renewals, errors = throttles + sh.throttles, renewals + sh.iterator_renewals, errors + sh.errors
    end
    assert.is_true(throttles > 0, "no throttle counted")
    assert.are.equal(3, renewals)
    assert.are.equal(2, errors)
  end)

  -- Container credentials (ECS, Lambda) fetched on the loop. A hot reload
  -- adds a Kinesis pipeline while the credentials endpoint fails its first
  -- two answers and takes 1.5 s over each: before, opening the source
  -- fetched them with a blocking request on the loop thread, so the reload
  -- was refused at the first 500 (and a slow endpoint stopped the loop for
  -- as long as it took). Now the calls wait for the fetch, fail retriably
  -- when it fails, and the source backs off and fetches again; the loop
  -- never waits (the blocked loop lag, looplag.h, stays under 50 ms). The
  -- proxy checks every Kinesis request's signature against the container's
  -- secret and token, so the records counted were read with those keys.
  it("fetches container credentials on the loop, retrying a failing endpoint, during a hot reload", function()
    local plog = dir .. "/cproxy.log"
    local pport, run = fault_proxy(plog)
    local function post(path, doc)
      local code, out = S.exec(("curl -s -X POST --data-binary %s http://127.0.0.1:%d%s"):format(
        S.quote(core.json_encode(doc)), pport, path))
      assert(code == 0 and out:find("ok"), out)
    end
    post("/__faults", { verify_secret = "container-secret", require_token = "container-token", rules = {} })
    post("/__creds", { AccessKeyId = "ASIACONTAINER", SecretAccessKey = "container-secret",
      Token = "container-token", Expiration = "2099-01-01T00:00:00Z", fail = 2, delay_ms = 1500 })
    local stream, expected = new_stream(2), {}
    put(stream, 0, 300, expected)
    local data, p, input = dir .. "/creds", dir .. "/creds.lua", dir .. "/creds-in.jsonl"
    S.write_file(input, '{"key":"f"}\n')
    local files = ([[
local murmur = require("murmur")
murmur.pipeline { name = "files", source = murmur.file { path = %q, follow = true },
  key = "key", monoid = murmur.count(), flush = { interval = "100ms" } }
]]):format(input)
    S.write_file(p, files)
    local env = ("env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN "
      .. "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:%d/creds"):format(pport)
    local h = S.spawn(("%s %s run %s --no-supervisor --data %s --kinesis-endpoint http://127.0.0.1:%d"):format(env,
      S.quote(S.murmur), S.quote(p), data, pport), dir .. "/creds.log")
    run.h = h
    S.wait_status(data, function(st) return st.engine and st.engine.records == 1 end, 20, "the file's record")
    S.write_file(p, files .. S.read_file(script(stream)):gsub('^local murmur = require%("murmur"%)\n', ""))
    local st
    S.wait_status(data, function(s)
      st = s
      local k = kinesis_status(data)
      local n = 0
      for _, sh in ipairs(k and k.shards or {}) do n = n + sh.records end
      return s.reload.ok == 1 and n == 300
    end, 90, "the reload and 300 Kinesis records")
    S.kill(h, "TERM")
    assert.are.equal(0, S.wait_exit(h, 30), S.read_file(dir .. "/creds.log"))
    run.h = nil
    assert.are.same(expected, counts(data))
    local _, out = S.exec(("curl -s http://127.0.0.1:%d/__stats"):format(pport))
    local pst = core.json_decode(out)
    assert.is_true(pst.requests.creds >= 3, out)
    assert.is_true(pst.signatures_checked > 0, out)
    assert.matches("container credentials endpoint", S.read_file(dir .. "/creds.log"))
    print(("# container credentials: %d fetches, blocked loop lag max %.1f ms"):format(pst.requests.creds,
      st.engine.loop_block_ms_max))
    assert.is_true(st.engine.loop_block_ms_max < 50, ("blocked loop lag %.1f ms"):format(st.engine.loop_block_ms_max))
  end)

  it("refuses an endpoint the script chooses unless it is granted", function()
    local path = dir .. "/ungranted.lua"
    S.write_file(path, ([[
local murmur = require("murmur")
murmur.pipeline {
  name = "counts",
  source = murmur.kinesis { stream = "x", endpoint = "http://127.0.0.1:%d" },
  key = "key", monoid = murmur.count(),
}
]]):format(port))
    local code, _, err = S.murmur_run({ "check", path })
    assert.are_not.equal(0, code)
    assert.matches("would receive the AWS credentials: run with %-%-allow net:127%.0%.0%.1:" .. port, err)
    code, _, err = S.murmur_run({ "check", path, "--allow", "net:127.0.0.1:" .. port })
    assert.are.equal(0, code, err)
  end)

  it("stops with a clear message when the stream does not exist", function()
    local path = script("no-such-stream")
    local code, _, err = S.exec(run_cmd(path, dir .. "/missing", "--once"))
    assert.are_not.equal(0, code)
    assert.matches("ResourceNotFoundException", err)
  end)
end)
