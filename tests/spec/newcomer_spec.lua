-- A newcomer's mistakes: each is answered at once with what is wrong (the
-- file, option or value at fault), the documented exit status and the next
-- step, never with a stack trace, a silent success or an endless retry.
local S = require("spec.support")

local dir

local function file(name, body)
  local path = dir .. "/" .. name
  S.write_file(path, body)
  return path
end

local PAGE_VIEWS = S.root .. "/pipelines/page_views.lua"

describe("#newcomer mistakes", function()
  before_each(function() dir = S.tmpdir() end)
  after_each(function() S.rm_rf(dir) end)

  it("a missing input under the supervisor ends the run with status 1 and the source's error", function()
    -- Before: the supervisor restarted the worker forever (backoff to 10 s).
    local code, _, err = S.exec(("cd %s && timeout 20 %s run --once --data d --input missing.jsonl %s")
      :format(S.quote(dir), S.quote(S.murmur), S.quote(PAGE_VIEWS)))
    assert.are.equal(1, code, err)
    assert.matches("missing%.jsonl", err)
    assert.matches("no such file", err)
    assert.matches("an error a restart would hit again", err)
    assert.is_nil(err:find("restarting the worker", 1, true))
  end)

  it("a reversed or expired --from/--to range is a usage error without a stack trace", function()
    local input = file("in.jsonl", '{"page_id":"a"}\n')
    assert.are.equal(0, (S.murmur_run({ "run", "--once", "--data", dir .. "/d", "--input", input, PAGE_VIEWS })))
    local code, _, err = S.murmur_run({ "query", PAGE_VIEWS, "a", "--data", dir .. "/d",
      "--from", "2026-11-02", "--to", "2026-11-01" })
    assert.are.equal(2, code)
    assert.matches("%-%-from 2026%-11%-02 is after %-%-to 2026%-11%-01", err)
    assert.is_nil(err:find("traceback", 1, true))
    code, _, err = S.murmur_run({ "query", PAGE_VIEWS, "a", "--data", dir .. "/d",
      "--from", "2001-01-01", "--to", "2001-01-02" })
    assert.are.equal(2, code)
    assert.matches("oldest time this pipeline keeps %(retention 90d%)", err)
    assert.is_nil(err:find("traceback", 1, true))
  end)

  it("an unknown monoid names the script line and lists what exists", function()
    local p = file("avg.lua", 'local murmur = require("murmur")\n'
      .. 'murmur.pipeline {\n  name = "x",\n  key = "k",\n  monoid = murmur.average{},\n}\n')
    local code, _, err = S.murmur_run({ "check", p })
    assert.are.equal(3, code)
    assert.matches("avg%.lua:5: murmur%.average does not exist %(monoids: sum, count", err)
  end)

  it("an unknown pipeline option is reported at the option's own line", function()
    local p = file("opt.lua", 'local murmur = require("murmur")\n'
      .. 'murmur.pipeline {\n  name = "x",\n  key = "k",\n  monoid = murmur.count(),\n'
      .. '  windw = murmur.daily{},\n}\n')
    local code, _, err = S.murmur_run({ "check", p })
    assert.are.equal(3, code)
    assert.matches("opt%.lua:6: pipeline: unknown option 'windw'", err)
  end)

  it("a data directory that cannot be created names the path and the fix", function()
    local input = file("in.jsonl", '{"page_id":"a"}\n')
    file("plain", "not a directory")
    for _, extra in ipairs({ {}, { "--no-supervisor" } }) do
      local args = { "run", "--once", "--data", dir .. "/plain/data", "--input", input }
      for _, a in ipairs(extra) do args[#args + 1] = a end
      args[#args + 1] = PAGE_VIEWS
      local code, _, err = S.murmur_run(args)
      assert.are.equal(1, code)
      assert.matches("cannot create directory '[^']*/plain/data'", err)
      assert.matches("choose a writable %-%-data directory", err)
    end
  end)

  it("usage mistakes exit 2 with one line and a pointer to --help", function()
    local input = file("in.jsonl", '{"page_id":"a"}\n')
    local code, out, err = S.murmur_run({ "run", "--once", "--store", "bogus", "--input", input, PAGE_VIEWS })
    assert.are.equal(2, code)
    assert.matches("unknown %-%-store 'bogus'", err)
    code, out, err = S.murmur_run({ "run", "--bogus", PAGE_VIEWS })
    assert.are.equal(2, code)
    assert.matches("unknown option %-%-bogus\n%(run `murmur run %-%-help` for its options%)\n$", err)
    assert.are.equal("", out)
    for _, top in ipairs({ "0", "-1", "x" }) do
      code, _, err = S.murmur_run({ "query", PAGE_VIEWS, "a", "--top", top })
      assert.are.equal(2, code)
      assert.matches("%-%-top must be a whole number", err)
    end
    code, out, err = S.murmur_run({ "help", "bogus" })
    assert.are.equal(2, code)
    assert.matches("no command 'bogus'", err)
    assert.are.equal("", out)
  end)

  it("Ctrl-C (SIGINT to the whole process group) stops once, with the final flush", function()
    -- The terminal signals the supervisor and the worker, and the supervisor
    -- forwards it: before, the worker took the copy for a second Ctrl-C and
    -- exited without flushing what it had read from stdin.
    local lines = {}
    for i = 1, 500 do lines[i] = ('{"page_id":"p%d"}'):format(i % 5) end
    file("in.jsonl", table.concat(lines, "\n") .. "\n")
    -- SIGTERM to the group is what systemd's default KillMode sends.
    for round, sig in ipairs({ "INT", "INT", "TERM" }) do
      local data = dir .. "/d" .. round
      -- The sleep that keeps stdin open ends on the signal to the job, as in
      -- a terminal, even when this run inherited SIGINT ignored (a CI job
      -- started in the background of a script does; murmur keeps what it
      -- inherited): `wait` waits for the whole job, so an ignoring sleep
      -- made each round last its 30 s.
      local code, _, err = S.exec(("cd %s && bash -c 'set -m; (cat in.jsonl; exec env --default-signal=INT sleep 30) "
        .. "| %s run --data %s %s & sleep 1.5; kill -%s %%%%; wait $!'"):format(S.quote(dir), S.quote(S.murmur),
        S.quote(data), S.quote(PAGE_VIEWS), sig))
      assert.are.equal(0, code, err)
      assert.is_nil(err:find("second signal", 1, true), err)
      local _, out = S.murmur_run({ "query", PAGE_VIEWS, "p1", "--data", data, "--json" })
      assert.matches('"value":100', out)
    end
  end)

  it("Ctrl-C while the scripts load stops the run cleanly, not as a crashed script", function()
    -- The top level takes a second of CPU: the signal arrives while the
    -- probe child validates it (or while the worker loads it; on a loaded
    -- machine, while the worker starts, before it can catch the signal).
    -- The feeder dies on the signal as in a terminal, so stdin ends at the
    -- same moment, even when this run inherited SIGINT ignored (see above).
    local p = file("slow.lua", 'local murmur = require("murmur")\n'
      .. 'local t = os.clock() while os.clock() - t < 1 do end\n'
      .. 'murmur.pipeline { name = "slow", key = "k", monoid = murmur.count() }\n')
    for _, delay in ipairs({ "0.3", "1.2" }) do
      local code, _, err = S.exec(("cd %s && bash -c 'set -m; (exec env --default-signal=INT sleep 30) | %s run --data d %s & "
        .. "sleep %s; kill -INT %%%%; wait $!'"):format(S.quote(dir), S.quote(S.murmur), S.quote(p), delay))
      assert.are.equal(0, code, err)
      assert.is_nil(err:find("crashed", 1, true), err)
      assert.is_nil(err:find("second signal", 1, true), err)
      assert.matches("stopping %(flush, checkpoint, exit%)", err)
    end
  end)

  it("a query without a store says where it looked and what to do", function()
    local code, _, err = S.exec(("cd %s && %s query %s a"):format(S.quote(dir), S.quote(S.murmur), S.quote(PAGE_VIEWS)))
    assert.are.equal(4, code)
    assert.matches("no store at 'murmur%-data/store'", err)
    assert.matches("run `murmur run %-%-data murmur%-data", err)
  end)
end)
