-- json_spec.lua: the JSON codec as Lua sees it (murmur.core.json_decode,
-- json_encode, null, array_mt). Runs inside the murmur binary (`murmur test`).

local core = require("murmur.core")
local decode, encode, null, array_mt = core.json_decode, core.json_encode, core.null, core.array_mt

local function array(t)
  return setmetatable(t, array_mt)
end

-- Deep equality that also requires arrays to carry the array metatable.
local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) ~= "table" then
    if a ~= a and b ~= b then return true end -- NaN never occurs, but be exact
    return a == b
  end
  if (getmetatable(a) == array_mt) ~= (getmetatable(b) == array_mt) then return false end
  for k, v in pairs(a) do
    if not same(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

-- Asserts a luv-style failure and returns the message.
local function fails(code, ...)
  local n = select("#", ...)
  local v, msg, c = ...
  assert.are.equal(3, n)
  assert.is_nil(v)
  assert.are.equal(code, c)
  assert.are.equal(code .. ": json: ", msg:sub(1, #code + 8))
  return msg
end

describe("#json json_decode", function()
  it("turns objects into plain tables", function()
    local t = decode('{"entity_id":"p96284","n":12,"ok":true,"no":false}')
    assert.are.equal("p96284", t.entity_id)
    assert.are.equal(12, t.n)
    assert.is_true(t.ok)
    assert.is_false(t.no)
    assert.is_nil(getmetatable(t))
  end)

  it("marks arrays with the shared array metatable", function()
    local t = decode('{"a":[1,"two",[3]],"e":[],"o":{}}')
    assert.are.equal(array_mt, getmetatable(t.a))
    assert.are.equal(array_mt, getmetatable(t.a[3]))
    assert.are.equal(3, #t.a)
    assert.are.equal("two", t.a[2])
    assert.are.equal(array_mt, getmetatable(t.e))
    assert.are.equal(0, #t.e)
    assert.is_nil(getmetatable(t.o))
    assert.is_nil(next(t.o))
  end)

  it("turns null into the sentinel, keeping array slots", function()
    local t = decode('{"x":null,"a":[null,1,null]}')
    assert.are.equal(null, t.x)
    assert.are.equal(3, #t.a)
    assert.are.equal(null, t.a[1])
    assert.are.equal(1, t.a[2])
    assert.are.equal(null, t.a[3])
    assert.are.equal("userdata", type(null))
  end)

  it("decodes any value at the top level", function()
    assert.are.equal(1.5, decode("1.5"))
    assert.are.equal("s", decode(' "s" '))
    assert.are.equal(null, decode("null"))
    assert.is_true(decode("true"))
    assert.is_true(same(array({ 1, 2 }), decode("[1,2]")))
  end)

  it("decodes numbers", function()
    assert.are.equal(0, decode("0"))
    assert.are.equal(-17, decode("-17"))
    assert.are.equal(-2.5e-3, decode("-2.5E-3"))
    assert.are.equal(1e300, decode("1e300"))
    assert.are.equal(0, decode("1e-400"))
    assert.are.equal(9007199254740992, decode("9007199254740992"))
    -- Integers beyond 2^53 that fit int64 decode exactly, as int64 cdata
    -- (documented in json_lua.h), and encode back to the same digits;
    -- beyond int64 they round to the nearest double.
    local big = decode("9007199254740993")
    assert.are.equal("cdata", type(big))
    assert.is_true(big == 9007199254740993LL)
    assert.are.equal("9007199254740993", encode(big))
    assert.is_true(decode("-9223372036854775808") == -9223372036854775807LL - 1)
    assert.are.equal('{"a":[-9007199254740993]}', encode(decode('{"a":[-9007199254740993]}')))
    assert.are.equal(2 ^ 63, decode("9223372036854775808"))
    assert.is_true(1 / decode("-0") < 0)
  end)

  it("decodes escapes, surrogate pairs and raw UTF-8", function()
    assert.are.equal('"\\/\b\f\n\r\t', decode('"\\"\\\\\\/\\b\\f\\n\\r\\t"'))
    assert.are.equal("A\195\169\226\130\172", decode('"\\u0041\\u00e9\\u20AC"'))
    assert.are.equal("\240\159\152\128", decode('"\\ud83d\\ude00"'))
    assert.are.equal("\240\159\152\128", decode('"\240\159\152\128"'))
    assert.are.equal("a\0b", decode('"a\\u0000b"'))
    local t = decode('{"k\\u00e9y":"v"}')
    assert.are.equal("v", t["k\195\169y"])
  end)

  it("returns nil, message, code for malformed JSON", function()
    local bad = {
      "", "   ", "{", '{"a"}', '{"a":}', '{"a":1,}', "[1,]", "[1 2]", "{a:1}",
      '{"a":01}', '{"a":+1}', '{"a":.5}', '{"a":1.}', '{"a":1e}', '{"a":tru}',
      '{"a":NaN}', "{}x", "{}{}", "\239\187\191{}", '{"a":"\n"}', '{"a":"\\x"}',
      '{"a":"\\u12"}', '{"a":"\\ud800"}', '{"a":"\\udc00\\ud800"}', '"abc', "{\0}",
      '{"a":"x\0"}', "/*c*/{}",
    }
    for _, s in ipairs(bad) do
      local msg = fails("EJSON", decode(s))
      assert.is_truthy(msg:match(" at offset %d+$"), msg)
    end
  end)

  it("names the offending byte and its offset", function()
    local _, msg = decode('{"a":1,x}')
    assert.are.equal("EJSON: json: unexpected character 'x' at offset 7", msg)
  end)

  it("reports invalid UTF-8 as EUTF8", function()
    fails("EUTF8", decode('{"a":"\192\175"}')) -- overlong '/'
    fails("EUTF8", decode('{"a":"\237\160\128"}')) -- encoded surrogate
    fails("EUTF8", decode('{"a":"\244\144\128\128"}')) -- above U+10FFFF
    fails("EUTF8", decode('{"a":"\226\130'))
  end)

  it("reports numbers that overflow a double as ERANGE", function()
    local msg = fails("ERANGE", decode('{"a":[1,1e999]}'))
    assert.is_truthy(msg:match("offset 8"), msg)
    fails("ERANGE", decode("-1e400"))
  end)

  it("accepts 64 levels of nesting and rejects 65", function()
    local t = decode(("["):rep(64) .. ("]"):rep(64))
    for _ = 1, 63 do t = t[1] end
    assert.are.equal(array_mt, getmetatable(t))
    local msg = fails("EJSON", decode(("["):rep(65) .. ("]"):rep(65)))
    assert.is_truthy(msg:match("nesting deeper than 64"), msg)
    fails("EJSON", decode(('{"a":'):rep(10000) .. "1" .. ("}"):rep(10000)))
  end)

  it("leaves the stack balanced after an error deep inside a document", function()
    for i = 1, 100 do
      local s = ('{"k":['):rep(i % 60 + 1) .. '"x",1,{"y":null}'
      fails("EJSON", decode(s))
    end
    assert.are.equal(3, select("#", decode("[")))
    assert.are.equal(1, select("#", decode("[1]")))
  end)

  it("raises for a non-string argument", function()
    assert.has_error(function() decode({}) end)
    assert.has_error(function() decode() end)
  end)
end)

describe("#json json_encode", function()
  it("encodes scalars", function()
    assert.are.equal("true", encode(true))
    assert.are.equal("false", encode(false))
    assert.are.equal("null", encode(null))
    assert.are.equal("null", encode(nil))
    assert.are.equal('"hi"', encode("hi"))
  end)

  it("writes integers exactly and other numbers so they read back", function()
    assert.are.equal("0", encode(0))
    assert.are.equal("-0", encode(-0.0))
    assert.are.equal("-42", encode(-42))
    assert.are.equal("9007199254740994", encode(2 ^ 53 + 2))
    assert.are.equal("4611686018427387904", encode(2 ^ 62))
    assert.are.equal("-9223372036854775808", encode(-2 ^ 63))
    for _, x in ipairs({ 0.1, 1 / 3, -2.5e-3, 1e300, 5e-324, 2 ^ 63, 1.7976931348623157e308 }) do
      assert.are.equal(x, decode(encode(x)))
    end
  end)

  it("refuses NaN and infinities", function()
    fails("ERANGE", encode(0 / 0))
    fails("ERANGE", encode(math.huge))
    fails("ERANGE", encode({ a = -math.huge }))
  end)

  it("escapes strings and replaces invalid UTF-8", function()
    assert.are.equal('"a\\"b\\\\c/"', encode('a"b\\c/'))
    assert.are.equal('"\\b\\f\\n\\r\\t\\u0000\\u001f"', encode("\b\f\n\r\t\0\31"))
    assert.are.equal('"\195\169\240\159\152\128"', encode("\195\169\240\159\152\128"))
    assert.are.equal('"a\\ufffdb"', encode("a\255b"))
    assert.are.equal('"\\ufffd"', encode("\226\130"))
  end)

  it("tells arrays from objects", function()
    assert.are.equal("[1,2,3]", encode({ 1, 2, 3 }))
    assert.are.equal("{}", encode({}))
    assert.are.equal("[]", encode(array({})))
    assert.are.equal('[1,null,3]', encode(array({ 1, nil, 3 })))
    assert.are.equal('[null,"x"]', encode({ null, "x" }))
    -- A hole without the marker: not 1..n, so an object.
    assert.are.equal('{"1":1,"3":3}', encode({ [1] = 1, [3] = 3 }))
    assert.are.equal('{"1":1,"2":2,"x":3}', encode({ 1, 2, x = 3 }))
    assert.are.equal('{"0":"z","1":"a"}', encode({ [0] = "z", [1] = "a" }))
    assert.are.equal('{"1.5":true}', encode({ [1.5] = true }))
  end)

  it("sorts object keys for deterministic output", function()
    assert.are.equal('{"a":2,"b":1,"c":{"x":[],"y":null}}',
      encode({ b = 1, a = 2, c = { y = null, x = array({}) } }))
    assert.are.equal('{"":0,"A":1,"a":2,"aa":3,"b":4}',
      encode({ b = 4, aa = 3, a = 2, A = 1, [""] = 0 }))
    local keys = {}
    for i = 1, 200 do keys["k" .. i] = i end
    assert.are.equal(encode(keys), encode(decode(encode(keys))))
  end)

  it("refuses keys that collide once written", function()
    fails("EINVAL", encode({ [1] = 1, ["1"] = 2, x = 0 }))
  end)

  it("refuses values JSON cannot hold", function()
    fails("ETYPE", encode(print))
    fails("ETYPE", encode({ f = function() end }))
    fails("ETYPE", encode(coroutine.create(function() end)))
    fails("ETYPE", encode(io.stdout))
    fails("ETYPE", encode({ [true] = 1 }))
    fails("ETYPE", encode({ [{}] = 1 }))
    fails("EINVAL", encode(array({ x = 1 })))
    fails("EINVAL", encode(array({ [1000] = 1 })))
  end)

  it("refuses cycles and nesting deeper than 64", function()
    local t = { a = {} }
    t.a.back = t
    local msg = fails("EINVAL", encode(t))
    assert.is_truthy(msg:match("contains itself"), msg)
    local deep = {}
    local cur = deep
    for _ = 1, 63 do
      cur[1] = {}
      cur = cur[1]
    end
    assert.are.equal(("["):rep(63) .. "{}" .. ("]"):rep(63), encode(deep))
    cur[1] = {}
    fails("EJSON", encode(deep))
    -- The same table twice side by side is not a cycle.
    local shared = { 1 }
    assert.are.equal('{"a":[1],"b":[1]}', encode({ a = shared, b = shared }))
  end)

  it("raises only for a missing argument", function()
    assert.has_error(function() encode() end)
  end)
end)

describe("#json round trips", function()
  it("keep [] and {} apart", function()
    local s = '{"a":[],"b":{},"c":[[],{}],"d":[{}]}'
    assert.are.equal(s, encode(decode(s)))
  end)

  it("canonicalise documents", function()
    local s = ' { "z" : [ 1 , null , true , "x\\u0041" ] , "a" : { "\\u00e9" : -0.5 } } '
    assert.are.equal('{"a":{"\195\169":-0.5},"z":[1,null,true,"xA"]}', encode(decode(s)))
  end)

  it("hold for random values", function()
    -- A fixed-seed xorshift, independent of math.random's implementation.
    local state = 0x2545F491
    local function rnd(n)
      state = bit.bxor(state, bit.lshift(state, 13))
      state = bit.bxor(state, bit.rshift(state, 17))
      state = bit.bxor(state, bit.lshift(state, 5))
      return (state % n + n) % n
    end
    local pieces = { "a", "Z", " ", '"', "\\", "/", "\n", "\0", "\31", "\127", "\195\169",
      "\226\130\172", "\240\159\152\128", "\239\187\191", "\\u0000" }
    local function gen(depth)
      local k = rnd(depth > 4 and 4 or 7)
      if k == 0 then return rnd(2) == 0 end
      if k == 1 then return (rnd(2000001) - 1000000) * (rnd(2) == 0 and 1 or 1 / 1024) end
      if k == 2 then
        local t = {}
        for i = 1, rnd(12) do t[i] = pieces[rnd(#pieces) + 1] end
        return table.concat(t)
      end
      if k == 3 then return null end
      local t = {}
      if k >= 5 then
        for i = 1, rnd(5) do t[i] = gen(depth + 1) end
        return array(t)
      end
      for _ = 1, rnd(5) do t[pieces[rnd(#pieces) + 1] .. rnd(10)] = gen(depth + 1) end
      return t
    end
    for _ = 1, 500 do
      local v = gen(0)
      local s = assert(encode(v))
      local back = decode(s)
      assert.is_true(same(v, back), s)
      assert.are.equal(s, encode(back))
    end
  end)
end)
