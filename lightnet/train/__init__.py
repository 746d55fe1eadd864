"""Training infrastructure shared by all LightNet trainers, and the classification trainer.

Modules (each with one job; import what you need, nothing heavy is imported here):

- :mod:`lightnet.train.config`     — dataclass configs from YAML recipes + ``key=value`` overrides.
- :mod:`lightnet.train.schema`     — config sections shared by trainers: ``RunConfig``, ``OptimConfig``, ``SchedConfig``.
- :mod:`lightnet.train.data`       — resumable, shardable sampling (``EpochBatchSampler``, ``SeededDataset``).
- :mod:`lightnet.train.datasets`   — built-in image datasets (digits, Fashion-MNIST, ImageFolder).
- :mod:`lightnet.train.rng`        — seeding and RNG-state capture/restore.
- :mod:`lightnet.train.checkpoint` — atomic safetensors checkpoints, safe loading, ``latest`` pointer.
- :mod:`lightnet.train.run_log`    — CSV/TensorBoard logs and the training-curve PNG.
- :mod:`lightnet.train.engine`     — the accelerate training loop (``Trainer``), optimizer/scheduler factories.
- :mod:`lightnet.train.classify`   — ``lightnet train`` / ``lightnet eval`` (image classification).
"""
