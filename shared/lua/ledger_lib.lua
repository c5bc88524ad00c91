-- Prepended to every ledger script. Amounts are integers (USD in nano-dollars, tokens) kept
-- as strings end to end: Lua numbers would be printed in exponent form past 1e14.
-- A call record (HASH fl:{spend}:call:<id>) holds state (reserved | settled | released |
-- expired), usd, tokens, keys (JSON list of the counter keys it counts in), counters (JSON
-- [[key indexes into keys, scope], ...]; a record written before keys existed names the key
-- itself: [[key, scope], ...]), holds (the same, for the counters its hold is counted in;
-- a record of before without it held in all of them), job (the index of the job's counter
-- in keys) and keep (the TTL that counter keeps at least from the settlement). Those keys
-- come from the record, not KEYS: every ledger key shares the {spend} hash tag, so they
-- live in the script's slot on a cluster too. The job's counter names each call id (field
-- ARGV `call field`): `r` reserved, `-` released, `<usd>,<tokens>` settled; it outlives
-- the record, and a record with a job's counter goes at settlement or release: from then
-- on the counter answers.
local function neg(amount)
  if amount == "0" then return "0" end
  return "-" .. amount
end

-- The record's {key, scope} pairs, from its keys and counters fields.
local function held(keys_json, counters_json)
  local names = keys_json and cjson.decode(keys_json) or {}
  local pairs_out = {}
  for _, c in ipairs(cjson.decode(counters_json)) do
    if type(c[1]) == "table" then
      for _, i in ipairs(c[1]) do pairs_out[#pairs_out + 1] = {names[i], c[2]} end
    else
      pairs_out[#pairs_out + 1] = c
    end
  end
  return pairs_out
end

-- The {key, scope} pairs a record's hold is counted in: its holds field, or every
-- counter for a record written before holds existed.
local function holding(keys_json, holds_json, counters_json)
  return held(keys_json, holds_json or counters_json)
end

-- The job's counter a record holds (nil when it holds none, or it is gone).
local function job_counter(keys_json, job_index)
  if not keys_json or not job_index then return nil end
  local key = cjson.decode(keys_json)[tonumber(job_index)]
  if key and redis.call("EXISTS", key) == 1 then return key end
  return nil
end

-- What the job's counter keeps of a call whose record is gone: "settled", "released" or nil
-- (never settled). The call id (`field` is `call|<id>`) starts with its job's id, so each
-- `<prefix>:` of it names a counter (`job_key` + prefix) it may be in.
local function kept_state(field, job_key)
  local id = string.sub(field, 6)
  local at = string.find(id, ":", 1, true)
  while at do
    local kept = redis.call("HGET", job_key .. string.sub(id, 1, at - 1), field)
    if kept == "-" then return "released" end
    if kept and kept ~= "r" then return "settled" end
    at = string.find(id, ":", at + 1, true)
  end
  return nil
end

-- Whether kept_state finds the call in the job's counter `job`: its id starts `<job id>:`
-- (a record of any other id must stay: nothing else would answer for it).
local function counter_answers(job, field, job_key)
  local prefix = string.sub(job, #job_key + 1) .. ":"
  return string.sub(field, 6, 5 + #prefix) == prefix
end

-- Keep a key at least `ttl` seconds from now (a write never shortens what another set).
local function keep_at_least(key, ttl)
  if redis.call("TTL", key) < tonumber(ttl) then redis.call("EXPIRE", key, ttl) end
end

-- Whether a counter key still exists, asked once a script (`live` caches the answers): a
-- call's counters sit in three keys or so, its job's and the hour's and the day's windows.
local function exists(live, key)
  local there = live[key]
  if there == nil then
    there = redis.call("EXISTS", key) == 1
    live[key] = there
  end
  return there
end

-- Give back a call's hold on every counter that still exists (an expired window stays gone).
local function unhold(counters, usd, tokens, live)
  live = live or {}
  for _, c in ipairs(counters) do
    if exists(live, c[1]) then
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
    local rec = redis.call("HMGET", call, "state", "usd", "tokens", "counters", "keys", "holds")
    if rec[1] == "reserved" then
      unhold(holding(rec[5], rec[6], rec[4]), rec[2], rec[3])
      rate_adjust(call, -tonumber(rec[3]))
      redis.call("HSET", call, "state", "expired")
    end
    redis.call("ZREM", holds, call)
  end
  return #expired
end
