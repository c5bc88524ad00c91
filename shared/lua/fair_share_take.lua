-- Take one of a tenant's slots for steps in flight, or refuse when all are taken.
-- KEYS: the tenant's slots (ZSET delivery -> when its hold lapses)
-- ARGV: now, until (a holder that died frees its slot then), delivery, limit, ttl_s
-- Returns {1, taken} when the delivery holds a slot (again, if it already held one),
-- {0, taken} when the tenant has `limit` slots taken.
local slots = KEYS[1]
redis.call("ZREMRANGEBYSCORE", slots, "-inf", ARGV[1])
if redis.call("ZSCORE", slots, ARGV[3]) then return {1, redis.call("ZCARD", slots)} end
local taken = redis.call("ZCARD", slots)
if taken >= tonumber(ARGV[4]) then return {0, taken} end
redis.call("ZADD", slots, ARGV[2], ARGV[3])
redis.call("EXPIRE", slots, ARGV[5])
return {1, taken + 1}
