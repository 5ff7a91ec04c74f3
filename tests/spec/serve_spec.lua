-- murmur serve: the query service over Connect (curl, JSON), compared with
-- `murmur query` on the same data, its error codes, and its security
-- defaults (loopback only without a token, bearer tokens, CORS off unless
-- configured). gRPC and the binary encoding are driven by generated clients
-- in serve_clients_spec.lua; hostile HTTP in serve_hostile_spec.lua.
local S = require("spec.support")
local core = require("murmur.core")

local SV = require("spec.serve_support")
local NOW, DAY = SV.NOW, SV.DAY
local start, stop, murmur_query, digits = SV.start, SV.stop, SV.murmur_query, SV.digits

local function curl(args)
  local code, out, err = S.exec("curl -s -S --max-time 10 " .. args)
  assert(code == 0, "curl failed: " .. err)
  return out
end

-- curl with the status line and headers: returns status, headers (lower-case
-- names), body.
local function curl_i(args)
  local out = curl("-i " .. args)
  local head, body = out:match("^(.-)\r\n\r\n(.*)$")
  local status = tonumber(head:match("^HTTP/1%.1 (%d+)"))
  local h = {}
  for name, value in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do h[name:lower()] = value end
  return status, h, body
end

local function rpc(port, method, body, extra)
  return curl_i(("%s -X POST -H 'content-type: application/json' --data-binary %s http://127.0.0.1:%d/murmur.v1.QueryService/%s")
    :format(extra or "", S.quote(core.json_encode(body)), port, method))
end

describe("#serve murmur serve over Connect JSON", function()
  local dir, data, h, port

  setup(function()
    dir = S.tmpdir()
    local script
    script, data = SV.make_data(dir)
    h, port = start({ script, "--data", data, "--listen", "127.0.0.1:0" }, dir .. "/serve.log")
  end)

  teardown(function()
    if h then stop(h) end
    S.rm_rf(dir)
  end)

  it("answers Get with the values murmur query prints, typed per monoid", function()
    for _, case in ipairs({ { "views", "p1" }, { "daily", "p1" }, { "big", "p1" }, { "members", "p2" } }) do
      local want = murmur_query(data, case[1], case[2])
      local status, hd, body = rpc(port, "Get", { pipeline = case[1], entity = case[2] })
      assert.are.equal(200, status, body)
      assert.are.equal("application/json", hd["content-type"])
      local r = core.json_decode(body).result
      assert.are.equal(case[1], r.pipeline)
      assert.are.equal(case[2], r.entity)
      assert.are.equal(want.monoid, r.monoid)
      assert.is_true(r.found)
      assert.are.equal(want.buckets_found, r.bucketsFound)
      -- int64 as a decimal string, exact beyond 2^53.
      if want.monoid ~= "set" then assert.are.equal(digits(want.result.value), r.scalar.intValue) end
      if want.window then
        assert.are.same({ from = want.window.from, to = want.window.to, buckets = want.window.buckets }, r.window)
      end
    end
    local _, _, body = rpc(port, "Get", { pipeline = "big", entity = "p1" })
    assert.are.equal("9007199254740993", core.json_decode(body).result.scalar.intValue)
    -- A float sum is a double even when whole.
    local want = murmur_query(data, "ratio", "p0")
    local _, _, rbody = rpc(port, "Get", { pipeline = "ratio", entity = "p0" })
    assert.are.equal(want.result.value, core.json_decode(rbody).result.scalar.doubleValue)
  end)

  it("returns Top-K, HLL, set, last and Bloom results like murmur query", function()
    local want = murmur_query(data, "top", "u1")
    local _, _, body = rpc(port, "Get", { pipeline = "top", entity = "u1" })
    local t = core.json_decode(body).result.topk
    assert.are.equal(want.result.k, t.k)
    assert.are.equal(digits(want.result.n), t.n)
    assert.are.equal(#want.result.items, #t.items)
    for i, it in ipairs(want.result.items) do
      assert.are.same({ item = it.item, count = digits(it.count), lower = digits(it.lower), upper = digits(it.upper) },
        t.items[i])
    end
    want = murmur_query(data, "uniq", "p2")
    _, _, body = rpc(port, "Get", { pipeline = "uniq", entity = "p2", includeRaw = true })
    local hll = core.json_decode(body).result.hll
    assert.are.equal(digits(want.result.cardinality), hll.cardinality)
    local _, magic = S.exec("printf %s " .. S.quote(hll.raw) .. " | base64 -d | head -c 4")
    assert.are.equal("HYLL", magic)
    -- A request's field by its proto name, as proto3 JSON allows, too.
    _, _, body = rpc(port, "Get", { pipeline = "uniq", entity = "p2", include_raw = true })
    assert.are.equal(hll.raw, core.json_decode(body).result.hll.raw)
    want = murmur_query(data, "members", "p0")
    _, _, body = rpc(port, "Get", { pipeline = "members", entity = "p0" })
    local set = core.json_decode(body).result.set
    assert.are.equal(want.result.size, set.size)
    assert.are.same(want.result.members, set.members)
    want = murmur_query(data, "latest", "p1")
    _, _, body = rpc(port, "Get", { pipeline = "latest", entity = "p1" })
    local sc = core.json_decode(body).result.scalar
    assert.are.equal(want.result.value, sc.stringValue)
    assert.are.equal(want.result.time, sc.time)
    _, _, body = rpc(port, "MightContain", { pipeline = "seen", entity = "p1", items = { "u1", "u4", "nobody" } })
    local mc = core.json_decode(body)
    assert.is_true(mc.found)
    assert.are.same({ true, true, false }, mc.results)
  end)

  it("answers GetWindow, GetRange and the Many variants like murmur query --window/--from/--to", function()
    local want = murmur_query(data, "daily", "p1", { "--window", "3d" })
    local _, _, body = rpc(port, "GetWindow", { pipeline = "daily", entity = "p1", window = "3d" })
    local r = core.json_decode(body).result
    assert.are.equal(digits(want.result.value), r.scalar.intValue)
    assert.are.equal(want.window.buckets, r.window.buckets)
    local from, to = os.date("!%Y-%m-%d", NOW - 3 * DAY), os.date("!%Y-%m-%d", NOW - DAY)
    want = murmur_query(data, "daily", "p2", { "--from", from, "--to", to })
    _, _, body = rpc(port, "GetRangeMany", { pipeline = "daily", entities = { "p2", "nobody" }, from = from, to = to })
    local rs = core.json_decode(body).results
    assert.are.equal(2, #rs)
    assert.are.equal(digits(want.result.value), rs[1].scalar.intValue)
    assert.are.equal(want.window.from, rs[1].window.from)
    assert.is_nil(rs[2].found) -- false is the default, omitted in proto3 JSON
    assert.are.equal("nobody", rs[2].entity)
    _, _, body = rpc(port, "GetWindowMany", { pipeline = "daily", entities = { "p0", "p1" }, window = "30d" })
    rs = core.json_decode(body).results
    assert.are.equal(digits(murmur_query(data, "daily", "p0", { "--window", "30d" }).result.value), rs[1].scalar.intValue)
    _, _, body = rpc(port, "GetMany", { pipeline = "views", entities = { "p0", "p1", "p2" } })
    rs = core.json_decode(body).results
    for i, e in ipairs({ "p0", "p1", "p2" }) do
      assert.are.equal(digits(murmur_query(data, "views", e).result.value), rs[i].scalar.intValue)
    end
  end)

  it("answers an entity asked twice in one read (read once) like one asked once", function()
    local _, _, body = rpc(port, "GetMany", { pipeline = "views", entities = { "p1", "p0", "p1" } })
    local rs = core.json_decode(body).results
    local p1 = digits(murmur_query(data, "views", "p1").result.value)
    assert.are.same({ p1, digits(murmur_query(data, "views", "p0").result.value), p1 },
      { rs[1].scalar.intValue, rs[2].scalar.intValue, rs[3].scalar.intValue })
    -- Heap-backed states (Top-K) shared by two answers, and windows whose
    -- buckets repeat across entities.
    _, _, body = rpc(port, "GetMany", { pipeline = "top", entities = { "u1", "u1" } })
    rs = core.json_decode(body).results
    local _, _, one = rpc(port, "Get", { pipeline = "top", entity = "u1" })
    assert.are.same(core.json_decode(one).result, rs[1])
    assert.are.same(rs[1], rs[2])
    assert.is_true(rs[1].found)
    _, _, body = rpc(port, "GetWindowMany", { pipeline = "daily", entities = { "p0", "p0" }, window = "30d" })
    rs = core.json_decode(body).results
    assert.are.equal(digits(murmur_query(data, "daily", "p0", { "--window", "30d" }).result.value), rs[2].scalar.intValue)
    assert.are.same(rs[1], rs[2])
  end)

  it("lists and describes pipelines", function()
    local _, _, body = rpc(port, "ListPipelines", {})
    local names = {}
    for _, p in ipairs(core.json_decode(body).pipelines) do names[#names + 1] = p.name end
    assert.are.same({ "big", "daily", "latest", "members", "ratio", "seen", "top", "uniq", "views" }, names)
    _, _, body = rpc(port, "Describe", { pipeline = "top" })
    local p = core.json_decode(body).pipeline
    assert.are.equal("topk(k=4)", p.monoid)
    assert.are.equal("p.lua", p.script:match("[^/]+$"))
    _, _, body = rpc(port, "Describe", { pipeline = "daily" })
    assert.are.equal("86400000", core.json_decode(body).pipeline.granularityMs)
  end)

  it("serves GET with Connect's query encoding, plain and base64", function()
    local msg = core.json_encode({ pipeline = "views", entity = "p2" })
    local status, hd, body = curl_i(("-G http://127.0.0.1:%d/murmur.v1.QueryService/Get --data-urlencode encoding=json --data-urlencode connect=v1 --data-urlencode %s")
      :format(port, S.quote("message=" .. msg)))
    assert.are.equal(200, status, body)
    assert.are.equal("application/json", hd["content-type"])
    local want = digits(murmur_query(data, "views", "p2").result.value)
    assert.are.equal(want, core.json_decode(body).result.scalar.intValue)
    -- URL-safe base64 without padding, as Connect clients send it.
    local _, b64 = S.exec("printf %s " .. S.quote(msg) .. " | base64 -w0 | tr '+/' '-_' | tr -d =")
    status, _, body = curl_i(("'http://127.0.0.1:%d/murmur.v1.QueryService/Get?encoding=json&base64=1&message=%s'"):format(port, b64))
    assert.are.equal(200, status, body)
    assert.are.equal(want, core.json_decode(body).result.scalar.intValue)
  end)

  it("maps errors to Connect codes, never a stack trace", function()
    local cases = {
      { "Get", { pipeline = "nope", entity = "x" }, 404, "not_found" },
      { "GetWindow", { pipeline = "views", entity = "p1", window = "3d" }, 400, "failed_precondition" },
      { "GetRange", { pipeline = "daily", entity = "p1", from = "2026-12-03", to = "2026-12-01" }, 400, "invalid_argument" },
      { "GetRange", { pipeline = "daily", entity = "p1", from = "2001-01-01", to = "2001-01-02" }, 400, "invalid_argument" },
      { "GetWindow", { pipeline = "daily", entity = "p1", window = "soon" }, 400, "invalid_argument" },
      { "Get", { pipeline = "views" }, 400, "invalid_argument" },
      { "Get", { pipeline = "views", entity = "p1", bogus = 1 }, 400, "invalid_argument" },
      { "MightContain", { pipeline = "views", entity = "p1", items = { "a" } }, 400, "failed_precondition" },
      { "NoSuchMethod", {}, 501, "unimplemented" },
    }
    for _, c in ipairs(cases) do
      local status, hd, body = rpc(port, c[1], c[2])
      assert.are.equal(c[3], status, c[1] .. ": " .. body)
      assert.are.equal("application/json", hd["content-type"])
      local e = core.json_decode(body)
      assert.are.equal(c[4], e.code, body)
      assert.is_string(e.message)
      assert.is_nil(e.message:find("traceback", 1, true))
    end
    local status, _, body = curl_i(("-X POST -H 'content-type: application/json' --data-binary '{\"pipeline\":' http://127.0.0.1:%d/murmur.v1.QueryService/Get"):format(port))
    assert.are.equal(400, status)
    assert.are.equal("invalid_argument", core.json_decode(body).code)
    status = curl_i(("-X POST -H 'content-type: text/plain' --data-binary x http://127.0.0.1:%d/murmur.v1.QueryService/Get"):format(port))
    assert.are.equal(415, status)
    status = curl_i(("http://127.0.0.1:%d/no/such/path"):format(port))
    assert.are.equal(404, status)
  end)

  it("keeps a connection alive across requests and answers pipelined ones in order", function()
    -- curl reuses one connection for several URLs on one command line.
    local url = ("http://127.0.0.1:%d/murmur.v1.QueryService/Get?encoding=json&message="):format(port)
    local out = curl(("-v %s %s 2>&1"):format(S.quote(url .. '{"pipeline":"views","entity":"p0"}'),
      S.quote(url .. '{"pipeline":"views","entity":"p1"}')))
    assert.truthy(out:find("Re%-using existing connection") or out:find("Reusing existing"), out)
    -- Three requests in one write: three answers, in order.
    local req = ""
    for i, e in ipairs({ "p0", "p1", "p2" }) do
      local body = core.json_encode({ pipeline = "views", entity = e })
      req = req .. ("POST /murmur.v1.QueryService/Get HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s")
        :format(i == 3 and "Connection: close\r\n" or "", #body, body)
    end
    S.write_file(dir .. "/pipelined.txt", req)
    local _, resp = S.exec(("bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d; cat %s >&3; timeout 5 cat <&3'"):format(port, dir .. "/pipelined.txt"))
    local seen = {}
    for e in resp:gmatch('"entity":"(p%d)"') do seen[#seen + 1] = e end
    assert.are.same({ "p0", "p1", "p2" }, seen)
  end)

  it("sends no CORS headers unless an origin is allowed", function()
    local _, hd = rpc(port, "Get", { pipeline = "views", entity = "p1" }, "-H 'Origin: https://app.example'")
    assert.is_nil(hd["access-control-allow-origin"])
  end)
end)

describe("#serve security", function()
  local dir, data

  setup(function()
    dir = S.tmpdir()
    local _
    _, data = SV.make_data(dir)
  end)

  teardown(function() S.rm_rf(dir) end)

  it("refuses a non-loopback address without a token", function()
    local code, _, err = S.exec(("env -u MURMUR_TOKEN %s serve --data %s --listen 0.0.0.0:0"):format(S.quote(S.murmur), S.quote(data)))
    assert.are.equal(2, code)
    assert.truthy(err:find("requires a bearer token", 1, true), err)
  end)

  it("requires the bearer token on every RPC once one is set", function()
    S.write_file(dir .. "/token", "s3cret-token\n")
    local h, port = start({ "--data", data, "--listen", "0.0.0.0:0", "--token-file", dir .. "/token" }, dir .. "/tok.log")
    local status, hd, body = rpc(port, "Get", { pipeline = "views", entity = "p1" })
    assert.are.equal(401, status)
    assert.are.equal("unauthenticated", core.json_decode(body).code)
    assert.are.equal("Bearer", hd["www-authenticate"])
    status = rpc(port, "Get", { pipeline = "views", entity = "p1" }, "-H 'Authorization: Bearer wrong-token!'")
    assert.are.equal(401, status)
    status, _, body = rpc(port, "Get", { pipeline = "views", entity = "p1" }, "-H 'Authorization: Bearer s3cret-token'")
    assert.are.equal(200, status, body)
    assert.are.equal(0, stop(h))
    -- $MURMUR_TOKEN does the same.
    h, port = start({ "--data", data, "--listen", "0.0.0.0:0" }, dir .. "/env.log", "env MURMUR_TOKEN=from-env")
    assert.are.equal(401, (rpc(port, "Get", { pipeline = "views", entity = "p1" })))
    assert.are.equal(200, (rpc(port, "Get", { pipeline = "views", entity = "p1" }, "-H 'Authorization: Bearer from-env'")))
    assert.are.equal(0, stop(h))
  end)

  it("allows configured CORS origins only, with preflight", function()
    local h, port = start({ "--data", data, "--listen", "127.0.0.1:0", "--cors-origin", "https://app.example" }, dir .. "/cors.log")
    local _, hd = rpc(port, "Get", { pipeline = "views", entity = "p1" }, "-H 'Origin: https://app.example'")
    assert.are.equal("https://app.example", hd["access-control-allow-origin"])
    _, hd = rpc(port, "Get", { pipeline = "views", entity = "p1" }, "-H 'Origin: https://evil.example'")
    assert.is_nil(hd["access-control-allow-origin"])
    local status
    status, hd = curl_i(("-X OPTIONS -H 'Origin: https://app.example' -H 'Access-Control-Request-Method: POST' -H 'Access-Control-Request-Headers: content-type,connect-protocol-version' http://127.0.0.1:%d/murmur.v1.QueryService/Get"):format(port))
    assert.are.equal(204, status)
    assert.are.equal("https://app.example", hd["access-control-allow-origin"])
    assert.truthy(hd["access-control-allow-headers"]:find("connect-protocol-version", 1, true))
    assert.are.equal(0, stop(h))
  end)
end)

describe("#serve murmur run --listen", function()
  it("serves the query service from the running worker, on the store it writes", function()
    local dir = S.tmpdir()
    local script = dir .. "/p.lua"
    S.write_file(script, SV.SCRIPT)
    local ev = {}
    for i = 1, 30 do
      ev[#ev + 1] = core.json_encode({ page = "p" .. (i % 2), user = "u" .. i, n = i, r = 1, ts = NOW, big = 0 })
    end
    S.write_file(dir .. "/ev.jsonl", table.concat(ev, "\n") .. "\n")
    local log = dir .. "/run.log"
    local h = S.spawn(("%s run %s --data %s --input %s --follow --listen 127.0.0.1:0"):format(S.quote(S.murmur),
      S.quote(script), S.quote(dir .. "/data"), S.quote(dir .. "/ev.jsonl")), log)
    local port
    for _ = 1, 200 do
      port = (S.read_file(log) or ""):match("listening on http://[^\n]-:(%d+)")
      if port then break end
      S.sleep(0.05)
    end
    assert(port, "run --listen did not start: " .. (S.read_file(log) or ""))
    -- The first flush lands within the flush interval; poll for it.
    local r
    for _ = 1, 100 do
      local status, _, body = rpc(tonumber(port), "Get", { pipeline = "views", entity = "p0" })
      assert.are.equal(200, status, body)
      r = core.json_decode(body).result
      if r.found then break end
      S.sleep(0.1)
    end
    assert.are.equal(tostring(2 + 4 + 6 + 8 + 10 + 12 + 14 + 16 + 18 + 20 + 22 + 24 + 26 + 28 + 30), r.scalar.intValue)
    S.kill(h, "TERM")
    assert.are.equal(0, S.wait_exit(h, 15))
    S.rm_rf(dir)
  end)
end)

describe("#serve --result-cache", function()
  it("answers repeats from the cache until fresh_read reads the store again", function()
    local dir = S.tmpdir()
    local script = dir .. "/p.lua"
    S.write_file(script, SV.SCRIPT)
    local function feed(n)
      -- A new file each time: run resumes a file it has read at its offset.
      local file = ("%s/ev%d.jsonl"):format(dir, n)
      S.write_file(file, core.json_encode({ page = "p1", user = "u", n = n, r = 1, ts = NOW, big = 0 }) .. "\n")
      local code, _, err = S.murmur_run({ "run", script, "--data", dir .. "/data", "--input", file, "--once" })
      assert(code == 0, err)
    end
    feed(5)
    local h, port = start({ "--data", dir .. "/data", "--listen", "127.0.0.1:0", "--result-cache", "10m" }, dir .. "/serve.log")
    local function value(extra)
      local req = { pipeline = "views", entity = "p1" }
      for k, v in pairs(extra or {}) do req[k] = v end
      local status, _, body = rpc(port, "Get", req)
      assert.are.equal(200, status, body)
      return core.json_decode(body).result.scalar.intValue
    end
    assert.are.equal("5", value())
    feed(7) -- the store now holds 12
    assert.are.equal("5", value()) -- within the TTL: the cached answer
    assert.are.equal("12", value({ freshRead = true }))
    assert.are.equal("12", value()) -- the fresh read refreshed the cache
    assert.are.equal(0, stop(h))
    S.rm_rf(dir)
  end)
end)
