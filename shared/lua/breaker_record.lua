-- Count a call's result in the breaker's window and move its state when it must.
-- KEYS: state, window, probe, registry[, once]
-- ARGV: name, result (success | failure | release), token, bucket_ms, buckets, min_calls,
--       failure_rate, reset_ms, idle_s, once_ttl_s
-- Returns {state, transition, calls, failures}; transition: "" | opened | closed | reopened
-- | released. Only the probe lease's holder (its token) moves a half-open breaker; other
-- results while open (calls let in before it opened) only count.
-- `once` (a delivery's marker) makes a success or failure count once: a round trip run
-- again after its reply was lost replays the first reply and changes nothing. Without it,
-- a probe's second success would count in the window it had just closed. A release needs
-- none: it frees only the lease its own token still holds.
local state, window, probe, registry, once = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local name, result, token = ARGV[1], ARGV[2], ARGV[3]
local bucket_ms, buckets = tonumber(ARGV[4]), tonumber(ARGV[5])
local min_calls, rate = tonumber(ARGV[6]), tonumber(ARGV[7])
local reset_ms, idle_s, once_ttl_s = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local now = now_ms()
local probing = token ~= "" and redis.call("GET", probe) == token
local rec = redis.call("HMGET", state, "state", "half_open_at")

if result == "release" then
  if not probing then return {derive(rec, now), "", 0, 0} end
  redis.call("DEL", probe)
  return {derive(rec, now), "released", 0, 0}
end

if once then
  local first = redis.call("GET", once)
  if first then return cjson.decode(first) end
end

local function count()
  local bucket = math.floor(now / bucket_ms)
  local slot = bucket % buckets
  if redis.call("HGET", window, "t" .. slot) ~= int(bucket) then
    redis.call("HSET", window, "t" .. slot, int(bucket), "c" .. slot, 0, "f" .. slot, 0)
  end
  redis.call("HINCRBY", window, "c" .. slot, 1)
  if result == "failure" then redis.call("HINCRBY", window, "f" .. slot, 1) end
  redis.call("PEXPIRE", window, (buckets + 1) * bucket_ms)
  register(registry, name, now, idle_s)
  local calls, failures = window_counts(window, bucket, buckets)

  if probing then
    if result == "success" then
      close(state, window, probe, now, idle_s)
      return {"closed", "closed", 0, 0}
    end
    trip(state, probe, now, reset_ms, idle_s)
    return {"open", "reopened", calls, failures}
  end
  local current = derive(rec, now)
  if current == "closed" and result == "failure" and calls >= min_calls
      and failures >= rate * calls then
    trip(state, probe, now, reset_ms, idle_s)
    return {"open", "opened", calls, failures}
  end
  if rec[1] then redis.call("EXPIRE", state, idle_s) end
  return {current, "", calls, failures}
end

local reply = count()
if once then redis.call("SET", once, cjson.encode(reply), "EX", once_ttl_s) end
return reply
