"""A DCCL run small enough for tests: 30 synthetic devices, a tiny PatchedDIN."""

from __future__ import annotations

TINY = {"strategy": "dccl", "dataset": "synthetic", "synthetic-size": "tiny", "max-devices": 30,
        "num-rounds": 2, "simulate-dropouts": False, "devices-per-client": 8,
        "eval-negatives": 10, "quiet": True, "local-epochs": 2,
        "dccl-history-len": 8, "dccl-item-dim": 4, "dccl-side-dim": 4, "dccl-profile-dim": 2,
        "dccl-attention": "8", "dccl-hidden": "8,4,8", "dccl-meta-dim": 4,
        "dccl-pretrain-epochs": 1, "dccl-cloud-batch": 64, "dccl-device-batch": 8,
        "dccl-device-lr": 0.05}
