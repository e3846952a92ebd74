-- list.lua: a page of tasks, newest first (by enqueue order), read in one snapshot.
--
-- Paging is by enqueue order (`seq`), not by position, so one call costs at most `count`
-- members of each (queue, state) set, whatever the page: the caller skips an offset in
-- calls of its own (with hashes = '0'), each as bounded as the page itself.
--
-- ARGV[4] = below: only tasks enqueued before this seq ('+inf' for the newest, or '(<seq>'),
-- ARGV[5] = count, ARGV[6] = hashes ('1': each task's HGETALL array; '0': its id and seq),
-- ARGV[7] = number of queues (0 = every queue), then the queues, then the states (none =
-- every state).
-- Reply: one array per task, newest first.

local below, count, hashes, nq = ARGV[4], tonumber(ARGV[5]), ARGV[6] == '1', tonumber(ARGV[7])
local queues, states = {}, {}
if nq == 0 then
  queues = redis.call('SMEMBERS', QUEUES)
else
  for i = 8, 7 + nq do
    queues[#queues + 1] = ARGV[i]
  end
end
for i = 8 + nq, #ARGV do
  states[#states + 1] = ARGV[i]
end
if #states == 0 then
  states = { 'blocked', 'scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled',
    'expired' }
end
local found = {}
for _, queue in ipairs(queues) do
  for _, state in ipairs(states) do
    local page = redis.call('ZREVRANGEBYSCORE', state_key(state, queue), below, '-inf',
      'WITHSCORES', 'LIMIT', 0, count)
    for i = 1, #page, 2 do
      found[#found + 1] = { page[i], page[i + 1] }
    end
  end
end
table.sort(found, function(a, b)
  return tonumber(a[2]) > tonumber(b[2])
end)
local out = {}
for i = 1, math.min(#found, count) do
  if hashes then
    out[#out + 1] = redis.call('HGETALL', task_key(found[i][1]))
  else
    out[#out + 1] = { found[i][1], found[i][2] }
  end
end
return out
