-- murmur serve --cache: reads go through the Valkey cache the writer keeps
-- (a private redis-server on 127.0.0.1, wire-compatible with Valkey), with
-- the same answers as `murmur query`, and the cache serves them: its GET
-- and MGET counters move and the LMDB store is only the fallback.
local S = require("spec.support")
local SV = require("spec.serve_support")
local core = require("murmur.core")

local function which(name)
  local code, out = S.exec("command -v " .. name)
  if code == 0 and out ~= "" then return (out:gsub("%s+$", "")) end
end

local server, cli = which("valkey-server") or which("redis-server"), which("valkey-cli") or which("redis-cli")

describe("#serve_valkey murmur serve through the Valkey cache", function()
  if not server or not cli then
    pending("redis-server/valkey-server and its cli are not installed")
    return
  end
  local dir, port, pid, h, sport, url

  local function reads()
    local _, out = S.exec(("%s -p %d INFO commandstats"):format(cli, port))
    local n = 0
    for cmd, calls in out:gmatch("cmdstat_(%w+):calls=(%d+)") do
      if cmd == "get" or cmd == "mget" or cmd == "hmget" or cmd == "hgetall" or cmd == "evalsha" then n = n + tonumber(calls) end
    end
    return n
  end

  setup(function()
    dir = S.tmpdir()
    port = S.random_port()
    local _, out = S.exec(("%s --port %d --bind 127.0.0.1 --save '' --appendonly no --dir %s > %s/redis.log 2>&1 & echo $!")
      :format(S.quote(server), port, S.quote(dir), S.quote(dir)))
    pid = tonumber(out:match("%d+"))
    for _ = 1, 100 do
      if select(2, S.exec(("%s -p %d PING"):format(cli, port))):match("PONG") then break end
      S.sleep(0.05)
    end
    url = ("redis://127.0.0.1:%d"):format(port)
    S.write_file(dir .. "/p.lua", 'local murmur = require("murmur")\n'
      .. 'murmur.pipeline { name = "views", key = "page", monoid = murmur.sum {}, value = "n" }\n')
    local ev = {}
    for i = 1, 300 do ev[#ev + 1] = ('{"page":"p%d","n":%d}'):format(i % 30, i) end
    S.write_file(dir .. "/ev.jsonl", table.concat(ev, "\n") .. "\n")
    local code, _, err = S.murmur_run({ "run", "--once", "--data", dir .. "/data", "--cache", url, "--input",
      dir .. "/ev.jsonl", dir .. "/p.lua" })
    assert(code == 0, err)
    h, sport = SV.start({ dir .. "/p.lua", "--data", dir .. "/data", "--cache", url, "--listen", "127.0.0.1:0" },
      dir .. "/serve.log")
  end)

  teardown(function()
    if h then SV.stop(h) end
    if pid then S.exec("kill -9 " .. pid) end
    S.rm_rf(dir)
  end)

  it("answers like murmur query, reading the cache", function()
    local before = reads()
    local entities = {}
    for i = 0, 29 do entities[#entities + 1] = "p" .. i end
    local _, out = S.exec(("curl -s --max-time 10 -X POST -H 'content-type: application/json' --data-binary %s http://127.0.0.1:%d/murmur.v1.QueryService/GetMany")
      :format(S.quote(core.json_encode({ pipeline = "views", entities = entities })), sport))
    local rs = core.json_decode(out).results
    assert.is_true(reads() > before, "the server did not read the cache")
    assert.are.equal(30, #rs)
    for i = 0, 29, 7 do
      local want = SV.murmur_query(dir .. "/data", "views", "p" .. i, { "--cache", url })
      assert.are.equal(SV.digits(want.result.value), rs[i + 1].scalar.intValue)
    end
  end)
end)
