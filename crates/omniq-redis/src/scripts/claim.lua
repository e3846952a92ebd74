-- claim.lua: leases up to `limit` ready tasks from the named queues, in strict queue order.
--
-- Atomic because taking a task out of the ready set, counting its attempt, minting its
-- lease and filing it in the lease set must be one step: two workers must never both get
-- a task, and a task must never be out of the ready set without being in the lease set
-- (a crash in between would lose it). The task is in Redis, in the lease set, for as long
-- as it runs: nothing like BRPOP ever leaves it only in a worker's memory.
--
-- ARGV[4] = limit, ARGV[5] = lease length (micros), ARGV[6] = worker id,
-- ARGV[7] = lease token, ARGV[8] = the task names the worker runs, a JSON array ('' for
-- every name), ARGV[9] = the latest run_at (micros) at which a task of another name is
-- taken all the same ('' for never), ARGV[10..] = queues in order.
--
-- With names, a ready task of another name stays in the ready set for a worker that runs
-- it (a rolling deploy); at most SKIP_LIMIT of them are passed over per queue and call, so
-- a claim never walks a huge backlog.
-- Reply: one array per lease, its fields in the order of codec::LEASE_FIELDS (the task's,
-- then the lease deadline, in micros on the server's clock).

-- A lease's fields, in the order the Rust side reads them (codec::LEASE_FIELDS), are those of
-- the HMGET below, but for the id and the queue, which the script knows: their places are
-- read as the task's state and seq, then filled in; the deadline is appended.
local ID, QUEUE, EXPIRES_AT, ATTEMPTS = 1, 3, 7, 14
local STATE, SEQ_AT = ID, QUEUE
local SKIP_LIMIT = 1000
local limit = tonumber(ARGV[4])
local deadline, worker, token = int(server_micros() + tonumber(ARGV[5])), ARGV[6], ARGV[7]
local known, unknown_due_by = nil, nil
if ARGV[8] ~= '' then
  known = {}
  for _, name in ipairs(cjson.decode(ARGV[8])) do
    known[name] = true
  end
  if ARGV[9] ~= '' then
    unknown_due_by = tonumber(ARGV[9])
  end
end
local leases = {}
for qi = 10, #ARGV do
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
  local skipped = 0
  while #leases < limit and skipped < SKIP_LIMIT do
    -- At most 1000 at a time (the ZREM below takes them all as arguments). Not ZPOPMIN: its
    -- reply carries every member's score, as text. Passed-over members stay at the front.
    local members = redis.call('ZRANGE', ready, skipped,
      int(skipped + math.min(limit - #leases, 1000) - 1))
    if #members == 0 then
      break
    end
    local taken, fields = {}, {}
    for _, member in ipairs(members) do
      local id = string.sub(member, 41)
      local h = redis.call('HMGET', task_key(id), 'state', 'name', 'seq', 'payload', 'priority',
        'run_at', 'expires_at', 'max_attempts', 'unique_key', 'deps', 'run_when', 'created_at',
        'opts', 'attempts')
      local expires_at = h[EXPIRES_AT]
      local expired = expires_at and tonumber(expires_at) <= NOW
      local claimable = h[STATE] == 'queued' and not expired
      if claimable and known and not known[h[2]]
          and not (unknown_due_by and tonumber(h[6]) <= unknown_due_by) then
        skipped = skipped + 1
      else
        taken[#taken + 1] = member
        if claimable then
          fields[#fields + 1] = { id, h }
        end
      end
    end
    if #taken > 0 then
      redis.call('ZREM', ready, unpack(taken))
    end
    -- An expired task is never handed out; it stays in the expiry index, where
    -- expire_due finds it and marks it Expired.
    for _, claimed in ipairs(fields) do
      local id, h = claimed[1], claimed[2]
      local tk = task_key(id)
      local expires_at = h[EXPIRES_AT]
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
return leases
