-- Take one request from an API key's token bucket, or say when the next one is due.
-- KEYS: the bucket (HASH tokens, at)
-- ARGV: now (s), rate (tokens per s), burst (the bucket's size)
-- Returns {1, 0} when taken, {0, ms until a token is back} when the bucket is empty.
local now, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local found = redis.call("HMGET", KEYS[1], "tokens", "at")
local tokens, at = tonumber(found[1] or burst), tonumber(found[2] or now)
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local ttl_ms = math.ceil(burst / rate * 1000) + 1000
if tokens < 1 then
  redis.call("HSET", KEYS[1], "tokens", tostring(tokens), "at", tostring(now))
  redis.call("PEXPIRE", KEYS[1], ttl_ms)
  return {0, math.ceil((1 - tokens) / rate * 1000)}
end
redis.call("HSET", KEYS[1], "tokens", tostring(tokens - 1), "at", tostring(now))
redis.call("PEXPIRE", KEYS[1], ttl_ms)
return {1, 0}
