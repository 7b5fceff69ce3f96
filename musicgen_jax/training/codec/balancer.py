"""EnCodec's loss balancer (audiocraft's ``losses.Balancer``), as a pure function of its state.

The reconstruction losses differ in scale by orders of magnitude (the multi-scale mel loss is in
the hundreds, the time-domain L1 below one), so fixed weights would leave all but one of them
without effect. EnCodec instead balances their gradients with respect to the decoded audio: each
loss's gradient is divided by an exponential moving average of its norm (per batch item, then
averaged over the batch) and scaled so that the loss contributes ``weight / sum(weights)`` of a
gradient of norm ``total_norm``. The sum is pulled back through the codec (one vector-Jacobian
product); losses on other outputs (the commitment) are not balanced and keep their plain weight,
as audiocraft adds them apart. The average is bias-corrected like flashy's ``averager``: the
first steps are not pulled towards zero.
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp

EPSILON = 1e-12  # audiocraft's


@flax.struct.dataclass
class BalancerState:
    """The moving averages of each balanced loss's gradient norm: ``totals / counts``."""

    totals: jax.Array  # [losses] float32, the decayed sums of norms
    counts: jax.Array  # [losses] float32, the decayed sums of weights (bias correction)

    @classmethod
    def create(cls, num_losses: int) -> BalancerState:
        # Two arrays, not one twice: the train step donates the state, buffer by buffer.
        return cls(totals=jnp.zeros((num_losses,), jnp.float32), counts=jnp.zeros((num_losses,), jnp.float32))


def gradient_norm(grad: jax.Array) -> jax.Array:
    """The L2 norm of each batch item's gradient, averaged over the batch (``per_batch_item``)."""
    return jnp.mean(jnp.sqrt(jnp.sum(jnp.square(grad), axis=tuple(range(1, grad.ndim)))))


def balance(
    state: BalancerState,
    grads: jax.Array,
    weights: jax.Array,
    active: jax.Array,
    decay: float,
    total_norm: float,
) -> tuple[jax.Array, jax.Array, BalancerState]:
    """Combine per-loss gradients ``grads [losses, *output]`` into one output gradient.

    ``weights [losses]`` are the desired shares (normalised over the ``active [losses]`` losses; an
    inactive loss, e.g. the adversarial one before its start step, gets no share and leaves its
    average untouched). Returns (the combined gradient, each loss's scale ``[losses]``, the new state).
    """
    norms = jax.vmap(gradient_norm)(grads)  # [losses]
    totals = jnp.where(active, decay * state.totals + norms, state.totals)
    counts = jnp.where(active, decay * state.counts + 1.0, state.counts)
    average = totals / jnp.maximum(counts, EPSILON)
    shares = jnp.where(active, weights, 0.0)
    ratios = shares / jnp.maximum(jnp.sum(shares), EPSILON)
    scales = ratios * total_norm / (EPSILON + average)
    combined = jnp.tensordot(scales, grads, axes=1)
    return combined, scales, BalancerState(totals=totals, counts=counts)
