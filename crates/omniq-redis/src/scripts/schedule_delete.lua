-- schedule_delete.lua: deletes a schedule from all three keys at once, so that a schedule
-- is never due without a definition.
--
-- KEYS as in schedule_create.lua. ARGV[1] = name. Reply: 1 when it existed, else 0.

redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
