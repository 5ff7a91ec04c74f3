-- /metrics: the exposition murmur renders (text 0.0.4 and OpenMetrics 1.0),
-- checked by promtool (Debian prometheus), by a parser here for what
-- promtool does not check (contiguous families, cumulative buckets ending in
-- +Inf = _count, no duplicate series), and against the engine's counters.
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

describe("#metrics exposition", function()
  local dir
  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  -- Runs two pipelines in this process over a file with a malformed line.
  local function run_engine()
    S.write_file(dir .. "/p.lua", [[
local murmur = require("murmur")
murmur.pipeline { name = "views", monoid = murmur.count(), key = "page", time = "ts",
                  window = murmur.daily { retention = "30d" } }
murmur.pipeline { name = "top", monoid = murmur.topk { k = 5 }, key = "user", value = "page" }
]])
    local now = math.floor(core.now_ms() / 1000)
    S.write_file(dir .. "/in.jsonl", ('{"page":"a","user":"u1","ts":%d}\n{bad\n{"page":"b","user":"u1","ts":%d}\n')
      :format(now, now))
    local specs = assert(require("murmur.loader").load_all({ dir .. "/p.lua" }))
    local engine, err = require("murmur.runner").build(specs, { data = dir .. "/d", input = dir .. "/in.jsonl" })
    assert(engine, err)
    assert.are.equal(0, engine:run(true))
    return engine
  end

  it("renders the engine's counters, store operations and flush histogram; promtool finds no problem", function()
    local engine = run_engine()
    core.metrics_reload({ ok = 2, failed = 1, unchanged = 0, last_ok_ms = 1700000000000,
      last_error_ms = 1700000001000, last_error = "p.lua:2: boom" })
    local text, ctype = core.metrics()
    local om = core.metrics(true)
    engine:close()
    assert.are.equal("text/plain; version=0.0.4; charset=utf-8", ctype)
    local p = M.parse(text)
    M.check_structure(p, false)
    assert.are.equal(3, M.value(p, "murmur_records_total"))
    assert.are.equal(3, M.value(p, "murmur_pipeline_records_total", { pipeline = "views" }))
    assert.are.equal(2, M.value(p, "murmur_pipeline_accepted_total", { pipeline = "views" }))
    assert.are.equal(1, M.value(p, "murmur_pipeline_rejected_total", { pipeline = "top", reason = "json" }))
    assert.are.equal(1, M.value(p, "murmur_pipeline_dead_letters_total", { pipeline = "top" }))
    assert.are.equal(2, M.value(p, "murmur_pipeline_deltas_flushed_total", { pipeline = "views" }))
    assert.is_true(M.value(p, "murmur_flushes_total") >= 1)
    assert.are.equal(M.value(p, "murmur_flushes_total"), M.value(p, "murmur_flush_duration_seconds_count"))
    assert.is_true(M.value(p, "murmur_store_operations_total", { op = "store_merge_update" }) >= 1)
    assert.are.equal(M.value(p, "murmur_store_operations_total", { op = "store_merge_update" }),
      M.value(p, "murmur_store_operation_duration_seconds_count", { op = "store_merge_update" }))
    assert.are.equal(0, M.value(p, "murmur_store_operation_errors_total", { op = "store_merge_update" }))
    assert.is_true(M.value(p, "process_resident_memory_bytes") > 1e6)
    assert.are.equal(1, M.value(p, "murmur_build_info", { version = core.version }))
    assert.are.equal(2, M.value(p, "murmur_reloads_total", { result = "ok" }))
    assert.are.equal(1, M.value(p, "murmur_reloads_total", { result = "failed" }))
    assert.are.equal(1, M.value(p, "murmur_reload_failing"))
    assert.are.equal(1700000000, M.value(p, "murmur_reload_last_success_timestamp_seconds"))
    assert.are.equal("counter", p.families["murmur_records_total"].type)
    if M.have_promtool then
      local rc, out = M.promtool(dir, text)
      assert.are.equal(0, rc, out)
    end
    -- OpenMetrics: families named without _total, "# EOF" last.
    local po = M.parse(om)
    M.check_structure(po, true)
    assert.is_true(po.eof)
    assert.are.equal("# EOF\n", om:sub(-6))
    assert.are.equal("counter", po.families["murmur_records"].type)
    assert.is_nil(po.families["murmur_records_total"])
    assert.are.equal(3, M.value(po, "murmur_records_total"))
  end)

  it("documents every family it renders in doc/metrics.md, and renders every family documented", function()
    local engine = run_engine()
    core.metrics_reload({ ok = 0, failed = 0, unchanged = 0 })
    local p = M.parse((core.metrics()))
    engine:close()
    local doc = S.read_file(S.root .. "/doc/metrics.md")
    local src = S.read_file(S.root .. "/engine/core/metrics.c")
    for _, name in ipairs(p.order) do
      assert.is_truthy(doc:find("`" .. name .. "`", 1, true), name .. " is not in doc/metrics.md")
    end
    for name in doc:gmatch("| `([%w_]+)` |") do
      local base = name:gsub("_total$", "")
      assert.is_truthy(src:find('"' .. base .. '"', 1, true), name .. " is documented but never rendered")
    end
  end)

  it("chooses OpenMetrics only when the Accept header prefers it", function()
    assert.is_true(core.metrics_wants_openmetrics(
      "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"))
    assert.is_false(core.metrics_wants_openmetrics("text/plain;version=0.0.4"))
    assert.is_false(core.metrics_wants_openmetrics("*/*"))
    assert.is_false(core.metrics_wants_openmetrics(nil))
  end)
end)

