"""Decode step (work in progress)."""
