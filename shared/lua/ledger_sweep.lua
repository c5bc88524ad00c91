-- Free every expired hold before a report reads the counters.
-- KEYS: holds
-- ARGV: now
-- Returns the number of holds swept.
return sweep(KEYS[1], ARGV[1], 10000)
