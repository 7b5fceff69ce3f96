"""The codec's train and eval steps: pure functions of an explicit :class:`CodecTrainState`.

One train step: encode, quantise (straight-through, at a bandwidth drawn for the step), decode,
the losses (time L1, multi-scale mel, commitment, and with the discriminator on, adversarial and
feature matching; those on the audio balanced as EnCodec does, see balancer.py), one Adam step of
the codec, the EMA k-means update of the codebooks, then one step of the discriminator on the same
batch. The step is jitted with the state replicated and the batch split over the mesh's devices
(data parallel): GSPMD sums the gradients and the codebook statistics over the whole global batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from musicgen_jax.codec.config import CodecConfig
from musicgen_jax.codec.flax_seanet import Decoder, Encoder
from musicgen_jax.training.codec import balancer as balancer_lib
from musicgen_jax.training.codec import discriminator as disc_lib
from musicgen_jax.training.codec import quantizer as quantizer_lib
from musicgen_jax.training.codec.config import CodecTrainConfig
from musicgen_jax.training.codec.params import fold
from musicgen_jax.training.codec.spectral import mel_scales, multi_scale_mel_loss

BATCH_AXES = ("data", "fsdp")  # the mesh axes a batch is split over (training/mesh.py's names)


@flax.struct.dataclass
class CodecTrainState:
    step: jax.Array  # [] int32
    params: dict  # {"encoder", "decoder"} in the weight-normalised training form (params.py)
    opt_state: optax.OptState
    quantizer: quantizer_lib.QuantizerState
    disc_params: dict | None  # the discriminator's, when enabled
    disc_opt_state: optax.OptState | None
    balancer: balancer_lib.BalancerState  # the loss balancer's gradient-norm averages


@dataclasses.dataclass(frozen=True)
class CodecModules:
    """The networks and the facts the steps close over."""

    codec: CodecConfig
    train: CodecTrainConfig
    encoder: Encoder
    decoder: Decoder
    discriminator: disc_lib.MultiScaleStftDiscriminator | None
    bandwidth_stages: tuple[int, ...]  # codebooks used at each target bandwidth

    @classmethod
    def create(cls, codec: CodecConfig, train: CodecTrainConfig) -> CodecModules:
        discriminator = None
        if train.discriminator.enabled:
            scales = tuple((n_fft, n_fft // 4) for n_fft in train.discriminator.n_ffts)
            discriminator = disc_lib.MultiScaleStftDiscriminator(scales, train.discriminator.filters)
        stages = tuple(sorted({codec.quantizers_for_bandwidth(b) for b in codec.target_bandwidths}))
        return cls(codec, train, Encoder(codec), Decoder(codec), discriminator, stages)

    @property
    def balanced_losses(self) -> tuple[str, ...]:
        """The losses on the decoded audio, in the balancer's order."""
        adversarial = ("adversarial", "feature_matching") if self.discriminator is not None else ()
        return ("time_l1", "mel", *adversarial)

    @property
    def mel_scales(self) -> tuple[int, ...]:
        loss = self.train.loss
        return mel_scales(loss.mel_smallest_fft, loss.mel_largest_fft)

    def encode(self, params: dict, audio: jax.Array) -> jax.Array:
        """Audio ``[batch, channels, samples]`` -> embeddings ``[batch, frames, dim]`` (training form)."""
        return self.encoder.apply({"params": fold(params)["encoder"]}, jnp.swapaxes(audio, 1, 2))

    def reconstruct(
        self, params: dict, codebooks: jax.Array, audio: jax.Array, active_stages: jax.Array
    ) -> tuple[jax.Array, quantizer_lib.Quantized]:
        """Audio through encoder, quantiser and decoder, cut to the input's length."""
        quantized = quantizer_lib.quantize(codebooks, self.encode(params, audio), active_stages)
        decoded = self.decoder.apply({"params": fold(params)["decoder"]}, quantized.embeddings)
        return jnp.swapaxes(decoded, 1, 2)[..., : audio.shape[-1]], quantized

    def reconstruction_losses(self, reconstruction: jax.Array, audio: jax.Array) -> dict[str, jax.Array]:
        loss = self.train.loss
        return {
            "time_l1": jnp.mean(jnp.abs(reconstruction - audio)),
            "mel": multi_scale_mel_loss(
                reconstruction, audio, self.codec.sampling_rate, self.mel_scales, loss.n_mels
            ),
        }


def si_snr_db(estimate: jax.Array, target: jax.Array) -> jax.Array:
    """Scale-invariant SNR in dB of ``estimate`` against ``target`` (``[batch, channels, samples]``),
    averaged over the batch; channels are summed to mono first."""
    estimate = jnp.mean(estimate, axis=1)
    target = jnp.mean(target, axis=1)
    estimate = estimate - jnp.mean(estimate, axis=-1, keepdims=True)
    target = target - jnp.mean(target, axis=-1, keepdims=True)
    scale = jnp.sum(estimate * target, -1, keepdims=True) / (jnp.sum(target**2, -1, keepdims=True) + 1e-8)
    projected = scale * target
    noise = estimate - projected
    ratio = (jnp.sum(projected**2, -1) + 1e-8) / (jnp.sum(noise**2, -1) + 1e-8)
    return jnp.mean(10.0 * jnp.log10(ratio))


def _train_step(
    modules: CodecModules,
    tx: optax.GradientTransformation,
    disc_tx: optax.GradientTransformation | None,
    state: CodecTrainState,
    audio: jax.Array,
    rng: jax.Array,
) -> tuple[CodecTrainState, dict[str, jax.Array]]:
    train = modules.train
    weights = train.loss
    rng = jax.random.fold_in(rng, state.step)
    bandwidth_key, dead_code_key = jax.random.split(rng)
    stages = jnp.asarray(modules.bandwidth_stages)
    if train.quantizer.bandwidth_dropout:
        active_stages = stages[jax.random.randint(bandwidth_key, (), 0, len(modules.bandwidth_stages))]
    else:
        active_stages = stages[-1]

    def forward(params):
        reconstruction, quantized = modules.reconstruct(
            params, state.quantizer.codebooks, audio, active_stages
        )
        return (reconstruction, quantized.commitment), quantized

    (reconstruction, commitment), pullback, quantized = jax.vjp(forward, state.params, has_aux=True)
    # The losses on the decoded audio, each with its gradient there (balanced below).
    output_losses = {
        "time_l1": lambda r: jnp.mean(jnp.abs(r - audio)),
        "mel": lambda r: multi_scale_mel_loss(
            r, audio, modules.codec.sampling_rate, modules.mel_scales, weights.n_mels
        ),
    }
    active = [True, True]
    if modules.discriminator is not None:
        real = modules.discriminator.apply({"params": state.disc_params}, audio)

        def fake_of(r):
            return modules.discriminator.apply({"params": state.disc_params}, r)

        output_losses["adversarial"] = lambda r: disc_lib.adversarial_loss(fake_of(r))
        output_losses["feature_matching"] = lambda r: disc_lib.feature_matching_loss(real, fake_of(r))
        # The adversarial terms join at discriminator.start_step (the codec first learns to reconstruct).
        started = state.step >= train.discriminator.start_step
        active += [started, started]
    assert tuple(output_losses) == modules.balanced_losses
    terms, output_grads = {}, []
    for name, fn in output_losses.items():
        terms[name], grad = jax.value_and_grad(fn)(reconstruction)
        output_grads.append(grad)
    stacked = jnp.stack(output_grads)  # [losses, batch, channels, samples]
    loss_weights = jnp.asarray([getattr(weights, name) for name in output_losses], jnp.float32)
    active = jnp.asarray(active)
    plain = jnp.where(active, loss_weights, 0.0)
    balancer_state = state.balancer
    if weights.balance:
        out_grad, scales, balancer_state = balancer_lib.balance(
            state.balancer, stacked, loss_weights, active, weights.balancer_decay, weights.balancer_total_norm
        )
    else:
        scales = plain
        out_grad = jnp.tensordot(scales, stacked, axes=1)
    terms["commitment"] = commitment
    # The commitment is a loss on the encoder's output, not the audio: its plain weight, unbalanced.
    (grads,) = pullback((out_grad, jnp.asarray(weights.commitment, commitment.dtype)))
    # "loss" at the configured weights, comparable from step to step and with the eval loss; the
    # gradient is that of audiocraft's "effective loss", each term at the scale it got this step.
    loss = (
        sum(plain[i] * terms[name] for i, name in enumerate(output_losses)) + weights.commitment * commitment
    )
    effective = sum(scales[i] * terms[name] for i, name in enumerate(output_losses))
    effective = effective + weights.commitment * commitment
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    codebooks, quantizer_metrics = quantizer_lib.ema_update(
        state.quantizer,
        quantized,
        dead_code_key,
        train.quantizer.decay,
        train.quantizer.dead_code_threshold,
    )
    metrics = {
        "loss": loss,
        **terms,
        **quantizer_metrics,
        "codebooks": active_stages.astype(jnp.float32),
        "grad_norm": optax.global_norm(grads),
        "effective_loss": effective,
        **{f"scale/{name}": scales[i] for i, name in enumerate(output_losses)},
    }
    disc_params, disc_opt_state = state.disc_params, state.disc_opt_state
    if modules.discriminator is not None:
        fake_audio = jax.lax.stop_gradient(reconstruction)

        def disc_loss(disc_params):
            real = modules.discriminator.apply({"params": disc_params}, audio)
            fake = modules.discriminator.apply({"params": disc_params}, fake_audio)
            return disc_lib.discriminator_loss(real, fake)

        d_loss, d_grads = jax.value_and_grad(disc_loss)(state.disc_params)

        def update(operands):
            params_, opt_ = operands
            d_updates, opt_ = disc_tx.update(d_grads, opt_, params_)
            return optax.apply_updates(params_, d_updates), opt_

        disc_params, disc_opt_state = jax.lax.cond(
            state.step >= train.discriminator.start_step,
            update,
            lambda operands: operands,
            (state.disc_params, state.disc_opt_state),
        )
        metrics["discriminator"] = d_loss
    new_state = CodecTrainState(
        step=state.step + 1,
        params=params,
        opt_state=opt_state,
        quantizer=codebooks,
        disc_params=disc_params,
        disc_opt_state=disc_opt_state,
        balancer=balancer_state,
    )
    return new_state, metrics


def _eval_step(modules: CodecModules, state: CodecTrainState, audio: jax.Array) -> dict[str, jax.Array]:
    """Reconstruction at the full bandwidth: the losses and SI-SNR."""
    stages = jnp.asarray(modules.bandwidth_stages[-1])
    reconstruction, quantized = modules.reconstruct(state.params, state.quantizer.codebooks, audio, stages)
    terms = modules.reconstruction_losses(reconstruction, audio)
    weights = modules.train.loss
    return {
        "loss": weights.time_l1 * terms["time_l1"] + weights.mel * terms["mel"],
        **terms,
        "commitment": quantized.commitment,
        "si_snr_db": si_snr_db(reconstruction, audio),
    }


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Audio ``[batch, channels, samples]`` split along the batch over every mesh device."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def make_steps(
    modules: CodecModules,
    tx: optax.GradientTransformation,
    disc_tx: optax.GradientTransformation | None,
    mesh: Mesh,
    state_sharding,
) -> tuple[Callable, Callable]:
    """The jitted ``train_step(state, audio, rng)`` and ``eval_step(state, audio)``."""
    audio_sharding = batch_sharding(mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    train_step = jax.jit(
        lambda state, audio, rng: _train_step(modules, tx, disc_tx, state, audio, rng),
        in_shardings=(state_sharding, audio_sharding, replicated),
        out_shardings=(state_sharding, replicated),
        donate_argnums=0,
    )
    eval_step = jax.jit(
        lambda state, audio: _eval_step(modules, state, audio),
        in_shardings=(state_sharding, audio_sharding),
        out_shardings=replicated,
    )
    return train_step, eval_step


def gather_embeddings(modules: CodecModules, params: dict, batches: list[np.ndarray]) -> jax.Array:
    """The encoder's outputs ``[rows, dim]`` over ``batches`` (for the k-means initialisation)."""
    encode = jax.jit(modules.encode)
    rows = [encode(params, jnp.asarray(batch)).reshape(-1, modules.codec.hidden_size) for batch in batches]
    return jnp.concatenate(rows)
