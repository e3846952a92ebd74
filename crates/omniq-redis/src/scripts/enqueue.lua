-- enqueue.lua: stores a batch of new tasks.
--
-- Atomic because a batch is all or nothing (an unknown parent stores none of it), the
-- unique-key check and the key's claim must not interleave with another enqueue (or two
-- "unique" tasks would both be stored), and a dependent's verdict must read its parents'
-- states in the same instant it registers itself as their dependent (or a parent finishing
-- in between would never settle it).
--
-- Producers in other languages call this script too (docs/wire-format.md, version 1): new
-- fields go at the end of a task's fields, and a later script gives tasks sent with 15
-- (ARGV[5]) the new fields' defaults.
--
-- ARGV[4] = number of tasks, ARGV[5] = fields per task, then per task:
--   1 id, 2 queue, 3 name, 4 payload, 5 priority, 6 run_at, 7 expires_at ('' = none),
--   8 max_attempts, 9 has unique key ('0'/'1'), 10 unique key, 11 unique_for in micros
--   ('' = none), 12 parents (comma-separated, '' = none), 13 run_when, 14 created_at,
--   15 options (JSON)
-- Reply: {'invalid', why} or {'unknown_parent', id} (nothing stored), or {'ok', outcomes}
-- with one outcome per task: {'created', id, state} or {'duplicate', existing id}.

local n, f = tonumber(ARGV[4]), tonumber(ARGV[5])
if not n or not f or n % 1 ~= 0 or f % 1 ~= 0 or n < 1 or f < 15 or #ARGV < 5 + n * f then
  return { 'invalid', 'ARGV[4] and ARGV[5] must count the tasks (at least one) and their '
    .. 'fields (at least 15), and the arguments must hold that many' }
end
local function arg(i, k)
  return ARGV[5 + (i - 1) * f + k]
end

-- A producer in another language may send anything: every field a write below relies on,
-- or a worker reads back, is checked before the first write, so a bad task stores nothing
-- of its batch rather than half a task or one no worker can read. Ids are UUIDs as workers
-- write them back (lowercase, hyphenated); numbers are decimal integers within the ranges
-- OmniQ's types hold.
local UUID = '^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$'
local find = string.find
local RUN_WHEN = { parents_succeeded = true, parent_failed = true, parents_finished = true }
-- Whether `v` is a decimal integer in low..high ('' too when `optional`).
local function integer(v, low, high, optional)
  if v == '' then
    return optional
  end
  if #v > 20 or not find(v, '^%-?%d+$') then
    return false
  end
  local x = tonumber(v)
  return x >= low and x <= high
end
-- I64 is read as 2^63, as is Rust's i64::MAX (a saturated time or window) sent as text.
local I32, U32, I64 = 2147483647, 4294967295, 9223372036854775807
for i = 1, n do
  local base = 5 + (i - 1) * f
  local id = ARGV[base + 1]
  local why = nil
  if not find(id, UUID) or find(id, '%u') then
    why = 'its id is not a lowercase hyphenated UUID'
  elseif ARGV[base + 2] == '' or ARGV[base + 3] == '' then
    why = 'its queue or name is empty'
  elseif not integer(ARGV[base + 5], -I32 - 1, I32) then
    why = 'its priority is not a 32-bit integer'
  elseif not (integer(ARGV[base + 6], -I64, I64) and integer(ARGV[base + 14], -I64, I64)
      and integer(ARGV[base + 7], -I64, I64, true)) then
    why = 'a time of it is not an integer count of microseconds'
  elseif not integer(ARGV[base + 8], 1, U32) then
    why = 'its max_attempts is not in 1..=4294967295'
  elseif not integer(ARGV[base + 11], 0, I64, true) then
    why = 'its unique_for is not an integer count of microseconds'
  elseif not RUN_WHEN[ARGV[base + 13]] then
    why = 'its run_when is none of parents_succeeded, parent_failed, parents_finished'
  elseif string.byte(ARGV[base + 15], 1) ~= 123 then -- '{': a first look, not a parse
    why = 'its options are not a JSON object'
  end
  if why then
    return { 'invalid', 'task ' .. id .. ': ' .. why }
  end
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
local seq = nil -- the enqueue counter: read at the first task stored, written back at the end
local queues = {} -- the queues already added to QUEUES
-- Tasks of this batch that turned out duplicates, by id: the id of the task stored in their
-- place. A later dependent of one depends on that task instead (as BatchAliases does in the
-- other backends), rather than on a task that was never stored.
local aliases = {}
local function resolve(deps)
  if deps == '' or next(aliases) == nil then
    return deps
  end
  local out, seen = {}, {}
  for pid in string.gmatch(deps, '[^,]+') do
    pid = aliases[pid] or pid
    if not seen[pid] then
      seen[pid] = true
      out[#out + 1] = pid
    end
  end
  return table.concat(out, ',')
end
for i = 1, n do
  local a = 5 + (i - 1) * f -- the task's fields are ARGV[a + 1 ..]
  local id, queue = ARGV[a + 1], ARGV[a + 2]
  local tk = task_key(id)
  local has_unique, key = ARGV[a + 9] == '1', ARGV[a + 10]
  local existing = nil
  if redis.call('EXISTS', tk) == 1 then
    existing = id -- the same task sent again
  end
  if not existing and has_unique then
    existing = redis.call('GET', B .. ':unique:' .. key) or nil
    local window = ARGV[a + 11]
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
    if existing ~= id then
      aliases[id] = existing
    end
    outcomes[i] = { 'duplicate', existing }
  else
    local priority, run_at, expires_at = ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
    local deps = resolve(ARGV[a + 12])
    local state = 'run'
    if deps ~= '' then
      state = verdict(ARGV[a + 13], parent_states(deps))
    end
    if state == 'run' then
      state = available_state(run_at)
    elseif state == 'wait' then
      state = 'blocked'
    else
      state = 'cancelled'
    end
    seq = (seq or tonumber(redis.call('GET', SEQ) or '0')) + 1
    local seq_s = int(seq)
    -- The task's hash, its state included (file() below files it in the state's sets).
    redis.call('HSET', tk, 'id', id, 'queue', queue, 'name', ARGV[a + 3],
      'payload', ARGV[a + 4], 'priority', priority, 'run_at', run_at,
      'max_attempts', ARGV[a + 8], 'run_when', ARGV[a + 13], 'created_at', ARGV[a + 14],
      'opts', ARGV[a + 15], 'attempts', '0', 'seq', seq_s, 'errors', '[]', 'cancel', '0',
      'children', '0', 'state', state, 'updated_at', NOW_S)
    if expires_at == '' then
      expires_at = false
    end
    -- The fields only some tasks have, in one more HSET.
    if expires_at or has_unique or deps ~= '' or state == 'cancelled' then
      local more = {}
      if expires_at then
        more[#more + 1] = 'expires_at'
        more[#more + 1] = expires_at
      end
      if has_unique then
        more[#more + 1] = 'unique_key'
        more[#more + 1] = key
      end
      if deps ~= '' then
        more[#more + 1] = 'deps'
        more[#more + 1] = deps
      end
      if state == 'cancelled' then
        more[#more + 1] = 'finished_at'
        more[#more + 1] = NOW_S
        more[#more + 1] = 'reason'
        more[#more + 1] = 'its parents had already settled against it'
      end
      redis.call('HSET', tk, unpack(more))
    end
    if deps ~= '' then
      for pid in string.gmatch(deps, '[^,]+') do
        redis.call('RPUSH', B .. ':children:' .. pid, id)
        -- The flag settle() goes by.
        local pk = task_key(pid)
        if redis.call('EXISTS', pk) == 1 then
          redis.call('HSET', pk, 'children', '1')
        end
      end
    end
    if not queues[queue] then
      queues[queue] = true
      redis.call('SADD', QUEUES, queue)
    end
    file(id, queue, seq_s, nil, state, priority, run_at)
    if state == 'queued' then
      wake(queue)
    end
    if has_unique then
      redis.call('SET', B .. ':uhist:' .. key, id)
      -- A task born cancelled holds no key: uniqueness only binds live tasks.
      if state ~= 'cancelled' then
        redis.call('SET', B .. ':unique:' .. key, id)
      end
    end
    if state ~= 'cancelled' then
      watch_expiry(id, expires_at)
    end
    outcomes[i] = { 'created', id, state }
  end
end
if seq then
  redis.call('SET', SEQ, int(seq))
end
flush_wakes()
return { 'ok', outcomes }
