-- The seed's two-source topology end to end (issue 10, section 5): a Kafka
-- worker (`murmur run` on librdkafka's mock cluster) and the Lambda runtime
-- (`murmur lambda` behind tests/node/lambda_emulator.js, fed from kinesalite
-- by tests/node/kinesis_lambda_feed.mjs) both run
-- pipelines/recently_interacted.lua unchanged into one dynalite table, so
-- they share its state and its dedup claims (event ids).
--
-- A third of the event ids go through both channels; each channel also
-- redelivers some of its own (the feed's --redeliver, and a second consumer
-- group reading the whole topic again); the Kafka worker is killed with
-- kill -9 while both channels are busy and restarted. The events name 20
-- entities, fewer than K = 32, so Misra-Gries is exact: the Top-K read back
-- with `murmur query` from DynamoDB must hold every entity's exact count of
-- distinct event ids. Everything runs on 127.0.0.1 and is stopped at the end.
local S = require("spec.support")
local core = require("murmur.core")

local have = S.have_dynalite and io.open(S.root .. "/tests/node/node_modules/kinesalite/package.json") ~= nil
local d = have and describe or pending

local SCRIPT = "pipelines/recently_interacted.lua"
local ENTITIES = 20

local wait_for = S.wait_for

-- The Kafka source's status in a worker's status.json, or nil.
local function kafka_status(data)
  local st = S.status(data)
  for id, src in pairs(st and st.engine and st.engine.sources or {}) do
    if id:match("^kafka:") and src.status then return src.status end
  end
end

-- True when the worker read `total` records over its partitions and
-- committed every one of them.
local function caught_up(data, total)
  local st, sum = kafka_status(data), 0
  if not st then return false end
  for _, p in ipairs(st.partitions) do
    if p.state ~= "assigned" or p.lag ~= 0 then return false end
    if p.position >= 0 then
      if p.committed ~= p.position then return false end
      sum = sum + p.position
    end
  end
  return sum == total
end

-- Draws n events from `ids` event ids (so ids repeat within a channel, as a
-- producer's retry would) and routes each by its id: id % 3 == 0 to Kafka
-- only, 1 to Kinesis only, 2 to both. A repeated id carries the same
-- entity. Returns the two files' line counts and the exact counts: each
-- event id once, whichever channel brought it first.
local function gen(dir, n, ids, seed)
  local kf = assert(io.open(dir .. "/kafka.jsonl", "w"))
  local lf = assert(io.open(dir .. "/kinesis.jsonl", "w"))
  local seen, truth, nk, nl, distinct = {}, {}, 0, 0, 0
  local x = seed
  for _ = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    local id = math.floor(x / 65536) % ids
    -- Entities skewed (a square of a spread of the id), so counts differ.
    local ent = ("ent%d"):format(math.floor(((id * 7919) % ids / ids) ^ 2 * ENTITIES))
    local line = ('{"event_id":"t%d","entity_id":"%s"}\n'):format(id, ent)
    if id % 3 ~= 1 then kf:write(line) nk = nk + 1 end
    if id % 3 ~= 0 then lf:write(line) nl = nl + 1 end
    if not seen[id] then
      seen[id] = true
      truth[ent] = (truth[ent] or 0) + 1
      distinct = distinct + 1
    end
  end
  kf:close()
  lf:close()
  return { kafka = dir .. "/kafka.jsonl", nk = nk, kinesis = dir .. "/kinesis.jsonl", nl = nl,
    truth = truth, distinct = distinct }
end

-- Splits a file into two of consecutive lines; returns their paths.
local function halves(path, n)
  local a, b = path .. ".1", path .. ".2"
  local fa, fb, i = assert(io.open(a, "w")), assert(io.open(b, "w")), 0
  for line in io.lines(path) do
    i = i + 1
    ;(i <= n / 2 and fa or fb):write(line, "\n")
  end
  fa:close()
  fb:close()
  return a, b
end

d("#topology Kafka worker and Lambda runtime into one DynamoDB table", function()
  local dir, dyn, mock, env, eport
  local procs = {}

  local function spawn(cmd, log)
    local h = S.spawn(cmd, log)
    h.log = log
    procs[h] = true
    return h
  end

  local function stop(h, sig, seconds)
    S.kill(h, sig)
    local code = S.wait_exit(h, seconds or 30)
    procs[h] = nil
    return code
  end

  local function mock_cmd(cmd)
    S.kafka_mock_cmd(mock, cmd)
  end

  local function produce(topic, file)
    local code, _, err = S.exec(("awk '{print NR \"\\t\" $0}' %s | kcat -P -b %s -t %s -K '\\t' -X linger.ms=20")
      :format(S.quote(file), mock.bs, topic))
    assert.are.equal(0, code, err)
  end

  local function worker(data, group, extra)
    return ("env MURMUR_STORE=dynamodb %s %s run --no-supervisor --data %s --kafka-brokers %s --kafka-topic topo --kafka-group %s "
      .. "-X session.timeout.ms=6000 -X heartbeat.interval.ms=500 %s %s")
      :format(env, S.quote(S.murmur), S.quote(data), mock.bs, group, extra or "", SCRIPT)
  end

  setup(function()
    dir = S.tmpdir()
    local port
    dyn, port = S.start_dynalite(dir, dir .. "/db")
    env = ("AWS_ACCESS_KEY_ID=AKIDTOPO AWS_SECRET_ACCESS_KEY=topo MURMUR_DYNAMODB_TABLE=topology "
      .. "MURMUR_DYNAMODB_ENDPOINT=http://127.0.0.1:%d MURMUR_LUA_DIR=%s/lua"):format(port, S.root)
    local code, _, err = S.exec(("env %s %s ddb create-table"):format(env, S.quote(S.murmur)))
    assert.are.equal(0, code, err)
    mock = S.kafka_mock_start(dir, 1)
    mock_cmd("topic topo 2")
  end)

  teardown(function()
    if mock then S.kafka_mock_stop(mock) end
    if eport then S.exec(("curl -s --max-time 10 -X POST http://127.0.0.1:%d/test/stop"):format(eport)) end
    for h in pairs(procs) do
      S.kill(h, "KILL")
      S.wait_exit(h, 5)
    end
    if dyn then S.kill(dyn, "TERM") S.wait_exit(dyn, 5) end
    if os.getenv("TOPOLOGY_SPEC_KEEP") then print("# kept " .. dir) else S.rm_rf(dir) end
  end)

  it("stores the exact Top-K with shared event ids, redeliveries on both sides and a kill -9", function()
    local ev = gen(dir, 1500, 1000, 17)
    local k1, k2 = halves(ev.kafka, ev.nk)
    local d1 = dir .. "/w1"

    -- The Lambda side: the runtime behind the emulator, and the feed in the
    -- background, redelivering a third of its successful batches.
    local elog = dir .. "/emulator.log"
    spawn(("node %s/tests/node/lambda_emulator.js --handler %s --task-root %s -- env %s %s lambda "
      .. "--store dynamodb --data %s"):format(S.root, SCRIPT, S.root, env, S.quote(S.murmur),
      S.quote(dir .. "/lambda")), elog)
    eport = S.wait_port(elog, 10)

    local w = spawn(worker(d1, "topo1"), dir .. "/w1a.log")
    wait_for("the worker's assignment", 60, function()
      local st = kafka_status(d1)
      return st and #st.partitions == 2
    end)
    local flog = dir .. "/feed.log"
    local feed = spawn(("node %s/tests/node/kinesis_lambda_feed.mjs --emulator %d --input %s --shards 2 --batch 25 "
      .. "--redeliver 0.3 --seed 3 --stream topo"):format(S.root, eport, S.quote(ev.kinesis)), flog)

    -- The Kafka side, while the feed runs: half the topic, a kill -9 as soon
    -- as the worker has read some of it, the other half, and a restart that
    -- reads again what the dead worker had not committed.
    produce("topo", k1)
    wait_for("the worker to read", 30, function()
      for _, p in ipairs((kafka_status(d1) or {}).partitions or {}) do if p.records > 0 then return true end end
    end)
    stop(w, "KILL")
    produce("topo", k2)
    w = spawn(worker(d1, "topo1"), dir .. "/w1b.log")
    -- The dead worker's claims hold their events until its lease (30 s) ends.
    wait_for("the restarted worker to catch up", 120, function() return caught_up(d1, ev.nk) end,
      function() return core.json_encode(kafka_status(d1) or {}) end)
    assert.are.equal(0, stop(w, "TERM", 60))

    -- A second consumer group reads the whole topic again: every Kafka
    -- record redelivered.
    local code, out, err = S.exec(worker(dir .. "/w2", "topo2", "--once --stats"))
    assert.are.equal(0, code, err)
    local replay = core.json_decode(out).pipelines.recently_interacted
    assert.are.equal(0, replay.accepted, out)
    assert.are.equal(ev.nk, replay.duplicates, out)

    assert.is_not_nil(S.wait_exit(feed, 120), "the feed did not finish: " .. (S.read_file(flog) or ""))
    procs[feed] = nil
    local st = core.json_decode((S.read_file(flog) or ""):match("({[^\n]*})%s*$"))
    assert.is_true(st.redelivered > 0, core.json_encode(st))
    assert.are.equal(0, st.errors + st.timeouts + st.crashes, core.json_encode(st))

    code, out, err = S.exec(("env %s %s query --store dynamodb --json %s global --window 30d --data %s")
      :format(env, S.quote(S.murmur), SCRIPT, S.quote(dir .. "/q")))
    assert.are.equal(0, code, err)
    local res = core.json_decode(out).result
    local got, bad = {}, {}
    for _, it in ipairs(res.items) do
      got[it.item] = it.count
      if it.lower ~= it.upper then bad[#bad + 1] = ("%s: [%d, %d]"):format(it.item, it.lower, it.upper) end
    end
    print(("# topology: %d event ids, %d Kafka records (+%d replayed by a second group), %d Kinesis records, "
      .. "%d batches redelivered, %d partial; stored n %d"):format(ev.distinct, ev.nk, ev.nk, ev.nl,
      st.redelivered, st.partial, res.n))
    assert.are.same({}, bad)
    assert.are.same(ev.truth, got)
    assert.are.equal(ev.distinct, res.n)
    assert.are.equal(0, tonumber(res.error))
  end)
end)
