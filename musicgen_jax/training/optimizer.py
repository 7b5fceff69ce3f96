"""AdamW with warm-up and cosine decay and global-norm clipping (audiocraft's recipe)."""

from __future__ import annotations

import jax
import optax

from musicgen_jax.training.config import OptimizerSection


def learning_rate_schedule(config: OptimizerSection, total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 over ``warmup_steps``, then cosine decay to the end of the run (or constant)."""
    peak = config.learning_rate
    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    if config.schedule == "constant":
        if warmup == 0:
            return optax.constant_schedule(peak)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup]
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=peak * config.end_learning_rate_ratio,
    )


def _decay_mask(params):
    """Weight decay on matrices and embedding tables only: LayerNorm scales and biases are 1-D."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(config: OptimizerSection, total_steps: int) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(config, total_steps)
    adamw = optax.adamw(
        schedule,
        b1=config.b1,
        b2=config.b2,
        eps=config.eps,
        weight_decay=config.weight_decay,
        mask=_decay_mask,
    )
    if config.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(config.grad_clip), adamw)
    return adamw
