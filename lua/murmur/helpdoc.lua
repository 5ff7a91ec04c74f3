-- murmur.helpdoc: murmur.help (the text `murmur help` prints) parsed into
-- commands, usages, options and positional arguments, for the generators of
-- the shell completions (murmur.completion) and the man page
-- (murmur.manpage). Everything comes from the help text, so the completions
-- and the man page cannot drift from what the binary says.
--
-- The help text conventions it relies on:
--   * HELP.main lists the commands under "commands:", one per line, indented
--     two spaces: "  NAME ARGS...   summary".
--   * each HELP[name] starts with "usage: murmur NAME ARGS...", where
--     upper-case words are positional arguments (SCRIPT, FILE, COMMAND...),
--     lower-case words joined by '|' are literal choices (bash|zsh), [...]
--     is optional and a trailing ... repeats;
--   * an option line is indented and starts with '-': "  --data DIR   text";
--     its description continues on the more-indented lines below it;
--   * a subcommand line (murmur ddb) is indented two spaces and starts with a
--     lower-case word: "  claim --ns NS ID   text".
local HELP = require("murmur.help")

local M = {}

-- Splits "  --from T --to T    text" into its flag part and description.
local function split_entry(rest)
  local spec, desc = rest:match("^(.-)%s%s+(%S.*)$")
  if not spec then return rest, "" end
  return spec, desc
end

-- "lmdb (default, durable), dynamodb (shared) or memory" -> { lmdb, dynamodb, memory }:
-- the literal values an option's description starts with, when there are two
-- or more joined by "or"; nil otherwise.
local function choices_of(desc)
  local text = desc
  repeat
    local n
    text, n = text:gsub("%b()", "")
  until n == 0
  text = text:gsub("%s+", " ")
  local list, alternatives = {}, false
  for piece in (text .. ","):gmatch("(.-),") do
    local a, b = piece:match("^%s*(.-)%s+or%s+(.-)%s*$")
    for _, w in ipairs(a and { a, b } or { piece }) do
      w = w:match("^%s*(.-)%s*$")
      if not w:match("^[a-z][a-z0-9_-]*$") then
        return #list >= 2 and alternatives and list or nil
      end
      list[#list + 1] = w
    end
    if a then alternatives = true break end
  end
  return #list >= 2 and alternatives and list or nil
end

-- The kind of value an option argument or a positional takes: "dir",
-- "file", "script", "command", "subcommand", "choice" or "none".
local function kind_of(word)
  if word:find("SCRIPT", 1, true) then return "script" end
  if word:match("^DIR") then return "dir" end
  if word:match("^FILE") then return "file" end
  if word == "COMMAND" then return "command" end
  return "none"
end

-- Parses the usage line's arguments ("SCRIPT|PIPELINE ENTITY [options]").
local function positionals(args, name)
  local list, repeats = {}, false
  -- A bracketed group is one optional argument.
  args = args:gsub("%[options%]", ""):gsub("%b[]", function(g) return (g:sub(2, -2):gsub("%s+", "_")) end)
  for word in args:gmatch("%S+") do
    if word:sub(1, 1) ~= "-" then
      local more = word:match("%.%.%.$") ~= nil
      word = word:gsub("%.%.%.$", "")
      local p = { name = word, kind = kind_of(word) }
      if word:match("^[a-z][a-z0-9|_-]*$") and word:find("|", 1, true) then
        p.kind, p.choices = "choice", {}
        for w in word:gmatch("[^|]+") do p.choices[#p.choices + 1] = w end
      elseif p.kind == "command" and name ~= "help" then
        p.kind = "subcommand"
      end
      list[#list + 1] = p
      repeats = more
    end
  end
  return list, repeats
end

-- The flags in "--from T --to T" (not the -table of create-table).
local function flags_in(spec)
  local list = {}
  for flag in (" " .. spec):gmatch("%s(%-%-?[%a][%w-]*)") do list[#list + 1] = flag end
  return list
end

-- The argument that follows flag in spec ("--data DIR" -> DIR), if any.
local function arg_of(spec, flag)
  return (" " .. spec .. " "):match("%s" .. flag:gsub("%-", "%%-") .. "[%s=]+([A-Z][%w=_|.]*)%f[%s%]]")
end

-- Parses one command's help text.
local function parse_command(name, summary)
  local text = HELP[name]
  local usage = text:match("^usage: (murmur[^\n]*)") or ("murmur " .. name)
  local c = { name = name, summary = summary, usage = usage, text = text, options = {},
    subcommands = {}, body = {} }
  c.positionals, c.repeats = positionals(usage:gsub("^murmur%s+%S+", ""), name)
  local last -- the entry a continuation line belongs to
  local first = true
  for line in text:gmatch("([^\n]*)\n?") do
    if first then
      first = false -- the usage line
    else
      local indent, rest = line:match("^( *)(.*)$")
      if rest:sub(1, 1) == "-" and #indent >= 1 then
        local spec, desc = split_entry(rest)
        local o = { spec = spec, desc = desc, flags = flags_in(spec) }
        o.arg = arg_of(spec, o.flags[1])
        c.options[#c.options + 1] = o
        c.body[#c.body + 1] = { option = o }
        last = o
      elseif #indent == 2 and rest:match("^[a-z][a-z-]*") and name ~= "main" then
        local spec, desc = split_entry(rest)
        local s = { spec = spec, desc = desc, name = rest:match("^[a-z][a-z-]*") }
        c.subcommands[#c.subcommands + 1] = s
        c.body[#c.body + 1] = { subcommand = s }
        last = s
        -- Flags a subcommand takes (ddb claim --ns) are options too.
        for _, flag in ipairs(flags_in(spec)) do
          c.options[#c.options + 1] = { spec = flag, desc = desc, flags = { flag }, arg = arg_of(spec, flag),
            hidden = true }
        end
      elseif last and #indent > 2 and rest ~= "" then
        last.desc = last.desc .. " " .. rest
      else
        last = nil
        c.body[#c.body + 1] = { text = line }
      end
    end
  end
  -- Options the usage line shows but the text does not describe
  -- ("murmur status [--data DIR] [--json]").
  local described = {}
  for _, o in ipairs(c.options) do
    for _, f in ipairs(o.flags) do described[f] = true end
  end
  for _, flag in ipairs(flags_in((usage:gsub("[%[%]]", " ")))) do
    if not described[flag] then
      described[flag] = true
      c.options[#c.options + 1] = { spec = flag, desc = "", flags = { flag }, arg = arg_of(usage:gsub("[%[%]]", " "), flag),
        hidden = true }
    end
  end
  -- Every command takes --help.
  c.options[#c.options + 1] = { spec = "--help", desc = "show this help", flags = { "--help" }, hidden = true }
  for _, o in ipairs(c.options) do
    o.kind = o.arg and kind_of(o.arg) or nil
    if o.arg and o.kind == "none" then
      local ch = choices_of(o.desc)
      if ch then o.kind, o.choices = "choice", ch end
    end
  end
  return c
end

-- Returns { commands = { command... }, by_name = { name = command }, main = text }.
-- A command: { name, summary, usage, text, positionals = { {name, kind, choices} },
-- repeats (the last positional repeats), options = { {flags, arg, kind,
-- choices, desc, hidden} }, subcommands = { {name, spec, desc} }, body =
-- the help text after the usage line as { text = line } | { option = o } |
-- { subcommand = s } }.
function M.parse()
  local doc = { commands = {}, by_name = {}, main = HELP.main }
  local in_list = false
  for line in HELP.main:gmatch("([^\n]*)\n?") do
    if line:match("^commands:") then
      in_list = true
    elseif in_list and line:match("^  %a") then
      local name = line:match("^  (%a[%w-]*)")
      local _, summary = split_entry(line:sub(3))
      if HELP[name] and not doc.by_name[name] then
        local c = parse_command(name, summary)
        doc.commands[#doc.commands + 1] = c
        doc.by_name[name] = c
      end
    elseif in_list and line:match("^%S") then
      in_list = false
    end
  end
  return doc
end

-- Every option flag of a command, --help included, in help order.
function M.flags(c)
  local list, seen = {}, {}
  for _, o in ipairs(c.options) do
    for _, f in ipairs(o.flags) do
      if not seen[f] then
        seen[f] = o
        list[#list + 1] = f
      end
    end
  end
  return list, seen
end

return M
