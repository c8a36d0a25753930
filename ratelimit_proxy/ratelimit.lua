-- Sliding-window counter over every limit of one request, all-or-nothing, in one round trip.
-- Same rule as ratelimit_proxy/limiter.py (integer milliseconds, so both decide alike): a limit is a
-- hash {bucket index -> count}; the live buckets are the current one and the `buckets` before it;
-- admit iff sum(live) + cost <= quota for EVERY limit, then charge the current bucket of each, with a
-- lease of up to `want` requests (never over a LEASE_SHARE-th of the tightest room left).
-- KEYS[i]: the hash of limit i; all keys of one client share a {hash tag} (one Redis Cluster slot).
-- ARGV: now_ms (negative: use the Redis clock), cost, then quota_i, window_ms_i, buckets_i per key, then
-- want, unspent (units of an ended lease given back first), and the bucket index each limit charged it to.
-- Returns {allowed, now_ms, granted, limit_1, limit_2, ...}; limit_i is {fits, used, oldest} after the
-- decision (charged when allowed; oldest: index of the oldest counted bucket, -1 when none), and a limit
-- that does not fit adds its live buckets {index, count, ...} for the caller to work out when it will.
local LEASE_SHARE = 4
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local cost = tonumber(ARGV[2])
local after_limits = 3 * #KEYS + 2
local want = tonumber(ARGV[after_limits + 1])
local unspent = tonumber(ARGV[after_limits + 2])
local allowed = 1
local room = nil
local limits = {}

for i = 1, #KEYS do
  local quota = tonumber(ARGV[3 * i])
  local window_ms = tonumber(ARGV[3 * i + 1])
  local buckets = tonumber(ARGV[3 * i + 2])
  local bucket_ms = window_ms / buckets
  local current = math.floor(now / bucket_ms)
  local first_live = current - buckets
  local returned_to = unspent > 0 and tonumber(ARGV[after_limits + 2 + i]) or nil
  local stored = redis.call('HGETALL', KEYS[i])
  local live, stale, used, oldest = {}, {}, 0, -1
  for j = 1, #stored, 2 do
    local index, count = tonumber(stored[j]), tonumber(stored[j + 1])
    if index >= first_live then
      if index == returned_to and count >= unspent then
        count = count - unspent
        if count == 0 then redis.call('HDEL', KEYS[i], stored[j]) else redis.call('HINCRBY', KEYS[i], stored[j], -unspent) end
      end
      if count > 0 then
        live[#live + 1] = index
        live[#live + 1] = count
        used = used + count
        if oldest < 0 or index < oldest then oldest = index end
      end
    else
      stale[#stale + 1] = stored[j]
    end
  end
  local fits = (used + cost <= quota) and 1 or 0
  if fits == 0 then allowed = 0 end
  if room == nil or quota - used < room then room = quota - used end
  limits[i] = {key = KEYS[i], live = live, stale = stale, used = used, oldest = oldest, current = current,
               fits = fits, ttl = window_ms + bucket_ms}
end

local granted = 0
if allowed == 1 then
  granted = 1
  if cost > 0 and want > 1 then granted = math.max(1, math.min(want, math.floor(room / (cost * LEASE_SHARE)))) end
end
local charge = cost * granted
local result = {allowed, now, granted}
for i, limit in ipairs(limits) do
  if allowed == 1 and cost > 0 then
    local charged = redis.call('HINCRBY', limit.key, limit.current, charge)
    limit.used = limit.used + charge
    if limit.oldest < 0 then limit.oldest = limit.current end
    if #limit.stale > 0 then redis.call('HDEL', limit.key, unpack(limit.stale)) end
    -- A new newest bucket counts until it leaves the rolling window: one window plus one bucket from
    -- now. Later charges to the same bucket need no longer life, so they skip the PEXPIRE.
    if charged == charge then redis.call('PEXPIRE', limit.key, limit.ttl) end
  end
  local reply = {limit.fits, limit.used, limit.oldest}
  if limit.fits == 0 then
    for _, value in ipairs(limit.live) do reply[#reply + 1] = value end
  end
  result[#result + 1] = reply
end
return result
