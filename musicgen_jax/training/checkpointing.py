"""orbax checkpoints of a training run: parameters, optimizer state and the data iterator together.

Layout under ``<output_dir>/checkpoints/<step>/``: ``params`` (trainable, frozen and EMA trees;
with LoRA the adapters and their EMA only, the frozen base is not saved),
``optimizer`` (optimizer state and step counter) and ``data`` (the iterator's state as JSON; with
several processes, one per process, each restoring its own). Every process saves and restores (orbax
coordinates them; the directory must be shared). Export
to the inference format reads ``params`` alone. Saves are asynchronous; the newest ``keep`` are kept,
plus the best by the ``loss`` metric saved with each (eval loss when evaluating, else train loss).
Restores target the abstract sharded state, so every shard is read where it lives.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from musicgen_jax.training.config import CheckpointSection
from musicgen_jax.training.state import TrainState

CHECKPOINT_DIR = "checkpoints"


def encode_data_state(state: Any) -> dict:
    """An iterator state as JSON: grain's ``DataLoaderIterator`` gives bytes, dataset iterators and
    the memory source give dicts."""
    if isinstance(state, bytes):
        return {"kind": "bytes", "value": base64.b64encode(state).decode("ascii")}
    return {"kind": "json", "value": state}


def decode_data_state(stored: dict) -> Any:
    if stored["kind"] == "per_process":
        states = stored["value"]
        if len(states) != jax.process_count():
            raise ValueError(
                f"the checkpoint holds the data state of {len(states)} processes; "
                f"this run has {jax.process_count()}"
            )
        return decode_data_state(states[jax.process_index()])
    if stored["kind"] == "bytes":
        return base64.b64decode(stored["value"])
    return stored["value"]


def _all_processes(encoded: dict) -> dict:
    """Every process's encoded iterator state, in process order: each host reads its own slice of
    the data, and orbax writes JSON items from process 0 alone."""
    if jax.process_count() == 1:
        return encoded
    from jax.experimental import multihost_utils

    payload = np.frombuffer(json.dumps(encoded).encode(), np.uint8)
    lengths = multihost_utils.process_allgather(np.asarray([payload.size], np.int64))
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: payload.size] = payload
    gathered = multihost_utils.process_allgather(padded)  # [processes, longest]
    states = [
        json.loads(bytes(row[: int(length)]).decode()) for row, length in zip(gathered, lengths.reshape(-1))
    ]
    return {"kind": "per_process", "value": states}


def _params_item(state: TrainState) -> dict:
    if state.lora is not None:  # the base is the run's source, made again on resume and export
        return {"params": state.params, "ema_params": state.ema_params}
    return {"params": state.params, "frozen_params": state.frozen_params, "ema_params": state.ema_params}


def _optimizer_item(state: TrainState) -> dict:
    return {"opt_state": state.opt_state, "step": state.step}


def latest_saved_step(output_dir: str | Path) -> int | None:
    """The newest checkpoint step under ``output_dir``, or None; creates nothing."""
    directory = Path(output_dir).absolute() / CHECKPOINT_DIR
    if not directory.is_dir():
        return None
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
        return manager.latest_step()
    finally:
        manager.close()


class Checkpointer:
    """An orbax ``CheckpointManager`` for one run directory."""

    def __init__(
        self, output_dir: str | Path, config: CheckpointSection | None = None, read_only: bool = False
    ):
        config = config or CheckpointSection()
        policies: list = [ocp.checkpoint_managers.LatestN(n=config.keep)]
        if config.keep_best:
            # BestN sorts ascending and keeps the tail: reverse=True keeps the lowest loss.
            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=lambda metrics: metrics["loss"],
                    reverse=True,
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=config.async_save,
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            read_only=read_only,
            create=not read_only,
        )
        self.directory = Path(output_dir).absolute() / CHECKPOINT_DIR
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, state: TrainState, data_state: Any, metrics: dict[str, float] | None = None) -> None:
        """Start saving at ``state.step``: returns once the arrays are copied off the device (so the
        next step may donate them); the write finishes in the background."""
        items = {"params": _params_item(state), "optimizer": _optimizer_item(state)}
        self.save_items(int(jax.device_get(state.step)), items, data_state, metrics)

    def save_items(
        self, step: int, items: dict[str, Any], data_state: Any, metrics: dict[str, float] | None = None
    ) -> None:
        """Save pytrees ``items`` (each its own orbax item, e.g. ``params``, ``optimizer``) and the data
        iterator's state at ``step``; asynchronous as :meth:`save`."""
        args = {name: ocp.args.StandardSave(tree) for name, tree in items.items()}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                **args, data=ocp.args.JsonSave(_all_processes(encode_data_state(data_state)))
            ),
            metrics=metrics,
            force=True,
        )

    def restore(self, abstract: TrainState, step: int | None = None) -> tuple[TrainState, Any]:
        """The state (sharded like ``abstract``) and the data iterator state at ``step`` (default: newest).

        With LoRA the checkpoint holds no base: the state's ``frozen_params`` are ``abstract``'s,
        to be replaced by the caller (:meth:`StateLayout.init_model_params`)."""
        items, data_state = self.restore_items(
            {"params": _params_item(abstract), "optimizer": _optimizer_item(abstract)}, step
        )
        params, optimizer = items["params"], items["optimizer"]
        state = abstract.replace(
            step=optimizer["step"],
            params=params["params"],
            frozen_params=params.get("frozen_params", abstract.frozen_params),
            opt_state=optimizer["opt_state"],
            ema_params=params["ema_params"],
        )
        return state, data_state

    def restore_items(self, abstract: dict[str, Any], step: int | None = None) -> tuple[dict[str, Any], Any]:
        """The items named in ``abstract`` (restored to its shapes and shardings) and the data
        iterator's state, at ``step`` (default: newest)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        args = {name: ocp.args.StandardRestore(tree) for name, tree in abstract.items()}
        restored = self.manager.restore(step, args=ocp.args.Composite(**args, data=ocp.args.JsonRestore()))
        return {name: restored[name] for name in abstract}, decode_data_state(restored["data"])

    def restore_params(self, abstract_params: dict, step: int | None = None, item: str = "params") -> dict:
        """One item only (default ``params``: ``{"params", "frozen_params", "ema_params"}``), for export."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        restored = self.manager.restore(
            step, args=ocp.args.Composite(**{item: ocp.args.StandardRestore(abstract_params)})
        )
        return restored[item]

    def reached_preemption(self, step: int) -> bool:
        """Whether a preemption notice reached every process of a ``jax.distributed`` run by
        ``step`` (the same answer everywhere, so all save that step and stop); False alone."""
        if not jax.distributed.is_initialized():
            return False
        from jax.experimental import multihost_utils

        return multihost_utils.reached_preemption_sync_point(step)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
