"""Event simulation: physics checked against numbers computed by hand from detector facts."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from argonic import ArgonicError
from argonic.detector import physics
from argonic.detector.event import EM, NONE, TRACK
from argonic.detector.geometry import get_detector
from argonic.detector.simulate import make_world
from argonic.reco.simulation import simulate_event, simulate_file

MINI = get_detector("mini")
PDSP = get_detector("protodune-sp")
# a MIP: 2.1 MeV/cm, 70% survives recombination, 23.6 eV per ion pair
MIP_KE_PER_CM = 2.1 * 0.7 / 23.6e-6 / 1e3  # 62.3 ke-/cm
LIFETIME_US = 10_000.0


def mini_deposits(seed: int, build) -> dict[str, np.ndarray]:
    world = make_world(MINI, np.random.default_rng(seed))
    build(world)
    return world.dep.arrays()


def test_mip_muon_perpendicular_to_collection_wires_gives_30_ke_per_wire():
    x = 20.0  # cm from the anode: 125 us of drift
    per_wire, hit_integrals = [], []
    for seed in range(8):
        dep = mini_deposits(
            seed,
            lambda w: physics.heavy_track(
                w, np.array([x, 50.0, 0.0]), np.array([0.0, 0.0, 1.0]), 300.0, "mu", 0.0
            ),
        )
        ev = simulate_event(MINI, np.random.default_rng(100 + seed), 1, 0, 0, deposits=dep)
        w = next(f for f in ev.frames if f.plane == 2)
        per_wire.append(np.bincount(w.wire, weights=w.value, minlength=w.n_wires)[5:-5])
        h = ev.hits.select((ev.hits.plane == 2) & (ev.hits.wire >= 5) & (ev.hits.wire < 195))
        hit_integrals.append(np.bincount(h.wire, weights=h.integral, minlength=200)[5:-5])
        assert np.mean(h.label == TRACK) > 0.85  # the rest: delta rays (EM), a few noise hits
        assert np.mean(h.label == NONE) < 0.03
    expected = MIP_KE_PER_CM * 0.4792 * math.exp(-x / 0.16 / LIFETIME_US)  # ~29.5 ke-
    assert 29 < expected < 30
    assert np.mean(per_wire) == pytest.approx(expected, rel=0.15)
    assert np.median(per_wire) == pytest.approx(expected, rel=0.15)
    assert np.mean(hit_integrals) == pytest.approx(expected, rel=0.15)


def test_energy_loss_and_recombination_match_argon_data():
    # PDG: minimum ionisation in liquid argon 1.508 MeV cm2/g x 1.396 g/cm3 = 2.105 MeV/cm
    t = np.geomspace(50, 5000, 400)
    dedx = physics.bethe_dedx(t, physics.MMU)
    assert dedx.min() == pytest.approx(1.508 * 1.396, rel=0.02)
    bg = np.sqrt((1 + t / physics.MMU) ** 2 - 1)[np.argmin(dedx)]
    assert 3.0 < bg < 4.0  # minimum ionisation at beta gamma ~3.5
    # modified Box model (ArgoNeuT) at 500 V/cm: ~0.70 survives at a MIP, less at a Bragg peak
    assert physics.recombination(np.array([2.1]))[0] == pytest.approx(0.70, abs=0.01)
    assert physics.recombination(np.array([20.0]))[0] < 0.4


def test_drift_time_and_position_of_a_point_deposit_in_protodune():
    # 10 ke- at x = -260 cm in TPC 1 (anode at x = -360): 100 cm / 0.16 cm/us = 625 us = 1250 ticks
    z = 208.5 * 0.4792  # the centre of W wire 208
    dep = {
        "pos": np.array([[-260.0, 300.0, z]]),
        "q": np.array([10.0], np.float32),
        "t": np.array([0.0]),
        "cat": np.array([TRACK], np.uint8),
        "michel": np.array([False]),
    }
    ev = simulate_event(PDSP, np.random.default_rng(1), 1, 0, 0, deposits=dep, noise=False)
    assert {f.tpc for f in ev.frames} == {1}
    w = ev.hits.select(ev.hits.plane == 2)
    assert len(w) == 1
    assert w.wire[0] == 208
    assert w.peak_tick[0] == pytest.approx(500 + 1250, abs=0.3)
    # sigma_T = sqrt(2 * 8.8 cm2/s * 625 us) = 1.05 mm = 0.219 pitch: 2 x 1.1% leaves the wire
    sigma_t = math.sqrt(2 * 8.8e-6 * 625) / 0.4792
    on_wire = math.erf(0.5 / sigma_t / math.sqrt(2))
    assert on_wire == pytest.approx(0.978, abs=0.002)
    assert w.integral[0] == pytest.approx(10.0 * math.exp(-625 / LIFETIME_US) * on_wire, rel=0.01)
    # 2.7-tick filter and sigma_L = sqrt(2 * 4 cm2/s * 625 us) = 0.71 mm = 0.88 ticks
    assert w.sigma[0] == pytest.approx(math.hypot(2.7, 0.0707 / 0.08), rel=0.05)
    assert w.label[0] == TRACK
    # the same deposit 300 us late arrives 600 ticks later
    dep["t"] = np.array([300.0])
    late = simulate_event(PDSP, np.random.default_rng(1), 1, 0, 0, deposits=dep, noise=False)
    assert late.hits.select(late.hits.plane == 2).peak_tick[0] == pytest.approx(2350, abs=0.3)


def test_stopping_mu_plus_is_followed_by_a_michel_electron_at_its_end():
    ends = []
    dep = mini_deposits(
        4,
        lambda w: ends.append(
            physics.muon(
                w,
                np.array([40.0, 99.0, 30.0]),
                np.array([0.0, -1.0, 0.3]) / math.hypot(1, 0.3),
                120.0,
                +1,
                0.0,
            )
        ),
    )
    end = ends[0]
    assert end.stopped  # 120 MeV muon: CSDA range ~40 cm in argon
    mic = dep["michel"]
    assert mic.any() and np.all(dep["cat"][mic] == EM)
    first = np.min(np.linalg.norm(dep["pos"][mic] - end.pos, axis=1))
    assert first < 0.5  # the Michel track starts at the muon's end point
    assert dep["t"][mic].min() > 0  # and after it (muon lifetime)
    mu = dep["cat"] == TRACK
    assert np.linalg.norm(dep["pos"][mu] - end.pos, axis=1).min() < 0.5
    ev = simulate_event(MINI, np.random.default_rng(9), 1, 0, 0, deposits=dep)
    h = ev.hits
    assert h.michel.sum() >= 5
    assert np.all(h.label[h.michel] == EM)
    assert np.sum(h.label == TRACK) >= 30


def test_mu_minus_decays_in_a_quarter_of_stops_mu_plus_always():
    def michel_fraction(charge: int, n: int) -> float:
        k = 0
        for seed in range(n):
            dep = mini_deposits(
                seed,
                lambda w: physics.muon(
                    w, np.array([40.0, 60.0, 40.0]), np.array([0.0, -1.0, 0.0]), 30.0, charge, 0.0
                ),
            )
            k += bool(dep["michel"].any())
        return k / n

    assert michel_fraction(+1, 20) == 1.0
    assert 0.12 < michel_fraction(-1, 160) < 0.38  # 0.25, binomial sigma 0.034


def test_michel_spectrum_mean_and_endpoint():
    rng = np.random.default_rng(2)
    e = np.array([physics.michel_energy(rng) for _ in range(4000)]) + physics.ME
    # x^2 (3 - 2x): <x> = (3/4 - 2/5) / (1 - 1/2) = 0.7 -> 36.96 MeV
    assert e.mean() == pytest.approx(0.7 * 52.8, rel=0.02)
    assert e.max() <= 52.8 + 1e-9


def test_cosmic_muon_angles_energies_and_charge_ratio():
    dirs, kin, charge = physics.sample_cosmic_muons(np.random.default_rng(3), 40000)
    cos_zenith = -dirs[:, 1]
    # flux through a horizontal plane ~ cos^3: <cos> = (1/5) / (1/4) = 0.8
    assert cos_zenith.mean() == pytest.approx(0.8, abs=0.005)
    # (T + 2.8 GeV)^-2.7: median T = 2.8 GeV (2^(1/1.7) - 1) = 1.41 GeV
    assert np.median(kin) == pytest.approx(2800 * (2 ** (1 / 1.7) - 1), rel=0.05)
    assert np.mean(charge > 0) == pytest.approx(1.25 / 2.25, abs=0.01)


def test_photon_conversion_length_is_nine_sevenths_of_x0():
    # high-energy photons through 5 cm of argon convert with probability 1 - exp(-5 / (9/7 X0))
    rng = np.random.default_rng(6)
    n, converted = 300, 0
    for _ in range(n):
        world = physics.World(np.array([-0.5, -0.5, 0.0]), np.array([0.5, 0.5, 5.0]), rng)
        physics.em_cascade(world, np.zeros(3), np.array([0.0, 0.0, 1.0]), 1e5, "g", 0.0)
        converted += len(world.dep.arrays()["q"]) > 0
    p = 1 - math.exp(-5.0 / (9 / 7 * 14.0))  # 0.243
    assert converted / n == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / n))


def test_electron_shower_depth_and_containment():
    depth, r90, qsum = [], [], []
    for seed in range(3):
        world = physics.World(np.full(3, -1e4), np.full(3, 1e4), np.random.default_rng(seed))
        physics.em_cascade(world, np.zeros(3), np.array([0.0, 0.0, 1.0]), 1000.0, "e", 0.0)
        d = world.dep.arrays()
        q = d["q"].astype(float)
        assert np.all(d["cat"] == EM)
        depth.append(np.sum(q * d["pos"][:, 2]) / q.sum())
        r = np.hypot(d["pos"][:, 0], d["pos"][:, 1])
        o = np.argsort(r)
        r90.append(r[o][np.searchsorted(np.cumsum(q[o]) / q.sum(), 0.9)])
        qsum.append(q.sum())
    # Longo gamma profile: t_max = ln(E/Ec) - 0.5 = 2.92 X0 (Ec = 32.8 MeV), b = 0.5: <t> = 4.9 X0
    mean_t = (1 + 0.5 * (math.log(1000 / 32.84) - 0.5)) / 0.5
    assert np.mean(depth) / 14.0 == pytest.approx(mean_t, rel=0.25)
    assert np.median(r90) < 2 * 9.0  # 95% within 2 Moliere radii
    # all energy ends up as ionisation: ~1000 MeV x 0.7 / 23.6 eV
    assert np.mean(qsum) == pytest.approx(1000 * 0.7 / 23.6e-3, rel=0.1)


def test_muon_event_hits_are_track_and_shower_event_hits_are_em():
    def build_muons(w):
        for k in range(3):
            physics.heavy_track(
                w,
                np.array([15.0 + 20 * k, 99.0, 10.0 + 25 * k]),
                np.array([0.2, -1.0, 0.4]) / math.hypot(0.2, 1.0, 0.4),
                2000.0,
                "mu",
                0.0,
                delta_rays=False,
            )

    dep = mini_deposits(1, build_muons)
    ev = simulate_event(MINI, np.random.default_rng(1), 1, 0, 0, deposits=dep)
    lab = ev.hits.label
    assert len(lab) > 300
    assert np.mean(lab == TRACK) > 0.98 and not np.any(lab == EM)

    dep = mini_deposits(
        2,
        lambda w: physics.em_cascade(
            w, np.array([40.0, 60.0, 5.0]), np.array([0.0, -0.3, 1.0]), 400.0, "g", 0.0
        ),
    )
    ev = simulate_event(MINI, np.random.default_rng(2), 1, 0, 0, deposits=dep)
    lab = ev.hits.label
    assert len(lab) > 100
    assert np.mean(lab == EM) > 0.97 and not np.any(lab == TRACK)


def test_ar39_rate_from_the_argon_mass():
    world = make_world(MINI, np.random.default_rng(8))
    n = physics.ar39_betas(world, (0.0, 1e6))  # one second
    mass_kg = 80.0 * 100.0 * 200 * 0.4792 * 1.396e-3
    assert n == pytest.approx(1.01 * mass_kg, abs=5 * math.sqrt(mass_kg))
    q = world.dep.arrays()["q"]
    assert q.max() < 0.565 * 0.75 / 23.6e-3  # below the 565 keV endpoint
    assert np.all(world.dep.arrays()["cat"] == EM)


def test_same_seed_same_events_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "c.h5"
    sa = simulate_file(a, "mini", 2, seed=5, show_progress=False)
    simulate_file(b, "mini", 2, seed=5, show_progress=False)
    simulate_file(c, "mini", 2, seed=6, show_progress=False)
    assert set(sa) >= {
        "output",
        "detector",
        "events",
        "seed",
        "hits_per_event",
        "hits_mean",
        "hits_std",
        "seconds_per_event",
        "file_bytes",
    }
    assert sa["events"] == 2 and len(sa["hits_per_event"]) == 2 and sa["file_bytes"] > 0

    def contents(path):
        out = {}
        with h5py.File(path) as f:
            f.visititems(
                lambda k, v: out.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset) else None
            )
        return out

    ca, cb, cc = contents(a), contents(b), contents(c)
    assert ca.keys() == cb.keys()
    assert all(np.array_equal(ca[k], cb[k]) for k in ca)
    assert any(k not in cc or not np.array_equal(ca[k], cc[k]) for k in ca)


def test_simulate_file_validates_its_arguments(tmp_path):
    with pytest.raises(ArgonicError, match="detector"):
        simulate_file(tmp_path / "x.h5", "nope", 1, seed=1, show_progress=False)
    with pytest.raises(ArgonicError, match=">= 1"):
        simulate_file(tmp_path / "x.h5", "mini", 0, seed=1, show_progress=False)
    assert not (tmp_path / "x.h5").exists()


def test_full_protodune_event_has_tens_of_thousands_of_labelled_hits():
    ev = simulate_event(PDSP, np.random.default_rng([1, 0]), 1, 0, 0)
    n = len(ev.hits)
    assert 20_000 < n < 150_000
    frac = np.bincount(ev.hits.label, minlength=3) / n
    assert frac[TRACK] > 0.5 and frac[EM] > 0.05 and frac[NONE] < 0.02
    assert ev.hits.michel.sum() > 0
    assert all(f.value.dtype == np.float32 and len(f.value) for f in ev.frames)


def test_michel_label_is_the_decay_electrons_own_deposits():
    """LArSoft's convention: the decay electron's own ionisation, not its secondaries."""
    start = np.array([50.0, 50.0, 50.0])
    detached, secondary_q, total_q = 0, 0.0, 0.0
    for seed in range(6):
        dep = mini_deposits(
            seed,
            lambda w: physics.em_cascade(w, start, np.array([0.0, 0.0, 1.0]), 45.0, "e", 0.0, True),
        )
        mine = dep["michel_id"] > 0
        assert set(np.unique(dep["michel_id"][mine])) == {1} and np.all(dep["michel"] == mine)
        path = dep["pos"][mine]
        assert np.linalg.norm(path[0] - start) < physics.STEP  # it starts where the muon stopped
        # one connected path, in the order it was made (steps of 0.3 cm, stub included)
        assert np.linalg.norm(np.diff(path, axis=0), axis=1).max() < 1.0
        others = dep["pos"][~mine]
        dist = np.linalg.norm(others[:, None, :] - path[None, :, :], axis=2).min(axis=1)
        detached += int(np.sum(dist > 3.0))
        secondary_q += float(dep["q"][~mine].sum())
        total_q += float(dep["q"].sum())
    # bremsstrahlung photons carry part of the energy away into unflagged blips
    assert detached > 10 and 0.02 < secondary_q / total_q < 0.6


def test_each_michel_electron_has_its_own_id():
    def two(w):
        for x in (15.0, 65.0):
            physics.em_cascade(
                w, np.array([x, 50, 50]), np.array([0.0, 1, 0]), 30.0, "e", 0.0, True
            )
        physics.em_cascade(w, np.array([40.0, 50, 50]), np.array([0.0, 1, 0]), 30.0, "e", 0.0)

    dep = mini_deposits(2, two)
    ids = dep["michel_id"]
    assert set(np.unique(ids)) == {0, 1, 2}
    assert np.all(dep["pos"][ids == 1, 0] < 40) and np.all(dep["pos"][ids == 2, 0] > 40)
