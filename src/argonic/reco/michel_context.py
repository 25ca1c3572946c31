"""MichelContext: the second stage after EmTrackMichelId, each hit's scores refined by its
neighbours' scores in its plane.

A 48x48 patch (~23 cm) often cannot tell a Michel electron from other em activity: the
muon's end lies outside it, or under it (benchmarks/bench_michel_fp.py). LArSoft's
EmTrackMichelId also writes cluster-level outputs (its hits' outputs averaged over each
cluster); this stage learns that kind of context from the network's own outputs: for every
hit, the number of hits and the mean track / em / none / Michel scores and charge in boxes
of 0.75-15.25 cm half-width around it, and the hit count, track and Michel sums on each
side of it (where a track ends), go with the hit's own scores and shape into a small
multilayer perceptron (two hidden layers) that gives new [track, em, none, michel] scores.
It runs on the client, in numpy, after any ModelInterface (local or remote), so remote and
local give the same output (to float rounding) whenever the network's scores are the same;
the network itself, and the paper's EmTrackMichelId timing, are unchanged. Trained by
``argonic train-context`` (argonic.model.context_training); the shipped weights are
``michel_context.npz`` beside this module.

Box sums: the hits sit on 0.5 cm cells; scipy's k-d tree finds every pair of hits of a
plane within 15 cm (Chebyshev), and one bincount per channel sums the pairs into the
smallest box holding them, cumulated over the box sizes (~0.3 s for a ProtoDUNE-SP event
of 1.6-3.9 M pairs, at most 0.6 M in one plane; an image filter visits every empty cell
of the plane: 2 s).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from argonic import ArgonicError
from argonic._util import progress
from argonic.detector.event import Hits
from argonic.detector.eventfile import EventFile
from argonic.detector.geometry import Detector
from argonic.inference import inference_settings, make_interface
from argonic.reco.module import EmTrackMichelId
from argonic.settings import InferenceSettings, RecoSettings

CONTEXT_FILE = Path(__file__).with_name("michel_context.npz")
CELL_CM = 0.5
BOX_HALF = (1, 3, 7, 15, 30)  # box half-widths in cells (0.75 to 15.25 cm)
SIDE_HALF = (7, 15, 30)  # one-sided boxes (left, right, earlier, later) of these half-widths
SIDE_CHANNELS = (0, 1, 4)  # hit count, track score, Michel score
N_OWN = 8
N_FEATURES = N_OWN + 6 * len(BOX_HALF) + 4 * len(SIDE_HALF) * len(SIDE_CHANNELS)
_MAX_HALF = max(BOX_HALF + SIDE_HALF)
# the smallest box (index into BOX_HALF, SIDE_HALF) holding a pair at each Chebyshev distance
_BOX_LEVEL = np.searchsorted(BOX_HALF, np.arange(_MAX_HALF + 1))
_SIDE_LEVEL = np.searchsorted(SIDE_HALF, np.arange(_MAX_HALF + 1))


def _level_sums(flat: np.ndarray, size: int, weights: list[np.ndarray | None]) -> list[np.ndarray]:
    """Per channel of ``weights`` (None: a count), the sums over the pairs in each bin of
    ``flat`` (bins of length ``size``)."""
    return [np.bincount(flat, w, size) for w in weights]


def _plane_features(x: np.ndarray, y: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """Box figures [n, N_FEATURES - N_OWN] of one plane's hits at integer cells (x, y)."""
    n = len(x)
    pairs = cKDTree(np.column_stack([x, y])).query_pairs(
        _MAX_HALF + 0.5, p=np.inf, output_type="ndarray"
    )
    self_ = np.arange(n)
    i = np.concatenate([pairs[:, 0], pairs[:, 1], self_])  # both orders, and each hit itself
    j = np.concatenate([pairs[:, 1], pairs[:, 0], self_])
    dx, dy = x[j] - x[i], y[j] - y[i]
    far = np.maximum(np.abs(dx), np.abs(dy))  # Chebyshev distance in cells
    weights: list[np.ndarray | None] = [None, *(c[j] for c in channels[1:])]  # count first
    nb = len(BOX_HALF)
    box = _level_sums(i * nb + _BOX_LEVEL[far], n * nb, weights)
    box = np.cumsum(np.stack(box).reshape(len(box), n, nb), axis=2)  # growing boxes
    count = np.maximum(box[0], 0.5)  # the hit itself is always in its boxes
    cols = []
    for k in range(nb):
        cols += [np.log1p(box[0, :, k]), *(box[1:, :, k] / count[:, k])]
    ns, side_w = len(SIDE_HALF), [weights[c] for c in SIDE_CHANNELS]
    level = _SIDE_LEVEL[far]
    sides = []
    for d in (dx, dy):  # left / right of the hit along the wires, earlier / later in drift
        side = np.sign(d) + 1  # 0 before, 1 level with the hit (not counted), 2 after
        sums = _level_sums((i * 3 + side) * ns + level, n * 3 * ns, side_w)
        sides.append(np.cumsum(np.stack(sums).reshape(len(sums), n, 3, ns), axis=3))
    for k in range(ns):
        for s in sides:
            for side in (0, 2):
                cols += list(np.log1p(s[:, :, side, k]))
    return np.column_stack(cols)


def context_features(hits: Hits, scores: np.ndarray, detector: Detector) -> np.ndarray:
    """[N, N_FEATURES] float32 inputs of the context stage for ``hits`` and their network
    ``scores`` [N, 4]: own scores and shape, then box figures of the hit's (TPC, plane)."""
    n = len(hits)
    out = np.zeros((n, N_FEATURES), np.float32)
    if n == 0:
        return out
    scores = np.asarray(scores, np.float64)
    charge = np.log1p(np.maximum(hits.integral, 0.0))
    out[:, :4] = scores
    out[:, 4] = charge
    out[:, 5] = hits.sigma
    out[:, 6] = np.log1p(np.maximum(hits.amplitude, 0.0))
    out[:, 7] = hits.plane
    channels = np.column_stack([np.ones(n), scores, charge]).T  # [6, N]
    tick_cm = detector.tick_us * detector.drift_velocity_cm_per_us
    y = np.floor(hits.peak_tick * (tick_cm / CELL_CM)).astype(np.int64)
    key = hits.tpc.astype(np.int64) * 8 + hits.plane
    for k in np.unique(key):
        idx = np.flatnonzero(key == k)
        pitch = detector.planes[int(k) % 8].pitch_cm
        x = np.floor(hits.wire[idx] * (pitch / CELL_CM)).astype(np.int64)
        out[idx, N_OWN:] = _plane_features(x, y[idx], channels[:, idx])
    return out


class MichelContext:
    """The context stage: ``apply(hits, scores, detector)`` -> refined scores [N, 4].

    ``weights``: arrays ``mean``, ``scale`` (feature standardisation) and ``w0, b0, w1, b1,
    w2, b2`` of the perceptron (ReLU between layers; outputs: three class logits, softmax,
    and a Michel logit, sigmoid), as ``argonic.model.context_training`` writes them.
    """

    LAYERS = 3

    def __init__(self, weights: dict[str, np.ndarray], sha256: str = "") -> None:
        missing = {"mean", "scale"} | {f"{p}{i}" for p in "wb" for i in range(self.LAYERS)}
        missing -= set(weights)
        if missing:
            raise ArgonicError(f"context weights lack {sorted(missing)}")
        if weights["w0"].shape[0] != N_FEATURES or weights[f"w{self.LAYERS - 1}"].shape[1] != 4:
            raise ArgonicError(
                f"context weights take {weights['w0'].shape[0]} features and give "
                f"{weights[f'w{self.LAYERS - 1}'].shape[1]} outputs; this argonic computes "
                f"{N_FEATURES} and needs 4"
            )
        self.weights = {k: np.asarray(v, np.float32) for k, v in weights.items()}
        self.sha256 = sha256

    @classmethod
    def load(cls, path: str | os.PathLike[str] = CONTEXT_FILE) -> MichelContext:
        """The weights written by ``argonic train-context`` (default: the shipped ones)."""
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise ArgonicError(f"{path}: no such context weights file") from None
        with np.load(io.BytesIO(data)) as z:  # the bytes hashed are the bytes read
            return cls(dict(z), hashlib.sha256(data).hexdigest())

    @classmethod
    def from_settings(cls, settings: RecoSettings) -> MichelContext | None:
        """The stage ``[reco]`` asks for, or None where ``michel_context`` is off."""
        if not settings.michel_context:
            return None
        return cls.load(settings.context_weights or CONTEXT_FILE)

    def outputs(self, features: np.ndarray) -> np.ndarray:
        """Scores [N, 4] (track, em, none softmax; Michel sigmoid) of ``context_features``
        rows (standardised here)."""
        w = self.weights
        h = (np.asarray(features, np.float32) - w["mean"]) / w["scale"]
        for i in range(self.LAYERS):
            h = h @ w[f"w{i}"] + w[f"b{i}"]
            if i < self.LAYERS - 1:
                np.maximum(h, 0.0, out=h)
        logits = h[:, :3] - h[:, :3].max(axis=1, keepdims=True)
        e = np.exp(logits)
        out = np.empty((len(h), 4), np.float32)
        out[:, :3] = e / e.sum(axis=1, keepdims=True)
        out[:, 3] = 0.5 * (1.0 + np.tanh(0.5 * h[:, 3]))  # the sigmoid, without overflow
        return out

    def apply(self, hits: Hits, scores: np.ndarray, detector: Detector) -> np.ndarray:
        """Refined scores [N, 4] float32 of ``hits`` from their network ``scores``."""
        return self.outputs(context_features(hits, scores, detector))


def file_features(
    events_file: str | os.PathLike[str],
    interface_config: InferenceSettings | None = None,
    show_progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, true label, true Michel flag) of every hit of ``events_file``, from the
    network's scores through ``interface_config`` (default: local, the shipped network)."""
    features, labels, michels = [], [], []
    with (
        EventFile(events_file) as f,
        make_interface(inference_settings(interface_config or {})) as interface,
    ):
        module = EmTrackMichelId(interface, f.detector)
        for i in progress(
            range(len(f)), len(f), f"context {Path(events_file).name}", show_progress
        ):
            event = f[i]
            scores = module.produce(event, event.hits)
            features.append(context_features(event.hits, scores, f.detector))
            labels.append(event.hits.label)
            michels.append(event.hits.michel)
    return np.concatenate(features), np.concatenate(labels), np.concatenate(michels)
