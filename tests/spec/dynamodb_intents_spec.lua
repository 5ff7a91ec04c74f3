-- Exact across kill -9 on DynamoDB (issue 9, item 4): a worker killed at any
-- moment of a flush, also between two of its deltas, leaves no half-applied
-- flush behind. Its flush intent is rolled forward by the next run that
-- reads the position, so a restarted run neither counts the flush's records
-- again (without event ids) nor loses them (with ids). Each round runs
-- `murmur run --once --no-supervisor` (so kill -9 hits the worker itself) and
-- kills it either from outside after a random pause or from inside after a
-- random number of durable deltas (MURMUR_ERRINJ_DDB_KILL_AFTER_DELTAS, test
-- builds); a last run reads to the end, and every stored value must equal
-- the truth computed here from the input. dynalite is started here on
-- 127.0.0.1 and stopped at the end (pending without node).
local S = require("spec.support")
local ffi = require("ffi")

ffi.cdef [[ int setenv(const char *name, const char *value, int overwrite); ]]

-- Under `make check` (a sanitized build) a third of the kills: each round
-- takes the same paths, at several times the cost.
local KILLS = S.build:find("asan", 1, true) and 10 or 30
local d = S.have_dynalite and describe or pending

d("#intents flush intents on DynamoDB: exact across kill -9", function()
  local dir, dyn, port

  setup(function()
    dir = S.tmpdir()
    dyn, port = S.start_dynalite(dir, dir .. "/dynalite-db")
    ffi.C.setenv("AWS_ACCESS_KEY_ID", "AKIDSPEC", 1)
    ffi.C.setenv("AWS_SECRET_ACCESS_KEY", "spec-secret", 1)
  end)

  teardown(function()
    if dyn then S.kill(dyn, "TERM") S.wait_exit(dyn, 5) end
    S.rm_rf(dir)
  end)

  local function env(t)
    return ("env AWS_ACCESS_KEY_ID=AKIDSPEC AWS_SECRET_ACCESS_KEY=spec-secret MURMUR_DYNAMODB_TABLE=%s "
      .. "MURMUR_DYNAMODB_ENDPOINT=http://127.0.0.1:%d"):format(t, port)
  end

  local function new_table(name)
    local code, _, err = S.exec(("%s %s ddb create-table"):format(env(name), S.quote(S.murmur)))
    assert.are.equal(0, code, err)
  end

  -- Appends n lines made by line(i) to path.
  local function append(path, first, n, line)
    local f = assert(io.open(path, "a"))
    for i = first, first + n - 1 do f:write(line(i), "\n") end
    f:close()
  end

  -- Runs the script on input into table t until KILLS kills happened and a
  -- last run read everything. Between kills the input grows by `chunk`
  -- lines whenever a run got to its end, so every kill lands mid-stream.
  -- Returns the number of lines written and the logs' roll-forward count.
  local function kill_rounds(t, script, input, chunk, line, max_deltas)
    local data = dir .. "/data-" .. t
    local cmd = ("%s run --once --no-supervisor --log-level info --data %s --input %s %s")
      :format(S.quote(S.murmur), S.quote(data), S.quote(input), S.quote(script))
    local lines, kills, rolled, inside = 0, 0, 0, 0
    math.randomseed(#t * 7919)
    local function grow() append(input, lines + 1, chunk, line) lines = lines + chunk end
    grow()
    local round = 0
    while kills < KILLS do
      round = round + 1
      local log = ("%s/%s-%d.log"):format(dir, t, round)
      local errinj = ""
      -- Every other round is killed from inside, between two deltas.
      if round % 2 == 0 then errinj = "MURMUR_ERRINJ_DDB_KILL_AFTER_DELTAS=" .. math.random(1, max_deltas) end
      local h = S.spawn(("%s %s %s"):format(env(t), errinj, cmd), log)
      local code
      if errinj == "" then
        -- The kill lands 0.2-1.4 s in, unless the run ended before: a run
        -- that got to its end is not waited on for the rest of the pause.
        code = S.wait_exit(h, 0.2 + math.random() * 1.2)
        if code == nil then S.kill(h, "KILL") code = S.wait_exit(h, 30) end
      else
        code = S.wait_exit(h, 120)
      end
      local text = S.read_file(log) or ""
      for _ in text:gmatch("rolled forward the flush") do rolled = rolled + 1 end
      if code == 137 or code == nil then
        kills = kills + 1
        inside = inside + (errinj ~= "" and 1 or 0)
      else
        assert.are.equal(0, code, text)
        grow()
      end
    end
    local log = ("%s/%s-last.log"):format(dir, t)
    local code, out, err = S.exec(("%s %s > %s 2>&1"):format(env(t), cmd, S.quote(log)))
    local text = S.read_file(log) or ""
    assert.are.equal(0, code, text .. out .. err)
    for _ in text:gmatch("rolled forward the flush") do rolled = rolled + 1 end
    return lines, kills, rolled, inside
  end

  local function read_values(t, pipeline, entities)
    return S.ddb_read_values(("http://127.0.0.1:%d"):format(port), t, pipeline, entities)
  end

  it("page_views, thousands of keys per flush, no event ids: every count exact", function()
    local t = "intents_pv"
    new_table(t)
    local script = dir .. "/pv.lua"
    S.write_file(script, [[
local murmur = require("murmur")
murmur.pipeline {
  name = "page_views",
  key = "page_id",
  monoid = murmur.sum {},
  value = 1,
  store = murmur.store("dynamodb", { max_inflight = 16 }),
  flush = { events = 3000, keys = 100000, interval = "60s" },
}
]])
    local input = dir .. "/pv.jsonl"
    local PAGES = 2500
    local function page(i) return (i * 7919 + math.floor(i / 3) * 104729) % PAGES end
    local lines, kills, rolled, inside = kill_rounds(t, script, input, 6000,
      function(i) return ('{"page_id":"p%d"}'):format(page(i)) end, 2000)
    local truth = {}
    for i = 1, lines do local p = page(i) truth[p] = (truth[p] or 0) + 1 end
    local names = {}
    for p in pairs(truth) do names[#names + 1] = "p" .. p end
    local got, bad = read_values(t, "page_views", names), {}
    for p, n in pairs(truth) do
      local v = got["p" .. p]
      if not v or v.value ~= n then bad[#bad + 1] = ("p%d: %s ~= %d"):format(p, v and tostring(v.value) or "absent", n) end
    end
    table.sort(bad)
    while #bad > 10 do table.remove(bad) end
    local checked = #names
    print(("# page_views: %d events, %d kills (%d between deltas), %d flushes rolled forward, %d pages checked")
      :format(lines, kills, inside, rolled, checked))
    assert.are.same({}, bad)
    assert.is_true(kills >= KILLS)
    assert.is_true(rolled > 0, "no kill left a flush to roll forward")
  end)

  it("recently_interacted with event ids, some repeated: every Top-K count exact", function()
    local t = "intents_ri"
    new_table(t)
    local script = dir .. "/ri.lua"
    -- A fixed owner: a restarted run takes its own unfinished claims back at
    -- once instead of waiting out a lease it keeps renewing itself.
    S.write_file(script, [[
local murmur = require("murmur")
murmur.pipeline {
  name = "recently_interacted",
  key = murmur.literal("global"),
  value = "entity_id",
  monoid = murmur.topk { k = 32 },
  dedup = { id = "event_id", ttl = "2d" },
  store = murmur.store("dynamodb", { owner = "reader-1", lease = "3s" }),
  flush = { events = 200, keys = 100000, interval = "60s" },
}
]])
    local input = dir .. "/ri.jsonl"
    -- Every fifth line repeats the event of three lines before (another
    -- producer delivering it again): counted once.
    local function id_of(i) return i % 5 == 0 and i - 3 or i end
    local function entity(id) return (id * 31) % 20 end
    local lines, kills, rolled, inside = kill_rounds(t, script, input, 800,
      function(i) local id = id_of(i) return ('{"entity_id":"e%d","event_id":"id%d"}'):format(entity(id), id) end, 3)
    local truth, seen, total = {}, {}, 0
    for i = 1, lines do
      local id = id_of(i)
      if not seen[id] then
        seen[id] = true
        total = total + 1
        truth["e" .. entity(id)] = (truth["e" .. entity(id)] or 0) + 1
      end
    end
    local v = read_values(t, "recently_interacted", { "global" }).global
    assert.is_truthy(v, "nothing stored")
    local got = {}
    for _, it in ipairs(v.items) do got[it.item] = it.count end
    print(("# recently_interacted: %d events (%d distinct ids), %d kills (%d between delta and commit), %d flushes rolled forward")
      :format(lines, total, kills, inside, rolled))
    assert.are.same(truth, got)
    assert.are.equal(total, v.n)
    assert.is_true(kills >= KILLS)
    assert.is_true(rolled > 0, "no kill left a flush to roll forward")
  end)
end)
