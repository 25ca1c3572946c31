"""Training loop, training-set construction and evaluation metrics."""

import numpy as np
import pytest
import torch

from argonic import ArgonicError
from argonic.detector.event import EM, NONE, TRACK, Hits
from argonic.model.network import build_network
from argonic.model.train import (
    PatchSet,
    TrainConfig,
    apply_output_offsets,
    best_cut,
    best_network,
    evaluate_loss,
    flip_batch,
    keep_probability,
    learning_rate,
    michel_loss,
    michel_pos_weight,
    prior_shifts,
    train_network,
    validate,
    weighted_roc_auc,
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
    config = TrainConfig(epochs=2, batch_size=32, seed=5, threads=2, warmup_steps=2)
    before = evaluate_loss(build_network(5), held_out)
    network, summary = train_network(train, config, validation=held_out, show_progress=False)
    after = evaluate_loss(network, held_out)
    assert after["loss"] < 0.5 * before["loss"]
    assert after["accuracy"] > max(0.5, before["accuracy"] + 0.15)  # chance: 1/3
    assert [h["epoch"] for h in summary["history"]] == [1, 2]


def test_resumed_training_equals_uninterrupted(tmp_path):
    data = synthetic_set(96, 2)
    config = dict(epochs=2, batch_size=32, seed=9, warmup_steps=2)
    straight, _ = train_network(data, TrainConfig(**config), show_progress=False)
    ckpt = tmp_path / "ckpt.pt"
    train_network(data, TrainConfig(**config), ckpt, show_progress=False, stop_after_steps=4)
    state = torch.load(ckpt, weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 1)  # 3 steps per epoch: stopped in the 2nd
    resumed, summary = train_network(data, TrainConfig(**config), ckpt, show_progress=False)
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    with pytest.raises(ArgonicError, match="optimizer"):
        train_network(
            data,
            TrainConfig(**{**config, "epochs": 3}, optimizer="sgd"),
            checkpoint=ckpt,
            show_progress=False,
        )


def test_best_epoch_is_kept_with_its_offsets(tmp_path):
    train, held_out = synthetic_set(128, 4), synthetic_set(64, 5)
    ckpt = tmp_path / "ckpt.pt"
    config = TrainConfig(epochs=3, batch_size=32, seed=2, warmup_steps=2)
    network, summary = train_network(train, config, ckpt, held_out, show_progress=False)
    scores = [h["val_score"] for h in summary["history"]]
    assert summary["best_epoch"] == int(np.argmax(scores)) + 1
    again, figures = best_network(ckpt)
    assert figures["epoch"] == summary["best_epoch"]
    for name, value in network.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], value)


def test_keep_probability_per_class():
    hits = Hits(
        tpc=np.zeros(4),
        plane=np.zeros(4),
        wire=np.arange(4),
        peak_tick=np.zeros(4),
        sigma=np.ones(4),
        amplitude=np.ones(4),
        integral=np.ones(4),
        label=np.array([TRACK, EM, EM, NONE]),
        michel=np.array([False, False, True, False]),
    )
    p = keep_probability(hits, 0.1, michel_keep=0.5, none_keep=0.8)
    np.testing.assert_allclose(p, [0.1, 0.1, 0.5, 0.8])
    with pytest.raises(ArgonicError, match="keep probabilities"):
        keep_probability(hits, 0.0)


def test_flips_are_the_mirror_images_along_wire_and_drift():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(64, 48, 48, 1)).astype(np.float32))
    y = flip_batch(x, np.random.default_rng(1)).numpy()
    draws = np.random.default_rng(1)
    fw, fd = draws.random(64) < 0.5, draws.random(64) < 0.5
    for i in range(64):  # numpy's flips, one patch at a time
        expect = x[i].numpy()
        expect = expect[::-1] if fw[i] else expect
        expect = expect[:, ::-1] if fd[i] else expect
        np.testing.assert_array_equal(y[i], expect)
    assert 0 < fw.sum() < 64 and 0 < fd.sum() < 64


def test_cosine_schedule_warms_up_decays_and_ends_at_two_percent():
    config = TrainConfig(learning_rate=1e-3, warmup_steps=10)
    lr = [learning_rate(config, s, 110) for s in range(110)]
    assert lr[0] == pytest.approx(1e-4) and lr[9] == pytest.approx(1e-3)
    assert np.all(np.diff(lr[10:]) <= 0) and lr[60] == pytest.approx(0.51e-3)
    assert learning_rate(config, 110, 110) == pytest.approx(2e-5)
    assert learning_rate(TrainConfig.original(), 50, 110) == 0.01
    assert learning_rate(config, 0, 50) == pytest.approx(2e-4)  # short run: 5 warm-up steps


def test_michel_losses_against_their_formulas():
    logit = torch.tensor([2.0, -1.0, 0.5])
    target = torch.tensor([1.0, 0.0, 0.0])
    p = 1 / (1 + np.exp(-logit.numpy()))
    bce = -(4.0 * np.log(p[0]) + np.log(1 - p[1]) + np.log(1 - p[2])) / 3
    assert float(michel_loss(logit, target, "bce", pos_weight=4.0)) == pytest.approx(bce, rel=1e-5)
    p_true = np.array([p[0], 1 - p[1], 1 - p[2]])
    alpha = np.array([0.8, 0.2, 0.2])
    focal = np.mean(2 * alpha * (1 - p_true) ** 2 * -np.log(p_true))
    assert float(michel_loss(logit, target, "focal", pos_weight=4.0)) == pytest.approx(
        focal, rel=1e-5
    )
    mse = np.mean((p - target.numpy()) ** 2)
    assert float(michel_loss(logit, target, "mse")) == pytest.approx(mse, rel=1e-5)
    with pytest.raises(ArgonicError, match="michel loss"):
        michel_loss(logit, target, "hinge")


def test_michel_pos_weight_balanced_by_default_or_as_configured():
    label = np.full(40, EM, np.uint8)
    michel = np.arange(40) < 8  # 8 positives, 32 negatives
    data = PatchSet(np.zeros((40, 1, 1, 1), np.float16), label, michel)
    assert michel_pos_weight(data) == 4.0
    assert michel_pos_weight(data, TrainConfig()) == 4.0
    assert michel_pos_weight(data, TrainConfig(michel_pos_weight=1.5)) == 1.5
    with pytest.raises(ArgonicError, match="michel_pos_weight"):
        michel_pos_weight(data, TrainConfig(michel_pos_weight=0.0))


def test_prior_shifts_undo_the_sampling():
    # natural mix 75 : 20 : 5 (track, em, none); track sampled at 10%, em 40%, none 100%
    label = np.repeat([TRACK, EM, NONE], [750, 800, 500]).astype(np.uint8)
    keep = np.repeat([0.1, 0.4, 1.0], [750, 800, 500]).astype(np.float32)
    data = PatchSet(np.zeros((len(label), 1, 1, 1), np.float16), label, label == 9, keep)
    shifts = prior_shifts(data)
    trained = np.log(np.array([750, 800, 500]) / 2050)
    natural = np.log(np.array([7500, 2000, 500]) / 10000)
    np.testing.assert_allclose(shifts - shifts[EM], (natural - trained) - (natural - trained)[EM])


def test_weighted_auc_and_best_cut_against_brute_force():
    rng = np.random.default_rng(4)
    positive = rng.random(400) < 0.2
    score = np.round(rng.normal(size=400) + 1.5 * positive, 1)
    weight = rng.choice([1.0, 5.0], 400)
    pos, neg = positive, ~positive
    pair_w = weight[pos][:, None] * weight[neg][None, :]
    diff = score[pos][:, None] - score[neg][None, :]
    expect = np.sum(pair_w * ((diff > 0) + 0.5 * (diff == 0))) / pair_w.sum()
    assert weighted_roc_auc(positive, score, weight) == pytest.approx(expect)
    for objective in ("accuracy", "f1"):
        cut, value = best_cut(positive, score, weight, objective)
        brute = []
        for c in np.unique(score):
            sel = score >= c
            tp, fp = weight[sel & pos].sum(), weight[sel & neg].sum()
            if objective == "accuracy":
                brute.append((tp + weight[neg].sum() - fp) / weight.sum())
            else:
                brute.append(2 * tp / (weight[pos].sum() + tp + fp))
        assert value == pytest.approx(max(brute))
        sel = score > cut
        tp, fp = weight[sel & pos].sum(), weight[sel & neg].sum()
        got = (
            (tp + weight[neg].sum() - fp) / weight.sum()
            if objective == "accuracy"
            else 2 * tp / (weight[pos].sum() + tp + fp)
        )
        assert got == pytest.approx(value)


def test_output_offsets_put_the_best_cuts_on_the_shipped_rules():
    data = synthetic_set(400, 6)
    network = build_network(3)
    figures = validate(network, data, np.zeros(3))
    apply_output_offsets(network, figures)
    with torch.inference_mode():
        soft, mic = network.eval()(torch.from_numpy(data.patches))
    soft, mic = soft.numpy(), mic[:, 0].numpy()
    te = data.label != NONE
    ratio = soft[te, TRACK] / (soft[te, TRACK] + soft[te, EM])
    acc = np.mean((ratio > 0.5) == (data.label[te] == TRACK))
    assert acc == pytest.approx(figures["track_em_accuracy"], abs=1.5 / te.sum())
    sel = mic > 0.6
    f1 = 2 * np.sum(sel & data.michel) / (data.michel.sum() + sel.sum())
    assert f1 == pytest.approx(figures["michel_f1"], abs=1e-6)


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
    from argonic.reco.simulation import simulate_file

    path = tmp_path_factory.mktemp("sim") / "mini.h5"
    simulate_file(path, detector="mini", n_events=3, seed=3, run=1, show_progress=False)
    return path


def test_training_set_keeps_the_natural_mix_and_real_noise_hits(events_file):
    from argonic.detector.eventfile import EventFile
    from argonic.model.train import build_patch_set
    from argonic.patches import event_patches

    data = build_patch_set(events_file, range(0, 3), seed=1, hit_fraction=0.5, show_progress=False)
    with EventFile(events_file) as f:
        events = [f[i] for i in range(3)]
        hits = [ev.hits for ev in events]
        none_patches = np.concatenate(
            [
                event_patches(ev, f.detector, h.select(h.label == NONE))
                for ev, h in zip(events, hits, strict=True)
            ]
        )
    labels = np.concatenate([h.label for h in hits])
    michel = np.concatenate([h.michel for h in hits])
    assert data.patches.dtype == np.float16 and data.patches.shape == (len(data), 48, 48, 1)
    # every Michel and every none (noise) hit is kept, with keep probability 1
    assert data.michel.sum() == michel.sum() and np.all(data.keep[data.michel] == 1)
    assert np.sum(data.label == NONE) == np.sum(labels == NONE) > 0
    np.testing.assert_allclose(
        data.patches[data.label == NONE].astype(np.float32), none_patches, atol=0.01
    )
    assert data.patches[data.label == NONE].any(axis=(1, 2, 3)).all()  # real hits: not blank
    # ordinary hits at half their number, track:em as in the events (binomial tolerance)
    ordinary = (labels != NONE) & ~michel
    kept = (data.label != NONE) & ~data.michel
    assert abs(kept.sum() - 0.5 * ordinary.sum()) < 4 * np.sqrt(0.25 * ordinary.sum())
    assert data.weight[kept].sum() == pytest.approx(2 * kept.sum())
    n_track = np.sum(labels[ordinary] == TRACK)
    expected = 0.5 * n_track
    assert abs(np.sum(data.label[kept] == TRACK) - expected) < 4 * np.sqrt(expected) + 1
    capped = build_patch_set(events_file, range(0, 3), seed=1, max_patches=100, show_progress=False)
    assert len(capped) == 100 and capped.keep.max() < 1


def test_training_set_pools_several_files(events_file, tmp_path):
    """Patches from two event files, every hit kept: all hits of both, in order, the second
    file's patches cut from its own events; concat frees the parts it copies."""
    from argonic.detector.eventfile import EventFile
    from argonic.model.train import PatchSet, build_patch_set
    from argonic.patches import event_patches
    from argonic.reco.simulation import simulate_file

    other = tmp_path / "other.h5"
    simulate_file(other, detector="mini", n_events=2, seed=4, run=2, show_progress=False)
    sources = [(events_file, range(0, 3)), (other, range(0, 2))]
    data = build_patch_set(sources, seed=1, hit_fraction=1.0, show_progress=False)
    labels = []
    with EventFile(events_file) as f:
        labels += [f[i].hits.label for i in range(3)]
    with EventFile(other) as f:
        labels += [f[i].hits.label for i in range(2)]
        tail = np.concatenate([event_patches(f[i], f.detector) for i in range(2)])
    np.testing.assert_array_equal(data.label, np.concatenate(labels))
    np.testing.assert_allclose(data.patches[-len(tail) :].astype(np.float32), tail, atol=0.01)
    parts = [data.select(np.arange(0, 10)), data.select(np.arange(10, 25))]
    whole = PatchSet.concat(parts)
    assert parts == [] and len(whole) == 25
    np.testing.assert_array_equal(whole.patches, data.patches[:25])


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


def test_train_command_validates_on_another_file_and_exports_the_best_epoch(
    events_file, tmp_path, capsys
):
    import json

    from argonic.cli import main
    from argonic.model.export import load_network
    from argonic.repository import verify_checksum

    repo = tmp_path / "repo"
    args = ["train", str(events_file), "--validation-file", str(events_file), "--epochs", "2"]
    args += ["--batch-size", "32", "--hit-fraction", "0.3", "--json"]
    assert main([*args, "--repository", str(repo), "--michel-pos-weight", "2.5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    # the given Michel weight reaches the loss in place of the balanced one
    assert summary["config"]["michel_pos_weight"] == 2.5 == summary["michel_pos_weight"]
    assert summary["train_events"] == [0, 3] and summary["validation"]["events"] == [0, 3]
    assert summary["best_epoch"] in (1, 2) and len(summary["history"]) == 2
    assert "val_michel_f1" in summary["history"][0]
    model = repo / "emtrkmichelid" / "1" / "model.onnx"
    assert verify_checksum(model) == summary["export"]["sha256"]
    # the exported biases carry the fitted offsets of the best epoch
    net = load_network(model)
    assert float(net.michel.bias.detach()[0]) != 0.0
    assert main([*args, "--recipe", "original", "--no-export", "--epochs", "1"]) == 0
    original = json.loads(capsys.readouterr().out)
    assert original["config"]["optimizer"] == "sgd" and original["config"]["michel_loss"] == "mse"
    assert original["config"]["michel_pos_weight"] is None  # balanced unless given


def test_init_starts_from_given_weights():
    from argonic.model.export import load_network
    from argonic.repository import onnx_path

    start = load_network(onnx_path())
    config = TrainConfig(epochs=1, batch_size=32, seed=1, learning_rate=1e-12, warmup_steps=1)
    network, _ = train_network(synthetic_set(64, 7), config, show_progress=False, init=onnx_path())
    for name, value in start.state_dict().items():
        torch.testing.assert_close(network.state_dict()[name], value, rtol=0, atol=1e-6)


def test_a_cap_draws_uniformly_and_folds_into_the_keep_probabilities():
    data = synthetic_set(400, 3)
    data.keep = np.full(len(data), 0.5, np.float32)
    capped = data.capped(100, np.random.default_rng(0))
    assert len(capped) == 100 and np.all(capped.keep == np.float32(0.125))
    # the natural-mix weight of the whole set is kept: 400 patches of weight 2 = 100 of 8
    assert capped.weight.sum() == pytest.approx(data.weight.sum())
    rows = [np.flatnonzero((data.patches == p).all(axis=(1, 2, 3)))[0] for p in capped.patches]
    assert rows == sorted(set(rows))  # distinct patches of the set, in their order
    assert data.capped(None, np.random.default_rng(0)) is data
    assert data.capped(400, np.random.default_rng(0)) is data
