-- The side-effect ledger's first write, before an action's tool is called: "started with
-- key K" (its attempt counted), unless the action is done already, not approved, or its
-- job has ended. A delivery that dies after this write leaves the action `started`: the
-- next one starts it again, under the same key.
-- KEYS: job, audit, actions
-- ARGV: action_id, idempotency key, now, actor, keep_s
-- Returns {1, attempt} to call the tool, {0, state} when the action has ended (done or
-- failed: never call it again), {-1, decision} when it is not approved, {-2, status} when
-- the job has ended, {-3} when the job is gone, {-4} when it has no such action.
local job, audit, actions = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[1]
local status = redis.call("HGET", job, "status")
if not status then return {-3} end
local current = redis.call("HMGET", actions, id .. ":state", id .. ":decision")
if not current[1] then return {-4} end
if current[1] == "done" or current[1] == "failed" then return {0, current[1]} end
if current[2] ~= "approved" then return {-1, current[2]} end
if status ~= "running" then return {-2, status} end
local attempt = redis.call("HINCRBY", actions, id .. ":attempts", 1)
redis.call("HSET", actions, id .. ":state", "started", id .. ":started_at", ARGV[3],
  id .. ":key", ARGV[2])
redis.call("RPUSH", audit, cjson.encode({"actor", ARGV[4], "action", "action_started",
  "action_id", id, "idempotency_key", ARGV[2], "attempt", attempt, "at", ARGV[3]}))
redis.call("EXPIRE", actions, ARGV[5])
return {1, attempt}
