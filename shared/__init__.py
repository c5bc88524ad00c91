"""Fleetline's shared package: settings, schemas, names, state, ledger and model clients.

Nothing here imports Celery workers or the producer; both sides import from here.
"""
