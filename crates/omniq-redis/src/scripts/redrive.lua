-- redrive.lua: sends dead letters (Failed tasks) back to their queues.
--
-- Atomic because the unique-key check and the key's claim must not interleave with an
-- enqueue: a task whose key another live task holds stays Failed.
--
-- ARGV[4] = 'ids' (ARGV[5..] are task ids), 'queues' (ARGV[5..] are queue names) or 'all'.
-- Reply: the ids re-driven.

local out = {}
local function redrive(id)
  local tk = task_key(id)
  local h = redis.call('HMGET', tk, 'state', 'queue', 'unique_key', 'seq', 'priority',
    'expires_at')
  if h[1] ~= 'failed' then
    return
  end
  if h[3] then
    local uk = B .. ':unique:' .. h[3]
    if redis.call('EXISTS', uk) == 1 then
      return
    end
    redis.call('SET', uk, id)
  end
  redis.call('HDEL', tk, 'finished_at', 'reason')
  enter_state(id, tk, h[2], h[4], 'failed', 'queued', h[5], NOW_S, 'attempts', '0',
    'run_at', NOW_S, 'cancel', '0')
  wake(h[2])
  watch_expiry(id, h[6])
  out[#out + 1] = id
end

local mode = ARGV[4]
if mode == 'ids' then
  for i = 5, #ARGV do
    redrive(ARGV[i])
  end
else
  local queues
  if mode == 'all' then
    queues = redis.call('SMEMBERS', QUEUES)
  else
    queues = {}
    for i = 5, #ARGV do
      queues[#queues + 1] = ARGV[i]
    end
  end
  for _, queue in ipairs(queues) do
    for _, id in ipairs(redis.call('ZRANGE', state_key('failed', queue), 0, -1)) do
      redrive(id)
    end
  end
end
flush_wakes()
return out
