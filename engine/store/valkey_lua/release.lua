-- release.lua: a server-side script of the Valkey store (engine/store/valkey*.c),
-- loaded with SCRIPT LOAD at each handshake and run with EVALSHA.
-- KEYS: marks. ARGV: token, lease ms. Acts on the claims that are ours
-- only: with a lease, extends them (a flush being retried renews its
-- claims); with 0, deletes them (their effects were abandoned). Returns per
-- key 1 done, 0 not ours.
local r = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    if ARGV[2] == '0' then
      redis.call('DEL', KEYS[i])
    else
      redis.call('PEXPIRE', KEYS[i], ARGV[2])
    end
    r[i] = 1
  else
    r[i] = 0
  end
end
return r
