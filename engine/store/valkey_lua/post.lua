-- post.lua: a server-side script of the Valkey store (engine/store/valkey*.c),
-- loaded with SCRIPT LOAD at each handshake and run with EVALSHA.
-- KEYS: lease set, epoch, tmp, entries. ARGV: member, last (0/1), epoch
-- seed, epoch ttl, then per entry op, a, b, expire (0 = keep):
-- i = INCRBY a; h = PFMERGE of the HLL bytes a; c = SET b if SHA-1 = a;
-- d = DEL. Returns {lease held, entries updated}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local held = score and tonumber(score) > now
local done = 0
for i = 4, #KEYS do
  local k, j = KEYS[i], 5 + (i - 4) * 4
  local op, a, b, exp = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3]
  if not held or op == 'd' then
    redis.call('DEL', k)
  elseif redis.call('EXISTS', k) == 1 then
    local r
    if op == 'i' then
      r = redis.pcall('INCRBY', k, a)
    elseif op == 'h' then
      redis.call('SET', KEYS[3], a)
      r = redis.pcall('PFMERGE', k, KEYS[3])
      redis.call('DEL', KEYS[3])
    else
      local cur = redis.pcall('GET', k)
      if type(cur) == 'string' and redis.sha1hex(cur) == a then
        r = redis.pcall('SET', k, b, 'KEEPTTL')
      else
        r = {err = 'changed'}
      end
    end
    if type(r) == 'table' and r.err then
      redis.call('DEL', k)
    else
      if exp ~= '0' then redis.call('PEXPIREAT', k, exp, 'LT') end
      done = done + 1
    end
  end
end
if ARGV[2] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SET', KEYS[2], ARGV[3]) end
  redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return {held and 1 or 0, done}
