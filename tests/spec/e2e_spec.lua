-- End to end: 1 000 000 Zipf events through `murmur run --once` into the
-- embedded store, then `murmur query` compared with exact answers computed
-- here, independently of murmur, from the same input file.
local S = require("spec.support")
local core = require("murmur.core")

describe("#e2e recently_interacted, page_views and unique_visitors on 1M Zipf events", function()
  local dir, input
  local N, K = 1000000, 32
  local counts, users_of, users_set, ranked = {}, {}, nil, {}

  setup(function()
    dir = S.tmpdir()
    input = dir .. "/events.jsonl"
    S.gen_events(input, N, 100000, 1.1, 7)
    -- Exact answers, computed with plain string matching.
    for line in io.lines(input) do
      local e, u = line:match('"entity_id":"([^"]+)".-"user_id":"([^"]+)"')
      counts[e] = (counts[e] or 0) + 1
    end
    for e, c in pairs(counts) do ranked[#ranked + 1] = { item = e, count = c } end
    table.sort(ranked, function(a, b) return a.count > b.count or (a.count == b.count and a.item < b.item) end)
    -- Distinct users for the five hottest pages (dense sketches in every
    -- flush's delta) and two colder ones (lists) only (keeps the check
    -- cheap).
    local watch = {}
    for _, i in ipairs({ 1, 2, 3, 4, 5, 100, 1000 }) do watch[ranked[i].item] = {} end
    for line in io.lines(input) do
      local p, u = line:match('"page_id":"([^"]+)","user_id":"([^"]+)"')
      if watch[p] then watch[p][u] = true end
    end
    for p, set in pairs(watch) do
      local n = 0
      for _ in pairs(set) do n = n + 1 end
      users_of[p] = n
    end
    users_set = watch
    local code, _, err = S.murmur_run({ "run", "--once", "--data", dir .. "/data", "--input", input,
      "pipelines/recently_interacted.lua", "pipelines/page_views.lua", "pipelines/unique_visitors.lua" })
    assert.are.equal(0, code, err)
  end)

  teardown(function() S.rm_rf(dir) end)

  local function query(args)
    local full = { "query" }
    for _, a in ipairs(args) do full[#full + 1] = a end
    for _, a in ipairs({ "--data", dir .. "/data", "--json" }) do full[#full + 1] = a end
    local code, out, err = S.murmur_run(full)
    assert.are.equal(0, code, err)
    return core.json_decode(out)
  end

  it("returns the exact Top-10 ranks with Misra-Gries bounds", function()
    local r = query({ "pipelines/recently_interacted.lua", "global", "--window", "1d" })
    local res = r.result
    assert.are.equal(N, res.n)
    assert.are.equal(K, res.k)
    assert.is_true(res.error <= N / (K + 1))
    for i = 1, 10 do
      local item = res.items[i]
      assert.are.equal(ranked[i].item, item.item, "rank " .. i)
      local truth = ranked[i].count
      assert.is_true(item.lower <= truth and truth <= item.upper,
        ("%s: %d not in [%d, %d]"):format(item.item, truth, item.lower, item.upper))
      assert.is_true(truth - item.count <= N / (K + 1))
    end
    -- Every item above the guarantee threshold is present.
    local present = {}
    for _, it in ipairs(res.items) do present[it.item] = true end
    for _, e in ipairs(ranked) do
      if e.count <= N / (K + 1) then break end
      assert.is_true(present[e.item], e.item .. " missing")
    end
  end)

  it("returns exact page_views sums", function()
    for _, i in ipairs({ 1, 2, 3, 10, 100, 1000 }) do
      local r = query({ "page_views", ranked[i].item })
      assert.are.equal(ranked[i].count, r.result.value, ranked[i].item)
    end
  end)

  it("returns unique_visitors within the HyperLogLog bound", function()
    for p, truth in pairs(users_of) do
      local r = query({ "unique_visitors", p, "--window", "7d" })
      local rel = math.abs(r.result.cardinality - truth) / truth
      assert.is_true(rel <= 3 * 1.04 / math.sqrt(16384), ("%s: %d vs %d"):format(p, r.result.cardinality, truth))
    end
  end)

  -- The record loop leaves a dense delta's register store for the next
  -- record (add_start in monoid.h): the stored registers must still be
  -- those of the events, which hll_tool adds one by one (hll_valkey_spec
  -- checks those against the server's PFADD). The estimate is a function
  -- of the registers, so equal estimates check them all at once.
  it("stores unique_visitors' exact registers: the estimate of the same users added alone", function()
    local tool = S.root .. "/" .. S.build .. "/helpers/hll_tool"
    for p, set in pairs(users_set) do
      local f = dir .. "/users.txt"
      local out = assert(io.open(f, "w"))
      for u in pairs(set) do out:write(u, "\n") end
      out:close()
      local h = assert(io.popen(("%s encode < %s"):format(tool, f)))
      local hex = h:read("*l")
      h:close()
      h = assert(io.popen(("%s count %s"):format(tool, hex)))
      local want = tonumber(h:read("*l"))
      h:close()
      local r = query({ "unique_visitors", p, "--window", "7d" })
      assert.are.equal(want, r.result.cardinality, p)
    end
  end)

  it("reports an unknown entity as absent with exit code 4", function()
    local code = S.murmur_run({ "query", "page_views", "no-such-page", "--data", dir .. "/data" })
    assert.are.equal(4, code)
  end)
end)
