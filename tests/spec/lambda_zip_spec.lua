-- lambda_zip_spec.lua (#lambda_zip): the AWS Lambda deployment zip that
-- `make lambda` builds (tools/lambda_zip.sh) runs on its own.
--
-- The zip is built from the binary under test, unpacked into a temporary
-- directory and run the way Lambda runs it: an empty environment (env -i),
-- only the zip's lib/ on the library path, a working directory that is not
-- the checkout. What the zip may take from the machine is the Lambda image's
-- share: glibc and libgcc_s, and no glibc newer than the one doc/kinesis.md
-- states (the image's is 2.34).
local S = require("spec.support")
local core = require("murmur.core")

-- The libraries a Lambda image provides itself (tools/lambda_zip.sh, from_image).
local FROM_IMAGE = {
  ["linux-vdso.so.1"] = true, ["ld-linux-x86-64.so.2"] = true, ["libc.so.6"] = true,
  ["libm.so.6"] = true, ["libmvec.so.1"] = true, ["libpthread.so.0"] = true,
  ["libdl.so.2"] = true, ["librt.so.1"] = true, ["libresolv.so.2"] = true,
  ["libutil.so.1"] = true, ["libanl.so.1"] = true, ["libgcc_s.so.1"] = true,
}

local function version_cmp(a, b)
  local x, y = {}, {}
  for n in a:gmatch("%d+") do x[#x + 1] = tonumber(n) end
  for n in b:gmatch("%d+") do y[#y + 1] = tonumber(n) end
  for i = 1, math.max(#x, #y) do
    if (x[i] or 0) ~= (y[i] or 0) then return (x[i] or 0) < (y[i] or 0) and -1 or 1 end
  end
  return 0
end

-- The glibc version doc/kinesis.md states, from its sentence "needs glibc X.Y".
local function documented_glibc()
  local doc = assert(S.read_file(S.root .. "/doc/kinesis.md"), "doc/kinesis.md is missing")
  return doc:match("needs glibc (%d+%.%d+)")
end

describe("#lambda_zip make lambda's zip", function()
  local dir, zip, root, build_out

  setup(function()
    dir = S.tmpdir()
    zip = dir .. "/murmur-lambda.zip"
    root = dir .. "/task"
    local code, out, err = S.exec(("cd %s && sh tools/lambda_zip.sh %s %s"):format(S.quote(S.root),
      S.quote(S.murmur), S.quote(zip)))
    assert(code == 0, "tools/lambda_zip.sh failed: " .. out .. err)
    build_out = out
    code, _, err = S.exec(("mkdir -p %s && cd %s && unzip -q %s"):format(S.quote(root), S.quote(root), S.quote(zip)))
    assert(code == 0, "unzip failed: " .. err)
  end)

  teardown(function()
    S.rm_rf(dir)
  end)

  -- Runs a command in the unpacked zip as Lambda would: empty environment,
  -- the zip's lib/ as the only library path.
  local function in_zip(cmd)
    return S.exec(("cd %s && env -i LD_LIBRARY_PATH=%s/lib %s"):format(S.quote(root), S.quote(root), cmd))
  end

  it("holds an executable bootstrap at its root that execs bin/murmur lambda", function()
    local code, out = S.exec(("cd %s && unzip -Z1 %s"):format(S.quote(dir), S.quote(zip)))
    assert.are.equal(0, code)
    local names = {}
    for n in out:gmatch("[^\n]+") do names[n] = true end
    for _, n in ipairs({ "bootstrap", "bin/murmur", "lua/murmur/cli.lua", "lua/murmur/runtime.lua",
      "pipelines/recently_interacted.lua", "pipelines/page_views.lua" }) do
      assert.is_true(names[n] == true, n .. " is not in the zip")
    end
    -- Lambda runs bootstrap and bin/murmur only if the zip keeps their modes.
    local _, modes = S.exec(("cd %s && stat -c '%%A %%n' bootstrap bin/murmur"):format(S.quote(root)))
    assert.truthy(modes:find("^%-rwxr%-xr%-x bootstrap\n"), modes)
    assert.truthy(modes:find("\n%-rwxr%-xr%-x bin/murmur\n"), modes)
    assert.are.equal(0, (S.exec("sh -n " .. S.quote(root .. "/bootstrap"))))
    local boot = S.read_file(root .. "/bootstrap")
    assert.truthy(boot:find('exec "$root/bin/murmur" lambda', 1, true), boot)
  end)

  it("starts with an empty environment and only its own lib/: murmur version", function()
    local code, out, err = in_zip("bin/murmur version")
    assert.are.equal(0, code, err)
    assert.truthy(out:match("^murmur %d"), out)
  end)

  it("finds its Lua modules and checks the handler pipeline: murmur check", function()
    local code, out, err = in_zip("bin/murmur check pipelines/recently_interacted.lua")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("ok: pipeline 'recently_interacted'", 1, true), out .. err)
    -- The modules are the zip's: without them the binary has none.
    assert.are.equal(0, (S.exec("rm -r " .. S.quote(root .. "/lua"))))
    code, _, err = in_zip("bin/murmur version")
    assert.are_not.equal(0, code)
    assert.truthy(err:find("murmur.cli", 1, true), err)
    assert.are.equal(0, (S.exec(("cd %s && unzip -q -o %s 'lua/*'"):format(S.quote(root), S.quote(zip)))))
  end)

  it("resolves every library outside the image's glibc and libgcc_s inside lib/", function()
    local code, out, err = in_zip("ldd bin/murmur")
    assert.are.equal(0, code, err)
    local bundled = 0
    for line in out:gmatch("[^\n]+") do
      local name, path = line:match("^%s*(%S+) => (%S+)")
      name = name or line:match("^%s*(%S+)")
      assert.is_nil(line:find("not found", 1, true), line)
      local base = name:match("[^/]+$")
      if not FROM_IMAGE[base] then
        assert(path and path:sub(1, #root + 5) == root .. "/lib/", base .. " resolves outside the zip: " .. line)
        bundled = bundled + 1
      end
    end
    assert.is_true(bundled >= 8, "too few bundled libraries: " .. out)
    -- Nothing in lib/ is a library of glibc itself.
    local _, libs = S.exec("ls " .. S.quote(root .. "/lib"))
    for n in libs:gmatch("[^\n]+") do
      assert.is_nil(FROM_IMAGE[n], n .. " must come from the image")
    end
  end)

  -- murmur loads librdkafka when a pipeline first needs Kafka (a Kafka
  -- dead-letter topic, in a Lambda), so ldd of the binary does not list it:
  -- the zip carries it by name, and the load finds it in lib/.
  it("carries librdkafka, which a start does not map and a first use loads from lib/", function()
    local code, out, err = in_zip("ldd lib/librdkafka.so.1")
    assert.are.equal(0, code, err)
    for line in out:gmatch("[^\n]+") do
      local name, path = line:match("^%s*(%S+) => (%S+)")
      assert.is_nil(line:find("not found", 1, true), line)
      if name and not FROM_IMAGE[name] then
        assert(path:sub(1, #root + 5) == root .. "/lib/", name .. " resolves outside the zip: " .. line)
      end
    end
    local probe = dir .. "/rdk_probe.lua"
    S.write_rdk_probe(probe)
    code, out, err = in_zip("bin/murmur lua " .. S.quote(probe))
    assert.are.equal(0, code, err)
    assert.are.equal(("none\t0\t%s/lib/librdkafka.so.1\n"):format(root), out)
  end)

  it("needs no newer glibc than doc/kinesis.md states, and states it", function()
    local doc = documented_glibc()
    assert(doc, "doc/kinesis.md does not say which glibc the zip needs ('needs glibc X.Y')")
    local _, ldd = S.exec("ldd " .. S.quote(S.murmur))
    if ldd:find("libasan", 1, true) or ldd:find("libubsan", 1, true) then
      pending("a sanitizer build bundles its runtime, which needs its own glibc; the zip ships the release build")
      return
    end
    local _, refs = S.exec(("cd %s && for f in bin/murmur lib/*; do objdump -p \"$f\" | sed -n '/^Version References:/,$p'; done")
      :format(S.quote(root)))
    local need = "0"
    for v in refs:gmatch("GLIBC_(%d+%.%d+[%.%d]*)") do
      if version_cmp(v, need) > 0 then need = v end
    end
    assert.are.equal(doc, need, "the zip needs glibc " .. need .. ", doc/kinesis.md says " .. doc)
    assert.truthy(build_out:find("needs glibc " .. need, 1, true), build_out)
    -- Amazon Linux 2023 (provided.al2023) has glibc 2.34.
    assert.is_true(version_cmp(need, "2.34") <= 0, "the zip needs glibc " .. need .. " > 2.34 (doc/kinesis.md)")
  end)

  -- The bootstrap points SSL_CERT_FILE at Amazon Linux's CA bundle because the
  -- bundled OpenSSL looks for Debian's. Shown here with a certificate of our
  -- own in front of dynalite: trusted through SSL_CERT_FILE, refused without.
  it("verifies HTTPS servers against the CA certificates SSL_CERT_FILE names", function()
    if not S.have_dynalite then
      pending("dynalite is not installed (make deps)")
      return
    end
    local tls = dir .. "/tls"
    local code, _, err = S.exec(("mkdir -p %s && cd %s && openssl req -x509 -newkey ec "
      .. "-pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout key.pem -out cert.pem -days 2 "
      .. "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"):format(S.quote(tls), S.quote(tls)))
    assert.are.equal(0, code, "openssl: " .. err)
    local ddb, ddb_port = S.start_dynalite(dir, dir .. "/ddb")
    local log = dir .. "/tls_front.log"
    local front = S.spawn(("node %s/tests/node/tls_front.js --cert %s --key %s --target %d"):format(
      S.quote(S.root), S.quote(tls .. "/cert.pem"), S.quote(tls .. "/key.pem"), ddb_port), log)
    local port = S.wait_port(log, 10)
    local function create(ca)
      return in_zip(("AWS_ACCESS_KEY_ID=k AWS_SECRET_ACCESS_KEY=s %s bin/murmur ddb create-table "
        .. "--endpoint https://127.0.0.1:%d --table lambda_tls --option max_attempts=1"):format(
        ca and ("SSL_CERT_FILE=" .. S.quote(ca)) or "", port))
    end
    local ok_code, ok_out, ok_err = create(tls .. "/cert.pem")
    local missing_code, _, missing_err = create(tls .. "/absent.pem")
    local plain_code, _, plain_err = create(nil)
    S.kill(front)
    S.wait_exit(front, 10)
    S.kill(ddb)
    S.wait_exit(ddb, 10)
    assert.are.equal(0, ok_code, ok_out .. ok_err)
    assert.are_not.equal(0, missing_code)
    assert.truthy(missing_err:find(tls .. "/absent.pem", 1, true), missing_err)
    assert.are_not.equal(0, plain_code)
    assert.truthy(plain_err:lower():find("certificate", 1, true), plain_err)
  end)

  -- The zip as Lambda runs it: its bootstrap started by the Runtime API
  -- emulator with only Lambda's variables and the function's own, Kinesis
  -- batches from kinesalite, the state in dynalite.
  it("serves Kinesis batches through its bootstrap under the Runtime API emulator", function()
    local emulator_js = S.root .. "/tests/node/lambda_emulator.js"
    if not (S.have_dynalite and S.read_file(emulator_js)
        and S.read_file(S.root .. "/tests/node/node_modules/kinesalite/package.json")) then
      pending("needs node, tests/node/node_modules and the Lambda emulator (make deps)")
      return
    end
    local ddb, ddb_port = S.start_dynalite(dir, dir .. "/ddb-e2e")
    local env = ("AWS_ACCESS_KEY_ID=k AWS_SECRET_ACCESS_KEY=s AWS_SESSION_TOKEN=t MURMUR_STORE=dynamodb "
      .. "MURMUR_DYNAMODB_TABLE=lambda_zip MURMUR_DYNAMODB_ENDPOINT=http://127.0.0.1:%d"):format(ddb_port)
    local code, _, err = in_zip(env .. " bin/murmur ddb create-table")
    assert.are.equal(0, code, err)
    -- 12 entities (under the Top-K's 32, so the stored counts are exact),
    -- each event id once.
    local input = dir .. "/e2e.jsonl"
    local f = assert(io.open(input, "w"))
    local want = {}
    for i = 1, 240 do
      local ent = "ent" .. (i * 7) % 12
      f:write(('{"event_id":"z%d","entity_id":"%s"}\n'):format(i, ent))
      want[ent] = (want[ent] or 0) + 1
    end
    f:close()
    local log = dir .. "/emulator.log"
    local emu = S.spawn(("env -i PATH=%s NODE_NO_WARNINGS=1 %s MURMUR_DATA=%s node %s --handler "
      .. "pipelines/recently_interacted.lua --task-root %s -- %s/bootstrap"):format(S.quote(os.getenv("PATH")), env,
      S.quote(dir .. "/lambda-data"), S.quote(emulator_js), S.quote(root), S.quote(root)), log)
    local port = S.wait_port(log, 10)
    local feed_code, feed_out, feed_err = S.exec(("NODE_NO_WARNINGS=1 node %s/tests/node/kinesis_lambda_feed.mjs "
      .. "--emulator %d --input %s --shards 1 --batch 40"):format(S.quote(S.root), port, S.quote(input)))
    local q_code, q_out, q_err = in_zip(env .. " bin/murmur query --store dynamodb --json "
      .. "pipelines/recently_interacted.lua global --data " .. S.quote(dir .. "/q"))
    S.exec(("curl -s -X POST http://127.0.0.1:%d/test/stop"):format(port))
    if not S.wait_exit(emu, 10) then S.kill(emu, "KILL") end
    S.kill(ddb)
    S.wait_exit(ddb, 10)
    assert.are.equal(0, feed_code, feed_err .. (S.read_file(log) or ""))
    local st = core.json_decode(feed_out:match("({[^\n]*})%s*$"))
    assert.are.equal(6, st.invocations, feed_out)
    assert.are.equal(6, st.responses, feed_out)
    assert.are.equal(0, st.failures_reported, feed_out)
    assert.are.equal(0, q_code, q_err)
    local got = {}
    for _, it in ipairs(core.json_decode(q_out).result.items) do got[it.item] = tonumber(it.count) end
    assert.are.same(want, got)
    -- The runtime ran from the zip: its log names the zip's handler.
    assert.truthy((S.read_file(log) or ""):find(root .. "/pipelines/recently_interacted.lua", 1, true))
  end)
end)
