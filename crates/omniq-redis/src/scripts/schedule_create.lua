-- schedule_create.lua: creates a schedule unless one with its name exists.
--
-- Atomic because the existence check and the insert must be one step: two processes
-- creating the same schedule must end with one definition, and both must read it back.
--
-- KEYS[1] = {P}:sched (name -> JSON), KEYS[2] = {P}:sched:next (name -> next fire, micros
-- or ''), KEYS[3] = {P}:sched:due (unpaused schedules by next fire).
-- ARGV[1] = name, ARGV[2] = JSON, ARGV[3] = next fire ('' = none), ARGV[4] = paused '0'/'1'.
-- Reply: {1} when created, {0, existing JSON} when the name was taken.

local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then
  return { 0, existing }
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if ARGV[4] == '0' and ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
end
return { 1 }
