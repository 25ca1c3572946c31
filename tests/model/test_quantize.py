"""The reduced-precision twins: equalisation keeps the fp32 function; `argonic quantize`
writes int8 and bf16 twins (and their plane twins) that `argonic serve` loads or refuses by
what the CPU can do; on a small simulated event the int8 twin keeps the class of nearly
every hit, chosen by the client through the model name, in patch and in plane mode.
These are statements of accuracy, not of speed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from argonic.cli import main
from argonic.detector.eventfile import EventFile
from argonic.inference.remote import RemoteInterface
from argonic.model.quantize import _equalised, equalise, quantise_dense
from argonic.patches import event_patches
from argonic.reco.module import EmTrackMichelId
from argonic.reco.simulation import simulate_file
from argonic.repository import read_config, sha256_hex, shipped_repository
from argonic.repository.model_config import InstanceSpec, parse_config
from argonic.server import running_server
from argonic.server.backends import cpu
from argonic.server.backends.torchscript import TorchScriptBackend
from argonic.server.errors import HostUnsupported

NETWORK = "emtrkmichelid"


def _scores(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return np.concatenate(session.run(None, {"main_input": x}), axis=1)


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with the shipped network, its plane model and twins written by the CLI
    (calibrated on a mini event of its own seed)."""
    root = tmp_path_factory.mktemp("twins")
    for name in (NETWORK, f"{NETWORK}_plane"):
        shutil.copytree(shipped_repository() / name, root / name)
    calibration = tmp_path_factory.mktemp("calibration") / "calib.h5"
    simulate_file(calibration, detector="mini", n_events=1, seed=12, show_progress=False)
    assert main(["quantize", str(calibration), "--repository", str(root), "--patches", "512"]) == 0
    return root


def test_equalisation_keeps_the_function(mini_events: Path) -> None:
    fp32 = shipped_repository() / NETWORK / "1" / "model.onnx"
    with EventFile(mini_events) as f:
        x = event_patches(f[0], f.detector)[:300]
    original = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    model = equalise(onnx.load(str(fp32)), x[:200])
    equalised = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(_scores(equalised, x), _scores(original, x), atol=2e-5)
    # the filters' ReLU outputs now peak at 1 on the calibration patches (the point of it)
    w = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert not np.allclose(
        w["conv.weight"],
        onnx.numpy_helper.to_array(
            next(t for t in onnx.load(str(fp32)).graph.initializer if t.name == "conv.weight")
        ),
    )


def test_int8_dense_layer_is_the_quantised_product(mini_events: Path) -> None:
    """The MatMulInteger layer computes, in ONNX Runtime, what the arithmetic says: uint8
    activations (round half to even, saturated) times int8 weights, rescaled, plus bias
    (a numpy reimplementation from the layer's own scales); and the class of a patch
    rarely changes."""
    fp32 = shipped_repository() / NETWORK / "1" / "model.onnx"
    with EventFile(mini_events) as f:
        x = event_patches(f[0], f.detector)[:400]
    model, act = _equalised(onnx.load(str(fp32)), x[:300])
    int8 = quantise_dense(model, act)
    w = {t.name: onnx.numpy_helper.to_array(t) for t in int8.graph.initializer}
    a_scale = next(v for k, v in w.items() if k.endswith("_act_scale"))
    w_int8 = next(v for k, v in w.items() if k.endswith("_weight_int8"))
    out_scale = next(v for k, v in w.items() if k.endswith("_out_scale"))
    dense = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    bias = dense["dense1.bias"]
    # the fp32 weights the int8 ones stand for: per-output-channel scale, at most half a step
    w_fp32 = dense["dense1.weight"].T
    step = out_scale / a_scale
    assert np.all(np.abs(w_int8 * step - w_fp32) <= step / 2 + 1e-7)
    probe = onnx.ModelProto.FromString(int8.SerializeToString())
    gemm_out = next(n for n in probe.graph.node if n.op_type == "Add").output[0]
    probe.graph.output.append(onnx.helper.make_tensor_value_info(gemm_out, 1, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run([gemm_out], {"main_input": x[:300]})[0]
    ratio = act / a_scale
    q = np.clip(np.rint(ratio), 0, 255).astype(np.int64)
    want = (q @ w_int8.astype(np.int64)).astype(np.float32) * out_scale + bias
    # an activation within float rounding of a half step may round either way in ONNX
    # Runtime (it divides in its own order): one step of that activation is the only slack
    tie = (np.abs(ratio - np.floor(ratio) - 0.5) < 1e-5).astype(np.float32)
    slack = (tie @ np.abs(w_int8).astype(np.float32)) * out_scale
    assert tie.mean() < 0.01  # ties are rare: the check stays exact almost everywhere
    assert np.all(np.abs(got - want) <= 1e-4 + 1e-5 * np.abs(want) + slack)
    scores = _scores(
        ort.InferenceSession(int8.SerializeToString(), providers=["CPUExecutionProvider"]), x
    )
    ref = _scores(ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]), x)
    assert np.mean(scores[:, :3].argmax(1) == ref[:, :3].argmax(1)) >= 0.99


def _logits(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log softmax of the three classes, michel logit) from the heads' outputs."""
    p = np.clip(scores[:, 3], 1e-7, 1 - 1e-7)
    return np.log(np.clip(scores[:, :3], 1e-38, 1)), np.log(p / (1 - p))


def test_near_ties_are_rerun_at_16_bits(mini_events: Path) -> None:
    """The rows whose int8 scores are within REFINE_MARGIN of a class tie or of the Michel
    cut (chosen here in numpy from the int8-only network's scores) get scores close to fp32;
    every other row keeps its int8 scores exactly; a row's scores do not depend on its batch,
    and a batch with no near tie (all zeros) runs too."""
    from argonic.detector.event import MICHEL_CUT
    from argonic.model.quantize import REFINE_MARGIN

    fp32 = shipped_repository() / NETWORK / "1" / "model.onnx"
    with EventFile(mini_events) as f:
        x = np.concatenate([event_patches(f[i], f.detector) for i in range(2)])
    model, act = _equalised(onnx.load(str(fp32)), x[:512])

    def session(m: onnx.ModelProto) -> ort.InferenceSession:
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])

    plain = _scores(session(quantise_dense(model, act, refine=None)), x)
    refined_session = session(quantise_dense(model, act))
    refined = _scores(refined_session, x)
    ref = _scores(ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]), x)

    def near_tie(scores: np.ndarray) -> np.ndarray:
        classes, michel = _logits(scores)
        top2 = np.sort(classes, axis=1)[:, -2:]
        return (top2[:, 1] - top2[:, 0] < REFINE_MARGIN) | (
            np.abs(michel - np.log(MICHEL_CUT / (1 - MICHEL_CUT))) < REFINE_MARGIN
        )

    tie = near_tie(plain)
    assert 0 < tie.sum() < 0.2 * len(x)
    np.testing.assert_array_equal(refined[~tie], plain[~tie])
    err_plain = np.abs(_logits(plain)[0] - _logits(ref)[0])[tie].max(axis=1)
    err_refined = np.abs(_logits(refined)[0] - _logits(ref)[0])[tie].max(axis=1)
    assert np.median(err_refined) < 0.25 * np.median(err_plain)
    m_plain = np.abs(_logits(plain)[1] - _logits(ref)[1])[tie]
    m_refined = np.abs(_logits(refined)[1] - _logits(ref)[1])[tie]
    assert np.median(m_refined) < 0.25 * np.median(m_plain)
    alone = np.concatenate([_scores(refined_session, x[i : i + 1]) for i in np.flatnonzero(tie)])
    np.testing.assert_array_equal(alone, refined[tie])
    zeros = np.zeros((4, 48, 48, 1), np.float32)
    assert not near_tie(_scores(session(quantise_dense(model, act, refine=None)), zeros)).any()
    zero_scores = _scores(refined_session, zeros)  # no row to re-run: empty tensors inside
    assert zero_scores.shape == (4, 4) and np.isfinite(zero_scores).all()


def test_twins_are_written_as_a_repository(twins: Path) -> None:
    int8 = read_config(twins / f"{NETWORK}_int8")
    assert int8.parameters["precision"].string_value == "int8"
    assert int8.parameters["quantised_from"].string_value == sha256_hex(
        twins / NETWORK / "1" / "model.onnx"
    )
    model = twins / f"{NETWORK}_int8" / "1" / "model.onnx"
    assert (model.parent / "model.onnx.sha256").read_text().split()[0] == sha256_hex(model)
    graph = onnx.load(str(model)).graph
    assert {"QuantizeLinear", "MatMulInteger", "Conv", "Softmax"} <= {n.op_type for n in graph.node}
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    int8 = {k: w for k, w in weights.items() if w.dtype == np.int8}
    # the big Dense layer and its rounding residuals (the near-tie re-run's), and only they,
    # both 7-bit: exact on every CPU's int8 kernel (argonic.server.backends.cpu)
    assert [w.shape for w in int8.values()] == [(92928, 128)] * 2
    assert all(np.abs(w.astype(np.int16)).max() <= 63 for w in int8.values())
    # no fp32 copy of it is left: the file is about half of the fp32 network's
    assert model.stat().st_size < 0.55 * (twins / NETWORK / "1" / "model.onnx").stat().st_size
    bf16 = read_config(twins / f"{NETWORK}_bf16")
    assert (bf16.platform, bf16.parameters["network"].string_value) == ("pytorch_libtorch", NETWORK)
    for twin in ("int8", "bf16"):
        plane = read_config(twins / f"{NETWORK}_{twin}_plane")
        assert plane.parameters["network"].string_value == f"{NETWORK}_{twin}"


def test_shipped_twins_belong_to_the_shipped_network() -> None:
    """Retraining without `argonic quantize` would leave a stale int8 twin: caught here."""
    shipped = shipped_repository()
    config = read_config(shipped / f"{NETWORK}_int8")
    assert config.parameters["quantised_from"].string_value == sha256_hex(
        shipped / NETWORK / "1" / "model.onnx"
    )


def test_int8_twin_keeps_the_class_of_a_simulated_event(mini_events: Path) -> None:
    """Every hit of a mini event, through argonic serve on the shipped repository: patch
    mode and plane mode with the shipped int8 twins against the fp32 network."""
    twins = shipped_repository()
    with running_server(twins, allow_metrics=False) as server, EventFile(mini_events) as f:
        event = f[1]

        def scores(**remote: str) -> np.ndarray:
            config = {
                "servers": [server.url],
                "model_repository": str(twins),
                "server_stats": "off",
                **remote,
            }
            with RemoteInterface({"batch_size": 256, "remote": config}) as interface:
                return EmTrackMichelId(interface, f.detector).produce(event, event.hits)

        fp32 = scores(request_mode="patch")
        int8 = scores(model_name=f"{NETWORK}_int8", request_mode="patch")
        int8_plane = scores(model_name=f"{NETWORK}_int8")  # plane mode: emtrkmichelid_int8_plane
        index = grpcclient.InferenceServerClient(server.url).get_model_repository_index()
    assert len(fp32) > 500
    same = np.mean(int8[:, :3].argmax(1) == fp32[:, :3].argmax(1))
    # measured: 0.9990 on this event, 0.9995 on validation ProtoDUNE-SP hits (BENCHMARKS)
    assert same >= 0.995, same
    assert np.abs(int8[:, 3] - fp32[:, 3]).mean() < 0.01
    assert not np.array_equal(int8, fp32)  # it is a different network
    np.testing.assert_allclose(int8_plane, int8, atol=1e-5)  # same patches, same network
    states = {m.name: (m.state, m.reason) for m in index.models}
    bf16 = states[f"{NETWORK}_bf16"]
    if cpu.native("bf16"):
        assert bf16[0] == "READY"
    else:  # refused at start-up with the reason, the server stays ready
        assert bf16[0] != "READY" and "bf16" in bf16[1], bf16


def test_bf16_twin_numerics_on_simulated_patches(twins: Path, mini_events: Path) -> None:
    """The bf16 twin's network (the fp32 model.onnx read into torch, cast to bf16), emulated
    where the CPU lacks bf16 (a few hundred patches: emulation is slow)."""
    text = (twins / f"{NETWORK}_bf16" / "config.pbtxt").read_text()
    config = parse_config(
        text + '\nparameters { key: "allow_emulated" value { string_value: "true" } }'
    )
    model_file = twins / NETWORK / "1" / "model.onnx"
    if not cpu.native("bf16"):
        with pytest.raises(HostUnsupported, match="bf16"):
            TorchScriptBackend(parse_config(text), model_file, InstanceSpec("cpu"))
    backend = TorchScriptBackend(config, model_file, InstanceSpec("cpu"))
    with EventFile(mini_events) as f:
        x = event_patches(f[1], f.detector)[:256]
    out = backend.run({"main_input": x})
    bf16 = np.concatenate([out["em_trk_none_netout"], out["michel_netout"]], axis=1)
    ref = _scores(ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"]), x)
    assert np.mean(bf16[:, :3].argmax(1) == ref[:, :3].argmax(1)) >= 0.97
    assert np.abs(bf16 - ref).max() < 0.1
