-- murmur.ddb: the `murmur ddb` command, administration of the DynamoDB store.
--
-- The work is done in C by mm_ddb_admin (engine/store/dynamodb.h), which opens
-- the store with the options given here (the same options and environment
-- variables as `murmur run --store dynamodb`), runs one command on a private
-- loop and returns a line of JSON. The declaration below mirrors that header;
-- it uses only plain C types so it cannot clash with murmur.cdef.
local M = {}

M.HELP = [[
usage: murmur ddb COMMAND [options]

Administration of the DynamoDB store (doc/dynamodb.md).
  create-table                 create the table (pk S, sk N, on demand), wait
                               until it is ACTIVE and enable TTL on `ttl`
  claim --ns NS ID             claim a dedup id: prints won, stolen, duplicate
                               or busy
  confirm --ns NS ID           confirm our pending claim: confirmed or not_owner
  release --ns NS ID           delete our pending claim: released or not_owner
  renew --ns NS ID             extend our pending claim's lease: renewed or not_owner
  get --ns NS ENTITY           print the raw item of ENTITY (--bucket N, default 0)

Options (default from the environment, like `murmur run --store dynamodb`):
  --table T          $MURMUR_DYNAMODB_TABLE
  --region R         $AWS_REGION, $AWS_DEFAULT_REGION, us-east-1
  --endpoint URL     $MURMUR_DYNAMODB_ENDPOINT (e.g. a local emulator)
  --owner ID         owner of claims (default: random per process)
  --lease D          claim lease (default 30s, as for `murmur run`)
  --ttl D            how long a mark is kept (default 2d)
  --option K=V       any other store option (repeatable)
  --json             print the whole JSON answer
Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_SESSION_TOKEN or the container credentials endpoint.
]]

local COMMANDS = { ["create-table"] = true, claim = true, confirm = true, release = true, renew = true,
  get = true }
local VALUED = { table = true, region = true, endpoint = true, owner = true, lease = true, ttl = true,
  ns = true, bucket = true, option = true }

local ffi

local function admin(cmd, kv)
  if not ffi then
    ffi = require("ffi")
    ffi.cdef [[
int mm_ddb_admin(const char *cmd, const char *const *kv, size_t nkv, char **out);
void mm_ddb_free(void *p);
]]
  end
  local n = #kv
  local arr = ffi.new("const char *[?]", n + 1)
  for i = 1, n do arr[i - 1] = kv[i] end
  local out = ffi.new("char *[1]")
  local rc = ffi.C.mm_ddb_admin(cmd, arr, n / 2, out)
  local text = out[0] ~= nil and ffi.string(out[0]) or ""
  if out[0] ~= nil then ffi.C.mm_ddb_free(out[0]) end
  return rc, text
end

-- Parses argv; returns command, kv list, positional list, flags or nil, error.
local function parse(args)
  local cmd = args[1]
  if cmd == nil then return nil, "no command given" end
  if not COMMANDS[cmd] then return nil, ("unknown command '%s'"):format(cmd) end
  local kv, pos, json = {}, {}, false
  local i = 2
  while i <= #args do
    local a = args[i]
    local name, inline = a:match("^%-%-([%w-]+)=(.*)$")
    name = name or a:match("^%-%-([%w-]+)$")
    if a == "--json" then
      json = true
    elseif name then
      if not VALUED[name] then return nil, ("unknown option --%s"):format(name) end
      local v = inline
      if not v then
        i = i + 1
        v = args[i]
        if v == nil then return nil, ("option --%s needs a value"):format(name) end
      end
      if name == "option" then
        local k, val = v:match("^([%w_]+)=(.*)$")
        if not k then return nil, "--option takes KEY=VALUE" end
        kv[#kv + 1], kv[#kv + 2] = k, val
      else
        kv[#kv + 1], kv[#kv + 2] = name, v
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return cmd, kv, pos, json
end

-- Runs `murmur ddb ...`; returns the process exit code.
function M.main(args)
  if args[1] == nil or args[1] == "--help" or args[1] == "-h" then
    io.write(M.HELP)
    return args[1] and 0 or 2
  end
  local cmd, kv, pos, json = parse(args)
  if not cmd then
    io.stderr:write(("murmur ddb: %s\n%s"):format(kv, M.HELP))
    return 2
  end
  if cmd == "create-table" then
    if #pos > 0 then
      io.stderr:write("murmur ddb create-table: takes no arguments\n")
      return 2
    end
  else
    if #pos ~= 1 then
      io.stderr:write(("murmur ddb %s: expected one %s\n"):format(cmd, cmd == "get" and "ENTITY" or "ID"))
      return 2
    end
    kv[#kv + 1], kv[#kv + 2] = cmd == "get" and "entity" or "id", pos[1]
  end
  local rc, text = admin(cmd, kv)
  if rc ~= 0 then
    io.stderr:write(("murmur ddb %s: %s\n"):format(cmd, text))
    return 1
  end
  if json or cmd == "create-table" or cmd == "get" then
    io.write(text, "\n")
  else
    io.write(text:match('"result":"([%w_]+)"') or text, "\n")
  end
  return 0
end

return M
