"""Fleetline: multi-agent LLM workloads on a Celery + Redis worker fleet.

This is the root package (its files live in the repository's `producer/root/`); the
repository's folders are mapped under it as `fleetline.producer`, `fleetline.workers`,
`fleetline.shared` and `fleetline.beat`.
"""
