-- complete.lua: applies completions, each fenced by its lease token, and settles the
-- dependents of the tasks that finished.
--
-- Atomic because the fence (state running, token matches) and the new state must be one
-- step: a stalled worker's completion must never land after another worker took the task
-- over; and a parent's end and its dependents' new states must be seen together (a
-- dependent must never be left Blocked behind a finished parent).
--
-- ARGV[4..] = groups of: task id, lease token, outcome ('succeeded', 'failed', 'cancelled',
-- 'retry', 'snooze', 'release'), detail (TaskError JSON, or the cancel reason), run_at (retry
-- and snooze, micros).
-- Reply: {statuses ('applied' / 'lost'), changes}.

local statuses, changes = {}, {}
for i = 4, #ARGV, 5 do
  local id, token, kind, detail, run_at = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local tk = task_key(id)
  -- What the fence and every outcome need; an outcome needing more reads it itself.
  local h = redis.call('HMGET', tk, 'state', 'token', 'queue', 'seq', 'expires_at',
    'unique_key', 'children', 'completed_token')
  if h[1] ~= 'running' and h[8] == token then
    -- This lease's completion is in already: a re-send after a lost reply, or the same
    -- lease twice in the batch. Applied, nothing changes.
    statuses[#statuses + 1] = 'applied'
  elseif h[1] ~= 'running' or h[2] ~= token then
    statuses[#statuses + 1] = 'lost'
  else
    statuses[#statuses + 1] = 'applied'
    -- Kept after the lease ends, so that a re-send is known (above); only a completion
    -- writes it, so a lease recovered after it lapsed is never taken for completed.
    redis.call('HSET', tk, 'completed_token', token)
    local queue, seq, expires_at, unique_key = h[3], h[4], h[5], h[6]
    redis.call('ZREM', LEASES, id)
    -- A retry, snooze or release of a task whose cancel was requested while it ran ends
    -- it Cancelled instead: the request must not be lost with the attempt.
    if (kind == 'retry' or kind == 'snooze' or kind == 'release') and redis.call('HGET', tk, 'cancel') == '1' then
      kind = 'cancelled'
      detail = CANCELLED_WHILE_RUNNING
    end
    if kind == 'succeeded' or kind == 'failed' or kind == 'cancelled' then
      if kind == 'succeeded' then
        finish(id, tk, queue, seq, 'running', 'succeeded', nil, expires_at, unique_key)
      elseif kind == 'failed' then
        local more = redis.call('HMGET', tk, 'attempts', 'errors')
        finish(id, tk, queue, seq, 'running', 'failed', nil, expires_at, unique_key,
          'errors', with_error(more[2], more[1], detail))
      else
        -- A reason given when the cancel was requested wins over the worker's.
        local reason = redis.call('HGET', tk, 'reason')
        finish(id, tk, queue, seq, 'running', 'cancelled', reason or detail, expires_at,
          unique_key)
      end
      settle(id, h[7], changes)
    else
      redis.call('HDEL', tk, 'lease_at', 'token')
      if kind == 'retry' then
        local more = redis.call('HMGET', tk, 'attempts', 'errors', 'priority')
        make_available(id, tk, queue, seq, 'running', more[3], run_at,
          'errors', with_error(more[2], more[1], detail), 'run_at', run_at, 'cancel', '0')
        watch_expiry(id, expires_at)
      elseif kind == 'snooze' then
        -- The attempt is given back; no error is recorded.
        local more = redis.call('HMGET', tk, 'attempts', 'priority')
        local attempts = tonumber(more[1]) - 1
        if attempts < 0 then
          attempts = 0
        end
        make_available(id, tk, queue, seq, 'running', more[2], run_at,
          'attempts', int(attempts), 'run_at', run_at, 'cancel', '0')
        watch_expiry(id, expires_at)
      elseif kind == 'release' then
        local more = redis.call('HMGET', tk, 'attempts', 'priority', 'run_at')
        local attempts = tonumber(more[1]) - 1
        if attempts < 0 then
          attempts = 0
        end
        enter_state(id, tk, queue, seq, 'running', 'queued', more[2], more[3],
          'attempts', int(attempts), 'cancel', '0')
        wake(queue)
        watch_expiry(id, expires_at)
      end
    end
  end
end
flush_wakes()
return { statuses, changes }
