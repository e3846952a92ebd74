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
local ids = redis.call('ZRANGEBYSCORE', LEASES, '-inf', NOW_S, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('ZREM', LEASES, id)
  local tk = task_key(id)
  local h = redis.call('HMGET', tk, 'state', 'attempts', 'max_attempts', 'queue')
  if h[1] == 'running' then
    redis.call('HDEL', tk, 'lease_at', 'token')
    push_error(tk, h[2], err)
    if tonumber(h[2]) >= tonumber(h[3]) then
      finish(id, tk, 'failed', nil)
      changes[#changes + 1] = change(id, tk)
      settle(id, changes)
    else
      redis.call('HSET', tk, 'cancel', '0')
      enter_state(id, tk, h[4], 'running', 'queued')
      file_ready(id, tk, h[4])
      wake(h[4])
      watch_expiry(id, tk)
      changes[#changes + 1] = change(id, tk)
    end
  end
end
flush_wakes()
return changes
