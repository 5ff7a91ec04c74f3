-- murmur.serve: `murmur serve [SCRIPT...]`, the query service over HTTP.
--
-- Lua chooses the stores exactly as `murmur query` does (lmdb under each
-- --data directory, merged with the monoid; or the one shared store a script
-- or --store names, with the Valkey cache in front when one is configured),
-- reads the token and the options, and hands over to C (core.serve), which
-- serves Connect and gRPC on one port until SIGINT/SIGTERM. Queries are
-- answered in C (engine/net/query.h): no Lua runs per request.
local core = require("murmur.core")

local M = {}

local EXIT_RUNTIME, EXIT_USAGE, EXIT_SCRIPT = 1, 2, 3

-- The store list for core.serve, or nil, message, exit code. The scripts'
-- specs go to loaded.specs when loaded is given (the admin page's definitions).
function M.stores(scripts, opts, loaded)
  local script_store
  if #scripts > 0 then
    -- Loaded like `run` loads them: validated first in a child under limits.
    local specs, err = require("murmur.isolate").load_all(scripts)
    if not specs then return nil, err, EXIT_SCRIPT end
    if loaded then loaded.specs = specs end
    for _, s in ipairs(specs) do script_store = script_store or s.store end
  end
  local runner = require("murmur.runner")
  local kind = opts.store or os.getenv("MURMUR_STORE") or (script_store and script_store.type) or "lmdb"
  if kind ~= "lmdb" then
    local options = script_store and script_store.type == kind and script_store.options or {}
    local k, o = runner.cache_wrap(kind, options, opts.cache)
    return { { kind = k, options = o } }
  end
  local dirs = opts.data or { runner.data_dir({}) }
  local list = {}
  for _, dir in ipairs(dirs) do
    local path = dir .. "/store"
    local probe = io.open(path .. "/data.mdb", "rb")
    if not probe then
      return nil, ("%s: no store there yet: run `murmur run --data %s ...` first, or point --data at the directory it used")
        :format(dir, dir), EXIT_RUNTIME
    end
    probe:close()
    local k, o = "lmdb", { path = path }
    -- A cache holds one store's entries: not when merging several.
    if #dirs == 1 then k, o = runner.cache_wrap(k, o, opts.cache) end
    list[#list + 1] = { kind = k, options = o }
  end
  return list
end

-- The bearer token: --token-file (first line), else $MURMUR_TOKEN.
function M.token(opts)
  if opts.token_file then
    local f, err = io.open(opts.token_file, "r")
    if not f then return nil, ("--token-file: %s"):format(err) end
    local t = (f:read("*l") or ""):gsub("%s+$", "")
    f:close()
    if t == "" then return nil, ("--token-file %s is empty"):format(opts.token_file) end
    return t
  end
  local env = os.getenv("MURMUR_TOKEN")
  if env and env ~= "" then return env end
  return false
end

-- The core.serve configuration from the command-line options (also used by
-- `murmur run --listen`), or nil, message.
function M.config(opts)
  local token, terr = M.token(opts)
  if token == nil then return nil, terr end
  local cfg = { listen = opts.listen or "127.0.0.1:8080", token = token or nil, cors = opts.cors_origin }
  if opts.request_timeout then
    local ms = core.parse_duration(opts.request_timeout)
    if not ms or ms < 1 then return nil, "--request-timeout must be a duration such as 10s" end
    cfg.request_timeout_ms = ms
  end
  if opts.result_cache then
    local ms = core.parse_duration(opts.result_cache)
    if not ms or ms < 1 then return nil, "--result-cache must be a duration such as 500ms or 2s" end
    cfg.result_cache_ms = ms
  end
  if opts.max_connections then
    local n = tonumber(opts.max_connections)
    if not n or n < 1 or n % 1 ~= 0 then return nil, "--max-connections must be a whole number of at least 1" end
    cfg.max_connections = n
  end
  return cfg
end

-- Runs the server; returns an exit code (0 after SIGINT/SIGTERM).
function M.run(scripts, opts)
  local cfg, cerr = M.config(opts)
  if not cfg then io.stderr:write("murmur serve: ", cerr, "\n") return EXIT_USAGE end
  local loaded = {}
  local stores, err, code = M.stores(scripts, opts, loaded)
  if not stores then io.stderr:write("murmur serve: ", err, "\n") return code end
  -- The admin page's definitions; /readyz is ready once the server listens.
  local data = opts.data and opts.data[1] or require("murmur.runner").data_dir({})
  local pok, perr = require("murmur.admin").publish(loaded.specs or {}, { data = data }, data, "serve")
  if not pok then io.stderr:write("murmur serve: ", perr, "\n") return EXIT_RUNTIME end
  cfg.stores = stores
  local ok, serr = core.serve(cfg)
  if not ok then
    io.stderr:write("murmur serve: ", serr, "\n")
    return serr:find("EINVAL", 1, true) and EXIT_USAGE or EXIT_RUNTIME
  end
  return 0
end

return M
