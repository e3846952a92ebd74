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
--
-- Cost: the server's time goes mostly into redis.call (each call, each argument and each
-- field of a reply), then into Lua's tables and strings. So a script reads the fields a
-- task change needs with one HMGET, and the helpers below take those values as arguments
-- rather than reading them again; a helper that records a state writes the caller's other
-- changed fields (`...`: name, value, ...) in the same HSET.

local B = ARGV[1]
local NOW_S = ARGV[2]
local NOW = tonumber(NOW_S)
local NOW_TEXT = ARGV[3]
local LEASES, EXPIRY, SEQ, QUEUES = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local WAKE_CAP = 64
-- omniq_storage::CANCELLED_WHILE_RUNNING: why a task whose cancel was requested while it
-- ran ends Cancelled when its attempt is retried, released or recovered instead.
local CANCELLED_WHILE_RUNNING = 'cancel requested while it ran'

local function int(n)
  return string.format('%d', n)
end

-- The server's clock, in microseconds: lease deadlines are set (claim, heartbeat) and judged
-- (recover) on it alone, never on a client's NOW, so workers whose clocks disagree cannot
-- take each other's live leases. (Scripts replicate their effects, so TIME is allowed.)
local function server_micros()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function task_key(id)
  return B .. ':task:' .. id
end

local function state_key(state, queue)
  return B .. ':st:' .. state .. ':' .. queue
end

-- A queue's finished tasks of one state by when they finished (micros): retention purges
-- (purge.lua with a `before`) read the oldest from here and never walk the younger ones.
local function done_key(state, queue)
  return B .. ':done:' .. state .. ':' .. queue
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

-- Wake-ups: one token per newly ready task (at most WAKE_CAP per queue), pushed at the end
-- of the script; each idle worker's BLPOP takes one, so one task wakes one worker.
local wakes = {}
local function wake(queue)
  wakes[queue] = (wakes[queue] or 0) + 1
end
local function flush_wakes()
  for queue, n in pairs(wakes) do
    local key = B .. ':wake:' .. queue
    local tokens = {}
    for i = 1, math.min(n, WAKE_CAP) do
      tokens[i] = '1'
    end
    redis.call('LPUSH', key, unpack(tokens))
    redis.call('LTRIM', key, 0, WAKE_CAP - 1)
    -- Tokens nobody took within a minute are stale: a waiter would only wake for nothing.
    redis.call('PEXPIRE', key, 60000)
  end
end

local ZEROS = '00000000000000000000'

-- `n`, a non-negative integer as text, zero-padded to 20 digits (as '%020d' would).
local function pad(n)
  return string.sub(ZEROS, #n + 1) .. n
end

-- A Queued task's member of its queue's ready set (score: -priority). Claim order is the
-- set's order: equal scores sort by member, so by run_at (before the epoch: 0) and enqueue
-- order, both zero-padded, then id. Derived from fields that never change while the task
-- is Queued, so it is computed again when needed rather than stored. Integers reach the
-- scripts as text (canonical, from the Rust side or from int), so the text is padded as is.
local function ready_member(id, run_at, seq)
  if string.byte(run_at) == 45 then -- '-'
    run_at = '0'
  end
  return pad(run_at) .. pad(seq) .. id
end

-- The ready-set score of a task of priority `priority` (an integer as text): -priority.
local function ready_score(priority)
  if priority == '0' then
    return priority
  elseif string.byte(priority) == 45 then -- '-'
    return string.sub(priority, 2)
  end
  return '-' .. priority
end

-- The state a claimable task enters: Queued when its run_at has come, else Scheduled.
local function available_state(run_at)
  if tonumber(run_at) > NOW then
    return 'scheduled'
  end
  return 'queued'
end

-- Files task `id` (enqueue order `seq`) in the sets of state `new`, out of those of state
-- `old` (nil for a new task): its queue's state sets, scored by `seq`; for a finished state
-- the finish-time index (done_key); for Queued the ready set, for Scheduled the delayed set
-- (by `run_at`). Leaving the ready or delayed set
-- is make_unavailable's, or the caller's. The caller records the state in the hash.
local function file(id, queue, seq, old, new, priority, run_at)
  if old then
    redis.call('ZREM', state_key(old, queue), id)
    if TERMINAL[old] then
      redis.call('ZREM', done_key(old, queue), id)
    end
  end
  redis.call('ZADD', state_key(new, queue), seq, id)
  if TERMINAL[new] then
    redis.call('ZADD', done_key(new, queue), NOW_S, id)
  end
  if new == 'queued' then
    redis.call('ZADD', B .. ':ready:' .. queue, ready_score(priority),
      ready_member(id, run_at, seq))
  elseif new == 'scheduled' then
    redis.call('ZADD', B .. ':delayed:' .. queue, run_at, id)
  end
end

-- Moves task `id` (hash `tk`) from state `old` to `new` (see file; `priority` and `run_at`
-- only matter for Queued and Scheduled) and records the state in its hash, with the
-- caller's other changed fields in the same HSET.
local function enter_state(id, tk, queue, seq, old, new, priority, run_at, ...)
  file(id, queue, seq, old, new, priority, run_at)
  redis.call('HSET', tk, 'state', new, 'updated_at', NOW_S, ...)
end

-- Puts a task with an expiry (`expires_at`, false for none) in the expiry index: it waits,
-- again.
local function watch_expiry(id, expires_at)
  if expires_at then
    redis.call('ZADD', EXPIRY, expires_at, id)
  end
end

-- Makes an existing task claimable (see available_state and enter_state); returns the
-- state.
local function make_available(id, tk, queue, seq, old, priority, run_at, ...)
  local state = available_state(run_at)
  enter_state(id, tk, queue, seq, old, state, priority, run_at, ...)
  if state == 'queued' then
    wake(queue)
  end
  return state
end

-- Takes a waiting task (in `state`) out of the ready or delayed set.
local function make_unavailable(id, queue, state, run_at, seq)
  if state == 'queued' then
    redis.call('ZREM', B .. ':ready:' .. queue, ready_member(id, run_at, seq))
  elseif state == 'scheduled' then
    redis.call('ZREM', B .. ':delayed:' .. queue, id)
  end
end

-- Frees unique key `key` (false for none) if task `id` holds it.
local function release_unique(id, key)
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

-- A task's error history (`errors`, its field) with one more attempt's error
-- (`error_json`, a serialized TaskError) appended.
local function with_error(errors, attempt, error_json)
  local entry = '{"attempt":' .. attempt .. ',"at":"' .. NOW_TEXT .. '","error":' .. error_json .. '}'
  if not errors or errors == '[]' then
    return '[' .. entry .. ']'
  end
  return string.sub(errors, 1, -2) .. ',' .. entry .. ']'
end

-- Ends a waiting or running task in a terminal state with exactly `reason` (nil for none);
-- `expires_at` and `unique_key` are its fields (false for none). A running task's caller
-- takes it out of the lease set. See enter_state for the rest. (`rk`, the ready member,
-- was a field of earlier versions.)
local function finish(id, tk, queue, seq, old, state, reason, expires_at, unique_key, ...)
  if reason then
    enter_state(id, tk, queue, seq, old, state, nil, nil, 'finished_at', NOW_S, 'reason', reason,
      ...)
    redis.call('HDEL', tk, 'lease_at', 'token', 'rk')
  else
    enter_state(id, tk, queue, seq, old, state, nil, nil, 'finished_at', NOW_S, ...)
    redis.call('HDEL', tk, 'lease_at', 'token', 'rk', 'reason')
  end
  if expires_at then
    redis.call('ZREM', EXPIRY, id)
  end
  release_unique(id, unique_key)
end

-- Unblocks or cancels the blocked dependents of a task that just finished, and in turn the
-- dependents of those it cancels; appends every change to `changes`. `children` is the
-- finished task's `children` field: '1' once a dependent registered in its
-- {P}:children:<id> list (enqueue.lua, the only writer of those lists, sets it), '0' while
-- none did, missing for a task stored by a version without the field (then the list is
-- read anyway).
local function settle(parent, children, changes)
  if children == '0' then
    return
  end
  local stack = { parent, children }
  while #stack > 0 do
    local flag = table.remove(stack)
    local pid = table.remove(stack)
    if flag ~= '0' then
      for _, cid in ipairs(redis.call('LRANGE', B .. ':children:' .. pid, 0, -1)) do
        local ctk = task_key(cid)
        local h = redis.call('HMGET', ctk, 'state', 'deps', 'run_when', 'queue', 'seq',
          'priority', 'run_at', 'expires_at', 'unique_key', 'children')
        if h[1] == 'blocked' then
          local v = verdict(h[3], parent_states(h[2]))
          if v == 'run' then
            make_available(cid, ctk, h[4], h[5], 'blocked', h[6], h[7])
            changes[#changes + 1] = change(cid, ctk)
          elseif v == 'cancel' then
            finish(cid, ctk, h[4], h[5], 'blocked', 'cancelled',
              'dependency ' .. pid .. ' did not settle as required', h[8], h[9])
            changes[#changes + 1] = change(cid, ctk)
            stack[#stack + 1] = cid
            stack[#stack + 1] = h[10]
          end
        end
      end
    end
  end
end
