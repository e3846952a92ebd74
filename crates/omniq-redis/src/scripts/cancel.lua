-- cancel.lua: cancels a task, at once when it has not started (with its dependents), by
-- request when it runs.
--
-- Atomic because the state read and the cancellation must be one step: a task claimed in
-- between must be marked, not cancelled under its worker's feet.
--
-- ARGV[4] = task id, ARGV[5] = reason.
-- Reply: {'not_found'}, {'cancelled', changes}, {'requested', {}} or {'finished', state}.

local id, reason = ARGV[4], ARGV[5]
local tk = task_key(id)
local h = redis.call('HMGET', tk, 'state', 'queue', 'seq', 'run_at', 'expires_at',
  'unique_key', 'children')
if not h[1] then
  return { 'not_found' }
end
if WAITING[h[1]] then
  local changes = {}
  make_unavailable(id, h[2], h[1], h[4], h[3])
  finish(id, tk, h[2], h[3], h[1], 'cancelled', reason, h[5], h[6])
  settle(id, h[7], changes)
  flush_wakes()
  return { 'cancelled', changes }
end
if h[1] == 'running' then
  -- The worker learns it at its next heartbeat and stops the task.
  redis.call('HSET', tk, 'cancel', '1', 'reason', reason, 'updated_at', NOW_S)
  return { 'requested', {} }
end
return { 'finished', h[1] }
