-- Start a new run of a pipeline job that has ended: compare-and-set on its version, so
-- that of two resumes at once only one starts a run. The kill switches covering its
-- tenant refuse it as they refuse a new job.
-- KEYS: job, audit, deadlines, outcomes, checkpoints, then the kill-switch keys
-- ARGV: job_id, expected version, run, stages_json, pattern_json, subtask_ids_json,
--       deadline_at, ttl_s, now, actor, from stage, model ("" = the stage's own)
-- Returns {1, version} when this call started the run, {-1, version} when the version
-- moved (another writer got there first), {-2, status} when the job has not ended,
-- {-4, switch_json} when a kill switch refuses it, {-3} when the job is gone.
local job, audit, deadlines, outcomes, checkpoints = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local current = redis.call("HMGET", job, "version", "status", "idem_key")
if not current[1] then return {-3} end
if current[1] ~= ARGV[2] then return {-1, tonumber(current[1])} end
if current[2] == "pending" or current[2] == "running" then return {-2, current[2]} end
for i = 6, #KEYS do
  local switch = redis.call("GET", KEYS[i])
  if switch then return {-4, switch} end
end
local version = redis.call("HINCRBY", job, "version", 1)
redis.call("HDEL", job, "result", "completeness", "finished_at")
redis.call("HSET", job, "status", "running", "run", ARGV[3], "stages", ARGV[4],
  "pattern", ARGV[5], "subtask_ids", ARGV[6], "deadline_at", ARGV[7], "updated_at", ARGV[9])
redis.call("ZADD", deadlines, ARGV[7], ARGV[1])
local ttl = tonumber(ARGV[8])
for _, key in ipairs({job, audit, outcomes}) do redis.call("EXPIRE", key, ttl) end
-- Checkpoints outlive the record they belong to: only ever lengthened here.
if redis.call("TTL", checkpoints) < ttl then redis.call("EXPIRE", checkpoints, ttl) end
if current[3] and current[3] ~= "" then redis.call("EXPIRE", current[3], ttl) end
redis.call("RPUSH", audit, cjson.encode({
  "actor", ARGV[10], "action", "resumed", "version", version,
  "status", "running", "run", ARGV[3], "from", ARGV[11], "model", ARGV[12],
  "deadline_at", ARGV[7], "at", ARGV[9]}))
return {1, version}
