-- The side-effect ledger's last write, in the round trip that records the action's tool
-- outcome: done (with its result) or failed, once; the job's open actions count it.
-- KEYS: job, audit, actions
-- ARGV: action_id, ok ("1" | "0"), result_json, now, actor, keep_s
-- Returns {1, drafts_open, actions_open} when this call ended the action, {0, drafts_open,
-- actions_open} when it had ended already; counts are -1 when the job is gone.
local job, audit, actions = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[1]
local exists = redis.call("EXISTS", job) == 1
local counts = {-1, -1}
if exists then
  local found = redis.call("HMGET", job, "drafts_open", "actions_open")
  counts = {tonumber(found[1] or 0), tonumber(found[2] or 0)}
end
local state = redis.call("HGET", actions, id .. ":state")
if state == "done" or state == "failed" then return {0, counts[1], counts[2]} end
local ended = ARGV[2] == "1" and "done" or "failed"
redis.call("HSET", actions, id .. ":state", ended, id .. ":result", ARGV[3])
if ended == "done" then redis.call("HSET", actions, id .. ":executed_at", ARGV[4]) end
redis.call("EXPIRE", actions, ARGV[6])
-- A job gone (aged out) gets no record back: its keys would live without a TTL.
if not exists then return {1, -1, -1} end
local acts = redis.call("HINCRBY", job, "actions_open", -1)
redis.call("RPUSH", audit, cjson.encode({"actor", ARGV[5], "action", "action_" .. ended,
  "action_id", id, "at", ARGV[4]}))
return {1, counts[1], acts}
