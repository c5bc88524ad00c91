-- Reserve a call's worst-case cost against every counter, or nothing at all.
-- KEYS: call, holds, then each counter key once
-- ARGV: now, hold_until, record_ttl_s, usd, tokens,
--       counters JSON [[key_index, scope, limit_usd, limit_tokens, window], ...] (-1 = none),
--       ttls JSON [ttl_s for KEYS[3], KEYS[4], ...]
-- Returns {1, "reserved"}; {2, state} when the call id already has a record (nothing
-- changes); {0, scope, window, metric, limit, spent, reserved, requested} when a limit
-- would be passed (spent + reserved + this call > limit).
local call, holds = KEYS[1], KEYS[2]
local usd, tokens = ARGV[4], ARGV[5]
local counters, ttls = cjson.decode(ARGV[6]), cjson.decode(ARGV[7])
sweep(holds, ARGV[1], 100)
local state = redis.call("HGET", call, "state")
if state then return {2, state} end
local want = {usd = tonumber(usd), tokens = tonumber(tokens)}
for _, c in ipairs(counters) do
  local key, scope = KEYS[c[1]], c[2]
  local v = redis.call("HMGET", key, scope .. "|spent_usd", scope .. "|reserved_usd",
    scope .. "|spent_tokens", scope .. "|reserved_tokens")
  local limits = {usd = c[3], tokens = c[4]}
  local used = {usd = {tonumber(v[1] or 0), tonumber(v[2] or 0)},
    tokens = {tonumber(v[3] or 0), tonumber(v[4] or 0)}}
  for _, metric in ipairs({"usd", "tokens"}) do
    local limit, spent, held = limits[metric], used[metric][1], used[metric][2]
    if limit >= 0 and spent + held + want[metric] > limit then
      return {0, scope, c[5], metric, limit, spent, held, want[metric]}
    end
  end
end
local held = {}
for i, c in ipairs(counters) do
  redis.call("HINCRBY", KEYS[c[1]], c[2] .. "|reserved_usd", usd)
  redis.call("HINCRBY", KEYS[c[1]], c[2] .. "|reserved_tokens", tokens)
  held[i] = {KEYS[c[1]], c[2]}
end
for i = 3, #KEYS do redis.call("EXPIRE", KEYS[i], ttls[i - 2]) end
redis.call("HSET", call, "state", "reserved", "usd", usd, "tokens", tokens,
  "counters", cjson.encode(held), "reserved_at", ARGV[1])
redis.call("EXPIRE", call, ARGV[3])
redis.call("ZADD", holds, ARGV[2], call)
redis.call("EXPIRE", holds, ARGV[3])
return {1, "reserved"}
