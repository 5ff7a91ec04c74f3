-- LuaRocks: `luarocks make` installs the binary and the Lua modules into a
-- tree, and the installed binary runs a pipeline with modules from that tree.
local S = require("spec.support")
local core = require("murmur.core")

describe("#rock luarocks make", function()
  local tree, data

  setup(function()
    tree = S.tmpdir()
    data = S.tmpdir()
  end)
  teardown(function()
    S.rm_rf(tree)
    S.rm_rf(data)
  end)

  it("lists every Lua module of lua/murmur", function()
    local spec = assert(S.read_file("murmur-dev-1.rockspec"))
    local _, out = S.exec("ls lua/murmur")
    for f in out:gmatch("([%w_]+)%.lua") do
      assert.truthy(spec:find(('["murmur.%s"] = "lua/murmur/%s.lua"'):format(f, f), 1, true), f .. " missing")
    end
  end)

  it("installs murmur into a tree and the installed binary runs a pipeline", function()
    if S.exec("command -v luarocks >/dev/null") ~= 0 then
      pending("luarocks is not installed")
      return
    end
    -- A clean, unsanitized build: under `make check` the environment carries
    -- MAKEFLAGS (SANITIZE=...), which the rock's own make must not inherit.
    S.rm_rf(S.root .. "/build/rock")
    local code, out, err = S.exec(("env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL luarocks --lua-version=5.1 make --tree %s murmur-dev-1.rockspec")
      :format(S.quote(tree)))
    assert.are.equal(0, code, out .. err)
    local bin = tree .. "/bin/murmur"
    assert.are.equal(0, (S.exec("test -x " .. S.quote(bin))))
    assert.are.equal(0, (S.exec("test -f " .. S.quote(tree .. "/share/lua/5.1/murmur/dsl.lua"))))
    local input = data .. "/in.jsonl"
    S.write_file(input, '{"page_id":"a"}\n{"page_id":"a"}\n{"page_id":"b"}\n')
    -- Run from another directory with no MURMUR_LUA_DIR, so the modules must
    -- come from the tree.
    local root = S.root
    code, out, err = S.exec(("cd / && env -u MURMUR_LUA_DIR %s run --once --data %s --input %s %s/pipelines/page_views.lua")
      :format(S.quote(bin), S.quote(data .. "/d"), S.quote(input), S.quote(root)))
    assert.are.equal(0, code, err)
    code, out, err = S.exec(("cd / && env -u MURMUR_LUA_DIR %s query page_views a --json --data %s")
      :format(S.quote(bin), S.quote(data .. "/d")))
    assert.are.equal(0, code, err)
    assert.are.equal(2, core.json_decode(out).result.value)
    code, out = S.exec(("cd / && env -u MURMUR_LUA_DIR %s version"):format(S.quote(bin)))
    assert.are.equal(0, code)
    assert.matches("^murmur ", out)
  end)
end)
