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
-- distinct event ids, and `murmur serve` on the same table must answer the
-- same Top-K to a Connect GetWindow. A second run, a Zipf stream over more entities than K
-- through both channels with the same redeliveries, must stay within the
-- Misra-Gries bounds (every true count within its reported [lower, upper],
-- n exact). Everything runs on 127.0.0.1 and is stopped at the end.
local S = require("spec.support")
local core = require("murmur.core")
local SV = require("spec.serve_support")

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

-- Routes events to the two channels by their numeric id: id % 3 == 0 to
-- Kafka only, 1 to Kinesis only, 2 to both. `events` is a list of
-- { id = number, entity = string, line = JSON text }. Returns the two files,
-- their line counts and the exact counts: each event id once, whichever
-- channel brought it first.
local function route(dir, name, events)
  local kafka, kinesis = ("%s/%s-kafka.jsonl"):format(dir, name), ("%s/%s-kinesis.jsonl"):format(dir, name)
  local kf, lf = assert(io.open(kafka, "w")), assert(io.open(kinesis, "w"))
  local seen, truth, nk, nl, distinct = {}, {}, 0, 0, 0
  for _, e in ipairs(events) do
    if e.id % 3 ~= 1 then kf:write(e.line, "\n") nk = nk + 1 end
    if e.id % 3 ~= 0 then lf:write(e.line, "\n") nl = nl + 1 end
    if not seen[e.id] then
      seen[e.id] = true
      truth[e.entity] = (truth[e.entity] or 0) + 1
      distinct = distinct + 1
    end
  end
  kf:close()
  lf:close()
  return { kafka = kafka, nk = nk, kinesis = kinesis, nl = nl, truth = truth, distinct = distinct }
end

-- Draws n events from `ids` event ids (so ids repeat within a channel, as a
-- producer's retry would) over ENTITIES entities; a repeated id carries the
-- same entity.
local function draws(n, ids, seed)
  local out, x = {}, seed
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    local id = math.floor(x / 65536) % ids
    -- Entities skewed (a square of a spread of the id), so counts differ.
    local ent = ("ent%d"):format(math.floor(((id * 7919) % ids / ids) ^ 2 * ENTITIES))
    out[i] = { id = id, entity = ent, line = ('{"event_id":"t%d","entity_id":"%s"}'):format(id, ent) }
  end
  return out
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
  local dir, dyn, dport, mock, env
  local eports = {}
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

  -- The shipped pipeline runs unchanged; the worker's second script (LEASE,
  -- written in setup) sets the store's claim lease to 10 s instead of 30 s
  -- (one store per process takes the options of every pipeline), so the
  -- restarted worker waits 20 s less for the claims of the one it replaced.
  -- A 3 s session (librdkafka's mock holds a rebalance for the session
  -- timeout less 1 s) lets the restarted member in 3 s sooner.
  local function worker(data, topic, group, extra)
    return ("env MURMUR_STORE=dynamodb %s %s run --no-supervisor --data %s --kafka-brokers %s --kafka-topic %s "
      .. "--kafka-group %s -X session.timeout.ms=3000 -X heartbeat.interval.ms=500 %s %s %s")
      :format(env, S.quote(S.murmur), S.quote(data), mock.bs, topic, group, extra or "", SCRIPT, S.quote(dir .. "/lease.lua"))
  end

  -- A new table for a run; env names it from then on.
  local function use_table(name)
    env = ("AWS_ACCESS_KEY_ID=AKIDTOPO AWS_SECRET_ACCESS_KEY=topo MURMUR_DYNAMODB_TABLE=%s "
      .. "MURMUR_DYNAMODB_ENDPOINT=http://127.0.0.1:%d MURMUR_LUA_DIR=%s/lua"):format(name, dport, S.root)
    local code, _, err = S.exec(("env %s %s ddb create-table"):format(env, S.quote(S.murmur)))
    assert.are.equal(0, code, err)
  end

  -- The Lambda side: `murmur lambda` behind the emulator; returns its port.
  local function lambda_side(name)
    local elog = ("%s/emulator-%s.log"):format(dir, name)
    spawn(("node %s/tests/node/lambda_emulator.js --handler %s --task-root %s -- env %s %s lambda "
      .. "--store dynamodb --data %s"):format(S.root, SCRIPT, S.root, env, S.quote(S.murmur),
      S.quote(dir .. "/lambda-" .. name)), elog)
    local port = S.wait_port(elog, 10)
    eports[#eports + 1] = port
    return port
  end

  -- The feed in the background, redelivering a third of its successful
  -- batches; finish_feed waits for it and returns its summary.
  local function start_feed(port, input, stream)
    return spawn(("node %s/tests/node/kinesis_lambda_feed.mjs --emulator %d --input %s --shards 2 --batch 25 "
      .. "--redeliver 0.3 --seed 3 --stream %s"):format(S.root, port, S.quote(input), stream),
      ("%s/feed-%s.log"):format(dir, stream))
  end

  local function finish_feed(h)
    assert.is_not_nil(S.wait_exit(h, 120), "the feed did not finish: " .. (S.read_file(h.log) or ""))
    procs[h] = nil
    local st = core.json_decode((S.read_file(h.log) or ""):match("({[^\n]*})%s*$"))
    assert.is_true(st.redelivered > 0, core.json_encode(st))
    assert.are.equal(0, st.errors + st.timeouts + st.crashes, core.json_encode(st))
    return st
  end

  -- A second consumer group reads the whole topic again: every Kafka
  -- record is redelivered and found a duplicate.
  local function replay_topic(topic, n)
    local code, out, err = S.exec(worker(dir .. "/replay-" .. topic, topic, topic .. "-replay", "--once --stats"))
    assert.are.equal(0, code, err)
    local replay = core.json_decode(out).pipelines.recently_interacted
    assert.are.equal(0, replay.accepted, out)
    assert.are.equal(n, replay.duplicates, out)
  end

  -- recently_interacted's Top-K as `murmur query` reads it from the table.
  local function stored()
    local code, out, err = S.exec(("env %s %s query --store dynamodb --json %s global --window 30d --data %s")
      :format(env, S.quote(S.murmur), SCRIPT, S.quote(dir .. "/q")))
    assert.are.equal(0, code, err)
    return core.json_decode(out).result
  end

  setup(function()
    dir = S.tmpdir()
    dyn, dport = S.start_dynalite(dir, dir .. "/db")
    mock = S.kafka_mock_start(dir, 1)
    S.write_file(dir .. "/lease.lua", [[
local murmur = require("murmur")
murmur.pipeline { name = "topo_lease", key = murmur.literal("all"), monoid = murmur.count(),
  store = murmur.store("dynamodb", { lease = "10s" }) }
]])
  end)

  teardown(function()
    if mock then S.kafka_mock_stop(mock) end
    for _, port in ipairs(eports) do
      S.exec(("curl -s --max-time 10 -X POST http://127.0.0.1:%d/test/stop"):format(port))
    end
    for h in pairs(procs) do
      S.kill(h, "KILL")
      S.wait_exit(h, 5)
    end
    if dyn then S.kill(dyn, "TERM") S.wait_exit(dyn, 5) end
    if os.getenv("TOPOLOGY_SPEC_KEEP") then print("# kept " .. dir) else S.rm_rf(dir) end
  end)

  it("stores the exact Top-K with shared event ids, redeliveries on both sides and a kill -9", function()
    use_table("topology")
    mock_cmd("topic topo 2")
    local ev = route(dir, "exact", draws(1500, 1000, 17))
    local k1, k2 = halves(ev.kafka, ev.nk)
    local d1 = dir .. "/w1"
    local eport = lambda_side("exact")
    local w = spawn(worker(d1, "topo", "topo1"), dir .. "/w1a.log")
    wait_for("the worker's assignment", 60, function()
      local st = kafka_status(d1)
      return st and #st.partitions == 2
    end)
    local feed = start_feed(eport, ev.kinesis, "topo")

    -- The Kafka side, while the feed runs: half the topic, a kill -9 as soon
    -- as the worker has read some of it, the other half, and a restart that
    -- reads again what the dead worker had not committed.
    produce("topo", k1)
    wait_for("the worker to read", 30, function()
      for _, p in ipairs((kafka_status(d1) or {}).partitions or {}) do if p.records > 0 then return true end end
    end)
    stop(w, "KILL")
    produce("topo", k2)
    w = spawn(worker(d1, "topo", "topo1"), dir .. "/w1b.log")
    -- The dead worker's claims hold their events until its lease (10 s) ends.
    wait_for("the restarted worker to catch up", 120, function() return caught_up(d1, ev.nk) end,
      function() return core.json_encode(kafka_status(d1) or {}) end)
    assert.are.equal(0, stop(w, "TERM", 60))
    replay_topic("topo", ev.nk)
    local st = finish_feed(feed)

    local res = stored()
    -- The query service reads the same table and answers the same Top-K.
    local sh, sport = SV.start({ SCRIPT, "--store", "dynamodb", "--data", dir .. "/q", "--listen", "127.0.0.1:0" },
      dir .. "/serve.log", "env " .. env)
    procs[sh] = true
    local _, body = S.exec(("curl -s --max-time 20 -X POST -H 'content-type: application/json' --data-binary %s "
      .. "http://127.0.0.1:%d/murmur.v1.QueryService/GetWindow"):format(S.quote(core.json_encode(
      { pipeline = "recently_interacted", entity = "global", window = "30d" })), sport))
    assert.are.equal(0, stop(sh, "TERM", 10))
    local served = core.json_decode(body).result.topk
    assert.are.equal(SV.digits(res.n), served.n, body)
    assert.are.equal(#res.items, #served.items, body)
    for i, it in ipairs(res.items) do
      assert.are.same({ item = it.item, count = SV.digits(it.count), lower = SV.digits(it.lower),
        upper = SV.digits(it.upper) }, served.items[i])
    end
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

  -- More entities than K: Misra-Gries is approximate, within its bounds.
  it("keeps a Zipf stream over more entities than K within the Misra-Gries bounds", function()
    use_table("topology_zipf")
    mock_cmd("topic zipf 2")
    local path = dir .. "/zipf.jsonl"
    S.gen_events(path, 2400, 400, 1.1, 29)
    local events = {}
    for line in io.lines(path) do
      events[#events + 1] = { id = tonumber(line:match('"event_id":"e(%d+)"')),
        entity = line:match('"entity_id":"([^"]+)"'), line = line }
    end
    local ev = route(dir, "zipf", events)
    local feed = start_feed(lambda_side("zipf"), ev.kinesis, "zipf")
    produce("zipf", ev.kafka)
    local code, _, err = S.exec(worker(dir .. "/wz", "zipf", "zipf1", "--once"))
    assert.are.equal(0, code, err)
    replay_topic("zipf", ev.nk)
    finish_feed(feed)

    local res, K = stored(), 32
    local reported, bad = {}, {}
    for _, it in ipairs(res.items) do
      local truth = ev.truth[it.item] or 0
      reported[it.item] = true
      if not (it.lower <= truth and truth <= it.upper) then
        bad[#bad + 1] = ("%s: %d not in [%d, %d]"):format(it.item, truth, it.lower, it.upper)
      end
    end
    -- An entity the summary dropped was counted at most `error` times.
    for ent, truth in pairs(ev.truth) do
      if not reported[ent] and truth > res.error then
        bad[#bad + 1] = ("%s: %d, not reported, above the error %d"):format(ent, truth, res.error)
      end
    end
    local distinct = 0
    for _ in pairs(ev.truth) do distinct = distinct + 1 end
    print(("# topology zipf: %d events over %d entities, stored n %d, error %d, %d items"):format(ev.distinct,
      distinct, res.n, res.error, #res.items))
    assert.is_true(distinct > K)
    assert.are.same({}, bad)
    assert.are.equal(ev.distinct, res.n)
    assert.is_true(res.error <= ev.distinct / (K + 1))
  end)
end)
