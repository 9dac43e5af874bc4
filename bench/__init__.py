"""Benchmarks of Hutong (``make bench`` / ``python -m bench.run``); not tests, not run in CI."""
