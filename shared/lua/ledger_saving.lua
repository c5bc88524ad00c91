-- Count money a call did not spend (the cache answered it, a cheaper tier ran it), once per
-- marker: a round trip run again after its reply was lost counts the saving once.
-- KEYS: counters (window and job hashes), then the once-marker when once_ttl_s is not "0"
-- ARGV: usd (nano-USD), fields (JSON [[key index, "<scope>|saved_<kind>_usd"], ...]),
--       ttls (JSON, one per counter key, in KEYS order: for a key without one), once_ttl_s
-- Returns 1 when counted now, 0 when the marker says it was counted already.
local fields, ttls = cjson.decode(ARGV[2]), cjson.decode(ARGV[3])
local once_ttl_s = ARGV[4]
if once_ttl_s ~= "0" then
  local marked = redis.call("SET", KEYS[#KEYS], 1, "NX", "EX", once_ttl_s)
  if not marked then return 0 end
end
for _, f in ipairs(fields) do
  redis.call("HINCRBY", KEYS[f[1]], f[2], ARGV[1])
end
-- A counter this made gets its TTL; one that was there keeps its own (a saving never moves
-- a job's counter, which its reservations keep as long as the job record).
for i, ttl in ipairs(ttls) do
  if redis.call("TTL", KEYS[i]) < 0 then redis.call("EXPIRE", KEYS[i], ttl) end
end
return 1
