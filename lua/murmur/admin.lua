-- murmur.admin: what the admin page and /readyz know about the pipelines
-- beyond live counters: their definitions as the scripts wrote them, and
-- where their dead letters go. Published to C (engine/core/admin.h) when
-- pipelines load and after every reload, so the server answers /api/status
-- and /api/dead-letters without calling Lua.
local core = require("murmur.core")
local runner = require("murmur.runner")

local M = {}

-- Source options shown on the page: where the data comes from, never
-- credentials (rdkafka.* may carry SASL passwords).
local SHOWN_SOURCE_OPTIONS = { path = true, topics = true, group = true, brokers = true, follow = true }

local function field_text(kind, fields, const)
  if kind == "field" then return table.concat(fields or {}, ", ") end
  if kind == "lua" then return "function" end
  if kind == "const" then return "literal " .. tostring(const) end
  if kind == "source" then return "source time" end
  return nil
end

-- The definitions of specs (a list), and a table pipeline -> dead-letter
-- file path for those that write dead letters to a file. Sources only when
-- with_sources: `murmur serve` reads stores and cannot know what fed them.
function M.definitions(specs, opts, data, with_sources)
  local defs, paths = {}, {}
  for _, spec in ipairs(specs) do
    local sources = {}
    for _, src in ipairs(with_sources and spec.sources or {}) do
      local backend, o = runner.source_config(src, opts)
      local shown = {}
      for k, v in pairs(type(o) == "table" and o or {}) do
        if SHOWN_SOURCE_OPTIONS[k] then shown[k] = tostring(v) end
      end
      sources[#sources + 1] = { type = backend or src.type, options = shown }
    end
    local dl_type, dl_options = runner.dead_letter_config(spec, data, opts)
    local dead_letter = { type = dl_type, path = dl_options.path, topic = dl_options.topic }
    if dl_type == "file" then paths[spec.name] = dl_options.path end
    defs[#defs + 1] = {
      name = spec.name, where = spec.where, description = spec.description,
      monoid = spec.monoid and spec.monoid.describe or nil,
      key = field_text(spec.key_kind, spec.keys, spec.keys and spec.keys[1]),
      value = field_text(spec.value_kind, { spec.value_field }, spec.value_const),
      time = field_text(spec.time_kind, { spec.time_field }),
      id = field_text(spec.id_kind, { spec.id_field }),
      granularity_ms = spec.granularity_ms or 0, retention_ms = spec.retention_ms or 0,
      sources = with_sources and sources or nil, store = spec.store and spec.store.type or nil, dead_letter = dead_letter,
    }
  end
  return defs, paths
end

-- Publishes specs' definitions for the page and marks the process ready as
-- far as loading goes (the engine's own state is checked in C).
function M.publish(specs, opts, data, mode)
  local defs, paths = M.definitions(specs, opts or {}, data or runner.data_dir(opts or {}), mode ~= "serve")
  local ok, err = core.admin_publish(#defs > 0 and core.json_encode(defs) or "[]", paths)
  if not ok then return nil, err end
  core.admin_state(mode, nil)
  return true
end

return M
