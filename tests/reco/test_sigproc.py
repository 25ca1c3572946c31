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
from argonic.detector.response import BASELINE_ADC, Noise, raw_waveforms
from argonic.reco.sigproc import filter_noise
from argonic.reco.sigproc.deconvolution import deconvolve
from argonic.reco.simulation import simulate_file


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
    """Simulated noise shared by each board's 16 channels (5 ADC RMS, 2x the white noise),
    a dead and a noisy channel: removing the coherent part per group brings the
    signal-free channels' RMS back to the white noise's; both bad channels are masked."""
    q = charges["W"]
    noise = Noise(rms_adc=2.5, coherent_adc=5.0, dead=1, noisy=1)
    raw = raw_waveforms(q, "W", True, np.random.default_rng(5), noise)
    flat = raw.std(axis=1) == 0
    assert flat.sum() == 1  # the dead channel reads its baseline only
    quiet = ~(q > 0).any(axis=1)
    plain, _ = filter_noise(raw)
    cleaned, bad = filter_noise(raw, coherent=True)
    quiet &= ~bad
    assert plain[quiet].std() == pytest.approx(np.hypot(2.5, 5.0), rel=0.1)
    assert cleaned[quiet].std() == pytest.approx(2.5, rel=0.15)
    assert bad.sum() == 2 and bad[flat].all()
    assert not cleaned[bad].any()


def test_noise_models_have_their_spectra() -> None:
    rng = np.random.default_rng(2)
    white = Noise().waveforms(rng, (64, 4000))[0]
    shaped = Noise(spectrum="shaped").waveforms(rng, (64, 4000))[0]
    coherent = Noise(rms_adc=1.0, coherent_adc=3.0).waveforms(rng, (64, 4000))[0]
    for w in (white, shaped):
        assert w.std() == pytest.approx(2.5, rel=0.02)

    def lag1(w):
        return np.corrcoef(w[:, :-1].ravel(), w[:, 1:].ravel())[0, 1]

    assert abs(lag1(white)) < 0.02 and lag1(shaped) > 0.8  # the shaper's 2.2 us memory
    same_board = np.corrcoef(coherent[0], coherent[15])[0, 1]
    other_board = np.corrcoef(coherent[0], coherent[16])[0, 1]
    assert same_board == pytest.approx(0.9, abs=0.03) and abs(other_board) < 0.05


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


def test_reco_keeps_the_deconvolved_frames_when_asked(tmp_path: Path) -> None:
    """[reco] keep_frames: the reco file holds each event's deconvolved frames, the same as
    the signal processing of its raw waveforms gives."""
    import h5py

    from argonic.reco.executors import run_reco
    from argonic.settings import load_settings

    path = tmp_path / "raw.h5"
    simulate_file(path, "mini", 1, seed=11, show_progress=False, response="raw")
    settings = load_settings(overrides=["reco.keep_frames=true", "reco.michel_context=false"])
    run_reco(path, tmp_path / "reco.h5", settings, show_progress=False)
    with h5py.File(tmp_path / "reco.h5") as out, EventFile(path) as f:
        frames = out["events/000000/frames"]
        stored = f[0].frames
        assert list(frames["plane"][:]) == [fr.plane for fr in stored]
        np.testing.assert_array_equal(
            frames["value"][:], np.concatenate([fr.value for fr in stored])
        )
    run_reco(path, tmp_path / "plain.h5", load_settings(), show_progress=False)
    with h5py.File(tmp_path / "plain.h5") as out:
        assert "frames" not in out["events/000000"]


def test_raw_frames_that_do_not_match_the_channel_map_are_refused(tmp_path: Path, capsys) -> None:
    """A raw frame with the wrong number of wires (another detector's channel map) or for a
    plane the detector lacks: one line naming the frame, exit 2 from a command, no output."""
    import h5py

    from argonic.cli import main

    path = tmp_path / "raw.h5"
    simulate_file(path, "mini", 1, seed=11, show_progress=False, response="raw")
    for bad_name, shape, message in (
        ("0_2", (199, 1500), "has 199 wires x 1500 ticks, but mini reads 200 x 1500"),
        ("0_7", (200, 1500), "names no (TPC, plane) of mini"),
    ):
        broken = tmp_path / f"broken_{bad_name}.h5"
        broken.write_bytes(path.read_bytes())
        with h5py.File(broken, "r+") as f:
            raw = f["events/000000/raw"]
            if bad_name in raw:
                del raw[bad_name]
            raw[bad_name] = np.zeros(shape, np.int16)
        out = tmp_path / "reco.h5"
        assert main(["reco", str(broken), "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
        assert not out.exists()


def test_an_event_without_the_stage_reco_needs_is_refused(tmp_path: Path, capsys) -> None:
    """Hits but neither raw waveforms nor frames: one line, exit 2, no output file."""
    import h5py

    from argonic.cli import main

    path = tmp_path / "raw.h5"
    simulate_file(path, "mini", 1, seed=11, show_progress=False, response="raw")
    with h5py.File(path, "r+") as f:
        del f["events/000000/raw"]
        frames = f["events/000000/frames"]
        for name in list(frames):
            data = frames[name][:]
            del frames[name]
            frames[name] = data[:1] if name == "offset" else data[:0]
    out = tmp_path / "reco.h5"
    assert main(["reco", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "neither raw waveforms nor deconvolved frames" in err and len(err.splitlines()) == 1
    assert not out.exists()
