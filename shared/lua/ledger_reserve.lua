-- Reserve a call's worst-case cost against every counter, and its request and tokens in
-- its API key's rate window, or nothing at all.
-- KEYS: call, holds, each counter key once, then the rate window (when there is a limit)
-- ARGV: now, hold_until, record_ttl_s, usd, tokens,
--       counters JSON [[key_index, scope, limit_usd, limit_tokens, window, holds], ...]
--         (-1 = no limit; holds: 1 when the call's hold is counted there, else 0),
--       ttls JSON [ttl_s for KEYS[3], KEYS[4], ...] (each key is kept at least that long),
--       delivery (who takes the hold),
--       rate JSON {group, rpm, tpm, ttl, reset_ms} (-1 = none) or "" without a limit,
--       call field (the call id's field in its job's counter), tenant ("" when none),
--       keep (the TTL the job's counter keeps at least from the settlement; "" none)
-- Returns {1, "reserved"}; {2, state, delivery} when the call id already has a record, or
-- its job's counter names it after the record went (nothing changes; the delivery is the
-- one that took it, "" when gone); {0, scope, window, metric, limit, spent, reserved,
-- requested} when a spend limit would be passed (spent + reserved + this call > limit);
-- {3, "rate:<group>", "minute", metric, limit, used, 0, requested, reset_ms} when the
-- rate window cannot take the call (metric: requests or tokens).
local call, holds = KEYS[1], KEYS[2]
local usd, tokens = ARGV[4], ARGV[5]
local counters, ttls = cjson.decode(ARGV[6]), cjson.decode(ARGV[7])
local field = ARGV[10]
sweep(holds, ARGV[1], 100)
local found = redis.call("HMGET", call, "state", "delivery")
if found[1] then return {2, found[1], found[2] or ""} end
local job = nil
for _, c in ipairs(counters) do
  if c[5] == "lifetime" then job = c[1] end
end
if job then
  local gone = redis.call("HGET", KEYS[job], field)
  if gone then
    local states = {r = "expired", ["-"] = "released"}
    return {2, states[gone] or "settled", ""}
  end
end
local want = {usd = tonumber(usd), tokens = tonumber(tokens)}
-- The refusal a counter gives this call, or nil when it has room.
local function refusal(c)
  local key, scope = KEYS[c[1]], c[2]
  local v = redis.call("HMGET", key, scope .. "|spent_usd", scope .. "|reserved_usd",
    scope .. "|spent_tokens", scope .. "|reserved_tokens")
  local limits = {usd = c[3], tokens = c[4]}
  local used = {usd = {tonumber(v[1] or 0), tonumber(v[2] or 0)},
    tokens = {tonumber(v[3] or 0), tonumber(v[4] or 0)}}
  for _, metric in ipairs({"usd", "tokens"}) do
    local limit, spent, held_now = limits[metric], used[metric][1], used[metric][2]
    if limit >= 0 and spent + held_now + want[metric] > limit then
      return {0, scope, c[5], metric, limit, spent, held_now, want[metric]}
    end
  end
  return nil
end
for _, c in ipairs(counters) do
  -- Only a counter with a limit is read (-1: none; most scopes of most windows have none).
  if c[3] >= 0 or c[4] >= 0 then
    local refused = refusal(c)
    if refused then return refused end
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
-- The record names each counter key once, and each scope once with the keys it counts
-- the call in (counters) and those it holds the call in (holds).
local function add(by_scope, list, c)
  local s = by_scope[c[2]]
  if not s then
    s = {{}, c[2]}
    by_scope[c[2]] = s
    list[#list + 1] = s
  end
  s[1][#s[1] + 1] = c[1] - 2
end
local counted, scopes, holding, held_scopes = {}, {}, {}, {}
for _, c in ipairs(counters) do
  add(counted, scopes, c)
  if c[6] == 1 then
    redis.call("HINCRBY", KEYS[c[1]], c[2] .. "|reserved_usd", usd)
    redis.call("HINCRBY", KEYS[c[1]], c[2] .. "|reserved_tokens", tokens)
    add(holding, held_scopes, c)
  end
end
if job then
  redis.call("HSET", KEYS[job], field, "r")
  if ARGV[11] ~= "" then redis.call("HSETNX", KEYS[job], "tenant", ARGV[11]) end
end
-- Every counter key exists by now (a hold or the job's call id was written to it): a
-- settlement counts only in keys that still exist.
local names = {}
for i, ttl in ipairs(ttls) do
  names[i] = KEYS[i + 2]
  keep_at_least(KEYS[i + 2], ttl)
end
local record = {"state", "reserved", "usd", usd, "tokens", tokens, "keys", cjson.encode(names),
  "counters", cjson.encode(scopes), "holds",
  #held_scopes > 0 and cjson.encode(held_scopes) or "[]",
  "delivery", ARGV[8]}
if job then
  record[#record + 1], record[#record + 2] = "job", job - 2
  if ARGV[12] ~= "" then record[#record + 1], record[#record + 2] = "keep", ARGV[12] end
end
if rate then
  redis.call("HINCRBY", rate_key, "requests", 1)
  redis.call("HINCRBY", rate_key, "tokens", tokens)
  redis.call("EXPIRE", rate_key, rate.ttl)
  record[#record + 1], record[#record + 2] = "rate", rate_key
end
redis.call("HSET", call, unpack(record))
redis.call("EXPIRE", call, ARGV[3])
redis.call("ZADD", holds, ARGV[2], call)
-- The holds outlive every record they name (a write never shortens them).
keep_at_least(holds, ARGV[3])
return {1, "reserved"}
