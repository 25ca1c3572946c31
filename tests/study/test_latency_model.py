"""The latency model reproduces the paper's own numbers from the paper's own parameters."""

import numpy as np
import pytest

from argonic.study.latency_model import (
    LatencyModel,
    fit_module_time,
    fit_module_time_mva,
    module_time,
    mva_module_time,
    t_latency,
    t_transmit,
    t_travel,
)

PATCHES = 55_000
PAYLOAD = PATCHES * 48 * 48 * 4  # bytes per event, float32 patches


def paper_model(gbps=2.0, requests=32, t_gpu=PATCHES / 31_000):
    lat = t_latency(7.0, t_transmit(PAYLOAD, gbps), t_travel(requests, 0.012))
    return LatencyModel(t_cpu=330.0, p=0.65, t_gpu=t_gpu, t_latency=lat)


def test_inputs_match_the_papers_derived_figures():
    assert pytest.approx(507, rel=0.01) == PAYLOAD / 1e6  # "about 507 MB per event"
    assert t_transmit(PAYLOAD, 2.0) == pytest.approx(2.05, abs=0.03)
    assert t_transmit(PAYLOAD, 1.0) == pytest.approx(4.1, abs=0.05)
    # the paper's request counts per event: 214 (small batches), 32 (batches of ~1693)
    assert t_travel(214, 0.012) == pytest.approx(2.6, abs=0.05)
    assert t_travel(32, 0.012) == pytest.approx(0.38, abs=0.01)
    assert pytest.approx(32, abs=1) == PATCHES / 1693
    assert pytest.approx(1.77, abs=0.01) == PATCHES / 31_000


def test_t_ideal_and_clients_per_gpu():
    m = paper_model()
    assert 123 <= m.t_ideal <= 127
    assert 68 <= m.optimal_ratio <= 72


def test_table3_event_time_and_module_speedup():
    m = paper_model(gbps=1.0)  # the paper's clients at Fermilab: ~1 Gbps to Google Cloud
    # unsaturated (Table 3: 330 s CPU-only -> 123 s with the GPU service)
    assert m.t_sonic(10) == pytest.approx(m.t_ideal)
    assert 330 / m.t_sonic(10) == pytest.approx(2.7, abs=0.15)
    # the ML module: 220 s on the CPU -> t_gpu + t_latency with the service, ~17x
    assert 220 / m.t_module(10) == pytest.approx(17, abs=1.0)


def test_saturation_is_linear_past_the_knee():
    m = paper_model()
    knee = m.optimal_ratio
    assert not m.saturated(knee - 1) and m.saturated(knee + 1)
    r = np.array([knee + 10, knee + 20, knee + 400])
    t = m.t_sonic(r)
    assert t[1] - t[0] == pytest.approx(10 * m.t_gpu)
    # Eq. 5: deep in saturation the event time approaches t_gpu * N_CPU / N_GPU
    assert t[2] / (m.t_gpu * r[2]) == pytest.approx(1.0, rel=0.03)
    # below the knee the event time is flat
    assert m.t_sonic(1) == m.t_sonic(knee - 0.5) == pytest.approx(m.t_ideal)


# --- fitting the model's parameters from a measured curve ----------------------------------


CLIENTS = np.array([1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256])


def test_max_form_is_eq4_module_share():
    # the fit's closed form max(t_flat, t_gpu N - t_other) is Eq. 4 minus (1 - p) t_cpu
    m = paper_model()
    n = np.arange(1, 400, 7)
    t_flat = m.t_gpu + m.t_latency
    np.testing.assert_allclose(
        module_time(n, t_flat, m.t_gpu, m.t_other), m.t_module(n), rtol=1e-12
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_recovers_the_papers_parameters_from_a_noisy_curve(seed):
    truth = paper_model()
    rng = np.random.default_rng(seed)
    measured = truth.t_module(CLIENTS) * (1 + 0.03 * rng.standard_normal(CLIENTS.size))
    fit = fit_module_time(CLIENTS, measured, t_other=truth.t_other, t_cpu=truth.t_cpu)
    assert fit.t_gpu == pytest.approx(truth.t_gpu, rel=0.06)
    assert fit.t_flat == pytest.approx(truth.t_gpu + truth.t_latency, rel=0.03)
    assert fit.knee == pytest.approx(truth.optimal_ratio, rel=0.08)
    assert fit.model.p == pytest.approx(truth.p, abs=1e-12)  # t_other and t_cpu given
    assert fit.saturated_points == int(np.sum(truth.optimal_ratio < CLIENTS))
    assert fit.t_gpu_source == "slope"
    assert fit.max_relative_error < 0.12


def test_fit_with_t_other_unknown_and_several_servers():
    truth = LatencyModel(t_cpu=3.0, p=0.6, t_gpu=0.2, t_latency=0.1)  # knee at 7.5 per server
    servers = 4
    clients = np.array([4, 8, 16, 24, 32, 48, 64, 96, 128])
    rng = np.random.default_rng(7)
    measured = truth.t_module(clients / servers) * (1 + 0.02 * rng.standard_normal(clients.size))
    fit = fit_module_time(clients, measured, t_other=None, servers=servers)
    assert fit.t_other_fitted
    assert fit.t_gpu == pytest.approx(0.2, rel=0.06)
    assert fit.t_other == pytest.approx(truth.t_other, rel=0.15)
    assert fit.knee == pytest.approx(truth.optimal_ratio, rel=0.1)
    assert fit.optimal_clients_per_server in (6, 7, 8)


def test_fit_without_saturation_uses_the_hint_or_a_bound():
    truth = LatencyModel(t_cpu=2.0, p=0.5, t_gpu=0.1, t_latency=0.05)  # knee at 11.5
    clients = np.array([1, 2, 4, 8])
    flat = truth.t_module(clients)
    hinted = fit_module_time(clients, flat, t_other=1.0, t_gpu_hint=0.1)
    assert hinted.t_gpu_source == "hint" and hinted.t_gpu == 0.1
    assert hinted.t_flat == pytest.approx(0.15)
    bounded = fit_module_time(clients, flat, t_other=1.0)
    assert bounded.t_gpu_source == "bound"
    assert bounded.knee == pytest.approx(8.0)  # only "the knee is beyond the last point"
    assert bounded.saturated_points == 0


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError):
        fit_module_time([1, 2], [1.0], t_other=1.0)
    with pytest.raises(ValueError):
        fit_module_time([1, 2], [1.0, -1.0], t_other=1.0)


# --- the mean value analysis of the same closed system ---------------------------------------


def test_mva_lies_above_eq4_and_meets_its_asymptotes():
    m = paper_model()
    t_flat = m.t_gpu + m.t_latency
    n = np.arange(1, 1000)
    mva = mva_module_time(n, t_flat, m.t_gpu, m.t_other)
    bound = m.t_module(n)
    assert mva[0] == pytest.approx(t_flat)  # one client never waits
    assert np.all(mva >= bound - 1e-9)  # Eq. 4 is the asymptotic bound of this closed system
    assert np.all(np.diff(mva) >= -1e-12)
    assert mva[-1] == pytest.approx(bound[-1], rel=0.01)  # deep in saturation: t_gpu N - t_other
    assert mva[9] == pytest.approx(t_flat, rel=0.03)  # well below the knee: nearly flat


def test_mva_fit_recovers_parameters_from_a_noisy_mva_curve():
    t_flat, t_gpu, t_other = 0.5, 0.13, 1.5  # knee at 15.4
    clients = np.array([1, 2, 4, 8, 12, 16, 20, 24, 32, 48])
    rng = np.random.default_rng(3)
    measured = mva_module_time(clients, t_flat, t_gpu, t_other) * (
        1 + 0.02 * rng.standard_normal(clients.size)
    )
    fit = fit_module_time_mva(clients, measured, t_other=t_other)
    assert fit.form == "mva"
    assert fit.t_gpu == pytest.approx(t_gpu, rel=0.05)
    assert fit.t_flat == pytest.approx(t_flat, rel=0.05)
    assert fit.max_relative_error < 0.08
    eq4 = fit_module_time(clients, measured, t_other=t_other)
    assert fit.max_relative_error < eq4.max_relative_error  # the hard knee misses the rounded one
