-- Close one stage of a pipeline run, once: its entry in the stage table, and for an ok
-- stage its output checkpointed (versioned, audited) before the next stage is sent.
-- Queued right after the stage's record_outcome, in the same round trip.
-- KEYS: job, audit, checkpoints, outcomes
-- ARGV: run, stage index (0-based), step id, ok ("1" | "0"), output_json ("" unless ok),
--       outcome status, attempts, cost_usd, next step id ("" for the last stage), now,
--       keep_s (the checkpoints' TTL), actor, model that served it ("" for a tool)
-- Returns {1, version} when this call closed the stage with the job running, {2, version}
-- when it closed it but the job had ended (the checkpoint is kept: a resume reads it),
-- {0, resend} when the stage was closed already (a redelivery; resend 1: it closed ok, the
-- job still runs this run and the next stage has no outcome, so it must be sent again),
-- {-1, run} when the job runs another run, {-3} when the job is gone.
local job, audit, checkpoints, outcomes = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local current = redis.call("HMGET", job, "run", "status", "stages")
if not current[1] or not current[3] then return {-3} end
if current[1] ~= ARGV[1] then return {-1, tonumber(current[1])} end
local stages = cjson.decode(current[3])
local index = tonumber(ARGV[2]) + 1
local entry = stages[index]
if entry == nil or entry.step_id ~= ARGV[3] then return {-1, tonumber(current[1])} end
if entry.status ~= "pending" and entry.status ~= "running" then
  local resend = 0
  if entry.status == "ok" and ARGV[9] ~= "" and current[2] == "running"
    and redis.call("HEXISTS", outcomes, ARGV[9]) == 0 then resend = 1 end
  return {0, resend}
end
local version = redis.call("HINCRBY", job, "version", 1)
entry.status = ARGV[6]
entry.attempts = tonumber(ARGV[7])
entry.cost_usd = tonumber(ARGV[8])
if ARGV[13] ~= "" then entry.model = ARGV[13] end
local action = "stage_failed"
if ARGV[4] == "1" then
  redis.call("HSET", checkpoints, ARGV[3], ARGV[5])
  entry.checkpoint_version = version
  action = "checkpointed"
  if ARGV[9] ~= "" and current[2] == "running" then stages[index + 1].status = "running" end
end
redis.call("HSET", job, "stages", cjson.encode(stages), "updated_at", ARGV[10])
redis.call("EXPIRE", checkpoints, tonumber(ARGV[11]))
redis.call("RPUSH", audit, cjson.encode({"actor", ARGV[12], "action", action, "version", version,
  "stage", entry.name, "run", ARGV[1], "subtask", ARGV[3], "status", ARGV[6],
  "cost_usd", ARGV[8], "at", ARGV[10]}))
if current[2] ~= "running" then return {2, version} end
return {1, version}
