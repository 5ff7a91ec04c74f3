-- claim.lua: a server-side script of the Valkey store (engine/store/valkey*.c),
-- loaded with SCRIPT LOAD at each handshake and run with EVALSHA.
-- KEYS: marks. ARGV: token, lease ms. Claims each id for this store: the
-- mark key holds the token until the lease ends (or the flush confirms it,
-- mark.lua). Returns per key a code and a time to live: 1 won (free, or
-- ours already: a retry, whose lease is extended), 2 duplicate (confirmed),
-- 3 busy (another store's pending claim; the ttl is what its lease has left).
local r = {}
for i = 1, #KEYS do
  local k = KEYS[i]
  if redis.call('SET', k, ARGV[1], 'PX', ARGV[2], 'NX') then
    r[2 * i - 1], r[2 * i] = 1, 0
  else
    local v = redis.call('GET', k)
    if v == ARGV[1] then
      redis.call('PEXPIRE', k, ARGV[2])
      r[2 * i - 1], r[2 * i] = 1, 0
    elseif v == '1' then
      r[2 * i - 1], r[2 * i] = 2, 0
    else
      r[2 * i - 1], r[2 * i] = 3, redis.call('PTTL', k)
    end
  end
end
return r
