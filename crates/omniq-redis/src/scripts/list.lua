-- list.lua: a page of tasks, newest first (by enqueue order), read in one snapshot.
--
-- ARGV[4] = offset, ARGV[5] = limit, ARGV[6] = number of queues (0 = every queue), then the
-- queues, then the states (none = every state).
-- Reply: one HGETALL array per task.

local offset, limit, nq = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local queues, states = {}, {}
if nq == 0 then
  queues = redis.call('SMEMBERS', QUEUES)
else
  for i = 7, 6 + nq do
    queues[#queues + 1] = ARGV[i]
  end
end
for i = 7 + nq, #ARGV do
  states[#states + 1] = ARGV[i]
end
if #states == 0 then
  states = { 'blocked', 'scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled',
    'expired' }
end
local found = {}
for _, queue in ipairs(queues) do
  for _, state in ipairs(states) do
    local page = redis.call('ZREVRANGE', state_key(state, queue), 0, offset + limit - 1,
      'WITHSCORES')
    for i = 1, #page, 2 do
      found[#found + 1] = { page[i], tonumber(page[i + 1]) }
    end
  end
end
table.sort(found, function(a, b)
  return a[2] > b[2]
end)
local out = {}
for i = offset + 1, math.min(#found, offset + limit) do
  out[#out + 1] = redis.call('HGETALL', task_key(found[i][1]))
end
return out
