"""Validation: natural-mix figures of every epoch and the output offsets (prior and bias
correction) baked into the exported network.

``validate`` weights the held-out patches back to the natural mix of hits, shifts the
softmax logits by log(natural prior / training prior) of each class (``prior_shifts``),
then fits the track logit so that the best track-vs-em cut lands on the shipped rule
track / (track + em) > 0.5, and the Michel logit so that the best Michel cut (F1) lands on
0.6; ``apply_output_offsets`` adds them to the output biases.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from argonic.detector.event import EM, MICHEL_CUT, NONE, TRACK
from argonic.model.dataset import PatchSet
from argonic.model.network import EmTrackMichelNet
from argonic.model.recipe import TrainConfig, michel_loss

SHIPPED_MICHEL_CUT = MICHEL_CUT  # the production cut on the michel score
SHIPPED_TRACK_CUT = 0.5  # track / (track + em) above it: track


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
