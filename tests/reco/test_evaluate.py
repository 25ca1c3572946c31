"""Evaluation figures of argonic evaluate, against hand-made scores and brute force."""

import numpy as np
import pytest

from argonic.detector.event import EM, NONE, TRACK
from argonic.reco.evaluate import (
    best_michel_cut,
    efficiency_at_purity,
    efficiency_purity,
    michel_electron_efficiency,
    summarise,
)


def test_best_michel_cut_maximises_f1_by_brute_force():
    rng = np.random.default_rng(3)
    truth = rng.random(500) < 0.1
    score = np.round(rng.random(500) * 0.6 + 0.4 * truth, 2)
    cut, f1 = best_michel_cut(truth, score)
    brute = 0.0
    for c in np.unique(score):
        eff, pur = efficiency_purity(truth, score, c - 1e-9)
        brute = max(brute, 2 * eff * pur / (eff + pur) if eff + pur else 0.0)
    assert f1 == pytest.approx(brute)
    eff, pur = efficiency_purity(truth, score, cut)
    assert 2 * eff * pur / (eff + pur) == pytest.approx(f1)


def test_efficiency_at_purity_on_hand_made_scores():
    truth = np.array([True, True, False, True, False, True])
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1])
    # cuts: top 2 -> purity 1, eff 0.5; top 4 -> 3/4, 0.75; top 6 -> 4/6, 1.0
    assert efficiency_at_purity(truth, score, 0.8) == 0.5
    assert efficiency_at_purity(truth, score, 0.75) == 0.75
    assert efficiency_at_purity(truth, score, 0.6) == 1.0
    assert efficiency_at_purity(truth, np.zeros(6), 0.8) == 0.0


def test_michel_electron_level_fraction():
    electron = np.array([7, 7, 7, 7, 9, 9, 9, 12, 0, 0])
    tagged = np.array([1, 1, 0, 0, 1, 0, 0, 1, 1, 0], bool)
    # electron 7: 2 of 4 (counts), 9: 1 of 3 (not), 12: 1 of 1 (counts)
    assert michel_electron_efficiency(electron, tagged) == (pytest.approx(2 / 3), 3)
    assert np.isnan(michel_electron_efficiency(np.zeros(3, int), np.ones(3, bool))[0])


def test_summary_has_per_plane_and_michel_electron_figures():
    label = np.array([TRACK, EM, EM, EM, TRACK, NONE])
    michel = np.array([False, True, True, False, False, False])
    plane = np.array([0, 0, 2, 2, 2, 1])
    electron = np.array([0, 5, 5, 0, 0, 0])
    scores = np.array(
        [
            [0.9, 0.1, 0.0, 0.1],
            [0.2, 0.8, 0.0, 0.9],
            [0.3, 0.7, 0.0, 0.3],
            [0.6, 0.4, 0.0, 0.2],
            [0.8, 0.2, 0.0, 0.0],
            [0.1, 0.8, 0.1, 0.0],
        ]
    )
    m, _ = summarise(label, michel, scores, 0.6, plane=plane, michel_electron=electron)
    assert m["michel_electrons"] == 1 and m["michel_electrons_half_tagged"] == 1.0
    assert (m["michel_efficiency"], m["michel_purity"]) == (0.5, 1.0)
    assert m["michel_efficiency_best_cut"] == 1.0 and m["michel_purity_best_cut"] == 1.0
    assert set(m["per_plane"]) == {"U", "V", "W"}
    assert m["per_plane"]["U"]["track_em_accuracy"] == 1.0
    assert m["per_plane"]["W"]["track_em_accuracy"] == pytest.approx(2 / 3)
    assert m["per_plane"]["W"]["michel_efficiency"] == 0.0
