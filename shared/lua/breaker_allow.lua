-- May a call go ahead? Hands out the one half-open probe lease of the fleet.
-- KEYS: state, probe
-- ARGV: token, probe_ms
-- Returns {state, allowed, is_probe, wait_ms, token}; wait_ms: how long until a call may
-- be allowed again (the rest of the reset timeout, or of the probe's lease).
-- A closed breaker costs one HMGET and writes nothing.
local rec = redis.call("HMGET", KEYS[1], "state", "half_open_at")
if rec[1] ~= "open" then return {"closed", 1, 0, 0, ""} end
local now = now_ms()
local half_open_at = tonumber(rec[2]) or 0
if now < half_open_at then return {"open", 0, 0, half_open_at - now, ""} end
if redis.call("SET", KEYS[2], ARGV[1], "NX", "PX", ARGV[2]) then
  return {"half-open", 1, 1, 0, ARGV[1]}
end
return {"half-open", 0, 0, math.max(redis.call("PTTL", KEYS[2]), 0), ""}
