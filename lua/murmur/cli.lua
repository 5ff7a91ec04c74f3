-- murmur.cli: the command line. main(...) returns the process exit code.
--
-- Exit codes: 0 success; 1 runtime failure (a source or the store failed);
-- 2 usage error; 3 invalid pipeline script; 4 nothing found (query).
local core = require("murmur.core")

local M = {}

local EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_SCRIPT, EXIT_NOTFOUND = 0, 1, 2, 3, 4

-- The help texts (murmur.help, which also loads murmur.ddb for its own) are
-- parsed only when a command prints help or a usage error, not at every
-- start of a worker or of the Lambda runtime.
local HELP = setmetatable({}, { __index = function(_, k) return require("murmur.help")[k] end })

-- The stores --store can name (engine/store/registry.c; valkey is chosen
-- with --cache, not --store).
local STORE_KINDS = { lmdb = true, dynamodb = true, memory = true, valkey = true }

local function eprintf(fmt, ...)
  io.stderr:write(string.format(fmt, ...))
end

-- Parses flags: spec maps flag name -> "value" | "flag" | "multi".
local function parse_args(args, spec)
  local opts, pos = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--help" or a == "-h" then
      opts.help = true
    elseif a:sub(1, 2) == "--" then
      local name, inline = a:match("^%-%-([%w-]+)=(.*)$")
      name = name or a:sub(3)
      local key = name:gsub("-", "_")
      local kind = spec[key]
      if not kind then return nil, ("unknown option --%s"):format(name) end
      if kind == "flag" then
        opts[key] = true
      else
        local v = inline
        if not v then
          i = i + 1
          v = args[i]
          if v == nil then return nil, ("option --%s needs a value"):format(name) end
        end
        if kind == "multi" then
          opts[key] = opts[key] or {}
          table.insert(opts[key], v)
        else
          opts[key] = v
        end
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return opts, pos
end

-- A usage mistake: the problem and where to read the options, not the whole
-- usage text (which would push the problem off the screen).
local function usage_error(cmd, msg)
  eprintf("murmur %s: %s\n(run `murmur %s --help` for its options)\n", cmd, msg, cmd)
  return EXIT_USAGE
end

-- run ---------------------------------------------------------------------

local function cmd_run(args)
  -- -X key=value (librdkafka style) is --kafka-property key=value.
  local argv = {}
  for _, a in ipairs(args) do
    if a == "-X" then argv[#argv + 1] = "--kafka-property"
    elseif a:sub(1, 2) == "-X" then argv[#argv + 1] = "--kafka-property=" .. a:sub(3)
    else argv[#argv + 1] = a end
  end
  local opts, scripts = parse_args(argv, {
    data = "value", input = "value", follow = "flag", once = "flag", store = "value",
    cache = "value", log_level = "value", stats = "flag", watchdog = "value", lua_memory = "value",
    no_supervisor = "flag", kafka_brokers = "value", kafka_topic = "value",
    kafka_group = "value", kafka_start = "value", kafka_property = "multi", progress = "value",
    kinesis_stream = "value", kinesis_start = "value", kinesis_endpoint = "value", kinesis_region = "value",
    kinesis_lease_table = "value",
    allow = "multi", consumer = "value", listen = "value", token_file = "value", cors_origin = "multi",
    request_timeout = "value", max_connections = "value", result_cache = "value",
  })
  if not opts then return usage_error("run", scripts) end
  if opts.help then io.write(HELP.run) return EXIT_OK end
  local gok, gerr = require("murmur.grants").set(opts.allow, require("murmur.runner").data_dir(opts), opts)
  if not gok then return usage_error("run", gerr) end
  if #scripts == 0 then return usage_error("run", "no pipeline script given") end
  if opts.store and not STORE_KINDS[opts.store] then
    return usage_error("run", ("unknown --store '%s' (expected lmdb, dynamodb or memory)"):format(opts.store))
  end
  if opts.log_level then
    local ok, err = core.set_log_level(opts.log_level)
    if not ok then return usage_error("run", err) end
  end
  -- --listen: the query server in the worker (murmur.serve's options).
  local serve_cfg
  if opts.listen then
    local cerr
    serve_cfg, cerr = require("murmur.serve").config(opts)
    if not serve_cfg then return usage_error("run", cerr) end
  end
  local watchdog_ms = core.parse_duration(opts.watchdog or "10s")
  if not watchdog_ms or watchdog_ms < 100 then return usage_error("run", "--watchdog must be a duration of at least 100ms") end
  local progress = require("murmur.progress")
  local progress_ms, perr = progress.interval_ms(opts)
  if not progress_ms then return usage_error("run", perr) end
  if opts.lua_memory then
    local n, unit = opts.lua_memory:match("^(%d+)([kKmMgG]?)$")
    if not n then return usage_error("run", "--lua-memory must be a size such as 512m or 2g") end
    require("murmur.runtime").memory_limit_kb = tonumber(n) * ({ [""] = 1 / 1024, k = 1, m = 1024, g = 1048576 })[unit:lower()]
  end
  -- Enforced by the Lua allocator, inside any one call (engine/lua/alloc.h).
  core.lua_memory(require("murmur.runtime").memory_limit_kb * 1024)
  local data = require("murmur.runner").data_dir(opts)
  if not os.getenv("MURMUR_WORKER") and not opts.no_supervisor then
    -- The supervisor: runs the pipelines in a worker process, a forked copy
    -- of this one, and restarts it when it crashes or stalls (see
    -- engine/core/supervisor.h). In the copy, core.supervise returns
    -- "worker" and the copy goes on below, as the worker, with this same
    -- command line and no script loaded yet.
    local ok, merr = core.mkdir_p(data)
    if not ok then eprintf("murmur run: %s (choose a writable --data directory)\n", merr) return EXIT_RUNTIME end
    local status = require("murmur.status")
    status.write_atomic(status.pid_path(data), tostring(core.getpid()) .. "\n")
    local code = core.supervise(data, watchdog_ms)
    if code ~= "worker" then
      os.remove(status.pid_path(data))
      return code
    end
  end
  local npoison, werr = core.worker_init(data)
  if not npoison then eprintf("murmur run: %s\n", werr) return EXIT_RUNTIME end
  if npoison > 0 then
    core.log("warn", "engine", ("%d poison record(s) from earlier crashes or stalls will go to the dead-letter destination"):format(npoison))
  end
  -- Loaded by a child under CPU, memory and wall-clock limits first (murmur.isolate).
  local isolate = require("murmur.isolate")
  local specs, err, modules = isolate.load_all(scripts)
  if err == isolate.STOPPED then
    -- Ctrl-C while the scripts loaded: no source was started yet.
    core.log("info", "engine", "stop signal while the scripts loaded: stopping (flush, checkpoint, exit); nothing was read yet, so there is nothing to flush")
    return EXIT_OK
  end
  if not specs then
    eprintf("murmur run: %s\n", err)
    return EXIT_SCRIPT
  end
  local engine, lua_specs, hook_specs = require("murmur.runner").build(specs, opts)
  err = lua_specs
  if not engine then
    eprintf("murmur run: %s\n", err)
    return err:find("EINCOMPAT", 1, true) and EXIT_SCRIPT or EXIT_RUNTIME
  end
  local names = {}
  for _, s in ipairs(specs) do names[#names + 1] = s.name end
  core.log("info", "engine", ("running %d pipeline(s): %s"):format(#specs, table.concat(names, ", ")))
  if serve_cfg then
    local addr, lerr = engine:listen(serve_cfg)
    if not addr then
      eprintf("murmur run: --listen: %s\n", lerr)
      engine:close()
      return lerr:find("EINVAL", 1, true) and EXIT_USAGE or EXIT_RUNTIME
    end
    core.log("info", "serve", ("listening on http://%s"):format(addr))
  end
  local status = require("murmur.status")
  local inst = {
    engine = engine, lua_specs = lua_specs, hook_specs = hook_specs, specs = specs, paths = scripts, opts = opts,
    data = require("murmur.runner").data_dir(opts), modules = modules,
    started = core.format_time(core.now_ms()),
  }
  local reloader = require("murmur.reload").new(inst)
  reloader:watch()
  -- The admin page's definitions, /readyz: published now and after reloads.
  local admin = require("murmur.admin")
  admin.publish(specs, opts, inst.data, "run")
  -- /metrics shows the supervisor's restart counts (its supervisor.json).
  if os.getenv("MURMUR_SUPERVISOR_PID") then core.metrics_supervisor(inst.data .. "/supervisor.json") end
  reloader.on_reload = function()
    admin.publish(inst.specs, opts, inst.data, "run")
    status.write(inst, reloader)
  end
  engine:timer(1000, 1000, function() status.write(inst, reloader) end)
  status.write(inst, reloader)
  progress.announce(inst)
  local reporter = progress.new(inst, progress_ms)
  reporter:start()
  local pidfile = status.pid_path(inst.data)
  if not os.getenv("MURMUR_SUPERVISOR_PID") then status.write_atomic(pidfile, tostring(core.getpid()) .. "\n") end
  local code = engine:run(opts.once)
  reporter:finish()
  status.write(inst, reloader, true)
  if not os.getenv("MURMUR_SUPERVISOR_PID") then os.remove(pidfile) end
  local stats = engine:stats()
  for name, p in pairs(stats.pipelines) do core.log("info", name, progress.summary(inst, name, p)) end
  core.log("info", "engine", ("stopped: %d flushes (%d failed), %d store writes")
    :format(stats.flushes, stats.flush_failures, stats.store_writes))
  if opts.stats then io.write(core.json_encode(stats), "\n") end
  engine:close()
  return code
end

-- check -------------------------------------------------------------------

local function cmd_check(args)
  local opts, scripts = parse_args(args, { input = "value", lines = "value", json = "flag", allow = "multi" })
  if not opts then return usage_error("check", scripts) end
  if opts.help then io.write(HELP.check) return EXIT_OK end
  local gok, gerr = require("murmur.grants").set(opts.allow, require("murmur.runner").data_dir(opts), opts)
  if not gok then return usage_error("check", gerr) end
  if #scripts == 0 then return usage_error("check", "no pipeline script given") end
  -- With --input: a dry run of the sample lines (murmur.check); exit 1 when
  -- some line would be rejected.
  local check, sample = require("murmur.check"), nil
  if not opts.input and (opts.lines or opts.json) then
    return usage_error("check", "--lines and --json need --input FILE (the sample to dry-run)")
  end
  local nlines = tonumber(opts.lines or check.DEFAULT_LINES)
  if not nlines or nlines < 1 or nlines ~= math.floor(nlines) then
    return usage_error("check", ("--lines must be a positive whole number, got '%s'"):format(opts.lines))
  end
  if opts.input then
    local serr
    sample, serr = check.sample(opts.input, nlines)
    if not sample then
      return usage_error("check", ("cannot read --input %s (give a JSON Lines file, or - for stdin)"):format(serr))
    end
  end
  local specs, err = require("murmur.isolate").load_all(scripts)
  if not specs then
    eprintf("%s\n", err)
    return EXIT_SCRIPT
  end
  if sample then
    local rejected, rerr = check.run(specs, sample, opts, io.stdout, opts.json and io.stderr or io.stdout)
    if not rejected then eprintf("murmur check: %s\n", rerr) return EXIT_SCRIPT end
    return rejected > 0 and EXIT_RUNTIME or EXIT_OK
  end
  for _, s in ipairs(specs) do
    local window = s.granularity_ms == 0 and "all-time"
      or (("%s buckets, retention %s"):format(({ [60000] = "minute", [3600000] = "hour", [86400000] = "day" })[s.granularity_ms],
        s.retention_ms == 0 and "forever" or (s.retention_ms / 86400000) .. "d"))
    io.write(("%s: ok: pipeline '%s': %s of %s by %s, %s%s\n"):format(s.where, s.name, s.monoid.describe,
      s.value_kind == "field" and s.value_field or s.value_kind,
      s.key_kind == "lua" and "a Lua key function" or table.concat(s.keys, ","), window,
      s.id_kind ~= "none" and ", dedup" or ""))
  end
  return EXIT_OK
end

-- query -------------------------------------------------------------------

local function cmd_query(args)
  local query = require("murmur.query")
  local opts, pos = parse_args(args, {
    data = "multi", window = "value", from = "value", to = "value", at = "value",
    pipeline = "value", json = "flag", top = "value", store = "value", cache = "value",
    stats = "flag", allow = "multi",
  })
  if not opts then return usage_error("query", pos) end
  if opts.help then io.write(HELP.query) return EXIT_OK end
  local gok, gerr = require("murmur.grants").set(opts.allow, opts.data and opts.data[1], opts)
  if not gok then return usage_error("query", gerr) end
  if #pos ~= 2 then return usage_error("query", "expected TARGET and ENTITY") end
  if opts.store and not STORE_KINDS[opts.store] then
    return usage_error("query", ("unknown --store '%s' (expected lmdb or dynamodb)"):format(opts.store))
  end
  if opts.top and not (tonumber(opts.top) and tonumber(opts.top) >= 1 and tonumber(opts.top) % 1 == 0) then
    return usage_error("query", ("--top must be a whole number of at least 1, got '%s'"):format(opts.top))
  end
  local result, err, code = query.run(pos[1], pos[2], opts)
  if not result then
    eprintf("murmur query: %s\n", err)
    return code or EXIT_RUNTIME
  end
  if result.instrumentation then
    io.stderr:write(core.json_encode(result.instrumentation), "\n")
    result.instrumentation = nil
  end
  if opts.json then
    io.write(core.json_encode(result), "\n")
  else
    io.write(query.format(result, tonumber(opts.top)))
  end
  return result.found and EXIT_OK or EXIT_NOTFOUND
end

-- serve -------------------------------------------------------------------

local function cmd_serve(args)
  local opts, scripts = parse_args(args, {
    listen = "value", data = "multi", store = "value", cache = "value", token_file = "value",
    cors_origin = "multi", request_timeout = "value", max_connections = "value", allow = "multi",
    result_cache = "value",
  })
  if not opts then return usage_error("serve", scripts) end
  if opts.help then io.write(HELP.serve) return EXIT_OK end
  local gok, gerr = require("murmur.grants").set(opts.allow, opts.data and opts.data[1], opts)
  if not gok then return usage_error("serve", gerr) end
  if opts.store and not STORE_KINDS[opts.store] then
    return usage_error("serve", ("unknown --store '%s' (expected lmdb or dynamodb)"):format(opts.store))
  end
  local cfg, cerr = require("murmur.serve").config(opts)
  if not cfg then return usage_error("serve", cerr) end
  return require("murmur.serve").run(scripts, opts)
end

-- test --------------------------------------------------------------------

local function cmd_test(args)
  if args[1] == "--help" then io.write(HELP.test) return EXIT_OK end
  -- busted reads the global `arg`; give it ours minus the subcommand.
  local a = { [0] = "murmur test" }
  for i, v in ipairs(args) do a[i] = v end
  _G.arg = a
  -- On Lua 5.1 busted reports failures by raising a nil error; that is its
  -- exit status, not a crash.
  local ok, err = pcall(require("busted.runner"), { standalone = false })
  if not ok then
    if err ~= nil then eprintf("murmur test: %s\n", tostring(err)) end
    return EXIT_RUNTIME
  end
  return EXIT_OK
end

local function cmd_status(args)
  local opts, pos = parse_args(args, { data = "value", json = "flag" })
  if not opts then return usage_error("status", pos) end
  if opts.help then io.write(HELP.status) return EXIT_OK end
  local status = require("murmur.status")
  local data = require("murmur.runner").data_dir(opts)
  local f = io.open(status.path(data), "rb")
  if not f then
    eprintf("murmur status: no status in %s (is `murmur run --data %s` running?)\n", data, data)
    return EXIT_NOTFOUND
  end
  local raw = f:read("*a")
  f:close()
  local st = core.json_decode(raw)
  -- The file outlives the process: a dead instance's last counters are shown
  -- under a first line that says so, and the exit status is 1.
  local state, why
  if type(st) == "table" then state, why = status.liveness(st, data) end
  if opts.json then
    io.write(raw, "\n")
    if why then eprintf("murmur status: %s\n", why) end
    return state == "exited" and EXIT_RUNTIME or EXIT_OK
  end
  if not st then eprintf("murmur status: unreadable %s\n", status.path(data)) return EXIT_RUNTIME end
  local sup = io.open(data .. "/supervisor.json", "rb")
  if sup then
    st.supervisor = core.json_decode(sup:read("*a"))
    sup:close()
  end
  st.liveness = why
  io.write(status.format(st))
  return state == "exited" and EXIT_RUNTIME or EXIT_OK
end

local function cmd_reload(args)
  local opts, pos = parse_args(args, { data = "value" })
  if not opts then return usage_error("reload", pos) end
  if opts.help then io.write(HELP.reload) return EXIT_OK end
  local status = require("murmur.status")
  local data = require("murmur.runner").data_dir(opts)
  local f = io.open(status.pid_path(data), "rb")
  local pid = f and tonumber(f:read("*l"))
  if f then f:close() end
  if not pid then
    eprintf("murmur reload: no running instance in %s\n", data)
    return EXIT_NOTFOUND
  end
  local ok, err = core.kill(pid, "hup")
  if not ok then
    eprintf("murmur reload: cannot signal pid %d: %s\n", pid, err)
    return EXIT_NOTFOUND
  end
  io.write(("murmur reload: signalled pid %d; see `murmur status --data %s`\n"):format(pid, data))
  return EXIT_OK
end

local function cmd_lua(args)
  if args[1] == nil or args[1] == "--help" then io.write(HELP.lua) return args[1] and EXIT_OK or EXIT_USAGE end
  local chunk, err = loadfile(args[1])
  if not chunk then eprintf("murmur lua: %s\n", err) return EXIT_SCRIPT end
  local a = { [0] = args[1] }
  for i = 2, #args do a[i - 1] = args[i] end
  _G.arg = a
  local rc = chunk(unpack(a))
  return type(rc) == "number" and rc or EXIT_OK
end

function M.main(...)
  local args = { ... }
  local cmd = table.remove(args, 1)
  if cmd == nil or cmd == "help" or cmd == "--help" or cmd == "-h" then
    local topic = cmd == "help" and args[1] or nil
    if topic == "--man" then io.write(require("murmur.manpage").render()) return EXIT_OK end
    if topic == "--help" or topic == "-h" then topic = "help" end
    if topic and not HELP[topic] then
      local names = {}
      for name in pairs(require("murmur.help")) do if name ~= "main" then names[#names + 1] = name end end
      table.sort(names)
      eprintf("murmur help: no command '%s' (commands: %s)\n", topic, table.concat(names, ", "))
      return EXIT_USAGE
    end
    io.write(HELP[topic or "main"])
    return cmd == nil and EXIT_USAGE or EXIT_OK
  end
  if cmd == "version" or cmd == "--version" then
    io.write(("murmur %s (%s)\n"):format(core.version, jit and jit.version or _VERSION))
    return EXIT_OK
  end
  local commands = { run = cmd_run, check = cmd_check, query = cmd_query, serve = cmd_serve, test = cmd_test, lua = cmd_lua,
    status = cmd_status, reload = cmd_reload,
    lambda = function(a) return require("murmur.lambda").main(a, parse_args, usage_error, HELP) end, ddb = function(a) return require("murmur.ddb").main(a) end,
    completion = function(a) return require("murmur.completion").main(a) end }
  local f = commands[cmd]
  if not f then
    eprintf("murmur: unknown command '%s' (run `murmur help` for the list)\n", cmd)
    return EXIT_USAGE
  end
  return f(args)
end

M.EXIT = { OK = EXIT_OK, RUNTIME = EXIT_RUNTIME, USAGE = EXIT_USAGE, SCRIPT = EXIT_SCRIPT, NOTFOUND = EXIT_NOTFOUND }
return M
