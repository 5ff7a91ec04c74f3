-- fill.lua: a server-side script of the Valkey store (engine/store/valkey*.c),
-- loaded with SCRIPT LOAD at each handshake and run with EVALSHA.
-- KEYS: per entry the entry, its epoch, its lease set. ARGV: ttl ms, then
-- per entry value, epoch seen ("n" none, "v<epoch>"), expire (0 =
-- none), nx (1: only if absent). Returns the number written.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local filled = 0
for i = 1, #KEYS, 3 do
  local j = 2 + (i - 1) / 3 * 4
  local e = redis.call('GET', KEYS[i + 1])
  local seen = ARGV[j + 1]
  if (not e and seen == 'n') or (e and seen == 'v' .. e) then
    redis.call('ZREMRANGEBYSCORE', KEYS[i + 2], '-inf', string.format('%d', now))
    if redis.call('ZCARD', KEYS[i + 2]) == 0 then
      local at = now + ttl
      local exp = tonumber(ARGV[j + 2])
      if exp > 0 and exp < at then at = exp end
      if at > now then
        local pxat = string.format('%d', at)
        if ARGV[j + 3] == '1' then
          if redis.call('SET', KEYS[i], ARGV[j], 'PXAT', pxat, 'NX') then
            filled = filled + 1
          end
        else
          redis.call('SET', KEYS[i], ARGV[j], 'PXAT', pxat)
          filled = filled + 1
        end
      end
    end
  end
end
return filled
