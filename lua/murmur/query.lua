-- murmur.query: reads aggregates back from one or more stores.
--
-- A query names a pipeline (directly, or through the script that defines it)
-- and an entity. The pipeline's monoid and window come from the descriptor the
-- runner saved in the store, so a query needs no script. Windowed queries
-- fetch every bucket of the requested range with one get_many per store and
-- merge them with the monoid; several data directories (one per worker) are
-- merged the same way.
local core = require("murmur.core")

local M = {}

local EXIT_SCRIPT, EXIT_NOTFOUND, EXIT_USAGE = 3, 4, 2
local MAX_BUCKETS = 100000

local function parse_when(s)
  if s:match("^%d%d%d%d%-%d%d%-%d%d$") then s = s .. "T00:00:00Z" end
  return core.parse_time(s)
end

-- Returns the pipeline name and, for a script, the murmur.store{} it names.
local function resolve_name(target, opts)
  if not (target:match("%.lua$") or target:find("/", 1, true)) then return target end
  -- Loaded like `run` loads it: validated first in a child under limits.
  local specs, err = require("murmur.isolate").load_all({ target })
  if not specs then return nil, err, EXIT_SCRIPT end
  local c = { pipelines = specs, by_name = {} }
  for _, spec in ipairs(specs) do c.by_name[spec.name] = spec end
  if opts.pipeline then
    if not c.by_name[opts.pipeline] then
      return nil, ("%s defines no pipeline '%s'"):format(target, opts.pipeline), EXIT_NOTFOUND
    end
    return opts.pipeline, nil, nil, c.by_name[opts.pipeline].store
  end
  if #c.pipelines > 1 then
    local names = {}
    for _, p in ipairs(c.pipelines) do names[#names + 1] = p.name end
    return nil, ("%s defines several pipelines (%s): choose one with --pipeline"):format(target,
      table.concat(names, ", ")), EXIT_USAGE
  end
  return c.pipelines[1].name, nil, nil, c.pipelines[1].store
end

local function fmt_days(ms)
  if ms % 86400000 == 0 then return ("%dd"):format(ms / 86400000) end
  if ms % 3600000 == 0 then return ("%dh"):format(ms / 3600000) end
  return ("%dms"):format(ms)
end

local function buckets_for(meta, opts)
  local gran, ret = meta.granularity_ms, meta.retention_ms
  if gran == 0 then return { 0 }, nil end
  local now = core.now_ms()
  if opts.at then
    local err
    now, err = parse_when(opts.at)
    if not now then return nil, "--at: " .. err end
  end
  local lo, hi
  if opts.window then
    local d, err = core.parse_duration(opts.window)
    if not d then return nil, "--window: " .. err end
    hi = core.bucket(gran, now)
    lo = hi - math.max(1, math.ceil(d / gran)) + 1
  elseif opts.from or opts.to then
    if not (opts.from and opts.to) then return nil, "--from and --to go together" end
    local f, ferr = parse_when(opts.from)
    if not f then return nil, "--from: " .. ferr end
    local t, terr = parse_when(opts.to)
    if not t then return nil, "--to: " .. terr end
    if f > t then
      return nil, ("--from %s is after --to %s: give the earlier time first"):format(opts.from, opts.to)
    end
    lo, hi = core.bucket(gran, f), core.bucket(gran, t)
  else
    if ret == 0 then return nil, "this pipeline keeps every bucket: give --window or --from/--to" end
    hi = core.bucket(gran, now)
    lo = core.oldest_kept(gran, ret, now)
  end
  if ret > 0 then
    local oldest = core.oldest_kept(gran, ret, now)
    if hi < oldest then
      return nil, ("the range ends before %s, the oldest time this pipeline keeps (retention %s): nothing there to read")
        :format(core.format_time(core.bucket_start(gran, oldest)), fmt_days(ret))
    end
    lo = math.max(lo, oldest)
  end
  lo = math.max(lo, 1)
  if hi - lo + 1 > MAX_BUCKETS then return nil, ("the range spans more than %d buckets"):format(MAX_BUCKETS) end
  local list = {}
  for b = lo, hi do list[#list + 1] = b end
  return list, { from = core.format_time(core.bucket_start(gran, lo)),
                 to = core.format_time(core.bucket_start(gran, hi + 1) - 1), buckets = #list }
end

-- Returns a result table, or nil, message, exit code.
function M.run(target, entity, opts)
  local name, err, code, script_store = resolve_name(target, opts)
  if not name then return nil, err, code end
  -- The store: lmdb under each --data directory, or one shared store
  -- (dynamodb) configured like `murmur run` does (script, then environment).
  local kind = opts.store or os.getenv("MURMUR_STORE") or (script_store and script_store.type) or "lmdb"
  local dirs = kind == "lmdb" and (opts.data or { require("murmur.runner").data_dir({}) }) or { kind }
  local stores, meta, buckets = {}, nil, nil
  -- --stats: the reads' instrumentation under the contract's names, summed
  -- over the stores: <pipeline>:store_get for one bucket, :store_get_many
  -- for a window, and the cache's cache_* commands.
  local instr = opts.stats and {} or nil
  local function add_stats(s)
    local st = s:stats()
    for op, v in pairs(st) do
      if op == "get_many" then
        op = ("%s:store_%s"):format(name, buckets and #buckets == 1 and "get" or "get_many")
      end
      local acc = instr[op] or { ops = 0, errors = 0, ms_total = 0, ms_max = 0 }
      acc.ops, acc.errors, acc.ms_total = acc.ops + v.ops, acc.errors + v.errors, acc.ms_total + v.ms_total
      acc.ms_max = math.max(acc.ms_max, v.ms_max)
      instr[op] = acc
    end
  end
  local function close_all()
    for _, s in ipairs(stores) do
      if instr then add_stats(s) end
      s:close()
    end
  end
  for _, dir in ipairs(dirs) do
    local skind, sopts = "lmdb", { path = dir .. "/store" }
    if kind ~= "lmdb" then
      skind, sopts = kind, script_store and script_store.type == kind and script_store.options or {}
    end
    -- With a cache (--cache or MURMUR_VALKEY_URL), reads go through Valkey
    -- first; its entries belong to one store, so not when merging several.
    if #dirs == 1 then skind, sopts = require("murmur.runner").cache_wrap(skind, sopts, opts.cache) end
    local st, serr = core.store_open(skind, sopts, true)
    if not st then
      close_all()
      if kind == "lmdb" and serr:find("ENOTFOUND", 1, true) then
        return nil, ("%s: %s\n(no store there yet: run `murmur run --data %s ...` first, or point --data at the directory it used)")
          :format(dir, serr, dir), EXIT_NOTFOUND
      end
      return nil, ("%s: %s"):format(dir, serr), 1
    end
    stores[#stores + 1] = st
    local raw = st:meta(name)
    if raw then
      local m = core.json_decode(raw:match("\n(.*)$") or "{}")
      if meta and m and core.json_encode(m.monoid) ~= core.json_encode(meta.monoid) then
        close_all()
        return nil, ("pipeline '%s' has different monoids in different data directories"):format(name), EXIT_SCRIPT
      end
      meta = meta or m
    end
  end
  if not meta then
    close_all()
    return nil, ("no pipeline '%s' in %s"):format(name, table.concat(dirs, ", ")), EXIT_NOTFOUND
  end
  local window
  buckets, window = buckets_for(meta, opts)
  if not buckets then close_all() return nil, window, EXIT_USAGE end
  -- An HLL window the cache holds entirely is one PFCOUNT over its buckets.
  if meta.monoid.name == "hll" and #stores == 1 then
    local card, nonempty = stores[1]:count(name, meta.monoid, entity, buckets)
    if card then
      close_all()
      return { pipeline = name, entity = entity, monoid = "hll", window = window,
        found = nonempty > 0, buckets_found = nonempty, result = { cardinality = card },
        instrumentation = instr }
    end
  end
  local acc = assert(core.state(meta.monoid))
  local found = 0
  for _, st in ipairs(stores) do
    local bytes, n = st:get(name, meta.monoid, entity, buckets)
    if bytes == nil and n ~= nil and type(n) == "string" then close_all() return nil, n, 1 end
    if bytes then
      found = found + n
      local part, perr = core.state(meta.monoid, bytes)
      if not part then close_all() return nil, perr, 1 end
      assert(acc:merge(part))
    end
  end
  close_all()
  return {
    pipeline = name, entity = entity, monoid = meta.monoid.name, window = window,
    found = found > 0, buckets_found = found, result = core.json_decode(assert(acc:json())),
    instrumentation = instr,
  }
end

local function fmt_num(v)
  -- Integers beyond +-2^53 (int64 sums, counts, min/max, Top-K counts) come
  -- out of json_decode as int64 cdata: printed with every digit.
  if type(v) == "cdata" then return (tostring(v):gsub("U?LL$", "")) end
  if type(v) ~= "number" then return tostring(v) end
  if v == math.floor(v) and math.abs(v) < 2^53 then return ("%d"):format(v) end
  return ("%.6g"):format(v)
end

-- Human-readable text for a result.
function M.format(r, top)
  local out = {}
  local function line(...) out[#out + 1] = table.concat({ ... }) end
  local w = r.window and ("%s .. %s (%d buckets)"):format(r.window.from, r.window.to, r.window.buckets) or "all-time"
  line(r.pipeline, "  ", r.entity, "  ", r.monoid, "  ", w)
  if not r.found then
    line("(no data)")
    return table.concat(out, "\n") .. "\n"
  end
  local res = r.result
  if r.monoid == "topk" then
    line(("n=%s  k=%s  error bound=%s"):format(fmt_num(res.n), fmt_num(res.k), fmt_num(res.error)))
    line(("%-5s %-32s %12s %12s %12s"):format("rank", "item", "count", "lower", "upper"))
    for i, it in ipairs(res.items or {}) do
      if top and i > top then break end
      line(("%-5d %-32s %12s %12s %12s"):format(i, it.item, fmt_num(it.count), fmt_num(it.lower), fmt_num(it.upper)))
    end
  elseif r.monoid == "hll" then
    line("cardinality ", fmt_num(res.cardinality))
  elseif r.monoid == "set" then
    line(("size %s%s"):format(fmt_num(res.size), res.truncated and " (truncated)" or ""))
    for _, m in ipairs(res.members or {}) do line("  ", m) end
  elseif r.monoid == "bloom" then
    line(("bits %s  hashes %s  approx count %s"):format(fmt_num(res.bits), fmt_num(res.hashes), fmt_num(res.approx_count)))
  else
    line("value ", res.value == core.null and "null" or fmt_num(res.value),
      res.time and ("  at " .. res.time) or "")
  end
  return table.concat(out, "\n") .. "\n"
end

return M
