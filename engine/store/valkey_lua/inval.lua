-- inval.lua: a server-side script of the Valkey store (engine/store/valkey*.c),
-- loaded with SCRIPT LOAD at each handshake and run with EVALSHA.
-- KEYS: epoch, entries. ARGV: epoch seed, epoch ttl.
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return #KEYS - 1
