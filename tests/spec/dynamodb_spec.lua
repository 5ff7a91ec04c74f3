-- DynamoDB store end to end: `murmur run`, `murmur query` and `murmur ddb`
-- against dynalite, most runs through the fault-injecting proxy, which also
-- recomputes every request's SigV4 signature (tests/node/fault_proxy.js).
-- Both services are started here on 127.0.0.1 and stopped at the end;
-- without node or tests/node/node_modules (make deps) the spec is pending.
--
-- Exact answers are computed here from the generated input files, and the
-- stored values are read back in this process through murmur.core (the same
-- store code, read-only) or compared with the embedded LMDB store's answer
-- on the same input.
local S = require("spec.support")
local core = require("murmur.core")
local ffi = require("ffi")

ffi.cdef [[ int setenv(const char *name, const char *value, int overwrite); ]]

local SECRET = "spec-secret"
local wait_port = S.wait_port
local d = S.have_dynalite and describe or pending

d("#dynamodb DynamoDB store against dynalite", function()
  local dir, dyn, proxy, dyn_port, proxy_port, dbpath
  local tables = 0

  local function start_dynalite(port)
    local p
    dyn, p = S.start_dynalite(dir, dbpath, port)
    return p
  end

  local function faults(rules)
    local doc = core.json_encode({ verify_secret = SECRET, rules = rules or {} })
    local code, out = S.exec(("curl -s -X POST --data-binary %s http://127.0.0.1:%d/__faults")
      :format(S.quote(doc), proxy_port))
    assert(code == 0 and out:find("ok"), "cannot configure the proxy: " .. out)
  end

  local function proxy_stats()
    local _, out = S.exec(("curl -s http://127.0.0.1:%d/__stats"):format(proxy_port))
    return core.json_decode(out)
  end

  setup(function()
    dir = S.tmpdir()
    dbpath = dir .. "/dynalite-db"
    dyn_port = start_dynalite()
    local plog = dir .. "/proxy.log"
    proxy = S.spawn(("node tests/node/fault_proxy.js --target %d"):format(dyn_port), plog)
    proxy_port = wait_port(plog, 10)
    -- This process reads the store back through murmur.core: same credentials.
    ffi.C.setenv("AWS_ACCESS_KEY_ID", "AKIDSPEC", 1)
    ffi.C.setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1)
    faults()
  end)

  teardown(function()
    if proxy then S.kill(proxy, "TERM") S.wait_exit(proxy, 5) end
    if dyn then S.kill(dyn, "TERM") S.wait_exit(dyn, 5) end
    S.rm_rf(dir)
  end)

  local function endpoint(direct)
    return ("http://127.0.0.1:%d"):format(direct and dyn_port or proxy_port)
  end

  -- Runs murmur with the DynamoDB environment; returns code, stdout, stderr.
  local function mm(table_name, args, direct, extra_env)
    local env = ("env AWS_ACCESS_KEY_ID=AKIDSPEC AWS_SECRET_ACCESS_KEY=%s MURMUR_STORE=dynamodb "
      .. "MURMUR_DYNAMODB_TABLE=%s MURMUR_DYNAMODB_ENDPOINT=%s %s"):format(SECRET, table_name,
      endpoint(direct), extra_env or "")
    local parts = { env, S.quote(S.murmur) }
    for _, a in ipairs(args) do parts[#parts + 1] = S.quote(a) end
    return S.exec(table.concat(parts, " "))
  end

  local function new_table()
    tables = tables + 1
    local name = ("spec_%d_%d"):format(os.time() % 100000, tables)
    local code, out, err = mm(name, { "ddb", "create-table" })
    assert.are.equal(0, code, err)
    assert.truthy(out:find('"created":true', 1, true))
    return name
  end

  -- A pipeline script in the temporary directory.
  local function script(name, body)
    local path = dir .. "/" .. name .. ".lua"
    S.write_file(path, 'local murmur = require("murmur")\nmurmur.pipeline {\n  name = "' .. name
      .. '",\n' .. body .. "\n}\n")
    return path
  end

  -- Reads stored values back in this process: entity -> decoded JSON.
  local function read_values(table_name, pipeline, entities, buckets, direct)
    return S.ddb_read_values(endpoint(direct), table_name, pipeline, entities, buckets)
  end

  -- gen_events with event ids left out ("noid"), so no dedup marks are written.
  local function gen_noid(path, count, entities, seed)
    local code, _, err = S.exec(("%s/%s/helpers/gen_events %d %d 1.1 %d noid > %s"):format(S.root, S.build,
      count, entities, seed, S.quote(path)))
    assert(code == 0, err)
  end

  local function count_field(path, field)
    local counts, keys = {}, {}
    for line in io.lines(path) do
      local v = line:match('"' .. field .. '":"([^"]+)"')
      if v then
        if not counts[v] then keys[#keys + 1] = v end
        counts[v] = (counts[v] or 0) + 1
      end
    end
    table.sort(keys)
    return counts, keys
  end

  -- Every stored page_views sum must equal the exact count.
  local function assert_sums(table_name, pipeline, path, direct)
    local counts, keys = count_field(path, "page_id")
    local got = read_values(table_name, pipeline, keys, nil, direct)
    local bad = {}
    for _, k in ipairs(keys) do
      local v = got[k] and got[k].value or 0
      if v ~= counts[k] then bad[#bad + 1] = ("%s: %s, expected %d"):format(k, tostring(v), counts[k]) end
    end
    assert.are.same({}, bad)
    return #keys
  end

  local function log_figure(stderr, name)
    local n = stderr:match("(%d+) " .. name)
    return tonumber(n or 0)
  end

  it("creates the table with `murmur ddb create-table` (idempotent; dynalite has no TTL)", function()
    local t = new_table()
    local code, out, err = mm(t, { "ddb", "create-table" })
    assert.are.equal(0, code, err)
    local r = core.json_decode(out)
    assert.are.equal(false, r.created)
    assert.are.equal("ACTIVE", r.status)
    assert.are.equal("unsupported", r.ttl)
    -- Without the supervisor: a worker that cannot start is not restarted.
    code, _, err = mm("no_such_table", { "run", "--once", "--no-supervisor", "--input", "/dev/null",
      "pipelines/page_views.lua" })
    assert.are.equal(1, code)
    assert.truthy(err:find("create%-table"))
  end)

  it("stores exact page_views sums through run, query and a signed, verified request path", function()
    local t = new_table()
    local input = dir .. "/pv.jsonl"
    S.gen_events(input, 20000, 2000, 1.1, 11)
    local code, _, err = mm(t, { "run", "--once", "--data", dir .. "/d1", "--input", input, "pipelines/page_views.lua" })
    assert.are.equal(0, code, err)
    local n = assert_sums(t, "page_views", input)
    assert.is_true(n > 1000)
    local counts, keys = count_field(input, "page_id")
    local hot = keys[1]
    for _, k in ipairs(keys) do if counts[k] > counts[hot] then hot = k end end
    local qout
    code, qout, err = mm(t, { "query", "--json", "pipelines/page_views.lua", hot })
    assert.are.equal(0, code, err)
    assert.are.equal(counts[hot], core.json_decode(qout).result.value)
    -- `murmur ddb get` prints the GetItem answer as DynamoDB sent it: {} for
    -- the all-time bucket, which this daily pipeline does not write.
    code, qout, err = mm(t, { "ddb", "get", "--ns", "page_views", hot })
    assert.are.equal(0, code, err)
    assert.are.same({}, core.json_decode(qout))
    assert.is_true(proxy_stats().signatures_checked > 0)
  end)

  it("keeps recently_interacted's Top-K identical to the embedded store's on the same file", function()
    local t = new_table()
    local input = dir .. "/ri.jsonl"
    gen_noid(input, 30000, 5000, 12)
    -- One flush at the end of input in both runs, so both merge the same delta.
    local path = script("ri_once", [[
  key = murmur.literal("global"), value = "entity_id", monoid = murmur.topk { k = 32 },
  window = murmur.daily { retention = "30d" }, flush = { events = 10000000, keys = 10000000, interval = "1h" },]])
    local code, _, err = mm(t, { "run", "--once", "--data", dir .. "/d2", "--input", input, path })
    assert.are.equal(0, code, err)
    code, _, err = S.murmur_run({ "run", "--once", "--store", "lmdb", "--data", dir .. "/lmdb2", "--input", input, path })
    assert.are.equal(0, code, err)
    local qd, ql
    code, qd, err = mm(t, { "query", "--json", path, "global" })
    assert.are.equal(0, code, err)
    code, ql, err = S.murmur_run({ "query", "--json", "--store", "lmdb", "--data", dir .. "/lmdb2", path, "global" })
    assert.are.equal(0, code, err)
    local a, b = core.json_decode(qd).result, core.json_decode(ql).result
    assert.are.equal(30000, a.n)
    assert.are.same(b, a)
  end)

  it("merges concurrent writers on one hot Top-K and HLL key without losing an update (CAS)", function()
    local input = dir .. "/hot.jsonl"
    -- 20 distinct items <= K: Misra-Gries stays exact, so any lost update shows.
    gen_noid(input, 24000, 20, 13)
    local tk = script("hot_topk", [[
  key = murmur.literal("global"), value = "entity_id", monoid = murmur.topk { k = 32 },
  flush = { events = 300, interval = "50ms" },]])
    local hll = script("hot_hll", [[
  key = murmur.literal("global"), value = "user_id", monoid = murmur.hll {},
  flush = { events = 300, interval = "50ms" },]])
    S.exec(("split -n l/4 -d %s %s/part"):format(S.quote(input), dir))
    local counts, keys = count_field(input, "entity_id")
    -- The HLL union of the four writers must equal one writer's sketch.
    local code, ql, err = S.murmur_run({ "run", "--once", "--store", "lmdb", "--data", dir .. "/lmdb4", "--input", input, hll })
    assert.are.equal(0, code, err)
    code, ql, err = S.murmur_run({ "query", "--json", "--store", "lmdb", "--data", dir .. "/lmdb4", hll, "global" })
    assert.are.equal(0, code, err)
    -- Four writers, each a quarter of the file, started together into a
    -- fresh table. Each holds its conditional writes 15 ms after the read,
    -- so the writers' cycles overlap and lose races however a loaded
    -- machine schedules them (with no hold, a sanitized run on 2 cores once
    -- saw no conflict at all; with it, one sanitized run in many started
    -- its writers too far apart). A round without a conflict tested no
    -- race: it is checked as the others, then run again, up to 3 rounds.
    local conflicts, round = 0, 0
    while conflicts == 0 and round < 3 do
      round = round + 1
      local t = new_table()
      local procs = {}
      for i = 0, 3 do
        local part = ("%s/part%02d"):format(dir, i)
        local env = ("env AWS_ACCESS_KEY_ID=AKIDSPEC AWS_SECRET_ACCESS_KEY=%s MURMUR_STORE=dynamodb "
          .. "MURMUR_DYNAMODB_TABLE=%s MURMUR_DYNAMODB_ENDPOINT=%s MURMUR_ERRINJ_DDB_CAS_HOLD_MS=15"):format(SECRET, t, endpoint())
        procs[#procs + 1] = S.spawn(("%s %s run --once --data %s/w%d-%d --input %s %s %s"):format(env,
          S.quote(S.murmur), dir, i, round, part, tk, hll), ("%s/w%d-%d.log"):format(dir, i, round))
      end
      for i, p in ipairs(procs) do
        assert.are.equal(0, S.wait_exit(p, 120))
        conflicts = conflicts + log_figure(S.read_file(("%s/w%d-%d.log"):format(dir, i - 1, round)), "CAS conflicts")
      end
      local got = read_values(t, "hot_topk", { "global" }, { 0 }).global
      assert.are.equal(24000, got.n)
      assert.are.equal(0, got.error)
      local stored = {}
      for _, item in ipairs(got.items) do stored[item.item] = item.count end
      for _, k in ipairs(keys) do assert.are.equal(counts[k], stored[k], k) end
      local qd
      code, qd, err = mm(t, { "query", "--json", hll, "global" })
      assert.are.equal(0, code, err)
      assert.are.same(core.json_decode(ql).result, core.json_decode(qd).result)
    end
    print(("# concurrent writers: %d CAS conflicts resolved (round %d)"):format(conflicts, round))
    assert.is_true(conflicts > 0)
  end)

  it("reads 250 buckets in chunks of 100 and retries injected UnprocessedKeys", function()
    local t = new_table()
    local path = script("minutes", [[
  key = "page_id", monoid = murmur.sum {}, value = "n", time = "ts",
  window = murmur.minutely { retention = "300m" },]])
    local input = dir .. "/minutes.jsonl"
    local f = assert(io.open(input, "w"))
    local now, total = core.now_ms(), 0
    for i = 0, 249 do
      f:write(('{"page_id":"p","n":%d,"ts":%d}\n'):format(i + 1, now - i * 60000))
      total = total + i + 1
    end
    f:close()
    local code, _, err = mm(t, { "run", "--once", "--data", dir .. "/d5", "--input", input, path })
    assert.are.equal(0, code, err)
    local before = proxy_stats()
    faults({ { op = "BatchGetItem", action = "unprocessed", keep = 40 } })
    local out
    -- Windows are evaluated at the time the events were written (--at), so a
    -- slow (sanitizer) run cannot push the oldest minute out of the window.
    code, out, err = mm(t, { "query", "--json", "--window", "250m", "--at", core.format_time(now), path, "p" })
    faults()
    assert.are.equal(0, code, err)
    local r = core.json_decode(out)
    assert.are.equal(total, r.result.value)
    assert.are.equal(250, r.buckets_found)
    local after = proxy_stats()
    local batches = (after.requests.BatchGetItem or 0) - (before.requests.BatchGetItem or 0)
    local injected = (after.injected.unprocessed or 0) - (before.injected.unprocessed or 0)
    print(("# 250 keys: %d BatchGetItem requests, %d answers with UnprocessedKeys"):format(batches, injected))
    assert.is_true(batches >= 7) -- 3 chunks (100, 100, 50), each served 40 keys at a time
    assert.is_true(injected >= 4)
  end)

  it("retries injected throttling and 5xx answers and loses nothing", function()
    local t = new_table()
    local input = dir .. "/thr.jsonl"
    S.gen_events(input, 10000, 1500, 1.1, 14)
    faults({
      { op = "UpdateItem", action = "throttle", rate = 0.15 },
      { op = "UpdateItem", action = "throttling", rate = 0.05 },
      { op = "UpdateItem", action = "error500", rate = 0.1 },
      { op = "UpdateItem", action = "error503", rate = 0.05 },
    })
    local code, _, err = mm(t, { "run", "--once", "--data", dir .. "/d6", "--input", input, "pipelines/page_views.lua" },
      false, "") -- default max_attempts (10)
    faults()
    assert.are.equal(0, code, err)
    assert_sums(t, "page_views", input)
    local throttled, e5 = log_figure(err, "throttled"), log_figure(err, "5xx")
    print(("# injected faults: %d throttled and %d 5xx answers retried"):format(throttled, e5))
    assert.is_true(throttled > 0 and e5 > 0)
  end)

  it("does not count an ADD twice when its response is lost after DynamoDB applied it", function()
    local t = new_table()
    local input = dir .. "/lost.jsonl"
    S.gen_events(input, 10000, 800, 1.1, 15)
    -- Drop 25 answers of applied sums (not of the other UpdateItems: the
    -- registry, the position's take and pointer, the arming).
    faults({ { op = "UpdateItem", match = "ADD #v", action = "drop_response", count = 25 } })
    local code, _, err = mm(t, { "run", "--once", "--data", dir .. "/d7", "--input", input, "pipelines/page_views.lua" })
    faults()
    assert.are.equal(0, code, err)
    assert_sums(t, "page_views", input)
    local replays = log_figure(err, "replays skipped")
    print(("# 25 lost responses: %d replays recognised by their token"):format(replays))
    assert.is_true(replays > 0)
  end)

  it("pauses the sources while dynalite is down and resumes with exact results", function()
    local t = new_table()
    local input = dir .. "/restart.jsonl"
    -- Two flushes (15 000 events each, some 5 000 keys): dynalite takes
    -- seconds over each, so its outage below meets a flush in flight.
    S.gen_events(input, 30000, 20000, 0.9, 16)
    local log = dir .. "/restart.log"
    local env = ("env AWS_ACCESS_KEY_ID=AKIDSPEC AWS_SECRET_ACCESS_KEY=%s MURMUR_STORE=dynamodb "
      .. "MURMUR_DYNAMODB_TABLE=%s MURMUR_DYNAMODB_ENDPOINT=%s"):format(SECRET, t, endpoint(true))
    -- Few, short request retries, so the outage fails flushes (the engine then
    -- pauses the sources and retries whole flushes) instead of being ridden
    -- out by the store's own retries.
    local path = script("pv_small_flushes", [[
  key = "page_id", monoid = murmur.sum {}, value = 1, window = murmur.daily { retention = "90d" },
  flush = { events = 15000, interval = "5s" },
  store = murmur.store("dynamodb", { max_attempts = 2, backoff_max = "50ms" }),]])
    local run = S.spawn(("%s %s run --once --data %s/d8 --input %s %s"):format(env, S.quote(S.murmur), dir, input, path), log)
    -- Let the first flushes start, then kill dynalite outright.
    for _ = 1, 100 do
      if (S.read_file(log) or ""):find("running") then break end
      S.sleep(0.05)
    end
    S.sleep(1.0)
    S.kill(dyn, "KILL")
    S.wait_exit(dyn, 5)
    S.sleep(2.5)
    dyn_port = start_dynalite(dyn_port)
    assert.are.equal(0, S.wait_exit(run, 120))
    local err = S.read_file(log)
    assert.truthy(err:find("sources paused", 1, true))
    assert.truthy(err:find("flush succeeded after", 1, true))
    assert_sums(t, "pv_small_flushes", input, true)
  end)

  it("lets exactly one of 16 racing processes claim an id", function()
    local t = new_table()
    local outs = {}
    local cmd = {}
    for i = 1, 16 do
      outs[i] = ("%s/claim%d.out"):format(dir, i)
      cmd[#cmd + 1] = ("(env AWS_ACCESS_KEY_ID=AKIDSPEC AWS_SECRET_ACCESS_KEY=%s MURMUR_DYNAMODB_TABLE=%s "
        .. "MURMUR_DYNAMODB_ENDPOINT=%s %s ddb claim --ns race --owner w%d event-42 > %s 2>&1 &)")
        :format(SECRET, t, endpoint(), S.quote(S.murmur), i, outs[i])
    end
    S.exec(table.concat(cmd, "; "))
    local won, busy, winner = 0, 0, nil
    for _ = 1, 200 do
      local done = 0
      for i = 1, 16 do if (S.read_file(outs[i]) or ""):find("%a") then done = done + 1 end end
      if done == 16 then break end
      S.sleep(0.05)
    end
    for i = 1, 16 do
      local r = S.read_file(outs[i]) or ""
      if r:match("^won") then won = won + 1 winner = i
      elseif r:match("^busy") then busy = busy + 1 end
    end
    assert.are.equal(1, won)
    assert.are.equal(15, busy)
    local code, out = mm(t, { "ddb", "confirm", "--ns", "race", "--owner", "w" .. winner, "event-42" })
    assert.are.equal(0, code)
    assert.are.equal("confirmed\n", out)
    code, out = mm(t, { "ddb", "claim", "--ns", "race", "--owner", "late", "event-42" })
    assert.are.equal("duplicate\n", out)
  end)

  it("never skips a record whose merge failed: release, or lease expiry, frees its id", function()
    local t = new_table()
    local function ddb(...)
      local code, out, err = mm(t, { "ddb", ... })
      assert.are.equal(0, code, err)
      return (out:gsub("\n$", ""))
    end
    -- Worker A claims, its merge fails and it releases: B counts the redelivery.
    assert.are.equal("won", ddb("claim", "--ns", "loss", "--owner", "A", "r1"))
    assert.are.equal("busy", ddb("claim", "--ns", "loss", "--owner", "B", "r1"))
    assert.are.equal("released", ddb("release", "--ns", "loss", "--owner", "A", "r1"))
    assert.are.equal("won", ddb("claim", "--ns", "loss", "--owner", "B", "r1"))
    assert.are.equal("confirmed", ddb("confirm", "--ns", "loss", "--owner", "B", "r1"))
    assert.are.equal("duplicate", ddb("claim", "--ns", "loss", "--owner", "C", "r1"))
    -- Worker A dies holding r2: after its lease, B takes it over.
    assert.are.equal("won", ddb("claim", "--ns", "loss", "--owner", "A", "--lease", "1s", "r2"))
    S.sleep(1.1)
    assert.are.equal("stolen", ddb("claim", "--ns", "loss", "--owner", "B", "r2"))
    assert.are.equal("not_owner", ddb("confirm", "--ns", "loss", "--owner", "A", "r2"))
    assert.are.equal("confirmed", ddb("confirm", "--ns", "loss", "--owner", "B", "r2"))
  end)

  it("confirms a flush's dedup ids only with their effect (flush marks)", function()
    local t = new_table()
    local input = dir .. "/ids.jsonl"
    S.gen_events(input, 300, 50, 1.1, 17)
    local code, _, err = mm(t, { "run", "--once", "--data", dir .. "/d9", "--input", input, "pipelines/recently_interacted.lua" })
    assert.are.equal(0, code, err)
    local out
    code, out = mm(t, { "ddb", "claim", "--ns", "recently_interacted", "e17" })
    assert.are.equal("duplicate\n", out)
    code, out = mm(t, { "ddb", "claim", "--ns", "recently_interacted", "e300" })
    assert.are.equal("won\n", out)
  end)

  -- A count of every event, deduplicated by event_id, on the shared store;
  -- the id comes from a field (C fast path) or from a Lua function.
  local function dedup_count(name, lua_id, store_opts)
    return script(name .. (lua_id and "_lua" or ""), ([[
  name = "%s", key = murmur.literal("all"), monoid = murmur.count(),
  dedup = { id = %s },
  flush = { events = 2000, interval = "200ms" },
  store = murmur.store("dynamodb", { %s }),]]):format(name, lua_id and "function(ev) return ev.event_id end" or '"event_id"',
      store_opts or ""))
  end

  local function stored_count(t, name)
    local v = read_values(t, name, { "all" }, { 0 })
    return v.all and v.all.value or 0
  end

  local function stats_of(err)
    return core.json_decode(assert(err:match("\n({\"batches\"[^\n]*)"), "no --stats output: " .. err))
  end

  -- A flush's claim round asks once per pipeline and renews the leases of
  -- the ids already won every third of a lease. Both kinds of call were
  -- counted together, and the round settled only when that count reached
  -- zero after a claim answer: a claim answered while a renewal was in
  -- flight left the round waiting for ever (its flush never ran, the run
  -- never ended; a CI run under AddressSanitizer hung so for 40 minutes).
  -- Here "slow"'s claims and the first renewal of "fast"'s won ids are held
  -- by the proxy, then "slow"'s claims are answered first.
  it("finishes a claim round whose last claim is answered while a renewal is in flight", function()
    local t = new_table()
    local input = dir .. "/renewrace.jsonl"
    -- Fewer ids than the store's request slots, so held claims leave room
    -- for the renewal to be sent.
    S.gen_events(input, 20, 5, 1.1, 31)
    local path = dir .. "/renewrace.lua"
    S.write_file(path, [[
local murmur = require("murmur")
for _, name in ipairs({ "fast", "slow" }) do
  murmur.pipeline { name = name, key = murmur.literal("all"), monoid = murmur.count(),
    dedup = { id = "event_id" }, flush = { events = 1000, interval = "200ms" },
    store = murmur.store("dynamodb", { lease = "1500ms" }) }
end
]])
    -- A claim's item key is <pipeline>#<event id> (the ids are e0, e1...).
    local hold_slow = { op = "PutItem", action = "hold", match = '"S":"slow#e' }
    faults({ hold_slow })
    local env = ("env AWS_ACCESS_KEY_ID=AKIDSPEC AWS_SECRET_ACCESS_KEY=%s MURMUR_DYNAMODB_TABLE=%s "
      .. "MURMUR_DYNAMODB_ENDPOINT=%s"):format(SECRET, t, endpoint())
    local h = S.spawn(("%s %s run --once --no-supervisor --data %s/renewrace --input %s %s"):format(env,
      S.quote(S.murmur), dir, input, path), dir .. "/renewrace.log")
    local function release(match)
      local _, out = S.exec(("curl -s -X POST --data-binary %s http://127.0.0.1:%d/__release")
        :format(S.quote(match and core.json_encode({ match = match }) or ""), proxy_port))
      return out
    end
    local ok, err = pcall(function()
      -- "fast"'s 20 claims are answered, "slow"'s 20 are held.
      S.wait_for("fast's claims answered and slow's held", 30, function()
        local st = proxy_stats()
        return (st.requests.PutItem or 0) >= 40 and (st.injected.hold or 0) >= 20
      end, function() return core.json_encode(proxy_stats()) end)
      -- The next renewal of "fast"'s won ids is held too.
      local held = proxy_stats().injected.hold
      faults({ hold_slow, { op = "UpdateItem", action = "hold", match = "#owner#" } })
      S.wait_for("a held renewal", 30, function() return proxy_stats().injected.hold > held end,
        function() return core.json_encode(proxy_stats()) end)
      assert.matches('"released":20', release('"S":"slow#e'))
      S.sleep(1)
      faults()
      release()
      assert.are.equal(0, S.wait_exit(h, 60), S.read_file(dir .. "/renewrace.log"))
    end)
    if not ok then
      S.kill(h, "KILL")
      S.wait_exit(h, 5)
      faults()
      release()
      error(err, 0)
    end
    assert.are.equal(20, stored_count(t, "fast"))
    assert.are.equal(20, stored_count(t, "slow"))
  end)

  -- Two workers started together on the same events, one taking the id on
  -- the C fast path, the other computing it in Lua: the claims of the one
  -- make the other's records duplicates, so both paths name an id the same.
  -- Which worker wins which ids depends on their start-up (the C path
  -- usually counts all before the Lua path claims any); live workers
  -- interleaving their claims are dynamodb_workers_spec's cases.
  it("counts each event once when a worker on the C path and one computing ids in Lua read the same events (claims)", function()
    local t = new_table()
    local a, b = dir .. "/twice-a.jsonl", dir .. "/twice-b.jsonl"
    S.gen_events(a, 6000, 300, 1.1, 21)
    S.exec(("cp %s %s"):format(S.quote(a), S.quote(b)))
    local c_path, lua_path = dedup_count("twice"), dedup_count("twice", true)
    local env = ("env AWS_ACCESS_KEY_ID=AKIDSPEC AWS_SECRET_ACCESS_KEY=%s MURMUR_DYNAMODB_TABLE=%s "
      .. "MURMUR_DYNAMODB_ENDPOINT=%s"):format(SECRET, t, endpoint(true))
    local w1 = S.spawn(("%s %s run --once --stats --data %s/tw1 --input %s %s"):format(env, S.quote(S.murmur),
      dir, a, c_path), dir .. "/tw1.log")
    local w2 = S.spawn(("%s %s run --once --stats --data %s/tw2 --input %s %s"):format(env, S.quote(S.murmur),
      dir, b, lua_path), dir .. "/tw2.log")
    assert.are.equal(0, S.wait_exit(w1, 300))
    assert.are.equal(0, S.wait_exit(w2, 300))
    assert.are.equal(6000, stored_count(t, "twice"))
    local s1 = stats_of(S.read_file(dir .. "/tw1.log")).pipelines.twice
    local s2 = stats_of(S.read_file(dir .. "/tw2.log")).pipelines.twice
    print(("# two workers, same 6000 events: %d + %d accepted, %d + %d duplicates")
      :format(s1.accepted, s2.accepted, s1.duplicates, s2.duplicates))
    assert.are.equal(6000, s1.accepted + s2.accepted)
    assert.are.equal(6000, s1.duplicates + s2.duplicates)
  end)

  it("counts a record whose merge failed after its claim exactly once when it is redelivered (the Go original's loss)", function()
    local t = new_table()
    local input = dir .. "/loss.jsonl"
    S.gen_events(input, 1500, 100, 1.1, 22)
    local path = dedup_count("goloss", false, 'lease = "2s", max_attempts = 2, backoff_max = "50ms"')
    -- Every merge fails (not the other UpdateItems: the registry, the
    -- position's take).
    faults({ { op = "UpdateItem", match = "ADD #v", action = "error500" } })
    local log = dir .. "/goloss1.log"
    local env = ("env AWS_ACCESS_KEY_ID=AKIDSPEC AWS_SECRET_ACCESS_KEY=%s MURMUR_DYNAMODB_TABLE=%s "
      .. "MURMUR_DYNAMODB_ENDPOINT=%s"):format(SECRET, t, endpoint())
    local w1 = S.spawn(("%s %s run --once --data %s/gl1 --input %s %s"):format(env, S.quote(S.murmur), dir,
      input, path), log)
    for _ = 1, 200 do
      if (S.read_file(log) or ""):find("flush of %d+ deltas failed") then break end
      S.sleep(0.05)
    end
    assert.truthy((S.read_file(log) or ""):find("flush of %d+ deltas failed"), S.read_file(log))
    -- The worker claimed the ids, could not merge, and dies.
    S.kill(w1, "KILL")
    S.wait_exit(w1, 5)
    faults()
    assert.are.equal(0, stored_count(t, "goloss"))
    -- Redelivered to another worker: it waits for the dead worker's leases,
    -- takes its claims over and counts every record once.
    local code2, out2, err = mm(t, { "run", "--once", "--stats", "--data", dir .. "/gl2", "--input", input, path })
    assert.are.equal(0, code2, err)
    assert.are.equal(1500, stored_count(t, "goloss"))
    local claims = stats_of("\n" .. out2).instrumentation["goloss:store_claim"]
    print(("# merge failed after claim: %d of 1500 claims taken over from the dead worker"):format(claims.stolen))
    assert.is_true(claims.stolen > 0)
    -- And a third delivery (another data directory, so another reader of
    -- the file: it reads it all again) is a duplicate throughout.
    code2, out2, err = mm(t, { "run", "--once", "--stats", "--data", dir .. "/gl3", "--input", input, path })
    assert.are.equal(0, code2, err)
    assert.are.equal(1500, stored_count(t, "goloss"))
    assert.are.equal(1500, stats_of("\n" .. out2).pipelines.goloss.duplicates)
  end)
end)
