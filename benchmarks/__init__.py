"""Throughput benchmarks of synthrel's GPU paths against the plain library baselines (`python -m benchmarks.run`)."""
