"""The MichelContext stage: its features against brute force, its perceptron against the
training's decisions, the shipped weights on real events, and its place in the chain."""

import json

import numpy as np
import pytest
from support.events import random_hits

from argonic import ArgonicError
from argonic.detector.event import EM, MICHEL_CUT, NONE, TRACK
from argonic.detector.eventfile import EventFile
from argonic.detector.geometry import get_detector
from argonic.inference.local import OnnxRuntimeInterface
from argonic.model.context_training import train_context
from argonic.reco.evaluate import evaluate_file
from argonic.reco.michel_context import (
    BOX_HALF,
    CELL_CM,
    CONTEXT_FILE,
    N_FEATURES,
    SIDE_HALF,
    MichelContext,
    context_features,
)
from argonic.reco.module import EmTrackMichelId
from argonic.settings import RecoSettings


def test_features_are_the_box_figures_by_brute_force() -> None:
    rng = np.random.default_rng(3)
    hits = random_hits(rng, 1500, tpcs=2, wires=60, ticks=300.0)  # many neighbours
    scores = np.column_stack([rng.dirichlet(np.ones(3), len(hits)), rng.random(len(hits))])
    detector = get_detector("mini")
    features = context_features(hits, scores, detector)
    assert features.shape == (len(hits), N_FEATURES) and np.isfinite(features).all()
    tick_cm = detector.tick_us * detector.drift_velocity_cm_per_us
    y = np.floor(hits.peak_tick * tick_cm / CELL_CM)
    charge = np.log1p(hits.integral)
    channels = np.column_stack([np.ones(len(hits)), scores, charge])
    for i in rng.choice(len(hits), 25, replace=False):
        pitch = np.array([p.pitch_cm for p in detector.planes])[hits.plane]
        x = np.floor(hits.wire * pitch / CELL_CM)
        same = (hits.tpc == hits.tpc[i]) & (hits.plane == hits.plane[i])
        dx, dy = x - x[i], y - y[i]
        expected = [
            *scores[i],
            charge[i],
            hits.sigma[i],
            np.log1p(hits.amplitude[i]),
            hits.plane[i],
        ]
        for r in BOX_HALF:
            box = same & (np.abs(dx) <= r) & (np.abs(dy) <= r)
            expected += [np.log1p(box.sum()), *channels[box, 1:].mean(axis=0)]
        for r in SIDE_HALF:
            near = same & (np.abs(dx) <= r) & (np.abs(dy) <= r)
            for side in (near & (dx < 0), near & (dx > 0), near & (dy < 0), near & (dy > 0)):
                expected += list(np.log1p(channels[side][:, [0, 1, 4]].sum(axis=0)))
        np.testing.assert_allclose(features[i], expected, rtol=1e-5, atol=1e-5)


def test_training_export_puts_the_best_cuts_on_the_shipped_rules() -> None:
    """A learnable problem: the perceptron's numpy outputs reach, at track/(track+em) > 0.5
    and michel > MICHEL_CUT, the best validation figures the training reports."""
    rng = np.random.default_rng(5)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
        label = np.where(x[:, 0] + 0.3 * rng.normal(size=n) > 0, TRACK, EM)
        label[x[:, 2] > 2.0] = NONE
        michel = x[:, 1] + 0.5 * rng.normal(size=n) > 1.0
        return x, label.astype(np.uint8), michel

    validation = sample(4000)
    weights, summary = train_context(sample(20000), validation, 3, hidden=16, batch_size=256)
    best = summary["epochs"][summary["best_epoch"]]
    out = MichelContext(weights).outputs(validation[0])
    np.testing.assert_allclose(out[:, :3].sum(axis=1), 1.0, atol=1e-5)
    x, label, michel = validation
    te = (label == TRACK) | (label == EM)
    track = out[te, TRACK] / (out[te, TRACK] + out[te, EM])
    assert np.mean((track > 0.5) == (label[te] == TRACK)) == pytest.approx(
        best["track_em_accuracy"], abs=2e-3
    )
    selected = out[:, 3] > MICHEL_CUT
    f1 = 2 * np.sum(selected & michel) / (selected.sum() + michel.sum())
    assert f1 == pytest.approx(best["michel_f1"], abs=2e-3)
    assert best["track_em_accuracy"] > 0.85 and best["michel_f1"] > 0.6  # it learned


def test_weights_of_another_feature_set_are_refused(tmp_path) -> None:
    with np.load(CONTEXT_FILE) as z:
        weights = dict(z)
    weights["w0"] = weights["w0"][:-1]
    with pytest.raises(ArgonicError, match="features"):
        MichelContext(weights)
    with pytest.raises(ArgonicError, match="no such"):
        MichelContext.load(tmp_path / "none.npz")
    assert MichelContext.from_settings(RecoSettings(michel_context=False)) is None


def test_shipped_stage_refines_a_real_event(mini_events) -> None:
    context = MichelContext.load()
    assert len(context.sha256) == 64
    with EventFile(mini_events) as f, OnnxRuntimeInterface() as interface:
        event = f[0]
        network = EmTrackMichelId(interface, f.detector).produce(event)
    out = context.apply(event.hits, network, f.detector)
    assert out.shape == network.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[:, :3].sum(axis=1), 1.0, atol=1e-5)
    assert ((out >= 0) & (out <= 1)).all()
    assert not np.allclose(out, network, atol=1e-3)  # it does refine
    np.testing.assert_array_equal(out, context.apply(event.hits, network, f.detector))


def test_evaluate_reports_the_stage_and_the_network_alone(mini_events, tmp_path) -> None:
    on = evaluate_file(mini_events, roc_png=tmp_path / "roc.png", show_progress=False)
    off = evaluate_file(
        mini_events,
        roc_png=None,
        show_progress=False,
        reco_config=RecoSettings(michel_context=False),
    )
    assert on["michel_context"] == MichelContext.load().sha256 and off["michel_context"] is None
    assert "network" not in off
    for key, value in on["network"].items():  # the network's own figures, as with the stage off
        assert value == pytest.approx(off[key], nan_ok=True), key
    # against the truth labels the stage does not make the physics worse than the network
    # alone (on these events it makes it better: track-vs-em 0.938 -> 0.971)
    for figure in (
        "accuracy_3class",
        "track_em_accuracy",
        "auc_track_em",
        "auc_michel",
        "michel_efficiency_at_purity_0.8",
    ):
        assert on[figure] >= off[figure], figure
    assert on["track_em_accuracy"] > off["track_em_accuracy"] + 0.01
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"


def test_train_context_command_writes_loadable_weights(mini_events, tmp_path, capsys) -> None:
    from argonic.cli import main

    out = tmp_path / "context.npz"
    args = ["train-context", str(mini_events), "--validation-file", str(mini_events)]
    assert main([*args, "--epochs", "2", "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sha256"] == MichelContext.load(out).sha256
    assert len(summary["epochs"]) == 2 and summary["best_epoch"] in (0, 1)
    assert summary["training_hits"] == summary["validation_hits"] > 0


def test_the_stage_off_leaves_the_network_scores(mini_events, tmp_path) -> None:
    import h5py

    from argonic.reco.executors import run_reco
    from argonic.settings import load_settings

    settings = load_settings(overrides=["reco.michel_context=false"])
    summary = run_reco(mini_events, tmp_path / "r.h5", settings, show_progress=False)
    assert "michelcontext" not in [m["module"] for m in summary["modules"]]
    with EventFile(mini_events) as f, h5py.File(tmp_path / "r.h5") as r:
        g = r["events/000000"]
        assert "network_scores" not in g
        with OnnxRuntimeInterface() as interface:
            network = EmTrackMichelId(interface, f.detector).produce(f[0])
        np.testing.assert_allclose(g["scores"][:], network, atol=1e-5)
