-- claim.lua: a server-side script of the Valkey store (engine/store/valkey*.c),
-- loaded with SCRIPT LOAD at each handshake and run with EVALSHA.
-- KEYS: marks. ARGV: token, then per mark its expiry. 1 = ours.
local r = {}
for i = 1, #KEYS do
  if redis.call('SET', KEYS[i], ARGV[1], 'PXAT', ARGV[i + 1], 'NX') then
    r[i] = 1
  elseif redis.call('GET', KEYS[i]) == ARGV[1] then
    r[i] = 1
  else
    r[i] = 0
  end
end
return r
