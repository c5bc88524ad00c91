-- Set a breaker's state by hand (pybreaker's open(), half_open(), close(); the CLI's reset).
-- KEYS: state, window, probe, registry
-- ARGV: name, target (open | half-open | closed), reset_ms, idle_s
-- Returns {previous state, state}. Closing also empties the window; any probe lease goes.
local state, window, probe, registry = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local target, reset_ms, idle_s = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local previous = derive(redis.call("HMGET", state, "state", "half_open_at"), now)
if target == "closed" then
  close(state, window, probe, now, idle_s)
elseif target == "open" then
  trip(state, probe, now, reset_ms, idle_s)
elseif target == "half-open" then
  -- Open with its reset timeout already over: the next caller probes.
  redis.call("HSET", state, "state", "open", "half_open_at", int(now))
  redis.call("HSETNX", state, "opened_at", int(now))
  redis.call("EXPIRE", state, idle_s)
  redis.call("DEL", probe)
else
  return redis.error_reply("unknown breaker state " .. target)
end
register(registry, ARGV[1], now, idle_s)
return {previous, target}
