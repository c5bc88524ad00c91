-- Store a validated result and end the lease, if this caller still holds it.
-- KEYS: entry, lease
-- ARGV: value_json, ttl_ms, token
-- Returns 1 when the caller held the lease, 0 otherwise (the value is stored either way:
-- it is validated output, and waiters want it).
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
if redis.call("GET", KEYS[2]) == ARGV[3] then
  redis.call("DEL", KEYS[2])
  return 1
end
return 0
