-- Give up a lease (the call failed) so that a waiter takes over now, not at its expiry.
-- KEYS: lease
-- ARGV: token
-- Returns 1 when the lease was this caller's and is gone, 0 otherwise.
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0
