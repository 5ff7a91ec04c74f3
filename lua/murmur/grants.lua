-- murmur.grants: what the operator lets pipeline scripts reach.
--
-- Scripts are written by the teams that own the data; murmur is run by
-- operators (doc/security.md). A script therefore gets only what the operator
-- grants on the command line (`--allow CAP[,CAP...]`, repeatable) or in
-- MURMUR_ALLOW (the same list). murmur.allow(CAP) in a script only asks: it
-- fails at load, naming the flag, when the grant is missing.
--
-- Capabilities:
--   io, os            the whole io library / the whole os library (os.execute,
--                     os.exit, the real os.getenv)
--   path:DIR          files under DIR, besides the script's directory and the
--                     data directory (sources, dead-letter files, store paths,
--                     Kafka properties that name files)
--   net:HOST:PORT     an endpoint a script names (Kafka brokers, a DynamoDB
--                     or Kinesis endpoint, a Valkey URL); net:HOST grants
--                     every port
--   env:NAME          os.getenv("NAME") (never AWS credentials)
--   kafka:PROPERTY    a librdkafka property outside the safe set (never one
--                     that runs a command or loads code: use -X for those)
--
-- The grants are process-wide: the CLI sets them once (M.set) before loading
-- scripts; a worker re-executes the same command line, so it gets the same.
local core = require("murmur.core")

local M = {}

-- Variables no script reads, granted or not: AWS credentials go only to the
-- endpoints the operator configured.
M.NEVER_ENV = {
  AWS_ACCESS_KEY_ID = true, AWS_SECRET_ACCESS_KEY = true, AWS_SESSION_TOKEN = true,
  AWS_CONTAINER_AUTHORIZATION_TOKEN = true, AWS_CONTAINER_CREDENTIALS_FULL_URI = true,
  AWS_CONTAINER_CREDENTIALS_RELATIVE_URI = true, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE = true,
}

-- MURMUR_* variables that may carry secrets (a password in a URL, SASL
-- properties); the other MURMUR_* variables are readable by default.
local SECRET_MURMUR = { MURMUR_KAFKA_PROPERTIES = true, MURMUR_VALKEY_URL = true }

local function looks_secret(name)
  local u = name:upper()
  return u:find("SECRET", 1, true) or u:find("PASSWORD", 1, true) or u:find("TOKEN", 1, true)
    or u:find("CREDENTIAL", 1, true) or u:find("KEY", 1, true) ~= nil
end

-- Parses capability strings (each may hold several, comma-separated) into a
-- grants table, or returns nil, message.
function M.parse(list)
  local g = { io = false, os = false, paths = {}, net = {}, env = {}, kafka = {}, given = {} }
  for _, item in ipairs(list or {}) do
    for cap in tostring(item):gmatch("[^,]+") do
      cap = cap:match("^%s*(.-)%s*$")
      local kind, arg = cap:match("^(%a+):(.+)$")
      if cap == "io" or cap == "os" then
        g[cap] = true
      elseif kind == "path" then
        if arg:sub(1, 1) ~= "/" then
          return nil, ("--allow %s: a path grant must be absolute (path:/srv/in)"):format(cap)
        end
        -- A granted directory that does not exist yet is kept as written.
        g.paths[#g.paths + 1] = core.realpath(arg) or arg
      elseif kind == "net" then
        local host, port = arg:match("^(.+):(%d+)$")
        if host then
          g.net[host:lower() .. ":" .. port] = true
        elseif arg:find(":", 1, true) then
          return nil, ("--allow %s: expected net:HOST:PORT or net:HOST"):format(cap)
        else
          g.net[arg:lower()] = true
        end
      elseif kind == "env" then
        if M.NEVER_ENV[arg] then
          return nil, ("--allow %s: AWS credentials are never given to scripts"):format(cap)
        end
        g.env[arg] = true
      elseif kind == "kafka" then
        g.kafka[arg] = true
      elseif cap ~= "" then
        return nil, ("--allow: unknown capability '%s' (expected io, os, path:DIR, net:HOST:PORT, env:NAME or kafka:PROPERTY)")
          :format(cap)
      end
      if cap ~= "" then g.given[#g.given + 1] = cap end
    end
  end
  return g
end

local current, data_dir, operator = nil, nil, {}

-- Sets the operator's grants: MURMUR_ALLOW plus the --allow values given,
-- the data directory scripts may name paths under, and what the operator
-- configured on the command line (opts.kafka_brokers, opts.cache). Returns
-- true or nil, message.
function M.set(list, data, opts)
  local all = { os.getenv("MURMUR_ALLOW") }
  for _, v in ipairs(list or {}) do all[#all + 1] = v end
  local g, err = M.parse(all)
  if not g then return nil, err end
  current, data_dir, operator = g, data, opts or {}
  return true
end

-- The Kafka brokers the operator configured (they override a source's).
function M.operator_brokers()
  return operator.kafka_brokers or os.getenv("MURMUR_KAFKA_BROKERS")
end

-- The Valkey URL the operator configured.
function M.operator_cache()
  return operator.cache or os.getenv("MURMUR_VALKEY_URL")
end

-- The grants in force (MURMUR_ALLOW alone until M.set is called).
function M.current()
  if not current then
    local g = M.parse({ os.getenv("MURMUR_ALLOW") })
    current = g or M.parse({})
  end
  return current
end

local function data_root()
  return data_dir or os.getenv("MURMUR_DATA") or "murmur-data"
end

-- The script being loaded (set by the loader around a load): paths in it are
-- checked against its directory.
local loading = nil
function M.begin_load(script_path) loading = { path = script_path } end
function M.end_load() loading = nil end

-- murmur.allow(cap): true when granted, else nil and the message.
function M.ask(cap)
  local g = M.current()
  if cap == "io" or cap == "os" then
    if g[cap] then return true end
  else
    local kind, arg = tostring(cap):match("^(%a+):(.+)$")
    if kind == "env" and g.env[arg] then return true end
    if kind == "kafka" and g.kafka[arg] then return true end
    if kind == "net" then
      local host = arg:match("^(.+):%d+$") or arg
      if g.net[arg:lower()] or g.net[host:lower()] then return true end
    end
    if kind == "path" and M.path_allowed(arg) then return true end
    if not kind then
      return nil, ("murmur.allow(%q): unknown capability (expected \"io\", \"os\", \"path:DIR\", \"net:HOST:PORT\", \"env:NAME\" or \"kafka:PROPERTY\")")
        :format(tostring(cap))
    end
  end
  return nil, ("murmur.allow(%q) needs the operator's grant: run with --allow %s"):format(cap, cap)
end

-- os.getenv as scripts see it: MURMUR_* variables that carry no secret, and
-- the variables the operator granted with env:NAME.
function M.getenv(name)
  if type(name) ~= "string" or M.NEVER_ENV[name] then return nil end
  local g = M.current()
  if g.env[name] then return os.getenv(name) end
  if name:sub(1, 7) == "MURMUR_" and not SECRET_MURMUR[name] and not looks_secret(name) then
    return os.getenv(name)
  end
  return nil
end

-- Paths -------------------------------------------------------------------

local function cwd()
  return os.getenv("PWD") or "."
end

local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  local base = core.realpath(".") or cwd()
  return base .. "/" .. path
end

-- Resolves a path that may not exist yet: the longest existing prefix through
-- realpath (so symbolic links are followed to where they point), then the
-- remaining components, which must not contain "..".
function M.resolve(path)
  local abs = absolute(path)
  local real = core.realpath(abs)
  if real then return real end
  local head, rest = abs, {}
  while true do
    local parent, last = head:match("^(.*)/([^/]+)$")
    if not parent then return nil, ("%s: cannot resolve the path"):format(path) end
    if last == ".." then return nil, ("%s: '..' in a part of the path that does not exist"):format(path) end
    if last ~= "." then table.insert(rest, 1, last) end
    head = parent == "" and "/" or parent
    real = core.realpath(head)
    if real then
      return (real == "/" and "" or real) .. "/" .. table.concat(rest, "/")
    end
  end
end

local function under(path, root)
  if root == "/" then return true end
  return path == root or path:sub(1, #root + 1) == root .. "/"
end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

-- The directories a script may name paths under: its own directory, the
-- data directory and the granted path: roots.
function M.roots(script_path)
  local r = {}
  script_path = script_path or (loading and loading.path)
  if script_path then
    local d = M.resolve(dirname(absolute(script_path)))
    if d then r[#r + 1] = { dir = d, what = "the script's directory" } end
  end
  local d = M.resolve(data_root())
  if d then r[#r + 1] = { dir = d, what = "the data directory" } end
  for _, p in ipairs(M.current().paths) do r[#r + 1] = { dir = p, what = "--allow path:" .. p } end
  return r
end

-- Checks a path a script names. Returns the resolved path, or nil and a
-- message naming the grant that would allow it.
function M.check_path(path, what)
  if type(path) ~= "string" or path == "" then return nil, ("%s: expected a path"):format(what) end
  local real, err = M.resolve(path)
  if not real then return nil, ("%s: %s"):format(what, err) end
  local roots, names = M.roots(), {}
  for _, r in ipairs(roots) do
    if under(real, r.dir) then return real end
    names[#names + 1] = ("%s (%s)"):format(r.what, r.dir)
  end
  local shown = real ~= absolute(path) and ("%s (which resolves to %s)"):format(path, real) or path
  return nil, ("%s: %s is outside %s: run with --allow path:%s to grant it"):format(what, shown,
    table.concat(names, ", "), dirname(real))
end

function M.path_allowed(path)
  return M.check_path(path, "path") ~= nil
end

-- Network endpoints ---------------------------------------------------------

-- Checks "host:port" against the net: grants.
function M.net_allowed(hostport)
  local g = M.current()
  local host, port = hostport:match("^%[?([^%]]+)%]?:(%d+)$")
  host = (host or hostport):lower()
  return g.net[host .. ":" .. (port or "")] or g.net[host] or false
end

-- Checks a comma-separated broker list a script names.
function M.check_brokers(list, what)
  for b in list:gmatch("[^,]+") do
    b = b:match("^%s*(.-)%s*$"):gsub("^%a+://", "")
    if not M.net_allowed(b) then
      return nil, ("%s: brokers %s are chosen by the script: run with --allow net:%s, or give the brokers with --kafka-brokers / MURMUR_KAFKA_BROKERS")
        :format(what, list, b)
    end
  end
  return true
end

-- A URL's host:port (the scheme's default port when none is given).
local DEFAULT_PORT = { http = "80", https = "443", redis = "6379", rediss = "6379" }
function M.url_hostport(url)
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then return nil end
  local authority = rest:match("^([^/?#]*)")
  authority = authority:gsub("^.*@", "")
  local host, port = authority:match("^%[?([^%]]+)%]?:(%d+)$")
  if not host then host, port = authority:match("^%[?([^%]]+)%]?$"), DEFAULT_PORT[scheme:lower()] end
  if not host then return nil end
  return host:lower(), port, scheme:lower()
end

-- An AWS endpoint a script names receives the AWS credentials: only AWS's
-- own (https://*.amazonaws.com), the operator's (operator_url, from a flag
-- or the variable env_name) or a granted net:HOST:PORT.
function M.check_aws_endpoint(url, what, env_name, operator_url)
  if type(url) ~= "string" then return nil, ("%s: endpoint must be a URL"):format(what) end
  local host, port, scheme = M.url_hostport(url)
  if not host then return nil, ("%s: endpoint '%s' is not a URL"):format(what, url) end
  if url == os.getenv(env_name) or (operator_url and url == operator_url) then return true end
  if scheme == "https" and (host == "amazonaws.com" or host:sub(-14) == ".amazonaws.com") then return true end
  if M.net_allowed(host .. ":" .. (port or "")) then return true end
  return nil, ("%s: endpoint %s is chosen by the script and would receive the AWS credentials: run with --allow net:%s:%s, or set %s")
    :format(what, url, host, port or "", env_name)
end

-- A DynamoDB endpoint a script names (store options, the Kinesis lease table).
function M.check_dynamodb_endpoint(url, what)
  return M.check_aws_endpoint(url, what, "MURMUR_DYNAMODB_ENDPOINT")
end

-- The Kinesis endpoint the operator configured (it overrides a source's).
function M.operator_kinesis_endpoint()
  return operator.kinesis_endpoint or os.getenv("MURMUR_KINESIS_ENDPOINT")
end

-- A Valkey URL a script names (it may carry a password the cache needs).
function M.check_url(url, what, operator_url)
  if type(url) ~= "string" then return nil, ("%s: expected a URL"):format(what) end
  if operator_url and url == operator_url then return true end
  local host, port = M.url_hostport(url)
  if not host then return nil, ("%s: '%s' is not a URL"):format(what, url) end
  if M.net_allowed(host .. ":" .. (port or "")) then return true end
  return nil, ("%s: %s is chosen by the script: run with --allow net:%s:%s"):format(what, url, host, port or "")
end

-- Kafka properties ----------------------------------------------------------

-- Never from a script, granted or not: they run commands, load code or hand
-- librdkafka pointers. The operator sets them with -X.
local KAFKA_NEVER = {
  ["sasl.kerberos.kinit.cmd"] = true, ["plugin.library.paths"] = true,
  ["ssl.engine.location"] = true, ["ssl.engine.id"] = true, ["ssl_engine_callback_data"] = true,
  ["ssl.providers"] = true, ["opaque"] = true, ["default_topic_conf"] = true,
  ["interceptors"] = true,
}

local function kafka_never(name)
  if KAFKA_NEVER[name] then return true end
  local n = name:lower()
  return n:find("cmd", 1, true) or n:find("command", 1, true) or n:find("plugin", 1, true)
    or n:find("library", 1, true) or n:find("engine", 1, true) or n:find("provider", 1, true)
    or n:find("interceptor", 1, true) or n:find("callback", 1, true) or n:find("opaque", 1, true)
    or n:match("[._]cb$") ~= nil
end

-- Properties that name files or directories: allowed when the path is under
-- the allowed roots.
local function kafka_names_file(name)
  return name:match("%.location$") or name:match("%.keytab$") or name:match("%.file$")
    or name == "ssl.ca.certificate.stores"
end

-- Properties that name endpoints: checked like brokers.
local KAFKA_ENDPOINTS = {
  ["bootstrap.servers"] = "list", ["metadata.broker.list"] = "list",
  ["sasl.oauthbearer.token.endpoint.url"] = "url",
}

-- The safe set: tuning, client identity, TLS and SASL settings given inline.
local KAFKA_SAFE = {}
for name in ([[
client.id client.rack group.instance.id group.protocol group.remote.assignor
partition.assignment.strategy session.timeout.ms heartbeat.interval.ms
max.poll.interval.ms coordinator.query.interval.ms auto.commit.interval.ms
isolation.level check.crcs allow.auto.create.topics
security.protocol sasl.mechanism sasl.mechanisms sasl.username sasl.password
sasl.kerberos.service.name sasl.kerberos.principal sasl.kerberos.min.time.before.relogin
sasl.oauthbearer.method sasl.oauthbearer.client.id sasl.oauthbearer.client.secret
sasl.oauthbearer.scope sasl.oauthbearer.extensions enable.sasl.oauthbearer.unsecure.jwt
ssl.key.pem ssl.key.password ssl.certificate.pem ssl.ca.pem ssl.cipher.suites
ssl.curves.list ssl.sigalgs.list ssl.endpoint.identification.algorithm
enable.ssl.certificate.verification ssl.keystore.password
message.max.bytes message.copy.max.bytes receive.message.max.bytes
max.in.flight.requests.per.connection max.in.flight metadata.max.age.ms
topic.metadata.refresh.interval.ms topic.metadata.refresh.fast.interval.ms
topic.metadata.refresh.sparse topic.metadata.propagation.max.ms
socket.timeout.ms socket.send.buffer.bytes socket.receive.buffer.bytes
socket.keepalive.enable socket.nagle.disable socket.max.fails
socket.connection.setup.timeout.ms connections.max.idle.ms
broker.address.ttl broker.address.family client.dns.lookup
reconnect.backoff.ms reconnect.backoff.max.ms retry.backoff.ms retry.backoff.max.ms
statistics.interval.ms log_level log.queue log.thread.name log.connection.close debug
api.version.request api.version.request.timeout.ms api.version.fallback.ms
broker.version.fallback enable.metrics.push
queued.min.messages queued.max.messages.kbytes fetch.wait.max.ms
fetch.queue.backoff.ms fetch.message.max.bytes max.partition.fetch.bytes
fetch.max.bytes fetch.min.bytes fetch.error.backoff.ms
enable.idempotence enable.gapless.guarantee queue.buffering.max.messages
queue.buffering.max.kbytes queue.buffering.max.ms linger.ms message.send.max.retries
retries batch.num.messages batch.size delivery.report.only.error
sticky.partitioning.linger.ms compression.codec compression.type compression.level
request.required.acks acks request.timeout.ms message.timeout.ms delivery.timeout.ms
partitioner
]]):gmatch("%S+") do KAFKA_SAFE[name] = true end

-- Checks the librdkafka properties a script gives (a table name -> string).
-- Returns true or nil, message.
function M.check_kafka_properties(props, what)
  local g = M.current()
  local names = {}
  for k in pairs(props) do names[#names + 1] = k end
  table.sort(names)
  for _, name in ipairs(names) do
    local v = props[name]
    if kafka_never(name) then
      return nil, ("%s: property '%s' is refused: scripts cannot set properties that run commands or load code (an operator sets it with -X %s=...)")
        :format(what, name, name)
    elseif KAFKA_ENDPOINTS[name] == "list" then
      local ok, err = M.check_brokers(v, what .. ": property '" .. name .. "'")
      if not ok then return nil, err end
    elseif KAFKA_ENDPOINTS[name] == "url" then
      local ok, err = M.check_url(v, what .. ": property '" .. name .. "'")
      if not ok then return nil, err end
    elseif kafka_names_file(name) then
      for p in v:gmatch("[^,]+") do
        local ok, err = M.check_path(p, what .. ": property '" .. name .. "'")
        if not ok then return nil, err end
      end
    elseif not KAFKA_SAFE[name] and not g.kafka[name] then
      return nil, ("%s: property '%s' is outside murmur's safe set of librdkafka properties: run with --allow kafka:%s, or set it with -X %s=..."):format(what, name, name, name)
    end
  end
  return true
end

return M
