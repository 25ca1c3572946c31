"""Training of the EmTrackMichelId network on simulated, truth-labelled events.

Training set: the PointIdAlg patch of hits sampled from many events, labelled from
simulation truth (track / em / none, plus the Michel flag of LArSoft's convention: the
decay electron's own deposits). Every ordinary hit is kept with one probability
(``hit_fraction``), so track and em keep the natural mix of the events (~3:1); Michel hits
and "none" hits (real noise hits, the hits the network meets as none) are kept with
higher probabilities. Each patch remembers its keep probability: ``1 / keep`` is its
weight in the natural mix, from which the class priors are corrected after training and
the validation figures are computed as on whole events.

Recipe (``TrainConfig`` defaults): Adam, lr 1e-3 with a short warm-up and cosine decay
(a function of the step, so a resumed run follows the same schedule), flips along wire
and drift at random (the physics is symmetric under both), cross-entropy on the softmax
head plus a Michel loss that handles the imbalance (BCE weighted to balance the classes,
or focal), validation on held-out events after every epoch, the best epoch kept.

After training, ``fit_output_offsets`` shifts the output biases: the softmax logits by
log(natural prior / training prior) of each class, then the track logit so that the
validation's best track-vs-em cut lands on the shipped rule track / (track + em) > 0.5,
and the Michel logit so that the validation's best Michel cut (F1) lands on 0.6. These
are baked into the exported network.

The original recipe (SGD lr 0.01, Nesterov 0.9, 0.1 x CE + 1.0 x MSE, no flips, constant
lr) is ``TrainConfig.original()``.

Layout: ``dataset`` (the patch set, sampling, cache, flips), ``recipe`` (``TrainConfig``,
losses, optimizer, schedule), ``validation`` (figures, output offsets); this module holds
the loop, checkpoints and resume, the best epoch, and the ``argonic train`` entry point,
and re-exports the public names of the others.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from argonic import ArgonicError
from argonic._util import atomic_output, progress
from argonic.model.dataset import PatchSet, build_patch_set, flip_batch, keep_probability
from argonic.model.network import EmTrackMichelNet, build_network
from argonic.model.recipe import (
    CE_WEIGHT,
    MSE_WEIGHT,
    TrainConfig,
    learning_rate,
    loss_terms,
    make_optimizer,
    michel_loss,
    michel_pos_weight,
)
from argonic.model.validation import (
    OFFSET_KEYS,
    SHIPPED_MICHEL_CUT,
    SHIPPED_TRACK_CUT,
    apply_output_offsets,
    best_cut,
    evaluate_loss,
    network_logits,
    prior_shifts,
    validate,
    weighted_roc_auc,
)

__all__ = [  # the training API, re-exported here from dataset, recipe and validation
    "CE_WEIGHT",
    "MSE_WEIGHT",
    "OFFSET_KEYS",
    "SHIPPED_MICHEL_CUT",
    "SHIPPED_TRACK_CUT",
    "PatchSet",
    "TrainConfig",
    "apply_output_offsets",
    "best_cut",
    "best_network",
    "best_path",
    "build_patch_set",
    "evaluate_loss",
    "flip_batch",
    "keep_probability",
    "learning_rate",
    "loss_terms",
    "make_optimizer",
    "michel_loss",
    "michel_pos_weight",
    "network_logits",
    "prior_shifts",
    "train_file",
    "train_network",
    "validate",
    "weighted_roc_auc",
]


_RESUME_KEYS = (
    "batch_size",
    "optimizer",
    "learning_rate",
    "schedule",
    "warmup_steps",
    "michel_loss",
    "ce_weight",
    "michel_weight",
    "michel_pos_weight",
    "flips",
    "seed",
    "dropout",
)  # must match to resume


def _tensors(data: PatchSet, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(data.patches[idx].astype(np.float32)),
        torch.from_numpy(data.label[idx].astype(np.int64)),
        torch.from_numpy(data.michel[idx].astype(np.float32)),
    )


def _save(path: Path, payload: dict[str, Any]) -> None:
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def best_path(checkpoint: str | os.PathLike[str]) -> Path:
    """Where the best epoch of a checkpointed run is kept: ``<checkpoint>.best.pt``."""
    return Path(str(checkpoint) + ".best.pt")


def _load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises several unrelated types
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ArgonicError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}: {first_line})"
        ) from None


def train_network(
    data: PatchSet,
    config: TrainConfig,
    checkpoint: str | os.PathLike[str] | None = None,
    validation: PatchSet | None = None,
    show_progress: bool = True,
    stop_after_steps: int | None = None,
    init: str | os.PathLike[str] | None = None,
    network: nn.Module | None = None,
) -> tuple[EmTrackMichelNet, dict[str, Any]]:
    """Train on ``data``; resume from ``checkpoint`` if it exists, and keep it up to date.

    ``stop_after_steps``: leave after that many steps of this call (checkpoint saved), to
    split a run into pieces that fit a wall-time budget; the next call goes on.
    ``init``: start from these weights (a model.onnx or a checkpoint) instead of the
    random initialisation (fine-tuning); ignored when resuming from ``checkpoint``.
    ``network``: train this module instead of a new network (it has ``logits``, and
    ``em_trk_none`` / ``michel`` output layers: the quantization-aware graph).

    Batches (and flips) are drawn from generators seeded by (seed, epoch[, step]), and the
    learning rate is a function of the step, so a resumed run equals an uninterrupted one.
    With ``validation``, the figures of every epoch go into the history and the returned
    network is the best epoch's, with its output offsets applied (``<checkpoint>.best.pt``
    keeps it); without, the last epoch's, uncorrected.
    """
    if len(data) < config.batch_size:
        raise ArgonicError(
            f"training set has {len(data)} patches, fewer than one batch ({config.batch_size})"
        )
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    network = _starting_network(config, network, init)
    run = _Training(data, config, network, make_optimizer(network, config), checkpoint)
    run.resume()
    network.train()
    start = time.perf_counter()
    steps_left = math.inf if stop_after_steps is None else stop_after_steps
    while run.epoch < config.epochs and steps_left > 0:
        t_epoch = time.perf_counter()
        losses, steps_left, stopped = run.train_epoch(steps_left, show_progress)
        if stopped:
            break
        run.end_epoch(losses, t_epoch, validation)
    seconds = time.perf_counter() - start
    if run.best is not None:
        network.load_state_dict(run.best["network"])
        apply_output_offsets(network, run.best["figures"])
    network.eval()
    return network, {
        "patches": len(data),
        "epochs": config.epochs,
        "steps_per_epoch": run.steps_per_epoch,
        "seconds": seconds,
        "patches_per_second": run.trained / seconds if run.trained else None,
        "michel_pos_weight": run.pos_weight,
        "best_epoch": None if run.best is None else run.best["epoch"],
        "best": None if run.best is None else run.best["figures"],
        "final": config.history[-1] if config.history else None,
        "history": config.history,
    }


def _starting_network(
    config: TrainConfig, network: nn.Module | None, init: str | os.PathLike[str] | None
) -> nn.Module:
    """A new network, or the one given; with ``init``'s weights when given."""
    if network is None:
        network = build_network(config.seed, config.dropout)
    elif init is not None:
        raise ArgonicError("train_network: give either a network or init weights, not both")
    if init is not None:
        from argonic.model.export import load_network

        network.load_state_dict(load_network(init).state_dict())
        network.train()
    return network


class _Training:
    """One training run's state: where it stands (epoch, step), its checkpoint, its best
    epoch so far; each step, epoch and save is a method (train_network drives them)."""

    def __init__(
        self,
        data: PatchSet,
        config: TrainConfig,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        checkpoint: str | os.PathLike[str] | None,
    ) -> None:
        self.data, self.config, self.network, self.optimizer = data, config, network, optimizer
        self.ckpt = Path(checkpoint) if checkpoint is not None else None
        self.epoch, self.step, self.trained = 0, 0, 0
        self.best: dict[str, Any] | None = None
        self.steps_per_epoch = len(data) // config.batch_size
        self.total_steps = self.steps_per_epoch * config.epochs
        self.pos_weight = michel_pos_weight(data, config)
        self.class_shift = prior_shifts(data)
        self.last_save = time.perf_counter()

    def resume(self) -> None:
        """Continue from the checkpoint, if it exists (its settings must be the same)."""
        ckpt, config = self.ckpt, self.config
        if ckpt is None or not ckpt.exists():
            return
        state = _load(ckpt)
        changed = [k for k in _RESUME_KEYS if state["config"].get(k) != getattr(config, k)]
        if changed:
            raise ArgonicError(
                f"{ckpt} was written with other {', '.join(changed)}: "
                f"{ {k: state['config'].get(k) for k in changed} }; use another checkpoint"
            )
        try:
            self.network.load_state_dict(state["network"])
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ArgonicError(f"{ckpt}: not a usable checkpoint: {exc}") from None
        self.epoch, self.step = state["epoch"], state["step"]
        config.history = state["config"].get("history", [])
        if best_path(ckpt).exists():
            self.best = _load(best_path(ckpt))

    def save(self, epoch: int, step: int) -> None:
        if self.ckpt is not None:
            payload = {
                "network": self.network.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "config": asdict(self.config),
                "epoch": epoch,
                "step": step,
                "torch_rng": torch.get_rng_state(),
            }
            _save(self.ckpt, payload)
        self.last_save = time.perf_counter()

    def train_epoch(
        self, steps_left: float, show_progress: bool
    ) -> tuple[list[float], float, bool]:
        """The rest of the current epoch, or ``steps_left`` steps of it: (losses, steps
        left, stopped before the epoch's end)."""
        config, epoch = self.config, self.epoch
        order = np.random.default_rng([config.seed, epoch]).permutation(len(self.data))
        losses: list[float] = []
        for s in progress(
            range(self.step, self.steps_per_epoch),
            self.steps_per_epoch - self.step,
            f"epoch {epoch + 1}/{config.epochs}",
            show_progress,
        ):
            idx = np.sort(order[s * config.batch_size : (s + 1) * config.batch_size])
            losses.append(self._train_step(s, idx))
            if (
                self.ckpt is not None
                and time.perf_counter() - self.last_save > config.checkpoint_seconds
            ):
                self.save(epoch, s + 1)
            steps_left -= 1
            if steps_left <= 0 and s + 1 < self.steps_per_epoch:
                self.save(epoch, s + 1)
                return losses, steps_left, True
        return losses, steps_left, False

    def _train_step(self, s: int, idx: np.ndarray) -> float:
        """One optimiser step on the patches ``idx`` (step ``s`` of the epoch); its loss."""
        config, network, optimizer = self.config, self.network, self.optimizer
        lr = learning_rate(config, self.epoch * self.steps_per_epoch + s, self.total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y, m = _tensors(self.data, idx)
        if config.flips:
            x = flip_batch(x, np.random.default_rng([config.seed, self.epoch, s]))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bfloat16):
            l3, lm = network.logits(x)
        ce = nn.functional.cross_entropy(l3.float(), y)
        ml = michel_loss(lm[:, 0].float(), m, config.michel_loss, self.pos_weight)
        loss = config.ce_weight * ce + config.michel_weight * ml
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        self.trained += len(y)
        value = loss.item()
        if not math.isfinite(value):
            raise ArgonicError(
                f"training diverged (loss {value}) in epoch {self.epoch + 1}, step {s}"
            )
        return value

    def end_epoch(self, losses: list[float], t_epoch: float, validation: PatchSet | None) -> None:
        """The epoch's record (and validation figures, the best epoch kept); next epoch."""
        config = self.config
        record: dict[str, float] = {
            "epoch": self.epoch + 1,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "seconds": time.perf_counter() - t_epoch,
            "patches_per_second": len(losses)
            * config.batch_size
            / max(time.perf_counter() - t_epoch, 1e-9),
        }
        if validation is not None and len(validation):
            figures = validate(self.network, validation, self.class_shift)
            record.update({f"val_{k}": v for k, v in figures.items()})
            if self.best is None or figures["score"] > self.best["figures"]["score"]:
                self.best = {
                    "network": {k: v.clone() for k, v in self.network.state_dict().items()},
                    "figures": figures,
                    "epoch": self.epoch + 1,
                }
                if self.ckpt is not None:
                    _save(best_path(self.ckpt), self.best)
        config.history.append(record)
        self.epoch, self.step = self.epoch + 1, 0
        self.save(self.epoch, self.step)


def best_network(checkpoint: str | os.PathLike[str]) -> tuple[EmTrackMichelNet, dict[str, Any]]:
    """The best epoch of a checkpointed run, its output offsets applied, and its figures."""
    state = _load(best_path(checkpoint))
    network = build_network(None)
    network.load_state_dict(state["network"])
    apply_output_offsets(network, state["figures"])
    return network.eval(), {"epoch": state["epoch"], **state["figures"]}


# --- the `argonic train` entry point --------------------------------------------------------


def train_file(
    events_file: str | os.PathLike[str] | list[str | os.PathLike[str]],
    config: TrainConfig,
    holdout: int | None = None,
    hit_fraction: float = 0.1,
    michel_keep: float = 1.0,
    none_keep: float = 1.0,
    max_patches: int | None = None,
    validation_file: str | os.PathLike[str] | None = None,
    validation_fraction: float = 0.1,
    checkpoint: str | os.PathLike[str] | None = None,
    dataset_cache: str | os.PathLike[str] | None = None,
    repository: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
    init: str | os.PathLike[str] | None = None,
    qat: bool = False,
) -> dict[str, Any]:
    """Train on an event file (or several: their events are pooled) and export the best epoch.

    Validation: every event of ``validation_file`` (then ``holdout`` defaults to 0), else
    the last ``holdout`` events of the (last) events file (default 20%, at least 1); hits
    sampled with ``validation_fraction`` (all Michel and none hits), figures weighted to the
    natural mix. dataset_cache: an HDF5 file holding the training set; read if it exists,
    else written after building (resumed runs skip the patch building). repository:
    export the trained network there (None: no export). ``qat``: quantization-aware
    fine-tuning of the ``init`` network (argonic.model.qat), exported as the OpenVINO int8
    model ``emtrkmichelid_openvino`` and its plane twin.
    """
    from argonic.detector.eventfile import EventFile

    files = list(events_file) if isinstance(events_file, (list, tuple)) else [events_file]
    if not files:
        raise ArgonicError("no events file to train on")
    sizes = []
    for path in files:
        with EventFile(path) as f:
            sizes.append(len(f))
    n_events = sizes[-1]
    if holdout is None:
        holdout = 0 if validation_file is not None else max(1, n_events // 5)
    if not 0 <= holdout < n_events:
        raise ArgonicError(
            f"holdout must leave training events: {files[-1]} has {n_events}, holdout {holdout}"
        )
    train_events = range(0, n_events - holdout)
    sources = [(path, range(size)) for path, size in zip(files[:-1], sizes[:-1], strict=True)]
    sources.append((files[-1], train_events))
    t0 = time.perf_counter()
    data = _training_set(
        sources,
        config,
        dataset_cache,
        hit_fraction,
        michel_keep,
        none_keep,
        max_patches,
        show_progress,
    )
    if validation_file is not None:
        with EventFile(validation_file) as f:
            val_source, val_events = validation_file, range(len(f))
    else:
        val_source, val_events = files[-1], range(n_events - holdout, n_events)
    validation = (
        build_patch_set(
            val_source,
            val_events,
            config.seed + 1,
            validation_fraction,
            show_progress=False,
        )
        if len(val_events)
        else None
    )
    seconds_data = time.perf_counter() - t0
    model = None
    if qat:
        model = _quantization_aware(data, config, init)
    network, summary = train_network(
        data,
        config,
        checkpoint,
        validation,
        show_progress,
        init=None if qat else init,
        network=model,
    )
    summary = {
        "events_file": [str(path) for path in files] if len(files) > 1 else str(files[0]),
        "train_events": [[0, size] for size in sizes[:-1]]
        + [[train_events.start, train_events.stop]]
        if len(files) > 1
        else [train_events.start, train_events.stop],
        "validation": {"file": str(val_source), "events": [val_events.start, val_events.stop]},
        "counts": data.counts(),
        "validation_counts": None if validation is None else validation.counts(),
        "seconds_building_patches": seconds_data,
        **summary,
        "config": {k: v for k, v in asdict(config).items() if k != "history"},
        "init": None if init is None else str(init),
    }
    if repository is not None:
        summary["export"] = _export(network, repository, qat, init)
    return summary


def _training_set(
    sources: list[tuple[Any, range]],
    config: TrainConfig,
    dataset_cache: str | os.PathLike[str] | None,
    hit_fraction: float,
    michel_keep: float,
    none_keep: float,
    max_patches: int | None,
    show_progress: bool,
) -> PatchSet:
    """The training patches: read from ``dataset_cache`` if it exists, else built (and
    written there)."""
    if dataset_cache is not None and Path(dataset_cache).exists():
        # a cache built without a cap can train a shorter run (QAT): the same uniform cut
        return PatchSet.load(dataset_cache).capped(
            max_patches, np.random.default_rng([config.seed, 8])
        )
    data = build_patch_set(
        sources,
        None,
        config.seed,
        hit_fraction,
        michel_keep,
        none_keep,
        max_patches,
        show_progress=show_progress,
    )
    if dataset_cache is not None:
        data.save(dataset_cache)
    return data


def _export(
    network: nn.Module, repository: str | os.PathLike[str], qat: bool, init: Any
) -> dict[str, Any]:
    """Export the trained network: the OpenVINO int8 model after QAT, else model.onnx."""
    if qat:
        from argonic.model.qat import export_openvino

        source = init if str(init).endswith(".onnx") else None
        return export_openvino(network, repository, source)
    from argonic.model.export import export_repository

    return export_repository(network, repository)


QAT_CALIBRATION_PATCHES = 2048


def _quantization_aware(
    data: PatchSet, config: TrainConfig, init: str | os.PathLike[str] | None
) -> nn.Module:
    """The ``init`` network with fake quantisers calibrated on patches drawn (seeded) from
    the training set."""
    from argonic.model.export import load_network
    from argonic.model.qat import quantization_aware

    if init is None:
        raise ArgonicError("quantization-aware training fine-tunes a trained network: give init")
    if config.bfloat16:
        raise ArgonicError("quantization-aware training runs in fp32: leave bfloat16 off")
    pick = np.random.default_rng([config.seed, 7]).permutation(len(data))
    calibration = data.patches[np.sort(pick[:QAT_CALIBRATION_PATCHES])]
    return quantization_aware(load_network(init), calibration)
