-- exists.lua: a server-side script of the Valkey store (engine/store/valkey*.c),
-- loaded with SCRIPT LOAD at each handshake and run with EVALSHA.
-- KEYS: entries. Returns 1 or 0 per entry.
local r = {}
for i = 1, #KEYS do r[i] = redis.call('EXISTS', KEYS[i]) end
return r
