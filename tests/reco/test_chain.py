"""The reco chain end to end on simulated events: local, remote (real server, real socket), Dask."""

import h5py
import numpy as np
import pytest

from argonic.detector.eventfile import EventFile
from argonic.inference.local import OnnxRuntimeInterface
from argonic.patches import event_patches
from argonic.pipeline import compare_reco_files
from argonic.reco.executors import run_reco
from argonic.reco.michel_context import MichelContext
from argonic.repository import shipped_repository
from argonic.server.app import running_server
from argonic.settings import load_settings


@pytest.fixture(scope="module")
def events_file(mini_events):
    """The shared two-event mini file (conftest.py)."""
    return mini_events


@pytest.fixture(scope="module")
def local_reco(events_file):
    out = events_file.with_name("local.h5")
    return out, run_reco(events_file, out, load_settings(), show_progress=False)


def test_local_reco_scores_every_hit_with_the_shipped_model(events_file, local_reco):
    out, summary = local_reco
    context = MichelContext.load()
    with EventFile(events_file) as ev, h5py.File(out) as r, OnnxRuntimeInterface() as direct:
        assert summary["events"] == len(ev) == len(r["events"])
        for i, event in enumerate(ev):
            g = r["events"][f"{i:06d}"]
            # the chain re-finds exactly the stored hits and carries their truth labels
            np.testing.assert_array_equal(g["hits/wire"][:], event.hits.wire)
            np.testing.assert_array_equal(g["hits/label"][:], event.hits.label)
            # independent path: all patches of the event at once, straight into ONNX Runtime
            network = direct.predict(event_patches(event, ev.detector))
            np.testing.assert_allclose(g["network_scores"][:], network, atol=1e-5)
            # the chain's output: the MichelContext stage (on by default) after the network
            expected = context.apply(event.hits, g["network_scores"][:], ev.detector)
            np.testing.assert_allclose(g["scores"][:], expected, atol=1e-6)
            np.testing.assert_array_equal(g["predicted"][:], np.argmax(expected[:, :3], axis=1))
    assert [m["module"] for m in summary["modules"]] == [
        "read",
        "hitfinding",
        "emtrackmichelid",
        "michelcontext",
    ]
    assert abs(sum(m["share"] for m in summary["modules"]) - 1) < 1e-9
    assert sum(summary["predicted"].values()) == summary["hits"]


def test_remote_reco_gives_the_same_classes_as_local(events_file, local_reco, tmp_path):
    with running_server(shipped_repository()) as server:
        config = load_settings(
            flags={
                "inference.interface": "remote",
                "inference.remote.servers": [server.url],
                "inference.batch_size": 235,
                "inference.remote.request_mode": "patch",  # plane mode: tests/inference
            }
        )
        summary = run_reco(events_file, tmp_path / "remote.h5", config, show_progress=False)
    agreement = compare_reco_files(local_reco[0], tmp_path / "remote.h5")
    assert agreement["hits"] == summary["hits"] > 0
    assert agreement["hits_with_different_class"] == 0
    assert agreement["max_abs_score_difference"] < 1e-5
    sent = summary["interface_stats"]["total"]
    # every patch crossed the wire once, as float32: at least 48*48*4 bytes per hit
    assert sent["patches"] == summary["hits"]
    assert sent["bytes_sent"] >= summary["hits"] * 48 * 48 * 4


def test_dask_fan_out_matches_in_process(events_file, local_reco, tmp_path):
    import distributed  # noqa: F401 - the test extra: a broken install fails, never skips

    summary = run_reco(
        events_file,
        tmp_path / "dask.h5",
        load_settings(),
        show_progress=False,
        executor="dask",
        workers=2,
    )
    assert summary["interface_stats"]["workers"] == 2
    agreement = compare_reco_files(local_reco[0], tmp_path / "dask.h5")
    # the context stage's matrix products may round differently in a one-thread worker
    assert agreement["hits_with_different_class"] == 0
    assert agreement["max_abs_score_difference"] < 1e-6
    with h5py.File(local_reco[0]) as a, h5py.File(tmp_path / "dask.h5") as b:
        for name in a["events"]:  # the network's own scores: bit for bit
            np.testing.assert_array_equal(
                a["events"][name]["network_scores"][:], b["events"][name]["network_scores"][:]
            )


def test_empty_event_gives_empty_result(tmp_path):
    from argonic.detector.event import Event, Hits
    from argonic.detector.eventfile import EventFileWriter

    path = tmp_path / "empty.h5"
    with EventFileWriter(path, "mini", seed=0, run=1) as w:
        w.write(Event(1, 0, 0, [], Hits()))
    summary = run_reco(path, tmp_path / "r.h5", load_settings(), show_progress=False)
    assert summary["hits"] == 0
    with h5py.File(tmp_path / "r.h5") as r:
        assert r["events/000000/scores"].shape == (0, 4)
