-- Store a compiled snapshot only if it is newer than the cached one: two replicas may build different
-- versions at once, and the cache must never move backwards.
-- KEYS[1]: the environment's snapshot hash; ARGV[1]: version; ARGV[2]: snapshot JSON.
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if tonumber(ARGV[1]) > current then
  redis.call('HSET', KEYS[1], 'version', ARGV[1], 'body', ARGV[2])
  return 1
end
return 0
