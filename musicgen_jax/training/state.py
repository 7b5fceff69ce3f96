"""The train state pytree and its creation directly in its sharded layout.

Parameters are never materialised whole on one device: ``jax.eval_shape`` of ``model.init`` gives
the shapes with their logical axis names, the rules turn those into mesh shardings, and
``jax.jit(init, out_shardings=...)`` creates every shard where it lives. Pretrained weights (host
NumPy) are placed shard by shard with ``jax.make_array_from_callback``.

Frozen parameters (the T5 encoder unless ``model.train_text_encoder``) live beside the trainable
ones, outside the optimizer: no gradient, no Adam moments, no weight decay. With ``lora.enabled``
the whole model is frozen (in ``lora.base_dtype``) and the trainable tree is the adapters
(:mod:`musicgen_jax.models.lora`), merged into the base inside the loss.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from musicgen_jax.models import lora as lora_lib
from musicgen_jax.models import quantization
from musicgen_jax.models.config import MusicGenConfig
from musicgen_jax.models.musicgen import MusicGenModel, init_inputs
from musicgen_jax.training.config import LoraSection, ModelSpec
from musicgen_jax.training.mesh import Rules, logical_shardings, replicated

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
TEXT_ENCODER = "text_encoder"


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # [] int32: optimizer steps taken
    params: dict  # trainable parameters (float32 master weights)
    frozen_params: dict  # parameters not trained; {} when everything trains
    opt_state: optax.OptState
    ema_params: dict | None  # moving average of ``params``, when enabled
    # Set: ``params`` are LoRA adapters over ``frozen_params``, the whole model (static, not a leaf).
    lora: lora_lib.LoraSpec | None = flax.struct.field(pytree_node=False, default=None)

    def all_params(self, use_ema: bool = False) -> dict:
        """The model's full parameter tree (trainable, or their average, joined with the frozen;
        with LoRA, the base with the adapters, or their average, merged)."""
        if use_ema and self.ema_params is None:
            raise ValueError(
                "use_ema: this state keeps no moving average of the weights (training.ema_decay)"
            )
        return effective_params(self.ema_params if use_ema else self.params, self.frozen_params, self.lora)


def effective_params(
    trainable: dict, frozen: dict, lora: lora_lib.LoraSpec | None, dropout_rng: jax.Array | None = None
) -> dict:
    """The tree the model runs on: trainable and frozen joined, or the adapters merged into the base."""
    if lora is None:
        return merge_params(trainable, frozen)
    return lora_lib.apply_adapters(quantization.dequantize_base(frozen), trainable, lora, dropout_rng)


def build_model(config: MusicGenConfig, spec: ModelSpec) -> MusicGenModel:
    return MusicGenModel(
        config, dtype=DTYPES[spec.dtype], param_dtype=DTYPES[spec.param_dtype], remat_policy=spec.remat
    )


def frozen_keys(spec: ModelSpec) -> tuple[str, ...]:
    return () if spec.train_text_encoder else (TEXT_ENCODER,)


def split_params(params: dict, frozen: tuple[str, ...]) -> tuple[dict, dict]:
    """``(trainable, frozen)`` by top-level module name."""
    return (
        {k: v for k, v in params.items() if k not in frozen},
        {k: v for k, v in params.items() if k in frozen},
    )


def merge_params(trainable: dict, frozen: dict) -> dict:
    return {**frozen, **trainable}


@dataclasses.dataclass
class StateLayout:
    """Everything about the train state that follows from config: shapes, shardings, how to init it."""

    model: MusicGenModel
    tx: optax.GradientTransformation
    mesh: Mesh
    frozen: tuple[str, ...]
    use_ema: bool
    shardings: TrainState  # NamedSharding leaves
    abstract: TrainState  # ShapeDtypeStruct leaves carrying those shardings (for orbax restore)
    lora: LoraSection | None = None  # enabled LoRA settings, else None
    # LoRA: the base's own (unquantised) shapes and shardings, as it is loaded before quantisation.
    base_shapes: dict | None = None
    base_shardings: dict | None = None

    @classmethod
    def create(
        cls,
        model: MusicGenModel,
        tx: optax.GradientTransformation,
        mesh: Mesh,
        rules: Rules,
        frozen: tuple[str, ...],
        use_ema: bool,
        lora: LoraSection | None = None,
    ) -> StateLayout:
        inputs = init_inputs(model.config)
        boxed = jax.eval_shape(lambda rng: model.init(rng, *inputs)["params"], jax.random.key(0))
        spec = None
        if lora is not None and lora.enabled:
            # Everything is frozen; the adapters (small) train, replicated on every device.
            spec, frozen = lora.spec(), tuple(boxed)
            boxed_frozen = _with_float_dtype(dict(boxed), DTYPES[lora.base_dtype])
            base_shapes = nn.unbox(boxed_frozen)
            base_shardings = frozen_shardings = logical_shardings(boxed_frozen, mesh, rules)
            frozen_shapes = base_shapes
            if lora.quantize != "none":  # QLoRA: codes and scales replicated (they are small)
                frozen_shapes = jax.eval_shape(
                    lambda p: quantization.quantize_base(p, lora.quantize), base_shapes
                )
                frozen_shardings = quantization.quantized_like(
                    base_shardings, base_shapes, lora.quantize, replicated(mesh)
                )
            trainable_shapes = lora_lib.adapter_shapes(nn.unbox(dict(boxed)), spec)
            trainable_shardings = jax.tree.map(lambda _: replicated(mesh), trainable_shapes)
            opt_shapes = jax.eval_shape(tx.init, trainable_shapes)
            opt_shardings = jax.tree.map(lambda _: replicated(mesh), opt_shapes)
        else:
            lora = base_shapes = base_shardings = None
            boxed_trainable, boxed_frozen = split_params(dict(boxed), frozen)
            frozen_shapes = nn.unbox(boxed_frozen)
            frozen_shardings = logical_shardings(boxed_frozen, mesh, rules)
            boxed_opt = jax.eval_shape(tx.init, boxed_trainable)
            trainable_shapes, opt_shapes = nn.unbox(boxed_trainable), nn.unbox(boxed_opt)
            trainable_shardings = logical_shardings(boxed_trainable, mesh, rules)
            opt_shardings = logical_shardings(boxed_opt, mesh, rules)
        shardings = TrainState(
            step=replicated(mesh),
            params=trainable_shardings,
            frozen_params=frozen_shardings,
            opt_state=opt_shardings,
            ema_params=trainable_shardings if use_ema else None,
            lora=spec,
        )
        shapes = TrainState(
            step=jax.ShapeDtypeStruct((), jnp.int32),
            params=trainable_shapes,
            frozen_params=frozen_shapes,
            opt_state=opt_shapes,
            ema_params=trainable_shapes if use_ema else None,
            lora=spec,
        )
        abstract = jax.tree.map(
            lambda shape, sharding: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding),
            shapes,
            shardings,
        )
        return cls(model, tx, mesh, frozen, use_ema, shardings, abstract, lora, base_shapes, base_shardings)

    def init(
        self, rng: jax.Array, host_params: dict | None = None, host_overrides: dict | None = None
    ) -> TrainState:
        """A fresh state: random parameters, or ``host_params`` (a full NumPy tree) when fine-tuning.

        ``host_overrides`` replaces top-level subtrees of the random init (a pretrained T5). With
        LoRA the adapters are drawn from ``rng`` too (:func:`~musicgen_jax.models.lora.init_adapters`).
        """
        params = self.init_model_params(rng, host_params, host_overrides)
        if self.lora is not None:
            frozen = params
            trainable = jax.jit(
                lambda rng: lora_lib.init_adapters(rng, self.base_shapes, self.abstract.lora),
                out_shardings=self.shardings.params,
            )(jax.random.fold_in(rng, 1))
        else:
            trainable, frozen = split_params(params, self.frozen)
        opt_state = jax.jit(self.tx.init, out_shardings=self.shardings.opt_state)(trainable)
        ema = (
            jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=self.shardings.params)(trainable)
            if self.use_ema
            else None
        )
        step = jax.device_put(jnp.zeros((), jnp.int32), self.shardings.step)
        return TrainState(
            step=step,
            params=trainable,
            frozen_params=frozen,
            opt_state=opt_state,
            ema_params=ema,
            lora=self.abstract.lora,
        )

    def init_model_params(
        self, rng: jax.Array, host_params: dict | None = None, host_overrides: dict | None = None
    ) -> dict:
        """The whole model's parameters, sharded: random from ``rng``, or ``host_params``, with
        ``host_overrides`` replacing top-level subtrees. With LoRA this is the frozen base, which a
        resumed run makes again this way (its checkpoints hold only the adapters)."""
        if self.lora is not None:
            param_shardings = self.base_shardings
        else:
            param_shardings = merge_params(self.shardings.params, self.shardings.frozen_params)
        if host_params is None:
            inputs = init_inputs(self.model.config)
            dtypes = jax.tree.map(lambda s: s.dtype, self._param_shapes())
            params = jax.jit(
                lambda rng: jax.tree.map(
                    lambda p, d: p.astype(d), nn.unbox(self.model.init(rng, *inputs)["params"]), dtypes
                ),
                out_shardings=param_shardings,
            )(rng)
        else:
            params = place_params(host_params, param_shardings, self._param_shapes())
        for name, subtree in (host_overrides or {}).items():
            params[name] = place_params(subtree, param_shardings[name], self._param_shapes()[name])
        if self.lora is not None and self.lora.quantize != "none":
            kind = self.lora.quantize
            params = jax.jit(
                lambda p: quantization.quantize_base(p, kind), out_shardings=self.shardings.frozen_params
            )(params)
        return params

    def _param_shapes(self) -> dict:
        if self.lora is not None:
            return self.base_shapes
        return merge_params(self.abstract.params, self.abstract.frozen_params)


def _with_float_dtype(boxed: dict, dtype) -> dict:
    """Abstract (boxed) parameters with every floating leaf in ``dtype``."""

    def cast(leaf):
        if isinstance(leaf, nn.Partitioned):
            return leaf.replace_boxed(cast(leaf.unbox()))
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            return jax.ShapeDtypeStruct(leaf.shape, dtype)
        return leaf

    return jax.tree.map(cast, boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def place_params(host: Any, shardings: Any, shapes: Any) -> Any:
    """Host arrays to sharded device arrays of the expected shapes and dtypes, shard by shard."""
    host_leaves = jax.tree_util.tree_flatten_with_path(host)[0]
    shape_leaves, treedef = jax.tree_util.tree_flatten(shapes)
    if len(host_leaves) != len(shape_leaves):
        raise ValueError(f"parameter tree has {len(host_leaves)} leaves, the model {len(shape_leaves)}")
    sharding_leaves = treedef.flatten_up_to(shardings)
    placed = []
    for (path, value), shape, sharding in zip(host_leaves, treedef.flatten_up_to(shapes), sharding_leaves):
        array = np.asarray(value)
        if array.shape != tuple(shape.shape):
            raise ValueError(
                f"{jax.tree_util.keystr(path)}: shape {array.shape}, the model expects {shape.shape}"
            )
        array = array.astype(shape.dtype)
        placed.append(jax.make_array_from_callback(array.shape, sharding, lambda index, a=array: a[index]))
    return jax.tree_util.tree_unflatten(treedef, placed)
