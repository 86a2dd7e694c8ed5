"""Benchmark harness for cachekit: throughput, scale and miss-storm runs (`python -m bench`)."""
