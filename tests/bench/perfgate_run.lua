-- One measured run of `make perfgate` (tests/bench/perfgate.sh runs this
-- under callgrind): loads the scripts, builds the engine exactly as `murmur
-- run --once --no-supervisor` does and runs it over the input, with nothing
-- that depends on the clock around it. The CLI's extras are left out on
-- purpose: the probe child that validates scripts (a forked copy at start-up,
-- whose counts callgrind would write to the same output file; an exec'd one
-- it cannot follow), and the status, progress and reload timers,
-- whose firings would vary with the speed of the run. Flushes happen on the
-- event count and at the end of the input only (the interval is raised to
-- an hour), so every run does the same work.
--
--   murmur lua tests/bench/perfgate_run.lua DATA INPUT SCRIPT...
local core = require("murmur.core")
local loader = require("murmur.loader")
local runner = require("murmur.runner")

local data, input = arg[1], arg[2]
local scripts = {}
for i = 3, #arg do scripts[#scripts + 1] = arg[i] end

-- Log lines carry timestamps; quiet, the run has no clock-dependent strings.
core.set_log_level("error")
local specs, err = loader.load_all(scripts)
if not specs then
  io.stderr:write("perfgate: ", tostring(err), "\n")
  os.exit(1)
end
for _, spec in ipairs(specs) do spec.flush_interval_ms = 3600 * 1000 end
local engine, lerr = runner.build(specs, { data = data, input = input, once = true })
if not engine then
  io.stderr:write("perfgate: ", tostring(lerr), "\n")
  os.exit(1)
end
local code = engine:run(true)
local stats = engine:stats()
engine:close()
if code ~= 0 or stats.records == 0 then
  io.stderr:write(("perfgate: the run ended with %d after %d records\n"):format(code, stats.records))
  os.exit(1)
end
