-- murmur.runner: turns validated pipeline specs into a running engine.
--
-- Configuration precedence for what a script leaves to its deployment:
-- command-line flags, then environment variables (MURMUR_DATA, MURMUR_INPUT,
-- MURMUR_STORE), then defaults. murmur.input() sources read --input / MURMUR_INPUT
-- (a file path, or "-" for stdin) and follow it when --follow is given.
local core = require("murmur.core")
local runtime = require("murmur.runtime")

local M = {}

M.DEFAULT_DATA = "murmur-data"

function M.data_dir(opts)
  return opts.data or os.getenv("MURMUR_DATA") or M.DEFAULT_DATA
end

-- Resolves a spec's source into (backend, options table).
local function source_config(src, opts)
  if src.type ~= "input" then
    local o = {}
    for k, v in pairs(src.options) do o[k] = v end
    return src.type, o
  end
  local input = opts.input or os.getenv("MURMUR_INPUT") or "-"
  local o = { batch = src.options.batch }
  if input == "-" then return "stdin", o end
  o.path = input
  o.follow = opts.follow and "true" or "false"
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
  return kind, options
end

-- The engine's definition table for a spec.
function M.cfg_of(spec, data)
  return {
    name = spec.name, monoid = spec.monoid, key_kind = spec.key_kind, keys = spec.keys,
    value_kind = spec.value_kind, value_field = spec.value_field, value_const = spec.value_const,
    time_kind = spec.time_kind, time_field = spec.time_field, time_unit = spec.time_unit,
    granularity_ms = spec.granularity_ms, retention_ms = spec.retention_ms,
    id_kind = spec.id_kind, id_field = spec.id_field, dedup_ttl_ms = spec.dedup_ttl_ms,
    max_record = spec.max_record, flush_events = spec.flush_events,
    flush_keys = spec.flush_keys, flush_interval_ms = spec.flush_interval_ms,
    dead_letter_type = "file",
    dead_letter_options = { path = spec.dead_letter or (data .. "/dead-letter/" .. spec.name .. ".jsonl") },
    compat = spec.compat, meta = meta_of(spec),
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
    local ok, serr = engine:attach(spec.ptr, backend, o)
    if not ok then return nil, ("%s: source: %s"):format(spec.where, serr) end
  end
  return true
end

-- Builds the engine. Returns engine, lua_specs (pipeline pointer -> spec, the
-- table the Lua path reads; hot reload updates it in place) or nil, message.
function M.build(specs, opts)
  local data = M.data_dir(opts)
  local ok, merr = core.mkdir_p(data .. "/dead-letter")
  if not ok then return nil, merr end
  local kind, store_opts = store_config(specs, opts, data)
  if not kind then return nil, store_opts end
  local engine, err = core.engine_open({ store = kind, store_options = store_opts, data = data })
  if not engine then return nil, err end
  local lua_specs = {}
  for _, spec in ipairs(specs) do
    local p, perr = engine:add_pipeline(M.cfg_of(spec, data))
    if not p then
      engine:close()
      return nil, ("%s: %s"):format(spec.where, perr)
    end
    spec.ptr = p
    if M.uses_lua(spec) then lua_specs[p] = spec end
    local aok, aerr = M.attach(engine, spec, opts)
    if not aok then
      engine:close()
      return nil, aerr
    end
  end
  engine:on_batch(runtime.handler(lua_specs))
  return engine, lua_specs
end

return M
