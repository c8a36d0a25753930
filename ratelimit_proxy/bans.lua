-- The bans in force: drop the expired ones from both structures, return the records of the others.
-- KEYS[1]: zset network -> expiry (epoch seconds); KEYS[2]: hash network -> ban JSON (one hash tag: one
-- Cluster slot). ARGV[1]: now (epoch seconds).
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
  redis.call('HDEL', KEYS[2], unpack(expired))
end
local live = redis.call('ZRANGE', KEYS[1], 0, -1)
if #live == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(live))
