"""Example fleets built on the public API."""
