-- common.lua: the prelude of every task-queue script (the Rust side prepends it).
--
-- Calling convention, the same for every task-queue script:
--   KEYS[1] = {P}:leases   running tasks by lease deadline (micros)
--   KEYS[2] = {P}:expiry   waiting tasks with a TTL, by expires_at (micros)
--   KEYS[3] = {P}:seq      the enqueue counter
--   KEYS[4] = {P}:queues   every queue name used
--   ARGV[1] = {P}          the base every other key is derived from (same hash tag, same slot)
--   ARGV[2] = now, microseconds since the epoch
--   ARGV[3] = now, RFC 3339 (for error entries)
-- Script arguments start at ARGV[4].
--
-- Per-task and per-queue keys (task hashes, ready / delayed sets, state sets, dependents
-- lists, unique keys) are derived from ARGV[1], so they share its hash tag and slot.
--
-- Every number handed to redis.call is formatted first (int): Redis would otherwise turn a
-- Lua number such as 1.7e15 into text in exponent form.

local B = ARGV[1]
local NOW_S = ARGV[2]
local NOW = tonumber(NOW_S)
local NOW_TEXT = ARGV[3]
local LEASES, EXPIRY, SEQ, QUEUES = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local WAKE_CAP = 64

local function int(n)
  return string.format('%d', n)
end

local function task_key(id)
  return B .. ':task:' .. id
end

local function state_key(state, queue)
  return B .. ':st:' .. state .. ':' .. queue
end

local TERMINAL = { succeeded = true, failed = true, cancelled = true, expired = true }
local WAITING = { queued = true, scheduled = true, blocked = true }

-- The dependency rule, the same as omniq_models::RunWhen::verdict: what the parents'
-- states mean for a dependent ('run', 'wait' or 'cancel'). Every script that settles
-- dependents goes through this one function.
local function verdict(run_when, states)
  local all_finished, any_unsuccessful = true, false
  for _, s in ipairs(states) do
    if TERMINAL[s] then
      if s ~= 'succeeded' then
        any_unsuccessful = true
      end
    else
      all_finished = false
    end
  end
  if run_when == 'parents_succeeded' then
    if any_unsuccessful then return 'cancel' end
    if all_finished then return 'run' end
  elseif run_when == 'parent_failed' then
    if any_unsuccessful then return 'run' end
    if all_finished then return 'cancel' end
  elseif run_when == 'parents_finished' then
    if all_finished then return 'run' end
  end
  return 'wait'
end

-- The states of the parents listed in `deps` (comma-separated ids); purged parents are
-- left out, as in the other backends.
local function parent_states(deps)
  local states = {}
  if deps then
    for pid in string.gmatch(deps, '[^,]+') do
      local s = redis.call('HGET', task_key(pid), 'state')
      if s then
        states[#states + 1] = s
      end
    end
  end
  return states
end

-- Moves a task between the per-queue state sets (scored by enqueue order) and records the
-- state in its hash.
local function enter_state(id, tk, queue, old, new)
  local seq = redis.call('HGET', tk, 'seq')
  if old then
    redis.call('ZREM', state_key(old, queue), id)
  end
  redis.call('ZADD', state_key(new, queue), seq, id)
  redis.call('HSET', tk, 'state', new, 'updated_at', NOW_S)
end

-- Wake-ups: one token per newly ready task (at most WAKE_CAP per queue), pushed at the end
-- of the script; each idle worker's BLPOP takes one, so one task wakes one worker.
local wakes = {}
local function wake(queue)
  wakes[queue] = (wakes[queue] or 0) + 1
end
local function flush_wakes()
  for queue, n in pairs(wakes) do
    local key = B .. ':wake:' .. queue
    for _ = 1, math.min(n, WAKE_CAP) do
      redis.call('LPUSH', key, '1')
    end
    redis.call('LTRIM', key, 0, WAKE_CAP - 1)
    -- Tokens nobody took within a minute are stale: a waiter would only wake for nothing.
    redis.call('PEXPIRE', key, 60000)
  end
end

-- Files a Queued task in its queue's ready set. Claim order is the set's order: score =
-- -priority, then (equal scores sort by member) run_at and enqueue order, both zero-padded.
local function file_ready(id, tk, queue)
  local h = redis.call('HMGET', tk, 'priority', 'run_at', 'seq')
  local run_at = tonumber(h[2])
  if run_at < 0 then
    run_at = 0
  end
  local member = string.format('%020d%020d', run_at, tonumber(h[3])) .. id
  redis.call('ZADD', B .. ':ready:' .. queue, int(-tonumber(h[1])), member)
  redis.call('HSET', tk, 'rk', member)
end

-- Puts a task with an expiry back in the expiry index (it waits again).
local function watch_expiry(id, tk)
  local expires = redis.call('HGET', tk, 'expires_at')
  if expires then
    redis.call('ZADD', EXPIRY, expires, id)
  end
end

-- Makes a task claimable: Queued when its run_at has come, else Scheduled.
local function make_available(id, tk, queue, old)
  local run_at = redis.call('HGET', tk, 'run_at')
  if tonumber(run_at) > NOW then
    enter_state(id, tk, queue, old, 'scheduled')
    redis.call('ZADD', B .. ':delayed:' .. queue, run_at, id)
    return 'scheduled'
  end
  enter_state(id, tk, queue, old, 'queued')
  file_ready(id, tk, queue)
  wake(queue)
  return 'queued'
end

-- Takes a waiting task out of the ready or delayed set.
local function make_unavailable(id, tk, queue, state)
  if state == 'queued' then
    local rk = redis.call('HGET', tk, 'rk')
    if rk then
      redis.call('ZREM', B .. ':ready:' .. queue, rk)
      redis.call('HDEL', tk, 'rk')
    end
  elseif state == 'scheduled' then
    redis.call('ZREM', B .. ':delayed:' .. queue, id)
  end
end

-- Frees the task's unique key if the task holds it.
local function release_unique(id, tk)
  local key = redis.call('HGET', tk, 'unique_key')
  if key then
    local uk = B .. ':unique:' .. key
    if redis.call('GET', uk) == id then
      redis.call('DEL', uk)
    end
  end
end

-- A state change as replied to the caller: {id, name, queue, attempts, state, reason|nil}.
local function change(id, tk)
  local h = redis.call('HMGET', tk, 'name', 'queue', 'attempts', 'state', 'reason')
  return { id, h[1], h[2], h[3], h[4], h[5] }
end

-- Appends one attempt's error (`error_json`, a serialized TaskError) to the task's history.
local function push_error(tk, attempt, error_json)
  local entry = '{"attempt":' .. attempt .. ',"at":"' .. NOW_TEXT .. '","error":' .. error_json .. '}'
  local errors = redis.call('HGET', tk, 'errors')
  if not errors or errors == '[]' then
    errors = '[' .. entry .. ']'
  else
    errors = string.sub(errors, 1, -2) .. ',' .. entry .. ']'
  end
  redis.call('HSET', tk, 'errors', errors)
end

-- Ends a task in a terminal state with exactly `reason` (nil for none).
local function finish(id, tk, state, reason)
  local h = redis.call('HMGET', tk, 'state', 'queue')
  enter_state(id, tk, h[2], h[1], state)
  redis.call('HSET', tk, 'finished_at', NOW_S)
  redis.call('HDEL', tk, 'lease_at', 'token', 'rk')
  redis.call('ZREM', LEASES, id)
  redis.call('ZREM', EXPIRY, id)
  if reason then
    redis.call('HSET', tk, 'reason', reason)
  else
    redis.call('HDEL', tk, 'reason')
  end
  release_unique(id, tk)
end

-- Unblocks or cancels the blocked dependents of a task that just finished, and in turn the
-- dependents of those it cancels; appends every change to `changes`.
local function settle(parent, changes)
  local stack = { parent }
  while #stack > 0 do
    local pid = table.remove(stack)
    local children = redis.call('LRANGE', B .. ':children:' .. pid, 0, -1)
    for _, cid in ipairs(children) do
      local ctk = task_key(cid)
      local h = redis.call('HMGET', ctk, 'state', 'deps', 'run_when', 'queue')
      if h[1] == 'blocked' then
        local v = verdict(h[3], parent_states(h[2]))
        if v == 'run' then
          make_available(cid, ctk, h[4], 'blocked')
          changes[#changes + 1] = change(cid, ctk)
        elseif v == 'cancel' then
          finish(cid, ctk, 'cancelled', 'dependency ' .. pid .. ' did not settle as required')
          changes[#changes + 1] = change(cid, ctk)
          stack[#stack + 1] = cid
        end
      end
    end
  end
end

-- The fields a lease carries, in the order the Rust side reads them.
local function spec_fields(tk)
  return redis.call('HMGET', tk, 'id', 'name', 'queue', 'payload', 'priority', 'run_at',
    'expires_at', 'max_attempts', 'unique_key', 'deps', 'run_when', 'created_at', 'opts',
    'attempts')
end
