-- stats.lua: one queue's task count per state, and when its oldest ready task was
-- enqueued, read in one snapshot.
--
-- ARGV[4] = queue. Reply: {counts in lifecycle order, created_at of the oldest Queued task
-- or nil}.

local queue = ARGV[4]
local counts = {}
for _, state in ipairs({ 'blocked', 'scheduled', 'queued', 'running', 'succeeded', 'failed',
  'cancelled', 'expired' }) do
  counts[#counts + 1] = redis.call('ZCARD', state_key(state, queue))
end
local oldest = false
local first = redis.call('ZRANGE', state_key('queued', queue), 0, 0)
if first[1] then
  oldest = redis.call('HGET', task_key(first[1]), 'created_at')
end
return { counts, oldest }
