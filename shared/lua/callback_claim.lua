-- Claim the most overdue job callback for one attempt: its due time moves ahead by the
-- lease (so no other worker claims it while this attempt runs; if this worker dies, the
-- lease lapses and another takes it) and its attempt count goes up.
-- KEYS: due, attempts
-- ARGV: now, lease_s
-- Returns {job_id, attempt}, or {} when no callback is due.
local due, attempts = KEYS[1], KEYS[2]
local now = tonumber(ARGV[1])
local found = redis.call("ZRANGEBYSCORE", due, "-inf", now, "LIMIT", 0, 1)
if #found == 0 then return {} end
local job_id = found[1]
redis.call("ZADD", due, now + tonumber(ARGV[2]), job_id)
return {job_id, redis.call("HINCRBY", attempts, job_id, 1)}
