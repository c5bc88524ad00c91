-- Count one agent's turn of a debate round, once, and close the round when its quorum of
-- answers is in or every agent has had its turn. Queued right after the turn's
-- record_outcome, in the same round trip.
-- KEYS: job, audit, rounds
-- ARGV: round, agent index, answered ("1" | "0"), agents, quorum, now, keep_s, actor
-- Returns {1, version} when this turn closed the round, {1, 0} when this is a redelivery of
-- the turn that closed it and the debate has not moved on yet (close it again), {0, why}
-- otherwise: "waiting" (the round is still open), "late" (it closed without this turn:
-- its outcome is recorded, not used) or "duplicate"; {-3} when the job is gone.
local job, audit, rounds = KEYS[1], KEYS[2], KEYS[3]
local at = "r" .. ARGV[1] .. ":"
local current = redis.call("HMGET", job, "round", "phase")
if not current[1] then return {-3} end
local keep = tonumber(ARGV[7])
if redis.call("HSETNX", rounds, at .. ARGV[2], ARGV[3]) == 0 then
  if redis.call("HGET", rounds, at .. "closer") == ARGV[2] and current[1] == ARGV[1]
    and current[2] ~= "judging" then return {1, 0} end
  return {0, "duplicate"}
end
redis.call("EXPIRE", rounds, keep)
if redis.call("HEXISTS", rounds, at .. "closed") == 1 then return {0, "late"} end
local done = redis.call("HINCRBY", rounds, at .. "done", 1)
local answered = tonumber(redis.call("HGET", rounds, at .. "ok") or "0")
if ARGV[3] == "1" then
  answered = redis.call("HINCRBY", rounds, at .. "ok", 1)
  local members = redis.call("HGET", rounds, at .. "in")
  redis.call("HSET", rounds, at .. "in", members and (members .. "," .. ARGV[2]) or ARGV[2])
end
if answered < tonumber(ARGV[5]) and done < tonumber(ARGV[4]) then return {0, "waiting"} end
redis.call("HSET", rounds, at .. "closed", ARGV[6], at .. "closer", ARGV[2])
local version = redis.call("HINCRBY", job, "version", 1)
redis.call("RPUSH", audit, cjson.encode({
  "actor", ARGV[8], "action", "round_closed", "version", version,
  "round", ARGV[1], "answered", answered, "turns", done, "at", ARGV[6]}))
return {1, version}
