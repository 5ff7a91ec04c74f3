-- murmur serve over the DynamoDB store (dynalite on 127.0.0.1, reached
-- through tests/node/fault_proxy.js, which counts requests by operation):
-- answers equal `murmur query`'s, and a GetMany of 250 entities is one
-- BatchGetItem per 100 keys, i.e. 3 requests. A pipeline's first lookup
-- reads its descriptor through the loop: while DynamoDB holds that read,
-- the server answers other calls, and so it does while ListPipelines reads
-- the names; a Valkey cache in front of DynamoDB takes
-- the window its fills need from that read instead of reading it again.
local S = require("spec.support")
local SV = require("spec.serve_support")
local core = require("murmur.core")

local SECRET = "spec-secret"
local d = S.have_dynalite and describe or pending

d("#serve_dynamodb murmur serve over DynamoDB", function()
  local dir, dyn, proxy, proxy_port, h, port
  local TABLE = ("serve_%d"):format(os.time() % 100000)

  local function env()
    return ("env AWS_ACCESS_KEY_ID=AKIDSPEC AWS_SECRET_ACCESS_KEY=%s MURMUR_STORE=dynamodb MURMUR_DYNAMODB_TABLE=%s MURMUR_DYNAMODB_ENDPOINT=http://127.0.0.1:%d")
      :format(SECRET, TABLE, proxy_port)
  end

  local function batch_gets()
    local _, out = S.exec(("curl -s http://127.0.0.1:%d/__stats"):format(proxy_port))
    return core.json_decode(out).requests.BatchGetItem or 0
  end

  local function faults(rules)
    S.exec(("curl -s -X POST --data-binary %s http://127.0.0.1:%d/__faults")
      :format(S.quote(core.json_encode({ verify_secret = SECRET, rules = rules })), proxy_port))
  end

  -- Requests the proxy's hold rules have held so far.
  local function held()
    local _, out = S.exec(("curl -s http://127.0.0.1:%d/__stats"):format(proxy_port))
    return core.json_decode(out).injected.hold or 0
  end

  local function rpc(method, body)
    local _, out = S.exec(("curl -s --max-time 20 -X POST -H 'content-type: application/json' --data-binary %s http://127.0.0.1:%d/murmur.v1.QueryService/%s")
      :format(S.quote(core.json_encode(body)), port, method))
    return core.json_decode(out)
  end

  setup(function()
    dir = S.tmpdir()
    local dyn_port
    dyn, dyn_port = S.start_dynalite(dir, dir .. "/db")
    proxy = S.spawn(("node tests/node/fault_proxy.js --target %d"):format(dyn_port), dir .. "/proxy.log")
    proxy_port = S.wait_port(dir .. "/proxy.log", 10)
    S.exec(("curl -s -X POST --data-binary %s http://127.0.0.1:%d/__faults")
      :format(S.quote(core.json_encode({ verify_secret = SECRET, rules = {} })), proxy_port))
    local code, _, err = S.exec(env() .. " " .. S.quote(S.murmur) .. " ddb create-table")
    assert(code == 0, err)
    S.write_file(dir .. "/p.lua", 'local murmur = require("murmur")\n'
      .. 'murmur.pipeline { name = "views", key = "page", monoid = murmur.sum {}, value = "n" }\n'
      .. 'murmur.pipeline { name = "slow", key = "page", monoid = murmur.count() }\n')
    local ev = {}
    for i = 1, 500 do ev[#ev + 1] = ('{"page":"p%d","n":%d}'):format(i % 250, i) end
    S.write_file(dir .. "/ev.jsonl", table.concat(ev, "\n") .. "\n")
    code, _, err = S.exec(("%s %s run --once --input %s %s"):format(env(), S.quote(S.murmur),
      S.quote(dir .. "/ev.jsonl"), S.quote(dir .. "/p.lua")))
    assert(code == 0, err)
    h, port = SV.start({ dir .. "/p.lua", "--store", "dynamodb", "--listen", "127.0.0.1:0" }, dir .. "/serve.log", env())
  end)

  teardown(function()
    if h then SV.stop(h) end
    if proxy then S.kill(proxy, "TERM") S.wait_exit(proxy, 5) end
    if dyn then S.kill(dyn, "TERM") S.wait_exit(dyn, 5) end
    S.rm_rf(dir)
  end)

  it("answers like murmur query, and reads GetMany with one BatchGetItem per 100 keys", function()
    local r = rpc("Get", { pipeline = "views", entity = "p7" }).result
    local _, out = S.exec(("%s %s query views p7 --json"):format(env(), S.quote(S.murmur)))
    assert.are.equal(SV.digits(core.json_decode(out).result.value), r.scalar.intValue)
    local entities = {}
    for i = 0, 249 do entities[#entities + 1] = "p" .. i end
    local before = batch_gets()
    local rs = rpc("GetMany", { pipeline = "views", entities = entities }).results
    assert.are.equal(3, batch_gets() - before)
    assert.are.equal(250, #rs)
    -- p(i) got the events i and i + 250.
    for i = 0, 249 do
      assert.are.equal(tostring(i == 0 and 250 + 500 or i + i + 250), rs[i + 1].scalar.intValue, "p" .. i)
    end
  end)

  -- Calls `method` with `body` while the fault proxy holds the GetItem
  -- whose body matches `match`: once that request is held, another
  -- pipeline's call must be answered (the loop is free) and the held call
  -- still be waiting; then releases it and returns the held call's answer.
  local function answers_while_held(what, match, method, body)
    faults({ { op = "GetItem", action = "hold", match = match } })
    local before, out = held(), dir .. "/held.json"
    os.remove(out)
    S.exec(("curl -s --max-time 120 -X POST -H 'content-type: application/json' --data-binary %s "
      .. "http://127.0.0.1:%d/murmur.v1.QueryService/%s > %s 2>&1 &")
      :format(S.quote(core.json_encode(body)), port, method, S.quote(out)))
    S.wait_for(what .. " to be held", 30, function() return held() > before end)
    local r = rpc("Get", { pipeline = "views", entity = "p7" })
    assert.is_table(r and r.result, "no answer while " .. what .. " was held")
    assert.are.equal("264", r.result.scalar.intValue)
    assert.are.equal("", S.read_file(out) or "")
    faults({})
    S.exec(("curl -s -X POST http://127.0.0.1:%d/__release"):format(proxy_port))
    local answer
    S.wait_for("the held call's answer", 60, function()
      local text = S.read_file(out) or ""
      answer = text:find("}%s*$") and core.json_decode(text) or nil
      return answer ~= nil
    end)
    return answer, S.read_file(out)
  end

  -- Before, the first lookup of a pipeline was a blocking GetItem on the
  -- loop thread: with that request unanswered, no other call was served.
  it("serves other calls while a pipeline's descriptor read waits on DynamoDB", function()
    -- The descriptor item of "slow" only (its pk is the pipeline's name).
    local slow, text = answers_while_held("the descriptor read", '"S":"slow"}', "Get",
      { pipeline = "slow", entity = "p3" })
    -- p3 got the events 3 and 253.
    assert.are.equal("2", slow.result.scalar.intValue, text)
    -- Now cached: answered without another descriptor read.
    assert.are.equal("2", rpc("Get", { pipeline = "slow", entity = "p3" }).result.scalar.intValue)
  end)

  -- Before, ListPipelines read the names with a blocking GetItem (list_meta)
  -- on the loop thread: with that request unanswered, no other call was
  -- served.
  it("serves other calls while ListPipelines' read of the names waits on DynamoDB", function()
    -- The registry item put_meta adds the names to (pk "#meta").
    local list, text = answers_while_held("the names read", '"S":"#meta"}', "ListPipelines", {})
    local names = {}
    for _, p in ipairs(list.pipelines or {}) do names[#names + 1] = p.name end
    assert.are.same({ "slow", "views" }, names, text)
  end)

  -- Before, a cache's namespace that no put_meta described read its window
  -- with a blocking GetItem at its first fill, right after the answer. Now
  -- the cache takes the window from the descriptor the query server read
  -- through it, and never reads it again.
  it("serves through a Valkey cache without reading a descriptor on its own", function()
    local vport, vpid, cli = S.valkey_start(dir)
    if not vport then
      pending("redis-server/valkey-server and its cli are not installed")
      return
    end
    local vh
    local ok, err = pcall(function()
      local url = ("redis://127.0.0.1:%d"):format(vport)
      local vsport
      vh, vsport = SV.start({ dir .. "/p.lua", "--store", "dynamodb", "--cache", url, "--listen", "127.0.0.1:0" },
        dir .. "/serve-cache.log", env())
      local function get(entity)
        local _, o = S.exec(("curl -s --max-time 20 -X POST -H 'content-type: application/json' --data-binary %s http://127.0.0.1:%d/murmur.v1.QueryService/Get")
          :format(S.quote(core.json_encode({ pipeline = "views", entity = entity })), vsport))
        local r = core.json_decode(o)
        return r and r.result and r.result.scalar.intValue
      end
      -- The query server's descriptor read passes; any other is held.
      local before = held()
      faults({ { op = "GetItem", action = "hold", match = '"S":"views"}', after = 1 } })
      -- p7 got the events 7 and 257, p8 8 and 258.
      assert.are.equal("264", get("p7"))
      assert.are.equal("266", get("p8"))
      -- Cached states are the keys murmur:s:NS:BUCKET:ENTITY.
      S.wait_for("the cache to be filled", 30, function()
        local _, keys = S.exec(("%s -p %d --scan --pattern 'murmur:s:views:*'"):format(cli, vport))
        return keys:find("%S") ~= nil
      end)
      assert.are.equal(before, held(), "the cache read the descriptor again")
      faults({})
      S.exec(("curl -s -X POST http://127.0.0.1:%d/__release"):format(proxy_port))
    end)
    if vh then SV.stop(vh) end
    if vpid then S.exec("kill -9 " .. vpid) end
    assert(ok, err)
  end)
end)
