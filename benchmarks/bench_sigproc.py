"""The raw-waveform chain on full ProtoDUNE-SP events: hits and charge against the truth,
and the cost of signal processing against the FFTs it must perform.

Per event (simulated here, so the truth is at hand): raw waveforms of every (TPC, plane)
(argonic.detector.simulate, response "raw"), noise filtering and 2D deconvolution
(argonic.reco.sigproc), the Gaussian hit finder, hits labelled from the truth. Figures per
plane:

- true pulses: the truth's charge on one wire in a run of ticks (gaps <= 2 ticks); found
  when a hit peaks on that wire within the run +- 3 ticks; efficiency for pulses above
  5 ke-;
- charge: the found pulses' hit integrals over their true charge: median and 68% width
  (half the 16-84 percentile range, relative to the median), for pulses up to 20 ticks long
  and for longer ("prolonged": tracks near the drift direction);
- noise hits: hits with no true charge near them (label NONE), as a share of all hits;
- with ``--coherent-noise ADC`` (noise shared by each board's 16 channels): the RMS of the
  signal-free channels after the baseline alone and after the coherent-noise removal;
- CPU: noise filtering + deconvolution, the raw simulation (drifted charge to ADC), and one
  forward and one inverse 2D real FFT of every plane's padded grid with scipy.fft (what
  each of them must do at least), all in this process.

    python benchmarks/bench_sigproc.py --events 2 --seed 7000
    python benchmarks/bench_sigproc.py --events 1 --seed 7000 --coherent-noise 5
"""

from __future__ import annotations

import json
import time

import harness
import numpy as np
from scipy import fft

from argonic.detector import simulate as sim
from argonic.detector.event import NONE
from argonic.detector.geometry import get_detector
from argonic.detector.response import Noise, field_response, on_grid
from argonic.reco.hits import find_hits, label_hits
from argonic.reco.sigproc import deconvolve_frames, filter_frames, filter_noise


def pulses(truth: sim.PlaneTruth) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(wire, first tick, last tick, charge ke-) of each true pulse."""
    key = truth.wire.astype(np.int64) * 100_000 + truth.tick
    keys, inverse = np.unique(key, return_inverse=True)
    charge = np.bincount(inverse, weights=truth.charge)
    wire, tick = np.divmod(keys, 100_000)
    new = np.ones(len(keys), bool)
    new[1:] = (wire[1:] != wire[:-1]) | (tick[1:] - tick[:-1] > 3)
    group = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, len(keys) - 1)
    return wire[first], tick[first], tick[last], np.bincount(group, weights=charge)


def plane_figures(hits, truth: sim.PlaneTruth | None) -> dict[str, np.ndarray]:
    """Per true pulse above 5 ke-: found (bool), charge ratio, length in ticks."""
    if truth is None or not len(truth.charge):
        return {}
    w, t0, t1, q = pulses(truth)
    big = q > 5.0
    w, t0, t1, q = w[big], t0[big], t1[big], q[big]
    key = hits.wire.astype(np.int64) * 100_000 + np.rint(hits.peak_tick).astype(np.int64)
    order = np.argsort(key)
    key, integral = key[order], hits.integral[order].astype(np.float64)
    cum = np.concatenate([[0.0], np.cumsum(integral)])
    lo = np.searchsorted(key, w * 100_000 + t0 - 3, "left")
    hi = np.searchsorted(key, w * 100_000 + t1 + 3, "right")
    return {"found": hi > lo, "ratio": (cum[hi] - cum[lo]) / q, "length": t1 - t0}


def charge_figures(ratio: np.ndarray) -> dict:
    p16, p50, p84 = np.percentile(ratio, [16, 50, 84])
    return {
        "pulses": len(ratio),
        "median_bias": float(p50 - 1),
        "width_68": float((p84 - p16) / 2 / p50),
    }


def main() -> None:
    p = harness.parser(__doc__)
    p.add_argument("--events", type=int, default=2)
    p.add_argument("--seed", type=int, default=7000)
    p.add_argument("--coherent-noise", type=float, default=0.0, help="ADC RMS per board")
    a = p.parse_args()
    det = get_detector("protodune-sp")
    field_response()  # once per process, not an event's cost
    planes: dict[str, dict] = {name: {"hits": 0, "noise_hits": 0, "figures": []} for name in "UVW"}
    cpu = {"simulation_raw": 0.0, "noisefilter": 0.0, "deconvolution": 0.0, "fft_pair": 0.0}
    coherent: dict[str, dict[str, list[float]]] = {}
    for i in range(a.events):
        rng = np.random.default_rng([a.seed, i])
        dep = sim.generate_deposits(det, rng)
        c0 = time.process_time()
        noise = Noise(rms_adc=sim.NOISE_ADC, coherent_adc=a.coherent_noise)
        event, truths = sim.simulate_readout(
            det, rng, 1, 0, i, deposits=dep, response="raw", raw_noise=noise
        )
        cpu["simulation_raw"] += time.process_time() - c0
        truth_of = {(r.tpc, r.plane): t for r, t in zip(event.raw, truths, strict=True)}
        c0 = time.process_time()
        filtered = filter_frames(event.raw, coherent=bool(a.coherent_noise))
        c1 = time.process_time()
        frames = deconvolve_frames(filtered, det)
        c2 = time.process_time()
        cpu["noisefilter"] += c1 - c0
        cpu["deconvolution"] += c2 - c1
        if a.coherent_noise:
            for raw, cleaned, bad in filtered:
                truth = truth_of[(raw.tpc, raw.plane)]
                quiet = ~bad
                if truth is not None:
                    quiet[np.unique(truth.wire)] = False
                if not quiet.any():
                    continue
                name = det.planes[raw.plane].name
                rms = coherent.setdefault(name, {"baseline_only": [], "coherent_removed": []})
                rms["baseline_only"].append(filter_noise(raw.adc, coherent=False)[0][quiet].std())
                rms["coherent_removed"].append(cleaned[quiet].std())
        for raw in event.raw:  # the FFTs any such processing needs: one each way per plane
            grid = on_grid(raw.adc.astype(np.float64), det.planes[raw.plane].wrapped)
            c0 = time.process_time()
            fft.irfft2(fft.rfft2(grid, workers=-1), s=grid.shape, workers=-1)
            cpu["fft_pair"] += time.process_time() - c0
        for frame in frames:
            name = det.planes[frame.plane].name
            hits = label_hits(find_hits(frame), truth_of[(frame.tpc, frame.plane)])
            planes[name]["hits"] += len(hits)
            planes[name]["noise_hits"] += int((hits.label == NONE).sum())
            figures = plane_figures(hits, truth_of[(frame.tpc, frame.plane)])
            if figures:
                planes[name]["figures"].append(figures)
    result = {
        "events": a.events,
        "seed": a.seed,
        "coherent_noise_adc": a.coherent_noise,
        "cpu_s_per_event": {},
        "planes": {},
    }
    if coherent:
        result["signal_free_rms_adc"] = {
            name: {k: float(np.mean(v)) for k, v in rms.items()} for name, rms in coherent.items()
        }
    for k, v in cpu.items():
        result["cpu_s_per_event"][k] = v / a.events
    fft_s = cpu["fft_pair"]
    result["sigproc_over_fft"] = (cpu["noisefilter"] + cpu["deconvolution"]) / fft_s
    result["simulation_over_fft"] = cpu["simulation_raw"] / fft_s
    for name, acc in planes.items():
        figs = {
            k: np.concatenate([f[k] for f in acc["figures"]]) for k in ("found", "ratio", "length")
        }
        found, ratio, length = figs["found"], figs["ratio"], figs["length"]
        entry = {
            "hits": acc["hits"],
            "noise_hit_share": acc["noise_hits"] / max(acc["hits"], 1),
            "true_pulses_above_5ke": int(len(found)),
            "efficiency_above_5ke": float(found.mean()),
            "charge_short": charge_figures(ratio[found & (length <= 20)]),
            "charge_prolonged": charge_figures(ratio[found & (length > 20)]),
        }
        result["planes"][name] = entry
    print(json.dumps(result, indent=1))
    harness.report(result, a)


if __name__ == "__main__":
    main()
