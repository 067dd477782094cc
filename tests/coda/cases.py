"""A CoDA run small enough for tests: 60 synthetic devices over 3 simulated days."""

from __future__ import annotations

TINY = {"strategy": "coda", "dataset": "synthetic", "synthetic-size": "small", "max-devices": 60,
        "num-rounds": 3, "simulate-dropouts": False, "devices-per-client": 16, "quiet": True,
        "coda-k": 5, "coda-cloud-epochs": 1, "coda-history-len": 6, "coda-dim": 4,
        "coda-attention": "8", "coda-hidden": "8", "coda-batch": 10, "coda-batch-max": 16,
        "coda-max-batches": 6, "coda-trigger": 20, "coda-local-cap": 60, "coda-outside-cap": 40,
        "coda-first-day": 3, "coda-device-batch": 16}
