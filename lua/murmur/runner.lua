-- murmur.runner: turns validated pipeline specs into a running engine.
--
-- Configuration precedence for what a script leaves to its deployment:
-- command-line flags, then environment variables (MURMUR_DATA, MURMUR_INPUT,
-- MURMUR_STORE, MURMUR_KAFKA_*), then defaults. murmur.input() sources read
-- Kafka when Kafka brokers are configured (--kafka-brokers, MURMUR_KAFKA_BROKERS),
-- else --input / MURMUR_INPUT (a file path, or "-" for stdin), followed when
-- --follow is given.
local core = require("murmur.core")
local runtime = require("murmur.runtime")

local M = {}

M.DEFAULT_DATA = "murmur-data"

function M.data_dir(opts)
  return opts.data or os.getenv("MURMUR_DATA") or M.DEFAULT_DATA
end

-- Kafka settings from the command line, then the environment (doc/kafka.md):
-- --kafka-brokers, --kafka-topic, --kafka-group, --kafka-start and
-- -X key=value (librdkafka properties), or MURMUR_KAFKA_BROKERS, _TOPIC,
-- _GROUP, _START and _PROPERTIES ("key=value;key=value"). Returns the
-- settings table or nil, message.
function M.kafka_settings(opts)
  opts = opts or {}
  local k = {
    brokers = opts.kafka_brokers or os.getenv("MURMUR_KAFKA_BROKERS"),
    topics = opts.kafka_topic or os.getenv("MURMUR_KAFKA_TOPIC"),
    group = opts.kafka_group or os.getenv("MURMUR_KAFKA_GROUP"),
    start = opts.kafka_start or os.getenv("MURMUR_KAFKA_START"),
    properties = {},
  }
  local pairs_given = {}
  for kv in (os.getenv("MURMUR_KAFKA_PROPERTIES") or ""):gmatch("[^;]+") do pairs_given[#pairs_given + 1] = kv end
  for _, kv in ipairs(opts.kafka_property or {}) do pairs_given[#pairs_given + 1] = kv end
  for _, kv in ipairs(pairs_given) do
    local key, value = kv:match("^%s*([^=%s]+)%s*=(.*)$")
    if not key then return nil, ("Kafka property '%s' is not key=value"):format(kv) end
    k.properties[key] = value
  end
  if k.start and k.start ~= "earliest" and k.start ~= "latest" then
    return nil, ("Kafka start must be earliest or latest, got '%s'"):format(k.start)
  end
  return k
end

-- The kafka source's options: the script's, overridden by flags/environment.
local function kafka_options(src, opts)
  local k, err = M.kafka_settings(opts)
  if not k then return nil, err end
  local o = { batch = src.options.batch, drain = src.options.drain, brokers = src.options.brokers,
    topics = src.options.topics, group = src.options.group, start = src.options.start }
  for _, name in ipairs({ "brokers", "topics", "group", "start" }) do o[name] = k[name] or o[name] end
  o.group = o.group or "murmur"
  -- --once: the input ends when every assigned partition is read to its end.
  if opts.once then o.eof = "true" end
  if not o.brokers then return nil, "Kafka needs brokers (brokers=, --kafka-brokers or MURMUR_KAFKA_BROKERS)" end
  if not o.topics then return nil, "Kafka needs a topic (topic=, --kafka-topic or MURMUR_KAFKA_TOPIC)" end
  for key, v in pairs(src.properties or {}) do o["rdkafka." .. key] = v end
  for key, v in pairs(k.properties) do o["rdkafka." .. key] = v end
  return "kafka", o
end

-- The kinesis source's options (doc/kinesis.md, "Polling source"): the
-- script's, overridden by --kinesis-stream / --kinesis-start /
-- --kinesis-endpoint / --kinesis-region / --kinesis-lease-table, then
-- MURMUR_KINESIS_STREAM, _START, _ENDPOINT, _LEASE_TABLE and AWS_REGION. The position is stored per consumer, like a
-- file's (M.consumer); workers sharing a lease table are one reader, so
-- their consumer defaults to the lease table's name rather than to each
-- one's data directory: they read and write the same positions per shard.
local function kinesis_options(src, opts)
  local o = {}
  for k, v in pairs(src.options) do o[k] = v end
  local over = {
    stream = opts.kinesis_stream or os.getenv("MURMUR_KINESIS_STREAM"),
    start = opts.kinesis_start or os.getenv("MURMUR_KINESIS_START"),
    endpoint = opts.kinesis_endpoint or os.getenv("MURMUR_KINESIS_ENDPOINT"),
    region = opts.kinesis_region,
    lease_table = opts.kinesis_lease_table or os.getenv("MURMUR_KINESIS_LEASE_TABLE"),
  }
  for k, v in pairs(over) do o[k] = v or o[k] end
  if o.start and o.start ~= "trim_horizon" and o.start ~= "latest" and not tostring(o.start):match("^at_timestamp:%d+$") then
    return nil, ("Kinesis start must be trim_horizon, latest or at_timestamp:<epoch ms>, got '%s'"):format(o.start)
  end
  if not o.stream then return nil, "Kinesis needs a stream (stream=, --kinesis-stream or MURMUR_KINESIS_STREAM)" end
  if o.lease_table and not opts.consumer and not src.options.consumer then
    o.consumer = "lease:" .. o.lease_table
  else
    o.consumer = M.consumer(src.options, opts)
  end
  if opts.once then o.eof = "true" end
  for k, v in pairs(o) do o[k] = tostring(v) end
  return "kinesis", o
end

-- The consumer a file source's position is stored for (doc/dynamodb.md,
-- "Positions"): --consumer, else the script's, else the data directory, so
-- that pipelines run with their own data directories never share a position
-- on a shared store, and a restarted run resumes its own. A '#' (which a
-- consumer name may not hold) in the directory's path is written %23.
function M.consumer(src_options, opts)
  if opts.consumer then return opts.consumer end
  if src_options.consumer then return src_options.consumer end
  local data = M.data_dir(opts)
  return ((core.realpath(data) or data):gsub("[%%#]", { ["%"] = "%25", ["#"] = "%23" }))
end

-- Resolves a spec's source into (backend, options table), or nil, message.
local function source_config(src, opts)
  -- Under `murmur lambda` the invocations are the input of every pipeline,
  -- whatever source the script names (murmur.lambda).
  if opts.lambda then
    local o = {}
    for k, v in pairs(opts.lambda) do o[k] = v end
    return "lambda", o
  end
  if src.type == "kafka" then return kafka_options(src, opts) end
  if src.type == "kinesis" then return kinesis_options(src, opts) end
  if src.type ~= "input" then
    local o = {}
    for k, v in pairs(src.options) do o[k] = v end
    if src.type == "file" then o.consumer = M.consumer(src.options, opts) end
    return src.type, o
  end
  -- murmur.input() reads Kafka when Kafka brokers are configured; a flag
  -- beats the environment, and two inputs at the same level are an error.
  local kafka_flag, kafka_env = opts.kafka_brokers ~= nil, os.getenv("MURMUR_KAFKA_BROKERS") ~= nil
  if kafka_flag and opts.input then return nil, "both --input and --kafka-brokers given" end
  if kafka_env and not kafka_flag and not opts.input and os.getenv("MURMUR_INPUT") then
    return nil, "both MURMUR_INPUT and MURMUR_KAFKA_BROKERS are set"
  end
  if kafka_flag or (kafka_env and not opts.input) then
    return kafka_options({ options = { batch = src.options.batch, drain = src.options.drain } }, opts)
  end
  local input = opts.input or os.getenv("MURMUR_INPUT") or "-"
  local o = { batch = src.options.batch, drain = src.options.drain }
  if input == "-" then return "stdin", o end
  o.path = input
  o.follow = opts.follow and "true" or "false"
  o.consumer = M.consumer({}, opts)
  return "file", o
end

local function meta_of(spec)
  local m = {}
  for k, v in pairs(spec.monoid) do if k ~= "describe" then m[k] = v end end
  return core.json_encode({
    monoid = m,
    granularity_ms = spec.granularity_ms,
    retention_ms = spec.retention_ms,
    script = spec.script,
    key = spec.key_kind == "const" and spec.keys or nil,
  })
end

local function store_config(specs, opts, data)
  local kind = opts.store or os.getenv("MURMUR_STORE")
  local options = {}
  for _, s in ipairs(specs) do
    if s.store then
      if kind and kind ~= s.store.type and not opts.store then
        return nil, ("%s: pipeline '%s' uses store '%s' but another pipeline uses '%s'; one process runs one store"):format(s.where, s.name, s.store.type, kind)
      end
      kind = kind or s.store.type
      for k, v in pairs(s.store.options) do options[k] = v end
    end
  end
  kind = kind or "lmdb"
  if kind == "lmdb" then options.path = options.path or (data .. "/store") end
  if kind == "valkey" and (options.backing or "lmdb") == "lmdb" then
    options["backing.path"] = options["backing.path"] or (data .. "/store")
  end
  return M.cache_wrap(kind, options, opts.cache)
end

-- With a cache URL (--cache, else MURMUR_VALKEY_URL) a store is wrapped in the
-- Valkey cache layer: (kind, options) become ("valkey", { backing = kind,
-- url = URL, ["backing.<option>"] = ... }); MURMUR_VALKEY_PREFIX names its
-- keys. Every writer and reader of a store must use the same cache
-- (doc/valkey.md).
function M.cache_wrap(kind, options, url)
  url = url or os.getenv("MURMUR_VALKEY_URL")
  if kind == "valkey" then
    options.url = options.url or url
    options.prefix = options.prefix or os.getenv("MURMUR_VALKEY_PREFIX")
    return kind, options
  end
  if url == nil or url == "" then return kind, options end
  local o = { backing = kind, url = url, prefix = os.getenv("MURMUR_VALKEY_PREFIX") }
  for k, v in pairs(options) do o["backing." .. k] = v end
  return "valkey", o
end

-- The dead-letter destination of a spec: (backend, options).
local function dead_letter_config(spec, data, opts)
  local d = spec.dead_letter
  if type(d) ~= "table" then
    return "file", { path = d or (data .. "/dead-letter/" .. spec.name .. ".jsonl") }
  end
  local k = M.kafka_settings(opts) or { properties = {} }
  local o = { topic = d.options.topic, format = d.options.format, timeout = d.options.timeout }
  o.brokers = d.options.brokers or k.brokers
  for _, src in ipairs(spec.sources) do
    if src.type == "kafka" then o.brokers = o.brokers or src.options.brokers end
  end
  -- The consumer's connection settings (TLS, SASL) apply to the producer too.
  for key, v in pairs(k.properties) do
    if key:match("^security%.") or key:match("^sasl%.") or key:match("^ssl[%._]") then o["rdkafka." .. key] = v end
  end
  for key, v in pairs(d.properties) do o["rdkafka." .. key] = v end
  return "kafka", o
end

-- For the admin page's definitions (murmur.admin).
M.source_config, M.dead_letter_config = source_config, dead_letter_config

-- The engine's definition table for a spec (opts: the command-line options,
-- for Kafka settings; the environment is used without them).
function M.cfg_of(spec, data, opts)
  local dl_type, dl_options = dead_letter_config(spec, data, opts)
  return {
    name = spec.name, monoid = spec.monoid, key_kind = spec.key_kind, keys = spec.keys,
    value_kind = spec.value_kind, value_field = spec.value_field, value_const = spec.value_const,
    time_kind = spec.time_kind, time_field = spec.time_field, time_unit = spec.time_unit,
    granularity_ms = spec.granularity_ms, retention_ms = spec.retention_ms,
    id_kind = spec.id_kind, id_field = spec.id_field, dedup_ttl_ms = spec.dedup_ttl_ms,
    max_record = spec.max_record, flush_events = spec.flush_events,
    flush_keys = spec.flush_keys, flush_interval_ms = spec.flush_interval_ms,
    dead_letter_type = dl_type, dead_letter_options = dl_options,
    compat = spec.compat, meta = meta_of(spec), where = spec.where, on_merge = spec.on_merge ~= nil,
  }
end

function M.uses_lua(spec)
  return spec.key_kind == "lua" or spec.value_kind == "lua" or spec.time_kind == "lua" or spec.id_kind == "lua"
end

-- Attaches a pipeline to each of its sources (an already open source with the
-- same id is shared and keeps running). Returns true or nil, message.
function M.attach(engine, spec, opts)
  for _, src in ipairs(spec.sources) do
    local backend, o = source_config(src, opts)
    if not backend then return nil, ("%s: source: %s"):format(spec.where, o) end
    local ok, serr = engine:attach(spec.ptr, backend, o)
    if not ok then return nil, ("%s: source: %s"):format(spec.where, serr) end
  end
  return true
end

-- On-merge hooks run after a flush is durable, once per merged (entity,
-- bucket): hook(entity, delta, bucket) with the delta as query output shows it.
-- Each call has a CPU-time budget and the calls of a flush are journaled in
-- the data directory, so a call that fails or never completes is recorded
-- (murmur.hooks). An error is logged and counted; with on_merge_errors =
-- "fail" it also stops the engine with exit code 1 (the merge is kept: it is
-- already durable).
--
-- Most pipelines have no hook, so murmur.hooks is loaded only at the first
-- merge of a pipeline that has one (a hot reload may add one: hook_specs
-- changes in place) or when a dead worker left its journal. Returns the
-- handler and hooks(), which loads the module and returns it with the
-- handler's state.
function M.merged_handler(engine, hook_specs, data)
  local mod, handler, state
  local function hooks()
    if not mod then
      local fn, _, st = require("murmur.hooks").handler(engine, hook_specs, data or M.DEFAULT_DATA)
      mod, handler, state = require("murmur.hooks"), fn, st
    end
    return mod, state
  end
  return function(ptr, items)
    if not hook_specs[ptr] then return end
    hooks()
    return handler(ptr, items)
  end, hooks
end

-- The journal of the calls of a flush (murmur.hooks.JOURNAL), named here so
-- that a start without hooks need not load murmur.hooks to look for it.
local HOOKS_JOURNAL = "on_merge.journal"

-- Builds the engine. Returns engine, lua_specs (pipeline pointer -> spec, the
-- table the Lua path reads; hot reload updates it in place) or nil, message.
function M.build(specs, opts)
  local data = M.data_dir(opts)
  local ok, merr = core.mkdir_p(data .. "/dead-letter")
  if not ok then return nil, merr .. " (choose a writable --data directory)" end
  local kind, store_opts = store_config(specs, opts, data)
  if not kind then return nil, store_opts end
  local engine, err = core.engine_open({ store = kind, store_options = store_opts })
  if not engine then return nil, err end
  -- The store checks itself on the loop (DynamoDB: its table); the engine
  -- starts no source before they pass and stops if they fail. The Lambda
  -- runtime must report a failure as its init error, so it waits for them
  -- here, with nothing else on the loop yet.
  if opts.lambda then
    local ok, serr = engine:wait_store()
    if not ok then
      engine:close()
      return nil, serr
    end
  end
  local lua_specs, hook_specs = {}, {}
  for _, spec in ipairs(specs) do
    local p, perr = engine:add_pipeline(M.cfg_of(spec, data, opts))
    if not p then
      engine:close()
      return nil, ("%s: %s"):format(spec.where, perr)
    end
    spec.ptr = p
    if M.uses_lua(spec) then lua_specs[p] = spec end
    if spec.on_merge then hook_specs[p] = spec end
    local aok, aerr = M.attach(engine, spec, opts)
    if not aok then
      engine:close()
      return nil, aerr
    end
  end
  engine:on_batch(runtime.handler(lua_specs))
  local merged, hooks = M.merged_handler(engine, hook_specs, data)
  engine:on_merged(merged)
  -- Calls a previous worker's hooks journal left unmade, once the loop runs.
  local journal = io.open(data .. "/" .. HOOKS_JOURNAL, "rb")
  if journal then
    journal:close()
    engine:timer(0, 0, function()
      local mod, state = hooks()
      mod.recover(engine, hook_specs, data, state)
    end)
  end
  return engine, lua_specs, hook_specs
end

return M
