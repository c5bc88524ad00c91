-- Reserve a call's worst-case cost against every counter, and its request and tokens in
-- its API key's rate window, or nothing at all.
-- KEYS: call, holds, each counter key once, then the rate window (when there is a limit)
-- ARGV: now, hold_until, record_ttl_s, usd, tokens,
--       counters JSON [[key_index, scope, limit_usd, limit_tokens, window], ...] (-1 = none),
--       ttls JSON [ttl_s for KEYS[3], KEYS[4], ...], delivery (who takes the hold),
--       rate JSON {group, rpm, tpm, ttl, reset_ms} (-1 = none) or "" without a limit
-- Returns {1, "reserved"}; {2, state, delivery} when the call id already has a record
-- (nothing changes; the delivery is the one that took it); {0, scope, window, metric,
-- limit, spent, reserved, requested} when a spend limit would be passed (spent + reserved
-- + this call > limit); {3, "rate:<group>", "minute", metric, limit, used, 0, requested,
-- reset_ms} when the rate window cannot take the call (metric: requests or tokens).
local call, holds = KEYS[1], KEYS[2]
local usd, tokens = ARGV[4], ARGV[5]
local counters, ttls = cjson.decode(ARGV[6]), cjson.decode(ARGV[7])
sweep(holds, ARGV[1], 100)
local found = redis.call("HMGET", call, "state", "delivery")
if found[1] then return {2, found[1], found[2] or ""} end
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
local rate, rate_key = nil, nil
if ARGV[9] ~= "" then
  rate, rate_key = cjson.decode(ARGV[9]), KEYS[#KEYS]
  local v = redis.call("HMGET", rate_key, "requests", "tokens")
  local used = {requests = tonumber(v[1] or 0), tokens = tonumber(v[2] or 0)}
  local asks = {requests = 1, tokens = want.tokens}
  local limits = {requests = rate.rpm, tokens = rate.tpm}
  for _, metric in ipairs({"requests", "tokens"}) do
    if limits[metric] >= 0 and used[metric] + asks[metric] > limits[metric] then
      return {3, "rate:" .. rate.group, "minute", metric, limits[metric], used[metric], 0,
        asks[metric], rate.reset_ms}
    end
  end
end
local held = {}
for i, c in ipairs(counters) do
  redis.call("HINCRBY", KEYS[c[1]], c[2] .. "|reserved_usd", usd)
  redis.call("HINCRBY", KEYS[c[1]], c[2] .. "|reserved_tokens", tokens)
  held[i] = {KEYS[c[1]], c[2]}
end
for i, ttl in ipairs(ttls) do redis.call("EXPIRE", KEYS[i + 2], ttl) end
redis.call("HSET", call, "state", "reserved", "usd", usd, "tokens", tokens,
  "counters", cjson.encode(held), "reserved_at", ARGV[1], "delivery", ARGV[8])
if rate then
  redis.call("HINCRBY", rate_key, "requests", 1)
  redis.call("HINCRBY", rate_key, "tokens", tokens)
  redis.call("EXPIRE", rate_key, rate.ttl)
  redis.call("HSET", call, "rate", rate_key)
end
redis.call("EXPIRE", call, ARGV[3])
redis.call("ZADD", holds, ARGV[2], call)
redis.call("EXPIRE", holds, ARGV[3])
return {1, "reserved"}
