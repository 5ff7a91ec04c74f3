-- hll_valkey_spec.lua: our HyperLogLog against a real Valkey/Redis server.
--
-- Starts a private redis-server (or valkey-server) on a free 127.0.0.1 port,
-- then checks that elements PFADDed into the server and the same elements
-- added by our monoid (through build/helpers/hll_tool) give the same
-- registers, the same count and the same sparse/dense choice, and that the
-- server accepts our bytes for PFCOUNT, PFMERGE and PFADD.
--
-- Plain Lua 5.1/LuaJIT plus io.popen/os.execute, so it runs under busted and
-- later under `murmur test`. hll_tool is $MURMUR_BUILD/helpers/hll_tool
-- (MURMUR_BUILD defaults to "build"). Without a server binary the whole
-- spec is pending rather than failing.

local S = require("spec.support")
local build = os.getenv("MURMUR_BUILD") or "build"
local tool = build .. "/helpers/hll_tool"

local function shquote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Runs a shell command; returns its stdout and exit status. The status is
-- printed after the output because io.popen's close() reports it only in
-- Lua 5.2+.
local function run(cmd)
  local f = assert(io.popen("{ " .. cmd .. "\n}; echo \"__rc=$?\""))
  local out = f:read("*a")
  f:close()
  local body, rc = out:match("^(.*)__rc=(%d+)\n$")
  return body, tonumber(rc)
end

-- Runs a command that must succeed; returns stdout without the last newline.
local function check(cmd)
  local out, rc = run(cmd)
  if rc ~= 0 then
    error(("command failed (%d): %s\n%s"):format(rc, cmd, out), 2)
  end
  return (out:gsub("\n$", ""))
end

local function which(name)
  local out, rc = run("command -v " .. name .. " 2>/dev/null")
  if rc == 0 and out ~= "" then
    return (out:gsub("\n$", ""))
  end
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function tohex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function fromhex(h)
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

-- "u1" .. "u<n>" prefixed, so distinct tests use distinct elements.
local function elements(prefix, from, to)
  local t = {}
  for i = from, to do
    t[#t + 1] = prefix .. i
  end
  return t
end

local function concat(a, b)
  local t = {}
  for _, e in ipairs(a) do t[#t + 1] = e end
  for _, e in ipairs(b) do t[#t + 1] = e end
  return t
end

local server = which("valkey-server") or which("redis-server")
local cli = which("valkey-cli") or which("redis-cli")

if not server or not cli then
  describe("#hll HyperLogLog against Valkey", function()
    pending("redis-server/valkey-server and its cli are not installed")
  end)
  return
end

describe("#hll HyperLogLog against Valkey", function()
  local tmp, port, pid
  local files = 0

  local function tmpfile(data)
    files = files + 1
    local path = ("%s/f%d"):format(tmp, files)
    write_file(path, data)
    return path
  end

  local function redis(args, stdin)
    local cmd = ("%s -p %d %s"):format(cli, port, args)
    if stdin then
      cmd = cmd .. " < " .. shquote(stdin)
    end
    return check(cmd)
  end

  -- PFADD in batches through redis-cli's stdin mode. Every element is sent
  -- as a double-quoted string of \x escapes so any byte survives.
  local function pfadd(key, elems)
    local lines, batch = {}, {}
    for i, e in ipairs(elems) do
      batch[#batch + 1] = '"' .. e:gsub(".", function(c)
        return ("\\x%02x"):format(c:byte())
      end) .. '"'
      if #batch == 1000 or i == #elems then
        lines[#lines + 1] = "PFADD " .. key .. " " .. table.concat(batch, " ")
        batch = {}
      end
    end
    if #elems == 0 then
      lines[1] = "PFADD " .. key
    end
    local out = redis("", tmpfile(table.concat(lines, "\n") .. "\n"))
    assert.is_nil(out:find("ERR", 1, true), out)
  end

  local function get_hex(key)
    local raw = redis("--raw GET " .. key)
    return tohex(raw)
  end

  local function set_hex(key, hex)
    assert.equal("OK", redis("-x SET " .. key, tmpfile(fromhex(hex))))
  end

  local function encode(elems)
    return check(shquote(tool) .. " encode < " .. shquote(tmpfile(table.concat(elems, "\n") .. "\n")))
  end

  local function registers(hex)
    return check(shquote(tool) .. " registers " .. hex)
  end

  local function count(hex)
    return check(shquote(tool) .. " count " .. hex)
  end

  local function merge(a, b)
    return check(shquote(tool) .. " merge " .. a .. " " .. b)
  end

  -- Byte 4 of the header: "00" dense, "01" sparse.
  local function encoding(hex)
    return hex:sub(9, 10)
  end

  -- Starts the server on a random port and waits until it answers as
  -- itself (INFO shows our pid), retrying other ports if the bind fails.
  local function start_server()
    for _ = 1, 10 do
      port = S.random_port()
      pid = tonumber(check(("%s --port %d --bind 127.0.0.1 --save '' --appendonly no "
        .. "--daemonize no --dir %s > %s/redis.log 2>&1 & echo $!"):format(
        shquote(server), port, shquote(tmp), shquote(tmp))))
      for _ = 1, 100 do
        local info = run(("%s -p %d INFO server 2>/dev/null"):format(cli, port))
        if info:find("process_id:" .. pid, 1, true) then
          return
        end
        if select(2, run("kill -0 " .. pid .. " 2>/dev/null")) ~= 0 then
          break
        end
        run("sleep 0.05")
      end
      run("kill " .. pid .. " 2>/dev/null")
      pid = nil
    end
    error("could not start " .. server)
  end

  setup(function()
    local f = io.open(tool, "rb")
    assert(f, tool .. " not found: build it first (MURMUR_BUILD=" .. build .. ")")
    f:close()
    tmp = check("mktemp -d")
    start_server()
  end)

  teardown(function()
    if pid then
      run("kill " .. pid .. " 2>/dev/null")
      -- Wait for it to exit so the port and files are released.
      for _ = 1, 100 do
        if select(2, run("kill -0 " .. pid .. " 2>/dev/null")) ~= 0 then
          break
        end
        run("sleep 0.05")
      end
      run("kill -9 " .. pid .. " 2>/dev/null")
    end
    if tmp and tmp:match("^/tmp/") then
      run("rm -rf " .. shquote(tmp))
    end
  end)

  for _, n in ipairs({ 10, 5000, 200000 }) do
    it(("PFADD of %d elements gives our registers, count and encoding"):format(n), function()
      local key = "pfadd:" .. n
      local elems = elements("u", 1, n)
      pfadd(key, elems)
      local ours, theirs = encode(elems), get_hex(key)
      assert.equal(registers(theirs), registers(ours))
      assert.equal(redis("PFCOUNT " .. key), count(ours))
      assert.equal(encoding(theirs), encoding(ours))
      if encoding(ours) == "00" then
        -- Dense bytes are fully determined by the registers; once PFCOUNT
        -- has cached the count, the server's string equals ours exactly.
        assert.equal(get_hex(key), ours)
      end
    end)
  end

  it("hashes every tail length and arbitrary bytes alike", function()
    local elems = { "" }
    for len = 1, 40 do
      elems[#elems + 1] = ("abcdefghijklmnopqrstuvwxyz0123456789ABCD"):sub(1, len)
    end
    for b = 0, 255 do
      if b ~= 10 then
        elems[#elems + 1] = "byte" .. string.char(b)
      end
    end
    elems[#elems + 1] = "h\195\169llo w\195\182rld"
    pfadd("bytes", elems)
    local ours = encode(elems)
    assert.equal(registers(get_hex("bytes")), registers(ours))
    assert.equal(redis("PFCOUNT bytes"), count(ours))
  end)

  it("promotes sparse to dense at the same element as the server", function()
    -- With these elements the sparse form reaches exactly 3000 bytes at
    -- 1688 elements and would pass it at 1689.
    for _, n in ipairs({ 1688, 1689 }) do
      local key = "boundary:" .. n
      local elems = elements("u", 1, n)
      pfadd(key, elems)
      local ours, theirs = encode(elems), get_hex(key)
      assert.equal(n == 1688 and "01" or "00", encoding(ours))
      assert.equal(encoding(theirs), encoding(ours))
      assert.equal(registers(theirs), registers(ours))
    end
  end)

  -- a and b overlap; sizes choose sparse or dense for each.
  for _, case in ipairs({
    { "sparse", 300, "sparse", 500 },
    { "sparse", 300, "dense", 20000 },
    { "dense", 8000, "dense", 30000 },
  }) do
    local kind_a, na, kind_b, nb = case[1], case[2], case[3], case[4]
    it(("accepts our %s and %s bytes for PFCOUNT, PFMERGE and PFADD"):format(kind_a, kind_b), function()
      local half = math.floor(na / 2)
      local ea, eb = elements("m", 1, na), elements("m", half, half + nb - 1)
      local a, b = encode(ea), encode(eb)
      assert.equal(kind_a == "sparse" and "01" or "00", encoding(a))
      assert.equal(kind_b == "sparse" and "01" or "00", encoding(b))
      local ka, kb, km = "ours:a:" .. na, "ours:b:" .. nb, "ours:m:" .. na .. ":" .. nb
      set_hex(ka, a)
      set_hex(kb, b)

      -- PFCOUNT of one key returns the cached count we wrote; PFCOUNT of
      -- the key twice merges registers and recounts, proving the cache.
      assert.equal(count(a), redis("PFCOUNT " .. ka))
      assert.equal(count(a), redis(("PFCOUNT %s %s"):format(ka, ka)))
      assert.equal(count(b), redis(("PFCOUNT %s %s"):format(kb, kb)))

      local m = merge(a, b)
      assert.equal(registers(encode(concat(ea, eb))), registers(m))
      assert.equal("OK", redis(("PFMERGE %s %s %s"):format(km, ka, kb)))
      assert.equal(registers(m), registers(get_hex(km)))
      assert.equal(count(m), redis("PFCOUNT " .. km))
      assert.equal(count(m), redis(("PFCOUNT %s %s"):format(ka, kb)))

      -- The server can keep adding to our string.
      local extra = elements("x", 1, 100)
      pfadd(ka, extra)
      local grown = get_hex(ka)
      assert.equal(registers(encode(concat(ea, extra))), registers(grown))
      assert.equal(count(grown), redis("PFCOUNT " .. ka))
    end)
  end

  it("reports a corrupt string the same way the server rejects it", function()
    -- A sparse string whose opcodes cover 16383 registers.
    local bad = "48594c4c0100000000000000000000807ffe"
    set_hex("bad", bad)
    local out = run(("%s -p %d PFCOUNT bad 2>&1"):format(cli, port))
    assert.truthy(out:find("INVALIDOBJ", 1, true) or out:find("WRONGTYPE", 1, true), out)
    local _, rc = run(shquote(tool) .. " count " .. bad .. " 2>/dev/null")
    assert.are_not.equal(0, rc)
  end)
end)
