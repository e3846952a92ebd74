-- purge.lua: deletes finished tasks of one queue and state, a batch at a time.
--
-- Atomic so that a task is never half deleted (its hash gone but still indexed).
--
-- ARGV[4] = queue, ARGV[5] = terminal state, ARGV[6] = finished before (micros, '' = any),
-- ARGV[7] = cursor (enqueue seq; members after it are examined), ARGV[8] = batch size.
-- Reply: {deleted, last seq examined, examined}.
--
-- With a `before` (retention), the oldest come from the finish-time index and every one
-- examined is deleted, so a sweep costs what it deletes, never a walk of the younger
-- tasks. Without one, the state set is walked from the cursor, deleting all.

local queue, state, before = ARGV[4], ARGV[5], ARGV[6]
local set, done = state_key(state, queue), done_key(state, queue)
local batch = tonumber(ARGV[8])

local function delete(id)
  local tk = task_key(id)
  redis.call('ZREM', set, id)
  redis.call('ZREM', done, id)
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
end

if before ~= '' then
  local found = redis.call('ZRANGEBYSCORE', done, '-inf', '(' .. before, 'LIMIT', 0, batch)
  for _, id in ipairs(found) do
    delete(id)
  end
  return { #found, ARGV[7], #found }
end

local found = redis.call('ZRANGEBYSCORE', set, '(' .. ARGV[7], '+inf', 'WITHSCORES', 'LIMIT', 0,
  batch)
local last = ARGV[7]
for i = 1, #found, 2 do
  last = found[i + 1]
  delete(found[i])
end
return { #found / 2, last, #found / 2 }
