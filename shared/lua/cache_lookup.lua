-- Serve a cached result, or take the single-flight lease, or say who holds it.
-- KEYS: entry, lease
-- ARGV: token, lease_ms
-- Returns {1, value_json} on a hit, {2, token} when this caller now holds the lease (it
-- makes the provider call), {3, lease_pttl_ms} when another caller holds it (wait).
-- A caller that presents the token already holding the lease takes it again: that is a
-- redelivery of the same call whose first delivery died holding it.
local value = redis.call("GET", KEYS[1])
if value then return {1, value} end
if redis.call("SET", KEYS[2], ARGV[1], "NX", "PX", ARGV[2]) then return {2, ARGV[1]} end
if redis.call("GET", KEYS[2]) == ARGV[1] then
  redis.call("PEXPIRE", KEYS[2], ARGV[2])
  return {2, ARGV[1]}
end
return {3, redis.call("PTTL", KEYS[2])}
