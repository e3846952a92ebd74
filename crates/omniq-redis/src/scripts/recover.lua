-- recover.lua: takes back tasks whose lease expired.
--
-- Atomic because the lease deadline check and the requeue must be one step (a heartbeat in
-- between would otherwise be overwritten and the task run twice), and two workers
-- recovering at once must never both requeue a task.
--
-- ARGV[4] = limit, ARGV[5] = the lease_lost TaskError (JSON).
-- Reply: changes (the recovered tasks, then the dependents a failure settled).

local limit, err = tonumber(ARGV[4]), ARGV[5]
local changes = {}
local ids = redis.call('ZRANGEBYSCORE', LEASES, '-inf', int(server_micros()), 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('ZREM', LEASES, id)
  local tk = task_key(id)
  local h = redis.call('HMGET', tk, 'state', 'attempts', 'max_attempts', 'queue', 'seq',
    'errors', 'expires_at', 'unique_key', 'children', 'priority', 'run_at', 'cancel', 'reason')
  if h[1] == 'running' then
    local queue, seq = h[4], h[5]
    local errors = with_error(h[6], h[2], err)
    if h[12] == '1' then
      -- Its cancel was requested while it ran: recovering it must not run it again.
      finish(id, tk, queue, seq, 'running', 'cancelled', h[13] or CANCELLED_WHILE_RUNNING,
        h[7], h[8], 'errors', errors)
      changes[#changes + 1] = change(id, tk)
      settle(id, h[9], changes)
    elseif tonumber(h[2]) >= tonumber(h[3]) then
      finish(id, tk, queue, seq, 'running', 'failed', nil, h[7], h[8], 'errors', errors)
      changes[#changes + 1] = change(id, tk)
      settle(id, h[9], changes)
    else
      redis.call('HDEL', tk, 'lease_at', 'token')
      enter_state(id, tk, queue, seq, 'running', 'queued', h[10], h[11], 'errors', errors,
        'cancel', '0')
      wake(queue)
      watch_expiry(id, h[7])
      changes[#changes + 1] = change(id, tk)
    end
  end
end
flush_wakes()
return changes
