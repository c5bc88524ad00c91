"""`make chaos`: faults against a live fleet, and what they cost in jobs and money."""
