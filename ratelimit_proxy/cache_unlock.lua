-- Release the fill lock only if this owner still holds it (its lease may have run out and passed on).
-- KEYS[1] rc:{key}:lock, ARGV[1] owner
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
