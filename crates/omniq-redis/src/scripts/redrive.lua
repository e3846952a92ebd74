-- redrive.lua: sends dead letters (Failed tasks) back to their queues.
--
-- Atomic because the unique-key check and the key's claim must not interleave with an
-- enqueue: a task whose key another live task holds stays Failed.
--
-- Bounded work per call, so a big dead-letter set never blocks the server: the caller pages.
-- ARGV[4] = 'ids' (ARGV[5..] are task ids, a page of them), or 'queue': ARGV[5] = the queue,
-- ARGV[6] = cursor (enqueue seq; Failed members after it are examined), ARGV[7] = page size.
-- Reply: {last seq examined, examined, the ids re-driven...}.
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
local last, examined = '', 0
if mode == 'ids' then
  for i = 5, #ARGV do
    redrive(ARGV[i])
  end
else
  -- By score, not rank: re-driven members leave the set and kept ones stay, so a rank
  -- would skip or repeat members between pages.
  last = ARGV[6]
  local page = redis.call('ZRANGEBYSCORE', state_key('failed', ARGV[5]), '(' .. last, '+inf',
    'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[7]))
  for i = 1, #page, 2 do
    last = page[i + 1]
    redrive(page[i])
  end
  examined = #page / 2
end
flush_wakes()
local reply = { last, examined }
for _, id in ipairs(out) do
  reply[#reply + 1] = id
end
return reply
