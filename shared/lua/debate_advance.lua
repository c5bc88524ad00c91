-- Move a debate on from a closed round, once: to the next round, or to its judge. The
-- round's answers and agreement join the record's history (`pattern`) in the same write.
-- KEYS: job, audit
-- ARGV: closed round, next round ("" = the judge), pattern_json, subtask_ids_json,
--       agreement, stop reason ("" when another round runs), now, actor
-- Returns {1, version} when this call moved the debate on, {0, round} when it had moved
-- on already (a redelivery: send what has no outcome yet), {-2, status} when the job has
-- ended, {-3} when it is gone.
local job, audit = KEYS[1], KEYS[2]
local current = redis.call("HMGET", job, "round", "phase", "status")
if not current[1] then return {-3} end
if current[1] ~= ARGV[1] or current[2] == "judging" then return {0, tonumber(current[1])} end
if current[3] ~= "running" then return {-2, current[3]} end
local version = redis.call("HINCRBY", job, "version", 1)
redis.call("HSET", job, "pattern", ARGV[3], "subtask_ids", ARGV[4], "updated_at", ARGV[7])
local action = "round_started"
if ARGV[2] == "" then
  redis.call("HSET", job, "phase", "judging")
  action = "judging"
else
  redis.call("HSET", job, "round", ARGV[2])
end
redis.call("RPUSH", audit, cjson.encode({"actor", ARGV[8], "action", action, "version", version,
  "round", ARGV[2] ~= "" and ARGV[2] or ARGV[1], "agreement", ARGV[5], "stop", ARGV[6],
  "at", ARGV[7]}))
return {1, version}
