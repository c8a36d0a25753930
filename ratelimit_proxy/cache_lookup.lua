-- One stored response for a request, or the fill lock (ratelimit_proxy/cache_store.py).
-- KEYS[1] rc:{key} (hash: "<partition>:vary", "<partition>:<variant>", "target"), KEYS[2] rc:{key}:lock
-- ARGV[1] partition, ARGV[2] lock owner ("": do not lock), ARGV[3] lease ms, ARGV[4..] request header
-- name (lower-case) and value pairs. Returns {entry or nil, 1 if this call took the lock, 1 if locked}.
-- The variant is the hash of cache_policy.variant_key, step for step: each varied name with its value,
-- runs of spaces and tabs collapsed to one, trimmed, one line each, SHA-1 of the lines.
local vary = redis.call('HGET', KEYS[1], ARGV[1] .. ':vary')
if vary then
  local headers = {}
  for i = 4, #ARGV, 2 do
    headers[ARGV[i]] = ARGV[i + 1]
  end
  local lines = {}
  for name in string.gmatch(vary, '[^,]+') do
    local value = string.gsub(headers[name] or '', '[ \t]+', ' ')
    lines[#lines + 1] = name .. ':' .. string.match(value, '^ *(.-) *$') .. '\n'
  end
  local entry = redis.call('HGET', KEYS[1], ARGV[1] .. ':' .. redis.sha1hex(table.concat(lines)))
  if entry then
    return {entry, 0, 0}
  end
end
if ARGV[2] ~= '' and redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  return {false, 1, 1}
end
return {false, 0, redis.call('EXISTS', KEYS[2])}
