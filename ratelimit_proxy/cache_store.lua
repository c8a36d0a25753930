-- Store one response variant (ratelimit_proxy/cache_store.py).
-- KEYS[1] rc:{key}, KEYS[2] rc:{key}:lock
-- ARGV[1] partition, ARGV[2] varied names (comma-separated, sorted), ARGV[3] variant, ARGV[4] entry,
-- ARGV[5] keep ms, ARGV[6] most variants per partition, ARGV[7] target (for tag purges sent to a CDN),
-- ARGV[8] the fill lock's owner ("": none): released here if still held, saving the fill a round trip.
-- The key lives as long as its longest-lived variant may be of use.
local prefix = ARGV[1] .. ':'
local old = redis.call('HGET', KEYS[1], prefix .. 'vary')
local variants = 0
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, 1, #prefix) == prefix and field ~= prefix .. 'vary' then
    variants = variants + 1
  end
end
if (old and old ~= ARGV[2]) or variants >= tonumber(ARGV[6]) then
  -- the origin varies on other fields now, or the partition is full: its variants start again
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(field, 1, #prefix) == prefix then
      redis.call('HDEL', KEYS[1], field)
    end
  end
end
redis.call('HSET', KEYS[1], prefix .. 'vary', ARGV[2], prefix .. ARGV[3], ARGV[4], 'target', ARGV[7])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[5]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
if ARGV[8] ~= '' and redis.call('GET', KEYS[2]) == ARGV[8] then
  redis.call('DEL', KEYS[2])
end
return 1
