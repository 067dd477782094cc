"""Flower apps, run-config presets, the runner, reports and benchmarks."""
