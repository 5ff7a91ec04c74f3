-- Helpers shared by the specs: paths, temporary directories, running the
-- murmur binary and helper programs, and reading back files.
local M = {}

M.build = os.getenv("MURMUR_BUILD") or "build"
M.root = os.getenv("PWD") or "."
M.murmur = M.root .. "/" .. M.build .. "/murmur"

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.quote = quote

-- Runs a shell command; returns exit code, stdout, stderr.
function M.exec(cmd)
  local err = os.tmpname()
  local p = assert(io.popen("(" .. cmd .. ") 2>" .. err .. "; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  local f = io.open(err, "rb")
  local stderr = f and f:read("*a") or ""
  if f then f:close() end
  os.remove(err)
  local code = tonumber(out:match("__rc=(%d+)%s*$"))
  out = out:gsub("__rc=%d+%s*$", "")
  return code, out, stderr
end

-- Runs murmur with arguments (a list, quoted here); returns code, stdout, stderr.
function M.murmur_run(args, stdin_file)
  local parts = { quote(M.murmur) }
  for _, a in ipairs(args) do parts[#parts + 1] = quote(a) end
  local cmd = table.concat(parts, " ")
  if stdin_file then cmd = cmd .. " < " .. quote(stdin_file) end
  return M.exec(cmd)
end

function M.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(os.execute("mkdir -p " .. quote(p)) == 0)
  return p
end

function M.rm_rf(p)
  if p and #p > 5 then os.execute("rm -rf " .. quote(p)) end
end

function M.write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

function M.lines(path)
  local out = {}
  local f = io.open(path, "rb")
  if not f then return out end
  for l in f:lines() do out[#out + 1] = l end
  f:close()
  return out
end

-- Pipeline name's dead letters in data directory dir, one string a letter
-- ("offset reason code error"), with the pipeline's name in the error
-- replaced by as (so that two twin pipelines' letters compare equal).
function M.dead_letters(dir, name, as)
  local json = require("murmur.core")
  local out = {}
  for _, l in ipairs(M.lines(dir .. "/dead-letter/" .. name .. ".jsonl")) do
    local e = json.json_decode(l)
    local msg = e.error:gsub(name, as)
    out[#out + 1] = table.concat({ tostring(e.offset), e.reason, e.code, msg }, " ")
  end
  return out
end

-- Generates Zipf events with the gen_events helper.
-- Writes to path a script for `murmur lua` that prints, tab-separated,
-- where librdkafka is mapped in the process ("none" when it is not), what
-- mm_rdk_load() returns, and where it is mapped afterwards: murmur loads it
-- on first use only (engine/source/kafka_lib.h).
function M.write_rdk_probe(path)
  M.write_file(path, [[
local ffi = require("ffi")
local function where()
  local f = assert(io.open("/proc/self/maps", "rb"))
  local s = f:read("*a")
  f:close()
  return s:match("(/%S*librdkafka[^%s]*)") or "none"
end
local before = where()
ffi.cdef("int mm_rdk_load(void);")
print(before, ffi.C.mm_rdk_load(), where())
]])
end

function M.gen_events(path, count, entities, exponent, seed)
  local cmd = ("%s/%s/helpers/gen_events %d %d %s %d > %s"):format(M.root, M.build, count,
    entities or 100000, exponent or 1.1, seed or 42, quote(path))
  local code, _, err = M.exec(cmd)
  assert(code == 0, "gen_events failed: " .. err)
end

-- Starts a background command (exec'ed, so the pid is the program's own);
-- returns a handle { pid = ..., rcfile = ... }. The exit code is written to
-- rcfile by a waiting subshell, so no zombie reaping is needed to learn it.
function M.spawn(cmd, log)
  local rcfile = os.tmpname()
  os.remove(rcfile)
  -- The outer subshell's stderr is dropped: it would only report "Killed"
  -- when a spec kills the program with SIGKILL.
  local p = assert(io.popen(("( (exec %s) > %s 2>&1 & pid=$!; echo $pid; wait $pid; echo $? > %s ) 2>/dev/null &")
    :format(cmd, quote(log or "/dev/null"), quote(rcfile))))
  local pid = tonumber(p:read("*l"))
  p:close()
  return { pid = pid, rcfile = rcfile }
end

-- A random port for a service a spec starts on a port it chooses. Ports
-- come from 20000 up to the start of the kernel's ephemeral range (32768 on
-- Linux), so no outgoing connection's local port and no service listening
-- on port 0 can hold one. tests/run running spec files at a time gives each
-- its slot (MURMUR_TEST_SLOT of MURMUR_TEST_JOBS); each slot draws from its
-- own part of that range, so two files never pick the same port.
function M.random_port()
  local f = io.open("/proc/sys/net/ipv4/ip_local_port_range", "rb")
  local low = f and tonumber(f:read("*a"):match("%d+"))
  if f then f:close() end
  if not low or low < 22000 then low = 32768 end
  local jobs = tonumber(os.getenv("MURMUR_TEST_JOBS")) or 1
  local slot = tonumber(os.getenv("MURMUR_TEST_SLOT")) or 0
  local width = math.floor((low - 20000) / jobs)
  f = assert(io.open("/dev/urandom", "rb"))
  local b = f:read(2)
  f:close()
  return 20000 + slot * width + (b:byte(1) * 256 + b:byte(2)) % width
end

-- The path of a command on PATH, or nil.
function M.which(name)
  local code, out = M.exec("command -v " .. name)
  if code == 0 and out ~= "" then return (out:gsub("%s+$", "")) end
end

-- A private valkey-server (or redis-server) on 127.0.0.1, its files in dir,
-- answering PING: returns its port, pid and the cli's path, or nil when
-- neither server and cli is installed. Stop it with kill -9 of the pid.
function M.valkey_start(dir)
  local server = M.which("valkey-server") or M.which("redis-server")
  local cli = M.which("valkey-cli") or M.which("redis-cli")
  if not server or not cli then return nil end
  local port = M.random_port()
  local _, out = M.exec(("%s --port %d --bind 127.0.0.1 --save '' --appendonly no --dir %s > %s/redis.log 2>&1 & echo $!")
    :format(M.quote(server), port, M.quote(dir), M.quote(dir)))
  local pid = tonumber(out:match("%d+"))
  M.wait_for("the Valkey server", 10, function()
    return select(2, M.exec(("%s -p %d PING"):format(cli, port))):match("PONG")
  end)
  return port, pid, cli
end

-- A TCP port on 127.0.0.1 nothing listens on (random, checked by connecting).
function M.free_port()
  for _ = 1, 50 do
    local port = M.random_port()
    if M.exec(("bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d' 2>/dev/null"):format(port)) ~= 0 then return port end
  end
  error("no free port")
end

-- Waits up to `seconds` for a spawned process; returns its exit code or nil.
function M.wait_exit(h, seconds)
  for _ = 1, math.floor(seconds * 20) do
    local s = M.read_file(h.rcfile)
    if s and s:match("%d") then
      os.remove(h.rcfile)
      return tonumber(s:match("%d+"))
    end
    M.exec("sleep 0.05")
  end
  return nil
end

function M.kill(h, sig)
  M.exec(("kill -%s %d"):format(sig or "TERM", h.pid))
end

function M.sleep(s)
  M.exec("sleep " .. s)
end

-- Waits up to `seconds` until the process of h catches signal signum (its
-- /proc status lists a handler for it) or is gone. A signal sent before
-- then takes its default action: a sanitized binary on a loaded machine
-- can spend a second before main installs murmur's handlers, and a TERM
-- there ends it with status 143 instead of a clean stop.
function M.wait_catching(h, signum, seconds)
  local bit = 2 ^ (signum - 1)
  for _ = 1, seconds * 20 do
    local st = M.read_file(("/proc/%d/status"):format(h.pid))
    local mask = st and st:match("\nSigCgt:%s*(%x+)")
    if not mask then return end
    if math.floor(tonumber(mask:sub(-8), 16) / bit) % 2 == 1 then return end
    M.sleep(0.05)
  end
end

-- Waits for a service's log to say "listening <port>"; returns the port.
function M.wait_port(log, seconds)
  for _ = 1, seconds * 20 do
    local s = M.read_file(log)
    local port = s and s:match("listening (%d+)")
    if port then return tonumber(port) end
    M.sleep(0.05)
  end
  error("service did not start: " .. (M.read_file(log) or ""))
end

-- The status.json a running `murmur run --data data` rewrites every second,
-- decoded (nil until it exists).
function M.status(data)
  local raw = M.read_file(data .. "/status.json")
  return raw and require("murmur.core").json_decode(raw)
end

-- Polls data's status.json until pred(status) holds, for up to `seconds`.
function M.wait_status(data, pred, seconds, what)
  for _ = 1, (seconds or 10) * 20 do
    local st = M.status(data)
    if st and pred(st) then return st end
    M.sleep(0.05)
  end
  error("timed out waiting for " .. (what or "a condition"), 3)
end

-- Reads stored values of a DynamoDB table back in this process (the spec
-- set the credentials): entity -> decoded JSON, or false when absent. The
-- buckets default to the current one of the pipeline's window (0 when it
-- has none).
function M.ddb_read_values(endpoint, table_name, pipeline, entities, buckets)
  local core = require("murmur.core")
  local st = assert(core.store_open("dynamodb", { table = table_name, endpoint = endpoint }, true))
  local raw = assert(st:meta(pipeline), "no metadata for " .. pipeline)
  local meta = core.json_decode(raw:match("\n(.*)$"))
  local out = {}
  for _, e in ipairs(entities) do
    local b = buckets or { meta.granularity_ms == 0 and 0 or core.bucket(meta.granularity_ms, core.now_ms()) }
    local bytes, n = st:get(pipeline, meta.monoid, e, b)
    assert(n ~= nil and type(n) == "number", tostring(n))
    out[e] = bytes and core.json_decode(assert(core.state(meta.monoid, bytes)):json()) or false
  end
  st:close()
  return out
end

-- node and tests/node/node_modules (make deps) are there: dynalite can run.
M.have_dynalite = M.exec("node --version") == 0
  and io.open(M.root .. "/tests/node/node_modules/dynalite/package.json") ~= nil

-- Starts dynalite on 127.0.0.1 with its data under dbpath (port: a fixed
-- port to come back on after a kill, or any); returns its handle and port.
function M.start_dynalite(dir, dbpath, port)
  local log = dir .. "/dynalite-" .. os.time() .. math.random(1e6) .. ".log"
  local h = M.spawn(("node %s/tests/node/dynalite_server.js --path %s%s"):format(M.root, quote(dbpath),
    port and (" --port " .. port) or ""), log)
  return h, M.wait_port(log, 10)
end

-- Polls pred every 0.1 s for up to `seconds`; returns its first true value,
-- or raises an error naming `what` (and diag(), when given) in the caller.
function M.wait_for(what, seconds, pred, diag)
  for _ = 1, math.floor(seconds * 10) do
    local v = pred()
    if v then return v end
    M.sleep(0.1)
  end
  error("timed out after " .. seconds .. " s waiting for " .. what .. (diag and ("\n" .. diag()) or ""), 3)
end

-- librdkafka's mock cluster (build/helpers/kafka_mock, nbrokers brokers on
-- 127.0.0.1), driven through a FIFO in dir; returns { bs = bootstrap
-- servers, h = handle, log, w = the FIFO's write end, seq }.
function M.kafka_mock_start(dir, nbrokers)
  local m = { log = dir .. "/mock.log", ctl = dir .. "/mock.ctl", seq = 0 }
  assert(os.execute("mkfifo " .. quote(m.ctl)) == 0)
  m.h = M.spawn(("%s/%s/helpers/kafka_mock %d < %s"):format(M.root, M.build, nbrokers, quote(m.ctl)), m.log)
  -- Opening the FIFO waits for the helper to open its end.
  m.w = assert(io.open(m.ctl, "w"))
  for _ = 1, 100 do
    local s = M.read_file(m.log)
    m.bs = s and s:match("^([%d%.:,]+)\n")
    if m.bs then return m end
    M.sleep(0.1)
  end
  error("the Kafka mock did not start: " .. (M.read_file(m.log) or ""))
end

-- Runs a mock control command (see tests/helpers/kafka_mock.c) and waits
-- up to 10 s for its "ok N".
function M.kafka_mock_cmd(m, cmd)
  m.seq = m.seq + 1
  m.w:write(cmd, "\n")
  m.w:flush()
  local answer
  for _ = 1, 100 do
    local s = M.read_file(m.log) or ""
    answer = s:match("\n(ok " .. m.seq .. ")\n") or s:match("\n(error " .. m.seq .. ":[^\n]*)")
    if answer then break end
    M.sleep(0.1)
  end
  assert(answer == "ok " .. m.seq, cmd .. ": " .. tostring(answer or "no answer in 10 s"))
end

function M.kafka_mock_stop(m)
  m.w:close()
  M.kill(m.h, "KILL")
  M.wait_exit(m.h, 5)
end

return M
