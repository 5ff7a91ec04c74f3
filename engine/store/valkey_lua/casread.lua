-- casread.lua: a server-side script of the Valkey store (engine/store/valkey*.c),
-- loaded with SCRIPT LOAD at each handshake and run with EVALSHA.
-- KEYS: entries. Returns value, SHA-1 (or nil, nil) per entry.
local r = {}
for i = 1, #KEYS do
  local v = redis.pcall('GET', KEYS[i])
  if type(v) == 'string' then
    r[2 * i - 1] = v
    r[2 * i] = redis.sha1hex(v)
  else
    r[2 * i - 1] = false
    r[2 * i] = false
  end
end
return r
