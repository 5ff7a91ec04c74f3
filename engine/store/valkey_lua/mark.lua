-- mark.lua: a server-side script of the Valkey store (engine/store/valkey*.c),
-- loaded with SCRIPT LOAD at each handshake and run with EVALSHA.
-- KEYS: marks. ARGV: per mark its expiry (ms). Keeps the later expiry.
for i = 1, #KEYS do
  if not redis.call('SET', KEYS[i], '1', 'PXAT', ARGV[i], 'NX') then
    redis.call('PEXPIREAT', KEYS[i], ARGV[i], 'GT')
  end
end
return #KEYS
