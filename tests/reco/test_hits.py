"""Gaussian hit finder and hit labelling, against pulses and truth built by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from argonic.detector import simulate
from argonic.detector.event import EM, NONE, TRACK, PlaneFrame
from argonic.detector.simulate import PlaneTruth
from argonic.reco.hits import find_hits, label_hits

N_WIRES, N_TICKS = 20, 400


def gauss(t: np.ndarray, mu: float, sigma: float, amp: float) -> np.ndarray:
    return amp * np.exp(-0.5 * ((t - mu) / sigma) ** 2)


def frame_from(rows: dict[int, np.ndarray], cut: float = 0.01) -> PlaneFrame:
    """A frame with the given dense waveforms on some wires, zero where |value| < cut."""
    dense = np.zeros((N_WIRES, N_TICKS), np.float32)
    for w, wave in rows.items():
        dense[w] = wave
    dense[np.abs(dense) < cut] = 0
    return PlaneFrame.from_dense(1, 2, dense)


T = np.arange(N_TICKS, dtype=float)


def test_single_gaussian_pulse_gives_one_hit_with_its_parameters():
    mu, sigma, amp = 150.3, 3.0, 5.0
    hits = find_hits(frame_from({7: gauss(T, mu, sigma, amp)}))
    assert len(hits) == 1
    assert hits.wire[0] == 7 and hits.tpc[0] == 1 and hits.plane[0] == 2
    assert hits.peak_tick[0] == pytest.approx(mu, abs=0.1)
    assert hits.amplitude[0] == pytest.approx(amp, rel=0.02)
    assert hits.integral[0] == pytest.approx(amp * sigma * math.sqrt(2 * math.pi), rel=0.01)
    assert hits.sigma[0] == pytest.approx(sigma, rel=0.03)
    assert hits.label[0] == NONE


def test_two_separated_pulses_on_one_wire_and_pulses_on_two_wires():
    wave = gauss(T, 100, 3, 4) + gauss(T, 160, 2.5, 2)
    hits = find_hits(frame_from({3: wave, 11: gauss(T, 300, 3, 1.5)}))
    order = np.lexsort((hits.peak_tick, hits.wire))
    assert hits.wire[order].tolist() == [3, 3, 11]
    assert hits.peak_tick[order] == pytest.approx([100, 160, 300], abs=0.15)
    root = math.sqrt(2 * math.pi)
    assert hits.integral[order] == pytest.approx(
        [4 * 3 * root, 2 * 2.5 * root, 1.5 * 3 * root], rel=0.02
    )


def test_overlapping_pulses_are_resolved_and_share_the_charge():
    wave = gauss(T, 100, 2.7, 4) + gauss(T, 112, 2.7, 3)  # a clear valley between them
    hits = find_hits(frame_from({5: wave}))
    assert len(hits) == 2
    assert np.sort(hits.peak_tick) == pytest.approx([100, 112], abs=0.5)
    assert hits.integral.sum() == pytest.approx(wave[wave >= 0.01].sum(), rel=1e-4)


def test_below_threshold_pulse_gives_no_hit():
    assert len(find_hits(frame_from({2: gauss(T, 100, 3, 0.5)}))) == 0
    assert len(find_hits(frame_from({2: gauss(T, 100, 3, 0.5)}), threshold=0.3)) == 1


def test_long_pulse_along_the_drift_becomes_a_train_of_hits():
    # a track along the drift: 5 ke-/tick for 160 ticks, smeared by the 2.7-tick filter
    flat = np.where((T >= 100) & (T < 260), 5.0, 0.0)
    wave = gaussian_filter1d(flat, 2.7)
    rng = np.random.default_rng(3)
    wave = wave + gaussian_filter1d(rng.normal(0, 0.4, N_TICKS), 2.7) * (wave > 0.01)
    hits = find_hits(frame_from({4: wave}))
    assert 8 <= len(hits) <= 12  # 160 ticks / 16 ticks per hit
    assert hits.integral.sum() == pytest.approx(5.0 * 160, rel=0.03)
    assert hits.peak_tick.min() > 95 and hits.peak_tick.max() < 265


def test_many_peaks_in_one_roi_are_fitted_as_a_pulse_train():
    wave = sum(gauss(T, 100 + 8 * k, 2.5, 3.0) for k in range(6))
    hits = find_hits(frame_from({4: wave}))
    assert 1 < len(hits) < 6  # not 6 Gaussians: more than 4 peaks -> equal pieces of ~16 ticks
    assert hits.integral.sum() == pytest.approx(wave[wave >= 0.01].sum(), rel=1e-4)


def test_noise_only_frame_has_almost_no_hits():
    # expected noise hits: filtered noise upcrossings of 0.6 ke per wire-tick (Rice formula)
    sigma = 2.5 * 0.16 / math.sqrt(2 * math.sqrt(math.pi) * 2.7)
    rate = math.exp(-(0.6**2) / (2 * sigma**2)) / (2 * math.pi * math.sqrt(2) * 2.7)
    n_w, n_t = 680, 1500  # the mini detector's three planes
    assert rate * n_w * n_t < 1.5
    rng = np.random.default_rng(11)
    bank = simulate.noise_bank(rng)
    n_hits = 0
    for _ in range(3):
        w, t, v = simulate.digitise(np.zeros((n_w, n_t), np.float32), rng, bank)
        n_hits += len(find_hits(PlaneFrame(0, 2, n_w, n_t, w, t, v)))
    assert n_hits <= 8


def test_noise_bank_rms_matches_filtered_white_noise():
    # 2.5 ADC x 0.16 ke/ADC white noise through a unit-area Gaussian of sigma 2.7 ticks
    expected = 0.4 / math.sqrt(2 * math.sqrt(math.pi) * 2.7)
    bank = simulate.noise_bank(np.random.default_rng(1))
    assert bank.std() == pytest.approx(expected, rel=0.02)
    assert expected == pytest.approx(0.129, abs=0.001)


def test_noise_roi_rate_matches_a_dense_noise_simulation():
    rng = np.random.default_rng(5)
    noise = gaussian_filter1d(rng.normal(0, 0.4, (1000, 6000)).astype(np.float32), 2.7, axis=1)
    above = noise > simulate.ROI_THRESHOLD
    upcrossings = np.count_nonzero(above[:, 1:] & ~above[:, :-1])
    expected = simulate.noise_roi_rate() * noise.size
    assert upcrossings == pytest.approx(expected, rel=0.25)


def _truth(rows: list[tuple[int, int, float, int, bool]]) -> PlaneTruth:
    w, t, q, c, m = zip(*rows, strict=True)
    return PlaneTruth(
        np.array(w, np.int32),
        np.array(t, np.int32),
        np.array(q, np.float32),
        np.array(c, np.uint8),
        np.array(m, bool),
    )


def test_labels_follow_the_majority_of_true_charge_within_two_sigma():
    wave = {
        5: gauss(T, 100, 3, 4),
        9: gauss(T, 200, 3, 4),
        12: gauss(T, 300, 3, 4),
        15: gauss(T, 50, 3, 4),
    }
    hits = find_hits(frame_from(wave))
    truth = _truth(
        [
            (5, 99, 20.0, TRACK, False),
            (5, 101, 8.0, EM, False),  # wire 5: track
            (9, 200, 6.0, TRACK, False),
            (9, 201, 25.0, EM, True),  # wire 9: em + Michel
            (12, 320, 30.0, TRACK, False),  # wire 12: outside +-2 sigma
            (14, 50, 30.0, EM, False),  # wire 15 has nothing
        ]
    )
    lab = label_hits(hits, truth)
    by_wire = {
        int(w): (int(lab_), bool(m))
        for w, lab_, m in zip(lab.wire, lab.label, lab.michel, strict=True)
    }
    assert by_wire == {5: (TRACK, False), 9: (EM, True), 12: (NONE, False), 15: (NONE, False)}
    assert np.all(label_hits(hits, None).label == NONE)


def test_michel_id_is_the_michel_electron_with_most_charge_in_the_hit():
    wave = {3: gauss(T, 100, 3, 4), 7: gauss(T, 150, 3, 4), 11: gauss(T, 250, 3, 4)}
    hits = find_hits(frame_from(wave))
    rows = [
        (3, 100, 20.0, EM, 4),  # wire 3: Michel electron 4 alone
        (7, 149, 8.0, EM, 2),  # wire 7: electrons 2 and 5 overlap, 5 holds more
        (7, 151, 12.0, EM, 5),
        (7, 150, 3.0, TRACK, 0),
        (11, 250, 10.0, EM, 6),  # wire 11: Michel charge is a minority: not Michel
        (11, 251, 15.0, TRACK, 0),
    ]
    w, t, q, c, ids = (np.array(col) for col in zip(*rows, strict=True))
    truth = PlaneTruth(
        w.astype(np.int32),
        t.astype(np.int32),
        q.astype(np.float32),
        c.astype(np.uint8),
        ids > 0,
        ids.astype(np.int32),
    )
    lab = label_hits(hits, truth)
    got = {
        int(w_): (bool(m), int(i))
        for w_, m, i in zip(lab.wire, lab.michel, lab.michel_id, strict=True)
    }
    assert got == {3: (True, 4), 7: (True, 5), 11: (False, 0)}
    # truth without ids (older callers): every Michel hit gets id 1
    truth.michel_id = None
    assert label_hits(hits, truth).michel_id.tolist() == [1, 1, 0]
