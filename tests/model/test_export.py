"""Export into the model repository: ONNX round trip, config.pbtxt, checksums, shipped model."""

import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from argonic import repository as repo
from argonic.model import export
from argonic.model.network import build_network, predict_scores


@pytest.fixture(scope="module")
def network():
    return build_network(seed=11).eval()


@pytest.fixture(scope="module")
def repository(network, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    export.export_repository(network, root)
    return root


@pytest.fixture(scope="module")
def patches():
    rng = np.random.default_rng(2)
    x = rng.uniform(-5, 15, (40, 48, 48, 1)).astype(np.float32)
    x[rng.random(x.shape) < 0.7] = 0.0  # sparse, like real patches
    return x


def test_onnx_runtime_matches_pytorch(repository, network, patches):
    session = ort.InferenceSession(
        str(repository / "emtrkmichelid/1/model.onnx"), providers=["CPUExecutionProvider"]
    )
    outputs = session.run(["em_trk_none_netout", "michel_netout"], {"main_input": patches})
    onnx_scores = np.concatenate(outputs, axis=1)
    torch_scores = predict_scores(network, patches)
    assert np.max(np.abs(onnx_scores - torch_scores)) < 1e-4
    assert (onnx_scores[:, :3].argmax(1) == torch_scores[:, :3].argmax(1)).all()


def test_onnx_graph_has_dynamic_batch_and_production_names(repository):
    model = onnx.load(str(repository / "emtrkmichelid/1/model.onnx"))
    (inp,) = model.graph.input
    assert inp.name == "main_input"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [48, 48, 1]
    assert [o.name for o in model.graph.output] == ["em_trk_none_netout", "michel_netout"]


def test_config_pbtxt_parses_into_model_config(repository):
    text = (repository / "emtrkmichelid/config.pbtxt").read_text()
    config = text_format.Parse(text, mc.ModelConfig())
    assert config.name == "emtrkmichelid" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 4096
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("main_input", mc.TYPE_FP32, [48, 48, 1])
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("em_trk_none_netout", mc.TYPE_FP32, [3]),
        ("michel_netout", mc.TYPE_FP32, [1]),
    ]
    assert config.HasField("dynamic_batching") and len(config.instance_group) == 1
    assert config.parameters["execution_batch_size"].string_value == "auto"


def test_sha256_file_matches_model_file(repository):
    model_file = repository / "emtrkmichelid/1/model.onnx"
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert (
        repository / "emtrkmichelid/1/model.onnx.sha256"
    ).read_text() == f"{digest}  model.onnx\n"
    assert repo.verify_checksum(model_file) == digest


def test_checksum_mismatch_is_refused(repository, tmp_path):
    copy = tmp_path / "model.onnx"
    copy.write_bytes((repository / "emtrkmichelid/1/model.onnx").read_bytes() + b"x")
    (tmp_path / "model.onnx.sha256").write_text(
        (repository / "emtrkmichelid/1/model.onnx.sha256").read_text()
    )
    with pytest.raises(repo.ModelRepositoryError, match="sha256"):
        repo.verify_checksum(copy)


def test_weights_load_back_from_onnx(repository, network):
    loaded = export.load_network(repository / "emtrkmichelid/1/model.onnx")
    for name, value in network.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_torchscript_export(network, patches, tmp_path):
    digest = export.export_torchscript(network, tmp_path / "model.pt")
    assert (tmp_path / "model.pt.sha256").read_text().startswith(digest)
    traced = torch.jit.load(str(tmp_path / "model.pt"))
    em_trk_none, michel = traced(torch.from_numpy(patches))
    scores = torch.cat([em_trk_none, michel], 1).detach().numpy()
    np.testing.assert_allclose(scores, predict_scores(network, patches), atol=1e-5)


def test_shipped_repository_is_consistent(monkeypatch, repository):
    monkeypatch.delenv(repo.REPOSITORY_ENV, raising=False)
    shipped = repo.shipped_repository()
    repo.verify_checksum(repo.onnx_path(shipped))
    assert repo.read_config(shipped / "emtrkmichelid").name == "emtrkmichelid"
    monkeypatch.setenv(repo.REPOSITORY_ENV, str(repository))
    assert repo.shipped_repository() == repository
    monkeypatch.setenv(repo.REPOSITORY_ENV, str(repository / "missing"))
    with pytest.raises(repo.ModelRepositoryError, match="ARGONIC_MODEL_REPOSITORY"):
        repo.shipped_repository()


def test_export_keeps_the_operators_config(network, tmp_path):
    """Retraining into a repository replaces the weights, not the serving settings."""
    import shutil

    from argonic.repository import read_config, sha256_hex, shipped_repository

    shutil.copytree(shipped_repository() / "emtrkmichelid", tmp_path / "emtrkmichelid")
    before = (tmp_path / "emtrkmichelid" / "config.pbtxt").read_text()
    written = export.export_repository(network, tmp_path)
    assert (tmp_path / "emtrkmichelid" / "config.pbtxt").read_text() == before
    model = tmp_path / "emtrkmichelid" / "1" / "model.onnx"
    assert (
        written["sha256"]
        == sha256_hex(model)
        != sha256_hex(shipped_repository() / "emtrkmichelid" / "1" / "model.onnx")
    )
    assert read_config(
        tmp_path / "emtrkmichelid"
    ).dynamic_batching.default_queue_policy.max_queue_size
