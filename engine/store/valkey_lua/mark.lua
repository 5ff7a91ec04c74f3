-- mark.lua: a server-side script of the Valkey store (engine/store/valkey*.c),
-- loaded with SCRIPT LOAD at each handshake and run with EVALSHA.
-- KEYS: marks. ARGV: token, then per mark its expiry (ms since the epoch).
-- The flush that carries the ids' effects is durable: each id becomes
-- confirmed ("1") until the end of the dedup window, if it is free or our
-- claim; a confirmed one keeps the later expiry; another store's pending
-- claim is left alone (its flush confirms it).
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if not v or v == ARGV[1] then
    redis.call('SET', KEYS[i], '1', 'PXAT', ARGV[i + 1])
  elseif v == '1' then
    redis.call('PEXPIREAT', KEYS[i], ARGV[i + 1], 'GT')
  end
end
return #KEYS
