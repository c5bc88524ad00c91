"""Kubernetes deployment: a kustomize base, an example overlay, and their generator."""
