"""C3DRec (Han & Ma, "Cloud-Client Cooperative Deep Learning for Temporal Recommendation in the
Post-GDPR Era", arXiv:2101.05641) as pure functions: no Flower, no files.

* ``itemcf``: item-CF filtering model on the transactional matrix -> candidate sets (Sec. 3.2).
* ``agp``: Automated Gradual Pruner, cubic schedule (Eq. 4), level masks.
* ``sparsify``: embedding sparsification (threshold gamma + L1, Eq. 3) and sparse encodings.
* ``timeline``: the three-stage data split (global / on-device / test) and sessions.
* ``train``: GRU4Rec training on sessions (AGP masks, sparse layer), next-click evaluation.
* ``personalise``: a cohort's on-device fine-tuning and ranking as one batched computation
  (``cohort``: plans and schedules, ``batched``/``batched_ops``: per-device parameters and
  kernels, ``rank_many``: recommendation lists).
* ``costs``: per-device bytes, FLOPs and memory of the protocol.

The Flower protocols are ``strategies.c3drec_pull`` / ``strategies.c3drec_push``.
"""
