-- Prepended to every ledger script. Amounts are integers (USD in nano-dollars, tokens) kept
-- as strings end to end: Lua numbers would be printed in exponent form past 1e14.
-- A call record (HASH fl:{spend}:call:<id>) holds state (reserved | settled | released |
-- expired), usd, tokens and counters: JSON [[key, scope], ...] it reserved against. Those
-- keys come from the record, not KEYS: every ledger key shares the {spend} hash tag, so
-- they live in the script's slot on a cluster too.
local function neg(amount)
  if amount == "0" then return "0" end
  return "-" .. amount
end

-- Give back a call's hold on every counter that still exists (an expired window stays gone).
local function unhold(counters, usd, tokens)
  for _, c in ipairs(counters) do
    if redis.call("EXISTS", c[1]) == 1 then
      redis.call("HINCRBY", c[1], c[2] .. "|reserved_usd", neg(usd))
      redis.call("HINCRBY", c[1], c[2] .. "|reserved_tokens", neg(tokens))
    end
  end
end

-- Move a call's tokens in the rate window it was reserved in (while that window lasts):
-- back to what the provider reported on settlement, all of them when it was never billed.
local function rate_adjust(call, delta)
  local window = redis.call("HGET", call, "rate")
  if window and delta ~= 0 and redis.call("EXISTS", window) == 1 then
    redis.call("HINCRBY", window, "tokens", delta)
  end
end

-- Free the holds of calls whose worker never settled nor released them (it crashed).
local function sweep(holds, now, limit)
  local expired = redis.call("ZRANGEBYSCORE", holds, "-inf", now, "LIMIT", 0, limit)
  for _, call in ipairs(expired) do
    local rec = redis.call("HMGET", call, "state", "usd", "tokens", "counters")
    if rec[1] == "reserved" then
      unhold(cjson.decode(rec[4]), rec[2], rec[3])
      rate_adjust(call, -tonumber(rec[3]))
      redis.call("HSET", call, "state", "expired")
    end
    redis.call("ZREM", holds, call)
  end
  return #expired
end
