-- Replaces a limiter's state only from the version read (compare-and-set).
-- KEYS[1]: the limiter hash {v = version, s = state}.
-- ARGV[1]: the version read ('' when nothing was there); ARGV[2]: the new state.
-- Returns 1 when written, 0 when another writer came first.
local current = redis.call('HGET', KEYS[1], 'v')
if ARGV[1] == '' then
  if current then
    return 0
  end
  redis.call('HSET', KEYS[1], 'v', 1, 's', ARGV[2])
  return 1
end
if current ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'v', tonumber(current) + 1, 's', ARGV[2])
return 1
