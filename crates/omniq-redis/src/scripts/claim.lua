-- claim.lua: leases up to `limit` ready tasks from the named queues, in strict queue order.
--
-- Atomic because taking a task out of the ready set, counting its attempt, minting its
-- lease and filing it in the lease set must be one step: two workers must never both get
-- a task, and a task must never be out of the ready set without being in the lease set
-- (a crash in between would lose it). The task is in Redis, in the lease set, for as long
-- as it runs: nothing like BRPOP ever leaves it only in a worker's memory.
--
-- ARGV[4] = limit, ARGV[5] = lease deadline (micros), ARGV[6] = worker id,
-- ARGV[7] = lease token, ARGV[8..] = queues in order.
-- Reply: one array per lease, the fields of spec_fields().

local limit = tonumber(ARGV[4])
local deadline, worker, token = ARGV[5], ARGV[6], ARGV[7]
local leases = {}
for qi = 8, #ARGV do
  if #leases >= limit then
    break
  end
  local queue = ARGV[qi]
  -- Scheduled tasks whose run_at has come join the ready set first.
  local delayed = B .. ':delayed:' .. queue
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', NOW_S, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', delayed, id)
    local tk = task_key(id)
    if redis.call('HGET', tk, 'state') == 'scheduled' then
      enter_state(id, tk, queue, 'scheduled', 'queued')
      file_ready(id, tk, queue)
    end
  end
  local ready = B .. ':ready:' .. queue
  while #leases < limit do
    local members = redis.call('ZRANGE', ready, 0, limit - #leases - 1)
    if #members == 0 then
      break
    end
    for _, member in ipairs(members) do
      redis.call('ZREM', ready, member)
      local id = string.sub(member, 41)
      local tk = task_key(id)
      local h = redis.call('HMGET', tk, 'state', 'expires_at')
      if h[1] == 'queued' then
        redis.call('HDEL', tk, 'rk')
        -- An expired task is never handed out; it stays in the expiry index, where
        -- expire_due finds it and marks it Expired.
        if not (h[2] and tonumber(h[2]) <= NOW) then
          enter_state(id, tk, queue, 'queued', 'running')
          redis.call('HINCRBY', tk, 'attempts', 1)
          redis.call('HSET', tk, 'token', token, 'lease_at', deadline, 'worker', worker,
            'started_at', NOW_S, 'cancel', '0')
          redis.call('ZADD', LEASES, deadline, id)
          redis.call('ZREM', EXPIRY, id)
          leases[#leases + 1] = spec_fields(tk)
        end
      end
    end
  end
end
return leases
