-- valkey_spec.lua (#valkey): the Valkey cache layer end to end.
--
-- A private redis-server (wire-compatible with Valkey) runs on a random
-- 127.0.0.1 port without persistence, started and stopped here. The shipped
-- pipelines run with `--cache` over the embedded store, and every answer
-- read through the cache is compared with the store's own answer and with
-- the exact truth computed from the input: right after the run, while the
-- server is flushed, killed and restarted under a running writer, and for
-- HyperLogLog windows answered by one PFCOUNT. Dedup on Valkey and a
-- 16-process claim race close it. Without redis-server the spec is pending.
local S = require("spec.support")
local core = require("murmur.core")

local function which(name)
  local code, out = S.exec("command -v " .. name)
  if code == 0 and out ~= "" then return (out:gsub("%s+$", "")) end
end

local server, cli = which("valkey-server") or which("redis-server"), which("valkey-cli") or which("redis-cli")

if not server or not cli then
  describe("#valkey cache", function()
    pending("redis-server/valkey-server and its cli are not installed")
  end)
  return
end

local Q = S.quote
local PIPES = "pipelines/page_views.lua pipelines/unique_visitors.lua pipelines/recently_interacted.lua"

describe("#valkey cache", function()
  local tmp, port, pid, url

  local function redis(args)
    local code, out = S.exec(("%s -p %d %s"):format(cli, port, args))
    assert(code == 0, "redis-cli " .. args)
    return (out:gsub("\n$", ""))
  end

  local function alive()
    local code, out = S.exec(("%s -p %d PING"):format(cli, port))
    return code == 0 and out:match("PONG") ~= nil
  end

  -- Starts the server (on `port` if set, else a random free one) and waits
  -- until it answers.
  local function start_server(keep_port)
    for _ = 1, 10 do
      if not keep_port then port = S.random_port() end
      local _, out = S.exec(("%s --port %d --bind 127.0.0.1 --save '' --appendonly no --dir %s > %s/redis.log 2>&1 & echo $!")
        :format(Q(server), port, Q(tmp), Q(tmp)))
      pid = tonumber(out:match("%d+"))
      for _ = 1, 100 do
        if alive() then
          url = ("redis://127.0.0.1:%d"):format(port)
          return
        end
        if S.exec("kill -0 " .. pid) ~= 0 then break end
        S.sleep(0.05)
      end
      S.exec("kill -9 " .. pid)
    end
    error("could not start " .. server)
  end

  local function stop_server()
    if pid then
      S.exec("kill -9 " .. pid)
      for _ = 1, 100 do
        if S.exec("kill -0 " .. pid) ~= 0 then break end
        S.sleep(0.05)
      end
      pid = nil
    end
  end

  local function query(pipeline, entity, data, cached, extra)
    local args = { "query", pipeline, entity, "--data", data, "--json" }
    if cached then
      args[#args + 1] = "--cache"
      args[#args + 1] = url
    end
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    local code, out, err = S.murmur_run(args)
    assert(code == 0 or code == 4, ("query %s %s failed (%d): %s"):format(pipeline, entity, code, err))
    return core.json_decode(out), err
  end

  -- Views per page in a generated input (the page_views truth).
  local function truth_of(path, into)
    into = into or {}
    for line in io.lines(path) do
      local p = line:match('"page_id":"([^"]+)"')
      into[p] = (into[p] or 0) + 1
    end
    return into
  end

  local function hottest(truth, n)
    local pages = {}
    for p in pairs(truth) do pages[#pages + 1] = p end
    table.sort(pages, function(a, b) return truth[a] > truth[b] or (truth[a] == truth[b] and a < b) end)
    local out = {}
    for i = 1, n do out[i] = pages[i] end
    out[#out + 1] = pages[#pages] -- and a cold one
    return out
  end

  local function cmdstat(name)
    local stats = redis("INFO commandstats")
    return tonumber(stats:match("cmdstat_" .. name .. ":calls=(%d+)") or "0")
  end

  setup(function()
    tmp = S.tmpdir()
    start_server()
  end)

  teardown(function()
    stop_server()
    S.rm_rf(tmp)
  end)

  before_each(function()
    if not alive() then start_server(true) end
    redis("FLUSHALL")
  end)

  it("reads through the cache answer what the store holds", function()
    local dir = S.tmpdir()
    local input = dir .. "/events.jsonl"
    S.gen_events(input, 60000, 300, 1.1, 5)
    local truth = truth_of(input)
    local code, _, err = S.murmur_run({ "run", "--once", "--no-supervisor", "--cache", url, "--data", dir .. "/d",
      "--input", input, "pipelines/page_views.lua", "pipelines/unique_visitors.lua",
      "pipelines/recently_interacted.lua" })
    assert.are.equal(0, code, err)
    local pfcounts = cmdstat("pfcount")
    for _, page in ipairs(hottest(truth, 4)) do
      local plain = query("page_views", page, dir .. "/d", false)
      assert.are.equal(truth[page], plain.result.value)
      -- First read fills, second is answered by the cache: both exact.
      for _ = 1, 2 do
        assert.are.same(plain, query("page_views", page, dir .. "/d", true))
      end
      local uv = query("unique_visitors", page, dir .. "/d", false, { "--window", "7d" })
      for _ = 1, 2 do
        assert.are.same(uv, query("unique_visitors", page, dir .. "/d", true, { "--window", "7d" }))
      end
    end
    -- The second HLL query of each page was one PFCOUNT over 7 buckets.
    assert.are.equal(pfcounts + 5, cmdstat("pfcount"))
    local top = query("recently_interacted", "global", dir .. "/d", false)
    for _ = 1, 2 do
      assert.are.same(top, query("recently_interacted", "global", dir .. "/d", true))
    end
    -- The cached Top-K entry holds exactly the store's bytes.
    local day = core.bucket(86400000, core.now_ms())
    local st = assert(core.store_open("lmdb", { path = dir .. "/d/store" }, true))
    local meta = core.json_decode(st:meta("recently_interacted"):match("\n(.*)$"))
    local stored = st:get("recently_interacted", meta.monoid, "global", { day })
    st:close()
    local f = assert(io.popen(("%s -p %d --raw GET %s"):format(cli, port, Q("murmur:s:recently_interacted:" .. day .. ":global"))))
    local cached = f:read("*a"):gsub("\n$", "")
    f:close()
    assert.is_true(#stored > 32)
    assert.are.equal(stored, cached)
    S.rm_rf(dir)
  end)

  it("stays exact while Valkey is flushed, killed and restarted under a running writer", function()
    local dir = S.tmpdir()
    local input, data = dir .. "/in.jsonl", dir .. "/d"
    local truth = {}
    S.write_file(input, "")
    local h = S.spawn(("%s run --follow --no-supervisor --cache %s --data %s --input %s %s"):format(
      Q(S.murmur), url, Q(data), Q(input), PIPES), dir .. "/log")
    local batch = 0
    local watch

    -- Appends a batch of events and waits until the store holds it.
    local function append()
      batch = batch + 1
      local part = dir .. "/part" .. batch
      S.gen_events(part, 20000, 300, 1.1, 100 + batch)
      S.exec(("cat %s >> %s"):format(Q(part), Q(input)))
      truth_of(part, truth)
      watch = watch or hottest(truth, 3)
      -- Every watched page, not just one: a batch may be split across
      -- flushes, so one page can be complete while another waits for the
      -- next flush.
      local function caught_up()
        for _, page in ipairs(watch) do
          -- Until the writer has created its store the query finds nothing
          -- (exit 4, no output).
          local r = query("page_views", page, data, false)
          if not (r and r.result.value == truth[page]) then return false end
        end
        return true
      end
      for _ = 1, 200 do
        if caught_up() then return end
        S.sleep(0.05)
      end
      error("the writer did not catch up: " .. (S.read_file(dir .. "/log") or ""):sub(-2000))
    end

    local function check_exact()
      for _, page in ipairs(watch) do
        local plain = query("page_views", page, data, false)
        assert.are.equal(truth[page], plain.result.value)
        assert.are.same(plain, query("page_views", page, data, true))
        local uv = query("unique_visitors", page, data, false, { "--window", "3d" })
        assert.are.same(uv, query("unique_visitors", page, data, true, { "--window", "3d" }))
      end
      local top = query("recently_interacted", "global", data, false)
      assert.are.same(top, query("recently_interacted", "global", data, true))
    end

    append()
    check_exact() -- fills the cache
    check_exact() -- hits

    -- FLUSHALL: the writer's leases vanish, its updates turn into deletes.
    redis("FLUSHALL")
    append()
    check_exact()

    -- Killed: writes and reads go to the store alone.
    stop_server()
    append()
    check_exact()

    -- Restarted empty on the same port: the writer reconnects, notices and
    -- rebuilds the entries it wrote last.
    start_server(true)
    for _ = 1, 100 do
      if redis("--scan --pattern 'murmur:s:page_views:*'") ~= "" then break end
      S.sleep(0.05)
    end
    assert.are_not.equal("", redis("--scan --pattern 'murmur:s:page_views:*'"), (S.read_file(dir .. "/log") or ""):sub(-3000))
    append()
    check_exact()
    check_exact()

    S.kill(h, "TERM")
    assert.are.equal(0, S.wait_exit(h, 20), (S.read_file(dir .. "/log") or ""):sub(-2000))
    local log = S.read_file(dir .. "/log") or ""
    assert.matches("dropping cached states and rebuilding", log)
    check_exact()
    S.rm_rf(dir)
  end)

  it("keeps dedup marks in Valkey with dedup = valkey", function()
    local dir = S.tmpdir()
    local p = dir .. "/dd.lua"
    S.write_file(p, [[
      local murmur = require("murmur")
      murmur.pipeline {
        name = "dd", key = "page_id", monoid = murmur.count(),
        dedup = { id = "event_id", ttl = "1h" },
        store = murmur.store("valkey", { dedup = "valkey" }),
      }
    ]])
    local events = dir .. "/ev.jsonl"
    S.gen_events(events, 3000, 50, 1.1, 9)
    local truth = truth_of(events)
    -- Every event twice in the first input; all of them again in a second.
    local lines = S.read_file(events)
    S.write_file(dir .. "/in1.jsonl", lines .. lines)
    S.write_file(dir .. "/in2.jsonl", lines)
    local runs = {}
    for _, input in ipairs({ "in1.jsonl", "in2.jsonl" }) do
      local code, out, err = S.murmur_run({ "run", "--once", "--no-supervisor", "--stats", "--cache", url,
        "--data", dir .. "/d", "--input", dir .. "/" .. input, p })
      assert.are.equal(0, code, err)
      runs[#runs + 1] = core.json_decode(out:match("{.*}"))
    end
    -- The ids are claimed at the flush, VK_CHUNK (256) to a command, all of
    -- a flush's commands sent before any answer is read: a few commands for
    -- 3 000 ids, none per record, and nothing synchronous on the loop.
    for i, st in ipairs(runs) do
      local ins = st.instrumentation
      assert.are.equal(3000, ins["dd:store_claim"].ops - ins["dd:store_claim"].busy)
      assert.is_true(ins.cache_claim.ops >= 12 and ins.cache_claim.ops <= 3 * 12, tostring(ins.cache_claim.ops))
      assert.are.equal(0, ins.cache_claim.errors)
      assert.is_nil(ins.cache_seen)
      assert.are.equal(i == 1 and 3000 or 0, st.pipelines.dd.accepted)
      assert.are.equal(i == 1 and 0 or 3000, ins["dd:store_claim"].duplicates)
    end
    for _, page in ipairs(hottest(truth, 3)) do
      assert.are.equal(truth[page], query("dd", page, dir .. "/d", false).result.value)
    end
    assert.are.equal("3000", redis("EVAL \"return #redis.call('KEYS', 'murmur:d:dd:*')\" 0"))
    S.rm_rf(dir)
  end)

  it("lets exactly one of 16 processes claim an id", function()
    local tool = S.root .. "/" .. S.build .. "/helpers/valkey_claim"
    for round = 1, 3 do
      local go = tmp .. "/go" .. round
      local outs = {}
      local hs = {}
      for i = 1, 16 do
        outs[i] = ("%s/claim%d_%d"):format(tmp, round, i)
        hs[i] = S.spawn(("%s %s race: dd id-%d %s"):format(Q(tool), url, round, Q(go)), outs[i])
      end
      S.sleep(0.3)
      S.write_file(go, "")
      local won = 0
      for i = 1, 16 do
        assert.are.equal(0, S.wait_exit(hs[i], 15))
        local out = S.read_file(outs[i])
        assert.truthy(out:match("^won") or out:match("^lost"), out)
        if out:match("^won") then won = won + 1 end
      end
      assert.are.equal(1, won)
    end
  end)

  -- The production shape: DynamoDB holds the state, Valkey caches it. The
  -- wrapper writes through to DynamoDB and hands dedup claims to it, so two
  -- deliveries of the same events count them once.
  local dit = S.have_dynalite and it or pending
  dit("caches a DynamoDB store and leaves dedup claims to DynamoDB", function()
    local dir = S.tmpdir()
    local dyn, dport = S.start_dynalite(dir, dir .. "/dynalite-db")
    local env = ("env AWS_ACCESS_KEY_ID=AKIDSPEC AWS_SECRET_ACCESS_KEY=spec MURMUR_STORE=dynamodb "
      .. "MURMUR_DYNAMODB_TABLE=vk_over_ddb MURMUR_DYNAMODB_ENDPOINT=http://127.0.0.1:%d "):format(dport)
    local function mm(args)
      local parts = { env, Q(S.murmur) }
      for _, a in ipairs(args) do parts[#parts + 1] = Q(a) end
      return S.exec(table.concat(parts, " "))
    end
    local ok, err = pcall(function()
      local code, _, e = mm({ "ddb", "create-table" })
      assert.are.equal(0, code, e)
      local input = dir .. "/events.jsonl"
      S.gen_events(input, 8000, 40, 1.1, 6)
      S.exec(("cp %s %s/again.jsonl"):format(Q(input), Q(dir)))
      local truth = truth_of(input)
      local script = dir .. "/views.lua"
      S.write_file(script, [[
local murmur = require("murmur")
murmur.pipeline { name = "views_dedup", key = "page_id", monoid = murmur.count(),
  dedup = { id = "event_id" }, flush = { events = 2000, interval = "200ms" } }
]])
      local runs = {}
      for i, file in ipairs({ input, dir .. "/again.jsonl" }) do
        local out
        code, out, e = mm({ "run", "--once", "--no-supervisor", "--stats", "--cache", url, "--data", dir .. "/d",
          "--input", file, script })
        assert.are.equal(0, code, e)
        runs[i] = core.json_decode(out)
      end
      assert.are.equal(8000, runs[1].pipelines.views_dedup.accepted)
      assert.are.equal(8000, runs[2].pipelines.views_dedup.duplicates)
      -- The writer's cache commands are instrumented too.
      assert.is_true(runs[1].instrumentation.cache_lease.ops > 0)
      assert.is_true(runs[1].instrumentation["views_dedup:store_claim"].ops >= 8000)
      -- Claims went to DynamoDB, not to Valkey (no d:* dedup keys there).
      assert.are.equal("", redis("--scan --pattern '*d:views_dedup:*'"))
      for _, page in ipairs(hottest(truth, 4)) do
        local outs = {}
        for i, extra in ipairs({ {}, { "--cache", url }, { "--cache", url } }) do
          local args = { "query", script, page, "--json" }
          for _, a in ipairs(extra) do args[#args + 1] = a end
          local c, out, qe = mm(args)
          assert.are.equal(0, c, qe)
          outs[i] = core.json_decode(out).result.value
        end
        assert.are.same({ truth[page], truth[page], truth[page] }, outs)
      end
      -- The reads' instrumentation, under the contract's names.
      local c, _, qerr = mm({ "query", script, hottest(truth, 1)[1], "--cache", url, "--stats" })
      assert.are.equal(0, c, qerr)
      local instr = core.json_decode(qerr:match("({[^\n]*})"))
      assert.are.equal(1, instr["views_dedup:store_get"].ops)
      assert.is_true(instr.cache_get.ops >= 1)
      assert.is_true(cmdstat("get") + cmdstat("mget") + cmdstat("evalsha") > 0)
    end)
    S.kill(dyn, "TERM")
    S.wait_exit(dyn, 5)
    S.rm_rf(dir)
    assert(ok, err)
  end)
end)
