"""Training loop, training-set construction and evaluation metrics."""

import numpy as np
import pytest
import torch

from argonic import ArgonicError
from argonic.detector.event import EM, NONE, TRACK, Hits
from argonic.detector.geometry import get_detector
from argonic.model.network import build_network
from argonic.model.train import (
    NONE_CLEARANCE,
    PatchSet,
    TrainConfig,
    evaluate_loss,
    keep_probabilities,
    none_positions,
    train_network,
)
from argonic.reco.evaluate import (
    confusion_matrix,
    efficiency_purity,
    roc_curve,
    summarise,
    track_em_accuracy,
)


def synthetic_set(n: int, seed: int) -> PatchSet:
    """A learnable problem: track = a line along the wire axis, em = a blob, none = empty;
    Michel patches carry an extra bright corner."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n).astype(np.uint8)
    michel = (label == EM) & (rng.random(n) < 0.5)
    x = rng.normal(0, 0.1, (n, 48, 48, 1)).astype(np.float32)
    x[label == TRACK, :, 22:26, 0] += 5.0
    x[label == EM, 16:32, 16:32, 0] += 3.0
    x[michel, :8, :8, 0] += 8.0
    return PatchSet(x, label, michel)


def test_training_reduces_the_loss_on_a_learnable_problem():
    train, held_out = synthetic_set(256, 0), synthetic_set(96, 1)
    config = TrainConfig(epochs=2, batch_size=32, seed=5, threads=2)
    before = evaluate_loss(build_network(5), held_out)
    network, summary = train_network(train, config, validation=held_out, show_progress=False)
    after = evaluate_loss(network, held_out)
    assert after["loss"] < 0.5 * before["loss"]
    assert after["accuracy"] > max(0.5, before["accuracy"] + 0.15)  # chance: 1/3
    assert [h["epoch"] for h in summary["history"]] == [1, 2]


def test_resumed_training_equals_uninterrupted(tmp_path):
    data = synthetic_set(64, 2)
    straight, _ = train_network(
        data, TrainConfig(epochs=2, batch_size=32, seed=9), show_progress=False
    )
    ckpt = tmp_path / "ckpt.pt"
    held_out = synthetic_set(32, 3)  # its metrics go into the checkpoint's history
    config = dict(batch_size=32, seed=9)
    train_network(data, TrainConfig(epochs=1, **config), ckpt, held_out, show_progress=False)
    resumed, summary = train_network(
        data, TrainConfig(epochs=2, **config), ckpt, held_out, show_progress=False
    )
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    assert len(summary["history"]) == 2
    with pytest.raises(ArgonicError, match="optimizer"):
        train_network(
            data,
            TrainConfig(epochs=3, batch_size=32, seed=9, optimizer="sgd"),
            checkpoint=ckpt,
            show_progress=False,
        )


def test_none_positions_keep_clear_of_hits():
    det = get_detector("mini")
    rng = np.random.default_rng(3)
    hits = Hits(
        tpc=np.zeros(300),
        plane=rng.integers(0, 3, 300),
        wire=rng.integers(0, 200, 300),
        peak_tick=rng.uniform(0, det.n_ticks, 300),
        sigma=np.ones(300),
        amplitude=np.ones(300),
        integral=np.ones(300),
        label=np.zeros(300),
        michel=np.zeros(300, bool),
    )
    places = none_positions(hits, det, [0], 200, rng)
    assert 0 < len(places) <= 200 and (places.label == NONE).all()
    for p in range(len(places)):  # brute force, one place at a time
        same = hits.plane == places.plane[p]
        near = (np.abs(hits.wire[same] - places.wire[p]) <= NONE_CLEARANCE) & (
            np.abs(hits.peak_tick[same] - places.peak_tick[p]) / 6 <= NONE_CLEARANCE
        )
        assert not near.any()


def test_keep_probabilities_balance_and_cap():
    p_track, p_other = keep_probabilities(
        9000, 1000, 50, track_per_em=1.0, none_fraction=0.1, max_patches=None
    )
    assert p_track * 9000 == pytest.approx(1000) and p_other == 1.0
    p_track, p_other = keep_probabilities(9000, 1000, 50, 1.0, 0.1, max_patches=1000)
    expected = (p_track * 9000 + p_other * 1000 + 50) / 0.9
    assert expected == pytest.approx(1000) and p_track * 9000 == pytest.approx(p_other * 1000)


def test_metrics_on_hand_made_scores():
    label = np.array([TRACK, TRACK, EM, EM, NONE])
    scores = np.array(
        [
            [0.7, 0.2, 0.1, 0.0],
            [0.3, 0.6, 0.1, 0.9],
            [0.1, 0.8, 0.1, 0.7],
            [0.5, 0.4, 0.1, 0.1],
            [0.1, 0.1, 0.8, 0.0],
        ]
    )
    assert confusion_matrix(label, scores).tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert track_em_accuracy(label, scores) == 0.5
    michel = np.array([False, False, True, True, False])
    assert efficiency_purity(michel, scores[:, 3], 0.6) == (0.5, 0.5)


def test_roc_area_equals_pairwise_probability():
    rng = np.random.default_rng(8)
    positive = rng.random(300) < 0.3
    score = np.round(rng.random(300) + 0.4 * positive, 1)  # rounding makes ties
    fpr, tpr, auc = roc_curve(positive, score)
    pos, neg = score[positive], score[~positive]
    pairwise = np.mean(pos[:, None] > neg[None, :]) + 0.5 * np.mean(pos[:, None] == neg[None, :])
    assert auc == pytest.approx(pairwise)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and np.all(np.diff(fpr) >= 0)


def test_summary_of_perfect_scores():
    label = np.array([TRACK, EM, EM, NONE])
    michel = np.array([False, False, True, False])
    scores = np.eye(3, dtype=np.float32)[label]
    scores = np.concatenate([scores, michel[:, None].astype(np.float32)], axis=1)
    metrics, _ = summarise(label, michel, scores)
    assert metrics["accuracy_3class"] == metrics["track_em_accuracy"] == 1.0
    assert metrics["michel_efficiency"] == metrics["michel_purity"] == metrics["auc_michel"] == 1.0


@pytest.fixture(scope="module")
def events_file(tmp_path_factory):
    from argonic.reco.events import simulate_file

    path = tmp_path_factory.mktemp("sim") / "mini.h5"
    simulate_file(path, detector="mini", n_events=3, seed=3, run=1, show_progress=False)
    return path


def test_training_set_from_events_is_labelled_from_truth_and_capped(events_file):
    from argonic.detector.eventfile import EventFile
    from argonic.model.train import build_patch_set

    data = build_patch_set(events_file, range(0, 3), seed=1, max_patches=1500, show_progress=False)
    with EventFile(events_file) as f:
        labels = np.concatenate([f[i].hits.label for i in range(3)])
    counts = data.counts()
    assert 0 < len(data) <= 1500 and data.patches.shape == (len(data), 48, 48, 1)
    assert set(np.unique(data.label)) <= {TRACK, EM, NONE}
    assert counts["track"] <= 1.3 * (labels == EM).sum()  # tracks thinned towards the em count
    assert counts["none"] >= 0.05 * len(data)  # sampled empty places
    assert (
        ~data.patches[data.label == NONE].any(axis=(1, 2, 3))
    ).any()  # some sampled places are blank


def test_evaluate_file_through_the_local_interface(events_file, tmp_path):
    from argonic.detector.eventfile import EventFile
    from argonic.reco.evaluate import evaluate_file

    summary = evaluate_file(
        events_file, first_event=2, roc_png=tmp_path / "roc.png", show_progress=False
    )
    with EventFile(events_file) as f:
        n_hits = len(f[2].hits)
    assert summary["hits"] == n_hits == np.sum(summary["confusion_matrix"]["counts"])
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
