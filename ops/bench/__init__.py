"""`python -m ops.bench`: Fleetline against bare Celery and Dramatiq, side by side.

Every scenario starts its own Redis-backed workers on a private redis-server, runs the
sides alternately (A B A B after a warm-up) and writes `results/latest.json` and
`results/latest.md`. Targets are measured here, never asserted in tests.
"""
