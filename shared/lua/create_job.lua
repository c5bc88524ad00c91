-- Admit and create a job, or return the job an idempotency key already made.
-- KEYS: job, audit, deadlines, idem (or "" when no key), then the kill-switch keys that
--       cover the job's tenant
-- ARGV: job_id, fields_json, deadline_at, ttl_s, now, actor
-- Returns {1, job_id} when created (status running: its chord is sent next), {0, job_id}
-- for an existing job, {-1, switch_json} when a tripped kill switch refuses it.
local job, audit, deadlines, idem = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job_id, ttl = ARGV[1], tonumber(ARGV[4])
if idem ~= "" then
  local existing = redis.call("GET", idem)
  if existing then return {0, existing} end
end
for i = 5, #KEYS do
  local switch = redis.call("GET", KEYS[i])
  if switch then return {-1, switch} end
end
if idem ~= "" then redis.call("SET", idem, job_id, "EX", ttl) end
if redis.call("EXISTS", job) == 1 then return {0, job_id} end
local fields = cjson.decode(ARGV[2])
local flat = {}
for k, v in pairs(fields) do flat[#flat + 1] = k; flat[#flat + 1] = v end
redis.call("HSET", job, "version", 1, "status", "running", "created_at", ARGV[5],
  "cost_usd", 0, "idem_key", idem, unpack(flat))
redis.call("EXPIRE", job, ttl)
redis.call("RPUSH", audit, cjson.encode({"actor", ARGV[6], "action", "created", "version", 1,
  "status", "running", "at", ARGV[5]}))
redis.call("EXPIRE", audit, ttl)
redis.call("ZADD", deadlines, ARGV[3], job_id)
return {1, job_id}
