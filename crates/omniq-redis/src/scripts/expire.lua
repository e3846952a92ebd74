-- expire.lua: marks Expired the waiting tasks whose expires_at has passed, and settles
-- their dependents.
--
-- Atomic because the state check and the expiry must be one step: a task claimed in between
-- must not be expired while it runs.
--
-- ARGV[4] = limit, ARGV[5] = the reason.
-- Reply: changes.

local limit, reason = tonumber(ARGV[4]), ARGV[5]
local changes = {}
local expired = 0
while expired < limit do
  local ids = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', NOW_S, 'LIMIT', 0, limit - expired)
  if #ids == 0 then
    break
  end
  for _, id in ipairs(ids) do
    redis.call('ZREM', EXPIRY, id)
    local tk = task_key(id)
    local h = redis.call('HMGET', tk, 'state', 'queue', 'seq', 'run_at', 'expires_at',
      'unique_key', 'children')
    if h[1] and WAITING[h[1]] then
      make_unavailable(id, h[2], h[1], h[4], h[3])
      finish(id, tk, h[2], h[3], h[1], 'expired', reason, h[5], h[6])
      changes[#changes + 1] = change(id, tk)
      settle(id, h[7], changes)
      expired = expired + 1
    end
  end
end
flush_wakes()
return changes
