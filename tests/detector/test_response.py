"""The detector response against physics truth and a few reference figures.

Reference figures (not the reference files, which carry no license): Wire-Cell's
Garfield-based ProtoDUNE-SP field response ``dune-garfield-1d565.json.bz2``
(WireCell/wire-cell-data), central wire averaged over a pitch of electron positions
(benchmarks/bench_field_response.py computes them): lobe areas U +0.327 / -0.325, V +0.301 /
-0.299 electrons; peak heights U +0.153 / -0.134, V +0.188 / -0.131, W -1.33 electrons/us;
U's negative peak 5.3 us before W's. ProtoDUNE-SP's cold electronics in Wire-Cell's
configuration: 14 mV/fC gives 36.65 ADC x tick per 1,000 electrons, the pulser-calibrated
post-gain 1.1365 makes it 41.649.
"""

from __future__ import annotations

import numpy as np
import pytest

from argonic.detector import response as r


@pytest.fixture(scope="module")
def planes() -> r.WirePlanes:
    return r.WirePlanes()


@pytest.fixture(scope="module")
def field(planes: r.WirePlanes) -> r.FieldResponse:
    return planes.response()


def test_every_wire_surface_is_at_its_bias_and_the_drift_field_is_500_v_per_cm(planes) -> None:
    w = planes.wires
    around = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    for name in r.PLANE_NAMES:
        i = w.central(name)
        x = w.x[i] + r.WIRE_RADIUS_MM * np.cos(around)
        y = w.y[i] + r.WIRE_RADIUS_MM * np.sin(around)
        phi = planes.drift.potential(x, y)
        assert phi.mean() == pytest.approx(r.BIAS_V[name], abs=0.5)
        assert np.abs(phi - r.BIAS_V[name]).max() < 10.0  # of a 1,485 V span: the dipole term
    far = (planes.drift.potential(80.0, 1.0) - planes.drift.potential(90.0, 1.0)) / 10.0
    assert far == pytest.approx(r.DRIFT_FIELD_V_PER_MM, rel=0.02)
    weighting = planes.weighting["W"]
    assert weighting.potential(r.WIRE_RADIUS_MM, 0.0) == pytest.approx(1.0, abs=1e-3)
    assert abs(weighting.potential(r.WIRE_RADIUS_MM, r.PITCH_MM["W"])) < 1e-3


def test_collection_collects_one_electron_and_induction_nets_zero(field) -> None:
    """Shockley-Ramo: the charge a wire sees is q times the change of its weighting potential,
    -1 electron on the wire that collects it, ~0 on every wire it passes (the start, 100 mm
    away, still sees a few thousandths of the weighting potential, as Garfield's does)."""
    centre = r.WIRE_OFFSETS
    for name in ("U", "V", "W"):
        charge = field.currents[name].sum(axis=2) * r.PERIOD_US  # [offset, impact]
        if name == "W":
            np.testing.assert_allclose(charge[centre], -1.0, atol=0.005)
            charge = np.delete(charge, centre, axis=0)
        assert np.abs(charge).max() < 0.02, name


def test_induction_lobes_and_peaks_match_garfield(field) -> None:
    dt = r.PERIOD_US
    garfield = {"U": (0.327, 0.153, 0.134), "V": (0.301, 0.188, 0.131)}
    for name, (lobe, high, low) in garfield.items():
        current = field.average(name)[r.WIRE_OFFSETS]
        assert current[current > 0].sum() * dt == pytest.approx(lobe, rel=0.1)
        assert -current[current < 0].sum() * dt == pytest.approx(lobe, rel=0.1)
        assert current.max() == pytest.approx(high, rel=0.1)
        assert -current.min() == pytest.approx(low, rel=0.1)
    collection = field.average("W")[r.WIRE_OFFSETS]
    assert -collection.min() == pytest.approx(1.33, rel=0.1)
    t = field.times_us
    u_min, v_max, w_min = (
        t[np.argmin(field.average("U")[r.WIRE_OFFSETS])],
        t[np.argmax(field.average("V")[r.WIRE_OFFSETS])],
        t[np.argmin(collection)],
    )
    assert u_min < v_max <= w_min
    assert w_min - u_min == pytest.approx(5.3, abs=1.0)


def test_electronics_response_gives_the_calibrated_area_per_electron() -> None:
    t = np.arange(0.0, 30.0, 0.005)
    mv = r.electronics_response(t)
    assert mv.max() == pytest.approx(r.GAIN_MV_PER_FC, rel=1e-4)
    assert np.all(mv[t <= 0] == 0)
    adc_tick_per_ke = mv.sum() * 0.005 * 1000 * r.ELECTRON_FC * r.ADC_PER_MV / 0.5
    assert adc_tick_per_ke == pytest.approx(36.65, rel=0.003)
    assert adc_tick_per_ke * r.POSTGAIN == pytest.approx(41.649, rel=0.003)
    assert r.electronics_response(t, shaping_us=1.0).argmax() < mv.argmax()  # faster shaping


def test_the_shipped_field_response_is_this_computation(field) -> None:
    """simulate and reco read the shipped copy instead of solving again at start-up: it must
    be what the solver gives today (regenerate: python -m argonic.detector.response)."""
    shipped = r.FieldResponse.load(r.SHIPPED_FIELD)
    np.testing.assert_allclose(shipped.times_us, field.times_us)
    for name in ("U", "V", "W"):
        np.testing.assert_allclose(shipped.impacts_mm[name], field.impacts_mm[name])
        np.testing.assert_allclose(shipped.currents[name], field.currents[name], atol=1e-6)
