"""Quantization-aware training and the OpenVINO int8 model: trained by `argonic train --qat`,
exported in Triton's OpenVINO layout, run in int8 by OpenVINO, served by `argonic serve`
in patch and plane mode with the scores of the local run, and compared by `argonic evaluate
--models`."""

import contextlib
import io
import json
import shutil

import numpy as np
import openvino as ov
import pytest

from argonic.cli import main
from argonic.detector.eventfile import EventFile
from argonic.inference.base import InterfaceError
from argonic.inference.local import OnnxRuntimeInterface, RepositoryInterface
from argonic.inference.remote import RemoteInterface
from argonic.patches import event_patches
from argonic.reco.module import EmTrackMichelId
from argonic.reco.simulation import simulate_file
from argonic.repository import read_config, sha256_hex, shipped_repository, verify_checksum
from argonic.server.app import running_server

OV = "emtrkmichelid_openvino"


@pytest.fixture(scope="module")
def events_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("qat") / "mini.h5"
    simulate_file(path, detector="mini", n_events=3, seed=3, run=1, show_progress=False)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, events_file):
    """A repository holding the shipped network and its plane model, and the QAT twin that
    `argonic train --qat` fine-tunes from it (one short epoch) and exports next to them."""
    repo = tmp_path_factory.mktemp("qat_repo")
    for name in ("emtrkmichelid", "emtrkmichelid_plane"):
        shutil.copytree(shipped_repository() / name, repo / name)
    args = ["train", str(events_file), "--qat", "--validation-file", str(events_file)]
    args += ["--init", str(repo / "emtrkmichelid" / "1" / "model.onnx"), "--epochs", "1"]
    args += ["--batch-size", "32", "--hit-fraction", "0.1", "--repository", str(repo), "--json"]
    args += ["--checkpoint", str(repo.parent / "qat.pt")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    summary = json.loads(out.getvalue())  # --json: nothing else on stdout (NNCF's bars)
    assert summary["export"]["model"] == OV and summary["config"]["bfloat16"] is False
    return repo


def test_qat_exports_an_openvino_model_in_tritons_layout(trained, capsys):
    version = trained / OV / "1"
    for file in ("model.xml", "model.bin"):
        verify_checksum(version / file)  # raises on a mismatch
    config = read_config(trained / OV)
    assert config.backend == "openvino" and not config.platform
    assert config.parameters["precision"].string_value == "int8"
    source = trained / "emtrkmichelid" / "1" / "model.onnx"
    assert config.parameters["quantised_from"].string_value == sha256_hex(source)
    plane = read_config(trained / f"{OV}_plane")
    assert plane.parameters["network"].string_value == OV and plane.backend == "argonic_plane"


def test_openvino_runs_the_convolution_and_dense_128_in_int8_from_an_8_bit_input(trained):
    """The runtime graph OpenVINO compiles: the input patch is quantised into the
    convolution (u8 activations), Dense 128 multiplies u8 activations by i8 weights, and the
    three small layers stay fp32 (f32 precision hint: never bf16, whatever the CPU)."""
    compiled = ov.Core().compile_model(
        str(trained / OV / "1" / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    layers = [
        (
            op.get_rt_info()["layerType"].astype(str),
            op.get_rt_info()["runtimePrecision"].astype(str),
        )
        for op in compiled.get_runtime_model().get_ordered_ops()
    ]
    assert ("Convolution", "u8") in layers
    connected = [p for t, p in layers if t == "FullyConnected"]
    assert connected.count("u8") == 1 and connected.count("f32") == 3
    assert not any(p in ("bf16", "f16") for _, p in layers)


def test_int8_twin_is_the_trained_network_but_not_bit_equal_to_fp32(trained, events_file):
    with EventFile(events_file) as f:
        x = event_patches(f[0], f.detector)
    with (
        RepositoryInterface(OV, trained) as int8,
        OnnxRuntimeInterface(trained / "emtrkmichelid" / "1" / "model.onnx") as fp32,
    ):
        a, b = int8.predict(x), fp32.predict(x)
    assert int8.sha256 == sha256_hex(trained / OV / "1" / "model.xml")
    assert np.abs(a - b).max() > 1e-3  # quantised (and fine-tuned): not the fp32 function
    assert np.mean(a[:, :3].argmax(1) == b[:, :3].argmax(1)) > 0.9


def test_served_patch_and_plane_mode_equal_the_local_run(trained, events_file):
    with (
        running_server(trained, allow_metrics=False) as server,
        EventFile(events_file) as events,
        RepositoryInterface(OV, trained) as local,
    ):
        event = events[1]
        expected = EmTrackMichelId(local, events.detector).produce(event, event.hits)
        for mode in ("patch", "plane"):
            remote = RemoteInterface(
                {
                    "remote": {
                        "servers": [server.url],
                        "model_name": OV,
                        "model_repository": str(trained),
                        "request_mode": mode,
                        "server_stats": "off",
                    }
                }
            )
            with remote:
                scores = EmTrackMichelId(remote, events.detector).produce(event, event.hits)
                stats = remote.stats()["total"]
            assert (stats["plane_requests"] > 0) == (mode == "plane")
            np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)


def test_tampered_weights_are_refused(trained, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(trained, repo)
    weights = repo / OV / "1" / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(InterfaceError, match="sha256"):
        RepositoryInterface(OV, repo)
    weights.unlink()
    (repo / OV / "1" / "model.bin.sha256").unlink()
    with pytest.raises(InterfaceError, match="weights model.bin are missing"):
        RepositoryInterface(OV, repo)


def test_evaluate_compares_two_repository_models_on_the_same_hits(trained, events_file, capsys):
    args = ["evaluate", str(events_file), "--models", "emtrkmichelid", OV]
    assert main([*args, "--repository", str(trained), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    with EventFile(events_file) as f:
        n_hits = sum(len(f[i].hits) for i in range(len(f)))
    assert summary["hits"] == n_hits and summary["models"] == ["emtrkmichelid", OV]
    assert summary["same_class"]["emtrkmichelid"] == 1.0
    assert 0.9 < summary["same_class"][OV] <= 1.0
    for model in summary["models"]:  # each figure side by side is the model's own evaluation
        own = next(f for f in summary["figures"] if f["model"] == model)
        assert summary["track_em_accuracy"][model] == own["track_em_accuracy"]
    alone = ["evaluate", str(events_file), "--json", "--roc", str(trained.parent / "r.png")]
    assert main(alone) == 0  # the shipped model through the default interface
    shipped = json.loads(capsys.readouterr().out)
    # the same network through ONNX Runtime's other graph level: the same figures, within a hit
    ours = summary["track_em_accuracy"]["emtrkmichelid"]
    assert shipped["track_em_accuracy"] == pytest.approx(ours, abs=2 / n_hits)
    assert main([*args[:3], "emtrkmichelid", "--json"]) == 2  # one model is no comparison
