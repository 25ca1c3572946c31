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
from argonic.detector.event import EM, NONE, TRACK, Hits
from argonic.model.network import PATCH_SIZE, EmTrackMichelNet, build_network

SHIPPED_MICHEL_CUT = 0.6  # the production cut on the michel score
SHIPPED_TRACK_CUT = 0.5  # track / (track + em) above it: track


@dataclass
class PatchSet:
    """Labelled patches: [N, 48, 48, 1] (float16 or float32), label (TRACK/EM/NONE) uint8,
    michel bool, keep float32 (the probability with which the hit was sampled)."""

    patches: np.ndarray
    label: np.ndarray
    michel: np.ndarray
    keep: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.keep is None:
            self.keep = np.ones(len(self.label), np.float32)

    def __len__(self) -> int:
        return len(self.label)

    @property
    def weight(self) -> np.ndarray:
        """Weight of each patch in the natural mix of hits (1 / keep probability)."""
        return 1.0 / np.asarray(self.keep, np.float64)

    def select(self, idx: np.ndarray) -> PatchSet:
        return PatchSet(self.patches[idx], self.label[idx], self.michel[idx], self.keep[idx])

    @classmethod
    def concat(cls, parts: list[PatchSet]) -> PatchSet:
        if not parts:
            return cls(
                np.zeros((0, PATCH_SIZE, PATCH_SIZE, 1), np.float16),
                np.zeros(0, np.uint8),
                np.zeros(0, bool),
                np.zeros(0, np.float32),
            )
        return cls(
            *(
                np.concatenate([getattr(p, k) for p in parts])
                for k in ("patches", "label", "michel", "keep")
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
            for k in ("patches", "label", "michel", "keep"):
                f.create_dataset(k, data=getattr(self, k))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PatchSet:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                keep = f["keep"][:] if "keep" in f else None
                return cls(f["patches"][:], f["label"][:], f["michel"][:], keep)
        except (OSError, KeyError) as exc:
            raise ArgonicError(f"{path}: not a readable training-set cache: {exc}") from None


# --- training set from events ---------------------------------------------------------------


def keep_probability(
    hits: Hits, hit_fraction: float, michel_keep: float = 1.0, none_keep: float = 1.0
) -> np.ndarray:
    """Per hit, the probability to take it into a patch set: Michel hits ``michel_keep``,
    none (noise) hits ``none_keep``, every other hit ``hit_fraction`` (the natural mix)."""
    if not 0 < hit_fraction <= 1 or not 0 < michel_keep <= 1 or not 0 < none_keep <= 1:
        raise ArgonicError(
            f"keep probabilities must be in (0, 1]: hit_fraction {hit_fraction}, "
            f"michel_keep {michel_keep}, none_keep {none_keep}"
        )
    p = np.where(hits.label == NONE, none_keep, hit_fraction)
    return np.where(hits.michel, michel_keep, p).astype(np.float32)


def build_patch_set(
    events_file: str | os.PathLike[str],
    event_indices: range,
    seed: int = 1,
    hit_fraction: float = 0.1,
    michel_keep: float = 1.0,
    none_keep: float = 1.0,
    max_patches: int | None = None,
    dtype: type = np.float16,
    show_progress: bool = True,
) -> PatchSet:
    """Patches of hits sampled from the events ``event_indices`` (see ``keep_probability``).

    ``max_patches``: a uniform cut to at most that many, folded into the keep probabilities.
    Patches are stored as ``dtype`` (float16 halves the memory; the values, 0.5 x clipped
    ke-, keep 3 significant digits).
    """
    from argonic.detector.eventfile import EventFile
    from argonic.patches import event_patches

    rng = np.random.default_rng(seed)
    parts: list[PatchSet] = []
    with EventFile(events_file) as f:
        for i in progress(event_indices, len(event_indices), "patches", show_progress):
            event = f[i]
            p = keep_probability(event.hits, hit_fraction, michel_keep, none_keep)
            sel = np.flatnonzero(rng.random(len(p)) < p)
            hits = event.hits.select(sel)
            patches = event_patches(event, f.detector, hits).astype(dtype)
            parts.append(PatchSet(patches, hits.label, hits.michel, p[sel]))
    data = PatchSet.concat(parts)
    if max_patches is not None and len(data) > max_patches:
        frac = max_patches / len(data)
        data = data.select(np.sort(rng.permutation(len(data))[:max_patches]))
        data.keep = (data.keep * frac).astype(np.float32)
    return data


# --- losses ----------------------------------------------------------------------------------

CE_WEIGHT, MSE_WEIGHT = 0.1, 1.0  # the original recipe's loss weights


def loss_terms(
    logits: tuple[torch.Tensor, torch.Tensor], label: torch.Tensor, michel: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy of the softmax head, MSE of the sigmoid michel head): the original
    recipe's terms, batch means, from ``network.logits(patches)``."""
    em_trk_none, michel_logit = logits
    ce = nn.functional.cross_entropy(em_trk_none, label)
    return ce, michel_loss(michel_logit[:, 0], michel, "mse")


def michel_loss(
    logit: torch.Tensor, target: torch.Tensor, kind: str, pos_weight: float = 1.0
) -> torch.Tensor:
    """Batch-mean loss of the michel head: 'bce' (positives weighted by ``pos_weight``),
    'focal' (gamma 2, alpha from ``pos_weight``), or 'mse' of the sigmoid (the original)."""
    if kind == "mse":
        return nn.functional.mse_loss(torch.sigmoid(logit), target)
    if kind == "bce":
        return nn.functional.binary_cross_entropy_with_logits(
            logit, target, pos_weight=torch.tensor(pos_weight)
        )
    if kind == "focal":
        ce = nn.functional.binary_cross_entropy_with_logits(logit, target, reduction="none")
        p_true = torch.exp(-ce)
        alpha = pos_weight / (1.0 + pos_weight)
        a = target * alpha + (1 - target) * (1 - alpha)
        return (2.0 * a * (1 - p_true) ** 2 * ce).mean()
    raise ArgonicError(f"unknown michel loss {kind!r}: choose bce, focal or mse")


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run (stored in the checkpoint)."""

    epochs: int = 4
    batch_size: int = 256
    optimizer: str = "adam"  # or "sgd" (the original: Nesterov momentum 0.9)
    learning_rate: float | None = None  # default: 0.01 for SGD, 1e-3 for Adam
    schedule: str = "cosine"  # "cosine" (with warm-up) or "constant"
    warmup_steps: int = 200
    michel_loss: str = "bce"  # "bce" (balanced), "focal" or "mse" (the original)
    ce_weight: float = 1.0
    michel_weight: float = 1.0
    flips: bool = True  # random flips along wire and drift
    bfloat16: bool = False  # autocast to bfloat16 on the CPU (~1.6x faster with AMX)
    seed: int = 1
    threads: int | None = 2
    dropout: float = 0.2
    checkpoint_seconds: float = 60.0  # save the checkpoint at least this often
    history: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def original(cls, **overrides: Any) -> TrainConfig:
        """The original recipe: SGD lr 0.01 Nesterov 0.9, 0.1 x CE + 1.0 x MSE, no flips."""
        base = dict(
            optimizer="sgd",
            learning_rate=0.01,
            schedule="constant",
            michel_loss="mse",
            ce_weight=0.1,
            michel_weight=1.0,
            flips=False,
        )
        return cls(**{**base, **overrides})


_RESUME_KEYS = (
    "batch_size",
    "optimizer",
    "learning_rate",
    "schedule",
    "warmup_steps",
    "michel_loss",
    "ce_weight",
    "michel_weight",
    "flips",
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


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate at global ``step`` of ``total_steps``: linear warm-up (at most a
    tenth of the run), cosine decay to 2% (schedule 'cosine'), or constant."""
    base = config.learning_rate or (0.01 if config.optimizer == "sgd" else 1e-3)
    if config.schedule == "constant":
        return base
    if config.schedule != "cosine":
        raise ArgonicError(f"unknown schedule {config.schedule!r}: choose cosine or constant")
    warmup = max(1, min(config.warmup_steps, total_steps // 10))
    if step < warmup:
        return base * (step + 1) / warmup
    frac = (step - warmup) / max(total_steps - warmup, 1)
    return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def flip_batch(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Flip each patch [N, 48, 48, 1] along the wire and/or drift axis, each with p 0.5."""
    n = x.shape[0]
    fw = torch.from_numpy(rng.random(n) < 0.5)
    fd = torch.from_numpy(rng.random(n) < 0.5)
    x = torch.where(fw[:, None, None, None], x.flip(1), x)
    return torch.where(fd[:, None, None, None], x.flip(2), x)


def _tensors(data: PatchSet, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.from_numpy(data.patches[idx].astype(np.float32)),
        torch.from_numpy(data.label[idx].astype(np.int64)),
        torch.from_numpy(data.michel[idx].astype(np.float32)),
    )


# --- validation: natural-mix figures and output offsets ---------------------------------------


def network_logits(
    network: EmTrackMichelNet, data: PatchSet, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """(softmax-head logits [N, 3], michel logits [N]) of ``data`` in eval mode."""
    was_training = network.training
    network.eval()
    out3 = np.zeros((len(data), 3), np.float32)
    out1 = np.zeros(len(data), np.float32)
    with torch.inference_mode():
        for s in range(0, len(data), batch_size):
            idx = np.arange(s, min(s + batch_size, len(data)))
            x = torch.from_numpy(data.patches[idx].astype(np.float32))
            a, b = network.logits(x)
            out3[idx], out1[idx] = a.numpy(), b[:, 0].numpy()
    network.train(was_training)
    return out3, out1


def weighted_roc_auc(positive: np.ndarray, score: np.ndarray, weight: np.ndarray) -> float:
    """Area under the ROC curve with per-entry weights (ties count half; nan without both)."""
    positive = np.asarray(positive, bool)
    wp, wn = float(weight[positive].sum()), float(weight[~positive].sum())
    if wp == 0 or wn == 0:
        return float("nan")
    order = np.argsort(score, kind="stable")
    s, p, w = score[order], positive[order], weight[order]
    _, start, counts = np.unique(s, return_index=True, return_counts=True)
    neg_w = np.add.reduceat(np.where(p, 0.0, w), start)
    pos_w = np.add.reduceat(np.where(p, w, 0.0), start)
    neg_below = np.cumsum(neg_w) - neg_w
    return float(np.sum(pos_w * (neg_below + 0.5 * neg_w)) / (wp * wn))


def best_cut(
    positive: np.ndarray, score: np.ndarray, weight: np.ndarray, objective: str
) -> tuple[float, float]:
    """(cut, value) maximising ``objective`` for the selection score > cut, weighted:
    'accuracy' (both classes right) or 'f1' (of the positives' efficiency and purity)."""
    order = np.argsort(-score, kind="stable")
    s, p, w = score[order], positive[order].astype(bool), weight[order]
    tp = np.cumsum(np.where(p, w, 0.0))  # selecting the first k+1 entries
    fp = np.cumsum(np.where(p, 0.0, w))
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # cut between distinct scores
    tp, fp = tp[last], fp[last]
    total_p, total_n = float(w[p].sum()), float(w[~p].sum())
    if objective == "accuracy":
        value = (tp + (total_n - fp)) / max(total_p + total_n, 1e-12)
    elif objective == "f1":
        value = 2 * tp / np.maximum(total_p + tp + fp, 1e-12)
    else:
        raise ValueError(objective)
    k = int(np.argmax(value))
    nxt = s[last[k] + 1] if last[k] + 1 < len(s) else s[last[k]] - 1.0
    return float(0.5 * (s[last[k]] + nxt)), float(value[k])


def prior_shifts(train: PatchSet) -> np.ndarray:
    """log(natural prior / training prior) of track, em, none, from the keep probabilities."""
    counts = np.array([np.sum(train.label == c) for c in (TRACK, EM, NONE)], np.float64)
    natural = np.array(
        [train.weight[train.label == c].sum() for c in (TRACK, EM, NONE)], np.float64
    )
    ok = counts > 0
    out = np.zeros(3)
    out[ok] = np.log(natural[ok] / natural[ok].sum()) - np.log(counts[ok] / counts[ok].sum())
    return out - out[EM]  # only differences matter in a softmax


def validate(
    network: EmTrackMichelNet, validation: PatchSet, class_shift: np.ndarray
) -> dict[str, float]:
    """Natural-mix figures of ``network`` on ``validation`` and the output offsets that put
    the best cuts on the shipped rules (see the module docstring)."""
    l3, lm = network_logits(network, validation)
    l3 = l3 + class_shift[None, :].astype(np.float32)
    w = validation.weight
    y, m = validation.label, validation.michel
    te = (y == TRACK) | (y == EM)
    d = l3[te, TRACK] - l3[te, EM]  # track / (track + em) = sigmoid(d)
    cut_d, acc_best = best_cut(y[te] == TRACK, d, w[te], "accuracy")
    acc_half = float(np.sum(w[te] * ((d > 0) == (y[te] == TRACK))) / w[te].sum())
    cut_m, f1 = best_cut(m, lm, w, "f1")
    sel = lm > cut_m
    eff = float(w[sel & m].sum() / max(w[m].sum(), 1e-12))
    pur = float(w[sel & m].sum() / max(w[sel].sum(), 1e-12))
    pred = np.argmax(l3, axis=1)
    return {
        "track_em_accuracy_at_0.5": acc_half,
        "track_em_accuracy": acc_best,
        "auc_track_em": weighted_roc_auc(y[te] == TRACK, d, w[te]),
        "michel_f1": f1,
        "michel_efficiency": eff,
        "michel_purity": pur,
        "auc_michel": weighted_roc_auc(m, lm, w),
        "none_recall": float(np.mean(pred[y == NONE] == NONE)) if (y == NONE).any() else math.nan,
        "score": acc_best + f1,
        "track_shift": float(class_shift[TRACK] - cut_d),
        "em_shift": float(class_shift[EM]),
        "none_shift": float(class_shift[NONE]),
        "michel_shift": float(math.log(SHIPPED_MICHEL_CUT / (1 - SHIPPED_MICHEL_CUT)) - cut_m),
    }


def apply_output_offsets(network: EmTrackMichelNet, offsets: dict[str, float]) -> None:
    """Add the fitted offsets to the output biases (in place): track, em, none, michel."""
    with torch.no_grad():
        for i, k in enumerate(("track_shift", "em_shift", "none_shift")):
            network.em_trk_none.bias[i] += offsets[k]
        network.michel.bias[0] += offsets["michel_shift"]


OFFSET_KEYS = ("track_shift", "em_shift", "none_shift", "michel_shift")


# --- the loop --------------------------------------------------------------------------------


def evaluate_loss(
    network: EmTrackMichelNet, data: PatchSet, config: TrainConfig | None = None
) -> dict[str, float]:
    """Mean losses and the 3-class accuracy of ``network`` on ``data`` (eval mode)."""
    config = config or TrainConfig()
    l3, lm = network_logits(network, data)
    y = torch.from_numpy(data.label.astype(np.int64))
    ce = float(nn.functional.cross_entropy(torch.from_numpy(l3), y))
    ml = float(
        michel_loss(torch.from_numpy(lm), torch.from_numpy(data.michel.astype(np.float32)), "mse")
    )
    return {
        "ce": ce,
        "mse": ml,
        "loss": config.ce_weight * ce + ml,
        "accuracy": float(np.mean(np.argmax(l3, axis=1) == data.label)),
    }


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


def michel_pos_weight(data: PatchSet) -> float:
    """Negatives per positive Michel patch (the BCE weight that balances them), >= 1."""
    n_pos = int(data.michel.sum())
    return max(1.0, (len(data) - n_pos) / max(n_pos, 1))


def train_network(
    data: PatchSet,
    config: TrainConfig,
    checkpoint: str | os.PathLike[str] | None = None,
    validation: PatchSet | None = None,
    show_progress: bool = True,
    stop_after_steps: int | None = None,
    init: str | os.PathLike[str] | None = None,
) -> tuple[EmTrackMichelNet, dict[str, Any]]:
    """Train on ``data``; resume from ``checkpoint`` if it exists, and keep it up to date.

    ``stop_after_steps``: leave after that many steps of this call (checkpoint saved), to
    split a run into pieces that fit a wall-time budget; the next call goes on.
    ``init``: start from these weights (a model.onnx or a checkpoint) instead of the
    random initialisation (fine-tuning); ignored when resuming from ``checkpoint``.

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
    network = build_network(config.seed, config.dropout)
    if init is not None:
        from argonic.model.export import load_network

        network.load_state_dict(load_network(init).state_dict())
        network.train()
    optimizer = make_optimizer(network, config)
    epoch, step = 0, 0
    best: dict[str, Any] | None = None
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.exists():
        state = _load(ckpt)
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
        if best_path(ckpt).exists():
            best = _load(best_path(ckpt))
    steps_per_epoch = len(data) // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    pos_weight = michel_pos_weight(data)
    class_shift = prior_shifts(data)

    def save(epoch: int, step: int) -> None:
        if ckpt is not None:
            payload = {
                "network": network.state_dict(),
                "optimizer": optimizer.state_dict(),
                "config": asdict(config),
                "epoch": epoch,
                "step": step,
                "torch_rng": torch.get_rng_state(),
            }
            _save(ckpt, payload)

    network.train()
    start, last_save, trained = time.perf_counter(), time.perf_counter(), 0
    steps_left = math.inf if stop_after_steps is None else stop_after_steps
    while epoch < config.epochs and steps_left > 0:
        order = np.random.default_rng([config.seed, epoch]).permutation(len(data))
        losses = []
        t_epoch = time.perf_counter()
        stopped = False
        for s in progress(
            range(step, steps_per_epoch),
            steps_per_epoch - step,
            f"epoch {epoch + 1}/{config.epochs}",
            show_progress,
        ):
            lr = learning_rate(config, epoch * steps_per_epoch + s, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = np.sort(order[s * config.batch_size : (s + 1) * config.batch_size])
            x, y, m = _tensors(data, idx)
            if config.flips:
                x = flip_batch(x, np.random.default_rng([config.seed, epoch, s]))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bfloat16):
                l3, lm = network.logits(x)
            ce = nn.functional.cross_entropy(l3.float(), y)
            ml = michel_loss(lm[:, 0].float(), m, config.michel_loss, pos_weight)
            loss = config.ce_weight * ce + config.michel_weight * ml
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
                save(epoch, s + 1)
                last_save = time.perf_counter()
            steps_left -= 1
            if steps_left <= 0 and s + 1 < steps_per_epoch:
                save(epoch, s + 1)
                stopped = True
                break
        if stopped:
            break
        record: dict[str, float] = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "seconds": time.perf_counter() - t_epoch,
            "patches_per_second": len(losses)
            * config.batch_size
            / max(time.perf_counter() - t_epoch, 1e-9),
        }
        if validation is not None and len(validation):
            figures = validate(network, validation, class_shift)
            record.update({f"val_{k}": v for k, v in figures.items()})
            if best is None or figures["score"] > best["figures"]["score"]:
                best = {
                    "network": {k: v.clone() for k, v in network.state_dict().items()},
                    "figures": figures,
                    "epoch": epoch + 1,
                }
                if ckpt is not None:
                    _save(best_path(ckpt), best)
        config.history.append(record)
        epoch, step = epoch + 1, 0
        save(epoch, step)
        last_save = time.perf_counter()
    seconds = time.perf_counter() - start
    if best is not None:
        network.load_state_dict(best["network"])
        apply_output_offsets(network, best["figures"])
    network.eval()
    return network, {
        "patches": len(data),
        "epochs": config.epochs,
        "steps_per_epoch": steps_per_epoch,
        "seconds": seconds,
        "patches_per_second": trained / seconds if trained else None,
        "michel_pos_weight": pos_weight,
        "best_epoch": None if best is None else best["epoch"],
        "best": None if best is None else best["figures"],
        "final": config.history[-1] if config.history else None,
        "history": config.history,
    }


def best_network(checkpoint: str | os.PathLike[str]) -> tuple[EmTrackMichelNet, dict[str, Any]]:
    """The best epoch of a checkpointed run, its output offsets applied, and its figures."""
    state = _load(best_path(checkpoint))
    network = build_network(None)
    network.load_state_dict(state["network"])
    apply_output_offsets(network, state["figures"])
    return network.eval(), {"epoch": state["epoch"], **state["figures"]}


# --- the `argonic train` entry point --------------------------------------------------------


def train_file(
    events_file: str | os.PathLike[str],
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
) -> dict[str, Any]:
    """Train on an event file and export the best epoch.

    Validation: every event of ``validation_file`` (then ``holdout`` defaults to 0), else
    the last ``holdout`` events of ``events_file`` (default 20%, at least 1); hits sampled
    with ``validation_fraction`` (all Michel and none hits), figures weighted to the
    natural mix. dataset_cache: an HDF5 file holding the training set; read if it exists,
    else written after building (resumed runs skip the patch building). repository:
    export the trained network there (None: no export).
    """
    from argonic.detector.eventfile import EventFile

    with EventFile(events_file) as f:
        n_events = len(f)
    if holdout is None:
        holdout = 0 if validation_file is not None else max(1, n_events // 5)
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
            hit_fraction,
            michel_keep,
            none_keep,
            max_patches,
            show_progress=show_progress,
        )
        if dataset_cache is not None:
            data.save(dataset_cache)
    if validation_file is not None:
        with EventFile(validation_file) as f:
            val_source, val_events = validation_file, range(len(f))
    else:
        val_source, val_events = events_file, range(n_events - holdout, n_events)
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
    network, summary = train_network(data, config, checkpoint, validation, show_progress, init=init)
    summary = {
        "events_file": str(events_file),
        "train_events": [train_events.start, train_events.stop],
        "validation": {"file": str(val_source), "events": [val_events.start, val_events.stop]},
        "counts": data.counts(),
        "validation_counts": None if validation is None else validation.counts(),
        "seconds_building_patches": seconds_data,
        **summary,
        "config": {k: v for k, v in asdict(config).items() if k != "history"},
        "init": None if init is None else str(init),
    }
    if repository is not None:
        from argonic.model.export import export_repository

        summary["export"] = export_repository(network, repository)
    return summary
