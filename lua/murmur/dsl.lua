-- murmur.dsl: the pipeline language scripts are written in.
--
-- A script declares pipelines by calling murmur.pipeline{...} once per
-- pipeline. Every declaration is validated on the spot: a mistake raises an
-- error naming the script's file:line and what was expected, before anything
-- runs. The result of a declaration is a plain "spec" table that the runner
-- (murmur.runner) hands to the engine; fields given as names or constants stay
-- declarative so the engine evaluates them in C without calling Lua.
local core = require("murmur.core")
local grants = require("murmur.grants")

local M = {}

local function where(level)
  local info = debug.getinfo(level + 1, "Sl")
  if not info or info.currentline < 0 then return "?" end
  return info.short_src .. ":" .. info.currentline
end

local function fail(loc, fmt, ...)
  error(loc .. ": " .. string.format(fmt, ...), 0)
end

local function keys_of(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks)
  return table.concat(ks, ", ")
end

-- The murmur.pipeline{} call being validated: its location and the file it
-- is in, so that an unknown option is reported at its own line.
local current = nil

-- Lua keeps no line per table field, so an unknown option of the pipeline
-- being declared is found in the script's text: the first line at or after
-- the declaration that assigns it. Falls back to the declaration's line.
local function option_loc(loc, key)
  if not current or current.loc ~= loc or type(key) ~= "string" then return loc end
  local f = io.open(current.path, "rb")
  if not f then return loc end
  local n, found = 0, nil
  for line in f:lines() do
    n = n + 1
    if n >= current.line and line:find("%f[%w_]" .. key:gsub("%p", "%%%0") .. "%s*=[^=]") then
      found = n
      break
    end
  end
  f:close()
  return found and (loc:gsub(":%d+$", ":" .. found)) or loc
end

local function check_options(loc, what, given, allowed)
  for k in pairs(given) do
    if not allowed[k] then
      fail(option_loc(loc, k), "%s: unknown option '%s' (expected one of: %s)", what, tostring(k), keys_of(allowed))
    end
  end
end

local function duration(loc, what, v)
  if type(v) == "number" then
    if v < 0 then fail(loc, "%s must not be negative", what) end
    return v * 1000
  end
  if type(v) ~= "string" then fail(loc, "%s must be a duration such as \"30d\" or \"1s\", got %s", what, type(v)) end
  local ms, err = core.parse_duration(v)
  if not ms then fail(loc, "%s: %s", what, err) end
  return ms
end

local function size(loc, what, v)
  if type(v) == "number" then return v end
  if type(v) == "string" then
    local n, unit = v:match("^(%d+)([kKmMgG]?)[iI]?[bB]?$")
    if n then
      local mul = ({ [""] = 1, k = 1024, m = 1048576, g = 1073741824 })[unit:lower()]
      return tonumber(n) * mul
    end
  end
  fail(loc, "%s must be a size such as 1048576 or \"1m\"", what)
end

-- Monoids -----------------------------------------------------------------

local monoid_mt = { __murmur = "monoid" }

local MONOIDS = {
  sum = { float = "boolean" },
  count = {},
  min = {}, max = {}, first = {}, last = {},
  set = { max_size = "number" },
  hll = {},
  topk = { k = "number" },
  bloom = { capacity = "number", fpr = "number" },
}

local INTEGER_PARAMS = { k = true, max_size = true, capacity = true }

local function monoid(name, params, level)
  local loc = where(level + 1)
  params = params or {}
  if type(params) ~= "table" then fail(loc, "murmur.%s expects a table of parameters", name) end
  local allowed = MONOIDS[name]
  local spec = { name = name }
  for k, v in pairs(params) do
    if not allowed[k] then
      fail(loc, "murmur.%s: unknown parameter '%s'%s", name, tostring(k),
        next(allowed) and (" (expected one of: " .. keys_of(allowed) .. ")") or " (it takes none)")
    end
    if type(v) ~= allowed[k] then fail(loc, "murmur.%s: parameter '%s' must be a %s", name, k, allowed[k]) end
    if INTEGER_PARAMS[k] and (v ~= math.floor(v) or v < 1 or v > 2^32) then
      fail(loc, "murmur.%s: parameter '%s' must be a positive integer, got %s", name, k, tostring(v))
    end
    spec[k] = v
  end
  local desc, err = core.describe_monoid(spec)
  if not desc then fail(loc, "murmur.%s: %s", name, (err:gsub("^EINVAL: ", ""))) end
  spec.describe = desc
  return setmetatable(spec, monoid_mt)
end

-- Constructors keep a local before returning: a tail call would drop the
-- caller's frame and with it the script's file:line in error messages.
for name in pairs(MONOIDS) do
  M[name] = function(params)
    local m = monoid(name, params, 2)
    return m
  end
end

-- Windows -----------------------------------------------------------------

local window_mt = { __murmur = "window" }
local GRANULARITY = { minute = 60000, hour = 3600000, day = 86400000 }

local function window(granularity, opts, level)
  local loc = where(level + 1)
  opts = opts or {}
  if type(opts) ~= "table" then fail(loc, "window options must be a table") end
  check_options(loc, "window", opts, { retention = true, granularity = true })
  local g = GRANULARITY[opts.granularity or granularity]
  if not g then fail(loc, "window granularity must be minute, hour or day") end
  local w = { granularity_ms = g, retention_ms = 0 }
  if opts.retention ~= nil then w.retention_ms = duration(loc, "window retention", opts.retention) end
  return setmetatable(w, window_mt)
end

function M.minutely(opts) local w = window("minute", opts, 2) return w end
function M.hourly(opts) local w = window("hour", opts, 2) return w end
function M.daily(opts) local w = window("day", opts, 2) return w end
function M.window(opts) local w = window(nil, opts, 2) return w end

-- Keys and sources --------------------------------------------------------

local literal_mt = { __murmur = "literal" }

-- A constant key: every event goes to the entity named `s`.
function M.literal(s)
  if type(s) ~= "string" or #s == 0 or #s > 1024 then
    fail(where(2), "murmur.literal expects a string of 1..1024 bytes")
  end
  return setmetatable({ value = s }, literal_mt)
end

-- The record's identity in its source, as a dedup id: Kafka records are
-- "topic:partition:offset", so a record delivered again after a crash or a
-- rebalance is recognised without an id field. Sources without such an
-- identity (files, stdin) leave their records undeduplicated.
M.record_id = setmetatable({}, { __murmur = "record_id" })

local source_mt = { __murmur = "source" }

local function source(kind, opts, allowed, level)
  local loc = where(level + 1)
  opts = opts or {}
  if type(opts) ~= "table" then fail(loc, "murmur.%s expects a table of options", kind) end
  check_options(loc, "murmur." .. kind, opts, allowed)
  local s = { type = kind, options = {} }
  for k, v in pairs(opts) do s.options[k] = v end
  return setmetatable(s, source_mt)
end

-- The input chosen on the command line (--input FILE, --follow), stdin by default.
function M.input(opts) local s = source("input", opts, { batch = true, drain = true }, 2) return s end
function M.file(opts)
  local s = source("file", opts, { path = true, follow = true, batch = true, drain = true, read_size = true, consumer = true }, 2)
  if type(s.options.path) ~= "string" then fail(where(2), "murmur.file needs a path") end
  if s.options.consumer ~= nil and type(s.options.consumer) ~= "string" then
    fail(where(2), "murmur.file's consumer must be a string (the name its position is stored under)")
  end
  -- The sandbox: a script reads files under its directory, the data
  -- directory or a granted path, never through a symbolic link.
  local ok, err = grants.check_path(s.options.path, "murmur.file")
  if not ok then fail(where(2), "%s", err) end
  s.options.nofollow = true
  return s
end
function M.stdin(opts) local s = source("stdin", opts, { batch = true, drain = true, read_size = true }, 2) return s end

-- librdkafka properties passed through as they are (SASL, TLS, timeouts...).
local function kafka_properties(loc, what, props)
  local out = {}
  if props == nil then return out end
  if type(props) ~= "table" then fail(loc, "%s: properties must be a table of librdkafka properties", what) end
  for k, v in pairs(props) do
    local tv = type(v)
    if type(k) ~= "string" or (tv ~= "string" and tv ~= "number" and tv ~= "boolean") then
      fail(loc, "%s: properties must map librdkafka property names to strings, numbers or booleans", what)
    end
    out[k] = tostring(v)
  end
  local ok, err = grants.check_kafka_properties(out, what)
  if not ok then fail(loc, "%s", err) end
  return out
end

-- A Kafka consumer group (doc/kafka.md). brokers, topic(s), group and start
-- may be left to --kafka-* flags or MURMUR_KAFKA_* variables, which also
-- override what is given here.
function M.kafka(opts)
  local loc = where(2)
  local s = source("kafka", opts, { brokers = true, topic = true, topics = true, group = true,
    start = true, batch = true, drain = true, properties = true }, 2)
  local o = s.options
  if o.topic ~= nil and o.topics ~= nil then fail(loc, "murmur.kafka: give topic or topics, not both") end
  local topics = o.topics or o.topic
  if type(topics) == "string" then topics = { topics } end
  if topics ~= nil then
    if type(topics) ~= "table" or #topics == 0 then fail(loc, "murmur.kafka: topics must be a non-empty list of topic names") end
    for _, t in ipairs(topics) do
      if type(t) ~= "string" or t == "" or t:find("[,%s]") then
        fail(loc, "murmur.kafka: bad topic %s (a name, or a regular expression starting with ^, without commas or spaces)", tostring(t))
      end
    end
    o.topics = table.concat(topics, ",")
  end
  o.topic = nil
  for _, k in ipairs({ "brokers", "group" }) do
    if o[k] ~= nil and (type(o[k]) ~= "string" or o[k] == "") then fail(loc, "murmur.kafka: %s must be a non-empty string", k) end
  end
  -- Brokers the operator configured replace the script's; otherwise the
  -- script's must be granted.
  if o.brokers and not grants.operator_brokers() then
    local ok, err = grants.check_brokers(o.brokers, "murmur.kafka")
    if not ok then fail(loc, "%s", err) end
  end
  if o.start ~= nil and o.start ~= "earliest" and o.start ~= "latest" then
    fail(loc, "murmur.kafka: start must be \"earliest\" or \"latest\"")
  end
  s.properties = kafka_properties(loc, "murmur.kafka", o.properties)
  o.properties = nil
  return s
end

-- "2026-12-03T10:00:00Z" (UTC, optional fraction) as epoch milliseconds.
local function iso_ms(s)
  local y, mo, d, h, mi, sec, frac = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)(%.?%d*)Z$")
  if not y then return nil end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  -- Days from the civil date (Howard Hinnant's days_from_civil).
  local yy = mo <= 2 and y - 1 or y
  local era = math.floor(yy / 400)
  local yoe = yy - era * 400
  local doy = math.floor((153 * (mo + (mo > 2 and -3 or 9)) + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  local ms = ((days * 24 + tonumber(h)) * 60 + tonumber(mi)) * 60 + tonumber(sec)
  return ms * 1000 + math.floor((tonumber("0" .. frac) or 0) * 1000 + 0.5)
end

-- A Kinesis data stream read by polling (doc/kinesis.md, "Polling source").
-- stream, start and endpoint may be left to --kinesis-* flags or
-- MURMUR_KINESIS_* variables, which also override what is given here.
function M.kinesis(opts)
  local loc = where(2)
  local s = source("kinesis", opts, { stream = true, start = true, endpoint = true, region = true,
    consumer = true, limit = true, idle = true, shard_sync = true, lease_table = true,
    lease_endpoint = true, worker = true, lease_time = true }, 2)
  local o = s.options
  for _, k in ipairs({ "stream", "region", "consumer", "lease_table", "worker" }) do
    if o[k] ~= nil and (type(o[k]) ~= "string" or o[k] == "") then fail(loc, "murmur.kinesis: %s must be a non-empty string", k) end
  end
  if o.stream and not o.stream:match("^[%w_.%-]+$") then
    fail(loc, "murmur.kinesis: bad stream name '%s' (letters, digits, '_', '.', '-')", o.stream)
  end
  local start = o.start
  if start == nil or start == "trim_horizon" or start == "latest" then
    -- as given (the C default is trim_horizon)
  elseif type(start) == "number" and start >= 0 then
    o.start = ("at_timestamp:%d"):format(math.floor(start * 1000 + 0.5))
  elseif type(start) == "string" and iso_ms(start) then
    o.start = ("at_timestamp:%d"):format(iso_ms(start))
  else
    fail(loc, "murmur.kinesis: start must be \"trim_horizon\", \"latest\", epoch seconds or a UTC time like \"2026-12-03T10:00:00Z\"")
  end
  -- An endpoint the operator configured replaces the script's; otherwise
  -- the script's must be AWS's or granted (it receives the credentials).
  if o.endpoint ~= nil and not grants.operator_kinesis_endpoint() then
    local ok, err = grants.check_aws_endpoint(o.endpoint, "murmur.kinesis", "MURMUR_KINESIS_ENDPOINT")
    if not ok then fail(loc, "%s", err) end
  end
  if o.limit ~= nil and (type(o.limit) ~= "number" or o.limit < 1 or o.limit > 10000 or o.limit % 1 ~= 0) then
    fail(loc, "murmur.kinesis: limit must be an integer 1..10000 (records per GetRecords)")
  end
  if o.lease_endpoint ~= nil then
    local ok, err = grants.check_dynamodb_endpoint(o.lease_endpoint, "murmur.kinesis: lease_endpoint")
    if not ok then fail(loc, "%s", err) end
  end
  for _, k in ipairs({ "idle", "shard_sync", "lease_time" }) do
    if o[k] ~= nil then o[k] = ("%dms"):format(duration(loc, "murmur.kinesis " .. k, o[k])) end
  end
  return s
end

local dead_letter_mt = { __murmur = "dead_letter" }

-- A Kafka topic as a pipeline's dead-letter destination (doc/kafka.md):
-- dead_letter = murmur.kafka_topic { topic = "events-dlq" }.
function M.kafka_topic(opts)
  local loc = where(2)
  if type(opts) ~= "table" then fail(loc, "murmur.kafka_topic expects a table of options") end
  check_options(loc, "murmur.kafka_topic", opts, { topic = true, brokers = true, format = true,
    timeout = true, properties = true })
  if type(opts.topic) ~= "string" or not opts.topic:match("^[%w._%-]+$") then
    fail(loc, "murmur.kafka_topic needs a topic name (letters, digits, '.', '_', '-')")
  end
  if opts.brokers ~= nil and (type(opts.brokers) ~= "string" or opts.brokers == "") then
    fail(loc, "murmur.kafka_topic: brokers must be a non-empty string")
  end
  if opts.brokers ~= nil and opts.brokers ~= grants.operator_brokers() then
    local ok, err = grants.check_brokers(opts.brokers, "murmur.kafka_topic")
    if not ok then fail(loc, "%s", err) end
  end
  if opts.format ~= nil and opts.format ~= "raw" and opts.format ~= "json" then
    fail(loc, "murmur.kafka_topic: format must be \"raw\" or \"json\"")
  end
  local d = { type = "kafka", options = { topic = opts.topic, brokers = opts.brokers, format = opts.format },
    properties = kafka_properties(loc, "murmur.kafka_topic", opts.properties) }
  if opts.timeout ~= nil then
    d.options.timeout = ("%dms"):format(duration(loc, "murmur.kafka_topic timeout", opts.timeout))
  end
  return setmetatable(d, dead_letter_mt)
end

local store_mt = { __murmur = "store" }
function M.store(kind, opts)
  if kind ~= "lmdb" and kind ~= "memory" and kind ~= "dynamodb" and kind ~= "valkey" then
    fail(where(2), "murmur.store: unknown store '%s' (expected lmdb, memory, dynamodb or valkey)", tostring(kind))
  end
  -- The sandbox: paths under the allowed roots, endpoints that receive
  -- credentials or passwords only where the operator says.
  for k, v in pairs(type(opts) == "table" and opts or {}) do
    local ok, err = true, nil
    if type(k) == "string" and type(v) == "string" then
      if k:match("path$") then
        ok, err = grants.check_path(v, ("murmur.store: option '%s'"):format(k))
      elseif k:match("endpoint$") then
        ok, err = grants.check_dynamodb_endpoint(v, ("murmur.store: option '%s'"):format(k))
      elseif k:match("url$") then
        ok, err = grants.check_url(v, ("murmur.store: option '%s'"):format(k), grants.operator_cache())
      end
    end
    if not ok then fail(where(2), "%s", err) end
  end
  return setmetatable({ type = kind, options = opts or {} }, store_mt)
end

-- Pipelines ---------------------------------------------------------------

local PIPELINE_OPTIONS = {
  name = true, description = true, key = true, value = true, monoid = true, window = true,
  time = true, time_unit = true, dedup = true, source = true, sources = true, store = true,
  flush = true, dead_letter = true, max_record = true, on_merge = true, on_merge_errors = true,
}

local function is(v, kind)
  local mt = getmetatable(v)
  return type(v) == "table" and mt ~= nil and mt.__murmur == kind
end

local function field_name(loc, what, v)
  if type(v) ~= "string" or not v:match("^[^%c]+$") or #v > 256 then
    fail(loc, "%s must be a field name (a non-empty string), got %s", what, type(v))
  end
  return v
end

local function parse_key(loc, spec, key)
  if key == nil then fail(loc, "pipeline '%s': 'key' is required (a field name, murmur.literal(\"...\"), a list of them, or a function)", spec.name) end
  if type(key) == "function" then
    spec.key_kind, spec.key_fn, spec.keys = "lua", key, { "<lua>" }
  elseif is(key, "literal") then
    spec.key_kind, spec.keys = "const", { key.value }
  elseif type(key) == "string" then
    spec.key_kind, spec.keys = "field", { field_name(loc, "key", key) }
  elseif type(key) == "table" and #key > 0 then
    local kind
    spec.keys = {}
    if #key > 16 then fail(loc, "at most 16 keys per event") end
    for i, k in ipairs(key) do
      local this = is(k, "literal") and "const" or "field"
      if kind and kind ~= this then
        fail(loc, "a key list must be all field names or all murmur.literal values (use a function to mix)")
      end
      kind = this
      spec.keys[i] = this == "const" and k.value or field_name(loc, "key " .. i, k)
    end
    spec.key_kind = kind
  else
    fail(loc, "pipeline '%s': 'key' must be a field name, murmur.literal(\"...\"), a list of them, or a function", spec.name)
  end
end

local function parse_value(loc, spec, value)
  local kind = spec.monoid.name
  if kind == "count" then
    if value ~= nil then fail(loc, "pipeline '%s': murmur.count() takes no 'value'", spec.name) end
    spec.value_kind = "none"
  elseif value == nil then
    if kind == "sum" then
      spec.value_kind, spec.value_const = "const", 1
    else
      fail(loc, "pipeline '%s': 'value' is required for murmur.%s (a field name or a function)", spec.name, kind)
    end
  elseif type(value) == "function" then
    spec.value_kind, spec.value_fn = "lua", value
  elseif type(value) == "number" then
    if kind ~= "sum" and kind ~= "min" and kind ~= "max" then
      fail(loc, "pipeline '%s': a constant value only makes sense for sum/min/max", spec.name)
    end
    spec.value_kind, spec.value_const = "const", value
  else
    spec.value_kind, spec.value_field = "field", field_name(loc, "value", value)
  end
end

local function parse_time(loc, spec, time, unit)
  if time == nil then
    spec.time_kind = "none"
  elseif type(time) == "function" then
    spec.time_kind, spec.time_fn = "lua", time
  else
    spec.time_kind, spec.time_field = "field", field_name(loc, "time", time)
  end
  local units = { auto = "a", s = "s", seconds = "s", ms = "m", milliseconds = "m" }
  if unit ~= nil and not units[unit] then
    fail(loc, "time_unit must be \"auto\", \"s\" or \"ms\"")
  end
  spec.time_unit = units[unit or "auto"]
end

local function parse_dedup(loc, spec, dedup)
  spec.id_kind, spec.dedup_ttl_ms = "none", 86400000
  if dedup == nil then return end
  if type(dedup) == "string" or type(dedup) == "function" or is(dedup, "record_id") then dedup = { id = dedup } end
  if type(dedup) ~= "table" then fail(loc, "dedup must be a field name, a function, murmur.record_id or { id = ..., ttl = ... }") end
  check_options(loc, "dedup", dedup, { id = true, ttl = true })
  if is(dedup.id, "record_id") then
    spec.id_kind = "source"
  elseif type(dedup.id) == "function" then
    spec.id_kind, spec.id_fn = "lua", dedup.id
  else
    spec.id_kind, spec.id_field = "field", field_name(loc, "dedup id", dedup.id)
  end
  if dedup.ttl ~= nil then spec.dedup_ttl_ms = duration(loc, "dedup ttl", dedup.ttl) end
  if spec.dedup_ttl_ms <= 0 then fail(loc, "dedup ttl must be positive") end
end

local function parse_flush(loc, spec, flush)
  spec.flush_events, spec.flush_keys, spec.flush_interval_ms = 100000, 50000, 1000
  if flush == nil then return end
  if type(flush) ~= "table" then fail(loc, "flush must be a table { events = ..., keys = ..., interval = ... }") end
  check_options(loc, "flush", flush, { events = true, keys = true, interval = true })
  for _, k in ipairs({ "events", "keys" }) do
    if flush[k] ~= nil then
      if type(flush[k]) ~= "number" or flush[k] < 1 then fail(loc, "flush.%s must be a positive number", k) end
      spec["flush_" .. k] = flush[k]
    end
  end
  if flush.interval ~= nil then
    spec.flush_interval_ms = duration(loc, "flush interval", flush.interval)
    if spec.flush_interval_ms < 1 then fail(loc, "flush interval must be at least 1ms") end
  end
end

-- Builds the "compat" string: what must stay the same for existing state.
local function compat_of(spec)
  return ("%s;window=%d"):format(spec.monoid.describe, spec.granularity_ms)
end

function M._new_collector()
  return { pipelines = {}, by_name = {} }
end

-- Returns a DSL module bound to a collector (each script load gets its own).
function M.bind(collector)
  -- A name the DSL does not have (murmur.average{}) is a mistake in the
  -- script: say so at its line, with what exists, instead of letting the
  -- call fail as "attempt to call a nil value".
  local dsl = setmetatable({}, { __index = function(_, k)
    local v = M[k]
    if v ~= nil or type(k) ~= "string" or k:sub(1, 1) == "_" then return v end
    fail(where(2), "murmur.%s does not exist (monoids: sum, count, min, max, first, last, set, hll, topk, bloom; "
      .. "windows: minutely, hourly, daily; sources: input, file, stdin, kafka, kinesis; also: literal, record_id, "
      .. "store, kafka_topic, allow, pipeline)", k)
  end })
  function dsl.pipeline(t)
    local loc = where(2)
    local info = debug.getinfo(2, "Sl")
    current = info and info.source:sub(1, 1) == "@" and { loc = loc, path = info.source:sub(2), line = info.currentline } or nil
    if type(t) ~= "table" then fail(loc, "murmur.pipeline expects a table") end
    check_options(loc, "pipeline", t, PIPELINE_OPTIONS)
    if type(t.name) ~= "string" or not t.name:match("^[%w_.-]+$") or #t.name > 128 then
      fail(loc, "pipeline 'name' must be 1..128 characters of letters, digits, '_', '.' or '-'")
    end
    if collector.by_name[t.name] then
      fail(loc, "pipeline '%s' is already defined at %s", t.name, collector.by_name[t.name].where)
    end
    local spec = { name = t.name, where = loc, description = t.description }
    if not is(t.monoid, "monoid") then
      fail(loc, "pipeline '%s': 'monoid' must be one of murmur.sum{}, count(), min(), max(), first(), last(), set{}, hll(), topk{}, bloom{}", t.name)
    end
    spec.monoid = t.monoid
    parse_key(loc, spec, t.key)
    parse_value(loc, spec, t.value)
    if t.window == nil then
      spec.granularity_ms, spec.retention_ms = 0, 0
    elseif is(t.window, "window") then
      spec.granularity_ms, spec.retention_ms = t.window.granularity_ms, t.window.retention_ms
    else
      fail(loc, "pipeline '%s': 'window' must be murmur.minutely{}, hourly{} or daily{}", t.name)
    end
    parse_time(loc, spec, t.time, t.time_unit)
    if spec.time_kind ~= "none" and spec.granularity_ms == 0 then
      fail(loc, "pipeline '%s': 'time' needs a 'window' (event time only places events in buckets)", t.name)
    end
    parse_dedup(loc, spec, t.dedup)
    parse_flush(loc, spec, t.flush)
    spec.max_record = t.max_record and size(loc, "max_record", t.max_record) or 1048576
    if t.dead_letter ~= nil and type(t.dead_letter) ~= "string" and not is(t.dead_letter, "dead_letter") then
      fail(loc, "dead_letter must be a file path or murmur.kafka_topic{...}")
    end
    if type(t.dead_letter) == "string" then
      local ok, err = grants.check_path(t.dead_letter, "dead_letter")
      if not ok then fail(loc, "%s", err) end
    end
    spec.dead_letter = t.dead_letter
    local sources = t.sources or (t.source and { t.source }) or { M.input() }
    if type(sources) ~= "table" or #sources == 0 then fail(loc, "sources must be a non-empty list") end
    for i, s in ipairs(sources) do
      if not is(s, "source") then fail(loc, "source %d must be murmur.input(), murmur.file{}, murmur.stdin(), murmur.kafka{} or murmur.kinesis{}", i) end
    end
    spec.sources = sources
    if t.store ~= nil and not is(t.store, "store") then fail(loc, "store must be murmur.store(\"lmdb\"|\"memory\"|\"dynamodb\", {...})") end
    spec.store = t.store
    if t.on_merge ~= nil and type(t.on_merge) ~= "function" then
      fail(loc, "on_merge must be a function(entity, delta, bucket)")
    end
    if t.on_merge_errors ~= nil and t.on_merge_errors ~= "log" and t.on_merge_errors ~= "fail" then
      fail(loc, "on_merge_errors must be \"log\" (default) or \"fail\"")
    end
    spec.on_merge, spec.on_merge_errors = t.on_merge, t.on_merge_errors or "log"
    spec.compat = compat_of(spec)
    collector.pipelines[#collector.pipelines + 1] = spec
    collector.by_name[spec.name] = spec
    current = nil
    return spec
  end
  -- A script asks for what it needs: murmur.allow("io", "os", "path:/srv/in").
  -- Only the operator grants (--allow, MURMUR_ALLOW, murmur.grants); a
  -- capability not granted fails the load here, naming the flag.
  function dsl.allow(...)
    collector.allow = collector.allow or {}
    for i = 1, select("#", ...) do
      local cap = select(i, ...)
      if type(cap) ~= "string" then fail(where(2), "murmur.allow expects capability names such as \"io\"") end
      local ok, err = grants.ask(cap)
      if not ok then fail(where(2), "%s", err) end
      if cap == "io" or cap == "os" then collector.allow[cap] = true end
    end
  end
  -- Each load gets its own murmur.record_id, so a script that changes the
  -- table changes nothing for another script.
  dsl.record_id = setmetatable({}, getmetatable(M.record_id))
  return dsl
end

M._where = where
M._fail = fail
return M
