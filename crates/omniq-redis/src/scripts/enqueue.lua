-- enqueue.lua: stores a batch of new tasks.
--
-- Atomic because a batch is all or nothing (an unknown parent stores none of it), the
-- unique-key check and the key's claim must not interleave with another enqueue (or two
-- "unique" tasks would both be stored), and a dependent's verdict must read its parents'
-- states in the same instant it registers itself as their dependent (or a parent finishing
-- in between would never settle it).
--
-- ARGV[4] = number of tasks, ARGV[5] = fields per task, then per task:
--   1 id, 2 queue, 3 name, 4 payload, 5 priority, 6 run_at, 7 expires_at ('' = none),
--   8 max_attempts, 9 has unique key ('0'/'1'), 10 unique key, 11 unique_for in micros
--   ('' = none), 12 parents (comma-separated, '' = none), 13 run_when, 14 created_at,
--   15 options (JSON)
-- Reply: {'unknown_parent', id} (nothing stored), or {'ok', outcomes} with one outcome per
-- task: {'created', id, state} or {'duplicate', existing id}.

local n, f = tonumber(ARGV[4]), tonumber(ARGV[5])
local function arg(i, k)
  return ARGV[5 + (i - 1) * f + k]
end

-- Every parent must exist already or be an earlier task of this batch.
local batch = {}
for i = 1, n do
  local deps = arg(i, 12)
  if deps ~= '' then
    for pid in string.gmatch(deps, '[^,]+') do
      if not batch[pid] and redis.call('EXISTS', task_key(pid)) == 0 then
        return { 'unknown_parent', pid }
      end
    end
  end
  batch[arg(i, 1)] = true
end

local outcomes = {}
for i = 1, n do
  local id, queue = arg(i, 1), arg(i, 2)
  local tk = task_key(id)
  local has_unique, key = arg(i, 9) == '1', arg(i, 10)
  local existing = nil
  if redis.call('EXISTS', tk) == 1 then
    existing = id -- the same task sent again
  end
  if not existing and has_unique then
    existing = redis.call('GET', B .. ':unique:' .. key) or nil
    local window = arg(i, 11)
    if not existing and window ~= '' then
      local last = redis.call('GET', B .. ':uhist:' .. key)
      if last then
        local created = redis.call('HGET', task_key(last), 'created_at')
        if created and tonumber(created) + tonumber(window) > NOW then
          existing = last
        end
      end
    end
  end
  if existing then
    outcomes[i] = { 'duplicate', existing }
  else
    local deps = arg(i, 12)
    local v = 'run'
    if deps ~= '' then
      v = verdict(arg(i, 13), parent_states(deps))
    end
    local seq = redis.call('INCR', SEQ)
    redis.call('HSET', tk, 'id', id, 'queue', queue, 'name', arg(i, 3), 'payload', arg(i, 4),
      'priority', arg(i, 5), 'run_at', arg(i, 6), 'max_attempts', arg(i, 8),
      'run_when', arg(i, 13), 'created_at', arg(i, 14), 'opts', arg(i, 15),
      'attempts', '0', 'seq', int(seq), 'errors', '[]', 'cancel', '0', 'updated_at', NOW_S)
    if arg(i, 7) ~= '' then
      redis.call('HSET', tk, 'expires_at', arg(i, 7))
    end
    if has_unique then
      redis.call('HSET', tk, 'unique_key', key)
    end
    if deps ~= '' then
      redis.call('HSET', tk, 'deps', deps)
      for pid in string.gmatch(deps, '[^,]+') do
        redis.call('RPUSH', B .. ':children:' .. pid, id)
      end
    end
    redis.call('SADD', QUEUES, queue)
    local state
    if v == 'run' then
      state = make_available(id, tk, queue, nil)
    elseif v == 'wait' then
      state = 'blocked'
      enter_state(id, tk, queue, nil, state)
    else
      state = 'cancelled'
      enter_state(id, tk, queue, nil, state)
      redis.call('HSET', tk, 'finished_at', NOW_S,
        'reason', 'its parents had already settled against it')
    end
    if has_unique then
      redis.call('SET', B .. ':uhist:' .. key, id)
      -- A task born cancelled holds no key: uniqueness only binds live tasks.
      if state ~= 'cancelled' then
        redis.call('SET', B .. ':unique:' .. key, id)
      end
    end
    if state ~= 'cancelled' then
      watch_expiry(id, tk)
    end
    outcomes[i] = { 'created', id, state }
  end
end
flush_wakes()
return { 'ok', outcomes }
