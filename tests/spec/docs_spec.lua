-- docs_spec.lua (#docs): the documentation is tested, so it cannot go stale.
--
-- Every fenced shell block of README.md and doc/*.md carries a marker on the
-- line before it:
--   <!-- doc-test: run -->           the block runs here, as written, in a
--                                    fresh directory laid out like a clone
--   <!-- doc-test: skip REASON -->   it needs what a test cannot have (a real
--                                    Kafka cluster, AWS); REASON says what
-- An unmarked shell block fails the spec. In every block, run or not, each
-- murmur command line is checked against the help text the binary prints:
-- the command exists and every --option it uses is one that command takes.
-- Lua blocks marked <!-- doc-test: check --> must pass `murmur check`; the
-- marker may add check's own options, e.g. <!-- doc-test: check --allow
-- net:kafka1:9092 --> for a block that needs the operator's grant.
--
-- Running a block: `build/murmur` and `murmur` are the binary under test,
-- `pipelines/` and `tests/` are the checkout's, `events.jsonl` holds sample
-- events (with the entities the docs query: `global`, `home`), `app.log`
-- exists. A line whose comment says it "runs until SIGINT" runs with
-- events.jsonl on stdin until two seconds after it is up (its status.json
-- exists) and is then stopped with SIGINT, which must end it with status 0. The emulator ports the docs use (8000 for
-- dynalite, 6379 for Valkey) are replaced by free ones, and a Valkey server
-- is started on the latter. `make` lines are what .ci/run itself runs: only
-- their targets are checked here.
local S = require("spec.support")
local HELP = require("murmur.help")

local DOCS = { "README.md" }
do
  local _, out = S.exec("ls " .. S.quote(S.root) .. "/doc/*.md")
  for p in out:gmatch("[^\n]+") do DOCS[#DOCS + 1] = p:sub(#S.root + 2) end
end

-- The fenced blocks of a Markdown file: { lang, marker, first_line, lines }.
local function blocks_of(path)
  local out, cur, prev = {}, nil, nil
  local n = 0
  for line in io.lines(S.root .. "/" .. path) do
    n = n + 1
    if cur then
      if line:match("^```%s*$") then
        out[#out + 1] = cur
        cur = nil
      else
        cur.lines[#cur.lines + 1] = line
      end
    else
      local lang = line:match("^```(%w*)%s*$")
      if lang then
        cur = { lang = lang, marker = prev and prev:match("^<!%-%- doc%-test: (.-) %-%->$"), line = n, lines = {},
          where = path .. ":" .. n }
      end
      prev = line
    end
  end
  return out
end

-- Logical lines of a shell block (backslash continuations joined).
local function logical_lines(lines)
  local out, acc = {}, nil
  for _, l in ipairs(lines) do
    local cont = l:match("^(.-)\\%s*$")
    acc = acc and (acc .. " " .. (cont or l)) or (cont or l)
    if not cont then
      out[#out + 1] = acc
      acc = nil
    end
  end
  if acc then out[#out + 1] = acc end
  return out
end

-- Checks every murmur invocation of a logical line against the help text.
-- Returns a list of problems.
local function check_line(line, where)
  local problems = {}
  local code = line:gsub("%s#.*$", "")
  local tokens = {}
  for t in code:gmatch("%S+") do tokens[#tokens + 1] = t end
  local i = 1
  while i <= #tokens do
    local t = tokens[i]
    local prev = tokens[i - 1]
    local starts = prev == nil or prev == "|" or prev == "&&" or prev == ";" or prev:match("^[%u_]+=")
    if starts and (t == "murmur" or t:match("/murmur$")) then
      local cmd = tokens[i + 1]
      local help = cmd and HELP[cmd]
      if not help then
        problems[#problems + 1] = ("%s: `%s`: murmur has no command '%s'"):format(where, line, tostring(cmd))
      else
        local j = i + 2
        if cmd == "ddb" then
          local sub = tokens[j]
          if not (sub and help:find("\n  " .. sub .. " ", 1, true)) then
            problems[#problems + 1] = ("%s: `%s`: murmur ddb has no command '%s'"):format(where, line, tostring(sub))
          end
          j = j + 1
        end
        while j <= #tokens and tokens[j] ~= "|" and tokens[j] ~= "&&" and tokens[j] ~= ";" do
          local opt = tokens[j]:match("^(%-%-[%w-]+)")
          if opt and opt ~= "--help" and not help:find(opt:gsub("%p", "%%%0") .. "[^%w-]") then
            problems[#problems + 1] = ("%s: `%s`: murmur %s takes no option %s"):format(where, line, cmd, opt)
          end
          if tokens[j] == "-X" and cmd ~= "run" then
            problems[#problems + 1] = ("%s: `%s`: -X is an option of murmur run only"):format(where, line)
          end
          j = j + 1
        end
        i = j - 1
      end
    end
    i = i + 1
  end
  return problems
end

local function which(name)
  local code, out = S.exec("command -v " .. name)
  if code == 0 and out ~= "" then return (out:gsub("%s+$", "")) end
end

local free_port = S.free_port

-- A directory laid out like a fresh clone for the block's commands.
local function fixture()
  local dir = S.tmpdir()
  local build = S.build:sub(1, 1) == "/" and S.build or (S.root .. "/" .. S.build)
  assert(S.exec(("mkdir -p %s/bin && ln -s %s %s/build && ln -s %s/murmur %s/bin/murmur && cp -r %s/pipelines %s/ && ln -s %s/tests %s/tests && : > %s/app.log")
    :format(S.quote(dir), S.quote(build), S.quote(dir), S.quote(build), S.quote(dir),
      S.quote(S.root), S.quote(dir), S.quote(S.root), S.quote(dir), S.quote(dir))) == 0)
  S.gen_events(dir .. "/events.jsonl", 20000, 500, 1.1, 7)
  local f = assert(io.open(dir .. "/events.jsonl", "ab"))
  for k = 1, 50 do
    f:write(('{"event_id":"home-%d","entity_id":"home","page_id":"home","user_id":"u%d"}\n'):format(k, k % 7))
  end
  f:close()
  return dir
end

-- Turns a block into a bash script run in the fixture; returns the script
-- and the services it needs started first.
local function script_of(block, ports)
  local out = { "set -eu", "set -m",
    "trap 'for j in $(jobs -p); do kill -TERM -- -$j 2>/dev/null || true; done' EXIT",
    'export PATH="$PWD/bin:$PATH"' }
  for _, line in ipairs(logical_lines(block.lines)) do
    local code = line:gsub("%s+#.*$", "")
    code = code:gsub("127%.0%.0%.1:8000", "127.0.0.1:" .. ports.dynalite):gsub("%-%-port 8000", "--port " .. ports.dynalite)
    code = code:gsub("127%.0%.0%.1:6379", "127.0.0.1:" .. ports.valkey)
    if code:match("^%s*$") or code:match("^%s*make%s") then
      -- A comment, or a make target .ci/run runs itself.
    elseif line:find("runs until SIGINT", 1, true) then
      -- The job's process group gets the SIGINT, as from a terminal; its
      -- status is the last command's, murmur's.
      out[#out + 1] = ("%s%s &"):format(code, code:find("|", 1, true) and "" or " < events.jsonl")
      -- Stopped once it runs (its status file exists) and has had time to
      -- read, however long start-up takes on a loaded machine.
      out[#out + 1] = "for i in $(seq 300); do [ -e murmur-data/status.json ] && break; sleep 0.1; done"
      out[#out + 1] = "sleep 2; kill -INT %%; wait $!"
    elseif code:match("&%s*$") then
      out[#out + 1] = code
      local port = code:match("%-%-port (%d+)")
      if port then
        out[#out + 1] = ("for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/%s) 2>/dev/null && break; sleep 0.1; done"):format(port)
      end
    else
      out[#out + 1] = code
    end
  end
  return table.concat(out, "\n") .. "\n"
end

describe("#docs every command in README.md and doc/", function()
  local all = {}
  for _, path in ipairs(DOCS) do
    for _, b in ipairs(blocks_of(path)) do all[#all + 1] = b end
  end

  it("marks every shell block as run or skipped with a reason", function()
    local unmarked = {}
    for _, b in ipairs(all) do
      if b.lang == "sh" and not (b.marker == "run" or (b.marker or ""):match("^skip %S")) then
        unmarked[#unmarked + 1] = b.where
      end
    end
    assert.are.same({}, unmarked)
  end)

  it("uses only commands and options murmur has, in every shell block", function()
    local problems, checked = {}, 0
    for _, b in ipairs(all) do
      if b.lang == "sh" then
        for k, line in ipairs(logical_lines(b.lines)) do
          checked = checked + 1
          for _, p in ipairs(check_line(line, b.path or (b.where .. "+" .. k))) do problems[#problems + 1] = p end
        end
      end
    end
    assert.is_true(checked > 20)
    assert.are.same({}, problems)
  end)

  it("names only make targets the Makefile has", function()
    for _, b in ipairs(all) do
      if b.lang == "sh" then
        for _, line in ipairs(logical_lines(b.lines)) do
          local code = line:gsub("%s#.*$", "")
          for target in (" " .. code):gmatch("[%s;&|]make%s+(%w[%w-]*)") do
            local code, _, err = S.exec(("make -n -C %s %s >/dev/null"):format(S.quote(S.root), target))
            assert.are.equal(0, code, b.where .. ": make " .. target .. ": " .. err)
          end
        end
      end
    end
  end)

  it("runs every block marked run, as written", function()
    local ports = { dynalite = free_port(), valkey = free_port() }
    local ran = 0
    for _, b in ipairs(all) do
      if b.lang == "sh" and b.marker == "run" then
        local text = table.concat(b.lines, "\n")
        local dir = fixture()
        local valkey
        if text:find("redis://127.0.0.1:6379", 1, true) then
          local server = which("valkey-server") or which("redis-server")
          assert(server, b.where .. " needs redis-server (make deps installs it)")
          valkey = S.spawn(("%s --port %d --bind 127.0.0.1 --save '' --appendonly no --dir %s")
            :format(S.quote(server), ports.valkey, S.quote(dir)), dir .. "/valkey.log")
          S.exec(("for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/%d) 2>/dev/null && break; sleep 0.1; done")
            :format(ports.valkey))
        end
        if text:find("dynalite", 1, true) and not S.have_dynalite then
          pending(b.where .. ": dynalite is not installed (make deps)")
        else
          S.write_file(dir .. "/block.sh", script_of(b, ports))
          local code, out, err = S.exec(("cd %s && bash block.sh"):format(S.quote(dir)))
          assert.are.equal(0, code, ("%s failed:\n%s\n--- stdout\n%s\n--- stderr\n%s")
            :format(b.where, S.read_file(dir .. "/block.sh"), out, err))
          ran = ran + 1
        end
        if valkey then S.kill(valkey) S.wait_exit(valkey, 10) end
        S.rm_rf(dir)
      end
    end
    assert.is_true(ran >= 3)
  end)

  it("checks every Lua block marked check with murmur check", function()
    local n = 0
    for _, b in ipairs(all) do
      if b.lang == "lua" and b.marker and b.marker:match("^check") then
        local dir = S.tmpdir()
        S.write_file(dir .. "/block.lua", table.concat(b.lines, "\n") .. "\n")
        local args = { "check" }
        for a in b.marker:sub(6):gmatch("%S+") do args[#args + 1] = a end
        args[#args + 1] = dir .. "/block.lua"
        local code, out, err = S.murmur_run(args)
        assert.are.equal(0, code, b.where .. ": " .. out .. err)
        S.rm_rf(dir)
        n = n + 1
      end
    end
    assert.is_true(n >= 1)
  end)

  it("the quick start's make demo prints the Top-10 the README shows", function()
    local dir = S.tmpdir()
    local code, out, err = S.exec(("cd %s && BUILD=%s DEMO_DIR=%s sh tools/demo.sh"):format(S.quote(S.root),
      S.quote(S.build), S.quote(dir .. "/demo")))
    assert.are.equal(0, code, err)
    local readme = S.read_file(S.root .. "/README.md")
    local shown = readme:match("prints the Top%-10.-\n```\n(.-)```")
    assert.is_truthy(shown, "README's demo output block")
    for line in shown:gmatch("[^\n]+") do
      if not line:match("^recently_interacted") and line ~= "..." then
        -- Dates move with the day the demo runs; everything else is exact.
        assert.is_truthy(out:find(line, 1, true), "demo output lacks the README's line: " .. line .. "\n" .. out)
      end
    end
    assert.matches("recently_interacted  global  topk  %S+ %.%. %S+ %(31 buckets%)", out)
    S.rm_rf(dir)
  end)
end)
