"""The latency model reproduces the paper's own numbers from the paper's own parameters."""

import numpy as np
import pytest

from argonic.study.latency_model import LatencyModel, t_latency, t_transmit, t_travel

PATCHES = 55_000
PAYLOAD = PATCHES * 48 * 48 * 4  # bytes per event, float32 patches


def paper_model(gbps=2.0, requests=32, t_gpu=PATCHES / 31_000):
    lat = t_latency(7.0, t_transmit(PAYLOAD, gbps), t_travel(requests, 0.012))
    return LatencyModel(t_cpu=330.0, p=0.65, t_gpu=t_gpu, t_latency=lat)


def test_inputs_match_the_papers_derived_figures():
    assert PAYLOAD / 1e6 == pytest.approx(507, rel=0.01)  # "about 507 MB per event"
    assert t_transmit(PAYLOAD, 2.0) == pytest.approx(2.05, abs=0.03)
    assert t_transmit(PAYLOAD, 1.0) == pytest.approx(4.1, abs=0.05)
    # the paper's request counts per event: 214 (small batches), 32 (batches of ~1693)
    assert t_travel(214, 0.012) == pytest.approx(2.6, abs=0.05)
    assert t_travel(32, 0.012) == pytest.approx(0.38, abs=0.01)
    assert PATCHES / 1693 == pytest.approx(32, abs=1)
    assert PATCHES / 31_000 == pytest.approx(1.77, abs=0.01)


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
