"""Raw waveforms and their signal processing against the truth: the drifted charge of a
simulated event, through the field and electronics response and back through noise
filtering and 2D deconvolution, compared with the same charge under the ideal response
(the charge smeared by the 2.7-tick Gaussian filter)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from argonic.detector import simulate as sim
from argonic.detector.eventfile import EventFile
from argonic.detector.geometry import get_detector
from argonic.detector.response import BASELINE_ADC, raw_waveforms
from argonic.reco.events import simulate_file
from argonic.reco.sigproc import filter_noise
from argonic.reco.sigproc.deconvolution import deconvolve


@pytest.fixture(scope="module")
def charges() -> dict[str, np.ndarray]:
    """The drifted charge (ke- per wire and tick) of each plane of one mini event."""
    det = get_detector("mini")
    rng = np.random.default_rng(11)
    d = sim.drift(det, det.tpcs[0], sim.generate_deposits(det, rng))
    return {p.name: sim.plane_charge(det, det.tpcs[0], p, d)[0] for p in det.planes}


def _ideal(charge: np.ndarray) -> np.ndarray:
    return gaussian_filter1d(charge, sim.FILTER_SIGMA_TICKS, axis=1, mode="constant", truncate=4.0)


@pytest.mark.parametrize("noise", [False, True])
def test_collection_charge_comes_back(charges, noise: bool) -> None:
    q = charges["W"]
    rng = np.random.default_rng(3) if noise else None
    raw = raw_waveforms(q, "W", True, rng)
    assert raw.dtype == np.int16 and abs(np.median(raw) - BASELINE_ADC["W"]) <= 1
    out = deconvolve(filter_noise(raw)[0], "W", True)
    ideal = _ideal(q)
    assert out.sum() == pytest.approx(q.sum(), rel=0.01 if noise else 0.002)
    assert np.corrcoef(out.ravel(), ideal.ravel())[0, 1] > (0.99 if noise else 0.998)


def test_induction_charge_mostly_comes_back_where_the_signal_is(charges) -> None:
    """Bipolar planes lose their slowest components (the response vanishes at zero
    frequency): most, not all, of the charge is found where the ideal frame has signal."""
    for name in ("U", "V"):
        q = charges[name]
        out = deconvolve(filter_noise(raw_waveforms(q, name, True, None))[0], name, True)
        ideal = _ideal(q)
        inside = ideal > 0.05
        assert 0.8 < out[inside].sum() / ideal[inside].sum() < 1.05, name
        assert np.corrcoef(out.ravel(), ideal.ravel())[0, 1] > 0.95, name


def test_coherent_noise_is_removed_and_bad_channels_masked(charges) -> None:
    """Noise shared by each board's 16 channels (5 ADC RMS, 2x the white noise) on top of the
    white noise: removing it per group brings the signal-free channels' RMS back to the
    white noise's; a dead and a noisy channel are masked."""
    rng = np.random.default_rng(5)
    q = charges["W"]
    raw = raw_waveforms(q, "W", True, rng).astype(np.float32)
    common = rng.standard_normal((q.shape[0] // 16 + 1, q.shape[1])).astype(np.float32) * 5.0
    raw += np.repeat(common, 16, axis=0)[: q.shape[0]]
    raw[7] = BASELINE_ADC["W"]  # dead
    raw[9] += rng.standard_normal(q.shape[1]) * 30  # noisy
    quiet = ~(q > 0).any(axis=1)
    quiet[[7, 9]] = False
    plain, _ = filter_noise(np.rint(raw).astype(np.int16))
    cleaned, bad = filter_noise(np.rint(raw).astype(np.int16), coherent=True)
    assert plain[quiet].std() > 2.0 * cleaned[quiet].std()
    assert cleaned[quiet].std() == pytest.approx(2.5, rel=0.15)
    assert bad[7] and bad[9] and bad.sum() == 2
    assert not cleaned[[7, 9]].any()


def test_raw_events_go_through_the_chain(tmp_path: Path) -> None:
    """A raw event file keeps its waveforms exactly, reco recomputes the deconvolved frames
    from them (its noisefilter and deconvolution modules), finds the hits the simulation
    labelled, and a version-1 reader's file (no raw/) still reads."""
    from argonic.inference.local import OnnxRuntimeInterface
    from argonic.reco.chain import reco_event
    from argonic.reco.module import EmTrackMichelId

    path = tmp_path / "raw.h5"
    summary = simulate_file(path, "mini", 1, seed=11, show_progress=False, response="raw")
    assert summary["response"] == "raw"
    with EventFile(path) as f, OnnxRuntimeInterface() as interface:
        event = f[0]
        assert len(event.raw) == 3 and event.raw[0].adc.dtype == np.int16
        assert event.raw[0].adc.shape == (240, 1500)
        result = reco_event(f, 0, EmTrackMichelId(interface, f.detector))
        assert {"noisefilter", "deconvolution", "hitfinding"} <= set(result.wall)
        assert len(result.hits) == len(event.hits) > 100
        np.testing.assert_array_equal(result.hits.wire, event.hits.wire)
        np.testing.assert_array_equal(result.hits.label, event.hits.label)


def test_show_draws_raw_waveforms_beside_the_deconvolved_frame(tmp_path: Path) -> None:
    from argonic.reco.display import draw_event

    path = tmp_path / "raw.h5"
    simulate_file(path, "mini", 1, seed=11, show_progress=False, response="raw")
    summary = draw_event(path, tmp_path / "raw.png", plane="U")
    assert summary["raw_panel"] and summary["hits"] > 50
    ideal = tmp_path / "ideal.h5"
    simulate_file(ideal, "mini", 1, seed=11, show_progress=False)
    assert not draw_event(ideal, tmp_path / "ideal.png", plane="U")["raw_panel"]
    assert (tmp_path / "raw.png").stat().st_size > (tmp_path / "ideal.png").stat().st_size
