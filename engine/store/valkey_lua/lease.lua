-- lease.lua: a server-side script of the Valkey store (engine/store/valkey*.c),
-- loaded with SCRIPT LOAD at each handshake and run with EVALSHA.
-- KEYS: lease sets. ARGV: member, lease ms.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[2])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], string.format('%d', now + ms), ARGV[1])
  redis.call('PEXPIRE', KEYS[i], string.format('%d', 2 * ms))
end
return #KEYS
