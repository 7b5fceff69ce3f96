"""Training: config, mesh and sharding, train state, the train step, checkpoints, logging, export.

Entry points: ``python train.py`` (:func:`musicgen_jax.training.cli.main`), or
:func:`~musicgen_jax.training.trainer.train` with a :class:`~musicgen_jax.training.config.TrainConfig`.
"""
