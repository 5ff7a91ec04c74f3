-- `murmur completion bash|zsh` and `murmur help --man`, both generated from
-- murmur.help: the bash script really completes (run in bash), the zsh one
-- parses, and the man page renders without warnings and names every option.
local S = require("spec.support")
local HELP = require("murmur.help")

-- The options each command's help text shows, found here independently of
-- murmur.helpdoc: every --flag or -X that starts an indented line or sits in
-- the usage line's brackets.
local function help_flags(text)
  local flags = {}
  for line in text:gmatch("[^\n]+") do
    local lead = line:match("^%s+(%-%-?%a[%w-]*)")
    if lead then flags[lead] = true end
  end
  local usage = text:match("^usage: ([^\n]*)") or ""
  for f in usage:gmatch("%[(%-%-%a[%w-]*)") do flags[f] = true end
  return flags
end

local function commands()
  local list = {}
  for name in HELP.main:gmatch("\n  (%a[%w-]*)") do
    if HELP[name] then list[#list + 1] = name end
  end
  return list
end

describe("#completion murmur completion", function()
  local dir, script

  setup(function()
    dir = S.tmpdir()
    script = dir .. "/murmur.bash"
    local code, out, err = S.murmur_run({ "completion", "bash" })
    assert.are.equal(0, code, err)
    S.write_file(script, out)
    S.write_file(dir .. "/mine.lua", "-- a pipeline script\n")
    S.write_file(dir .. "/notes.txt", "")
  end)
  teardown(function() S.rm_rf(dir) end)

  -- Completes the words (the last one being completed) in bash, from dir;
  -- returns COMPREPLY as a set and a list.
  local function complete(...)
    local words = { S.murmur, ... }
    local quoted = {}
    for i, w in ipairs(words) do quoted[i] = S.quote(w) end
    local code, out, err = S.exec(("cd %s && bash --norc --noprofile -c %s"):format(S.quote(dir), S.quote(
      ("source %s; COMP_WORDS=(%s); COMP_CWORD=%d; _murmur; printf '%%s\\n' \"${COMPREPLY[@]}\"")
        :format(S.quote(script), table.concat(quoted, " "), #words - 1))))
    assert.are.equal(0, code, err)
    assert.are.equal("", err)
    local set, list = {}, {}
    for l in out:gmatch("[^\n]+") do set[l] = true list[#list + 1] = l end
    return set, list
  end

  it("completes commands, options, option values and pipeline names in bash", function()
    assert.are.same({ "query" }, select(2, complete("q")))
    assert.are.same({ "--once" }, select(2, complete("run", "--o")))
    local got = complete("")
    for _, c in ipairs(commands()) do assert.is_true(got[c], c) end
    assert.are.same({ "lmdb", "dynamodb", "memory" }, select(2, complete("run", "--store", "")))
    assert.are.same({ "error", "warn", "info", "debug" }, select(2, complete("run", "--log-level", "")))
    assert.are.same({ "bash", "zsh" }, select(2, complete("completion", "")))
    -- SCRIPT: shipped pipelines and *.lua files, also after options and
    -- their values; not other files.
    assert.are.same({ "recently_interacted" }, select(2, complete("run", "--data", "d", "--once", "rec")))
    got = complete("run", "")
    assert.is_true(got["page_views"] and got["unique_visitors"] and got["mine.lua"])
    assert.is_nil(got["notes.txt"])
    assert.are.same({ "mine.lua" }, select(2, complete("check", "x.lua", "mi")))
    -- query TARGET ENTITY: the entity is not completed.
    assert.are.same({}, select(2, complete("query", "page_views", "")))
    assert.are.same({ "create-table", "claim", "confirm" }, select(2, complete("ddb", "c")))
    assert.are.same({ "run", "reload" }, select(2, complete("help", "r")))
  end)

  it("completes every option of every command's help text in bash", function()
    for _, c in ipairs(commands()) do
      local got = complete(c, "-")
      for flag in pairs(help_flags(HELP[c])) do
        assert.is_true(got[flag], ("murmur %s %s not completed"):format(c, flag))
      end
      assert.is_true(got["--help"], c .. " --help")
    end
  end)

  it("prints a zsh script that zsh accepts", function()
    local code, out, err = S.murmur_run({ "completion", "zsh" })
    assert.are.equal(0, code, err)
    assert.matches("^#compdef murmur\n", out)
    assert.truthy(out:find("--once", 1, true))
    if S.exec("command -v zsh >/dev/null") ~= 0 then
      pending("zsh is not installed (make deps installs it): syntax not checked")
      return
    end
    S.write_file(dir .. "/_murmur", out)
    local zcode, _, zerr = S.exec("zsh -n " .. S.quote(dir .. "/_murmur"))
    assert.are.equal(0, zcode, zerr)
    assert.are.equal("", zerr)
  end)

  it("lists the shipped pipelines; refuses other shells (exit 2)", function()
    local code, out = S.murmur_run({ "completion", "--list-pipelines" })
    assert.are.equal(0, code)
    assert.are.equal("page_views\nrecently_interacted\nunique_visitors\n", out)
    local err
    code, _, err = S.murmur_run({ "completion", "fish" })
    assert.are.equal(2, code)
    assert.matches("unknown shell 'fish' (expected bash or zsh)", err, 1, true)
    code = S.murmur_run({ "completion" })
    assert.are.equal(2, code)
    code, out = S.murmur_run({ "help", "completion" })
    assert.are.equal(0, code)
    assert.are.equal(HELP.completion, out)
  end)
end)

describe("#man murmur help --man", function()
  local dir, page

  setup(function()
    dir = S.tmpdir()
    local code, out, err = S.murmur_run({ "help", "--man" })
    assert.are.equal(0, code, err)
    page = dir .. "/murmur.1"
    S.write_file(page, out)
  end)
  teardown(function() S.rm_rf(dir) end)

  it("renders without warnings and has the sections of a man page", function()
    if S.exec("command -v groff >/dev/null") ~= 0 then
      pending("groff is not installed (make deps installs groff-base)")
      return
    end
    local code, _, err = S.exec("groff -man -Tutf8 -ww -z " .. S.quote(page))
    assert.are.equal(0, code, err)
    assert.are.equal("", err)
    local text
    code, text, err = S.exec("groff -man -Tascii -P-c -P-b -P-u " .. S.quote(page))
    assert.are.equal(0, code, err)
    for _, section in ipairs({ "NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS", "ENVIRONMENT", "FILES" }) do
      assert.truthy(text:find("\n" .. section .. "\n", 1, true), section)
    end
    assert.truthy(text:find("MURMUR_DATA", 1, true))
    assert.truthy(text:find("recently_interacted", 1, true))
    if S.exec("command -v man >/dev/null") == 0 then
      local mcode, mout, merr = S.exec("MANPAGER=cat MANWIDTH=80 man --warnings -l - < " .. S.quote(page))
      assert.are.equal(0, mcode, merr)
      assert.are.equal("", merr)
      assert.truthy(mout:find("murmur completion bash|zsh", 1, true))
    end
  end)

  it("has a section for every command with each of its options", function()
    if S.exec("command -v groff >/dev/null") ~= 0 then
      pending("groff is not installed (make deps installs groff-base)")
      return
    end
    local _, text = S.exec("groff -man -Tascii -P-c -P-b -P-u " .. S.quote(page))
    -- One section per command: its usage line as the heading, then its options.
    for _, c in ipairs(commands()) do
      local usage = HELP[c]:match("^usage: ([^\n]*)")
      local at = text:find("\n   " .. usage .. "\n", 1, true)
      assert.truthy(at, "no section for " .. usage)
      local section = text:sub(at + 1):match("^(.-)\n   murmur ") or text:sub(at + 1)
      for flag in pairs(help_flags(HELP[c])) do
        assert.truthy(section:find(flag, 1, true), ("%s: %s missing"):format(c, flag))
      end
    end
  end)
end)
