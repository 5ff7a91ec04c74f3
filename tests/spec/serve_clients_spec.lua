-- murmur serve with clients nobody here wrote: @connectrpc/connect-node
-- driving code that @bufbuild/protoc-gen-es generates (through buf) from
-- proto/murmur/v1/query.proto when this spec starts. Every method goes over
-- the Connect protocol in JSON and binary, on HTTP/1.1 and HTTP/2, over
-- Connect GET, and over gRPC (HTTP/2 cleartext, detected on the same port);
-- all six must give the same answers, and those must be `murmur query`'s.
local S = require("spec.support")
local SV = require("spec.serve_support")
local core = require("murmur.core")

local NOW, DAY, digits = SV.NOW, SV.DAY, SV.digits
local PROTOCOLS = { "connect-json", "connect-proto", "connect-json-h2", "connect-proto-h2", "connect-get", "grpc" }
local NODE = S.exec("node --version") == 0

-- Generates the ES modules into a directory of their own; returns the
-- generated query_pb.js.
local function generate(tag)
  local out = ("tests/node/.gen/%s"):format(tag)
  local tmpl = out .. ".buf.gen.yaml"
  S.exec("mkdir -p " .. S.quote(out))
  S.write_file(tmpl, ("version: v2\nplugins:\n  - local: tests/node/node_modules/.bin/protoc-gen-es\n    out: %s\n    opt: target=js\n"):format(out))
  S.write_file(out .. "/package.json", '{"type": "module"}\n')
  local code, _, err = S.exec(("tests/node/node_modules/.bin/buf generate proto --template %s"):format(S.quote(tmpl)))
  os.remove(tmpl)
  assert(code == 0, "buf generate failed: " .. err)
  return ("%s/%s/murmur/v1/query_pb.js"):format(S.root, out), out
end

-- Runs the calls with the generated client; returns one decoded answer per call.
local function run_calls(gen, port, protocol, calls, token)
  local file = os.tmpname()
  S.write_file(file, core.json_encode(calls))
  local code, out, err = S.exec(("node tests/node/query_client.mjs %s http://127.0.0.1:%d %s %s < %s")
    :format(S.quote(gen), port, protocol, token and S.quote(token) or "", S.quote(file)))
  os.remove(file)
  assert(code == 0, protocol .. ": " .. err)
  local answers = {}
  for line in out:gmatch("[^\n]+") do answers[#answers + 1] = core.json_decode(line) end
  assert.are.equal(#calls, #answers, protocol .. ": " .. out .. err)
  return answers
end

describe("#serve_clients generated Connect and gRPC clients", function()
  if not NODE then
    pending("node is not installed (make deps)")
    return
  end
  local dir, data, h, port, gen, gendir
  local from, to = os.date("!%Y-%m-%d", NOW - 3 * DAY), os.date("!%Y-%m-%d", NOW - DAY)
  local CALLS = {
    { method = "get", request = { pipeline = "views", entity = "p1" } },
    { method = "get", request = { pipeline = "big", entity = "p1" } },
    { method = "get", request = { pipeline = "ratio", entity = "p2" } },
    { method = "get", request = { pipeline = "top", entity = "u3" } },
    { method = "get", request = { pipeline = "uniq", entity = "p0", includeRaw = true } },
    { method = "get", request = { pipeline = "members", entity = "p1" } },
    { method = "get", request = { pipeline = "latest", entity = "p2" } },
    { method = "getMany", request = { pipeline = "views", entities = { "p0", "p2", "none" } } },
    { method = "getWindow", request = { pipeline = "daily", entity = "p1", window = "3d" } },
    { method = "getWindowMany", request = { pipeline = "daily", entities = { "p0", "p2" }, window = "30d" } },
    { method = "getRange", request = { pipeline = "daily", entity = "p2", from = from, to = to } },
    { method = "getRangeMany", request = { pipeline = "daily", entities = { "p1", "p2" }, from = from, to = to } },
    { method = "listPipelines", request = {} },
    { method = "describe", request = { pipeline = "uniq" } },
    { method = "mightContain", request = { pipeline = "seen", entity = "p2", items = { "u2", "u5", "nobody" } } },
    { method = "get", request = { pipeline = "nope", entity = "p1" } },
    { method = "getWindow", request = { pipeline = "views", entity = "p1", window = "7d" } },
    { method = "getRange", request = { pipeline = "daily", entity = "p1", from = to, to = from } },
  }

  setup(function()
    dir = S.tmpdir()
    local script
    script, data = SV.make_data(dir)
    gen, gendir = generate(("run-%d-%d"):format(os.time(), math.random(1e6)))
    h, port = SV.start({ script, "--data", data, "--listen", "127.0.0.1:0" }, dir .. "/serve.log")
  end)

  teardown(function()
    if h then SV.stop(h) end
    if gendir then S.rm_rf(gendir) end
    S.rm_rf(dir)
  end)

  it("gives the same answers over every protocol, and murmur query's", function()
    local by = {}
    for _, p in ipairs(PROTOCOLS) do by[p] = run_calls(gen, port, p, CALLS) end
    for _, p in ipairs(PROTOCOLS) do
      for i = 1, #CALLS do
        assert.are.same(by["connect-json"][i], by[p][i], ("%s, call %d (%s)"):format(p, i, CALLS[i].method))
      end
    end
    local a = by.grpc
    local function q(p, e, extra) return SV.murmur_query(data, p, e, extra) end
    assert.are.equal(digits(q("views", "p1").result.value), a[1].ok.result.scalar.intValue)
    assert.are.equal("9007199254740993", a[2].ok.result.scalar.intValue)
    assert.are.equal(q("ratio", "p2").result.value, a[3].ok.result.scalar.doubleValue)
    local top = q("top", "u3").result
    assert.are.equal(digits(top.n), a[4].ok.result.topk.n)
    for i, it in ipairs(top.items) do
      assert.are.same({ item = it.item, count = digits(it.count), lower = digits(it.lower), upper = digits(it.upper) },
        a[4].ok.result.topk.items[i])
    end
    assert.are.equal(digits(q("uniq", "p0").result.cardinality), a[5].ok.result.hll.cardinality)
    assert.is_string(a[5].ok.result.hll.raw)
    assert.are.same(q("members", "p1").result.members, a[6].ok.result.set.members)
    local latest = q("latest", "p2").result
    assert.are.same({ stringValue = latest.value, time = latest.time }, a[7].ok.result.scalar)
    for i, e in ipairs({ "p0", "p2" }) do
      assert.are.equal(digits(q("views", e).result.value), a[8].ok.results[i].scalar.intValue)
    end
    assert.is_nil(a[8].ok.results[3].found)
    local w = q("daily", "p1", { "--window", "3d" })
    assert.are.equal(digits(w.result.value), a[9].ok.result.scalar.intValue)
    assert.are.same({ from = w.window.from, to = w.window.to, buckets = w.window.buckets }, a[9].ok.result.window)
    for i, e in ipairs({ "p0", "p2" }) do
      assert.are.equal(digits(q("daily", e, { "--window", "30d" }).result.value), a[10].ok.results[i].scalar.intValue)
    end
    local r = q("daily", "p2", { "--from", from, "--to", to })
    assert.are.equal(digits(r.result.value), a[11].ok.result.scalar.intValue)
    for i, e in ipairs({ "p1", "p2" }) do
      assert.are.equal(digits(q("daily", e, { "--from", from, "--to", to }).result.value), a[12].ok.results[i].scalar.intValue)
    end
    assert.are.equal(9, #a[13].ok.pipelines)
    assert.are.equal("hll(p=14)", a[14].ok.pipeline.monoid)
    assert.are.same({ found = true, results = { true, true, false } }, a[15].ok)
    assert.are.equal("NotFound", a[16].error.code)
    assert.are.equal("FailedPrecondition", a[17].error.code)
    assert.are.equal("InvalidArgument", a[18].error.code)
  end)

  it("asks gRPC and Connect clients for the token when one is set", function()
    local tdir = S.tmpdir()
    local h2, port2 = SV.start({ "--data", data, "--listen", "127.0.0.1:0" }, tdir .. "/tok.log", "env MURMUR_TOKEN=t0ken")
    local call = { { method = "get", request = { pipeline = "views", entity = "p1" } } }
    for _, p in ipairs({ "grpc", "connect-proto-h2", "connect-json" }) do
      assert.are.equal("Unauthenticated", run_calls(gen, port2, p, call)[1].error.code, p)
      assert.is_table(run_calls(gen, port2, p, call, "t0ken")[1].ok, p)
    end
    assert.are.equal(0, SV.stop(h2))
    S.rm_rf(tdir)
  end)
end)
