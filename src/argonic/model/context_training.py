"""Training of the MichelContext stage (argonic.reco.michel_context): a perceptron from each hit's
context features to [track, em, none, michel], on the natural mix of hits.

Recipe: two hidden ReLU layers, Adam with a one-cycle learning rate, cross-entropy of the
three classes plus binary cross-entropy of the Michel flag, validation on held-out events
after every epoch, the best epoch (track-vs-em accuracy + Michel F1) kept. Its outputs are
then shifted as the network's are (argonic.model.validation): the best track-vs-em cut on
the validation hits lands on track / (track + em) > 0.5 and the best Michel cut (F1) on the
shipped MICHEL_CUT, so the module's decision rules stay the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from argonic.detector.event import EM, MICHEL_CUT, TRACK
from argonic.model.validation import best_cut

HIDDEN = 128


def _network(n_features: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 4),
    )


def _logits(net: nn.Sequential, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([net(x[i : i + 65536]).numpy() for i in range(0, len(x), 65536)])


def _figures(logits: np.ndarray, label: np.ndarray, michel: np.ndarray) -> dict[str, float]:
    """Validation figures at the best cuts, and the logit shifts that put them on the rules."""
    te = (label == TRACK) | (label == EM)
    d = logits[te, TRACK] - logits[te, EM]  # track / (track + em) = sigmoid(d)
    ones = np.ones(len(logits))
    cut_d, accuracy = best_cut(label[te] == TRACK, d, ones[te], "accuracy")
    cut_m, f1 = best_cut(michel, logits[:, 3], ones, "f1")
    return {
        "track_em_accuracy": accuracy,
        "michel_f1": f1,
        "score": accuracy + f1,
        "track_shift": -cut_d,
        "michel_shift": math.log(MICHEL_CUT / (1 - MICHEL_CUT)) - cut_m,
    }


def train_context(
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray, np.ndarray],
    epochs: int = 6,
    hidden: int = HIDDEN,
    batch_size: int = 4096,
    learning_rate: float = 3e-3,
    seed: int = 1,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(weights for ``MichelContext``, summary) from (features, label, michel) of the
    training and validation hits."""
    torch.manual_seed(seed)
    x, label, michel = train
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-6
    xt = torch.from_numpy(((x - mean) / scale).astype(np.float32))
    yt = torch.from_numpy(label.astype(np.int64))
    mt = torch.from_numpy(michel.astype(np.float32))
    xv = torch.from_numpy(((validation[0] - mean) / scale).astype(np.float32))
    net = _network(x.shape[1], hidden)
    optimizer = torch.optim.Adam(net.parameters(), learning_rate / 3)
    steps = -(-len(xt) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, epochs * steps)
    history, best, best_state = [], None, None
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(xt))
        for k in range(steps):
            b = order[k * batch_size : (k + 1) * batch_size]
            out = net(xt[b])
            loss = nn.functional.cross_entropy(
                out[:, :3], yt[b]
            ) + nn.functional.binary_cross_entropy_with_logits(out[:, 3], mt[b])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        net.eval()
        figures = {"epoch": epoch, **_figures(_logits(net, xv), validation[1], validation[2])}
        history.append(figures)
        if on_epoch is not None:
            on_epoch(epoch, figures)
        if best is None or figures["score"] > best["score"]:
            best, best_state = figures, {k: v.clone() for k, v in net.state_dict().items()}
    assert best is not None and best_state is not None
    layers = [m for m in net if isinstance(m, nn.Linear)]
    net.load_state_dict(best_state)
    weights = {"mean": mean.astype(np.float32), "scale": scale.astype(np.float32)}
    for i, layer in enumerate(layers):
        weights[f"w{i}"] = layer.weight.detach().numpy().T.copy()
        weights[f"b{i}"] = layer.bias.detach().numpy().copy()
    last = f"b{len(layers) - 1}"
    weights[last][TRACK] += best["track_shift"]
    weights[last][3] += best["michel_shift"]
    summary = {
        "training_hits": len(x),
        "validation_hits": len(validation[0]),
        "epochs": history,
        "best_epoch": best["epoch"],
    }
    return weights, summary
