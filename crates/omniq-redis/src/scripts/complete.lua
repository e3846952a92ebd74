-- complete.lua: applies completions, each fenced by its lease token, and settles the
-- dependents of the tasks that finished.
--
-- Atomic because the fence (state running, token matches) and the new state must be one
-- step: a stalled worker's completion must never land after another worker took the task
-- over; and a parent's end and its dependents' new states must be seen together (a
-- dependent must never be left Blocked behind a finished parent).
--
-- ARGV[4..] = groups of: task id, lease token, outcome ('succeeded', 'failed', 'cancelled',
-- 'retry', 'release'), detail (TaskError JSON, or the cancel reason), run_at (retry, micros).
-- Reply: {statuses ('applied' / 'lost'), changes}.

local statuses, changes = {}, {}
for i = 4, #ARGV, 5 do
  local id, token, kind, detail, run_at = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local tk = task_key(id)
  local h = redis.call('HMGET', tk, 'state', 'token', 'queue', 'attempts', 'reason')
  if h[1] ~= 'running' or h[2] ~= token then
    statuses[#statuses + 1] = 'lost'
  else
    statuses[#statuses + 1] = 'applied'
    local queue = h[3]
    redis.call('ZREM', LEASES, id)
    redis.call('HDEL', tk, 'lease_at', 'token')
    if kind == 'succeeded' then
      finish(id, tk, 'succeeded', nil)
      settle(id, changes)
    elseif kind == 'failed' then
      push_error(tk, h[4], detail)
      finish(id, tk, 'failed', nil)
      settle(id, changes)
    elseif kind == 'cancelled' then
      -- A reason given when the cancel was requested wins over the worker's.
      finish(id, tk, 'cancelled', h[5] or detail)
      settle(id, changes)
    elseif kind == 'retry' then
      push_error(tk, h[4], detail)
      redis.call('HSET', tk, 'run_at', run_at, 'cancel', '0')
      make_available(id, tk, queue, 'running')
      watch_expiry(id, tk)
    elseif kind == 'release' then
      local attempts = tonumber(h[4]) - 1
      if attempts < 0 then
        attempts = 0
      end
      redis.call('HSET', tk, 'attempts', int(attempts), 'cancel', '0')
      enter_state(id, tk, queue, 'running', 'queued')
      file_ready(id, tk, queue)
      wake(queue)
      watch_expiry(id, tk)
    end
  end
end
flush_wakes()
return { statuses, changes }
