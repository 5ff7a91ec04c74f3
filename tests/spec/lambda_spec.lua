-- `murmur lambda`, the AWS Lambda custom runtime, tested without AWS
-- (issue 10, sections 1 and 3). Everything runs on 127.0.0.1 and is stopped
-- at the end:
--   * tests/node/lambda_emulator.js, a Runtime API written from the AWS
--     documentation, first shown faithful by AWS's own runtime interface
--     client (npm aws-lambda-ric) running a Node handler against it;
--   * tests/node/kinesis_lambda_feed.mjs, the Kinesis event source mapping:
--     records put into kinesalite with the AWS SDK for JavaScript v3 and read
--     back with GetRecords (real shards and sequence numbers), invoked batch
--     by batch, retried from the lowest reported batchItemFailure;
--   * dynalite behind tests/node/fault_proxy.js, the DynamoDB store.
-- pipelines/recently_interacted.lua runs unchanged; its stored Top-K (fewer
-- entities than K, so Misra-Gries is exact) must equal the one computed here
-- from the input, whatever the faults.
local S = require("spec.support")
local core = require("murmur.core")

local have = S.have_dynalite and io.open(S.root .. "/tests/node/node_modules/kinesalite/package.json") ~= nil
  and io.open(S.root .. "/tests/node/node_modules/aws-lambda-ric/index.mjs") ~= nil
local d = have and describe or pending

local SECRET, TOKEN = "lambda-spec-secret", "lambda-spec-session-token"
local SCRIPT = "pipelines/recently_interacted.lua"

-- Events with repeated event ids; a repeat carries the same entity, as a
-- redelivery would. 12 entities, under recently_interacted's K = 32.
local function gen_events(path, n, ids, seed)
  local f = assert(io.open(path, "w"))
  local x = seed
  for _ = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    local id = x % ids
    f:write(('{"event_id":"e%d","entity_id":"ent%d"}\n'):format(id, (id * 7) % 12))
  end
  f:close()
end

-- The exact counts: each event id once.
local function expected(path)
  local seen, counts = {}, {}
  for _, line in ipairs(S.lines(path)) do
    local ev = core.json_decode(line)
    if not seen[ev.event_id] then
      seen[ev.event_id] = true
      counts[ev.entity_id] = (counts[ev.entity_id] or 0) + 1
    end
  end
  return counts
end

local function curl(port, method, path, body)
  local _, out = S.exec(("curl -s --max-time 120 -X %s %s http://127.0.0.1:%d%s"):format(method,
    body and ("--data-binary " .. S.quote(body)) or "", port, path))
  return out
end

local function b64(s)
  local _, out = S.exec("printf %s " .. S.quote(s) .. " | base64 -w0")
  return out
end

d("#lambda the Lambda runtime through the Runtime API emulator", function()
  local dir, dyn, dport, proxy, pport
  local emus = {}

  setup(function()
    dir = S.tmpdir()
    dyn, dport = S.start_dynalite(dir, dir .. "/db")
    local log = dir .. "/proxy.log"
    proxy = S.spawn(("node %s/tests/node/fault_proxy.js --target %d --seed 7"):format(S.root, dport), log)
    pport = S.wait_port(log, 10)
  end)

  teardown(function()
    for _, e in ipairs(emus) do
      curl(e.port, "POST", "/test/stop")
      if not S.wait_exit(e.h, 10) then S.kill(e.h, "KILL") end
    end
    if proxy then S.kill(proxy, "TERM") S.wait_exit(proxy, 5) end
    if dyn then S.kill(dyn, "TERM") S.wait_exit(dyn, 5) end
    S.rm_rf(dir)
  end)

  local function faults(rules)
    curl(pport, "POST", "/__faults", core.json_encode({ rules = rules, verify_secret = SECRET, require_token = TOKEN }))
  end

  -- The environment a Lambda function of ours gets: its credentials (with a
  -- session token, which the proxy requires) and the table.
  local function env(tbl)
    return ("env AWS_ACCESS_KEY_ID=AKIDLAMBDA AWS_SECRET_ACCESS_KEY=%s AWS_SESSION_TOKEN=%s "
      .. "MURMUR_DYNAMODB_TABLE=%s MURMUR_DYNAMODB_ENDPOINT=http://127.0.0.1:%d MURMUR_LUA_DIR=%s/lua")
      :format(SECRET, TOKEN, tbl, pport, S.root)
  end

  local tables = 0
  local function new_table()
    tables = tables + 1
    local name = ("lambda_%d_%d"):format(os.time() % 100000, tables)
    faults({})
    local code, _, err = S.exec(env(name) .. " " .. S.quote(S.murmur) .. " ddb create-table")
    assert.are.equal(0, code, err)
    return name
  end

  -- Starts the emulator with a runtime command; returns its port.
  local function emulator(handler, cmd, root)
    local log = dir .. "/emulator-" .. #emus .. ".log"
    local h = S.spawn(("node %s/tests/node/lambda_emulator.js --handler %s --task-root %s -- %s")
      :format(S.root, S.quote(handler), S.quote(root or S.root), cmd), log)
    local port = S.wait_port(log, 10)
    emus[#emus + 1] = { h = h, port = port, log = log }
    return port, log
  end

  local function murmur_lambda(tbl, data, extra)
    return emulator(SCRIPT, ("%s %s lambda --store dynamodb --data %s --log-level info %s")
      :format(env(tbl), S.quote(S.murmur), S.quote(data), extra or ""))
  end

  local function feed(port, input, args)
    local code, out, err = S.exec(("node %s/tests/node/kinesis_lambda_feed.mjs --emulator %d --input %s %s 2>%s")
      :format(S.root, port, S.quote(input), args or "", S.quote(dir .. "/feed.err")))
    assert.are.equal(0, code, (err or "") .. (S.read_file(dir .. "/feed.err") or ""))
    return core.json_decode(out:match("({[^\n]*})%s*$"))
  end

  local function stored(tbl)
    local code, out, err = S.exec(env(tbl) .. " " .. S.quote(S.murmur) .. " query --store dynamodb --json "
      .. SCRIPT .. " global --data " .. S.quote(dir .. "/q"))
    assert.are.equal(0, code, (err or "") .. (out or ""))
    local got = {}
    for _, it in ipairs(core.json_decode(out).result.items) do got[it.item] = tonumber(it.count) end
    return got, core.json_decode(out).result
  end

  local function assert_exact(tbl, input)
    local got, res = stored(tbl)
    assert.are.same(expected(input), got)
    assert.are.equal(0, tonumber(res.error))
  end

  -- The store's table check runs on the loop now (start()); the runtime
  -- waits for it before its first /next and still reports its failure as
  -- the init error, with the hint that names `murmur ddb create-table`.
  it("reports a missing table as its init error", function()
    faults({})
    local tbl = ("lambda_none_%d"):format(os.time() % 100000)
    local port, log = murmur_lambda(tbl, dir .. "/none")
    local st
    S.wait_for("the init error", 30, function()
      st = core.json_decode(curl(port, "GET", "/test/state"))
      return st and #st.init_errors > 0
    end)
    local e = st.init_errors[1]
    assert.are.equal("Runtime.InitError", e.type, S.read_file(log))
    local msg = core.json_decode(e.body).errorMessage
    assert.matches(("table '%s' does not exist"):format(tbl), msg, 1, true)
    assert.matches("murmur ddb create-table --table " .. tbl, msg, 1, true)
    assert.are.equal(0, st.invocations)
  end)

  -- The handler is loaded in the runtime itself, with no probe child first
  -- (murmur.isolate.load_in_process): the loader's limits still apply, and a
  -- script that fails or runs past its time limit while loading is the init
  -- error, with its reason, and never reaches /next.
  it("reports a script that fails or runs too long while loading as its init error", function()
    local root = dir .. "/handlers"
    S.exec("mkdir -p " .. S.quote(root))
    S.write_file(root .. "/broken.lua", 'local murmur = require("murmur")\nerror("broken on purpose")\n')
    S.write_file(root .. "/spin.lua", 'local murmur = require("murmur")\nwhile true do end\n')
    for handler, reason in pairs({ ["broken.lua"] = "broken.lua:2: broken on purpose",
      ["spin.lua"] = "took longer than 0.3s of CPU time" }) do
      local port, log = emulator(handler, ("%s MURMUR_LOAD_TIMEOUT=0.3 %s lambda --store dynamodb --data %s")
        :format(env("lambda_unused"), S.quote(S.murmur), S.quote(dir .. "/handlers-data")), root)
      local st
      S.wait_for("the init error of " .. handler, 30, function()
        st = core.json_decode(curl(port, "GET", "/test/state"))
        return st and #st.init_errors > 0
      end)
      local e = st.init_errors[1]
      assert.are.equal("Runtime.InvalidHandler", e.type, S.read_file(log))
      assert.matches(reason, core.json_decode(e.body).errorMessage, 1, true)
      assert.are.equal(0, #st.ready_ms)
      curl(port, "POST", "/test/stop")
    end
  end)

  it("is what AWS's runtime interface client expects (aws-lambda-ric with a Node handler)", function()
    local port = emulator("lambda_ric_handler.handler",
      ("node %s/tests/node/node_modules/aws-lambda-ric/index.mjs"):format(S.root), S.root .. "/tests/node")
    local function rec(seq, doc)
      return ('{"kinesis":{"kinesisSchemaVersion":"1.0","partitionKey":"p","sequenceNumber":"%s","data":"%s",'
        .. '"approximateArrivalTimestamp":1545084650.987},"eventSource":"aws:kinesis","eventVersion":"1.0",'
        .. '"eventID":"shardId-000000000000:%s","eventName":"aws:kinesis:record","awsRegion":"us-east-1",'
        .. '"eventSourceARN":"arn:aws:kinesis:us-east-1:000000000000:stream/s"}'):format(seq, b64(doc), seq)
    end
    local ev = '{"Records":[' .. rec("101", '{"a":1}') .. "," .. rec("102", '{"fail":true}') .. ","
      .. rec("103", '{"a":2}') .. "]}"
    local r = core.json_decode(curl(port, "POST", "/test/invoke?timeout_ms=5000", ev))
    assert.are.equal("response", r.outcome)
    local body = core.json_decode(r.body)
    assert.are.same({ { itemIdentifier = "102" } }, body.batchItemFailures)
    -- The headers of /next reached the handler: request id, trace id, deadline.
    assert.are.equal(r.request_id, body.requestId)
    assert.truthy(tostring(body.trace):match("^Root=1%-"))
    assert.is_true(body.remainingMs > 0 and body.remainingMs <= 5000)
    -- The Runtime API refuses an answer for an unknown invocation.
    local _, status = S.exec(("curl -s -o /dev/null -w '%%{http_code}' -X POST -d '{}' "
      .. "http://127.0.0.1:%d/2018-06-01/runtime/invocation/nope/response"):format(port))
    assert.are.equal("400", status)
  end)

  it("applies Kinesis batches exactly once across redeliveries; malformed records go to the dead-letter file", function()
    local tbl = new_table()
    local input, raw = dir .. "/events.jsonl", dir .. "/raw.txt"
    gen_events(input, 600, 450, 11)
    S.write_file(raw, "{not json\n!!!not base64!!!\n")
    local data = dir .. "/d1"
    local port = murmur_lambda(tbl, data)
    local st = feed(port, input, "--shards 2 --batch 25 --redeliver 0.3 --seed 5 --raw " .. S.quote(raw))
    assert.is_true(st.redelivered > 0)
    assert.are.equal(0, st.partial + st.errors + st.timeouts + st.crashes)
    assert_exact(tbl, input)
    -- Both malformed records are dead letters; neither failed a batch.
    local dl = S.lines(data .. "/dead-letter/recently_interacted.jsonl")
    local reasons = {}
    for _, l in ipairs(dl) do local e = core.json_decode(l) reasons[e.reason] = (reasons[e.reason] or 0) + 1 end
    assert.are.equal(2, reasons.json, table.concat(dl, "\n"))
    -- An event that is no batch is an invocation error, not a crash.
    local r = core.json_decode(curl(port, "POST", "/test/invoke?timeout_ms=5000", '{"hello":1}'))
    assert.are.equal("error", r.outcome)
    assert.are.equal("Runtime.InvalidEvent", r.error_type)
    local state = core.json_decode(curl(port, "GET", "/test/state"))
    assert.are.equal(1, state.starts)
  end)

  it("reports failures while DynamoDB throttles, fails or is down, and ends exact after redelivery", function()
    local tbl = new_table()
    local input = dir .. "/faults.jsonl"
    gen_events(input, 400, 300, 23)
    local port, log = murmur_lambda(tbl, dir .. "/d2", "--margin 1s")
    -- Throttling and 5xx on a third of the flushes' writes, then 20 of each
    -- operation in an outage (UpdateItem's early, there are fewer of them):
    -- longer than an invocation's 2.5 s budget (a flush attempt gives up
    -- after 10 requests with backoff, about 5 s), so some flushes outlive
    -- their deadline and are reported instead of cut short, and the engine
    -- retries a flush the store gave up on. (Outages of 60 took about 150 s,
    -- mostly the engine's doubling backoff between more attempts of the
    -- same kind.)
    local rules = {}
    for _, op in ipairs({ "UpdateItem", "PutItem" }) do
      rules[#rules + 1] = { op = op, action = "throttle", rate = 0.15 }
      rules[#rules + 1] = { op = op, action = "error500", rate = 0.15 }
      rules[#rules + 1] = { op = op, action = "error503", after = op == "PutItem" and 40 or 10, count = 20 }
    end
    faults(rules)
    local st = feed(port, input, "--shards 2 --batch 20 --timeout-ms 2500 --seed 9")
    faults({})
    assert.is_true(st.partial > 0, core.json_encode(st))
    assert.are.equal(0, st.timeouts, "the runtime was killed at a deadline: " .. core.json_encode(st))
    local text = S.read_file(log) or ""
    assert.is_truthy(text:find("the flush did not finish", 1, true), text)
    assert.is_truthy(text:find("flush of %d+ deltas failed %(attempt 1%)"), text)
    assert.is_truthy(text:find("flush succeeded after", 1, true), text)
    assert_exact(tbl, input)
  end)

  it("reports the whole batch when the shard's position cannot be read, and ends exact after redelivery", function()
    local tbl = new_table()
    local input = dir .. "/posread.jsonl"
    gen_events(input, 90, 70, 41)
    local lines = S.lines(input)
    local port = murmur_lambda(tbl, dir .. "/d4", "--margin 1s")
    -- Three batches of 30 records (arrived now: the arrival time is the
    -- event time of the daily buckets) of one shard of their own stream, whose
    -- position reads (GetItem of the key naming that stream) are throttled,
    -- answered 500, or answered 503 (an outage) each time they are sent. The
    -- store retries the read for about 10 s, longer than the invocation's
    -- 3 s: the runtime must answer at its deadline minus margin with every
    -- record, not be killed by the emulator, and take the next invocation
    -- only when the read has ended.
    local arn = "arn:aws:kinesis:us-east-1:000000000000:stream/posfail"
    local function batch(from)
      local recs, seqs = {}, {}
      for i = from, from + 29 do
        local seq = tostring(1000 + i)
        seqs[#seqs + 1] = { itemIdentifier = seq }
        recs[#recs + 1] = ('{"kinesis":{"kinesisSchemaVersion":"1.0","partitionKey":"p","sequenceNumber":"%s",'
          .. '"data":"%s","approximateArrivalTimestamp":%d.5},"eventSource":"aws:kinesis",'
          .. '"eventVersion":"1.0","eventID":"shardId-000000000000:%s","eventName":"aws:kinesis:record",'
          .. '"awsRegion":"us-east-1","eventSourceARN":"%s"}'):format(seq, b64(lines[i]), os.time(), seq, arn)
      end
      return '{"Records":[' .. table.concat(recs, ",") .. "]}", seqs
    end
    local function invoke(ev, timeout_ms)
      local r = core.json_decode(curl(port, "POST", "/test/invoke?timeout_ms=" .. timeout_ms, ev))
      assert.are.equal("response", r.outcome, core.json_encode(r))
      return core.json_decode(r.body).batchItemFailures or {}
    end
    local function injected(action)
      return core.json_decode(curl(pport, "GET", "/__stats")).injected[action] or 0
    end
    for n, action in ipairs({ "throttle", "error500", "error503" }) do
      local ev, seqs = batch(1 + (n - 1) * 30)
      local before = injected(action)
      faults({ { op = "GetItem", match = "stream/posfail", action = action } })
      assert.are.same(seqs, invoke(ev, 3000), action)
      assert.is_true(injected(action) > before, action)
      -- Lambda sends the batch again once DynamoDB answers.
      faults({})
      assert.are.same({}, invoke(ev, 60000), action)
    end
    -- The runtime answered every invocation: it was never killed or restarted.
    local state = core.json_decode(curl(port, "GET", "/test/state"))
    assert.are.equal(1, state.starts, core.json_encode(state))
    assert_exact(tbl, input)
  end)

  it("stays exact when the runtime is killed mid-batch and the emulator restarts it", function()
    local tbl = new_table()
    local input = dir .. "/kill.jsonl"
    gen_events(input, 400, 300, 31)
    -- A copy of the pipeline whose claims outlive a dead runtime by 2 s, not
    -- 30: the restarted runtime takes them over sooner.
    local script = dir .. "/ri_lease.lua"
    S.write_file(script, (S.read_file(S.root .. "/" .. SCRIPT):gsub("dedup = {",
      'store = murmur.store("dynamodb", { lease = "2s" }),\n  dedup = {')))
    local port = emulator(script, ("%s %s lambda --store dynamodb --data %s")
      :format(env(tbl), S.quote(S.murmur), S.quote(dir .. "/d3")))
    local st = feed(port, input, "--shards 2 --batch 25 --timeout-ms 8000 --kill-at 3")
    local st2 = feed(port, input, "--shards 2 --batch 25 --timeout-ms 8000 --kill-at 2 --stream again")
    assert.is_true(st.kills + st2.kills == 2)
    local state = core.json_decode(curl(port, "GET", "/test/state"))
    assert.is_true(state.starts >= 3, core.json_encode(state))
    assert_exact(tbl, input)
  end)
end)
