-- purge.lua: deletes finished tasks of one queue and state, a batch at a time.
--
-- Atomic so that a task is never half deleted (its hash gone but still indexed).
--
-- ARGV[4] = queue, ARGV[5] = terminal state, ARGV[6] = finished before (micros, '' = any),
-- ARGV[7] = cursor (enqueue seq; members after it are examined), ARGV[8] = batch size.
-- Reply: {deleted, last seq examined, examined}.

local queue, state, before = ARGV[4], ARGV[5], ARGV[6]
local set = state_key(state, queue)
local found = redis.call('ZRANGEBYSCORE', set, '(' .. ARGV[7], '+inf', 'WITHSCORES', 'LIMIT', 0,
  tonumber(ARGV[8]))
local deleted, last = 0, ARGV[7]
for i = 1, #found, 2 do
  local id = found[i]
  last = found[i + 1]
  local tk = task_key(id)
  local finished = redis.call('HGET', tk, 'finished_at')
  if before == '' or (finished and tonumber(finished) < tonumber(before)) then
    redis.call('ZREM', set, id)
    local key = redis.call('HGET', tk, 'unique_key')
    if key then
      for _, k in ipairs({ B .. ':uhist:' .. key, B .. ':unique:' .. key }) do
        if redis.call('GET', k) == id then
          redis.call('DEL', k)
        end
      end
    end
    redis.call('DEL', tk, B .. ':children:' .. id)
    redis.call('ZREM', EXPIRY, id)
    deleted = deleted + 1
  end
end
return { deleted, last, #found / 2 }
