-- count.lua: a server-side script of the Valkey store (engine/store/valkey*.c),
-- loaded with SCRIPT LOAD at each handshake and run with EVALSHA.
-- KEYS: HLL entries. ARGV: length of an empty sketch. Returns -1 unless
-- every entry exists, else {PFCOUNT of all, entries not empty}.
if redis.call('EXISTS', unpack(KEYS)) < #KEYS then return -1 end
local nonempty = 0
for i = 1, #KEYS do
  if redis.call('STRLEN', KEYS[i]) ~= tonumber(ARGV[1]) then nonempty = nonempty + 1 end
end
return {redis.call('PFCOUNT', unpack(KEYS)), nonempty}
