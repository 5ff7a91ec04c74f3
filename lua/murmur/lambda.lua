-- murmur.lambda: `murmur lambda`, the AWS Lambda custom runtime.
--
-- Lambda starts the process (the zip's bootstrap runs `murmur lambda`) with
-- AWS_LAMBDA_RUNTIME_API, _HANDLER (the pipeline script, relative to
-- LAMBDA_TASK_ROOT) and the function's credentials in the environment. The
-- script is loaded once, the store opened once, and the engine then serves
-- invocation after invocation on one loop (engine/source/lambda.c): the
-- events replace the script's sources, as --input replaces murmur.input()
-- under `murmur run`, so the script runs unchanged from what a Kafka worker
-- runs. There is no supervisor: Lambda itself restarts a runtime that exits.
local core = require("murmur.core")

local M = {}

local EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_SCRIPT = 0, 1, 2, 3

local function eprintf(fmt, ...)
  io.stderr:write(string.format(fmt, ...))
end

-- Reports a failure before the first invocation to the Runtime API
-- (POST /runtime/init/error), so Lambda shows it as the init error.
local function init_error(api, kind, msg)
  eprintf("murmur lambda: %s\n", msg)
  if not api then return end
  local body = core.json_encode({ errorMessage = msg, errorType = kind, stackTrace = {} })
  local code, err = core.http_post(("http://%s/2018-06-01/runtime/init/error"):format(api), body,
    "Lambda-Runtime-Function-Error-Type: " .. kind)
  if not code then eprintf("murmur lambda: cannot report the init error: %s\n", err) end
end

-- The script: the positional argument, else _HANDLER, relative to
-- LAMBDA_TASK_ROOT (where the zip is unpacked) unless absolute.
local function script_path(scripts)
  local s = scripts[1] or os.getenv("_HANDLER")
  if not s or s == "" then return nil end
  local root = os.getenv("LAMBDA_TASK_ROOT")
  if s:sub(1, 1) ~= "/" and root and root ~= "" then s = root .. "/" .. s end
  return s
end

function M.main(args, parse_args, usage_error, HELP)
  local opts, scripts = parse_args(args, {
    data = "value", store = "value", consumer = "value", margin = "value", log_level = "value",
    stats = "flag", allow = "multi", cache = "value",
  })
  if not opts then return usage_error("lambda", scripts) end
  if opts.help then io.write(HELP.lambda) return EXIT_OK end
  local api = os.getenv("AWS_LAMBDA_RUNTIME_API")
  if not api or api == "" then
    return usage_error("lambda", "AWS_LAMBDA_RUNTIME_API is not set (murmur lambda runs inside AWS Lambda or its emulator)")
  end
  if opts.log_level then
    local ok, err = core.set_log_level(opts.log_level)
    if not ok then return usage_error("lambda", err) end
  end
  if opts.margin and not core.parse_duration(opts.margin) then
    return usage_error("lambda", "--margin must be a duration such as 500ms or 2s")
  end
  local script = script_path(scripts)
  if not script then
    init_error(api, "Runtime.NoSuchHandler", "no pipeline script: set _HANDLER (e.g. pipelines/recently_interacted.lua)")
    return EXIT_USAGE
  end
  -- Lambda's file system is read-only but for /tmp.
  opts.data = opts.data or os.getenv("MURMUR_DATA") or "/tmp/murmur-data"
  local runner = require("murmur.runner")
  local gok, gerr = require("murmur.grants").set(opts.allow, opts.data, opts)
  if not gok then return usage_error("lambda", gerr) end
  local ok, merr = core.mkdir_p(opts.data)
  if not ok then
    init_error(api, "Runtime.InitError", merr .. " (choose a writable --data directory)")
    return EXIT_RUNTIME
  end
  -- Loaded here, not in a probe child first (murmur.isolate.load_in_process):
  -- Lambda's sandbox bounds and reports a load that hangs or crashes.
  local specs, err = require("murmur.isolate").load_in_process({ script })
  if not specs then
    init_error(api, "Runtime.InvalidHandler", err)
    return EXIT_SCRIPT
  end
  opts.lambda = {
    api = api,
    consumer = opts.consumer or os.getenv("AWS_LAMBDA_FUNCTION_NAME") or "lambda",
    margin = opts.margin,
  }
  local engine, lerr = runner.build(specs, opts)
  if not engine then
    init_error(api, "Runtime.InitError", lerr)
    return lerr:find("EINCOMPAT", 1, true) and EXIT_SCRIPT or EXIT_RUNTIME
  end
  core.log("info", "lambda", ("runtime ready: %s on %s"):format(script, api))
  local code = engine:run(false)
  local stats = engine:stats()
  core.log("info", "lambda", ("stopped: %d flushes (%d failed)"):format(stats.flushes, stats.flush_failures))
  if opts.stats then io.write(core.json_encode(stats), "\n") end
  engine:close()
  return code
end

return M
