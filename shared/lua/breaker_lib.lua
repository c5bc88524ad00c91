-- Prepended to every breaker script. Times are the Redis server's clock in milliseconds:
-- every host of the fleet agrees on when a breaker opened and when it may probe.
-- A breaker (HASH) holds state (closed | open), opened_at, half_open_at, closed_at, trips;
-- "half-open" is derived: open, and half_open_at has passed. Its window (HASH) is a ring of
-- `buckets` slots: t<i> the bucket number the slot counts, c<i> calls, f<i> failures.
local function now_ms()
  local t = redis.call("TIME")
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(n)
  return string.format("%d", n)
end

local function derive(rec, now)
  if rec[1] ~= "open" then return "closed" end
  if now < (tonumber(rec[2]) or 0) then return "open" end
  return "half-open"
end

-- Calls and failures of the buckets still inside the window that ends at `bucket`.
local function window_counts(window, bucket, buckets)
  local raw = redis.call("HGETALL", window)
  local h = {}
  for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
  local calls, failures = 0, 0
  for i = 0, buckets - 1 do
    local t = tonumber(h["t" .. i])
    if t and t > bucket - buckets and t <= bucket then
      calls = calls + (tonumber(h["c" .. i]) or 0)
      failures = failures + (tonumber(h["f" .. i]) or 0)
    end
  end
  return calls, failures
end

local function trip(state, probe, now, reset_ms, idle_s)
  redis.call("HSET", state, "state", "open", "opened_at", int(now),
    "half_open_at", int(now + reset_ms))
  redis.call("HINCRBY", state, "trips", 1)
  redis.call("EXPIRE", state, idle_s)
  redis.call("DEL", probe)
end

local function close(state, window, probe, now, idle_s)
  redis.call("HSET", state, "state", "closed", "closed_at", int(now))
  redis.call("HDEL", state, "opened_at", "half_open_at")
  redis.call("EXPIRE", state, idle_s)
  redis.call("DEL", window, probe)
end

local function register(registry, name, now, idle_s)
  redis.call("ZADD", registry, now, name)
  redis.call("EXPIRE", registry, idle_s)
end
