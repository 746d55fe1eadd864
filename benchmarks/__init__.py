"""Benchmarks that check LightNet's speed and memory claims against a peer in one process (README.md)."""
