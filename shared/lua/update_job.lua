-- Compare-and-set update of a job record, with its audit entry.
-- KEYS: job, audit
-- ARGV: expected_version ("" = any), changes_json, actor, action, now, from_statuses_json ("" = any)
-- Returns {new_version} or {-1, actual_version} on a version mismatch, {-2, status} when the
-- status is not one of from_statuses, {-3} when the job does not exist.
local job, audit = KEYS[1], KEYS[2]
local current = redis.call("HMGET", job, "version", "status")
if not current[1] then return {-3} end
if ARGV[1] ~= "" and current[1] ~= ARGV[1] then return {-1, tonumber(current[1])} end
if ARGV[6] ~= "" then
  local allowed = false
  for _, s in ipairs(cjson.decode(ARGV[6])) do
    if s == current[2] then allowed = true end
  end
  if not allowed then return {-2, current[2]} end
end
local changes = cjson.decode(ARGV[2])
local flat = {}
for k, v in pairs(changes) do flat[#flat + 1] = k; flat[#flat + 1] = v end
local version = redis.call("HINCRBY", job, "version", 1)
if #flat > 0 then redis.call("HSET", job, "updated_at", ARGV[5], unpack(flat)) end
redis.call("RPUSH", audit, cjson.encode({"actor", ARGV[3], "action", ARGV[4], "version", version,
  "changes", ARGV[2], "at", ARGV[5]}))
return {version}
