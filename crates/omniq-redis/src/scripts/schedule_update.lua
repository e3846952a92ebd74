-- schedule_update.lua: replaces a schedule, or (with an expected next fire) moves its next
-- fire only if it is still the one the caller read: the compare-and-set that claims a fire
-- exactly once.
--
-- Atomic because the check and the write must be one step: of two schedulers racing for
-- the same fire, only one may move it.
--
-- KEYS as in schedule_create.lua.
-- ARGV[1] = name, ARGV[2] = JSON, ARGV[3] = next fire ('' = none), ARGV[4] = paused '0'/'1',
-- ARGV[5] = 'any' (plain update) or 'cas', ARGV[6] = expected next fire ('' = none),
-- ARGV[7] (cas) = the stored JSON the caller merged its fire into.
-- Reply: 1 when written, 0 when the schedule does not exist or (cas) another got there
-- first, 2 (cas) when the schedule was changed since the caller read it: read and merge
-- again, so that a pause or an update is never undone.

local current = redis.call('HGET', KEYS[2], ARGV[1])
if not current then
  if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
    return 0
  end
  current = ''
end
if ARGV[5] == 'cas' then
  if current ~= ARGV[6] then
    return 0
  end
  if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[7] then
    return 2
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if ARGV[4] == '0' and ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
else
  redis.call('ZREM', KEYS[3], ARGV[1])
end
return 1
