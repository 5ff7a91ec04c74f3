-- LuaRocks: `luarocks make` installs the binary, the Lua modules and the
-- shipped pipelines into a tree, and the installed binary runs a pipeline
-- with modules from that tree, finds the shipped pipelines by name from an
-- empty directory and prints its man page and completions. `make install`
-- installs the same plus murmur(1) and the bash/zsh completions.
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

  it("lists every Lua module of lua/murmur and every shipped pipeline", function()
    local spec = assert(S.read_file("murmur-dev-1.rockspec"))
    local _, out = S.exec("ls lua/murmur")
    for f in out:gmatch("([%w_]+)%.lua") do
      assert.truthy(spec:find(('["murmur.%s"] = "lua/murmur/%s.lua"'):format(f, f), 1, true), f .. " missing")
    end
    _, out = S.exec("ls pipelines")
    local n = 0
    for f in out:gmatch("([%w_]+)%.lua") do
      n = n + 1
      assert.truthy(spec:find(('["murmur.pipelines.%s"] = "pipelines/%s.lua"'):format(f, f), 1, true), f .. " missing")
    end
    assert.is_true(n >= 3)
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
    -- The rock is the release build (tools/release.sh): instrumented, trained
    -- on the shipped pipelines, built again with the profile they wrote.
    assert.truthy(out:find("release: 3 of 3: the build again, optimised by the training's profile", 1, true), out)
    assert.are.equal(0, (S.exec("test -s " .. S.quote(S.root .. "/build/rock/engine/core/pipeline.gcda"))))
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

    -- The shipped pipelines are in the tree and run by name from an empty
    -- directory; the man page and the completions come from the tree too.
    assert.are.equal(0, (S.exec("test -f " .. S.quote(tree .. "/share/lua/5.1/murmur/pipelines/recently_interacted.lua"))))
    local empty = data .. "/empty"
    assert.are.equal(0, (S.exec("mkdir " .. S.quote(empty))))
    local function installed(args)
      return S.exec(("cd %s && env -u MURMUR_LUA_DIR %s %s"):format(S.quote(empty), S.quote(bin), args))
    end
    S.write_file(data .. "/ri.jsonl", '{"entity_id":"p1","event_id":"a"}\n{"entity_id":"p1","event_id":"b"}\n'
      .. '{"entity_id":"p2","event_id":"c"}\n')
    code, out, err = installed(("run --once --data %s --input %s recently_interacted")
      :format(S.quote(data .. "/ri"), S.quote(data .. "/ri.jsonl")))
    assert.are.equal(0, code, err)
    code, out, err = installed(("query recently_interacted global --json --data %s"):format(S.quote(data .. "/ri")))
    assert.are.equal(0, code, err)
    local items = core.json_decode(out).result.items
    assert.are.same({ "p1", 2 }, { items[1].item, items[1].count })
    code, out, err = installed("check recently_interacted.lua")
    assert.are.equal(0, code, err)
    assert.truthy(out:find("share/lua/5.1/murmur/pipelines/recently_interacted.lua:", 1, true), out)
    code, _, err = installed("check nosuch")
    assert.are.equal(3, code)
    assert.truthy(err:find("shipped: page_views, recently_interacted, unique_visitors", 1, true), err)
    code, out, err = installed("help --man")
    assert.are.equal(0, code, err)
    assert.matches("^%.\\\" murmur%(1%)", out)
    assert.truthy(out:find(".SH EXIT STATUS", 1, true))
    code, out, err = installed("completion bash")
    assert.are.equal(0, code, err)
    assert.truthy(out:find("complete -F _murmur murmur", 1, true))
    code, out = installed("completion --list-pipelines")
    assert.are.equal(0, code)
    assert.are.equal("page_views\nrecently_interacted\nunique_visitors\n", out)
  end)

  it("make install puts the pipelines, the man page and the completions under PREFIX", function()
    local dest = data .. "/dest"
    local code, out, err = S.exec(("env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s BUILD=%s DESTDIR=%s PREFIX=/usr/local install")
      :format(S.quote(S.build), S.quote(dest)))
    assert.are.equal(0, code, out .. err)
    local prefix = dest .. "/usr/local"
    for _, f in ipairs({ "bin/murmur", "share/lua/5.1/murmur/cli.lua", "share/lua/5.1/murmur/pipelines/page_views.lua",
      "share/lua/5.1/murmur/pipelines/recently_interacted.lua", "share/man/man1/murmur.1",
      "share/bash-completion/completions/murmur", "share/zsh/site-functions/_murmur" }) do
      assert.are.equal(0, (S.exec("test -f " .. S.quote(prefix .. "/" .. f))), f .. " not installed")
    end
    assert.matches("^#compdef murmur", S.read_file(prefix .. "/share/zsh/site-functions/_murmur"))
    assert.truthy(S.read_file(prefix .. "/share/man/man1/murmur.1"):find(".SH SYNOPSIS", 1, true))
    code, out, err = S.exec(("cd %s && env -u MURMUR_LUA_DIR %s check page_views")
      :format(S.quote(data), S.quote(prefix .. "/bin/murmur")))
    assert.are.equal(0, code, err)
    assert.truthy(out:find("/share/lua/5.1/murmur/pipelines/page_views.lua:", 1, true), out)
  end)
end)
