-- Exact with live concurrent writers (issue 9, item 3): workers that receive
-- the same event ids at the same moment count each id once, none waits out
-- the lease of a worker that is alive, and none takes a live worker's claim
-- over. Each worker is a `murmur run --once --store dynamodb` with its own
-- data directory and its own shuffle of the same ids; dynalite is started
-- here on 127.0.0.1 and stopped at the end (pending without node).
local S = require("spec.support")
local core = require("murmur.core")
local ffi = require("ffi")

ffi.cdef [[ int setenv(const char *name, const char *value, int overwrite); ]]

local SECRET = "spec-secret"
local IDS = 1000
-- Far longer than the runs take (seconds; tens on a loaded machine): a
-- worker that waited out another's lease would take at least this long.
local LEASE_S = 120

local d = S.have_dynalite and describe or pending

d("#dynamodb #workers live workers sharing dedup ids on DynamoDB", function()
  local dir, dyn, port, proxy, proxy_port

  setup(function()
    dir = S.tmpdir()
    dyn, port = S.start_dynalite(dir, dir .. "/dynalite-db")
    local plog = dir .. "/proxy.log"
    proxy = S.spawn(("node tests/node/fault_proxy.js --target %d"):format(port), plog)
    proxy_port = S.wait_port(plog, 10)
    ffi.C.setenv("AWS_ACCESS_KEY_ID", "AKIDSPEC", 1)
    ffi.C.setenv("AWS_SECRET_ACCESS_KEY", SECRET, 1)
  end)

  teardown(function()
    if proxy then S.kill(proxy, "TERM") S.wait_exit(proxy, 5) end
    if dyn then S.kill(dyn, "TERM") S.wait_exit(dyn, 5) end
    S.rm_rf(dir)
  end)

  local function endpoint(via_proxy) return ("http://127.0.0.1:%d"):format(via_proxy and proxy_port or port) end

  local function env(t, via_proxy)
    return ("env AWS_ACCESS_KEY_ID=AKIDSPEC AWS_SECRET_ACCESS_KEY=%s MURMUR_DYNAMODB_TABLE=%s "
      .. "MURMUR_DYNAMODB_ENDPOINT=%s"):format(SECRET, t, endpoint(via_proxy))
  end

  local function faults(rules)
    local doc = core.json_encode({ rules = rules or {} })
    local code, out = S.exec(("curl -s -X POST --data-binary %s http://127.0.0.1:%d/__faults")
      :format(S.quote(doc), proxy_port))
    assert(code == 0 and out:find("ok"), "cannot configure the proxy: " .. out)
  end

  local tables = 0
  local function new_table()
    tables = tables + 1
    local name = ("workers_%d_%d"):format(os.time() % 100000, tables)
    local code, _, err = S.exec(("%s %s ddb create-table"):format(env(name), S.quote(S.murmur)))
    assert.are.equal(0, code, err)
    return name
  end

  -- The same ids e1..eN, in an order of the seed's own.
  local function shuffled(path, seed, n)
    local ids = {}
    n = n or IDS
    for i = 1, n do ids[i] = i end
    math.randomseed(seed)
    for i = n, 2, -1 do
      local j = math.random(i)
      ids[i], ids[j] = ids[j], ids[i]
    end
    local f = assert(io.open(path, "w"))
    for _, i in ipairs(ids) do f:write(('{"id":"e%d","n":%d}\n'):format(i, i)) end
    f:close()
  end

  local function script(name, flush_events, store_opts)
    local path = dir .. "/" .. name .. ".lua"
    S.write_file(path, ([[
local murmur = require("murmur")
murmur.pipeline {
  name = "%s",
  key = murmur.literal("hot"), monoid = murmur.count(),
  dedup = { id = "id" },
  flush = { events = %d, interval = "50ms" },
  store = murmur.store("dynamodb", { %s }),
}
]]):format(name, flush_events or 50, store_opts or ('lease = "%ds"'):format(LEASE_S)))
    return path
  end

  local function stats_of(log)
    return core.json_decode(assert(log:match("\n({\"batches\"[^\n]*)"), "no --stats output: " .. log))
  end

  local function stored_count(t, name)
    local st = assert(core.store_open("dynamodb", { table = t, endpoint = endpoint() }, true))
    local raw = assert(st:meta(name), "no metadata for " .. name)
    local meta = core.json_decode(raw:match("\n(.*)$"))
    local bytes = st:get(name, meta.monoid, "hot", { 0 })
    st:close()
    return bytes and core.json_decode(assert(core.state(meta.monoid, bytes)):json()).value or 0
  end

  -- Runs n workers at once over their own shuffles of the same ids.
  local function race(n, name)
    local t = new_table()
    local path = script(name)
    local procs = {}
    for w = 1, n do
      local input = ("%s/%s-%d.jsonl"):format(dir, name, w)
      shuffled(input, 1000 * n + w)
      procs[w] = S.spawn(("%s %s run --once --stats --data %s/%s-d%d --input %s %s"):format(env(t),
        S.quote(S.murmur), dir, name, w, input, path), ("%s/%s-%d.log"):format(dir, name, w))
    end
    local t0 = core.now_ms()
    for w = 1, n do assert.are.equal(0, S.wait_exit(procs[w], 300), S.read_file(("%s/%s-%d.log"):format(dir, name, w))) end
    local elapsed = (core.now_ms() - t0) / 1000
    local total = { accepted = 0, duplicates = 0, stolen = 0, deferred = 0, lost = 0 }
    for w = 1, n do
      local log = S.read_file(("%s/%s-%d.log"):format(dir, name, w))
      local stats = stats_of(log)
      local c = stats.instrumentation[name .. ":store_claim"]
      total.accepted = total.accepted + stats.pipelines[name].accepted
      total.duplicates = total.duplicates + stats.pipelines[name].duplicates
      total.stolen = total.stolen + c.stolen
      total.deferred = total.deferred + c.deferred
      total.lost = total.lost + c.lost
    end
    print(("# %d workers, the same %d ids: %.1f s, %d accepted, %d duplicates, %d deferred, %d taken over")
      :format(n, IDS, elapsed, total.accepted, total.duplicates, total.deferred, total.stolen))
    assert.are.equal(IDS, stored_count(t, name))
    assert.are.equal(IDS, total.accepted)
    assert.are.equal((n - 1) * IDS, total.duplicates)
    assert.are.equal(0, total.stolen)
    assert.are.equal(0, total.lost)
    assert.is_true(elapsed < LEASE_S, ("the workers took %.1f s with a %d s lease"):format(elapsed, LEASE_S))
  end

  it("counts each id once with two workers receiving the same ids at the same time", function()
    race(2, "hot2")
  end)

  it("counts each id once with three workers, none taking over another's claim", function()
    race(3, "hot3")
  end)

  it("keeps a live worker's claims through a flush that takes several leases (renewals)", function()
    local t = new_table()
    -- A 4 s lease; the first worker's merges fail 7 times, so its flush is
    -- retried for about 13 s (100 ms doubling) while it holds every claim,
    -- three leases long. (Each renewal is one request per claim: 200 ids
    -- renew inside a third of the lease on dynalite; with a 2 s lease, at a
    -- load of 12 to 20 on 2 cores, renewals arrived after the lease ran out
    -- and the other worker rightly took the claims over.)
    local n = 200
    local path = script("slow", 5000, 'lease = "4s", max_attempts = 1')
    local a, b = dir .. "/slow-a.jsonl", dir .. "/slow-b.jsonl"
    shuffled(a, 71, n)
    shuffled(b, 72, n)
    faults({ { op = "UpdateItem", match = "ADD #v", action = "error500", count = 7 } })
    local alog, blog = dir .. "/slow-a.log", dir .. "/slow-b.log"
    local wa = S.spawn(("%s %s run --once --stats --data %s/slow-da --input %s %s"):format(env(t, true),
      S.quote(S.murmur), dir, a, path), alog)
    for _ = 1, 400 do
      if (S.read_file(alog) or ""):find("flush of %d+ deltas failed") then break end
      S.sleep(0.05)
    end
    assert.truthy((S.read_file(alog) or ""):find("flush of %d+ deltas failed"), S.read_file(alog))
    -- Meanwhile a second worker receives the same ids: they are busy at the
    -- first, whose leases outlive its slow flush; it defers and waits.
    local wb = S.spawn(("%s %s run --once --stats --data %s/slow-db --input %s %s"):format(env(t),
      S.quote(S.murmur), dir, b, path), blog)
    assert.are.equal(0, S.wait_exit(wa, 120), S.read_file(alog))
    assert.are.equal(0, S.wait_exit(wb, 120), S.read_file(blog))
    faults()
    local sa, sb = stats_of(S.read_file(alog)), stats_of(S.read_file(blog))
    local ca, cb = sa.instrumentation["slow:store_claim"], sb.instrumentation["slow:store_claim"]
    print(("# a flush of ~13 s under a 4 s lease: %d renewals, %d deferred at the other worker, %d taken over")
      :format(ca.renewals, cb.deferred, ca.stolen + cb.stolen))
    assert.are.equal(n, stored_count(t, "slow"))
    assert.are.equal(n, sa.pipelines.slow.accepted + sb.pipelines.slow.accepted)
    assert.are.equal(0, ca.stolen + cb.stolen)
    assert.are.equal(0, ca.lost + cb.lost)
    assert.is_true(ca.renewals > 0)
    assert.is_true(cb.deferred > 0)
  end)
end)
