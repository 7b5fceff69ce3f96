"""The pure train step ``(state, batch, rng) -> (state, metrics)`` and the eval step.

One step: frames → delayed inputs/targets/mask (the shared delay-pattern module), condition
dropout (the null condition: zero memory, nothing attended), teacher-forced logits, per-codebook
cross-entropy, gradients accumulated over microbatches by a scan, AdamW, the optional EMA. Model,
config and optimizer are closed over; the state buffer is donated; ``rng = fold_in(rng, step)``.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from musicgen_jax.conditioning import ATTRIBUTE_FIELDS, ATTRIBUTE_KEYS, keep_attributes
from musicgen_jax.models.delay_pattern import training_pair
from musicgen_jax.models.musicgen import MusicGenModel
from musicgen_jax.sharding import axes
from musicgen_jax.training import loss as loss_lib
from musicgen_jax.training.config import TrainConfig
from musicgen_jax.training.mesh import Rules, replicated
from musicgen_jax.training.optimizer import learning_rate_schedule
from musicgen_jax.training.state import StateLayout, TrainState, effective_params

Batch = dict[str, jax.Array]


def prepare_targets(batch: Batch, model: MusicGenModel) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Delayed ``inputs``, ``targets`` and loss ``mask``, each ``[batch, codebooks, frames + C - 1]``.

    Padded frames become the special token first, so that padding enters the inputs as the pad
    token whatever the data source padded with (as transformers' shifted labels do).
    """
    decoder = model.config.decoder
    special = decoder.pad_token_id
    codes = jnp.where(batch["frame_mask"][:, None, :], batch["codes"], special)
    return training_pair(codes, special, decoder.audio_channels, batch["frame_mask"])


def _forward(
    module: MusicGenModel,
    batch: Batch,
    inputs: jax.Array,
    drop: jax.Array,  # [batch] bool: train this example on the null condition
    text_deterministic: bool,
    deterministic: bool,
) -> jax.Array:
    """Logits ``[batch, codebooks, length, vocab]`` (float32); run inside ``model.apply``."""
    if module.config.is_melody:
        # Its batches would need chroma, and its null condition is not zero memory (below).
        raise NotImplementedError(f"{module.config.name}: training melody models is not supported yet")
    attributes = {k: batch[k] for k in ATTRIBUTE_KEYS} if module.config.uses_learned_attributes else None
    text_states = module.encode_text(batch["text_ids"], batch["text_mask"], text_deterministic)
    memory, memory_mask = module.condition(text_states, batch["text_mask"], attributes)
    # The null condition of classifier-free guidance (musicgen.null_condition): zero memory and an
    # all-false mask. It covers the learned attribute tokens too, so those are nulled with the text.
    keep = ~drop
    memory = memory * keep[:, None, None].astype(memory.dtype)
    memory_mask = memory_mask & keep[:, None]
    return module.decode(inputs, memory, memory_mask, deterministic)


def _condition_dropout(rng: jax.Array, config: TrainConfig, batch_size: int) -> jax.Array:
    p = config.training.condition_dropout
    if p == 0.0:
        return jnp.zeros((batch_size,), bool)
    if config.training.condition_dropout_per == "batch":
        return jnp.broadcast_to(jax.random.bernoulli(rng, p), (batch_size,))
    return jax.random.bernoulli(rng, p, (batch_size,))


def _attribute_dropout(rng: jax.Array, config: TrainConfig, batch: Batch) -> Batch:
    """``batch`` with each learned attribute absent from each example with ``attribute_dropout``."""
    p = config.training.attribute_dropout
    if p == 0.0:
        return batch
    size = batch["text_ids"].shape[0]
    keys = jax.random.split(rng, len(ATTRIBUTE_FIELDS))
    keep = {name: ~jax.random.bernoulli(key, p, (size,)) for name, key in zip(ATTRIBUTE_FIELDS, keys)}
    return keep_attributes(batch, keep)


def _split_microbatches(tree: Batch, count: int) -> Batch:
    """``[batch, ...]`` → ``[count, batch / count, ...]`` taking every ``count``-th example, so each
    microbatch keeps the batch's device layout (each device holds a slice of every microbatch)."""

    def split(x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0] // count, count) + x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    return jax.tree.map(split, tree)


def _in_mesh(jitted: Callable, mesh: Mesh, rules: Rules, activation_constraints: bool) -> Callable:
    """Call (and so trace) ``jitted`` with the mesh set and the logical rules active, so that the
    model's ``nn.with_logical_constraint`` annotations resolve against them (``jax.set_mesh`` is
    not allowed inside ``jax.jit``). Without ``activation_constraints`` they stay no-ops."""

    def call(*args):
        if not activation_constraints:
            return jitted(*args)
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return jitted(*args)

    return call


def make_train_step(
    layout: StateLayout, config: TrainConfig, rules: Rules, batch_shardings: dict
) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """The jitted train step with explicit in/out shardings and the state donated."""
    model, tx, mesh = layout.model, layout.tx, layout.mesh
    training = config.training
    schedule = learning_rate_schedule(config.optimizer, training.steps)
    microbatches = training.microbatches
    train_text = not layout.frozen
    lora = layout.abstract.lora

    def loss_fn(params, frozen_params, micro: Batch, counts, rng):
        rng_condition, rng_dropout = jax.random.split(rng)
        # LoRA's dropout draws from a stream of its own (folded in), so runs without it draw as before.
        lora_rng = jax.random.fold_in(rng, 2) if lora is not None else None
        inputs, targets, mask = prepare_targets(micro, model)
        drop = _condition_dropout(rng_condition, config, inputs.shape[0])
        if model.config.uses_learned_attributes:
            # A stream of its own (folded in, not split off), so runs without it draw as before.
            micro = _attribute_dropout(jax.random.fold_in(rng, 1), config, micro)
        logits = model.apply(
            {"params": effective_params(params, frozen_params, lora, lora_rng)},
            micro,
            inputs,
            drop,
            text_deterministic=not (train_text and training.dropout),
            deterministic=not training.dropout,
            method=_forward,
            rngs={"dropout": rng_dropout},
        )
        sums = loss_lib.codebook_sums(logits, targets, mask)
        return loss_lib.loss_from_sums(sums["nll"], counts), sums

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(
        state: TrainState, batch: Batch, rng: jax.Array
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        rng = jax.random.fold_in(rng, state.step)
        # Normalise by the whole batch's valid targets, so microbatches add up to one big batch.
        counts = loss_lib.codebook_counts(prepare_targets(batch, model)[2])
        if microbatches == 1:
            (_, sums), grads = grad_fn(state.params, state.frozen_params, batch, counts, rng)
        else:
            parts = _split_microbatches(batch, microbatches)

            def accumulate(carry, part):
                index, micro = part
                micro = jax.tree.map(
                    lambda x: nn.with_logical_constraint(x, (axes.BATCH,) + (None,) * (x.ndim - 1)), micro
                )
                (_, sums), grads = grad_fn(
                    state.params, state.frozen_params, micro, counts, jax.random.fold_in(rng, index)
                )
                return jax.tree.map(jnp.add, carry, (grads, sums)), None

            zeros = (
                jax.tree.map(jnp.zeros_like, state.params),
                {"nll": jnp.zeros_like(counts), "correct": jnp.zeros_like(counts)},
            )
            (grads, sums), _ = jax.lax.scan(accumulate, zeros, (jnp.arange(microbatches), parts))
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        step = state.step + 1
        ema = state.ema_params
        if ema is not None:
            decay = training.ema_decay
            due = step % training.ema_every == 0
            ema = jax.tree.map(lambda e, p: jnp.where(due, decay * e + (1.0 - decay) * p, e), ema, params)
        metrics = loss_lib.metrics_from_sums(sums, counts)
        metrics["grad_norm"] = grad_norm
        metrics["learning_rate"] = schedule(state.step)
        new_state = state.replace(step=step, params=params, opt_state=opt_state, ema_params=ema)
        return new_state, metrics

    return _in_mesh(
        jax.jit(
            train_step,
            in_shardings=(layout.shardings, batch_shardings, replicated(mesh)),
            out_shardings=(layout.shardings, replicated(mesh)),
            donate_argnums=0,
        ),
        mesh,
        rules,
        config.mesh.activation_constraints,
    )


def make_eval_step(
    layout: StateLayout, config: TrainConfig, rules: Rules, batch_shardings: dict, *, use_ema: bool
) -> Callable[[TrainState, Batch], dict[str, jax.Array]]:
    """Deterministic loss on the full condition: the metrics of :func:`loss.metrics_from_sums`, of
    the moving average of the weights with ``use_ema`` (the state must carry one), else the raw ones."""
    model, mesh = layout.model, layout.mesh

    def eval_step(state: TrainState, batch: Batch) -> dict[str, jax.Array]:
        inputs, targets, mask = prepare_targets(batch, model)
        drop = jnp.zeros((inputs.shape[0],), bool)
        logits = model.apply(
            {"params": state.all_params(use_ema)}, batch, inputs, drop, True, True, method=_forward
        )
        return loss_lib.metrics_from_sums(
            loss_lib.codebook_sums(logits, targets, mask), loss_lib.codebook_counts(mask)
        )

    return _in_mesh(
        jax.jit(eval_step, in_shardings=(layout.shardings, batch_shardings), out_shardings=replicated(mesh)),
        mesh,
        rules,
        config.mesh.activation_constraints,
    )


def train_loss_reference(model: MusicGenModel, params: dict, batch: Batch) -> dict[str, jax.Array]:
    """Deterministic, unsharded, full-condition metrics for ``params`` (tests and checks)."""
    inputs, targets, mask = prepare_targets(batch, model)
    drop = jnp.zeros((inputs.shape[0],), bool)
    logits = model.apply({"params": params}, batch, inputs, drop, True, True, method=_forward)
    return loss_lib.metrics_from_sums(
        loss_lib.codebook_sums(logits, targets, mask), loss_lib.codebook_counts(mask)
    )
