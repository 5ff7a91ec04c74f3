-- murmur serve under hostile HTTP: malformed requests, huge header blocks
-- and bodies, slow clients (HTTP/1.1 and HTTP/2), pipelined requests with a bad one among them,
-- half-closed connections, invalid protobuf and JSON, HTTP/2 garbage, more
-- connections than allowed. Each case checks the answer the bad client gets
-- and that the server keeps answering a well-behaved client; at the end the
-- server still stops cleanly (exit 0: under make check, no sanitizer report
-- and no leak). Raw bytes go through tests/node/raw_http.mjs.
local S = require("spec.support")
local SV = require("spec.serve_support")
local core = require("murmur.core")

local NODE = S.exec("node --version") == 0

describe("#serve_hostile hostile HTTP", function()
  if not NODE then
    pending("node is not installed (make deps)")
    return
  end
  local dir, data, h, port, n = nil, nil, nil, nil, 0

  -- Sends raw bytes (a string); returns what came back and whether the
  -- server closed the connection.
  local function raw(bytes, flags)
    n = n + 1
    local file = ("%s/raw%d.bin"):format(dir, n)
    S.write_file(file, bytes)
    local code, out, err = S.exec(("node tests/node/raw_http.mjs %d %s %s"):format(port, S.quote(file), flags or ""))
    assert(code == 0, err)
    local closed = out:find("\n%-%-closed%-by%-server$") ~= nil
    return (out:gsub("\n%-%-closed%-by%-server$", "")), closed
  end

  local function request(body, extra)
    return ("POST /murmur.v1.QueryService/Get HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s")
      :format(extra or "", #body, body)
  end

  -- A well-behaved client still gets its answer.
  local function healthy()
    local _, out = S.exec(("curl -s --max-time 5 -X POST -H 'content-type: application/json' -d '{\"pipeline\":\"views\",\"entity\":\"p1\"}' http://127.0.0.1:%d/murmur.v1.QueryService/Get"):format(port))
    local ok, r = pcall(core.json_decode, out)
    assert(ok and r.result and r.result.found, "the server stopped answering: " .. out)
  end

  setup(function()
    dir = S.tmpdir()
    local script
    script, data = SV.make_data(dir)
    h, port = SV.start({ script, "--data", data, "--listen", "127.0.0.1:0", "--request-timeout", "1s",
      "--max-connections", "8" }, dir .. "/serve.log")
  end)

  teardown(function()
    if h then SV.stop(h) end
    S.rm_rf(dir)
  end)

  it("answers malformed requests with 400 and closes", function()
    local out, closed = raw("GET / HTTP/9.9\r\n\r\n")
    assert.truthy(out:find("^HTTP/1%.1 505 "), out)
    assert.is_true(closed)
    for _, bad in ipairs({ "GARBAGE\r\n\r\n", "GET /\x01 HTTP/1.1\r\n\r\n",
      "POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nnothex\r\n", "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0" }) do
      out, closed = raw(bad)
      assert.truthy(out:find("^HTTP/1%.1 400 "), bad .. " -> " .. out)
      assert.is_true(closed)
      healthy()
    end
  end)

  it("refuses a header block over 16 KiB with 431 and a body over 4 MiB with 413", function()
    local out, closed = raw("GET /murmur.v1.QueryService/Get HTTP/1.1\r\nHost: t\r\nX-Big: " .. ("a"):rep(20000) .. "\r\n\r\n")
    assert.truthy(out:find("^HTTP/1%.1 431 "), out:sub(1, 200))
    assert.is_true(closed)
    out, closed = raw("GET / HTTP/1.1\r\n" .. ("X-Many: 1\r\n"):rep(3000) .. "\r\n")
    assert.truthy(out:find("^HTTP/1%.1 431 "), out:sub(1, 200))
    -- Refused from the declared length, before the body is read.
    out, closed = raw("POST /murmur.v1.QueryService/Get HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\n\r\n{")
    assert.truthy(out:find("^HTTP/1%.1 413 "), out:sub(1, 200))
    assert.is_true(closed)
    -- Chunked, with no length announced: refused when the limit is passed.
    local chunk = ("%x\r\n%s\r\n"):format(1048576, ("x"):rep(1048576))
    out = raw("POST /murmur.v1.QueryService/Get HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" .. chunk:rep(5))
    assert.truthy(out:find("^HTTP/1%.1 413 "), out:sub(1, 200))
    healthy()
  end)

  it("disconnects slow clients after --request-timeout, silent or trickling", function()
    local out, closed = raw("", "--hold 8000")
    assert.is_true(closed, "a silent connection was kept: " .. out)
    out, closed = raw(request('{"pipeline":"views","entity":"p1"}'), "--trickle 150")
    assert.is_true(closed)
    assert.are.equal("", out)
    healthy()
  end)

  it("resets an HTTP/2 stream trickled beside busy ones, and closes a connection of control frames only", function()
    -- Other streams on the connection open and finish all the while; they
    -- neither extend the slow stream's --request-timeout nor lose their
    -- answers when it is reset (CANCEL, 8).
    local code, out, err = S.exec(("node tests/node/h2_slow.mjs %d trickle"):format(port))
    assert(code == 0, err)
    local r = core.json_decode(out)
    assert.are.equal(8, r.reset, out)
    assert.is_true(r.before > 0 and r.after > 0, out)
    assert.is_false(r.session_closed, out)
    -- PINGs and WINDOW_UPDATEs are not requests: the connection is closed
    -- at the request timeout as if it were silent.
    code, out, err = S.exec(("node tests/node/h2_slow.mjs %d control"):format(port))
    assert(code == 0, err)
    assert.is_true(core.json_decode(out).session_closed, out)
    healthy()
  end)

  it("answers pipelined requests in order up to a bad one, then closes", function()
    local out, closed = raw(request('{"pipeline":"views","entity":"p0"}') .. request('{"pipeline":"views","entity":"p2"}')
      .. "BROKEN\r\n\r\n" .. request('{"pipeline":"views","entity":"p1"}'))
    local statuses = {}
    for st in out:gmatch("HTTP/1%.1 (%d+)") do statuses[#statuses + 1] = tonumber(st) end
    assert.are.same({ 200, 200, 400 }, statuses)
    local ents = {}
    for e in out:gmatch('"entity":"(p%d)"') do ents[#ents + 1] = e end
    assert.are.same({ "p0", "p2" }, ents)
    assert.is_true(closed)
    healthy()
  end)

  it("still answers a client that half-closes after its request", function()
    local out, closed = raw(request('{"pipeline":"views","entity":"p1"}') .. request('{"pipeline":"views","entity":"p0"}'), "--half-close")
    local ents = {}
    for e in out:gmatch('"entity":"(p%d)"') do ents[#ents + 1] = e end
    assert.are.same({ "p1", "p0" }, ents)
    assert.is_true(closed)
    -- Half-closed in the middle of a request: nothing to answer, closed.
    out, closed = raw("POST /murmur.v1.QueryService/Get HTTP/1.1\r\nContent-Length: 50\r\n\r\n{", "--half-close")
    assert.are.equal("", out)
    assert.is_true(closed)
    healthy()
  end)

  it("answers invalid protobuf and JSON with invalid_argument", function()
    local out = raw(("POST /murmur.v1.QueryService/Get HTTP/1.1\r\nHost: t\r\nContent-Type: application/proto\r\nContent-Length: 6\r\nConnection: close\r\n\r\n\xff\xff\xff\xff\xff\xff"))
    assert.truthy(out:find("^HTTP/1%.1 400 "), out)
    assert.truthy(out:find('"code":"invalid_argument"', 1, true), out)
    for _, body in ipairs({ '{"pipeline":', '[1,2]', '{"pipeline":{"a":1}}', '{"entity":"\xff\xfe"}', ('['):rep(5000),
      '{"includeRaw":"yes"}', '{"pipeline":"views","entity":"p1","entity":"p2"}' }) do
      out = raw(request(body, "Connection: close\r\n"))
      assert.truthy(out:find("^HTTP/1%.1 400 "), body:sub(1, 40) .. " -> " .. out)
      assert.truthy(out:find('"code":"invalid_argument"', 1, true), out)
    end
    -- A field by both its names, and names that are neither: refused for
    -- the name, in requests that are otherwise valid.
    for body, why in pairs({
      ['{"pipeline":"views","entity":"p1","includeRaw":true,"include_raw":true}'] = "given more than once",
      ['{"pipeline":"views","entity":"p1","include_Raw":true}'] = "has no field 'include_Raw'",
      ['{"pipeline":"views","entity":"p1","includeraw":true}'] = "has no field 'includeraw'",
      ['{"pipeline":"views","entity":"p1","includeRaw_":true}'] = "has no field 'includeRaw_'",
      ['{"pipeline":"views","entity":"p1","include":true}'] = "has no field 'include'" }) do
      out = raw(request(body, "Connection: close\r\n"))
      assert.truthy(out:find("^HTTP/1%.1 400 "), body .. " -> " .. out)
      assert.truthy(out:find('"code":"invalid_argument"', 1, true), out)
      assert.truthy(out:find(why, 1, true), body .. " -> " .. out)
    end
    -- gRPC: a frame whose length lies, and a message that is not protobuf.
    for _, frame in ipairs({ "\0\0\0\0\50\10\5views", "\0\0\0\0\4\255\255\255\255" }) do
      local f = dir .. "/frame.bin"
      S.write_file(f, frame)
      local _, hd = S.exec(("curl -s -i --http2-prior-knowledge --max-time 5 -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @%s http://127.0.0.1:%d/murmur.v1.QueryService/Get"):format(S.quote(f), port))
      assert.truthy(hd:find("grpc%-status: 3"), hd)
    end
    healthy()
  end)

  it("closes an HTTP/2 connection that sends garbage after the preface", function()
    local out, closed = raw("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" .. ("\255"):rep(64))
    assert.is_true(closed)
    assert.is_string(out)
    healthy()
  end)

  it("closes connections beyond --max-connections at once and serves the others", function()
    local d2 = S.tmpdir()
    -- The holders send nothing, so the request timeout would close them:
    -- it is raised above the time the node holders may take to start on a
    -- loaded machine, and the wait for them is bounded by time, not tries.
    local h2, port2 = SV.start({ "--data", data, "--listen", "127.0.0.1:0", "--max-connections", "2",
      "--request-timeout", "90s" }, d2 .. "/serve.log")
    S.write_file(d2 .. "/empty.bin", "")
    local holders = {}
    for i = 1, 2 do
      holders[i] = S.spawn(("node %s/tests/node/raw_http.mjs %d %s --hold 90000 --ready %s"):format(S.root, port2,
        S.quote(d2 .. "/empty.bin"), S.quote(d2 .. "/ready" .. i)))
    end
    -- Nothing else connects until both holders have: a probe open while a
    -- holder connected would take its place, and the holder, refused,
    -- would leave the probes served from then on.
    S.wait_for("both holders to connect", 60, function()
      return S.read_file(d2 .. "/ready1") and S.read_file(d2 .. "/ready2")
    end)
    -- With both holders connected, a third connection is closed at once.
    local refused, tries, last = false, 0, nil
    local deadline = os.time() + 60
    while os.time() < deadline do
      local _, code = S.exec(("curl -s -o /dev/null -w '%%{http_code}' --max-time 3 http://127.0.0.1:%d/healthz"):format(port2))
      tries, last = tries + 1, code
      if code == "000" then refused = true break end
      S.sleep(0.1)
    end
    assert(refused, ("no connection refused in 60 s (%d tries, last answer %s)"):format(tries, tostring(last)))
    for _, hh in ipairs(holders) do S.kill(hh, "KILL") S.wait_exit(hh, 5) end
    -- With the holders gone, it serves again.
    local ok
    for _ = 1, 50 do
      local _, code = S.exec(("curl -s -o /dev/null -w '%%{http_code}' --max-time 3 http://127.0.0.1:%d/healthz"):format(port2))
      if code == "200" then ok = true break end
      S.sleep(0.1)
    end
    assert.is_true(ok)
    assert.are.equal(0, SV.stop(h2))
    S.rm_rf(d2)
  end)

  it("stops cleanly after all this", function()
    assert.are.equal(0, SV.stop(h))
    h = nil
  end)
end)
