"""An MC-SF run small enough for tests: 40 synthetic devices, 2 rounds, tiny models."""

from __future__ import annotations

TINY = {"strategy": "mcsf", "dataset": "synthetic", "synthetic-size": "small", "max-devices": 40,
        "num-rounds": 2, "simulate-dropouts": False, "devices-per-client": 16, "quiet": True,
        "local-epochs": 2, "lr": 0.01, "eval-negatives": 20, "mcsf-min-interactions": 0,
        "min-user-interactions": 15,
        "mcsf-dim": 4, "mcsf-slow-len": 8, "mcsf-fast-len": 4, "mcsf-attention": "6",
        "mcsf-hidden": "8,4", "mcsf-exposures": 2, "mcsf-slow-pretrain-epochs": 1,
        "mcsf-batch": 64, "mcsf-device-batch": 4, "mcsf-upload-every": 3}
