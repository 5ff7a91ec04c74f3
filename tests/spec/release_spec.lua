-- release_spec.lua (#release): tools/release.sh, the build behind make
-- release, the LuaRocks install and make lambda. rockspec_spec.lua (#rock)
-- builds the rock through its profile-guided path and runs it; here, the
-- two ways it ends without a profile, each into a directory of its own:
-- RELEASE_PGO=0, and a training run that fails. Both make an unsanitized
-- build, so make check skips this file as it skips #rock (the Makefile).
local S = require("spec.support")

-- Whether the binary carries libgcov (an instrumented build defines
-- __gcov_dump; the others only refer to it, weakly, in main.c's end_run).
local function instrumented(bin)
  local code, out = S.exec("nm " .. S.quote(bin))
  assert(code == 0, "nm " .. bin .. " failed")
  return out:find(" T __gcov_dump\n", 1, true) ~= nil
end

local function gcda_count(dir)
  local _, out = S.exec(("find %s -name '*.gcda' | wc -l"):format(S.quote(dir)))
  return tonumber(out)
end

describe("#release tools/release.sh", function()
  local dir

  before_each(function()
    dir = S.tmpdir()
  end)

  after_each(function()
    S.rm_rf(dir)
  end)

  local function release(env, sub)
    local out_dir = dir .. "/" .. sub
    -- Unsanitized whatever the caller's make carries (make check's
    -- SANITIZE=...); two jobs, as make -j2 would give it.
    local code, out, err = S.exec(("cd %s && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL %s MAKE='make -j2' sh tools/release.sh %s")
      :format(S.quote(S.root), env, S.quote(out_dir)))
    return code, out, err, out_dir .. "/murmur"
  end

  it("with RELEASE_PGO=0 builds plain -O2 without an instrumented step, and the binary runs", function()
    local code, out, err, bin = release("RELEASE_PGO=0", "plain")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("release: RELEASE_PGO=0: a plain -O2 build in ", 1, true), out)
    assert.is_nil(out:find("1 of 3", 1, true), out)
    assert.is_nil(out:find("-fprofile-", 1, true), out)
    assert.are.equal(0, gcda_count(dir .. "/plain"))
    assert.is_false(instrumented(bin))
    local vcode, vout = S.exec(S.quote(bin) .. " version")
    assert.are.equal(0, vcode)
    assert.matches("^murmur ", vout)
  end)

  it("falls back to the plain build when the training fails, saying why", function()
    -- An operator's mistake the instrumented murmur refuses at start-up.
    local code, out, err, bin = release("MURMUR_UMASK=9", "fallback")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("release: 1 of 3: an instrumented build in ", 1, true), out)
    assert.truthy(out:find("release: 2 of 3: training it", 1, true), out)
    assert.truthy(err:find("MURMUR_UMASK=9 is not an octal umask", 1, true), err)
    assert.truthy(err:find("release: the training run failed (above); building " .. dir
      .. "/fallback/murmur without a profile (plain -O2). RELEASE_PGO=0 skips the training.", 1, true), err)
    assert.is_nil(out:find("3 of 3", 1, true), out)
    assert.are.equal(0, gcda_count(dir .. "/fallback"))
    assert.is_false(instrumented(bin))
    assert.are.equal(0, (S.exec(S.quote(bin) .. " version")))
  end)

  it("refuses a training size that is not a number, before building anything", function()
    local code, out, err = release("RELEASE_PGO_EVENTS=lots", "refused")
    assert.are.equal(2, code, out .. err)
    assert.truthy(err:find("release: RELEASE_PGO_EVENTS=lots is not a number of events (default 300000)", 1, true), err)
    assert.are.equal(1, (S.exec("test -e " .. S.quote(dir .. "/refused"))))
  end)
end)
