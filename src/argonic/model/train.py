"""Training of the EmTrackMichelId network on simulated, truth-labelled events.

Training set (as the original): the PointIdAlg patch of every hit, labelled from
simulation truth (track / em, plus the Michel flag); track hits, which dominate, are
downsampled to ``track_per_em`` times the em hits; "none" patches are
sampled at random positions of a (TPC, plane) with no hit within ``NONE_CLEARANCE``
wires and drift bins. Loss: 0.1 x cross-entropy (softmax head) + 1.0 x MSE (michel
head). Optimiser: Adam lr 1e-3, batch 256 by default; the original SGD (lr 0.01,
Nesterov momentum 0.9) reached 0.59 held-out accuracy where Adam reached 0.82 after the
same 2 epochs of 20k patches, so Adam fits our CPU budget better.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from argonic import ArgonicError
from argonic._util import atomic_output, progress
from argonic.detector.event import EM, NONE, TRACK, Event, Hits
from argonic.detector.geometry import Detector
from argonic.model.network import PATCH_SIZE, EmTrackMichelNet, build_network

CE_WEIGHT, MSE_WEIGHT = 0.1, 1.0
NONE_CLEARANCE = (
    12  # wires and downsampled drift bins kept clear of hits around a "none" patch centre
)
DRIFT_WINDOW = 6


@dataclass
class PatchSet:
    """Labelled patches: [N, 48, 48, 1] float32, label (TRACK/EM/NONE) uint8, michel bool."""

    patches: np.ndarray
    label: np.ndarray
    michel: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    @classmethod
    def concat(cls, parts: list[PatchSet]) -> PatchSet:
        if not parts:
            return cls(
                np.zeros((0, PATCH_SIZE, PATCH_SIZE, 1), np.float32),
                np.zeros(0, np.uint8),
                np.zeros(0, bool),
            )
        return cls(
            *(
                np.concatenate([getattr(p, k) for p in parts])
                for k in ("patches", "label", "michel")
            )
        )

    def counts(self) -> dict[str, int]:
        return {
            "track": int(np.sum(self.label == TRACK)),
            "em": int(np.sum(self.label == EM)),
            "none": int(np.sum(self.label == NONE)),
            "michel": int(self.michel.sum()),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        import h5py

        with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
            for k in ("patches", "label", "michel"):
                f.create_dataset(k, data=getattr(self, k))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PatchSet:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                return cls(f["patches"][:], f["label"][:], f["michel"][:])
        except (OSError, KeyError) as exc:
            raise ArgonicError(f"{path}: not a readable training-set cache: {exc}") from None


# --- training set from events ---------------------------------------------------------------


def none_positions(
    hits: Hits, detector: Detector, tpcs: list[int], n: int, rng: np.random.Generator
) -> Hits:
    """Up to ``n`` pseudo-hits (label NONE) at random empty places of the given TPCs' planes.

    A place is empty when no hit of its (TPC, plane) lies within NONE_CLEARANCE wires and
    drift bins of it. Candidates are drawn uniformly, the occupied ones rejected.
    """
    if n <= 0 or not tpcs:
        return Hits()
    n_cand = 4 * n
    tpc = rng.choice(np.asarray(tpcs), n_cand)
    plane = rng.integers(0, len(detector.planes), n_cand)
    n_wires = np.array([p.n_wires for p in detector.planes])[plane]
    wire = (rng.random(n_cand) * n_wires).astype(np.int32)
    tick = rng.random(n_cand) * detector.n_ticks
    # reject candidates with a hit of their (tpc, plane) inside the clearance box
    key_c = tpc.astype(np.int64) * 8 + plane
    key_h = hits.tpc.astype(np.int64) * 8 + hits.plane
    free = np.ones(n_cand, bool)
    for k in np.intersect1d(np.unique(key_c), np.unique(key_h)):
        c, h = np.flatnonzero(key_c == k), np.flatnonzero(key_h == k)
        dw = np.abs(wire[c, None] - hits.wire[None, h].astype(np.int64))
        db = np.abs(tick[c, None] - hits.peak_tick[None, h]) / DRIFT_WINDOW
        free[c] = ~np.any((dw <= NONE_CLEARANCE) & (db <= NONE_CLEARANCE), axis=1)
    keep = np.flatnonzero(free)[:n]
    return Hits(
        tpc=tpc[keep],
        plane=plane[keep],
        wire=wire[keep],
        peak_tick=tick[keep],
        sigma=np.ones(len(keep)),
        amplitude=np.zeros(len(keep)),
        integral=np.zeros(len(keep)),
        label=np.full(len(keep), NONE),
        michel=np.zeros(len(keep), bool),
    )


def event_training_hits(
    event: Event,
    detector: Detector,
    rng: np.random.Generator,
    p_track: float = 1.0,
    p_other: float = 1.0,
    none_fraction: float = 0.1,
) -> Hits:
    """The hits of one event to train on plus sampled "none" places (``none_fraction`` of all).

    Track hits are kept with probability ``p_track``, em and none hits with ``p_other``,
    Michel hits (rare) always.
    """
    hits = event.hits
    is_track = (hits.label == TRACK) & ~hits.michel
    p_keep = np.where(hits.michel, 1.0, np.where(is_track, p_track, p_other))
    kept = hits.select(rng.random(len(hits)) < p_keep)
    n_none = int(round(none_fraction * len(kept) / max(1e-9, 1.0 - none_fraction)))
    tpcs = sorted({int(f.tpc) for f in event.frames}) or sorted(set(hits.tpc.tolist()))
    return Hits.concat([kept, none_positions(hits, detector, tpcs, n_none, rng)])


def keep_probabilities(
    n_track: int,
    n_other: int,
    n_michel: int,
    track_per_em: float,
    none_fraction: float,
    max_patches: int | None,
) -> tuple[float, float]:
    """(p_track, p_other) that balance tracks to ``track_per_em`` x the other hits and fit
    the expected total (with none patches) into ``max_patches``."""
    p_track = min(1.0, track_per_em * max(n_other, 1) / max(n_track, 1))
    thinned = p_track * n_track + n_other  # Michel hits are always kept
    room = None if max_patches is None else max_patches * (1.0 - none_fraction) - n_michel
    scale = 1.0 if room is None or thinned <= room else max(room, 0.0) / max(thinned, 1.0)
    return p_track * scale, scale


def build_patch_set(
    events_file: str | os.PathLike[str],
    event_indices: range,
    seed: int = 1,
    track_per_em: float = 1.0,
    none_fraction: float = 0.1,
    max_patches: int | None = None,
    show_progress: bool = True,
) -> PatchSet:
    """Labelled, balanced patches of the events ``event_indices`` of an event file.

    A first pass counts the labels; the second keeps track hits in proportion
    ``track_per_em`` to the em hits and thins all (but Michel hits) evenly over the events
    to fit ``max_patches`` (a last cut enforces the cap exactly).
    """
    from argonic.detector.eventfile import EventFile
    from argonic.patches import event_patches

    rng = np.random.default_rng(seed)
    parts: list[PatchSet] = []
    with EventFile(events_file) as f:
        n_track = n_other = n_michel = 0
        for i in event_indices:
            hits = f[i].hits
            is_track = (hits.label == TRACK) & ~hits.michel
            n_track += int(is_track.sum())
            n_michel += int(hits.michel.sum())
            n_other += int(np.sum(~is_track & ~hits.michel))
        p_track, p_other = keep_probabilities(
            n_track, n_other, n_michel, track_per_em, none_fraction, max_patches
        )
        for i in progress(event_indices, len(event_indices), "patches", show_progress):
            event = f[i]
            hits = event_training_hits(event, f.detector, rng, p_track, p_other, none_fraction)
            parts.append(PatchSet(event_patches(event, f.detector, hits), hits.label, hits.michel))
    data = PatchSet.concat(parts)
    if max_patches is not None and len(data) > max_patches:
        keep = np.sort(rng.permutation(len(data))[:max_patches])
        data = PatchSet(data.patches[keep], data.label[keep], data.michel[keep])
    return data


# --- the loss and the loop ------------------------------------------------------------------


def loss_terms(
    logits: tuple[torch.Tensor, torch.Tensor], label: torch.Tensor, michel: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy of the softmax head, MSE of the sigmoid michel head), batch means,
    from ``network.logits(patches)``."""
    em_trk_none, michel_logit = logits
    ce = nn.functional.cross_entropy(em_trk_none, label)
    mse = nn.functional.mse_loss(torch.sigmoid(michel_logit[:, 0]), michel)
    return ce, mse


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run (stored in the checkpoint)."""

    epochs: int = 4
    batch_size: int = 256
    optimizer: str = (
        "adam"  # or "sgd" (the original: lr 0.01, Nesterov momentum 0.9): slower to converge
    )
    learning_rate: float | None = None  # default: 0.01 for SGD, 1e-3 for Adam
    seed: int = 1
    threads: int | None = 2
    dropout: float = 0.2
    checkpoint_seconds: float = 60.0  # save the checkpoint at least this often
    history: list[dict[str, float]] = field(default_factory=list)


_RESUME_KEYS = (
    "batch_size",
    "optimizer",
    "learning_rate",
    "seed",
    "dropout",
)  # must match to resume


def make_optimizer(network: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            network.parameters(), lr=config.learning_rate or 0.01, momentum=0.9, nesterov=True
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(network.parameters(), lr=config.learning_rate or 1e-3)
    raise ArgonicError(f"unknown optimizer {config.optimizer!r}: choose sgd or adam")


def _save_checkpoint(
    path: Path,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    epoch: int,
    step: int,
) -> None:
    with atomic_output(path) as tmp:
        torch.save(
            {
                "network": network.state_dict(),
                "optimizer": optimizer.state_dict(),
                "config": asdict(config),
                "epoch": epoch,
                "step": step,
                "torch_rng": torch.get_rng_state(),
            },
            tmp,
        )


def evaluate_loss(
    network: EmTrackMichelNet, data: PatchSet, batch_size: int = 512
) -> dict[str, float]:
    """Mean losses and the 3-class accuracy of ``network`` on ``data`` (eval mode)."""
    network.eval()
    sums = np.zeros(3)
    with torch.inference_mode():
        for s in range(0, len(data), batch_size):
            x, y, m = _tensors(data, np.arange(s, min(s + batch_size, len(data))))
            logits = network.logits(x)
            ce, mse = loss_terms(logits, y, m)
            correct = (logits[0].argmax(1) == y).sum().item()
            sums += [ce.item() * len(y), mse.item() * len(y), correct]
    network.train()
    n = max(len(data), 1)
    return {  # plain floats: the history goes into checkpoints read with weights_only
        "ce": float(sums[0] / n),
        "mse": float(sums[1] / n),
        "loss": float((CE_WEIGHT * sums[0] + MSE_WEIGHT * sums[1]) / n),
        "accuracy": float(sums[2] / n),
    }


def _tensors(data: PatchSet, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(data.patches[idx]),
        torch.from_numpy(data.label[idx].astype(np.int64)),
        torch.from_numpy(data.michel[idx].astype(np.float32)),
    )


def train_network(
    data: PatchSet,
    config: TrainConfig,
    checkpoint: str | os.PathLike[str] | None = None,
    validation: PatchSet | None = None,
    show_progress: bool = True,
) -> tuple[EmTrackMichelNet, dict[str, Any]]:
    """Train on ``data``; resume from ``checkpoint`` if it exists, and keep it up to date.

    Batches are drawn from a permutation seeded by (seed, epoch), so a resumed run sees
    the same batches as an uninterrupted one. Returns the network and a summary.
    """
    if len(data) < config.batch_size:
        raise ArgonicError(
            f"training set has {len(data)} patches, fewer than one batch ({config.batch_size})"
        )
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    network = build_network(config.seed, config.dropout)
    optimizer = make_optimizer(network, config)
    epoch, step = 0, 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.exists():
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch.load raises several unrelated types
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ArgonicError(
                f"{ckpt}: not a readable checkpoint ({type(exc).__name__}: {first_line})"
            ) from None
        changed = [k for k in _RESUME_KEYS if state["config"].get(k) != getattr(config, k)]
        if changed:
            raise ArgonicError(
                f"{ckpt} was written with other {', '.join(changed)}: "
                f"{ {k: state['config'].get(k) for k in changed} }; use another checkpoint"
            )
        try:
            network.load_state_dict(state["network"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ArgonicError(f"{ckpt}: not a usable checkpoint: {exc}") from None
        epoch, step = state["epoch"], state["step"]
        config.history = state["config"].get("history", [])
    steps_per_epoch = len(data) // config.batch_size
    network.train()
    start, last_save, trained = time.perf_counter(), time.perf_counter(), 0
    while epoch < config.epochs:
        order = np.random.default_rng([config.seed, epoch]).permutation(len(data))
        losses = []
        for s in progress(
            range(step, steps_per_epoch),
            steps_per_epoch - step,
            f"epoch {epoch + 1}/{config.epochs}",
            show_progress,
        ):
            x, y, m = _tensors(
                data, np.sort(order[s * config.batch_size : (s + 1) * config.batch_size])
            )
            ce, mse = loss_terms(network.logits(x), y, m)
            loss = CE_WEIGHT * ce + MSE_WEIGHT * mse
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            trained += len(y)
            if not math.isfinite(losses[-1]):
                raise ArgonicError(
                    f"training diverged (loss {losses[-1]}) in epoch {epoch + 1}, step {s}"
                )
            if ckpt is not None and time.perf_counter() - last_save > config.checkpoint_seconds:
                _save_checkpoint(ckpt, network, optimizer, config, epoch, s + 1)
                last_save = time.perf_counter()
        record = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
        }
        if validation is not None and len(validation):
            record.update({f"val_{k}": v for k, v in evaluate_loss(network, validation).items()})
        config.history.append(record)
        epoch, step = epoch + 1, 0
        if ckpt is not None:
            _save_checkpoint(ckpt, network, optimizer, config, epoch, step)
            last_save = time.perf_counter()
    seconds = time.perf_counter() - start
    network.eval()
    return network, {
        "patches": len(data),
        "epochs": config.epochs,
        "steps_per_epoch": steps_per_epoch,
        "seconds": seconds,
        "patches_per_second": trained / seconds if trained else None,
        "final": config.history[-1] if config.history else None,
        "history": config.history,
    }


# --- the `argonic train` entry point --------------------------------------------------------


def train_file(
    events_file: str | os.PathLike[str],
    config: TrainConfig,
    holdout: int | None = None,
    track_per_em: float = 1.0,
    none_fraction: float = 0.1,
    max_patches: int | None = None,
    validation_patches: int = 2048,
    checkpoint: str | os.PathLike[str] | None = None,
    dataset_cache: str | os.PathLike[str] | None = None,
    repository: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train on an event file, holding out its last ``holdout`` events, and export the network.

    holdout: default 20% of the events (at least 1). dataset_cache: an HDF5 file holding the
    training set; read if it exists, else written after building (resumed runs skip the
    patch building). repository: export the trained network there (None: no export).
    """
    from argonic.detector.eventfile import EventFile

    with EventFile(events_file) as f:
        n_events = len(f)
    holdout = max(1, n_events // 5) if holdout is None else holdout
    if not 0 <= holdout < n_events:
        raise ArgonicError(
            f"holdout must leave training events: {events_file} has {n_events}, holdout {holdout}"
        )
    train_events = range(0, n_events - holdout)
    t0 = time.perf_counter()
    if dataset_cache is not None and Path(dataset_cache).exists():
        data = PatchSet.load(dataset_cache)
    else:
        data = build_patch_set(
            events_file,
            train_events,
            config.seed,
            track_per_em,
            none_fraction,
            max_patches,
            show_progress,
        )
        if dataset_cache is not None:
            data.save(dataset_cache)
    validation = (
        build_patch_set(
            events_file,
            range(n_events - holdout, n_events),
            config.seed + 1,
            track_per_em,
            none_fraction,
            validation_patches,
            show_progress=False,
        )
        if holdout
        else None
    )
    seconds_data = time.perf_counter() - t0
    network, summary = train_network(data, config, checkpoint, validation, show_progress)
    summary = {
        "events_file": str(events_file),
        "train_events": [train_events.start, train_events.stop],
        "holdout_events": [n_events - holdout, n_events],
        "counts": data.counts(),
        "seconds_building_patches": seconds_data,
        **summary,
        "optimizer": config.optimizer,
        "seed": config.seed,
        "evaluate_with": (
            f"argonic evaluate {events_file} --first-event {n_events - holdout}"
            if holdout
            else None
        ),
    }
    if repository is not None:
        from argonic.model.export import export_repository

        summary["export"] = export_repository(network, repository)
    return summary
