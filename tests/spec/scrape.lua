-- spec.scrape: helpers of the specs that read murmur's /metrics and admin
-- routes (metrics_spec, admin_spec): an exposition parser, the structure
-- checks promtool does not make, promtool itself, an HTTP GET through curl,
-- and `murmur run --listen` started on a free port.
local S = require("spec.support")
local core = require("murmur.core")

local M = {}

-- Parses an exposition: { families = {name = {type=, help=}}, order = {...},
-- samples = { {name=, labels=table, key=, value=} } }, or raises on a line
-- that is neither a comment nor a sample.
function M.parse(text)
  local out = { families = {}, order = {}, samples = {} }
  for line in text:gmatch("([^\n]*)\n") do
    local kind, name, rest = line:match("^# (%u+) (%S+) ?(.*)$")
    if kind == "HELP" or kind == "TYPE" then
      local f = out.families[name]
      if not f then
        f = {}
        out.families[name] = f
        out.order[#out.order + 1] = name
      end
      f[kind:lower()] = rest
    elseif line == "# EOF" then
      out.eof = true
    elseif line ~= "" then
      local sname, labels, value = line:match("^([%w_:]+)(%b{}) (%S+)$")
      if not sname then
        labels = ""
        sname, value = line:match("^([%w_:]+) (%S+)$")
      end
      assert(sname, "not a sample: " .. line)
      local l = {}
      for k, v in (labels or ""):gmatch('([%w_]+)="(.-[^\\]?)"') do l[k] = v end
      out.samples[#out.samples + 1] = { name = sname, labels = l, key = sname .. (labels or ""),
        value = tonumber(value) or (value == "+Inf" and math.huge) or value }
    end
  end
  return out
end

-- The family a sample belongs to, for format om (OpenMetrics) or text.
local function family_of(p, name, om)
  for _, suffix in ipairs({ "_bucket", "_sum", "_count", "" }) do
    local base = suffix == "" and name or name:match("^(.*)" .. suffix .. "$")
    if base and p.families[base] and (suffix == "" or p.families[base].type == "histogram") then return base end
  end
  if om then return name:match("^(.*)_total$") end
end

-- What promtool does not check: every sample's family is declared before it
-- and its samples are contiguous; no series twice; histogram buckets are
-- cumulative and end with +Inf equal to _count.
function M.check_structure(p, om)
  local seen, done, current = {}, {}, nil
  for _, s in ipairs(p.samples) do
    local fam = family_of(p, s.name, om)
    assert(fam and p.families[fam], "sample without a family: " .. s.key)
    assert(p.families[fam].help and p.families[fam].type, "no HELP/TYPE for " .. fam)
    if fam ~= current then
      assert(not done[fam], "family written in two places: " .. fam)
      if current then done[current] = true end
      current = fam
    end
    assert(not seen[s.key], "duplicate series " .. s.key)
    seen[s.key] = true
  end
  -- Histograms: per label set, buckets non-decreasing, +Inf == _count.
  local hist = {}
  for _, s in ipairs(p.samples) do
    local base = s.name:match("^(.*)_bucket$")
    if base then
      local l = {}
      for k, v in pairs(s.labels) do if k ~= "le" then l[#l + 1] = k .. "=" .. v end end
      table.sort(l)
      local id = base .. "{" .. table.concat(l, ",") .. "}"
      local h = hist[id] or { last = -1 }
      hist[id] = h
      assert(s.value >= h.last, "buckets not cumulative in " .. id)
      h.last = s.value
      if s.labels.le == "+Inf" then h.inf = s.value end
    end
  end
  for id, h in pairs(hist) do assert(h.inf, "no +Inf bucket in " .. id) end
  for _, s in ipairs(p.samples) do
    local base = s.name:match("^(.*)_count$")
    if base and p.families[base] and p.families[base].type == "histogram" then
      local l = {}
      for k, v in pairs(s.labels) do l[#l + 1] = k .. "=" .. v end
      table.sort(l)
      local h = hist[base .. "{" .. table.concat(l, ",") .. "}"]
      assert(h and h.inf == s.value, "+Inf bucket differs from _count for " .. s.key)
    end
  end
end

-- The value of the series name{labels} (labels: a table, all must match).
function M.value(p, name, labels)
  for _, s in ipairs(p.samples) do
    if s.name == name then
      local ok = true
      for k, v in pairs(labels or {}) do if s.labels[k] ~= v then ok = false end end
      if ok then return s.value end
    end
  end
end

-- promtool check metrics on text: exit code and output.
function M.promtool(dir, text)
  S.write_file(dir .. "/scrape.txt", text)
  local f = io.popen(("promtool check metrics < %s 2>&1; echo \"rc=$?\""):format(S.quote(dir .. "/scrape.txt")))
  local out = f:read("*a")
  f:close()
  return tonumber(out:match("rc=(%d+)")), out
end

M.have_promtool = S.exec("command -v promtool >/dev/null") == 0

-- Parses an exposition and checks what every scrape must hold: the
-- structure (check_structure) and, for the text format when promtool is
-- installed, promtool's verdict. Returns the parsed exposition.
function M.checked(dir, text, om)
  local p = M.parse(text)
  M.check_structure(p, om)
  if not om and M.have_promtool then
    local rc, out = M.promtool(dir, text)
    assert(rc == 0, out)
  end
  return p
end

-- GET url with curl: status code, body, headers (lower-cased names).
-- accept: the Accept header, token: a bearer token (both optional).
local function http_get(url, accept, token)
  local dir = S.tmpdir()
  local code, out = S.exec(("curl -s -o %s -D %s -w '%%{http_code}' %s %s"):format(S.quote(dir .. "/body"),
    S.quote(dir .. "/headers"), (accept and ("-H " .. S.quote("Accept: " .. accept)) or "") ..
    (token and (" -H " .. S.quote("Authorization: Bearer " .. token)) or ""), S.quote(url)))
  local body, hdr = S.read_file(dir .. "/body") or "", S.read_file(dir .. "/headers") or ""
  S.rm_rf(dir)
  local headers = {}
  for k, v in hdr:gmatch("([%w%-]+):%s*([^\r\n]*)") do headers[k:lower()] = v end
  return code == 0 and tonumber(out) or nil, body, headers
end

-- The script of the metrics and admin specs: two pipelines, a windowed
-- count and a Top-K.
M.SCRIPT = [[
local murmur = require("murmur")
murmur.pipeline { name = "views", monoid = murmur.count(), key = "page", time = "ts",
                  window = murmur.daily { retention = "30d" } }
murmur.pipeline { name = "top", monoid = murmur.topk { k = 5 }, key = "user", value = "page" }
]]

-- Writes M.SCRIPT and the input text in dir and builds an engine over them
-- in this process (data in dir/d); returns it and the specs and options.
function M.build(dir, input, follow)
  S.write_file(dir .. "/p.lua", M.SCRIPT)
  S.write_file(dir .. "/in.jsonl", input)
  local specs = assert(require("murmur.loader").load_all({ dir .. "/p.lua" }))
  local opts = { data = dir .. "/d", input = dir .. "/in.jsonl", follow = follow }
  local engine, err = require("murmur.runner").build(specs, opts)
  assert(engine, err)
  return engine, specs, opts
end

-- Writes M.SCRIPT and an input of 30 events over three days plus one
-- malformed line, and runs it once into dir/d.
function M.prepare(dir)
  S.write_file(dir .. "/p.lua", M.SCRIPT)
  local now = math.floor(core.now_ms() / 1000)
  local lines = {}
  for i = 1, 30 do
    lines[#lines + 1] = ('{"page":"p%d","user":"u%d","ts":%d}'):format(i % 4, i % 2, now - (i % 3) * 86400)
  end
  lines[#lines + 1] = "{bad"
  S.write_file(dir .. "/in.jsonl", table.concat(lines, "\n") .. "\n")
  local code, out = S.murmur_run({ "run", "--once", "--data", dir .. "/d", "--input", dir .. "/in.jsonl", dir .. "/p.lua" })
  assert(code == 0, out)
end

-- Starts `murmur serve` over dir/d (M.prepare's) on a free port; returns
-- the handle and the port once it listens.
local starts = 0
local function start_server(dir, cmd)
  -- A log per start: a restarted server must not be found by its
  -- predecessor's "listening" line.
  starts = starts + 1
  local log = ("%s/server%d.log"):format(dir, starts)
  local h = S.spawn(cmd, log)
  local port
  for _ = 1, 400 do
    port = (S.read_file(log) or ""):match("listening on http://[^\n]-:(%d+)")
    if port then break end
    S.sleep(0.05)
  end
  assert(port, "the server did not start: " .. (S.read_file(log) or ""))
  return h, tonumber(port)
end

local function start_serve(dir, extra)
  return start_server(dir, ("%s serve %s --data %s --listen 127.0.0.1:0 %s"):format(S.murmur,
    S.quote(dir .. "/p.lua"), S.quote(dir .. "/d"), extra or ""))
end

-- Starts `murmur run --follow --listen` over M.prepare's script and input
-- (already run once: it resumes at the end of the input, so the counters
-- of this process start at 0); waits for the port and the first status.
-- port: a fixed port (a restarted worker listens there again), default any.
local function start_run(dir, extra, port)
  os.remove(dir .. "/d/status.json") -- the --once run's
  local h, got = start_server(dir, ("%s run --follow --data %s --input %s %s --listen 127.0.0.1:%d %s"):format(
    S.murmur, S.quote(dir .. "/d"), S.quote(dir .. "/in.jsonl"), S.quote(dir .. "/p.lua"), port or 0, extra or ""))
  S.wait_status(dir .. "/d", function(st) return st.engine ~= nil end, 20, "the engine's status")
  return h, got
end
-- The before_each and after_each of a describe whose tests each get a fresh
-- directory prepared by M.prepare and a server started by start(dir):
-- use(dir, handle, port) receives them, and held() returns the directory
-- and the handle to stop afterwards (a test may have restarted it).
function M.server_hooks(start, use, held)
  return function()
    local dir = S.tmpdir()
    M.prepare(dir)
    use(dir, start(dir))
  end, function()
    local dir, h = held()
    if h then S.kill(h, "TERM") S.wait_exit(h, 20) end
    S.rm_rf(dir)
  end
end

-- Appends n events for the running instance (every fifth malformed) and
-- waits until its status shows them in pipeline top.
function M.feed(dir, n)
  local now = math.floor(core.now_ms() / 1000)
  local f = assert(io.open(dir .. "/in.jsonl", "ab"))
  for i = 1, n do
    f:write(i % 5 == 0 and "{bad\n" or ('{"page":"p%d","user":"u1","ts":%d}\n'):format(i % 3, now))
  end
  f:close()
  S.wait_status(dir .. "/d", function(st)
    return st.engine.pipelines.top and st.engine.pipelines.top.records == n and st.engine.flushes >= 1
  end, 20, "the new events")
end

M.http_get, M.start_serve, M.start_run = http_get, start_serve, start_run

return M

