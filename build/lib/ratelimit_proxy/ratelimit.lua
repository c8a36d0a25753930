-- Sliding-window counter over every limit of one request, all-or-nothing, in one round trip.
-- Same rule as ratelimit_proxy/limiter.py (integer milliseconds, so both decide alike): a limit is a
-- hash {bucket index -> count}; the live buckets are the current one and the `buckets` before it;
-- admit iff sum(live) + cost <= quota for EVERY limit, then charge the current bucket of each.
-- KEYS[i]: the hash of limit i; all keys of one client share a {hash tag} (one Redis Cluster slot).
-- ARGV: now_ms (negative: use the Redis clock), cost, then quota_i, window_ms_i, buckets_i per key.
-- Returns {allowed, now_ms, {fits_1, index, count, index, count, ...}, {fits_2, ...}, ...}: the live
-- buckets of each limit, charged when allowed.
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local cost = tonumber(ARGV[2])
local allowed = 1
local limits = {}

for i = 1, #KEYS do
  local quota = tonumber(ARGV[3 * i])
  local window_ms = tonumber(ARGV[3 * i + 1])
  local buckets = tonumber(ARGV[3 * i + 2])
  local bucket_ms = window_ms / buckets
  local current = math.floor(now / bucket_ms)
  local oldest = current - buckets
  local stored = redis.call('HGETALL', KEYS[i])
  local live, stale, used = {}, {}, 0
  for j = 1, #stored, 2 do
    local index, count = tonumber(stored[j]), tonumber(stored[j + 1])
    if index >= oldest then
      live[#live + 1] = {index, count}
      used = used + count
    else
      stale[#stale + 1] = stored[j]
    end
  end
  local fits = (used + cost <= quota) and 1 or 0
  if fits == 0 then allowed = 0 end
  limits[i] = {key = KEYS[i], live = live, stale = stale, current = current, fits = fits,
               ttl = window_ms + bucket_ms}
end

local result = {allowed, now}
for i, limit in ipairs(limits) do
  local reply = {limit.fits}
  if allowed == 1 and cost > 0 then
    local charged = redis.call('HINCRBY', limit.key, limit.current, cost)
    local found = false
    for _, bucket in ipairs(limit.live) do
      if bucket[1] == limit.current then bucket[2] = charged; found = true end
    end
    if not found then limit.live[#limit.live + 1] = {limit.current, charged} end
    if #limit.stale > 0 then redis.call('HDEL', limit.key, unpack(limit.stale)) end
    -- the newest bucket counts until it leaves the rolling window: one window plus one bucket
    redis.call('PEXPIRE', limit.key, limit.ttl)
  end
  for _, bucket in ipairs(limit.live) do
    reply[#reply + 1] = bucket[1]
    reply[#reply + 1] = bucket[2]
  end
  result[#result + 1] = reply
end
return result
