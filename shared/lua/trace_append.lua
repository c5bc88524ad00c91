-- Keep spans of a job's trace beside its record, with the record's lifetime.
-- KEYS: job, trace
-- ARGV: now, finished_ttl_s, max_spans, then span_id, span_json pairs
-- Returns the number of spans kept now (a span already kept is written again and counted;
-- one past max_spans is dropped), or -1 when the job no longer exists: nothing is written.
local job, trace = KEYS[1], KEYS[2]
local found = redis.call("HMGET", job, "status", "deadline_at")
local status = found[1]
if not status then return -1 end
local room = tonumber(ARGV[3]) - redis.call("HLEN", trace)
local kept = 0
for i = 4, #ARGV, 2 do
  if redis.call("HEXISTS", trace, ARGV[i]) == 1 then
    redis.call("HSET", trace, ARGV[i], ARGV[i + 1])
    kept = kept + 1
  elseif room > 0 then
    redis.call("HSET", trace, ARGV[i], ARGV[i + 1])
    room = room - 1
    kept = kept + 1
  end
end
if kept == 0 then return 0 end
local job_ms = redis.call("PTTL", job)
-- A record without a TTL (none Fleetline writes) still never leaves its trace forever.
if job_ms < 0 then job_ms = tonumber(ARGV[2]) * 1000 end
local ttl_ms = job_ms
if status == "pending" or status == "running" then
  -- Finalising gives the record the finished-job TTL; the trace has it already.
  local until_final = (tonumber(found[2] or ARGV[1]) - tonumber(ARGV[1])) + tonumber(ARGV[2])
  ttl_ms = math.max(job_ms, math.floor(until_final * 1000))
end
redis.call("PEXPIRE", trace, ttl_ms)
return kept
