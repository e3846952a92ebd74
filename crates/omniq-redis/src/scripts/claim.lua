-- claim.lua: leases up to `limit` ready tasks from the named queues, in strict queue order.
--
-- Atomic because taking a task out of the ready set, counting its attempt, minting its
-- lease and filing it in the lease set must be one step: two workers must never both get
-- a task, and a task must never be out of the ready set without being in the lease set
-- (a crash in between would lose it). The task is in Redis, in the lease set, for as long
-- as it runs: nothing like BRPOP ever leaves it only in a worker's memory.
--
-- ARGV[4] = limit, ARGV[5] = lease length (micros), ARGV[6] = worker id,
-- ARGV[7] = lease token, ARGV[8..] = queues in order.
-- Reply: one array per lease, its fields in the order of codec::LEASE_FIELDS (the task's,
-- then the lease deadline, in micros on the server's clock).

-- A lease's fields, in the order the Rust side reads them (codec::LEASE_FIELDS), are those of
-- the HMGET below, but for the id and the queue, which the script knows: their places are
-- read as the task's state and seq, then filled in; the deadline is appended.
local ID, QUEUE, EXPIRES_AT, ATTEMPTS = 1, 3, 7, 14
local STATE, SEQ_AT = ID, QUEUE
local limit = tonumber(ARGV[4])
local deadline, worker, token = int(server_micros() + tonumber(ARGV[5])), ARGV[6], ARGV[7]
local leases = {}
for qi = 8, #ARGV do
  if #leases >= limit then
    break
  end
  local queue = ARGV[qi]
  -- Scheduled tasks whose run_at has come join the ready set first.
  local delayed = B .. ':delayed:' .. queue
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', NOW_S, 'LIMIT', 0, 1000)
  if #due > 0 then
    redis.call('ZREM', delayed, unpack(due))
  end
  for _, id in ipairs(due) do
    local tk = task_key(id)
    local h = redis.call('HMGET', tk, 'state', 'seq', 'priority', 'run_at')
    if h[1] == 'scheduled' then
      enter_state(id, tk, queue, h[2], 'scheduled', 'queued', h[3], h[4])
    end
  end
  local ready = B .. ':ready:' .. queue
  while #leases < limit do
    -- At most 1000 at a time (the ZREM below takes them all as arguments). Not ZPOPMIN: its
    -- reply carries every member's score, as text.
    local members = redis.call('ZRANGE', ready, 0, int(math.min(limit - #leases, 1000) - 1))
    if #members == 0 then
      break
    end
    redis.call('ZREM', ready, unpack(members))
    for _, member in ipairs(members) do
      local id = string.sub(member, 41)
      local tk = task_key(id)
      local h = redis.call('HMGET', tk, 'state', 'name', 'seq', 'payload', 'priority', 'run_at',
        'expires_at', 'max_attempts', 'unique_key', 'deps', 'run_when', 'created_at', 'opts',
        'attempts')
      local expires_at = h[EXPIRES_AT]
      -- An expired task is never handed out; it stays in the expiry index, where
      -- expire_due finds it and marks it Expired.
      if h[STATE] == 'queued' and not (expires_at and tonumber(expires_at) <= NOW) then
        local attempts = int(tonumber(h[ATTEMPTS]) + 1)
        enter_state(id, tk, queue, h[SEQ_AT], 'queued', 'running', nil, nil, 'attempts', attempts,
          'token', token, 'lease_at', deadline, 'worker', worker, 'started_at', NOW_S,
          'cancel', '0')
        redis.call('ZADD', LEASES, deadline, id)
        if expires_at then
          redis.call('ZREM', EXPIRY, id)
        end
        h[ID], h[QUEUE], h[ATTEMPTS] = id, queue, attempts
        h[ATTEMPTS + 1] = deadline
        leases[#leases + 1] = h
      end
    end
  end
end
return leases
