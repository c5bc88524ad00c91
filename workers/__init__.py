"""Specialist workers: the guarded task base, one module per specialist, and synthesis."""
